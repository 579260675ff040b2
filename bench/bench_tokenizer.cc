// Single-thread throughput of the BERT tokenizer ([CLS] text [SEP], ids + offsets + word ids) on a
// file of texts, one per line; bench/bench_tokenizer_peer.py measures the `tokenizers` package on
// the same file and prints the ratio.
//
// Usage: bench_tokenizer LINES_FILE [--vocab VOCAB_TXT | --model-dir DIR] [--cased]
//                        [--min-seconds S] [--json]
// Default vocabulary: ../shared/data/bert_base_uncased_vocab/vocab.txt next to the repository.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "text/bert_tokenizer.h"

using namespace scalebert;
using Clock = std::chrono::steady_clock;

namespace {

struct Result {
  double texts_per_second;
  double megabytes_per_second;
  double tokens_per_text;
};

// Runs `pass` over all texts until min_seconds have passed (at least 3 passes).
template <typename Pass>
Result measure(const std::vector<std::string>& texts, size_t bytes, double min_seconds, Pass&& pass) {
  pass();  // warm caches and the per-thread scratch
  size_t passes = 0, tokens = 0;
  const Clock::time_point start = Clock::now();
  double elapsed = 0;
  while (passes < 3 || elapsed < min_seconds) {
    tokens += pass();
    ++passes;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  }
  const double count = static_cast<double>(passes * texts.size());
  return {count / elapsed, static_cast<double>(passes * bytes) / elapsed / 1e6,
          static_cast<double>(tokens) / count};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string lines_path, vocab_path, model_dir;
    double min_seconds = 2.0;
    bool cased = false, json = false;
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      auto value = [&]() -> std::string {
        check(i + 1 < argc, "option ", arg, " needs a value");
        return argv[++i];
      };
      if (arg == "--vocab") {
        vocab_path = value();
      } else if (arg == "--model-dir") {
        model_dir = value();
      } else if (arg == "--cased") {
        cased = true;
      } else if (arg == "--min-seconds") {
        min_seconds = std::stod(value());
      } else if (arg == "--json") {
        json = true;
      } else if (lines_path.empty() && !arg.starts_with("--")) {
        lines_path = arg;
      } else {
        throw InvalidArgument(str_cat("unknown argument '", arg, "'"));
      }
    }
    check(!lines_path.empty(), "usage: bench_tokenizer LINES_FILE [--vocab VOCAB_TXT | --model-dir DIR] [--cased] "
                               "[--min-seconds S] [--json]");
    if (vocab_path.empty() && model_dir.empty()) {
      // __FILE__ is absolute under CMake: <repo>/bench/bench_tokenizer.cc.
      vocab_path = (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "shared" / "data" /
                    "bert_base_uncased_vocab" / "vocab.txt")
                       .string();
    }
    std::unique_ptr<text::BertTokenizer> tokenizer;
    if (!model_dir.empty()) {
      tokenizer = text::BertTokenizer::from_model_dir(model_dir);
    } else {
      text::BertTokenizerOptions options;
      options.lowercase = !cased;
      tokenizer = text::BertTokenizer::from_vocab_file(vocab_path, options);
    }

    std::ifstream file(lines_path, std::ios::binary);
    if (!file) throw IoError(str_cat("cannot open ", lines_path));
    std::vector<std::string> texts;
    size_t bytes = 0;
    for (std::string line; std::getline(file, line);) {
      bytes += line.size();
      texts.push_back(std::move(line));
    }
    check(!texts.empty(), lines_path, " has no lines");

    // Hot path: one reused Encoding, no allocation once its buffers have grown.
    text::Encoding reused;
    const Result into = measure(texts, bytes, min_seconds, [&] {
      size_t tokens = 0;
      for (const std::string& line : texts) {
        tokenizer->encode_into(line, reused);
        tokens += reused.size();
      }
      return tokens;
    });
    // API path: a fresh Encoding per text, as encode() returns it.
    const Result fresh = measure(texts, bytes, min_seconds, [&] {
      size_t tokens = 0;
      for (const std::string& line : texts) tokens += tokenizer->encode(line).size();
      return tokens;
    });
    if (json) {
      std::printf("{\"texts\": %zu, \"bytes\": %zu, \"encode_into_texts_per_s\": %.1f, \"encode_into_mb_per_s\": %.3f, "
                  "\"encode_texts_per_s\": %.1f, \"encode_mb_per_s\": %.3f, \"tokens_per_text\": %.2f}\n",
                  texts.size(), bytes, into.texts_per_second, into.megabytes_per_second, fresh.texts_per_second,
                  fresh.megabytes_per_second, into.tokens_per_text);
    } else {
      std::printf("%zu texts, %.2f MB, %.1f tokens/text, 1 thread\n", texts.size(), bytes / 1e6, into.tokens_per_text);
      std::printf("scalebert encode_into (reused buffers): %10.0f texts/s  %7.2f MB/s\n", into.texts_per_second,
                  into.megabytes_per_second);
      std::printf("scalebert encode (fresh Encoding):      %10.0f texts/s  %7.2f MB/s\n", fresh.texts_per_second,
                  fresh.megabytes_per_second);
    }
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", error.what());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", error.what());
    return 1;
  }
}
