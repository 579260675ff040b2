// bf16 and int8 Linear layers through oneDNN, the precision-agnostic step, and their references.
#include "kernels/cpu/low_precision_matmul.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <omp.h>

#include "core/error.h"
#include "core/arena.h"
#include "core/threads.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/quantize_rows.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {

using dnnl::memory;
using Dims = memory::dims;
using DataType = memory::data_type;

namespace {

constexpr int64_t kLayoutProbeRows = 128;  // as in matmul.cc: the blocked layout does not depend on M

memory::desc plain_rows(int64_t rows, int64_t columns, int64_t stride, DataType type) {
  return memory::desc(Dims{rows, columns}, type, Dims{stride, 1});
}

dnnl::algorithm eltwise_algorithm(Epilogue epilogue) {
  switch (epilogue) {
    case Epilogue::kGeluErf: return dnnl::algorithm::eltwise_gelu_erf;
    case Epilogue::kGeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case Epilogue::kRelu: return dnnl::algorithm::eltwise_relu;
    case Epilogue::kTanh: return dnnl::algorithm::eltwise_tanh;
    case Epilogue::kNone: break;
  }
  throw InvalidArgument("no oneDNN algorithm for Epilogue::kNone");
}

Activation epilogue_activation(Epilogue epilogue) {
  switch (epilogue) {
    case Epilogue::kGeluErf: return Activation::kGeluErf;
    case Epilogue::kGeluTanh: return Activation::kGeluTanh;
    case Epilogue::kRelu: return Activation::kRelu;
    case Epilogue::kTanh: return Activation::kTanh;
    case Epilogue::kNone: break;
  }
  throw InvalidArgument("no activation for Epilogue::kNone");
}

dnnl::primitive_attr step_attributes(Epilogue epilogue, bool accumulate) {
  dnnl::post_ops post_ops;
  if (epilogue != Epilogue::kNone) post_ops.append_eltwise(1.0f, eltwise_algorithm(epilogue), 0.0f, 0.0f);
  if (accumulate) post_ops.append_sum(1.0f);
  dnnl::primitive_attr attributes;
  attributes.set_post_ops(post_ops);
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attributes;
}

void reorder_into(memory& source, memory& destination) {
  dnnl::stream stream(cpu_engine());
  dnnl::reorder(source, destination).execute(stream, source, destination);
  stream.wait();
}

void check_linear(const Tensor& weight, const Tensor& bias, const char* what) {
  check(weight.rank() == 2 && weight.dtype() == DType::kF32, what, " weight must be 2-D F32, got ",
        shape_string(weight.shape()), " ", dtype_name(weight.dtype()));
  check(weight.dim(0) > 0 && weight.dim(1) > 0, what, " weight has an empty dimension: ", shape_string(weight.shape()));
  if (bias.defined()) bias.expect({weight.dim(0)}, DType::kF32, str_cat(what, " bias"));
}

dnnl::matmul::primitive_desc make_primitive_desc(const dnnl::matmul::desc& description,
                                                 const dnnl::primitive_attr& attributes, int64_t rows,
                                                 int64_t in_features, int64_t out_features, const char* what) {
  try {
    return dnnl::matmul::primitive_desc(description, attributes, cpu_engine());
  } catch (const dnnl::error& error) {
    throw Unsupported(str_cat("oneDNN has no ", what, " matmul for rows=", rows, " in=", in_features,
                              " out=", out_features, ": ", error.what()));
  }
}

}  // namespace

namespace {
std::atomic<bool> row_blocks_enabled{true};
}  // namespace

void set_int8_row_blocks(bool enabled) { row_blocks_enabled = enabled; }
bool int8_row_blocks() { return row_blocks_enabled; }

std::string_view precision_name(Precision precision) {
  switch (precision) {
    case Precision::kF32: return "f32";
    case Precision::kBF16: return "bf16";
    case Precision::kInt8: return "int8";
  }
  return "?";
}

