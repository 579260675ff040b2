// Converters from the shared financial datasets to the training formats this folder reads:
// tweets CSV -> classification CSV, SEC-filings NER -> seeded document-level CoNLL splits,
// TAT-QA -> SQuAD JSON with verbatim span answers, earnings-call .nlp -> raw text for masked LM
// with whole calls held out. Each returns counts for the command to print.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace scalebert::train::data {

struct ConversionReport {
  std::vector<std::pair<std::string, int64_t>> counts;  // ("train.sentences", 931), ...
  std::vector<std::filesystem::path> outputs;           // files written
  int64_t count(const std::string& name) const;         // -1 when absent
  std::string summary() const;                          // one "name: value" per line, then the files
};

// Indices of the items of [0, n) chosen for the held-out split: round(n * fraction) of them (at
// least 1 when n >= 2 and fraction > 0, never all n), from a permutation seeded by `seed`; sorted.
std::vector<int64_t> held_out_indices(int64_t n, double fraction, uint64_t seed);

// One CSV field, quoted (with doubled quotes) when it holds a comma, a quote or a line break.
std::string csv_field(std::string_view text);

// The tweets' sent_train.csv / sent_valid.csv (header text,label; labels 0/1/2) to
// <out>/train.csv and <out>/valid.csv with header text,label and the dataset card's label names
// (Bearish, Bullish, Neutral) unless `keep_integer_labels`. FormatError naming file and line for
// any other label.
ConversionReport convert_tweets(const std::filesystem::path& train_csv, const std::filesystem::path& valid_csv,
                                const std::filesystem::path& out_dir, bool keep_integer_labels = false);

// The SEC-filings CoNLL file (IO tags) to <out>/train.conll and <out>/dev.conll ("token tag"
// lines, -DOCSTART- per document), whole documents held out by held_out_indices.
ConversionReport convert_sec_ner(const std::filesystem::path& conll, const std::filesystem::path& out_dir,
                                 uint64_t seed, double dev_fraction = 0.2);

// TAT-QA JSON to <out>/train.json and <out>/dev.json in SQuAD v1.1 format. Context = the
// context's paragraphs in `order`, joined by "\n"; kept questions: answer_type "span" with a single
// answer string found verbatim in that context (answer_start = its first occurrence, in code
// points). Whole contexts are held out. Counts of skipped questions by reason are reported.
ConversionReport convert_tatqa(const std::filesystem::path& tatqa_json, const std::filesystem::path& out_dir,
                               uint64_t seed, double dev_fraction = 0.2);

// Earnings-call .nlp files (files, or folders searched recursively for *.nlp) to <out>/train.txt
// and <out>/eval.txt: one paragraph per speaker turn (prepunctuation + token + punctuation joined
// by spaces), one line each, a blank line between calls; whole calls held out for evaluation.
// FormatError "<file>:<line>" for a missing column or a row with the wrong number of fields.
ConversionReport convert_earnings(const std::vector<std::filesystem::path>& inputs,
                                  const std::filesystem::path& out_dir, uint64_t seed, double eval_fraction = 0.1);

// One call's paragraphs from .nlp text (exposed for tests).
std::vector<std::string> earnings_paragraphs(std::string_view nlp_text, const std::string& source);

}  // namespace scalebert::train::data
