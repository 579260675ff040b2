// UTF-8 decoding, validation, encoding and byte-to-code-point offset conversion.
#include "text/utf8.h"

#include <cstring>
#include <string>

#include "core/error.h"

namespace scalebert::text {

namespace {
[[noreturn]] void throw_malformed(size_t pos, const char* why, unsigned char byte) {
  throw FormatError(str_cat("invalid UTF-8 at byte ", pos, ": ", why, " (byte 0x", std::hex,
                            static_cast<int>(byte), ")"));
}
}  // namespace

char32_t decode_utf8(std::string_view text, size_t& pos) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const size_t start = pos;
  const unsigned char lead = bytes[pos];
  if (lead < 0x80) {
    ++pos;
    return lead;
  }
  int length;
  char32_t code;
  char32_t minimum;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, code = lead & 0x1F, minimum = 0x80;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, code = lead & 0x0F, minimum = 0x800;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, code = lead & 0x07, minimum = 0x10000;
  } else {
    throw_malformed(start, lead < 0xC0 ? "unexpected continuation byte" : "invalid lead byte", lead);
  }
  if (start + length > text.size()) throw_malformed(start, "truncated sequence", lead);
  for (int i = 1; i < length; ++i) {
    const unsigned char next = bytes[start + i];
    if ((next & 0xC0) != 0x80) throw_malformed(start + i, "expected a continuation byte", next);
    code = (code << 6) | (next & 0x3F);
  }
  if (code < minimum) throw_malformed(start, "overlong encoding", lead);
  if (code >= 0xD800 && code <= 0xDFFF) throw_malformed(start, "encoded surrogate", lead);
  if (code > 0x10FFFF) throw_malformed(start, "code point above U+10FFFF", lead);
  pos = start + length;
  return code;
}

void validate_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // ASCII runs are the common case: skip 8 bytes at a time while no high bit is set.
    while (pos + 8 <= text.size()) {
      uint64_t chunk;
      std::memcpy(&chunk, text.data() + pos, 8);
      if (chunk & 0x8080808080808080ULL) break;
      pos += 8;
    }
    if (pos >= text.size()) break;
    decode_utf8(text, pos);
  }
}

int append_utf8(char32_t code, std::string& out) {
  if (code < 0x80) {
    out.push_back(static_cast<char>(code));
    return 1;
  }
  if (code < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code >> 6)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    return 2;
  }
  if (code < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    return 3;
  }
  out.push_back(static_cast<char>(0xF0 | (code >> 18)));
  out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
  out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
  out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  return 4;
}

std::vector<Span> byte_to_codepoint_offsets(std::string_view text, std::span<const Span> byte_offsets) {
  // codepoint_at[b] = number of code points that start before byte b, for b in [0, size].
  std::vector<uint32_t> codepoint_at(text.size() + 1);
  uint32_t count = 0;
  for (size_t b = 0; b < text.size(); ++b) {
    codepoint_at[b] = count;
    if ((static_cast<unsigned char>(text[b]) & 0xC0) != 0x80) ++count;
  }
  codepoint_at[text.size()] = count;
  std::vector<Span> result;
  result.reserve(byte_offsets.size());
  for (const Span& span : byte_offsets) {
    check(span.begin <= span.end && span.end <= text.size(), "byte offsets [", span.begin, ", ",
          span.end, ") outside a text of ", text.size(), " bytes");
    // A begin inside a sequence maps to that code point; an end inside one counts it.
    uint32_t end = codepoint_at[span.end];
    if (span.end < text.size() && (static_cast<unsigned char>(text[span.end]) & 0xC0) == 0x80) ++end;
    result.push_back({codepoint_at[span.begin], end});
  }
  return result;
}

}  // namespace scalebert::text
