// Tests for the CPU kernels in src/kernels/cpu: every fast kernel against its scalar reference on
// random inputs of awkward sizes, the math (exp, erf, tanh, GELU, layernorm, softmax) against
// double-precision std:: functions, guard bytes around every output, NaN/Inf checks, packed
// attention against the padded Hugging Face formulation, in-place variants and argument errors.
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/reference.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cpu/vector_math.h"

namespace scalebert::kernels {
namespace {

constexpr float kLowest = std::numeric_limits<float>::lowest();

// A float buffer with canary floats before and after it; check_guards() fails the test when a
// kernel wrote outside [data(), data() + size()).
class Guarded {
 public:
  static constexpr int64_t kGuard = 32;
  static constexpr uint32_t kCanaryBits = 0x7FC0DEADu;  // a quiet NaN with a payload no math makes

  explicit Guarded(int64_t n) : n_(n), storage_(static_cast<size_t>(n + 2 * kGuard)) {
    float canary;
    std::memcpy(&canary, &kCanaryBits, sizeof(canary));
    std::fill(storage_.begin(), storage_.end(), canary);
  }
  Guarded(const std::vector<float>& values) : Guarded(static_cast<int64_t>(values.size())) {
    for (int64_t i = 0; i < n_; ++i) data()[i] = values[static_cast<size_t>(i)];
  }
  float* data() { return storage_.data() + kGuard; }
  const float* data() const { return storage_.data() + kGuard; }
  int64_t size() const { return n_; }
  std::vector<float> values() const { return std::vector<float>(data(), data() + n_); }

  void check_guards(const std::string& what) const {
    for (int64_t i = 0; i < static_cast<int64_t>(storage_.size()); ++i) {
      if (i >= kGuard && i < kGuard + n_) continue;
      uint32_t bits;
      std::memcpy(&bits, &storage_[i], sizeof(bits));
      ASSERT_EQ(bits, kCanaryBits) << what << ": guard float " << (i < kGuard ? i - kGuard : i - kGuard - n_)
                                   << (i < kGuard ? " before" : " after") << " the buffer was overwritten";
    }
  }

 private:
  int64_t n_;
  std::vector<float> storage_;
};

std::vector<float> random_vector(std::mt19937& rng, int64_t n, float mean = 0.0f, float stddev = 1.0f) {
  std::normal_distribution<float> normal(mean, stddev);
  std::vector<float> values(static_cast<size_t>(n));
  for (float& v : values) v = normal(rng);
  return values;
}

// Every |actual - expected| <= abs_tol + rel_tol * |expected|, every value finite; reports the worst.
void expect_close(const float* actual, const float* expected, int64_t n, double abs_tol, double rel_tol,
                  const std::string& what) {
  double worst_excess = -1.0;
  int64_t worst = -1;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(actual[i])) << what << ": non-finite value " << actual[i] << " at " << i;
    const double error = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    const double excess = error - (abs_tol + rel_tol * std::fabs(static_cast<double>(expected[i])));
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (worst >= 0 && worst_excess > 0.0) {
    ADD_FAILURE() << what << ": at " << worst << " got " << actual[worst] << ", expected " << expected[worst]
                  << " (abs_tol " << abs_tol << ", rel_tol " << rel_tol << ")";
  }
}

// Largest relative error of float results against double truth, where |truth| >= floor.
double max_relative_error(const std::vector<float>& actual, const std::vector<double>& truth, double floor) {
  double worst = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::fabs(truth[i]) < floor) continue;
    worst = std::max(worst, std::fabs(actual[i] - truth[i]) / std::fabs(truth[i]));
  }
  return worst;
}

std::vector<float> grid(double lo, double hi, int64_t n) {
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>(lo + (hi - lo) * static_cast<double>(i) / (n - 1));
  return values;
}

// ---------------------------------------------------------------------------------------------
// Elementwise math against double precision.

TEST(VectorMath, ExpMatchesDoubleExp) {
  std::vector<float> x = grid(-87.0, 88.5, 200003);  // odd size: a masked tail in every kernel
  Guarded out(static_cast<int64_t>(x.size()));
  exp_forward(out.data(), x.data(), out.size());
  out.check_guards("exp_forward");
  std::vector<double> truth(x.size());
  for (size_t i = 0; i < x.size(); ++i) truth[i] = std::exp(static_cast<double>(x[i]));
  const double error = max_relative_error(out.values(), truth, 0.0);
  std::cout << "exp max relative error " << error << "\n";
  EXPECT_LT(error, 2.5e-7);  // measured 1.2e-7 (about 1 ulp)
}

