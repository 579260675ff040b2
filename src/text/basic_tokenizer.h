// BERT's basic tokenizer, exactly as the `tokenizers` package runs it: special tokens are split
// out of the raw text first, then BertNormalizer (clean text, space out CJK ideographs, strip
// accents = NFD then drop Mn, lowercase) and BertPreTokenizer (split on whitespace, isolate
// punctuation). The passes are fused into one scan; every normalized code point remembers the
// byte span of the original code point it came from, so tokens map back to the original text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/utf8.h"

namespace scalebert::text {

struct BasicTokenizerOptions {
  bool lowercase = true;
  bool strip_accents = true;  // `tokenizers` default: strip_accents follows lowercase
  bool tokenize_chinese_chars = true;
};

// The words of one text. Normalized code points of all words are stored back to back.
struct NormalizedWords {
  struct Word {
    uint32_t first_char = 0;  // into char_byte / char_source
    uint32_t end_char = 0;    // one past the last char; == first_char for special tokens
    int32_t special_id = -1;  // >= 0: a special token found in the raw text (its vocabulary id)
    Span source;              // byte span in the original text (all chars of the word)
  };
  std::string text;               // normalized UTF-8 of every word, back to back
  std::vector<uint32_t> char_byte;  // (chars + 1) byte offset of each normalized char in `text`
  std::vector<Span> char_source;  // (chars) original byte span of each normalized char
  std::vector<Word> words;

  void clear() {
    text.clear();
    char_byte.clear();
    char_source.clear();
    words.clear();
  }
  std::string_view word_text(const Word& word) const {
    return std::string_view(text).substr(char_byte[word.first_char],
                                         char_byte[word.end_char] - char_byte[word.first_char]);
  }
};

class BasicTokenizer {
 public:
  struct SpecialToken {
    std::string text;
    int32_t id;
  };
  BasicTokenizer(BasicTokenizerOptions options, std::vector<SpecialToken> special_tokens);

  // Splits `text` into words, replacing `out`'s contents (its buffers are reused). Throws
  // FormatError naming the byte position when `text` is not valid UTF-8.
  void split(std::string_view text, NormalizedWords& out) const;

  const BasicTokenizerOptions& options() const { return options_; }

 private:
  class Builder;

  // Longest special token matching text at pos (leftmost-longest, like the package's
  // Aho-Corasick over the raw text), or nullptr.
  const SpecialToken* match_special(std::string_view text, size_t pos) const;

  BasicTokenizerOptions options_;
  std::vector<SpecialToken> special_tokens_;
  bool special_first_byte_[256] = {};
  // ASCII fast path, built from the Unicode tables for the options: what each byte becomes.
  enum AsciiAction : uint8_t { kAppend, kBoundary, kIsolate, kDrop };
  AsciiAction ascii_action_[128];
  char ascii_mapped_[128];
};

}  // namespace scalebert::text
