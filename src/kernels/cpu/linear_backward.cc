// Linear backward: two oneDNN matmuls on plain layouts (dy W for dx; the transposed view of dy times
// x for dW, with a sum post-op to accumulate) and a deterministic column sum for the bias.
#include "kernels/cpu/linear_backward.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/parallel.h"

namespace scalebert::kernels {

using dnnl::memory;
using Dims = memory::dims;

namespace {

// A (rows, columns) matrix whose element (r, c) is at r * row_stride + c * column_stride.
memory::desc matrix_desc(int64_t rows, int64_t columns, int64_t row_stride, int64_t column_stride,
                         memory::data_type type = memory::data_type::f32) {
  return memory::desc(Dims{rows, columns}, type, Dims{row_stride, column_stride});
}

constexpr int64_t kColumnBlock = 64;  // columns per bias task: one 256-byte strip per row

}  // namespace

LinearBackwardStep::Product LinearBackwardStep::make_product(const memory::desc& source, const void* source_data,
                                                             const memory::desc& weights, const void* weights_data,
                                                             const memory::desc& destination, float* destination_data,
                                                             bool accumulate, const char* what) {
  dnnl::post_ops post_ops;
  if (accumulate) post_ops.append_sum(1.0f);
  dnnl::primitive_attr attributes;
  attributes.set_post_ops(post_ops);
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  Product product;
  try {
    product.primitive_desc =
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(source, weights, destination), attributes, cpu_engine());
  } catch (const dnnl::error& error) {
    throw Unsupported(str_cat("oneDNN has no matmul for the linear backward ", what, ": ", error.what()));
  }
  product.primitive = dnnl::matmul(product.primitive_desc);
  const dnnl::engine& engine = cpu_engine();
  product.arguments[DNNL_ARG_SRC] = memory(source, engine, const_cast<void*>(source_data));
  product.arguments[DNNL_ARG_WEIGHTS] = memory(weights, engine, const_cast<void*>(weights_data));
  product.arguments[DNNL_ARG_DST] = memory(destination, engine, destination_data);
  product.scratchpad_desc = product.primitive_desc.scratchpad_desc();
  return product;
}

LinearBackwardStep::LinearBackwardStep(const float* x, int64_t x_stride, const float* weight, const float* dy,
                                       int64_t dy_stride, float* dx, int64_t dx_stride, float* dweight, float* dbias,
                                       int64_t rows, int64_t in_features, int64_t out_features, bool accumulate_dx,
                                       const Bf16Operands* bf16) {
  const int64_t M = rows, K = in_features, N = out_features;
  // The products' operands: the f32 tensors, or their bf16 copies (same layout).
  const memory::data_type type = bf16 != nullptr ? memory::data_type::bf16 : memory::data_type::f32;
  const void* x_operand = bf16 != nullptr ? static_cast<const void*>(bf16->x) : x;
  const void* weight_operand = bf16 != nullptr ? static_cast<const void*>(bf16->weight) : weight;
  const void* dy_operand = bf16 != nullptr ? static_cast<const void*>(bf16->dy) : dy;
  check(M > 0 && K > 0 && N > 0, "LinearBackwardStep: need rows, in_features, out_features > 0, got M=", M, " K=", K,
        " N=", N);
  check(dy != nullptr && dy_stride >= N, "LinearBackwardStep: dy missing or its stride ", dy_stride, " < N=", N);
  has_dx_ = dx != nullptr;
  has_dweight_ = dweight != nullptr;
  if (has_dx_) {
    check(weight_operand != nullptr && dy_operand != nullptr && dx_stride >= K,
          "LinearBackwardStep: weight or bf16 dy missing, or dx stride ", dx_stride, " < K=", K);
    // dx (M, K) = dy (M, N) . W (N, K)
    dx_ = make_product(matrix_desc(M, N, dy_stride, 1, type), dy_operand, matrix_desc(N, K, K, 1, type),
                       weight_operand, matrix_desc(M, K, dx_stride, 1), dx, accumulate_dx, "input gradient dy W");
  }
  if (has_dweight_) {
    const bool dense_transpose = bf16 != nullptr && bf16->dy_transposed != nullptr;
    check(x_operand != nullptr && (dy_operand != nullptr || dense_transpose) && x_stride >= K,
          "LinearBackwardStep: x or bf16 dy missing, or x stride ", x_stride, " < K=", K);
    // dW (N, K) += dy^T (N, M) . x (M, K); dy^T is dy read with swapped strides, or the dense copy.
    dweight_ = make_product(dense_transpose ? matrix_desc(N, M, M, 1, type) : matrix_desc(N, M, 1, dy_stride, type),
                            dense_transpose ? bf16->dy_transposed : dy_operand, matrix_desc(M, K, x_stride, 1, type),
                            x_operand, matrix_desc(N, K, K, 1), dweight, true, "weight gradient dy^T x");
  }
  dy_ = dy;
  dbias_ = dbias;
  dy_stride_ = dy_stride;
  rows_ = M;
  out_features_ = N;
  if (has_dx_) scratchpad_bytes_ = std::max(scratchpad_bytes_, dx_.scratchpad_desc.get_size());
  if (has_dweight_) scratchpad_bytes_ = std::max(scratchpad_bytes_, dweight_.scratchpad_desc.get_size());
  if (scratchpad_bytes_ == 0) bind_scratchpad(nullptr);
}

