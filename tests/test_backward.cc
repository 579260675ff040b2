// Tests for the training kernels (backward passes, dropout, losses) in src/kernels/cpu:
// 1. every reference backward (reference_backward.h, double instantiation) against central finite
//    differences of the double reference forward — the outside truth;
// 2. every fast float kernel against the reference, with explicit tolerances;
// 3. gradient conventions: parameter gradients accumulate (two calls double them), activation
//    gradients are overwritten; results independent of the thread count where the kernel promises it;
// 4. packed attention backward against the unpacked per-sequence reference, dropout statistics and
//    Philox known answers, cross-entropy against hand-computed values and ignore_index.
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/cpu/activations_backward.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/attention_backward.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/embedding_backward.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/layernorm_backward.h"
#include "kernels/cpu/linear_backward.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/reference_backward.h"
#include "kernels/cpu/softmax_backward.h"

namespace scalebert::kernels {
namespace {

namespace ref = reference;
using Doubles = std::vector<double>;
using Floats = std::vector<float>;

Doubles random_doubles(std::mt19937& rng, int64_t n, double stddev = 1.0) {
  std::normal_distribution<double> normal(0.0, stddev);
  Doubles values(static_cast<size_t>(n));
  for (double& v : values) v = normal(rng);
  return values;
}

Floats to_floats(const Doubles& values) { return Floats(values.begin(), values.end()); }
Doubles to_doubles(const Floats& values) { return Doubles(values.begin(), values.end()); }

double dot(const Doubles& a, const Doubles& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

double max_abs(const Doubles& values) {
  double worst = 0.0;
  for (double v : values) worst = std::max(worst, std::fabs(v));
  return worst;
}

// Central differences of objective() with respect to every element of x (perturbed and restored).
Doubles numeric_gradient(Doubles& x, const std::function<double()>& objective, double h = 1e-5) {
  Doubles gradient(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = objective();
    x[i] = saved - h;
    const double minus = objective();
    x[i] = saved;
    gradient[i] = (plus - minus) / (2.0 * h);
  }
  return gradient;
}

// Relative error |analytic - numeric| / max(|analytic|, |numeric|, 1e-3 * max|analytic|) < 1e-6 for
// every element (the floor keeps near-zero entries from measuring only the difference noise).
void expect_gradient_matches(const Doubles& analytic, const Doubles& numeric, const std::string& what) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  const double floor = std::max(1e-3 * max_abs(analytic), 1e-12);
  double worst = 0.0;
  size_t worst_index = 0;
  for (size_t i = 0; i < analytic.size(); ++i) {
    const double error =
        std::fabs(analytic[i] - numeric[i]) / std::max({std::fabs(analytic[i]), std::fabs(numeric[i]), floor});
    if (!(error <= worst)) {
      worst = error;
      worst_index = i;
    }
  }
  EXPECT_LT(worst, 1e-6) << what << ": worst relative error at " << worst_index << ": analytic "
                         << analytic[worst_index] << " vs finite difference " << numeric[worst_index];
}

// Every |actual - expected| <= abs_tol + rel_tol * |expected| and finite; reports the worst.
void expect_close(const Floats& actual, const Doubles& expected, double abs_tol, double rel_tol,
                  const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double worst_excess = 0.0;
  int64_t worst = -1;
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_TRUE(std::isfinite(actual[i])) << what << ": non-finite " << actual[i] << " at " << i;
    const double excess = std::fabs(actual[i] - expected[i]) - (abs_tol + rel_tol * std::fabs(expected[i]));
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = static_cast<int64_t>(i);
    }
  }
  if (worst >= 0) {
    ADD_FAILURE() << what << ": at " << worst << " got " << actual[worst] << ", expected " << expected[worst]
                  << " (abs_tol " << abs_tol << ", rel_tol " << rel_tol << ")";
  }
}

// Fast-vs-reference check scaled to the expected magnitude: |error| <= tol * max|expected|.
void expect_close_scaled(const Floats& actual, const Doubles& expected, double tol, const std::string& what) {
  expect_close(actual, expected, tol * std::max(max_abs(expected), 1e-30), 0.0, what);
}

bool bitwise_equal(const Floats& a, const Floats& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs body with `threads` OpenMP threads, restoring the previous count.
template <typename Body>
void with_threads(int threads, Body&& body) {
  const int saved = num_threads();
  set_num_threads(threads);
  body();
  set_num_threads(saved);
}

// =============================================================================================
// Linear

TEST(LinearBackward, ReferenceMatchesFiniteDifferences) {
  std::mt19937 rng(1);
  const int64_t M = 5, K = 7, N = 6;
  Doubles x = random_doubles(rng, M * K), w = random_doubles(rng, N * K), b = random_doubles(rng, N);
  const Doubles dy = random_doubles(rng, M * N);  // objective = sum(dy * y)
  auto objective = [&] {
    Doubles y(M * N);
    ref::linear_forward(y.data(), x.data(), w.data(), b.data(), M, K, N);
    return dot(y, dy);
  };
  Doubles dx(M * K), dw(N * K, 0.0), db(N, 0.0);
  ref::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), M, K, N, false);
  expect_gradient_matches(dx, numeric_gradient(x, objective), "linear dx");
  expect_gradient_matches(dw, numeric_gradient(w, objective), "linear dW");
  expect_gradient_matches(db, numeric_gradient(b, objective), "linear db");
}

// Runs a LinearBackwardStep with its own scratchpad.
void run_step(LinearBackwardStep& step) {
  std::vector<char> scratchpad(step.scratchpad_bytes() + 64);
  step.bind_scratchpad(step.scratchpad_bytes() ? scratchpad.data() : nullptr);
  dnnl::stream stream(cpu_engine());
  step.run(stream);
}

TEST(LinearBackward, OneDnnMatchesReferenceAndAccumulates) {
  std::mt19937 rng(2);
  const int64_t M = 67, K = 45, N = 29;
  const Doubles x = random_doubles(rng, M * K), w = random_doubles(rng, N * K), dy = random_doubles(rng, M * N);
  Doubles dx_ref(M * K), dw_ref(N * K, 0.0), db_ref(N, 0.0);
  ref::linear_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), dy.data(), x.data(), w.data(), M, K, N, false);

  const Floats xf = to_floats(x), wf = to_floats(w), dyf = to_floats(dy);
  Floats dx(M * K, 123.0f), dw(N * K, 0.0f), db(N, 0.0f);
  LinearBackwardStep step(xf.data(), K, wf.data(), dyf.data(), N, dx.data(), K, dw.data(), db.data(), M, K, N, false);
  std::cout << "dx: " << step.dx_implementation() << ", dW: " << step.dweight_implementation() << "\n";
  run_step(step);
  expect_close_scaled(dx, dx_ref, 1e-5, "dx");
  expect_close_scaled(dw, dw_ref, 1e-5, "dW");
  expect_close_scaled(db, db_ref, 1e-6, "db");

  // Second run: parameter gradients double, dx is overwritten (same values, not doubled).
  run_step(step);
  Doubles dw_twice = dw_ref, db_twice = db_ref;
  for (double& v : dw_twice) v *= 2;
  for (double& v : db_twice) v *= 2;
  expect_close_scaled(dx, dx_ref, 1e-5, "dx after second run");
  expect_close_scaled(dw, dw_twice, 1e-5, "dW accumulated twice");
  expect_close_scaled(db, db_twice, 1e-6, "db accumulated twice");

  // accumulate_dx: dx += dy W on top of what is there.
  Floats dx_acc(M * K, 1.0f);
  LinearBackwardStep accumulate(nullptr, K, wf.data(), dyf.data(), N, dx_acc.data(), K, nullptr, nullptr, M, K, N, true);
  run_step(accumulate);
  Doubles dx_plus_one = dx_ref;
  for (double& v : dx_plus_one) v += 1.0;
  expect_close_scaled(dx_acc, dx_plus_one, 1e-5, "dx accumulated onto ones");
}

