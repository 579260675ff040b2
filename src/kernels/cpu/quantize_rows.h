// Row-wise conversions feeding the low-precision matmuls: symmetric int8 quantization of weights
// (per output channel) and of activations (per token row, dynamic, or with one calibrated scale),
// and f32 -> bf16 conversion of activation rows.
//
// Symmetric int8: q = clamp(round_half_even(x * (127 / a)), -127, 127) with a = max |x| over the
// row, so x ~= q * s with s = a / 127. -128 is never produced, which keeps the quantization
// symmetric (and -q always representable). Rounding multiplies by the reciprocal 127 / a in float
// in both the fast and the reference kernels, so the two agree bit for bit; an all-zero row gets
// scale 0 and q = 0.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace scalebert::kernels {

inline constexpr float kInt8Max = 127.0f;

// Weights: w (N, K) row-major -> q (N, K), scales (N) with w[n, k] ~= q[n, k] * scales[n].
void quantize_weight_rows(const float* weight, int64_t rows, int64_t columns, int8_t* quantized, float* scales);

// Activations, dynamic: each of `rows` rows of x (width K, row stride x_stride floats) gets its own
// scale; q has row stride q_stride. row_scales: (rows).
void quantize_rows_dynamic(const float* x, int64_t x_stride, int64_t rows, int64_t columns, int8_t* quantized,
                           int64_t q_stride, float* row_scales);

// Activations, static: one calibrated scale for every row; values beyond 127 * scale saturate.
void quantize_rows_static(const float* x, int64_t x_stride, int64_t rows, int64_t columns, float scale,
                          int8_t* quantized, int64_t q_stride);

// One row, dynamic, for kernels that quantize rows they just produced while the row is in cache
// (fused epilogues, layer norm): q (n) gets x (n) quantized with its own scale, which is returned
// (max |x| / 127). Bit for bit what quantize_rows_dynamic does to that row. Serial.
float quantize_row_dynamic(const float* x, int64_t n, int8_t* quantized);

// f32 rows -> bf16 rows (round to nearest even), x row stride x_stride, out row stride out_stride.
void convert_rows_bf16(const float* x, int64_t x_stride, int64_t rows, int64_t columns, BFloat16* out,
                       int64_t out_stride);

// The same for a dense (rows, columns) matrix, writing both the bf16 rows (out: (rows, columns)) and
// their transpose (out_transposed: (columns, rows)) in one pass: mixed-precision training's output
// gradients feed dx = dy W (rows) and dW = dy^T x, which oneDNN runs ~8% faster on a dense dy^T than
// on dy read with swapped strides. Both equal float_to_bf16 of each element.
// column_sums (columns), when not null, gets the column sums of the f32 x ADDED (the bias gradient,
// from the same pass), each summed in row order in double: independent of the thread count.
void convert_rows_bf16_transposed(const float* x, int64_t rows, int64_t columns, BFloat16* out,
                                  BFloat16* out_transposed, float* column_sums = nullptr);

// Scalar references of the three activation conversions (plain loops, std::nearbyint).
void quantize_rows_dynamic_reference(const float* x, int64_t x_stride, int64_t rows, int64_t columns,
                                     int8_t* quantized, int64_t q_stride, float* row_scales);
void quantize_rows_static_reference(const float* x, int64_t x_stride, int64_t rows, int64_t columns, float scale,
                                    int8_t* quantized, int64_t q_stride);

}  // namespace scalebert::kernels
