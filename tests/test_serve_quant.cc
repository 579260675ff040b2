// Serving quantized models: int8 and bf16 folders written by quant::quantize_model from the tiny
// fixtures, served by an in-process server (over HTTP, from a repository folder and from a
// checkpoint store), answer as TextPipeline (what `scalebert classify`/`embed` run) does on the
// same quantized folder, stay within the quantization bounds of tests/test_quant.cc of the f32
// model served beside them, and are held without the F32 parameter table.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <fstream>

#include "io/store/model_checkpoint.h"
#include "io/store/store.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "pipeline/text_pipeline.h"
#include "quant/quantize.h"
#include "serve/protocol.h"
#include "serve/server.h"
#include "testing.h"

namespace scalebert::serve {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;
using kernels::Precision;

using testing::fixture_path;
using testing::TempDir;

// Relative L2 bounds of the quantized model against f32 (tests/test_quant.cc, docs/quantization.md):
// last hidden state 3e-2 for int8 and 1e-2 for bf16, logits twice that.
constexpr double kInt8HiddenBound = 3e-2;
constexpr double kBf16HiddenBound = 1e-2;
// Server and TextPipeline run the same packed weights and kernels; only the batch composition
// differs (oneDNN may pick another blocking for another row count), so their outputs agree to
// float rounding.
constexpr float kSameModelTolerance = 1e-5f;

const std::vector<std::string>& sample_texts() {
  static const std::vector<std::string> texts = {"revenue rose in the quarter", "the stock fell",
                                                 "the bank rate held steady while bond yields climbed",
                                                 "profit warning"};
  return texts;
}

std::string classification_config() {
  return R"(max_batch_size: 8
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] },
         { name: "probabilities" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "label_id" data_type: TYPE_INT64 dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
parameters { key: "task" value: { string_value: "classification" } }
parameters { key: "threads" value: { string_value: "1" } }
)";
}

std::string embeddings_config() {
  return R"(max_batch_size: 8
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "embeddings" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "task" value: { string_value: "embeddings" } }
parameters { key: "pooling" value: { string_value: "mean" } }
parameters { key: "threads" value: { string_value: "1" } }
)";
}

// <repository>/<name>/config.pbtxt and version 1 as a symlink to `model_dir`.
void add_model(const fs::path& repository, const std::string& name, const fs::path& model_dir,
               const std::string& config) {
  fs::create_directories(repository / name);
  std::ofstream(repository / name / "config.pbtxt") << config;
  fs::create_directory_symlink(model_dir, repository / name / "1");
}

fs::path quantize(const std::string& source, Precision dtype, const fs::path& out) {
  quant::QuantizeOptions options;
  options.dtype = dtype;
  quant::quantize_model(fixture_path(source), out, options);
  return out;
}

struct Served {
  std::unique_ptr<InferenceServer> server;
  std::unique_ptr<httplib::Client> client;
};

Served start(const fs::path& repository) {
  ServerOptions options;
  options.model_repository = repository;
  options.http_port = 0;
  options.metrics_port = -1;
  options.limits.threads_per_instance = 1;
  Served served;
  served.server = std::make_unique<InferenceServer>(options);
  served.server->start();
  served.client = std::make_unique<httplib::Client>("127.0.0.1", served.server->http_port());
  served.client->set_read_timeout(30);
  return served;
}

// The model's outputs for `texts` over HTTP (JSON request, binary response tensors).
InferResponse infer_texts(httplib::Client& client, const std::string& model, const std::vector<std::string>& texts) {
  InferRequest request;
  WireTensor text;
  text.name = "text";
  text.datatype = DataType::kBytes;
  text.shape = {static_cast<int64_t>(texts.size()), 1};
  text.strings = texts;
  request.inputs.push_back(std::move(text));
  request.binary_output_default = true;
  const EncodedResponse encoded = encode_infer_request(request);
  const auto reply = client.Post("/v2/models/" + model + "/infer", encoded.body, "application/json");
  if (!reply) throw IoError("no reply from the server for model " + model);
  if (reply->status != 200) throw InvalidArgument(str_cat("model ", model, ": HTTP ", reply->status, " ", reply->body));
  std::optional<size_t> header_length;
  if (reply->has_header("Inference-Header-Content-Length")) {
    header_length = std::stoul(reply->get_header_value("Inference-Header-Content-Length"));
  }
  return parse_infer_response(reply->body, header_length);
}

