// oneDNN matmul wrapper: weight packing, bound steps with fused post-ops, and the plain reference.
#include "kernels/cpu/matmul.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace scalebert::kernels {

using dnnl::memory;
using Dims = memory::dims;

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

namespace {

// A representative row count used to let oneDNN pick the packed weight layout. brgemm's layout
// depends on N, K and the ISA, not on M, so every later M reuses it.
constexpr int64_t kLayoutProbeRows = 128;

memory::desc weights_any_desc(int64_t in_features, int64_t out_features) {
  return memory::desc(Dims{in_features, out_features}, memory::data_type::f32, memory::format_tag::any);
}

memory::desc rows_desc(int64_t rows, int64_t columns, int64_t stride,
                       memory::data_type type = memory::data_type::f32) {
  return memory::desc(Dims{rows, columns}, type, Dims{stride, 1});
}

memory::data_type onednn_type(DType dtype) {
  return dtype == DType::kBF16 ? memory::data_type::bf16 : memory::data_type::f32;
}

dnnl::algorithm epilogue_algorithm(Epilogue epilogue) {
  switch (epilogue) {
    case Epilogue::kGeluErf: return dnnl::algorithm::eltwise_gelu_erf;
    case Epilogue::kGeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case Epilogue::kRelu: return dnnl::algorithm::eltwise_relu;
    case Epilogue::kTanh: return dnnl::algorithm::eltwise_tanh;
    case Epilogue::kNone: break;
  }
  throw InvalidArgument("no oneDNN algorithm for Epilogue::kNone");
}

}  // namespace

PackedLinear::PackedLinear(const Tensor& weight, const Tensor& bias) : PackedLinear(weight, bias, false) {}

PackedLinear PackedLinear::plain_view(const Tensor& weight, const Tensor& bias) {
  return PackedLinear(weight, bias, true);
}

PackedLinear::PackedLinear(const Tensor& weight, const Tensor& bias, bool plain_view) : plain_view_(plain_view) {
  check(weight.rank() == 2 && (weight.dtype() == DType::kF32 || (plain_view && weight.dtype() == DType::kBF16)),
        "linear weight must be 2-D F32 (or BF16 for a plain view), got ", shape_string(weight.shape()), " ",
        dtype_name(weight.dtype()));
  weight_dtype_ = weight.dtype();
  out_features_ = weight.dim(0);
  in_features_ = weight.dim(1);
  check(out_features_ > 0 && in_features_ > 0, "linear weight has an empty dimension: ",
        shape_string(weight.shape()));
  has_bias_ = bias.defined();
  if (has_bias_) bias.expect({out_features_}, DType::kF32, "linear bias");

  const dnnl::engine& engine = cpu_engine();
  // (N, K) row-major is (K, N) with strides (1, K) in oneDNN's (K, N) weight convention.
  memory plain(memory::desc(Dims{in_features_, out_features_}, onednn_type(weight_dtype_), Dims{1, in_features_}),
               engine, const_cast<void*>(weight.raw()));
  memory::desc bias_desc(Dims{1, out_features_}, memory::data_type::f32, memory::format_tag::ab);
  if (plain_view_) {
    weights_ = plain;
    if (has_bias_) bias_ = memory(bias_desc, engine, const_cast<void*>(bias.raw()));
    return;
  }
  // Ask a probe primitive for its preferred weight layout, then reorder into it.
  dnnl::matmul::desc probe(rows_desc(kLayoutProbeRows, in_features_, in_features_),
                           weights_any_desc(in_features_, out_features_), bias_desc,
                           rows_desc(kLayoutProbeRows, out_features_, out_features_));
  dnnl::matmul::primitive_desc probe_desc(probe, engine);
  weights_ = memory(probe_desc.weights_desc(), engine);
  dnnl::stream stream(engine);
  dnnl::reorder(plain, weights_).execute(stream, plain, weights_);
  stream.wait();
  bias_ = memory(bias_desc, engine);
  if (has_bias_) std::memcpy(bias_.get_data_handle(), bias.raw(), bias.nbytes());
}

LinearStep::LinearStep(const PackedLinear& linear, const float* x, int64_t x_stride, float* y,
                       int64_t y_stride, int64_t rows, Epilogue epilogue, bool accumulate)
    : LinearStep(linear, x, DType::kF32, x_stride, y, y_stride, rows, epilogue, accumulate) {}

LinearStep::LinearStep(const PackedLinear& linear, const BFloat16* x, int64_t x_stride, float* y,
                       int64_t y_stride, int64_t rows, Epilogue epilogue, bool accumulate)
    : LinearStep(linear, x, DType::kBF16, x_stride, y, y_stride, rows, epilogue, accumulate) {}

