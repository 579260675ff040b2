// Extractive question answering in SQuAD format: reading the JSON (character offsets checked
// against the context), doc-stride windows with start/end token labels as transformers' run_qa
// prepares them, and n-best span decoding from start/end logits back to the context text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/bert_tokenizer.h"

namespace scalebert::train::data {

struct QaAnswer {
  std::string text;
  int64_t answer_start = 0;  // code points into the context (Python string index, as SQuAD writes it)
  uint32_t byte_begin = 0;   // the same answer as bytes of the UTF-8 context
  uint32_t byte_end = 0;
};

struct QaExample {
  std::string id;
  std::string title;
  std::string question;
  std::string context;
  std::vector<QaAnswer> answers;  // empty for an unanswerable question
  bool is_impossible = false;
};

struct QaDataset {
  std::string source;
  std::vector<QaExample> examples;
};

// SQuAD v1.1/v2.0 JSON: {"data": [{"title"?, "paragraphs": [{"context", "qas": [{"id", "question",
// "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}. FormatError naming the source and
// the JSON path (and the qa id once known) for a missing or mistyped field; FormatError naming
// the qa id for an answer whose span lies outside its context or whose text differs from the
// context at answer_start; FormatError for a question with no answers that is not is_impossible.
QaDataset parse_squad(std::string_view json_text, const std::string& source);
QaDataset read_squad(const std::filesystem::path& path);

struct QaFeature {
  std::vector<int32_t> input_ids;       // (T) [CLS] question [SEP] context window [SEP]
  std::vector<int32_t> token_type_ids;  // (T)
  std::vector<text::Span> offsets;      // (T) byte span in the context for context tokens, else (0,0)
  std::vector<int8_t> is_context;       // (T) 1 for tokens of the context window
  int32_t example_index = 0;
  int32_t start_position = 0;  // answer's first token; 0 ([CLS]) when it is not inside this window
  int32_t end_position = 0;
};

// Every window of every example (truncation only_second, stride doc_stride, as run_qa's
// prepare_train_features). Labels use the first answer, exactly as run_qa: the window must cover
// [answer begin, answer end) or both positions are the CLS index 0; otherwise they are the first
// and last context tokens overlapping the answer. Unanswerable examples get 0/0.
std::vector<QaFeature> featurize_squad(const QaDataset& dataset, const text::BertTokenizer& tokenizer,
                                       size_t max_length, size_t doc_stride);

struct QaDecodeOptions {
  size_t n_best = 20;             // top starts and top ends tried per window
  size_t max_answer_length = 30;  // tokens
  bool allow_null = false;        // SQuAD v2: the empty answer competes with score CLS start + CLS end
  float null_threshold = 0.0f;    // predict "" when null score > best span score + threshold
};

struct QaCandidate {
  std::string text;
  int64_t char_begin = 0;  // code points into the context
  int64_t char_end = 0;
  float score = 0.0f;      // start logit + end logit
  float probability = 0.0f;  // softmax over the kept n-best scores
  int32_t feature = -1;    // index into the features given to decode_answer (-1 for the null answer)
};

struct QaPrediction {
  std::string text;      // best answer ("" when the null answer wins)
  int64_t char_begin = 0;
  int64_t char_end = 0;
  float score = 0.0f;
  std::vector<QaCandidate> n_best;  // best first, at most n_best
};

// Decodes one example from the features of its windows and their logits (start_logits[f] and
// end_logits[f] have features[f].input_ids.size() values), as transformers'
// postprocess_qa_predictions: the n_best highest start and end indices of each window, pairs with
// both ends on context tokens, end >= start and at most max_answer_length tokens, scored by the sum
// of logits; the answer is the context text between the start token's begin and the end token's
// end. InvalidArgument for mismatched sizes or no features.
QaPrediction decode_answer(const QaExample& example, std::span<const QaFeature* const> features,
                           std::span<const std::span<const float>> start_logits,
                           std::span<const std::span<const float>> end_logits, const QaDecodeOptions& options = {});

// Code point index of a byte offset inside valid UTF-8 text (the offset must be a boundary).
int64_t codepoint_index(std::string_view text, size_t byte_offset);
// Byte offset of a code point index; returns text.size() + 1 when the index is past the end.
size_t byte_offset_of(std::string_view text, int64_t codepoint);

}  // namespace scalebert::train::data