TEST(VectorMath, ExpEdgeValues) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-inf, kLowest, -200.0f, -103.0f, 0.0f, 89.0f, inf, std::nanf(""), 1.0f};
  std::vector<float> out(x.size());
  exp_forward(out.data(), x.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);  // Hugging Face's mask value must vanish, not become NaN
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_GE(out[3], 0.0f);
  EXPECT_LT(out[3], 1e-44f);
  EXPECT_EQ(out[4], 1.0f);
  EXPECT_EQ(out[5], inf);
  EXPECT_EQ(out[6], inf);
  EXPECT_TRUE(std::isnan(out[7]));
  EXPECT_NEAR(out[8], 2.7182817f, 3e-7f);
}

TEST(VectorMath, ErfMatchesDoubleErf) {
  std::vector<float> x = grid(-6.0, 6.0, 120001);
  for (float tiny : {1e-30f, -1e-20f, 1e-8f, -3e-5f, 1e-3f}) x.push_back(tiny);
  Guarded out(static_cast<int64_t>(x.size()));
  erf_forward(out.data(), x.data(), out.size());
  out.check_guards("erf_forward");
  std::vector<double> truth(x.size());
  for (size_t i = 0; i < x.size(); ++i) truth[i] = std::erf(static_cast<double>(x[i]));
  const double error = max_relative_error(out.values(), truth, 0.0);
  std::cout << "erf max relative error " << error << "\n";
  EXPECT_LT(error, 6e-7);  // measured 3.3e-7
}

TEST(VectorMath, TanhMatchesDoubleTanh) {
  std::vector<float> x = grid(-12.0, 12.0, 240001);
  for (float special : {1e-30f, -1e-20f, 1e-8f, -3e-5f, 0.5499999f, 0.55f, -0.5500001f, 50.0f, -50.0f}) {
    x.push_back(special);
  }
  Guarded out(static_cast<int64_t>(x.size()));
  tanh_forward(out.data(), x.data(), out.size());
  out.check_guards("tanh_forward");
  std::vector<double> truth(x.size());
  for (size_t i = 0; i < x.size(); ++i) truth[i] = std::tanh(static_cast<double>(x[i]));
  const double error = max_relative_error(out.values(), truth, 0.0);
  std::cout << "tanh max relative error " << error << "\n";
  EXPECT_LT(error, 4e-7);  // measured 1.7e-7
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> edges = {inf, -inf, std::nanf("")};
  tanh_forward(edges.data(), edges.data(), 3);
  EXPECT_EQ(edges[0], 1.0f);
  EXPECT_EQ(edges[1], -1.0f);
  EXPECT_TRUE(std::isnan(edges[2]));
}

// GELU = 0.5 x * g(x) with g = 1 + erf(x / sqrt 2) (or the tanh form) in [0, 2]. The error is
// measured on that factor, |gelu_fast - gelu_true| / (0.5 |x|): for x << 0, g is a tiny difference
// of numbers near 1, so any float evaluation (PyTorch's, std::erf's) is exact only to an ulp of 1
// there, and a plain relative error would measure that cancellation rather than the kernel. The
// float std:: reference is measured the same way and printed beside it.
void check_gelu(void (*kernel)(float*, int64_t), void (*reference)(float*, int64_t), double (*truth_function)(double),
                const char* name) {
  std::vector<float> x = grid(-20.0, 20.0, 200003);  // past the exp/erf clamps on both sides
  Guarded y(x);
  kernel(y.data(), y.size());
  y.check_guards(name);
  std::vector<float> reference_y = x;
  reference(reference_y.data(), static_cast<int64_t>(x.size()));
  double worst = 0.0, worst_reference = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y.data()[i])) << name << " at x=" << x[i];
    const double truth = truth_function(x[i]);
    const double scale = std::max(0.5 * std::fabs(x[i]), 1e-30);
    worst = std::max(worst, std::fabs(y.data()[i] - truth) / scale);
    worst_reference = std::max(worst_reference, std::fabs(reference_y[i] - truth) / scale);
  }
  std::cout << name << " max error of the 1 + erf/tanh factor: kernel " << worst << ", float std:: reference "
            << worst_reference << "\n";
  EXPECT_LT(worst, 5e-7) << name;  // about 4 ulp of 1
}

TEST(Activations, GeluErfMatchesDouble) {
  check_gelu(gelu_erf_forward, gelu_erf_forward_reference, [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); },
             "gelu_erf");
}

TEST(Activations, GeluTanhMatchesDouble) {
  check_gelu(gelu_tanh_forward, gelu_tanh_forward_reference,
             [](double v) { return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (v + 0.044715 * v * v * v))); },
             "gelu_tanh");
}

