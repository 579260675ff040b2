// The BERT tokenizer: basic tokenizer + WordPiece + [CLS]/[SEP] templates, truncation (with
// overflowing windows), padding and batches, with the semantics of the `tokenizers` package
// (BertWordPieceTokenizer / BertTokenizerFast), which is its ground truth.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/basic_tokenizer.h"
#include "text/utf8.h"
#include "text/vocab.h"
#include "text/wordpiece.h"

namespace scalebert::text {

// One tokenized input (one window of it when truncation overflows). All vectors have size T.
struct Encoding {
  std::vector<int32_t> ids;                  // (T) vocabulary ids
  std::vector<int32_t> type_ids;             // (T) 0 for [CLS] a [SEP], 1 for b [SEP]
  std::vector<Span> offsets;                 // (T) byte span in the token's own ORIGINAL text; (0,0) for added/pad
  std::vector<int8_t> sequence_ids;          // (T) -1 added [CLS]/[SEP] or pad, 0 first text, 1 second
  std::vector<int32_t> word_ids;             // (T) word index within its text, -1 for added/pad
  std::vector<uint8_t> attention_mask;       // (T) 1 real token, 0 padding
  std::vector<uint8_t> special_tokens_mask;  // (T) 1 added [CLS]/[SEP] or pad

  size_t size() const { return ids.size(); }
  void clear();
};

enum class TruncationStrategy { kLongestFirst, kOnlyFirst, kOnlySecond };

struct Truncation {
  size_t max_length = 0;  // total tokens including [CLS]/[SEP]; 0 = no truncation
  TruncationStrategy strategy = TruncationStrategy::kLongestFirst;
  size_t stride = 0;      // tokens shared by consecutive overflowing windows
};

enum class PaddingStrategy { kNone, kLongest, kMaxLength };

struct Padding {
  PaddingStrategy strategy = PaddingStrategy::kNone;
  size_t max_length = 0;          // for kMaxLength; longer encodings are left as they are (as HF)
  size_t pad_to_multiple_of = 0;  // 0 = off
};

struct BertTokenizerOptions {
  bool lowercase = true;                     // tokenizer_config.json do_lower_case
  std::optional<bool> strip_accents;         // unset: follows lowercase (as HF)
  bool tokenize_chinese_chars = true;
  std::optional<int64_t> model_max_length;   // informational; truncation is always explicit
  size_t max_input_chars_per_word = 100;
  std::string unk_token = "[UNK]";
  std::string sep_token = "[SEP]";
  std::string cls_token = "[CLS]";
  std::string pad_token = "[PAD]";
  std::string mask_token = "[MASK]";
};

class BertTokenizer {
 public:
  // Throws FormatError when [UNK], [CLS] or [SEP] (as named in options) is not in the vocabulary.
  BertTokenizer(Vocab vocab, BertTokenizerOptions options = {});
  BertTokenizer(const BertTokenizer&) = delete;
  BertTokenizer& operator=(const BertTokenizer&) = delete;
  BertTokenizer(BertTokenizer&&) = delete;

  static std::unique_ptr<BertTokenizer> from_vocab_file(const std::filesystem::path& vocab_path,
                                                        BertTokenizerOptions options = {});
  // Reads <dir>/vocab.txt and, when present, <dir>/tokenizer_config.json (do_lower_case,
  // strip_accents, tokenize_chinese_chars, model_max_length, *_token). Default: uncased.
  static std::unique_ptr<BertTokenizer> from_model_dir(const std::filesystem::path& dir);

  // [CLS] text [SEP]. With truncation, the first window (see encode_with_overflow).
  Encoding encode(std::string_view text, const Truncation& truncation = {}) const;
  // [CLS] a [SEP] b [SEP].
  Encoding encode_pair(std::string_view first, std::string_view second, const Truncation& truncation = {}) const;
  // Every window when truncation overflows, in the package's order: the main encoding, then its
  // `overflowing` list. Throws InvalidArgument where the package errors (only_second without a
  // second text or with too short a second text, stride >= window, max_length < added tokens).
  std::vector<Encoding> encode_with_overflow(std::string_view first, std::optional<std::string_view> second,
                                             const Truncation& truncation) const;
  // Question answering windows: truncation only_second, stride = doc_stride, overflowing returned.
  std::vector<Encoding> encode_qa_windows(std::string_view question, std::string_view context,
                                          size_t max_length, size_t doc_stride) const;
  // Hot path: [CLS] text [SEP] into `out`, reusing its buffers; no truncation.
  void encode_into(std::string_view text, Encoding& out) const;

  std::vector<Encoding> encode_batch(std::span<const std::string_view> texts, const Truncation& truncation = {},
                                     const Padding& padding = {}) const;
  std::vector<Encoding> encode_pair_batch(std::span<const std::pair<std::string_view, std::string_view>> pairs,
                                          const Truncation& truncation = {}, const Padding& padding = {}) const;
  // Pads every encoding at the end with [PAD] (type 0, attention 0, offsets (0,0)).
  void pad(std::span<Encoding> encodings, const Padding& padding) const;

  // Word-level view, without [CLS]/[SEP]: ids, offsets and word ids appended to `out`.
  void tokenize(std::string_view text, Encoding& out) const;

  const Vocab& vocab() const { return vocab_; }
  const BertTokenizerOptions& options() const { return options_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }  // -1 when the vocabulary has none
  int32_t unk_id() const { return vocab_.unk_id(); }

 private:
  // Appends the tokens of one text with the given sequence id and type id.
  void append_sequence(std::string_view text, int8_t sequence_id, int32_t type_id, Encoding& out) const;

  Vocab vocab_;
  BertTokenizerOptions options_;
  int32_t cls_id_ = -1;
  int32_t sep_id_ = -1;
  int32_t pad_id_ = -1;
  BasicTokenizer basic_;
  WordPieceModel wordpiece_;
};

// Code point offsets (Python string indices, as Hugging Face's Python API reports them) of an
// encoding's byte offsets; `first` and `second` are the texts it was encoded from.
std::vector<Span> codepoint_offsets(const Encoding& encoding, std::string_view first,
                                    std::string_view second = {});

}  // namespace scalebert::text
