// Layer normalization (plain and fused with the residual add): two passes over each row for the
// mean and the centred variance (no E[x^2] - E[x]^2 cancellation), a third to write.
#include "kernels/cpu/layernorm.h"

#include <cmath>

#include "core/error.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/quantize_rows.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {
namespace {

// Rows per parallel chunk: one BERT row is 3 KiB, so 16 rows keep a chunk well above fork cost.
constexpr int64_t kRowGrain = 16;

void check_sizes(int64_t rows, int64_t C, float eps, const char* who) {
  check(rows >= 0 && C > 0, who, ": need rows >= 0 and C > 0, got rows=", rows, " C=", C);
  check(eps >= 0.0f, who, ": eps must be >= 0, got ", eps);
}

#ifdef __AVX512F__

// x: (C), read; returns sum(x). Two accumulators halve the add latency chain.
inline float row_sum(const float* x, int64_t C) {
  __m512 sum0 = _mm512_setzero_ps();
  __m512 sum1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * simd::kLanes <= C; i += 2 * simd::kLanes) {
    sum0 = _mm512_add_ps(sum0, _mm512_loadu_ps(x + i));
    sum1 = _mm512_add_ps(sum1, _mm512_loadu_ps(x + i + simd::kLanes));
  }
  for (; i < C; i += simd::kLanes) {
    sum0 = _mm512_add_ps(sum0, _mm512_maskz_loadu_ps(simd::tail_mask(C - i), x + i));
  }
  return simd::reduce_add(_mm512_add_ps(sum0, sum1));
}

// out = in + residual over (C), returning the sum of out.
inline float row_add_sum(float* out, const float* in, const float* residual, int64_t C) {
  __m512 sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + simd::kLanes <= C; i += simd::kLanes) {
    const __m512 x = _mm512_add_ps(_mm512_loadu_ps(in + i), _mm512_loadu_ps(residual + i));
    _mm512_storeu_ps(out + i, x);
    sum = _mm512_add_ps(sum, x);
  }
  if (i < C) {
    const __mmask16 mask = simd::tail_mask(C - i);
    const __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, in + i), _mm512_maskz_loadu_ps(mask, residual + i));
    _mm512_mask_storeu_ps(out + i, mask, x);
    sum = _mm512_add_ps(sum, x);
  }
  return simd::reduce_add(sum);
}

// sum((x - mean)^2) over (C).
inline float row_centred_square_sum(const float* x, float mean, int64_t C) {
  const __m512 m = _mm512_set1_ps(mean);
  __m512 sum0 = _mm512_setzero_ps();
  __m512 sum1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * simd::kLanes <= C; i += 2 * simd::kLanes) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), m);
    const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + simd::kLanes), m);
    sum0 = _mm512_fmadd_ps(d0, d0, sum0);
    sum1 = _mm512_fmadd_ps(d1, d1, sum1);
  }
  for (; i < C; i += simd::kLanes) {
    const __mmask16 mask = simd::tail_mask(C - i);
    const __m512 d = _mm512_maskz_sub_ps(mask, _mm512_maskz_loadu_ps(mask, x + i), m);
    sum0 = _mm512_fmadd_ps(d, d, sum0);
  }
  return simd::reduce_add(_mm512_add_ps(sum0, sum1));
}

// out = (x - mean) * rstd * gamma + beta over (C); out may equal x.
inline void row_normalize(float* out, const float* x, const float* gamma, const float* beta, float mean,
                          float rstd, int64_t C) {
  const __m512 m = _mm512_set1_ps(mean);
  const __m512 s = _mm512_set1_ps(rstd);
  int64_t i = 0;
  for (; i + simd::kLanes <= C; i += simd::kLanes) {
    const __m512 normalized = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), m), s);
    _mm512_storeu_ps(out + i, _mm512_fmadd_ps(normalized, _mm512_loadu_ps(gamma + i), _mm512_loadu_ps(beta + i)));
  }
  if (i < C) {
    const __mmask16 mask = simd::tail_mask(C - i);
    const __m512 normalized = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), m), s);
    _mm512_mask_storeu_ps(
        out + i, mask,
        _mm512_fmadd_ps(normalized, _mm512_maskz_loadu_ps(mask, gamma + i), _mm512_maskz_loadu_ps(mask, beta + i)));
  }
}

#else  // plain C++: `omp simd` lets the compiler reorder the float reductions and vectorize them.

inline float row_sum(const float* x, int64_t C) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < C; ++i) sum += x[i];
  return sum;
}

inline float row_add_sum(float* out, const float* in, const float* residual, int64_t C) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < C; ++i) {
    out[i] = in[i] + residual[i];
    sum += out[i];
  }
  return sum;
}

inline float row_centred_square_sum(const float* x, float mean, int64_t C) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < C; ++i) sum += (x[i] - mean) * (x[i] - mean);
  return sum;
}

inline void row_normalize(float* out, const float* x, const float* gamma, const float* beta, float mean,
                          float rstd, int64_t C) {
#pragma omp simd
  for (int64_t i = 0; i < C; ++i) out[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
}

#endif

// Normalizes one row that is already in `x` (pass 2 and 3), writing `out`.
inline void finish_row(float* out, const float* x, const float* gamma, const float* beta, float sum, int64_t C,
                       float eps, float* mean_out, float* rstd_out) {
  const float mean = sum / static_cast<float>(C);
  const float var = row_centred_square_sum(x, mean, C) / static_cast<float>(C);
  const float rstd = 1.0f / std::sqrt(var + eps);
  row_normalize(out, x, gamma, beta, mean, rstd, C);
  if (mean_out != nullptr) *mean_out = mean;
  if (rstd_out != nullptr) *rstd_out = rstd;
}

}  // namespace

void layernorm_forward(float* out, const float* in, const float* gamma, const float* beta, int64_t rows,
                       int64_t C, float eps, float* mean, float* rstd) {
  check_sizes(rows, C, eps, "layernorm_forward");
  parallel_chunks(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float* x = in + row * C;  // (C)
      finish_row(out + row * C, x, gamma, beta, row_sum(x, C), C, eps, mean ? mean + row : nullptr,
                 rstd ? rstd + row : nullptr);
    }
  });
}

void add_layernorm_forward(float* out, const float* in, const float* residual, const float* gamma,
                           const float* beta, int64_t rows, int64_t C, float eps, float* mean, float* rstd) {
  check_sizes(rows, C, eps, "add_layernorm_forward");
  parallel_chunks(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* y = out + row * C;  // (C): first in + residual, then normalized in place
      const float sum = row_add_sum(y, in + row * C, residual + row * C, C);
      finish_row(y, y, gamma, beta, sum, C, eps, mean ? mean + row : nullptr, rstd ? rstd + row : nullptr);
    }
  });
}

float layernorm_quantize_row(float* x, const float* gamma, const float* beta, int64_t C, float eps,
                             int8_t* quantized) {
  layernorm_forward(x, x, gamma, beta, 1, C, eps);  // one row: no parallel region
  return quantized != nullptr ? quantize_row_dynamic(x, C, quantized) : 0.0f;
}

}  // namespace scalebert::kernels
