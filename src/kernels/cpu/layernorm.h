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

}  // namespace scalebert::kernels
