// A loaded BERT model's weights in the layouts the inference kernels want: every Linear packed for
// oneDNN once (Q, K and V fused into one (3C, C) product), each in its own precision (f32, bf16 or
// int8; see kernels/cpu/low_precision_matmul.h), plus the F32 vectors (embeddings, layer norms)
// viewed from the parameter table. Immutable, so one InferenceWeights serves any number of
// sessions and threads.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/low_precision_matmul.h"
#include "kernels/cpu/matmul.h"
#include "model/bert_model.h"

namespace scalebert {

// How one Linear runs: its precision and, for static int8, the calibrated input scale (0: dynamic).
struct LinearPrecision {
  kernels::Precision precision = kernels::Precision::kF32;
  float input_scale = 0.0f;
};

// Precision of each Linear by its Hugging Face prefix: "encoder.layer.{i}.attention.self" (the
// fused Q/K/V product), "encoder.layer.{i}.attention.output.dense", "encoder.layer.{i}.intermediate.dense",
// "encoder.layer.{i}.output.dense", "pooler.dense", "classifier", "qa_outputs",
// "cls.predictions.transform.dense". Layers not listed run in f32; so does the masked-LM decoder
// (tied to the word embeddings).
struct PrecisionPlan {
  std::map<std::string, LinearPrecision> layers;
  LinearPrecision at(const std::string& prefix) const;
};

struct LayerNormWeights {
  Tensor gamma;  // (C)
  Tensor beta;   // (C)
};

struct EncoderLayerWeights {
  kernels::PrecisionLinear qkv;             // (3C, C): rows [query; key; value]
  kernels::PrecisionLinear attention_out;   // (C, C)
  LayerNormWeights attention_norm;
  kernels::PrecisionLinear intermediate;    // (I, C), activation fused
  kernels::PrecisionLinear output;          // (C, I), residual fused
  LayerNormWeights output_norm;
};

struct InferenceWeights {
  std::shared_ptr<const BertModel> model;
  Tensor word_embeddings;      // (V, C)
  Tensor position_embeddings;  // (P, C)
  Tensor type_embeddings;      // (TV, C)
  LayerNormWeights embedding_norm;
  std::vector<EncoderLayerWeights> layers;
  std::unique_ptr<kernels::PrecisionLinear> pooler;      // (C, C) when the model has a pooler
  std::unique_ptr<kernels::PrecisionLinear> classifier;  // (L, C) classification heads, (2, C) for QA
  // Masked-LM head: transform dense + activation + layer norm, then the decoder tied to the word
  // embeddings with its own bias.
  std::unique_ptr<kernels::PrecisionLinear> mlm_transform;  // (C, C)
  LayerNormWeights mlm_norm;
  std::unique_ptr<kernels::PrecisionLinear> mlm_decoder;    // (V, C), always f32
  kernels::Epilogue activation = kernels::Epilogue::kGeluErf;
  // Whether any Linear runs in bf16 or int8 (sessions then plan the low-precision scratch rows).
  bool low_precision = false;

  // Packs every weight of `model` (kept alive by the result). The precisions come from the
  // quantization recipe in the metadata of model->directory's model.safetensors when it has one
  // (written by `scalebert quantize`); otherwise every Linear is f32.
  static std::shared_ptr<const InferenceWeights> build(std::shared_ptr<const BertModel> model);
  // Packs with an explicit plan (benchmarks, calibration, tests).
  static std::shared_ptr<const InferenceWeights> build(std::shared_ptr<const BertModel> model,
                                                       const PrecisionPlan& plan);
};

}  // namespace scalebert
