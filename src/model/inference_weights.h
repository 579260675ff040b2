// A loaded BERT model's weights in the layouts the inference kernels want: every Linear packed for
// oneDNN once (Q, K and V fused into one (3C, C) product), each in its own precision (f32, bf16 or
// int8; see kernels/cpu/low_precision_matmul.h), plus the F32 vectors (embeddings, layer norms)
// copied out of the parameter table. Immutable, so one InferenceWeights serves any number of
// sessions and threads.
//
// Memory: after build() nothing here points into the model's F32 parameter table except the f32
// word embeddings (and `model` itself). InferenceWeights::load drops the table altogether, so an
// int8 model holds its packed int8 weights, its int8 word embeddings and the small F32 vectors:
// about its file size (the dequantized table of quant::load_model lives only while packing).
#pragma once

#include <filesystem>
#include <map>
#include <optional>
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
  // Word embeddings kept as int8 rows with one F32 scale per row (as the int8 file stores them),
  // dequantized per batch when the embedding is gathered. Masked-LM models keep them F32 as well
  // (the decoder is tied to them).
  bool int8_word_embeddings = false;
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
  // Config, head and pooler of the model. Built by load(): a copy without parameters (its table is
  // empty); built by build(): the caller's model.
  std::shared_ptr<const BertModel> model;
  Tensor word_embeddings;      // (V, C) F32; undefined when word_embeddings_int8 is used
  Tensor word_embeddings_int8;    // (V, C) I8 when plan.int8_word_embeddings, else undefined
  Tensor word_embedding_scales;   // (V) F32 row scales of word_embeddings_int8
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
  // Whether the attention products run in bf16 (kernels::attention_forward_bf16): for bf16 and
  // dynamic int8 models. Statically calibrated int8 keeps them f32: its fixed activation scales
  // were measured to lose more with them (tweets classifier, docs/quantization.md).
  bool bf16_attention = false;

  // Packs every weight of `model` (kept alive by the result). The precisions come from the
  // quantization recipe in the metadata of model->directory's model.safetensors when it has one
  // (written by `scalebert quantize`); otherwise every Linear is f32.
  static std::shared_ptr<const InferenceWeights> build(std::shared_ptr<const BertModel> model);
  // Packs with an explicit plan (benchmarks, calibration, tests).
  static std::shared_ptr<const InferenceWeights> build(std::shared_ptr<const BertModel> model,
                                                       const PrecisionPlan& plan);
  // Loads a model folder for inference only (quant::load_model, so f32, bf16 and int8 folders),
  // packs it as build() does, and releases the F32 parameter table: `model` becomes a copy with
  // config, head, labels and directory but no parameters. For servers and pipelines that do not
  // train or re-pack: an int8 BERT-base then holds ~115 MB instead of ~560 MB.
  static std::shared_ptr<const InferenceWeights> load(const std::filesystem::path& directory,
                                                      std::optional<TaskHead> head = std::nullopt);

  // Bytes this object holds itself: packed Linear weights (and their scales, biases,
  // compensation), embeddings and norm vectors; views into the model's table are not counted.
  size_t owned_bytes() const;
};

}  // namespace scalebert
