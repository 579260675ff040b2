// Masked-LM pretraining data: raw text packed into [CLS] ... [SEP] sequences of at most max_length
// tokens, and BERT's 15% masking with 80/10/10 ([MASK] / random token / unchanged), drawn from a
// generator keyed by (seed, epoch, example index) so that a sequence is masked the same way
// whatever the batch size, rank count or resume point.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/bert_tokenizer.h"

namespace scalebert::train::data {

struct MlmSequence {
  std::vector<int32_t> input_ids;  // (T) [CLS] tokens... [SEP], T <= max_length
  std::string source;              // file of its first line
  int64_t first_line = 0;          // 1-based
};

// Packing (RoBERTa's FULL-SENTENCES within a document): non-empty lines are tokenized and whole
// lines are appended to the current sequence while they fit in max_length - 2 tokens; a line that
// does not fit starts the next sequence, and a line longer than max_length - 2 is cut into chunks
// that fill whole sequences. Blank lines end a document and so the current sequence; so does the
// end of a file. Lines inside one sequence are simply concatenated (no [SEP] between them).
// InvalidArgument for max_length < 3.
class MlmPacker {
 public:
  MlmPacker(const text::BertTokenizer& tokenizer, size_t max_length);
  // Adds a text (several lines); `source` and line numbers are recorded for each sequence.
  void add_text(std::string_view text, const std::string& source);
  // Reads a file (IoError when unreadable; FormatError "<file>:<line>" for invalid UTF-8).
  void add_file(const std::filesystem::path& path);
  // Closes the current sequence and returns every sequence so far.
  std::vector<MlmSequence> finish();

  int64_t lines() const { return lines_; }
  int64_t tokens() const { return tokens_; }

 private:
  void close_sequence();

  const text::BertTokenizer& tokenizer_;
  size_t max_length_;
  std::vector<MlmSequence> sequences_;
  MlmSequence current_;
  text::Encoding scratch_;
  int64_t lines_ = 0;
  int64_t tokens_ = 0;
};

struct MaskingOptions {
  double mask_probability = 0.15;    // each non-special token is selected independently
  double replace_with_mask = 0.8;    // of the selected: [MASK]
  double replace_with_random = 0.1;  // of the selected: a random id in [0, vocab_size); rest unchanged
  int32_t mask_id = -1;
  int32_t vocab_size = 0;
  std::vector<int32_t> special_ids;  // never selected ([CLS], [SEP], [PAD], ...)
};

// Masking options for a tokenizer: [MASK] from its options, [CLS]/[SEP]/[PAD] special.
// FormatError when the vocabulary has no mask token.
MaskingOptions masking_options_for(const text::BertTokenizer& tokenizer);

struct MaskedExample {
  std::vector<int32_t> input_ids;  // (T) after masking
  std::vector<int32_t> labels;     // (T) the original id at selected positions, -100 elsewhere
};

// Masks one sequence, as transformers' DataCollatorForLanguageModeling (Bernoulli selection, then
// 80/10/10, random ids uniform over the whole vocabulary), with draws from a generator keyed by
// (seed, epoch, example_index) only. InvalidArgument for bad options.
MaskedExample mask_tokens(std::span<const int32_t> input_ids, const MaskingOptions& options, uint64_t seed,
                          uint64_t epoch, uint64_t example_index);

}  // namespace scalebert::train::data