Precision precision_from_name(std::string_view name) {
  if (name == "f32" || name == "fp32" || name == "float32") return Precision::kF32;
  if (name == "bf16" || name == "bfloat16") return Precision::kBF16;
  if (name == "int8" || name == "i8") return Precision::kInt8;
  throw InvalidArgument(str_cat("unsupported precision \"", name, "\" (expected int8, bf16 or f32)"));
}

// oneDNN's cpu_isa values are bit sets: 0x40 marks AVX-512 VNNI, 0x80 AVX512_BF16 (on top of
// avx512_core, 0x27).
bool cpu_has_int8_dot_product() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  return (isa & 0x67u) == 0x67u;
}

bool cpu_has_bf16() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  return (isa & 0xe7u) == 0xe7u;
}

Precision supported_precision(Precision wanted) {
  static std::atomic<bool> warned_int8{false}, warned_bf16{false};
  if (wanted == Precision::kInt8 && !cpu_has_int8_dot_product()) {
    if (!warned_int8.exchange(true)) {
      std::fprintf(stderr,
                   "scalebert: warning: this CPU (oneDNN ISA 0x%x) lacks AVX-512 VNNI; int8 layers run in f32 "
                   "(dequantized weights)\n",
                   static_cast<unsigned>(dnnl::get_effective_cpu_isa()));
    }
    return Precision::kF32;
  }
  if (wanted == Precision::kBF16 && !cpu_has_bf16()) {
    if (!warned_bf16.exchange(true)) {
      std::fprintf(stderr,
                   "scalebert: warning: this CPU (oneDNN ISA 0x%x) lacks AVX512_BF16; bf16 layers run in f32\n",
                   static_cast<unsigned>(dnnl::get_effective_cpu_isa()));
    }
    return Precision::kF32;
  }
  return wanted;
}

PackedLinearInt8::PackedLinearInt8(const Tensor& weight, const Tensor& bias, float input_scale) {
  check_linear(weight, bias, "int8 linear");
  check(std::isfinite(input_scale) && input_scale >= 0.0f, "int8 linear input scale must be finite and >= 0, got ",
        input_scale);
  out_features_ = weight.dim(0);
  in_features_ = weight.dim(1);
  input_scale_ = input_scale;
  const int64_t N = out_features_, K = in_features_;

  std::vector<int8_t> quantized(static_cast<size_t>(N * K));  // (N, K)
  weight_scales_.resize(N);
  quantize_weight_rows(weight.data<float>(), N, K, quantized.data(), weight_scales_.data());
  if (bias.defined()) bias_values_.assign(bias.data<float>(), bias.data<float>() + N);

  // Preferred s8 layout of an s8-source product: it carries the compensation after the weights.
  dnnl::matmul::desc probe(plain_rows(kLayoutProbeRows, K, K, DataType::s8),
                           memory::desc(Dims{K, N}, DataType::s8, memory::format_tag::any),
                           plain_rows(kLayoutProbeRows, N, N, DataType::s32));
  dnnl::matmul::primitive_desc probe_desc =
      make_primitive_desc(probe, dnnl::primitive_attr(), kLayoutProbeRows, K, N, "int8");
  weights_ = memory(probe_desc.weights_desc(), cpu_engine());
  // (N, K) row-major is (K, N) with strides (1, K); the reorder computes the compensation.
  memory source(memory::desc(Dims{K, N}, DataType::s8, Dims{1, K}), cpu_engine(), quantized.data());
  reorder_into(source, weights_);

  if (is_static()) {
    output_scales_.resize(N);
    static_bias_ = memory(memory::desc(Dims{1, N}, DataType::f32, memory::format_tag::ab), cpu_engine());
    float* packed_bias = static_cast<float*>(static_bias_.get_data_handle());
    for (int64_t n = 0; n < N; ++n) {
      output_scales_[n] = input_scale_ * weight_scales_[n];
      // A zero weight row has scale 0: its output is the bias alone, which oneDNN 2.x cannot
      // express through b / 0; such rows get scale 1 over all-zero weights instead.
      if (output_scales_[n] == 0.0f) output_scales_[n] = 1.0f;
      packed_bias[n] = bias_values_.empty() ? 0.0f : bias_values_[n] / output_scales_[n];
    }
  }
}