TEST(LinearBackward, StridedBuffersLeavePaddingAlone) {
  std::mt19937 rng(3);
  const int64_t M = 19, K = 24, N = 10, x_stride = K + 5, dy_stride = 3 * N, dx_stride = K + 3;
  // dy is the middle third of a wider (M, 3N) gradient, as dqkv's blocks are.
  const Doubles x = random_doubles(rng, M * K), w = random_doubles(rng, N * K), dy = random_doubles(rng, M * N);
  Floats x_wide(M * x_stride, 7.0f), dy_wide(M * dy_stride, 9.0f), dx_wide(M * dx_stride, -5.0f);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) x_wide[m * x_stride + k] = static_cast<float>(x[m * K + k]);
    for (int64_t n = 0; n < N; ++n) dy_wide[m * dy_stride + N + n] = static_cast<float>(dy[m * N + n]);
  }
  const Floats wf = to_floats(w);
  Floats dw(N * K, 0.0f), db(N, 0.0f);
  LinearBackwardStep step(x_wide.data(), x_stride, wf.data(), dy_wide.data() + N, dy_stride, dx_wide.data(), dx_stride,
                          dw.data(), db.data(), M, K, N, false);
  run_step(step);
  Doubles dx_ref(M * K), dw_ref(N * K, 0.0), db_ref(N, 0.0);
  ref::linear_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), dy.data(), x.data(), w.data(), M, K, N, false);
  Floats dx(M * K);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) dx[m * K + k] = dx_wide[m * dx_stride + k];
    for (int64_t k = K; k < dx_stride; ++k) ASSERT_EQ(dx_wide[m * dx_stride + k], -5.0f) << "dx padding row " << m;
  }
  expect_close_scaled(dx, dx_ref, 1e-5, "strided dx");
  expect_close_scaled(dw, dw_ref, 1e-5, "strided dW");
  expect_close_scaled(db, db_ref, 1e-6, "strided db");
}

// Mixed precision: the products read bf16 copies of x, W and dy (strided like their f32 originals)
// and accumulate in f32; the result equals the double-precision backward of the ROUNDED operands,
// while the bias gradient sums the unrounded f32 dy.
TEST(LinearBackward, Bf16OperandsMatchTheReferenceOfTheRoundedValues) {
  if (!cpu_has_bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  std::mt19937 rng(11);
  const int64_t M = 70, K = 48, N = 20, dy_stride = 3 * N;  // dy: the middle third of a wider gradient
  const Doubles x = random_doubles(rng, M * K), w = random_doubles(rng, N * K), dy = random_doubles(rng, M * N);
  auto rounded = [](const Doubles& values) {
    Doubles out(values.size());
    for (size_t i = 0; i < values.size(); ++i) out[i] = bf16_to_float(float_to_bf16(static_cast<float>(values[i])));
    return out;
  };
  auto to_bf16 = [](const Doubles& values) {
    std::vector<BFloat16> out(values.size());
    for (size_t i = 0; i < values.size(); ++i) out[i] = float_to_bf16(static_cast<float>(values[i]));
    return out;
  };
  const Floats dy_f32 = to_floats(dy);
  Floats dy_wide(M * dy_stride, 9.0f);
  std::vector<BFloat16> dy_wide_bf16(M * dy_stride, float_to_bf16(9.0f));
  const std::vector<BFloat16> dy_bf16 = to_bf16(dy);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      dy_wide[m * dy_stride + N + n] = dy_f32[m * N + n];
      dy_wide_bf16[m * dy_stride + N + n] = dy_bf16[m * N + n];
    }
  }
  const std::vector<BFloat16> x_bf16 = to_bf16(x), w_bf16 = to_bf16(w);
  const Bf16Operands operands{x_bf16.data(), w_bf16.data(), dy_wide_bf16.data() + N};
  Floats dx(M * K, 1.0f), dw(N * K, 0.5f), db(N, 0.25f);
  // The f32 x and W are unused with bf16 operands: null here proves it.
  LinearBackwardStep step(nullptr, K, nullptr, dy_wide.data() + N, dy_stride, dx.data(), K, dw.data(), db.data(), M, K,
                          N, true, &operands);
  run_step(step);

  Doubles dx_ref(M * K), dw_ref(N * K, 0.0), db_ref(N, 0.0);
  const Doubles dy_rounded = rounded(dy);
  ref::linear_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), dy_rounded.data(), rounded(x).data(),
                       rounded(w).data(), M, K, N, false);
  Doubles dx_expected = dx_ref, dw_expected = dw_ref, db_expected(N, 0.25);
  for (double& v : dx_expected) v += 1.0;  // accumulate_dx
  for (double& v : dw_expected) v += 0.5;  // dW is added to
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t m = 0; m < M; ++m) db_expected[n] += static_cast<double>(dy_f32[m * N + n]);
  }
  expect_close_scaled(dx, dx_expected, 1e-5, "bf16 dx");
  expect_close_scaled(dw, dw_expected, 1e-5, "bf16 dW");
  expect_close_scaled(db, db_expected, 1e-6, "db from the f32 dy");
  // dW from a dense dy^T copy instead of dy's swapped strides: the same values.
  std::vector<BFloat16> dy_transposed(N * M);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) dy_transposed[n * M + m] = dy_bf16[m * N + n];
  }
  const Bf16Operands transposed{x_bf16.data(), nullptr, nullptr, dy_transposed.data()};
  Floats dw_transposed(N * K, 0.5f);
  LinearBackwardStep weight_only(nullptr, K, nullptr, dy_wide.data() + N, dy_stride, nullptr, K, dw_transposed.data(),
                                 nullptr, M, K, N, false, &transposed);
  run_step(weight_only);
  expect_close_scaled(dw_transposed, dw_expected, 1e-5, "bf16 dW from dy^T");
  // The rounding is real: the f32 operands' dW differs from the rounded one by far more than 1e-5.
  Doubles dw_exact(N * K, 0.0), dx_exact(M * K), db_exact(N, 0.0);
  ref::linear_backward(dx_exact.data(), dw_exact.data(), db_exact.data(), dy.data(), x.data(), w.data(), M, K, N,
                       false);
  double largest = 0.0;
  for (int64_t i = 0; i < N * K; ++i) largest = std::max(largest, std::fabs(dw_exact[i] - dw_ref[i]));
  EXPECT_GT(largest, 1e-4 * max_abs(dw_ref));
}

TEST(LinearBackward, BiasGradientIndependentOfThreadCount) {
  std::mt19937 rng(4);
  const int64_t M = 1000, N = 300;
  const Floats dy = to_floats(random_doubles(rng, M * N));
  Floats one(N, 0.5f), two(N, 0.5f);
  with_threads(1, [&] { bias_backward(one.data(), dy.data(), M, N, N); });
  with_threads(2, [&] { bias_backward(two.data(), dy.data(), M, N, N); });
  EXPECT_TRUE(bitwise_equal(one, two));
  EXPECT_THROW(bias_backward(one.data(), dy.data(), M, N, N - 1), InvalidArgument);
  EXPECT_THROW(LinearBackwardStep(dy.data(), N, dy.data(), dy.data(), N, nullptr, N, nullptr, nullptr, 0, N, N, false),
               InvalidArgument);
}

// =============================================================================================
// LayerNorm

