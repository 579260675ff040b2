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
#include <system_error>

#include "core/error.h"
#include "io/file_util.h"
#include "io/safetensors.h"

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

void write_model_folder(const fs::path& directory, const BertModel& model, const std::vector<std::string>& labels,
                        const fs::path& tokenizer_dir) {
  BertConfig config = model.config;
  if (model.head == TaskHead::kSequenceClassification || model.head == TaskHead::kTokenClassification) {
    check(static_cast<int64_t>(labels.size()) == model.num_labels, "write_model_folder: ", labels.size(),
          " label names for a head of ", model.num_labels, " outputs");
    config.id2label = labels;
  } else {
    config.id2label.clear();
  }
  config.architectures = {architecture_for(model.head)};
  config.save(directory / "config.json");

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    tensors.emplace_back(hf_state_dict_name(model.head, entry.name), model.parameters.get(entry.name));
  }
  // transformers refuses a safetensors file whose metadata lacks format "pt".
  save_safetensors(directory / kModelWeightsFile, tensors, {{"format", "pt"}});

  check<IoError>(fs::exists(tokenizer_dir / "vocab.txt"), "no vocab.txt in ", tokenizer_dir.string(),
                 " to copy into the checkpoint");
  for (const char* name : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"}) {
    if (fs::exists(tokenizer_dir / name)) write_file_atomic(directory / name, read_file(tokenizer_dir / name));
  }
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
  Json hyperparameters(state.hyperparameters);
  save_safetensors(directory / kOptimizerStateFile, state.tensors,
                   {{"algorithm", state.algorithm},
                    {"step", std::to_string(state.step)},
                    {"hyperparameters", hyperparameters.dump()}});
}

void read_optimizer_state(const fs::path& directory, Optimizer& optimizer) {
  const fs::path path = directory / kOptimizerStateFile;
  const SafetensorsFile file = SafetensorsFile::open(path);
  OptimizerState state;
  auto metadata = [&](const char* key) {
    auto found = file.metadata().find(key);
    check<FormatError>(found != file.metadata().end(), path.string(), ": metadata lacks \"", key, "\"");
    return found->second;
  };
  state.algorithm = metadata("algorithm");
  const std::string step = metadata("step");
  try {
    state.step = std::stoll(step);
  } catch (const std::exception&) {
    throw FormatError(str_cat(path.string(), ": metadata step \"", step, "\" is not an integer"));
  }
  for (const std::string& name : file.names()) state.tensors.emplace_back(name, file.tensor(name));
  try {
    optimizer.set_state(state);
  } catch (const InvalidArgument& error) {
    throw InvalidArgument(str_cat(path.string(), ": ", error.what()));
  }
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
