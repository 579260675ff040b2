// End-to-end tests of the server's gRPC front end (KServe v2 GRPCInferenceService): the tiny
// fixture models served in-process on ephemeral loopback ports, driven by gRPC C++ stubs generated
// from src/serve/proto. Token-tensor outputs are checked against transformers
// (reference.safetensors), text outputs against pipeline::TextPipeline, raw and typed contents
// against each other, statistics against the HTTP view of the same models, and every bad input
// against its status code and message. ModelStreamInfer (Triton's streaming extension) is checked
// against ModelInfer on the same requests, for errors that leave the stream open, for batching of a
// stream's concurrent requests, and for a server stop that ends open streams. Every call has a
// deadline.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <thread>

#include "grpc_service.grpc.pb.h"
#include "io/safetensors.h"
#include "pipeline/text_pipeline.h"
#include "serve/grpc_server.h"
#include "serve/server.h"
#include "serve_testing.h"
#include "testing.h"

namespace scalebert::serve {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

using testing::fixture_path;
using testing::kTokenInputs;
using testing::ServedModel;
using testing::TempDir;

// The served models; a repository's version folders are symlinks to these fixtures.
std::vector<ServedModel> served_models() {
  const std::string text = testing::kTextInput;
  return {
      {"cls", "tiny-bert-cls", testing::classification_config(text + "," + kTokenInputs)},
      {"qa", "tiny-bert-qa",
       R"(max_batch_size: 4
input [ { name: "question" data_type: TYPE_STRING dims: [ 1 ] }, { name: "context" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "answer" data_type: TYPE_STRING dims: [ 1 ] }, { name: "answer_start" data_type: TYPE_INT64 dims: [ 1 ] },
         { name: "answer_end" data_type: TYPE_INT64 dims: [ 1 ] }, { name: "score" data_type: TYPE_FP32 dims: [ 1 ] } ]
parameters { key: "task" value: { string_value: "qa" } }
parameters { key: "doc_stride" value: { string_value: "4" } }
parameters { key: "max_sequence_length" value: { string_value: "16" } })"},
      // One instance that waits 300 ms for a batch, with a queue of one.
      {"slow", "tiny-bert-cls",
       "max_batch_size: 8\ninput [ " + text + R"( ]
output [ { name: "label" data_type: TYPE_STRING dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 300000 default_queue_policy { max_queue_size: 1 } }
parameters { key: "task" value: { string_value: "classification" } })"},
  };
}

std::unique_ptr<GRPCInferenceService::Stub> connect(int port) {
  return GRPCInferenceService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
}

// A client context whose call fails rather than hangs.
std::unique_ptr<grpc::ClientContext> context(int seconds = 30) {
  auto made = std::make_unique<grpc::ClientContext>();
  made->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return made;
}

// Raw BYTES contents written here, independently of the server's codec: a 4-byte little-endian
// length before each element.
std::string raw_bytes(const std::vector<std::string>& elements) {
  std::string out;
  for (const std::string& element : elements) {
    const uint32_t length = static_cast<uint32_t>(element.size());
    out.append(reinterpret_cast<const char*>(&length), 4);
    out += element;
  }
  return out;
}

std::vector<std::string> parse_raw_bytes(const std::string& raw) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos + 4 <= raw.size()) {
    uint32_t length = 0;
    std::memcpy(&length, raw.data() + pos, 4);
    out.push_back(raw.substr(pos + 4, length));
    pos += 4 + length;
  }
  EXPECT_EQ(pos, raw.size()) << "raw BYTES output does not end on an element";
  return out;
}

template <typename T>
std::vector<T> parse_raw(const std::string& raw) {
  EXPECT_EQ(raw.size() % sizeof(T), 0u);
  std::vector<T> out(raw.size() / sizeof(T));
  std::memcpy(out.data(), raw.data(), out.size() * sizeof(T));
  return out;
}

ModelInferRequest::InferInputTensor* add_input(ModelInferRequest& request, const std::string& name,
                                               const std::string& datatype, std::vector<int64_t> shape) {
  auto* input = request.add_inputs();
  input->set_name(name);
  input->set_datatype(datatype);
  for (int64_t dim : shape) input->add_shape(dim);
  return input;
}

ModelInferRequest text_request(const std::string& model, const std::vector<std::string>& texts,
                               const std::string& name = "text") {
  ModelInferRequest request;
  request.set_model_name(model);
  add_input(request, name, "BYTES", {static_cast<int64_t>(texts.size()), 1});
  request.add_raw_input_contents(raw_bytes(texts));
  return request;
}

// Index of output `name` in the response (raw_output_contents follow the outputs' order).
int output_index(const ModelInferResponse& response, const std::string& name) {
  for (int i = 0; i < response.outputs_size(); ++i) {
    if (response.outputs(i).name() == name) return i;
  }
  ADD_FAILURE() << "response has no output " << name;
  return 0;
}

// Sends every request on one ModelStreamInfer stream without waiting for answers, half-closes, and
// reads the answers (in whatever order they come) until the server ends the stream.
struct StreamResult {
  std::vector<ModelStreamInferResponse> responses;
  grpc::Status status;
};
StreamResult stream_infer(GRPCInferenceService::Stub& stub, const std::vector<ModelInferRequest>& requests) {
  StreamResult result;
  auto call = context(120);
  auto stream = stub.ModelStreamInfer(call.get());
  for (const ModelInferRequest& request : requests) {
    if (!stream->Write(request)) break;
  }
  stream->WritesDone();
  ModelStreamInferResponse response;
  while (stream->Read(&response)) result.responses.push_back(response);
  result.status = stream->Finish();
  return result;
}