TEST(Activations, FastMatchesReferenceOnAwkwardSizes) {
  std::mt19937 rng(7);
  for (int64_t n : {1, 15, 17, 33, 1000, 4097, 70001}) {
    const std::vector<float> x = random_vector(rng, n, 0.0f, 3.0f);
    struct Case {
      void (*fast)(float*, int64_t);
      void (*reference)(float*, int64_t);
      double abs_tol, rel_tol;
      const char* name;
    };
    const Case cases[] = {
        {gelu_erf_forward, gelu_erf_forward_reference, 1e-6, 2e-6, "gelu_erf"},
        {gelu_tanh_forward, gelu_tanh_forward_reference, 1e-6, 2e-6, "gelu_tanh"},
        {relu_forward, relu_forward_reference, 0.0, 0.0, "relu"},
        {tanh_forward, tanh_forward_reference, 0.0, 1e-6, "tanh"},
    };
    for (const Case& c : cases) {
      Guarded fast(x);
      std::vector<float> reference = x;
      c.fast(fast.data(), n);
      c.reference(reference.data(), n);
      fast.check_guards(c.name);
      expect_close(fast.data(), reference.data(), n, c.abs_tol, c.rel_tol, std::string(c.name) + " n=" + std::to_string(n));
    }
  }
}

TEST(Activations, ReluKeepsNanAndDispatchMatches) {
  std::vector<float> x = {-1.0f, 0.0f, 2.5f, std::nanf(""), -0.0f};
  relu_forward(x.data(), 5);
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_EQ(x[2], 2.5f);
  EXPECT_TRUE(std::isnan(x[3]));  // PyTorch's relu keeps NaN; hiding it would hide a bug upstream

  std::mt19937 rng(11);
  const std::vector<float> values = random_vector(rng, 301);
  for (Activation a : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kRelu, Activation::kTanh}) {
    std::vector<float> via_enum = values;
    std::vector<float> direct = values;
    activation_forward(a, via_enum.data(), 301);
    switch (a) {
      case Activation::kGeluErf: gelu_erf_forward(direct.data(), 301); break;
      case Activation::kGeluTanh: gelu_tanh_forward(direct.data(), 301); break;
      case Activation::kRelu: relu_forward(direct.data(), 301); break;
      case Activation::kTanh: tanh_forward(direct.data(), 301); break;
    }
    EXPECT_EQ(via_enum, direct) << activation_name(a);
    // The out-of-place form writes the same values and leaves its input alone.
    std::vector<float> out(301, -7.0f);
    activation_forward(a, out.data(), values.data(), 301);
    EXPECT_EQ(out, direct) << activation_name(a);
  }
}

// The fused bf16 form equals the f32 kernel followed by rounding, bit for bit, across chunk
// boundaries (kGrain = 4096 floats) and tails.
TEST(Activations, Bf16OutputEqualsTheRoundedF32Output) {
  std::mt19937 rng(12);
  for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{4096}, int64_t{3 * 4096 + 35}}) {
    const std::vector<float> values = random_vector(rng, n);
    for (Activation a : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kRelu, Activation::kTanh}) {
      std::vector<float> f32(n);
      activation_forward(a, f32.data(), values.data(), n);
      std::vector<BFloat16> out(n + 1, BFloat16{0x7FC1});
      activation_forward_bf16(a, out.data(), values.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(out[i].bits, float_to_bf16(f32[i]).bits) << activation_name(a) << " n=" << n << " at " << i;
      }
      EXPECT_EQ(out[n].bits, 0x7FC1) << "wrote past n";
    }
  }
}

TEST(Activations, NamesFromHuggingFaceConfigs) {
  EXPECT_EQ(activation_from_name("gelu"), Activation::kGeluErf);
  EXPECT_EQ(activation_from_name("gelu_new"), Activation::kGeluTanh);
  EXPECT_EQ(activation_from_name("gelu_pytorch_tanh"), Activation::kGeluTanh);
  EXPECT_EQ(activation_from_name("relu"), Activation::kRelu);
  EXPECT_EQ(activation_from_name("tanh"), Activation::kTanh);
  try {
    activation_from_name("swish");
    FAIL() << "unknown activation accepted";
  } catch (const Unsupported& error) {
    EXPECT_NE(std::string(error.what()).find("swish"), std::string::npos) << error.what();
  }
}

