// BERT training forward and backward over packed batches (post-LN, Hugging Face semantics).
//
// Forward, per layer l, with x = x_in[l] (N, C):
//   qkv     = x Wqkv^T + bqkv                                  (N, 3C)   saved
//   context = dropout_a(softmax(Q K^T / sqrt(HS))) V           (N, C)    saved, P saved
//   r1      = x + dropout_h(context Wo^T + bo)                 (N, C)    saved (LN input)
//   h1      = LN1(r1)                                          (N, C)    saved, mean/rstd saved
//   ff_pre  = h1 W1^T + b1                                     (N, I)    saved
//   r2      = h1 + dropout_h(act(ff_pre) W2^T + b2)            (N, C)    saved
//   x_in[l+1] = LN2(r2)                                                  saved, mean/rstd saved
// Embeddings: x_in[0] = dropout_h(LN0(word[id] + pos[p] + type[t])).
// Backward walks the same lines in reverse; each step below quotes the forward line it differentiates.
// act(ff_pre) is stored too (I more floats per token per layer: 150 MB for BERT-base at 8 x 128)
// rather than recomputed in backward: the output product reads it in both passes, and recomputing
// it cost one GELU pass per layer per step (~0.6% of a BERT-base step, measured).
//
// Sequence classification reads only the [CLS] row of the last layer's output, and everything in a
// layer after the attention is row-wise: so the last layer computes Q, K, V and the attention for
// every token (each [CLS] query attends to all keys and values), then gathers the S [CLS] rows of
// the context and runs the attention output, LN1, the feed-forward block and LN2 on those S rows only
// (BERT-base, 128 tokens: 1/16 of the last layer's rows; 6% of the step's FLOPs saved for a 12-layer
// model, 18% for a 4-layer one). The result is exact, not an approximation: the other rows' outputs
// feed nothing. The same holds one step earlier: only the [CLS] queries are ever used, so that layer
// projects Q for the S [CLS] rows only (K and V for every row) and runs the attention of one query per
// sequence (first_query_attention_*, drawing the dropout mask the full attention gives query row 0).
// In backward, only the [CLS] queries carry a gradient: dK and dV come from them alone, and dQ lives
// on the S [CLS] rows.
//
// Mixed precision (products = bf16), the CPU counterpart of PyTorch's autocast for Linear layers:
// each of a layer's four token-row products, forward and backward, multiplies bf16 copies of its
// operands (round to nearest even) with f32 accumulation and f32 results (AVX512_BF16, about twice
// the f32 product rate on this CPU). The copies: the weights, rounded from the f32 master weights at
// the start of every run (the optimizer updates the f32 values); each product input (x_in, context,
// h1, act(ff_pre)), rounded when it is written and kept for the weight gradient (act(ff_pre) is
// written in bf16 only); each product's output gradient (d qkv, d temp, d ff), rounded before its
// two backward products, as rows (for dx) and transposed (dense dy^T for the weight gradient,
// which oneDNN runs faster), in a pass that also sums the f32 values into the bias gradient. The
// attention's own small products (Q K^T, Pd V and their four backward products) run on bf16
// operands too (attention_backward.h). Everything else stays f32: embeddings, softmax, layer
// norms, GELU, dropout, the bias gradients, the heads and the [CLS]-row part of the last layer
// (S rows), parameters, gradients and optimizer state. The copies cover bucket rows: pad rows of an
// f32 activation are finite and of an f32 gradient zero, and so are their copies.
#include "train/training_graph.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/activations_backward.h"
#include "kernels/cpu/attention_backward.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/embedding_backward.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/layernorm_backward.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/quantize_rows.h"
#include "model/inference_session.h"

namespace scalebert {

using kernels::Epilogue;
using kernels::LinearBackwardStep;
using kernels::LinearStep;
using kernels::PackedLinear;

DropoutRates DropoutRates::from_config(const BertConfig& config) {
  DropoutRates rates;
  rates.hidden = static_cast<float>(config.hidden_dropout_prob);
  rates.attention = static_cast<float>(config.attention_probs_dropout_prob);
  rates.classifier = rates.hidden;
  auto classifier = config.extra.find("classifier_dropout");
  if (classifier != config.extra.end() && classifier->is_number()) rates.classifier = classifier->get<float>();
  return rates;
}

namespace {

// A view of `count` floats starting at parameter `first` of `arena`, checked to cover exactly the
// parameters `names` laid out back to back (the fused Q/K/V weight and bias).
Tensor contiguous_view(const ParameterTable& table, const Tensor& arena, const std::vector<std::string>& names,
                       Shape shape) {
  int64_t expected_offset = table.entry(names.front()).offset;
  for (const std::string& name : names) {
    const ParameterEntry& entry = table.entry(name);
    check<Unsupported>(entry.offset == expected_offset, "training needs ", names.front(), " .. ", names.back(),
                       " back to back in the parameter arena (hidden size a multiple of 16); ", name,
                       " is at offset ", entry.offset, ", expected ", expected_offset);
    expected_offset += shape_numel(entry.shape);
  }
  float* base = const_cast<float*>(arena.data<float>()) + table.entry(names.front()).offset;
  return Tensor::view(base, std::move(shape), DType::kF32, arena.owner());
}

// The training products read the weights in place (PackedLinear::plain_view): the optimizer updates
// them every step, and a packed copy would need reordering after each update.
std::unique_ptr<PackedLinear> plain_view(const Tensor& weight, const Tensor& bias) {
  return std::make_unique<PackedLinear>(PackedLinear::plain_view(weight, bias));
}

}  // namespace

// One encoder layer: parameter views, gradient pointers, the products' weight views and the layer's
// saved activations (pointers into the graph's arena, set by reserve()).
struct TrainingGraph::Layer {
  Tensor qkv_weight, qkv_bias;  // (3C, C), (3C) views of the parameter arena
  Tensor attention_out_weight, attention_out_bias, norm1_gamma, norm1_beta;
  Tensor intermediate_weight, intermediate_bias, output_weight, output_bias, norm2_gamma, norm2_beta;
  float *d_qkv_weight, *d_qkv_bias, *d_attention_out_weight, *d_attention_out_bias, *d_norm1_gamma, *d_norm1_beta;
  float *d_intermediate_weight, *d_intermediate_bias, *d_output_weight, *d_output_bias, *d_norm2_gamma,
      *d_norm2_beta;
  std::unique_ptr<PackedLinear> qkv, attention_out, intermediate, output;
  // The [CLS]-row last layer only: views of the Q rows and the K/V rows of the fused weight and bias.
  std::unique_ptr<PackedLinear> query, key_value;
  // Mixed precision: views of the bf16 weight copies (in the graph's bf16_weights_) and the products
  // on them; the f32 views above still serve the [CLS]-row part of the last layer.
  Tensor qkv_weight_bf16, attention_out_weight_bf16, intermediate_weight_bf16, output_weight_bf16;
  std::unique_ptr<PackedLinear> qkv_bf16, attention_out_bf16, intermediate_bf16, output_bf16, key_value_bf16;

