// Cross-entropy kernels. A row's log-sum-exp is computed blockwise (max of a cache-resident block,
// then its exp-sum against that max, merged into a running (max, sum) pair), so a long vocabulary
// row is read from memory once for the loss and once more for the gradient.
#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kBlock = 2048;  // floats per log-sum-exp block (8 KiB, L1-resident)

// sum_j exp(x[j] - shift) over (n) contiguous floats.
inline double exp_sum(const float* x, int64_t n, float shift) {
#ifdef __AVX512F__
  const __m512 s = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes) {
    sum = _mm512_add_ps(sum, simd::exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), s)));
  }
  if (i < n) {
    const __mmask16 mask = simd::tail_mask(n - i);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(mask, simd::exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), s))));
  }
  return simd::reduce_add(sum);
#else
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - shift);
  return sum;
#endif
}

inline float block_max(const float* x, int64_t n) {
#ifdef __AVX512F__
  return simd::row_max(x, n);
#else
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, x[i]);
  return max;
#endif
}

// log(sum_j exp(x[j])) = max + log_sum over (n >= 1) contiguous floats, max-subtracted per block.
// Kept as two parts: with logits near 1e4 a float lse has an ulp of 1e-3, which would put a 1e-3
// relative error into every exp(x - lse); x - max is exact or nearly so, and log_sum is small.
struct LogSumExp {
  float max;
  double log_sum;  // log(sum_j exp(x[j] - max))
};

LogSumExp log_sum_exp(const float* x, int64_t n) {
  float running_max = -INFINITY;
  double running_sum = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t width = std::min(kBlock, n - b);
    const float max = block_max(x + b, width);
    const double sum = exp_sum(x + b, width, max);
    if (max > running_max) {
      running_sum = running_sum * std::exp(static_cast<double>(running_max) - max) + sum;
      running_max = max;
    } else {
      running_sum += sum * std::exp(static_cast<double>(max) - running_max);
    }
  }
  return {running_max, std::log(running_sum)};
}

// out[j] = factor * exp((x[j] - max) - log_sum) over (n); out may equal x.
inline void softmax_scaled(float* out, const float* x, int64_t n, LogSumExp lse, float factor) {
  const float log_sum = static_cast<float>(lse.log_sum);
#ifdef __AVX512F__
  const __m512 max = _mm512_set1_ps(lse.max), shift = _mm512_set1_ps(log_sum), f = _mm512_set1_ps(factor);
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes) {
    const __m512 centred = _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), max), shift);
    _mm512_storeu_ps(out + i, _mm512_mul_ps(f, simd::exp_ps(centred)));
  }
  if (i < n) {
    const __mmask16 mask = simd::tail_mask(n - i);
    const __m512 centred = _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), max), shift);
    _mm512_mask_storeu_ps(out + i, mask, _mm512_mul_ps(f, simd::exp_ps(centred)));
  }
#else
  for (int64_t i = 0; i < n; ++i) out[i] = factor * std::exp((x[i] - lse.max) - log_sum);
#endif
}

// One side of the QA loss over a strided column: x[j * 2] for j < L. Returns the row loss; writes
// dx[j * 2] = factor * (softmax - onehot) when dx is given.
double strided_cross_entropy(float* dx, const float* x, int64_t L, int64_t target, float factor) {
  float max = x[0];
  for (int64_t j = 1; j < L; ++j) max = std::max(max, x[2 * j]);
  double sum = 0.0;
  for (int64_t j = 0; j < L; ++j) sum += std::exp(static_cast<double>(x[2 * j]) - max);
  const double log_sum = std::log(sum);
  const double loss = (static_cast<double>(max) - x[2 * target]) + log_sum;
  if (dx != nullptr) {
    for (int64_t j = 0; j < L; ++j) {
      const double probability = std::exp((static_cast<double>(x[2 * j]) - max) - log_sum);
      dx[2 * j] = factor * static_cast<float>(probability - (j == target ? 1.0 : 0.0));
    }
  }
  return loss;
}

}  // namespace

