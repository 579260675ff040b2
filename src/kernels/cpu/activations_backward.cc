// Activation backward kernels: AVX-512 on the shared exp/erf/tanh approximations (simd_avx512.h),
// std:: math otherwise; parallel over fixed chunks.
#include "kernels/cpu/activations_backward.h"

#include <cmath>

#include "core/error.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kGrain = 4096;
constexpr float kSqrtHalf = 0.70710678118654752f;        // 1/sqrt(2)
constexpr float kInvSqrtTwoPi = 0.39894228040143268f;    // 1/sqrt(2 pi)
constexpr float kSqrtTwoOverPi = 0.79788456080286536f;   // sqrt(2/pi)
constexpr float kGeluCubic = 0.044715f;

void check_n(int64_t n, const char* who) { check(n >= 0, who, ": n must be >= 0, got ", n); }

#ifdef __AVX512F__
// dinp[i] = dout[i] * derivative(saved[i]) over vectors, masked tail.
template <typename Derivative>
void map_backward(float* dinp, const float* saved, const float* dout, int64_t n, Derivative derivative) {
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + simd::kLanes <= end; i += simd::kLanes) {
      _mm512_storeu_ps(dinp + i, _mm512_mul_ps(_mm512_loadu_ps(dout + i), derivative(_mm512_loadu_ps(saved + i))));
    }
    if (i < end) {
      const __mmask16 mask = simd::tail_mask(end - i);
      const __m512 d = derivative(_mm512_maskz_loadu_ps(mask, saved + i));
      _mm512_mask_storeu_ps(dinp + i, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, dout + i), d));
    }
  });
}

inline __m512 gelu_erf_derivative(__m512 x) {
  const __m512 phi_cdf = _mm512_fmadd_ps(_mm512_set1_ps(0.5f), simd::erf_ps(_mm512_mul_ps(x, _mm512_set1_ps(kSqrtHalf))),
                                         _mm512_set1_ps(0.5f));
  const __m512 density =
      _mm512_mul_ps(_mm512_set1_ps(kInvSqrtTwoPi), simd::exp_ps(_mm512_mul_ps(_mm512_set1_ps(-0.5f), _mm512_mul_ps(x, x))));
  return _mm512_fmadd_ps(x, density, phi_cdf);
}

inline __m512 gelu_tanh_derivative(__m512 x) {
  const __m512 x2 = _mm512_mul_ps(x, x);
  const __m512 u = _mm512_mul_ps(_mm512_set1_ps(kSqrtTwoOverPi), _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(kGeluCubic), x2), x, x));
  const __m512 t = simd::tanh_ps(u);
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 one_minus_t2 = _mm512_fnmadd_ps(t, t, _mm512_set1_ps(1.0f));
  const __m512 du = _mm512_mul_ps(_mm512_set1_ps(kSqrtTwoOverPi),
                                  _mm512_fmadd_ps(_mm512_set1_ps(3.0f * kGeluCubic), x2, _mm512_set1_ps(1.0f)));
  // 0.5 (1 + t) + 0.5 x (1 - t^2) du
  return _mm512_fmadd_ps(_mm512_mul_ps(half, x), _mm512_mul_ps(one_minus_t2, du), _mm512_fmadd_ps(half, t, half));
}
#else
template <typename Derivative>
void map_backward(float* dinp, const float* saved, const float* dout, int64_t n, Derivative derivative) {
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dinp[i] = dout[i] * derivative(saved[i]);
  });
}

inline float gelu_erf_derivative(float x) {
  return 0.5f * (1.0f + std::erf(x * kSqrtHalf)) + x * kInvSqrtTwoPi * std::exp(-0.5f * x * x);
}

inline float gelu_tanh_derivative(float x) {
  const float t = std::tanh(kSqrtTwoOverPi * (x + kGeluCubic * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrtTwoOverPi * (1.0f + 3.0f * kGeluCubic * x * x);
}
#endif

}  // namespace

#ifdef __AVX512F__
void gelu_erf_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  check_n(n, "gelu_erf_backward");
  map_backward(dinp, inp, dout, n, [](__m512 x) { return gelu_erf_derivative(x); });
}
void gelu_tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  check_n(n, "gelu_tanh_backward");
  map_backward(dinp, inp, dout, n, [](__m512 x) { return gelu_tanh_derivative(x); });
}
void relu_backward(float* dinp, const float* saved, const float* dout, int64_t n) {
  check_n(n, "relu_backward");
  map_backward(dinp, saved, dout, n, [](__m512 x) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NLE_UQ), _mm512_set1_ps(1.0f));
  });
}
void tanh_backward(float* dinp, const float* out, const float* dout, int64_t n) {
  check_n(n, "tanh_backward");
  map_backward(dinp, out, dout, n, [](__m512 y) { return _mm512_fnmadd_ps(y, y, _mm512_set1_ps(1.0f)); });
}
#else
void gelu_erf_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  check_n(n, "gelu_erf_backward");
  map_backward(dinp, inp, dout, n, [](float x) { return gelu_erf_derivative(x); });
}
void gelu_tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  check_n(n, "gelu_tanh_backward");
  map_backward(dinp, inp, dout, n, [](float x) { return gelu_tanh_derivative(x); });
}
void relu_backward(float* dinp, const float* saved, const float* dout, int64_t n) {
  check_n(n, "relu_backward");
  map_backward(dinp, saved, dout, n, [](float x) { return !(x <= 0.0f) ? 1.0f : 0.0f; });
}
void tanh_backward(float* dinp, const float* out, const float* dout, int64_t n) {
  check_n(n, "tanh_backward");
  map_backward(dinp, out, dout, n, [](float y) { return 1.0f - y * y; });
}
#endif

void activation_backward(Activation activation, float* dinp, const float* saved, const float* dout, int64_t n) {
  switch (activation) {
    case Activation::kGeluErf: return gelu_erf_backward(dinp, saved, dout, n);
    case Activation::kGeluTanh: return gelu_tanh_backward(dinp, saved, dout, n);
    case Activation::kRelu: return relu_backward(dinp, saved, dout, n);
    case Activation::kTanh: return tanh_backward(dinp, saved, dout, n);
  }
  throw InvalidArgument(str_cat("activation_backward: bad activation value ", static_cast<int>(activation)));
}

}  // namespace scalebert::kernels
