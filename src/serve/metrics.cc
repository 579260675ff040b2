// Statistics views: Triton's stats JSON and Prometheus text exposition format 0.0.4.
#include "serve/metrics.h"

#include <algorithm>
#include <sstream>

namespace scalebert::serve {

namespace {

struct MetricInfo {
  const char* name;
  const char* type;
  const char* help;
};
constexpr MetricInfo kMetrics[] = {
    {"nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes"},
    {"nv_inference_request_failure", "counter", "Number of failed inference requests, all batch sizes"},
    {"nv_inference_count", "counter", "Number of inferences performed (batch items)"},
    {"nv_inference_exec_count", "counter", "Number of model executions performed (batches)"},
    {"nv_inference_request_duration_us", "counter", "Cumulative inference request duration in microseconds"},
    {"nv_inference_queue_duration_us", "counter", "Cumulative inference queuing duration in microseconds"},
    {"nv_inference_compute_input_duration_us", "counter", "Cumulative compute input duration in microseconds"},
    {"nv_inference_compute_infer_duration_us", "counter", "Cumulative compute inference duration in microseconds"},
    {"nv_inference_compute_output_duration_us", "counter", "Cumulative inference compute output duration in microseconds"},
    {"nv_inference_request_latency_us", "histogram", "Inference request latency in microseconds (successful requests)"},
};

std::string labels_of(const std::string& name, const std::string& version) {
  // Model names come from folder names; quotes and backslashes are escaped as the format requires.
  std::string escaped;
  for (char c : name) {
    if (c == '"' || c == '\\') escaped.push_back('\\');
    if (c == '\n') {
      escaped += "\\n";
      continue;
    }
    escaped.push_back(c);
  }
  return "model=\"" + escaped + "\",version=\"" + version + "\"";
}

void sample(std::string& out, const char* metric, const std::string& labels, uint64_t value) {
  out += metric;
  out += '{';
  out += labels;
  out += "} ";
  out += std::to_string(value);
  out += '\n';
}

}  // namespace

nlohmann::json DurationStat::to_json() const {
  return {{"count", count.load(std::memory_order_relaxed)}, {"ns", ns.load(std::memory_order_relaxed)}};
}

void LatencyHistogram::observe(uint64_t microseconds) {
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(kBoundsUs.begin(), kBoundsUs.end(), microseconds) - kBoundsUs.begin());
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(microseconds, std::memory_order_relaxed);
}

void LatencyHistogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= kBoundsUs.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    const std::string le = i < kBoundsUs.size() ? std::to_string(kBoundsUs[i]) : "+Inf";
    out += name + "_bucket{" + labels + ",le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum{" + labels + "} " + std::to_string(sum_us_.load(std::memory_order_relaxed)) + "\n";
  out += name + "_count{" + labels + "} " + std::to_string(cumulative) + "\n";
}

void ModelStats::add_batch(int64_t size, uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns) {
  std::lock_guard lock(batch_mutex_);
  BatchStat& stat = batches_[size];
  stat.count += 1;
  stat.input_ns += input_ns;
  stat.infer_ns += infer_ns;
  stat.output_ns += output_ns;
}

nlohmann::json ModelStats::to_json(const std::string& name, const std::string& version) const {
  nlohmann::json batch_stats = nlohmann::json::array();
  {
    std::lock_guard lock(batch_mutex_);
    for (const auto& [size, stat] : batches_) {
      batch_stats.push_back({{"batch_size", size},
                             {"compute_input", {{"count", stat.count}, {"ns", stat.input_ns}}},
                             {"compute_infer", {{"count", stat.count}, {"ns", stat.infer_ns}}},
                             {"compute_output", {{"count", stat.count}, {"ns", stat.output_ns}}}});
    }
  }
  return {{"name", name},
          {"version", version},
          {"last_inference", last_inference_ms.load(std::memory_order_relaxed)},
          {"inference_count", inference_count.load(std::memory_order_relaxed)},
          {"execution_count", execution_count.load(std::memory_order_relaxed)},
          {"inference_stats",
           {{"success", success.to_json()},
            {"fail", fail.to_json()},
            {"queue", queue.to_json()},
            {"compute_input", compute_input.to_json()},
            {"compute_infer", compute_infer.to_json()},
            {"compute_output", compute_output.to_json()}}},
          {"batch_stats", batch_stats}};
}

void ModelStats::render(std::string& out, const std::string& name, const std::string& version) const {
  const std::string labels = labels_of(name, version);
  auto us = [](const DurationStat& stat) { return stat.ns.load(std::memory_order_relaxed) / 1000; };
  sample(out, "nv_inference_request_success", labels, success.count.load(std::memory_order_relaxed));
  sample(out, "nv_inference_request_failure", labels, fail.count.load(std::memory_order_relaxed));
  sample(out, "nv_inference_count", labels, inference_count.load(std::memory_order_relaxed));
  sample(out, "nv_inference_exec_count", labels, execution_count.load(std::memory_order_relaxed));
  sample(out, "nv_inference_request_duration_us", labels, us(success) + us(fail));
  sample(out, "nv_inference_queue_duration_us", labels, us(queue));
  sample(out, "nv_inference_compute_input_duration_us", labels, us(compute_input));
  sample(out, "nv_inference_compute_infer_duration_us", labels, us(compute_infer));
  sample(out, "nv_inference_compute_output_duration_us", labels, us(compute_output));
  latency.render(out, "nv_inference_request_latency_us", labels);
}

std::string prometheus_text(const std::string& samples) {
  // Samples of one metric must be contiguous: regroup the per-model lines by metric name.
  std::string out;
  std::istringstream lines(samples);
  std::vector<std::string> all;
  for (std::string line; std::getline(lines, line);) all.push_back(line);
  for (const MetricInfo& metric : kMetrics) {
    out += std::string("# HELP ") + metric.name + " " + metric.help + "\n";
    out += std::string("# TYPE ") + metric.name + " " + metric.type + "\n";
    const std::string prefix = metric.name;
    for (const std::string& line : all) {
      const size_t brace = line.find('{');
      std::string base = line.substr(0, brace);
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string s = suffix;
        if (std::string_view(metric.type) == "histogram" && base.size() > s.size() &&
            base.compare(base.size() - s.size(), s.size(), s) == 0 && base.substr(0, base.size() - s.size()) == prefix) {
          base = prefix;
        }
      }
      if (base == prefix) out += line + "\n";
    }
  }
  return out;
}

}  // namespace scalebert::serve