const std::vector<float>& floats(const InferResponse& response, const std::string& name) {
  for (const WireTensor& tensor : response.outputs) {
    if (tensor.name == name) return tensor.floats;
  }
  throw InvalidArgument("response has no output " + name);
}

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

// The served version holds its packed weights only (no F32 parameter table); returns their bytes.
// (On the tiny fixtures oneDNN's padded layouts outweigh the parameters themselves, so sizes are
// compared between precisions, not against the f32 parameter count; docs/quantization.md has the
// BERT-base and MiniLM figures.)
size_t packed_bytes_without_table(InferenceServer& server, const std::string& name) {
  const auto model = server.repository().get(name);
  EXPECT_TRUE(model != nullptr) << name;
  if (model == nullptr) return 0;
  const TaskModel& task = model->task_model();
  EXPECT_FALSE(task.model->parameters.values().defined()) << name << " kept its F32 parameter table";
  EXPECT_TRUE(task.model->parameters.entries().empty()) << name;
  const size_t held = task.weights->owned_bytes();
  std::printf("  %s: packed weights %.1f KB\n", name.c_str(), static_cast<double>(held) / 1e3);
  return held;
}

// int8 and bf16 classification models beside the f32 one: every served output equals TextPipeline on
// the same folder, the quantized ones are within the quantization bounds of f32, and labels agree.
TEST(ServeQuant, Int8AndBf16ClassifiersAnswerAsThePipelineAndCloseToF32) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  SCALEBERT_REQUIRE_PRECISION(Precision::kInt8);
  SCALEBERT_REQUIRE_PRECISION(Precision::kBF16);
  TempDir dir;
  const fs::path int8_dir = quantize("tiny-bert-cls", Precision::kInt8, dir / "cls-int8");
  const fs::path bf16_dir = quantize("tiny-bert-cls", Precision::kBF16, dir / "cls-bf16");
  const fs::path repository = dir / "repository";
  add_model(repository, "cls_f32", fixture_path("tiny-bert-cls"), classification_config());
  add_model(repository, "cls_int8", int8_dir, classification_config());
  add_model(repository, "cls_bf16", bf16_dir, classification_config());
  Served served = start(repository);

  const std::vector<std::string>& texts = sample_texts();
  const InferResponse f32 = infer_texts(*served.client, "cls_f32", texts);
  const std::vector<float>& f32_logits = floats(f32, "logits");
  ASSERT_EQ(f32_logits.size(), texts.size() * 3);
  struct Case {
    std::string model;
    fs::path folder;
    double hidden_bound;
  };
  for (const Case& test : {Case{"cls_f32", fixture_path("tiny-bert-cls"), 0.0},
                           Case{"cls_int8", int8_dir, kInt8HiddenBound},
                           Case{"cls_bf16", bf16_dir, kBf16HiddenBound}}) {
    SCOPED_TRACE(test.model);
    const InferResponse served_response = infer_texts(*served.client, test.model, texts);
    const std::vector<float>& logits = floats(served_response, "logits");
    const std::vector<float>& probabilities = floats(served_response, "probabilities");
    ASSERT_EQ(probabilities.size(), texts.size() * 3);

    // The CLI's path on the same folder.
    const auto pipeline = pipeline::TextPipeline::load(test.folder);
    const std::vector<pipeline::Classification> expected = pipeline->classify(texts);
    for (size_t i = 0; i < texts.size(); ++i) {
      for (size_t j = 0; j < 3; ++j) {
        EXPECT_NEAR(probabilities[i * 3 + j], expected[i].probabilities[j], kSameModelTolerance) << "text " << i;
      }
    }
    const double error = relative_l2(logits, f32_logits);
    std::printf("  %s: logits relative L2 vs f32 %.3e\n", test.model.c_str(), error);
    if (test.hidden_bound == 0.0) {
      EXPECT_EQ(logits, f32_logits);
    } else {
      EXPECT_GT(error, 0.0) << "the quantized model answers exactly as f32: not quantized?";
      EXPECT_LT(error, 2 * test.hidden_bound);
    }
  }
  const size_t f32_bytes = packed_bytes_without_table(*served.server, "cls_f32");
  const size_t int8_bytes = packed_bytes_without_table(*served.server, "cls_int8");
  const size_t bf16_bytes = packed_bytes_without_table(*served.server, "cls_bf16");
  EXPECT_LT(int8_bytes, bf16_bytes);
  EXPECT_LT(bf16_bytes, f32_bytes);
  served.server->stop();
}

