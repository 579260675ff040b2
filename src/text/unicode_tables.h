// Per-code-point Unicode properties for the BERT tokenizer, as the `tokenizers` package sees them.
// The data lives in the generated unicode_tables.cc (scripts/gen_unicode_tables.py); this header
// declares it and gives the O(1) flag lookup and the binary-searched mappings.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

namespace scalebert::text::unicode {

// Flag bits of kBlocks (keep in sync with scripts/gen_unicode_tables.py).
enum Flag : uint16_t {
  kRemove = 1 << 0,   // BertNormalizer clean_text drops it (NUL, U+FFFD, control, format, private use)
  kSpace = 1 << 1,    // clean_text maps it to ' '
  kChinese = 1 << 2,  // handle_chinese_chars surrounds it with spaces
  kPunct = 1 << 3,    // BertPreTokenizer isolates it as its own word
  kWhite = 1 << 4,    // BertPreTokenizer splits on it and drops it
  kMn = 1 << 5,       // strip_accents drops it after NFD (nonspacing mark)
  kDecomp = 1 << 6,   // NFD changes it (kDecomposition, or the Hangul syllable algorithm)
  kLower = 1 << 7,    // lowercasing changes it (kLowercase; may map to more than one code point)
  kCcc = 1 << 8,      // nonzero canonical combining class (kCombiningClasses)
};

struct CodePointMapping {
  char32_t code;
  uint32_t pool_offset;  // into the matching *Pool array
  uint32_t length;       // code points
};
struct CombiningClass {
  char32_t code;
  uint8_t ccc;
};

extern const uint16_t kBlockIndex[0x110000 >> 8];
extern const uint16_t kBlocks[][256];
extern const CodePointMapping kDecomposition[];
extern const size_t kDecompositionCount;
extern const char32_t kDecompositionPool[];
extern const CodePointMapping kLowercase[];
extern const size_t kLowercaseCount;
extern const char32_t kLowercasePool[];
extern const CombiningClass kCombiningClasses[];
extern const size_t kCombiningClassesCount;

// Flags of a valid code point (< 0x110000).
inline uint16_t flags(char32_t code) { return kBlocks[kBlockIndex[code >> 8]][code & 0xFF]; }

namespace detail {
inline const CodePointMapping* find_mapping(const CodePointMapping* table, size_t count, char32_t code) {
  const CodePointMapping* end = table + count;
  const CodePointMapping* it = std::lower_bound(
      table, end, code, [](const CodePointMapping& row, char32_t key) { return row.code < key; });
  return (it != end && it->code == code) ? it : nullptr;
}
}  // namespace detail

// Full canonical decomposition of a code point with the kDecomp flag that is not a Hangul
// syllable; empty when there is none.
inline std::span<const char32_t> decomposition(char32_t code) {
  const CodePointMapping* row = detail::find_mapping(kDecomposition, kDecompositionCount, code);
  if (row == nullptr) return {};
  return {kDecompositionPool + row->pool_offset, row->length};
}

// Lowercase mapping (Rust char::to_lowercase) of a code point with the kLower flag.
inline std::span<const char32_t> lowercase(char32_t code) {
  const CodePointMapping* row = detail::find_mapping(kLowercase, kLowercaseCount, code);
  if (row == nullptr) return {};
  return {kLowercasePool + row->pool_offset, row->length};
}

// Canonical combining class; 0 for starters.
inline uint8_t combining_class(char32_t code) {
  if (!(flags(code) & kCcc)) return 0;
  const CombiningClass* end = kCombiningClasses + kCombiningClassesCount;
  const CombiningClass* it = std::lower_bound(
      kCombiningClasses, end, code, [](const CombiningClass& row, char32_t key) { return row.code < key; });
  return (it != end && it->code == code) ? it->ccc : 0;
}

// Hangul syllables decompose algorithmically (Unicode 3.12): L V [T].
constexpr char32_t kHangulBase = 0xAC00;
constexpr char32_t kHangulCount = 11172;
inline bool is_hangul_syllable(char32_t code) { return code - kHangulBase < kHangulCount; }
// Writes the 2 or 3 jamo of a Hangul syllable into `out`; returns how many.
inline int hangul_decompose(char32_t code, char32_t out[3]) {
  const char32_t index = code - kHangulBase;
  out[0] = 0x1100 + index / 588;
  out[1] = 0x1161 + (index % 588) / 28;
  const char32_t trail = index % 28;
  if (trail == 0) return 2;
  out[2] = 0x11A7 + trail;
  return 3;
}

}  // namespace scalebert::text::unicode
