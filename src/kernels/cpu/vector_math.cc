// Elementwise exp, erf and tanh over arrays: AVX-512 polynomial kernels, std:: functions otherwise.
#include "kernels/cpu/vector_math.h"

#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {
namespace {

// 16 KiB of floats per chunk: large enough to amortize the fork, small enough to balance 2+ cores.
constexpr int64_t kGrain = 4096;

#ifdef __AVX512F__
// `function` maps one vector; a lambda (not a function-pointer template argument, which would drop
// __m512's vector attributes).
template <typename Function>
void map_avx512(float* out, const float* in, int64_t n, Function function) {
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + simd::kLanes <= end; i += simd::kLanes) {
      _mm512_storeu_ps(out + i, function(_mm512_loadu_ps(in + i)));
    }
    if (i < end) {
      const __mmask16 mask = simd::tail_mask(end - i);
      _mm512_mask_storeu_ps(out + i, mask, function(_mm512_maskz_loadu_ps(mask, in + i)));
    }
  });
}
#else
template <float (*Function)(float)>
void map_plain(float* out, const float* in, int64_t n) {
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = Function(in[i]);
  });
}
float std_exp(float x) { return std::exp(x); }
float std_erf(float x) { return std::erf(x); }
float std_tanh(float x) { return std::tanh(x); }
#endif

}  // namespace

#ifdef __AVX512F__
void exp_forward(float* out, const float* in, int64_t n) {
  map_avx512(out, in, n, [](__m512 x) { return simd::exp_ps(x); });
}
void erf_forward(float* out, const float* in, int64_t n) {
  map_avx512(out, in, n, [](__m512 x) { return simd::erf_ps(x); });
}
void tanh_forward(float* out, const float* in, int64_t n) {
  map_avx512(out, in, n, [](__m512 x) { return simd::tanh_ps(x); });
}
#else
void exp_forward(float* out, const float* in, int64_t n) { map_plain<std_exp>(out, in, n); }
void erf_forward(float* out, const float* in, int64_t n) { map_plain<std_erf>(out, in, n); }
void tanh_forward(float* out, const float* in, int64_t n) { map_plain<std_tanh>(out, in, n); }
#endif

}  // namespace scalebert::kernels
