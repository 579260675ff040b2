// Row quantization and bf16 conversion: AVX-512 paths (AVX512_BF16 for the conversion when the
// compiler targets it) with plain loops under #else and as references.
#include "kernels/cpu/quantize_rows.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {

namespace {

// Rows per parallel chunk: a BERT row is 384..3072 floats, so 16 rows are 24..192 KB of work.
constexpr int64_t kRowGrain = 16;

// 127 / a, or 0 for an all-zero row (every q is then 0 and the scale 0 keeps the product exact).
inline float inverse_scale(float max_abs) { return max_abs > 0.0f ? kInt8Max / max_abs : 0.0f; }

inline int8_t quantize_scalar(float value, float inverse) {
  const float scaled = std::nearbyint(value * inverse);
  return static_cast<int8_t>(std::clamp(scaled, -kInt8Max, kInt8Max));
}

float row_max_abs(const float* x, int64_t n) {
#ifdef __AVX512F__
  __m512 best = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes) best = _mm512_max_ps(best, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 mask = simd::tail_mask(n - i);
    best = _mm512_max_ps(best, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, x + i)));
  }
  // Through memory rather than _mm512_reduce_max_ps: GCC 12 flags that intrinsic's undefined
  // pass-through operand (-Wuninitialized) wherever it is inlined outside a loop.
  alignas(64) float lanes[simd::kLanes];
  _mm512_store_ps(lanes, best);
  return *std::max_element(lanes, lanes + simd::kLanes);
#else
  float best = 0.0f;
  for (int64_t i = 0; i < n; ++i) best = std::max(best, std::fabs(x[i]));
  return best;
#endif
}

// q = clamp(round(x * inverse)) for one row. The AVX-512 path rounds with VCVTPS2DQ under the
// default MXCSR mode (nearest even, as std::nearbyint) and narrows with signed saturation.
void quantize_row(const float* x, int64_t n, float inverse, int8_t* q) {
#ifdef __AVX512F__
  const __m512 factor = _mm512_set1_ps(inverse);
  const __m512 low = _mm512_set1_ps(-kInt8Max), high = _mm512_set1_ps(kInt8Max);
  int64_t i = 0;
  for (; i < n; i += simd::kLanes) {
    const __mmask16 mask = simd::tail_mask(n - i);
    __m512 scaled = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), factor);
    scaled = _mm512_min_ps(_mm512_max_ps(scaled, low), high);
    _mm_mask_storeu_epi8(q + i, mask, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(scaled)));
  }
#else
  for (int64_t i = 0; i < n; ++i) q[i] = quantize_scalar(x[i], inverse);
#endif
}

}  // namespace

void quantize_weight_rows(const float* weight, int64_t rows, int64_t columns, int8_t* quantized, float* scales) {
  quantize_rows_dynamic(weight, columns, rows, columns, quantized, columns, scales);
}

float quantize_row_dynamic(const float* x, int64_t n, int8_t* quantized) {
  const float max_abs = row_max_abs(x, n);
  quantize_row(x, n, inverse_scale(max_abs), quantized);
  return max_abs / kInt8Max;
}

void quantize_rows_dynamic(const float* x, int64_t x_stride, int64_t rows, int64_t columns, int8_t* quantized,
                           int64_t q_stride, float* row_scales) {
  parallel_chunks(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      row_scales[row] = quantize_row_dynamic(x + row * x_stride, columns, quantized + row * q_stride);
    }
  });
}

void quantize_rows_static(const float* x, int64_t x_stride, int64_t rows, int64_t columns, float scale,
                          int8_t* quantized, int64_t q_stride) {
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  parallel_chunks(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      quantize_row(x + row * x_stride, columns, inverse, quantized + row * q_stride);
    }
  });
}

void convert_rows_bf16(const float* x, int64_t x_stride, int64_t rows, int64_t columns, BFloat16* out,
                       int64_t out_stride) {
  parallel_chunks(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float* source = x + row * x_stride;
      BFloat16* target = out + row * out_stride;
      int64_t i = 0;
#ifdef __AVX512BF16__
      // VCVTNE2PS2BF16: 32 floats -> 32 bf16, round to nearest even (denormal inputs become zero,
      // far below anything a BERT activation holds).
      for (; i + 2 * simd::kLanes <= columns; i += 2 * simd::kLanes) {
        const __m512bh packed =
            _mm512_cvtne2ps_pbh(_mm512_loadu_ps(source + i + simd::kLanes), _mm512_loadu_ps(source + i));
        _mm512_storeu_si512(target + i, reinterpret_cast<__m512i>(packed));
      }
#endif
      for (; i < columns; ++i) target[i] = float_to_bf16(source[i]);
    }
  });
}