TEST(LayerNormBackward, ReferenceMatchesFiniteDifferences) {
  std::mt19937 rng(5);
  const int64_t rows = 4, C = 9;
  Doubles in = random_doubles(rng, rows * C, 2.0), gamma = random_doubles(rng, C), beta = random_doubles(rng, C);
  for (int64_t c = 0; c < C; ++c) in[c] += 3.0;  // a row with a large mean
  const Doubles dout = random_doubles(rng, rows * C);
  const double eps = 1e-5;
  auto objective = [&] {
    Doubles out(rows * C), mean(rows), rstd(rows);
    ref::layernorm_forward(out.data(), mean.data(), rstd.data(), in.data(), gamma.data(), beta.data(), rows, C, eps);
    return dot(out, dout);
  };
  Doubles out(rows * C), mean(rows), rstd(rows), dinp(rows * C), dgamma(C, 0.0), dbeta(C, 0.0);
  ref::layernorm_forward(out.data(), mean.data(), rstd.data(), in.data(), gamma.data(), beta.data(), rows, C, eps);
  ref::layernorm_backward(dinp.data(), dgamma.data(), dbeta.data(), dout.data(), in.data(), gamma.data(), mean.data(),
                          rstd.data(), rows, C);
  expect_gradient_matches(dinp, numeric_gradient(in, objective), "layernorm dinp");
  expect_gradient_matches(dgamma, numeric_gradient(gamma, objective), "layernorm dgamma");
  expect_gradient_matches(dbeta, numeric_gradient(beta, objective), "layernorm dbeta");
}

TEST(LayerNormBackward, FastMatchesReferenceAccumulatesAndIsDeterministic) {
  std::mt19937 rng(6);
  const int64_t rows = 45, C = 200;  // C not a multiple of 16 or 64
  const Doubles in = random_doubles(rng, rows * C, 1.5), gamma = random_doubles(rng, C), beta = random_doubles(rng, C);
  const Doubles dout = random_doubles(rng, rows * C);
  const Floats inf = to_floats(in), gammaf = to_floats(gamma), betaf = to_floats(beta), doutf = to_floats(dout);
  // Statistics as the float forward kernel saves them.
  Floats out(rows * C), mean(rows), rstd(rows);
  layernorm_forward(out.data(), inf.data(), gammaf.data(), betaf.data(), rows, C, 1e-12f, mean.data(), rstd.data());

  const Doubles meand = to_doubles(mean), rstdd = to_doubles(rstd);
  Doubles dinp_ref(rows * C), dgamma_ref(C, 0.0), dbeta_ref(C, 0.0);
  ref::layernorm_backward(dinp_ref.data(), dgamma_ref.data(), dbeta_ref.data(), dout.data(), in.data(), gamma.data(),
                          meand.data(), rstdd.data(), rows, C);

  Floats dinp(rows * C, 99.0f), dgamma(C, 0.0f), dbeta(C, 0.0f);
  layernorm_backward(dinp.data(), dgamma.data(), dbeta.data(), doutf.data(), inf.data(), gammaf.data(), mean.data(),
                     rstd.data(), rows, C);
  expect_close_scaled(dinp, dinp_ref, 2e-6, "layernorm dinp");
  expect_close_scaled(dgamma, dgamma_ref, 1e-6, "layernorm dgamma");
  expect_close_scaled(dbeta, dbeta_ref, 1e-6, "layernorm dbeta");

  // Twice: parameter gradients double, dinp unchanged (overwritten).
  const Floats dinp_first = dinp;
  layernorm_backward(dinp.data(), dgamma.data(), dbeta.data(), doutf.data(), inf.data(), gammaf.data(), mean.data(),
                     rstd.data(), rows, C);
  EXPECT_TRUE(bitwise_equal(dinp, dinp_first));
  for (double& v : dgamma_ref) v *= 2;
  for (double& v : dbeta_ref) v *= 2;
  expect_close_scaled(dgamma, dgamma_ref, 1e-6, "layernorm dgamma twice");
  expect_close_scaled(dbeta, dbeta_ref, 1e-6, "layernorm dbeta twice");

  // In place (dinp == dout) gives the same values.
  Floats in_place = doutf, dgamma_in_place(C, 0.0f);
  layernorm_backward(in_place.data(), dgamma_in_place.data(), nullptr, in_place.data(), inf.data(), gammaf.data(),
                     mean.data(), rstd.data(), rows, C);
  EXPECT_TRUE(bitwise_equal(in_place, dinp_first));

  // Thread count does not change any bit.
  Floats g1(C, 0.0f), g2(C, 0.0f), b1(C, 0.0f), b2(C, 0.0f), d1(rows * C), d2(rows * C);
  with_threads(1, [&] {
    layernorm_backward(d1.data(), g1.data(), b1.data(), doutf.data(), inf.data(), gammaf.data(), mean.data(),
                       rstd.data(), rows, C);
  });
  with_threads(2, [&] {
    layernorm_backward(d2.data(), g2.data(), b2.data(), doutf.data(), inf.data(), gammaf.data(), mean.data(),
                       rstd.data(), rows, C);
  });
  EXPECT_TRUE(bitwise_equal(g1, g2) && bitwise_equal(b1, b2) && bitwise_equal(d1, d2));
}

// =============================================================================================
// Activations and softmax

struct ActivationCase {
  const char* name;
  double (*forward)(double);
  void (*reference_backward)(double*, const double*, const double*, int64_t);
  void (*fast_backward)(float*, const float*, const float*, int64_t);
  bool saves_output;  // tanh's backward takes y, the others take x
};

const ActivationCase kActivationCases[] = {
    {"gelu_erf", ref::gelu_erf<double>, ref::gelu_erf_backward<double>, gelu_erf_backward, false},
    {"gelu_tanh", ref::gelu_tanh<double>, ref::gelu_tanh_backward<double>, gelu_tanh_backward, false},
    {"relu", ref::relu<double>, ref::relu_backward<double>, relu_backward, false},
    {"tanh", [](double x) { return std::tanh(x); }, ref::tanh_backward<double>, tanh_backward, true},
};

TEST(ActivationBackward, ReferenceMatchesFiniteDifferences) {
  std::mt19937 rng(7);
  for (const ActivationCase& c : kActivationCases) {
    Doubles x = random_doubles(rng, 40, 2.0);
    for (double& v : x) {
      if (std::fabs(v) < 1e-2) v += 0.1;  // keep FD away from ReLU's kink
    }
    const Doubles dout = random_doubles(rng, 40);
    auto objective = [&] {
      double sum = 0.0;
      for (size_t i = 0; i < x.size(); ++i) sum += c.forward(x[i]) * dout[i];
      return sum;
    };
    Doubles saved = x;
    if (c.saves_output) {
      for (double& v : saved) v = c.forward(v);
    }
    Doubles dx(x.size());
    c.reference_backward(dx.data(), saved.data(), dout.data(), 40);
    expect_gradient_matches(dx, numeric_gradient(x, objective), std::string(c.name) + " dx");
  }
}

TEST(ActivationBackward, FastMatchesReference) {
  std::mt19937 rng(8);
  Doubles x;
  for (int i = 0; i <= 4000; ++i) x.push_back(-12.0 + 24.0 * i / 4000.0);  // past every clamp
  const Doubles extra = random_doubles(rng, 1001, 3.0);
  x.insert(x.end(), extra.begin(), extra.end());
  const int64_t n = static_cast<int64_t>(x.size());  // 5002: a masked tail
  const Doubles dout = random_doubles(rng, n);
  for (const ActivationCase& c : kActivationCases) {
    Floats saved = to_floats(x);
    if (c.saves_output) {
      for (float& v : saved) v = std::tanh(v);
    }
    const Doubles saved_d = to_doubles(saved);
    Doubles expected(n);
    c.reference_backward(expected.data(), saved_d.data(), dout.data(), n);
    const Floats doutf = to_floats(dout);
    Floats dx(n, 42.0f);
    c.fast_backward(dx.data(), saved.data(), doutf.data(), n);
    // The GELU derivatives go through the shared erf/exp/tanh approximations (a few ulp each).
    expect_close(dx, expected, 3e-6, 1e-5, std::string(c.name) + " fast backward");
    Floats in_place = doutf;  // dinp == dout
    c.fast_backward(in_place.data(), saved.data(), in_place.data(), n);
    EXPECT_TRUE(bitwise_equal(in_place, dx)) << c.name << " in place";
  }
  Floats a(3, 1.0f), b(3, 1.0f);
  EXPECT_THROW(gelu_erf_backward(a.data(), a.data(), b.data(), -1), InvalidArgument);
}

