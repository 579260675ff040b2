// BertTokenizer: templates, truncation windows, padding and batches with `tokenizers` semantics.
#include "text/bert_tokenizer.h"

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace scalebert::text {

namespace {

// Per-thread scratch for the hot path: reused across calls so encoding allocates only when a
// text is longer than every text this thread has seen.
struct Scratch {
  NormalizedWords words;
  std::vector<WordPiece> pieces;
};
Scratch& scratch() {
  thread_local Scratch instance;
  return instance;
}

struct Range {
  size_t begin;
  size_t end;
};

// Encoding::truncate of the package: windows of max_len tokens, each starting max_len - stride
// after the previous one, the last one ending at the sequence end. max_len == 0 leaves an empty
// main part and the whole sequence as the one overflow.
std::vector<Range> windows(size_t length, size_t max_len, size_t stride) {
  if (max_len >= length) return {{0, length}};
  if (max_len == 0) return {{0, 0}, {0, length}};
  check(stride < max_len, "truncation stride ", stride, " must be smaller than the window of ", max_len,
        " tokens (max_length minus the added [CLS]/[SEP] and, for only_second, the first text)");
  std::vector<Range> result;
  const size_t step = max_len - stride;
  for (size_t start = 0;; start += step) {
    const size_t stop = std::min(start + max_len, length);
    result.push_back({start, stop});
    if (stop == length) break;
  }
  return result;
}

void append_added(Encoding& out, int32_t id, int32_t type_id) {
  out.ids.push_back(id);
  out.type_ids.push_back(type_id);
  out.offsets.push_back({0, 0});
  out.sequence_ids.push_back(-1);
  out.word_ids.push_back(-1);
  out.attention_mask.push_back(1);
  out.special_tokens_mask.push_back(1);
}

void append_slice(Encoding& out, const Encoding& sequence, Range range, int8_t sequence_id, int32_t type_id) {
  for (size_t i = range.begin; i < range.end; ++i) {
    out.ids.push_back(sequence.ids[i]);
    out.type_ids.push_back(type_id);
    out.offsets.push_back(sequence.offsets[i]);
    out.sequence_ids.push_back(sequence_id);
    out.word_ids.push_back(sequence.word_ids[i]);
    out.attention_mask.push_back(1);
    out.special_tokens_mask.push_back(0);
  }
}

std::string read_token_field(const nlohmann::json& config, const char* key, const std::string& fallback,
                             const std::filesystem::path& path) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  const nlohmann::json& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  throw FormatError(str_cat(path.string(), ": field '", key, "' must be a string or {\"content\": string}, got ",
                            value.dump()));
}

}  // namespace

void Encoding::clear() {
  ids.clear();
  type_ids.clear();
  offsets.clear();
  sequence_ids.clear();
  word_ids.clear();
  attention_mask.clear();
  special_tokens_mask.clear();
}

namespace {
std::vector<BasicTokenizer::SpecialToken> special_tokens_of(const Vocab& vocab, const BertTokenizerOptions& options) {
  // The package adds these as special tokens (matched in the raw text, never split) when they are
  // in the vocabulary.
  std::vector<BasicTokenizer::SpecialToken> specials;
  for (const std::string* token : {&options.pad_token, &options.unk_token, &options.cls_token, &options.sep_token,
                                   &options.mask_token}) {
    const int32_t id = vocab.find(*token);
    if (id >= 0 && !token->empty()) specials.push_back({*token, id});
  }
  return specials;
}

BasicTokenizerOptions basic_options_of(const BertTokenizerOptions& options) {
  return {options.lowercase, options.strip_accents.value_or(options.lowercase), options.tokenize_chinese_chars};
}

int32_t required_id(const Vocab& vocab, const std::string& token, const char* role) {
  const int32_t id = vocab.find(token);
  if (id < 0) throw FormatError(str_cat("vocabulary ", vocab.origin(), " has no ", role, " token '", token, "'"));
  return id;
}
}  // namespace