TEST(Activations, AddBiasRowsMatchesReference) {
  std::mt19937 rng(3);
  for (auto [rows, C] : {std::pair<int64_t, int64_t>{1, 1}, {37, 17}, {5, 768}, {3, 5000}}) {
    const std::vector<float> x = random_vector(rng, rows * C);
    const std::vector<float> bias = random_vector(rng, C);
    Guarded fast(x);
    std::vector<float> reference = x;
    add_bias_rows(fast.data(), bias.data(), rows, C);
    add_bias_rows_reference(reference.data(), bias.data(), rows, C);
    fast.check_guards("add_bias_rows");
    EXPECT_EQ(fast.values(), reference) << rows << "x" << C;  // one float add each: exact
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm.

// Double-precision layernorm of one row: the outside ground truth.
std::vector<double> layernorm_double(const float* x, const float* gamma, const float* beta, int64_t C, double eps,
                                     double* mean_out = nullptr, double* rstd_out = nullptr) {
  double mean = 0.0;
  for (int64_t c = 0; c < C; ++c) mean += x[c];
  mean /= C;
  double var = 0.0;
  for (int64_t c = 0; c < C; ++c) var += (x[c] - mean) * (x[c] - mean);
  var /= C;
  const double rstd = 1.0 / std::sqrt(var + eps);
  std::vector<double> y(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - mean) * rstd * gamma[c] + beta[c];
  if (mean_out) *mean_out = mean;
  if (rstd_out) *rstd_out = rstd;
  return y;
}

const std::pair<int64_t, int64_t> kLayerNormShapes[] = {{1, 1}, {1, 7}, {37, 17}, {13, 31}, {5, 389}, {9, 768}, {2, 1001}};

TEST(LayerNorm, MatchesDoubleAndReference) {
  std::mt19937 rng(1);
  for (auto [rows, C] : kLayerNormShapes) {
    // A large common offset stresses the variance: E[x^2] - E[x]^2 would lose everything here.
    // Tolerance 1e-5: with mean 50 and std 2, storing x and the mean in float alone moves
    // (x - mean) / std by a few 1e-6 (ulp(50) = 3.8e-6), in any float implementation.
    const std::vector<float> x = random_vector(rng, rows * C, 50.0f, 2.0f);
    const std::vector<float> gamma = random_vector(rng, C, 1.0f, 0.3f);
    const std::vector<float> beta = random_vector(rng, C, 0.0f, 0.3f);
    const float eps = 1e-12f;
    Guarded fast(rows * C), mean(rows), rstd(rows);
    layernorm_forward(fast.data(), x.data(), gamma.data(), beta.data(), rows, C, eps, mean.data(), rstd.data());
    fast.check_guards("layernorm out");
    mean.check_guards("layernorm mean");
    rstd.check_guards("layernorm rstd");
    std::vector<float> reference(static_cast<size_t>(rows * C));
    layernorm_forward_reference(reference.data(), x.data(), gamma.data(), beta.data(), rows, C, eps);
    const std::string shape = std::to_string(rows) + "x" + std::to_string(C);
    expect_close(fast.data(), reference.data(), rows * C, 1e-5, 1e-5, "layernorm vs reference " + shape);
    for (int64_t row = 0; row < rows; ++row) {
      if (C == 1) continue;  // variance 0: output is beta whatever the rounding; checked by reference above
      double mean_truth, rstd_truth;
      const std::vector<double> truth =
          layernorm_double(x.data() + row * C, gamma.data(), beta.data(), C, eps, &mean_truth, &rstd_truth);
      const std::vector<float> truth_float(truth.begin(), truth.end());
      expect_close(fast.data() + row * C, truth_float.data(), C, 1e-5, 1e-5, "layernorm vs double " + shape);
      EXPECT_NEAR(mean.data()[row], mean_truth, 1e-5 * std::fabs(mean_truth));
      EXPECT_NEAR(rstd.data()[row], rstd_truth, 1e-5 * rstd_truth);
    }
  }
}

TEST(LayerNorm, AddLayerNormInPlaceMatchesReference) {
  std::mt19937 rng(2);
  for (auto [rows, C] : kLayerNormShapes) {
    const std::vector<float> in = random_vector(rng, rows * C);
    const std::vector<float> residual = random_vector(rng, rows * C, 1.0f, 3.0f);
    const std::vector<float> gamma = random_vector(rng, C, 1.0f, 0.3f);
    const std::vector<float> beta = random_vector(rng, C);
    const float eps = 1e-5f;
    std::vector<float> reference(static_cast<size_t>(rows * C));
    add_layernorm_forward_reference(reference.data(), in.data(), residual.data(), gamma.data(), beta.data(), rows, C,
                                    eps);
    const std::string shape = std::to_string(rows) + "x" + std::to_string(C);
    {  // out-of-place
      Guarded out(rows * C);
      add_layernorm_forward(out.data(), in.data(), residual.data(), gamma.data(), beta.data(), rows, C, eps);
      out.check_guards("add_layernorm out");
      expect_close(out.data(), reference.data(), rows * C, 1e-5, 1e-5, "add_layernorm " + shape);
    }
    {  // out == in
      Guarded inout(in);
      add_layernorm_forward(inout.data(), inout.data(), residual.data(), gamma.data(), beta.data(), rows, C, eps);
      inout.check_guards("add_layernorm out==in");
      expect_close(inout.data(), reference.data(), rows * C, 1e-5, 1e-5, "add_layernorm out==in " + shape);
    }
    {  // out == residual
      Guarded inout(residual);
      add_layernorm_forward(inout.data(), in.data(), inout.data(), gamma.data(), beta.data(), rows, C, eps);
      inout.check_guards("add_layernorm out==residual");
      expect_close(inout.data(), reference.data(), rows * C, 1e-5, 1e-5, "add_layernorm out==residual " + shape);
    }
    // and the math itself, in double
    std::vector<float> sum(in.size());
    for (size_t i = 0; i < in.size(); ++i) sum[i] = in[i] + residual[i];
    for (int64_t row = 0; row < rows; ++row) {
      const std::vector<double> truth = layernorm_double(sum.data() + row * C, gamma.data(), beta.data(), C, eps);
      const std::vector<float> truth_float(truth.begin(), truth.end());
      expect_close(reference.data() + row * C, truth_float.data(), C, 1e-5, 1e-5, "add_layernorm double " + shape);
    }
  }
}

TEST(LayerNorm, InPlaceLayerNormAndBadArguments) {
  std::mt19937 rng(4);
  const int64_t rows = 6, C = 45;
  const std::vector<float> x = random_vector(rng, rows * C);
  const std::vector<float> gamma = random_vector(rng, C), beta = random_vector(rng, C);
  std::vector<float> reference(x.size());
  layernorm_forward_reference(reference.data(), x.data(), gamma.data(), beta.data(), rows, C, 1e-12f);
  Guarded inout(x);
  layernorm_forward(inout.data(), inout.data(), gamma.data(), beta.data(), rows, C, 1e-12f);
  inout.check_guards("layernorm in place");
  expect_close(inout.data(), reference.data(), rows * C, 1e-5, 1e-5, "layernorm in place");
  EXPECT_THROW(layernorm_forward(inout.data(), x.data(), gamma.data(), beta.data(), rows, 0, 1e-12f), InvalidArgument);
  EXPECT_THROW(layernorm_forward(inout.data(), x.data(), gamma.data(), beta.data(), rows, C, -1.0f), InvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Softmax.

TEST(Softmax, MatchesDoubleAndReferenceWithHuggingFaceMask) {
  std::mt19937 rng(5);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {37, 17}, {4, 70}, {3, 129}, {2, 5000}}) {
    const std::vector<float> x = random_vector(rng, rows * cols, 0.0f, 4.0f);
    std::vector<float> mask(static_cast<size_t>(cols), 0.0f);
    for (int64_t c = 0; c < cols; ++c) {
      if (c % 3 == 2) mask[c] = kLowest;  // Hugging Face: (1 - attention_mask) * finfo.min
    }
    for (const float* m : {static_cast<const float*>(nullptr), static_cast<const float*>(mask.data())}) {
      Guarded fast(x);
      softmax_rows(fast.data(), rows, cols, m);
      fast.check_guards("softmax_rows");
      std::vector<float> reference = x;
      softmax_rows_reference(reference.data(), rows, cols, m);
      const std::string what = "softmax " + std::to_string(rows) + "x" + std::to_string(cols) + (m ? " masked" : "");
      expect_close(fast.data(), reference.data(), rows * cols, 1e-7, 2e-6, what + " vs reference");
      for (int64_t row = 0; row < rows; ++row) {
        const float* xr = x.data() + row * cols;
        double max = -INFINITY;
        for (int64_t c = 0; c < cols; ++c) {
          if (!m || m[c] == 0.0f) max = std::max(max, static_cast<double>(xr[c]));
        }
        double sum = 0.0;
        for (int64_t c = 0; c < cols; ++c) {
          if (!m || m[c] == 0.0f) sum += std::exp(xr[c] - max);
        }
        std::vector<float> truth(static_cast<size_t>(cols));
        for (int64_t c = 0; c < cols; ++c) truth[c] = (!m || m[c] == 0.0f) ? std::exp(xr[c] - max) / sum : 0.0;
        expect_close(fast.data() + row * cols, truth.data(), cols, 1e-7, 2e-6, what + " vs double");
        for (int64_t c = 0; c < cols; ++c) {
          if (m && m[c] != 0.0f) {
            ASSERT_EQ(fast.data()[row * cols + c], 0.0f) << what << " masked column " << c;
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Attention: packed variable-length kernel against the padded Hugging Face formulation.

struct AttentionCase {
  std::vector<int64_t> lengths;
  int64_t NH, HS;
};

// bf16: the products round Q, K, V and P to bf16 (relative 2^-9 each); with the test's values in
// [-1, 1) and HS up to 97 the context is off by up to about 1e-2 absolute.
void run_attention_case(const AttentionCase& test_case, uint32_t seed, bool bf16 = false) {
  const int64_t S = static_cast<int64_t>(test_case.lengths.size());
  const int64_t NH = test_case.NH, HS = test_case.HS, C = NH * HS;
  std::vector<int64_t> offsets(static_cast<size_t>(S + 1), 0);
  for (int64_t s = 0; s < S; ++s) offsets[s + 1] = offsets[s] + test_case.lengths[s];
  const int64_t N = offsets[S];
  const int64_t T = *std::max_element(test_case.lengths.begin(), test_case.lengths.end());

  std::mt19937 rng(seed);
  const std::vector<float> packed_qkv = random_vector(rng, N * 3 * C);  // (N, 3C)
  // Padded copy (S, T, 3C): real rows copied, padding rows random (they must not leak in).
  std::vector<float> padded_qkv = random_vector(rng, S * T * 3 * C, 0.0f, 10.0f);
  std::vector<float> additive_mask(static_cast<size_t>(S * T), kLowest);  // (S, T)
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t t = 0; t < test_case.lengths[s]; ++t) {
      std::copy_n(packed_qkv.data() + (offsets[s] + t) * 3 * C, 3 * C, padded_qkv.data() + (s * T + t) * 3 * C);
      additive_mask[s * T + t] = 0.0f;
    }
  }
  std::vector<float> padded_out(static_cast<size_t>(S * T * C));
  attention_forward_reference(padded_out.data(), padded_qkv.data(), additive_mask.data(), S, T, NH, HS);

  const int64_t scratch_floats = attention_scratch_floats(T, HS, num_threads());
  Guarded scratch(scratch_floats);  // guards also prove the advertised scratch size is enough
  Guarded out(N * C);
  (bf16 ? attention_forward_bf16 : attention_forward)(out.data(), packed_qkv.data(), offsets.data(), S, NH, HS,
                                                      scratch.data(), scratch_floats);
  out.check_guards("attention out");
  scratch.check_guards("attention scratch");
  for (int64_t s = 0; s < S; ++s) {
    expect_close(out.data() + offsets[s] * C, padded_out.data() + s * T * C, test_case.lengths[s] * C,
                 bf16 ? 1.5e-2 : 5e-7, bf16 ? 1e-2 : 3e-6,
                 std::string(bf16 ? "bf16 " : "") + "attention sequence " + std::to_string(s) + " length " +
                     std::to_string(test_case.lengths[s]) + " NH=" + std::to_string(NH) + " HS=" + std::to_string(HS));
  }
}

TEST(Attention, PackedMatchesPaddedHuggingFaceReference) {
  // Mixed lengths 1..70 (tails of 1..15 past a multiple of 16 and of 4 queries), head sizes below,
  // at and above 16 and not multiples of 16.
  run_attention_case({{5, 1, 70, 16, 17, 33, 2, 64, 3}, 3, 20}, 21);
  run_attention_case({{1}, 2, 7}, 22);
  run_attention_case({{48, 13, 70, 31}, 2, 64}, 23);
  run_attention_case({{9, 66, 1, 40}, 4, 32}, 24);
  run_attention_case({{19, 4}, 1, 97}, 25);
}

TEST(Attention, Bf16ProductsStayWithinBf16RoundingOfTheReference) {
  if (!attention_bf16_available()) GTEST_SKIP() << "this build has no AVX512_BF16: attention_forward_bf16 runs f32";
  // The same cases as the f32 kernel: odd head sizes (a half-empty last word of dimensions), odd
  // lengths (a half-empty last pair of keys), lengths past 32 (several key vectors).
  run_attention_case({{5, 1, 70, 16, 17, 33, 2, 64, 3}, 3, 20}, 21, true);
  run_attention_case({{1}, 2, 7}, 22, true);
  run_attention_case({{48, 13, 70, 31}, 2, 64}, 23, true);
  run_attention_case({{9, 66, 1, 40}, 4, 32}, 24, true);
  run_attention_case({{19, 4}, 1, 97}, 25, true);
  run_attention_case({{128, 127}, 12, 64}, 26, true);
}

TEST(Attention, IndependentOfThreadCount) {
  std::mt19937 rng(6);
  const int64_t NH = 3, HS = 24, C = NH * HS;
  const std::vector<int64_t> offsets = {0, 12, 12, 57, 58, 100};  // includes an empty sequence
  const int64_t S = 5, N = offsets[S];
  const std::vector<float> qkv = random_vector(rng, N * 3 * C);
  const int previous = num_threads();
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(45, HS, threads)));
    std::vector<float> out(static_cast<size_t>(N * C));
    attention_forward(out.data(), qkv.data(), offsets.data(), S, NH, HS, scratch.data(),
                      static_cast<int64_t>(scratch.size()));
    results.push_back(out);
  }
  set_num_threads(previous);
  EXPECT_EQ(results[0], results[1]);  // each (sequence, head) is computed whole by one thread
}

TEST(Attention, RejectsBadOffsetsAndShortScratch) {
  const int64_t NH = 2, HS = 8, C = NH * HS;
  std::vector<float> qkv(static_cast<size_t>(10 * 3 * C), 0.5f), out(static_cast<size_t>(10 * C));
  std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(10, HS, num_threads())));
  const int64_t good[] = {0, 4, 10};
  const int64_t decreasing[] = {0, 6, 4};
  const int64_t nonzero_start[] = {1, 4, 10};
  const int64_t size = static_cast<int64_t>(scratch.size());
  EXPECT_NO_THROW(attention_forward(out.data(), qkv.data(), good, 2, NH, HS, scratch.data(), size));
  EXPECT_THROW(attention_forward(out.data(), qkv.data(), decreasing, 2, NH, HS, scratch.data(), size), InvalidArgument);
  EXPECT_THROW(attention_forward(out.data(), qkv.data(), nonzero_start, 2, NH, HS, scratch.data(), size),
               InvalidArgument);
  try {
    attention_forward(out.data(), qkv.data(), good, 2, NH, HS, scratch.data(), size - 1);
    FAIL() << "short scratch accepted";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find(std::to_string(size - 1)), std::string::npos) << error.what();
  }
  // With equal q and k rows and all-equal values, attention averages v: every output is 0.5.
  for (float v : out) ASSERT_FLOAT_EQ(v, 0.5f);
}

