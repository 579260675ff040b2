// Training checkpoints: model folders in Hugging Face layout, trainer state, optimizer moments and
// the atomic folder swap.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2 (glibc >= 2.28, _GNU_SOURCE)
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <system_error>

#include "core/error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/store/model_checkpoint.h"

namespace scalebert::train {

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr const char* kStateFormat = "scalebert-trainer-state";
constexpr int kStateVersion = 1;

const char* architecture_for(TaskHead head) {
  switch (head) {
    case TaskHead::kNone: return "BertModel";
    case TaskHead::kSequenceClassification: return "BertForSequenceClassification";
    case TaskHead::kTokenClassification: return "BertForTokenClassification";
    case TaskHead::kQuestionAnswering: return "BertForQuestionAnswering";
    case TaskHead::kMaskedLM: return "BertForMaskedLM";
  }
  return "BertModel";
}

template <typename T>
T get_key(const Json& json, const char* key, const std::string& source) {
  auto found = json.find(key);
  check<FormatError>(found != json.end(), source, ": missing key \"", key, "\"");
  try {
    return found->get<T>();
  } catch (const Json::exception&) {
    throw FormatError(str_cat(source, ": key \"", key, "\" has the wrong type: ", found->dump()));
  }
}

std::string error_text(int error) { return std::strerror(error); }

// The tokenizer files a checkpoint carries (vocab.txt must exist), as (name, contents).
std::vector<std::pair<std::string, std::string>> tokenizer_files(const fs::path& tokenizer_dir) {
  check<IoError>(fs::exists(tokenizer_dir / "vocab.txt"), "no vocab.txt in ", tokenizer_dir.string(),
                 " to copy into the checkpoint");
  std::vector<std::pair<std::string, std::string>> files;
  for (const char* name : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"}) {
    if (fs::exists(tokenizer_dir / name)) files.emplace_back(name, read_file(tokenizer_dir / name));
  }
  return files;
}

// optimizer.safetensors' metadata: algorithm, step and hyperparameters (for the record).
std::map<std::string, std::string> optimizer_metadata(const OptimizerState& state) {
  return {{"algorithm", state.algorithm},
          {"step", std::to_string(state.step)},
          {"hyperparameters", Json(state.hyperparameters).dump()}};
}

// The step and algorithm from that metadata (`source` names where it came from in errors).
void read_optimizer_metadata(const std::map<std::string, std::string>& metadata, const std::string& source,
                             OptimizerState& state) {
  auto value = [&](const char* key) {
    auto found = metadata.find(key);
    check<FormatError>(found != metadata.end(), source, ": metadata lacks \"", key, "\"");
    return found->second;
  };
  state.algorithm = value("algorithm");
  const std::string step = value("step");
  try {
    size_t used = 0;
    state.step = std::stoll(step, &used);
    check<FormatError>(used == step.size(), source, ": metadata step \"", step, "\" is not an integer");
  } catch (const std::logic_error&) {
    throw FormatError(str_cat(source, ": metadata step \"", step, "\" is not an integer"));
  }
}

void set_optimizer_state(Optimizer& optimizer, const OptimizerState& state, const std::string& source) {
  try {
    optimizer.set_state(state);
  } catch (const InvalidArgument& error) {
    throw InvalidArgument(str_cat(source, ": ", error.what()));
  }
}

fs::path sibling(const fs::path& directory, const std::string& suffix) {
  return directory.parent_path() / str_cat(".", directory.filename().string(), suffix);
}

}  // namespace

Json TrainerState::to_json() const {
  Json json;
  json["format"] = kStateFormat;
  json["version"] = kStateVersion;
  json["global_step"] = global_step;
  json["micro_batches"] = micro_batches;
  json["data"] = {{"seed", data.seed}, {"epoch", data.epoch}, {"position", data.position}};
  json["seed"] = seed;
  json["epoch"] = epoch;
  json["total_steps"] = total_steps;
  json["tokens_seen"] = tokens_seen;
  json["train_examples"] = train_examples;
  json["task"] = task;
  json["labels"] = labels;
  json["model_shape"] = model_shape;
  json["optimizer"] = optimizer;
  json["best_metric_name"] = best_metric_name;
  json["best_metric"] = std::isnan(best_metric) ? Json(nullptr) : Json(best_metric);
  json["best_step"] = best_step;
  return json;
}

