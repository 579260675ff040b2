// Loading a model folder whether or not `scalebert quantize` wrote it: int8 tensors are dequantized
// (q * scale per row) into the F32 parameter table, so every consumer of a BertModel works
// unchanged, and InferenceWeights::build re-quantizes them exactly from the recipe (a row's largest
// |q| is 127, so max|q * s| / 127 gives back s and round(q * s / s) gives back q).
#pragma once

#include <filesystem>
#include <optional>

#include "model/bert_model.h"

namespace scalebert::quant {

// BertModel::load for ordinary checkpoints (F32/F16/BF16, also bf16-quantized ones); for a model with
// an int8 recipe, the same checks plus dequantization. The head comes from `head_override`, else
// the recipe. Errors name the tensor: a missing scale, a scale of the wrong shape.
BertModel load_model(const std::filesystem::path& directory, std::optional<TaskHead> head_override = std::nullopt);

}  // namespace scalebert::quant