// The answers of a stream by request id; every id at most once.
std::map<std::string, ModelStreamInferResponse> by_id(const std::vector<ModelStreamInferResponse>& responses) {
  std::map<std::string, ModelStreamInferResponse> out;
  for (const ModelStreamInferResponse& response : responses) {
    const std::string& id = response.infer_response().id();
    EXPECT_TRUE(out.emplace(id, response).second) << "two answers for request '" << id << "'";
  }
  return out;
}

// The same answer from two RPCs: outputs of the same names, datatypes and shapes, FP32 within 1e-5
// (batches of another composition may round differently), every other datatype byte for byte.
void expect_same_answer(const ModelInferResponse& got, const ModelInferResponse& expected) {
  EXPECT_EQ(got.model_name(), expected.model_name());
  EXPECT_EQ(got.model_version(), expected.model_version());
  ASSERT_EQ(got.outputs_size(), expected.outputs_size());
  ASSERT_EQ(got.raw_output_contents_size(), expected.raw_output_contents_size());
  for (int i = 0; i < expected.outputs_size(); ++i) {
    SCOPED_TRACE(expected.outputs(i).name());
    EXPECT_EQ(got.outputs(i).name(), expected.outputs(i).name());
    EXPECT_EQ(got.outputs(i).datatype(), expected.outputs(i).datatype());
    EXPECT_EQ(std::vector<int64_t>(got.outputs(i).shape().begin(), got.outputs(i).shape().end()),
              std::vector<int64_t>(expected.outputs(i).shape().begin(), expected.outputs(i).shape().end()));
    if (expected.outputs(i).datatype() == "FP32") {
      const auto values = parse_raw<float>(got.raw_output_contents(i));
      const auto reference = parse_raw<float>(expected.raw_output_contents(i));
      ASSERT_EQ(values.size(), reference.size());
      for (size_t j = 0; j < values.size(); ++j) EXPECT_NEAR(values[j], reference[j], 1e-5f) << "element " << j;
    } else {
      EXPECT_EQ(got.raw_output_contents(i), expected.raw_output_contents(i));
    }
  }
}

// gRPC on a free loopback port, HTTP on another, no metrics port.
ServerOptions grpc_options() {
  ServerOptions options;
  options.http_port = 0;
  options.metrics_port = -1;
  options.grpc_port = 0;
  return options;
}

class GrpcServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerOptions options = grpc_options();
    options.max_body_bytes = 1 << 20;
    options.http_threads = 16;
    suite_.start(served_models(), options);
  }
  static void TearDownTestSuite() { suite_.stop(); }
  void SetUp() override {
    SCALEBERT_REQUIRE_REFERENCES(served_models());
    ASSERT_NE(suite_.server(), nullptr) << "the suite's server did not start";
    stub_ = connect(suite_.server()->grpc_port());
  }

  // Runs `request`, expecting `code` and, for errors, a message containing `fragment`.
  ModelInferResponse infer(const ModelInferRequest& request, grpc::StatusCode code = grpc::StatusCode::OK,
                           const std::string& fragment = "") {
    ModelInferResponse response;
    const grpc::Status status = stub_->ModelInfer(context().get(), request, &response);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    if (!fragment.empty()) {
      EXPECT_NE(status.error_message().find(fragment), std::string::npos)
          << "message \"" << status.error_message() << "\" lacks \"" << fragment << "\"";
    }
    return response;
  }

  static testing::SuiteServer suite_;
  std::unique_ptr<GRPCInferenceService::Stub> stub_;
};
testing::SuiteServer GrpcServerTest::suite_;

