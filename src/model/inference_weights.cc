// Packing a BertModel's parameters into inference layouts.
#include "model/inference_weights.h"

#include <cstring>

#include "kernels/cpu/quantize_rows.h"
#include "quant/quantized_model.h"
#include "quant/recipe.h"

namespace scalebert {

LinearPrecision PrecisionPlan::at(const std::string& prefix) const {
  auto found = layers.find(prefix);
  return found == layers.end() ? LinearPrecision{} : found->second;
}

namespace {

kernels::Epilogue activation_epilogue(Activation activation) {
  switch (activation) {
    case Activation::kGeluErf: return kernels::Epilogue::kGeluErf;
    case Activation::kGeluTanh: return kernels::Epilogue::kGeluTanh;
    case Activation::kRelu: return kernels::Epilogue::kRelu;
    case Activation::kTanh: return kernels::Epilogue::kTanh;
  }
  return kernels::Epilogue::kGeluErf;
}

// A copy that owns its memory: a view into the parameter table would keep the whole table alive.
Tensor owned_copy(const Tensor& tensor) {
  Tensor copy = Tensor::empty(tensor.shape(), tensor.dtype());
  std::memcpy(copy.raw(), tensor.raw(), tensor.nbytes());
  return copy;
}

LayerNormWeights layernorm_weights(const ParameterTable& table, const std::string& prefix) {
  return LayerNormWeights{owned_copy(table.get(prefix + ".weight")), owned_copy(table.get(prefix + ".bias"))};
}

kernels::PrecisionLinear packed(const ParameterTable& table, const std::string& prefix, const PrecisionPlan& plan) {
  const LinearPrecision precision = plan.at(prefix);
  return kernels::PrecisionLinear(table.get(prefix + ".weight"), table.get(prefix + ".bias"), precision.precision,
                                  precision.input_scale);
}

std::unique_ptr<kernels::PrecisionLinear> packed_unique(const ParameterTable& table, const std::string& prefix,
                                                        const PrecisionPlan& plan) {
  return std::make_unique<kernels::PrecisionLinear>(packed(table, prefix, plan));
}

// Stacks the query, key and value projections into one (3C, C) weight and (3C) bias, so one
// product computes all three and the attention kernel reads row n as [q | k | v].
kernels::PrecisionLinear fused_qkv(const ParameterTable& table, int64_t layer, int64_t C, const PrecisionPlan& plan) {
  Tensor weight = Tensor::empty({3 * C, C}, DType::kF32);
  Tensor bias = Tensor::empty({3 * C}, DType::kF32);
  const char* names[] = {"query", "key", "value"};
  for (int part = 0; part < 3; ++part) {
    std::string prefix = layer_parameter(layer, str_cat("attention.self.", names[part]));
    std::memcpy(weight.data<float>() + part * C * C, table.get(prefix + ".weight").raw(), C * C * sizeof(float));
    std::memcpy(bias.data<float>() + part * C, table.get(prefix + ".bias").raw(), C * sizeof(float));
  }
  const LinearPrecision precision = plan.at(layer_parameter(layer, "attention.self"));
  return kernels::PrecisionLinear(weight, bias, precision.precision, precision.input_scale);
}

}  // namespace

std::shared_ptr<const InferenceWeights> InferenceWeights::build(std::shared_ptr<const BertModel> model) {
  PrecisionPlan plan;
  if (!model->directory.empty()) {
    if (std::optional<quant::QuantizationRecipe> recipe = quant::read_recipe(model->directory)) {
      plan = quant::precision_plan(*recipe);
      plan.int8_word_embeddings = recipe->int8_embeddings && kernels::cpu_has_int8_dot_product();
    }
  }
  return build(std::move(model), plan);
}

std::shared_ptr<const InferenceWeights> InferenceWeights::build(std::shared_ptr<const BertModel> model,
                                                                const PrecisionPlan& plan) {
  auto weights = std::make_shared<InferenceWeights>();
  const ParameterTable& table = model->parameters;
  const BertConfig& config = model->config;
  const int64_t C = config.hidden_size;
  const Tensor word_embeddings = table.get("embeddings.word_embeddings.weight");  // (V, C)
  if (plan.int8_word_embeddings) {
    // Exact for a table that load_model dequantized from int8 rows (see quantized_model.h).
    const int64_t V = word_embeddings.dim(0);
    weights->word_embeddings_int8 = Tensor::empty({V, C}, DType::kI8);
    weights->word_embedding_scales = Tensor::empty({V}, DType::kF32);
    kernels::quantize_weight_rows(word_embeddings.data<float>(), V, C,
                                  static_cast<int8_t*>(weights->word_embeddings_int8.raw()),
                                  weights->word_embedding_scales.data<float>());
  } else {
    weights->word_embeddings = word_embeddings;
  }
  weights->position_embeddings = owned_copy(table.get("embeddings.position_embeddings.weight"));
  weights->type_embeddings = owned_copy(table.get("embeddings.token_type_embeddings.weight"));
  weights->embedding_norm = layernorm_weights(table, "embeddings.LayerNorm");
  weights->activation = activation_epilogue(config.hidden_act);
  weights->layers.reserve(config.num_hidden_layers);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    weights->layers.push_back(EncoderLayerWeights{
        fused_qkv(table, layer, C, plan),
        packed(table, layer_parameter(layer, "attention.output.dense"), plan),
        layernorm_weights(table, layer_parameter(layer, "attention.output.LayerNorm")),
        packed(table, layer_parameter(layer, "intermediate.dense"), plan),
        packed(table, layer_parameter(layer, "output.dense"), plan),
        layernorm_weights(table, layer_parameter(layer, "output.LayerNorm")),
    });
  }
  if (model->has_pooler) weights->pooler = packed_unique(table, "pooler.dense", plan);
  switch (model->head) {
    case TaskHead::kNone: break;
    case TaskHead::kSequenceClassification:
    case TaskHead::kTokenClassification:
      weights->classifier = packed_unique(table, "classifier", plan);
      break;
    case TaskHead::kQuestionAnswering:
      weights->classifier = packed_unique(table, "qa_outputs", plan);
      break;
    case TaskHead::kMaskedLM:
      weights->mlm_transform = packed_unique(table, "cls.predictions.transform.dense", plan);
      weights->mlm_norm = layernorm_weights(table, "cls.predictions.transform.LayerNorm");
      weights->mlm_decoder = std::make_unique<kernels::PrecisionLinear>(
          table.get("embeddings.word_embeddings.weight"), table.get("cls.predictions.bias"), kernels::Precision::kF32);
      break;
  }
  auto is_low = [](const kernels::PrecisionLinear* linear) {
    return linear != nullptr && linear->precision() != kernels::Precision::kF32;
  };
  for (const EncoderLayerWeights& layer : weights->layers) {
    for (const kernels::PrecisionLinear* linear : {&layer.qkv, &layer.attention_out, &layer.intermediate, &layer.output}) {
      weights->low_precision = weights->low_precision || is_low(linear);
    }
  }
  for (const auto* linear : {weights->pooler.get(), weights->classifier.get(), weights->mlm_transform.get()}) {
    weights->low_precision = weights->low_precision || is_low(linear);
  }
  bool static_int8 = false;
  for (const EncoderLayerWeights& layer : weights->layers) {
    for (const kernels::PrecisionLinear* linear : {&layer.qkv, &layer.attention_out, &layer.intermediate, &layer.output}) {
      static_int8 = static_int8 || (linear->precision() == kernels::Precision::kInt8 && linear->int8()->is_static());
    }
  }
  weights->bf16_attention = weights->low_precision && !static_int8;
  weights->model = std::move(model);
  return weights;
}

