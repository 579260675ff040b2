// InferenceSession's sequence-outputs-only mode (the last layer past its attention on the [CLS] rows
// only) against the full run of the same session type: logits, pooler output and the [CLS] hidden
// rows for f32, bf16, dynamic int8 (the fused chain) and static int8 weights of the tiny fixtures,
// over batch shapes that reuse buckets and pad rows; the mode's outputs against PyTorch; the mode
// ignored while an observer is set and for token heads. Needs only the tiny fixtures.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "io/safetensors.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/quantize_rows.h"
#include "model/bert_model.h"
#include "model/inference_session.h"
#include "model/inference_weights.h"
#include "model/packed_batch.h"
#include "quant/calibration.h"
#include "testing.h"

namespace scalebert {
namespace {

using kernels::Precision;
using testing::fixture_path;

enum class Variant { kF32, kBf16, kInt8Dynamic, kInt8Static };

const char* variant_name(Variant variant) {
  switch (variant) {
    case Variant::kF32: return "f32";
    case Variant::kBf16: return "bf16";
    case Variant::kInt8Dynamic: return "int8_dynamic";
    case Variant::kInt8Static: return "int8_static";
  }
  return "?";
}

// Largest |a - b| over max |b|, per tensor (the tensor's own scale; logits of the tiny models are O(1)).
double relative_difference(const float* a, const float* b, int64_t count) {
  double difference = 0.0, scale = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(d)) return INFINITY;
    difference = std::max(difference, d);
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return scale > 0.0 ? difference / scale : difference;
}

// Every Linear the plan can name, for a model's layers and heads.
std::vector<std::string> linear_prefixes(const BertModel& model) {
  std::vector<std::string> prefixes;
  for (int64_t layer = 0; layer < model.config.num_hidden_layers; ++layer) {
    for (const char* suffix : {"attention.self", "attention.output.dense", "intermediate.dense", "output.dense"}) {
      prefixes.push_back(layer_parameter(layer, suffix));
    }
  }
  if (model.has_pooler) prefixes.push_back("pooler.dense");
  if (model.head == TaskHead::kSequenceClassification) prefixes.push_back("classifier");
  return prefixes;
}

// Sequences of the given lengths: [CLS] first, [SEP] last, ids from a fixed seed in between, and
// the second half of every third sequence in segment 1 (a pair).
PackedBatch make_batch(const std::vector<int64_t>& lengths, uint32_t seed, int64_t vocab_size) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> word(9, static_cast<int32_t>(vocab_size) - 1);
  PackedBatch batch;
  for (size_t s = 0; s < lengths.size(); ++s) {
    const int64_t length = lengths[s];
    std::vector<int32_t> ids(length), types(length, 0);
    for (int64_t t = 0; t < length; ++t) ids[t] = word(generator);
    ids[0] = 6;                        // [CLS]
    if (length > 1) ids.back() = 7;    // [SEP]
    if (s % 3 == 2) std::fill(types.begin() + length / 2, types.end(), 1);
    batch.add_sequence(ids, types);
  }
  return batch;
}

std::vector<int64_t> cycle_lengths(int64_t sequences, int64_t stride, int64_t max_length) {
  std::vector<int64_t> lengths(sequences);
  for (int64_t s = 0; s < sequences; ++s) lengths[s] = 1 + (s * stride) % max_length;
  return lengths;
}

// Batches in the order one session runs them. S = 41 and 33 have pad rows in their sequence bucket
// (42 and 34); the S = 33 batch follows the S = 41 one, so it reuses the pad row that batch left.
// 12 x 40 = 480 tokens makes the dynamic int8 token steps run in row blocks.
std::vector<PackedBatch> batches(int64_t vocab_size, int64_t max_length) {
  std::vector<std::vector<int64_t>> shapes = {
      {12},                                      // one sequence
      {1},                                       // one sequence of one token: [CLS] alone
      {1, 1, 1, 1},                              // only [CLS] rows: S = N
      std::vector<int64_t>(12, max_length),      // the longest sequences
      cycle_lengths(41, 7, max_length),          // S bucket 42
      cycle_lengths(33, 5, max_length),          // smaller, S bucket 34, after the larger
      {5, 1, 17, 1, 3},                          // a few again: small buckets after large ones
      std::vector<int64_t>(300, 3),              // S bucket 304: int8 [CLS]-row steps in row blocks
      cycle_lengths(41, 3, max_length),
  };
  std::vector<PackedBatch> result;
  for (size_t i = 0; i < shapes.size(); ++i) result.push_back(make_batch(shapes[i], 100 + static_cast<uint32_t>(i), vocab_size));
  return result;
}

