// Elementwise activations: AVX-512 kernels on the shared erf/tanh approximations, std:: math
// otherwise.
#include "kernels/cpu/activations.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/quantize_rows.h"
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/vector_math.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kGrain = 4096;  // floats per parallel chunk (16 KiB)
constexpr float kSqrtHalf = 0.70710678118654752f;         // 1/sqrt(2)
constexpr float kSqrtTwoOverPi = 0.79788456080286536f;    // sqrt(2/pi)
constexpr float kGeluCubic = 0.044715f;

#ifdef __AVX512F__
// out[i] = function(in[i]); out == in is allowed.
template <typename Function>
void map(float* out, const float* in, int64_t n, Function function) {
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + simd::kLanes <= end; i += simd::kLanes) _mm512_storeu_ps(out + i, function(_mm512_loadu_ps(in + i)));
    if (i < end) {
      const __mmask16 mask = simd::tail_mask(end - i);
      _mm512_mask_storeu_ps(out + i, mask, function(_mm512_maskz_loadu_ps(mask, in + i)));
    }
  });
}

inline __m512 gelu_erf_ps(__m512 x) {
  const __m512 half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
  const __m512 e = simd::erf_ps(_mm512_mul_ps(x, _mm512_set1_ps(kSqrtHalf)));
  return _mm512_fmadd_ps(half_x, e, half_x);  // 0.5x (1 + erf)
}

// 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)), so gelu_tanh(x) = x / (1 + exp(-2u)) with
// u = sqrt(2/pi) (x + 0.044715 x^3): one exp and one division instead of a full tanh, and no
// 1 + tanh cancellation for x << 0 (exp overflows to inf there and the result goes to -0).
inline __m512 gelu_tanh_ps(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 minus_two_u =
      _mm512_mul_ps(_mm512_set1_ps(-2.0f * kSqrtTwoOverPi), _mm512_fmadd_ps(_mm512_set1_ps(kGeluCubic), x3, x));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), simd::exp_ps(minus_two_u)));
}
#else
// out[i] = function(in[i]); out == in is allowed.
template <typename Function>
void map(float* out, const float* in, int64_t n, Function function) {
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = function(in[i]);
  });
}
#endif

}  // namespace

Activation activation_from_name(std::string_view name) {
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::kGeluTanh;
  if (name == "relu") return Activation::kRelu;
  if (name == "tanh") return Activation::kTanh;
  throw Unsupported(str_cat("activation '", name,
                            "' is not supported (known: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, tanh)"));
}

const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::kGeluErf: return "gelu";
    case Activation::kGeluTanh: return "gelu_new";
    case Activation::kRelu: return "relu";
    case Activation::kTanh: return "tanh";
  }
  return "unknown";
}

namespace {

#ifdef __AVX512F__
void gelu_erf_map(float* out, const float* in, int64_t n) {
  map(out, in, n, [](__m512 v) { return gelu_erf_ps(v); });
}
void gelu_tanh_map(float* out, const float* in, int64_t n) {
  map(out, in, n, [](__m512 v) { return gelu_tanh_ps(v); });
}
void relu_map(float* out, const float* in, int64_t n) {
  map(out, in, n, [](__m512 v) { return _mm512_max_ps(_mm512_setzero_ps(), v); });  // NaN second: kept
}
#else
void gelu_erf_map(float* out, const float* in, int64_t n) {
  map(out, in, n, [](float v) { return 0.5f * v * (1.0f + std::erf(v * kSqrtHalf)); });
}
void gelu_tanh_map(float* out, const float* in, int64_t n) {
  map(out, in, n, [](float v) { return 0.5f * v * (1.0f + std::tanh(kSqrtTwoOverPi * (v + kGeluCubic * v * v * v))); });
}
void relu_map(float* out, const float* in, int64_t n) {
  map(out, in, n, [](float v) { return v < 0.0f ? 0.0f : v; });
}
#endif

}  // namespace

void gelu_erf_forward(float* x, int64_t n) { gelu_erf_map(x, x, n); }
void gelu_tanh_forward(float* x, int64_t n) { gelu_tanh_map(x, x, n); }
void relu_forward(float* x, int64_t n) { relu_map(x, x, n); }
void tanh_forward(float* x, int64_t n) { tanh_forward(x, x, n); }

void activation_forward(Activation activation, float* out, const float* in, int64_t n) {
  switch (activation) {
    case Activation::kGeluErf: return gelu_erf_map(out, in, n);
    case Activation::kGeluTanh: return gelu_tanh_map(out, in, n);
    case Activation::kRelu: return relu_map(out, in, n);
    case Activation::kTanh: return tanh_forward(out, in, n);
  }
  throw InvalidArgument(str_cat("activation_forward: bad activation value ", static_cast<int>(activation)));
}

void activation_forward(Activation activation, float* x, int64_t n) { activation_forward(activation, x, x, n); }

void activation_forward_bf16(Activation activation, BFloat16* out, const float* in, int64_t n) {
  // Chunk by chunk through an L1-resident float buffer: inside the team's chunk the f32 kernels run
  // serially (parallel_chunks does not nest), so the values go from registers to L1 and back.
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    float values[kGrain];
    for (int64_t i = begin; i < end; i += kGrain) {
      const int64_t count = std::min(kGrain, end - i);
      activation_forward(activation, values, in + i, count);
      convert_rows_bf16(values, count, 1, count, out + i, count);
    }
  });
}

void add_bias_rows(float* out, const float* bias, int64_t rows, int64_t C) {
  check(rows >= 0 && C > 0, "add_bias_rows: need rows >= 0 and C > 0, got rows=", rows, " C=", C);
  // Rows are independent and the loop body is a plain vectorizable add; chunk by ~kGrain floats.
  const int64_t row_grain = C >= kGrain ? 1 : kGrain / C;
  parallel_chunks(rows, row_grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* y = out + row * C;  // (C)
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) y[c] += bias[c];
    }
  });
}

}  // namespace scalebert::kernels
