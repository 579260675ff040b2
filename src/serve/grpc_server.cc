// KServe v2 over gRPC: the GRPCInferenceService handlers and the ModelInferRequest/Response
// conversions, over InferenceServer's repository. Every handler turns exceptions into a gRPC status
// (the mapping of status.h's HTTP statuses), so no RPC can take the server down; on a stream, into
// a response with error_message set.
#include "serve/grpc_server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "grpc_service.grpc.pb.h"
#include "serve/server.h"
#include "serve/status.h"

namespace scalebert::serve {

namespace {

using Json = nlohmann::json;

// Elements a request may declare: as protocol.cc, far from overflow; the message size limit is the
// real bound.
constexpr int64_t kMaxElements = int64_t{1} << 31;

int64_t checked_numel(const google::protobuf::RepeatedField<int64_t>& shape, std::string_view name) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    check(dim >= 0, "input '", name, "': negative dimension ", dim, " in its shape");
    if (dim != 0 && count > kMaxElements / dim) throw InvalidArgument(str_cat("input '", name, "': shape too large"));
    count *= dim;
  }
  return count;
}

std::optional<int64_t> parse_version(const std::string& text) {
  if (text.empty()) return std::nullopt;
  int64_t version = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (error != std::errc() || end != text.data() + text.size()) throw NotFound(str_cat("no version \"", text, "\""));
  return version;
}

std::string describe(const inference::InferParameter& parameter) {
  switch (parameter.parameter_choice_case()) {
    case inference::InferParameter::kBoolParam: return parameter.bool_param() ? "bool true" : "bool false";
    case inference::InferParameter::kInt64Param: return str_cat("int64 ", parameter.int64_param());
    case inference::InferParameter::kStringParam: return str_cat("string \"", parameter.string_param(), "\"");
    case inference::InferParameter::kDoubleParam: return str_cat("double ", parameter.double_param());
    case inference::InferParameter::kUint64Param: return str_cat("uint64 ", parameter.uint64_param());
    default: return "no value";
  }
}

Json parameter_json(const inference::InferParameter& parameter) {
  switch (parameter.parameter_choice_case()) {
    case inference::InferParameter::kBoolParam: return parameter.bool_param();
    case inference::InferParameter::kInt64Param: return parameter.int64_param();
    case inference::InferParameter::kStringParam: return parameter.string_param();
    case inference::InferParameter::kDoubleParam: return parameter.double_param();
    case inference::InferParameter::kUint64Param: return parameter.uint64_param();
    default: return nullptr;
  }
}

// Elements of the typed field matching `type`, appended to `tensor`; every other field must be
// empty, so that data in the wrong field is an error rather than a silently empty tensor.
void decode_typed(const inference::InferTensorContents& contents, int64_t numel, WireTensor& tensor) {
  const DataType type = tensor.datatype;
  const char* field = "";
  int64_t count = 0;
  auto narrow = [&](int64_t value, int64_t low, int64_t high) {
    check(value >= low && value <= high, "input '", tensor.name, "': ", value, " is out of range for ", v2_name(type));
    tensor.ints.push_back(value);
  };
  switch (type) {
    case DataType::kBool:
      field = "bool_contents";
      count = contents.bool_contents_size();
      for (bool value : contents.bool_contents()) tensor.ints.push_back(value ? 1 : 0);
      break;
    case DataType::kUint8:
      field = "uint_contents";
      count = contents.uint_contents_size();
      for (uint32_t value : contents.uint_contents()) narrow(value, 0, 255);
      break;
    case DataType::kInt8: case DataType::kInt16: case DataType::kInt32: {
      field = "int_contents";
      count = contents.int_contents_size();
      const int64_t high = type == DataType::kInt8 ? 127 : type == DataType::kInt16 ? 32767 : 2147483647;
      for (int32_t value : contents.int_contents()) narrow(value, -high - 1, high);
      break;
    }
    case DataType::kInt64:
      field = "int64_contents";
      count = contents.int64_contents_size();
      tensor.ints.assign(contents.int64_contents().begin(), contents.int64_contents().end());
      break;
    case DataType::kFp32:
      field = "fp32_contents";
      count = contents.fp32_contents_size();
      tensor.floats.assign(contents.fp32_contents().begin(), contents.fp32_contents().end());
      break;
    case DataType::kFp64:
      field = "fp64_contents";
      count = contents.fp64_contents_size();
      for (double value : contents.fp64_contents()) tensor.floats.push_back(static_cast<float>(value));
      break;
    case DataType::kBytes:
      field = "bytes_contents";
      count = contents.bytes_contents_size();
      tensor.strings.assign(contents.bytes_contents().begin(), contents.bytes_contents().end());
      break;
    case DataType::kFp16: case DataType::kBf16:
      throw InvalidArgument(str_cat("input '", tensor.name, "': ", v2_name(type),
                                    " has no typed contents; send it in raw_input_contents"));
  }
  const int64_t total = contents.bool_contents_size() + contents.int_contents_size() + contents.int64_contents_size() +
                        contents.uint_contents_size() + contents.uint64_contents_size() +
                        contents.fp32_contents_size() + contents.fp64_contents_size() + contents.bytes_contents_size();
  check(total == count, "input '", tensor.name, "': ", v2_name(type), " data goes in contents.", field,
        ", but other contents fields hold ", total - count, " elements");
  check(count == numel, "input '", tensor.name, "': shape has ", numel, " elements but contents.", field, " has ",
        count);
}