TEST(SoftmaxBackward, ReferenceMatchesFiniteDifferencesAndFastMatches) {
  std::mt19937 rng(9);
  const int64_t rows = 3, cols = 8;
  Doubles x = random_doubles(rng, rows * cols, 2.0);
  const Doubles dout = random_doubles(rng, rows * cols);
  auto objective = [&] {
    Doubles y(rows * cols);
    ref::softmax_forward(y.data(), x.data(), rows, cols);
    return dot(y, dout);
  };
  Doubles y(rows * cols), dx(rows * cols);
  ref::softmax_forward(y.data(), x.data(), rows, cols);
  ref::softmax_backward(dx.data(), y.data(), dout.data(), rows, cols);
  expect_gradient_matches(dx, numeric_gradient(x, objective), "softmax dx");

  const int64_t R = 37, Cb = 1001;
  const Doubles xb = random_doubles(rng, R * Cb, 3.0), db = random_doubles(rng, R * Cb);
  Doubles yb(R * Cb), expected(R * Cb);
  ref::softmax_forward(yb.data(), xb.data(), R, Cb);
  const Floats ybf = to_floats(yb), dbf = to_floats(db);
  const Doubles ybd = to_doubles(ybf);
  ref::softmax_backward(expected.data(), ybd.data(), db.data(), R, Cb);
  Floats dxb(R * Cb);
  softmax_backward(dxb.data(), ybf.data(), dbf.data(), R, Cb);
  expect_close_scaled(dxb, expected, 1e-6, "softmax fast backward");
}

// =============================================================================================
// Attention

// Dropout multipliers (NH, L, L) for sequence s as the packed kernels draw them.
Doubles attention_dropout_multipliers(const int64_t* seq_offsets, int64_t s, int64_t NH, float p, uint64_t seed,
                                      uint64_t offset) {
  const int64_t L = seq_offsets[s + 1] - seq_offsets[s];
  const uint64_t base = offset + static_cast<uint64_t>(attention_probs_offset(seq_offsets, s, NH));
  const uint64_t threshold = dropout_threshold(p);
  Doubles mask(NH * L * L);
  for (int64_t e = 0; e < NH * L * L; ++e) {
    mask[e] = dropout_keep(seed, base + e, threshold) ? 1.0 / (1.0 - static_cast<double>(p)) : 0.0;
  }
  return mask;
}

TEST(AttentionBackward, ReferenceMatchesFiniteDifferences) {
  std::mt19937 rng(10);
  const int64_t L = 5, NH = 2, HS = 3, C = NH * HS;
  for (bool with_dropout : {false, true}) {
    Doubles qkv = random_doubles(rng, L * 3 * C);
    const Doubles dout = random_doubles(rng, L * C);
    Doubles mask(NH * L * L);
    for (double& m : mask) m = (rng() % 4 == 0) ? 0.0 : 1.0 / 0.75;
    const double* dropout = with_dropout ? mask.data() : nullptr;
    auto objective = [&] {
      Doubles out(L * C), probs(NH * L * L);
      ref::attention_forward(out.data(), probs.data(), qkv.data(), dropout, L, NH, HS);
      return dot(out, dout);
    };
    Doubles out(L * C), probs(NH * L * L), dqkv(L * 3 * C);
    ref::attention_forward(out.data(), probs.data(), qkv.data(), dropout, L, NH, HS);
    ref::attention_backward(dqkv.data(), dout.data(), qkv.data(), probs.data(), dropout, L, NH, HS);
    expect_gradient_matches(dqkv, numeric_gradient(qkv, objective),
                            with_dropout ? "attention dqkv with dropout" : "attention dqkv");
  }
}

struct PackedBatch {
  std::vector<int64_t> offsets;
  int64_t N = 0;
};

PackedBatch make_batch(const std::vector<int64_t>& lengths) {
  PackedBatch batch;
  batch.offsets.push_back(0);
  for (int64_t length : lengths) batch.offsets.push_back(batch.offsets.back() + length);
  batch.N = batch.offsets.back();
  return batch;
}

TEST(AttentionBackward, ForwardTrainMatchesInferenceKernelAndReference) {
  std::mt19937 rng(11);
  const int64_t NH = 3, HS = 20, C = NH * HS;
  const PackedBatch batch = make_batch({7, 1, 0, 20, 33});
  const int64_t S = static_cast<int64_t>(batch.offsets.size()) - 1;
  const Doubles qkv = random_doubles(rng, batch.N * 3 * C);
  const Floats qkvf = to_floats(qkv);
  const int64_t max_len = max_sequence_length(batch.offsets.data(), S);
  Floats scratch(attention_train_scratch_floats(max_len, HS, num_threads()));
  Floats probs(attention_probs_floats(batch.offsets.data(), S, NH), -1.0f), out(batch.N * C);
  attention_forward_train(out.data(), probs.data(), qkvf.data(), batch.offsets.data(), S, NH, HS, 0.0f, 0, 0,
                          scratch.data(), static_cast<int64_t>(scratch.size()));
  // Against the inference kernel (another implementation of the same forward).
  Floats inference(batch.N * C);
  Floats inference_scratch(attention_scratch_floats(max_len, HS, num_threads()));
  attention_forward(inference.data(), qkvf.data(), batch.offsets.data(), S, NH, HS, inference_scratch.data(),
                    static_cast<int64_t>(inference_scratch.size()));
  expect_close_scaled(out, to_doubles(inference), 2e-6, "forward_train vs attention_forward");

  // Against the per-sequence reference, with dropout, probabilities in the documented layout.
  const float p = 0.25f;
  const uint64_t seed = 1234, offset = 777;
  attention_forward_train(out.data(), probs.data(), qkvf.data(), batch.offsets.data(), S, NH, HS, p, seed, offset,
                          scratch.data(), static_cast<int64_t>(scratch.size()));
  for (int64_t s = 0; s < S; ++s) {
    const int64_t begin = batch.offsets[s], L = batch.offsets[s + 1] - begin;
    if (L == 0) continue;
    const Doubles mask = attention_dropout_multipliers(batch.offsets.data(), s, NH, p, seed, offset);
    const Doubles seq_qkv(qkv.begin() + begin * 3 * C, qkv.begin() + (begin + L) * 3 * C);
    Doubles ref_out(L * C), ref_probs(NH * L * L);
    ref::attention_forward(ref_out.data(), ref_probs.data(), seq_qkv.data(), mask.data(), L, NH, HS);
    const int64_t at = attention_probs_offset(batch.offsets.data(), s, NH);
    const Floats seq_probs(probs.begin() + at, probs.begin() + at + NH * L * L);
    const Floats seq_out(out.begin() + begin * C, out.begin() + (begin + L) * C);
    expect_close(seq_probs, ref_probs, 1e-6, 2e-6, "probs of sequence " + std::to_string(s));
    expect_close_scaled(seq_out, ref_out, 2e-6, "out of sequence " + std::to_string(s));
  }
}

