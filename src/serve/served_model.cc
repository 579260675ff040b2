// ServedModel: request -> job -> batcher -> instance thread -> response, with the statistics of
// every step.
#include "serve/served_model.h"

#include <algorithm>
#include <omp.h>

#include "core/error.h"
#include "core/threads.h"
#include "serve/status.h"

namespace scalebert::serve {

namespace {

uint64_t elapsed_ns(Clock::time_point from, Clock::time_point to) {
  return static_cast<uint64_t>(std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count()));
}

nlohmann::json tensor_metadata(const TensorConfig& tensor) {
  std::vector<int64_t> shape{-1};
  shape.insert(shape.end(), tensor.dims.begin(), tensor.dims.end());
  return {{"name", tensor.name}, {"datatype", v2_name(tensor.data_type)}, {"shape", shape}};
}

}  // namespace

std::shared_ptr<ServedModel> ServedModel::load(const ModelConfig& config, int64_t version,
                                               const std::filesystem::path& directory, const ServeLimits& limits) {
  std::shared_ptr<ServedModel> model(new ServedModel());
  model->config_ = config;
  model->version_ = version;
  {
    // Loading packs weights with the calling thread's OpenMP team (the server's main, request or
    // watcher thread); end that team's pool afterwards, or its idle workers would stop the
    // instances' teams from spinning (see release_thread_pool).
    struct ReleasePool {
      ~ReleasePool() { release_thread_pool(); }
    } release_after_loading;
    model->task_ = TaskModel::load(config, directory);
  }

  BatcherOptions options;
  options.max_batch_size = config.max_batch_size;
  options.max_queue_size = limits.default_max_queue_size;
  if (config.dynamic_batching) {
    options.dynamic = true;
    options.preferred_batch_sizes = config.dynamic_batching->preferred_batch_size;
    options.max_queue_delay = std::chrono::microseconds(config.dynamic_batching->max_queue_delay_microseconds);
    if (config.dynamic_batching->max_queue_size > 0) options.max_queue_size = config.dynamic_batching->max_queue_size;
    model->default_timeout_ = std::chrono::microseconds(config.dynamic_batching->default_timeout_microseconds);
  }
  model->batcher_ = std::make_unique<DynamicBatcher>(options);

  // Intra-op threads per instance: the config's "threads", else the cores shared among instances.
  const std::string threads = config.parameter("threads", "");
  if (limits.threads_per_instance > 0) {
    model->threads_ = limits.threads_per_instance;
  } else if (!threads.empty()) {
    try {
      model->threads_ = std::stoi(threads);
    } catch (const std::exception&) {
      model->threads_ = 0;
    }
    check<FormatError>(model->threads_ >= 1, "parameter threads must be an integer >= 1, got \"", threads, "\"");
  } else {
    model->threads_ = std::max(1, omp_get_num_procs() / static_cast<int>(config.instance_count));
  }
  for (int64_t i = 0; i < config.instance_count; ++i) {
    model->instances_.emplace_back([raw = model.get(), i] { raw->instance_loop(static_cast<int>(i)); });
  }
  return model;
}

ServedModel::~ServedModel() {
  if (batcher_ == nullptr) return;  // load failed before the batcher existed
  batcher_->shutdown();  // queued requests still run: nothing admitted is dropped
  for (std::thread& instance : instances_) instance.join();
}

void ServedModel::instance_loop(int instance) {
  // OpenMP's thread count is a per-thread setting: each instance sizes its own kernels' team.
  set_num_threads(threads_);
  InferenceSession session(task_->weights);
  PackedBatch batch;
  std::vector<InferJob*> jobs;
  while (true) {
    DynamicBatcher::Batch next = batcher_->next_batch();
    for (const auto& expired : next.expired) {
      auto* job = static_cast<InferJob*>(expired.get());
      job->fail(503, "request timed out in the queue of model '" + config_.name + "'");
    }
    if (next.jobs.empty()) {
      if (next.expired.empty()) return;  // shut down and drained
      continue;
    }
    jobs.clear();
    int64_t size = 0;
    for (const auto& job : next.jobs) {
      jobs.push_back(static_cast<InferJob*>(job.get()));
      size += job->batch_size();
    }
    try {
      run_batch(*task_, session, jobs, batch);
      stats_.execution_count.fetch_add(1, std::memory_order_relaxed);
      stats_.add_batch(size, jobs[0]->compute_input_ns, jobs[0]->compute_infer_ns, jobs[0]->compute_output_ns);
      for (InferJob* job : jobs) job->complete();
    } catch (const std::exception& error) {
      // Inputs were checked when the request was prepared, so this is the server's fault (500).
      for (InferJob* job : jobs) job->fail(500, std::string("instance ") + std::to_string(instance) + ": " + error.what());
    }
  }
}

InferResponse ServedModel::infer(const InferRequest& request) {
  const auto start = Clock::now();
  // Request threads (HTTP, gRPC) run small kernels (pooling, normalization, QA softmax) serially:
  // a team here would start one more worker pool per request thread (see release_thread_pool).
  const ScopedNumThreads serial(1);
  try {
    std::shared_ptr<InferJob> job = prepare_job(*task_, config_, request);
    const int64_t timeout_us = request.timeout_microseconds > 0 ? request.timeout_microseconds : default_timeout_.count();
    if (timeout_us > 0) job->deadline = start + std::chrono::microseconds(timeout_us);
    std::future<void> done = job->future();
    if (!batcher_->enqueue(job)) {
      throw Unavailable(str_cat("model '", config_.name, "' version ", version_, ": queue full (",
                                batcher_->options().max_queue_size, " requests) or shutting down"));
    }
    done.wait();
    if (job->error_status == 503) throw Unavailable(job->error_message);
    if (job->error_status != 0) throw Error(job->error_message);

    InferResponse response;
    response.model_name = config_.name;
    response.model_version = std::to_string(version_);
    response.id = request.id;
    response.outputs = finish_job(*task_, *job);

    const auto end = Clock::now();
    stats_.success.add(elapsed_ns(start, end));
    stats_.queue.add(elapsed_ns(job->enqueued, job->started));
    stats_.compute_input.add(static_cast<uint64_t>(job->compute_input_ns));
    stats_.compute_infer.add(static_cast<uint64_t>(job->compute_infer_ns));
    stats_.compute_output.add(static_cast<uint64_t>(job->compute_output_ns) + elapsed_ns(job->computed, end));
    stats_.inference_count.fetch_add(static_cast<uint64_t>(job->items), std::memory_order_relaxed);
    stats_.latency.observe(elapsed_ns(start, end) / 1000);
    stats_.last_inference_ms.store(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                             std::chrono::system_clock::now().time_since_epoch())
                                                             .count()),
                                   std::memory_order_relaxed);
    return response;
  } catch (...) {
    stats_.fail.add(elapsed_ns(start, Clock::now()));
    throw;
  }
}

nlohmann::json ServedModel::metadata() const {
  nlohmann::json inputs = nlohmann::json::array(), outputs = nlohmann::json::array();
  for (const TensorConfig& tensor : config_.inputs) inputs.push_back(tensor_metadata(tensor));
  for (const TensorConfig& tensor : config_.outputs) outputs.push_back(tensor_metadata(tensor));
  return {{"name", config_.name},
          {"versions", {std::to_string(version_)}},
          {"platform", "scalebert"},
          {"inputs", inputs},
          {"outputs", outputs}};
}

}  // namespace scalebert::serve
