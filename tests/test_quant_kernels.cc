// Low-precision kernels against their references: row quantization and bf16 conversion bit for bit,
// int8 (dynamic and static) and bf16 Linear steps against dequantize-then-f32 references (tight
// bounds: only float rounding differs) and against the f32 product (the quantization error itself).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/error.h"
#include "core/threads.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "kernels/cpu/quantize_rows.h"

namespace scalebert::kernels {
namespace {

std::vector<float> random_values(int64_t count, uint32_t seed, float spread = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

// max |a - b| / max |b|: the error relative to the output's scale.
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

TEST(QuantKernels, RowQuantizationMatchesReferenceBitForBit) {
  const int64_t rows = 37, columns = 203, stride = 211;
  std::vector<float> x = random_values(rows * stride, 1, 3.0f);
  for (int64_t i = 0; i < columns; ++i) x[5 * stride + i] = 0.0f;  // an all-zero row
  x[7 * stride + 3] = 1e4f;                                         // an outlier
  std::vector<int8_t> fast(rows * columns), reference(rows * columns);
  std::vector<float> fast_scales(rows), reference_scales(rows);
  quantize_rows_dynamic(x.data(), stride, rows, columns, fast.data(), columns, fast_scales.data());
  quantize_rows_dynamic_reference(x.data(), stride, rows, columns, reference.data(), columns, reference_scales.data());
  EXPECT_EQ(fast, reference);
  EXPECT_EQ(fast_scales, reference_scales);
  EXPECT_EQ(fast_scales[5], 0.0f);
  // Each row uses the full symmetric range, and q * s reconstructs x within half a step.
  for (int64_t row = 0; row < rows; ++row) {
    if (row == 5) continue;
    int max_q = 0;
    for (int64_t i = 0; i < columns; ++i) {
      const int q = fast[row * columns + i];
      max_q = std::max(max_q, std::abs(q));
      ASSERT_LE(std::fabs(q * fast_scales[row] - x[row * stride + i]), 0.5001f * fast_scales[row]);
    }
    EXPECT_EQ(max_q, 127) << "row " << row;
  }
  quantize_rows_static(x.data(), stride, rows, columns, 0.02f, fast.data(), columns);
  quantize_rows_static_reference(x.data(), stride, rows, columns, 0.02f, reference.data(), columns);
  EXPECT_EQ(fast, reference);
  EXPECT_EQ(fast[7 * columns + 3], 127);  // saturates
}

TEST(QuantKernels, Bf16ConversionRoundsToNearestEven) {
  const int64_t rows = 5, columns = 77;
  std::vector<float> x = random_values(rows * columns, 2, 100.0f);
  x[0] = 1.0f + 1.0f / 256.0f;  // a tie: rounds to even (1.0)
  std::vector<BFloat16> out(rows * columns);
  convert_rows_bf16(x.data(), columns, rows, columns, out.data(), columns);
  for (int64_t i = 0; i < rows * columns; ++i) ASSERT_EQ(out[i].bits, float_to_bf16(x[i]).bits) << i;
  EXPECT_EQ(bf16_to_float(out[0]), 1.0f);
}

// Rows and their transpose in one pass, over shapes with and without full 16 x 16 tiles and
// 64-row blocks (tails in both directions), and the fused column sums.
TEST(QuantKernels, Bf16TransposedConversionMatchesElementwiseRounding) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {16, 16}, {7, 40}, {100, 48}, {144, 77}, {1024, 96}};
  for (auto [rows, columns] : shapes) {
    SCOPED_TRACE(::testing::Message() << rows << " x " << columns);
    const std::vector<float> x = random_values(rows * columns, 3, 10.0f);
    std::vector<BFloat16> out(rows * columns, BFloat16{0xFFFF}), transposed(rows * columns, BFloat16{0xFFFF});
    // Column sums added onto 0.5 (the bias gradient's accumulation), with one thread and with two.
    std::vector<float> sums_one(columns, 0.5f), sums_two(columns, 0.5f);
    const int saved_threads = num_threads();
    set_num_threads(1);
    convert_rows_bf16_transposed(x.data(), rows, columns, out.data(), transposed.data(), sums_one.data());
    set_num_threads(2);
    convert_rows_bf16_transposed(x.data(), rows, columns, out.data(), transposed.data(), sums_two.data());
    set_num_threads(saved_threads);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < columns; ++c) {
        const uint16_t want = float_to_bf16(x[r * columns + c]).bits;
        ASSERT_EQ(out[r * columns + c].bits, want) << "row " << r << " column " << c;
        ASSERT_EQ(transposed[c * rows + r].bits, want) << "transposed, row " << r << " column " << c;
      }
    }
    for (int64_t c = 0; c < columns; ++c) {
      double expected = 0.5;
      for (int64_t r = 0; r < rows; ++r) expected += x[r * columns + c];
      ASSERT_NEAR(sums_one[c], expected, 1e-5 * (std::fabs(expected) + std::sqrt(static_cast<double>(rows)) * 10.0))
          << "column sum " << c;
      ASSERT_EQ(sums_one[c], sums_two[c]) << "column sum " << c << " depends on the thread count";
    }
  }
}