// ---------------------------------------------------------------------------------------------
// Embeddings.

TEST(Embedding, MatchesReferenceAndDoubleTruth) {
  std::mt19937 rng(8);
  const int64_t V = 50, P = 40, TV = 2, C = 37, N = 61;
  const std::vector<float> word = random_vector(rng, V * C), position = random_vector(rng, P * C),
                           type = random_vector(rng, TV * C), gamma = random_vector(rng, C, 1.0f, 0.2f),
                           beta = random_vector(rng, C, 0.0f, 0.2f);
  std::vector<int32_t> ids(N), positions(N), types(N);
  std::uniform_int_distribution<int32_t> pick_word(0, V - 1), pick_type(0, TV - 1);
  for (int64_t n = 0; n < N; ++n) {
    ids[n] = pick_word(rng);
    positions[n] = static_cast<int32_t>(n % 23);  // packed: positions restart per sequence
    types[n] = pick_type(rng);
  }
  const float eps = 1e-12f;
  for (const int32_t* type_ids : {static_cast<const int32_t*>(types.data()), static_cast<const int32_t*>(nullptr)}) {
    Guarded fast(N * C);
    embedding_forward(fast.data(), ids.data(), positions.data(), type_ids, word.data(), V, position.data(), P,
                      type.data(), TV, gamma.data(), beta.data(), N, C, eps);
    fast.check_guards("embedding out");
    std::vector<float> reference(static_cast<size_t>(N * C));
    embedding_forward_reference(reference.data(), ids.data(), positions.data(), type_ids, word.data(), position.data(),
                                type.data(), gamma.data(), beta.data(), N, C, eps);
    expect_close(fast.data(), reference.data(), N * C, 1e-5, 1e-5, "embedding vs reference");
    for (int64_t n = 0; n < N; ++n) {
      std::vector<float> sum(static_cast<size_t>(C));
      const int32_t t = type_ids ? type_ids[n] : 0;
      for (int64_t c = 0; c < C; ++c) sum[c] = word[ids[n] * C + c] + position[positions[n] * C + c] + type[t * C + c];
      const std::vector<double> truth = layernorm_double(sum.data(), gamma.data(), beta.data(), C, eps);
      const std::vector<float> truth_float(truth.begin(), truth.end());
      expect_close(fast.data() + n * C, truth_float.data(), C, 1e-5, 1e-5, "embedding vs double");
    }
  }
}

