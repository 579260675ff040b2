// The training loop as a library: data files -> features -> seeded batches -> forward/backward
// (gradient accumulation) -> clipping -> optimizer step under a learning-rate schedule, with
// evaluation by task metrics, metrics.jsonl and TensorBoard logs, checkpoint-last / checkpoint-best
// folders, exact resume, cooperative stop (Ctrl-C) and a clear stop on a non-finite loss.
//
// Exact resume: every random draw is a pure function of counters saved in trainer_state.json —
// data order of (seed, epoch), MLM masking of (seed, epoch, example), dropout of (seed, step,
// micro-batch) — and parameters and optimizer moments are saved bit-exactly, so a run stopped at
// step s and resumed logs the same losses, bit for bit, as a run that never stopped.
//
// Output folder:
//   checkpoint-last/   model folder (config.json, model.safetensors, tokenizer files) +
//                      trainer_state.json + optimizer.safetensors + train_config.json
//   checkpoint-best/   the same, from the evaluation with the best metric_for_best
//   metrics.jsonl      {"type":"train",...} every logging_steps and {"type":"eval",...} per evaluation
//   tensorboard/       events.out.tfevents.* (train/loss, train/learning_rate, eval/<metric>, ...)
//
// Checkpoint store (store_roots set): every checkpoint the folders above receive — last, best,
// periodic, at a stop request or Ctrl-C — is ALSO saved as a new version of the store (weights,
// optimizer moments for "last" versions, trainer_state.json; train/checkpoint.h), replicated on
// R of the K roots. The folders stay the working copy; the store is the durable, replicated one.
// Resume: "store" takes the store's newest resumable version (the newest "last" version at or
// below `latest`), "store:N" version N, and "auto" takes output_dir/checkpoint-last when present,
// else the store's newest resumable version. Reads verify checksums and fail over to good replicas
// (each skipped replica is reported through on_message).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/bert_model.h"
#include "train/train_config.h"

namespace scalebert::train {

struct EvalResult {
  int64_t step = 0;
  int64_t examples = 0;  // examples scored (questions for QA, sentences for NER, masked tokens for MLM)
  // "loss" always; classification: accuracy, macro_f1, macro_precision, macro_recall; ner:
  // precision, recall, f1 (entity level, micro), accuracy (tokens); qa: exact_match, f1 (percent);
  // mlm: perplexity, accuracy (masked tokens).
  std::map<std::string, double> metrics;
};

// After every optimizer step, for progress display.
struct StepReport {
  int64_t step = 0;          // steps done, this one included
  int64_t total_steps = 0;
  int64_t first_step = 0;    // the step this process started from (non-zero after a resume)
  double loss = 0.0;         // mean loss of this step's micro-batches
  double learning_rate = 0.0;
  double grad_norm = 0.0;    // global L2 norm before clipping
  int64_t tokens = 0;        // tokens in this step
  double tokens_per_second = 0.0;  // since this process started training
  double epoch = 0.0;        // fractional epochs done
  double elapsed_seconds = 0.0;    // since this process started training
};

struct TrainResult {
  int64_t global_step = 0;
  int64_t total_steps = 0;
  int64_t resumed_from_step = -1;  // -1: a fresh run
  bool completed = false;          // reached total_steps (false after a stop request or stop_after_steps)
  std::optional<EvalResult> final_eval;
  std::filesystem::path last_checkpoint;
  std::filesystem::path best_checkpoint;  // empty without evaluation
  std::string best_metric_name;
  double best_metric = 0.0;
  int64_t best_step = -1;
  std::vector<double> step_losses;  // the loss of every step this process ran, in order
  // Checkpoint store versions (0: none): the last one saved by this process for checkpoint-last
  // and checkpoint-best, and the version a store resume started from.
  uint64_t last_store_version = 0;
  uint64_t best_store_version = 0;
  uint64_t resumed_from_store_version = 0;
};

struct TrainerCallbacks {
  std::function<void(const StepReport&)> on_step;
  std::function<void(const EvalResult&)> on_eval;
  std::function<void(const std::string&)> on_message;  // setup, resume and checkpoint notices
};

class Trainer {
 public:
  // Validates the config (InvalidArgument naming the key) but reads nothing yet.
  explicit Trainer(TrainConfig config, TrainerCallbacks callbacks = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Sets up (model, tokenizer, data, optimizer; resume when asked) and trains. Errors: data errors
  // from the readers (file and line), InvalidArgument for an incompatible checkpoint or a fresh
  // run into an output_dir (or a checkpoint store) that holds one, IoError when the store cannot
  // take a save or has no good replica of what a resume needs, NonFiniteError naming the step and the first
  // non-finite gradient when the loss or the gradients stop being finite (checkpoint-last then
  // still holds the last good state).
  TrainResult run();

  // Asks the loop to save checkpoint-last after the current step and return. Safe from another
  // thread; signal handlers use request_stop_from_signal().
  void request_stop();

  const TrainConfig& config() const { return config_; }

  // Evaluation only, with the inference engine: loads config.model with InferenceWeights::load (so
  // f32, bf16 and int8 folders as `scalebert quantize` writes them, each run in its own precision),
  // reads config.eval_file as training would (max_length, doc_stride, labels, ...) and returns the
  // task metrics of evaluate (QA: n-best decoding over the doc-stride windows, SQuAD EM/F1). Reads
  // no train_file and writes nothing. The model's own head is scored: config.task, when set, must
  // name it. Errors: InvalidArgument without eval_file or for a task other than the model's head,
  // the readers' data errors, FormatError when the file has no example.
  static EvalResult evaluate_model(const TrainConfig& config, TrainerCallbacks callbacks = {});

 private:
  struct Impl;
  TrainConfig config_;
  TrainerCallbacks callbacks_;
  std::unique_ptr<Impl> impl_;
};

// Stop every running trainer after its current step (async-signal-safe: sets a lock-free flag).
void request_stop_from_signal();
// Clears the flag (a new run in the same process starts unstopped).
void clear_stop_request();
bool stop_requested();

// While alive, SIGINT and SIGTERM ask running trainers to stop (save and return); a second signal
// of the same kind gets the previous disposition back, so a second Ctrl-C ends the process at once.
// Restores the previous handlers on destruction.
class StopOnSignals {
 public:
  StopOnSignals();
  ~StopOnSignals();
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
};

// The task head for a config task name ("classification", "ner", "qa", "mlm" and the long names).
TaskHead task_from_name(const std::string& task);
// The default metric_for_best of a head, and whether larger is better for a metric name
// (false for "loss" and "perplexity").
std::string default_best_metric(TaskHead head);
bool greater_is_better(const std::string& metric);

}  // namespace scalebert::train
