// Forward and backward of BERT and its task heads for training, over packed batches.
//
// The graph keeps every activation the backward pass needs, per layer, in one arena planned from the
// batch capacity (tokens, sequences, longest sequence) before the first step; oneDNN steps are made
// once per shape class (rows rounded up like inference) and bound to those buffers, so a training step
// allocates nothing. Parameters and gradients are the model's ParameterTable arenas: gradients are
// ADDED (so micro-batches accumulate) and every activation gradient is overwritten.
//
// Pad rows between the real token count N and its bucket M hold zeros in every gradient buffer and
// finite values in every activation buffer: elementwise kernels run on N rows only, products run on
// M rows, so a zero dy row contributes nothing to dW, db or dx. This is why the arena is zeroed once
// when it is made.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "core/arena.h"
#include "kernels/cpu/linear_backward.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "kernels/cpu/matmul.h"
#include "model/bert_model.h"
#include "model/packed_batch.h"

namespace scalebert {

// One micro-batch with the targets of the model's head.
struct TrainingBatch {
  PackedBatch tokens;
  // Sequence classification: (S) label ids. Token classification and masked LM: (N) per packed token,
  // -100 where no loss is taken (continuation sub-words, special tokens, unmasked tokens).
  std::vector<int32_t> labels;
  // Question answering: (S) token positions inside each sequence; a position >= its length is ignored.
  std::vector<int32_t> start_positions;
  std::vector<int32_t> end_positions;
};

struct DropoutRates {
  float hidden = 0.1f;      // embeddings, attention output, feed-forward output (hidden_dropout_prob)
  float attention = 0.1f;   // attention probabilities (attention_probs_dropout_prob)
  float classifier = 0.1f;  // before the classification heads (classifier_dropout, else hidden)

  static DropoutRates from_config(const BertConfig& config);
  static DropoutRates none() { return DropoutRates{0.0f, 0.0f, 0.0f}; }
};

struct StepLoss {
  double loss = 0.0;   // mean loss of the micro-batch, as transformers reports it
  int64_t count = 0;   // targets counted (rows or sequences not ignored)
};

class TrainingGraph {
 public:
  // `model` must outlive the graph; `gradients` is an arena of model.parameters' layout
  // (ParameterTable::make_arena). Throws Unsupported for a model whose Q/K/V parameters are not
  // contiguous (hidden size not a multiple of 16) or that has no task head.
  // `products` kBF16 selects mixed precision (the .cc's header comment): the encoder layers' token-row
  // products read bf16 copies of their weights and inputs and accumulate in f32; parameters,
  // gradients, every other operation and the optimizer stay f32. On a CPU without AVX512_BF16 it
  // falls back to f32 with a warning (kernels::supported_precision); kInt8 is InvalidArgument.
  TrainingGraph(BertModel& model, Tensor gradients, DropoutRates dropout,
                kernels::Precision products = kernels::Precision::kF32);
  ~TrainingGraph();

  // Forward, loss and backward of one micro-batch with dropout drawn from (seed, step). Gradients
  // are multiplied by grad_scale (1/k for k accumulated micro-batches) and ADDED into the arena.
  // Throws InvalidArgument for labels of the wrong count or out of range, naming the index.
  StepLoss forward_backward(const TrainingBatch& batch, float grad_scale, uint64_t seed);

  // Forward and loss only, dropout off (evaluation). The logits stay valid until the next call:
  // (S, L) for sequence classification, (N, L) token classification, (N, 2) QA, (R, V) masked LM
  // over the R tokens with a label.
  StepLoss evaluate(const TrainingBatch& batch, Tensor* logits = nullptr);

  const Tensor& gradients() const { return gradients_; }
  // The precision the encoder's products run in (after the CPU fallback).
  kernels::Precision products() const { return bf16_ ? kernels::Precision::kBF16 : kernels::Precision::kF32; }
  size_t planned_bytes() const {
    return arena_.capacity() + scratchpad_bytes_ + (bf16_weights_.defined() ? bf16_weights_.nbytes() : 0);
  }

 private:
  struct Layer;          // one encoder layer: parameters, gradients, packed weights, saved activations
  struct Buffers;        // activations and gradients shared by all layers and the heads
  struct TokenSteps;     // products over the token rows of one bucket
  struct SequenceSteps;  // products over one row per sequence (pooler, sequence classifier)
  struct MaskedSteps;    // products over the masked-LM rows of one bucket

  StepLoss run(const TrainingBatch& batch, float grad_scale, uint64_t seed, bool train, Tensor* logits);
  void reserve(int64_t tokens, int64_t sequences, int64_t max_length, int64_t masked_rows);
  TokenSteps& token_steps(int64_t rows);
  SequenceSteps& sequence_steps(int64_t rows);
  MaskedSteps& masked_steps(int64_t rows);
  void bind_scratchpad(size_t bytes);
  void bind_sequence_scratchpad(SequenceSteps& steps);
  // Sequence classification's last layer after the attention, on the [CLS] rows only (the .cc's
  // header comment): forward writes the S rows of the final hidden state into the [CLS] buffer;
  // backward starts from their gradient and leaves d context and the residual d x on token rows.
  void cls_layer_forward(Layer& layer, SequenceSteps& sequence, int64_t S, float p_hidden, uint64_t seed,
                         uint64_t& offset);
  void cls_layer_backward(Layer& layer, SequenceSteps& sequence, int64_t N, int64_t S, float p_hidden, uint64_t seed);
  void check_labels(const TrainingBatch& batch) const;
  // Mixed precision: rounds the current f32 weights of the encoder's products into their bf16 copies.
  void round_weights_to_bf16();
  Tensor parameter(const std::string& name) const { return model_.parameters.get(name); }
  float* gradient(const std::string& name) const;

  BertModel& model_;
  Tensor gradients_;
  DropoutRates dropout_;
  bool bf16_ = false;
  Tensor bf16_weights_;  // (total) BF16: every layer's rounded product weights, when bf16_
  dnnl::stream stream_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<kernels::PackedLinear> pooler_, classifier_, mlm_transform_, mlm_decoder_;
  std::unique_ptr<Buffers> buffers_;
  Arena arena_;
  int64_t token_capacity_ = 0, sequence_capacity_ = 0, length_capacity_ = 0, masked_capacity_ = 0;

  std::shared_ptr<void> scratchpad_;
  size_t scratchpad_bytes_ = 0;
  std::map<int64_t, std::unique_ptr<TokenSteps>> token_steps_;
  std::map<int64_t, std::unique_ptr<SequenceSteps>> sequence_steps_;
  std::map<int64_t, std::unique_ptr<MaskedSteps>> masked_steps_;
};

}  // namespace scalebert
