// Training configuration: one table of keys bound to TrainConfig's members drives parsing, writing,
// flag conversion and the help text.
#include "train/train_config.h"

#include <algorithm>
#include <cmath>
#include <variant>

#include "core/error.h"
#include "io/file_util.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace scalebert::train {

namespace {

using Json = nlohmann::json;
using Member = std::variant<std::string TrainConfig::*, int64_t TrainConfig::*, uint64_t TrainConfig::*,
                            double TrainConfig::*, bool TrainConfig::*, std::vector<std::string> TrainConfig::*>;

struct Field {
  ConfigKey key;
  Member member;
};

constexpr ConfigValueKind kS = ConfigValueKind::kString;
constexpr ConfigValueKind kI = ConfigValueKind::kInteger;
constexpr ConfigValueKind kN = ConfigValueKind::kNumber;
constexpr ConfigValueKind kB = ConfigValueKind::kBoolean;
constexpr ConfigValueKind kL = ConfigValueKind::kStringList;

const std::vector<Field>& fields() {
  using C = TrainConfig;
  static const std::vector<Field> table = {
      {{"model", kS, "Hugging Face model folder: config.json, weights, vocab.txt (required)"}, &C::model},
      {{"from_scratch", kB, "random weights from the model folder's config.json (pretraining from scratch)"},
       &C::from_scratch},
      {{"task", kS, "classification, ner, qa or mlm; empty: the model's head"}, &C::task},
      {{"labels", kL, "fixed label names (classification, ner); else the model's id2label, else the train file's"},
       &C::labels},
      {{"train_file", kS, "training data: .csv/.tsv/.jsonl (classification), CoNLL (ner), SQuAD .json (qa), "
                          "raw text (mlm) (required)"},
       &C::train_file},
      {{"eval_file", kS, "evaluation data in the same format; empty: no evaluation"}, &C::eval_file},
      {{"text_column", kS, "classification: the text column"}, &C::text_column},
      {{"pair_column", kS, "classification: the second text column (sentence pairs); empty: none"}, &C::pair_column},
      {{"label_column", kS, "classification: the label column"}, &C::label_column},
      {{"tag_scheme", kS, "ner: auto, io or bio"}, &C::tag_scheme},
      {{"max_length", kI, "tokens per sequence, [CLS] and [SEP] included"}, &C::max_length},
      {{"doc_stride", kI, "qa: tokens shared by consecutive context windows"}, &C::doc_stride},
      {{"max_answer_length", kI, "qa: longest answer span in tokens when decoding"}, &C::max_answer_length},
      {{"n_best", kI, "qa: start and end candidates tried per window"}, &C::n_best},
      {{"mlm_probability", kN, "mlm: fraction of tokens masked (80% [MASK], 10% random, 10% kept)"},
       &C::mlm_probability},
      {{"shuffle", kB, "shuffle the training examples every epoch (seeded)"}, &C::shuffle},
      {{"batch_size", kI, "sequences per micro-batch (0: only the token budget)"}, &C::batch_size},
      {{"max_tokens", kI, "token budget per micro-batch (0: none)"}, &C::max_tokens},
      {{"gradient_accumulation_steps", kI, "micro-batches per optimizer step"}, &C::gradient_accumulation_steps},
      {{"eval_batch_size", kI, "sequences per evaluation batch (0: batch_size)"}, &C::eval_batch_size},
      {{"optimizer", kS, "adamw or lamb"}, &C::optimizer},
      {{"learning_rate", kN, "peak learning rate at base_batch_size"}, &C::learning_rate},
      {{"scale_lr", kS, "none, linear or sqrt: scale learning_rate by the global batch / base_batch_size"},
       &C::scale_lr},
      {{"base_batch_size", kI, "batch size learning_rate was tuned for (0: the global batch, no scaling)"},
       &C::base_batch_size},
      {{"schedule", kS, "constant, constant_with_warmup, linear, polynomial or cosine"}, &C::schedule},
      {{"warmup_steps", kI, "linear warmup steps"}, &C::warmup_steps},
      {{"warmup_ratio", kN, "warmup as a fraction of the total steps (when warmup_steps is 0)"}, &C::warmup_ratio},
      {{"gradual_warmup", kB, "start warmup at the unscaled rate (Goyal et al. 2017) instead of 0"},
       &C::gradual_warmup},
      {{"lr_end", kN, "polynomial: final learning rate"}, &C::lr_end},
      {{"power", kN, "polynomial: decay power"}, &C::power},
      {{"weight_decay", kN, "decoupled weight decay (not on biases and LayerNorm)"}, &C::weight_decay},
      {{"adam_beta1", kN, "first-moment decay"}, &C::adam_beta1},
      {{"adam_beta2", kN, "second-moment decay"}, &C::adam_beta2},
      {{"adam_epsilon", kN, "added to the root of the second moment"}, &C::adam_epsilon},
      {{"max_grad_norm", kN, "clip gradients to this global L2 norm (0: no clipping)"}, &C::max_grad_norm},
      {{"epochs", kN, "passes over the training data (may be fractional)"}, &C::epochs},
      {{"max_steps", kI, "optimizer steps; > 0 overrides epochs"}, &C::max_steps},
      {{"stop_after_steps", kI, "save and stop at this step, keeping the full schedule (time-sliced jobs)"},
       &C::stop_after_steps},
      {{"seed", kI, "seed of the data order, masking, dropout and new head weights"}, &C::seed},
      {{"hidden_dropout", kN, "dropout on hidden states (< 0: the model config's)"}, &C::hidden_dropout},
      {{"attention_dropout", kN, "dropout on attention probabilities (< 0: the model config's)"},
       &C::attention_dropout},
      {{"classifier_dropout", kN, "dropout before the classifier (< 0: the model config's)"},
       &C::classifier_dropout},
      {{"precision", kS, "the encoder's matrix products: f32, or bf16 (mixed precision: bf16 operands, f32 "
                         "accumulation, f32 weights and optimizer; about 1.6x faster on AVX512_BF16 CPUs)"},
       &C::precision},
      {{"eval_steps", kI, "evaluate every N optimizer steps (0: only at the end)"}, &C::eval_steps},
      {{"logging_steps", kI, "write a metrics line every N optimizer steps"}, &C::logging_steps},
      {{"save_steps", kI, "also save checkpoint-last every N steps (0: at evaluations and the end)"}, &C::save_steps},
      {{"metric_for_best", kS, "eval metric that picks checkpoint-best (default: macro_f1, f1, f1, perplexity)"},
       &C::metric_for_best},
      {{"output_dir", kS, "folder for checkpoints, metrics.jsonl and TensorBoard events (required)"},
       &C::output_dir},
      {{"resume", kS, "auto (output_dir/checkpoint-last, else the store's newest resumable version, when "
                      "present), a checkpoint folder, store (the store's newest resumable version) or store:N"},
       &C::resume},
      {{"overwrite_output_dir", kB, "start fresh even when output_dir holds a checkpoint"},
       &C::overwrite_output_dir},
      {{"tensorboard", kB, "write TensorBoard event files under output_dir/tensorboard"}, &C::tensorboard},
      {{"distributed_optimizer", kB, "under mpirun: shard the optimizer state over the ranks (each updates its "
                                     "slice of the parameters; the moments of the others take no memory)"},
       &C::distributed_optimizer},
      {{"threads", kI, "compute threads (0: the default)"}, &C::threads},
      {{"store_roots", kL, "checkpoint store roots (folders on different disks): every checkpoint is also saved "
                           "there as a new version (empty: no store)"},
       &C::store_roots},
      {{"store_replicas", kI, "store replication factor R (0: min(2, number of roots))"}, &C::store_replicas},
      {{"store_shard_mb", kN, "store shard size in MiB of tensor data (fractions allowed)"}, &C::store_shard_mb},
      {{"store_keep", kI, "after each store save, keep only the newest N versions and the best (0: keep all)"}, &C::store_keep},
  };
  return table;
}

// Levenshtein distance, for "did you mean" on misspelled keys.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

const char* kind_name(ConfigValueKind kind) {
  switch (kind) {
    case ConfigValueKind::kString: return "a string";
    case ConfigValueKind::kInteger: return "an integer";
    case ConfigValueKind::kNumber: return "a number";
    case ConfigValueKind::kBoolean: return "true or false";
    case ConfigValueKind::kStringList: return "a list of strings";
  }
  return "?";
}

void assign(TrainConfig& config, const Field& field, const Json& value, const std::string& source) {
  const std::string where = str_cat(source, ": key \"", field.key.name, "\"");
  auto type_error = [&]() {
    return FormatError(str_cat(where, " must be ", kind_name(field.key.kind), ", got ", value.dump()));
  };
  std::visit(
      [&](auto member) {
        using T = std::remove_reference_t<decltype(config.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!value.is_string()) throw type_error();
          config.*member = value.get<std::string>();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!value.is_boolean()) throw type_error();
          config.*member = value.get<bool>();
        } else if constexpr (std::is_same_v<T, double>) {
          if (!value.is_number()) throw type_error();
          config.*member = value.get<double>();
        } else if constexpr (std::is_same_v<T, int64_t>) {
          if (!value.is_number_integer()) throw type_error();
          config.*member = value.get<int64_t>();
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          // A non-negative integer (parsed text gives unsigned, JSON built in code may give signed).
          if (!value.is_number_integer() || (!value.is_number_unsigned() && value.get<int64_t>() < 0)) {
            throw type_error();
          }
          config.*member = value.get<uint64_t>();
        } else {
          if (!value.is_array()) throw type_error();
          std::vector<std::string> items;
          for (const Json& item : value) {
            if (!item.is_string()) throw type_error();
            items.push_back(item.get<std::string>());
          }
          config.*member = std::move(items);
        }
      },
      field.member);
}

