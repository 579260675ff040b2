// Fused BertNormalizer + BertPreTokenizer over UTF-8, matching the `tokenizers` package.
//
// The package's order is: split out special tokens (raw text), then per remaining segment
// clean_text (drop NUL/U+FFFD/controls, whitespace -> ' '), space out CJK ideographs, NFD and drop
// Mn (strip_accents), lowercase (Rust char::to_lowercase, which can lengthen: U+0130 -> "i\u0307"),
// then split on whitespace and isolate punctuation of the NORMALIZED text. Each step is per code
// point except NFD's canonical reordering, which stable-sorts runs of non-starters (ccc > 0) by
// ccc; that is emulated on the tail of the current word when a retained non-starter arrives.
// Offsets follow the package's alignment rules: every code point produced from an original code
// point (decomposition, lowercase expansion) maps to that original's byte span; reordered code
// points keep the spans of the positions they move into.
#include "text/basic_tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "text/unicode_tables.h"

namespace scalebert::text {

namespace uc = unicode;

class BasicTokenizer::Builder {
 public:
  Builder(const BasicTokenizerOptions& options, NormalizedWords& out) : options_(options), out_(out) {
    out_.clear();
    out_.char_byte.push_back(0);
  }

  uint32_t char_count() const { return static_cast<uint32_t>(out_.char_source.size()); }

  // One ASCII byte that survives normalization as a word character.
  void append_ascii(char mapped, uint32_t pos) {
    out_.text.push_back(mapped);
    out_.char_source.push_back({pos, pos + 1});
    out_.char_byte.push_back(static_cast<uint32_t>(out_.text.size()));
    run_start_ = char_count();
  }

  void finish_word() {
    const uint32_t end = char_count();
    if (end > word_first_char_) {
      out_.words.push_back({word_first_char_, end, -1,
                            {out_.char_source[word_first_char_].begin, out_.char_source[end - 1].end}});
    }
    word_first_char_ = end;
    run_start_ = end;
  }

  void special(int32_t id, Span source) {
    finish_word();
    out_.words.push_back({word_first_char_, word_first_char_, id, source});
  }

  // A non-ASCII original code point that clean_text kept and that is not whitespace.
  void code_point(char32_t code, uint16_t code_flags, Span source) {
    const bool chinese = options_.tokenize_chinese_chars && (code_flags & uc::kChinese);
    if (chinese) finish_word();
    if (options_.strip_accents && (code_flags & uc::kDecomp)) {
      char32_t hangul[3];
      std::span<const char32_t> parts;
      if (uc::is_hangul_syllable(code)) {
        parts = {hangul, static_cast<size_t>(uc::hangul_decompose(code, hangul))};
      } else {
        parts = uc::decomposition(code);
      }
      for (char32_t part : parts) stripped(part, source);
    } else {
      stripped(code, source);
    }
    if (chinese) finish_word();
  }

 private:
  // After NFD: drop nonspacing marks when stripping accents, then lowercase.
  void stripped(char32_t code, Span source) {
    const uint16_t code_flags = uc::flags(code);
    if (options_.strip_accents && (code_flags & uc::kMn)) {
      // A dropped starter still ends the reordering run it would have ended inside NFD.
      if (!(code_flags & uc::kCcc)) run_start_ = char_count();
      return;
    }
    if (options_.lowercase && (code_flags & uc::kLower)) {
      for (char32_t lower : uc::lowercase(code)) normalized(lower, source);
    } else {
      normalized(code, source);
    }
  }

  // A code point of the normalized text: the pre-tokenizer's view.
  void normalized(char32_t code, Span source) {
    const uint16_t code_flags = uc::flags(code);
    if (code_flags & uc::kWhite) {
      finish_word();
      return;
    }
    if (code_flags & uc::kPunct) {
      finish_word();
      append(code, source);
      finish_word();
      return;
    }
    append(code, source);
    if (options_.strip_accents && (code_flags & uc::kCcc)) {
      reorder_run();
    } else {
      run_start_ = char_count();
    }
  }

  void append(char32_t code, Span source) {
    append_utf8(code, out_.text);
    out_.char_source.push_back(source);
    out_.char_byte.push_back(static_cast<uint32_t>(out_.text.size()));
  }

