// Backward of a Linear layer y = x W^T + b (PyTorch layout, W: (N, K)) through oneDNN matmul:
//   dx (M, K)  = dy W              OVERWRITTEN, or accumulated when the step is built with accumulate_dx
//                                  (x feeds two consumers, e.g. a residual branch)
//   dW (N, K) += dy^T x            ADDED (parameter gradient; gradient accumulation over micro-batches)
//   db (N)    += sum over rows of dy   ADDED
// Gradient convention of this file: parameter gradients are added to, activation gradients are
// overwritten unless accumulate_dx says otherwise.
//
// Mixed precision (Bf16Operands): the two products read BF16 copies of x, W and dy (rounded to
// nearest even by the caller) and accumulate in f32 into f32 dx and dW, as oneDNN's AVX512_BF16
// kernels do; the bias sum still reads the f32 dy.
//
// LinearBackwardStep binds two matmul primitives (dx and dW) to fixed buffers of M rows, created once
// per shape like the forward LinearStep (matmul.h); running it allocates nothing (user scratchpad).
// The bias sum is a column-partitioned loop of our own (summed in row order in double), so db is
// bitwise independent of the thread count. dx and dW come from oneDNN: run to run deterministic at a
// fixed thread count; oneDNN does not promise equal bits across thread counts.
#pragma once

#include <cstdint>
#include <unordered_map>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/dtype.h"

namespace scalebert::kernels {

// BF16 copies of a backward step's operands, laid out like their f32 originals (same strides).
// A pointer may be null where the matching product is not computed (x without dW; W without dx).
// dy_transposed, when set, is dy^T as a dense (N, M) matrix: the weight gradient reads it instead of
// dy with swapped strides (oneDNN's bf16 kernels run ~8% faster on it).
struct Bf16Operands {
  const BFloat16* x = nullptr;
  const BFloat16* weight = nullptr;
  const BFloat16* dy = nullptr;
  const BFloat16* dy_transposed = nullptr;
};

class LinearBackwardStep {
 public:
  LinearBackwardStep() = default;
  // x:       (M, K) row stride x_stride           (the forward input, saved)
  // weight:  (N, K) contiguous                     (the forward weight in PyTorch layout, not oneDNN's packed copy)
  // dy:      (M, N) row stride dy_stride           (gradient of the forward output)
  // dx:      (M, K) row stride dx_stride, or nullptr when no input gradient is needed (first layer)
  // dweight: (N, K) contiguous, or nullptr (frozen weight)
  // dbias:   (N), or nullptr (no bias, or frozen)
  // M = rows, K = in_features, N = out_features. Throws InvalidArgument on non-positive sizes or strides
  // narrower than widths, Unsupported when oneDNN has no implementation.
  // bf16 non-null: the products read bf16->x, bf16->weight and bf16->dy instead (the f32 x and weight
  // are then unused and may be null; dy still feeds the bias sum).
  LinearBackwardStep(const float* x, int64_t x_stride, const float* weight, const float* dy, int64_t dy_stride,
                     float* dx, int64_t dx_stride, float* dweight, float* dbias, int64_t rows, int64_t in_features,
                     int64_t out_features, bool accumulate_dx, const Bf16Operands* bf16 = nullptr);

  // Bytes of scratch memory run() needs (the larger of the two primitives'; they run one after the
  // other and share it). Bind it before run().
  size_t scratchpad_bytes() const { return scratchpad_bytes_; }
  void bind_scratchpad(void* scratchpad);

  // Computes dx, then dW, then db; waits for the stream.
  void run(dnnl::stream& stream) const;

  bool defined() const { return rows_ > 0; }
  const char* dx_implementation() const;       // e.g. "brg:avx512_core", "" when dx is not computed
  const char* dweight_implementation() const;  // "" when dW is not computed

 private:
  struct Product {
    dnnl::matmul::primitive_desc primitive_desc;
    dnnl::matmul primitive;
    std::unordered_map<int, dnnl::memory> arguments;
    dnnl::memory::desc scratchpad_desc;
  };
  static Product make_product(const dnnl::memory::desc& source, const void* source_data,
                              const dnnl::memory::desc& weights, const void* weights_data,
                              const dnnl::memory::desc& destination, float* destination_data, bool accumulate,
                              const char* what);

  Product dx_;
  Product dweight_;
  bool has_dx_ = false;
  bool has_dweight_ = false;
  const float* dy_ = nullptr;
  float* dbias_ = nullptr;
  int64_t dy_stride_ = 0;
  int64_t rows_ = 0;
  int64_t out_features_ = 0;
  size_t scratchpad_bytes_ = 0;
  bool scratchpad_bound_ = false;
};

// dbias: (N) += column sums of dy: (M, N) with row stride dy_stride. Partitioned by columns; each
// column summed in row order in double, so the result is bitwise independent of the thread count.
void bias_backward(float* dbias, const float* dy, int64_t rows, int64_t N, int64_t dy_stride);

}  // namespace scalebert::kernels
