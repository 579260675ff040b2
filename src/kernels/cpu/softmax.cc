// Row-wise softmax: max, exp(x - max) with its sum, scale by 1/sum.
#include "kernels/cpu/softmax.h"

#include <cmath>

#include "core/error.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {

void softmax_rows(float* x, int64_t rows, int64_t cols, const float* mask) {
  check(rows >= 0 && cols > 0, "softmax_rows: need rows >= 0 and cols > 0, got rows=", rows, " cols=", cols);
  const int64_t row_grain = cols >= 4096 ? 1 : 4096 / cols;
  parallel_chunks(rows, row_grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* y = x + row * cols;  // (cols)
      if (mask != nullptr) {
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) y[c] += mask[c];
      }
#ifdef __AVX512F__
      const float max = simd::row_max(y, cols);
      const float sum = simd::exp_shift_sum(y, cols, max);
      simd::scale_row(y, cols, 1.0f / sum);
#else
      float max = y[0];
      for (int64_t c = 1; c < cols; ++c) max = y[c] > max ? y[c] : max;
      double sum = 0.0;  // a serial float sum over thousands of columns drifts by ~1e-6
      for (int64_t c = 0; c < cols; ++c) {
        y[c] = std::exp(y[c] - max);
        sum += y[c];
      }
      const float inverse = static_cast<float>(1.0 / sum);
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) y[c] *= inverse;
#endif
    }
  });
}

}  // namespace scalebert::kernels
