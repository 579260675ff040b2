// Linear layers y = act(x W^T + b) [+ y] through oneDNN matmul, with a plain reference.
//
// oneDNN's fast f32 path (brgemm, AVX-512) wants the weights in a blocked layout of its own choice.
// PackedLinear reorders a [out, in] weight (PyTorch's Linear layout) into that layout once, at load
// (inference), or reads the plain weight in place (training, whose weights change every step).
// LinearStep binds one primitive to fixed input/output buffers of M rows; an execution plan makes its
// steps once per shape class, and running a step allocates nothing (the scratchpad is the caller's).
// Bias, the activation and the residual sum are fused into the product as oneDNN post-ops:
//   y = epilogue(x W^T + b) + (accumulate ? y_old : 0).
#pragma once

#include <cstdint>
#include <unordered_map>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/tensor.h"

namespace scalebert::kernels {

// The process-wide oneDNN CPU engine.
const dnnl::engine& cpu_engine();

// Elementwise function fused after bias.
enum class Epilogue : uint8_t { kNone, kGeluErf, kGeluTanh, kRelu, kTanh };

// Weights of one Linear layer for oneDNN: a packed copy, immutable after construction (so one
// PackedLinear can serve several plans and threads at once), or a plain view (plain_view).
class PackedLinear {
 public:
  // weight: (N, K) F32 as PyTorch stores Linear weights; bias: (N) F32 or undefined.
  PackedLinear(const Tensor& weight, const Tensor& bias);

  // Reads `weight` and `bias` in place (no copy): every product sees their current values, so an
  // optimizer step needs no reorder. Training uses this: at training row counts (BERT-base, 1,024
  // rows) oneDNN's product on the plain transposed layout runs 0-6% slower than on the packed one,
  // which costs less per step than reordering every weight after each update (docs/training.md).
  // The tensors must outlive the layer and every step bound to it. `weight` may be BF16 (mixed-
  // precision training's rounded copy): steps on it then read BF16 rows (the BFloat16 LinearStep),
  // accumulate in f32 and write f32; the bias stays F32.
  static PackedLinear plain_view(const Tensor& weight, const Tensor& bias);

  int64_t out_features() const { return out_features_; }  // N
  int64_t in_features() const { return in_features_; }    // K
  bool has_bias() const { return has_bias_; }
  const dnnl::memory& weights() const { return weights_; }
  const dnnl::memory& bias() const { return bias_; }

  bool is_plain_view() const { return plain_view_; }
  // Element type of the weights and of the rows a step multiplies them with (F32 or BF16).
  DType weight_dtype() const { return weight_dtype_; }

 private:
  PackedLinear(const Tensor& weight, const Tensor& bias, bool plain_view);
  int64_t out_features_ = 0;
  int64_t in_features_ = 0;
  bool has_bias_ = false;
  bool plain_view_ = false;
  DType weight_dtype_ = DType::kF32;
  dnnl::memory weights_;  // (K, N) in oneDNN's preferred blocked layout, or a view of the plain weight
  dnnl::memory bias_;     // (1, N)
};

// One matmul over M rows bound to fixed buffers. x and y may have row strides larger than their widths
// (reading every other block of a wider matrix); y must not alias x.
class LinearStep {
 public:
  LinearStep() = default;
  // x: (M, K) with row stride x_stride floats; y: (M, N) with row stride y_stride floats.
  LinearStep(const PackedLinear& linear, const float* x, int64_t x_stride, float* y, int64_t y_stride,
             int64_t rows, Epilogue epilogue, bool accumulate);
  // The same for a BF16 plain view (x: BF16 rows, stride in elements); y is F32.
  LinearStep(const PackedLinear& linear, const BFloat16* x, int64_t x_stride, float* y, int64_t y_stride,
             int64_t rows, Epilogue epilogue, bool accumulate);

  // Bytes of scratch memory this step needs; bind it before run().
  size_t scratchpad_bytes() const { return scratchpad_bytes_; }
  void bind_scratchpad(void* scratchpad);

  void run(dnnl::stream& stream) const;

  // False for a default-constructed step (a head the model does not have).
  bool defined() const { return static_cast<bool>(primitive_); }

  // The oneDNN implementation picked (for benchmarks and debugging), e.g. "brg:avx512_core".
  const char* implementation() const;

 private:
  LinearStep(const PackedLinear& linear, const void* x, DType x_dtype, int64_t x_stride, float* y, int64_t y_stride,
             int64_t rows, Epilogue epilogue, bool accumulate);
  dnnl::matmul::primitive_desc primitive_desc_;
  dnnl::matmul primitive_;
  std::unordered_map<int, dnnl::memory> arguments_;
  dnnl::memory::desc scratchpad_desc_;
  size_t scratchpad_bytes_ = 0;
};

// Plain reference (double accumulation): y = epilogue(x W^T + b) [+ y].
// x: (M, K), weight: (N, K), bias: (N) or nullptr, y: (M, N); all contiguous.
void linear_reference(const float* x, const float* weight, const float* bias, float* y, int64_t rows,
                      int64_t in_features, int64_t out_features, Epilogue epilogue, bool accumulate);

// Applies the epilogue function to one value (reference math: std::erf, std::tanh).
float apply_epilogue_reference(float value, Epilogue epilogue);

}  // namespace scalebert::kernels
