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

namespace {
constexpr int64_t kTransposeBlockRows = 64;
}

int64_t bf16_transpose_partial_floats(int64_t rows, int64_t columns) {
  return (rows + kTransposeBlockRows - 1) / kTransposeBlockRows * columns;
}

void convert_rows_bf16_transposed(const float* x, int64_t rows, int64_t columns, BFloat16* out,
                                  BFloat16* out_transposed, float* column_sums, float* partial_sums) {
  check(column_sums == nullptr || partial_sums != nullptr,
        "convert_rows_bf16_transposed: column sums need the partial-sum scratch");
  // Blocks of 64 rows: each thread writes whole rows of `out` and 64-element (128-byte) runs of each
  // row of `out_transposed`, so no two threads share a cache line of either. Inside a block the
  // column tiles are the outer loop, so each 128-byte run is written by four consecutive stores
  // (rows of out_transposed lie 2 * rows bytes apart: a multiple of 4 KiB at 2,048 rows, where
  // scattering the stores over time made them fight over the same cache sets).
  const int64_t blocks = (rows + kTransposeBlockRows - 1) / kTransposeBlockRows;
  auto store = [&](int64_t r, int64_t c, float value) {
    out[r * columns + c] = out_transposed[c * rows + r] = float_to_bf16(value);
  };
  parallel_chunks(blocks, 1, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t r_begin = block * kTransposeBlockRows, r_end = std::min(rows, r_begin + kTransposeBlockRows);
      // The block's column sums, each in row order (the same order on both paths below).
      float* partial = column_sums != nullptr ? partial_sums + block * columns : nullptr;
      int64_t c0 = 0;
#ifdef __AVX512BF16__
      const int64_t full_rows_end = r_begin + (r_end - r_begin) / simd::kLanes * simd::kLanes;
      for (; c0 + simd::kLanes <= columns; c0 += simd::kLanes) {
        __m512 sum = _mm512_setzero_ps();
        for (int64_t r0 = r_begin; r0 < full_rows_end; r0 += simd::kLanes) {
          // 16 x 16 tile: 16 rows of 16 floats rounded into `out`, transposed in registers and
          // rounded into 16 columns of `out_transposed`.
          __m512 tile[simd::kLanes];
          for (int64_t i = 0; i < simd::kLanes; ++i) {
            tile[i] = _mm512_loadu_ps(x + (r0 + i) * columns + c0);
            sum = _mm512_add_ps(sum, tile[i]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (r0 + i) * columns + c0),
                                reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(tile[i])));
          }
          simd::transpose16x16(tile);
          for (int64_t i = 0; i < simd::kLanes; ++i) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_transposed + (c0 + i) * rows + r0),
                                reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(tile[i])));
          }
        }
        for (int64_t r = full_rows_end; r < r_end; ++r) {  // rows past the block's last full tile
          const __m512 row = _mm512_loadu_ps(x + r * columns + c0);
          sum = _mm512_add_ps(sum, row);
          for (int64_t c = c0; c < c0 + simd::kLanes; ++c) store(r, c, x[r * columns + c]);
        }
        if (partial != nullptr) _mm512_storeu_ps(partial + c0, sum);
      }
#endif
      for (int64_t c = c0; c < columns; ++c) {  // columns past the last full tile (every column without AVX512_BF16)
        float sum = 0.0f;
        for (int64_t r = r_begin; r < r_end; ++r) {
          sum += x[r * columns + c];
          store(r, c, x[r * columns + c]);
        }
        if (partial != nullptr) partial[c] = sum;
      }
    }
  });
  if (column_sums == nullptr) return;
  // The blocks' partial sums in block order, in double: the same bits for any thread count.
  for (int64_t c = 0; c < columns; ++c) {
    double sum = 0.0;
    for (int64_t block = 0; block < blocks; ++block) sum += partial_sums[block * columns + c];
    column_sums[c] += static_cast<float>(sum);
  }
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
