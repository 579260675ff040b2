// Backward of the row-wise softmax (softmax.h) from its output.
// Gradient convention: dinp is OVERWRITTEN (no parameters).
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// Forward: y = softmax(x + mask) per row  =>  dinp = y * (dout - sum_c(dout * y)) per row
// (the additive mask is a constant: masked columns have y == 0 and get 0).
// dinp: (rows, cols) OVERWRITTEN, dinp == dout allowed; out: the forward output y, (rows, cols);
// dout: (rows, cols). Rows are independent, so results do not depend on the thread count.
void softmax_backward(float* dinp, const float* out, const float* dout, int64_t rows, int64_t cols);

}  // namespace scalebert::kernels
