// The MLP head on cached features: its analytic gradients against central finite differences of
// a double-precision reference forward (same parameters, same dropout masks), training that learns
// a separable problem, and save/load giving the same logits.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/cpu/dropout.h"
#include "train/grad_utils.h"
#include "train/mlp_head.h"
#include "testing.h"

using namespace scalebert;
using namespace scalebert::train;

namespace {

// Mean cross-entropy of the head in double: z = a W^T + b, a = mask * act(z), logits last.
// `values` is the head's arena in double (the table's layout); masks as dropout_mask draws them.
double reference_loss(const MlpHead& head, const std::vector<double>& values, const std::vector<float>& x,
                      const std::vector<int32_t>& labels, int64_t rows, uint64_t seed) {
  const MlpHeadConfig& config = head.config();
  std::vector<int64_t> widths{config.input_size};
  for (int64_t width : config.hidden) widths.push_back(width);
  widths.push_back(config.num_classes);
  std::vector<double> a(x.begin(), x.end());  // (rows, in)
  uint64_t offset = 0;
  for (size_t l = 0; l + 1 < widths.size(); ++l) {
    const int64_t in = widths[l], out = widths[l + 1];
    const ParameterEntry& weight = head.parameters().entry("layers." + std::to_string(l) + ".weight");
    const ParameterEntry& bias = head.parameters().entry("layers." + std::to_string(l) + ".bias");
    std::vector<double> z(static_cast<size_t>(rows * out));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < out; ++o) {
        double sum = values[bias.offset + o];
        for (int64_t i = 0; i < in; ++i) sum += a[r * in + i] * values[weight.offset + o * in + i];
        z[r * out + o] = sum;
      }
    }
    if (l + 2 == widths.size()) {
      a = z;
      break;
    }
    std::vector<float> mask(z.size(), 1.0f);
    if (config.dropout > 0.0f) {
      kernels::dropout_mask(mask.data(), static_cast<int64_t>(mask.size()), config.dropout, seed, offset);
    }
    offset += z.size();
    for (size_t i = 0; i < z.size(); ++i) {
      const double v = z[i];
      const double act = config.activation == HeadActivation::kRelu ? std::max(0.0, v)
                                                                     : 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      z[i] = act * mask[i];
    }
    a = z;
  }
  const int64_t L = config.num_classes;
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    double top = a[r * L];
    for (int64_t j = 1; j < L; ++j) top = std::max(top, a[r * L + j]);
    double sum = 0.0;
    for (int64_t j = 0; j < L; ++j) sum += std::exp(a[r * L + j] - top);
    total += std::log(sum) + top - a[r * L + labels[r]];
  }
  return total / static_cast<double>(rows);
}

struct GradientCase {
  HeadActivation activation;
  float dropout;
  std::vector<int64_t> hidden;
};

class MlpHeadGradient : public ::testing::TestWithParam<GradientCase> {};

TEST_P(MlpHeadGradient, MatchesFiniteDifferences) {
  const GradientCase& test_case = GetParam();
  MlpHeadConfig config{7, test_case.hidden, 3, test_case.activation, test_case.dropout};
  MlpHead head(config, 11);
  const int64_t rows = 9;
  std::mt19937 generator(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * config.input_size));
  for (float& v : x) v = normal(generator);
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) labels[r] = static_cast<int32_t>(r % 3);
  const uint64_t seed = 77;

  zero_arena(head.gradients());
  const kernels::LossResult loss = head.forward_backward(x.data(), labels.data(), rows, seed);
  const Tensor& values = head.parameters().values();
  std::vector<double> reference(values.data<float>(), values.data<float>() + values.numel());
  EXPECT_NEAR(loss.loss, reference_loss(head, reference, x, labels, rows, seed), 1e-5);

  // Central differences in double (h = 1e-6: truncation ~h^2, round-off ~1e-16/h), every element.
  const double h = 1e-6;
  int checked = 0;
  for (const ParameterEntry& entry : head.parameters().entries()) {
    const Tensor gradient = head.parameters().view(head.gradients(), entry.name);
    double scale = 0.0, worst = 0.0;
    for (int64_t i = 0; i < gradient.numel(); ++i) {
      const size_t at = static_cast<size_t>(entry.offset + i);
      const double saved = reference[at];
      reference[at] = saved + h;
      const double up = reference_loss(head, reference, x, labels, rows, seed);
      reference[at] = saved - h;
      const double down = reference_loss(head, reference, x, labels, rows, seed);
      reference[at] = saved;
      const double numeric = (up - down) / (2 * h);
      scale = std::max(scale, std::fabs(numeric));
      worst = std::max(worst, std::fabs(numeric - gradient.data<float>()[i]));
      ++checked;
    }
    EXPECT_GT(scale, 1e-4) << entry.name << " has no gradient: the check would be vacuous";
    EXPECT_LE(worst, 1e-4 * std::max(scale, 1e-2)) << entry.name << " (gradient scale " << scale << ")";
  }
  EXPECT_GE(checked, 24);  // the linear probe: 7 x 3 weights + 3 biases

  // Gradients add: a second pass doubles them.
  std::vector<float> once(head.gradients().data<float>(), head.gradients().data<float>() + head.gradients().numel());
  head.forward_backward(x.data(), labels.data(), rows, seed);
  for (size_t i = 0; i < once.size(); ++i) {
    ASSERT_NEAR(head.gradients().data<float>()[i], 2 * once[i], 1e-6f + 1e-5f * std::fabs(once[i])) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Heads, MlpHeadGradient,
                         ::testing::Values(GradientCase{HeadActivation::kGelu, 0.0f, {6, 5}},
                                           GradientCase{HeadActivation::kGelu, 0.3f, {6, 5}},
                                           GradientCase{HeadActivation::kRelu, 0.2f, {8}},
                                           GradientCase{HeadActivation::kRelu, 0.0f, {}}));