PackedLinearBf16::PackedLinearBf16(const Tensor& weight, const Tensor& bias) {
  check_linear(weight, bias, "bf16 linear");
  out_features_ = weight.dim(0);
  in_features_ = weight.dim(1);
  has_bias_ = bias.defined();
  const int64_t N = out_features_, K = in_features_;
  memory::desc bias_desc(Dims{1, N}, DataType::f32, memory::format_tag::ab);
  dnnl::matmul::desc probe(plain_rows(kLayoutProbeRows, K, K, DataType::bf16),
                           memory::desc(Dims{K, N}, DataType::bf16, memory::format_tag::any), bias_desc,
                           plain_rows(kLayoutProbeRows, N, N, DataType::f32));
  dnnl::matmul::primitive_desc probe_desc =
      make_primitive_desc(probe, dnnl::primitive_attr(), kLayoutProbeRows, K, N, "bf16");
  weights_ = memory(probe_desc.weights_desc(), cpu_engine());
  // f32 -> bf16 in the reorder rounds to nearest even, as float_to_bf16 does.
  memory source(memory::desc(Dims{K, N}, DataType::f32, Dims{1, K}), cpu_engine(), const_cast<void*>(weight.raw()));
  reorder_into(source, weights_);
  bias_ = memory(bias_desc, cpu_engine());
  if (has_bias_) std::memcpy(bias_.get_data_handle(), bias.raw(), bias.nbytes());
}

PrecisionLinear::PrecisionLinear(const Tensor& weight, const Tensor& bias, Precision precision, float input_scale)
    : precision_(supported_precision(precision)) {
  check_linear(weight, bias, "linear");
  out_features_ = weight.dim(0);
  in_features_ = weight.dim(1);
  switch (precision_) {
    case Precision::kF32: f32_ = std::make_unique<PackedLinear>(weight, bias); break;
    case Precision::kBF16: bf16_ = std::make_unique<PackedLinearBf16>(weight, bias); break;
    case Precision::kInt8: int8_ = std::make_unique<PackedLinearInt8>(weight, bias, input_scale); break;
  }
}

size_t PrecisionLinear::bytes() const {
  switch (precision_) {
    case Precision::kF32: return f32_->weights().get_desc().get_size() + f32_->bias().get_desc().get_size();
    case Precision::kBF16: return bf16_->weights().get_desc().get_size() + bf16_->bias().get_desc().get_size();
    case Precision::kInt8:
      return int8_->weights().get_desc().get_size() +
             sizeof(float) * (int8_->weight_scales().size() + int8_->bias_values().size() +
                              int8_->output_scales().size() + (int8_->is_static() ? out_features_ : 0));
  }
  return 0;
}