struct StepCase {
  int64_t rows, in, out;
  Epilogue epilogue;
  bool accumulate;
};

class QuantStep : public ::testing::TestWithParam<StepCase> {};

// Runs one PrecisionLinearStep on fresh buffers; returns y.
std::vector<float> run_step(const PrecisionLinear& linear, const std::vector<float>& x, std::vector<float> y,
                            const StepCase& shape, std::string* implementation) {
  Tensor activations = Tensor::empty({shape.rows * shape.in * 2}, DType::kI8);
  Tensor row_scales = Tensor::empty({shape.rows}, DType::kF32);
  Tensor accumulators = Tensor::empty({shape.rows * shape.out}, DType::kI32);
  LowPrecisionBuffers buffers{activations.raw(), row_scales.data<float>(), accumulators.data<int32_t>()};
  PrecisionLinearStep step(linear, x.data(), shape.in, y.data(), shape.out, shape.rows, shape.epilogue,
                           shape.accumulate, buffers);
  auto scratchpad = allocate_aligned(std::max<size_t>(step.scratchpad_bytes(), 64));
  step.bind_scratchpad(scratchpad.get());
  dnnl::stream stream(cpu_engine());
  step.run(stream);
  stream.wait();
  if (implementation != nullptr) *implementation = step.implementation();
  return y;
}

