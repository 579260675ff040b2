// Backward of a Linear layer y = x W^T + b (PyTorch layout, W: (N, K)) through oneDNN matmul:
//   dx (M, K)  = dy W              OVERWRITTEN, or accumulated when the step is built with accumulate_dx
//                                  (x feeds two consumers, e.g. a residual branch)
//   dW (N, K) += dy^T x            ADDED (parameter gradient; gradient accumulation over micro-batches)
//   db (N)    += sum over rows of dy   ADDED
// Gradient convention of this file: parameter gradients are added to, activation gradients are
// overwritten unless accumulate_dx says otherwise.
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

namespace scalebert::kernels {

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
  LinearBackwardStep(const float* x, int64_t x_stride, const float* weight, const float* dy, int64_t dy_stride,
                     float* dx, int64_t dx_stride, float* dweight, float* dbias, int64_t rows, int64_t in_features,
                     int64_t out_features, bool accumulate_dx);

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
  static Product make_product(const dnnl::memory::desc& source, const float* source_data,
                              const dnnl::memory::desc& weights, const float* weights_data,
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