std::shared_ptr<const InferenceWeights> InferenceWeights::load(const std::filesystem::path& directory,
                                                               std::optional<TaskHead> head) {
  auto model = std::make_shared<BertModel>(quant::load_model(directory, head));
  auto packed = std::const_pointer_cast<InferenceWeights>(build(model));
  // The copy that stays: everything but the parameters.
  auto slim = std::make_shared<BertModel>();
  slim->config = model->config;
  slim->head = model->head;
  slim->has_pooler = model->has_pooler;
  slim->num_labels = model->num_labels;
  slim->directory = model->directory;
  slim->unused_tensors = model->unused_tensors;
  if (packed->word_embeddings.defined()) packed->word_embeddings = owned_copy(packed->word_embeddings);
  packed->model = std::move(slim);
  model.reset();  // the F32 table goes here
  return packed;
}

size_t InferenceWeights::owned_bytes() const {
  size_t bytes = 0;
  auto add_tensor = [&](const Tensor& tensor) {
    if (tensor.defined() && tensor.owner() != model->parameters.values().owner()) bytes += tensor.nbytes();
  };
  auto add_linear = [&](const kernels::PrecisionLinear* linear) {
    if (linear != nullptr) bytes += linear->bytes();
  };
  for (const Tensor* tensor : {&word_embeddings, &word_embeddings_int8, &word_embedding_scales, &position_embeddings,
                               &type_embeddings, &embedding_norm.gamma, &embedding_norm.beta, &mlm_norm.gamma,
                               &mlm_norm.beta}) {
    add_tensor(*tensor);
  }
  for (const EncoderLayerWeights& layer : layers) {
    for (const kernels::PrecisionLinear* linear : {&layer.qkv, &layer.attention_out, &layer.intermediate, &layer.output}) {
      add_linear(linear);
    }
    for (const LayerNormWeights* norm : {&layer.attention_norm, &layer.output_norm}) {
      add_tensor(norm->gamma);
      add_tensor(norm->beta);
    }
  }
  for (const auto* linear : {pooler.get(), classifier.get(), mlm_transform.get(), mlm_decoder.get()}) add_linear(linear);
  return bytes;
}

}  // namespace scalebert
