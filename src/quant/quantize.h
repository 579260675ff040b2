// The quantize tool: an f32 model folder in, a quantized model folder out (model.safetensors with
// int8 or bf16 Linear weights, scales and the recipe in its metadata; config and tokenizer files
// copied), optionally with static activation scales calibrated on sample texts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/store/store.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "quant/recipe.h"

namespace scalebert::quant {

struct QuantizeOptions {
  kernels::Precision dtype = kernels::Precision::kInt8;
  // int8 only: word embeddings int8 per row (the largest tensor of a small BERT; the f32 file size
  // target needs it). Position and type embeddings, layer norms and biases stay f32.
  bool int8_embeddings = true;
  // Linear layers kept f32: full names ("classifier", "encoder.layer.11.output.dense") or prefixes
  // ending at a dot boundary ("encoder.layer.11" keeps that whole layer).
  std::vector<std::string> keep_f32;
  // int8 only: static activation scales from these texts (text lines or CSV `text_column`);
  // empty = dynamic per-row scales.
  std::filesystem::path calibration_file;
  int64_t calibration_samples = 256;
  int64_t max_length = 128;
  std::string text_column = "text";
};

struct QuantizeSummary {
  QuantizationRecipe recipe;
  int64_t layers_low_precision = 0;
  int64_t layers_f32 = 0;
  uint64_t input_bytes = 0;   // the source weights file(s)
  uint64_t output_bytes = 0;  // the written model.safetensors
  double seconds = 0.0;
};

// Errors: InvalidArgument for dtype f32, a model that is already quantized (naming its recipe's
// dtype), a keep_f32 entry that matches no Linear (listing the names), or out_dir equal to
// model_dir; IoError for a missing calibration file; loading errors as BertModel::load.
QuantizeSummary quantize_model(const std::filesystem::path& model_dir, const std::filesystem::path& out_dir,
                               const QuantizeOptions& options);

// Saves the quantized folder `directory` (what quantize_model wrote) as a new version of `store`:
// the tensors exactly as stored (int8 weights, scales), the config and tokenizer files, and the
// recipe (kept in model.safetensors' metadata on export, and as metadata "extra"."quantization").
// The folder is loaded with load_model first, so only loadable models are stored. InvalidArgument
// when the folder has no recipe; loading and store errors as those functions throw them.
store::SaveResult save_quantized_model(store::CheckpointStore& store, const std::filesystem::path& directory,
                                       const store::SaveOptions& options,
                                       const nlohmann::json& extra = nlohmann::json::object());

// Whether `linear` is kept f32 by one of the keep_f32 entries.
bool matches_keep(const std::string& linear, const std::vector<std::string>& keep_f32);

}  // namespace scalebert::quant