TrainerState TrainerState::from_json(const Json& json, const std::string& source) {
  check<FormatError>(json.is_object(), source, ": trainer state must be a JSON object");
  const std::string format = get_key<std::string>(json, "format", source);
  check<FormatError>(format == kStateFormat, source, ": format \"", format, "\", expected \"", kStateFormat, "\"");
  const int version = get_key<int>(json, "version", source);
  check<FormatError>(version == kStateVersion, source, ": trainer state version ", version,
                     " is not supported (this build reads version ", kStateVersion, ")");
  TrainerState state;
  state.global_step = get_key<int64_t>(json, "global_step", source);
  state.micro_batches = get_key<int64_t>(json, "micro_batches", source);
  const Json data = get_key<Json>(json, "data", source);
  state.data.seed = get_key<uint64_t>(data, "seed", source + " data");
  state.data.epoch = get_key<int64_t>(data, "epoch", source + " data");
  state.data.position = get_key<int64_t>(data, "position", source + " data");
  state.seed = get_key<uint64_t>(json, "seed", source);
  state.epoch = get_key<double>(json, "epoch", source);
  state.total_steps = get_key<int64_t>(json, "total_steps", source);
  state.tokens_seen = get_key<int64_t>(json, "tokens_seen", source);
  state.train_examples = get_key<int64_t>(json, "train_examples", source);
  state.task = get_key<std::string>(json, "task", source);
  state.labels = get_key<std::vector<std::string>>(json, "labels", source);
  state.model_shape = get_key<Json>(json, "model_shape", source);
  state.optimizer = get_key<std::string>(json, "optimizer", source);
  state.best_metric_name = get_key<std::string>(json, "best_metric_name", source);
  const Json best = get_key<Json>(json, "best_metric", source);
  check<FormatError>(best.is_null() || best.is_number(), source, ": best_metric must be a number or null");
  state.best_metric = best.is_null() ? std::numeric_limits<double>::quiet_NaN() : best.get<double>();
  state.best_step = get_key<int64_t>(json, "best_step", source);
  check<FormatError>(state.global_step >= 0 && state.micro_batches >= 0 && state.data.position >= 0 &&
                         state.data.epoch >= 0,
                     source, ": negative step, micro-batch count or data position");
  return state;
}

Json model_shape(const BertModel& model) {
  const BertConfig& config = model.config;
  return Json{{"vocab_size", config.vocab_size},
              {"hidden_size", config.hidden_size},
              {"num_hidden_layers", config.num_hidden_layers},
              {"num_attention_heads", config.num_attention_heads},
              {"intermediate_size", config.intermediate_size},
              {"max_position_embeddings", config.max_position_embeddings},
              {"type_vocab_size", config.type_vocab_size},
              {"hidden_act", std::string(activation_name(config.hidden_act))},
              {"has_pooler", model.has_pooler}};
}

void check_resume_compatible(const TrainerState& saved, const TrainerState& current, const fs::path& checkpoint) {
  const std::string prefix = str_cat("cannot resume from ", checkpoint.string(), ": ");
  check(saved.task == current.task, prefix, "it trains task ", saved.task, ", this run ", current.task);
  for (const auto& [key, value] : current.model_shape.items()) {
    auto found = saved.model_shape.find(key);
    const std::string saved_value = found == saved.model_shape.end() ? "(absent)" : found->dump();
    check(found != saved.model_shape.end() && *found == value, prefix, "model ", key, " is ", saved_value,
          " there and ", value.dump(), " in this run's model");
  }
  check(saved.seed == current.seed, prefix, "it was trained with seed ", saved.seed, ", this run has seed ",
        current.seed, " (data order, masking and dropout follow the seed; set seed to ", saved.seed, ")");
  check(saved.train_examples == current.train_examples, prefix, "it was trained on ", saved.train_examples,
        " training examples, this run's train_file gives ", current.train_examples,
        " (the data order could not continue where it stopped)");
  if (saved.labels != current.labels) {
    throw InvalidArgument(str_cat(prefix, "its label set [", Json(saved.labels).dump(), "] differs from this run's [",
                                  Json(current.labels).dump(), "]"));
  }
}

std::string hf_state_dict_name(TaskHead head, const std::string& name) {
  if (head == TaskHead::kNone) return name;
  for (const char* head_prefix : {"classifier.", "qa_outputs.", "cls."}) {
    if (name.rfind(head_prefix, 0) == 0) return name;
  }
  return "bert." + name;
}

BertConfig checkpoint_config(const BertModel& model, const std::vector<std::string>& labels) {
  BertConfig config = model.config;
  if (model.head == TaskHead::kSequenceClassification || model.head == TaskHead::kTokenClassification) {
    check(static_cast<int64_t>(labels.size()) == model.num_labels, "checkpoint config: ", labels.size(),
          " label names for a head of ", model.num_labels, " outputs");
    config.id2label = labels;
  } else {
    config.id2label.clear();
  }
  config.architectures = {architecture_for(model.head)};
  return config;
}

