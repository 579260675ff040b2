// Greedy longest-match-first WordPiece over one normalized word, as the `tokenizers` WordPiece
// model does: pieces after the first are looked up as "##" continuations; a word longer than
// max_input_chars_per_word code points, or with any position no piece matches, is one [UNK].
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "text/vocab.h"

namespace scalebert::text {

struct WordPiece {
  int32_t id;
  uint32_t first_char;  // normalized chars [first_char, end_char) of the word
  uint32_t end_char;
};

class WordPieceModel {
 public:
  explicit WordPieceModel(const Vocab& vocab, size_t max_input_chars_per_word = 100)
      : vocab_(vocab), max_input_chars_per_word_(max_input_chars_per_word) {}

  // Appends the pieces of one word to `out`. `word` is the word's UTF-8 bytes and `char_byte`
  // ((chars + 1) entries) the byte offset of each of its code points inside `word`, plus the
  // end; `first_char` is added to the chars written to `out`.
  void tokenize(std::string_view word, const uint32_t* char_byte, uint32_t chars, uint32_t first_char,
                std::vector<WordPiece>& out) const;

  const Vocab& vocab() const { return vocab_; }

 private:
  const Vocab& vocab_;
  size_t max_input_chars_per_word_;
};

}  // namespace scalebert::text
