// Linear layers in bf16 and int8 through oneDNN, a precision-agnostic Linear/step pair the
// execution plan uses for every layer, and dequantize-then-f32 references of both paths.
//
// int8 (VNNI). Weights are symmetric int8 per output channel, w[n, k] ~= qw[n, k] * sw[n];
// activations are symmetric int8 per token row, x[m, k] ~= qx[m, k] * sx[m] (dynamic: sx from the
// row's max |x|; static: one calibrated sx for every row). Then
//     y[m, n] = sx[m] * sw[n] * sum_k qx[m, k] qw[n, k] + b[n]
// with the sum exact in int32. The VNNI instruction (VPDPBUSD) multiplies an UNSIGNED byte by a
// signed byte, so oneDNN runs an s8 source as u8 = qx + 128 and removes the shift afterwards:
//     sum_k (qx + 128) qw = sum_k qx qw + 128 * sum_k qw[n, k]
// The column sums 128 * sum_k qw[n, k] (the "compensation") are computed once, when the weights
// are reordered into oneDNN's blocked layout (they sit after the weights in the same buffer, which
// is why that layout carries an extra flag), and subtracted in the kernel: no per-call cost.
// oneDNN 2.6 on AVX-512 VNNI runs s8 x s8 -> s32 and s8 x s8 -> f32 with CONSTANT per-column output
// scales in its brgemm kernels, but a per-row (runtime) scale falls back to slow reference or gemm
// kernels. So:
//   dynamic: s8 x s8 -> s32, then our own epilogue pass over the (M, N) accumulators:
//            y = act(sx[m] * sw[n] * acc + b[n]) [+ y_old]
//   static:  everything in one oneDNN primitive: output scales sx * sw[n] (constant per column),
//            bias, activation and residual sum as post-ops. oneDNN 2.x adds the bias BEFORE the
//            output scales (v3 changed this), so the packed bias is b[n] / (sx * sw[n]).
// bf16 (AVX512_BF16): activations rounded to bf16 rows by VCVTNE2PS2BF16, weights bf16 in
// oneDNN's layout, f32 accumulation and output with bias, activation and sum post-ops fused.
//
// Dynamic int8 fusions (Int8Fusion). The int8 products run near the VNNI peak, so what costs is
// every pass over memory around them. A dynamic step can
//   - read its input already quantized (QuantizedRows written by the producer while the rows were
//     hot) instead of quantizing x itself;
//   - quantize its own output rows for the next Linear (after the activation: the intermediate
//     Linear then never writes its f32 output at all);
//   - finish with LayerNorm(y_old + x W^T + b), the post-LN block ending, and quantize that.
// Large M runs row blocks (kInt8BlockRows): each OpenMP thread takes a block, quantizes its input
// rows, runs a single-threaded oneDNN product on them into its own accumulator slice (which stays
// in L2) and runs the epilogue at once; the s32 accumulators never travel through DRAM. Small M
// (too few blocks to share among the threads) runs one multithreaded product, then the epilogue.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "kernels/cpu/matmul.h"