TEST_P(QuantStep, FastPathsMatchReferences) {
  const StepCase shape = GetParam();
  const std::vector<float> x = random_values(shape.rows * shape.in, 3, 2.0f);
  const std::vector<float> weight_values = random_values(shape.out * shape.in, 4, 0.05f);
  const std::vector<float> bias_values = random_values(shape.out, 5, 0.5f);
  const std::vector<float> y_old = random_values(shape.rows * shape.out, 6);
  Tensor weight = Tensor::empty({shape.out, shape.in}, DType::kF32);
  Tensor bias = Tensor::empty({shape.out}, DType::kF32);
  std::copy(weight_values.begin(), weight_values.end(), weight.data<float>());
  std::copy(bias_values.begin(), bias_values.end(), bias.data<float>());

  std::vector<float> exact = y_old;
  linear_reference(x.data(), weight_values.data(), bias_values.data(), exact.data(), shape.rows, shape.in, shape.out,
                   shape.epilogue, shape.accumulate);
  std::vector<int8_t> quantized(shape.out * shape.in);
  std::vector<float> weight_scales(shape.out);
  quantize_weight_rows(weight_values.data(), shape.out, shape.in, quantized.data(), weight_scales.data());
  float calibrated = 0.0f;
  for (float value : x) calibrated = std::max(calibrated, std::fabs(value));
  calibrated /= kInt8Max;

  for (float input_scale : {0.0f, calibrated}) {
    SCOPED_TRACE(input_scale > 0 ? "static int8" : "dynamic int8");
    if (!cpu_has_int8_dot_product()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
    std::vector<float> reference = y_old;
    int8_linear_reference(x.data(), quantized.data(), weight_scales.data(), bias_values.data(), input_scale,
                          reference.data(), shape.rows, shape.in, shape.out, shape.epilogue, shape.accumulate);
    std::string implementation;
    std::vector<float> fast =
        run_step(PrecisionLinear(weight, bias, Precision::kInt8, input_scale), x, y_old, shape, &implementation);
    EXPECT_NE(implementation.find("vnni"), std::string::npos) << implementation;  // the VNNI kernel, not a fallback
    EXPECT_LT(relative_error(fast, reference), 2e-5) << implementation;
    EXPECT_LT(relative_error(fast, exact), input_scale > 0 ? 4e-2 : 3e-2);
    std::printf("  int8 %-7s rows=%ld %ldx%ld: impl %s, vs reference %.2e, vs f32 %.2e\n",
                input_scale > 0 ? "static" : "dynamic", static_cast<long>(shape.rows), static_cast<long>(shape.out),
                static_cast<long>(shape.in), implementation.c_str(), relative_error(fast, reference),
                relative_error(fast, exact));
  }
  if (!cpu_has_bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  std::vector<float> reference = y_old;
  bf16_linear_reference(x.data(), weight_values.data(), bias_values.data(), reference.data(), shape.rows, shape.in,
                        shape.out, shape.epilogue, shape.accumulate);
  std::string implementation;
  std::vector<float> fast = run_step(PrecisionLinear(weight, bias, Precision::kBF16), x, y_old, shape, &implementation);
  EXPECT_NE(implementation.find("bf16"), std::string::npos) << implementation;
  EXPECT_LT(relative_error(fast, reference), 2e-5) << implementation;
  EXPECT_LT(relative_error(fast, exact), 1e-2);
  std::printf("  bf16 rows=%ld %ldx%ld: impl %s, vs reference %.2e, vs f32 %.2e\n", static_cast<long>(shape.rows),
              static_cast<long>(shape.out), static_cast<long>(shape.in), implementation.c_str(),
              relative_error(fast, reference), relative_error(fast, exact));
}

INSTANTIATE_TEST_SUITE_P(Shapes, QuantStep,
                         ::testing::Values(StepCase{1, 64, 48, Epilogue::kNone, false},
                                           StepCase{7, 96, 200, Epilogue::kGeluErf, false},
                                           StepCase{33, 384, 1536, Epilogue::kGeluTanh, false},
                                           StepCase{40, 1536, 384, Epilogue::kNone, true},
                                           StepCase{3, 72, 72, Epilogue::kTanh, false},
                                           StepCase{17, 128, 2, Epilogue::kRelu, true}));

TEST(QuantKernels, PrecisionNamesAndErrors) {
  EXPECT_EQ(precision_from_name("int8"), Precision::kInt8);
  EXPECT_EQ(precision_from_name("bf16"), Precision::kBF16);
  EXPECT_EQ(precision_name(Precision::kF32), "f32");
  try {
    precision_from_name("int4");
    FAIL() << "expected a throw";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("int4"), std::string::npos) << error.what();
  }
  Tensor weight = Tensor::zeros({4, 8}, DType::kF32);
  EXPECT_THROW(PackedLinearInt8(weight, Tensor(), -1.0f), InvalidArgument);
  EXPECT_THROW(PrecisionLinear(Tensor::zeros({4}, DType::kF32), Tensor(), Precision::kInt8), InvalidArgument);
}

}  // namespace
}  // namespace scalebert::kernels
