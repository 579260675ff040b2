// The settings of one training run: a JSON config file whose keys are listed once, in a table that
// also drives the command-line flags (key "learning_rate" <-> flag --learning-rate), so the file,
// the flags, the docs and the saved train_config.json never disagree. Flags override the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace scalebert::train {

enum class ConfigValueKind { kString, kInteger, kNumber, kBoolean, kStringList };

// One configuration key: its JSON name, type and help text (defaults: TrainConfig{}.to_json()).
struct ConfigKey {
  const char* name;
  ConfigValueKind kind;
  const char* help;
};

// Every key, in the order the docs and --help list them.
const std::vector<ConfigKey>& train_config_keys();

struct TrainConfig {
  // Model and task.
  std::string model;            // Hugging Face model folder (config.json, weights, vocab.txt)
  bool from_scratch = false;    // random weights from the folder's config.json (pretraining)
  std::string task;             // "", classification, ner, qa, mlm ("" = the model's head)
  std::vector<std::string> labels;  // fixed label set (classification, ner); else model, else train file
  // Data.
  std::string train_file;
  std::string eval_file;
  std::string text_column = "text";
  std::string pair_column;
  std::string label_column = "label";
  std::string tag_scheme = "auto";  // ner: auto, io, bio
  int64_t max_length = 128;
  int64_t doc_stride = 128;         // qa: tokens shared by consecutive context windows
  int64_t max_answer_length = 30;   // qa decoding
  int64_t n_best = 20;              // qa decoding
  double mlm_probability = 0.15;
  bool shuffle = true;
  // Batching.
  int64_t batch_size = 32;          // sequences per micro-batch (0: only the token budget)
  int64_t max_tokens = 0;           // token budget per micro-batch (0: none)
  int64_t gradient_accumulation_steps = 1;
  int64_t eval_batch_size = 0;      // 0: batch_size (or 32 with a token budget only)
  // Optimization.
  std::string optimizer = "adamw";
  double learning_rate = 5e-5;
  std::string scale_lr = "none";    // none, linear, sqrt
  int64_t base_batch_size = 0;      // the batch learning_rate was tuned for (0: the global batch)
  std::string schedule = "linear";
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;        // of the total steps; used when warmup_steps is 0
  bool gradual_warmup = false;      // Goyal et al.: warmup starts at the unscaled rate
  double lr_end = 1e-7;             // polynomial
  double power = 1.0;               // polynomial
  double weight_decay = 0.01;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;       // 0: no clipping
  double epochs = 3.0;              // may be fractional
  int64_t max_steps = 0;            // > 0 overrides epochs
  int64_t stop_after_steps = 0;     // > 0: save and stop at this step without changing the schedule
  uint64_t seed = 42;
  double hidden_dropout = -1.0;     // < 0: the model config's value
  double attention_dropout = -1.0;
  double classifier_dropout = -1.0;
  std::string precision = "f32";    // the encoder's products: f32, or bf16 (mixed precision)
  // Evaluation, logging, checkpoints.
  int64_t eval_steps = 0;           // evaluate every N steps (0: only at the end)
  int64_t logging_steps = 10;
  int64_t save_steps = 0;           // also save checkpoint-last every N steps (0: at evaluations and the end)
  std::string metric_for_best;      // "" = the task's default (macro_f1, f1, f1, perplexity)
  std::string output_dir;
  std::string resume;               // "", "auto", a checkpoint folder, "store" or "store:N" (see trainer.h)
  bool overwrite_output_dir = false;
  bool tensorboard = true;
  // Under mpirun: each rank keeps and updates the optimizer state of one slice of the parameters
  // (reduce-scatter the gradients, update the slice, all-gather the parameters).
  bool distributed_optimizer = false;
  int64_t threads = 0;              // 0: keep the process default
  // Checkpoint store (docs/checkpoint_store.md): every checkpoint is also saved as a store version.
  std::vector<std::string> store_roots;  // empty: no store
  int64_t store_replicas = 0;       // R; 0: min(2, number of roots)
  double store_shard_mb = 1024.0;   // MiB of tensor data per shard at most
  int64_t store_keep = 0;           // > 0: after each save, gc to the newest N versions (0: keep all)

  // Parses a config object: every key must be known and of its type (FormatError naming `source`
  // and the key, with the nearest known key for a typo). Keys left out keep their defaults.
  static TrainConfig from_json(const nlohmann::json& json, const std::string& source = "config");
  // Reads a JSON config file; IoError when unreadable, FormatError for bad JSON (with its position).
  static TrainConfig from_file(const std::filesystem::path& path);
  // Every key with its value (what output_dir/train_config.json records).
  nlohmann::json to_json() const;
  // Checks ranges and combinations (InvalidArgument naming the key and value): model, train_file
  // and output_dir set, batch_size or max_tokens positive, known optimizer/schedule/scale_lr,
  // probabilities in range, and so on.
  void validate() const;

  // R actually used: store_replicas, or min(2, store_roots.size()) when 0.
  size_t store_replication() const;
};

// Converts a flag's text to the key's JSON type ("3" -> 3, "true" -> true, "a,b" -> ["a","b"]);
// InvalidArgument naming the flag when the text is not of that type.
nlohmann::json parse_config_value(const ConfigKey& key, std::string_view text);

// "learning_rate" -> "learning-rate".
std::string flag_name(std::string_view key);

}  // namespace scalebert::train
