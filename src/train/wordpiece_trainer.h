// Builds a WordPiece vocabulary (vocab.txt) from a raw-text corpus for users who have none, the way
// the `tokenizers` package's WordPieceTrainer does: BERT basic tokenization, word counts, an
// alphabet of single characters (word-initial and "##" continuation forms), then greedy merges of
// the most frequent adjacent symbol pair (BPE-style pair counting weighted by word frequency, not
// the likelihood score of Google's original WordPiece) until the vocabulary is full or no pair
// occurs min_frequency times. Special tokens come first.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace scalebert::train {

struct WordPieceTrainerOptions {
  size_t vocab_size = 30522;
  int64_t min_frequency = 2;  // a pair merges only if it occurs at least this often (tokenizers' default for BERT)
  size_t limit_alphabet = 0;  // keep only the most frequent characters (0: all), as limit_alphabet
  bool lowercase = true;      // basic tokenizer options (uncased BERT by default)
  bool strip_accents = true;
  bool tokenize_chinese_chars = true;
  std::vector<std::string> special_tokens{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  std::string continuing_prefix = "##";
  size_t max_word_chars = 100;  // longer words become [UNK] in WordPiece; they are not counted
};

struct WordPieceTrainerStats {
  int64_t words = 0;         // words counted (with repetition)
  int64_t unique_words = 0;
  int64_t alphabet = 0;      // single-character tokens (both forms)
  int64_t merges = 0;
  int64_t lines = 0;
};

class WordPieceTrainer {
 public:
  explicit WordPieceTrainer(WordPieceTrainerOptions options = {});

  // Counts the words of a text (any number of lines). FormatError naming `source` and the byte
  // position for invalid UTF-8.
  void add_text(std::string_view text, const std::string& source = "<text>");
  void add_file(const std::filesystem::path& path);

  // Runs the merges and returns the vocabulary in id order: special tokens, then the alphabet
  // (characters by code point, then "##" forms, by code point, of those that occur inside a word), then merged
  // tokens in merge order. Ties between equally frequent pairs go to the pair whose symbols were
  // created first (smaller ids), so the result is deterministic. InvalidArgument when nothing was
  // counted or vocab_size cannot hold the special tokens.
  std::vector<std::string> train();
  const WordPieceTrainerStats& stats() const { return stats_; }

 private:
  WordPieceTrainerOptions options_;
  std::unordered_map<std::string, int64_t> word_counts_;
  WordPieceTrainerStats stats_;
};

// Writes one token per line (LF, trailing newline) atomically.
void write_vocab(const std::filesystem::path& path, const std::vector<std::string>& tokens);

}  // namespace scalebert::train
