// Dynamic batcher: the cutting rule over a mutex-guarded deque (see batcher.h).
#include "serve/batcher.h"

#include <algorithm>

#include "core/error.h"

namespace scalebert::serve {

DynamicBatcher::DynamicBatcher(BatcherOptions options) : options_(std::move(options)) {
  check(options_.max_batch_size >= 1, "max batch size must be >= 1, got ", options_.max_batch_size);
  check(options_.max_queue_size >= 1, "max queue size must be >= 1, got ", options_.max_queue_size);
  std::sort(options_.preferred_batch_sizes.begin(), options_.preferred_batch_sizes.end());
}

bool DynamicBatcher::enqueue(std::shared_ptr<BatchJob> job) {
  {
    std::lock_guard lock(mutex_);
    if (shutdown_ || static_cast<int64_t>(queue_.size()) >= options_.max_queue_size) return false;
    job->enqueued = Clock::now();
    queue_.push_back(std::move(job));
  }
  changed_.notify_all();
  return true;
}

size_t DynamicBatcher::plan(bool& cut_now) const {
  if (!options_.dynamic) {
    cut_now = true;
    return 1;
  }
  int64_t total = 0;
  size_t taken = 0;
  size_t preferred_cut = 0;  // jobs of the largest preferred size reached
  for (const auto& job : queue_) {
    const int64_t size = job->batch_size();
    // A single request larger than max_batch_size (QA windows) still runs, alone.
    if (taken > 0 && total + size > options_.max_batch_size) {
      cut_now = true;
      return preferred_cut > 0 ? preferred_cut : taken;
    }
    total += size;
    ++taken;
    if (std::binary_search(options_.preferred_batch_sizes.begin(), options_.preferred_batch_sizes.end(), total)) {
      preferred_cut = taken;
    }
    if (total >= options_.max_batch_size) {
      cut_now = true;
      return taken;
    }
  }
  // Every queued job fits: a preferred size reached is cut now (Triton does the same).
  if (preferred_cut > 0) {
    cut_now = true;
    return preferred_cut;
  }
  cut_now = false;
  return taken;
}

DynamicBatcher::Batch DynamicBatcher::next_batch() {
  std::unique_lock lock(mutex_);
  Batch batch;
  while (true) {
    if (queue_.empty()) {
      if (shutdown_) return batch;
      changed_.wait(lock);
      continue;
    }
    // Expired jobs leave the queue first; they must not hold a batch slot.
    const auto now = Clock::now();
    for (auto it = queue_.begin(); it != queue_.end();) {
      if ((*it)->deadline <= now) {
        batch.expired.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    if (!batch.expired.empty() && queue_.empty()) return batch;
    if (queue_.empty()) continue;
    bool cut_now = false;
    size_t count = plan(cut_now);
    const auto due = queue_.front()->enqueued + options_.max_queue_delay;
    if (!cut_now && !shutdown_ && now < due) {
      if (!batch.expired.empty()) return batch;  // hand back the expired ones without delay
      // Wake at the oldest job's due time, or earlier at its deadline or a new arrival.
      auto wake = due;
      for (const auto& job : queue_) wake = std::min(wake, job->deadline);
      changed_.wait_until(lock, wake);
      continue;
    }
    count = std::max<size_t>(count, 1);
    for (size_t i = 0; i < count; ++i) {
      batch.jobs.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    // Another idle instance may find a batch due in what is left.
    if (!queue_.empty()) changed_.notify_one();
    return batch;
  }
}

void DynamicBatcher::shutdown() {
  {
    std::lock_guard lock(mutex_);
    shutdown_ = true;
  }
  changed_.notify_all();
}

int64_t DynamicBatcher::queued() const {
  std::lock_guard lock(mutex_);
  return static_cast<int64_t>(queue_.size());
}

}  // namespace scalebert::serve
