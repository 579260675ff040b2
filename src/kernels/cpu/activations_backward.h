// Backward of the elementwise activations (activations.h): dinp = dout * f'(x).
// Gradient convention: dinp is OVERWRITTEN (activations have no parameters). dinp == dout is
// allowed (in place); every kernel is elementwise, so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "kernels/cpu/activations.h"

namespace scalebert::kernels {

// Forward: y = x * Phi(x), Phi(x) = 0.5 (1 + erf(x / sqrt 2))
//   => dinp = dout * (Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi)).      inp: the forward input x, (n)
void gelu_erf_backward(float* dinp, const float* inp, const float* dout, int64_t n);

// Forward: y = 0.5 x (1 + t), t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3)
//   => dinp = dout * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).   inp: x, (n)
void gelu_tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n);

// Forward: y = max(0, x) => dinp = 0 where x <= 0, else dout (0 at x == 0; NaN x passes dout, as
// PyTorch's threshold_backward does).
// saved: the forward input x or its output y (x > 0 exactly where y > 0), (n).
void relu_backward(float* dinp, const float* saved, const float* dout, int64_t n);

// Forward: y = tanh(x) => dinp = dout * (1 - y^2). out: the forward OUTPUT y, (n).
void tanh_backward(float* dinp, const float* out, const float* dout, int64_t n);

// Dispatch by activation; `saved` is the forward input for the GELUs and ReLU and the forward output
// for tanh, as the functions above take.
void activation_backward(Activation activation, float* dinp, const float* saved, const float* dout, int64_t n);

}  // namespace scalebert::kernels