// Checks one packed configuration against the per-sequence double reference, with and without
// dropout: forward P and out, backward dQ, dK and dV each to its own scale (on the kernel's saved
// probabilities), every dqkv element written, and results bitwise independent of the thread count.
// f32 products agree to float rounding. bf16 products (mixed precision) round their operands to
// bf16 (8 significant bits) before each small GEMM, so they agree to ~1% of each output's scale
// (measured worst: P and out under 0.3%, dQ / dK / dV 0.94%; a mis-packed operand is off by O(1)),
// and must really differ from the f32 kernels.
void check_packed_attention(int64_t NH, int64_t HS, const std::vector<int64_t>& lengths, uint32_t seed_rng, bool bf16) {
  std::mt19937 rng(seed_rng);
  const int64_t C = NH * HS;
  const PackedBatch batch = make_batch(lengths);
  const int64_t S = static_cast<int64_t>(batch.offsets.size()) - 1;
  const Doubles qkv = random_doubles(rng, batch.N * 3 * C), dout = random_doubles(rng, batch.N * C);
  const Floats qkvf = to_floats(qkv), doutf = to_floats(dout);
  const int64_t max_len = max_sequence_length(batch.offsets.data(), S);
  const double forward_tolerance = bf16 ? 1e-2 : 2e-6, backward_tolerance = bf16 ? 1.5e-2 : 2e-6;
  // Enough slots for the 2-thread run below, whatever the process's thread count.
  Floats scratch(attention_train_scratch_floats(max_len, HS, std::max(num_threads(), 2)));
  const int64_t scratch_floats = static_cast<int64_t>(scratch.size());
  for (float p : {0.0f, 0.3f}) {
    SCOPED_TRACE(::testing::Message() << "NH=" << NH << " HS=" << HS << " p=" << p << (bf16 ? " bf16" : " f32"));
    const uint64_t seed = 99, offset = 5;  // offset not a multiple of 4: blocks straddle rows
    Floats probs(attention_probs_floats(batch.offsets.data(), S, NH)), out(batch.N * C);
    attention_forward_train(out.data(), probs.data(), qkvf.data(), batch.offsets.data(), S, NH, HS, p, seed, offset,
                            scratch.data(), scratch_floats, bf16);
    if (bf16) {
      Floats probs_f32(probs.size()), out_f32(out.size());
      attention_forward_train(out_f32.data(), probs_f32.data(), qkvf.data(), batch.offsets.data(), S, NH, HS, p, seed,
                              offset, scratch.data(), scratch_floats, false);
      EXPECT_FALSE(bitwise_equal(out, out_f32)) << "the bf16 path rounded nothing";
    }
    Floats dqkv(batch.N * 3 * C, std::numeric_limits<float>::quiet_NaN());  // must be fully overwritten
    attention_backward(dqkv.data(), doutf.data(), qkvf.data(), probs.data(), batch.offsets.data(), S, NH, HS, p, seed,
                       offset, scratch.data(), scratch_floats, bf16);
    for (int64_t s = 0; s < S; ++s) {
      const int64_t begin = batch.offsets[s], L = batch.offsets[s + 1] - begin;
      if (L == 0) continue;
      const std::string sequence = " of sequence " + std::to_string(s);
      const Doubles mask = attention_dropout_multipliers(batch.offsets.data(), s, NH, p, seed, offset);
      const Doubles seq_qkv(qkv.begin() + begin * 3 * C, qkv.begin() + (begin + L) * 3 * C);
      const Doubles seq_dout(dout.begin() + begin * C, dout.begin() + (begin + L) * C);
      Doubles ref_out(L * C), ref_probs(NH * L * L);
      ref::attention_forward(ref_out.data(), ref_probs.data(), seq_qkv.data(), mask.data(), L, NH, HS);
      const int64_t at = attention_probs_offset(batch.offsets.data(), s, NH);
      const Floats seq_probs(probs.begin() + at, probs.begin() + at + NH * L * L);
      const Floats seq_out(out.begin() + begin * C, out.begin() + (begin + L) * C);
      expect_close_scaled(seq_probs, ref_probs, forward_tolerance, "probs" + sequence);
      expect_close_scaled(seq_out, ref_out, forward_tolerance, "out" + sequence);
      const Doubles saved(seq_probs.begin(), seq_probs.end());  // the float probabilities
      Doubles expected(L * 3 * C);
      ref::attention_backward(expected.data(), seq_dout.data(), seq_qkv.data(), saved.data(),
                              p > 0 ? mask.data() : nullptr, L, NH, HS);
      for (int64_t part = 0; part < 3; ++part) {  // dQ, dK, dV
        Floats actual_part;
        Doubles expected_part;
        for (int64_t r = 0; r < L; ++r) {
          for (int64_t c = part * C; c < (part + 1) * C; ++c) {
            actual_part.push_back(dqkv[(begin + r) * 3 * C + c]);
            expected_part.push_back(expected[r * 3 * C + c]);
          }
        }
        static const char* const kParts[] = {"dq", "dk", "dv"};
        expect_close_scaled(actual_part, expected_part, backward_tolerance, kParts[part] + sequence);
      }
    }
    Floats one(batch.N * 3 * C), two(batch.N * 3 * C);
    for (auto [threads, result] : {std::pair<int, Floats*>{1, &one}, {2, &two}}) {
      with_threads(threads, [&] {
        attention_backward(result->data(), doutf.data(), qkvf.data(), probs.data(), batch.offsets.data(), S, NH, HS,
                           p, seed, offset, scratch.data(), scratch_floats, bf16);
      });
    }
    EXPECT_TRUE(bitwise_equal(one, two));
  }
  EXPECT_THROW(attention_backward(scratch.data(), doutf.data(), qkvf.data(), qkvf.data(), batch.offsets.data(), S, NH,
                                  HS, 0.0f, 0, 0, scratch.data(), 10),
               InvalidArgument);
}

TEST(AttentionBackward, PackedMatchesPerSequenceReference) {
  // Awkward sizes (HS 20, empty and one-token sequences), then BERT's HS 64 with a sequence longer
  // than one 64-column register tile.
  check_packed_attention(3, 20, {7, 1, 0, 20, 33}, 12, false);
  check_packed_attention(2, 64, {70, 3, 17}, 13, false);
}

TEST(AttentionBackward, Bf16ProductsMatchTheReferenceToBf16Accuracy) {
  if (!attention_bf16_available() || !cpu_has_bf16()) GTEST_SKIP() << "no AVX512_BF16 in this build or CPU";
  check_packed_attention(3, 20, {7, 1, 0, 20, 33}, 21, true);  // odd lengths, HS not a multiple of 32
  check_packed_attention(2, 64, {70, 3, 17, 128}, 22, true);
  check_packed_attention(1, 6, {5, 2}, 23, true);               // HS smaller than a word block
}

