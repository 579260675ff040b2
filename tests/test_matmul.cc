// oneDNN linear steps against the plain double-accumulation reference: shapes, epilogues, residual
// sum, strided rows, guard bytes; packed weights and plain views (which read updated weights in place).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/arena.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "kernels/cpu/matmul.h"
#include "testing.h"

using namespace scalebert;
using namespace scalebert::kernels;

namespace {

std::vector<float> random_vector(size_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

struct Case {
  int64_t rows, in_features, out_features;
  Epilogue epilogue;
  bool accumulate;
  bool with_bias;
};

void run_case(const Case& c, bool plain_view) {
  SCOPED_TRACE(::testing::Message() << (plain_view ? "plain view " : "packed ") << "rows=" << c.rows << " in=" << c.in_features << " out=" << c.out_features
                                  << " epilogue=" << static_cast<int>(c.epilogue) << " accumulate=" << c.accumulate);
  Tensor weight = Tensor::empty({c.out_features, c.in_features}, DType::kF32);
  std::vector<float> weight_values = random_vector(weight.numel(), 1, 0.2f);
  std::copy(weight_values.begin(), weight_values.end(), weight.data<float>());
  Tensor bias;
  if (c.with_bias) {
    bias = Tensor::empty({c.out_features}, DType::kF32);
    std::vector<float> bias_values = random_vector(bias.numel(), 2);
    std::copy(bias_values.begin(), bias_values.end(), bias.data<float>());
  }
  PackedLinear linear = plain_view ? PackedLinear::plain_view(weight, bias) : PackedLinear(weight, bias);

  // x has a wider row stride than its width: the step must read only the first in_features columns.
  const int64_t x_stride = c.in_features + 3;
  std::vector<float> x = random_vector(c.rows * x_stride, 3);
  std::vector<float> x_dense(c.rows * c.in_features);
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t k = 0; k < c.in_features; ++k) x_dense[r * c.in_features + k] = x[r * x_stride + k];

  // Output with 16 guard floats after it.
  const float canary = -12345.0f;
  std::vector<float> initial = random_vector(c.rows * c.out_features, 4);
  std::vector<float> y(c.rows * c.out_features + 16, canary);
  std::copy(initial.begin(), initial.end(), y.begin());
  std::vector<float> expected = initial;

  LinearStep step(linear, x.data(), x_stride, y.data(), c.out_features, c.rows, c.epilogue, c.accumulate);
  std::shared_ptr<void> scratch = allocate_aligned(step.scratchpad_bytes());
  step.bind_scratchpad(scratch.get());
  dnnl::stream stream(cpu_engine());
  step.run(stream);
  stream.wait();

  linear_reference(x_dense.data(), weight.data<float>(), c.with_bias ? bias.data<float>() : nullptr,
                   expected.data(), c.rows, c.in_features, c.out_features, c.epilogue, c.accumulate);
  // f32 accumulation over K terms of size ~0.2: error grows like sqrt(K) * eps * magnitude.
  const float tolerance = 2e-5f * std::sqrt(static_cast<float>(c.in_features)) + 1e-5f;
  float worst = 0.0f;
  for (int64_t i = 0; i < c.rows * c.out_features; ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << "at " << i;
    float error = std::fabs(y[i] - expected[i]) / (1.0f + std::fabs(expected[i]));
    worst = std::max(worst, error);
  }
  EXPECT_LT(worst, tolerance);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(y[c.rows * c.out_features + i], canary) << "guard " << i;
}

}  // namespace

TEST(Matmul, MatchesReferenceAcrossShapesAndEpilogues) {
  const Case cases[] = {
      {1, 8, 4, Epilogue::kNone, false, true},       {7, 33, 17, Epilogue::kGeluErf, false, true},
      {37, 64, 96, Epilogue::kGeluTanh, false, true}, {16, 96, 32, Epilogue::kRelu, true, true},
      {5, 48, 48, Epilogue::kTanh, false, true},      {130, 128, 384, Epilogue::kNone, true, true},
      {3, 20, 11, Epilogue::kNone, false, false},     {64, 256, 64, Epilogue::kGeluErf, true, false},
  };
  for (const Case& c : cases) {
    run_case(c, false);
    run_case(c, true);
  }
}

// A plain view reads the weights in place: a step built before the values change sees the new ones
// (the trainer updates its parameters after building its steps and never rebuilds them).
TEST(Matmul, PlainViewSeesUpdatedWeights) {
  const int64_t rows = 40, in = 96, out = 72;
  Tensor weight = Tensor::empty({out, in}, DType::kF32);
  Tensor bias = Tensor::empty({out}, DType::kF32);
  std::vector<float> x = random_vector(rows * in, 5);
  std::vector<float> y(rows * out), expected(rows * out);
  PackedLinear linear = PackedLinear::plain_view(weight, bias);
  LinearStep step(linear, x.data(), in, y.data(), out, rows, Epilogue::kNone, false);
  std::shared_ptr<void> scratch = allocate_aligned(step.scratchpad_bytes());
  step.bind_scratchpad(scratch.get());
  dnnl::stream stream(cpu_engine());
  for (uint32_t round = 0; round < 2; ++round) {
    std::vector<float> weight_values = random_vector(weight.numel(), 10 + round, 0.2f);
    std::vector<float> bias_values = random_vector(bias.numel(), 20 + round);
    std::copy(weight_values.begin(), weight_values.end(), weight.data<float>());
    std::copy(bias_values.begin(), bias_values.end(), bias.data<float>());
    step.run(stream);
    stream.wait();
    linear_reference(x.data(), weight.data<float>(), bias.data<float>(), expected.data(), rows, in, out,
                     Epilogue::kNone, false);
    for (int64_t i = 0; i < rows * out; ++i) {
      ASSERT_NEAR(y[i], expected[i], 1e-4f * (1.0f + std::fabs(expected[i]))) << "round " << round << " at " << i;
    }
  }
}

