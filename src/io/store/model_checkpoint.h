// BERT models in and out of the checkpoint store: save a loaded BertModel (or a Hugging Face
// model directory, or a folder's weights exactly as stored, e.g. a quantized one) with its config
// and tokenizer files, and materialize a stored version back into a Hugging Face directory
// (config.json + model.safetensors + tokenizer files) that BertModel::load, transformers and the
// rest of the engine read unchanged.
//
// Version metadata written here:
//   {"kind": "bert", "config": <config.json>, "head": "<task head>", "extra": {...},
//    "safetensors_metadata": {"key": "value", ...}   optional: model.safetensors' own metadata
//                                                     (a quantization recipe), restored on export
//    "optimizer": {"key": "value", ...}}             optional: a trainer's optimizer.safetensors
//                                                     metadata; its tensors are "optimizer/<name>"
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/store/store.h"

namespace scalebert {
struct BertModel;
}

namespace scalebert::store {

// Small files of a Hugging Face model directory kept beside the weights, when present.
const std::vector<std::string>& model_side_file_names();

// Tensors under this prefix are a trainer's optimizer moments, not model weights:
// materialize_hf_directory writes them to optimizer.safetensors (without the prefix).
inline constexpr std::string_view kOptimizerTensorPrefix = "optimizer/";

// The side files of `directory` named by model_side_file_names() that exist there.
std::vector<SideFile> read_model_side_files(const std::filesystem::path& directory);

// Saves every parameter of `model` (F32, Hugging Face names) and `files`; the metadata is
// {"kind": "bert", "config": <config.json>, "head": "<task head>", "extra": extra}.
SaveResult save_bert_model(CheckpointStore& store, const BertModel& model, const SaveOptions& options,
                           const std::vector<SideFile>& files = {},
                           const nlohmann::json& extra = nlohmann::json::object());

// Loads `model_directory` with BertModel::load (so only loadable models get stored) and saves it
// with the directory's config.json and tokenizer files (model_side_file_names()).
SaveResult save_model_directory(CheckpointStore& store, const std::filesystem::path& model_directory,
                                const SaveOptions& options, const nlohmann::json& extra = nlohmann::json::object());

// Saves the weights of `directory` exactly as stored (any dtype: int8 weights and their scales
// stay int8), with its side files and model.safetensors' metadata (metadata
// "safetensors_metadata"), so a quantized folder round-trips bit for bit. `head` is recorded as
// metadata "head". The caller checks that the folder loads (io/ does not know quantized models).
// FormatError when config.json is not JSON; WeightStore errors for missing weights.
SaveResult save_model_files(CheckpointStore& store, const std::filesystem::path& directory, std::string_view head,
                            const SaveOptions& options, const nlohmann::json& extra = nlohmann::json::object());

// Writes `checkpoint` as a Hugging Face directory: every side file, config.json from the metadata
// when no side file carries it, the model tensors in one model.safetensors (metadata: format "pt",
// the saved "safetensors_metadata", the store version), and, when `include_optimizer` and the
// version has "optimizer/" tensors, optimizer.safetensors, so that an exported trainer version is
// a checkpoint folder `scalebert train --resume` reads. Files are written atomically. Creates
// `directory` when needed; throws IoError when it cannot be written.
void materialize_hf_directory(const Checkpoint& checkpoint, const std::filesystem::path& directory,
                              bool include_optimizer = true);

}  // namespace scalebert::store
