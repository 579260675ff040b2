// BERT inference forward pass over packed sequences (post-LN, Hugging Face BertModel semantics):
//   h = LN(word[id] + pos[p] + type[t])
//   per layer:  qkv = h Wqkv^T + bqkv                      (one product for Q, K, V)
//               ctx = softmax(Q K^T / sqrt(HS)) V           (per sequence and head, packed)
//               h   = LN(h + ctx Wo^T + bo)                 (residual fused as a sum post-op)
//               f   = act(h W1^T + b1)                      (activation fused)
//               h   = LN(h + f W2^T + b2)
//   pooler:     pooled = tanh(h[CLS] Wp^T + bp)
// Dropout is the identity at inference.
//
// Sequence outputs only (set_sequence_outputs_only): the last layer runs qkv and the attention over
// every token row as above, then gathers row offsets[s] of ctx and of its input h for each sequence s
// and runs the rest of the layer on those S rows (as the training graph's cls_layer_forward does):
//   cls = LN(h[CLS] + ctx[CLS] Wo^T + bo);  cls = LN(cls + act(cls W1^T + b1) W2^T + b2)
// These steps are unfused in every precision (a PrecisionLinearStep with the residual sum, then
// layernorm_forward), so they need no quantized rows from a producer; the fused dynamic int8 chain
// still hands the last layer's qkv its quantized input, since the token steps run unchanged up to
// the last attention. Per row the math is the fused one's (its layer norm and quantizer are bit
// for bit layernorm_forward's and quantize_rows_dynamic's).
#include "model/inference_session.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/pooling.h"

