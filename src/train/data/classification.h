// Sequence classification data: rows of (text, optional pair text, label) from CSV, TSV or JSONL,
// labels resolved through a LabelMap, and tokenized features ([CLS] a [SEP] (b [SEP])) for the trainer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "text/bert_tokenizer.h"
#include "train/data/label_map.h"

namespace scalebert::train::data {

enum class TableFormat { kCsv, kTsv, kJsonl };

// From the file extension: .csv, .tsv/.tab, .jsonl/.ndjson. InvalidArgument naming the path otherwise.
TableFormat table_format_for(const std::filesystem::path& path);
const char* table_format_name(TableFormat format);

struct ClassificationColumns {
  std::string text = "text";
  std::string pair;            // empty: single-text task
  std::string label = "label";
};

struct ClassificationExample {
  std::string text;
  std::string pair;       // empty unless the dataset has a pair column
  std::string label;      // as written (a name or an integer)
  int32_t label_id = -1;  // set by assign_labels
  int64_t line = 0;       // 1-based line of the row, for error messages
};

struct ClassificationDataset {
  std::string source;  // file name in messages
  bool has_pair = false;
  std::vector<ClassificationExample> examples;

  std::vector<std::string> labels() const;  // every example's label as written
};

// Parses a table. Formats:
//  - CSV: RFC 4180 with a header row (io::parse_csv);
//  - TSV: a header row, then one record per line, fields split at tabs, no quoting (GLUE's
//    layout); every record must have the header's field count;
//  - JSONL: one JSON object per non-blank line; text fields must be strings, the label a string or
//    an integer.
// FormatError "<source>:<line>: ..." for malformed rows, a missing field, a non-string text or an
// empty label; FormatError for an empty file or a table without rows; a missing column in a
// header-based format names the columns the file has.
ClassificationDataset parse_classification(std::string_view text, const std::string& source, TableFormat format,
                                           const ClassificationColumns& columns = {});
// Reads a file, format from its extension unless given. IoError when unreadable.
ClassificationDataset read_classification(const std::filesystem::path& path, const ClassificationColumns& columns = {});
ClassificationDataset read_classification(const std::filesystem::path& path, TableFormat format,
                                          const ClassificationColumns& columns);

// Sets every example's label_id; FormatError "<source>:<line>: unknown label ..." on the first
// label the map does not know.
void assign_labels(ClassificationDataset& dataset, const LabelMap& labels);

struct ClassificationFeature {
  std::vector<int32_t> input_ids;       // (T) [CLS] a [SEP] (b [SEP]), T <= max_length
  std::vector<int32_t> token_type_ids;  // (T)
  int32_t label = -1;
  int32_t example_index = 0;
};

// Tokenizes every example, truncating longest-first to max_length (0: no truncation).
// InvalidArgument when labels were not assigned.
std::vector<ClassificationFeature> featurize_classification(const ClassificationDataset& dataset,
                                                            const text::BertTokenizer& tokenizer, size_t max_length);

}  // namespace scalebert::train::data
