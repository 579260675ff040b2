// BERT embeddings: validate all ids, then per token sum the three table rows and layer-normalize
// the row while it is still in cache.
#include "kernels/cpu/embedding.h"

#include "core/error.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/parallel.h"

namespace scalebert::kernels {
namespace {

void check_ids(const int32_t* ids, int64_t N, int64_t table_rows, const char* what) {
  for (int64_t n = 0; n < N; ++n) {
    check(ids[n] >= 0 && ids[n] < table_rows, "embedding_forward: ", what, " ", ids[n], " at position ", n,
          " is outside the table of ", table_rows, " rows");
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* input_ids, const int32_t* position_ids,
                       const int32_t* token_type_ids, const float* word_table, int64_t V,
                       const float* position_table, int64_t P, const float* type_table, int64_t TV,
                       const float* gamma, const float* beta, int64_t N, int64_t C, float eps) {
  check(N >= 0 && C > 0 && V > 0 && P > 0 && TV > 0, "embedding_forward: need N >= 0 and C, V, P, TV > 0, got N=", N,
        " C=", C, " V=", V, " P=", P, " TV=", TV);
  check_ids(input_ids, N, V, "input id");
  check_ids(position_ids, N, P, "position id");
  if (token_type_ids != nullptr) check_ids(token_type_ids, N, TV, "token type id");

  parallel_chunks(N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      float* y = out + n * C;                                   // (C)
      const float* word = word_table + input_ids[n] * C;        // (C)
      const float* position = position_table + position_ids[n] * C;
      const float* type = type_table + (token_type_ids ? token_type_ids[n] : 0) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) y[c] = word[c] + position[c] + type[c];
      // One row, already inside a parallel chunk: layernorm_forward runs it serially in place.
      layernorm_forward(y, y, gamma, beta, 1, C, eps);
    }
  });
}

}  // namespace scalebert::kernels