namespace scalebert {

using kernels::Epilogue;
using LinearStep = kernels::PrecisionLinearStep;

InferenceSession::InferenceSession(std::shared_ptr<const InferenceWeights> weights)
    : weights_(std::move(weights)), stream_(kernels::cpu_engine()) {
  check(weights_ != nullptr, "inference session needs weights");
}

int64_t InferenceSession::bucket_rows(int64_t rows) {
  if (rows <= 16) return rows;
  const int64_t granularity = static_cast<int64_t>(std::bit_floor(static_cast<uint64_t>(rows))) / 16;
  return (rows + granularity - 1) / granularity * granularity;
}

void InferenceSession::reserve(int64_t tokens, int64_t sequences, int64_t max_length) {
  const BertConfig& config = weights_->model->config;
  const int64_t M = bucket_rows(std::max(tokens, token_capacity_));
  const int64_t S = bucket_rows(std::max(sequences, sequence_capacity_));
  const int64_t L = std::max(max_length, length_capacity_);
  const int64_t threads = num_threads();
  const int64_t attention_floats = kernels::attention_scratch_floats(L, config.head_size(), static_cast<int>(threads));
  if (M <= token_capacity_ && S <= sequence_capacity_ && attention_floats <= attention_scratch_floats_) return;

  const int64_t C = config.hidden_size;
  const int64_t I = config.intermediate_size;
  const int64_t head_width = weights_->mlm_decoder ? config.vocab_size
                             : weights_->classifier ? weights_->classifier->out_features()
                                                    : 0;
  const bool int8_words = weights_->word_embeddings_int8.defined();
  const size_t floats_per_token =
      static_cast<size_t>(C + 3 * C + C + std::max(I, C) + head_width + (int8_words ? C + 1 : 0));
  // cls_rows_, pooled_, sequence_logits_, cls_context_, cls_intermediate_.
  const size_t floats_per_sequence = static_cast<size_t>(C + C + head_width + C + I);
  // One kAlignment of slack per allocation below (at most 16).
  size_t bytes = align_up(M * floats_per_token * sizeof(float)) + align_up(S * floats_per_sequence * sizeof(float)) +
                 align_up((S + 1) * sizeof(int64_t)) + align_up(attention_floats * sizeof(float)) + 16 * kAlignment;
  // Sequence rows never outnumber token rows (every sequence has a token), so M rows serve both.
  const int64_t low_in = std::max(C, I);
  const int64_t low_out = std::max({3 * C, I, weights_->classifier ? weights_->classifier->out_features() : 0});
  if (weights_->low_precision) {
    bytes += align_up(M * low_in * sizeof(uint16_t)) + align_up(M * sizeof(float)) +
             align_up(M * low_out * sizeof(int32_t)) + 4 * kAlignment;
    bytes += align_up(M * (C + I)) + 2 * align_up(M * sizeof(float)) + 4 * kAlignment;  // int8 hidden, intermediate
  }
  arena_ = Arena(bytes);
  std::memset(arena_.block().get(), 0, arena_.capacity());  // pad rows stay finite forever
  auto floats = [&](int64_t count) { return static_cast<float*>(arena_.allocate(count * sizeof(float))); };
  hidden_ = floats(M * C);
  qkv_ = floats(M * 3 * C);
  context_ = floats(M * C);
  intermediate_ = floats(M * std::max(I, C));
  token_logits_ = floats(M * head_width);
  cls_rows_ = floats(S * C);
  pooled_ = floats(S * C);
  sequence_logits_ = floats(S * head_width);
  cls_context_ = floats(S * C);
  cls_intermediate_ = floats(S * I);
  offsets_ = static_cast<int64_t*>(arena_.allocate((S + 1) * sizeof(int64_t)));
  if (int8_words) {
    word_rows_ = floats(M * C);
    word_row_ids_ = static_cast<int32_t*>(arena_.allocate(M * sizeof(int32_t)));
  }
  attention_scratch_ = floats(attention_floats);
  attention_scratch_floats_ = attention_floats;
  low_precision_ = kernels::LowPrecisionBuffers{};
  if (weights_->low_precision) {
    low_precision_.activations = arena_.allocate(M * low_in * sizeof(uint16_t));
    low_precision_.row_scales = floats(M);
    low_precision_.accumulators = static_cast<int32_t*>(arena_.allocate(M * low_out * sizeof(int32_t)));
    hidden_int8_ = kernels::QuantizedRows{static_cast<int8_t*>(arena_.allocate(M * C)), floats(M), C};
    intermediate_int8_ = kernels::QuantizedRows{static_cast<int8_t*>(arena_.allocate(M * I)), floats(M), I};
  }
  token_capacity_ = M;
  sequence_capacity_ = S;
  length_capacity_ = L;
  // Steps are bound to the old buffers: rebuild them lazily.
  token_steps_.clear();
  sequence_steps_.clear();
}

void InferenceSession::bind_scratchpad(LinearStep& step) {
  if (step.scratchpad_bytes() > scratchpad_bytes_) {
    // A larger scratchpad: rebind every existing step to the new block.
    scratchpad_bytes_ = step.scratchpad_bytes();
    scratchpad_ = allocate_aligned(scratchpad_bytes_);
    for (auto& [rows, steps] : token_steps_) {
      for (auto& layer : steps->layers) {
        for (LinearStep* each : {&layer.qkv, &layer.attention_out, &layer.intermediate, &layer.output}) {
          each->bind_scratchpad(scratchpad_.get());
        }
      }
      for (LinearStep* each : {&steps->classifier, &steps->mlm_transform, &steps->mlm_decoder}) {
        if (each->defined()) each->bind_scratchpad(scratchpad_.get());
      }
    }
    for (auto& [rows, steps] : sequence_steps_) {
      for (LinearStep* each :
           {&steps->pooler, &steps->classifier, &steps->attention_out, &steps->intermediate, &steps->output}) {
        if (each->defined()) each->bind_scratchpad(scratchpad_.get());
      }
    }
  }
  step.bind_scratchpad(scratchpad_.get());
}

namespace {
bool dynamic_int8(const kernels::PrecisionLinear& linear) {
  return linear.precision() == kernels::Precision::kInt8 && !linear.int8()->is_static();
}
}  // namespace

InferenceSession::TokenSteps& InferenceSession::token_steps(int64_t rows, bool fused) {
  auto found = token_steps_.find({rows, fused});
  if (found != token_steps_.end()) return *found->second;
  const BertConfig& config = weights_->model->config;
  const int64_t C = config.hidden_size;
  const int64_t I = config.intermediate_size;
  const float eps = static_cast<float>(config.layer_norm_eps);
  auto steps = std::make_unique<TokenSteps>();
  // Which producer hands the next Linear its input already quantized (see kernels::Int8Fusion):
  //   attention_out (+ residual, LN, quantize) -> intermediate (GELU, quantize; no f32 written)
  //   -> output (+ residual, LN, quantize) -> next layer's qkv. The attention context is quantized
  //   by the attention_out step itself, block by block.
  bool hidden_quantized = false;  // hidden_int8_ holds the current hidden rows
  const size_t layer_count = weights_->layers.size();
  for (size_t index = 0; index < layer_count; ++index) {
    const EncoderLayerWeights& layer = weights_->layers[index];
    const bool qkv_int8 = fused && dynamic_int8(layer.qkv);
    const bool attention_out_int8 = fused && dynamic_int8(layer.attention_out);
    const bool intermediate_int8 = fused && dynamic_int8(layer.intermediate);
    const bool output_int8 = fused && dynamic_int8(layer.output);
    const bool next_qkv_int8 = fused && index + 1 < layer_count && dynamic_int8(weights_->layers[index + 1].qkv);

    kernels::Int8Fusion qkv_fusion, attention_out_fusion, intermediate_fusion, output_fusion;
    if (qkv_int8 && hidden_quantized) qkv_fusion.input = hidden_int8_;
    if (attention_out_int8) {
      attention_out_fusion.norm_gamma = layer.attention_norm.gamma.data<float>();
      attention_out_fusion.norm_beta = layer.attention_norm.beta.data<float>();
      attention_out_fusion.norm_eps = eps;
      if (intermediate_int8) attention_out_fusion.output = hidden_int8_;
    }
    if (intermediate_int8) {
      if (attention_out_int8) intermediate_fusion.input = hidden_int8_;
      if (output_int8) {
        intermediate_fusion.output = intermediate_int8_;
        intermediate_fusion.write_f32 = false;
      }
    }
    if (output_int8) {
      if (intermediate_int8) output_fusion.input = intermediate_int8_;
      output_fusion.norm_gamma = layer.output_norm.gamma.data<float>();
      output_fusion.norm_beta = layer.output_norm.beta.data<float>();
      output_fusion.norm_eps = eps;
      if (next_qkv_int8) output_fusion.output = hidden_int8_;
    }
    hidden_quantized = output_int8 && next_qkv_int8;
    steps->layers.push_back(TokenSteps::Layer{
        LinearStep(layer.qkv, hidden_, C, qkv_, 3 * C, rows, Epilogue::kNone, false, low_precision_, qkv_fusion),
        LinearStep(layer.attention_out, context_, C, hidden_, C, rows, Epilogue::kNone, true, low_precision_,
                   attention_out_fusion),
        LinearStep(layer.intermediate, hidden_, C, intermediate_, I, rows, weights_->activation, false, low_precision_,
                   intermediate_fusion),
        LinearStep(layer.output, intermediate_, I, hidden_, C, rows, Epilogue::kNone, true, low_precision_,
                   output_fusion),
        attention_out_int8,
        output_int8,
    });
  }
  const TaskHead head = weights_->model->head;
  if (head == TaskHead::kTokenClassification || head == TaskHead::kQuestionAnswering) {
    const int64_t L = weights_->classifier->out_features();
    steps->classifier =
        LinearStep(*weights_->classifier, hidden_, C, token_logits_, L, rows, Epilogue::kNone, false, low_precision_);
  }
  if (head == TaskHead::kMaskedLM) {
    steps->mlm_transform = LinearStep(*weights_->mlm_transform, hidden_, C, intermediate_, C, rows,
                                      weights_->activation, false, low_precision_);
    steps->mlm_decoder = LinearStep(*weights_->mlm_decoder, intermediate_, C, token_logits_, config.vocab_size, rows,
                                    Epilogue::kNone, false, low_precision_);
  }
  TokenSteps& result = *token_steps_.emplace(std::make_pair(rows, fused), std::move(steps)).first->second;
  for (auto& layer : result.layers) {
    for (LinearStep* each : {&layer.qkv, &layer.attention_out, &layer.intermediate, &layer.output}) bind_scratchpad(*each);
  }
  for (LinearStep* each : {&result.classifier, &result.mlm_transform, &result.mlm_decoder}) {
    if (each->defined()) bind_scratchpad(*each);
  }
  return result;
}

InferenceSession::SequenceSteps& InferenceSession::sequence_steps(int64_t rows, bool cls_layer) {
  const int64_t C = weights_->model->config.hidden_size;
  const int64_t I = weights_->model->config.intermediate_size;
  auto found = sequence_steps_.find(rows);
  if (found == sequence_steps_.end()) {
    auto steps = std::make_unique<SequenceSteps>();
    if (weights_->pooler) {
      steps->pooler =
          LinearStep(*weights_->pooler, cls_rows_, C, pooled_, C, rows, Epilogue::kTanh, false, low_precision_);
      bind_scratchpad(steps->pooler);
    }
    if (weights_->model->head == TaskHead::kSequenceClassification) {
      const int64_t L = weights_->classifier->out_features();
      steps->classifier = LinearStep(*weights_->classifier, pooled_, C, sequence_logits_, L, rows, Epilogue::kNone,
                                     false, low_precision_);
      bind_scratchpad(steps->classifier);
    }
    found = sequence_steps_.emplace(rows, std::move(steps)).first;
  }
  SequenceSteps& result = *found->second;
  if (cls_layer && !result.attention_out.defined()) {
    const EncoderLayerWeights& last = weights_->layers.back();
    result.attention_out =
        LinearStep(last.attention_out, cls_context_, C, cls_rows_, C, rows, Epilogue::kNone, true, low_precision_);
    result.intermediate = LinearStep(last.intermediate, cls_rows_, C, cls_intermediate_, I, rows,
                                     weights_->activation, false, low_precision_);
    result.output =
        LinearStep(last.output, cls_intermediate_, I, cls_rows_, C, rows, Epilogue::kNone, true, low_precision_);
    for (LinearStep* each : {&result.attention_out, &result.intermediate, &result.output}) bind_scratchpad(*each);
  }
  return result;
}

bool InferenceSession::cls_layer_only() const {
  const TaskHead head = weights_->model->head;
  return sequence_outputs_only_ && !observer_ && !weights_->layers.empty() &&
         (head == TaskHead::kNone || head == TaskHead::kSequenceClassification);
}

const char* InferenceSession::phase_name(int phase) {
  static const char* names[kPhaseCount] = {"embedding", "qkv", "attention", "attention-out", "layer-norm",
                                           "intermediate", "output", "head"};
  return phase >= 0 && phase < kPhaseCount ? names[phase] : "?";
}

void InferenceSession::set_profiling(bool on) {
  profiling_ = on;
  for (double& seconds : phase_seconds_) seconds = 0.0;
}

namespace {
// Adds the time since the last mark to `phase` when profiling; a no-op branch otherwise.
class PhaseClock {
 public:
  PhaseClock(bool on, double* totals) : on_(on), totals_(totals) {
    if (on_) last_ = std::chrono::steady_clock::now();
  }
  void mark(int phase) {
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    totals_[phase] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  bool on_;
  double* totals_;
  std::chrono::steady_clock::time_point last_;
};
}  // namespace

void InferenceSession::prepare(int64_t tokens, int64_t sequences) {
  reserve(tokens, sequences, 1);
  token_steps(bucket_rows(tokens), !observer_);
  sequence_steps(bucket_rows(sequences), cls_layer_only());
}

const InferenceOutputs& InferenceSession::run(const PackedBatch& batch) {
  const BertConfig& config = weights_->model->config;
  const int64_t N = batch.tokens();
  const int64_t S = batch.sequences();
  check(N > 0 && S > 0, "cannot run an empty batch");
  check(static_cast<int64_t>(batch.token_type_ids.size()) == N && static_cast<int64_t>(batch.position_ids.size()) == N &&
            batch.sequence_offsets.front() == 0 && batch.sequence_offsets.back() == N,
        "inconsistent packed batch: ", N, " ids, ", batch.token_type_ids.size(), " type ids, ",
        batch.position_ids.size(), " positions, offsets ending at ", batch.sequence_offsets.back());
  const int64_t longest = batch.max_length();
  check(longest <= config.max_position_embeddings, "sequence of ", longest,
        " tokens is longer than the model's max_position_embeddings ", config.max_position_embeddings);
  reserve(N, S, longest);

  const int64_t C = config.hidden_size;
  const int64_t HS = config.head_size();
  const int64_t NH = config.num_attention_heads;
  const float eps = static_cast<float>(config.layer_norm_eps);
  const InferenceWeights& w = *weights_;
  TokenSteps& steps = token_steps(bucket_rows(N), !observer_);
  const bool cls_layer = cls_layer_only();
  const bool sequence_head = w.pooler || w.model->head == TaskHead::kSequenceClassification;
  SequenceSteps* sequence = sequence_head || cls_layer ? &sequence_steps(bucket_rows(S), cls_layer) : nullptr;
  std::memcpy(offsets_, batch.sequence_offsets.data(), (S + 1) * sizeof(int64_t));
  PhaseClock clock(profiling_, phase_seconds_);

  const int32_t* word_ids = batch.input_ids.data();
  const float* word_table = nullptr;
  int64_t word_rows = 0;
  if (w.word_embeddings_int8.defined()) {
    // Dequantize the batch's rows, q * scale, and let the embedding kernel gather them by 0..N-1.
    const int64_t V = w.word_embeddings_int8.dim(0);
    const int8_t* table = static_cast<const int8_t*>(w.word_embeddings_int8.raw());  // (V, C)
    const float* scales = w.word_embedding_scales.data<float>();                    // (V)
    for (int64_t n = 0; n < N; ++n) {
      const int32_t id = word_ids[n];
      check(id >= 0 && id < V, "embedding_forward: input id ", id, " at position ", n, " is outside the table of ", V, " rows");
      const int8_t* q = table + static_cast<int64_t>(id) * C;
      float* row = word_rows_ + n * C;
      const float scale = scales[id];
      for (int64_t c = 0; c < C; ++c) row[c] = static_cast<float>(q[c]) * scale;
      word_row_ids_[n] = static_cast<int32_t>(n);
    }
    word_ids = word_row_ids_;
    word_table = word_rows_;
    word_rows = N;
  } else {
    word_table = w.word_embeddings.data<float>();
    word_rows = w.word_embeddings.dim(0);
  }
  kernels::embedding_forward(hidden_, word_ids, batch.position_ids.data(), batch.token_type_ids.data(),
                             word_table, word_rows,
                             w.position_embeddings.data<float>(), w.position_embeddings.dim(0),
                             w.type_embeddings.data<float>(), w.type_embeddings.dim(0),
                             w.embedding_norm.gamma.data<float>(), w.embedding_norm.beta.data<float>(), N, C, eps);
  clock.mark(kEmbedding);
  for (size_t index = 0; index < w.layers.size(); ++index) {
    const EncoderLayerWeights& layer = w.layers[index];
    TokenSteps::Layer& layer_steps = steps.layers[index];
    if (observer_) {
      stream_.wait();
      observe(layer_parameter(static_cast<int64_t>(index), "attention.self"), hidden_, N, C);
    }
    layer_steps.qkv.run(stream_);
    clock.mark(kQkv);
    // bf16 and dynamic int8 models take the attention products in bf16 too (softmax stays f32):
    // the f32 attention was the largest non-GEMM phase of the int8 plan (docs/quantization.md).
    (w.bf16_attention ? kernels::attention_forward_bf16 : kernels::attention_forward)(
        context_, qkv_, offsets_, S, NH, HS, attention_scratch_, attention_scratch_floats_);
    clock.mark(kAttention);
    if (cls_layer && index + 1 == w.layers.size()) {
      // The rest of the last layer on the [CLS] rows: row s of the (S, C) buffers is token row
      // offsets[s]. The steps run over the sequence bucket; its pad rows get zero inputs every run,
      // so whatever an earlier, larger batch left there, they stay finite.
      const int64_t S_bucket = bucket_rows(S);
      for (int64_t s = 0; s < S; ++s) {
        std::memcpy(cls_context_ + s * C, context_ + offsets_[s] * C, C * sizeof(float));
        std::memcpy(cls_rows_ + s * C, hidden_ + offsets_[s] * C, C * sizeof(float));
      }
      std::memset(cls_context_ + S * C, 0, (S_bucket - S) * C * sizeof(float));
      std::memset(cls_rows_ + S * C, 0, (S_bucket - S) * C * sizeof(float));
      sequence->attention_out.run(stream_);  // cls += ctx[CLS] Wo^T + bo
      clock.mark(kAttentionOut);
      kernels::layernorm_forward(cls_rows_, cls_rows_, layer.attention_norm.gamma.data<float>(),
                                 layer.attention_norm.beta.data<float>(), S, C, eps);
      clock.mark(kLayerNorm);
      sequence->intermediate.run(stream_);  // f = act(cls W1^T + b1)
      clock.mark(kIntermediate);
      sequence->output.run(stream_);  // cls += f W2^T + b2
      clock.mark(kOutput);
      kernels::layernorm_forward(cls_rows_, cls_rows_, layer.output_norm.gamma.data<float>(),
                                 layer.output_norm.beta.data<float>(), S, C, eps);
      clock.mark(kLayerNorm);
      break;
    }
    if (observer_) observe(layer_parameter(static_cast<int64_t>(index), "attention.output.dense"), context_, N, C);
    layer_steps.attention_out.run(stream_);  // hidden += context Wo^T + bo (then LN, when fused)
    clock.mark(kAttentionOut);
    if (!layer_steps.attention_norm_fused) {
      kernels::layernorm_forward(hidden_, hidden_, layer.attention_norm.gamma.data<float>(),
                                 layer.attention_norm.beta.data<float>(), N, C, eps);
      clock.mark(kLayerNorm);
    }
    if (observer_) observe(layer_parameter(static_cast<int64_t>(index), "intermediate.dense"), hidden_, N, C);
    layer_steps.intermediate.run(stream_);
    clock.mark(kIntermediate);
    if (observer_) {
      stream_.wait();
      observe(layer_parameter(static_cast<int64_t>(index), "output.dense"), intermediate_, N, config.intermediate_size);
    }
    layer_steps.output.run(stream_);  // hidden += act(...) W2^T + b2 (then LN, when fused)
    clock.mark(kOutput);
    if (!layer_steps.output_norm_fused) {
      kernels::layernorm_forward(hidden_, hidden_, layer.output_norm.gamma.data<float>(),
                                 layer.output_norm.beta.data<float>(), N, C, eps);
      clock.mark(kLayerNorm);
    }
  }
  outputs_ = InferenceOutputs{};
  if (!cls_layer) {
    outputs_.hidden = Tensor::view(hidden_, {N, C}, DType::kF32, arena_.block());
    if (sequence_head) kernels::cls_pool(cls_rows_, hidden_, offsets_, S, C);
  }
  if (sequence_head || cls_layer) {
    outputs_.cls_hidden = Tensor::view(cls_rows_, {S, C}, DType::kF32, arena_.block());
    if (w.pooler) {
      if (observer_) observe("pooler.dense", cls_rows_, S, C);
      sequence->pooler.run(stream_);
      outputs_.pooled = Tensor::view(pooled_, {S, C}, DType::kF32, arena_.block());
    }
    if (w.model->head == TaskHead::kSequenceClassification) {
      if (observer_) {
        stream_.wait();
        observe("classifier", pooled_, S, C);
      }
      sequence->classifier.run(stream_);
      outputs_.logits =
          Tensor::view(sequence_logits_, {S, w.classifier->out_features()}, DType::kF32, arena_.block());
    }
  }
  switch (w.model->head) {
    case TaskHead::kTokenClassification:
    case TaskHead::kQuestionAnswering:
      if (observer_) observe(w.model->head == TaskHead::kQuestionAnswering ? "qa_outputs" : "classifier", hidden_, N, C);
      steps.classifier.run(stream_);
      outputs_.logits = Tensor::view(token_logits_, {N, w.classifier->out_features()}, DType::kF32, arena_.block());
      break;
    case TaskHead::kMaskedLM:
      if (observer_) observe("cls.predictions.transform.dense", hidden_, N, C);
      steps.mlm_transform.run(stream_);
      kernels::layernorm_forward(intermediate_, intermediate_, w.mlm_norm.gamma.data<float>(),
                                 w.mlm_norm.beta.data<float>(), N, C, eps);
      steps.mlm_decoder.run(stream_);
      outputs_.logits = Tensor::view(token_logits_, {N, config.vocab_size}, DType::kF32, arena_.block());
      break;
    default: break;
  }
  stream_.wait();
  clock.mark(kHead);
  return outputs_;
}

}  // namespace scalebert
