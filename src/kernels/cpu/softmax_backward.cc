// Softmax backward: one dot product per row (in double, so long rows keep float accuracy), then one
// elementwise pass.
#include "kernels/cpu/softmax_backward.h"

#include "core/error.h"
#include "kernels/cpu/parallel.h"

namespace scalebert::kernels {

void softmax_backward(float* dinp, const float* out, const float* dout, int64_t rows, int64_t cols) {
  check(rows >= 0 && cols > 0, "softmax_backward: need rows >= 0 and cols > 0, got rows=", rows, " cols=", cols);
  const int64_t row_grain = cols >= 4096 ? 1 : 4096 / cols;
  parallel_chunks(rows, row_grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* y = out + r * cols;   // (cols)
      const float* dy = dout + r * cols; // (cols)
      float* dx = dinp + r * cols;       // (cols), may be dy
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < cols; ++c) dot += static_cast<double>(y[c]) * dy[c];
      const float row_dot = static_cast<float>(dot);
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) dx[c] = y[c] * (dy[c] - row_dot);
    }
  });
}

}  // namespace scalebert::kernels
