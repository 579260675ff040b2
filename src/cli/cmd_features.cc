// `scalebert features`: frozen-encoder features of a dataset, computed once and cached on disk.
#include <chrono>
#include <cstdio>

#include "cli/common.h"
#include "cli/progress.h"
#include "train/features.h"

namespace scalebert::cli {

int run_features(std::span<char* const> arguments) {
  ArgParser args("features",
                 "Run every text of a dataset once through the encoder (inference plan, no activations kept) and "
                 "cache one pooled vector per row: a safetensors file with tensors features (S, C) F32 and labels "
                 "(S) I32, and metadata model, pooling, count, labels. `scalebert train-head` trains an MLP on it.");
  args.required("model", "DIR", "model folder (e.g. all-MiniLM-L6-v2)")
      .required("input", "FILE", ".csv, .tsv or .jsonl with text (and label) columns, or .txt lines (unlabelled)")
      .required("output", "CACHE", "feature cache to write (.safetensors)")
      .option("pooling", "cls|mean|pooler",
              "cls: [CLS] hidden state; mean: mean over the tokens; pooler: BERT's tanh pooler "
              "(default: what a sentence-transformers folder declares, else mean)")
      .option("text-column", "NAME", "column with the texts", "text")
      .option("pair-column", "NAME", "column with second texts, for sentence pairs")
      .option("label-column", "NAME", "column with the labels; 'none' for an unlabelled table", "label")
      .common_options();
  if (!args.parse(arguments)) return 0;
  const pipeline::PipelineOptions options = pipeline_options(args);
  train::data::ClassificationColumns columns;
  columns.text = args.get("text-column");
  columns.pair = args.get("pair-column");
  columns.label = args.get("label-column");
  const bool labelled = columns.label != "none";

  const auto start = std::chrono::steady_clock::now();
  const train::FeatureInput input = train::read_feature_input(args.get("input"), columns, labelled);
  auto pipeline = pipeline::TextPipeline::load(args.get("model"), options);
  train::FeaturePooling pooling = train::FeaturePooling::kMean;
  if (args.given("pooling")) {
    try {
      pooling = train::parse_feature_pooling(args.get("pooling"));
    } catch (const InvalidArgument& error) {
      throw UsageError(str_cat("option --pooling: ", error.what()));
    }
  } else if (pipeline->declared_pooling() == pipeline::Pooling::kCls) {
    pooling = train::FeaturePooling::kCls;
  }

  ProgressBar progress("features", static_cast<int64_t>(input.texts.size()), args.flag_set("progress"));
  pipeline->set_progress([&](int64_t done, int64_t) { progress.update(done); });
  const auto encode_start = std::chrono::steady_clock::now();
  train::FeatureCache cache;
  cache.features = train::compute_features(*pipeline, input.texts, input.pairs, pooling);
  progress.finish();
  const double encode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - encode_start).count();
  cache.labels = input.labels;
  cache.label_names = input.label_names;
  cache.model = args.get("model");
  cache.pooling = std::string(train::feature_pooling_name(pooling));
  cache.source = input.source;
  cache.max_length = pipeline->max_length();
  train::save_feature_cache(args.get("output"), cache);
  const double total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr,
               "features: %lld rows x %lld (%s pooling%s) -> %s; encoder %.1f s (%.0f texts/s), total %.1f s\n",
               static_cast<long long>(cache.count()), static_cast<long long>(cache.hidden()), cache.pooling.c_str(),
               cache.labelled() ? str_cat(", ", cache.label_names.size(), " labels").c_str() : ", unlabelled",
               args.get("output").c_str(), encode_seconds, static_cast<double>(cache.count()) / encode_seconds,
               total_seconds);
  return 0;
}

}  // namespace scalebert::cli