// Not a fixture: a random model of all-MiniLM-L6-v2's layer shapes (C 384, 12 heads, I 1536; two
// layers), with a pooler and a 3-label classifier, for the kernels the real shapes pick.
constexpr const char* kMiniLmShaped = "minilm-shaped";

std::shared_ptr<const BertModel> load_model(const std::string& name) {
  if (name != kMiniLmShaped) return std::make_shared<const BertModel>(BertModel::load(fixture_path(name)));
  return scalebert::testing::random_bert({200, 384, 2, 12, 1536, 64}, TaskHead::kSequenceClassification, 3, 11);
}

std::shared_ptr<const InferenceWeights> weights_for(const std::shared_ptr<const BertModel>& model, Variant variant) {
  PrecisionPlan plan;
  if (variant == Variant::kF32) return InferenceWeights::build(model, plan);
  std::map<std::string, float> ranges;
  if (variant == Variant::kInt8Static) {
    std::vector<std::vector<int32_t>> samples;
    for (const PackedBatch& batch : batches(model->config.vocab_size, model->config.max_position_embeddings)) {
      for (int64_t s = 0; s < batch.sequences(); ++s) {
        samples.emplace_back(batch.input_ids.begin() + batch.sequence_offsets[s],
                             batch.input_ids.begin() + batch.sequence_offsets[s + 1]);
      }
    }
    ranges = quant::calibrate_input_ranges(model, samples);
  }
  for (const std::string& prefix : linear_prefixes(*model)) {
    LinearPrecision& linear = plan.layers[prefix];
    linear.precision = variant == Variant::kBf16 ? Precision::kBF16 : Precision::kInt8;
    if (variant == Variant::kInt8Static) {
      const float range = ranges.at(prefix);
      linear.input_scale = range > 0.0f ? range / kernels::kInt8Max : 1.0f;
    }
  }
  return InferenceWeights::build(model, plan);
}

// Relative to each tensor's max |value|. Measured on an AVX-512 VNNI + BF16 host (oneDNN brgemm):
// 0 for every precision, model and batch below, i.e. bit-identical to the full run. That is by
// design for int8 (exact integer products; the fused layer norm and quantizer are bit for bit the
// unfused ones, test_quant_fused) and follows for f32 and bf16 from oneDNN summing a row's
// products in the same order whatever the row count. The tolerance is not 0 because that last
// part is a property of the kernels oneDNN picks on this CPU, not a contract: another ISA may pick
// another kernel for S rows than for N rows, and reorder a sum (a few ulp, ~1e-7). Gathering a
// wrong row, or skipping a layer norm, moves these by O(1) (0.5 to 1.8 with the context rows
// misaligned, checked by hand).
constexpr double kTolerance = 1e-5;

void PrintTo(Variant variant, std::ostream* out) { *out << variant_name(variant); }

class SequenceOutputsOnly : public ::testing::TestWithParam<std::tuple<std::string, Variant>> {};

