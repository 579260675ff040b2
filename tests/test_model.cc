// The CPU encoder and heads against Hugging Face transformers: reference/make_tiny_bert.py saves tiny
// random BERTs (every head, activation and checkpoint layout) with PyTorch outputs; the packed,
// planned forward pass must reproduce them within 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "io/safetensors.h"
#include "model/bert_model.h"
#include "model/inference_session.h"
#include "model/inference_weights.h"
#include "testing.h"

using namespace scalebert;

namespace {

constexpr float kTolerance = 1e-4f;

using scalebert::testing::fixture_path;

// Largest difference between a packed (N, W) result and a padded (B, T, W) reference, over the
// tokens the attention mask keeps.
float packed_vs_padded(const PackedBatch& batch, const Tensor& packed, const Tensor& padded) {
  Tensor unpacked = unpack_rows(batch, packed, padded.dim(1));
  const int64_t W = packed.dim(1);
  float worst = 0.0f;
  for (int64_t s = 0; s < batch.sequences(); ++s) {
    for (int64_t n = batch.sequence_offsets[s]; n < batch.sequence_offsets[s + 1]; ++n) {
      const int64_t t = batch.position_ids[n];
      for (int64_t c = 0; c < W; ++c) {
        float got = unpacked.data<float>()[(s * padded.dim(1) + t) * W + c];
        float want = padded.data<float>()[(s * padded.dim(1) + t) * W + c];
        float difference = std::fabs(got - want);
        if (!(difference <= worst)) worst = std::isnan(difference) ? INFINITY : difference;
      }
    }
  }
  return worst;
}

// Stacks start/end (B, T) references into (B, T, 2) like the QA head's packed (N, 2) columns.
Tensor stack_start_end(const Tensor& start, const Tensor& end) {
  const int64_t B = start.dim(0), T = start.dim(1);
  Tensor stacked = Tensor::empty({B, T, 2}, DType::kF32);
  for (int64_t i = 0; i < B * T; ++i) {
    stacked.data<float>()[2 * i] = start.data<float>()[i];
    stacked.data<float>()[2 * i + 1] = end.data<float>()[i];
  }
  return stacked;
}

void check_model_against_reference(const std::string& name, const std::string& reference_file) {
  SCOPED_TRACE(name + "/" + reference_file);
  auto model = std::make_shared<BertModel>(BertModel::load(fixture_path(name)));
  EXPECT_TRUE(model->unused_tensors.empty()) << "unused: " << model->unused_tensors.front();
  InferenceSession session(InferenceWeights::build(model));
  SafetensorsFile reference = SafetensorsFile::open(fixture_path(name) / reference_file);
  PackedBatch batch = PackedBatch::from_padded(reference.tensor("input_ids"), reference.tensor("attention_mask"),
                                               reference.tensor("token_type_ids"));
  // Run twice: the second run reuses the planned steps and must give the same numbers.
  for (int repeat = 0; repeat < 2; ++repeat) {
    const InferenceOutputs& outputs = session.run(batch);
    EXPECT_LT(packed_vs_padded(batch, outputs.hidden, reference.tensor("last_hidden_state")), kTolerance);
    if (reference.has("pooler_output")) {
      ASSERT_TRUE(outputs.pooled.defined());
      EXPECT_LT(scalebert::testing::max_abs_diff(outputs.pooled, reference.tensor("pooler_output")), kTolerance);
    }
    switch (model->head) {
      case TaskHead::kSequenceClassification:
        EXPECT_LT(scalebert::testing::max_abs_diff(outputs.logits, reference.tensor("logits")), kTolerance);
        break;
      case TaskHead::kTokenClassification:
      case TaskHead::kMaskedLM:
        EXPECT_LT(packed_vs_padded(batch, outputs.logits, reference.tensor("logits")), kTolerance);
        break;
      case TaskHead::kQuestionAnswering:
        EXPECT_LT(packed_vs_padded(batch, outputs.logits,
                                   stack_start_end(reference.tensor("start_logits"), reference.tensor("end_logits"))),
                  kTolerance);
        break;
      case TaskHead::kNone: EXPECT_FALSE(outputs.logits.defined()); break;
    }
  }
}

}  // namespace

class ModelFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelFixture, MatchesHuggingFace) {
  SCALEBERT_REQUIRE_PATH(fixture_path(GetParam()) / "reference.safetensors");
  check_model_against_reference(GetParam(), "reference.safetensors");
  check_model_against_reference(GetParam(), "reference_full.safetensors");
}

INSTANTIATE_TEST_SUITE_P(TinyBert, ModelFixture,
                         ::testing::Values("tiny-bert", "tiny-bert-gelu-new", "tiny-bert-relu", "tiny-bert-cls",
                                           "tiny-bert-ner", "tiny-bert-qa", "tiny-bert-mlm", "tiny-bert-sharded",
                                           "tiny-bert-legacy"),
                         scalebert::testing::fixture_param_name);

TEST(Model, DetectsHeadsFromConfig) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  EXPECT_EQ(BertModel::load(fixture_path("tiny-bert-cls")).head, TaskHead::kSequenceClassification);
  EXPECT_EQ(BertModel::load(fixture_path("tiny-bert-ner")).head, TaskHead::kTokenClassification);
  EXPECT_EQ(BertModel::load(fixture_path("tiny-bert-qa")).head, TaskHead::kQuestionAnswering);
  EXPECT_EQ(BertModel::load(fixture_path("tiny-bert-mlm")).head, TaskHead::kMaskedLM);
  BertModel classifier = BertModel::load(fixture_path("tiny-bert-cls"));
  EXPECT_EQ(classifier.labels(), (std::vector<std::string>{"negative", "neutral", "positive"}));
  // Forcing the base encoder on a classifier checkpoint leaves the classifier unused, and says so.
  BertModel encoder_only = BertModel::load(fixture_path("tiny-bert-cls"), TaskHead::kNone);
  EXPECT_FALSE(encoder_only.unused_tensors.empty());
  EXPECT_THROW(BertModel::load(fixture_path("tiny-bert"), TaskHead::kQuestionAnswering), InvalidArgument);
}

TEST(Model, ShapeClassesAndBatchCompositionDoNotChangeResults) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  auto model = std::make_shared<BertModel>(BertModel::load(fixture_path("tiny-bert")));
  auto weights = InferenceWeights::build(model);
  InferenceSession session(weights);
  // One sequence alone, then inside a larger batch of another shape class: its rows must agree.
  std::vector<int32_t> ids = {2, 7, 9, 11, 30, 3};
  PackedBatch alone;
  alone.add_sequence(ids);
  Tensor first = Tensor::empty({6, model->config.hidden_size}, DType::kF32);
  const InferenceOutputs& single = session.run(alone);
  std::memcpy(first.raw(), single.hidden.raw(), first.nbytes());
  PackedBatch mixed;
  for (int i = 0; i < 9; ++i) {
    std::vector<int32_t> other(5 + 3 * i, 20 + i);
    other.front() = 2;
    mixed.add_sequence(other);
  }
  mixed.add_sequence(ids);
  const InferenceOutputs& many = session.run(mixed);
  Tensor last = many.hidden.slice_rows(mixed.sequence_offsets[9], mixed.sequence_offsets[10]);
  EXPECT_LT(scalebert::testing::max_abs_diff(first, last), 1e-5f);
}

TEST(Model, BadInputsAreClearErrors) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  auto model = std::make_shared<BertModel>(BertModel::load(fixture_path("tiny-bert")));
  InferenceSession session(InferenceWeights::build(model));
  PackedBatch empty;
  EXPECT_THROW(session.run(empty), InvalidArgument);
  PackedBatch too_long;
  too_long.add_sequence(std::vector<int32_t>(model->config.max_position_embeddings + 1, 5));
  try {
    session.run(too_long);
    FAIL() << "expected a throw";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("max_position_embeddings"), std::string::npos) << error.what();
  }
  PackedBatch bad_id;
  bad_id.add_sequence(std::vector<int32_t>{2, static_cast<int32_t>(model->config.vocab_size), 3});
  EXPECT_THROW(session.run(bad_id), InvalidArgument);
  EXPECT_THROW(BertModel::load(fixture_path("does-not-exist")), Error);
}