// An int8 sentence-embedding model: the served mean-pooled embeddings equal TextPipeline::embed on
// the int8 folder and stay close to the f32 embeddings.
TEST(ServeQuant, Int8EmbeddingsAnswerAsThePipeline) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert") / "config.json");
  SCALEBERT_REQUIRE_PRECISION(Precision::kInt8);
  TempDir dir;
  const fs::path int8_dir = quantize("tiny-bert", Precision::kInt8, dir / "emb-int8");
  const fs::path repository = dir / "repository";
  add_model(repository, "emb_int8", int8_dir, embeddings_config());
  Served served = start(repository);

  const std::vector<std::string>& texts = sample_texts();
  const std::vector<float> got = floats(infer_texts(*served.client, "emb_int8", texts), "embeddings");
  const Tensor want = pipeline::TextPipeline::load(int8_dir)->embed(texts, pipeline::Pooling::kMean, false);
  const Tensor f32 =
      pipeline::TextPipeline::load(fixture_path("tiny-bert"))->embed(texts, pipeline::Pooling::kMean, false);
  ASSERT_EQ(got.size(), static_cast<size_t>(want.numel()));
  const float* want_values = want.data<float>();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want_values[i], kSameModelTolerance) << "element " << i;
  const std::vector<float> f32_values(f32.data<float>(), f32.data<float>() + f32.numel());
  const double error = relative_l2(got, f32_values);
  std::printf("  emb_int8: embeddings relative L2 vs f32 %.3e\n", error);
  EXPECT_GT(error, 0.0);
  EXPECT_LT(error, kInt8HiddenBound);
  EXPECT_LT(packed_bytes_without_table(*served.server, "emb_int8"),
            InferenceWeights::load(fixture_path("tiny-bert"))->owned_bytes());
  served.server->stop();
}

// An int8 version in a checkpoint store (quant::save_quantized_model), one replica of every shard
// corrupt: served through the config's store_roots with failover, answering as the int8 folder.
TEST(ServeQuant, Int8FromACheckpointStore) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  SCALEBERT_REQUIRE_PRECISION(Precision::kInt8);
  TempDir dir;
  const fs::path int8_dir = quantize("tiny-bert-cls", Precision::kInt8, dir / "cls-int8");
  const std::vector<fs::path> roots = {dir / "stores/r0", dir / "stores/r1"};
  store::CheckpointStore writer(roots);
  const store::SaveOptions save_options{2, 20000};
  ASSERT_EQ(quant::save_quantized_model(writer, int8_dir, save_options).version, 1u);
  for (const store::ManifestObject& shard : writer.read_manifest(1).shards) {
    std::ofstream(writer.version_path(shard.replicas[0], 1) / shard.file, std::ios::binary | std::ios::app) << "x";
  }
  const fs::path repository = dir / "repository";
  fs::create_directories(repository / "cls_int8");
  std::ofstream(repository / "cls_int8" / "config.pbtxt")
      << classification_config()
      << R"(parameters { key: "store_roots" value: { string_value: "../../stores/r0,../../stores/r1" } })" << "\n";
  Served served = start(repository);
  EXPECT_FALSE(served.server->repository().load_warnings("cls_int8").empty());

  const std::vector<std::string>& texts = sample_texts();
  const std::vector<float> probabilities = floats(infer_texts(*served.client, "cls_int8", texts), "probabilities");
  const auto expected = pipeline::TextPipeline::load(int8_dir)->classify(texts);
  ASSERT_EQ(probabilities.size(), texts.size() * 3);
  for (size_t i = 0; i < texts.size(); ++i) {
    for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(probabilities[i * 3 + j], expected[i].probabilities[j], kSameModelTolerance);
  }
  EXPECT_EQ(packed_bytes_without_table(*served.server, "cls_int8"), InferenceWeights::load(int8_dir)->owned_bytes());
  served.server->stop();
}

}  // namespace
}  // namespace scalebert::serve