BertTokenizer::BertTokenizer(Vocab vocab, BertTokenizerOptions options)
    : vocab_(std::move(vocab)),
      options_(std::move(options)),
      cls_id_(required_id(vocab_, options_.cls_token, "cls")),
      sep_id_(required_id(vocab_, options_.sep_token, "sep")),
      pad_id_(vocab_.find(options_.pad_token)),
      basic_(basic_options_of(options_), special_tokens_of(vocab_, options_)),
      wordpiece_(vocab_, options_.max_input_chars_per_word) {
  required_id(vocab_, options_.unk_token, "unk");
  // WordPiece's [UNK] is the vocabulary's "[UNK]"; a renamed unk token is honoured too.
}

std::unique_ptr<BertTokenizer> BertTokenizer::from_vocab_file(const std::filesystem::path& vocab_path,
                                                              BertTokenizerOptions options) {
  return std::make_unique<BertTokenizer>(Vocab::load(vocab_path), std::move(options));
}

std::unique_ptr<BertTokenizer> BertTokenizer::from_model_dir(const std::filesystem::path& dir) {
  BertTokenizerOptions options;
  const std::filesystem::path config_path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    std::ifstream file(config_path);
    if (!file) throw IoError(str_cat("cannot open ", config_path.string()));
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(file);
    } catch (const nlohmann::json::exception& error) {
      throw FormatError(str_cat(config_path.string(), ": invalid JSON: ", error.what()));
    }
    check<FormatError>(config.is_object(), config_path.string(), ": expected a JSON object");
    auto read_bool = [&](const char* key, bool fallback) {
      if (!config.contains(key) || config[key].is_null()) return fallback;
      check<FormatError>(config[key].is_boolean(), config_path.string(), ": field '", key,
                         "' must be a boolean, got ", config[key].dump());
      return config[key].get<bool>();
    };
    options.lowercase = read_bool("do_lower_case", true);
    if (config.contains("strip_accents") && !config["strip_accents"].is_null()) {
      options.strip_accents = read_bool("strip_accents", true);
    }
    options.tokenize_chinese_chars = read_bool("tokenize_chinese_chars", true);
    if (config.contains("model_max_length") && !config["model_max_length"].is_null()) {
      const nlohmann::json& value = config["model_max_length"];
      check<FormatError>(value.is_number(), config_path.string(), ": field 'model_max_length' must be a number, got ",
                         value.dump());
      // transformers writes 1e30 ("VERY_LARGE_INTEGER") for "no limit".
      const double length = value.get<double>();
      if (length > 0 && length < 1e15) options.model_max_length = static_cast<int64_t>(length);
    }
    options.unk_token = read_token_field(config, "unk_token", options.unk_token, config_path);
    options.sep_token = read_token_field(config, "sep_token", options.sep_token, config_path);
    options.cls_token = read_token_field(config, "cls_token", options.cls_token, config_path);
    options.pad_token = read_token_field(config, "pad_token", options.pad_token, config_path);
    options.mask_token = read_token_field(config, "mask_token", options.mask_token, config_path);
  }
  return from_vocab_file(dir / "vocab.txt", std::move(options));
}

void BertTokenizer::append_sequence(std::string_view text, int8_t sequence_id, int32_t type_id, Encoding& out) const {
  Scratch& local = scratch();
  NormalizedWords& words = local.words;
  basic_.split(text, words);
  std::vector<WordPiece>& pieces = local.pieces;
  const size_t expected = out.ids.size() + words.text.size() + words.words.size();
  out.ids.reserve(expected);
  out.offsets.reserve(expected);
  out.word_ids.reserve(expected);
  int32_t word_index = 0;
  for (const NormalizedWords::Word& word : words.words) {
    if (word.special_id >= 0) {
      out.ids.push_back(word.special_id);
      out.offsets.push_back(word.source);
      out.word_ids.push_back(word_index++);
      continue;
    }
    pieces.clear();
    const uint32_t chars = word.end_char - word.first_char;
    wordpiece_.tokenize(words.word_text(word), words.char_byte.data() + word.first_char, chars, word.first_char,
                        pieces);
    for (const WordPiece& piece : pieces) {
      out.ids.push_back(piece.id);
      // The package's convert_offsets: first char's begin to last char's end.
      out.offsets.push_back({words.char_source[piece.first_char].begin, words.char_source[piece.end_char - 1].end});
      out.word_ids.push_back(word_index);
    }
    ++word_index;
  }
  const size_t size = out.ids.size();
  out.type_ids.resize(size, type_id);
  out.sequence_ids.resize(size, sequence_id);
  out.attention_mask.resize(size, 1);
  out.special_tokens_mask.resize(size, 0);
}

