// Scalar reference forward AND backward passes of the training kernels, templated on the float type:
// the double instantiation is checked against central finite differences of the double forward
// (tests/test_backward.cc), and the fast float kernels are checked against it. One loop per formula,
// no threads, no blocking; the lead's whole-model reference may compose them.
// Conventions as in the fast kernels: backward ADDS into parameter gradients (dweight, dbias,
// dgamma, dbeta, tables) and OVERWRITES activation gradients (dx, dinp, dqkv, dlogits).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace scalebert::kernels::reference {

// ---- Linear: y (M, N) = x (M, K) W^T (W: (N, K)) + b (N)
template <typename T>
void linear_forward(T* y, const T* x, const T* weight, const T* bias, int64_t M, int64_t K, int64_t N) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      T sum = bias ? bias[n] : T(0);
      for (int64_t k = 0; k < K; ++k) sum += x[m * K + k] * weight[n * K + k];
      y[m * N + n] = sum;
    }
  }
}

// dx (M, K) = dy W (or += when accumulate_dx); dweight (N, K) += dy^T x; dbias (N) += sum_m dy.
template <typename T>
void linear_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* weight, int64_t M, int64_t K,
                     int64_t N, bool accumulate_dx) {
  for (int64_t m = 0; m < M && dx; ++m) {
    for (int64_t k = 0; k < K; ++k) {
      T sum = 0;
      for (int64_t n = 0; n < N; ++n) sum += dy[m * N + n] * weight[n * K + k];
      dx[m * K + k] = accumulate_dx ? dx[m * K + k] + sum : sum;
    }
  }
  for (int64_t n = 0; n < N && dweight; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      T sum = 0;
      for (int64_t m = 0; m < M; ++m) sum += dy[m * N + n] * x[m * K + k];
      dweight[n * K + k] += sum;
    }
  }
  for (int64_t n = 0; n < N && dbias; ++n) {
    T sum = 0;
    for (int64_t m = 0; m < M; ++m) sum += dy[m * N + n];
    dbias[n] += sum;
  }
}

// ---- LayerNorm over rows of C; mean/rstd (rows) saved.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* gamma, const T* beta, int64_t rows, int64_t C,
                       T eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = in + r * C;
    T m = 0;
    for (int64_t c = 0; c < C; ++c) m += x[c];
    m /= T(C);
    T var = 0;
    for (int64_t c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    var /= T(C);
    const T s = T(1) / std::sqrt(var + eps);
    for (int64_t c = 0; c < C; ++c) out[r * C + c] = (x[c] - m) * s * gamma[c] + beta[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

template <typename T>
void layernorm_backward(T* dinp, T* dgamma, T* dbeta, const T* dout, const T* inp, const T* gamma, const T* mean,
                        const T* rstd, int64_t rows, int64_t C) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* d = dout + r * C;
    const T* x = inp + r * C;
    T g_mean = 0, g_xhat_mean = 0;
    for (int64_t c = 0; c < C; ++c) {
      const T xhat = (x[c] - mean[r]) * rstd[r];
      g_mean += d[c] * gamma[c];
      g_xhat_mean += d[c] * gamma[c] * xhat;
    }
    g_mean /= T(C);
    g_xhat_mean /= T(C);
    for (int64_t c = 0; c < C; ++c) {
      const T xhat = (x[c] - mean[r]) * rstd[r];
      if (dgamma) dgamma[c] += d[c] * xhat;
      if (dbeta) dbeta[c] += d[c];
      dinp[r * C + c] = rstd[r] * (d[c] * gamma[c] - g_mean - xhat * g_xhat_mean);
    }
  }
}

// ---- Activations, elementwise. Backward takes what the fast kernels take: the input x for the
// GELUs and ReLU, the output y for tanh.
template <typename T> T gelu_erf(T x) { return T(0.5) * x * (T(1) + std::erf(x / std::sqrt(T(2)))); }
template <typename T> T gelu_erf_derivative(T x) {
  const T pi = T(3.14159265358979323846);
  return T(0.5) * (T(1) + std::erf(x / std::sqrt(T(2)))) + x * std::exp(-x * x / T(2)) / std::sqrt(T(2) * pi);
}
template <typename T> T gelu_tanh(T x) {
  const T pi = T(3.14159265358979323846);
  return T(0.5) * x * (T(1) + std::tanh(std::sqrt(T(2) / pi) * (x + T(0.044715) * x * x * x)));
}
template <typename T> T gelu_tanh_derivative(T x) {
  const T pi = T(3.14159265358979323846);
  const T k = std::sqrt(T(2) / pi);
  const T t = std::tanh(k * (x + T(0.044715) * x * x * x));
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * T(0.044715) * x * x);
}
template <typename T> T relu(T x) { return x > T(0) ? x : T(0); }

