// Training attention over packed variable-length sequences: a forward pass that saves the
// attention probabilities (and applies attention-probability dropout, as BertSelfAttention does),
// and its backward pass.
//
// Gradient convention: attention_backward OVERWRITES dqkv (an activation gradient); attention has
// no parameters of its own (Q, K, V and output projections are linear layers, see linear_backward.h).
//
// Saved probabilities P (the softmax output BEFORE dropout), one L_s x L_s row-major block per
// (sequence s, head h), sequences in order, heads in order inside a sequence:
//   probs[attention_probs_offset(seq_offsets, s, NH) + h * L_s * L_s + i * L_s + j] = P_{s,h}[query i][key j]
//   attention_probs_offset(s) = NH * sum_{s' < s} L_{s'}^2,  total = attention_probs_floats() = NH * sum_s L_s^2.
// Dropout draws element (s, h, i, j) at counter index offset + (its index in probs above), so the
// caller advances `offset` by attention_probs_floats() per layer; backward recomputes the mask.
#pragma once

#include <cstdint>

namespace scalebert::kernels {

// NH * sum_s L_s^2: floats of saved probabilities for a packed batch. Validates seq_offsets.
int64_t attention_probs_floats(const int64_t* seq_offsets, int64_t S, int64_t NH);
// NH * sum_{s' < s} L_{s'}^2: where sequence s's blocks begin (0 <= s <= S).
int64_t attention_probs_offset(const int64_t* seq_offsets, int64_t s, int64_t NH);

// Floats of scratch attention_forward_train and attention_backward need for sequences up to max_len
// tokens, head size HS, `threads` OpenMP threads (pass scalebert::num_threads()); per thread
// (HS + 2 * ldl) * ldl floats with ldl = round_up(max_len, 16) (dS and P * dropout as ldl x ldl
// matrices: 2 MiB per thread at max_len 512) plus the pair's dropout keep bits (ldl^2 / 32 floats),
// plus the bf16 products' packed operands (about 1.6 ldl^2 + 2.5 HS ldl more). Allocate once, reuse.
int64_t attention_train_scratch_floats(int64_t max_len, int64_t HS, int threads);

// Forward (BertSelfAttention without padding), per sequence s and head h, scale = 1/sqrt(HS):
//   P = softmax(Q_h K_h^T * scale)   (L, L) saved to probs
//   out_h = dropout(P) V_h           (L, HS), dropout(P) = P * keep / (1 - p)
// out: (N, C), C = NH * HS; probs: (attention_probs_floats) written; qkv: (N, 3C) rows [q | k | v],
// head-major; seq_offsets: (S + 1); dropout_p in [0, 1] (0: no dropout, seed/offset unused).
// Parallel over (sequence, head) pairs; results do not depend on the thread count.
// Throws InvalidArgument on bad sizes or offsets, too little scratch, or out aliasing qkv.
// bf16_products (mixed-precision training; ignored where attention_bf16_available() is false): the
// two products Q K^T and Pd V round their operands to bf16 and accumulate in f32 (VDPBF16PS, as
// PyTorch's autocast runs these matmuls); softmax, dropout and the saved P stay f32.
void attention_forward_train(float* out, float* probs, const float* qkv, const int64_t* seq_offsets, int64_t S,
                             int64_t NH, int64_t HS, float dropout_p, uint64_t seed, uint64_t offset, float* scratch,
                             int64_t scratch_floats, bool bf16_products = false);

// Backward of the forward above, with M = keep / (1 - p) recomputed and Pd = P * M:
//   dPd  = dout_h V_h^T                      dV_h = Pd^T dout_h
//   dP   = dPd * M
//   dS   = P * (dP - rowsum(dP * P))         (softmax backward, per query row)
//   dQ_h = dS K_h * scale                    dK_h = dS^T Q_h * scale
// dqkv: (N, 3C) OVERWRITTEN (all of it, including sequences of length 0: none exist in rows);
// dout: (N, C); qkv: (N, 3C) as in forward; probs: as attention_forward_train saved it; the same
// dropout_p, seed, offset as the forward. Each (sequence, head) pair writes only its own columns,
// so results are bitwise independent of the thread count. dqkv must not alias qkv or dout.
// bf16_products: the four products (dPd, dQ, dK, dV) on bf16 operands with f32 accumulation; the
// softmax backward stays f32.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                        const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS, float dropout_p, uint64_t seed,
                        uint64_t offset, float* scratch, int64_t scratch_floats, bool bf16_products = false);

// ---- The first query of each sequence only ([CLS]; the last layer of sequence classification) ----
// The same attention restricted to query row i = 0 of every sequence: its keys and values are all of
// the sequence's rows. Query s is row s of q (S, C) (the [CLS] row's Q projection, computed apart);
// qkv's Q columns are not read. Saved probabilities: one row of L_s per (sequence, head),
//   probs[NH * seq_offsets[s] + h * L_s + j] = P_{s,h}[0][j]   (NH * N floats in all),
// and element (s, h, j) draws its dropout at the counter index the full attention gives query row 0,
// offset + attention_probs_offset(s) + h * L_s^2 + j: the result is the full forward's rows 0 (and the
// full backward's gradients when dout is zero on every other row), masks included. The caller still
// advances `offset` by attention_probs_floats() for the layer. Scratch as for the full attention.
//   out: (S, C) row s = the attention output of sequence s's first query.
void first_query_attention_forward_train(float* out, float* probs, const float* q, const float* qkv,
                                         const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS,
                                         float dropout_p, uint64_t seed, uint64_t offset, float* scratch,
                                         int64_t scratch_floats);

// Backward of the forward above (the full backward's formulas with one query row per pair):
//   dq: (S, C) OVERWRITTEN; dqkv: (N, 3C), its K and V columns OVERWRITTEN on every row, its Q columns
//   not touched; dout: (S, C). dq and dqkv must not alias the inputs.
void first_query_attention_backward(float* dq, float* dqkv, const float* dout, const float* q, const float* qkv,
                                    const float* probs, const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS,
                                    float dropout_p, uint64_t seed, uint64_t offset, float* scratch,
                                    int64_t scratch_floats);

}  // namespace scalebert::kernels
