// Elementwise activations applied in place (GELU erf and tanh forms, ReLU, tanh), the mapping from
// Hugging Face `hidden_act` names, and the row-wise bias add.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/dtype.h"

namespace scalebert::kernels {

enum class Activation {
  kGeluErf,   // x * 0.5 * (1 + erf(x / sqrt(2)))                       HF "gelu"
  kGeluTanh,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))        HF "gelu_new", "gelu_pytorch_tanh", "gelu_fast"
  kRelu,      // max(0, x); NaN stays NaN as in PyTorch                 HF "relu"
  kTanh,      // tanh(x)                                                HF "tanh"
};

// Maps a config.json `hidden_act` value; throws Unsupported naming it when unknown.
Activation activation_from_name(std::string_view name);
const char* activation_name(Activation activation);

// x: (n), overwritten.
void gelu_erf_forward(float* x, int64_t n);
void gelu_tanh_forward(float* x, int64_t n);
void relu_forward(float* x, int64_t n);
void tanh_forward(float* x, int64_t n);  // in place; vector_math.h has the out-of-place form
void activation_forward(Activation activation, float* x, int64_t n);
// out: (n) <- act(in); out == in is allowed (the in-place form above).
void activation_forward(Activation activation, float* out, const float* in, int64_t n);

// out: (n) <- bf16(act(in)), rounded to nearest even: what activation_forward then float_to_bf16
// give, in one pass that never writes the f32 values (mixed-precision training's feed-forward input).
void activation_forward_bf16(Activation activation, BFloat16* out, const float* in, int64_t n);

// out: (rows, C) += bias: (C) on every row.
void add_bias_rows(float* out, const float* bias, int64_t rows, int64_t C);

}  // namespace scalebert::kernels