TEST_F(GrpcServerTest, HealthMetadataConfigAndRepositoryIndex) {
  inference::ServerLiveResponse live;
  ASSERT_TRUE(stub_->ServerLive(context().get(), {}, &live).ok());
  EXPECT_TRUE(live.live());
  inference::ServerReadyResponse ready;
  ASSERT_TRUE(stub_->ServerReady(context().get(), {}, &ready).ok());
  EXPECT_TRUE(ready.ready());
  inference::ServerMetadataResponse server_metadata;
  ASSERT_TRUE(stub_->ServerMetadata(context().get(), {}, &server_metadata).ok());
  EXPECT_EQ(server_metadata.name(), "scalebert");
  EXPECT_GE(server_metadata.extensions_size(), 3);

  inference::ModelMetadataRequest metadata_request;
  metadata_request.set_name("cls");
  inference::ModelMetadataResponse metadata;
  ASSERT_TRUE(stub_->ModelMetadata(context().get(), metadata_request, &metadata).ok());
  EXPECT_EQ(metadata.name(), "cls");
  ASSERT_EQ(metadata.versions_size(), 1);
  EXPECT_EQ(metadata.versions(0), "1");
  EXPECT_EQ(metadata.platform(), "scalebert");
  ASSERT_EQ(metadata.inputs_size(), 4);
  EXPECT_EQ(metadata.inputs(0).name(), "text");
  EXPECT_EQ(metadata.inputs(0).datatype(), "BYTES");
  EXPECT_EQ(std::vector<int64_t>(metadata.inputs(0).shape().begin(), metadata.inputs(0).shape().end()),
            (std::vector<int64_t>{-1, 1}));
  ASSERT_EQ(metadata.outputs_size(), 4);
  EXPECT_EQ(metadata.outputs(2).name(), "label");
  metadata_request.set_version("2");
  grpc::Status status = stub_->ModelMetadata(context().get(), metadata_request, &metadata);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();

  auto model_ready = [&](const std::string& name, const std::string& version) {
    inference::ModelReadyRequest request;
    request.set_name(name);
    request.set_version(version);
    inference::ModelReadyResponse response;
    EXPECT_TRUE(stub_->ModelReady(context().get(), request, &response).ok());
    return response.ready();
  };
  EXPECT_TRUE(model_ready("cls", ""));
  EXPECT_TRUE(model_ready("cls", "1"));
  EXPECT_FALSE(model_ready("cls", "2"));
  EXPECT_FALSE(model_ready("cls", "x"));
  EXPECT_FALSE(model_ready("nope", ""));

  inference::ModelConfigRequest config_request;
  config_request.set_name("cls");
  inference::ModelConfigResponse config;
  ASSERT_TRUE(stub_->ModelConfig(context().get(), config_request, &config).ok());
  EXPECT_EQ(config.config().name(), "cls");
  EXPECT_EQ(config.config().max_batch_size(), 8);
  ASSERT_EQ(config.config().input_size(), 4);
  EXPECT_EQ(config.config().input(0).data_type(), inference::TYPE_STRING);
  EXPECT_EQ(config.config().input(1).data_type(), inference::TYPE_INT64);
  EXPECT_EQ(config.config().output(0).dims(0), 3);
  ASSERT_EQ(config.config().instance_group_size(), 1);
  EXPECT_EQ(config.config().instance_group(0).count(), 2);
  EXPECT_EQ(config.config().instance_group(0).kind(), inference::ModelInstanceGroup_Kind_KIND_CPU);
  ASSERT_TRUE(config.config().has_dynamic_batching());
  EXPECT_EQ(config.config().dynamic_batching().preferred_batch_size(0), 4);
  EXPECT_EQ(config.config().dynamic_batching().max_queue_delay_microseconds(), 1000u);
  EXPECT_EQ(config.config().parameters().at("task").string_value(), "classification");
  EXPECT_EQ(config.config().version_policy().latest().num_versions(), 1u);
  config_request.set_name("nope");
  status = stub_->ModelConfig(context().get(), config_request, &config);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();

  inference::RepositoryIndexResponse index;
  ASSERT_TRUE(stub_->RepositoryIndex(context().get(), {}, &index).ok());
  std::vector<std::string> names;
  for (const auto& model : index.models()) {
    names.push_back(model.name());
    EXPECT_EQ(model.state(), "READY") << model.name() << ": " << model.reason();
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"cls", "qa", "slow"}));

  // A second server cannot take the gRPC port in use (no SO_REUSEPORT sharing).
  ServerOptions clash;
  clash.model_repository = suite_.repository();
  clash.http_port = 0;
  clash.metrics_port = -1;
  clash.grpc_port = suite_.server()->grpc_port();
  InferenceServer second(clash);
  EXPECT_THROW(second.start(), IoError);
}

// Token tensors in, transformers' logits out, with raw and typed contents alike.
TEST_F(GrpcServerTest, TokenTensorsMatchTransformersRawAndTyped) {
  const auto reference = SafetensorsFile::open(fixture_path("tiny-bert-cls") / "reference.safetensors");
  const Tensor expected = reference.tensor("logits");  // (B, 3)
  std::vector<std::vector<float>> results;
  for (bool raw : {true, false}) {
    SCOPED_TRACE(raw ? "raw contents" : "typed contents");
    ModelInferRequest request;
    request.set_model_name("cls");
    request.set_id(raw ? "raw-request" : "typed-request");
    for (const char* name : {"input_ids", "attention_mask", "token_type_ids"}) {
      const Tensor values = reference.tensor(name);  // (B, T) int64
      auto* input = add_input(request, name, "INT64", values.shape());
      const int64_t* data = values.data<int64_t>();
      if (raw) {
        request.add_raw_input_contents(std::string(reinterpret_cast<const char*>(data), values.numel() * sizeof(int64_t)));
      } else {
        input->mutable_contents()->mutable_int64_contents()->Add(data, data + values.numel());
      }
    }
    request.add_outputs()->set_name("logits");
    const ModelInferResponse response = infer(request);
    EXPECT_EQ(response.model_name(), "cls");
    EXPECT_EQ(response.model_version(), "1");
    EXPECT_EQ(response.id(), request.id());
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(response.outputs(0).shape().begin(), response.outputs(0).shape().end()),
              expected.shape());
    // A raw request is answered raw (what tritonclient reads), a typed one typed.
    std::vector<float> logits;
    if (raw) {
      ASSERT_EQ(response.raw_output_contents_size(), 1);
      logits = parse_raw<float>(response.raw_output_contents(0));
    } else {
      EXPECT_EQ(response.raw_output_contents_size(), 0);
      logits.assign(response.outputs(0).contents().fp32_contents().begin(),
                    response.outputs(0).contents().fp32_contents().end());
    }
    ASSERT_EQ(static_cast<int64_t>(logits.size()), expected.numel());
    float worst = 0.0f;
    for (int64_t i = 0; i < expected.numel(); ++i) worst = std::max(worst, std::fabs(logits[i] - expected.data<float>()[i]));
    EXPECT_LT(worst, 1e-4f);
    results.push_back(logits);
  }
  EXPECT_EQ(results[0], results[1]) << "raw and typed answers differ";
}

