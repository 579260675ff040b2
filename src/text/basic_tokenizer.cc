// Fused BertNormalizer + BertPreTokenizer over UTF-8, matching the `tokenizers` package.
//
// The package's order is: split out special tokens (raw text), then per remaining segment
// clean_text (drop NUL/U+FFFD/controls, whitespace -> ' '), space out CJK ideographs, NFD and drop
// Mn (strip_accents), lowercase (Rust char::to_lowercase, which can lengthen: U+0130 -> "i\u0307"),
// then split on whitespace and isolate punctuation of the NORMALIZED text. Each step is per code
// point except NFD's canonical reordering, which stable-sorts runs of non-starters (ccc > 0) by
// ccc; runs are buffered until the next starter and sorted then (strip_accents only).
// Offsets follow the package's alignment rules: every code point produced from an original code
// point (decomposition, lowercase expansion) maps to that original's byte span; reordered code
// points take spans by position, as the package's NormalizedString::transform assigns them.
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

  // One ASCII byte that survives normalization as a word character (a starter: it ends any
  // pending run of combining marks first).
  void append_ascii(char mapped, uint32_t pos) {
    if (!pending_.empty()) flush_run();
    last_consumed_ = {pos, pos + 1};
    out_.text.push_back(mapped);
    out_.char_source.push_back(last_consumed_);
    out_.char_byte.push_back(static_cast<uint32_t>(out_.text.size()));
  }

  // An ASCII punctuation byte: its own word.
  void isolate_ascii(char mapped, uint32_t pos) {
    boundary();
    append_ascii(mapped, pos);
    finish_word();
  }

  // Whitespace, a special token or the end of a segment: closes the run and the word.
  void boundary() {
    if (!pending_.empty()) flush_run();
    finish_word();
  }

  void special(int32_t id, Span source) {
    boundary();
    out_.words.push_back({char_count(), char_count(), id, source});
    last_consumed_ = {source.end, source.end};
  }

  // A non-ASCII original code point that clean_text kept and that is not whitespace.
  void code_point(char32_t code, uint16_t code_flags, Span source) {
    const bool chinese = options_.tokenize_chinese_chars && (code_flags & uc::kChinese);
    if (chinese) boundary();
    if (!options_.strip_accents) {
      // No NFD: nothing reorders, every output code point maps to this one.
      emit(code, source);
    } else if (code_flags & uc::kDecomp) {
      char32_t hangul[3];
      std::span<const char32_t> parts;
      if (uc::is_hangul_syllable(code)) {
        parts = {hangul, static_cast<size_t>(uc::hangul_decompose(code, hangul))};
      } else {
        parts = uc::decomposition(code);
      }
      for (size_t i = 0; i < parts.size(); ++i) decomposed(parts[i], i > 0, source);
    } else {
      decomposed(code, false, source);
    }
    if (chinese) boundary();
  }

 private:
  // One code point of the NFD stream. `inserted`: not the first code point of its original's
  // decomposition (the package marks those as insertions, aligned to the previous original).
  void decomposed(char32_t code, bool inserted, Span source) {
    const uint8_t ccc = uc::combining_class(code);
    if (ccc == 0) {
      if (!pending_.empty()) flush_run();
      if (!inserted) last_consumed_ = source;
      emit(code, last_consumed_);
      return;
    }
    pending_.push_back({code, ccc, inserted});
    if (!inserted) pending_sources_.push_back(source);
  }

  // NFD's canonical reordering of the run of non-starters since the last starter: a stable sort
  // by combining class. The package then aligns by POSITION (its transform walks the old string
  // in step with the new one): the k-th non-inserted code point of the sorted run takes the span
  // of the k-th original of the run; an inserted one takes the span of the last original
  // consumed before it.
  void flush_run() {
    std::stable_sort(pending_.begin(), pending_.end(),
                     [](const Pending& left, const Pending& right) { return left.ccc < right.ccc; });
    size_t next_source = 0;
    for (const Pending& mark : pending_) {
      if (!mark.inserted) last_consumed_ = pending_sources_[next_source++];
      emit(mark.code, last_consumed_);
    }
    pending_.clear();
    pending_sources_.clear();
  }

  // After NFD: drop nonspacing marks when stripping accents, then lowercase.
  void emit(char32_t code, Span source) {
    const uint16_t code_flags = uc::flags(code);
    if (options_.strip_accents && (code_flags & uc::kMn)) return;
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
  }

  void append(char32_t code, Span source) {
    append_utf8(code, out_.text);
    out_.char_source.push_back(source);
    out_.char_byte.push_back(static_cast<uint32_t>(out_.text.size()));
  }

  void finish_word() {
    const uint32_t end = char_count();
    if (end > word_first_char_) {
      out_.words.push_back({word_first_char_, end, -1,
                            {out_.char_source[word_first_char_].begin, out_.char_source[end - 1].end}});
    }
    word_first_char_ = end;
  }

  struct Pending {
    char32_t code;
    uint8_t ccc;
    bool inserted;
  };

  const BasicTokenizerOptions& options_;
  NormalizedWords& out_;
  uint32_t word_first_char_ = 0;
  Span last_consumed_;                 // span of the last original code point NFD consumed
  std::vector<Pending> pending_;       // non-starters since the last starter (strip_accents only)
  std::vector<Span> pending_sources_;  // spans of the originals whose decomposition starts in the run
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
          builder.boundary();
          break;
        case kIsolate:
          builder.isolate_ascii(ascii_mapped_[byte], static_cast<uint32_t>(pos));
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
      builder.boundary();
      continue;
    }
    builder.code_point(code, code_flags, {static_cast<uint32_t>(start), static_cast<uint32_t>(pos)});
  }
  builder.boundary();
}

}  // namespace scalebert::text
