// BERT embeddings: out = LayerNorm(word[id] + position[p] + token_type[t]) per token.
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// Ids are int32 (vocabularies and positions fit easily; the server converts KServe's INT64 once,
// checking range, when it packs a batch).
// out:            (N, C)
// input_ids:      (N) in [0, V)
// position_ids:   (N) in [0, P); for packed sequences they restart at 0 for each sequence
// token_type_ids: (N) in [0, TV), or nullptr for all zeros (Hugging Face's default)
// word_table:     (V, C); position_table: (P, C); type_table: (TV, C); gamma, beta: (C)
// Every id is checked before any work: a bad one throws InvalidArgument naming the id, its
// position and the table size.
void embedding_forward(float* out, const int32_t* input_ids, const int32_t* position_ids,
                       const int32_t* token_type_ids, const float* word_table, int64_t V,
                       const float* position_table, int64_t P, const float* type_table, int64_t TV,
                       const float* gamma, const float* beta, int64_t N, int64_t C, float eps);

}  // namespace scalebert::kernels