namespace scalebert::kernels {

enum class Precision : uint8_t { kF32, kBF16, kInt8 };

// "f32", "bf16", "int8"; precision_from_name throws InvalidArgument naming an unknown value.
std::string_view precision_name(Precision precision);
Precision precision_from_name(std::string_view name);

// Whether oneDNN runs int8 / bf16 products natively on this CPU (it honours ONEDNN_MAX_CPU_ISA and
// dnnl::set_max_cpu_isa, which is how tests simulate an older CPU).
bool cpu_has_int8_dot_product();  // AVX-512 VNNI (or AVX-VNNI)
bool cpu_has_bf16();              // AVX512_BF16
// `wanted` when the CPU runs it natively; otherwise F32, with one warning per process on stderr
// that names the missing instructions (the model still runs, at f32 speed and accuracy).
Precision supported_precision(Precision wanted);

// Scratch rows shared by every low-precision step of a plan (steps run one at a time).
struct LowPrecisionBuffers {
  void* activations = nullptr;       // (M, K) the step's input as s8 or bf16 rows
  float* row_scales = nullptr;       // (M) dynamic int8 activation scales
  int32_t* accumulators = nullptr;   // (M, N) dynamic int8 products
};

// Activation rows in symmetric int8 with one scale per row: x[m, k] ~= values[m, k] * scales[m].
struct QuantizedRows {
  int8_t* values = nullptr;  // (M, K) with row stride `stride`
  float* scales = nullptr;   // (M)
  int64_t stride = 0;
  bool defined() const { return values != nullptr; }
};

// Optional fusions of a dynamic int8 step (see the file comment). Every field off: the plain step.
struct Int8Fusion {
  QuantizedRows input;     // defined: the step reads these rows (K wide) instead of quantizing x
  QuantizedRows output;    // defined: the step's output rows (N wide, after activation / norm) quantized here
  bool write_f32 = true;   // false: y is not written (needs `output`, and no norm or accumulate)
  // Non-null: y = LayerNorm(y_old + x W^T + b) over the N = C columns (accumulate must be on and
  // the epilogue kNone); y is written, then quantized into `output` when that is defined.
  const float* norm_gamma = nullptr;  // (N)
  const float* norm_beta = nullptr;   // (N)
  float norm_eps = 0.0f;
  bool any() const { return input.defined() || output.defined() || norm_gamma != nullptr || !write_f32; }
};

// Rows per block of the blocked dynamic int8 step: the block's s32 accumulators (64 x 3072 x 4 B =
// 768 KiB at the widest BERT-base product) stay in a Zen 4 core's 1 MiB L2 with its input rows.
inline constexpr int64_t kInt8BlockRows = 64;
// Whether dynamic int8 steps built from now on may use the blocked mode (default on); benchmarks
// turn it off to compare with one multithreaded product followed by the epilogue pass.
void set_int8_row_blocks(bool enabled);
bool int8_row_blocks();

class PackedLinearInt8 {
 public:
  // weight: (N, K) F32, quantized here per output channel; bias: (N) F32 or undefined.
  // input_scale > 0 selects the static mode with that activation scale; 0 the dynamic mode.
  PackedLinearInt8(const Tensor& weight, const Tensor& bias, float input_scale);

  int64_t out_features() const { return out_features_; }
  int64_t in_features() const { return in_features_; }
  bool has_bias() const { return !bias_values_.empty(); }
  float input_scale() const { return input_scale_; }
  bool is_static() const { return input_scale_ > 0.0f; }
  const dnnl::memory& weights() const { return weights_; }  // (K, N) s8 blocked + compensation
  const std::vector<float>& weight_scales() const { return weight_scales_; }  // (N)
  const std::vector<float>& bias_values() const { return bias_values_; }      // (N) or empty
  // Static mode only: output scales input_scale * sw[n] and the pre-scale bias b[n] / that.
  const std::vector<float>& output_scales() const { return output_scales_; }
  const dnnl::memory& static_bias() const { return static_bias_; }

 private:
  int64_t out_features_ = 0;
  int64_t in_features_ = 0;
  float input_scale_ = 0.0f;
  dnnl::memory weights_;
  std::vector<float> weight_scales_;
  std::vector<float> bias_values_;
  std::vector<float> output_scales_;
  dnnl::memory static_bias_;  // (1, N)
};

class PackedLinearBf16 {
 public:
  // weight: (N, K) F32 rounded to bf16 (nearest even); bias: (N) F32 (kept F32) or undefined.
  PackedLinearBf16(const Tensor& weight, const Tensor& bias);

  int64_t out_features() const { return out_features_; }
  int64_t in_features() const { return in_features_; }
  bool has_bias() const { return has_bias_; }
  const dnnl::memory& weights() const { return weights_; }  // (K, N) bf16 blocked
  const dnnl::memory& bias() const { return bias_; }        // (1, N) f32

 private:
  int64_t out_features_ = 0;
  int64_t in_features_ = 0;
  bool has_bias_ = false;
  dnnl::memory weights_;
  dnnl::memory bias_;
};

// A Linear layer packed in one precision (after supported_precision's fallback).
class PrecisionLinear {
 public:
  PrecisionLinear(const Tensor& weight, const Tensor& bias, Precision precision, float input_scale = 0.0f);

  Precision precision() const { return precision_; }
  int64_t out_features() const { return out_features_; }
  int64_t in_features() const { return in_features_; }
  const PackedLinear* f32() const { return f32_.get(); }
  const PackedLinearInt8* int8() const { return int8_.get(); }
  const PackedLinearBf16* bf16() const { return bf16_.get(); }
  // Bytes of the packed weights (with the int8 compensation), scales and bias.
  size_t bytes() const;