// The first-query kernels ([CLS] rows only) against the full attention: forward rows 0 and their
// probability rows; backward dK, dV (every row) and dQ row 0 when dout is zero on every other row.
// Dropout included: both draw query row 0's mask at the same counter indices.
void check_first_query_attention(int64_t NH, int64_t HS, const std::vector<int64_t>& lengths, uint32_t seed_rng) {
  std::mt19937 rng(seed_rng);
  const int64_t C = NH * HS;
  const PackedBatch batch = make_batch(lengths);
  const int64_t S = static_cast<int64_t>(batch.offsets.size()) - 1, N = batch.N;
  const Floats qkv = to_floats(random_doubles(rng, N * 3 * C)), first_dout = to_floats(random_doubles(rng, S * C));
  // q: the first query row of every sequence (zero for an empty one).
  Floats q(S * C, 0.0f), dout(N * C, 0.0f);
  for (int64_t s = 0; s < S; ++s) {
    if (batch.offsets[s + 1] == batch.offsets[s]) continue;
    for (int64_t c = 0; c < C; ++c) {
      q[s * C + c] = qkv[batch.offsets[s] * 3 * C + c];
      dout[batch.offsets[s] * C + c] = first_dout[s * C + c];
    }
  }
  const int64_t max_len = max_sequence_length(batch.offsets.data(), S);
  Floats scratch(attention_train_scratch_floats(max_len, HS, std::max(num_threads(), 2)));
  const int64_t scratch_floats = static_cast<int64_t>(scratch.size());
  for (float p : {0.0f, 0.3f}) {
    SCOPED_TRACE(::testing::Message() << "NH=" << NH << " HS=" << HS << " p=" << p);
    const uint64_t seed = 7, offset = 3;
    Floats probs(attention_probs_floats(batch.offsets.data(), S, NH)), out(N * C), dqkv(N * 3 * C);
    attention_forward_train(out.data(), probs.data(), qkv.data(), batch.offsets.data(), S, NH, HS, p, seed, offset,
                            scratch.data(), scratch_floats);
    attention_backward(dqkv.data(), dout.data(), qkv.data(), probs.data(), batch.offsets.data(), S, NH, HS, p, seed,
                       offset, scratch.data(), scratch_floats);

    Floats first_probs(NH * N), first_out(S * C, -1.0f), dq(S * C, -1.0f);
    Floats first_dqkv(N * 3 * C, std::numeric_limits<float>::quiet_NaN());  // K, V columns must be overwritten
    first_query_attention_forward_train(first_out.data(), first_probs.data(), q.data(), qkv.data(),
                                        batch.offsets.data(), S, NH, HS, p, seed, offset, scratch.data(), scratch_floats);
    first_query_attention_backward(dq.data(), first_dqkv.data(), first_dout.data(), q.data(), qkv.data(),
                                   first_probs.data(), batch.offsets.data(), S, NH, HS, p, seed, offset, scratch.data(),
                                   scratch_floats);
    for (int64_t s = 0; s < S; ++s) {
      const int64_t begin = batch.offsets[s], L = batch.offsets[s + 1] - begin;
      for (int64_t c = 0; c < C; ++c) {
        const float want_out = L > 0 ? out[begin * C + c] : 0.0f, want_dq = L > 0 ? dqkv[begin * 3 * C + c] : 0.0f;
        ASSERT_NEAR(first_out[s * C + c], want_out, 2e-6f * (1.0f + std::fabs(want_out))) << "out s=" << s << " c=" << c;
        ASSERT_NEAR(dq[s * C + c], want_dq, 2e-6f * (1.0f + std::fabs(want_dq))) << "dq s=" << s << " c=" << c;
      }
      const int64_t at = attention_probs_offset(batch.offsets.data(), s, NH);
      for (int64_t h = 0; h < NH; ++h) {
        for (int64_t j = 0; j < L; ++j) {
          ASSERT_NEAR(first_probs[NH * begin + h * L + j], probs[at + h * L * L + j], 1e-6f) << "P s=" << s << " h=" << h;
        }
      }
    }
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t c = C; c < 3 * C; ++c) {
        const float want = dqkv[n * 3 * C + c];
        ASSERT_NEAR(first_dqkv[n * 3 * C + c], want, 2e-6f * (1.0f + std::fabs(want))) << "dK/dV row " << n << " col " << c;
      }
    }
    // Bitwise independent of the thread count.
    Floats one(N * 3 * C), two(N * 3 * C), dq_one(S * C), dq_two(S * C);
    with_threads(1, [&] {
      first_query_attention_backward(dq_one.data(), one.data(), first_dout.data(), q.data(), qkv.data(),
                                     first_probs.data(), batch.offsets.data(), S, NH, HS, p, seed, offset,
                                     scratch.data(), scratch_floats);
    });
    with_threads(2, [&] {
      first_query_attention_backward(dq_two.data(), two.data(), first_dout.data(), q.data(), qkv.data(),
                                     first_probs.data(), batch.offsets.data(), S, NH, HS, p, seed, offset,
                                     scratch.data(), scratch_floats);
    });
    EXPECT_TRUE(bitwise_equal(one, two) && bitwise_equal(dq_one, dq_two));
  }
  EXPECT_THROW(first_query_attention_backward(q.data(), scratch.data(), first_dout.data(), q.data(), qkv.data(),
                                              qkv.data(), batch.offsets.data(), S, NH, HS, 0.0f, 0, 0, scratch.data(),
                                              scratch_floats),
               InvalidArgument);
}

TEST(AttentionBackward, FirstQueryMatchesFullAttentionOnRowZero) {
  check_first_query_attention(3, 20, {7, 1, 0, 20, 33}, 21);
  check_first_query_attention(2, 64, {70, 3, 17}, 22);
}

// =============================================================================================
// Embeddings

TEST(EmbeddingBackward, ReferenceMatchesFiniteDifferencesAndFastMatches) {
  std::mt19937 rng(13);
  const int64_t V = 11, P = 6, TV = 2, C = 5, N = 9;
  const std::vector<int32_t> ids = {3, 3, 0, 10, 3, 7, 0, 1, 3}, positions = {0, 1, 2, 3, 4, 0, 1, 2, 5},
                             types = {0, 0, 1, 1, 1, 0, 1, 0, 1};
  Doubles word = random_doubles(rng, V * C), position = random_doubles(rng, P * C), type = random_doubles(rng, TV * C);
  const Doubles dout = random_doubles(rng, N * C);
  auto objective = [&] {
    Doubles out(N * C);
    ref::embedding_sum_forward(out.data(), ids.data(), positions.data(), types.data(), word.data(), position.data(),
                               type.data(), N, C);
    return dot(out, dout);
  };
  Doubles dword(V * C, 0.0), dposition(P * C, 0.0), dtype(TV * C, 0.0);
  ref::embedding_backward(dword.data(), dposition.data(), dtype.data(), dout.data(), ids.data(), positions.data(),
                          types.data(), N, C);
  expect_gradient_matches(dword, numeric_gradient(word, objective), "dword");
  expect_gradient_matches(dposition, numeric_gradient(position, objective), "dposition");
  expect_gradient_matches(dtype, numeric_gradient(type, objective), "dtype");

  // Fast kernel, called twice: tables accumulate (doubled).
  const Floats doutf = to_floats(dout);
  Floats fw(V * C, 0.0f), fp(P * C, 0.0f), ft(TV * C, 0.0f);
  for (int call = 0; call < 2; ++call) {
    embedding_backward(fw.data(), fp.data(), ft.data(), doutf.data(), ids.data(), positions.data(), types.data(), V, P,
                       TV, N, C);
  }
  for (Doubles* table : {&dword, &dposition, &dtype}) {
    for (double& v : *table) v *= 2;
  }
  expect_close(fw, dword, 1e-6, 1e-6, "fast dword twice");
  expect_close(fp, dposition, 1e-6, 1e-6, "fast dposition twice");
  expect_close(ft, dtype, 1e-6, 1e-6, "fast dtype twice");

  // Null token types mean type 0 for every token; a bad id throws before anything is written.
  Floats t0(TV * C, 0.0f);
  embedding_backward(nullptr, nullptr, t0.data(), doutf.data(), ids.data(), positions.data(), nullptr, V, P, TV, N, C);
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0.0;
    for (int64_t n = 0; n < N; ++n) sum += dout[n * C + c];
    EXPECT_NEAR(t0[c], sum, 1e-5);
    EXPECT_EQ(t0[C + c], 0.0f);
  }
  std::vector<int32_t> bad = ids;
  bad[4] = static_cast<int32_t>(V);
  Floats untouched(V * C, 0.0f);
  EXPECT_THROW(embedding_backward(untouched.data(), nullptr, nullptr, doutf.data(), bad.data(), positions.data(),
                                  nullptr, V, P, TV, N, C),
               InvalidArgument);
  EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == 0.0f; }));
}

