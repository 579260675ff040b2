// Sentence pooling over packed sequences: first token ([CLS]), mean of the tokens, and row-wise L2
// normalization (sentence-transformers' Normalize).
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// out: (S, C) <- hidden row seq_offsets[s] for each sequence s.
// hidden: (N, C); seq_offsets: (S + 1), seq_offsets[0] = 0, non-decreasing. Empty sequences throw
// InvalidArgument naming the sequence.
void cls_pool(float* out, const float* hidden, const int64_t* seq_offsets, int64_t S, int64_t C);

// out: (S, C) <- mean of hidden rows seq_offsets[s] .. seq_offsets[s+1]-1 (padding is already gone,
// so this equals sentence-transformers' masked mean). Empty sequences throw.
void mean_pool(float* out, const float* hidden, const int64_t* seq_offsets, int64_t S, int64_t C);

// x: (rows, C) <- x / max(||x||_2, eps) per row, as torch.nn.functional.normalize.
void l2_normalize_rows(float* x, int64_t rows, int64_t C, float eps = 1e-12f);

}  // namespace scalebert::kernels