PrecisionLinearStep::PrecisionLinearStep(const PrecisionLinear& linear, const float* x, int64_t x_stride, float* y,
                                         int64_t y_stride, int64_t rows, Epilogue epilogue, bool accumulate,
                                         const LowPrecisionBuffers& buffers, const Int8Fusion& fusion)
    : defined_(true), precision_(linear.precision()) {
  const bool dynamic_int8 = precision_ == Precision::kInt8 && !linear.int8()->is_static();
  check(!fusion.any() || dynamic_int8, "int8 fusions need a dynamic int8 linear, this one runs ",
        precision_name(precision_), precision_ == Precision::kInt8 ? " (static)" : "");
  if (precision_ == Precision::kF32) {
    f32_step_ = LinearStep(*linear.f32(), x, x_stride, y, y_stride, rows, epilogue, accumulate);
    scratchpad_bytes_ = f32_step_.scratchpad_bytes();
    return;
  }
  const int64_t K = linear.in_features(), N = linear.out_features();
  check(rows > 0, "linear step needs at least one row, got ", rows);
  check(x_stride >= K && y_stride >= N, "linear step strides (", x_stride, ", ", y_stride, ") smaller than widths (",
        K, ", ", N, ")");
  check(buffers.activations != nullptr, "low-precision linear step without activation buffers");
  x_ = x;
  y_ = y;
  x_stride_ = x_stride;
  y_stride_ = y_stride;
  rows_ = rows;
  in_features_ = K;
  epilogue_ = epilogue;
  accumulate_ = accumulate;
  buffers_ = buffers;
  const dnnl::engine& engine = cpu_engine();

  if (dynamic_int8) {
    build_dynamic_int8(*linear.int8(), fusion);
    return;
  }
  if (precision_ == Precision::kBF16) {
    const PackedLinearBf16& packed = *linear.bf16();
    memory::desc source_desc = plain_rows(rows, K, K, DataType::bf16);
    memory::desc destination_desc = plain_rows(rows, N, y_stride, DataType::f32);
    dnnl::matmul::desc description = packed.has_bias()
        ? dnnl::matmul::desc(source_desc, packed.weights().get_desc(), packed.bias().get_desc(), destination_desc)
        : dnnl::matmul::desc(source_desc, packed.weights().get_desc(), destination_desc);
    primitive_desc_ = make_primitive_desc(description, step_attributes(epilogue, accumulate), rows, K, N, "bf16");
    arguments_[DNNL_ARG_SRC] = memory(source_desc, engine, buffers.activations);
    arguments_[DNNL_ARG_WEIGHTS] = packed.weights();
    if (packed.has_bias()) arguments_[DNNL_ARG_BIAS] = packed.bias();
    arguments_[DNNL_ARG_DST] = memory(destination_desc, engine, y);
  } else {
    // Static int8, fully fused: output scales sx * sw[n], pre-scale bias, activation and sum as post-ops.
    int8_ = linear.int8();
    memory::desc source_desc = plain_rows(rows, K, K, DataType::s8);
    memory::desc destination_desc = plain_rows(rows, N, y_stride, DataType::f32);
    dnnl::primitive_attr attributes = step_attributes(epilogue, accumulate);
    attributes.set_output_scales(1 << 1, int8_->output_scales());
    dnnl::matmul::desc description(source_desc, int8_->weights().get_desc(), int8_->static_bias().get_desc(),
                                   destination_desc);
    primitive_desc_ = make_primitive_desc(description, attributes, rows, K, N, "static int8");
    arguments_[DNNL_ARG_SRC] = memory(source_desc, engine, buffers.activations);
    arguments_[DNNL_ARG_WEIGHTS] = int8_->weights();
    arguments_[DNNL_ARG_BIAS] = int8_->static_bias();
    arguments_[DNNL_ARG_DST] = memory(destination_desc, engine, y);
  }
  primitive_ = dnnl::matmul(primitive_desc_);
  scratchpad_desc_ = primitive_desc_.scratchpad_desc();
  scratchpad_bytes_ = scratchpad_desc_.get_size();
  if (scratchpad_bytes_ == 0) arguments_[DNNL_ARG_SCRATCHPAD] = memory(scratchpad_desc_, engine, nullptr);
}

namespace {

// A single-threaded s8 x s8 -> s32 product of `rows` rows (source row stride `stride`), for one
// block of the blocked step. oneDNN sizes a primitive's thread partition from the OpenMP thread
// count when it is created; created with 1, it runs its whole product on the calling thread, which
// is what an execute from inside our parallel region needs.
dnnl::matmul::primitive_desc single_thread_int8_desc(const PackedLinearInt8& packed, int64_t rows, int64_t stride) {
  const int64_t K = packed.in_features(), N = packed.out_features();
  dnnl::matmul::desc description(plain_rows(rows, K, stride, DataType::s8), packed.weights().get_desc(),
                                 plain_rows(rows, N, N, DataType::s32));
  dnnl::primitive_attr attributes;
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  ScopedNumThreads single(1);
  return make_primitive_desc(description, attributes, rows, K, N, "int8");
}

dnnl::matmul single_thread_primitive(const dnnl::matmul::primitive_desc& desc) {
  ScopedNumThreads single(1);
  return dnnl::matmul(desc);
}

}  // namespace

