// Fused dynamic int8 paths against their unfused references: the row quantizer and the layer norm
// that quantizes its output (bit for bit), every Int8Fusion of PrecisionLinearStep in the small-M
// (one product) and blocked (one product per row block) modes against int8_linear_reference plus
// layernorm / quantization, a whole int8 encoder run fused against the same run unfused, and
// InferenceWeights::load (no F32 table kept) against packing the dequantized model.
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/error.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "kernels/cpu/quantize_rows.h"
#include "model/inference_session.h"
#include "io/safetensors.h"
#include "quant/quantize.h"
#include "quant/quantized_model.h"
#include "quant/recipe.h"
#include "testing.h"

namespace scalebert {
namespace {

using kernels::Epilogue;
using kernels::Int8Fusion;
using kernels::Precision;
using kernels::PrecisionLinear;
using kernels::PrecisionLinearStep;
using kernels::QuantizedRows;

std::vector<float> random_values(int64_t count, uint32_t seed, float spread = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

// Quantized rows that own their storage.
struct OwnedRows {
  std::vector<int8_t> values;
  std::vector<float> scales;
  int64_t width = 0;
  OwnedRows(int64_t rows, int64_t columns) : values(rows * columns, 0), scales(rows, -1.0f), width(columns) {}
  QuantizedRows view() { return QuantizedRows{values.data(), scales.data(), width}; }
};

// Two int8 rows sets agree up to rounding flips: each q within 1, at most 1% of them differing,
// scales within 1e-5 relative.
void expect_close_rows(const OwnedRows& fast, const OwnedRows& reference) {
  int64_t flips = 0;
  for (size_t i = 0; i < fast.values.size(); ++i) {
    ASSERT_LE(std::abs(fast.values[i] - reference.values[i]), 1) << "element " << i;
    flips += fast.values[i] != reference.values[i];
  }
  EXPECT_LE(flips, static_cast<int64_t>(fast.values.size() / 100)) << flips << " rounding flips";
  for (size_t row = 0; row < fast.scales.size(); ++row) {
    ASSERT_NEAR(fast.scales[row], reference.scales[row], 1e-5 * reference.scales[row] + 1e-12) << "row " << row;
  }
}

TEST(QuantFused, RowQuantizerAndQuantizingLayerNormAreBitExact) {
  const int64_t rows = 9, C = 200;
  std::vector<float> x = random_values(rows * C, 11, 3.0f);
  for (int64_t i = 0; i < C; ++i) x[4 * C + i] = 0.0f;  // an all-zero row: scale 0
  OwnedRows reference(rows, C), fast(rows, C);
  kernels::quantize_rows_dynamic_reference(x.data(), C, rows, C, reference.values.data(), C, reference.scales.data());
  for (int64_t row = 0; row < rows; ++row) {
    fast.scales[row] = kernels::quantize_row_dynamic(x.data() + row * C, C, fast.values.data() + row * C);
  }
  EXPECT_EQ(fast.values, reference.values);
  EXPECT_EQ(fast.scales, reference.scales);

  const std::vector<float> gamma = random_values(C, 12), beta = random_values(C, 13);
  x[4 * C] = 1.0f;  // LayerNorm of a constant row is beta; avoid it
  std::vector<float> normalized = x;
  kernels::layernorm_forward(normalized.data(), normalized.data(), gamma.data(), beta.data(), rows, C, 1e-12f);
  kernels::quantize_rows_dynamic_reference(normalized.data(), C, rows, C, reference.values.data(), C,
                                           reference.scales.data());
  std::vector<float> in_place = x;
  for (int64_t row = 0; row < rows; ++row) {
    fast.scales[row] = kernels::layernorm_quantize_row(in_place.data() + row * C, gamma.data(), beta.data(), C, 1e-12f,
                                                       fast.values.data() + row * C);
  }
  EXPECT_EQ(in_place, normalized);
  EXPECT_EQ(fast.values, reference.values);
  EXPECT_EQ(fast.scales, reference.scales);
  std::vector<float> plain = x;
  EXPECT_EQ(kernels::layernorm_quantize_row(plain.data(), gamma.data(), beta.data(), C, 1e-12f, nullptr), 0.0f);
  EXPECT_TRUE(std::equal(plain.begin(), plain.begin() + C, normalized.begin()));
}

struct FusedCase {
  int64_t rows, in, out;
  bool blocked;  // expected mode
};

// Rows that make the step take the blocked mode on this machine: at least two 64-row blocks per
// thread, plus a partial block.
int64_t blocked_rows() { return 2 * std::max(1, omp_get_max_threads()) * kernels::kInt8BlockRows + 37; }

class FusedStep : public ::testing::TestWithParam<bool> {
 protected:
  // Buffers for `rows` rows of a Linear `in` -> `out` (also used for the reference products).
  void SetUp() override {
    rows_ = GetParam() ? blocked_rows() : 23;
    in_ = 96;
    out_ = 160;
    x_ = random_values(rows_ * in_, 21, 2.0f);
    weight_ = Tensor::empty({out_, in_}, DType::kF32);
    bias_ = Tensor::empty({out_}, DType::kF32);
    const std::vector<float> w = random_values(out_ * in_, 22, 0.05f), b = random_values(out_, 23, 0.5f);
    std::copy(w.begin(), w.end(), weight_.data<float>());
    std::copy(b.begin(), b.end(), bias_.data<float>());
    quantized_weight_.resize(out_ * in_);
    weight_scales_.resize(out_);
    kernels::quantize_weight_rows(w.data(), out_, in_, quantized_weight_.data(), weight_scales_.data());
    activations_ = Tensor::empty({rows_ * std::max(in_, out_) * 2}, DType::kI8);
    row_scales_ = Tensor::empty({rows_}, DType::kF32);
    accumulators_ = Tensor::empty({rows_ * out_}, DType::kI32);
  }

  // Runs one dynamic int8 step; y starts as y_start.
  std::vector<float> run(const PrecisionLinear& linear, const float* x, std::vector<float> y, Epilogue epilogue,
                         bool accumulate, const Int8Fusion& fusion, int64_t in, int64_t out) {
    kernels::LowPrecisionBuffers buffers{activations_.raw(), row_scales_.data<float>(), accumulators_.data<int32_t>()};
    PrecisionLinearStep step(linear, x, in, y.data(), out, rows_, epilogue, accumulate, buffers, fusion);
    EXPECT_EQ(step.blocked(), GetParam());
    const std::string implementation = step.implementation(), tail = step.tail_implementation();
    EXPECT_NE(implementation.find("brg:avx512_core_vnni"), std::string::npos) << implementation;
    EXPECT_NE(tail.find("brg:avx512_core_vnni"), std::string::npos) << tail;
    auto scratchpad = allocate_aligned(std::max<size_t>(step.scratchpad_bytes(), 64));
    step.bind_scratchpad(scratchpad.get());
    dnnl::stream stream(kernels::cpu_engine());
    step.run(stream);
    stream.wait();
    return y;
  }

  std::vector<float> reference(const std::vector<float>& x, std::vector<float> y, Epilogue epilogue, bool accumulate) {
    kernels::int8_linear_reference(x.data(), quantized_weight_.data(), weight_scales_.data(), bias_.data<float>(), 0.0f,
                                   y.data(), rows_, in_, out_, epilogue, accumulate);
    return y;
  }

  int64_t rows_ = 0, in_ = 0, out_ = 0;
  std::vector<float> x_;
  Tensor weight_, bias_, activations_, row_scales_, accumulators_;
  std::vector<int8_t> quantized_weight_;
  std::vector<float> weight_scales_;
};

TEST_P(FusedStep, PlainAndPreQuantizedInputMatchTheReference) {
  if (!kernels::cpu_has_int8_dot_product()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const PrecisionLinear linear(weight_, bias_, Precision::kInt8);
  const std::vector<float> y_old = random_values(rows_ * out_, 24);
  for (Epilogue epilogue : {Epilogue::kNone, Epilogue::kGeluErf, Epilogue::kGeluTanh}) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "epilogue " << static_cast<int>(epilogue) << " accumulate " << accumulate);
      const std::vector<float> want = reference(x_, y_old, epilogue, accumulate);
      const std::vector<float> plain = run(linear, x_.data(), y_old, epilogue, accumulate, {}, in_, out_);
      EXPECT_LT(relative_error(plain, want), 2e-5);
      // The same rows handed over already quantized: the same product, bit for bit.
      OwnedRows input(rows_, in_);
      kernels::quantize_rows_dynamic_reference(x_.data(), in_, rows_, in_, input.values.data(), in_,
                                               input.scales.data());
      Int8Fusion fusion;
      fusion.input = input.view();
      EXPECT_EQ(run(linear, nullptr, y_old, epilogue, accumulate, fusion, in_, out_), plain);
    }
  }
}

TEST_P(FusedStep, ActivationThenQuantizedOutput) {
  if (!kernels::cpu_has_int8_dot_product()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const PrecisionLinear linear(weight_, bias_, Precision::kInt8);
  const std::vector<float> zeros(rows_ * out_, 0.0f);
  const std::vector<float> want = reference(x_, zeros, Epilogue::kGeluErf, false);
  OwnedRows want_rows(rows_, out_);
  kernels::quantize_rows_dynamic_reference(want.data(), out_, rows_, out_, want_rows.values.data(), out_,
                                           want_rows.scales.data());
  // Output quantized only (the intermediate Linear of a fused layer): y stays untouched.
  OwnedRows got_rows(rows_, out_);
  Int8Fusion fusion;
  fusion.output = got_rows.view();
  fusion.write_f32 = false;
  const std::vector<float> sentinel(rows_ * out_, 7.0f);
  EXPECT_EQ(run(linear, x_.data(), sentinel, Epilogue::kGeluErf, false, fusion, in_, out_), sentinel);
  expect_close_rows(got_rows, want_rows);
  // Also writing f32: exactly the plain step's output, and its rows quantized exactly.
  OwnedRows both_rows(rows_, out_);
  fusion.output = both_rows.view();
  fusion.write_f32 = true;
  const std::vector<float> y = run(linear, x_.data(), zeros, Epilogue::kGeluErf, false, fusion, in_, out_);
  EXPECT_EQ(y, run(linear, x_.data(), zeros, Epilogue::kGeluErf, false, {}, in_, out_));
  EXPECT_LT(relative_error(y, want), 2e-5);
  OwnedRows y_rows(rows_, out_);
  kernels::quantize_rows_dynamic_reference(y.data(), out_, rows_, out_, y_rows.values.data(), out_, y_rows.scales.data());
  EXPECT_EQ(both_rows.values, y_rows.values);
  EXPECT_EQ(both_rows.scales, y_rows.scales);
  EXPECT_EQ(both_rows.values, got_rows.values);
}

TEST_P(FusedStep, ResidualLayerNormThenQuantizedOutput) {
  if (!kernels::cpu_has_int8_dot_product()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const PrecisionLinear linear(weight_, bias_, Precision::kInt8);
  const std::vector<float> residual = random_values(rows_ * out_, 25);
  const std::vector<float> gamma = random_values(out_, 26), beta = random_values(out_, 27);
  const float eps = 1e-12f;
  // Reference: dequantized product plus residual, then LayerNorm, then quantization.
  std::vector<float> want = reference(x_, residual, Epilogue::kNone, true);
  kernels::layernorm_forward(want.data(), want.data(), gamma.data(), beta.data(), rows_, out_, eps);
  OwnedRows want_rows(rows_, out_);
  kernels::quantize_rows_dynamic_reference(want.data(), out_, rows_, out_, want_rows.values.data(), out_,
                                           want_rows.scales.data());

  OwnedRows got_rows(rows_, out_);
  Int8Fusion fusion;
  fusion.norm_gamma = gamma.data();
  fusion.norm_beta = beta.data();
  fusion.norm_eps = eps;
  fusion.output = got_rows.view();
  const std::vector<float> got = run(linear, x_.data(), residual, Epilogue::kNone, true, fusion, in_, out_);
  EXPECT_LT(relative_error(got, want), 1e-4);
  expect_close_rows(got_rows, want_rows);
  // Exactly the unfused fast path: plain step with the residual sum, then layernorm_forward.
  std::vector<float> unfused = run(linear, x_.data(), residual, Epilogue::kNone, true, {}, in_, out_);
  kernels::layernorm_forward(unfused.data(), unfused.data(), gamma.data(), beta.data(), rows_, out_, eps);
  EXPECT_EQ(got, unfused);
  // Without quantized output: the same rows.
  fusion.output = QuantizedRows{};
  EXPECT_EQ(run(linear, x_.data(), residual, Epilogue::kNone, true, fusion, in_, out_), unfused);
}

INSTANTIATE_TEST_SUITE_P(Modes, FusedStep, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& mode) { return mode.param ? "Blocked" : "OneProduct"; });

TEST(QuantFused, FusionsRefuseOtherPrecisionsAndBadCombinations) {
  if (!kernels::cpu_has_int8_dot_product()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  Tensor weight = Tensor::zeros({8, 16}, DType::kF32);
  Tensor activations = Tensor::empty({64}, DType::kI8), scales = Tensor::empty({4}, DType::kF32);
  Tensor accumulators = Tensor::empty({64}, DType::kI32);
  kernels::LowPrecisionBuffers buffers{activations.raw(), scales.data<float>(), accumulators.data<int32_t>()};
  std::vector<float> x(4 * 16), y(4 * 8);
  OwnedRows rows(4, 8);
  Int8Fusion quantize_only;
  quantize_only.output = rows.view();
  quantize_only.write_f32 = false;
  testing::expect_error<InvalidArgument>(
      [&] {
        PrecisionLinearStep(PrecisionLinear(weight, Tensor(), Precision::kF32), x.data(), 16, y.data(), 8, 4,
                            Epilogue::kNone, false, buffers, quantize_only);
      },
      {"dynamic int8", "f32"});
  testing::expect_error<InvalidArgument>(
      [&] {
        PrecisionLinearStep(PrecisionLinear(weight, Tensor(), Precision::kInt8, 0.1f), x.data(), 16, y.data(), 8, 4,
                            Epilogue::kNone, false, buffers, quantize_only);
      },
      {"dynamic int8", "static"});
  Int8Fusion no_output;
  no_output.write_f32 = false;
  testing::expect_error<InvalidArgument>(
      [&] {
        PrecisionLinearStep(PrecisionLinear(weight, Tensor(), Precision::kInt8), x.data(), 16, y.data(), 8, 4,
                            Epilogue::kNone, false, buffers, no_output);
      },
      {"quantized rows"});
}

// A small random encoder, int8 dynamic: run() fuses (quantized hand-offs, norms in the epilogues);
// with an observer set it runs every step unfused. Both must agree bit for bit, since every fused
// path computes exactly the unfused values (checked above), in both modes and with some layers f32.
TEST(QuantFused, EncoderFusedEqualsUnfused) {
  if (!kernels::cpu_has_int8_dot_product()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  auto model = scalebert::testing::random_bert({500, 128, 3, 2, 512, 256}, TaskHead::kTokenClassification, 3, 5);
  std::mt19937 generator(6);  // token ids
  PrecisionPlan all_int8, mixed;
  for (const std::string& linear : quant::linear_names(*model)) {
    all_int8.layers[quant::plan_key(linear)] = {Precision::kInt8, 0.0f};
    // Layer 1's intermediate stays f32: its neighbours must fall back to unfused hand-offs.
    if (linear.find("layer.1.intermediate") == std::string::npos) mixed.layers[quant::plan_key(linear)] = {Precision::kInt8, 0.0f};
  }
  for (const PrecisionPlan* plan : {&all_int8, &mixed}) {
    auto weights = InferenceWeights::build(model, *plan);
    for (int64_t sequences : {1, 5}) {
      SCOPED_TRACE(::testing::Message() << (plan == &mixed ? "mixed" : "all int8") << ", " << sequences << " sequences");
      PackedBatch batch;
      for (int64_t s = 0; s < sequences; ++s) {
        std::vector<int32_t> ids(sequences == 1 ? 19 : 90 + 7 * s);
        for (int32_t& id : ids) id = static_cast<int32_t>(generator() % 500);
        batch.add_sequence(ids);
      }
      InferenceSession fused(weights), unfused(weights);
      unfused.set_linear_observer([](const std::string&, const float*, int64_t, int64_t) {});
      const InferenceOutputs& a = fused.run(batch);
      const InferenceOutputs& b = unfused.run(batch);
      EXPECT_EQ(testing::max_abs_diff(a.hidden, b.hidden), 0.0f);
      EXPECT_EQ(testing::max_abs_diff(a.pooled, b.pooled), 0.0f);
      EXPECT_EQ(testing::max_abs_diff(a.logits, b.logits), 0.0f);
      // And close to f32 (the quantization error itself, not a wiring mistake).
      InferenceSession exact(InferenceWeights::build(model, PrecisionPlan{}));
      const InferenceOutputs& c = exact.run(batch);
      double diff = 0.0, norm = 0.0;
      for (int64_t i = 0; i < c.hidden.numel(); ++i) {
        const double d = a.hidden.data<float>()[i] - c.hidden.data<float>()[i];
        diff += d * d;
        norm += static_cast<double>(c.hidden.data<float>()[i]) * c.hidden.data<float>()[i];
      }
      EXPECT_LT(std::sqrt(diff / norm), 0.05);
    }
  }
}

// InferenceWeights::load keeps no F32 table (int8 word embeddings, owned norm vectors) and runs
// exactly as the packing of quant::load_model's dequantized model does.
TEST(QuantFused, LoadReleasesTheF32TableAndRunsTheSame) {
  if (!kernels::cpu_has_int8_dot_product()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  namespace fs = std::filesystem;
  const testing::TempDir temp;
  const fs::path root = temp.path();
  fs::create_directories(root / "f32");
  const auto model = scalebert::testing::random_bert({300, 64, 2, 2, 256, 64}, TaskHead::kNone, 0, 9);
  std::mt19937 generator(10);  // token ids
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParameterEntry& entry : model->parameters.entries()) tensors.emplace_back(entry.name, model->parameters.get(entry.name));
  model->config.save(root / "f32" / "config.json");
  save_safetensors(root / "f32" / "model.safetensors", tensors);
  quant::quantize_model(root / "f32", root / "int8", quant::QuantizeOptions{});

  auto kept = std::make_shared<const BertModel>(quant::load_model(root / "int8"));
  auto packed = InferenceWeights::build(kept);
  auto loaded = InferenceWeights::load(root / "int8");
  EXPECT_TRUE(loaded->model->parameters.entries().empty());
  EXPECT_TRUE(loaded->word_embeddings_int8.defined());
  EXPECT_FALSE(loaded->word_embeddings.defined());
  EXPECT_EQ(loaded->model->config.hidden_size, 64);
  EXPECT_TRUE(loaded->model->has_pooler);
  // Only what inference needs: the int8 weights (~1 byte per Linear weight and word embedding)
  // plus F32 vectors; the table the kept model holds is 4 bytes per parameter.
  EXPECT_LT(loaded->owned_bytes(), kept->parameters.values().nbytes() / 2);
  PackedBatch batch;
  for (int64_t s = 0; s < 3; ++s) {
    std::vector<int32_t> ids(20 + 9 * s);
    for (int32_t& id : ids) id = static_cast<int32_t>(generator() % 300);
    batch.add_sequence(ids);
  }
  InferenceSession a(packed), b(loaded);
  const InferenceOutputs& want = a.run(batch);
  const InferenceOutputs& got = b.run(batch);
  EXPECT_EQ(testing::max_abs_diff(got.hidden, want.hidden), 0.0f);
  EXPECT_EQ(testing::max_abs_diff(got.pooled, want.pooled), 0.0f);
  // Ids are still checked against the vocabulary when the rows are gathered from int8.
  PackedBatch bad;
  bad.add_sequence(std::vector<int32_t>{1, 300, 2});
  testing::expect_error<InvalidArgument>([&] { b.run(bad); }, {"input id 300", "300 rows"});
}

}  // namespace
}  // namespace scalebert