template <typename T>
void gelu_erf_backward(T* dinp, const T* inp, const T* dout, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * gelu_erf_derivative(inp[i]);
}
template <typename T>
void gelu_tanh_backward(T* dinp, const T* inp, const T* dout, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * gelu_tanh_derivative(inp[i]);
}
template <typename T>
void relu_backward(T* dinp, const T* inp, const T* dout, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dinp[i] = inp[i] > T(0) ? dout[i] : T(0);
}
template <typename T>
void tanh_backward(T* dinp, const T* out, const T* dout, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * (T(1) - out[i] * out[i]);
}

// ---- Softmax over rows.
template <typename T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    T max = x[r * cols];
    for (int64_t c = 1; c < cols; ++c) max = std::max(max, x[r * cols + c]);
    T sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(x[r * cols + c] - max);
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = std::exp(x[r * cols + c] - max) / sum;
  }
}
template <typename T>
void softmax_backward(T* dinp, const T* out, const T* dout, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    T dot = 0;
    for (int64_t c = 0; c < cols; ++c) dot += out[r * cols + c] * dout[r * cols + c];
    for (int64_t c = 0; c < cols; ++c) dinp[r * cols + c] = out[r * cols + c] * (dout[r * cols + c] - dot);
  }
}

// ---- Attention of ONE sequence (unpacked): qkv (L, 3C) rows [q | k | v] head-major, C = NH * HS.
// probs: (NH, L, L) softmax output saved; dropout: (NH, L, L) multipliers (0 or 1/(1-p)) or nullptr.
// out: (L, C), out_h = (P_h * dropout_h) V_h.
template <typename T>
void attention_forward(T* out, T* probs, const T* qkv, const T* dropout, int64_t L, int64_t NH, int64_t HS) {
  const int64_t C = NH * HS;
  const T scale = T(1) / std::sqrt(T(HS));
  std::vector<T> scores(static_cast<size_t>(L));
  for (int64_t h = 0; h < NH; ++h) {
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t j = 0; j < L; ++j) {
        T dot = 0;
        for (int64_t d = 0; d < HS; ++d) dot += qkv[i * 3 * C + h * HS + d] * qkv[j * 3 * C + C + h * HS + d];
        scores[j] = dot * scale;
      }
      T* p = probs + (h * L + i) * L;
      softmax_forward(p, scores.data(), 1, L);
      for (int64_t d = 0; d < HS; ++d) {
        T sum = 0;
        for (int64_t j = 0; j < L; ++j) {
          const T w = dropout ? p[j] * dropout[(h * L + i) * L + j] : p[j];
          sum += w * qkv[j * 3 * C + 2 * C + h * HS + d];
        }
        out[i * C + h * HS + d] = sum;
      }
    }
  }
}

// dqkv: (L, 3C) OVERWRITTEN from dout: (L, C), with the forward's qkv, probs and dropout.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* probs, const T* dropout, int64_t L, int64_t NH,
                        int64_t HS) {
  const int64_t C = NH * HS;
  const T scale = T(1) / std::sqrt(T(HS));
  std::fill(dqkv, dqkv + L * 3 * C, T(0));
  std::vector<T> dp(static_cast<size_t>(L * L)), ds(static_cast<size_t>(L * L));
  for (int64_t h = 0; h < NH; ++h) {
    const T* p = probs + h * L * L;
    const T* m = dropout ? dropout + h * L * L : nullptr;
    auto Q = [&](int64_t i, int64_t d) { return qkv[i * 3 * C + h * HS + d]; };
    auto K = [&](int64_t i, int64_t d) { return qkv[i * 3 * C + C + h * HS + d]; };
    auto Vv = [&](int64_t i, int64_t d) { return qkv[i * 3 * C + 2 * C + h * HS + d]; };
    auto dO = [&](int64_t i, int64_t d) { return dout[i * C + h * HS + d]; };
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t j = 0; j < L; ++j) {
        T dpd = 0;  // d(P*M)[i][j] = dout_i . V_j
        for (int64_t d = 0; d < HS; ++d) dpd += dO(i, d) * Vv(j, d);
        dp[i * L + j] = m ? dpd * m[i * L + j] : dpd;
      }
    }
    for (int64_t j = 0; j < L; ++j) {  // dV_j = sum_i Pd_ij dout_i
      for (int64_t d = 0; d < HS; ++d) {
        T sum = 0;
        for (int64_t i = 0; i < L; ++i) sum += p[i * L + j] * (m ? m[i * L + j] : T(1)) * dO(i, d);
        dqkv[j * 3 * C + 2 * C + h * HS + d] = sum;
      }
    }
    softmax_backward(ds.data(), p, dp.data(), L, L);
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t d = 0; d < HS; ++d) {
        T dq = 0, dk = 0;
        for (int64_t j = 0; j < L; ++j) {
          dq += ds[i * L + j] * K(j, d);
          dk += ds[j * L + i] * Q(j, d);
        }
        dqkv[i * 3 * C + h * HS + d] = dq * scale;
        dqkv[i * 3 * C + C + h * HS + d] = dk * scale;
      }
    }
  }
}

