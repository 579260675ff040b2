// Scalar reference implementations of the CPU kernels: the obviously correct versions (one loop
// per formula, float math through std::exp/std::erf/std::tanh, no blocking, no SIMD, no threads)
// Reductions (sums, dot products, variances) accumulate in double so that the reference is the
// more accurate side of every comparison, whatever the row length.
// that tests/test_kernels.cc and bench/bench_kernels.cc compare the fast kernels against.
// Signatures mirror the fast kernels in layernorm.h, activations.h, softmax.h, embedding.h and
// pooling.h; attention's reference works on the padded (B, T) layout with Hugging Face's additive
// mask, so that it also checks that packing removes padding without changing results.
#pragma once

#include <cstdint>

namespace scalebert::kernels {

void layernorm_forward_reference(float* out, const float* in, const float* gamma, const float* beta,
                                 int64_t rows, int64_t C, float eps);
void add_layernorm_forward_reference(float* out, const float* in, const float* residual, const float* gamma,
                                     const float* beta, int64_t rows, int64_t C, float eps);

// x: (n) in place.
void gelu_erf_forward_reference(float* x, int64_t n);
void gelu_tanh_forward_reference(float* x, int64_t n);
void relu_forward_reference(float* x, int64_t n);
void tanh_forward_reference(float* x, int64_t n);
void add_bias_rows_reference(float* out, const float* bias, int64_t rows, int64_t C);

void softmax_rows_reference(float* x, int64_t rows, int64_t cols, const float* mask);

// Hugging Face BertSelfAttention on a padded batch:
// out:  (B, T, C); qkv: (B, T, 3C) with rows [q | k | v], head-major inside each block
// mask: (B, T) additive (0 for real tokens, the lowest float for padding), or nullptr
// scores = Q K^T / sqrt(HS) + mask[b, key]; P = softmax over keys; out = P V.
// Rows of padded queries are computed too (as in HF); callers compare real tokens only.
void attention_forward_reference(float* out, const float* qkv, const float* mask, int64_t B, int64_t T,
                                 int64_t NH, int64_t HS);

void embedding_forward_reference(float* out, const int32_t* input_ids, const int32_t* position_ids,
                                 const int32_t* token_type_ids, const float* word_table,
                                 const float* position_table, const float* type_table, const float* gamma,
                                 const float* beta, int64_t N, int64_t C, float eps);

void cls_pool_reference(float* out, const float* hidden, const int64_t* seq_offsets, int64_t S, int64_t C);
void mean_pool_reference(float* out, const float* hidden, const int64_t* seq_offsets, int64_t S, int64_t C);
void l2_normalize_rows_reference(float* x, int64_t rows, int64_t C, float eps);

}  // namespace scalebert::kernels
