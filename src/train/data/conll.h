// Token classification data in CoNLL layout (one token per line, tag in the last column, blank
// lines between sentences, -DOCSTART- lines between documents) with IO or BIO tags, and
// first-subword labelling of the tokenized words, as transformers' run_ner does.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "text/bert_tokenizer.h"
#include "train/data/label_map.h"

namespace scalebert::train::data {

enum class TagScheme {
  kIO,   // O and I-TYPE only: adjacent same-type entities cannot be separated
  kBIO,  // O, B-TYPE, I-TYPE (I- after O or another type starts an entity, as conlleval reads it)
};
const char* tag_scheme_name(TagScheme scheme);
// "io" or "bio" (any case); InvalidArgument otherwise.
TagScheme parse_tag_scheme(std::string_view name);

struct ConllSentence {
  std::vector<std::string> tokens;  // (W) words as written
  std::vector<std::string> tags;    // (W) last column
  std::vector<int64_t> lines;       // (W) 1-based line of each word
  int32_t document = 0;             // index of the -DOCSTART- section (0 before the first one)
};

struct ConllDataset {
  std::string source;
  std::vector<ConllSentence> sentences;
  int32_t documents = 0;  // number of documents (at least 1 when there are sentences)

  std::vector<std::string> all_tags() const;
};

// Columns split at spaces or tabs; the first column is the token, the last the tag; every token
// line needs at least two columns. "-DOCSTART-" lines start a new document and are not tokens.
// FormatError "<source>:<line>: ..." for a line with one column and for invalid UTF-8;
// FormatError for a file with no tokens.
ConllDataset parse_conll(std::string_view text, const std::string& source);
ConllDataset read_conll(const std::filesystem::path& path);

// FormatError "<source>:<line>: tag '<tag>' is not valid in the <scheme> scheme" on the first bad
// tag: IO allows O and I-X; BIO allows O, B-X, I-X (X non-empty).
void check_tag_scheme(const ConllDataset& dataset, TagScheme scheme);
// BIO when any tag starts with "B-", IO otherwise.
TagScheme detect_tag_scheme(const ConllDataset& dataset);

// Writes sentences back as "token tag" lines (blank line after each sentence, a "-DOCSTART- O"
// line and a blank line before each new document when `documents` is true).
std::string format_conll(const std::vector<const ConllSentence*>& sentences, bool documents);

inline constexpr int32_t kIgnoreIndex = -100;  // PyTorch cross-entropy ignore_index

struct TokenClassificationFeature {
  std::vector<int32_t> input_ids;       // (T) [CLS] pieces [SEP], T <= max_length
  std::vector<int32_t> token_type_ids;  // (T) all 0
  std::vector<int32_t> labels;          // (T) tag id on each word's first piece, -100 elsewhere
  std::vector<int32_t> word_ids;        // (T) word index in the sentence, -1 for [CLS]/[SEP]
  int32_t sentence_index = 0;
  int32_t words_kept = 0;               // words with at least one piece inside the window
};

// Each word is tokenized on its own (the pretokenized / is_split_into_words path: a word the basic
// tokenizer splits further, such as `("`, still maps all its pieces to one word id). The sequence
// is truncated to max_length (0: none) by dropping pieces at the end, as run_ner's truncation=True
// does. A word that yields no pieces (only characters the tokenizer drops) gets no label. Unknown
// tags are FormatErrors naming the file and line.
std::vector<TokenClassificationFeature> featurize_token_classification(const ConllDataset& dataset,
                                                                       const text::BertTokenizer& tokenizer,
                                                                       const LabelMap& labels, size_t max_length);

}  // namespace scalebert::train::data
