// The quantization recipe: what `scalebert quantize` did to a model, stored as JSON in the
// "scalebert.quantization" metadata entry of the output model.safetensors, so that the file alone
// says how to run it (InferenceWeights::build reads it) and any safetensors reader can inspect it.
//
// Stored tensors of a quantized model (Hugging Face names, Linear weights [out, in]):
//   int8 Linear  <name>.weight        I8  (N, K)  symmetric per output channel
//                <name>.weight_scale  F32 (N)     w ~= q * scale[n]
//   bf16 Linear  <name>.weight        BF16 (N, K)
//   int8 embeddings (optional)  embeddings.word_embeddings.weight I8 (V, C) + .weight_scale F32 (V)
//   everything else (biases, layer norms, position/type embeddings, f32-kept layers)  F32
// Recipe JSON (version 1):
//   {"version": 1, "dtype": "int8"|"bf16", "activations": "dynamic"|"static", "embeddings": "int8"|"f32",
//    "head": "<task head>", "num_labels": L, "pooler": true|false, "calibration": "<file, samples>",
//    "layers": {"encoder.layer.0.attention.self.query": {"dtype": "int8", "input_scale": 0.031}, ...}}
// "layers" lists every Linear of the model, f32-kept ones with "dtype": "f32"; input_scale is
// present for static int8 only.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu/low_precision_matmul.h"
#include "model/inference_weights.h"

namespace scalebert::quant {

inline constexpr const char* kRecipeMetadataKey = "scalebert.quantization";
inline constexpr int kRecipeVersion = 1;
inline constexpr const char* kScaleSuffix = "_scale";  // "<name>.weight" -> "<name>.weight_scale"

struct LayerRecipe {
  kernels::Precision precision = kernels::Precision::kF32;
  float input_scale = 0.0f;  // static int8 only
};

struct QuantizationRecipe {
  int version = kRecipeVersion;
  kernels::Precision dtype = kernels::Precision::kInt8;
  bool static_activations = false;
  bool int8_embeddings = false;
  std::string head = "none";
  int64_t num_labels = 0;
  bool pooler = false;
  std::string calibration;                    // where static scales came from (informational)
  std::map<std::string, LayerRecipe> layers;  // every Linear by its Hugging Face prefix

  std::string to_json() const;
  // FormatError naming `source` and the field for anything malformed or a newer version.
  static QuantizationRecipe from_json(const std::string& text, const std::string& source);
};

// The recipe of `directory`'s model.safetensors (or of a .safetensors file); nullopt when there is
// no such file or it carries no recipe (an ordinary f32/bf16 checkpoint).
std::optional<QuantizationRecipe> read_recipe(const std::filesystem::path& directory);

// The per-Linear precisions InferenceWeights packs with. Q, K and V run as one fused product:
// it is low precision only when all three are (with one static scale: they share their input).
PrecisionPlan precision_plan(const QuantizationRecipe& recipe);

// The Linear layers of `model` by Hugging Face prefix, in forward order (query, key and value
// separately): what a recipe lists.
std::vector<std::string> linear_names(const BertModel& model);

// The PrecisionPlan key a Linear belongs to ("...attention.self.query" -> "...attention.self").
std::string plan_key(const std::string& linear);

}  // namespace scalebert::quant
