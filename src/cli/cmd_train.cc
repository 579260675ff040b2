// `scalebert train`: config file + flags -> TrainConfig, the trainer with a progress line (step,
// loss, learning rate, tokens/s, ETA), Ctrl-C handling, and a summary of the run; with --eval-only,
// the task metrics of a model folder (f32, bf16 or int8) on the eval file instead.
#include "cli/cmd_train.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli/args.h"
#include "cli/progress.h"
#include "dist/communicator.h"
#include "train/trainer.h"

namespace scalebert::cli {

namespace {

using train::ConfigKey;
using train::ConfigValueKind;

const char* const kEpilog =
    "Every key of a --config JSON file is also a flag (learning_rate <-> --learning-rate); flags win.\n"
    "Booleans: --shuffle / --no-shuffle. Lists: --labels a,b,c.\n\n"
    "examples:\n"
    "  scalebert train --config examples/train_classification.json\n"
    "  scalebert train --model minilm --task classification --train-file train.csv --eval-file valid.csv \\\n"
    "                  --output-dir runs/tweets --epochs 3 --learning-rate 5e-5 --eval-steps 200\n"
    "  scalebert train --config run.json --resume auto      (continue after Ctrl-C or a crash)\n"
    "  scalebert train --config examples/train_qa.json --model out/qa-int8 --eval-only\n"
    "                                                       (metrics of a trained or quantized model)\n"
    "  scalebert train --config run.json --store-roots /d0/ckpt,/d1/ckpt,/d2/ckpt --store-replicas 2\n"
    "                  [--resume store]                     (also save every checkpoint to a replicated store)\n\n"
    "outputs in output_dir: checkpoint-last/ and checkpoint-best/ (Hugging Face model folders with\n"
    "trainer_state.json), metrics.jsonl, tensorboard/ (tensorboard --logdir <output_dir>/tensorboard);\n"
    "with --store-roots each checkpoint is also a new store version (scalebert ckpt ls --roots ...).\n"
    "--eval-only: no training; the model folder (f32, or bf16 / int8 from scalebert quantize, run in its\n"
    "own precision) is scored on eval_file and one JSON line {\"type\":\"eval\",\"examples\":...,<metrics>}\n"
    "goes to standard output; train_file and output_dir are not needed.\n"
    "exit codes: 0 finished, 1 error, 2 usage error, 130 stopped by Ctrl-C after saving checkpoint-last.";

const char* metavar(ConfigValueKind kind) {
  switch (kind) {
    case ConfigValueKind::kString: return "TEXT";
    case ConfigValueKind::kInteger: return "N";
    case ConfigValueKind::kNumber: return "X";
    case ConfigValueKind::kBoolean: return "";
    case ConfigValueKind::kStringList: return "A,B,...";
  }
  return "VALUE";
}

// The progress line: redrawn in place on a terminal (at most 10 times a second); into a pipe or a
// file only with --progress, one plain line at most every 5 seconds.
class TrainProgress {
 public:
  explicit TrainProgress(bool forced) : terminal_(isatty(STDERR_FILENO) == 1), enabled_(terminal_ || forced) {}

  void update(const train::StepReport& report) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    const double interval = terminal_ ? 0.1 : 5.0;
    const bool last = report.step == report.total_steps;
    if (drawn_ && !last && std::chrono::duration<double>(now - last_draw_).count() < interval) return;
    last_draw_ = now;
    drawn_ = true;
    const int64_t done_here = report.step - report.first_step;
    const double rate = report.elapsed_seconds > 0 ? static_cast<double>(done_here) / report.elapsed_seconds : 0.0;
    const double remaining = rate > 0 ? static_cast<double>(report.total_steps - report.step) / rate : NAN;
    constexpr int kWidth = 20;
    const double fraction = static_cast<double>(report.step) / static_cast<double>(report.total_steps);
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '=');
    if (filled < kWidth) bar += '>';
    bar.resize(kWidth, ' ');
    char line[256];
    std::snprintf(line, sizeof line, "train [%s] %lld/%lld  ep %.2f  loss %.4f  lr %.2e  %.0f tok/s  %s %s",
                  bar.c_str(), static_cast<long long>(report.step), static_cast<long long>(report.total_steps),
                  report.epoch, report.loss, report.learning_rate, report.tokens_per_second,
                  last ? "in" : "ETA",
                  ProgressBar::format_duration(last ? report.elapsed_seconds : remaining).c_str());
    if (terminal_) {
      std::fprintf(stderr, "\r%s\x1b[K", line);
      if (last) std::fputc('\n', stderr);
      open_line_ = !last;
    } else {
      std::fprintf(stderr, "%s\n", line);
    }
    std::fflush(stderr);
  }

  // Ends an in-place line before another message is printed.
  void break_line() {
    if (open_line_) {
      std::fputc('\n', stderr);
      open_line_ = false;
    }
  }

 private:
  bool terminal_;
  bool enabled_;
  bool drawn_ = false;
  bool open_line_ = false;
  std::chrono::steady_clock::time_point last_draw_;
};

std::string format_metrics(const train::EvalResult& evaluation) {
  std::string text;
  for (const auto& [name, value] : evaluation.metrics) {
    char number[32];
    std::snprintf(number, sizeof number, "%.4f", value);
    text += str_cat(text.empty() ? "" : ", ", name, " ", number);
  }
  return text;
}

}  // namespace