// Text (BYTES) in: the answers equal TextPipeline's on the same folder; BYTES outputs decode.
TEST_F(GrpcServerTest, TextInputsMatchTheTextPipeline) {
  const std::vector<std::string> texts = {"bank shares rose", "net income fell in the quarter, eur 5 million loss",
                                          "stock", "revenue growth and cash; debt is rising"};
  auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert-cls"));
  const auto expected = pipeline->classify(texts);
  {
    const ModelInferResponse response = infer(text_request("cls", texts));
    ASSERT_EQ(response.raw_output_contents_size(), response.outputs_size());
    const int at = output_index(response, "probabilities");
    const std::vector<float> probabilities = parse_raw<float>(response.raw_output_contents(at));
    ASSERT_EQ(probabilities.size(), texts.size() * 3);
    const std::vector<std::string> labels = parse_raw_bytes(response.raw_output_contents(output_index(response, "label")));
    EXPECT_EQ(response.outputs(output_index(response, "label")).datatype(), "BYTES");
    const std::vector<int64_t> label_ids = parse_raw<int64_t>(response.raw_output_contents(output_index(response, "label_id")));
    ASSERT_EQ(labels.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(probabilities[i * 3 + j], expected[i].probabilities[j], 1e-5f);
      EXPECT_EQ(labels[i], pipeline->labels()[expected[i].label]);
      EXPECT_EQ(label_ids[i], expected[i].label);
    }
  }
  {
    // Typed BYTES in (bytes_contents), typed out.
    ModelInferRequest request;
    request.set_model_name("cls");
    auto* input = add_input(request, "text", "BYTES", {2, 1});
    input->mutable_contents()->add_bytes_contents(texts[0]);
    input->mutable_contents()->add_bytes_contents(texts[1]);
    request.add_outputs()->set_name("label");
    request.add_outputs()->set_name("label_id");
    const ModelInferResponse response = infer(request);
    ASSERT_EQ(response.outputs_size(), 2);
    const auto& labels = response.outputs(0).contents().bytes_contents();
    ASSERT_EQ(labels.size(), 2);
    EXPECT_EQ(labels[0], pipeline->labels()[expected[0].label]);
    EXPECT_EQ(labels[1], pipeline->labels()[expected[1].label]);
    EXPECT_EQ(response.outputs(1).contents().int64_contents(1), expected[1].label);
  }
  {
    pipeline::PipelineOptions options;
    options.max_length = 16;
    auto qa = pipeline::TextPipeline::load(fixture_path("tiny-bert-qa"), options);
    const std::vector<std::pair<std::string, std::string>> pairs = {
        {"what rose?", "bank shares rose in the quarter while net income fell and debt is rising, eur 5 million"},
        {"how much cash?", "cash of usd 9 million"}};
    const auto answers = qa->answer(pairs, 30, 4);
    ModelInferRequest request = text_request("qa", {pairs[0].first, pairs[1].first}, "question");
    add_input(request, "context", "BYTES", {2, 1});
    request.add_raw_input_contents(raw_bytes({pairs[0].second, pairs[1].second}));
    const ModelInferResponse response = infer(request);
    const auto answer = parse_raw_bytes(response.raw_output_contents(output_index(response, "answer")));
    const auto start = parse_raw<int64_t>(response.raw_output_contents(output_index(response, "answer_start")));
    const auto score = parse_raw<float>(response.raw_output_contents(output_index(response, "score")));
    ASSERT_EQ(answer.size(), 2u);
    for (size_t i = 0; i < pairs.size(); ++i) {
      EXPECT_EQ(answer[i], answers[i].text);
      EXPECT_EQ(start[i], answers[i].chars.begin);
      EXPECT_NEAR(score[i], answers[i].score, 1e-6f);
    }
  }
}