TEST(EmbeddingBackward, RepeatedIdsAreDeterministicAcrossThreadCounts) {
  std::mt19937 rng(14);
  const int64_t V = 50, P = 64, TV = 2, C = 200, N = 2000;  // every word row hit ~40 times
  std::vector<int32_t> ids(N), positions(N), types(N);
  for (int64_t n = 0; n < N; ++n) {
    ids[n] = static_cast<int32_t>(rng() % V);
    positions[n] = static_cast<int32_t>(n % P);
    types[n] = static_cast<int32_t>(rng() % TV);
  }
  const Floats dout = to_floats(random_doubles(rng, N * C));
  Floats w1(V * C, 0.0f), w2(V * C, 0.0f), p1(P * C, 0.0f), p2(P * C, 0.0f);
  with_threads(1, [&] {
    embedding_backward(w1.data(), p1.data(), nullptr, dout.data(), ids.data(), positions.data(), types.data(), V, P, TV,
                       N, C);
  });
  with_threads(2, [&] {
    embedding_backward(w2.data(), p2.data(), nullptr, dout.data(), ids.data(), positions.data(), types.data(), V, P, TV,
                       N, C);
  });
  EXPECT_TRUE(bitwise_equal(w1, w2) && bitwise_equal(p1, p2));
}

// =============================================================================================
// Dropout

TEST(Dropout, PhiloxKnownAnswers) {
  // Random123's kat_vectors for philox4x32_10.
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}),
            (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}),
            (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Dropout, KeepRateScaleAndBackward) {
  const int64_t n = 1 << 20;
  const Floats in(n, 2.0f);
  for (float p : {0.1f, 0.5f}) {
    Floats out(n);
    dropout_forward(out.data(), in.data(), n, p, 42, 0);
    int64_t kept = 0;
    const float kept_value = 2.0f / (1.0f - p);
    for (float v : out) {
      if (v != 0.0f) {
        ++kept;
        ASSERT_EQ(v, kept_value);
      }
    }
    // Binomial(n, 1 - p): within 5 standard deviations.
    const double expected = n * (1.0 - p), sd = std::sqrt(n * p * (1.0 - p));
    EXPECT_NEAR(static_cast<double>(kept), expected, 5 * sd) << "p=" << p;
    // Neighbours independent: P(both kept) = (1 - p)^2 within 5 sd.
    int64_t both = 0;
    for (int64_t i = 0; i + 1 < n; i += 2) both += out[i] != 0.0f && out[i + 1] != 0.0f;
    const double q = (1.0 - p) * (1.0 - p), pairs = n / 2;
    EXPECT_NEAR(static_cast<double>(both), pairs * q, 5 * std::sqrt(pairs * q * (1 - q))) << "p=" << p;

    // Backward: din = dout * the same mask, recomputed from (seed, offset).
    Floats dout(n, 1.0f), din(n);
    dropout_backward(din.data(), dout.data(), n, p, 42, 0);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(din[i] * 2.0f, out[i]) << i;
  }
  // A different seed gives a different mask; p = 0 is the identity, p = 1 drops everything.
  Floats a(1000), b(1000), same(1000);
  dropout_forward(a.data(), in.data(), 1000, 0.5f, 1, 0);
  dropout_forward(b.data(), in.data(), 1000, 0.5f, 2, 0);
  EXPECT_FALSE(bitwise_equal(a, b));
  dropout_forward(same.data(), in.data(), 1000, 0.0f, 1, 0);
  EXPECT_TRUE(std::all_of(same.begin(), same.end(), [](float v) { return v == 2.0f; }));
  dropout_forward(same.data(), in.data(), 1000, 1.0f, 1, 0);
  EXPECT_TRUE(std::all_of(same.begin(), same.end(), [](float v) { return v == 0.0f; }));
  EXPECT_THROW(dropout_forward(same.data(), in.data(), 1000, 1.5f, 1, 0), InvalidArgument);
}

TEST(Dropout, MaskDependsOnlyOnSeedAndIndex) {
  const int64_t n = 100003;
  const float p = 0.3f;
  const uint64_t seed = 0xDEADBEEF12345ull, offset = 1001;
  Floats whole(n), one(n), pieces(n);
  with_threads(2, [&] { dropout_mask(whole.data(), n, p, seed, offset); });
  with_threads(1, [&] { dropout_mask(one.data(), n, p, seed, offset); });
  EXPECT_TRUE(bitwise_equal(whole, one));
  // Split into pieces at odd boundaries with advanced offsets: the same mask.
  const int64_t cut1 = 13, cut2 = 50001;
  dropout_mask(pieces.data(), cut1, p, seed, offset);
  dropout_mask(pieces.data() + cut1, cut2 - cut1, p, seed, offset + cut1);
  dropout_mask(pieces.data() + cut2, n - cut2, p, seed, offset + cut2);
  EXPECT_TRUE(bitwise_equal(whole, pieces));
  // Every element equals the scalar reference, for offsets at every alignment to the 64-element
  // groups the vector kernel generates and lengths that end mid-group.
  const uint64_t threshold = dropout_threshold(p);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(whole[i] != 0.0f, dropout_keep(seed, offset + i, threshold)) << i;
  for (uint64_t start : {0ull, 1ull, 3ull, 17ull, 63ull, 64ull, 65ull, (1ull << 32) * 4 - 5}) {
    for (int64_t length : {1, 15, 16, 47, 64, 130, 1023, 1025, 2100}) {
      Floats mask(length);
      dropout_mask(mask.data(), length, p, seed, start);
      for (int64_t i = 0; i < length; ++i) {
        ASSERT_EQ(mask[i] != 0.0f, dropout_keep(seed, start + i, threshold)) << "start " << start << " i " << i;
      }
    }
  }
  // In place equals out of place.
  Floats data(n, 3.0f), out(n);
  const Floats copy = data;
  dropout_forward(out.data(), copy.data(), n, p, seed, offset);
  dropout_forward(data.data(), data.data(), n, p, seed, offset);
  EXPECT_TRUE(bitwise_equal(data, out));
}

// The packed keep bits (one draw for a block of many short rows) are the same mask, read 16 at a
// time from any bit position, zero past the end.
TEST(Dropout, KeepBitsMatchTheScalarReference) {
  const float p = 0.3f;
  const uint64_t seed = 42, threshold = dropout_threshold(p);
  for (uint64_t start : {0ull, 5ull, 64ull, 1001ull}) {
    for (int64_t n : {1, 63, 64, 65, 1024, 1025, 16384, 16389}) {
      std::vector<uint64_t> bits(static_cast<size_t>(dropout_keep_words(n)), ~0ull);
      dropout_keep_bits(bits.data(), n, p, seed, start);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ((bits[i / 64] >> (i % 64)) & 1u, dropout_keep(seed, start + i, threshold) ? 1u : 0u)
            << "start " << start << " n " << n << " i " << i;
      }
      for (int64_t first : {int64_t{0}, int64_t{7}, int64_t{49}, n - 1}) {
        if (first < 0) continue;
        const uint32_t window = dropout_keep16(bits.data(), first);
        for (int64_t l = 0; l < 16; ++l) {
          const bool want = first + l < n && dropout_keep(seed, start + first + l, threshold);
          ASSERT_EQ((window >> l) & 1u, want ? 1u : 0u) << "window at " << first << " lane " << l << " n " << n;
        }
      }
    }
  }
}

// =============================================================================================
// Losses