void LinearBackwardStep::bind_scratchpad(void* scratchpad) {
  check(scratchpad != nullptr || scratchpad_bytes_ == 0, "LinearBackwardStep: null scratchpad, needs ",
        scratchpad_bytes_, " bytes");
  for (Product* product : {&dx_, &dweight_}) {
    if (!product->primitive) continue;
    product->arguments[DNNL_ARG_SCRATCHPAD] = memory(product->scratchpad_desc, cpu_engine(), scratchpad);
  }
  scratchpad_bound_ = true;
}

void LinearBackwardStep::run(dnnl::stream& stream) const {
  check(defined(), "LinearBackwardStep: run on a default-constructed step");
  check(scratchpad_bound_, "LinearBackwardStep: run before bind_scratchpad (needs ", scratchpad_bytes_, " bytes)");
  if (has_dx_) dx_.primitive.execute(stream, dx_.arguments);
  if (has_dweight_) dweight_.primitive.execute(stream, dweight_.arguments);
  stream.wait();
  if (dbias_ != nullptr) bias_backward(dbias_, dy_, rows_, out_features_, dy_stride_);
}

const char* LinearBackwardStep::dx_implementation() const {
  return has_dx_ ? dx_.primitive_desc.impl_info_str() : "";
}
const char* LinearBackwardStep::dweight_implementation() const {
  return has_dweight_ ? dweight_.primitive_desc.impl_info_str() : "";
}

void bias_backward(float* dbias, const float* dy, int64_t rows, int64_t N, int64_t dy_stride) {
  check(rows >= 0 && N > 0 && dy_stride >= N, "bias_backward: need rows >= 0, N > 0, dy_stride >= N, got rows=", rows,
        " N=", N, " dy_stride=", dy_stride);
  const int64_t blocks = (N + kColumnBlock - 1) / kColumnBlock;
  // One task per column block when the rows are many enough to pay for the team.
  const int64_t grain = rows * kColumnBlock >= 16384 ? 1 : blocks;
  parallel_chunks(blocks, grain, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t c0 = block * kColumnBlock, width = std::min(kColumnBlock, N - c0);
      double sum[kColumnBlock] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = dy + r * dy_stride + c0;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) sum[c] += row[c];
      }
      for (int64_t c = 0; c < width; ++c) dbias[c0 + c] += static_cast<float>(sum[c]);
    }
  });
}

}  // namespace scalebert::kernels