void PrecisionLinearStep::build_dynamic_int8(const PackedLinearInt8& packed, const Int8Fusion& fusion) {
  int8_ = &packed;
  fusion_ = fusion;
  const int64_t K = packed.in_features(), N = packed.out_features(), M = rows_;
  const dnnl::engine& engine = cpu_engine();
  check(buffers_.row_scales != nullptr && buffers_.accumulators != nullptr,
        "dynamic int8 linear step without row scale and accumulator buffers");
  if (fusion.input.defined()) {
    check(fusion.input.scales != nullptr && fusion.input.stride >= K, "quantized input rows need scales and a stride >= ",
          K, ", got stride ", fusion.input.stride);
    input_rows_ = fusion.input;
  } else {
    check(x_ != nullptr, "int8 linear step without input rows");
    input_rows_ = QuantizedRows{static_cast<int8_t*>(buffers_.activations), buffers_.row_scales, K};
  }
  if (fusion.output.defined()) {
    check(fusion.output.scales != nullptr && fusion.output.stride >= N,
          "quantized output rows need scales and a stride >= ", N, ", got stride ", fusion.output.stride);
  }
  if (fusion.norm_gamma != nullptr) {
    check(fusion.norm_beta != nullptr && epilogue_ == Epilogue::kNone,
          "a fused layer norm needs gamma and beta and no activation");
  }
  if (!fusion.write_f32) {
    check(fusion.output.defined() && fusion.norm_gamma == nullptr && !accumulate_,
          "an int8 step that writes no f32 output must write quantized rows, without norm or residual");
  } else {
    check(y_ != nullptr, "int8 linear step without output rows");
  }

  threads_ = std::max(1, omp_get_max_threads());
  const int64_t blocks = (M + kInt8BlockRows - 1) / kInt8BlockRows;
  // Blocks only when every thread gets at least two (load balance under a dynamic schedule); the
  // accumulator buffer holds M x N values, so threads x block rows x N fit.
  blocked_ = int8_row_blocks() && blocks >= 2 * threads_;
  row_buffers_.assign(static_cast<size_t>(threads_ * N), 0.0f);
  if (!blocked_) {
    memory::desc source_desc = plain_rows(M, K, input_rows_.stride, DataType::s8);
    memory::desc destination_desc = plain_rows(M, N, N, DataType::s32);
    dnnl::primitive_attr attributes;
    attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    primitive_desc_ = make_primitive_desc(dnnl::matmul::desc(source_desc, packed.weights().get_desc(), destination_desc),
                                          attributes, M, K, N, "int8");
    arguments_[DNNL_ARG_SRC] = memory(source_desc, engine, input_rows_.values);
    arguments_[DNNL_ARG_WEIGHTS] = packed.weights();
    arguments_[DNNL_ARG_DST] = memory(destination_desc, engine, buffers_.accumulators);
    primitive_ = dnnl::matmul(primitive_desc_);
    scratchpad_desc_ = primitive_desc_.scratchpad_desc();
    scratchpad_bytes_ = scratchpad_desc_.get_size();
    if (scratchpad_bytes_ == 0) arguments_[DNNL_ARG_SCRATCHPAD] = memory(scratchpad_desc_, engine, nullptr);
    return;
  }
  const int64_t tail = M % kInt8BlockRows;
  primitive_desc_ = single_thread_int8_desc(packed, kInt8BlockRows, input_rows_.stride);
  primitive_ = single_thread_primitive(primitive_desc_);
  size_t per_thread = primitive_desc_.scratchpad_desc().get_size();
  if (tail > 0) {
    tail_desc_ = single_thread_int8_desc(packed, tail, input_rows_.stride);
    tail_primitive_ = single_thread_primitive(tail_desc_);
    per_thread = std::max(per_thread, tail_desc_.scratchpad_desc().get_size());
  }
  thread_scratchpad_bytes_ = align_up(std::max<size_t>(per_thread, 1));
  scratchpad_bytes_ = thread_scratchpad_bytes_ * static_cast<size_t>(threads_);
  block_threads_.resize(threads_);
  for (int thread = 0; thread < threads_; ++thread) {
    BlockThread& state = block_threads_[thread];
    int32_t* accumulators = buffers_.accumulators + thread * kInt8BlockRows * N;  // (block rows, N) of this thread
    state.stream = dnnl::stream(engine);
    state.source = memory(primitive_desc_.src_desc(), engine, input_rows_.values);
    state.arguments = {{DNNL_ARG_SRC, state.source},
                       {DNNL_ARG_WEIGHTS, packed.weights()},
                       {DNNL_ARG_DST, memory(primitive_desc_.dst_desc(), engine, accumulators)}};
    if (tail > 0) {
      state.tail_source = memory(tail_desc_.src_desc(), engine, input_rows_.values);
      state.tail_arguments = {{DNNL_ARG_SRC, state.tail_source},
                              {DNNL_ARG_WEIGHTS, packed.weights()},
                              {DNNL_ARG_DST, memory(tail_desc_.dst_desc(), engine, accumulators)}};
    }
  }
}