LinearStep::LinearStep(const PackedLinear& linear, const void* x, DType x_dtype, int64_t x_stride, float* y,
                       int64_t y_stride, int64_t rows, Epilogue epilogue, bool accumulate) {
  check(x_dtype == linear.weight_dtype(), "linear step: ", dtype_name(x_dtype), " rows times ",
        dtype_name(linear.weight_dtype()), " weights (the two must match)");
  const int64_t in_features = linear.in_features();
  const int64_t out_features = linear.out_features();
  check(rows > 0, "linear step needs at least one row, got ", rows);
  check(x_stride >= in_features && y_stride >= out_features, "linear step strides (", x_stride, ", ",
        y_stride, ") smaller than widths (", in_features, ", ", out_features, ")");

  dnnl::post_ops post_ops;
  if (epilogue != Epilogue::kNone) post_ops.append_eltwise(1.0f, epilogue_algorithm(epilogue), 0.0f, 0.0f);
  if (accumulate) post_ops.append_sum(1.0f);
  dnnl::primitive_attr attributes;
  attributes.set_post_ops(post_ops);
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  memory::desc source_desc = rows_desc(rows, in_features, x_stride, onednn_type(x_dtype));
  memory::desc destination_desc = rows_desc(rows, out_features, y_stride);
  dnnl::matmul::desc description =
      linear.has_bias()
          ? dnnl::matmul::desc(source_desc, linear.weights().get_desc(), linear.bias().get_desc(),
                               destination_desc)
          : dnnl::matmul::desc(source_desc, linear.weights().get_desc(), destination_desc);
  try {
    primitive_desc_ = dnnl::matmul::primitive_desc(description, attributes, cpu_engine());
  } catch (const dnnl::error& error) {
    throw Unsupported(str_cat("oneDNN has no matmul for rows=", rows, " in=", in_features,
                              " out=", out_features, ": ", error.what()));
  }
  primitive_ = dnnl::matmul(primitive_desc_);

  const dnnl::engine& engine = cpu_engine();
  arguments_[DNNL_ARG_SRC] = memory(source_desc, engine, const_cast<void*>(x));
  arguments_[DNNL_ARG_WEIGHTS] = linear.weights();
  if (linear.has_bias()) arguments_[DNNL_ARG_BIAS] = linear.bias();
  arguments_[DNNL_ARG_DST] = memory(destination_desc, engine, y);
  scratchpad_desc_ = primitive_desc_.scratchpad_desc();
  scratchpad_bytes_ = scratchpad_desc_.get_size();
  if (scratchpad_bytes_ == 0) arguments_[DNNL_ARG_SCRATCHPAD] = memory(scratchpad_desc_, engine, nullptr);
}

void LinearStep::bind_scratchpad(void* scratchpad) {
  arguments_[DNNL_ARG_SCRATCHPAD] = memory(scratchpad_desc_, cpu_engine(), scratchpad);
}

void LinearStep::run(dnnl::stream& stream) const {
  check(arguments_.count(DNNL_ARG_SCRATCHPAD) == 1, "linear step run before bind_scratchpad");
  primitive_.execute(stream, arguments_);
}

const char* LinearStep::implementation() const { return primitive_desc_.impl_info_str(); }

float apply_epilogue_reference(float value, Epilogue epilogue) {
  switch (epilogue) {
    case Epilogue::kNone: return value;
    case Epilogue::kGeluErf: return 0.5f * value * (1.0f + std::erf(value / std::sqrt(2.0f)));
    case Epilogue::kGeluTanh: {
      const float inner = std::sqrt(2.0f / static_cast<float>(M_PI)) * (value + 0.044715f * value * value * value);
      return 0.5f * value * (1.0f + std::tanh(inner));
    }
    case Epilogue::kRelu: return value > 0.0f ? value : 0.0f;
    case Epilogue::kTanh: return std::tanh(value);
  }
  return value;
}

void linear_reference(const float* x, const float* weight, const float* bias, float* y, int64_t rows,
                      int64_t in_features, int64_t out_features, Epilogue epilogue, bool accumulate) {
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t out = 0; out < out_features; ++out) {
      double sum = bias != nullptr ? bias[out] : 0.0;
      for (int64_t in = 0; in < in_features; ++in) {
        sum += static_cast<double>(x[row * in_features + in]) * weight[out * in_features + in];
      }
      float value = apply_epilogue_reference(static_cast<float>(sum), epilogue);
      float& target = y[row * out_features + out];
      target = accumulate ? target + value : value;
    }
  }
}

}  // namespace scalebert::kernels
