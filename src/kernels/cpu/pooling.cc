// Sentence pooling over packed sequences and L2 row normalization.
#include "kernels/cpu/pooling.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu/parallel.h"

namespace scalebert::kernels {
namespace {

void check_offsets(const int64_t* seq_offsets, int64_t S, int64_t C, const char* who) {
  check(S >= 0 && C > 0, who, ": need S >= 0 and C > 0, got S=", S, " C=", C);
  check(seq_offsets[0] == 0, who, ": seq_offsets[0] must be 0, got ", seq_offsets[0]);
  for (int64_t s = 0; s < S; ++s) {
    check(seq_offsets[s + 1] > seq_offsets[s], who, ": sequence ", s, " is empty or reversed (seq_offsets[", s,
          "]=", seq_offsets[s], ", seq_offsets[", s + 1, "]=", seq_offsets[s + 1], ")");
  }
}

}  // namespace

void cls_pool(float* out, const float* hidden, const int64_t* seq_offsets, int64_t S, int64_t C) {
  check_offsets(seq_offsets, S, C, "cls_pool");
  for (int64_t s = 0; s < S; ++s) {
    std::memcpy(out + s * C, hidden + seq_offsets[s] * C, static_cast<size_t>(C) * sizeof(float));
  }
}

void mean_pool(float* out, const float* hidden, const int64_t* seq_offsets, int64_t S, int64_t C) {
  check_offsets(seq_offsets, S, C, "mean_pool");
  parallel_chunks(S, 4, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      float* y = out + s * C;  // (C)
      std::fill(y, y + C, 0.0f);
      for (int64_t n = seq_offsets[s]; n < seq_offsets[s + 1]; ++n) {
        const float* x = hidden + n * C;  // (C)
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) y[c] += x[c];
      }
      const float inverse = 1.0f / static_cast<float>(seq_offsets[s + 1] - seq_offsets[s]);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) y[c] *= inverse;
    }
  });
}

void l2_normalize_rows(float* x, int64_t rows, int64_t C, float eps) {
  check(rows >= 0 && C > 0, "l2_normalize_rows: need rows >= 0 and C > 0, got rows=", rows, " C=", C);
  parallel_chunks(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* y = x + row * C;  // (C)
      float square_sum = 0.0f;
#pragma omp simd reduction(+ : square_sum)
      for (int64_t c = 0; c < C; ++c) square_sum += y[c] * y[c];
      const float inverse = 1.0f / std::max(std::sqrt(square_sum), eps);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) y[c] *= inverse;
    }
  });
}

}  // namespace scalebert::kernels
