// BertModel <-> checkpoint store: parameter tables as named tensors, config and tokenizer files
// as side files, and the way back to a Hugging Face directory.
#include "io/store/model_checkpoint.h"

#include "core/error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "model/bert_model.h"

namespace scalebert::store {

namespace fs = std::filesystem;

const std::vector<std::string>& model_side_file_names() {
  static const std::vector<std::string> names = {"config.json", "vocab.txt", "tokenizer.json",
                                                 "tokenizer_config.json", "special_tokens_map.json"};
  return names;
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
  std::vector<SideFile> files;
  for (const std::string& name : model_side_file_names()) {
    fs::path path = model_directory / name;
    std::error_code error;
    if (fs::is_regular_file(path, error)) files.push_back(SideFile{name, read_file(path)});
  }
  nlohmann::json tagged = extra;
  if (!tagged.is_object()) tagged = nlohmann::json::object();
  tagged["source_directory"] = fs::absolute(model_directory).lexically_normal().string();
  return save_bert_model(store, model, options, files, tagged);
}

void materialize_hf_directory(const Checkpoint& checkpoint, const fs::path& directory) {
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
  save_safetensors(directory / "model.safetensors", checkpoint.tensors(),
                   {{"format", "pt"}, {"scalebert.store.version", std::to_string(checkpoint.version())}});
}

}  // namespace scalebert::store
