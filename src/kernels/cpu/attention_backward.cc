// Training attention (forward with saved probabilities, and backward) on the packed layout. One
// (sequence, head) pair per task; inner loops run over contiguous keys (scores against a transposed,
// pre-scaled K or V copy in scratch) or over the HS contiguous head columns of a row (axpy), which
// the compiler vectorizes. Query rows are processed one at a time, accumulating dK and dV rows in
// place in dqkv (the pair's columns only, so pairs never share memory).
#include "kernels/cpu/attention_backward.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dropout.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kPad = 16;

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

int64_t per_thread_floats(int64_t max_len, int64_t HS) {
  const int64_t ldl = round_up(std::max<int64_t>(max_len, 1), kPad);
  return round_up((HS + 3) * ldl + HS, kPad);
}

// Geometry and dropout of one (sequence, head) problem.
struct Pair {
  const float* qkv;  // (L, 3C) rows of this sequence
  int64_t L;
  int64_t C;
  int64_t head;
  int64_t HS;
  const float* probs;      // (L, L) this pair's saved block
  uint64_t probs_index;    // counter index of probs[0] for dropout: offset + position in the probs layout
};

// t: (HS, ldl) <- block^T * scale where block row j (j < L) is the head's HS columns of qkv row j
// at column `column0`; columns L..ldl-1 of t are zero.
void load_transposed(const Pair& p, int64_t column0, float scale, float* t, int64_t ldl) {
  const int64_t stride = 3 * p.C;
  const float* base = p.qkv + column0 + p.head * p.HS;
  for (int64_t d = 0; d < p.HS; ++d) {
    float* t_row = t + d * ldl;
    for (int64_t j = 0; j < p.L; ++j) t_row[j] = base[j * stride + d] * scale;
    for (int64_t j = p.L; j < ldl; ++j) t_row[j] = 0.0f;
  }
}

// row: (L) <- sum_d a[d] * t[d][.] for t: (HS, ldl).
inline void row_times_transposed(float* row, const float* a, const float* t, int64_t ldl, int64_t L, int64_t HS) {
  for (int64_t j = 0; j < L; ++j) row[j] = 0.0f;
  for (int64_t d = 0; d < HS; ++d) {
    const float ad = a[d];
    const float* t_row = t + d * ldl;
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) row[j] += ad * t_row[j];
  }
}

// probs_out: the pair's (L, L) block, the same memory as p.probs.
void forward_pair(const Pair& p, float* probs_out, float* out, float dropout_p, uint64_t seed, float* scratch) {
  const int64_t ldl = round_up(p.L, kPad);
  const int64_t stride = 3 * p.C;
  float* kt = scratch;          // (HS, ldl) K_h^T * scale
  float* mask = kt + p.HS * ldl;  // (ldl) dropout multipliers of one row
  load_transposed(p, p.C, 1.0f / std::sqrt(static_cast<float>(p.HS)), kt, ldl);
  const float* queries = p.qkv + p.head * p.HS;
  const float* values = p.qkv + 2 * p.C + p.head * p.HS;
  for (int64_t i = 0; i < p.L; ++i) {
    float* prob = probs_out + i * p.L;  // (L)
    row_times_transposed(prob, queries + i * stride, kt, ldl, p.L, p.HS);
    float max = prob[0];
    for (int64_t j = 1; j < p.L; ++j) max = std::max(max, prob[j]);
    double sum = 0.0;
    for (int64_t j = 0; j < p.L; ++j) {
      prob[j] = std::exp(prob[j] - max);
      sum += prob[j];
    }
    const float inverse = static_cast<float>(1.0 / sum);
#pragma omp simd
    for (int64_t j = 0; j < p.L; ++j) prob[j] *= inverse;

    const float* weights = prob;
    if (dropout_p > 0.0f) {
      dropout_mask(mask, p.L, dropout_p, seed, p.probs_index + static_cast<uint64_t>(i * p.L));
#pragma omp simd
      for (int64_t j = 0; j < p.L; ++j) mask[j] *= prob[j];
      weights = mask;
    }
    float* o = out + i * p.C + p.head * p.HS;  // (HS)
    for (int64_t c = 0; c < p.HS; ++c) o[c] = 0.0f;
    for (int64_t j = 0; j < p.L; ++j) {
      const float w = weights[j];
      const float* v = values + j * stride;
#pragma omp simd
      for (int64_t c = 0; c < p.HS; ++c) o[c] += w * v[c];
    }
  }
}

