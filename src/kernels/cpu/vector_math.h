// Elementwise float math over arrays (exp, erf, tanh) with vectorized polynomial approximations
// accurate to a few ulps, plus the row helpers other kernels share. Out-of-place or in place
// (out == in is allowed); parallel over chunks when the array is large.
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// out[i] = exp(in[i]) for i < n. -inf and the lowest float give 0; NaN stays NaN.
void exp_forward(float* out, const float* in, int64_t n);
// out[i] = erf(in[i]).
void erf_forward(float* out, const float* in, int64_t n);
// out[i] = tanh(in[i]).
void tanh_forward(float* out, const float* in, int64_t n);

}  // namespace scalebert::kernels