void write_model_folder(const fs::path& directory, const BertModel& model, const std::vector<std::string>& labels,
                        const fs::path& tokenizer_dir) {
  checkpoint_config(model, labels).save(directory / "config.json");

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    tensors.emplace_back(hf_state_dict_name(model.head, entry.name), model.parameters.get(entry.name));
  }
  // transformers refuses a safetensors file whose metadata lacks format "pt".
  save_safetensors(directory / kModelWeightsFile, tensors, {{"format", "pt"}});

  for (const auto& [name, contents] : tokenizer_files(tokenizer_dir)) write_file_atomic(directory / name, contents);
}

void write_trainer_state(const fs::path& directory, const TrainerState& state) {
  write_file_atomic(directory / kTrainerStateFile, state.to_json().dump(2) + "\n");
}

TrainerState read_trainer_state(const fs::path& checkpoint) {
  const fs::path path = checkpoint / kTrainerStateFile;
  const std::string text = read_file(path);
  Json json;
  try {
    json = Json::parse(text);
  } catch (const Json::exception& error) {
    throw FormatError(str_cat(path.string(), ": not valid JSON: ", error.what()));
  }
  return TrainerState::from_json(json, path.string());
}

void write_optimizer_state(const fs::path& directory, const Optimizer& optimizer) {
  const OptimizerState state = optimizer.get_state();
  save_safetensors(directory / kOptimizerStateFile, state.tensors, optimizer_metadata(state));
}

void read_optimizer_state(const fs::path& directory, Optimizer& optimizer) {
  const fs::path path = directory / kOptimizerStateFile;
  const SafetensorsFile file = SafetensorsFile::open(path);
  OptimizerState state;
  read_optimizer_metadata(file.metadata(), path.string(), state);
  for (const std::string& name : file.names()) state.tensors.emplace_back(name, file.tensor(name));
  set_optimizer_state(optimizer, state, path.string());
}

store::SaveResult save_training_version(store::CheckpointStore& store, const store::SaveOptions& options,
                                        const BertModel& model, const std::vector<std::string>& labels,
                                        const fs::path& tokenizer_dir, const TrainerState& state,
                                        const Optimizer* optimizer, const Json& train_config, std::string_view role) {
  const BertConfig config = checkpoint_config(model, labels);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    tensors.emplace_back(hf_state_dict_name(model.head, entry.name), model.parameters.get(entry.name));
  }
  Json metadata = {{"kind", "bert"},
                   {"config", config.to_json()},
                   {"head", std::string(task_head_name(model.head))},
                   {"safetensors_metadata", {{"format", "pt"}}},
                   {"extra", {{"producer", "scalebert train"}, {"role", std::string(role)}, {"step", state.global_step}}}};
  if (optimizer != nullptr) {
    // Views into the live moment arenas: the save writes them before the next step can run.
    const OptimizerState optimizer_state = optimizer->get_state();
    for (const auto& [name, tensor] : optimizer_state.tensors) {
      tensors.emplace_back(str_cat(store::kOptimizerTensorPrefix, name), tensor);
    }
    metadata["optimizer"] = optimizer_metadata(optimizer_state);
  }
  std::vector<store::SideFile> files = {{"config.json", config.to_json().dump(2) + "\n"}};
  for (auto& [name, contents] : tokenizer_files(tokenizer_dir)) files.push_back({name, std::move(contents)});
  files.push_back({kTrainerStateFile, state.to_json().dump(2) + "\n"});
  files.push_back({"train_config.json", train_config.dump(2) + "\n"});
  return store.save(tensors, metadata, options, files);
}

bool is_resumable_version(const store::Manifest& manifest) {
  const Json& metadata = manifest.metadata;
  if (!metadata.is_object() || !metadata.contains("optimizer") || !metadata.contains("extra")) return false;
  const Json& extra = metadata.at("extra");
  return extra.is_object() && extra.value("role", std::string()) == kStoreRoleLast;
}

std::optional<uint64_t> find_resumable_version(const store::CheckpointStore& store) {
  const std::optional<uint64_t> latest = store.latest();
  if (!latest) return std::nullopt;
  std::vector<store::VersionInfo> versions = store.versions();
  for (auto info = versions.rbegin(); info != versions.rend(); ++info) {
    if (info->version > *latest || !info->committed || !info->manifest) continue;
    if (is_resumable_version(*info->manifest)) return info->version;
  }
  return std::nullopt;
}