LossResult cross_entropy_forward_backward(float* dlogits, float* row_losses, const float* logits,
                                          const int32_t* targets, int64_t rows, int64_t V, float grad_scale,
                                          int32_t ignore_index) {
  check(rows >= 0 && V > 0, "cross_entropy: need rows >= 0 and V > 0, got rows=", rows, " V=", V);
  check(row_losses != nullptr, "cross_entropy: row_losses scratch of ", rows, " floats is required");
  LossResult result;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = targets[r];
    if (t == ignore_index) continue;
    check(t >= 0 && t < V, "cross_entropy: target ", t, " of row ", r, " is outside [0, ", V, ") and is not ignore_index ",
          ignore_index);
    ++result.count;
  }
  const float factor = result.count > 0 ? grad_scale / static_cast<float>(result.count) : 0.0f;
  const int64_t row_grain = V >= 4096 ? 1 : 4096 / V;
  parallel_chunks(rows, row_grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* x = logits + r * V;  // (V)
      const int32_t t = targets[r];
      if (t == ignore_index) {
        row_losses[r] = 0.0f;
        if (dlogits != nullptr) std::fill(dlogits + r * V, dlogits + (r + 1) * V, 0.0f);
        continue;
      }
      const LogSumExp lse = log_sum_exp(x, V);
      row_losses[r] = static_cast<float>((static_cast<double>(lse.max) - x[t]) + lse.log_sum);
      if (dlogits != nullptr) {
        float* dx = dlogits + r * V;  // (V), may be x
        softmax_scaled(dx, x, V, lse, factor);
        dx[t] -= factor;
      }
    }
  });
  if (result.count > 0) {
    double sum = 0.0;
    for (int64_t r = 0; r < rows; ++r) sum += row_losses[r];
    result.loss = sum / static_cast<double>(result.count);
  }
  return result;
}

QaLossResult qa_span_loss_forward_backward(float* dlogits, const float* logits, const int64_t* seq_offsets, int64_t S,
                                           const int32_t* start_positions, const int32_t* end_positions,
                                           float grad_scale) {
  max_sequence_length(seq_offsets, S);  // validates offsets
  QaLossResult result;
  // Clamped positions; L means ignored.
  auto clamp_position = [&](int32_t position, int64_t s) {
    const int64_t L = seq_offsets[s + 1] - seq_offsets[s];
    return std::clamp<int64_t>(position, 0, L);
  };
  for (int64_t s = 0; s < S; ++s) {
    const int64_t L = seq_offsets[s + 1] - seq_offsets[s];
    result.start_count += clamp_position(start_positions[s], s) < L;
    result.end_count += clamp_position(end_positions[s], s) < L;
  }
  const int64_t N = seq_offsets[S];
  if (dlogits != nullptr) std::fill(dlogits, dlogits + 2 * N, 0.0f);
  const float start_factor = result.start_count > 0 ? 0.5f * grad_scale / static_cast<float>(result.start_count) : 0.0f;
  const float end_factor = result.end_count > 0 ? 0.5f * grad_scale / static_cast<float>(result.end_count) : 0.0f;
  double start_sum = 0.0, end_sum = 0.0;  // serial: S is small and the order fixed
  for (int64_t s = 0; s < S; ++s) {
    const int64_t begin = seq_offsets[s], L = seq_offsets[s + 1] - begin;
    const int64_t start = clamp_position(start_positions[s], s), end = clamp_position(end_positions[s], s);
    if (start < L) {
      start_sum += strided_cross_entropy(dlogits ? dlogits + 2 * begin : nullptr, logits + 2 * begin, L, start,
                                         start_factor);
    }
    if (end < L) {
      end_sum += strided_cross_entropy(dlogits ? dlogits + 2 * begin + 1 : nullptr, logits + 2 * begin + 1, L, end,
                                       end_factor);
    }
  }
  if (result.start_count > 0) result.start_loss = start_sum / static_cast<double>(result.start_count);
  if (result.end_count > 0) result.end_loss = end_sum / static_cast<double>(result.end_count);
  result.loss = 0.5 * (result.start_loss + result.end_loss);
  return result;
}

}  // namespace scalebert::kernels
