// The execution plan of BERT inference on the CPU.
//
// A session owns every activation buffer, sized once for a token and sequence capacity, and for
// each shape class (number of packed token rows rounded up to a bucket, number of sequences) the
// oneDNN steps bound to those buffers. After the first batch of a shape class, a forward pass
// allocates nothing: it runs the prepared steps and the kernels over the same memory.
// Sessions are single-threaded objects (each uses the OpenMP team inside its kernels); run several
// sessions over one InferenceWeights for concurrent instances.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "kernels/cpu/matmul.h"
#include "model/inference_weights.h"
#include "model/packed_batch.h"

namespace scalebert {

// Views into the session's buffers, valid until the next run(). Rows are packed (N real tokens,
// S sequences); unpack_rows() turns token rows back into a padded (B, T, W) tensor.
struct InferenceOutputs {
  // (N, C) last_hidden_state; undefined when the run computed the last layer on the [CLS] rows only
  // (InferenceSession::set_sequence_outputs_only).
  Tensor hidden;
  // (S, C) the last layer's [CLS] rows (row s = hidden row offsets[s]); defined when the model has a
  // pooler or a sequence-classification head, and in every sequence-outputs-only run.
  Tensor cls_hidden;
  Tensor pooled;  // (S, C) pooler_output; undefined without a pooler
  // Head outputs: sequence classification (S, L); token classification (N, L);
  // question answering (N, 2) with columns [start, end]; masked LM (N, V); undefined for no head.
  Tensor logits;
};

class InferenceSession {
 public:
  explicit InferenceSession(std::shared_ptr<const InferenceWeights> weights);

  // Sizes the buffers for batches of up to `tokens` packed tokens, `sequences` sequences and
  // sequences of up to `max_length` tokens (a larger batch later grows them once).
  void reserve(int64_t tokens, int64_t sequences, int64_t max_length);
  // Builds the steps of the shape class of (tokens, sequences) ahead of time (server warm-up).
  void prepare(int64_t tokens, int64_t sequences);

  // Runs the encoder and the model's head. Throws InvalidArgument for an empty batch, a sequence
  // longer than max_position_embeddings, or a token/type id outside its table.
  const InferenceOutputs& run(const PackedBatch& batch);

  const InferenceWeights& weights() const { return *weights_; }
  // Bytes of activation memory planned (arena plus oneDNN scratchpad).
  size_t planned_bytes() const { return arena_.capacity() + scratchpad_bytes_; }

  // Per-phase wall time, accumulated over runs while profiling is on (for benchmarks and tuning).
  enum Phase { kEmbedding, kQkv, kAttention, kAttentionOut, kLayerNorm, kIntermediate, kOutput, kHead, kPhaseCount };
  static const char* phase_name(int phase);
  void set_profiling(bool on);
  const double* phase_seconds() const { return phase_seconds_; }

  // Rows a packed batch of `rows` is computed with: exact up to 16, then rounded up so that at most
  // 1/16 extra rows are computed while few shape classes exist (about 16 per doubling).
  static int64_t bucket_rows(int64_t rows);

  // Sequence outputs only (off by default): for callers that read nothing but cls_hidden, pooled
  // and sequence-classification logits. Everything in a layer after the attention is row-wise, so
  // the last layer then computes Q, K, V and the attention for every token (each [CLS] query attends
  // to all keys and values) but the attention output, LN1, the feed-forward block and LN2 for the
  // S [CLS] rows only: exact, since the other rows' outputs feed nothing (all-MiniLM-L6-v2: about
  // 12% of the forward pass's products saved). run() then leaves outputs.hidden undefined. Ignored
  // (every row computed) while a LinearObserver is set, and for heads that read token rows (token
  // classification, question answering, masked LM).
  void set_sequence_outputs_only(bool on) { sequence_outputs_only_ = on; }
  bool sequence_outputs_only() const { return sequence_outputs_only_; }

  // Calibration and error reports: when set, run() calls the observer with the input rows of every
  // Linear just before it runs, naming the layer by its PrecisionPlan prefix (x: (rows, width),
  // contiguous). Unset (the default) costs one branch per layer.
  using LinearObserver = std::function<void(const std::string& linear, const float* x, int64_t rows, int64_t width)>;
  void set_linear_observer(LinearObserver observer) { observer_ = std::move(observer); }