void encode_typed(const WireTensor& tensor, inference::InferTensorContents& contents) {
  switch (tensor.datatype) {
    case DataType::kBool:
      for (int64_t value : tensor.ints) contents.add_bool_contents(value != 0);
      break;
    case DataType::kUint8:
      for (int64_t value : tensor.ints) contents.add_uint_contents(static_cast<uint32_t>(value));
      break;
    case DataType::kInt8: case DataType::kInt16: case DataType::kInt32:
      for (int64_t value : tensor.ints) contents.add_int_contents(static_cast<int32_t>(value));
      break;
    case DataType::kInt64:
      contents.mutable_int64_contents()->Add(tensor.ints.begin(), tensor.ints.end());
      break;
    case DataType::kFp32:
      contents.mutable_fp32_contents()->Add(tensor.floats.begin(), tensor.floats.end());
      break;
    case DataType::kFp64:
      for (float value : tensor.floats) contents.add_fp64_contents(value);
      break;
    case DataType::kBytes:
      for (const std::string& value : tensor.strings) contents.add_bytes_contents(value);
      break;
    case DataType::kFp16: case DataType::kBf16:
      throw Unsupported(str_cat("typed contents of ", v2_name(tensor.datatype), " output '", tensor.name, "'"));
  }
}

void check_no_shared_memory(const google::protobuf::Map<std::string, inference::InferParameter>& parameters,
                            const char* what, const std::string& name) {
  check(parameters.find("shared_memory_region") == parameters.end(), what, " '", name,
        "': shared memory is not supported");
}

grpc::Status to_status(const std::exception& error) {
  switch (http_status(error)) {
    case 400: return {grpc::StatusCode::INVALID_ARGUMENT, error.what()};
    case 404: return {grpc::StatusCode::NOT_FOUND, error.what()};
    case 503: return {grpc::StatusCode::UNAVAILABLE, error.what()};
    default: return {grpc::StatusCode::INTERNAL, error.what()};
  }
}

// Runs `body`; an escaping exception becomes the gRPC status of its HTTP status.
template <typename Body>
grpc::Status guarded(Body&& body) {
  try {
    body();
    return grpc::Status::OK;
  } catch (const std::exception& error) {
    return to_status(error);
  } catch (...) {
    return {grpc::StatusCode::INTERNAL, "unknown error"};
  }
}

void fill_metadata(const Json& json, google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>& list) {
  for (const Json& item : json) {
    auto* tensor = list.Add();
    tensor->set_name(item.at("name").get<std::string>());
    tensor->set_datatype(item.at("datatype").get<std::string>());
    for (const Json& dim : item.at("shape")) tensor->add_shape(dim.get<int64_t>());
  }
}

void fill_duration(const Json& json, inference::StatisticDuration& duration) {
  duration.set_count(json.value("count", uint64_t{0}));
  duration.set_ns(json.value("ns", uint64_t{0}));
}

