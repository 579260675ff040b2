// Inference statistics of one model version, kept with atomics on the hot path, and their two
// views: Triton's /v2/models/{m}/stats JSON and Prometheus text with Triton's metric names
// (nv_inference_request_success, ..._failure, nv_inference_count, nv_inference_exec_count,
// nv_inference_{request,queue,compute_input,compute_infer,compute_output}_duration_us) plus a
// request latency histogram, nv_inference_request_latency_us.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

namespace scalebert::serve {

struct DurationStat {
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> ns{0};
  void add(uint64_t nanoseconds) {
    count.fetch_add(1, std::memory_order_relaxed);
    ns.fetch_add(nanoseconds, std::memory_order_relaxed);
  }
  nlohmann::json to_json() const;
};

// Cumulative histogram of request latency; bucket upper bounds in microseconds.
class LatencyHistogram {
 public:
  static constexpr std::array<uint64_t, 14> kBoundsUs = {100,    250,    500,     1000,    2500,    5000,   10000,
                                                          25000,  50000,  100000,  250000,  500000,  1000000, 5000000};
  void observe(uint64_t microseconds);
  // Prometheus lines (buckets with le, +Inf, _sum, _count) for `name` with `labels` ("model=...").
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<std::atomic<uint64_t>, kBoundsUs.size() + 1> buckets_{};  // last: above every bound
  std::atomic<uint64_t> sum_us_{0};
};

struct ModelStats {
  DurationStat success, fail, queue, compute_input, compute_infer, compute_output;
  std::atomic<uint64_t> inference_count{0};   // batch items (request rows) inferred
  std::atomic<uint64_t> execution_count{0};   // batches run
  std::atomic<uint64_t> last_inference_ms{0}; // wall clock, ms since the epoch
  LatencyHistogram latency;

  // Batch-size statistics: batches run per size and their compute times.
  void add_batch(int64_t size, uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns);

  // One entry of Triton's "model_stats" list.
  nlohmann::json to_json(const std::string& name, const std::string& version) const;
  // Prometheus samples for this model version.
  void render(std::string& out, const std::string& name, const std::string& version) const;

 private:
  struct BatchStat {
    uint64_t count = 0, input_ns = 0, infer_ns = 0, output_ns = 0;
  };
  mutable std::mutex batch_mutex_;
  std::map<int64_t, BatchStat> batches_;
};

// HELP/TYPE header lines of every metric, followed by `samples` (concatenated ModelStats::render).
std::string prometheus_text(const std::string& samples);

}  // namespace scalebert::serve
