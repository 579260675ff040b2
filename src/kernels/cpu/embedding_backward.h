// Backward of the BERT embedding sum e = word[id] + position[p] + token_type[t] (the LayerNorm after
// it is separate in training: layernorm_backward gives dout here).
// Gradient convention: the three tables' gradients are ADDED to (scatter-add; the masked-LM decoder,
// tied to the word table, adds into the same dword through linear_backward.h).
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// dword: (V, C) +=, dposition: (P, C) +=, dtype: (TV, C) +=; any of them may be nullptr (frozen).
// dout: (N, C) gradient of the sum; ids as embedding_forward takes them (token_type_ids nullptr
// means all zeros). All ids are checked first: a bad one throws InvalidArgument naming the id, its
// position and the table size.
// Determinism: partitioned by column blocks; every table element is updated by one thread, adding
// tokens in order, so the result is bitwise independent of the thread count (repeated ids included).
void embedding_backward(float* dword, float* dposition, float* dtype, const float* dout, const int32_t* input_ids,
                        const int32_t* position_ids, const int32_t* token_type_ids, int64_t V, int64_t P, int64_t TV,
                        int64_t N, int64_t C);

}  // namespace scalebert::kernels