void convert_rows_bf16_transposed(const float* x, int64_t rows, int64_t columns, BFloat16* out,
                                  BFloat16* out_transposed, float* column_sums) {
  // One task per group of 32 columns, walking down all rows 16 at a time: per step, the group's two
  // 16 x 16 tiles fill 16 whole 64-byte lines of `out` and add 32 bytes to each of the group's 32
  // rows of out_transposed, which are thus written front to back. (Walking 64-row blocks across the
  // columns instead scattered each tile's 16 stores over rows 2 * rows bytes apart and left lines
  // half written: 10x slower at 1,024 x 3,072.) The same walk sums each column in row order, in
  // double: the bias gradient, independent of the thread count.
  constexpr int64_t kTiles = 2;
  constexpr int64_t kGroupColumns = kTiles * 16;
  const int64_t groups = (columns + kGroupColumns - 1) / kGroupColumns;
  auto store = [&](int64_t r, int64_t c, float value) {
    out[r * columns + c] = out_transposed[c * rows + r] = float_to_bf16(value);
  };
  parallel_chunks(groups, 1, [&](int64_t group_begin, int64_t group_end) {
    for (int64_t group = group_begin; group < group_end; ++group) {
      const int64_t c_begin = group * kGroupColumns, c_end = std::min(columns, c_begin + kGroupColumns);
      int64_t c_done = c_begin;  // columns handled by the tiles below
#ifdef __AVX512BF16__
      const int64_t tiles = (c_end - c_begin) / simd::kLanes, full_rows = rows / simd::kLanes * simd::kLanes;
      __m512d sum_low[kTiles], sum_high[kTiles];
      for (int64_t t = 0; t < kTiles; ++t) sum_low[t] = sum_high[t] = _mm512_setzero_pd();
      auto add = [&](int64_t t, __m512 row) {
        sum_low[t] = _mm512_add_pd(sum_low[t], _mm512_cvtps_pd(_mm512_castps512_ps256(row)));
        sum_high[t] = _mm512_add_pd(
            sum_high[t], _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(row), 1))));
      };
      for (int64_t r0 = 0; r0 < full_rows; r0 += simd::kLanes) {
        for (int64_t t = 0; t < tiles; ++t) {
          // 16 x 16 tile: 16 rows of 16 floats rounded into `out`, transposed in registers and
          // rounded into 16 rows of `out_transposed`.
          const int64_t c0 = c_begin + t * simd::kLanes;
          __m512 tile[simd::kLanes];
          for (int64_t i = 0; i < simd::kLanes; ++i) {
            tile[i] = _mm512_loadu_ps(x + (r0 + i) * columns + c0);
            add(t, tile[i]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (r0 + i) * columns + c0),
                                reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(tile[i])));
          }
          simd::transpose16x16(tile);
          for (int64_t i = 0; i < simd::kLanes; ++i) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_transposed + (c0 + i) * rows + r0),
                                reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(tile[i])));
          }
        }
      }
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t c0 = c_begin + t * simd::kLanes;
        for (int64_t r = full_rows; r < rows; ++r) {  // rows past the last full tile
          add(t, _mm512_loadu_ps(x + r * columns + c0));
          for (int64_t c = c0; c < c0 + simd::kLanes; ++c) store(r, c, x[r * columns + c]);
        }
        if (column_sums != nullptr) {
          alignas(64) double sums[simd::kLanes];
          _mm512_store_pd(sums, sum_low[t]);
          _mm512_store_pd(sums + 8, sum_high[t]);
          for (int64_t c = 0; c < simd::kLanes; ++c) column_sums[c0 + c] += static_cast<float>(sums[c]);
        }
      }
      c_done = c_begin + tiles * simd::kLanes;
#endif
      for (int64_t c = c_done; c < c_end; ++c) {  // columns past the last full tile (all without AVX512_BF16)
        double sum = 0.0;
        for (int64_t r = 0; r < rows; ++r) {
          sum += x[r * columns + c];
          store(r, c, x[r * columns + c]);
        }
        if (column_sums != nullptr) column_sums[c] += static_cast<float>(sum);
      }
    }
  });
}

void quantize_rows_dynamic_reference(const float* x, int64_t x_stride, int64_t rows, int64_t columns,
                                     int8_t* quantized, int64_t q_stride, float* row_scales) {
  for (int64_t row = 0; row < rows; ++row) {
    float max_abs = 0.0f;
    for (int64_t i = 0; i < columns; ++i) max_abs = std::max(max_abs, std::fabs(x[row * x_stride + i]));
    row_scales[row] = max_abs / kInt8Max;
    const float inverse = inverse_scale(max_abs);
    for (int64_t i = 0; i < columns; ++i) quantized[row * q_stride + i] = quantize_scalar(x[row * x_stride + i], inverse);
  }
}

void quantize_rows_static_reference(const float* x, int64_t x_stride, int64_t rows, int64_t columns, float scale,
                                    int8_t* quantized, int64_t q_stride) {
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t i = 0; i < columns; ++i) quantized[row * q_stride + i] = quantize_scalar(x[row * x_stride + i], inverse);
  }
}

}  // namespace scalebert::kernels