 private:
  using Step = kernels::PrecisionLinearStep;
  struct TokenSteps {  // products over the token rows of one bucket
    struct Layer {
      Step qkv, attention_out, intermediate, output;
      // Dynamic int8 steps that end with their layer norm (run() then skips the separate one).
      bool attention_norm_fused = false, output_norm_fused = false;
    };
    std::vector<Layer> layers;
    Step classifier;     // token classification and QA
    Step mlm_transform, mlm_decoder;
  };
  struct SequenceSteps {  // products over one row per sequence
    Step pooler, classifier;
    // The last layer past its attention over the [CLS] rows (sequence-outputs-only runs), unfused
    // in every precision: attention_out and output add into cls_rows_, the layer norms run apart.
    Step attention_out, intermediate, output;
  };

  // `fused`: dynamic int8 layers pass quantized rows to each other and end with their layer norm
  // (kernels::Int8Fusion); off while an observer needs every Linear's f32 input.
  TokenSteps& token_steps(int64_t rows, bool fused);
  // `cls_layer`: also the last layer's [CLS]-row steps (built the first time they are asked for).
  SequenceSteps& sequence_steps(int64_t rows, bool cls_layer);
  // Whether run() computes the last layer on the [CLS] rows only (see set_sequence_outputs_only).
  bool cls_layer_only() const;
  void bind_scratchpad(Step& step);
  void observe(const std::string& linear, const float* x, int64_t rows, int64_t width) const {
    if (observer_) observer_(linear, x, rows, width);
  }

  std::shared_ptr<const InferenceWeights> weights_;
  dnnl::stream stream_;

  int64_t token_capacity_ = 0;
  int64_t sequence_capacity_ = 0;
  int64_t length_capacity_ = 0;
  Arena arena_;
  float* hidden_ = nullptr;         // (M, C)
  float* qkv_ = nullptr;            // (M, 3C)
  float* context_ = nullptr;        // (M, C)
  float* intermediate_ = nullptr;   // (M, I); also the MLM transform output (M, C)
  float* token_logits_ = nullptr;   // (M, L) or (M, V) for masked LM
  float* cls_rows_ = nullptr;       // (S, C) last layer's [CLS] rows; the [CLS]-row layer's residual stream
  float* cls_context_ = nullptr;    // (S, C) attention context of the [CLS] rows (sequence outputs only)
  float* cls_intermediate_ = nullptr;  // (S, I) activated intermediate of the [CLS] rows (sequence outputs only)
  float* pooled_ = nullptr;         // (S, C)
  float* sequence_logits_ = nullptr;  // (S, L)
  int64_t* offsets_ = nullptr;      // (S + 1)
  // int8 word embeddings only: the batch's rows dequantized (M, C), gathered by ids 0..N-1 (M).
  float* word_rows_ = nullptr;
  int32_t* word_row_ids_ = nullptr;
  float* attention_scratch_ = nullptr;
  int64_t attention_scratch_floats_ = 0;
  // bf16/int8 layers only: their input rows as bf16 or s8 (M, max(C, I)), per-row scales (M) and
  // int32 products (M, max(3C, I, L)).
  kernels::LowPrecisionBuffers low_precision_;
  // Fused dynamic int8 only: the hidden rows (M, C) and the activated intermediate rows (M, I) in
  // int8 with per-row scales, written by the epilogue that produced them.
  kernels::QuantizedRows hidden_int8_;
  kernels::QuantizedRows intermediate_int8_;
  LinearObserver observer_;
  bool sequence_outputs_only_ = false;

  std::shared_ptr<void> scratchpad_;  // oneDNN scratchpad shared by every step (steps run one at a time)
  size_t scratchpad_bytes_ = 0;
  std::map<std::pair<int64_t, bool>, std::unique_ptr<TokenSteps>> token_steps_;  // by (rows, fused)
  std::map<int64_t, std::unique_ptr<SequenceSteps>> sequence_steps_;
  InferenceOutputs outputs_;
  bool profiling_ = false;
  double phase_seconds_[kPhaseCount] = {};
};

}  // namespace scalebert
