// Embedding backward: scatter-add of dout rows into the table rows their ids select, one column
// block per task (no atomics, no sort, no scratch).
#include "kernels/cpu/embedding_backward.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cpu/parallel.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kColumnBlock = 64;

void check_ids(const int32_t* ids, int64_t N, int64_t table_rows, const char* what) {
  for (int64_t n = 0; n < N; ++n) {
    check(ids[n] >= 0 && ids[n] < table_rows, "embedding_backward: ", what, " ", ids[n], " at position ", n,
          " is outside the table of ", table_rows, " rows");
  }
}

}  // namespace

void embedding_backward(float* dword, float* dposition, float* dtype, const float* dout, const int32_t* input_ids,
                        const int32_t* position_ids, const int32_t* token_type_ids, int64_t V, int64_t P, int64_t TV,
                        int64_t N, int64_t C) {
  check(N >= 0 && C > 0 && V > 0 && P > 0 && TV > 0, "embedding_backward: need N >= 0 and C, V, P, TV > 0, got N=", N,
        " C=", C, " V=", V, " P=", P, " TV=", TV);
  if (dword != nullptr) check_ids(input_ids, N, V, "input id");
  if (dposition != nullptr) check_ids(position_ids, N, P, "position id");
  if (dtype != nullptr && token_type_ids != nullptr) check_ids(token_type_ids, N, TV, "token type id");

  const int64_t blocks = (C + kColumnBlock - 1) / kColumnBlock;
  const int64_t grain = N * kColumnBlock >= 16384 ? 1 : blocks;
  parallel_chunks(blocks, grain, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t c0 = block * kColumnBlock, width = std::min(kColumnBlock, C - c0);
      for (int64_t n = 0; n < N; ++n) {
        const float* d = dout + n * C + c0;  // (width)
        if (dword != nullptr) {
          float* row = dword + static_cast<int64_t>(input_ids[n]) * C + c0;
#pragma omp simd
          for (int64_t c = 0; c < width; ++c) row[c] += d[c];
        }
        if (dposition != nullptr) {
          float* row = dposition + static_cast<int64_t>(position_ids[n]) * C + c0;
#pragma omp simd
          for (int64_t c = 0; c < width; ++c) row[c] += d[c];
        }
        if (dtype != nullptr) {
          float* row = dtype + static_cast<int64_t>(token_type_ids ? token_type_ids[n] : 0) * C + c0;
#pragma omp simd
          for (int64_t c = 0; c < width; ++c) row[c] += d[c];
        }
      }
    }
  });
}

}  // namespace scalebert::kernels
