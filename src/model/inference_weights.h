// A loaded BERT model's weights in the layouts the inference kernels want: every Linear packed for
// oneDNN once (Q, K and V fused into one (3C, C) product), plus the F32 vectors (embeddings, layer
// norms) viewed from the parameter table. Immutable, so one InferenceWeights serves any number of
// sessions and threads.
#pragma once

#include <memory>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "model/bert_model.h"

namespace scalebert {

struct LayerNormWeights {
  Tensor gamma;  // (C)
  Tensor beta;   // (C)
};

struct EncoderLayerWeights {
  kernels::PackedLinear qkv;             // (3C, C): rows [query; key; value]
  kernels::PackedLinear attention_out;   // (C, C)
  LayerNormWeights attention_norm;
  kernels::PackedLinear intermediate;    // (I, C), activation fused
  kernels::PackedLinear output;          // (C, I), residual fused
  LayerNormWeights output_norm;
};

struct InferenceWeights {
  std::shared_ptr<const BertModel> model;
  Tensor word_embeddings;      // (V, C)
  Tensor position_embeddings;  // (P, C)
  Tensor type_embeddings;      // (TV, C)
  LayerNormWeights embedding_norm;
  std::vector<EncoderLayerWeights> layers;
  std::unique_ptr<kernels::PackedLinear> pooler;      // (C, C) when the model has a pooler
  std::unique_ptr<kernels::PackedLinear> classifier;  // (L, C) classification heads, (2, C) for QA
  // Masked-LM head: transform dense + activation + layer norm, then the decoder tied to the word
  // embeddings with its own bias.
  std::unique_ptr<kernels::PackedLinear> mlm_transform;  // (C, C)
  LayerNormWeights mlm_norm;
  std::unique_ptr<kernels::PackedLinear> mlm_decoder;    // (V, C)
  kernels::Epilogue activation = kernels::Epilogue::kGeluErf;

  // Packs every weight of `model` (kept alive by the result).
  static std::shared_ptr<const InferenceWeights> build(std::shared_ptr<const BertModel> model);
};

}  // namespace scalebert
