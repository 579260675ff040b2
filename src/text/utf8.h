// UTF-8 decoding and validation for the tokenizer, and conversion of byte offsets to the code
// point offsets that Hugging Face's Python API reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace scalebert::text {

// A half-open range [begin, end) into a text, in bytes or in code points depending on context.
struct Span {
  uint32_t begin = 0;
  uint32_t end = 0;
  friend bool operator==(const Span&, const Span&) = default;
};

// Decodes the code point starting at text[pos] and advances pos past it. Throws FormatError
// naming the byte position for a malformed sequence (bad lead byte, truncated sequence, bad
// continuation, overlong form, surrogate, or a value above U+10FFFF).
char32_t decode_utf8(std::string_view text, size_t& pos);

// Throws FormatError naming the byte position of the first malformed sequence, if any.
void validate_utf8(std::string_view text);

// Appends the UTF-8 encoding of a valid code point to `out`; returns the number of bytes.
int append_utf8(char32_t code, std::string& out);

// Byte length of the UTF-8 sequence that starts with `lead` (1 for continuation bytes).
inline int utf8_length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Converts byte offsets into `text` (valid UTF-8) to code point offsets, as Python strings
// index. Offsets must fall on code point boundaries or at text.size().
std::vector<Span> byte_to_codepoint_offsets(std::string_view text, std::span<const Span> byte_offsets);

}  // namespace scalebert::text