// ---- Embedding sum (before LayerNorm): out (N, C) = word[id] + position[p] + type[t].
template <typename T>
void embedding_sum_forward(T* out, const int32_t* input_ids, const int32_t* position_ids, const int32_t* token_type_ids,
                           const T* word, const T* position, const T* type, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = token_type_ids ? token_type_ids[n] : 0;
    for (int64_t c = 0; c < C; ++c) {
      out[n * C + c] = word[input_ids[n] * C + c] + position[position_ids[n] * C + c] + type[t * C + c];
    }
  }
}
template <typename T>
void embedding_backward(T* dword, T* dposition, T* dtype, const T* dout, const int32_t* input_ids,
                        const int32_t* position_ids, const int32_t* token_type_ids, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = token_type_ids ? token_type_ids[n] : 0;
    for (int64_t c = 0; c < C; ++c) {
      if (dword) dword[input_ids[n] * C + c] += dout[n * C + c];
      if (dposition) dposition[position_ids[n] * C + c] += dout[n * C + c];
      if (dtype) dtype[t * C + c] += dout[n * C + c];
    }
  }
}

// ---- Cross-entropy, mean over rows whose target != ignore_index (0 when none).
template <typename T>
T cross_entropy_forward(const T* logits, const int32_t* targets, int64_t rows, int64_t V, int32_t ignore_index,
                        int64_t* count) {
  T sum = 0;
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore_index) continue;
    const T* x = logits + r * V;
    T max = x[0];
    for (int64_t v = 1; v < V; ++v) max = std::max(max, x[v]);
    T s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(x[v] - max);
    sum += max + std::log(s) - x[targets[r]];
    ++counted;
  }
  if (count) *count = counted;
  return counted > 0 ? sum / T(counted) : T(0);
}
template <typename T>
void cross_entropy_backward(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int64_t V,
                            int32_t ignore_index, T grad_scale) {
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) counted += targets[r] != ignore_index;
  std::fill(dlogits, dlogits + rows * V, T(0));
  if (counted == 0) return;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore_index) continue;
    softmax_forward(dlogits + r * V, logits + r * V, 1, V);
    dlogits[r * V + targets[r]] -= T(1);
    for (int64_t v = 0; v < V; ++v) dlogits[r * V + v] *= grad_scale / T(counted);
  }
}

// ---- QA span loss on the packed layout: logits (N, 2) [start, end]; see loss.h.
template <typename T>
T qa_span_loss_forward(const T* logits, const int64_t* seq_offsets, int64_t S, const int32_t* start_positions,
                       const int32_t* end_positions) {
  T total = 0;
  for (int side = 0; side < 2; ++side) {
    const int32_t* positions = side == 0 ? start_positions : end_positions;
    T sum = 0;
    int64_t counted = 0;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t begin = seq_offsets[s], L = seq_offsets[s + 1] - begin;
      const int64_t target = std::clamp<int64_t>(positions[s], 0, L);
      if (target == L) continue;
      std::vector<T> x(static_cast<size_t>(L));
      for (int64_t j = 0; j < L; ++j) x[j] = logits[(begin + j) * 2 + side];
      const int32_t t32 = static_cast<int32_t>(target);
      sum += cross_entropy_forward(x.data(), &t32, 1, L, -100, nullptr);
      ++counted;
    }
    if (counted > 0) total += sum / T(counted);
  }
  return total / T(2);
}
template <typename T>
void qa_span_loss_backward(T* dlogits, const T* logits, const int64_t* seq_offsets, int64_t S,
                           const int32_t* start_positions, const int32_t* end_positions, T grad_scale) {
  std::fill(dlogits, dlogits + 2 * seq_offsets[S], T(0));
  for (int side = 0; side < 2; ++side) {
    const int32_t* positions = side == 0 ? start_positions : end_positions;
    int64_t counted = 0;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t L = seq_offsets[s + 1] - seq_offsets[s];
      counted += std::clamp<int64_t>(positions[s], 0, L) < L;
    }
    for (int64_t s = 0; s < S; ++s) {
      const int64_t begin = seq_offsets[s], L = seq_offsets[s + 1] - begin;
      const int64_t target = std::clamp<int64_t>(positions[s], 0, L);
      if (target == L) continue;
      std::vector<T> x(static_cast<size_t>(L)), p(static_cast<size_t>(L));
      for (int64_t j = 0; j < L; ++j) x[j] = logits[(begin + j) * 2 + side];
      softmax_forward(p.data(), x.data(), 1, L);
      p[target] -= T(1);
      for (int64_t j = 0; j < L; ++j) dlogits[(begin + j) * 2 + side] = p[j] * grad_scale / (T(2) * T(counted));
    }
  }
}

// ---- Dropout with explicit multipliers mask (0 or 1/(1-p)): out = in * mask; din = dout * mask.
template <typename T>
void dropout_apply(T* out, const T* in, const T* mask, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] * mask[i];
}

}  // namespace scalebert::kernels::reference
