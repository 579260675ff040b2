// `scalebert classify`: sequence classification of text lines, TAB pairs or CSV rows, with label
// probabilities per input and, when the CSV carries gold labels, the accuracy.
#include <charconv>
#include <cstdio>

#include "cli/common.h"
#include "cli/progress.h"
#include "pipeline/input_file.h"
#include "train/metrics.h"

namespace scalebert::cli {

namespace {

// A gold label as the model's label index: its name, or an integer index (datasets often store
// 0..L-1). FormatError naming the file and line otherwise.
int64_t gold_label(const std::string& value, const std::vector<std::string>& labels, const std::string& source,
                   int64_t line) {
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == value) return static_cast<int64_t>(i);
  }
  int64_t index = -1;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), index);
  if (!value.empty() && error == std::errc() && end == value.data() + value.size() && index >= 0 &&
      index < static_cast<int64_t>(labels.size())) {
    return index;
  }
  std::string names;
  for (const std::string& label : labels) names += (names.empty() ? "" : ", ") + label;
  throw FormatError(str_cat(source, ":", line, ": gold label \"", value, "\" is neither one of the model's labels (",
                            names, ") nor an index below ", labels.size()));
}

}  // namespace

int run_classify(std::span<char* const> arguments) {
  ArgParser args("classify",
                 "Classify texts (or text pairs) with a sequence classification model. Input: text lines "
                 "(--pair: two texts per line separated by a TAB), or a CSV file with --text-column and "
                 "optionally --pair-column. Output, one JSON object per input in input order:\n"
                 "  {\"index\": 0, \"line\": 2, \"label\": \"positive\", \"probabilities\": {\"negative\": 0.1, ...}}\n"
                 "When the CSV has a label column (--label-column, or a column named \"label\"), the accuracy, "
                 "per-class precision / recall / F1, macro averages and the confusion matrix are printed to stderr; "
                 "gold labels are label names or indexes 0..L-1.");
  args.required("model", "DIR", "model folder with a sequence classification head")
      .required("input", "FILE", "text lines or CSV; - reads standard input")
      .option("output", "FILE", "JSONL output; - writes standard output", "-")
      .option("text-column", "NAME", "CSV column with the texts", "text")
      .option("pair-column", "NAME", "CSV column with the second texts of pairs")
      .option("label-column", "NAME", "CSV column with gold labels (default: \"label\" when present)")
      .flag("pair", "text lines hold two texts separated by a TAB")
      .flag("csv", "read the input as CSV whatever its name")
      .common_options();
  if (!args.parse(arguments)) return 0;
  const pipeline::PipelineOptions options = pipeline_options(args);  // flags checked before any file is read
  pipeline::InputOptions input_options;
  if (args.flag_set("csv")) input_options.csv = true;
  input_options.text_column = args.get("text-column");
  input_options.pair_column = args.get("pair-column");
  input_options.label_column = args.get("label-column");
  input_options.tab_pairs = args.flag_set("pair");
  const pipeline::InputSet inputs = pipeline::read_inputs(args.get("input"), input_options);

  auto pipeline = pipeline::TextPipeline::load(args.get("model"), options);
  check(pipeline->model().head == TaskHead::kSequenceClassification, "classify needs a model with a ",
        task_head_name(TaskHead::kSequenceClassification), " head, but ", args.get("model"), " has head ",
        task_head_name(pipeline->model().head));
  const std::vector<std::string>& labels = pipeline->labels();
  std::vector<int64_t> gold;
  if (inputs.has_labels) {
    for (const auto& record : inputs.records) gold.push_back(gold_label(record.label, labels, inputs.source, record.line));
  }

  ProgressBar progress("classify", static_cast<int64_t>(inputs.records.size()), args.flag_set("progress"));
  pipeline->set_progress([&](int64_t done, int64_t) { progress.update(done); });
  std::vector<pipeline::Classification> results;
  if (inputs.has_pairs) {
    std::vector<std::pair<std::string, std::string>> pairs;
    for (const auto& record : inputs.records) pairs.emplace_back(record.text, record.pair);
    results = pipeline->classify_pairs(pairs);
  } else {
    std::vector<std::string> texts;
    for (const auto& record : inputs.records) texts.push_back(record.text);
    results = pipeline->classify(texts);
  }
  progress.finish();

  Output out(args.get("output"));
  std::string line;
  int64_t correct = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const pipeline::Classification& result = results[i];
    line.clear();
    line += str_cat("{\"index\": ", i, ", \"line\": ", inputs.records[i].line,
                    ", \"label\": ", json_quote(labels[result.label]), ", \"probabilities\": {");
    for (size_t l = 0; l < labels.size(); ++l) {
      line += (l ? ", " : "") + json_quote(labels[l]) + ": ";
      append_float(line, result.probabilities[l]);
    }
    line += "}";
    if (inputs.has_labels) {
      line += ", \"gold\": " + json_quote(labels[gold[i]]);
      correct += gold[i] == result.label;
    }
    line += "}\n";
    out.write(line);
  }
  out.close();
  const pipeline::RunStats& stats = pipeline->last_stats();
  std::fprintf(stderr, "classified %zu inputs (%lld tokens) in %.2f s: %.1f inputs/s\n", results.size(),
               static_cast<long long>(stats.tokens), stats.seconds, static_cast<double>(results.size()) / stats.seconds);
  if (inputs.has_labels) {
    std::fprintf(stderr, "accuracy: %.4f (%lld of %zu correct)\n",
                 static_cast<double>(correct) / static_cast<double>(results.size()), static_cast<long long>(correct),
                 results.size());
    std::vector<int32_t> truth, predicted;
    for (size_t i = 0; i < results.size(); ++i) {
      truth.push_back(static_cast<int32_t>(gold[i]));
      predicted.push_back(static_cast<int32_t>(results[i].label));
    }
    const train::ClassificationReport report =
        train::classification_report(truth, predicted, static_cast<int32_t>(labels.size()));
    std::fprintf(stderr, "\n%s", train::format_classification_report(report, labels).c_str());
  }
  return 0;
}

}  // namespace scalebert::cli
