// Row-wise softmax with an optional additive mask, as torch.softmax(x + mask, dim=-1).
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// x: (rows, cols), overwritten with softmax(x[r] + mask) per row; mask: (cols) additive (0 keeps,
// a large negative value such as the lowest float drops) or nullptr. The max is subtracted first,
// so any finite inputs are safe. A row whose keys are all masked with the lowest float becomes
// uniform, as in PyTorch.
void softmax_rows(float* x, int64_t rows, int64_t cols, const float* mask = nullptr);

}  // namespace scalebert::kernels
