// The training forward and backward of every task head against PyTorch: reference/train_reference.py
// saves transformers' loss and the gradient of every parameter for one batch (dropout off); the
// packed graph must reproduce the loss within 1e-5 and each gradient within 1e-4 of its scale. With
// dropout on, the mean loss and gradient over many masks must agree with PyTorch's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "io/safetensors.h"
#include "kernels/cpu/low_precision_matmul.h"
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

// Mixed precision against the same f32 PyTorch gradients: the encoder's products round their
// operands to bf16 (8 significant bits), so each gradient tensor agrees to a few % of its norm
// rather than 1e-4 of its largest value (measured worst 1.1-2.4%; PyTorch 1.13's own bf16 autocast
// differs from its f32 gradients by up to 2.1% on the same tensors, and by far more on the
// near-zero ones); a product fed a stale or wrong bf16 copy is off by O(1).
TEST_P(TrainingGraphFixture, Bf16ProductsMatchPyTorchToBf16Accuracy) {
  if (!kernels::cpu_has_bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  const std::filesystem::path reference_path = fixture_path("train") / (GetParam() + ".safetensors");
  SCALEBERT_REQUIRE_PATH(reference_path);
  BertModel model = BertModel::load(fixture_path(GetParam()));
  Tensor gradients = model.parameters.make_arena();
  TrainingGraph graph(model, gradients, DropoutRates::none(), kernels::Precision::kBF16);
  ASSERT_EQ(graph.products(), kernels::Precision::kBF16);
  SafetensorsFile reference = SafetensorsFile::open(reference_path);
  StepLoss loss = graph.forward_backward(training_batch(reference, model.head), 1.0f, 42);
  const double expected_loss = reference.tensor("loss").data<float>()[0];
  EXPECT_NEAR(loss.loss, expected_loss, 1e-2 * std::fabs(expected_loss));
  EXPECT_NE(loss.loss, expected_loss);  // the products did round

  // Per tensor: ||ours - expected|| / ||expected||, with the norm floored at 1e-5 of the largest
  // tensor's: gradients that are zero in exact arithmetic (a bias feeding a LayerNorm) hold only
  // rounding noise of ~1e-8 in both. The key bias is such a gradient too (softmax ignores a constant
  // added to a query's scores), but its value is sum_i rowsum(dS_i) q_i, and dS rounded to bf16 no
  // longer sums to zero per row: the bf16 attention leaves noise of 0.5-2.2e-4 of the largest norm there
  // (PyTorch's autocast does the same, larger), so it is held to 1e-3 of the largest norm instead.
  std::vector<std::pair<std::string, std::pair<double, double>>> errors;  // name, (||difference||, ||expected||)
  double largest_norm = 0.0;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    const std::string name = "grad." + entry.name;
    if (!reference.has(name)) continue;
    Tensor expected = reference.tensor(name);
    Tensor ours = model.parameters.view(gradients, entry.name);
    double difference = 0.0, norm = 0.0;
    for (int64_t i = 0; i < ours.numel(); ++i) {
      const double e = expected.data<float>()[i], d = ours.data<float>()[i] - e;
      difference += d * d;
      norm += e * e;
    }
    errors.push_back({entry.name, {std::sqrt(difference), std::sqrt(norm)}});
    largest_norm = std::max(largest_norm, std::sqrt(norm));
  }
  double worst = 0.0;
  for (const auto& [name, error] : errors) {
    if (name.ends_with("attention.self.key.bias")) {
      EXPECT_LT(error.first, 1e-3 * largest_norm) << name << ": ||difference|| " << error.first;
      continue;
    }
    const double relative = error.first / std::max(error.second, 1e-5 * largest_norm);
    worst = std::max(worst, relative);
    EXPECT_LT(relative, 5e-2) << name << ": ||difference|| " << error.first << ", ||expected|| " << error.second;
  }
  std::cout << GetParam() << ": worst relative gradient error " << worst << "\n";
}