// ModelStats::to_json (Triton's HTTP statistics) as the ModelStatistics message: one source for both.
void fill_statistics(const Json& json, inference::ModelStatistics& stats) {
  stats.set_name(json.at("name").get<std::string>());
  stats.set_version(json.at("version").get<std::string>());
  stats.set_last_inference(json.value("last_inference", uint64_t{0}));
  stats.set_inference_count(json.value("inference_count", uint64_t{0}));
  stats.set_execution_count(json.value("execution_count", uint64_t{0}));
  const Json& infer = json.at("inference_stats");
  auto* out = stats.mutable_inference_stats();
  fill_duration(infer.at("success"), *out->mutable_success());
  fill_duration(infer.at("fail"), *out->mutable_fail());
  fill_duration(infer.at("queue"), *out->mutable_queue());
  fill_duration(infer.at("compute_input"), *out->mutable_compute_input());
  fill_duration(infer.at("compute_infer"), *out->mutable_compute_infer());
  fill_duration(infer.at("compute_output"), *out->mutable_compute_output());
  for (const Json& batch : json.at("batch_stats")) {
    auto* item = stats.add_batch_stats();
    item->set_batch_size(batch.at("batch_size").get<uint64_t>());
    fill_duration(batch.at("compute_input"), *item->mutable_compute_input());
    fill_duration(batch.at("compute_infer"), *item->mutable_compute_infer());
    fill_duration(batch.at("compute_output"), *item->mutable_compute_output());
  }
}

inference::DataType config_data_type(DataType type) {
  inference::DataType value = inference::TYPE_INVALID;
  inference::DataType_Parse(std::string(config_name(type)), &value);
  return value;
}

void fill_config(const ModelConfig& config, inference::ModelConfig& out) {
  out.set_name(config.name);
  out.set_platform(config.platform);
  out.set_backend(config.backend);
  out.set_max_batch_size(static_cast<int32_t>(config.max_batch_size));
  for (const TensorConfig& tensor : config.inputs) {
    auto* input = out.add_input();
    input->set_name(tensor.name);
    input->set_data_type(config_data_type(tensor.data_type));
    input->mutable_dims()->Add(tensor.dims.begin(), tensor.dims.end());
  }
  for (const TensorConfig& tensor : config.outputs) {
    auto* output = out.add_output();
    output->set_name(tensor.name);
    output->set_data_type(config_data_type(tensor.data_type));
    output->mutable_dims()->Add(tensor.dims.begin(), tensor.dims.end());
  }
  if (config.dynamic_batching) {
    auto* batching = out.mutable_dynamic_batching();
    for (int64_t size : config.dynamic_batching->preferred_batch_size) {
      batching->add_preferred_batch_size(static_cast<int32_t>(size));
    }
    batching->set_max_queue_delay_microseconds(static_cast<uint64_t>(config.dynamic_batching->max_queue_delay_microseconds));
    auto* policy = batching->mutable_default_queue_policy();
    policy->set_max_queue_size(static_cast<uint32_t>(config.dynamic_batching->max_queue_size));
    policy->set_default_timeout_microseconds(static_cast<uint64_t>(config.dynamic_batching->default_timeout_microseconds));
  }
  auto* group = out.add_instance_group();
  group->set_count(static_cast<int32_t>(config.instance_count));
  inference::ModelInstanceGroup_Kind kind = inference::ModelInstanceGroup_Kind_KIND_CPU;
  inference::ModelInstanceGroup_Kind_Parse(config.instance_kind, &kind);
  group->set_kind(kind);
  auto* policy = out.mutable_version_policy();
  switch (config.version_policy.kind) {
    case VersionPolicy::Kind::kLatest:
      policy->mutable_latest()->set_num_versions(static_cast<uint32_t>(config.version_policy.num_versions));
      break;
    case VersionPolicy::Kind::kAll:
      policy->mutable_all();
      break;
    case VersionPolicy::Kind::kSpecific:
      policy->mutable_specific()->mutable_versions()->Add(config.version_policy.versions.begin(),
                                                          config.version_policy.versions.end());
      break;
  }
  for (const auto& [key, value] : config.parameters) (*out.mutable_parameters())[key].set_string_value(value);
}

}  // namespace

