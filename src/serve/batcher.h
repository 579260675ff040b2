// The dynamic batcher of one model version: a bounded FIFO of requests, from which every idle
// instance takes its next batch.
//
// Cutting rule (Triton's): requests are taken whole, in arrival order, while their sequences fit in
// max_batch_size. The batch is cut at once when it is full (the next request would not fit, or it
// holds max_batch_size sequences) or when its size is a preferred batch size (the largest one the
// queue reaches); otherwise the instance waits until the oldest request has waited
// max_queue_delay, then takes what there is. Without dynamic batching every request is its own batch.
// Requests whose deadline passed while queued are not run: they are handed back as expired.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

namespace scalebert::serve {

using Clock = std::chrono::steady_clock;

// A request as the batcher sees it.
class BatchJob {
 public:
  virtual ~BatchJob() = default;
  // Sequences this request adds to a batch (>= 1).
  virtual int64_t batch_size() const = 0;

  Clock::time_point enqueued{};
  Clock::time_point deadline = Clock::time_point::max();
};

struct BatcherOptions {
  bool dynamic = false;  // false: one request per batch
  int64_t max_batch_size = 1;
  std::vector<int64_t> preferred_batch_sizes;
  std::chrono::microseconds max_queue_delay{0};
  int64_t max_queue_size = 256;  // queued requests; a full queue refuses
};

class DynamicBatcher {
 public:
  explicit DynamicBatcher(BatcherOptions options);

  // Queues a job (stamping `enqueued`). False when the queue is full or the batcher is shut down.
  bool enqueue(std::shared_ptr<BatchJob> job);

  struct Batch {
    std::vector<std::shared_ptr<BatchJob>> jobs;     // to run, in arrival order
    std::vector<std::shared_ptr<BatchJob>> expired;  // deadline passed while queued
  };
  // Blocks until a batch is due (see the cutting rule) and returns it; after shutdown() it returns
  // what is still queued, without waiting for delays, and then empty batches.
  Batch next_batch();

  // Stops taking jobs; queued jobs still drain through next_batch().
  void shutdown();

  int64_t queued() const;
  const BatcherOptions& options() const { return options_; }

 private:
  // Jobs (from the front) a batch cut now would take, and whether the rule says to cut now.
  size_t plan(bool& cut_now) const;

  BatcherOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::shared_ptr<BatchJob>> queue_;
  bool shutdown_ = false;
};

}  // namespace scalebert::serve