// Statistics over gRPC are the HTTP statistics of the same models (one source).
TEST_F(GrpcServerTest, StatisticsMatchTheHttpView) {
  infer(text_request("cls", {"bank shares rose"}));
  inference::ModelStatisticsRequest request;
  request.set_name("cls");
  inference::ModelStatisticsResponse response;
  ASSERT_TRUE(stub_->ModelStatistics(context().get(), request, &response).ok());
  ASSERT_EQ(response.model_stats_size(), 1);
  const auto& stats = response.model_stats(0);
  httplib::Client http("127.0.0.1", suite_.server()->http_port());
  const auto reply = http.Get("/v2/models/cls/stats");
  ASSERT_TRUE(reply && reply->status == 200);
  const Json expected = Json::parse(reply->body)["model_stats"][0];
  EXPECT_EQ(stats.name(), "cls");
  EXPECT_EQ(stats.version(), "1");
  EXPECT_GE(stats.inference_count(), 1u);
  EXPECT_EQ(stats.inference_count(), expected["inference_count"].get<uint64_t>());
  EXPECT_EQ(stats.execution_count(), expected["execution_count"].get<uint64_t>());
  EXPECT_EQ(stats.inference_stats().success().count(), expected["inference_stats"]["success"]["count"].get<uint64_t>());
  EXPECT_EQ(stats.inference_stats().fail().count(), expected["inference_stats"]["fail"]["count"].get<uint64_t>());
  EXPECT_EQ(stats.batch_stats_size(), static_cast<int>(expected["batch_stats"].size()));
  // Every model when no name is given; an unknown model or version is NOT_FOUND.
  ASSERT_TRUE(stub_->ModelStatistics(context().get(), {}, &response).ok());
  EXPECT_EQ(response.model_stats_size(), 3);
  request.set_name("nope");
  EXPECT_EQ(stub_->ModelStatistics(context().get(), request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  request.set_name("cls");
  request.set_version("9");
  EXPECT_EQ(stub_->ModelStatistics(context().get(), request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(GrpcServerTest, BadInputIsAStatusWithAMessageAndTheServerKeepsServing) {
  using grpc::StatusCode;
  ModelInferRequest request = text_request("nope", {"bank"});
  infer(request, StatusCode::NOT_FOUND, "unknown model 'nope'");
  request = text_request("cls", {"bank"});
  request.set_model_version("7");
  infer(request, StatusCode::NOT_FOUND, "no version 7");
  request.set_model_version("seven");
  infer(request, StatusCode::NOT_FOUND, "no version \"seven\"");

  // Wrong datatype, shape and batch.
  request = ModelInferRequest();
  request.set_model_name("cls");
  add_input(request, "text", "INT64", {1, 1})->mutable_contents()->add_int64_contents(3);
  infer(request, StatusCode::INVALID_ARGUMENT, "datatype INT64, the model takes BYTES");
  request = text_request("cls", {"a"});
  request.mutable_inputs(0)->clear_shape();
  request.mutable_inputs(0)->add_shape(1);
  infer(request, StatusCode::INVALID_ARGUMENT, "shape has 1 dimensions");
  request = text_request("cls", std::vector<std::string>(9, "a"));
  infer(request, StatusCode::INVALID_ARGUMENT, "batch of 9 outside 1..8");
  request = text_request("cls", {"a"});
  request.mutable_inputs(0)->set_datatype("TEXT");
  infer(request, StatusCode::INVALID_ARGUMENT, "input 'text': ");
  request = text_request("cls", {"a"});
  request.mutable_inputs(0)->set_shape(0, -2);
  infer(request, StatusCode::INVALID_ARGUMENT, "negative dimension -2");

  // Malformed BYTES lengths: an element longer than the bytes left, a truncated length prefix, and
  // fewer elements than the shape.
  request = text_request("cls", {"bank"});
  std::string lying = raw_bytes({"bank"});
  lying[0] = 100;
  request.set_raw_input_contents(0, lying);
  infer(request, StatusCode::INVALID_ARGUMENT, "BYTES element 0 of 100 bytes overruns its 8 raw bytes");
  request.set_raw_input_contents(0, raw_bytes({"bank"}) + std::string(2, '\0'));
  infer(request, StatusCode::INVALID_ARGUMENT, "truncated BYTES element length at byte 8");
  request = text_request("cls", {"bank", "cash"});
  request.set_raw_input_contents(0, raw_bytes({"bank"}));
  infer(request, StatusCode::INVALID_ARGUMENT, "raw contents hold 1 BYTES elements but the shape has 2");
  // Raw contents of the wrong size for INT64, and one raw entry per input.
  request = ModelInferRequest();
  request.set_model_name("cls");
  add_input(request, "input_ids", "INT64", {1, 2});
  request.add_raw_input_contents(std::string(10, '\0'));
  infer(request, StatusCode::INVALID_ARGUMENT, "10 raw bytes do not match shape (2 elements x 8 bytes of INT64)");
  request.add_raw_input_contents(std::string(16, '\0'));
  infer(request, StatusCode::INVALID_ARGUMENT, "raw_input_contents has 2 entries for 1 inputs");
  // Typed contents: the field must match the datatype and hold the shape's elements.
  request = ModelInferRequest();
  request.set_model_name("cls");
  auto* ids = add_input(request, "input_ids", "INT64", {1, 2});
  ids->mutable_contents()->add_fp32_contents(6);
  ids->mutable_contents()->add_fp32_contents(7);
  infer(request, StatusCode::INVALID_ARGUMENT, "INT64 data goes in contents.int64_contents");
  ids->mutable_contents()->Clear();
  ids->mutable_contents()->add_int64_contents(6);
  infer(request, StatusCode::INVALID_ARGUMENT, "shape has 2 elements but contents.int64_contents has 1");
  ids->mutable_contents()->add_int64_contents(999);
  infer(request, StatusCode::INVALID_ARGUMENT, "outside the vocabulary");
  // Both typed and raw for one input; an input given twice; unsupported features.
  request = text_request("cls", {"bank"});
  request.mutable_inputs(0)->mutable_contents()->add_bytes_contents("bank");
  infer(request, StatusCode::INVALID_ARGUMENT, "both typed contents and raw_input_contents");
  request = text_request("cls", {"bank"});
  *request.add_inputs() = request.inputs(0);
  request.add_raw_input_contents(request.raw_input_contents(0));
  infer(request, StatusCode::INVALID_ARGUMENT, "input 'text' given twice");
  request = text_request("cls", {"bank"});
  (*request.mutable_parameters())["priority"].set_uint64_param(1);
  infer(request, StatusCode::INVALID_ARGUMENT, "parameter priority is not supported");
  request = text_request("cls", {"bank"});
  (*request.mutable_parameters())["timeout"].set_string_param("soon");
  infer(request, StatusCode::INVALID_ARGUMENT, "parameter timeout must be a non-negative int64_param");
  request = text_request("cls", {"bank"});
  auto* classified = request.add_outputs();
  classified->set_name("label");
  (*classified->mutable_parameters())["classification"].set_int64_param(2);
  infer(request, StatusCode::INVALID_ARGUMENT, "classification extension is not supported");
  request = text_request("cls", {"bank"});
  request.add_outputs()->set_name("nope");
  infer(request, StatusCode::INVALID_ARGUMENT, "unknown output 'nope'");
  request = ModelInferRequest();
  request.set_model_name("cls");
  infer(request, StatusCode::INVALID_ARGUMENT, "no inputs");
  // Invalid UTF-8 and, past the 1 MiB message limit, RESOURCE_EXHAUSTED from gRPC itself.
  infer(text_request("cls", {"ok", "caf\xc3"}), StatusCode::INVALID_ARGUMENT, "row 1: text is not valid UTF-8");
  infer(text_request("cls", {std::string((1 << 20) + 10, 'a')}), StatusCode::RESOURCE_EXHAUSTED);

  // Still serving.
  const ModelInferResponse good = infer(text_request("cls", {"bank"}));
  EXPECT_EQ(good.outputs_size(), 4);
}

TEST_F(GrpcServerTest, FullQueueIsUnavailableAndQueueTimeoutIsUnavailable) {
  // "slow" waits 300 ms for a batch with a queue of one: a second request meanwhile is refused.
  auto first = std::async(std::launch::async, [&] {
    ModelInferResponse response;
    return connect(suite_.server()->grpc_port())->ModelInfer(context().get(), text_request("slow", {"bank"}), &response).error_code();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  infer(text_request("slow", {"bank"}), grpc::StatusCode::UNAVAILABLE, "queue full");
  EXPECT_EQ(first.get(), grpc::StatusCode::OK);
  // A 50 ms timeout expires in the 300 ms queue delay.
  ModelInferRequest request = text_request("slow", {"bank"});
  (*request.mutable_parameters())["timeout"].set_int64_param(50000);
  infer(request, grpc::StatusCode::UNAVAILABLE, "timed out");
}

TEST_F(GrpcServerTest, UnloadAndLoadThroughTheRepositoryRpcs) {
  inference::RepositoryModelUnloadRequest unload;
  unload.set_model_name("qa");
  (*unload.mutable_parameters())["unload_dependents"].set_bool_param(false);  // tritonclient sends it
  inference::RepositoryModelUnloadResponse unloaded;
  ASSERT_TRUE(stub_->RepositoryModelUnload(context().get(), unload, &unloaded).ok());
  inference::ModelReadyRequest ready_request;
  ready_request.set_name("qa");
  inference::ModelReadyResponse ready;
  ASSERT_TRUE(stub_->ModelReady(context().get(), ready_request, &ready).ok());
  EXPECT_FALSE(ready.ready());
  infer(text_request("qa", {"a"}, "question"), grpc::StatusCode::UNAVAILABLE);
  inference::RepositoryIndexRequest index_request;
  index_request.set_ready(true);
  inference::RepositoryIndexResponse index;
  ASSERT_TRUE(stub_->RepositoryIndex(context().get(), index_request, &index).ok());
  for (const auto& model : index.models()) EXPECT_NE(model.name(), "qa");

  inference::RepositoryModelLoadRequest load;
  load.set_model_name("qa");
  inference::RepositoryModelLoadResponse loaded;
  const grpc::Status status = stub_->RepositoryModelLoad(context(120).get(), load, &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(stub_->ModelReady(context().get(), ready_request, &ready).ok());
  EXPECT_TRUE(ready.ready());
  load.set_model_name("nothing");
  EXPECT_EQ(stub_->RepositoryModelLoad(context().get(), load, &loaded).error_code(), grpc::StatusCode::NOT_FOUND);
  load.set_model_name("qa");
  (*load.mutable_parameters())["config"].set_string_param("{}");
  EXPECT_EQ(stub_->RepositoryModelLoad(context().get(), load, &loaded).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Every request on a stream is answered once, under its id, with what ModelInfer answers.
TEST_F(GrpcServerTest, StreamAnswersEveryRequestUnderItsIdAsModelInferDoes) {
  std::vector<ModelInferRequest> requests = {
      text_request("cls", {"bank shares rose"}),
      text_request("cls", {"net income fell in the quarter, eur 5 million loss", "stock"}),
      text_request("cls", {"revenue growth and cash; debt is rising"}),
      text_request("qa", {"what rose?"}, "question"),
      text_request("cls", {"cash"}),
  };
  add_input(requests[3], "context", "BYTES", {1, 1});
  requests[3].add_raw_input_contents(raw_bytes({"bank shares rose in the quarter"}));
  requests[4].add_outputs()->set_name("label");
  for (size_t i = 0; i < requests.size(); ++i) requests[i].set_id("request-" + std::to_string(i));

  const StreamResult result = stream_infer(*stub_, requests);
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.responses.size(), requests.size());
  const auto answers = by_id(result.responses);
  for (const ModelInferRequest& request : requests) {
    SCOPED_TRACE(request.id());
    const auto found = answers.find(request.id());
    ASSERT_NE(found, answers.end()) << "no answer";
    EXPECT_EQ(found->second.error_message(), "");
    expect_same_answer(found->second.infer_response(), infer(request));
  }
  // A stream without requests ends OK at once.
  const StreamResult empty = stream_infer(*stub_, {});
  EXPECT_TRUE(empty.status.ok()) << empty.status.error_message();
  EXPECT_TRUE(empty.responses.empty());
}

// A bad request is answered with error_message (ModelInfer's message) and the stream goes on.
TEST_F(GrpcServerTest, StreamErrorIsAnAnswerAndTheStreamGoesOn) {
  std::vector<ModelInferRequest> requests;
  requests.push_back(text_request("cls", {"bank"}));
  requests.push_back(text_request("nope", {"bank"}));
  ModelInferRequest wrong_type;
  wrong_type.set_model_name("cls");
  add_input(wrong_type, "text", "INT64", {1, 1})->mutable_contents()->add_int64_contents(3);
  requests.push_back(wrong_type);
  requests.push_back(text_request("cls", std::vector<std::string>(9, "a")));
  requests.push_back(text_request("cls", {"cash"}));
  const std::vector<std::string> ids = {"good-1", "unknown-model", "wrong-type", "too-big", "good-2"};
  for (size_t i = 0; i < requests.size(); ++i) requests[i].set_id(ids[i]);

  const StreamResult result = stream_infer(*stub_, requests);
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.responses.size(), requests.size());
  const auto answers = by_id(result.responses);
  const std::map<std::string, std::string> errors = {{"unknown-model", "unknown model 'nope'"},
                                                     {"wrong-type", "datatype INT64, the model takes BYTES"},
                                                     {"too-big", "batch of 9 outside 1..8"}};
  for (const auto& [id, fragment] : errors) {
    SCOPED_TRACE(id);
    ASSERT_EQ(answers.count(id), 1u);
    const ModelStreamInferResponse& answer = answers.at(id);
    EXPECT_NE(answer.error_message().find(fragment), std::string::npos)
        << "message \"" << answer.error_message() << "\" lacks \"" << fragment << "\"";
    EXPECT_EQ(answer.infer_response().outputs_size(), 0);
  }
  for (size_t i : {1, 2, 3}) {  // ModelInfer's messages, word for word
    ModelInferResponse ignored;
    const grpc::Status status = stub_->ModelInfer(context().get(), requests[i], &ignored);
    EXPECT_FALSE(status.ok());
    EXPECT_EQ(answers.at(ids[i]).error_message(), status.error_message());
  }
  for (size_t i : {0, 4}) {
    SCOPED_TRACE(ids[i]);
    ASSERT_EQ(answers.count(ids[i]), 1u);
    EXPECT_EQ(answers.at(ids[i]).error_message(), "");
    expect_same_answer(answers.at(ids[i]).infer_response(), infer(requests[i]));
  }
}

// A stream's requests are in flight together, so the dynamic batcher batches them: fewer
// executions than requests, and each answer still its own.
TEST_F(GrpcServerTest, StreamRequestsAreBatchedTogether) {
  const std::vector<std::string> texts = {"bank shares rose", "net income fell in the quarter", "stock",
                                          "revenue growth and cash; debt is rising", "eur 5 million loss"};
  auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert-cls"));
  const auto expected = pipeline->classify(texts);
  auto statistics = [&] {
    inference::ModelStatisticsRequest request;
    request.set_name("cls");
    inference::ModelStatisticsResponse response;
    EXPECT_TRUE(stub_->ModelStatistics(context().get(), request, &response).ok());
    return response.model_stats(0);
  };
  const auto before = statistics();
  constexpr int kRequests = 40;
  std::vector<ModelInferRequest> requests;
  for (int i = 0; i < kRequests; ++i) {
    requests.push_back(text_request("cls", {texts[i % texts.size()]}));
    requests.back().set_id(std::to_string(i));
    requests.back().add_outputs()->set_name("probabilities");
  }
  const StreamResult result = stream_infer(*stub_, requests);
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.responses.size(), static_cast<size_t>(kRequests));
  const auto answers = by_id(result.responses);
  for (int i = 0; i < kRequests; ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(answers.count(std::to_string(i)), 1u);
    const ModelStreamInferResponse& answer = answers.at(std::to_string(i));
    ASSERT_EQ(answer.error_message(), "");
    ASSERT_EQ(answer.infer_response().raw_output_contents_size(), 1);
    const auto probabilities = parse_raw<float>(answer.infer_response().raw_output_contents(0));
    const auto& reference = expected[static_cast<size_t>(i) % texts.size()].probabilities;
    ASSERT_EQ(probabilities.size(), reference.size());
    for (size_t j = 0; j < reference.size(); ++j) EXPECT_NEAR(probabilities[j], reference[j], 1e-5f);
  }
  const auto after = statistics();
  const uint64_t done = after.inference_stats().success().count() - before.inference_stats().success().count();
  const uint64_t executions = after.execution_count() - before.execution_count();
  EXPECT_EQ(done, static_cast<uint64_t>(kRequests));
  EXPECT_LT(executions, done) << "a stream's requests were never batched together (run one at a time?)";
}

// The codec alone: raw bytes round trip for every datatype the server reads.
TEST(GrpcCodec, RawContentsRoundTrip) {
  struct Case {
    DataType type;
    std::vector<int64_t> ints;
    std::vector<float> floats;
    std::vector<std::string> strings;
    size_t bytes;
  };
  const std::vector<Case> cases = {
      {DataType::kInt64, {-3, 0, int64_t{1} << 40}, {}, {}, 24},
      {DataType::kInt32, {-3, 0, 70000}, {}, {}, 12},
      {DataType::kInt16, {-3, 0, 300}, {}, {}, 6},
      {DataType::kInt8, {-3, 0, 100}, {}, {}, 3},
      {DataType::kUint8, {0, 7, 255}, {}, {}, 3},
      {DataType::kBool, {1, 0, 1}, {}, {}, 3},
      {DataType::kFp32, {}, {-1.5f, 0.0f, 3e8f}, {}, 12},
      {DataType::kFp64, {}, {-1.5f, 0.0f, 3e8f}, {}, 24},
      {DataType::kBf16, {}, {-1.5f, 0.0f, 256.0f}, {}, 6},
      {DataType::kBytes, {}, {}, {"", "caf\xc3\xa9", std::string(300, 'x')}, 12 + 5 + 300},
  };
  for (const Case& test : cases) {
    SCOPED_TRACE(std::string(v2_name(test.type)));
    WireTensor tensor;
    tensor.name = "t";
    tensor.datatype = test.type;
    tensor.shape = {3};
    tensor.ints = test.ints;
    tensor.floats = test.floats;
    tensor.strings = test.strings;
    const std::string raw = encode_raw_tensor(tensor);
    EXPECT_EQ(raw.size(), test.bytes);
    WireTensor decoded;
    decoded.name = "t";
    decoded.datatype = test.type;
    decode_raw_tensor(raw, 3, decoded);
    EXPECT_EQ(decoded.ints, test.ints);
    EXPECT_EQ(decoded.floats, test.floats);
    EXPECT_EQ(decoded.strings, test.strings);
  }
  WireTensor tensor;
  tensor.name = "ids";
  tensor.datatype = DataType::kInt64;
  testing::expect_error<InvalidArgument>([&] { decode_raw_tensor(std::string(7, '\0'), 1, tensor); },
                                         {"input 'ids'", "7 raw bytes", "1 elements x 8 bytes of INT64"});
}

// stop() drains: an RPC queued when it is called still gets its answer; then the port is closed.
TEST(GrpcServerLifecycle, StopDrainsQueuedRequests) {
  SCALEBERT_REQUIRE_REFERENCES(served_models());
  testing::SuiteServer served;  // a server of the test's own: it gets stopped
  served.start(served_models(), grpc_options());
  InferenceServer* server = served.server();
  const int port = server->grpc_port();
  auto queued = std::async(std::launch::async, [&] {
    ModelInferResponse response;
    const grpc::Status status = connect(port)->ModelInfer(context().get(), text_request("slow", {"bank"}), &response);
    return std::make_pair(status.error_code(), response.outputs_size());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // "slow" holds it ~300 ms in its queue
  server->stop();
  const auto [code, outputs] = queued.get();
  EXPECT_EQ(code, grpc::StatusCode::OK);
  EXPECT_EQ(outputs, 1);
  inference::ServerLiveResponse live;
  const grpc::Status after = connect(port)->ServerLive(context(2).get(), {}, &live);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::UNAVAILABLE) << "the port still answers after stop()";
  served.stop();
}

// stop() ends open streams once the requests they hold are answered: one idle (its handler waits in
// Read for a request that never comes), one with a request in "slow"'s queue, which still gets its
// answer. Neither holds the drain for gRPC's 60 s grace (nor until the clients' 30 s deadlines).
TEST(GrpcServerLifecycle, StopEndsOpenStreamsOnceAnswered) {
  SCALEBERT_REQUIRE_REFERENCES(served_models());
  testing::SuiteServer served;  // a server of the test's own: it gets stopped
  served.start(served_models(), grpc_options());
  InferenceServer* server = served.server();
  const auto stub = connect(server->grpc_port());
  const auto idle_context = context(), busy_context = context();
  auto idle = stub->ModelStreamInfer(idle_context.get());
  auto busy = stub->ModelStreamInfer(busy_context.get());
  ModelInferRequest request = text_request("slow", {"bank"});
  request.set_id("queued");
  ASSERT_TRUE(busy->Write(request));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // "slow" holds it ~300 ms in its queue

  const auto start = std::chrono::steady_clock::now();
  std::thread stopper([&] { server->stop(); });
  ModelStreamInferResponse answer, more;
  const bool answered = busy->Read(&answer);
  const bool busy_more = busy->Read(&more);
  const grpc::Status busy_status = busy->Finish();
  const bool idle_more = idle->Read(&more);
  const grpc::Status idle_status = idle->Finish();
  stopper.join();
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  ASSERT_TRUE(answered) << "the queued request got no answer: " << busy_status.error_message();
  EXPECT_EQ(answer.error_message(), "");
  EXPECT_EQ(answer.infer_response().id(), "queued");
  EXPECT_EQ(answer.infer_response().outputs_size(), 1);
  EXPECT_FALSE(busy_more);
  EXPECT_FALSE(idle_more);
  // Cancelled by the server (a sync handler waiting in Read has no other way out).
  EXPECT_EQ(busy_status.error_code(), grpc::StatusCode::CANCELLED) << busy_status.error_message();
  EXPECT_EQ(idle_status.error_code(), grpc::StatusCode::CANCELLED) << idle_status.error_message();
  EXPECT_LT(seconds, 10.0) << "an open stream held up stop()";
  served.stop();
}

}  // namespace
}  // namespace scalebert::serve