InferRequest infer_request_from_grpc(const inference::ModelInferRequest& message) {
  InferRequest request;
  request.id = message.id();
  for (const auto& [key, value] : message.parameters()) {
    if (key == "timeout") {
      check(value.has_int64_param() && value.int64_param() >= 0,
            "parameter timeout must be a non-negative int64_param (microseconds), got ", describe(value));
      request.timeout_microseconds = value.int64_param();
    }
    for (const char* unsupported : {"sequence_id", "priority"}) {
      check(key != unsupported, "parameter ", unsupported, " is not supported");
    }
    request.parameters[key] = parameter_json(value);
  }
  const bool raw = message.raw_input_contents_size() > 0;
  check(!raw || message.raw_input_contents_size() == message.inputs_size(), "raw_input_contents has ",
        message.raw_input_contents_size(), " entries for ", message.inputs_size(),
        " inputs (one per input, in input order)");
  check(message.inputs_size() > 0, "the request has no inputs");
  for (int i = 0; i < message.inputs_size(); ++i) {
    const auto& input = message.inputs(i);
    WireTensor tensor;
    tensor.name = input.name();
    check(!tensor.name.empty(), "input ", i, " has no name");
    try {
      tensor.datatype = data_type_from_v2(input.datatype());
    } catch (const InvalidArgument& error) {
      throw InvalidArgument(str_cat("input '", tensor.name, "': ", error.what()));
    }
    tensor.shape.assign(input.shape().begin(), input.shape().end());
    const int64_t numel = checked_numel(input.shape(), tensor.name);
    check_no_shared_memory(input.parameters(), "input", tensor.name);
    if (raw) {
      check(!input.has_contents() || input.contents().ByteSizeLong() == 0, "input '", tensor.name,
            "': both typed contents and raw_input_contents given");
      decode_raw_tensor(message.raw_input_contents(i), numel, tensor);
    } else {
      decode_typed(input.contents(), numel, tensor);
    }
    for (const WireTensor& earlier : request.inputs) {
      check(earlier.name != tensor.name, "input '", tensor.name, "' given twice");
    }
    request.inputs.push_back(std::move(tensor));
  }
  for (const auto& output : message.outputs()) {
    check(!output.name().empty(), "a requested output has no name");
    check(output.parameters().find("classification") == output.parameters().end(), "output '", output.name(),
          "': the classification extension is not supported (the model returns labels itself)");
    check_no_shared_memory(output.parameters(), "output", output.name());
    request.outputs.push_back({output.name(), false});
  }
  return request;
}

void infer_response_to_grpc(const InferResponse& response, bool typed, inference::ModelInferResponse& message) {
  message.set_model_name(response.model_name);
  message.set_model_version(response.model_version);
  message.set_id(response.id);
  for (const WireTensor& tensor : response.outputs) {
    auto* output = message.add_outputs();
    output->set_name(tensor.name);
    output->set_datatype(std::string(v2_name(tensor.datatype)));
    output->mutable_shape()->Add(tensor.shape.begin(), tensor.shape.end());
    if (typed) {
      encode_typed(tensor, *output->mutable_contents());
    } else {
      message.add_raw_output_contents(encode_raw_tensor(tensor));
    }
  }
}

namespace {

// ModelInfer's path, which ModelStreamInfer runs for each request of a stream: the model, the
// request decoded, its batch awaited, the response encoded. Throws the errors guarded() maps.
void model_infer(InferenceServer& server, const inference::ModelInferRequest& request,
                 inference::ModelInferResponse& response) {
  if (server.stopping()) throw Unavailable("the server is shutting down");
  const auto model = server.repository().get(request.model_name(), parse_version(request.model_version()));
  const InferRequest parsed = infer_request_from_grpc(request);
  // A client that writes typed contents reads typed contents back; raw otherwise (Triton's way).
  const bool typed = request.raw_input_contents_size() == 0;
  infer_response_to_grpc(model->infer(parsed), typed, response);
}

// One ModelStreamInfer call. The handler's thread reads requests into `pending_`; workers (threads
// of this stream, started while every one is busy, at most `max_in_flight_`) take them, each runs
// model_infer and waits for its batch, then writes the answer under `write_mutex_` (a sync stream
// takes one Write at a time). With `max_in_flight_` requests held, the reader reads no more until
// one is answered, so a client sending faster than the models answer meets gRPC's flow control.
//
// Ending: the client half-closes (Read false), the workers answer what is pending and exit, run()
// joins them and returns OK; or stop() marks the stream stopping, and once nothing is pending or
// running it cancels the call, which is what wakes a Read that waits for a request that may never come.
class InferStream {
 public:
  using Stream = grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>;