void BertTokenizer::tokenize(std::string_view text, Encoding& out) const { append_sequence(text, 0, 0, out); }

void BertTokenizer::encode_into(std::string_view text, Encoding& out) const {
  out.clear();
  append_added(out, cls_id_, 0);
  append_sequence(text, 0, 0, out);
  append_added(out, sep_id_, 0);
}

Encoding BertTokenizer::encode(std::string_view text, const Truncation& truncation) const {
  if (truncation.max_length == 0) {
    Encoding out;
    encode_into(text, out);
    return out;
  }
  return std::move(encode_with_overflow(text, std::nullopt, truncation).front());
}

Encoding BertTokenizer::encode_pair(std::string_view first, std::string_view second,
                                    const Truncation& truncation) const {
  return std::move(encode_with_overflow(first, second, truncation).front());
}

std::vector<Encoding> BertTokenizer::encode_with_overflow(std::string_view first,
                                                          std::optional<std::string_view> second,
                                                          const Truncation& truncation) const {
  Encoding a, b;
  append_sequence(first, 0, 0, a);
  if (second) append_sequence(*second, 1, 1, b);
  const size_t length_a = a.size();
  const size_t length_b = b.size();
  std::vector<Range> windows_a{{0, length_a}};
  std::vector<Range> windows_b{{0, length_b}};

  if (truncation.max_length > 0) {
    // The package truncates to max_length minus the tokens the template adds.
    const size_t added = second ? 3 : 2;
    check(truncation.max_length >= added, "truncation max_length ", truncation.max_length,
          " is smaller than the ", added, " [CLS]/[SEP] tokens added to ", second ? "a pair" : "one text");
    const size_t limit = truncation.max_length - added;
    const size_t total = length_a + length_b;
    if (limit == 0) {
      // The package's special case: a zero budget empties both texts, whatever the strategy;
      // each whole text becomes one overflowing window.
      windows_a = windows(length_a, 0, truncation.stride);
      if (second) windows_b = windows(length_b, 0, truncation.stride);
    } else if (total > limit) {
      const size_t to_remove = total - limit;
      switch (truncation.strategy) {
        case TruncationStrategy::kLongestFirst:
          if (second) {
            // Keep the shorter one whole when the longer one can absorb the cut; else split the
            // budget evenly, the odd token going to the longer one (tokenizers' truncate_encodings).
            size_t n1 = length_a, n2 = length_b;
            const bool swapped = n1 > n2;
            if (swapped) std::swap(n1, n2);
            n2 = n1 > limit ? n1 : std::max(n1, limit - n1);
            if (n1 + n2 > limit) {
              n1 = limit / 2;
              n2 = n1 + limit % 2;
            }
            if (swapped) std::swap(n1, n2);
            windows_a = windows(length_a, n1, truncation.stride);
            windows_b = windows(length_b, n2, truncation.stride);
          } else {
            windows_a = windows(length_a, limit, truncation.stride);
          }
          break;
        case TruncationStrategy::kOnlyFirst:
        case TruncationStrategy::kOnlySecond: {
          const bool first_target = truncation.strategy == TruncationStrategy::kOnlyFirst;
          check(first_target || second.has_value(),
                "truncation only_second needs a second text (the package: 'Second sequence not provided')");
          const size_t target_length = first_target ? length_a : length_b;
          check(target_length > to_remove, "truncation ", first_target ? "only_first" : "only_second",
                ": the ", first_target ? "first" : "second", " text has ", target_length,
                " tokens but ", to_remove, " must go to fit max_length ", truncation.max_length,
                " (the other text has ", first_target ? length_b : length_a,
                " tokens); the package fails with 'Sequence to truncate too short'");
          (first_target ? windows_a : windows_b) =
              windows(target_length, target_length - to_remove, truncation.stride);
          break;
        }
      }
    }
  }

  auto assemble = [&](Range range_a, const Range* range_b) {
    Encoding out;
    const size_t size = 3 + (range_a.end - range_a.begin) + (range_b ? range_b->end - range_b->begin : 0);
    out.ids.reserve(size);
    append_added(out, cls_id_, 0);
    append_slice(out, a, range_a, 0, 0);
    append_added(out, sep_id_, 0);
    if (range_b) {
      append_slice(out, b, *range_b, 1, 1);
      append_added(out, sep_id_, 1);
    }
    return out;
  };
  // Order of Encoding::merge_with: main, then each overflow of the first text with the second's
  // main and then with each of its overflows, then the first's main with the second's overflows.
  std::vector<Encoding> result;
  result.push_back(assemble(windows_a[0], second ? &windows_b[0] : nullptr));
  for (size_t i = 1; i < windows_a.size(); ++i) {
    if (!second) {
      result.push_back(assemble(windows_a[i], nullptr));
      continue;
    }
    for (size_t j = 0; j < windows_b.size(); ++j) result.push_back(assemble(windows_a[i], &windows_b[j]));
  }
  if (second) {
    for (size_t j = 1; j < windows_b.size(); ++j) result.push_back(assemble(windows_a[0], &windows_b[j]));
  }
  return result;
}

