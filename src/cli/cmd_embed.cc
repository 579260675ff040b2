// `scalebert embed`: sentence embeddings of text lines or a CSV column, one JSON object per input.
#include <cstdio>

#include "cli/common.h"
#include "cli/progress.h"
#include "core/threads.h"
#include "pipeline/input_file.h"

namespace scalebert::cli {

namespace {

// Pooling and normalization: the flags, else what a sentence-transformers folder declares, else
// mean pooling without normalization.
pipeline::Pooling choose_pooling(const ArgParser& args, const pipeline::TextPipeline& pipeline) {
  if (args.given("pooling")) {
    try {
      return pipeline::pooling_from_name(args.get("pooling"));
    } catch (const InvalidArgument& error) {
      throw UsageError(str_cat("option --pooling: ", error.what()));
    }
  }
  return pipeline.declared_pooling().value_or(pipeline::Pooling::kMean);
}

}  // namespace

int run_embed(std::span<char* const> arguments) {
  ArgParser args("embed",
                 "Embed texts into sentence vectors. Input: text lines, or a CSV file (a .csv name, or --csv) "
                 "whose --text-column is embedded. Output: one JSON object per input, in input order:\n"
                 "  {\"index\": 0, \"line\": 2, \"embedding\": [...]}\n"
                 "(line: where the input starts in the file). Defaults follow a sentence-transformers folder "
                 "(all-MiniLM-L6-v2: mean pooling, normalized); other models: mean pooling, not normalized.");
  args.required("model", "DIR", "model folder")
      .required("input", "FILE", "text lines or CSV; - reads standard input")
      .option("output", "FILE", "JSONL output; - writes standard output", "-")
      .option("pooling", "cls|mean", "cls: hidden state of [CLS]; mean: mean over the tokens")
      .flag("normalize", "L2-normalize every embedding")
      .flag("no-normalize", "do not normalize, even when the model folder declares it")
      .option("text-column", "NAME", "CSV column with the texts", "text")
      .flag("csv", "read the input as CSV whatever its name")
      .common_options();
  if (!args.parse(arguments)) return 0;
  const pipeline::PipelineOptions options = pipeline_options(args);  // flags checked before any file is read
  if (args.flag_set("normalize") && args.flag_set("no-normalize")) {
    throw UsageError("options --normalize and --no-normalize exclude each other");
  }
  pipeline::InputOptions input_options;
  if (args.flag_set("csv")) input_options.csv = true;
  input_options.text_column = args.get("text-column");
  const pipeline::InputSet inputs = pipeline::read_inputs(args.get("input"), input_options);

  auto pipeline = pipeline::TextPipeline::load(args.get("model"), options);
  const pipeline::Pooling pooling = choose_pooling(args, *pipeline);
  const bool normalize =
      args.flag_set("normalize") || (!args.flag_set("no-normalize") && pipeline->declared_normalize());

  std::vector<std::string> texts;
  texts.reserve(inputs.records.size());
  for (const auto& record : inputs.records) texts.push_back(record.text);
  ProgressBar progress("embed", static_cast<int64_t>(texts.size()), args.flag_set("progress"));
  pipeline->set_progress([&](int64_t done, int64_t) { progress.update(done); });
  const Tensor embeddings = pipeline->embed(texts, pooling, normalize);  // (S, C)
  progress.finish();
  const pipeline::RunStats stats = pipeline->last_stats();

  const int64_t C = embeddings.dim(1);
  const float* rows = embeddings.data<float>();
  Output out(args.get("output"));
  std::string line;
  for (size_t i = 0; i < texts.size(); ++i) {
    line.clear();
    line += str_cat("{\"index\": ", i, ", \"line\": ", inputs.records[i].line, ", \"embedding\": [");
    for (int64_t c = 0; c < C; ++c) {
      if (c) line += ", ";
      append_float(line, rows[static_cast<int64_t>(i) * C + c]);
    }
    line += "]}\n";
    out.write(line);
  }
  out.close();
  std::fprintf(stderr,
               "embedded %zu texts (%lld tokens) into %lld dimensions (%s pooling%s) in %.2f s: %.1f sentences/s, "
               "%.0f tokens/s [batch %lld, max length %lld, %d threads]\n",
               texts.size(), static_cast<long long>(stats.tokens), static_cast<long long>(C),
               std::string(pipeline::pooling_name(pooling)).c_str(), normalize ? ", normalized" : "", stats.seconds,
               static_cast<double>(texts.size()) / stats.seconds, static_cast<double>(stats.tokens) / stats.seconds,
               static_cast<long long>(pipeline->options().batch_size), static_cast<long long>(pipeline->max_length()),
               num_threads());
  return 0;
}

}  // namespace scalebert::cli
