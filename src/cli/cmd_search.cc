// `scalebert search`: semantic search. Embeds a corpus and queries (mean pooling, L2-normalized,
// as sentence-transformers models are meant to be used), scores every query against every corpus
// text with one matrix product (cosine similarity) and prints each query's top-k neighbours.
#include <cstdio>

#include "cli/common.h"
#include "cli/progress.h"
#include "core/threads.h"
#include "pipeline/input_file.h"
#include "pipeline/similarity.h"

namespace scalebert::cli {

int run_search(std::span<char* const> arguments) {
  ArgParser args("search",
                 "Find the corpus texts closest in meaning to each query. Both are embedded with mean pooling "
                 "and L2 normalization; scores are cosine similarities. Corpus and queries are text lines or "
                 "CSV files (a .csv name; --text-column). When the corpus CSV has a label column "
                 "(--label-column, or a column named \"label\"), each hit shows its label.\n"
                 "--format jsonl prints per query: {\"query_index\": 0, \"line\": 1, \"query\": \"...\", "
                 "\"neighbours\": [{\"index\": 12, \"line\": 14, \"score\": 0.61, \"text\": \"...\", "
                 "\"label\": \"...\"}, ...]}");
  args.required("model", "DIR", "sentence embedding model folder (e.g. all-MiniLM-L6-v2)")
      .required("corpus", "FILE", "texts to search: text lines or CSV")
      .required("queries", "FILE", "queries: text lines or CSV; - reads standard input")
      .option("top-k", "K", "neighbours per query", "3")
      .option("text-column", "NAME", "CSV column with the texts (corpus and queries)", "text")
      .option("label-column", "NAME", "corpus CSV column shown beside each hit (default: \"label\" when present)")
      .option("format", "text|jsonl", "text for people, jsonl for programs", "text")
      .option("output", "FILE", "where results go; - writes standard output", "-")
      .common_options();
  if (!args.parse(arguments)) return 0;
  const pipeline::PipelineOptions options = pipeline_options(args);  // flags checked before any file is read
  const int64_t top_k = args.get_int("top-k", 1);
  const std::string format = args.get("format");
  if (format != "text" && format != "jsonl") {
    throw UsageError(str_cat("option --format expects text or jsonl, got '", format, "'"));
  }
  pipeline::InputOptions corpus_options;
  corpus_options.text_column = args.get("text-column");
  corpus_options.label_column = args.get("label-column");
  const pipeline::InputSet corpus = pipeline::read_inputs(args.get("corpus"), corpus_options);
  pipeline::InputOptions query_options;
  query_options.text_column = args.get("text-column");
  const pipeline::InputSet queries = pipeline::read_inputs(args.get("queries"), query_options);

  auto pipeline = pipeline::TextPipeline::load(args.get("model"), options);
  std::vector<std::string> corpus_texts, query_texts;
  for (const auto& record : corpus.records) corpus_texts.push_back(record.text);
  for (const auto& record : queries.records) query_texts.push_back(record.text);

  ProgressBar progress("corpus", static_cast<int64_t>(corpus_texts.size()), args.flag_set("progress"));
  pipeline->set_progress([&](int64_t done, int64_t) { progress.update(done); });
  const Tensor corpus_embeddings = pipeline->embed(corpus_texts, pipeline::Pooling::kMean, true);  // (S, C)
  progress.finish();
  pipeline->set_progress({});
  const pipeline::RunStats corpus_stats = pipeline->last_stats();
  const Tensor query_embeddings = pipeline->embed(query_texts, pipeline::Pooling::kMean, true);  // (Q, C)
  const Tensor scores = pipeline::similarity_matrix(query_embeddings, corpus_embeddings);        // (Q, S)

  const int64_t S = scores.dim(1);
  Output out(args.get("output"));
  for (size_t q = 0; q < query_texts.size(); ++q) {
    const auto neighbours = pipeline::top_k(scores.data<float>() + static_cast<int64_t>(q) * S, S, top_k);
    std::string text;
    if (format == "jsonl") {
      text += str_cat("{\"query_index\": ", q, ", \"line\": ", queries.records[q].line,
                      ", \"query\": ", json_quote(query_texts[q]), ", \"neighbours\": [");
      for (size_t k = 0; k < neighbours.size(); ++k) {
        const auto& record = corpus.records[neighbours[k].index];
        text += str_cat(k ? ", " : "", "{\"index\": ", neighbours[k].index, ", \"line\": ", record.line,
                        ", \"score\": ");
        append_float(text, neighbours[k].score);
        text += ", \"text\": " + json_quote(record.text);
        if (corpus.has_labels) text += ", \"label\": " + json_quote(record.label);
        text += "}";
      }
      text += "]}\n";
    } else {
      text += str_cat(q ? "\n" : "", "query ", q + 1, ": ", one_line(query_texts[q]), "\n");
      for (size_t k = 0; k < neighbours.size(); ++k) {
        const auto& record = corpus.records[neighbours[k].index];
        char score[32];
        std::snprintf(score, sizeof score, "%.4f", static_cast<double>(neighbours[k].score));
        text += str_cat("  ", k + 1, ". ", score, "  ");
        if (corpus.has_labels) {
          char label[48];
          std::snprintf(label, sizeof label, "%-9s ", one_line(record.label).c_str());
          text += label;
        }
        text += one_line(record.text) + "\n";
      }
    }
    out.write(text);
  }
  out.close();
  // After the results, so that a terminal shows them in this order.
  std::fprintf(stderr,
               "embedded %zu corpus texts (%lld tokens) in %.2f s: %.1f sentences/s, %.0f tokens/s [%d threads]; "
               "%zu queries\n",
               corpus_texts.size(), static_cast<long long>(corpus_stats.tokens), corpus_stats.seconds,
               static_cast<double>(corpus_texts.size()) / corpus_stats.seconds,
               static_cast<double>(corpus_stats.tokens) / corpus_stats.seconds, num_threads(), query_texts.size());
  return 0;
}

}  // namespace scalebert::cli