// Three Gaussian clusters in 16 dimensions: a trained head must separate them almost perfectly,
// and the saved head must reproduce its logits.
TEST(MlpHead, LearnsClustersAndRoundTrips) {
  const int64_t C = 16, per_class = 200;
  std::mt19937 generator(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> centers(3, std::vector<float>(C));
  for (auto& center : centers) {
    for (float& v : center) v = 1.5f * normal(generator);
  }
  auto make = [&](int64_t count) {
    FeatureCache cache;
    cache.features = Tensor::empty({3 * count, C}, DType::kF32);
    cache.label_names = {"bearish", "bullish", "neutral"};
    cache.source = "clusters";
    for (int64_t r = 0; r < 3 * count; ++r) {
      const int32_t label = static_cast<int32_t>(r % 3);
      cache.labels.push_back(label);
      for (int64_t c = 0; c < C; ++c) cache.features.data<float>()[r * C + c] = centers[label][c] + normal(generator);
    }
    return cache;
  };
  const FeatureCache train = make(per_class), eval = make(100);
  MlpHead head(MlpHeadConfig{C, {32, 16}, 3, HeadActivation::kGelu, 0.1f}, 1);
  HeadTrainingOptions options;
  options.epochs = 15;
  options.batch_size = 32;
  options.learning_rate = 3e-3;
  std::vector<EpochReport> reports = train_head(head, train, &eval, options);
  ASSERT_EQ(reports.size(), 15u);
  EXPECT_LT(reports.back().train_loss, 0.5 * reports.front().train_loss);
  EXPECT_GT(reports.back().eval.accuracy, 0.95);
  EXPECT_GT(reports.back().eval.macro_f1, 0.95);

  const scalebert::testing::TempDir temp;
  const std::filesystem::path directory = temp / "head";
  head.save(directory, {{"labels", train.label_names}});
  std::unique_ptr<MlpHead> loaded = MlpHead::load(directory);
  const int64_t L = 3;
  std::vector<float> expected(head.forward(eval.features.data<float>(), 10), head.forward(eval.features.data<float>(), 10) + 10 * L);
  const float* actual = loaded->forward(eval.features.data<float>(), 10);
  for (int64_t i = 0; i < 10 * L; ++i) EXPECT_EQ(actual[i], expected[i]) << i;

  // Mismatched inputs are clear errors.
  FeatureCache narrow = eval;
  narrow.features = Tensor::empty({3, 8}, DType::kF32);
  narrow.labels = {0, 1, 2};
  EXPECT_THROW(train_head(head, narrow, nullptr, options), InvalidArgument);
  std::vector<int32_t> bad_labels{0, 5};
  EXPECT_THROW(head.forward_backward(eval.features.data<float>(), bad_labels.data(), 2, 0), InvalidArgument);
  EXPECT_THROW(parse_hidden_sizes("256,x"), InvalidArgument);
  EXPECT_EQ(parse_hidden_sizes("256,128"), (std::vector<int64_t>{256, 128}));
}

}  // namespace