void PrecisionLinearStep::bind_scratchpad(void* scratchpad) {
  if (precision_ == Precision::kF32) {
    f32_step_.bind_scratchpad(scratchpad);
    return;
  }
  if (blocked_) {
    for (int thread = 0; thread < threads_; ++thread) {
      char* base = static_cast<char*>(scratchpad) + thread * thread_scratchpad_bytes_;
      BlockThread& state = block_threads_[thread];
      state.arguments[DNNL_ARG_SCRATCHPAD] = memory(primitive_desc_.scratchpad_desc(), cpu_engine(), base);
      if (tail_primitive_) state.tail_arguments[DNNL_ARG_SCRATCHPAD] = memory(tail_desc_.scratchpad_desc(), cpu_engine(), base);
    }
    scratchpad_bound_ = true;
    return;
  }
  arguments_[DNNL_ARG_SCRATCHPAD] = memory(scratchpad_desc_, cpu_engine(), scratchpad);
  scratchpad_bound_ = true;
}

const char* PrecisionLinearStep::implementation() const {
  return precision_ == Precision::kF32 ? f32_step_.implementation() : primitive_desc_.impl_info_str();
}

const char* PrecisionLinearStep::tail_implementation() const {
  return tail_primitive_ ? tail_desc_.impl_info_str() : implementation();
}

void PrecisionLinearStep::run(dnnl::stream& stream) const {
  if (precision_ == Precision::kF32) {
    f32_step_.run(stream);
    return;
  }
  check(scratchpad_bound_ || arguments_.count(DNNL_ARG_SCRATCHPAD) == 1, "linear step run before bind_scratchpad");
  const int64_t K = in_features_;
  if (precision_ == Precision::kBF16) {
    convert_rows_bf16(x_, x_stride_, rows_, K, static_cast<BFloat16*>(buffers_.activations), K);
    primitive_.execute(stream, arguments_);
    return;
  }
  if (int8_->is_static()) {
    quantize_rows_static(x_, x_stride_, rows_, K, int8_->input_scale(), static_cast<int8_t*>(buffers_.activations), K);
    primitive_.execute(stream, arguments_);
    return;
  }
  run_dynamic_int8(stream);
}