  InferStream(InferenceServer& server, grpc::ServerContext& context, Stream& stream, size_t max_in_flight)
      : server_(server), context_(context), stream_(stream), max_in_flight_(max_in_flight) {}
  ~InferStream() { close_and_join(); }
  InferStream(const InferStream&) = delete;
  InferStream& operator=(const InferStream&) = delete;

  // Serves the stream until the client half-closes or the call is cancelled; every request read has
  // been answered (or its answer failed to send) when it returns.
  grpc::Status run() {
    grpc::Status status = grpc::Status::OK;
    inference::ModelInferRequest request;
    while (stream_.Read(&request)) {
      std::unique_lock lock(mutex_);
      room_.wait(lock, [&] { return pending_.size() + busy_ < max_in_flight_; });
      pending_.push_back(std::move(request));
      request.Clear();
      if (pending_.size() > idle_) {
        try {
          workers_.emplace_back([this] { work(); });
        } catch (const std::system_error& error) {
          // With a worker left, the request waits for it; with none, nothing would ever answer.
          if (workers_.empty()) {
            status = {grpc::StatusCode::RESOURCE_EXHAUSTED, str_cat("cannot start a stream worker: ", error.what())};
            break;
          }
        }
      }
      work_.notify_one();
    }
    close_and_join();
    return status;  // after stop() cancelled the call, the client sees CANCELLED whatever this says
  }

  // Server shutdown: end the stream as soon as the requests it holds are answered.
  void stop() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    cancel_if_drained();
  }

 private:
  void work() {
    std::unique_lock lock(mutex_);
    while (true) {
      ++idle_;
      work_.wait(lock, [&] { return !pending_.empty() || closed_; });
      --idle_;
      if (pending_.empty()) return;  // closed, and every request taken
      const inference::ModelInferRequest request = std::move(pending_.front());
      pending_.pop_front();
      ++busy_;
      lock.unlock();
      answer(request);
      lock.lock();
      --busy_;
      room_.notify_one();
      cancel_if_drained();
    }
  }

  void answer(const inference::ModelInferRequest& request) {
    inference::ModelStreamInferResponse response;
    const grpc::Status status = guarded([&] { model_infer(server_, request, *response.mutable_infer_response()); });
    if (!status.ok()) {
      // tritonclient reads only error_message here; the id (Triton leaves it empty) lets a client
      // tell which of its requests failed.
      response.Clear();
      response.set_error_message(status.error_message());
      auto* identity = response.mutable_infer_response();
      identity->set_id(request.id());
      identity->set_model_name(request.model_name());
      identity->set_model_version(request.model_version());
    }
    std::lock_guard lock(write_mutex_);
    // False when the client has gone or the call was cancelled: the reader's Read fails too and
    // the stream ends; the other answers meet the same fate.
    stream_.Write(response);
  }

  // Under mutex_.
  void cancel_if_drained() {
    if (stopping_ && !cancelled_ && pending_.empty() && busy_ == 0) {
      cancelled_ = true;
      context_.TryCancel();
    }
  }

  void close_and_join() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    work_.notify_all();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
  }

  InferenceServer& server_;
  grpc::ServerContext& context_;
  Stream& stream_;
  const size_t max_in_flight_;
  std::vector<std::thread> workers_;  // the reader's thread alone starts and joins them
  std::mutex write_mutex_;            // one Write at a time
  std::mutex mutex_;                  // guards everything below
  std::condition_variable work_;      // a request is pending, or the stream closed
  std::condition_variable room_;      // a request was answered
  std::deque<inference::ModelInferRequest> pending_;  // read, not yet taken by a worker
  size_t idle_ = 0;                   // workers waiting for a request
  size_t busy_ = 0;                   // workers running one
  bool closed_ = false;               // no more requests will be read
  bool stopping_ = false;
  bool cancelled_ = false;
};

}  // namespace

