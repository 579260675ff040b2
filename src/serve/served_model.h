// One loaded version of a served model: the task model (weights packed once), a dynamic batcher,
// and `instance_group.count` instances, each a thread with its own InferenceSession (its own
// execution plan and activation memory) over the shared weights, taking batches concurrently.
//
// Lifetime: requests hold a shared_ptr, so unloading or replacing a version never cuts a request
// in flight; the destructor runs when the last holder lets go, drains the queue and joins the
// instances.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/model_config.h"
#include "serve/protocol.h"
#include "serve/task.h"

namespace scalebert::serve {

struct ServeLimits {
  int64_t default_max_queue_size = 256;  // when config.pbtxt sets none
  int threads_per_instance = 0;           // 0: parameters.threads, else cores / instances
};

class ServedModel {
 public:
  // Loads the model folder `directory` (f32, bf16 or int8; TaskModel::load) as version `version`
  // of `config` and starts its instances.
  static std::shared_ptr<ServedModel> load(const ModelConfig& config, int64_t version,
                                           const std::filesystem::path& directory, const ServeLimits& limits);
  ~ServedModel();
  ServedModel(const ServedModel&) = delete;
  ServedModel& operator=(const ServedModel&) = delete;

  // Runs one request through the batcher and waits for it. Throws InvalidArgument (400) for a bad
  // request, Unavailable (503) for a full queue or an expired timeout.
  InferResponse infer(const InferRequest& request);

  const ModelConfig& config() const { return config_; }
  int64_t version() const { return version_; }
  const TaskModel& task_model() const { return *task_; }
  const ModelStats& stats() const { return stats_; }
  int64_t queued() const { return batcher_->queued(); }
  int threads_per_instance() const { return threads_; }

  // KServe v2 model metadata.
  nlohmann::json metadata() const;

 private:
  ServedModel() = default;
  void instance_loop(int instance);

  ModelConfig config_;
  int64_t version_ = 0;
  std::unique_ptr<TaskModel> task_;
  std::unique_ptr<DynamicBatcher> batcher_;
  std::vector<std::thread> instances_;
  int threads_ = 1;
  std::chrono::microseconds default_timeout_{0};
  ModelStats stats_;
};

}  // namespace scalebert::serve