std::vector<Encoding> BertTokenizer::encode_qa_windows(std::string_view question, std::string_view context,
                                                       size_t max_length, size_t doc_stride) const {
  check(max_length > 0, "encode_qa_windows: max_length must be positive");
  return encode_with_overflow(question, context, {max_length, TruncationStrategy::kOnlySecond, doc_stride});
}

std::vector<Encoding> BertTokenizer::encode_batch(std::span<const std::string_view> texts,
                                                  const Truncation& truncation, const Padding& padding) const {
  std::vector<Encoding> result;
  result.reserve(texts.size());
  for (std::string_view text : texts) result.push_back(encode(text, truncation));
  pad(result, padding);
  return result;
}

std::vector<Encoding> BertTokenizer::encode_pair_batch(
    std::span<const std::pair<std::string_view, std::string_view>> pairs, const Truncation& truncation,
    const Padding& padding) const {
  std::vector<Encoding> result;
  result.reserve(pairs.size());
  for (const auto& [first, second] : pairs) result.push_back(encode_pair(first, second, truncation));
  pad(result, padding);
  return result;
}

void BertTokenizer::pad(std::span<Encoding> encodings, const Padding& padding) const {
  if (padding.strategy == PaddingStrategy::kNone || encodings.empty()) return;
  size_t target = padding.max_length;
  if (padding.strategy == PaddingStrategy::kLongest) {
    target = 0;
    for (const Encoding& encoding : encodings) target = std::max(target, encoding.size());
  } else {
    check(target > 0, "padding to max_length needs a positive max_length");
  }
  if (padding.pad_to_multiple_of > 0 && target % padding.pad_to_multiple_of != 0) {
    target += padding.pad_to_multiple_of - target % padding.pad_to_multiple_of;
  }
  check(pad_id_ >= 0, "padding needs the pad token '", options_.pad_token, "', which vocabulary ", vocab_.origin(),
        " lacks");
  for (Encoding& encoding : encodings) {
    if (encoding.size() >= target) continue;
    const size_t size = target;
    encoding.ids.resize(size, pad_id_);
    encoding.type_ids.resize(size, 0);
    encoding.offsets.resize(size, Span{0, 0});
    encoding.sequence_ids.resize(size, -1);
    encoding.word_ids.resize(size, -1);
    encoding.attention_mask.resize(size, 0);
    encoding.special_tokens_mask.resize(size, 1);
  }
}

std::vector<Span> codepoint_offsets(const Encoding& encoding, std::string_view first, std::string_view second) {
  std::vector<Span> first_spans, second_spans;
  for (size_t i = 0; i < encoding.size(); ++i) {
    if (encoding.sequence_ids[i] == 0) first_spans.push_back(encoding.offsets[i]);
    if (encoding.sequence_ids[i] == 1) second_spans.push_back(encoding.offsets[i]);
  }
  const std::vector<Span> first_result = byte_to_codepoint_offsets(first, first_spans);
  const std::vector<Span> second_result = byte_to_codepoint_offsets(second, second_spans);
  std::vector<Span> result(encoding.size(), Span{0, 0});
  size_t next_first = 0, next_second = 0;
  for (size_t i = 0; i < encoding.size(); ++i) {
    if (encoding.sequence_ids[i] == 0) result[i] = first_result[next_first++];
    if (encoding.sequence_ids[i] == 1) result[i] = second_result[next_second++];
  }
  return result;
}

}  // namespace scalebert::text