void backward_pair(const Pair& p, float* dqkv, const float* dout, float dropout_p, uint64_t seed, float* scratch) {
  const int64_t ldl = round_up(p.L, kPad);
  const int64_t stride = 3 * p.C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.HS));
  float* vt = scratch;              // (HS, ldl) V_h^T
  float* dp = vt + p.HS * ldl;      // (ldl) dP row
  float* weights = dp + ldl;        // (ldl) Pd row (P * M)
  float* mask = weights + ldl;      // (ldl) M row
  float* dq = mask + ldl;           // (HS) dQ row accumulator
  load_transposed(p, 2 * p.C, 1.0f, vt, ldl);

  const int64_t q_col = p.head * p.HS, k_col = p.C + q_col, v_col = 2 * p.C + q_col;
  for (int64_t j = 0; j < p.L; ++j) {
    float* row = dqkv + j * stride;
    for (int64_t c = 0; c < p.HS; ++c) row[k_col + c] = 0.0f;
    for (int64_t c = 0; c < p.HS; ++c) row[v_col + c] = 0.0f;
  }
  for (int64_t i = 0; i < p.L; ++i) {
    const float* prob = p.probs + i * p.L;           // (L)
    const float* dctx = dout + i * p.C + q_col;      // (HS)
    const float* q = p.qkv + i * stride + q_col;     // (HS)
    row_times_transposed(dp, dctx, vt, ldl, p.L, p.HS);  // dPd = dout_i V^T
    if (dropout_p > 0.0f) {
      dropout_mask(mask, p.L, dropout_p, seed, p.probs_index + static_cast<uint64_t>(i * p.L));
#pragma omp simd
      for (int64_t j = 0; j < p.L; ++j) {
        weights[j] = prob[j] * mask[j];
        dp[j] *= mask[j];
      }
    } else {
      for (int64_t j = 0; j < p.L; ++j) weights[j] = prob[j];
    }
    double dot = 0.0;  // rowsum(dP * P), the softmax Jacobian's rank-one part
    for (int64_t j = 0; j < p.L; ++j) dot += static_cast<double>(dp[j]) * prob[j];
    const float row_dot = static_cast<float>(dot);
    for (int64_t c = 0; c < p.HS; ++c) dq[c] = 0.0f;
    for (int64_t j = 0; j < p.L; ++j) {
      const float ds = prob[j] * (dp[j] - row_dot) * scale;  // dS_ij * scale
      const float w = weights[j];
      float* row = dqkv + j * stride;
      const float* k = p.qkv + j * stride + k_col;
      float* dk = row + k_col;
      float* dv = row + v_col;
#pragma omp simd
      for (int64_t c = 0; c < p.HS; ++c) {
        dv[c] += w * dctx[c];
        dq[c] += ds * k[c];
        dk[c] += ds * q[c];
      }
    }
    float* dq_out = dqkv + i * stride + q_col;
    for (int64_t c = 0; c < p.HS; ++c) dq_out[c] = dq[c];
  }
}

struct Checked {
  int64_t slot;
  int threads;
};

Checked check_arguments(const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS, float dropout_p,
                        const float* scratch, int64_t scratch_floats, const char* who) {
  check(NH > 0 && HS > 0, who, ": need NH > 0 and HS > 0, got NH=", NH, " HS=", HS);
  check(dropout_p >= 0.0f && dropout_p <= 1.0f, who, ": dropout_p must be in [0, 1], got ", dropout_p);
  const int64_t max_len = max_sequence_length(seq_offsets, S);
  const bool nested = omp_in_parallel() != 0;
  const int threads = nested ? 1 : omp_get_max_threads();
  const int64_t slot = per_thread_floats(max_len, HS);
  check(scratch != nullptr && scratch_floats >= slot * threads, who, ": scratch has ", scratch_floats,
        " floats, needs attention_train_scratch_floats(max_len=", max_len, ", HS=", HS, ", threads=", threads,
        ") = ", slot * threads);
  return {slot, threads};
}

}  // namespace