bool parse_bool(std::string_view text, bool& value) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") {
    value = true;
    return true;
  }
  if (text == "false" || text == "0" || text == "no" || text == "off") {
    value = false;
    return true;
  }
  return false;
}

}  // namespace

const std::vector<ConfigKey>& train_config_keys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> result;
    for (const Field& field : fields()) result.push_back(field.key);
    return result;
  }();
  return keys;
}

std::string flag_name(std::string_view key) {
  std::string flag(key);
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

Json parse_config_value(const ConfigKey& key, std::string_view text) {
  const std::string flag = str_cat("--", flag_name(key.name));
  auto bad = [&]() {
    return InvalidArgument(str_cat(flag, " expects ", kind_name(key.kind), ", got '", text, "'"));
  };
  switch (key.kind) {
    case ConfigValueKind::kString: return std::string(text);
    case ConfigValueKind::kBoolean: {
      bool value = false;
      if (!parse_bool(text, value)) throw bad();
      return value;
    }
    case ConfigValueKind::kInteger: {
      size_t used = 0;
      int64_t value = 0;
      try {
        value = std::stoll(std::string(text), &used);
      } catch (const std::exception&) {
        throw bad();
      }
      if (used != text.size()) throw bad();
      return value;
    }
    case ConfigValueKind::kNumber: {
      size_t used = 0;
      double value = 0;
      try {
        value = std::stod(std::string(text), &used);
      } catch (const std::exception&) {
        throw bad();
      }
      if (used != text.size() || !std::isfinite(value)) throw bad();
      return value;
    }
    case ConfigValueKind::kStringList: {
      Json list = Json::array();
      size_t start = 0;
      while (start <= text.size()) {
        const size_t comma = text.find(',', start);
        const std::string_view part = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
        if (!part.empty()) list.push_back(std::string(part));
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
      return list;
    }
  }
  throw bad();
}

TrainConfig TrainConfig::from_json(const Json& json, const std::string& source) {
  check<FormatError>(json.is_object(), source, ": a training config must be a JSON object, got ", json.type_name());
  TrainConfig config;
  for (const auto& [name, value] : json.items()) {
    const Field* found = nullptr;
    for (const Field& field : fields()) {
      if (name == field.key.name) found = &field;
    }
    if (found == nullptr) {
      std::string nearest;
      size_t best = 4;  // suggest only close names
      for (const Field& field : fields()) {
        const size_t distance = edit_distance(name, field.key.name);
        if (distance < best) {
          best = distance;
          nearest = field.key.name;
        }
      }
      throw FormatError(str_cat(source, ": unknown key \"", name, "\"",
                                nearest.empty() ? std::string() : str_cat(" (did you mean \"", nearest, "\"?)")));
    }
    if (value.is_null()) continue;  // null keeps the default, as an unset key
    assign(config, *found, value, source);
  }
  return config;
}

TrainConfig TrainConfig::from_file(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  Json json;
  try {
    json = Json::parse(text);
  } catch (const Json::exception& error) {
    throw FormatError(str_cat(path.string(), ": not valid JSON: ", error.what()));
  }
  return from_json(json, path.string());
}

Json TrainConfig::to_json() const {
  Json json = Json::object();
  for (const Field& field : fields()) {
    std::visit([&](auto member) { json[field.key.name] = this->*member; }, field.member);
  }
  return json;
}

void TrainConfig::validate() const {
  auto require = [](bool condition, auto&&... parts) {
    if (!condition) throw InvalidArgument(str_cat(parts...));
  };
  require(!model.empty(), "training config: \"model\" (--model) is required");
  require(!train_file.empty(), "training config: \"train_file\" (--train-file) is required");
  require(!output_dir.empty(), "training config: \"output_dir\" (--output-dir) is required");
  if (!task.empty()) {
    static const char* const kTasks[] = {"classification", "sequence-classification", "ner", "token-classification",
                                         "qa", "question-answering", "mlm", "masked-lm"};
    require(std::find(std::begin(kTasks), std::end(kTasks), task) != std::end(kTasks), "task \"", task,
            "\": expected classification, ner, qa or mlm");
  }
  require(tag_scheme == "auto" || tag_scheme == "io" || tag_scheme == "bio", "tag_scheme \"", tag_scheme,
          "\": expected auto, io or bio");
  require(max_length >= 3, "max_length ", max_length, ": must be at least 3 ([CLS] token [SEP])");
  require(doc_stride >= 0, "doc_stride ", doc_stride, ": must be >= 0");
  require(max_answer_length >= 1, "max_answer_length ", max_answer_length, ": must be >= 1");
  require(n_best >= 1, "n_best ", n_best, ": must be >= 1");
  require(mlm_probability > 0.0 && mlm_probability < 1.0, "mlm_probability ", mlm_probability,
          ": must be in (0, 1)");
  require(batch_size >= 0 && max_tokens >= 0, "batch_size ", batch_size, " and max_tokens ", max_tokens,
          ": must be >= 0");
  require(batch_size > 0 || max_tokens > 0, "batch_size and max_tokens are both 0: set at least one");
  require(gradient_accumulation_steps >= 1, "gradient_accumulation_steps ", gradient_accumulation_steps,
          ": must be >= 1");
  require(eval_batch_size >= 0, "eval_batch_size ", eval_batch_size, ": must be >= 0");
  parse_optimizer_kind(optimizer);
  parse_schedule_kind(schedule);
  parse_lr_scaling(scale_lr);
  require(std::isfinite(learning_rate) && learning_rate >= 0.0, "learning_rate ", learning_rate,
          ": must be finite and >= 0");
  require(base_batch_size >= 0, "base_batch_size ", base_batch_size, ": must be >= 0");
  require(warmup_steps >= 0, "warmup_steps ", warmup_steps, ": must be >= 0");
  require(warmup_ratio >= 0.0 && warmup_ratio <= 1.0, "warmup_ratio ", warmup_ratio, ": must be in [0, 1]");
  require(weight_decay >= 0.0, "weight_decay ", weight_decay, ": must be >= 0");
  require(max_grad_norm >= 0.0 && std::isfinite(max_grad_norm), "max_grad_norm ", max_grad_norm,
          ": must be finite and >= 0 (0 turns clipping off)");
  require(max_steps >= 0, "max_steps ", max_steps, ": must be >= 0");
  require(max_steps > 0 || (std::isfinite(epochs) && epochs > 0.0), "epochs ", epochs,
          ": must be > 0 (or set max_steps)");
  require(stop_after_steps >= 0, "stop_after_steps ", stop_after_steps, ": must be >= 0");
  for (double rate : {hidden_dropout, attention_dropout, classifier_dropout}) {
    require(rate < 1.0, "dropout rate ", rate, ": must be < 1 (negative: the model config's)");
  }
  require(precision == "f32" || precision == "bf16", "precision \"", precision, "\": must be f32 or bf16");
  require(eval_steps >= 0, "eval_steps ", eval_steps, ": must be >= 0");
  require(logging_steps >= 1, "logging_steps ", logging_steps, ": must be >= 1");
  require(save_steps >= 0, "save_steps ", save_steps, ": must be >= 0");
  require(threads >= 0, "threads ", threads, ": must be >= 0");
  for (size_t i = 0; i < store_roots.size(); ++i) {
    require(!store_roots[i].empty(), "store_roots: root ", i, " is empty");
  }
  require(store_replicas >= 0, "store_replicas ", store_replicas, ": must be >= 0 (0: min(2, roots))");
  require(store_roots.empty() || static_cast<size_t>(store_replicas) <= store_roots.size(), "store_replicas ",
          store_replicas, ": more than the ", store_roots.size(), " store_roots");
  require(std::isfinite(store_shard_mb) && store_shard_mb * 1048576.0 >= 1.0 && store_shard_mb <= 1048576.0,
          "store_shard_mb ", store_shard_mb, ": must be a positive size in MiB (at most 1 TiB)");
  require(store_keep >= 0, "store_keep ", store_keep, ": must be >= 0 (0: keep all)");
  const bool from_store = resume == "store" || resume.rfind("store:", 0) == 0;
  require(!from_store || !store_roots.empty(), "resume \"", resume, "\" needs store_roots (--store-roots a,b,c)");
  if (resume.rfind("store:", 0) == 0) {
    const std::string number = resume.substr(6);
    require(!number.empty() && number.size() <= 18 && number.find_first_not_of("0123456789") == std::string::npos &&
                std::stoll(number) > 0,
            "resume \"", resume, "\": expected store:N with N a version number >= 1");
  }
}

size_t TrainConfig::store_replication() const {
  if (store_replicas > 0) return static_cast<size_t>(store_replicas);
  return std::min<size_t>(2, store_roots.size());
}

}  // namespace scalebert::train
