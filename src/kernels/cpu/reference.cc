// Scalar reference kernels (see reference.h): straightforward loops, one formula each.
#include "kernels/cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace scalebert::kernels {

void layernorm_forward_reference(float* out, const float* in, const float* gamma, const float* beta,
                                 int64_t rows, int64_t C, float eps) {
  for (int64_t row = 0; row < rows; ++row) {
    const float* x = in + row * C;
    float* y = out + row * C;
    double mean = 0.0;
    for (int64_t c = 0; c < C; ++c) mean += x[c];
    mean /= static_cast<double>(C);
    double var = 0.0;
    for (int64_t c = 0; c < C; ++c) var += (x[c] - mean) * (x[c] - mean);
    var /= static_cast<double>(C);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < C; ++c) y[c] = static_cast<float>((x[c] - mean) * rstd * gamma[c] + beta[c]);
  }
}

void add_layernorm_forward_reference(float* out, const float* in, const float* residual, const float* gamma,
                                     const float* beta, int64_t rows, int64_t C, float eps) {
  std::vector<float> sum(static_cast<size_t>(rows * C));
  for (int64_t i = 0; i < rows * C; ++i) sum[i] = in[i] + residual[i];
  layernorm_forward_reference(out, sum.data(), gamma, beta, rows, C, eps);
}

void gelu_erf_forward_reference(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] / std::sqrt(2.0f)));
}

void gelu_tanh_forward_reference(float* x, int64_t n) {
  const float sqrt_two_over_pi = std::sqrt(2.0f / 3.14159265358979f);
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(sqrt_two_over_pi * (v + 0.044715f * v * v * v)));
  }
}

void relu_forward_reference(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::isnan(x[i]) ? x[i] : std::max(x[i], 0.0f);
}

void tanh_forward_reference(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

void add_bias_rows_reference(float* out, const float* bias, int64_t rows, int64_t C) {
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t c = 0; c < C; ++c) out[row * C + c] += bias[c];
  }
}

void softmax_rows_reference(float* x, int64_t rows, int64_t cols, const float* mask) {
  for (int64_t row = 0; row < rows; ++row) {
    float* y = x + row * cols;
    if (mask != nullptr) {
      for (int64_t c = 0; c < cols; ++c) y[c] += mask[c];
    }
    float max = y[0];
    for (int64_t c = 1; c < cols; ++c) max = std::max(max, y[c]);
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      y[c] = std::exp(y[c] - max);
      sum += y[c];
    }
    for (int64_t c = 0; c < cols; ++c) y[c] = static_cast<float>(y[c] / sum);
  }
}

void attention_forward_reference(float* out, const float* qkv, const float* mask, int64_t B, int64_t T,
                                 int64_t NH, int64_t HS) {
  const int64_t C = NH * HS;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  std::vector<float> scores(static_cast<size_t>(T));  // (T) one query's row
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t i = 0; i < T; ++i) {
        const float* q = qkv + (b * T + i) * 3 * C + h * HS;
        for (int64_t j = 0; j < T; ++j) {
          const float* k = qkv + (b * T + j) * 3 * C + C + h * HS;
          double dot = 0.0;
          for (int64_t d = 0; d < HS; ++d) dot += static_cast<double>(q[d]) * k[d];
          scores[j] = static_cast<float>(dot) * scale + (mask != nullptr ? mask[b * T + j] : 0.0f);
        }
        softmax_rows_reference(scores.data(), 1, T, nullptr);
        float* o = out + (b * T + i) * C + h * HS;
        for (int64_t d = 0; d < HS; ++d) {
          double sum = 0.0;
          for (int64_t j = 0; j < T; ++j) sum += static_cast<double>(scores[j]) * qkv[(b * T + j) * 3 * C + 2 * C + h * HS + d];
          o[d] = static_cast<float>(sum);
        }
      }
    }
  }
}

void embedding_forward_reference(float* out, const int32_t* input_ids, const int32_t* position_ids,
                                 const int32_t* token_type_ids, const float* word_table,
                                 const float* position_table, const float* type_table, const float* gamma,
                                 const float* beta, int64_t N, int64_t C, float eps) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t type = token_type_ids != nullptr ? token_type_ids[n] : 0;
    for (int64_t c = 0; c < C; ++c) {
      out[n * C + c] = word_table[input_ids[n] * C + c] + position_table[position_ids[n] * C + c] +
                       type_table[type * C + c];
    }
  }
  layernorm_forward_reference(out, out, gamma, beta, N, C, eps);
}

void cls_pool_reference(float* out, const float* hidden, const int64_t* seq_offsets, int64_t S, int64_t C) {
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t c = 0; c < C; ++c) out[s * C + c] = hidden[seq_offsets[s] * C + c];
  }
}

void mean_pool_reference(float* out, const float* hidden, const int64_t* seq_offsets, int64_t S, int64_t C) {
  for (int64_t s = 0; s < S; ++s) {
    const int64_t length = seq_offsets[s + 1] - seq_offsets[s];
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0.0;
      for (int64_t n = seq_offsets[s]; n < seq_offsets[s + 1]; ++n) sum += hidden[n * C + c];
      out[s * C + c] = static_cast<float>(sum / static_cast<double>(length));
    }
  }
}

void l2_normalize_rows_reference(float* x, int64_t rows, int64_t C, float eps) {
  for (int64_t row = 0; row < rows; ++row) {
    float* y = x + row * C;
    double square_sum = 0.0;
    for (int64_t c = 0; c < C; ++c) square_sum += static_cast<double>(y[c]) * y[c];
    const double norm = std::max(std::sqrt(square_sum), static_cast<double>(eps));
    for (int64_t c = 0; c < C; ++c) y[c] = static_cast<float>(y[c] / norm);
  }
}

}  // namespace scalebert::kernels