TEST_P(SequenceOutputsOnly, MatchesTheFullRun) {
  const auto& [fixture, variant] = GetParam();
  if (fixture != kMiniLmShaped) {
    SCALEBERT_REQUIRE_PATH(fixture_path(fixture));
  }
  if ((variant == Variant::kBf16 && !kernels::cpu_has_bf16()) ||
      (variant != Variant::kF32 && variant != Variant::kBf16 && !kernels::cpu_has_int8_dot_product())) {
    GTEST_SKIP() << variant_name(variant) << " does not run natively on this CPU (it would fall back to f32)";
  }
  const std::shared_ptr<const BertModel> model = load_model(fixture);
  auto weights = weights_for(model, variant);
  if (variant == Variant::kInt8Dynamic) {
    ASSERT_FALSE(weights->layers.back().qkv.int8()->is_static());
  } else if (variant == Variant::kInt8Static) {
    ASSERT_TRUE(weights->layers.back().qkv.int8()->is_static());
  }
  const int64_t C = model->config.hidden_size;
  InferenceSession full(weights), cls(weights);
  EXPECT_FALSE(full.sequence_outputs_only());
  cls.set_sequence_outputs_only(true);

  double worst_logits = 0.0, worst_pooled = 0.0, worst_cls = 0.0;
  for (const PackedBatch& batch : batches(model->config.vocab_size, model->config.max_position_embeddings)) {
    const int64_t N = batch.tokens(), S = batch.sequences();
    SCOPED_TRACE(::testing::Message() << "batch of " << S << " sequences, " << N << " tokens");
    const InferenceOutputs& want = full.run(batch);
    const InferenceOutputs& got = cls.run(batch);

    ASSERT_TRUE(want.hidden.defined());
    EXPECT_EQ(want.hidden.shape(), (Shape{N, C}));
    EXPECT_FALSE(got.hidden.defined());
    ASSERT_TRUE(got.cls_hidden.defined());
    ASSERT_EQ(got.cls_hidden.shape(), (Shape{S, C}));
    // The full run's cls_hidden is its hidden rows offsets[s], bit for bit.
    std::vector<float> gathered(static_cast<size_t>(S * C));
    kernels::cls_pool(gathered.data(), want.hidden.data<float>(), batch.sequence_offsets.data(), S, C);
    if (want.cls_hidden.defined()) {
      EXPECT_TRUE(std::equal(gathered.begin(), gathered.end(), want.cls_hidden.data<float>()));
    }
    const double cls_difference = relative_difference(got.cls_hidden.data<float>(), gathered.data(), S * C);
    EXPECT_LE(cls_difference, kTolerance);
    worst_cls = std::max(worst_cls, cls_difference);

    ASSERT_EQ(got.pooled.defined(), model->has_pooler);
    if (model->has_pooler) {
      ASSERT_EQ(got.pooled.shape(), want.pooled.shape());
      const double difference = relative_difference(got.pooled.data<float>(), want.pooled.data<float>(), S * C);
      EXPECT_LE(difference, kTolerance);
      worst_pooled = std::max(worst_pooled, difference);
    }
    ASSERT_EQ(got.logits.defined(), want.logits.defined());
    if (want.logits.defined()) {
      ASSERT_EQ(got.logits.shape(), want.logits.shape());
      const double difference =
          relative_difference(got.logits.data<float>(), want.logits.data<float>(), want.logits.numel());
      EXPECT_LE(difference, kTolerance);
      worst_logits = std::max(worst_logits, difference);
    }
  }
  std::cout << fixture << " " << variant_name(variant) << ": largest relative difference cls_hidden " << worst_cls
            << ", pooled " << worst_pooled << ", logits " << worst_logits << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    TinyBert, SequenceOutputsOnly,
    ::testing::Combine(::testing::Values("tiny-bert-cls", "tiny-bert-relu", kMiniLmShaped),
                       ::testing::Values(Variant::kF32, Variant::kBf16, Variant::kInt8Dynamic, Variant::kInt8Static)),
    [](const ::testing::TestParamInfo<std::tuple<std::string, Variant>>& param) {
      std::string name = std::get<0>(param.param) + "_" + variant_name(std::get<1>(param.param));
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

// The mode's outputs against PyTorch (reference/make_tiny_bert.py), as test_model checks the full
// run: the [CLS] rows of last_hidden_state, pooler_output and the logits.
TEST(SequenceOutputsOnlyReference, MatchesHuggingFace) {
  for (const std::string name : {"tiny-bert-cls", "tiny-bert"}) {
    for (const std::string file : {"reference.safetensors", "reference_full.safetensors"}) {
      SCOPED_TRACE(name + "/" + file);
      SCALEBERT_REQUIRE_PATH(fixture_path(name) / file);
      auto model = std::make_shared<const BertModel>(BertModel::load(fixture_path(name)));
      InferenceSession session(InferenceWeights::build(model));
      session.set_sequence_outputs_only(true);
      SafetensorsFile reference = SafetensorsFile::open(fixture_path(name) / file);
      const PackedBatch batch = PackedBatch::from_padded(
          reference.tensor("input_ids"), reference.tensor("attention_mask"), reference.tensor("token_type_ids"));
      const InferenceOutputs& outputs = session.run(batch);
      ASSERT_FALSE(outputs.hidden.defined());
      const Tensor last_hidden = reference.tensor("last_hidden_state");  // (B, T, C)
      const int64_t T = last_hidden.dim(1), C = last_hidden.dim(2);
      float worst = 0.0f;
      for (int64_t s = 0; s < batch.sequences(); ++s) {
        const int64_t t = batch.position_ids[batch.sequence_offsets[s]];  // the [CLS] column of row s
        for (int64_t c = 0; c < C; ++c) {
          const float difference = std::fabs(outputs.cls_hidden.data<float>()[s * C + c] -
                                             last_hidden.data<float>()[(s * T + t) * C + c]);
          worst = std::isnan(difference) ? INFINITY : std::max(worst, difference);
        }
      }
      EXPECT_LT(worst, 1e-4f);  // test_model's tolerance for the full run
      EXPECT_LT(testing::max_abs_diff(outputs.pooled, reference.tensor("pooler_output")), 1e-4f);
      if (model->head == TaskHead::kSequenceClassification) {
        EXPECT_LT(testing::max_abs_diff(outputs.logits, reference.tensor("logits")), 1e-4f);
      }
    }
  }
}

// One session switched on and off between batches of different sizes gives what a session that
// never switches gives, and off it defines hidden again.
TEST(SequenceOutputsOnlySwitch, OnAndOffInOneSession) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  auto model = std::make_shared<const BertModel>(BertModel::load(fixture_path("tiny-bert-cls")));
  auto weights = weights_for(model, kernels::cpu_has_int8_dot_product() ? Variant::kInt8Dynamic : Variant::kF32);
  InferenceSession switching(weights), full(weights);
  const auto all = batches(model->config.vocab_size, model->config.max_position_embeddings);
  for (size_t i = 0; i < all.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "batch " << i);
    const bool on = i % 2 == 0;
    switching.set_sequence_outputs_only(on);
    const InferenceOutputs& got = switching.run(all[i]);
    const InferenceOutputs& want = full.run(all[i]);
    EXPECT_EQ(got.hidden.defined(), !on);
    if (!on) {
      EXPECT_EQ(testing::max_abs_diff(got.hidden, want.hidden), 0.0f);
    }
    EXPECT_LE(relative_difference(got.logits.data<float>(), want.logits.data<float>(), want.logits.numel()), kTolerance);
  }
}

