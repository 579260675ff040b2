// Layer-norm backward: a column-partitioned pass for dgamma/dbeta (deterministic), then a
// row-parallel pass for dinp (two row reductions, then one write; in place is safe because each row
// is read completely before it is written).
#include "kernels/cpu/layernorm_backward.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cpu/parallel.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kColumnBlock = 64;
constexpr int64_t kRowGrain = 16;

}  // namespace

void layernorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                        const float* gamma, const float* mean, const float* rstd, int64_t rows, int64_t C) {
  check(rows >= 0 && C > 0, "layernorm_backward: need rows >= 0 and C > 0, got rows=", rows, " C=", C);
  check(dinp != nullptr && dout != nullptr && inp != nullptr && gamma != nullptr && mean != nullptr && rstd != nullptr,
        "layernorm_backward: null buffer (dinp, dout, inp, gamma, mean and rstd are required)");
  check(static_cast<const float*>(dinp) != inp, "layernorm_backward: dinp must not alias inp");

  // Parameter gradients first (they read dout, which dinp may overwrite).
  if (dgamma != nullptr || dbeta != nullptr) {
    const int64_t blocks = (C + kColumnBlock - 1) / kColumnBlock;
    const int64_t grain = rows * kColumnBlock >= 16384 ? 1 : blocks;
    parallel_chunks(blocks, grain, [&](int64_t block_begin, int64_t block_end) {
      for (int64_t block = block_begin; block < block_end; ++block) {
        const int64_t c0 = block * kColumnBlock, width = std::min(kColumnBlock, C - c0);
        double gamma_sum[kColumnBlock] = {};  // sum dout * xhat
        double beta_sum[kColumnBlock] = {};   // sum dout
        for (int64_t r = 0; r < rows; ++r) {
          const float* d = dout + r * C + c0;
          const float* x = inp + r * C + c0;
          const float m = mean[r], s = rstd[r];
#pragma omp simd
          for (int64_t c = 0; c < width; ++c) {
            gamma_sum[c] += static_cast<double>(d[c]) * ((x[c] - m) * s);
            beta_sum[c] += d[c];
          }
        }
        for (int64_t c = 0; c < width; ++c) {
          if (dgamma != nullptr) dgamma[c0 + c] += static_cast<float>(gamma_sum[c]);
          if (dbeta != nullptr) dbeta[c0 + c] += static_cast<float>(beta_sum[c]);
        }
      }
    });
  }

  const float inverse_C = 1.0f / static_cast<float>(C);
  parallel_chunks(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* d = dout + r * C;  // (C)
      const float* x = inp + r * C;   // (C)
      float* dx = dinp + r * C;       // (C), may be d
      const float m = mean[r], s = rstd[r];
      float g_sum = 0.0f, g_xhat_sum = 0.0f;
#pragma omp simd reduction(+ : g_sum, g_xhat_sum)
      for (int64_t c = 0; c < C; ++c) {
        const float g = d[c] * gamma[c];
        g_sum += g;
        g_xhat_sum += g * ((x[c] - m) * s);
      }
      const float g_mean = g_sum * inverse_C, g_xhat_mean = g_xhat_sum * inverse_C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float xhat = (x[c] - m) * s;
        dx[c] = s * (d[c] * gamma[c] - g_mean - xhat * g_xhat_mean);
      }
    }
  });
}

}  // namespace scalebert::kernels