void PrecisionLinearStep::run_dynamic_int8(dnnl::stream& stream) const {
  const int64_t K = in_features_, N = int8_->out_features();
  const bool quantize_input = !fusion_.input.defined();
  if (!blocked_) {
    if (quantize_input) {
      quantize_rows_dynamic(x_, x_stride_, rows_, K, input_rows_.values, input_rows_.stride, input_rows_.scales);
    }
    primitive_.execute(stream, arguments_);
    stream.wait();  // the epilogue reads the accumulators
    constexpr int64_t kRowGrain = 4;
    const int64_t chunks = (rows_ + kRowGrain - 1) / kRowGrain;
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) if (chunks > 1)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t begin = chunk * kRowGrain, end = std::min(rows_, begin + kRowGrain);
      int8_epilogue(begin, end, buffers_.accumulators + begin * N, row_buffers_.data() + omp_get_thread_num() * N);
    }
    return;
  }
  // One parallel region for the whole product: each block is quantized, multiplied and finished by
  // one thread while its rows and accumulators are in that core's caches. Dynamic scheduling lets a
  // thread that the OS deschedules leave its blocks to the others.
  const int64_t blocks = (rows_ + kInt8BlockRows - 1) / kInt8BlockRows;
#pragma omp parallel num_threads(threads_)
  {
    const int thread = omp_get_thread_num();
    const BlockThread& state = block_threads_[thread];
    dnnl::stream& thread_stream = const_cast<dnnl::stream&>(state.stream);
    float* row_buffer = row_buffers_.data() + thread * N;
    const int32_t* accumulators = buffers_.accumulators + thread * kInt8BlockRows * N;
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t begin = block * kInt8BlockRows, end = std::min(rows_, begin + kInt8BlockRows);
      int8_t* block_rows = input_rows_.values + begin * input_rows_.stride;
      if (quantize_input) {
        quantize_rows_dynamic(x_ + begin * x_stride_, x_stride_, end - begin, K, block_rows, input_rows_.stride,
                              input_rows_.scales + begin);
      }
      const bool full = end - begin == kInt8BlockRows;
      (full ? state.source : state.tail_source).set_data_handle(block_rows);
      (full ? primitive_ : tail_primitive_).execute(thread_stream, full ? state.arguments : state.tail_arguments);
      thread_stream.wait();
      int8_epilogue(begin, end, accumulators, row_buffer);
    }
  }
}

// For each row m of [begin, end), with acc the product row and s = sx[m] * sw[n]:
//   plain:     y = act(s * acc + b) [+ y_old]                 (chunks of 256 kept in L1)
//   quantized: r = act(s * acc + b), y = r if written, q = quantize(r)   (whole row in row_buffer)
//   norm:      y = LayerNorm(y_old + s * acc + b) in place, q = quantize(y) when wanted
void PrecisionLinearStep::int8_epilogue(int64_t begin, int64_t end, const int32_t* accumulators,
                                        float* row_buffer) const {
  const int64_t N = int8_->out_features();
  const float* weight_scales = int8_->weight_scales().data();
  const float* bias = int8_->has_bias() ? int8_->bias_values().data() : nullptr;
  const bool activate = epilogue_ != Epilogue::kNone;
  const Activation activation = activate ? epilogue_activation(epilogue_) : Activation::kRelu;
  const bool norm = fusion_.norm_gamma != nullptr;
  const bool quantize_output = fusion_.output.defined();
  const float* row_scales = input_rows_.scales;
  // values[i] = s * acc[i] + b[i] (+ residual[i] when given), i in [0, count).
  auto scale_row = [&](float* values, const int32_t* acc, const float* residual, float row_scale, int64_t start,
                       int64_t count) {
#ifdef __AVX512F__
    const __m512 scale = _mm512_set1_ps(row_scale);
    for (int64_t i = 0; i < count; i += simd::kLanes) {
      const __mmask16 mask = simd::tail_mask(count - i);
      const __m512 product = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mask, acc + start + i));
      const __m512 column_scale = _mm512_mul_ps(scale, _mm512_maskz_loadu_ps(mask, weight_scales + start + i));
      __m512 offset = bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + start + i) : _mm512_setzero_ps();
      __m512 value = _mm512_fmadd_ps(product, column_scale, offset);
      if (residual != nullptr) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, residual + i));
      _mm512_mask_storeu_ps(values + i, mask, value);
    }