int64_t attention_probs_offset(const int64_t* seq_offsets, int64_t s, int64_t NH) {
  int64_t total = 0;
  for (int64_t t = 0; t < s; ++t) {
    const int64_t length = seq_offsets[t + 1] - seq_offsets[t];
    total += length * length;
  }
  return NH * total;
}

int64_t attention_probs_floats(const int64_t* seq_offsets, int64_t S, int64_t NH) {
  check(NH > 0, "attention_probs_floats: NH must be > 0, got ", NH);
  max_sequence_length(seq_offsets, S);  // validates
  return attention_probs_offset(seq_offsets, S, NH);
}

int64_t attention_train_scratch_floats(int64_t max_len, int64_t HS, int threads) {
  check(max_len >= 0 && HS > 0 && threads > 0, "attention_train_scratch_floats: need max_len >= 0, HS > 0, threads > 0, got max_len=",
        max_len, " HS=", HS, " threads=", threads);
  return per_thread_floats(max_len, HS) * threads;
}

void attention_forward_train(float* out, float* probs, const float* qkv, const int64_t* seq_offsets, int64_t S,
                             int64_t NH, int64_t HS, float dropout_p, uint64_t seed, uint64_t offset, float* scratch,
                             int64_t scratch_floats) {
  const Checked checked =
      check_arguments(seq_offsets, S, NH, HS, dropout_p, scratch, scratch_floats, "attention_forward_train");
  check(static_cast<const float*>(out) != qkv, "attention_forward_train: out must not alias qkv");
  const int64_t C = NH * HS;
  const int64_t pairs = S * NH;
#pragma omp parallel for schedule(dynamic, 1) num_threads(checked.threads) if (pairs > 1)
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t s = pair / NH, h = pair % NH;
    const int64_t begin = seq_offsets[s], L = seq_offsets[s + 1] - begin;
    if (L == 0) continue;
    const int64_t block = attention_probs_offset(seq_offsets, s, NH) + h * L * L;
    Pair problem{qkv + begin * 3 * C, L, C, h, HS, probs + block, offset + static_cast<uint64_t>(block)};
    forward_pair(problem, probs + block, out + begin * C, dropout_p, seed, scratch + omp_get_thread_num() * checked.slot);
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                        const int64_t* seq_offsets, int64_t S, int64_t NH, int64_t HS, float dropout_p, uint64_t seed,
                        uint64_t offset, float* scratch, int64_t scratch_floats) {
  const Checked checked =
      check_arguments(seq_offsets, S, NH, HS, dropout_p, scratch, scratch_floats, "attention_backward");
  check(static_cast<const float*>(dqkv) != qkv && static_cast<const float*>(dqkv) != dout,
        "attention_backward: dqkv must not alias qkv or dout");
  const int64_t C = NH * HS;
  const int64_t pairs = S * NH;
#pragma omp parallel for schedule(dynamic, 1) num_threads(checked.threads) if (pairs > 1)
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t s = pair / NH, h = pair % NH;
    const int64_t begin = seq_offsets[s], L = seq_offsets[s + 1] - begin;
    if (L == 0) continue;
    const int64_t block = attention_probs_offset(seq_offsets, s, NH) + h * L * L;
    Pair problem{qkv + begin * 3 * C, L, C, h, HS, probs + block,
                 offset + static_cast<uint64_t>(block)};
    backward_pair(problem, dqkv + begin * 3 * C, dout + begin * C, dropout_p, seed,
                  scratch + omp_get_thread_num() * checked.slot);
  }
}

}  // namespace scalebert::kernels