INSTANTIATE_TEST_SUITE_P(Heads, TrainingGraphFixture,
                         ::testing::Values("tiny-bert-cls", "tiny-bert-ner", "tiny-bert-qa", "tiny-bert-mlm"),
                         scalebert::testing::fixture_param_name);

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
// With dropout on, ScaleBERT and PyTorch draw different masks, but the loss and the gradient must
// agree in expectation over masks. reference/train_reference.py averages transformers' loss and
// gradients over 400 torch seeds at dropout 0.3 (every site); the graph averages over 400 of its own
// seeds (grad_scale 1/400 accumulates the mean in the arena). What must hold:
//   - mean loss: within 4 standard errors of the difference of two independent means;
//   - mean gradient (all parameters as one vector): relative L2 distance to PyTorch's under a third
//     of the distance between the dropout-free gradient and PyTorch's mean, i.e. well inside what
//     dropout itself changes. Measured: 0.20 vs 0.88 (classification), 0.16 vs 1.50 (tagging);
//     with the hidden-state dropout sites off in ScaleBERT: 0.64 vs 0.88 and 1.22 vs 1.50.
// Attention-probability dropout is unbiased in the attention output (E[dropout(P)] V = P V), so it
// moves these means only through later nonlinearities; its masks and backward are checked by the
// dropout kernel tests and the directional finite difference below.
class DropoutExpectation : public ::testing::TestWithParam<std::string> {};

TEST_P(DropoutExpectation, MeanLossGradientAndGradientVarianceMatchPyTorch) {
  const std::filesystem::path reference_path = fixture_path("train") / (GetParam() + "-dropout.safetensors");
  SCALEBERT_REQUIRE_PATH(reference_path);
  BertModel model = BertModel::load(fixture_path(GetParam()));
  SafetensorsFile reference = SafetensorsFile::open(reference_path);
  const TrainingBatch batch = training_batch(reference, model.head);
  constexpr int kDraws = 400;
  constexpr float kRate = 0.3f;
  // The tensors PyTorch reports (the MLM decoder's tied weight appears once, and so on).
  std::vector<const ParameterEntry*> compared_entries;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    if (reference.has("mean_grad." + entry.name)) compared_entries.push_back(&entry);
  }
  ASSERT_GT(compared_entries.size(), 20u);
  Tensor draw_gradient = model.parameters.make_arena();
  Tensor mean = model.parameters.make_arena();
  TrainingGraph graph(model, draw_gradient, DropoutRates{kRate, kRate, kRate});
  double sum = 0.0, sum_squares = 0.0;
  std::vector<double> square_norms;  // (draws) ||g||^2 over the compared tensors
  for (int draw = 0; draw < kDraws; ++draw) {
    std::memset(draw_gradient.raw(), 0, draw_gradient.nbytes());
    const double loss = graph.forward_backward(batch, 1.0f, 1000 + draw).loss;
    sum += loss;
    sum_squares += loss * loss;
    double square_norm = 0.0;
    for (const ParameterEntry* entry : compared_entries) {
      const float* g = model.parameters.view(draw_gradient, entry->name).data<float>();
      float* m = model.parameters.view(mean, entry->name).data<float>();
      for (int64_t i = 0; i < shape_numel(entry->shape); ++i) {
        m[i] += g[i] / kDraws;
        square_norm += static_cast<double>(g[i]) * g[i];
      }
    }
    square_norms.push_back(square_norm);
  }
  const double mean_loss = sum / kDraws;
  const double standard_error = std::sqrt((sum_squares / kDraws - mean_loss * mean_loss) / kDraws);
  EXPECT_NEAR(mean_loss, reference.tensor("mean_loss").data<float>()[0], 4.0 * std::sqrt(2.0) * standard_error);

  Tensor plain = model.parameters.make_arena();
  TrainingGraph no_dropout(model, plain, DropoutRates::none());
  no_dropout.forward_backward(batch, 1.0f, 1);
  double distance = 0.0, effect = 0.0, norm = 0.0, our_mean_norm = 0.0, torch_mean_square_norm = 0.0;
  for (const ParameterEntry* entry : compared_entries) {
    const Tensor expected = reference.tensor("mean_grad." + entry->name);
    const float* torch_mean = expected.data<float>();
    const float* ours = model.parameters.view(mean, entry->name).data<float>();
    const float* without = model.parameters.view(plain, entry->name).data<float>();
    ASSERT_EQ(expected.numel(), shape_numel(entry->shape)) << entry->name;
    for (int64_t i = 0; i < expected.numel(); ++i) {
      distance += std::pow(static_cast<double>(ours[i]) - torch_mean[i], 2);
      effect += std::pow(static_cast<double>(without[i]) - torch_mean[i], 2);
      norm += std::pow(static_cast<double>(torch_mean[i]), 2);
      our_mean_norm += std::pow(static_cast<double>(ours[i]), 2);
    }
    torch_mean_square_norm += reference.tensor("mean_sq_norm." + entry->name).data<float>()[0];
  }
  const double relative = std::sqrt(distance / norm), dropout_effect = std::sqrt(effect / norm);
  EXPECT_LT(relative, dropout_effect / 3.0) << "mean gradient off by " << relative << " (dropout itself moves it by "
                                            << dropout_effect << ")";

  // Second moment: the variance of the gradient over masks, E||g||^2 - ||E g||^2. Masks correlated
  // where they should be independent can keep the means above and change this. Its sampling error is
  // dominated by that of mean ||g||^2: SD(||g||^2) / sqrt(draws) per engine. Measured (2026-11-26):
  // cls 58.8 vs PyTorch 56.7 (error 1.7), ner 23.6 vs 23.2 (0.31). A coarse check: every site
  // restarting its counter at 0 (all sites and layers drawing the same masks) gives ner 34.0 and
  // fails; subtler sharing does not move it past the noise (one site's mask shared by all rows: ner
  // 24.7, 3.8 errors; the attention-output sites reusing the embeddings site's masks: no change).
  double square_sum = 0.0, square_sum_squares = 0.0;
  for (double value : square_norms) {
    square_sum += value;
    square_sum_squares += value * value;
  }
  const double mean_square_norm = square_sum / kDraws;
  const double square_norm_error =
      std::sqrt((square_sum_squares / kDraws - mean_square_norm * mean_square_norm) / kDraws);
  const double our_variance = mean_square_norm - our_mean_norm;
  const double torch_variance = torch_mean_square_norm - norm;
  EXPECT_NEAR(our_variance, torch_variance, 4.0 * std::sqrt(2.0) * square_norm_error)
      << "gradient variance over masks: ScaleBERT " << our_variance << ", PyTorch " << torch_variance
      << " (mean ||g||^2 " << mean_square_norm << " +- " << square_norm_error << ")";
  std::printf("%s: gradient variance over %d masks: ScaleBERT %.4g, PyTorch %.4g (standard error %.2g); "
              "mean gradient distance %.3f vs dropout effect %.3f\n",
              GetParam().c_str(), kDraws, our_variance, torch_variance, square_norm_error, relative, dropout_effect);
}