  // Saved activations.
  float* x_in = nullptr;     // (M, C)
  float* qkv_rows = nullptr;  // (M, 3C)
  float* context = nullptr;  // (M, C)
  float* r1 = nullptr;       // (M, C)
  float* mean1 = nullptr;    // (M)
  float* rstd1 = nullptr;    // (M)
  float* h1 = nullptr;       // (M, C)
  float* ff_pre = nullptr;   // (M, I)
  float* ff_act = nullptr;   // (M, I) act(ff_pre): the output product's input, kept for its weight gradient
                             // (f32 products only; bf16 ones keep ff_act_bf16 alone)
  float* r2 = nullptr;       // (M, C)
  float* mean2 = nullptr;    // (M)
  float* rstd2 = nullptr;    // (M)
  float* probs = nullptr;    // (NH * M * L_max) >= NH * sum_s L_s^2
  // Mixed precision: bf16 copies of the four product inputs, kept for the weight gradients.
  BFloat16* x_in_bf16 = nullptr;     // (M, C)
  BFloat16* context_bf16 = nullptr;  // (M, C)
  BFloat16* h1_bf16 = nullptr;       // (M, C)
  BFloat16* ff_act_bf16 = nullptr;   // (M, I)
  // Dropout counter offsets of this layer's three sites, recorded by forward for backward.
  uint64_t attention_offset = 0, attention_out_offset = 0, output_offset = 0;
};

// Buffers shared by all layers and the heads (pointers into the arena).
struct TrainingGraph::Buffers {
  float* embedding_sum = nullptr;  // (M, C) word + position + type, LN0 input
  float* mean0 = nullptr;          // (M)
  float* rstd0 = nullptr;          // (M)
  float* final_hidden = nullptr;   // (M, C) output of the last layer
  float* temp_c = nullptr;         // (M, C) forward: projection before dropout (pad rows hold bias values)
  float* d_temp = nullptr;         // (M, C) backward: d of that projection (pad rows stay zero)
  float* temp_i = nullptr;         // (S, I) act(ff_pre) of the [CLS]-row last layer, recomputed in backward
  float* d_x = nullptr;            // (M, C) running gradient of the layer input/output
  float* d_ff = nullptr;           // (M, I)
  float* d_qkv = nullptr;          // (M, 3C)
  float* d_context = nullptr;      // (M, C)
  float* token_input = nullptr;    // (M, C) dropout(final) for token classification
  float* token_logits = nullptr;   // (M, L) token classification / QA logits
  float* d_token_logits = nullptr; // (M, L)
  float* cls_rows = nullptr;       // (S, C) final hidden of each [CLS]
  float* pooled = nullptr;         // (S, C) tanh(cls Wp^T + bp)
  float* pooled_dropped = nullptr; // (S, C)
  float* sequence_logits = nullptr;    // (S, L)
  float* d_sequence_logits = nullptr;  // (S, L)
  float* d_pooled = nullptr;       // (S, C)
  float* d_cls = nullptr;          // (S, C)
  float* cls_context = nullptr;    // (S, C) last layer: the attention context of each [CLS] row
  float* d_cls_context = nullptr;  // (S, C)
  float* cls_x = nullptr;          // (S, C) last layer: its input on the [CLS] rows
  float* cls_q = nullptr;          // (S, C) last layer: Q of the [CLS] rows
  float* d_cls_q = nullptr;        // (S, C)
  float* d_cls_x = nullptr;        // (S, C) d cls_x from the Q projection
  float* masked_rows = nullptr;    // (R, C) final hidden of the tokens with a masked-LM label
  float* transform_pre = nullptr;  // (R, C) masked_rows Wt^T + bt
  float* transform_act = nullptr;  // (R, C) act(transform_pre), LN input
  float* transform_mean = nullptr; // (R)
  float* transform_rstd = nullptr; // (R)
  float* transform_out = nullptr;  // (R, C) LN output, decoder input
  float* mlm_logits = nullptr;     // (R, V), overwritten in place by its gradient
  float* d_transform = nullptr;    // (R, C)
  float* d_masked = nullptr;       // (R, C)
  float* row_losses = nullptr;     // (max(M, R, S))
  int64_t* offsets = nullptr;      // (S + 1)
  // Mixed precision: bf16 copies of the products' output gradients, as rows (for dx) and transposed
  // (for dW: dense, leading dimension the bucket's M).
  BFloat16* d_qkv_bf16 = nullptr;   // (M, 3C)
  BFloat16* d_temp_bf16 = nullptr;  // (M, C)
  BFloat16* d_ff_bf16 = nullptr;    // (M, I)
  BFloat16* d_qkv_t = nullptr;      // (3C, M)
  BFloat16* d_temp_t = nullptr;     // (C, M)
  BFloat16* d_ff_t = nullptr;       // (I, M)
  float* attention_scratch = nullptr;
  int64_t attention_scratch_floats = 0;
  std::vector<int32_t> masked_targets;  // (R)
  std::vector<int64_t> masked_tokens;   // (R) packed row of each masked-LM target
};

struct TrainingGraph::TokenSteps {
  // For the [CLS]-row last layer (sequence classification), qkv and d_qkv are the K/V projection
  // alone (writing and reading the K and V columns of the qkv buffers); Q is in SequenceSteps.
  struct LayerSteps {
    LinearStep qkv, attention_out, intermediate, output;
    LinearBackwardStep d_qkv, d_attention_out, d_intermediate, d_output;
  };
  std::vector<LayerSteps> layers;
  LinearStep classifier;  // token classification and QA
  LinearBackwardStep d_classifier;
};

struct TrainingGraph::SequenceSteps {
  LinearStep pooler, classifier;
  LinearBackwardStep d_pooler, d_classifier;
  // The last layer's Q projection and everything after its attention, on the [CLS] rows (see the top
  // of this file).
  LinearStep query, attention_out, intermediate, output;
  LinearBackwardStep d_query, d_attention_out, d_intermediate, d_output;
};

struct TrainingGraph::MaskedSteps {
  LinearStep transform, decoder;
  LinearBackwardStep d_transform, d_decoder;
};

float* TrainingGraph::gradient(const std::string& name) const {
  return model_.parameters.view(gradients_, name).data<float>();
}

TrainingGraph::TrainingGraph(BertModel& model, Tensor gradients, DropoutRates dropout, kernels::Precision products)
    : model_(model), gradients_(std::move(gradients)), dropout_(dropout), stream_(kernels::cpu_engine()),
      buffers_(std::make_unique<Buffers>()) {
  check(products != kernels::Precision::kInt8, "training products run in f32 or bf16, not int8");
  bf16_ = kernels::supported_precision(products) == kernels::Precision::kBF16;
  const ParameterTable& table = model_.parameters;
  gradients_.expect({table.total_elements()}, DType::kF32, "gradient arena");
  check<Unsupported>(model_.head != TaskHead::kNone, "training needs a task head; the model has none");
  const int64_t C = model_.config.hidden_size;
  for (int64_t index = 0; index < model_.config.num_hidden_layers; ++index) {
    auto layer = std::make_unique<Layer>();
    auto name = [&](const char* suffix) { return layer_parameter(index, suffix); };
    std::vector<std::string> weights = {name("attention.self.query.weight"), name("attention.self.key.weight"),
                                        name("attention.self.value.weight")};
    std::vector<std::string> biases = {name("attention.self.query.bias"), name("attention.self.key.bias"),
                                       name("attention.self.value.bias")};
    layer->qkv_weight = contiguous_view(table, table.values(), weights, {3 * C, C});
    layer->qkv_bias = contiguous_view(table, table.values(), biases, {3 * C});
    layer->d_qkv_weight = contiguous_view(table, gradients_, weights, {3 * C, C}).data<float>();
    layer->d_qkv_bias = contiguous_view(table, gradients_, biases, {3 * C}).data<float>();
    auto bind = [&](const char* suffix, Tensor& value, float*& grad) {
      value = parameter(name(suffix));
      grad = gradient(name(suffix));
    };
    bind("attention.output.dense.weight", layer->attention_out_weight, layer->d_attention_out_weight);
    bind("attention.output.dense.bias", layer->attention_out_bias, layer->d_attention_out_bias);
    bind("attention.output.LayerNorm.weight", layer->norm1_gamma, layer->d_norm1_gamma);
    bind("attention.output.LayerNorm.bias", layer->norm1_beta, layer->d_norm1_beta);
    bind("intermediate.dense.weight", layer->intermediate_weight, layer->d_intermediate_weight);
    bind("intermediate.dense.bias", layer->intermediate_bias, layer->d_intermediate_bias);
    bind("output.dense.weight", layer->output_weight, layer->d_output_weight);
    bind("output.dense.bias", layer->output_bias, layer->d_output_bias);
    bind("output.LayerNorm.weight", layer->norm2_gamma, layer->d_norm2_gamma);
    bind("output.LayerNorm.bias", layer->norm2_beta, layer->d_norm2_beta);
    layer->qkv = plain_view(layer->qkv_weight, layer->qkv_bias);
    layer->attention_out = plain_view(layer->attention_out_weight, layer->attention_out_bias);
    layer->intermediate = plain_view(layer->intermediate_weight, layer->intermediate_bias);
    layer->output = plain_view(layer->output_weight, layer->output_bias);
    const bool last = index + 1 == model_.config.num_hidden_layers;
    if (last && model_.head == TaskHead::kSequenceClassification) {
      float* weight = layer->qkv_weight.data<float>();
      float* bias = layer->qkv_bias.data<float>();
      const auto view = [&](float* data, Shape shape) {
        return Tensor::view(data, std::move(shape), DType::kF32, table.values().owner());
      };
      layer->query = plain_view(view(weight, {C, C}), view(bias, {C}));
      layer->key_value = plain_view(view(weight + C * C, {2 * C, C}), view(bias + C, {2 * C}));
    }
    layers_.push_back(std::move(layer));
  }
  if (bf16_) {
    const int64_t I = model_.config.intermediate_size;
    const int64_t per_layer = 4 * C * C + 2 * C * I;
    bf16_weights_ = Tensor::empty({per_layer * static_cast<int64_t>(layers_.size())}, DType::kBF16);
    BFloat16* next = bf16_weights_.data<BFloat16>();
    auto carve = [&](Shape shape) {
      Tensor view = Tensor::view(next, shape, DType::kBF16, bf16_weights_.owner());
      next += shape_numel(shape);
      return view;
    };
    for (auto& layer : layers_) {
      layer->qkv_weight_bf16 = carve({3 * C, C});
      layer->attention_out_weight_bf16 = carve({C, C});
      layer->intermediate_weight_bf16 = carve({I, C});
      layer->output_weight_bf16 = carve({C, I});
      layer->qkv_bf16 = plain_view(layer->qkv_weight_bf16, layer->qkv_bias);
      layer->attention_out_bf16 = plain_view(layer->attention_out_weight_bf16, layer->attention_out_bias);
      layer->intermediate_bf16 = plain_view(layer->intermediate_weight_bf16, layer->intermediate_bias);
      layer->output_bf16 = plain_view(layer->output_weight_bf16, layer->output_bias);
      if (layer->key_value) {
        BFloat16* weight = layer->qkv_weight_bf16.data<BFloat16>() + C * C;
        layer->key_value_bf16 = plain_view(Tensor::view(weight, {2 * C, C}, DType::kBF16, bf16_weights_.owner()),
                                           Tensor::view(layer->qkv_bias.data<float>() + C, {2 * C}, DType::kF32,
                                                        table.values().owner()));
      }
    }
  }
  switch (model_.head) {
    case TaskHead::kSequenceClassification:
      check<Unsupported>(model_.has_pooler, "sequence classification needs a pooler");
      pooler_ = plain_view(parameter("pooler.dense.weight"), parameter("pooler.dense.bias"));
      classifier_ = plain_view(parameter("classifier.weight"), parameter("classifier.bias"));
      break;
    case TaskHead::kTokenClassification:
      classifier_ = plain_view(parameter("classifier.weight"), parameter("classifier.bias"));
      break;
    case TaskHead::kQuestionAnswering:
      classifier_ = plain_view(parameter("qa_outputs.weight"), parameter("qa_outputs.bias"));
      break;
    case TaskHead::kMaskedLM:
      mlm_transform_ = plain_view(parameter("cls.predictions.transform.dense.weight"),
                                  parameter("cls.predictions.transform.dense.bias"));
      mlm_decoder_ = plain_view(parameter("embeddings.word_embeddings.weight"), parameter("cls.predictions.bias"));
      break;
    case TaskHead::kNone: break;
  }
}

TrainingGraph::~TrainingGraph() = default;

void TrainingGraph::round_weights_to_bf16() {
  for (auto& layer : layers_) {
    for (auto [weight, copy] : {std::pair<const Tensor*, Tensor*>{&layer->qkv_weight, &layer->qkv_weight_bf16},
                                {&layer->attention_out_weight, &layer->attention_out_weight_bf16},
                                {&layer->intermediate_weight, &layer->intermediate_weight_bf16},
                                {&layer->output_weight, &layer->output_weight_bf16}}) {
      const int64_t rows = weight->dim(0), columns = weight->dim(1);
      kernels::convert_rows_bf16(weight->data<float>(), columns, rows, columns, copy->data<BFloat16>(), columns);
    }
  }
}

void TrainingGraph::reserve(int64_t tokens, int64_t sequences, int64_t max_length, int64_t masked_rows) {
  const BertConfig& config = model_.config;
  const int64_t M = InferenceSession::bucket_rows(std::max(tokens, token_capacity_));
  const int64_t S = InferenceSession::bucket_rows(std::max(sequences, sequence_capacity_));
  const int64_t L = std::max(max_length, length_capacity_);
  const int64_t R = InferenceSession::bucket_rows(std::max<int64_t>(std::max(masked_rows, masked_capacity_), 1));
  const int64_t attention_floats =
      kernels::attention_train_scratch_floats(L, config.head_size(), static_cast<int>(num_threads()));
  if (M <= token_capacity_ && S <= sequence_capacity_ && L <= length_capacity_ && R <= masked_capacity_ &&
      attention_floats <= buffers_->attention_scratch_floats) {
    return;
  }
  const int64_t C = config.hidden_size, I = config.intermediate_size, NH = config.num_attention_heads;
  const int64_t labels = classifier_ ? classifier_->out_features() : 0;
  const int64_t V = mlm_decoder_ ? config.vocab_size : 0;
  const int64_t masked = mlm_decoder_ ? R : 0;

  // Every buffer below, in floats; the arena is sized from exactly this list.
  std::vector<std::pair<float**, int64_t>> plan;
  for (auto& layer : layers_) {
    plan.insert(plan.end(), {{&layer->x_in, M * C}, {&layer->qkv_rows, M * 3 * C}, {&layer->context, M * C},
                             {&layer->r1, M * C}, {&layer->mean1, M}, {&layer->rstd1, M}, {&layer->h1, M * C},
                             {&layer->ff_pre, M * I}, {&layer->ff_act, bf16_ ? 0 : M * I}, {&layer->r2, M * C},
                             {&layer->mean2, M}, {&layer->rstd2, M}, {&layer->probs, NH * M * L}});
  }
  Buffers& b = *buffers_;
  plan.insert(plan.end(),
              {{&b.embedding_sum, M * C}, {&b.mean0, M}, {&b.rstd0, M}, {&b.final_hidden, M * C},
               {&b.temp_c, M * C}, {&b.d_temp, M * C}, {&b.temp_i, S * I}, {&b.d_x, M * C}, {&b.d_ff, M * I}, {&b.d_qkv, M * 3 * C},
               {&b.d_context, M * C}, {&b.token_input, M * C}, {&b.token_logits, M * labels},
               {&b.d_token_logits, M * labels}, {&b.cls_rows, S * C}, {&b.pooled, S * C},
               {&b.pooled_dropped, S * C}, {&b.sequence_logits, S * labels}, {&b.d_sequence_logits, S * labels},
               {&b.d_pooled, S * C}, {&b.d_cls, S * C}, {&b.cls_context, S * C}, {&b.d_cls_context, S * C},
               {&b.cls_x, S * C}, {&b.cls_q, S * C}, {&b.d_cls_q, S * C}, {&b.d_cls_x, S * C},
               {&b.masked_rows, masked * C},
               {&b.transform_pre, masked * C}, {&b.transform_act, masked * C}, {&b.transform_mean, masked},
               {&b.transform_rstd, masked}, {&b.transform_out, masked * C}, {&b.mlm_logits, masked * V},
               {&b.d_transform, masked * C}, {&b.d_masked, masked * C},
               {&b.row_losses, std::max({M, S, masked})}, {&b.attention_scratch, attention_floats}});
  // Mixed precision's bf16 copies (none in f32).
  std::vector<std::pair<BFloat16**, int64_t>> bf16_plan;
  if (bf16_) {
    for (auto& layer : layers_) {
      bf16_plan.insert(bf16_plan.end(), {{&layer->x_in_bf16, M * C}, {&layer->context_bf16, M * C},
                                         {&layer->h1_bf16, M * C}, {&layer->ff_act_bf16, M * I}});
    }
    bf16_plan.insert(bf16_plan.end(), {{&b.d_qkv_bf16, M * 3 * C}, {&b.d_temp_bf16, M * C}, {&b.d_ff_bf16, M * I},
                                       {&b.d_qkv_t, 3 * C * M}, {&b.d_temp_t, C * M}, {&b.d_ff_t, I * M}});
  }
  size_t bytes = align_up((S + 1) * sizeof(int64_t));
  for (const auto& [pointer, floats] : plan) bytes += align_up(std::max<int64_t>(floats, 1) * sizeof(float));
  for (const auto& [pointer, count] : bf16_plan) bytes += align_up(count * sizeof(BFloat16));
  arena_ = Arena(bytes);
  std::memset(arena_.block().get(), 0, arena_.capacity());  // pad rows: zero gradients, finite activations
  for (const auto& [pointer, floats] : plan) {
    *pointer = static_cast<float*>(arena_.allocate(std::max<int64_t>(floats, 1) * sizeof(float)));
  }
  for (const auto& [pointer, count] : bf16_plan) {
    *pointer = static_cast<BFloat16*>(arena_.allocate(count * sizeof(BFloat16)));
  }
  b.offsets = static_cast<int64_t*>(arena_.allocate((S + 1) * sizeof(int64_t)));
  b.attention_scratch_floats = attention_floats;
  token_capacity_ = M;
  sequence_capacity_ = S;
  length_capacity_ = L;
  masked_capacity_ = R;
  token_steps_.clear();
  sequence_steps_.clear();
  masked_steps_.clear();
}

void TrainingGraph::bind_scratchpad(size_t bytes) {
  if (bytes <= scratchpad_bytes_) return;
  scratchpad_bytes_ = bytes;
  scratchpad_ = allocate_aligned(scratchpad_bytes_);
  for (auto& [rows, steps] : token_steps_) {
    for (auto& layer : steps->layers) {
      for (LinearStep* step : {&layer.qkv, &layer.attention_out, &layer.intermediate, &layer.output}) {
        step->bind_scratchpad(scratchpad_.get());
      }
      for (LinearBackwardStep* step : {&layer.d_qkv, &layer.d_attention_out, &layer.d_intermediate, &layer.d_output}) {
        step->bind_scratchpad(scratchpad_.get());
      }
    }
    if (steps->classifier.defined()) steps->classifier.bind_scratchpad(scratchpad_.get());
    if (steps->d_classifier.defined()) steps->d_classifier.bind_scratchpad(scratchpad_.get());
  }
  for (auto& [rows, steps] : sequence_steps_) bind_sequence_scratchpad(*steps);
  for (auto& [rows, steps] : masked_steps_) {
    for (LinearStep* step : {&steps->transform, &steps->decoder}) step->bind_scratchpad(scratchpad_.get());
    for (LinearBackwardStep* step : {&steps->d_transform, &steps->d_decoder}) step->bind_scratchpad(scratchpad_.get());
  }
}

TrainingGraph::TokenSteps& TrainingGraph::token_steps(int64_t rows) {
  auto found = token_steps_.find(rows);
  if (found != token_steps_.end()) return *found->second;
  const int64_t C = model_.config.hidden_size, I = model_.config.intermediate_size;
  const Buffers& b = *buffers_;
  auto steps = std::make_unique<TokenSteps>();
  size_t scratch = 0;
  for (size_t index = 0; index < layers_.size(); ++index) {
    const Layer& layer = *layers_[index];
    // The [CLS]-row last layer projects K and V only, into the K/V columns of the qkv buffers: its
    // (out rows, offset) of the fused weight, bias and their gradients, and of qkv_rows / d_qkv.
    const bool kv_only = layer.key_value != nullptr;
    const int64_t qkv_out = kv_only ? 2 * C : 3 * C, qkv_at = kv_only ? C : 0;
    // Mixed precision: every product reads the bf16 copies of its operands (same layouts).
    kernels::Bf16Operands qkv_ops, attention_out_ops, intermediate_ops, output_ops;
    if (bf16_) {
      qkv_ops = {layer.x_in_bf16, layer.qkv_weight_bf16.data<BFloat16>() + qkv_at * C, b.d_qkv_bf16 + qkv_at,
                 b.d_qkv_t + qkv_at * rows};
      attention_out_ops = {layer.context_bf16, layer.attention_out_weight_bf16.data<BFloat16>(), b.d_temp_bf16,
                           b.d_temp_t};
      intermediate_ops = {layer.h1_bf16, layer.intermediate_weight_bf16.data<BFloat16>(), b.d_ff_bf16, b.d_ff_t};
      output_ops = {layer.ff_act_bf16, layer.output_weight_bf16.data<BFloat16>(), b.d_temp_bf16, b.d_temp_t};
    }
    const auto mixed = [&](const kernels::Bf16Operands& operands) { return bf16_ ? &operands : nullptr; };
    // y = x W^T + b on the f32 operands, or on the bf16 copies (x_bf16 with the bf16 weight view).
    const auto forward = [&](const PackedLinear& linear, const PackedLinear* linear_bf16, const float* x,
                             const BFloat16* x_bf16, int64_t x_stride, float* y, int64_t y_stride) {
      return bf16_ ? LinearStep(*linear_bf16, x_bf16, x_stride, y, y_stride, rows, Epilogue::kNone, false)
                   : LinearStep(linear, x, x_stride, y, y_stride, rows, Epilogue::kNone, false);
    };
    steps->layers.push_back(TokenSteps::LayerSteps{
        forward(kv_only ? *layer.key_value : *layer.qkv, kv_only ? layer.key_value_bf16.get() : layer.qkv_bf16.get(),
                layer.x_in, layer.x_in_bf16, C, layer.qkv_rows + qkv_at, 3 * C),
        forward(*layer.attention_out, layer.attention_out_bf16.get(), layer.context, layer.context_bf16, C, b.temp_c,
                C),
        forward(*layer.intermediate, layer.intermediate_bf16.get(), layer.h1, layer.h1_bf16, C, layer.ff_pre, I),
        forward(*layer.output, layer.output_bf16.get(), layer.ff_act, layer.ff_act_bf16, I, b.temp_c, C),
        // d of qkv = x Wqkv^T + b: dx ADDED onto the residual gradient already in d_x.
        LinearBackwardStep(layer.x_in, C, layer.qkv_weight.data<float>() + qkv_at * C, b.d_qkv + qkv_at, 3 * C,
                           b.d_x, C, layer.d_qkv_weight + qkv_at * C,
                           bf16_ && !kv_only ? nullptr : layer.d_qkv_bias + qkv_at, rows, C, qkv_out, true,
                           mixed(qkv_ops)),
        // d of temp = context Wo^T + bo: dx is d_context (overwritten).
        LinearBackwardStep(layer.context, C, layer.attention_out_weight.data<float>(), b.d_temp, C, b.d_context, C,
                           layer.d_attention_out_weight, bf16_ ? nullptr : layer.d_attention_out_bias, rows, C, C,
                           false, mixed(attention_out_ops)),
        // d of ff_pre = h1 W1^T + b1: dx ADDED onto the residual gradient of h1 in d_x.
        LinearBackwardStep(layer.h1, C, layer.intermediate_weight.data<float>(), b.d_ff, I, b.d_x, C,
                           layer.d_intermediate_weight, bf16_ ? nullptr : layer.d_intermediate_bias, rows, C, I, true,
                           mixed(intermediate_ops)),
        // d of temp = act(ff_pre) W2^T + b2: dx is d_ff (overwritten).
        LinearBackwardStep(layer.ff_act, I, layer.output_weight.data<float>(), b.d_temp, C, b.d_ff, I,
                           layer.d_output_weight, bf16_ ? nullptr : layer.d_output_bias, rows, I, C, false,
                           mixed(output_ops)),
    });
    const auto& added = steps->layers.back();
    for (const LinearStep* step : {&added.qkv, &added.attention_out, &added.intermediate, &added.output}) {
      scratch = std::max(scratch, step->scratchpad_bytes());
    }
    for (const LinearBackwardStep* step : {&added.d_qkv, &added.d_attention_out, &added.d_intermediate, &added.d_output}) {
      scratch = std::max(scratch, step->scratchpad_bytes());
    }
  }
  const TaskHead head = model_.head;
  if (head == TaskHead::kTokenClassification || head == TaskHead::kQuestionAnswering) {
    const int64_t L = classifier_->out_features();
    const float* input = head == TaskHead::kTokenClassification ? b.token_input : b.final_hidden;
    const char* prefix = head == TaskHead::kQuestionAnswering ? "qa_outputs" : "classifier";
    steps->classifier = LinearStep(*classifier_, input, C, b.token_logits, L, rows, Epilogue::kNone, false);
    steps->d_classifier = LinearBackwardStep(input, C, parameter(str_cat(prefix, ".weight")).data<float>(),
                                             b.d_token_logits, L, b.d_x, C, gradient(str_cat(prefix, ".weight")),
                                             gradient(str_cat(prefix, ".bias")), rows, C, L, false);
    scratch = std::max({scratch, steps->classifier.scratchpad_bytes(), steps->d_classifier.scratchpad_bytes()});
  }
  TokenSteps& result = *token_steps_.emplace(rows, std::move(steps)).first->second;
  bind_scratchpad(scratch);
  for (auto& layer : result.layers) {
    for (LinearStep* step : {&layer.qkv, &layer.attention_out, &layer.intermediate, &layer.output}) {
      step->bind_scratchpad(scratchpad_.get());
    }
    for (LinearBackwardStep* step : {&layer.d_qkv, &layer.d_attention_out, &layer.d_intermediate, &layer.d_output}) {
      step->bind_scratchpad(scratchpad_.get());
    }
  }
  if (result.classifier.defined()) result.classifier.bind_scratchpad(scratchpad_.get());
  if (result.d_classifier.defined()) result.d_classifier.bind_scratchpad(scratchpad_.get());
  return result;
}

TrainingGraph::SequenceSteps& TrainingGraph::sequence_steps(int64_t rows) {
  auto found = sequence_steps_.find(rows);
  if (found != sequence_steps_.end()) return *found->second;
  const int64_t C = model_.config.hidden_size, I = model_.config.intermediate_size;
  const int64_t L = classifier_->out_features();
  const Buffers& b = *buffers_;
  const Layer& last = *layers_.back();
  auto steps = std::make_unique<SequenceSteps>();
  steps->pooler = LinearStep(*pooler_, b.cls_rows, C, b.pooled, C, rows, Epilogue::kTanh, false);
  steps->classifier = LinearStep(*classifier_, b.pooled_dropped, C, b.sequence_logits, L, rows, Epilogue::kNone, false);
  steps->d_pooler = LinearBackwardStep(b.cls_rows, C, parameter("pooler.dense.weight").data<float>(), b.d_pooled, C,
                                       b.d_cls, C, gradient("pooler.dense.weight"), gradient("pooler.dense.bias"), rows,
                                       C, C, false);
  steps->d_classifier = LinearBackwardStep(b.pooled_dropped, C, parameter("classifier.weight").data<float>(),
                                           b.d_sequence_logits, L, b.d_pooled, C, gradient("classifier.weight"),
                                           gradient("classifier.bias"), rows, C, L, false);
  // The last layer on the [CLS] rows: the same products as TokenSteps' over the row-wise buffers.
  steps->query = LinearStep(*last.query, b.cls_x, C, b.cls_q, C, rows, Epilogue::kNone, false);
  // d of q = cls_x Wq^T + bq: dx is d_cls_x (overwritten), scattered onto the token rows by the caller.
  steps->d_query = LinearBackwardStep(b.cls_x, C, last.qkv_weight.data<float>(), b.d_cls_q, C, b.d_cls_x, C,
                                      last.d_qkv_weight, last.d_qkv_bias, rows, C, C, false);
  steps->attention_out = LinearStep(*last.attention_out, b.cls_context, C, b.temp_c, C, rows, Epilogue::kNone, false);
  steps->intermediate = LinearStep(*last.intermediate, last.h1, C, last.ff_pre, I, rows, Epilogue::kNone, false);
  steps->output = LinearStep(*last.output, b.temp_i, I, b.temp_c, C, rows, Epilogue::kNone, false);
  // d of temp = cls_context Wo^T + bo: dx is d_cls_context (overwritten).
  steps->d_attention_out =
      LinearBackwardStep(b.cls_context, C, last.attention_out_weight.data<float>(), b.d_temp, C, b.d_cls_context, C,
                         last.d_attention_out_weight, last.d_attention_out_bias, rows, C, C, false);
  // d of ff_pre = h1 W1^T + b1: dx ADDED onto the residual gradient of h1 in d_cls.
  steps->d_intermediate = LinearBackwardStep(last.h1, C, last.intermediate_weight.data<float>(), b.d_ff, I, b.d_cls, C,
                                             last.d_intermediate_weight, last.d_intermediate_bias, rows, C, I, true);
  // d of temp = act(ff_pre) W2^T + b2: dx is d_ff (overwritten).
  steps->d_output = LinearBackwardStep(b.temp_i, I, last.output_weight.data<float>(), b.d_temp, C, b.d_ff, I,
                                       last.d_output_weight, last.d_output_bias, rows, I, C, false);
  size_t scratch = 0;
  for (const LinearStep* step : {&steps->pooler, &steps->classifier, &steps->query, &steps->attention_out,
                                 &steps->intermediate, &steps->output}) {
    scratch = std::max(scratch, step->scratchpad_bytes());
  }
  for (const LinearBackwardStep* step : {&steps->d_pooler, &steps->d_classifier, &steps->d_query,
                                         &steps->d_attention_out, &steps->d_intermediate, &steps->d_output}) {
    scratch = std::max(scratch, step->scratchpad_bytes());
  }
  SequenceSteps& result = *sequence_steps_.emplace(rows, std::move(steps)).first->second;
  bind_scratchpad(scratch);
  bind_sequence_scratchpad(result);
  return result;
}

void TrainingGraph::bind_sequence_scratchpad(SequenceSteps& steps) {
  for (LinearStep* step : {&steps.pooler, &steps.classifier, &steps.query, &steps.attention_out, &steps.intermediate,
                           &steps.output}) {
    step->bind_scratchpad(scratchpad_.get());
  }
  for (LinearBackwardStep* step : {&steps.d_pooler, &steps.d_classifier, &steps.d_query, &steps.d_attention_out,
                                   &steps.d_intermediate, &steps.d_output}) {
    step->bind_scratchpad(scratchpad_.get());
  }
}

TrainingGraph::MaskedSteps& TrainingGraph::masked_steps(int64_t rows) {
  auto found = masked_steps_.find(rows);
  if (found != masked_steps_.end()) return *found->second;
  const int64_t C = model_.config.hidden_size, V = model_.config.vocab_size;
  const Buffers& b = *buffers_;
  auto steps = std::make_unique<MaskedSteps>();
  steps->transform = LinearStep(*mlm_transform_, b.masked_rows, C, b.transform_pre, C, rows, Epilogue::kNone, false);
  steps->decoder = LinearStep(*mlm_decoder_, b.transform_out, C, b.mlm_logits, V, rows, Epilogue::kNone, false);
  steps->d_transform = LinearBackwardStep(
      b.masked_rows, C, parameter("cls.predictions.transform.dense.weight").data<float>(), b.d_transform, C,
      b.d_masked, C, gradient("cls.predictions.transform.dense.weight"),
      gradient("cls.predictions.transform.dense.bias"), rows, C, C, false);
  // The decoder is tied to the word embeddings: its weight gradient adds into theirs.
  steps->d_decoder = LinearBackwardStep(b.transform_out, C, parameter("embeddings.word_embeddings.weight").data<float>(),
                                        b.mlm_logits, V, b.d_transform, C, gradient("embeddings.word_embeddings.weight"),
                                        gradient("cls.predictions.bias"), rows, C, V, false);
  size_t scratch = std::max({steps->transform.scratchpad_bytes(), steps->decoder.scratchpad_bytes(),
                             steps->d_transform.scratchpad_bytes(), steps->d_decoder.scratchpad_bytes()});
  MaskedSteps& result = *masked_steps_.emplace(rows, std::move(steps)).first->second;
  bind_scratchpad(scratch);
  for (LinearStep* step : {&result.transform, &result.decoder}) step->bind_scratchpad(scratchpad_.get());
  for (LinearBackwardStep* step : {&result.d_transform, &result.d_decoder}) step->bind_scratchpad(scratchpad_.get());
  return result;
}

void TrainingGraph::check_labels(const TrainingBatch& batch) const {
  const int64_t N = batch.tokens.tokens(), S = batch.tokens.sequences();
  auto check_range = [](const std::vector<int32_t>& labels, int64_t expected_count, int64_t classes, bool allow_ignore,
                        const char* what) {
    check(static_cast<int64_t>(labels.size()) == expected_count, what, ": expected ", expected_count,
          " values, got ", labels.size());
    for (size_t index = 0; index < labels.size(); ++index) {
      const int32_t label = labels[index];
      check((allow_ignore && label == kernels::kIgnoreIndex) || (label >= 0 && label < classes), what, "[", index,
            "] = ", label, " is outside [0, ", classes, ")");
    }
  };
  switch (model_.head) {
    case TaskHead::kSequenceClassification:
      check_range(batch.labels, S, classifier_->out_features(), false, "sequence labels");
      break;
    case TaskHead::kTokenClassification:
      check_range(batch.labels, N, classifier_->out_features(), true, "token labels");
      break;
    case TaskHead::kMaskedLM: check_range(batch.labels, N, model_.config.vocab_size, true, "masked-LM labels"); break;
    case TaskHead::kQuestionAnswering:
      check(static_cast<int64_t>(batch.start_positions.size()) == S && static_cast<int64_t>(batch.end_positions.size()) == S,
            "question answering needs ", S, " start and end positions, got ", batch.start_positions.size(), " and ",
            batch.end_positions.size());
      for (int64_t s = 0; s < S; ++s) {
        check(batch.start_positions[s] >= 0 && batch.end_positions[s] >= 0, "sequence ", s,
              " has a negative answer position (", batch.start_positions[s], ", ", batch.end_positions[s], ")");
      }
      break;
    case TaskHead::kNone: break;
  }
}

void TrainingGraph::cls_layer_forward(Layer& layer, SequenceSteps& sequence, int64_t S, float p_hidden, uint64_t seed,
                                      uint64_t& offset) {
  const BertConfig& config = model_.config;
  const int64_t C = config.hidden_size, I = config.intermediate_size;
  const float eps = static_cast<float>(config.layer_norm_eps);
  Buffers& b = *buffers_;
  // The rows below are the S [CLS] rows: row s stands for packed token offsets[s]. b.cls_context
  // holds their attention output (first_query_attention_forward_train).
  sequence.attention_out.run(stream_);  // temp = context Wo^T + bo
  layer.attention_out_offset = offset;
  kernels::dropout_forward(layer.r1, b.temp_c, S * C, p_hidden, seed, offset);  // r1 = x + dropout(temp)
  offset += S * C;
  for (int64_t s = 0; s < S; ++s) {
    const float* x = layer.x_in + b.offsets[s] * C;
    float* r1 = layer.r1 + s * C;
    for (int64_t c = 0; c < C; ++c) r1[c] += x[c];
  }
  kernels::layernorm_forward(layer.h1, layer.r1, layer.norm1_gamma.data<float>(), layer.norm1_beta.data<float>(), S, C,
                             eps, layer.mean1, layer.rstd1);
  sequence.intermediate.run(stream_);  // ff_pre = h1 W1^T + b1
  kernels::activation_forward(config.hidden_act, b.temp_i, layer.ff_pre, S * I);
  sequence.output.run(stream_);  // temp = act(ff_pre) W2^T + b2
  layer.output_offset = offset;
  kernels::dropout_forward(layer.r2, b.temp_c, S * C, p_hidden, seed, offset);  // r2 = h1 + dropout(temp)
  offset += S * C;
  for (int64_t i = 0; i < S * C; ++i) layer.r2[i] += layer.h1[i];
  kernels::layernorm_forward(b.cls_rows, layer.r2, layer.norm2_gamma.data<float>(), layer.norm2_beta.data<float>(), S,
                             C, eps, layer.mean2, layer.rstd2);
}

void TrainingGraph::cls_layer_backward(Layer& layer, SequenceSteps& sequence, int64_t N, int64_t S, float p_hidden,
                                       uint64_t seed) {
  const BertConfig& config = model_.config;
  const int64_t C = config.hidden_size, I = config.intermediate_size;
  Buffers& b = *buffers_;
  // The [CLS]-row products run over the sequence bucket: d_temp's rows past S must be zero there
  // (they hold the previous step's token-row values).
  const int64_t S_bucket = InferenceSession::bucket_rows(S);
  std::memset(b.d_temp + S * C, 0, static_cast<size_t>((S_bucket - S) * C) * sizeof(float));
  // cls = LN2(r2)
  kernels::layernorm_backward(b.d_cls, layer.d_norm2_gamma, layer.d_norm2_beta, b.d_cls, layer.r2,
                              layer.norm2_gamma.data<float>(), layer.mean2, layer.rstd2, S, C);
  // r2 = h1 + dropout(temp)
  kernels::dropout_backward(b.d_temp, b.d_cls, S * C, p_hidden, seed, layer.output_offset);
  // temp = act(ff_pre) W2^T + b2, with act(ff_pre) recomputed
  kernels::activation_forward(config.hidden_act, b.temp_i, layer.ff_pre, S * I);
  sequence.d_output.run(stream_);
  kernels::activation_backward(config.hidden_act, b.d_ff, layer.ff_pre, b.d_ff, S * I);
  // ff_pre = h1 W1^T + b1: d h1 += d ff_pre W1
  sequence.d_intermediate.run(stream_);
  // h1 = LN1(r1)
  kernels::layernorm_backward(b.d_cls, layer.d_norm1_gamma, layer.d_norm1_beta, b.d_cls, layer.r1,
                              layer.norm1_gamma.data<float>(), layer.mean1, layer.rstd1, S, C);
  // r1 = x + dropout(temp)
  kernels::dropout_backward(b.d_temp, b.d_cls, S * C, p_hidden, seed, layer.attention_out_offset);
  // temp = cls_context Wo^T + bo
  sequence.d_attention_out.run(stream_);
  // Back to token rows: d x (residual part) is the [CLS] rows' values, zero elsewhere.
  std::memset(b.d_x, 0, static_cast<size_t>(N * C) * sizeof(float));
  for (int64_t s = 0; s < S; ++s) std::memcpy(b.d_x + b.offsets[s] * C, b.d_cls + s * C, C * sizeof(float));
}

StepLoss TrainingGraph::forward_backward(const TrainingBatch& batch, float grad_scale, uint64_t seed) {
  return run(batch, grad_scale, seed, true, nullptr);
}

StepLoss TrainingGraph::evaluate(const TrainingBatch& batch, Tensor* logits) {
  return run(batch, 0.0f, 0, false, logits);
}

StepLoss TrainingGraph::run(const TrainingBatch& batch, float grad_scale, uint64_t seed, bool train, Tensor* logits) {
  const BertConfig& config = model_.config;
  const PackedBatch& tokens = batch.tokens;
  const int64_t N = tokens.tokens(), S = tokens.sequences();
  check(N > 0 && S > 0, "cannot train on an empty batch");
  check(tokens.max_length() <= config.max_position_embeddings, "sequence of ", tokens.max_length(),
        " tokens is longer than max_position_embeddings ", config.max_position_embeddings);
  check_labels(batch);
  Buffers& b = *buffers_;
  b.masked_targets.clear();
  b.masked_tokens.clear();
  if (model_.head == TaskHead::kMaskedLM) {
    for (int64_t n = 0; n < N; ++n) {
      if (batch.labels[n] != kernels::kIgnoreIndex) {
        b.masked_targets.push_back(batch.labels[n]);
        b.masked_tokens.push_back(n);
      }
    }
  }
  const int64_t R = static_cast<int64_t>(b.masked_targets.size());
  reserve(N, S, tokens.max_length(), R);

  const int64_t C = config.hidden_size, I = config.intermediate_size;
  const int64_t NH = config.num_attention_heads, HS = config.head_size();
  const float eps = static_cast<float>(config.layer_norm_eps);
  const kernels::Activation activation = config.hidden_act;
  const float p_hidden = train ? dropout_.hidden : 0.0f;
  const float p_attention = train ? dropout_.attention : 0.0f;
  const float p_classifier = train ? dropout_.classifier : 0.0f;
  const int64_t M = InferenceSession::bucket_rows(N);
  TokenSteps& steps = token_steps(M);
  // Mixed precision: the products' bf16 copies of f32 buffers of M rows (the top of this file).
  const auto round_rows = [&](const float* source, BFloat16* copy, int64_t width) {
    if (bf16_) kernels::convert_rows_bf16(source, width, M, width, copy, width);
  };
  // ... and of an output gradient, as rows and transposed, adding its column sums to `bias`
  // (the bias gradient, which the product's backward step then leaves alone) when not null.
  const auto round_gradient = [&](const float* source, BFloat16* copy, BFloat16* transposed, int64_t width,
                                  float* bias) {
    if (bf16_) kernels::convert_rows_bf16_transposed(source, M, width, copy, transposed, bias);
  };
  if (bf16_) round_weights_to_bf16();
  std::memcpy(b.offsets, tokens.sequence_offsets.data(), (S + 1) * sizeof(int64_t));
  if (train) {
    // Gradient rows past the real tokens (and sequences) are read by the bucket-sized products: a
    // larger earlier batch of the same bucket left values there, so clear them (see the header).
    for (auto [buffer, width] : {std::pair<float*, int64_t>{b.d_x, C}, {b.d_temp, C}, {b.d_ff, I}, {b.d_qkv, 3 * C},
                                 {b.d_context, C}, {b.d_token_logits, classifier_ ? classifier_->out_features() : 0}}) {
      std::memset(buffer + N * width, 0, static_cast<size_t>((M - N) * width) * sizeof(float));
    }
    const int64_t S_bucket = InferenceSession::bucket_rows(S);
    for (auto [buffer, width] : {std::pair<float*, int64_t>{b.d_pooled, C}, {b.d_cls, C}, {b.d_cls_q, C},
                                 {b.d_sequence_logits, classifier_ ? classifier_->out_features() : 0}}) {
      std::memset(buffer + S * width, 0, static_cast<size_t>((S_bucket - S) * width) * sizeof(float));
    }
  }
  uint64_t offset = 0;  // dropout counter: every site draws its own index range
  const int64_t probs_floats = kernels::attention_probs_floats(b.offsets, S, NH);

  // ---- Forward ----
  const Tensor word = parameter("embeddings.word_embeddings.weight");
  const Tensor position = parameter("embeddings.position_embeddings.weight");
  const Tensor type = parameter("embeddings.token_type_embeddings.weight");
  const Tensor norm0_gamma = parameter("embeddings.LayerNorm.weight");
  const Tensor norm0_beta = parameter("embeddings.LayerNorm.bias");
  // e = word[id] + position[p] + type[t]; ids are checked by the embedding backward kernel's rules.
  for (int64_t n = 0; n < N; ++n) {
    const int32_t id = tokens.input_ids[n], p = tokens.position_ids[n], t = tokens.token_type_ids[n];
    check(id >= 0 && id < word.dim(0) && p >= 0 && p < position.dim(0) && t >= 0 && t < type.dim(0), "token ", n,
          ": id ", id, ", position ", p, " or type ", t, " is outside its embedding table (", word.dim(0), ", ",
          position.dim(0), ", ", type.dim(0), ")");
  }
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* w = word.data<float>() + tokens.input_ids[n] * C;
    const float* p = position.data<float>() + tokens.position_ids[n] * C;
    const float* t = type.data<float>() + tokens.token_type_ids[n] * C;
    float* e = b.embedding_sum + n * C;
    for (int64_t c = 0; c < C; ++c) e[c] = w[c] + p[c] + t[c];
  }
  // x_in[0] = dropout(LN0(e))
  float* x0 = layers_.front()->x_in;
  kernels::layernorm_forward(x0, b.embedding_sum, norm0_gamma.data<float>(), norm0_beta.data<float>(), N, C, eps,
                             b.mean0, b.rstd0);
  const uint64_t embedding_offset = offset;
  kernels::dropout_forward(x0, x0, N * C, p_hidden, seed, offset);
  offset += N * C;