// The service: each handler reads the shared repository and models of `server_`.
class GrpcServer::Service final : public inference::GRPCInferenceService::Service {
 public:
  Service(InferenceServer& server, size_t max_stream_in_flight)
      : server_(server), max_stream_in_flight_(max_stream_in_flight) {}

  // Ends open streams once their requests are answered, refuses new ones, and waits (until
  // `deadline`) for every stream's handler to return.
  void stop_streams(std::chrono::system_clock::time_point deadline) {
    std::unique_lock lock(streams_mutex_);
    streams_stopping_ = true;
    for (InferStream* stream : streams_) stream->stop();
    streams_ended_.wait_until(lock, deadline, [&] { return streams_.empty(); });
  }

  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* response) override {
    response->set_live(true);  // answering at all: the listener closes when the server stops
    return grpc::Status::OK;
  }

  grpc::Status ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* response) override {
    response->set_ready(server_.ready());
    return grpc::Status::OK;
  }

  grpc::Status ModelReady(grpc::ServerContext*, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override {
    return guarded([&] {
      bool ready = false;
      try {
        ready = !server_.stopping() && server_.repository().ready(request->name(), parse_version(request->version()));
      } catch (const NotFound&) {  // a version that is not a number is not ready, as over HTTP
      }
      response->set_ready(ready);
    });
  }

  grpc::Status ServerMetadata(grpc::ServerContext*, const inference::ServerMetadataRequest*,
                              inference::ServerMetadataResponse* response) override {
    response->set_name("scalebert");
    response->set_version("0.1.0");
    for (const char* extension : {"model_configuration", "model_repository", "statistics", "schedule_policy"}) {
      response->add_extensions(extension);
    }
    return grpc::Status::OK;
  }

  grpc::Status ModelMetadata(grpc::ServerContext*, const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response) override {
    return guarded([&] {
      const auto version = parse_version(request->version());
      const Json metadata = server_.repository().get(request->name(), version)->metadata();
      response->set_name(metadata.at("name").get<std::string>());
      response->set_platform(metadata.at("platform").get<std::string>());
      if (version) {
        response->add_versions(std::to_string(*version));
      } else {
        for (const auto& each : server_.repository().versions(request->name())) {
          response->add_versions(std::to_string(each->version()));
        }
      }
      fill_metadata(metadata.at("inputs"), *response->mutable_inputs());
      fill_metadata(metadata.at("outputs"), *response->mutable_outputs());
    });
  }

  grpc::Status ModelInfer(grpc::ServerContext*, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override {
    return guarded([&] { model_infer(server_, *request, *response); });
  }

  grpc::Status ModelStreamInfer(grpc::ServerContext* context, InferStream::Stream* stream) override {
    InferStream call(server_, *context, *stream, max_stream_in_flight_);
    {
      std::lock_guard lock(streams_mutex_);
      if (streams_stopping_) return {grpc::StatusCode::UNAVAILABLE, "the server is shutting down"};
      streams_.insert(&call);
    }
    grpc::Status status;
    try {
      status = call.run();
    } catch (const std::exception& error) {  // `call` still joins its workers when it goes
      status = to_status(error);
    }
    std::lock_guard lock(streams_mutex_);
    streams_.erase(&call);
    streams_ended_.notify_all();
    return status;
  }

  grpc::Status ModelConfig(grpc::ServerContext*, const inference::ModelConfigRequest* request,
                           inference::ModelConfigResponse* response) override {
    return guarded([&] {
      const auto model = server_.repository().get(request->name(), parse_version(request->version()));
      fill_config(model->config(), *response->mutable_config());
    });
  }

  grpc::Status ModelStatistics(grpc::ServerContext*, const inference::ModelStatisticsRequest* request,
                               inference::ModelStatisticsResponse* response) override {
    return guarded([&] {
      const auto version = parse_version(request->version());
      const auto models = request->name().empty() ? server_.repository().loaded()
                                                  : server_.repository().versions(request->name());
      for (const auto& model : models) {
        if (version && model->version() != *version) continue;
        fill_statistics(model->stats().to_json(model->config().name, std::to_string(model->version())),
                        *response->add_model_stats());
      }
      if (version && response->model_stats_size() == 0) {
        throw NotFound(str_cat("model '", request->name(), "' has no version ", *version));
      }
    });
  }

  grpc::Status RepositoryIndex(grpc::ServerContext*, const inference::RepositoryIndexRequest* request,
                               inference::RepositoryIndexResponse* response) override {
    return guarded([&] {
      check_repository_name(request->repository_name());
      for (const Json& item : server_.repository().index()) {
        const std::string state = item.value("state", "");
        if (request->ready() && state != "READY") continue;
        auto* model = response->add_models();
        model->set_name(item.value("name", ""));
        model->set_version(item.value("version", ""));
        model->set_state(state);
        model->set_reason(item.value("reason", ""));
      }
    });
  }

  grpc::Status RepositoryModelLoad(grpc::ServerContext*, const inference::RepositoryModelLoadRequest* request,
                                   inference::RepositoryModelLoadResponse*) override {
    return guarded([&] {
      if (server_.stopping()) throw Unavailable("the server is shutting down");
      check_repository_name(request->repository_name());
      check(request->parameters().empty(), "load parameter \"",
            request->parameters().empty() ? "" : request->parameters().begin()->first,
            "\" is not supported (models load from their folder's config.pbtxt)");
      server_.repository().load(request->model_name());
    });
  }

  grpc::Status RepositoryModelUnload(grpc::ServerContext*, const inference::RepositoryModelUnloadRequest* request,
                                     inference::RepositoryModelUnloadResponse*) override {
    // Parameters (tritonclient always sends unload_dependents) do not apply: no model depends on another.
    return guarded([&] {
      check_repository_name(request->repository_name());
      server_.repository().unload(request->model_name());
    });
  }

 private:
  static void check_repository_name(const std::string& name) {
    check(name.empty(), "repository_name \"", name, "\": the server has one repository; leave it empty");
  }

  InferenceServer& server_;
  const size_t max_stream_in_flight_;
  std::mutex streams_mutex_;
  std::condition_variable streams_ended_;
  std::set<InferStream*> streams_;  // open ModelStreamInfer calls
  bool streams_stopping_ = false;
};

GrpcServer::GrpcServer(InferenceServer& server, GrpcOptions options)
    : service_(std::make_unique<Service>(server, static_cast<size_t>(std::max(1, options.max_threads)))) {
  grpc::ServerBuilder builder;
  const std::string address = str_cat(options.host, ":", options.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(service_.get());
  // gRPC sets SO_REUSEPORT by default: a second server would bind the same port without error and
  // take half of the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<size_t>(options.max_message_bytes, static_cast<size_t>(std::numeric_limits<int>::max()))));
  builder.SetMaxSendMessageSize(-1);
  grpc::ResourceQuota quota("scalebert_grpc");
  quota.SetMaxThreads(std::max(2, options.max_threads));
  builder.SetResourceQuota(quota);
  server_ = builder.BuildAndStart();
  check<IoError>(server_ != nullptr && port_ > 0, "cannot bind gRPC to ", address, " (in use?)");
}

GrpcServer::~GrpcServer() { shutdown(std::chrono::milliseconds(0)); }

void GrpcServer::shutdown(std::chrono::milliseconds grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  const auto deadline = std::chrono::system_clock::now() + grace;
  // Streams first: an open stream (a call without end until its client half-closes) would hold
  // Shutdown for all of `grace`. And before Shutdown's GOAWAY: a stream still open then is the
  // connection's last, whose end closes the connection, racing the stream's status (the client
  // would see UNAVAILABLE "Socket closed" instead of the server's cancellation).
  service_->stop_streams(deadline);
  server_->Shutdown(deadline);
  server_->Wait();
}

}  // namespace scalebert::serve