#else
    for (int64_t i = 0; i < count; ++i) {
      float value = static_cast<float>(acc[start + i]) * (row_scale * weight_scales[start + i]) +
                    (bias != nullptr ? bias[start + i] : 0.0f);
      values[i] = residual != nullptr ? value + residual[i] : value;
    }
#endif
  };
  for (int64_t row = begin; row < end; ++row) {
    const int32_t* acc = accumulators + (row - begin) * N;
    const float row_scale = row_scales[row];
    float* out = y_ + row * y_stride_;
    if (norm) {
      scale_row(out, acc, accumulate_ ? out : nullptr, row_scale, 0, N);
      const float scale = layernorm_quantize_row(out, fusion_.norm_gamma, fusion_.norm_beta, N, fusion_.norm_eps,
                                                 quantize_output ? fusion_.output.values + row * fusion_.output.stride
                                                                 : nullptr);
      if (quantize_output) fusion_.output.scales[row] = scale;
      continue;
    }
    if (quantize_output) {
      scale_row(row_buffer, acc, nullptr, row_scale, 0, N);
      if (activate) activation_forward(activation, row_buffer, N);
      if (fusion_.write_f32) {
        if (accumulate_) {
          for (int64_t i = 0; i < N; ++i) out[i] += row_buffer[i];
        } else {
          std::memcpy(out, row_buffer, N * sizeof(float));
        }
      }
      fusion_.output.scales[row] =
          quantize_row_dynamic(row_buffer, N, fusion_.output.values + row * fusion_.output.stride);
      continue;
    }
    if (!activate) {  // one pass straight into y
      scale_row(out, acc, accumulate_ ? out : nullptr, row_scale, 0, N);
      continue;
    }
    constexpr int64_t kChunk = 256;
    for (int64_t start = 0; start < N; start += kChunk) {
      const int64_t count = std::min(kChunk, N - start);
      scale_row(row_buffer, acc, nullptr, row_scale, start, count);
      activation_forward(activation, row_buffer, count);
      if (accumulate_) {
        for (int64_t j = 0; j < count; ++j) out[start + j] += row_buffer[j];
      } else {
        std::memcpy(out + start, row_buffer, count * sizeof(float));
      }
    }
  }
}

void int8_linear_reference(const float* x, const int8_t* quantized_weight, const float* weight_scales,
                           const float* bias, float input_scale, float* y, int64_t rows, int64_t in_features,
                           int64_t out_features, Epilogue epilogue, bool accumulate) {
  const int64_t K = in_features, N = out_features;
  std::vector<int8_t> quantized(static_cast<size_t>(rows * K));
  std::vector<float> row_scales(rows, input_scale);
  if (input_scale > 0.0f) {
    quantize_rows_static_reference(x, K, rows, K, input_scale, quantized.data(), K);
  } else {
    quantize_rows_dynamic_reference(x, K, rows, K, quantized.data(), K, row_scales.data());
  }
  std::vector<float> x_dequantized(static_cast<size_t>(rows * K)), w_dequantized(static_cast<size_t>(N * K));
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t k = 0; k < K; ++k) x_dequantized[m * K + k] = quantized[m * K + k] * row_scales[m];
  }
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) w_dequantized[n * K + k] = quantized_weight[n * K + k] * weight_scales[n];
  }
  linear_reference(x_dequantized.data(), w_dequantized.data(), bias, y, rows, K, N, epilogue, accumulate);
}

void bf16_linear_reference(const float* x, const float* weight, const float* bias, float* y, int64_t rows,
                           int64_t in_features, int64_t out_features, Epilogue epilogue, bool accumulate) {
  auto rounded = [](const float* values, int64_t count) {
    std::vector<float> result(values, values + count);
    for (float& value : result) value = bf16_to_float(float_to_bf16(value));
    return result;
  };
  const std::vector<float> x_rounded = rounded(x, rows * in_features);
  const std::vector<float> w_rounded = rounded(weight, out_features * in_features);
  linear_reference(x_rounded.data(), w_rounded.data(), bias, y, rows, in_features, out_features, epilogue, accumulate);
}

}  // namespace scalebert::kernels