TEST(Embedding, BadIdNamesIdPositionAndTable) {
  const int64_t V = 10, P = 8, TV = 2, C = 4, N = 5;
  const std::vector<float> word(V * C, 1.0f), position(P * C, 1.0f), type(TV * C, 1.0f), gamma(C, 1.0f), beta(C, 0.0f);
  std::vector<int32_t> ids = {1, 2, 3, 4, 5}, positions = {0, 1, 2, 3, 4}, types = {0, 0, 1, 1, 0};
  Guarded out(N * C);
  auto run = [&] {
    embedding_forward(out.data(), ids.data(), positions.data(), types.data(), word.data(), V, position.data(), P,
                      type.data(), TV, gamma.data(), beta.data(), N, C, 1e-12f);
  };
  EXPECT_NO_THROW(run());
  ids[3] = 10;  // == V
  try {
    run();
    FAIL() << "out-of-range input id accepted";
  } catch (const InvalidArgument& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("input id 10"), std::string::npos) << message;
    EXPECT_NE(message.find("position 3"), std::string::npos) << message;
    EXPECT_NE(message.find("10 rows"), std::string::npos) << message;
  }
  ids[3] = 4;
  positions[4] = -1;
  EXPECT_THROW(run(), InvalidArgument);
  positions[4] = 4;
  types[0] = 2;
  try {
    run();
    FAIL() << "out-of-range token type accepted";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("token type id 2 at position 0"), std::string::npos) << error.what();
  }
  out.check_guards("embedding after errors");
}

