// Score matrix and top-k selection for semantic search.
#include "pipeline/similarity.h"

#include <algorithm>

#include "core/error.h"

namespace scalebert::pipeline {

Tensor similarity_matrix(const Tensor& queries, const Tensor& corpus) {
  check(queries.rank() == 2 && corpus.rank() == 2, "similarity_matrix: expected (Q, C) queries and (S, C) corpus, got ",
        shape_string(queries.shape()), " and ", shape_string(corpus.shape()));
  const int64_t Q = queries.dim(0), S = corpus.dim(0), C = queries.dim(1);
  check(corpus.dim(1) == C, "similarity_matrix: query width ", C, " differs from corpus width ", corpus.dim(1));
  Tensor scores = Tensor::empty({Q, S}, DType::kF32);  // (Q, S)
  const float* q = queries.data<float>();
  const float* x = corpus.data<float>();
  float* out = scores.data<float>();
  // Both operands are row-major with the reduction along C, so each score is one contiguous dot
  // product that the compiler vectorizes.
  for (int64_t i = 0; i < Q; ++i) {
    for (int64_t j = 0; j < S; ++j) {
      float sum = 0.0f;
      for (int64_t c = 0; c < C; ++c) sum += q[i * C + c] * x[j * C + c];
      out[i * S + j] = sum;
    }
  }
  return scores;
}

std::vector<Neighbour> top_k(const float* scores, int64_t n, int64_t k) {
  check(k >= 0, "top_k: k must be non-negative, got ", k);
  std::vector<Neighbour> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[i] = {i, scores[i]};
  const auto better = [](const Neighbour& a, const Neighbour& b) {
    return a.score > b.score || (a.score == b.score && a.index < b.index);
  };
  const auto keep = static_cast<size_t>(std::min(k, n));
  std::partial_sort(all.begin(), all.begin() + keep, all.end(), better);
  all.resize(keep);
  return all;
}

}  // namespace scalebert::pipeline
