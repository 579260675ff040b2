// Backward of layer normalization (layernorm.h), from the per-row mean and rstd the forward saved.
// Gradient convention: dgamma and dbeta are ADDED to (parameter gradients), dinp is OVERWRITTEN.
//
// Forward: xhat = (inp - mean) * rstd;  out = xhat * gamma + beta.
// Backward, per row with g = dout * gamma:
//   dinp   = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
//   dgamma += sum_rows dout * xhat;   dbeta += sum_rows dout
// For add_layernorm_forward, `inp` is the sum in + residual (which the training forward must keep:
// the inference kernel overwrites it), and dinp is the gradient of both in and residual.
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// dinp: (rows, C) OVERWRITTEN; dinp == dout is allowed (in place).
// dgamma, dbeta: (C) ADDED; either may be nullptr (frozen).
// dout, inp: (rows, C); gamma: (C); mean, rstd: (rows) as layernorm_forward wrote them.
// The parameter sums are partitioned by columns and run over rows in order, so they are bitwise
// independent of the thread count; no scratch needed.
void layernorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                        const float* gamma, const float* mean, const float* rstd, int64_t rows, int64_t C);

}  // namespace scalebert::kernels
