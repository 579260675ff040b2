// AVX-512 building blocks shared by the CPU kernels: vectorized exp, erf and tanh accurate to a few
// float ulps, horizontal reductions and tail masks. Internal header: include it only from .cc files
// of src/kernels/cpu (they are compiled with -march=native); everything here exists only when the
// compiler targets AVX-512F, and callers keep a plain C++ path under `#else`.
#pragma once

#ifdef __AVX512F__

// GCC 12 reports a false -Wmaybe-uninitialized inside the intrinsics that take
// _mm512_undefined_ps() as their pass-through operand (max, min, abs, ...); the location of that
// warning is this header, so silencing it here leaves our own code checked.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstdint>

namespace scalebert::kernels::simd {

inline constexpr int64_t kLanes = 16;  // floats per __m512

// Mask selecting the first `count` lanes (count in [0, 16]).
inline __mmask16 tail_mask(int64_t count) {
  return count >= kLanes ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << static_cast<unsigned>(count)) - 1u);
}

// Clamps x to [lo, hi] and lets NaN through: the VMAXPS/VMINPS forms return the *second* operand
// when either is NaN, so x goes second.
inline __m512 clamp_keep_nan(__m512 x, float lo, float hi) {
  return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), x));
}

// exp(x), Cephes expf scheme: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
// reduction), exp(r) by a degree-6 polynomial (1-2 ulp), 2^n applied by VSCALEFPS, which also
// produces the right denormals and zero below -87.3. Inputs are clamped to [-104, 88.72] so that
// -inf and the lowest float (Hugging Face's mask value) give 0, and +large gives +inf.
inline __m512 exp_ps(__m512 x) {
  x = clamp_keep_nan(x, -104.0f, 88.7228394f);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// erf(x) as x * P(x^2) / Q(x^2), the rational minimax fit used by Eigen and XLA for float, on
// [-4, 4]; beyond that erf is +-1 in float. Relative error a few ulp over the whole range
// (checked against std::erf in tests/test_kernels.cc).
inline __m512 erf_ps(__m512 x_in) {
  const __m512 x = clamp_keep_nan(x_in, -4.0f, 4.0f);
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.77068142495902e-08f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.10102402082508e-06f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-5.69250639462346e-05f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-7.34990630326855e-04f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.95459980854025e-03f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.60960333262415e-02f));
  p = _mm512_mul_ps(p, x);
  __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-2.13374055278905e-04f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.68282697438203e-03f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-7.37332916720468e-03f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.42647390514189e-02f));
  return _mm512_div_ps(p, q);
}

// tanh(x). For |x| >= 0.55: tanh|x| = 1 - 2 / (exp(2|x|) + 1), where the subtraction loses at most
// one bit (the result is >= 0.5). For |x| < 0.55 that form cancels badly, so the odd Taylor series
// up to x^15 is used instead: its ratio of successive terms is about (2x/pi)^2 <= 0.123, so the
// truncation error at 0.55 is below 5e-8 relative. exp overflows to +inf for large |x|, giving 1.
inline __m512 tanh_ps(__m512 x) {
  const __m512 abs_x = _mm512_abs_ps(x);
  const __m512 e = exp_ps(_mm512_add_ps(abs_x, abs_x));
  const __m512 large = _mm512_sub_ps(
      _mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(929569.0f / 638512875.0f);  // x^15 coefficient, then down to x^3
  p = _mm512_fmsub_ps(p, x2, _mm512_set1_ps(21844.0f / 6081075.0f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1382.0f / 155925.0f));
  p = _mm512_fmsub_ps(p, x2, _mm512_set1_ps(62.0f / 2835.0f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(17.0f / 315.0f));
  p = _mm512_fmsub_ps(p, x2, _mm512_set1_ps(2.0f / 15.0f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.0f / 3.0f));
  // series = x - x^3 p(x^2) with the alternating signs folded into the fmsub/fmadd chain above.
  const __m512 small = _mm512_fnmadd_ps(_mm512_mul_ps(p, x2), x, x);
  const __mmask16 use_small = _mm512_cmp_ps_mask(abs_x, _mm512_set1_ps(0.55f), _CMP_LT_OQ);
  // Copy x's sign onto the large-|x| branch (bit 31), then pick per lane.
  const __m512 sign = _mm512_and_ps(x, _mm512_castsi512_ps(_mm512_set1_epi32(INT32_MIN)));
  const __m512 large_signed = _mm512_or_ps(large, sign);
  return _mm512_mask_blend_ps(use_small, large_signed, small);
}

inline float reduce_add(__m512 v) { return _mm512_reduce_add_ps(v); }
inline float reduce_max(__m512 v) { return _mm512_reduce_max_ps(v); }

// max over x: (n), n >= 1. Tail lanes are filled with -inf so they never win.
inline float row_max(const float* x, int64_t n) {
  __m512 best = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) best = _mm512_max_ps(best, _mm512_loadu_ps(x + i));
  if (i < n) best = _mm512_max_ps(best, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i));
  return reduce_max(best);
}

// x: (n) <- exp(x - shift); returns the sum of the new values (the softmax denominator).
inline float exp_shift_sum(float* x, int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    const __mmask16 mask = tail_mask(n - i);
    const __m512 e = _mm512_maskz_mov_ps(mask, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), s)));
    _mm512_mask_storeu_ps(x + i, mask, e);
    sum = _mm512_add_ps(sum, e);
  }
  return reduce_add(sum);
}

// x: (n) *= scale.
inline void scale_row(float* x, int64_t n, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), s));
  if (i < n) {
    const __mmask16 mask = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), s));
  }
}

// In-register transpose of a 16 x 16 float block: r[i] holds row i on entry, column i on exit.
// Three stages: interleave pairs of rows (unpack), then pairs of pairs inside 128-bit lanes
// (shuffle_ps), then 128-bit lanes across registers (shuffle_f32x4 twice).
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
}

// dst: (columns, ldl) <- src^T * scale, where src is (rows, columns) with row stride src_stride;
// dst's columns rows..ldl-1 are zero. ldl must be a multiple of 16 and >= rows. 16 x 16 blocks go
// through transpose16x16, so each src row is read as whole 64-byte pieces (reading a column at a
// time touches one cache line per element when rows lie far apart, as Q/K/V rows do: 3C floats).
// Rows past `rows` are never read (they may lie past the end of src).
inline void load_transposed(float* dst, int64_t ldl, const float* src, int64_t src_stride, int64_t rows,
                            int64_t columns, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t c0 = 0; c0 < columns; c0 += kLanes) {
    const int64_t width = columns - c0 < kLanes ? columns - c0 : kLanes;
    const __mmask16 mask = tail_mask(width);
    for (int64_t j0 = 0; j0 < ldl; j0 += kLanes) {
      __m512 block[16];
      for (int64_t j = 0; j < kLanes; ++j) {
        block[j] = j0 + j < rows ? _mm512_maskz_loadu_ps(mask, src + (j0 + j) * src_stride + c0) : _mm512_setzero_ps();
      }
      transpose16x16(block);
      for (int64_t c = 0; c < width; ++c) _mm512_storeu_ps(dst + (c0 + c) * ldl + j0, _mm512_mul_ps(block[c], s));
    }
  }
}

}  // namespace scalebert::kernels::simd

#endif  // __AVX512F__