 private:
  Precision precision_ = Precision::kF32;
  int64_t out_features_ = 0;
  int64_t in_features_ = 0;
  std::unique_ptr<PackedLinear> f32_;
  std::unique_ptr<PackedLinearInt8> int8_;
  std::unique_ptr<PackedLinearBf16> bf16_;
};

// One Linear over M rows bound to fixed buffers, in the layer's precision, with LinearStep's
// contract: y = epilogue(x W^T + b) [+ y_old]; x: (M, K) row stride x_stride; y: (M, N) row stride
// y_stride; y must not alias x. Low-precision steps also use `buffers` (sized for M rows, K and N).
// `fusion` (dynamic int8 only; InvalidArgument otherwise) changes where the input comes from and
// what is written, see Int8Fusion; x may then be null when fusion.input is defined, y null when
// write_f32 is false.
class PrecisionLinearStep {
 public:
  PrecisionLinearStep() = default;
  PrecisionLinearStep(const PrecisionLinear& linear, const float* x, int64_t x_stride, float* y, int64_t y_stride,
                      int64_t rows, Epilogue epilogue, bool accumulate, const LowPrecisionBuffers& buffers,
                      const Int8Fusion& fusion = {});

  size_t scratchpad_bytes() const { return scratchpad_bytes_; }
  void bind_scratchpad(void* scratchpad);
  void run(dnnl::stream& stream) const;
  bool defined() const { return defined_; }
  Precision precision() const { return precision_; }
  // Whether the dynamic int8 step runs in row blocks (one single-threaded product per block).
  bool blocked() const { return blocked_; }
  // The oneDNN implementation of the product, e.g. "brg:avx512_core_vnni" (of a full block when
  // blocked; the tail block's, when there is one, is tail_implementation()).
  const char* implementation() const;
  const char* tail_implementation() const;

 private:
  // Per-thread state of the blocked mode: oneDNN memory objects re-pointed at each block.
  struct BlockThread {
    dnnl::stream stream;
    dnnl::memory source, tail_source;  // re-pointed at each block's rows
    std::unordered_map<int, dnnl::memory> arguments, tail_arguments;  // full and tail blocks
  };
  void build_dynamic_int8(const PackedLinearInt8& packed, const Int8Fusion& fusion);
  void run_dynamic_int8(dnnl::stream& stream) const;
  // Epilogue of rows [begin, end): accumulators row r at accumulators + (r - begin) * N.
  void int8_epilogue(int64_t begin, int64_t end, const int32_t* accumulators, float* row_buffer) const;

  bool defined_ = false;
  Precision precision_ = Precision::kF32;
  LinearStep f32_step_;  // the f32 path, unchanged
  const PackedLinearInt8* int8_ = nullptr;
  const float* x_ = nullptr;
  float* y_ = nullptr;
  int64_t x_stride_ = 0, y_stride_ = 0, rows_ = 0, in_features_ = 0;
  Epilogue epilogue_ = Epilogue::kNone;
  bool accumulate_ = false;
  LowPrecisionBuffers buffers_;
  Int8Fusion fusion_;
  QuantizedRows input_rows_;  // where the dynamic int8 product reads its s8 rows and scales
  dnnl::matmul::primitive_desc primitive_desc_;
  dnnl::matmul primitive_;
  std::unordered_map<int, dnnl::memory> arguments_;
  dnnl::memory::desc scratchpad_desc_;
  size_t scratchpad_bytes_ = 0;
  bool scratchpad_bound_ = false;
  // Blocked dynamic int8.
  bool blocked_ = false;
  int threads_ = 1;
  dnnl::matmul::primitive_desc tail_desc_;
  dnnl::matmul tail_primitive_;
  size_t thread_scratchpad_bytes_ = 0;
  std::vector<BlockThread> block_threads_;
  mutable std::vector<float> row_buffers_;  // (threads, N) epilogue rows, scratch of run()
};

// References (plain loops, double accumulation through linear_reference): the fast paths compute
// exactly these quantities up to float rounding of the final scaling.
// int8: x rows quantized as the fast path does (dynamic when input_scale == 0), both operands
// dequantized, f32 product. quantized_weight: (N, K); weight_scales: (N).
void int8_linear_reference(const float* x, const int8_t* quantized_weight, const float* weight_scales,
                           const float* bias, float input_scale, float* y, int64_t rows, int64_t in_features,
                           int64_t out_features, Epilogue epilogue, bool accumulate);
// bf16: x and weight rounded to bf16, f32 product. weight: (N, K) F32.
void bf16_linear_reference(const float* x, const float* weight, const float* bias, float* y, int64_t rows,
                           int64_t in_features, int64_t out_features, Epilogue epilogue, bool accumulate);

}  // namespace scalebert::kernels