int run_train_command(const std::vector<std::string>& args) {
  ArgParser parser("train", "fine-tune or pretrain a BERT model (classification, ner, qa, mlm)");
  parser.option("config", "FILE", "JSON training config; flags override its keys");
  const nlohmann::json defaults = train::TrainConfig{}.to_json();
  for (const ConfigKey& key : train::train_config_keys()) {
    const std::string flag = train::flag_name(key.name);
    if (key.kind == ConfigValueKind::kBoolean) {
      parser.flag(flag, str_cat(key.help, defaults.at(key.name).get<bool>() ? " [default: on]" : ""));
      parser.flag("no-" + flag, str_cat("turn --", flag, " off"));
      continue;
    }
    const nlohmann::json& value = defaults.at(key.name);
    std::string shown;
    if (value.is_string()) {
      shown = value.get<std::string>();
    } else if (!value.is_array()) {
      shown = value.dump();
    }
    parser.option(flag, metavar(key.kind), key.help, shown);
  }
  parser.flag("eval-only", "no training: evaluate the model folder on eval_file with the inference engine")
      .flag("progress", "draw the progress line even when stderr is not a terminal")
      .flag("quiet", "no progress line and no setup messages")
      .epilog(kEpilog);

  std::vector<std::string> copies(args.begin(), args.end());
  std::vector<char*> pointers;
  for (std::string& arg : copies) pointers.push_back(arg.data());
  if (!parser.parse(std::span<char* const>(pointers.data(), pointers.size()))) return 0;

  // The file first, then each flag given on the command line, through the same typed parser.
  nlohmann::json json = nlohmann::json::object();
  std::string source = "command line";
  if (parser.given("config")) {
    source = parser.get("config");
    json = train::TrainConfig::from_file(source).to_json();
  }
  for (const ConfigKey& key : train::train_config_keys()) {
    const std::string flag = train::flag_name(key.name);
    if (key.kind == ConfigValueKind::kBoolean) {
      if (parser.given(flag) && parser.given("no-" + flag)) {
        throw UsageError(str_cat("--", flag, " and --no-", flag, " contradict each other"));
      }
      if (parser.given(flag)) json[key.name] = true;
      if (parser.given("no-" + flag)) json[key.name] = false;
      continue;
    }
    if (!parser.given(flag)) continue;
    try {
      json[key.name] = train::parse_config_value(key, parser.get(flag));
    } catch (const InvalidArgument& error) {
      throw UsageError(error.what());
    }
  }
  train::TrainConfig config = train::TrainConfig::from_json(json, source);

  // Under mpirun every rank runs this; rank 0 alone speaks for the run.
  const bool primary = dist::Communicator::world().primary();
  const bool quiet = parser.given("quiet") || !primary;
  TrainProgress progress(parser.given("progress") && !quiet);
  train::TrainerCallbacks callbacks;
  if (!quiet) {
    callbacks.on_step = [&](const train::StepReport& report) { progress.update(report); };
    callbacks.on_message = [&](const std::string& text) {
      progress.break_line();
      std::fprintf(stderr, "train: %s\n", text.c_str());
    };
  }
  callbacks.on_eval = [&](const train::EvalResult& evaluation) {
    if (quiet) return;
    progress.break_line();
    std::fprintf(stderr, "train: eval at step %lld (%lld examples): %s\n", static_cast<long long>(evaluation.step),
                 static_cast<long long>(evaluation.examples), format_metrics(evaluation).c_str());
  };

  if (parser.given("eval-only")) {
    const train::EvalResult evaluation = train::Trainer::evaluate_model(config, callbacks);
    if (!primary) return 0;  // under mpirun every rank scored the same model: rank 0 answers
    nlohmann::json line = {{"type", "eval"}, {"model", config.model}, {"examples", evaluation.examples}};
    for (const auto& [name, value] : evaluation.metrics) line[name] = value;
    std::printf("%s\n", line.dump().c_str());
    return 0;
  }

  train::clear_stop_request();
  train::StopOnSignals signals;  // Ctrl-C: finish the step, save checkpoint-last, return 130
  train::Trainer trainer(config, callbacks);
  const train::TrainResult result = trainer.run();
  progress.break_line();
  if (!primary) return !result.completed && train::stop_requested() ? 130 : 0;

  std::printf("steps: %lld/%lld%s\n", static_cast<long long>(result.global_step),
              static_cast<long long>(result.total_steps),
              result.resumed_from_step >= 0 ? str_cat(" (resumed at ", result.resumed_from_step, ")").c_str() : "");
  if (result.final_eval) std::printf("final eval: %s\n", format_metrics(*result.final_eval).c_str());
  if (!result.best_checkpoint.empty()) {
    std::printf("best: %s %.4f at step %lld -> %s\n", result.best_metric_name.c_str(), result.best_metric,
                static_cast<long long>(result.best_step), result.best_checkpoint.c_str());
  }
  std::printf("last: %s\n", result.last_checkpoint.c_str());
  if (result.last_store_version > 0 || result.best_store_version > 0) {
    std::printf("store: last version %llu, best version %llu%s\n",
                static_cast<unsigned long long>(result.last_store_version),
                static_cast<unsigned long long>(result.best_store_version),
                result.resumed_from_store_version > 0
                    ? str_cat(" (resumed from version ", result.resumed_from_store_version, ")").c_str()
                    : "");
  }
  if (!result.completed && train::stop_requested()) {
    std::fprintf(stderr, "train: interrupted; resume with --resume auto%s (same config)\n",
                 config.store_roots.empty() ? "" : " or --resume store");
    return 130;
  }
  return 0;
}

}  // namespace scalebert::cli
