// The training forward and backward of every task head against PyTorch: reference/train_reference.py
// saves transformers' loss and the gradient of every parameter for one batch (dropout off); the
// packed graph must reproduce the loss within 1e-5 and each gradient within 1e-4 of its scale.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "io/safetensors.h"
#include "model/bert_model.h"
#include "model/inference_session.h"
#include "train/training_graph.h"
#include "testing.h"

using namespace scalebert;

namespace {

using scalebert::testing::fixture_path;

// Packs the reference's padded batch and its labels the way the graph takes them.
TrainingBatch training_batch(const SafetensorsFile& reference, TaskHead head) {
  TrainingBatch batch;
  batch.tokens = PackedBatch::from_padded(reference.tensor("input_ids"), reference.tensor("attention_mask"),
                                          reference.tensor("token_type_ids"));
  const Tensor mask = reference.tensor("attention_mask");
  const int64_t B = mask.dim(0), T = mask.dim(1);
  auto int64_values = [](const Tensor& tensor) {
    return std::vector<int64_t>(tensor.data<int64_t>(), tensor.data<int64_t>() + tensor.numel());
  };
  switch (head) {
    case TaskHead::kSequenceClassification:
      for (int64_t label : int64_values(reference.tensor("labels"))) batch.labels.push_back(static_cast<int32_t>(label));
      break;
    case TaskHead::kTokenClassification:
    case TaskHead::kMaskedLM: {
      std::vector<int64_t> labels = int64_values(reference.tensor("labels"));
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < T; ++t) {
          if (mask.data<int64_t>()[b * T + t] == 1) batch.labels.push_back(static_cast<int32_t>(labels[b * T + t]));
        }
      }
      break;
    }
    case TaskHead::kQuestionAnswering:
      for (int64_t p : int64_values(reference.tensor("start_positions"))) batch.start_positions.push_back(static_cast<int32_t>(p));
      for (int64_t p : int64_values(reference.tensor("end_positions"))) batch.end_positions.push_back(static_cast<int32_t>(p));
      break;
    case TaskHead::kNone: break;
  }
  return batch;
}

}  // namespace

class TrainingGraphFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainingGraphFixture, LossAndGradientsMatchPyTorch) {
  const std::filesystem::path reference_path = fixture_path("train") / (GetParam() + ".safetensors");
  SCALEBERT_REQUIRE_PATH(reference_path);
  BertModel model = BertModel::load(fixture_path(GetParam()));
  Tensor gradients = model.parameters.make_arena();
  TrainingGraph graph(model, gradients, DropoutRates::none());
  SafetensorsFile reference = SafetensorsFile::open(reference_path);
  TrainingBatch batch = training_batch(reference, model.head);

  StepLoss loss = graph.forward_backward(batch, 1.0f, 42);
  EXPECT_NEAR(loss.loss, reference.tensor("loss").data<float>()[0], 1e-5);

  int compared = 0;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    const std::string name = "grad." + entry.name;
    if (!reference.has(name)) {
      // Parameters the head does not use (a pooler under token classification) get no gradient.
      Tensor ours = model.parameters.view(gradients, entry.name);
      for (int64_t i = 0; i < ours.numel(); ++i) ASSERT_EQ(ours.data<float>()[i], 0.0f) << entry.name;
      continue;
    }
    Tensor expected = reference.tensor(name);
    Tensor ours = model.parameters.view(gradients, entry.name);
    ASSERT_EQ(expected.shape(), ours.shape()) << entry.name;
    float scale = 0.0f, worst = 0.0f;
    for (int64_t i = 0; i < ours.numel(); ++i) {
      scale = std::max(scale, std::fabs(expected.data<float>()[i]));
      float difference = std::fabs(ours.data<float>()[i] - expected.data<float>()[i]);
      worst = std::isnan(difference) ? INFINITY : std::max(worst, difference);
    }
    EXPECT_LE(worst, 1e-4f * std::max(scale, 1e-3f)) << entry.name << " (gradient scale " << scale << ")";
    ++compared;
  }
  EXPECT_GT(compared, 20);

  // Gradients accumulate: a second identical micro-batch at half scale adds half again.
  std::vector<float> once(gradients.data<float>(), gradients.data<float>() + gradients.numel());
  graph.forward_backward(batch, 0.5f, 42);
  for (int64_t i = 0; i < gradients.numel(); i += 97) {
    EXPECT_NEAR(gradients.data<float>()[i], 1.5f * once[i], 1e-5f + 1e-4f * std::fabs(once[i])) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Heads, TrainingGraphFixture,
                         ::testing::Values("tiny-bert-cls", "tiny-bert-ner", "tiny-bert-qa", "tiny-bert-mlm"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& c : name) c = (c == '-') ? '_' : c;
                           return name;
                         });

TEST(TrainingGraph, DropoutIsSeededAndEvaluationIsDeterministic) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  BertModel model = BertModel::load(fixture_path("tiny-bert-cls"));
  Tensor gradients = model.parameters.make_arena();
  TrainingGraph graph(model, gradients, DropoutRates{0.1f, 0.1f, 0.1f});
  TrainingBatch batch;
  batch.tokens.add_sequence(std::vector<int32_t>{6, 20, 30, 40, 7});
  batch.tokens.add_sequence(std::vector<int32_t>{6, 21, 31, 7});
  batch.labels = {0, 2};
  double first = graph.forward_backward(batch, 1.0f, 7).loss;
  double same = graph.forward_backward(batch, 1.0f, 7).loss;
  double other = graph.forward_backward(batch, 1.0f, 8).loss;
  EXPECT_EQ(first, same);
  EXPECT_NE(first, other);
  EXPECT_EQ(graph.evaluate(batch).loss, graph.evaluate(batch).loss);
  batch.labels = {0, 3};
  EXPECT_THROW(graph.forward_backward(batch, 1.0f, 1), InvalidArgument);
}