  // Canonical reordering of the non-starter run [run_start_, char_count()): a stable sort by
  // combining class, done only when the newest char is out of order (rare: musical symbols and
  // marks the package's tables do not count as Mn).
  void reorder_run() {
    const uint32_t end = char_count();
    if (end - run_start_ < 2) return;
    const uint32_t byte_begin = out_.char_byte[run_start_];
    std::string_view tail = std::string_view(out_.text).substr(byte_begin);
    std::vector<std::pair<uint8_t, char32_t>> run;
    for (size_t pos = 0; pos < tail.size();) {
      const char32_t code = decode_utf8(tail, pos);
      run.emplace_back(uc::combining_class(code), code);
    }
    if (run[run.size() - 2].first <= run.back().first) return;
    std::stable_sort(run.begin(), run.end(),
                     [](const auto& left, const auto& right) { return left.first < right.first; });
    out_.text.resize(byte_begin);
    for (uint32_t i = 0; i < run.size(); ++i) {
      append_utf8(run[i].second, out_.text);
      out_.char_byte[run_start_ + i + 1] = static_cast<uint32_t>(out_.text.size());
    }
  }

  const BasicTokenizerOptions& options_;
  NormalizedWords& out_;
  uint32_t word_first_char_ = 0;
  uint32_t run_start_ = 0;  // first char of the current run of non-starters
};

BasicTokenizer::BasicTokenizer(BasicTokenizerOptions options, std::vector<SpecialToken> special_tokens)
    : options_(options), special_tokens_(std::move(special_tokens)) {
  for (const SpecialToken& token : special_tokens_) {
    check(!token.text.empty(), "special token with id ", token.id, " is empty");
    validate_utf8(token.text);
    special_first_byte_[static_cast<unsigned char>(token.text[0])] = true;
  }
  for (int byte = 0; byte < 128; ++byte) {
    const uint16_t byte_flags = uc::flags(static_cast<char32_t>(byte));
    char mapped = static_cast<char>(byte);
    if (options_.lowercase && (byte_flags & uc::kLower)) mapped = static_cast<char>(uc::lowercase(byte)[0]);
    ascii_mapped_[byte] = mapped;
    if (byte_flags & uc::kRemove) {
      ascii_action_[byte] = kDrop;
    } else if (byte_flags & (uc::kSpace | uc::kWhite)) {
      ascii_action_[byte] = kBoundary;
    } else if (byte_flags & uc::kPunct) {
      ascii_action_[byte] = kIsolate;
    } else {
      ascii_action_[byte] = kAppend;
    }
  }
}

const BasicTokenizer::SpecialToken* BasicTokenizer::match_special(std::string_view text, size_t pos) const {
  const SpecialToken* best = nullptr;
  for (const SpecialToken& token : special_tokens_) {
    if (text.compare(pos, token.text.size(), token.text) == 0 &&
        (best == nullptr || token.text.size() > best->text.size())) {
      best = &token;
    }
  }
  return best;
}

void BasicTokenizer::split(std::string_view text, NormalizedWords& out) const {
  check(text.size() < (size_t{1} << 32) - 1, "text of ", text.size(), " bytes is too long (limit 4 GiB)");
  Builder builder(options_, out);
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const unsigned char byte = bytes[pos];
    if (special_first_byte_[byte]) {
      if (const SpecialToken* special = match_special(text, pos)) {
        const auto begin = static_cast<uint32_t>(pos);
        pos += special->text.size();
        builder.special(special->id, {begin, static_cast<uint32_t>(pos)});
        continue;
      }
    }
    if (byte < 0x80) {
      switch (ascii_action_[byte]) {
        case kAppend:
          builder.append_ascii(ascii_mapped_[byte], static_cast<uint32_t>(pos));
          break;
        case kBoundary:
          builder.finish_word();
          break;
        case kIsolate:
          builder.finish_word();
          builder.append_ascii(ascii_mapped_[byte], static_cast<uint32_t>(pos));
          builder.finish_word();
          break;
        case kDrop:
          break;
      }
      ++pos;
      continue;
    }
    const size_t start = pos;
    const char32_t code = decode_utf8(text, pos);
    const uint16_t code_flags = uc::flags(code);
    if (code_flags & uc::kRemove) continue;
    if (code_flags & (uc::kSpace | uc::kWhite)) {
      builder.finish_word();
      continue;
    }
    builder.code_point(code, code_flags, {static_cast<uint32_t>(start), static_cast<uint32_t>(pos)});
  }
  builder.finish_word();
}

}  // namespace scalebert::text
