// Semantic search over embeddings: the score matrix of queries against a corpus (cosine similarity
// when both sides are L2-normalized) and the top-k selection of each row.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace scalebert::pipeline {

// scores (Q, S) = queries (Q, C) x corpus (S, C)^T: dot products, which are cosine similarities for
// normalized rows. A plain matrix product with float accumulation (Q x S x C is small here: a few
// queries against thousands of rows); InvalidArgument when the widths differ.
Tensor similarity_matrix(const Tensor& queries, const Tensor& corpus);

struct Neighbour {
  int64_t index = 0;  // row of the corpus
  float score = 0.0f;
};

// The k highest of scores[0..n), best first; ties keep the lower index first. k > n returns n.
std::vector<Neighbour> top_k(const float* scores, int64_t n, int64_t k);

}  // namespace scalebert::pipeline