// With dropout on, a fixed seed makes the loss a deterministic function of the weights, so the
// backward pass must be its gradient: every dropout site's backward has to apply the very mask its
// forward drew. Checked along a random direction v over all parameters: g . v against the central
// difference (L(w + h v) - L(w - h v)) / 2h, in f32 (h = 1e-3 on weights of scale ~0.02-1). The same
// check with dropout off is the control.
TEST(TrainingGraph, DropoutBackwardIsTheGradientOfTheSeededLoss) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  for (const float p : {0.0f, 0.1f, 0.3f}) {
    BertModel model = BertModel::load(fixture_path("tiny-bert-cls"));
    Tensor gradients = model.parameters.make_arena();
    TrainingGraph graph(model, gradients, DropoutRates{p, p, p});
    TrainingBatch batch;
    batch.tokens.add_sequence(std::vector<int32_t>{6, 20, 30, 40, 50, 60, 7});
    batch.tokens.add_sequence(std::vector<int32_t>{6, 21, 31, 41, 7});
    batch.tokens.add_sequence(std::vector<int32_t>{6, 22, 32, 42, 52, 7});
    batch.labels = {0, 2, 1};
    const uint64_t seed = 1234;
    Tensor values = model.parameters.values();  // a view sharing the table's storage
    float* w = values.data<float>();
    const int64_t n = model.parameters.values().numel();
    std::vector<float> direction(static_cast<size_t>(n));
    uint64_t state = 42;
    for (float& value : direction) {  // uniform in [-1, 1) from a 64-bit LCG: enough for a direction
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      value = static_cast<float>(static_cast<double>(state >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    }
    std::memset(gradients.raw(), 0, gradients.nbytes());
    graph.forward_backward(batch, 1.0f, seed);
    const float* g = gradients.data<float>();
    double analytic = 0.0;
    for (int64_t i = 0; i < n; ++i) analytic += static_cast<double>(g[i]) * direction[static_cast<size_t>(i)];
    const std::vector<float> original(w, w + n);
    auto loss_at = [&](double step) {
      for (int64_t i = 0; i < n; ++i) w[i] = original[static_cast<size_t>(i)] + static_cast<float>(step) * direction[static_cast<size_t>(i)];
      graph.parameters_changed();
      std::memset(gradients.raw(), 0, gradients.nbytes());
      return graph.forward_backward(batch, 1.0f, seed).loss;
    };
    const double h = 1e-3;
    const double numeric = (loss_at(h) - loss_at(-h)) / (2 * h);
    EXPECT_NEAR(analytic, numeric, 5e-3 * std::max(1.0, std::abs(numeric))) << "dropout p = " << p;
  }
}

// A graph reused across batches of one shape bucket must give the gradients a fresh graph gives: rows
// past the real tokens (or sequences) that an earlier, larger batch wrote may not leak into the
// products. Masked LM (token rows) and sequence classification (the last layer on [CLS] rows).
TEST(TrainingGraph, ReuseAcrossBatchSizesMatchesAFreshGraph) {
  for (const char* name : {"tiny-bert-mlm", "tiny-bert-cls"}) {
    SCALEBERT_REQUIRE_PATH(fixture_path(name));
    BertModel model = BertModel::load(fixture_path(name));
    const bool classification = model.head == TaskHead::kSequenceClassification;
    auto make_batch = [&](int sequences, int length) {
      TrainingBatch batch;
      for (int s = 0; s < sequences; ++s) {
        std::vector<int32_t> ids(length);
        for (int t = 0; t < length; ++t) ids[t] = 9 + (s * 7 + t * 3) % 100;
        ids.front() = 6;
        ids.back() = 7;
        batch.tokens.add_sequence(ids);
        if (classification) {
          batch.labels.push_back(s % 2);
        } else {
          for (int t = 0; t < length; ++t) batch.labels.push_back(t % 3 == 1 ? ids[t] : -100);
        }
      }
      return batch;
    };
    // Masked LM: 38 and 37 tokens share the bucket of 38 rows, and the first batch is the longest, so
    // the graph keeps its buffers; the small batch runs second on the reused graph. Classification:
    // 33 sequences (34 rows in their bucket) after 40: token rows written by the first batch lie
    // where the second's [CLS]-row products read their pad row.
    TrainingBatch large = classification ? make_batch(40, 6) : make_batch(1, 38);
    TrainingBatch small = classification ? make_batch(33, 5) : make_batch(1, 37);
    if (classification) {
      ASSERT_GT(InferenceSession::bucket_rows(33), 33);  // the [CLS]-row products have a pad row
    } else {
      ASSERT_EQ(InferenceSession::bucket_rows(38), InferenceSession::bucket_rows(37));
    }
    Tensor reused_gradients = model.parameters.make_arena();
    TrainingGraph reused(model, reused_gradients, DropoutRates::none());
    reused.forward_backward(large, 1.0f, 1);
    std::memset(reused_gradients.raw(), 0, reused_gradients.nbytes());
    reused.forward_backward(small, 1.0f, 1);
    Tensor fresh_gradients = model.parameters.make_arena();
    TrainingGraph fresh(model, fresh_gradients, DropoutRates::none());
    fresh.forward_backward(small, 1.0f, 1);
    EXPECT_EQ(scalebert::testing::max_abs_diff(reused_gradients, fresh_gradients), 0.0f) << name;
  }
}