// Calibration and error reports need every row: with an observer set the mode is ignored (every
// Linear sees N rows, hidden is defined, the results are the full run's); unset, it applies again.
TEST(SequenceOutputsOnlyObserver, ObserverSeesEveryRow) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  auto model = std::make_shared<const BertModel>(BertModel::load(fixture_path("tiny-bert-cls")));
  auto weights = weights_for(model, Variant::kF32);
  InferenceSession observed(weights), full(weights);
  observed.set_sequence_outputs_only(true);
  const PackedBatch batch = make_batch({9, 1, 30, 4}, 7, model->config.vocab_size);
  const std::string last_output = layer_parameter(model->config.num_hidden_layers - 1, "output.dense");
  int64_t last_output_rows = -1, pooler_rows = -1;
  observed.set_linear_observer([&](const std::string& linear, const float*, int64_t rows, int64_t) {
    if (linear == last_output) last_output_rows = rows;
    if (linear == "pooler.dense") pooler_rows = rows;
  });
  const InferenceOutputs& got = observed.run(batch);
  EXPECT_EQ(last_output_rows, batch.tokens());
  EXPECT_EQ(pooler_rows, batch.sequences());
  ASSERT_TRUE(got.hidden.defined());
  const InferenceOutputs& want = full.run(batch);
  EXPECT_EQ(testing::max_abs_diff(got.hidden, want.hidden), 0.0f);  // the same f32 steps, observed
  EXPECT_EQ(testing::max_abs_diff(got.logits, want.logits), 0.0f);

  observed.set_linear_observer(nullptr);
  last_output_rows = -1;
  const InferenceOutputs& again = observed.run(batch);
  EXPECT_FALSE(again.hidden.defined());
  EXPECT_EQ(last_output_rows, -1);
  EXPECT_LE(relative_difference(again.logits.data<float>(), full.run(batch).logits.data<float>(),
                                again.logits.numel()),
            kTolerance);
}

// Heads that read token rows ignore the mode: the same outputs as the full run, hidden included.
TEST(SequenceOutputsOnlyTokenHeads, AreIgnored) {
  for (const std::string name : {"tiny-bert-ner", "tiny-bert-qa", "tiny-bert-mlm"}) {
    SCOPED_TRACE(name);
    SCALEBERT_REQUIRE_PATH(fixture_path(name));
    auto model = std::make_shared<const BertModel>(BertModel::load(fixture_path(name)));
    auto weights = InferenceWeights::build(model);
    InferenceSession on(weights), off(weights);
    on.set_sequence_outputs_only(true);
    const PackedBatch batch = make_batch({9, 1, 30, 4}, 8, model->config.vocab_size);
    const InferenceOutputs& got = on.run(batch);
    const InferenceOutputs& want = off.run(batch);
    ASSERT_TRUE(got.hidden.defined());
    EXPECT_EQ(testing::max_abs_diff(got.hidden, want.hidden), 0.0f);
    ASSERT_EQ(got.logits.shape(), want.logits.shape());
    EXPECT_EQ(got.logits.dim(0), batch.tokens());
    EXPECT_EQ(testing::max_abs_diff(got.logits, want.logits), 0.0f);
  }
}

}  // namespace
}  // namespace scalebert
