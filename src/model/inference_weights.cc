// Packing a BertModel's parameters into inference layouts.
#include "model/inference_weights.h"

#include <cstring>

namespace scalebert {

namespace {

kernels::Epilogue activation_epilogue(Activation activation) {
  switch (activation) {
    case Activation::kGeluErf: return kernels::Epilogue::kGeluErf;
    case Activation::kGeluTanh: return kernels::Epilogue::kGeluTanh;
    case Activation::kRelu: return kernels::Epilogue::kRelu;
  }
  return kernels::Epilogue::kGeluErf;
}

LayerNormWeights layernorm_weights(const ParameterTable& table, const std::string& prefix) {
  return LayerNormWeights{table.get(prefix + ".weight"), table.get(prefix + ".bias")};
}

kernels::PackedLinear packed(const ParameterTable& table, const std::string& prefix) {
  return kernels::PackedLinear(table.get(prefix + ".weight"), table.get(prefix + ".bias"));
}

// Stacks the query, key and value projections into one (3C, C) weight and (3C) bias, so one
// product computes all three and the attention kernel reads row n as [q | k | v].
kernels::PackedLinear fused_qkv(const ParameterTable& table, int64_t layer, int64_t C) {
  Tensor weight = Tensor::empty({3 * C, C}, DType::kF32);
  Tensor bias = Tensor::empty({3 * C}, DType::kF32);
  const char* names[] = {"query", "key", "value"};
  for (int part = 0; part < 3; ++part) {
    std::string prefix = layer_parameter(layer, str_cat("attention.self.", names[part]));
    std::memcpy(weight.data<float>() + part * C * C, table.get(prefix + ".weight").raw(), C * C * sizeof(float));
    std::memcpy(bias.data<float>() + part * C, table.get(prefix + ".bias").raw(), C * sizeof(float));
  }
  return kernels::PackedLinear(weight, bias);
}

}  // namespace

std::shared_ptr<const InferenceWeights> InferenceWeights::build(std::shared_ptr<const BertModel> model) {
  auto weights = std::make_shared<InferenceWeights>();
  const ParameterTable& table = model->parameters;
  const BertConfig& config = model->config;
  const int64_t C = config.hidden_size;
  weights->word_embeddings = table.get("embeddings.word_embeddings.weight");
  weights->position_embeddings = table.get("embeddings.position_embeddings.weight");
  weights->type_embeddings = table.get("embeddings.token_type_embeddings.weight");
  weights->embedding_norm = layernorm_weights(table, "embeddings.LayerNorm");
  weights->activation = activation_epilogue(config.hidden_act);
  weights->layers.reserve(config.num_hidden_layers);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    weights->layers.push_back(EncoderLayerWeights{
        fused_qkv(table, layer, C),
        packed(table, layer_parameter(layer, "attention.output.dense")),
        layernorm_weights(table, layer_parameter(layer, "attention.output.LayerNorm")),
        packed(table, layer_parameter(layer, "intermediate.dense")),
        packed(table, layer_parameter(layer, "output.dense")),
        layernorm_weights(table, layer_parameter(layer, "output.LayerNorm")),
    });
  }
  if (model->has_pooler) weights->pooler = std::make_unique<kernels::PackedLinear>(packed(table, "pooler.dense"));
  switch (model->head) {
    case TaskHead::kNone: break;
    case TaskHead::kSequenceClassification:
    case TaskHead::kTokenClassification:
      weights->classifier = std::make_unique<kernels::PackedLinear>(packed(table, "classifier"));
      break;
    case TaskHead::kQuestionAnswering:
      weights->classifier = std::make_unique<kernels::PackedLinear>(packed(table, "qa_outputs"));
      break;
    case TaskHead::kMaskedLM:
      weights->mlm_transform =
          std::make_unique<kernels::PackedLinear>(packed(table, "cls.predictions.transform.dense"));
      weights->mlm_norm = layernorm_weights(table, "cls.predictions.transform.LayerNorm");
      weights->mlm_decoder = std::make_unique<kernels::PackedLinear>(
          table.get("embeddings.word_embeddings.weight"), table.get("cls.predictions.bias"));
      break;
  }
  weights->model = std::move(model);
  return weights;
}

}  // namespace scalebert
