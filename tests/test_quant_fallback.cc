// A CPU without VNNI and AVX512_BF16, simulated by capping oneDNN's ISA at plain AVX-512 before any
// primitive exists (this file is its own test process): int8 and bf16 layers must fall back to f32
// with one warning, and compute exactly what the f32 layer computes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/arena.h"
#include "kernels/cpu/low_precision_matmul.h"

namespace scalebert::kernels {
namespace {

TEST(QuantFallback, MissingInstructionsFallBackToF32WithAWarning) {
  try {
    dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx512_core);
  } catch (const dnnl::error& error) {
    GTEST_SKIP() << "oneDNN refused to cap its ISA: " << error.what();
  }
  EXPECT_FALSE(cpu_has_int8_dot_product());
  EXPECT_FALSE(cpu_has_bf16());
  Tensor weight = Tensor::empty({8, 16}, DType::kF32);
  for (int64_t i = 0; i < weight.numel(); ++i) weight.data<float>()[i] = 0.01f * static_cast<float>(i % 13) - 0.05f;
  ::testing::internal::CaptureStderr();
  PrecisionLinear int8(weight, Tensor(), Precision::kInt8);
  PrecisionLinear int8_again(weight, Tensor(), Precision::kInt8);  // warns once per process
  PrecisionLinear bf16(weight, Tensor(), Precision::kBF16);
  const std::string warnings = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(int8.precision(), Precision::kF32);
  EXPECT_EQ(bf16.precision(), Precision::kF32);
  EXPECT_NE(warnings.find("lacks AVX-512 VNNI"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("lacks AVX512_BF16"), std::string::npos) << warnings;
  EXPECT_EQ(warnings.find("VNNI"), warnings.rfind("VNNI")) << "warned twice: " << warnings;

  std::vector<float> x(3 * 16), y(3 * 8), expected(3 * 8);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 5) - 2.0f;
  PrecisionLinearStep step(int8, x.data(), 16, y.data(), 8, 3, Epilogue::kNone, false, LowPrecisionBuffers{});
  auto scratchpad = allocate_aligned(std::max<size_t>(step.scratchpad_bytes(), 64));
  step.bind_scratchpad(scratchpad.get());
  dnnl::stream stream(cpu_engine());
  step.run(stream);
  stream.wait();
  linear_reference(x.data(), weight.data<float>(), nullptr, expected.data(), 3, 16, 8, Epilogue::kNone, false);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], expected[i], 1e-5f) << i;
}

}  // namespace
}  // namespace scalebert::kernels
