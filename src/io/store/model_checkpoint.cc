// BertModel <-> checkpoint store: parameter tables as named tensors, config and tokenizer files
// as side files, and the way back to a Hugging Face directory.
#include "io/store/model_checkpoint.h"

#include <map>

#include "core/error.h"
#include "io/file_util.h"
#include "io/model_files.h"
#include "io/safetensors.h"
#include "model/bert_model.h"

namespace scalebert::store {

namespace fs = std::filesystem;

const std::vector<std::string>& model_side_file_names() {
  static const std::vector<std::string> names = {"config.json", "vocab.txt", "tokenizer.json",
                                                 "tokenizer_config.json", "special_tokens_map.json"};
  return names;
}

std::vector<SideFile> read_model_side_files(const fs::path& directory) {
  std::vector<SideFile> files;
  for (const std::string& name : model_side_file_names()) {
    fs::path path = directory / name;
    std::error_code error;
    if (fs::is_regular_file(path, error)) files.push_back(SideFile{name, read_file(path)});
  }
  return files;
}

SaveResult save_bert_model(CheckpointStore& store, const BertModel& model, const SaveOptions& options,
                           const std::vector<SideFile>& files, const nlohmann::json& extra) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    tensors.emplace_back(entry.name, model.parameters.get(entry.name));
  }
  nlohmann::json metadata = {{"kind", "bert"},
                             {"config", model.config.to_json()},
                             {"head", std::string(task_head_name(model.head))},
                             {"extra", extra}};
  return store.save(tensors, metadata, options, files);
}

SaveResult save_model_directory(CheckpointStore& store, const fs::path& model_directory, const SaveOptions& options,
                                const nlohmann::json& extra) {
  BertModel model = BertModel::load(model_directory);
  const std::vector<SideFile> files = read_model_side_files(model_directory);
  nlohmann::json tagged = extra;
  if (!tagged.is_object()) tagged = nlohmann::json::object();
  tagged["source_directory"] = fs::absolute(model_directory).lexically_normal().string();
  return save_bert_model(store, model, options, files, tagged);
}

SaveResult save_model_files(CheckpointStore& store, const fs::path& directory, std::string_view head,
                            const SaveOptions& options, const nlohmann::json& extra) {
  const fs::path config_path = directory / "config.json";
  nlohmann::json config = nlohmann::json::parse(read_file(config_path), nullptr, false);
  check<FormatError>(config.is_object(), config_path.string(), ": not a JSON object");

  // Every stored tensor as it is on disk (views into the mappings, alive until the save returns).
  WeightStore weights = WeightStore::open(directory);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : weights.names()) tensors.emplace_back(name, weights.tensor(name));
  nlohmann::json file_metadata = nlohmann::json::object();
  for (const fs::path& file : weights.files()) {
    const SafetensorsFile opened = SafetensorsFile::open(file);
    for (const auto& [key, value] : opened.metadata()) {
      if (key != "scalebert.store.version") file_metadata[key] = value;
    }
  }
  nlohmann::json tagged = extra.is_object() ? extra : nlohmann::json::object();
  tagged["source_directory"] = fs::absolute(directory).lexically_normal().string();
  const nlohmann::json metadata = {{"kind", "bert"},
                                   {"config", config},
                                   {"head", std::string(head)},
                                   {"extra", tagged},
                                   {"safetensors_metadata", file_metadata}};
  return store.save(tensors, metadata, options, read_model_side_files(directory));
}

namespace {

// A metadata object of strings (what safetensors metadata holds); anything else is skipped.
std::map<std::string, std::string> string_map(const nlohmann::json& metadata, const char* key) {
  std::map<std::string, std::string> values;
  if (!metadata.is_object() || !metadata.contains(key) || !metadata.at(key).is_object()) return values;
  for (const auto& [name, value] : metadata.at(key).items()) {
    if (value.is_string()) values[name] = value.get<std::string>();
  }
  return values;
}

}  // namespace

void materialize_hf_directory(const Checkpoint& checkpoint, const fs::path& directory, bool include_optimizer) {
  std::error_code error;
  fs::create_directories(directory, error);
  if (error) throw IoError(str_cat("cannot create ", directory, ": ", error.message()));
  bool wrote_config = false;
  for (const std::string& name : checkpoint.file_names()) {
    write_file_atomic(directory / name, checkpoint.file(name));
    wrote_config = wrote_config || name == "config.json";
  }
  const nlohmann::json& metadata = checkpoint.metadata();
  if (!wrote_config && metadata.is_object() && metadata.contains("config")) {
    write_file_atomic(directory / "config.json", metadata.at("config").dump(2) + "\n");
  }
  std::vector<std::pair<std::string, Tensor>> model_tensors, optimizer_tensors;
  for (auto& [name, tensor] : checkpoint.tensors()) {
    if (name.rfind(kOptimizerTensorPrefix, 0) == 0) {
      optimizer_tensors.emplace_back(name.substr(kOptimizerTensorPrefix.size()), tensor);
    } else {
      model_tensors.emplace_back(name, tensor);
    }
  }
  const std::string version = std::to_string(checkpoint.version());
  std::map<std::string, std::string> model_metadata = string_map(metadata, "safetensors_metadata");
  model_metadata.emplace("format", "pt");  // transformers refuses safetensors files without it
  model_metadata["scalebert.store.version"] = version;
  save_safetensors(directory / "model.safetensors", model_tensors, model_metadata);
  if (include_optimizer && !optimizer_tensors.empty()) {
    std::map<std::string, std::string> optimizer_metadata = string_map(metadata, "optimizer");
    optimizer_metadata["scalebert.store.version"] = version;
    save_safetensors(directory / "optimizer.safetensors", optimizer_tensors, optimizer_metadata);
  }
}

}  // namespace scalebert::store