INSTANTIATE_TEST_SUITE_P(Heads, DropoutExpectation, ::testing::Values("tiny-bert-cls", "tiny-bert-ner"),
                         scalebert::testing::fixture_param_name);

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
    // Both precisions: mixed precision's bf16 copies (and the dense dy^T, whose leading dimension is
    // the bucket's row count) must keep the same pad-row rules.
    std::vector<kernels::Precision> precisions = {kernels::Precision::kF32};
    if (kernels::cpu_has_bf16()) precisions.push_back(kernels::Precision::kBF16);
    for (kernels::Precision products : precisions) {
      Tensor reused_gradients = model.parameters.make_arena();
      TrainingGraph reused(model, reused_gradients, DropoutRates::none(), products);
      reused.forward_backward(large, 1.0f, 1);
      std::memset(reused_gradients.raw(), 0, reused_gradients.nbytes());
      reused.forward_backward(small, 1.0f, 1);
      Tensor fresh_gradients = model.parameters.make_arena();
      TrainingGraph fresh(model, fresh_gradients, DropoutRates::none(), products);
      fresh.forward_backward(small, 1.0f, 1);
      EXPECT_EQ(scalebert::testing::max_abs_diff(reused_gradients, fresh_gradients), 0.0f)
          << name << " " << kernels::precision_name(products);
    }
  }
}
