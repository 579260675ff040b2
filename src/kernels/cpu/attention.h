// Multi-head self-attention over packed variable-length sequences (no padding work):
// for every sequence s and head h, context = softmax(Q K^T / sqrt(HS)) V over the tokens of s only.
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// Floats of scratch attention_forward needs for sequences up to `max_len` tokens, head size HS,
// run by `threads` OpenMP threads (pass scalebert::num_threads()). The caller allocates this once
// (64-byte aligned is best) and reuses it; the kernel never allocates.
int64_t attention_scratch_floats(int64_t max_len, int64_t HS, int threads);

// Longest sequence in seq_offsets: (S + 1); throws InvalidArgument unless offsets start at 0 and
// never decrease.
int64_t max_sequence_length(const int64_t* seq_offsets, int64_t S);

// out:         (N, C) context, C = NH * HS, head h in columns h*HS .. h*HS+HS-1
// qkv:         (N, 3C) row n = [q | k | v] of token n, each block head-major like out
// seq_offsets: (S + 1) prefix sums of sequence lengths, seq_offsets[0] = 0, seq_offsets[S] = N
// scratch:     (scratch_floats) >= attention_scratch_floats(max length, HS, current thread count);
//              used by one call at a time.
// Parallel over (sequence, head) pairs with dynamic scheduling. Empty sequences are allowed.
// Throws InvalidArgument on bad sizes, bad offsets or too little scratch.
void attention_forward(float* out, const float* qkv, const int64_t* seq_offsets, int64_t S, int64_t NH,
                       int64_t HS, float* scratch, int64_t scratch_floats);

// The same with Q K^T and P V as bf16 products (VDPBF16PS, f32 accumulation; softmax in f32) for the
// bf16 and int8 engines: about twice the f32 kernel's speed, relative error near bf16's 2^-9 per
// input. Runs attention_forward where the build has no AVX512_BF16 (attention_bf16_available()).
// Same arguments, same scratch size.
void attention_forward_bf16(float* out, const float* qkv, const int64_t* seq_offsets, int64_t S, int64_t NH,
                            int64_t HS, float* scratch, int64_t scratch_floats);
bool attention_bf16_available();

}  // namespace scalebert::kernels
