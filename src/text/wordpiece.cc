// Greedy longest-match-first WordPiece.
#include "text/wordpiece.h"

namespace scalebert::text {

void WordPieceModel::tokenize(std::string_view word, const uint32_t* char_byte, uint32_t chars,
                              uint32_t first_char, std::vector<WordPiece>& out) const {
  const int32_t unk = vocab_.unk_id();
  if (chars > max_input_chars_per_word_) {
    out.push_back({unk, first_char, first_char + chars});
    return;
  }
  const size_t rollback = out.size();
  const size_t max_bytes = vocab_.max_token_bytes();
  const uint32_t base = char_byte[0];
  uint32_t start = 0;
  while (start < chars) {
    // Longest piece first; pieces longer than any vocabulary token cannot match, so the search
    // starts at the last code point boundary within max_bytes.
    uint32_t end = chars;
    const uint32_t start_byte = char_byte[start] - base;
    while (end > start && char_byte[end] - base - start_byte > max_bytes) --end;
    int32_t id = -1;
    for (; end > start; --end) {
      const std::string_view piece = word.substr(start_byte, char_byte[end] - base - start_byte);
      id = start == 0 ? vocab_.find(piece) : vocab_.find_continuation(piece);
      if (id >= 0) break;
    }
    if (id < 0) {
      out.resize(rollback);
      out.push_back({unk, first_char, first_char + chars});
      return;
    }
    out.push_back({id, first_char + start, first_char + end});
    start = end;
  }
}

}  // namespace scalebert::text