// ---------------------------------------------------------------------------------------------
// Pooling.

TEST(Pooling, ClsAndMeanPoolMatchReference) {
  std::mt19937 rng(9);
  const int64_t C = 19;
  const std::vector<int64_t> offsets = {0, 1, 8, 78, 79, 100};
  const int64_t S = 5, N = offsets[S];
  const std::vector<float> hidden = random_vector(rng, N * C);
  Guarded cls(S * C), mean(S * C);
  cls_pool(cls.data(), hidden.data(), offsets.data(), S, C);
  mean_pool(mean.data(), hidden.data(), offsets.data(), S, C);
  cls.check_guards("cls_pool");
  mean.check_guards("mean_pool");
  std::vector<float> cls_reference(static_cast<size_t>(S * C)), mean_reference(static_cast<size_t>(S * C));
  cls_pool_reference(cls_reference.data(), hidden.data(), offsets.data(), S, C);
  mean_pool_reference(mean_reference.data(), hidden.data(), offsets.data(), S, C);
  EXPECT_EQ(cls.values(), cls_reference);
  expect_close(mean.data(), mean_reference.data(), S * C, 1e-6, 1e-5, "mean_pool");
  // Double-precision mean for the longest sequence.
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0.0;
    for (int64_t n = 8; n < 78; ++n) sum += hidden[n * C + c];
    EXPECT_NEAR(mean.data()[2 * C + c], sum / 70.0, 1e-6);
  }
  const std::vector<int64_t> with_empty = {0, 3, 3};
  EXPECT_THROW(mean_pool(mean.data(), hidden.data(), with_empty.data(), 2, C), InvalidArgument);
  EXPECT_THROW(cls_pool(cls.data(), hidden.data(), with_empty.data(), 2, C), InvalidArgument);
}

TEST(Pooling, L2NormalizeRows) {
  std::mt19937 rng(10);
  const int64_t rows = 7, C = 33;
  std::vector<float> x = random_vector(rng, rows * C);
  std::fill(x.begin() + 3 * C, x.begin() + 4 * C, 0.0f);  // a zero row stays zero (eps), no NaN
  Guarded fast(x);
  l2_normalize_rows(fast.data(), rows, C);
  fast.check_guards("l2_normalize_rows");
  std::vector<float> reference = x;
  l2_normalize_rows_reference(reference.data(), rows, C, 1e-12f);
  expect_close(fast.data(), reference.data(), rows * C, 1e-7, 2e-6, "l2_normalize vs reference");
  for (int64_t row = 0; row < rows; ++row) {
    double norm = 0.0;
    for (int64_t c = 0; c < C; ++c) norm += static_cast<double>(x[row * C + c]) * x[row * C + c];
    norm = std::sqrt(norm);
    for (int64_t c = 0; c < C; ++c) {
      const double truth = norm > 0.0 ? x[row * C + c] / norm : 0.0;
      ASSERT_NEAR(fast.data()[row * C + c], truth, 1e-6) << "row " << row;
    }
  }
}

}  // namespace
}  // namespace scalebert::kernels