TrainerState read_trainer_state(const store::Checkpoint& checkpoint, const std::string& source) {
  const std::string where = str_cat(source, " ", kTrainerStateFile);
  check<FormatError>(checkpoint.has_file(kTrainerStateFile), source, ": no ", kTrainerStateFile,
                     " (not a trainer checkpoint)");
  Json json;
  try {
    json = Json::parse(checkpoint.file(kTrainerStateFile));
  } catch (const Json::exception& error) {
    throw FormatError(str_cat(where, ": not valid JSON: ", error.what()));
  }
  return TrainerState::from_json(json, where);
}

void read_optimizer_state(const store::Checkpoint& checkpoint, Optimizer& optimizer, const std::string& source) {
  const Json& metadata = checkpoint.metadata();
  check<FormatError>(metadata.is_object() && metadata.contains("optimizer") && metadata.at("optimizer").is_object(),
                     source, ": no optimizer state (a best-model version?)");
  std::map<std::string, std::string> values;
  for (const auto& [key, value] : metadata.at("optimizer").items()) {
    if (value.is_string()) values[key] = value.get<std::string>();
  }
  OptimizerState state;
  read_optimizer_metadata(values, source + " optimizer metadata", state);
  for (const std::string& name : checkpoint.names()) {
    if (name.rfind(store::kOptimizerTensorPrefix, 0) != 0) continue;
    state.tensors.emplace_back(name.substr(store::kOptimizerTensorPrefix.size()), checkpoint.tensor(name));
  }
  set_optimizer_state(optimizer, state, source);
}

CheckpointWriter::CheckpointWriter(fs::path final_directory) : final_(std::move(final_directory)) {
  static std::atomic<int> counter{0};
  temporary_ = sibling(final_, str_cat(".tmp.", getpid(), ".", counter++));
  std::error_code error;
  fs::remove_all(temporary_, error);
  fs::create_directories(temporary_, error);
  check<IoError>(!error, "cannot create checkpoint folder ", temporary_.string(), ": ", error.message());
}

CheckpointWriter::~CheckpointWriter() {
  if (!committed_) {
    std::error_code ignored;
    fs::remove_all(temporary_, ignored);
  }
}

void CheckpointWriter::commit() {
  check(!committed_, "CheckpointWriter::commit called twice for ", final_.string());
  fsync_directory(temporary_);
  const fs::path parent = final_.parent_path().empty() ? fs::path(".") : final_.parent_path();
  std::error_code error;
  if (!fs::exists(final_)) {
    fs::rename(temporary_, final_, error);
    check<IoError>(!error, "cannot rename ", temporary_.string(), " to ", final_.string(), ": ", error.message());
    fsync_directory(parent);
    committed_ = true;
    return;
  }
  // One atomic step: the two folders trade names, so readers see the old or the new checkpoint.
  if (::renameat2(AT_FDCWD, temporary_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) == 0) {
    fsync_directory(parent);
    committed_ = true;  // temporary_ now holds the previous checkpoint
    fs::remove_all(temporary_, error);
    return;
  }
  const int exchange_error = errno;
  check<IoError>(exchange_error == EINVAL || exchange_error == ENOSYS || exchange_error == ENOTSUP,
                 "cannot swap ", temporary_.string(), " into ", final_.string(), ": ", error_text(exchange_error));
  // No RENAME_EXCHANGE on this filesystem: keep the old folder under ".<name>.old" until the new one
  // is in place; resolve_checkpoint() finds it if we die in between.
  const fs::path old = sibling(final_, ".old");
  fs::remove_all(old, error);
  fs::rename(final_, old, error);
  check<IoError>(!error, "cannot move ", final_.string(), " aside: ", error.message());
  fs::rename(temporary_, final_, error);
  check<IoError>(!error, "cannot rename ", temporary_.string(), " to ", final_.string(), ": ", error.message());
  fsync_directory(parent);
  committed_ = true;
  fs::remove_all(old, error);
}

fs::path resolve_checkpoint(const fs::path& directory) {
  if (fs::exists(directory / kTrainerStateFile)) return directory;
  const fs::path old = sibling(directory, ".old");
  if (fs::exists(old / kTrainerStateFile)) return old;
  throw IoError(str_cat("no checkpoint at ", directory.string(), " (no ", kTrainerStateFile, " there or in ",
                        old.string(), ")"));
}

bool checkpoint_exists(const fs::path& directory) {
  return fs::exists(directory / kTrainerStateFile) || fs::exists(sibling(directory, ".old") / kTrainerStateFile);
}

}  // namespace scalebert::train