// A BF16 plain view (mixed-precision training) multiplies BF16 rows: the result is the f32 product
// of the rounded values (low_precision_matmul.h's bf16 reference), with the residual sum and bias;
// F32 rows on BF16 weights (or the reverse) are refused.
TEST(Matmul, Bf16PlainViewMatchesTheRoundedReference) {
  if (!cpu_has_bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  const int64_t rows = 37, in = 64, out = 48, x_stride = in + 16;
  const std::vector<float> weight_values = random_vector(out * in, 30, 0.2f), x = random_vector(rows * x_stride, 31);
  Tensor weight_f32 = Tensor::empty({out, in}, DType::kF32), weight = Tensor::empty({out, in}, DType::kBF16);
  Tensor bias = Tensor::empty({out}, DType::kF32);
  std::copy(weight_values.begin(), weight_values.end(), weight_f32.data<float>());
  for (int64_t i = 0; i < weight.numel(); ++i) weight.data<BFloat16>()[i] = float_to_bf16(weight_values[i]);
  const std::vector<float> bias_values = random_vector(out, 32);
  std::copy(bias_values.begin(), bias_values.end(), bias.data<float>());
  std::vector<BFloat16> x_bf16(x.size());
  std::vector<float> x_dense(rows * in);
  for (size_t i = 0; i < x.size(); ++i) x_bf16[i] = float_to_bf16(x[i]);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(x.data() + r * x_stride, in, x_dense.data() + r * in);

  PackedLinear linear = PackedLinear::plain_view(weight, bias);
  EXPECT_EQ(linear.weight_dtype(), DType::kBF16);
  std::vector<float> y = random_vector(rows * out, 33), expected = y;
  LinearStep step(linear, x_bf16.data(), x_stride, y.data(), out, rows, Epilogue::kNone, true);
  std::shared_ptr<void> scratch = allocate_aligned(step.scratchpad_bytes());
  step.bind_scratchpad(scratch.get());
  dnnl::stream stream(cpu_engine());
  step.run(stream);
  stream.wait();
  bf16_linear_reference(x_dense.data(), weight_f32.data<float>(), bias.data<float>(), expected.data(), rows, in, out,
                        Epilogue::kNone, true);
  for (int64_t i = 0; i < rows * out; ++i) {
    ASSERT_NEAR(y[i], expected[i], 1e-5f * (1.0f + std::fabs(expected[i]))) << "at " << i;
  }
  EXPECT_THROW(LinearStep(linear, x.data(), x_stride, y.data(), out, rows, Epilogue::kNone, false), InvalidArgument);
  PackedLinear f32_view = PackedLinear::plain_view(weight_f32, bias);
  EXPECT_THROW(LinearStep(f32_view, x_bf16.data(), x_stride, y.data(), out, rows, Epilogue::kNone, false),
               InvalidArgument);
  EXPECT_THROW(PackedLinear(weight, bias), InvalidArgument);  // packed copies are f32 only
}

TEST(Matmul, RejectsBadShapes) {
  Tensor weight = Tensor::zeros({4, 8}, DType::kF32);
  EXPECT_THROW(PackedLinear(weight, Tensor::zeros({5}, DType::kF32)), InvalidArgument);
  EXPECT_THROW(PackedLinear(Tensor::zeros({4}, DType::kF32), Tensor()), InvalidArgument);
  EXPECT_THROW(PackedLinear::plain_view(weight, Tensor::zeros({5}, DType::kF32)), InvalidArgument);
  EXPECT_THROW(PackedLinear::plain_view(Tensor::zeros({4}, DType::kF32), Tensor()), InvalidArgument);
  PackedLinear linear(weight, Tensor());
  std::vector<float> buffer(64);
  EXPECT_THROW(LinearStep(linear, buffer.data(), 4, buffer.data(), 4, 2, Epilogue::kNone, false),
               InvalidArgument);
  EXPECT_THROW(LinearStep(linear, buffer.data(), 8, buffer.data(), 4, 0, Epilogue::kNone, false),
               InvalidArgument);
}

TEST(Matmul, RunWithoutScratchpadIsAnError) {
  Tensor weight = Tensor::zeros({64, 64}, DType::kF32);
  PackedLinear linear(weight, Tensor());
  std::vector<float> x(64 * 64), y(64 * 64);
  LinearStep step(linear, x.data(), 64, y.data(), 64, 64, Epilogue::kNone, false);
  dnnl::stream stream(cpu_engine());
  if (step.scratchpad_bytes() > 0) {
    EXPECT_THROW(step.run(stream), InvalidArgument);
  }
  std::shared_ptr<void> scratch = allocate_aligned(step.scratchpad_bytes());
  step.bind_scratchpad(scratch.get());
  step.run(stream);
}
