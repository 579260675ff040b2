// Training checkpoints: a Hugging Face model folder (config.json with id2label, model.safetensors,
// tokenizer files) that BertModel::load and transformers' from_pretrained both open, plus
// trainer_state.json (step, data position, seed, best metric, the model's shape and labels) and
// optimizer.safetensors (the moments by parameter name, so any world size can resume). A folder
// is written beside its final name and swapped in with one atomic rename, so a crash leaves either
// the previous checkpoint or the new one, never a mix.
//
// The same checkpoint as a version of a checkpoint store (io/store, docs/checkpoint_store.md):
// tensors = every parameter under its state-dict name plus the optimizer moments as
// "optimizer/<name>.exp_avg|.exp_avg_sq"; side files = config.json, the tokenizer files,
// trainer_state.json, train_config.json; metadata = {"kind": "bert", "config", "head",
// "safetensors_metadata": {"format": "pt"}, "optimizer": {algorithm, step, hyperparameters},
// "extra": {"producer": "scalebert train", "role": "last"|"best", "step": N}}. `scalebert ckpt
// export` of such a version is a checkpoint folder as above.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/store/store.h"
#include "model/bert_model.h"
#include "train/data/order.h"
#include "train/optimizer.h"

namespace scalebert::train {

inline constexpr const char* kTrainerStateFile = "trainer_state.json";
inline constexpr const char* kOptimizerStateFile = "optimizer.safetensors";
inline constexpr const char* kModelWeightsFile = "model.safetensors";

// trainer_state.json: where a run stands, and what it trains (for the compatibility check).
struct TrainerState {
  int64_t global_step = 0;           // optimizer steps taken
  int64_t micro_batches = 0;         // micro-batches consumed from the training stream
  data::DataOrderState data;         // seed, epoch, position of the training stream
  uint64_t seed = 0;                 // the run's seed: dropout keys are (seed, step, micro-batch)
  double epoch = 0.0;                // epochs done, fractional (for people)
  int64_t total_steps = 0;           // the schedule's length
  int64_t tokens_seen = 0;
  int64_t train_examples = 0;        // size of the training stream (a resume needs the same data)
  std::string task;                  // task_head_name of the head
  std::vector<std::string> labels;   // classification / ner label names in id order
  nlohmann::json model_shape;        // config sizes and activation (model_shape())
  std::string optimizer;             // "adamw" / "lamb"
  std::string best_metric_name;
  double best_metric = std::numeric_limits<double>::quiet_NaN();  // NaN: no evaluation yet
  int64_t best_step = -1;

  nlohmann::json to_json() const;
  // FormatError naming `source` and the key for a missing or mistyped key or another format version.
  static TrainerState from_json(const nlohmann::json& json, const std::string& source);
};

// The config values that fix the parameter shapes and the computation: vocab_size, hidden_size,
// num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings,
// type_vocab_size, hidden_act, plus has_pooler.
nlohmann::json model_shape(const BertModel& model);

// Throws InvalidArgument "cannot resume from <dir>: ..." naming the first difference: the task, a
// shape key (both values), the seed, the number of training examples, or the label set (both lists).
void check_resume_compatible(const TrainerState& saved, const TrainerState& current,
                             const std::filesystem::path& checkpoint);

// The parameter's name in transformers' state dict: "bert." in front of encoder and pooler
// parameters when the model has a task head (BertFor* classes), the name itself otherwise.
std::string hf_state_dict_name(TaskHead head, const std::string& name);

// Writes config.json (the model's config with id2label = labels and the head's architecture),
// model.safetensors (every parameter under its state-dict name, metadata format "pt"), and copies
// vocab.txt, tokenizer_config.json, special_tokens_map.json and tokenizer.json from
// `tokenizer_dir` when present (vocab.txt must be). `directory` must exist.
void write_model_folder(const std::filesystem::path& directory, const BertModel& model,
                        const std::vector<std::string>& labels, const std::filesystem::path& tokenizer_dir);

// The config.json a checkpoint carries: the model's config with id2label = labels (classification
// and ner heads; InvalidArgument when the count differs from the head's outputs) and the head's
// transformers architecture.
BertConfig checkpoint_config(const BertModel& model, const std::vector<std::string>& labels);

void write_trainer_state(const std::filesystem::path& directory, const TrainerState& state);
// Reads <checkpoint>/trainer_state.json; IoError when missing, FormatError when malformed.
TrainerState read_trainer_state(const std::filesystem::path& checkpoint);

// <directory>/optimizer.safetensors from Optimizer::get_state(); the algorithm, step and
// hyperparameters go into the metadata.
void write_optimizer_state(const std::filesystem::path& directory, const Optimizer& optimizer);
// Restores the moments and step count; errors name the file and, from set_state, the tensor.
void read_optimizer_state(const std::filesystem::path& directory, Optimizer& optimizer);

// --- Checkpoints as store versions ---------------------------------------------------------------

inline constexpr std::string_view kStoreRoleLast = "last";  // with optimizer state: resumable
inline constexpr std::string_view kStoreRoleBest = "best";  // model only

// Saves the checkpoint as a new version of `store` (layout above). `optimizer` null: no optimizer
// state (checkpoint-best). Errors as CheckpointStore::save; IoError when tokenizer_dir lacks vocab.txt.
store::SaveResult save_training_version(store::CheckpointStore& store, const store::SaveOptions& options,
                                        const BertModel& model, const std::vector<std::string>& labels,
                                        const std::filesystem::path& tokenizer_dir, const TrainerState& state,
                                        const Optimizer* optimizer, const nlohmann::json& train_config,
                                        std::string_view role);

// Whether a stored version is a resumable trainer checkpoint: role "last" with optimizer state.
bool is_resumable_version(const store::Manifest& manifest);
// The newest committed version at or below `latest` that is resumable (a crash between a best and
// a last save can leave `latest` on a best version); nullopt when there is none.
std::optional<uint64_t> find_resumable_version(const store::CheckpointStore& store);

// trainer_state.json of a stored version (verified, with failover); FormatError naming `source`.
TrainerState read_trainer_state(const store::Checkpoint& checkpoint, const std::string& source);
// Restores the optimizer from a stored version's "optimizer/" tensors and "optimizer" metadata;
// errors name `source` and, from set_state, the tensor.
void read_optimizer_state(const store::Checkpoint& checkpoint, Optimizer& optimizer, const std::string& source);

// A checkpoint folder being written: files go into a hidden sibling ".<name>.tmp.<pid>.<n>";
// commit() fsyncs it and swaps it with the final folder (renameat2 RENAME_EXCHANGE, or two renames
// where the filesystem lacks it, keeping ".<name>.old" until the new folder is in place), then
// removes the old one. Destroying an uncommitted writer removes the temporary folder.
class CheckpointWriter {
 public:
  explicit CheckpointWriter(std::filesystem::path final_directory);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  const std::filesystem::path& path() const { return temporary_; }
  void commit();

 private:
  std::filesystem::path final_;
  std::filesystem::path temporary_;
  bool committed_ = false;
};

// The folder to resume from for `directory`: itself when it holds trainer_state.json, else the
// ".<name>.old" sibling that an interrupted two-rename swap left. IoError naming both otherwise.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& directory);
// True when resolve_checkpoint would find one.
bool checkpoint_exists(const std::filesystem::path& directory);

}  // namespace scalebert::train
