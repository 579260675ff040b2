// `scalebert data <tweets|sec-ner|tatqa|earnings|vocab>`: flag parsing around the library
// converters in train/data/converters.h and the WordPiece trainer; prints the counts.
#include "cli/cmd_data.h"

#include <cstdio>
#include <string_view>

#include "cli/args.h"
#include "train/data/converters.h"
#include "train/wordpiece_trainer.h"

namespace scalebert::cli {

namespace {

namespace fs = std::filesystem;
using train::data::ConversionReport;

const char* const kUsage =
    "usage: scalebert data <subcommand> [options]   (scalebert data <subcommand> --help)\n\n"
    "subcommands:\n"
    "  tweets     financial tweets CSV (text,label 0/1/2) -> train.csv / valid.csv with label names\n"
    "  sec-ner    SEC-filings NER CoNLL -> seeded document-level train.conll / dev.conll\n"
    "  tatqa      TAT-QA JSON -> SQuAD train.json / dev.json (verbatim span answers, seeded context split)\n"
    "  earnings   earnings-call .nlp files -> raw train.txt / eval.txt (whole calls held out)\n"
    "  vocab      build a WordPiece vocab.txt from raw text files\n";

double get_fraction(const ArgParser& args, const std::string& name) {
  const std::string text = args.get(name);
  size_t used = 0;
  double value = -1.0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(value >= 0.0 && value < 1.0)) {
    throw UsageError(str_cat("--", name, " expects a fraction in [0, 1), got '", text, "'"));
  }
  return value;
}

// Comma-separated paths.
std::vector<fs::path> get_paths(const ArgParser& args, const std::string& name) {
  std::vector<fs::path> paths;
  const std::string text = args.get(name);
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) paths.emplace_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (paths.empty()) throw UsageError(str_cat("--", name, " needs at least one path"));
  return paths;
}

int print_report(const ConversionReport& report) {
  std::fputs(report.summary().c_str(), stdout);
  return 0;
}

// Parses with `parser`; returns false after --help.
bool parse(ArgParser& parser, const std::vector<std::string>& args) {
  std::vector<std::string> copies(args.begin() + 1, args.end());
  std::vector<char*> pointers;
  for (std::string& arg : copies) pointers.push_back(arg.data());
  return parser.parse(std::span<char* const>(pointers.data(), pointers.size()));
}

}  // namespace

int run_data_command(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string& sub = args[0];
  if (sub == "tweets") {
    ArgParser parser("data tweets", "financial tweets CSV -> classification CSV files");
    parser.required("train", "CSV", "sent_train.csv")
        .required("valid", "CSV", "sent_valid.csv")
        .required("out", "DIR", "output folder (train.csv, valid.csv)")
        .flag("integer-labels", "keep labels as 0/1/2 instead of Bearish/Bullish/Neutral");
    if (!parse(parser, args)) return 0;
    return print_report(train::data::convert_tweets(parser.get("train"), parser.get("valid"), parser.get("out"),
                                                    parser.flag_set("integer-labels")));
  }
  if (sub == "sec-ner") {
    ArgParser parser("data sec-ner", "SEC-filings NER CoNLL -> document-level train/dev CoNLL files");
    parser.required("input", "FILE", "FIN5_train.txt (CoNLL, IO tags)")
        .required("out", "DIR", "output folder (train.conll, dev.conll)")
        .option("seed", "N", "seed of the document split", "13")
        .option("dev-fraction", "F", "fraction of documents held out", "0.2");
    if (!parse(parser, args)) return 0;
    return print_report(train::data::convert_sec_ner(parser.get("input"), parser.get("out"),
                                                     static_cast<uint64_t>(parser.get_int("seed", 0)),
                                                     get_fraction(parser, "dev-fraction")));
  }
  if (sub == "tatqa") {
    ArgParser parser("data tatqa", "TAT-QA JSON -> SQuAD-format span questions, split by context");
    parser.required("input", "FILE", "tatqa_dataset_dev.json")
        .required("out", "DIR", "output folder (train.json, dev.json)")
        .option("seed", "N", "seed of the context split", "13")
        .option("dev-fraction", "F", "fraction of contexts held out", "0.2");
    if (!parse(parser, args)) return 0;
    return print_report(train::data::convert_tatqa(parser.get("input"), parser.get("out"),
                                                   static_cast<uint64_t>(parser.get_int("seed", 0)),
                                                   get_fraction(parser, "dev-fraction")));
  }
  if (sub == "earnings") {
    ArgParser parser("data earnings", "earnings-call .nlp transcripts -> raw text for masked-LM pretraining");
    parser.required("input", "PATHS", "comma-separated .nlp files or folders (searched recursively)")
        .required("out", "DIR", "output folder (train.txt, eval.txt)")
        .option("seed", "N", "seed of the held-out calls", "13")
        .option("eval-fraction", "F", "fraction of calls held out for evaluation", "0.1");
    if (!parse(parser, args)) return 0;
    return print_report(train::data::convert_earnings(get_paths(parser, "input"), parser.get("out"),
                                                      static_cast<uint64_t>(parser.get_int("seed", 0)),
                                                      get_fraction(parser, "eval-fraction")));
  }
  if (sub == "vocab") {
    ArgParser parser("data vocab", "build a WordPiece vocabulary (BPE-style pair counts, as tokenizers' trainer)");
    parser.required("corpus", "FILES", "comma-separated raw text files")
        .required("out", "FILE", "vocab.txt to write")
        .option("vocab-size", "N", "tokens in the vocabulary, special tokens included", "30522")
        .option("min-frequency", "N", "minimum count of a pair to merge it", "2")
        .option("limit-alphabet", "N", "keep only the N most frequent characters (0 = all)", "1000")
        .flag("cased", "keep case and accents (default: uncased, as bert-base-uncased)");
    if (!parse(parser, args)) return 0;
    train::WordPieceTrainerOptions options;
    options.vocab_size = static_cast<size_t>(parser.get_int("vocab-size", 6));
    options.min_frequency = parser.get_int("min-frequency", 1);
    options.limit_alphabet = static_cast<size_t>(parser.get_int("limit-alphabet", 0));
    options.lowercase = options.strip_accents = !parser.flag_set("cased");
    train::WordPieceTrainer trainer(options);
    for (const fs::path& path : get_paths(parser, "corpus")) trainer.add_file(path);
    const std::vector<std::string> vocab = trainer.train();
    train::write_vocab(parser.get("out"), vocab);
    const train::WordPieceTrainerStats& stats = trainer.stats();
    std::printf("lines: %lld\nwords: %lld\nunique_words: %lld\nalphabet: %lld\nmerges: %lld\nvocab_size: %zu\nwrote %s\n",
                static_cast<long long>(stats.lines), static_cast<long long>(stats.words),
                static_cast<long long>(stats.unique_words), static_cast<long long>(stats.alphabet),
                static_cast<long long>(stats.merges), vocab.size(), parser.get("out").c_str());
    return 0;
  }
  throw UsageError(str_cat("unknown data subcommand '", sub, "'\n", kUsage));
}

}  // namespace scalebert::cli