  // Sequence classification: the last layer after its attention runs on the [CLS] rows only.
  const bool cls_only = model_.head == TaskHead::kSequenceClassification;
  SequenceSteps* sequence = cls_only ? &sequence_steps(InferenceSession::bucket_rows(S)) : nullptr;
  for (size_t index = 0; index < layers_.size(); ++index) {
    Layer& layer = *layers_[index];
    TokenSteps::LayerSteps& layer_steps = steps.layers[index];
    float* next = index + 1 < layers_.size() ? layers_[index + 1]->x_in : b.final_hidden;
    round_rows(layer.x_in, layer.x_in_bf16, C);
    layer_steps.qkv.run(stream_);  // qkv = x Wqkv^T + b (K and V only in the [CLS]-row last layer)
    layer.attention_offset = offset;
    if (cls_only && index + 1 == layers_.size()) {
      // q = x Wq^T + bq on the [CLS] rows, then their attention over every key and value.
      for (int64_t s = 0; s < S; ++s) {
        std::memcpy(b.cls_x + s * C, layer.x_in + b.offsets[s] * C, C * sizeof(float));
      }
      sequence->query.run(stream_);
      kernels::first_query_attention_forward_train(b.cls_context, layer.probs, b.cls_q, layer.qkv_rows, b.offsets, S,
                                                   NH, HS, p_attention, seed, offset, b.attention_scratch,
                                                   b.attention_scratch_floats);
      offset += probs_floats;
      cls_layer_forward(layer, *sequence, S, p_hidden, seed, offset);  // writes b.cls_rows
      break;
    }
    kernels::attention_forward_train(layer.context, layer.probs, layer.qkv_rows, b.offsets, S, NH, HS, p_attention,
                                     seed, offset, b.attention_scratch, b.attention_scratch_floats, bf16_);
    offset += probs_floats;
    round_rows(layer.context, layer.context_bf16, C);
    layer_steps.attention_out.run(stream_);  // temp = context Wo^T + bo
    layer.attention_out_offset = offset;
    kernels::dropout_forward(layer.r1, b.temp_c, N * C, p_hidden, seed, offset);  // r1 = x + dropout(temp)
    offset += N * C;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * C; ++i) layer.r1[i] += layer.x_in[i];
    kernels::layernorm_forward(layer.h1, layer.r1, layer.norm1_gamma.data<float>(), layer.norm1_beta.data<float>(), N,
                               C, eps, layer.mean1, layer.rstd1);
    round_rows(layer.h1, layer.h1_bf16, C);
    layer_steps.intermediate.run(stream_);  // ff_pre = h1 W1^T + b1
    if (bf16_) {  // act(ff_pre) is only ever the output product's input: its bf16 copy alone
      kernels::activation_forward_bf16(activation, layer.ff_act_bf16, layer.ff_pre, N * I);
    } else {
      kernels::activation_forward(activation, layer.ff_act, layer.ff_pre, N * I);
    }
    layer_steps.output.run(stream_);  // temp = act(ff_pre) W2^T + b2
    layer.output_offset = offset;
    kernels::dropout_forward(layer.r2, b.temp_c, N * C, p_hidden, seed, offset);  // r2 = h1 + dropout(temp)
    offset += N * C;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * C; ++i) layer.r2[i] += layer.h1[i];
    kernels::layernorm_forward(next, layer.r2, layer.norm2_gamma.data<float>(), layer.norm2_beta.data<float>(), N, C,
                               eps, layer.mean2, layer.rstd2);
  }

  // ---- Head forward, loss and head backward (which leaves d final_hidden in d_x) ----
  StepLoss result;
  switch (model_.head) {
    case TaskHead::kSequenceClassification: {
      const int64_t L = classifier_->out_features();
      // b.cls_rows holds the last layer's [CLS] rows (cls_layer_forward).
      sequence->pooler.run(stream_);  // pooled = tanh(cls Wp^T + bp)
      const uint64_t classifier_offset = offset;
      kernels::dropout_forward(b.pooled_dropped, b.pooled, S * C, p_classifier, seed, offset);
      offset += S * C;
      sequence->classifier.run(stream_);  // logits = dropout(pooled) Wc^T + bc
      kernels::LossResult loss = kernels::cross_entropy_forward_backward(
          train ? b.d_sequence_logits : nullptr, b.row_losses, b.sequence_logits, batch.labels.data(), S, L, grad_scale);
      result = StepLoss{loss.loss, loss.count};
      if (logits) *logits = Tensor::view(b.sequence_logits, {S, L}, DType::kF32, arena_.block());
      if (!train) break;
      sequence->d_classifier.run(stream_);  // d_pooled (dropped)
      kernels::dropout_backward(b.d_pooled, b.d_pooled, S * C, p_classifier, seed, classifier_offset);
      kernels::tanh_backward(b.d_pooled, b.pooled, b.d_pooled, S * C);
      sequence->d_pooler.run(stream_);  // d_cls: d of the last layer's [CLS] rows
      break;
    }
    case TaskHead::kTokenClassification: {
      const int64_t L = classifier_->out_features();
      const uint64_t classifier_offset = offset;
      kernels::dropout_forward(b.token_input, b.final_hidden, N * C, p_classifier, seed, offset);
      offset += N * C;
      steps.classifier.run(stream_);  // logits = dropout(h) Wc^T + bc
      kernels::LossResult loss = kernels::cross_entropy_forward_backward(
          train ? b.d_token_logits : nullptr, b.row_losses, b.token_logits, batch.labels.data(), N, L, grad_scale);
      result = StepLoss{loss.loss, loss.count};
      if (logits) *logits = Tensor::view(b.token_logits, {N, L}, DType::kF32, arena_.block());
      if (!train) break;
      steps.d_classifier.run(stream_);  // d_x = d(dropout(h))
      kernels::dropout_backward(b.d_x, b.d_x, N * C, p_classifier, seed, classifier_offset);
      break;
    }
    case TaskHead::kQuestionAnswering: {
      steps.classifier.run(stream_);  // (start, end) = h Wqa^T + bqa
      kernels::QaLossResult loss = kernels::qa_span_loss_forward_backward(
          train ? b.d_token_logits : nullptr, b.token_logits, b.offsets, S, batch.start_positions.data(),
          batch.end_positions.data(), grad_scale);
      result = StepLoss{loss.loss, std::max(loss.start_count, loss.end_count)};
      if (logits) *logits = Tensor::view(b.token_logits, {N, 2}, DType::kF32, arena_.block());
      if (!train) break;
      steps.d_classifier.run(stream_);
      break;
    }
    case TaskHead::kMaskedLM: {
      if (R == 0) {  // nothing masked: zero loss, zero gradient
        if (logits) *logits = Tensor::view(b.mlm_logits, {0, config.vocab_size}, DType::kF32, arena_.block());
        if (train) std::memset(b.d_x, 0, N * C * sizeof(float));
        break;
      }
      MaskedSteps& masked = masked_steps(InferenceSession::bucket_rows(R));
      for (int64_t r = 0; r < R; ++r) {
        std::memcpy(b.masked_rows + r * C, b.final_hidden + b.masked_tokens[r] * C, C * sizeof(float));
      }
      masked.transform.run(stream_);  // t = g Wt^T + bt
      std::memcpy(b.transform_act, b.transform_pre, R * C * sizeof(float));
      kernels::activation_forward(activation, b.transform_act, R * C);
      const Tensor mlm_gamma = parameter("cls.predictions.transform.LayerNorm.weight");
      kernels::layernorm_forward(b.transform_out, b.transform_act, mlm_gamma.data<float>(),
                                 parameter("cls.predictions.transform.LayerNorm.bias").data<float>(), R, C, eps,
                                 b.transform_mean, b.transform_rstd);
      masked.decoder.run(stream_);  // logits = LN(act(t)) E^T + b
      const int64_t V = config.vocab_size;
      kernels::LossResult loss = kernels::cross_entropy_forward_backward(
          train ? b.mlm_logits : nullptr, b.row_losses, b.mlm_logits, b.masked_targets.data(), R, V, grad_scale);
      result = StepLoss{loss.loss, loss.count};
      if (logits) *logits = Tensor::view(b.mlm_logits, {R, V}, DType::kF32, arena_.block());
      if (!train) break;
      // The logits' pad rows (R up to the bucket) hold forward values: zero them so the in-place
      // gradient contributes nothing there.
      std::memset(b.mlm_logits + R * V, 0, (InferenceSession::bucket_rows(R) - R) * V * sizeof(float));
      masked.d_decoder.run(stream_);  // d_transform = dlogits E; dE += dlogits^T t; db += sum dlogits
      kernels::layernorm_backward(b.d_transform, gradient("cls.predictions.transform.LayerNorm.weight"),
                                  gradient("cls.predictions.transform.LayerNorm.bias"), b.d_transform, b.transform_act,
                                  mlm_gamma.data<float>(), b.transform_mean, b.transform_rstd, R, C);
      kernels::activation_backward(activation, b.d_transform, b.transform_pre, b.d_transform, R * C);
      masked.d_transform.run(stream_);  // d_masked
      std::memset(b.d_x, 0, N * C * sizeof(float));
      for (int64_t r = 0; r < R; ++r) {
        std::memcpy(b.d_x + b.masked_tokens[r] * C, b.d_masked + r * C, C * sizeof(float));
      }
      break;
    }
    case TaskHead::kNone: break;
  }
  if (!train) return result;

  // ---- Encoder backward: d_x holds d final_hidden (d_cls its [CLS] rows when cls_only) ----
  for (size_t index = layers_.size(); index-- > 0;) {
    Layer& layer = *layers_[index];
    TokenSteps::LayerSteps& layer_steps = steps.layers[index];
    if (cls_only && index + 1 == layers_.size()) {
      cls_layer_backward(layer, *sequence, N, S, p_hidden, seed);  // leaves d_cls_context, d r1 in d_x
      kernels::first_query_attention_backward(b.d_cls_q, b.d_qkv, b.d_cls_context, b.cls_q, layer.qkv_rows,
                                              layer.probs, b.offsets, S, NH, HS, p_attention, seed,
                                              layer.attention_offset, b.attention_scratch,
                                              b.attention_scratch_floats);
      round_gradient(b.d_qkv, b.d_qkv_bf16, b.d_qkv_t, 3 * C, nullptr);  // K/V bias: in the step (2C columns)
      layer_steps.d_qkv.run(stream_);  // K, V: d x += d kv Wkv
      sequence->d_query.run(stream_);  // Q of the [CLS] rows: d_cls_x = d q Wq
      for (int64_t s = 0; s < S; ++s) {
        float* dx = b.d_x + b.offsets[s] * C;
        const float* dq_x = b.d_cls_x + s * C;
        for (int64_t c = 0; c < C; ++c) dx[c] += dq_x[c];
      }
      continue;
    }
    // x_out = LN2(r2)
    kernels::layernorm_backward(b.d_x, layer.d_norm2_gamma, layer.d_norm2_beta, b.d_x, layer.r2,
                                layer.norm2_gamma.data<float>(), layer.mean2, layer.rstd2, N, C);
    // r2 = h1 + dropout(temp): d_x keeps d r2 as the residual part of d h1; d_temp gets d temp.
    kernels::dropout_backward(b.d_temp, b.d_x, N * C, p_hidden, seed, layer.output_offset);
    // temp = act(ff_pre) W2^T + b2
    round_gradient(b.d_temp, b.d_temp_bf16, b.d_temp_t, C, layer.d_output_bias);
    layer_steps.d_output.run(stream_);
    // act(ff_pre)
    kernels::activation_backward(activation, b.d_ff, layer.ff_pre, b.d_ff, N * I);
    // ff_pre = h1 W1^T + b1: d h1 += d ff_pre W1
    round_gradient(b.d_ff, b.d_ff_bf16, b.d_ff_t, I, layer.d_intermediate_bias);
    layer_steps.d_intermediate.run(stream_);
    // h1 = LN1(r1)
    kernels::layernorm_backward(b.d_x, layer.d_norm1_gamma, layer.d_norm1_beta, b.d_x, layer.r1,
                                layer.norm1_gamma.data<float>(), layer.mean1, layer.rstd1, N, C);
    // r1 = x + dropout(temp)
    kernels::dropout_backward(b.d_temp, b.d_x, N * C, p_hidden, seed, layer.attention_out_offset);
    // temp = context Wo^T + bo
    round_gradient(b.d_temp, b.d_temp_bf16, b.d_temp_t, C, layer.d_attention_out_bias);
    layer_steps.d_attention_out.run(stream_);
    // context = dropout(softmax(Q K^T / sqrt(HS))) V
    kernels::attention_backward(b.d_qkv, b.d_context, layer.qkv_rows, layer.probs, b.offsets, S, NH, HS, p_attention,
                                seed, layer.attention_offset, b.attention_scratch, b.attention_scratch_floats, bf16_);
    // qkv = x Wqkv^T + b: d x += d qkv Wqkv
    round_gradient(b.d_qkv, b.d_qkv_bf16, b.d_qkv_t, 3 * C, layer.d_qkv_bias);
    layer_steps.d_qkv.run(stream_);
  }
  // x_in[0] = dropout(LN0(e)); e = word[id] + position[p] + type[t]
  kernels::dropout_backward(b.d_x, b.d_x, N * C, p_hidden, seed, embedding_offset);
  kernels::layernorm_backward(b.d_x, gradient("embeddings.LayerNorm.weight"), gradient("embeddings.LayerNorm.bias"),
                              b.d_x, b.embedding_sum, norm0_gamma.data<float>(), b.mean0, b.rstd0, N, C);
  kernels::embedding_backward(gradient("embeddings.word_embeddings.weight"),
                              gradient("embeddings.position_embeddings.weight"),
                              gradient("embeddings.token_type_embeddings.weight"), b.d_x, tokens.input_ids.data(),
                              tokens.position_ids.data(), tokens.token_type_ids.data(), word.dim(0), position.dim(0),
                              type.dim(0), N, C);
  stream_.wait();
  return result;
}

}  // namespace scalebert