TEST(CrossEntropy, HandComputedValuesAndIgnoreIndex) {
  // Row 0: logits (1, 2, 3), target 2: loss = log(e + e^2 + e^3) - 3 = 0.40760596444...
  // Row 1: ignored. Row 2: logits (0, 0, 0), target 0: loss = log 3.
  const Floats logits = {1, 2, 3, 5, -5, 9, 0, 0, 0};
  const std::vector<int32_t> targets = {2, kIgnoreIndex, 0};
  Floats dlogits(9, 7.0f), row_losses(3);
  const LossResult result =
      cross_entropy_forward_backward(dlogits.data(), row_losses.data(), logits.data(), targets.data(), 3, 3, 1.0f);
  const double loss0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0, loss2 = std::log(3.0);
  EXPECT_EQ(result.count, 2);
  EXPECT_NEAR(loss0, 0.40760596444, 1e-10);
  EXPECT_NEAR(result.loss, (loss0 + loss2) / 2, 1e-6);
  EXPECT_EQ(row_losses[1], 0.0f);
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(dlogits[0], std::exp(1.0) / z / 2, 1e-7);
  EXPECT_NEAR(dlogits[2], (std::exp(3.0) / z - 1) / 2, 1e-7);
  for (int i = 3; i < 6; ++i) EXPECT_EQ(dlogits[i], 0.0f);  // ignored row: zero, overwritten
  EXPECT_NEAR(dlogits[6], (1.0 / 3 - 1) / 2, 1e-7);
  EXPECT_NEAR(dlogits[7], 1.0 / 6, 1e-7);

  // grad_scale multiplies the gradient, not the loss.
  Floats scaled(9);
  cross_entropy_forward_backward(scaled.data(), row_losses.data(), logits.data(), targets.data(), 3, 3, 0.25f);
  for (int i = 0; i < 9; ++i) EXPECT_NEAR(scaled[i], 0.25f * dlogits[i], 1e-8);

  // Every row ignored: loss 0, zero gradient, no NaN.
  const std::vector<int32_t> none = {kIgnoreIndex, kIgnoreIndex, kIgnoreIndex};
  Floats zero(9, 5.0f);
  const LossResult empty =
      cross_entropy_forward_backward(zero.data(), row_losses.data(), logits.data(), none.data(), 3, 3, 1.0f);
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.loss, 0.0);
  EXPECT_TRUE(std::all_of(zero.begin(), zero.end(), [](float v) { return v == 0.0f; }));

  // A custom ignore index (QA-style) and a target out of range.
  const std::vector<int32_t> custom = {3, 1, 3};
  const LossResult one_row =
      cross_entropy_forward_backward(nullptr, row_losses.data(), logits.data(), custom.data(), 3, 3, 1.0f, 3);
  EXPECT_EQ(one_row.count, 1);
  EXPECT_NEAR(one_row.loss, std::log(std::exp(5.0) + std::exp(-5.0) + std::exp(9.0)) + 5.0, 1e-5);
  const std::vector<int32_t> bad = {2, 3, 0};
  EXPECT_THROW(cross_entropy_forward_backward(nullptr, row_losses.data(), logits.data(), bad.data(), 3, 3, 1.0f),
               InvalidArgument);
}

TEST(CrossEntropy, ReferenceMatchesFiniteDifferences) {
  std::mt19937 rng(15);
  const int64_t rows = 4, V = 6;
  Doubles logits = random_doubles(rng, rows * V, 2.0);
  const std::vector<int32_t> targets = {1, kIgnoreIndex, 5, 0};
  auto objective = [&] {
    return ref::cross_entropy_forward(logits.data(), targets.data(), rows, V, kIgnoreIndex, nullptr);
  };
  Doubles dlogits(rows * V);
  ref::cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), rows, V, kIgnoreIndex, 1.0);
  expect_gradient_matches(dlogits, numeric_gradient(logits, objective), "cross-entropy dlogits");
}

TEST(CrossEntropy, FastMatchesReferenceOnLargeVocabulary) {
  std::mt19937 rng(16);
  for (int64_t V : {int64_t{13}, int64_t{30522}}) {
    const int64_t rows = V > 100 ? 5 : 37;
    Doubles logits = random_doubles(rng, rows * V, 3.0);
    for (int64_t v = 0; v < V; ++v) logits[v] += 1e4;  // row 0 far from 0: needs the max subtraction
    std::vector<int32_t> targets(rows);
    for (int64_t r = 0; r < rows; ++r) targets[r] = r % 4 == 3 ? kIgnoreIndex : static_cast<int32_t>(rng() % V);
    int64_t count = 0;
    const double loss = ref::cross_entropy_forward(logits.data(), targets.data(), rows, V, kIgnoreIndex, &count);
    Doubles expected(rows * V);
    ref::cross_entropy_backward(expected.data(), logits.data(), targets.data(), rows, V, kIgnoreIndex, 0.5);
    const Floats logitsf = to_floats(logits);
    const Doubles logits_rounded = to_doubles(logitsf);  // the float input, exactly
    const double loss_rounded =
        ref::cross_entropy_forward(logits_rounded.data(), targets.data(), rows, V, kIgnoreIndex, nullptr);
    ref::cross_entropy_backward(expected.data(), logits_rounded.data(), targets.data(), rows, V, kIgnoreIndex, 0.5);
    Floats dlogits(rows * V), row_losses(rows);
    const LossResult result = cross_entropy_forward_backward(dlogits.data(), row_losses.data(), logitsf.data(),
                                                             targets.data(), rows, V, 0.5f);
    EXPECT_EQ(result.count, count);
    EXPECT_NEAR(result.loss, loss_rounded, 1e-5 * std::max(1.0, loss)) << "V=" << V;
    expect_close(dlogits, expected, 1e-9, 2e-5, "dlogits V=" + std::to_string(V));
    // In place: dlogits == logits.
    Floats in_place = logitsf;
    cross_entropy_forward_backward(in_place.data(), row_losses.data(), in_place.data(), targets.data(), rows, V, 0.5f);
    EXPECT_TRUE(bitwise_equal(in_place, dlogits)) << "V=" << V;
  }
}

TEST(QaSpanLoss, HandComputedClampingAndReference) {
  // Two sequences of 3 and 2 tokens; logits (N, 2) = [start, end].
  const std::vector<int64_t> offsets = {0, 3, 5};
  const Floats logits = {0, 1, 1, 0, 2, 0, /* seq 1 */ 0, 0, 0, 3};
  // Seq 0: start 2 (kept), end 7 (clamped to 3 = L: ignored). Seq 1: start -4 (clamped to 0, kept), end 1.
  const std::vector<int32_t> starts = {2, -4}, ends = {7, 1};
  Floats dlogits(10, 9.0f);
  const QaLossResult result =
      qa_span_loss_forward_backward(dlogits.data(), logits.data(), offsets.data(), 2, starts.data(), ends.data(), 1.0f);
  const double start0 = std::log(1 + std::exp(1.0) + std::exp(2.0)) - 2.0;  // starts (0, 1, 2), target 2
  const double start1 = std::log(2.0);                                      // starts (0, 0), target 0
  const double end1 = std::log(1 + std::exp(3.0)) - 3.0;                    // ends (0, 3), target 1
  EXPECT_EQ(result.start_count, 2);
  EXPECT_EQ(result.end_count, 1);
  EXPECT_NEAR(result.start_loss, (start0 + start1) / 2, 1e-6);
  EXPECT_NEAR(result.end_loss, end1, 1e-6);
  EXPECT_NEAR(result.loss, ((start0 + start1) / 2 + end1) / 2, 1e-6);
  // Ignored end of sequence 0: zero gradient; start gradient = 0.5 / 2 * (softmax - onehot).
  EXPECT_EQ(dlogits[1], 0.0f);
  EXPECT_EQ(dlogits[3], 0.0f);
  EXPECT_EQ(dlogits[5], 0.0f);
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  EXPECT_NEAR(dlogits[4], 0.25 * (std::exp(2.0) / z - 1), 1e-7);
  EXPECT_NEAR(dlogits[9], 0.5 * (std::exp(3.0) / (1 + std::exp(3.0)) - 1), 1e-7);

  // Reference: finite differences, then the fast kernel against it.
  Doubles x = to_doubles(logits);
  auto objective = [&] { return ref::qa_span_loss_forward(x.data(), offsets.data(), 2, starts.data(), ends.data()); };
  Doubles dx(10);
  ref::qa_span_loss_backward(dx.data(), x.data(), offsets.data(), 2, starts.data(), ends.data(), 1.0);
  EXPECT_NEAR(objective(), result.loss, 1e-6);
  expect_gradient_matches(dx, numeric_gradient(x, objective), "qa dlogits");
  expect_close(dlogits, dx, 1e-7, 1e-6, "qa fast vs reference");
}

}  // namespace
}  // namespace scalebert::kernels
