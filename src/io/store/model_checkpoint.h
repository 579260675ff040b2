// BERT models in and out of the checkpoint store: save a loaded BertModel (or a Hugging Face
// model directory) with its config and tokenizer files, and materialize a stored version back
// into a Hugging Face directory (config.json + model.safetensors + tokenizer files) that
// BertModel::load, transformers and the rest of the engine read unchanged.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/store/store.h"

namespace scalebert {
struct BertModel;
}

namespace scalebert::store {

// Small files of a Hugging Face model directory kept beside the weights, when present.
const std::vector<std::string>& model_side_file_names();

// Saves every parameter of `model` (F32, Hugging Face names) and `files`; the metadata is
// {"kind": "bert", "config": <config.json>, "head": "<task head>", "extra": extra}.
SaveResult save_bert_model(CheckpointStore& store, const BertModel& model, const SaveOptions& options,
                           const std::vector<SideFile>& files = {},
                           const nlohmann::json& extra = nlohmann::json::object());

// Loads `model_directory` with BertModel::load (so only loadable models get stored) and saves it
// with the directory's config.json and tokenizer files (model_side_file_names()).
SaveResult save_model_directory(CheckpointStore& store, const std::filesystem::path& model_directory,
                                const SaveOptions& options, const nlohmann::json& extra = nlohmann::json::object());

// Writes `checkpoint` as a Hugging Face directory: every side file, config.json from the metadata
// when no side file carries it, and all tensors in one model.safetensors (atomically). Creates
// `directory` when needed; throws IoError when it cannot be written.
void materialize_hf_directory(const Checkpoint& checkpoint, const std::filesystem::path& directory);

}  // namespace scalebert::store
