// Layer normalization over the last dimension, as torch.nn.LayerNorm: per row
// mean = sum(x)/C, var = sum((x - mean)^2)/C (biased), out = (x - mean) / sqrt(var + eps) * gamma + beta.
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// out, in: (rows, C); gamma, beta: (C). out == in is allowed.
// mean, rstd: (rows) or nullptr; when given they receive each row's mean and 1/sqrt(var + eps),
// which the backward pass needs.
void layernorm_forward(float* out, const float* in, const float* gamma, const float* beta, int64_t rows,
                       int64_t C, float eps, float* mean = nullptr, float* rstd = nullptr);

// out = LayerNorm(in + residual), the post-LN BERT block ending. out, in, residual: (rows, C);
// out may be the same buffer as in or residual (in place). mean, rstd as above.
void add_layernorm_forward(float* out, const float* in, const float* residual, const float* gamma,
                           const float* beta, int64_t rows, int64_t C, float eps, float* mean = nullptr,
                           float* rstd = nullptr);

// One row of LayerNorm in place, for epilogues that produce the row themselves (the int8 Linear
// with its residual sum): x (C) becomes (x - mean) * rstd * gamma + beta, bit for bit as
// layernorm_forward computes it. When `quantized` is given, the normalized row is also quantized
// to symmetric int8 while it is still in L1 (as quantize_rows_dynamic would, bit for bit) and its
// scale max |out| / 127 is returned; otherwise returns 0. Serial.
float layernorm_quantize_row(float* x, const float* gamma, const float* beta, int64_t C, float eps,
                             int8_t* quantized);

}  // namespace scalebert::kernels
