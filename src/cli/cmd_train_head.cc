// `scalebert train-head`: an MLP classification head trained on cached frozen-encoder features.
#include <chrono>
#include <cstdio>

#include "cli/common.h"
#include "core/threads.h"
#include "train/mlp_head.h"

namespace scalebert::cli {

namespace {

template <typename Parse>
auto parse_flag(const ArgParser& args, const std::string& name, Parse parse) {
  try {
    return parse(args.get(name));
  } catch (const InvalidArgument& error) {
    throw UsageError(str_cat("option --", name, ": ", error.what()));
  }
}

double get_double(const ArgParser& args, const std::string& name, double minimum, double maximum) {
  const std::string text = args.get(name);
  try {
    size_t used = 0;
    const double value = std::stod(text, &used);
    if (used == text.size() && value >= minimum && value <= maximum) return value;
  } catch (const std::exception&) {
  }
  throw UsageError(str_cat("option --", name, ": \"", text, "\" is not a number in [", minimum, ", ", maximum, "]"));
}

}  // namespace

int run_train_head(std::span<char* const> arguments) {
  ArgParser args("train-head",
                 "Train an MLP classification head on a feature cache written by `scalebert features` "
                 "(Linear-activation-dropout per hidden layer, cross-entropy, AdamW, linear decay), reporting "
                 "accuracy and macro-F1 on --eval-features after every epoch. Saves DIR/head.safetensors "
                 "(layers.<l>.weight/bias, PyTorch Linear layout) and DIR/head.json (config, labels, metrics).");
  args.required("features", "CACHE", "training feature cache (labelled)")
      .option("eval-features", "CACHE", "evaluation feature cache (labelled)")
      .option("output", "DIR", "where to save the head")
      .option("hidden", "N,N,...", "hidden layer widths; empty for a linear probe", "256,128")
      .option("activation", "relu|gelu", "hidden activation", "relu")
      .option("dropout", "P", "dropout after each hidden activation", "0.1")
      .option("epochs", "N", "passes over the training cache", "20")
      .option("batch-size", "N", "rows per step", "64")
      .option("lr", "LR", "peak AdamW learning rate", "1e-3")
      .option("weight-decay", "WD", "AdamW weight decay (weights only)", "0.01")
      .option("schedule", "NAME", "constant, linear, cosine, ...", "linear")
      .option("warmup-ratio", "R", "fraction of the steps spent warming up", "0")
      .option("seed", "N", "initialisation, data order and dropout", "0")
      .option("threads", "N", "OpenMP threads (default: all cores)");
  if (!args.parse(arguments)) return 0;
  if (args.given("threads")) set_num_threads(static_cast<int>(args.get_int("threads", 1)));
  train::MlpHeadConfig config;
  config.hidden = parse_flag(args, "hidden", [](const std::string& text) { return train::parse_hidden_sizes(text); });
  config.activation =
      parse_flag(args, "activation", [](const std::string& text) { return train::parse_head_activation(text); });
  config.dropout = static_cast<float>(get_double(args, "dropout", 0.0, 0.99));
  train::HeadTrainingOptions options;
  options.epochs = args.get_int("epochs", 1);
  options.batch_size = args.get_int("batch-size", 1);
  options.learning_rate = get_double(args, "lr", 0.0, 10.0);
  options.weight_decay = get_double(args, "weight-decay", 0.0, 10.0);
  options.schedule = parse_flag(args, "schedule", [](const std::string& text) { return train::parse_schedule_kind(text); });
  options.warmup_ratio = get_double(args, "warmup-ratio", 0.0, 1.0);
  options.seed = static_cast<uint64_t>(args.get_int("seed", 0));

  const train::FeatureCache train_cache = train::load_feature_cache(args.get("features"));
  check(train_cache.labelled(), args.get("features"), ": the training cache has no labels");
  std::unique_ptr<train::FeatureCache> eval_cache;
  if (args.given("eval-features")) {
    eval_cache = std::make_unique<train::FeatureCache>(train::load_feature_cache(args.get("eval-features")));
    check(eval_cache->hidden() == train_cache.hidden(), args.get("eval-features"), ": features have width ",
          eval_cache->hidden(), " but the training cache has ", train_cache.hidden());
    if (eval_cache->model != train_cache.model || eval_cache->pooling != train_cache.pooling) {
      std::fprintf(stderr, "train-head: warning: evaluation features come from %s/%s, training features from %s/%s\n",
                   eval_cache->model.c_str(), eval_cache->pooling.c_str(), train_cache.model.c_str(),
                   train_cache.pooling.c_str());
    }
    train::align_labels(*eval_cache, train_cache.label_names);
  }
  config.input_size = train_cache.hidden();
  config.num_classes = static_cast<int64_t>(train_cache.label_names.size());
  train::MlpHead head(config, options.seed);

  nlohmann::json history = nlohmann::json::array();
  double training_seconds = 0.0;
  const std::vector<train::EpochReport> reports = train::train_head(
      head, train_cache, eval_cache.get(), options, [&](const train::EpochReport& report) {
        training_seconds += report.seconds;
        nlohmann::json entry{{"epoch", report.epoch}, {"train_loss", report.train_loss}, {"seconds", report.seconds}};
        std::string line = str_cat("epoch ", report.epoch, "/", options.epochs, "  loss ", report.train_loss);
        if (report.evaluated) {
          entry["eval_loss"] = report.eval_loss;
          entry["accuracy"] = report.eval.accuracy;
          entry["macro_f1"] = report.eval.macro_f1;
          line += str_cat("  eval loss ", report.eval_loss, "  accuracy ", report.eval.accuracy, "  macro-F1 ",
                          report.eval.macro_f1);
        }
        line += str_cat("  (", report.seconds, " s)");
        std::fprintf(stderr, "%s\n", line.c_str());
        history.push_back(entry);
      });
  std::fprintf(stderr, "train-head: %lld epochs of %lld rows in %.2f s of training\n",
               static_cast<long long>(options.epochs), static_cast<long long>(train_cache.count()), training_seconds);
  if (!reports.empty() && reports.back().evaluated) {
    const train::ClassificationReport& last = reports.back().eval;
    std::printf("{\"accuracy\": %.6f, \"macro_f1\": %.6f, \"eval_examples\": %lld, \"training_seconds\": %.3f}\n",
                last.accuracy, last.macro_f1, static_cast<long long>(last.examples), training_seconds);
  }
  if (args.given("output")) {
    head.save(args.get("output"), {{"labels", train_cache.label_names},
                                   {"model", train_cache.model},
                                   {"pooling", train_cache.pooling},
                                   {"max_length", train_cache.max_length},
                                   {"training",
                                    {{"features", args.get("features")},
                                     {"epochs", options.epochs},
                                     {"batch_size", options.batch_size},
                                     {"learning_rate", options.learning_rate},
                                     {"weight_decay", options.weight_decay},
                                     {"schedule", std::string(train::schedule_kind_name(options.schedule))},
                                     {"seed", options.seed}}},
                                   {"history", history}});
    std::fprintf(stderr, "train-head: saved %s/head.safetensors and head.json\n", args.get("output").c_str());
  }
  return 0;
}

}  // namespace scalebert::cli
