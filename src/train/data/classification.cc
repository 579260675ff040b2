// Reading classification tables (CSV/TSV/JSONL) and tokenizing them into features.
#include "train/data/classification.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/csv.h"
#include "io/file_util.h"

namespace scalebert::train::data {

namespace {

std::string lowercase_ascii(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// Rows of a header-based table (CSV or TSV) as the generic (header, rows, row_lines) triple.
ClassificationDataset from_table(const io::CsvTable& table, const ClassificationColumns& columns) {
  ClassificationDataset dataset;
  dataset.source = table.source;
  dataset.has_pair = !columns.pair.empty();
  const int64_t text_column = table.column(columns.text);
  const int64_t pair_column = dataset.has_pair ? table.column(columns.pair) : -1;
  const int64_t label_column = table.column(columns.label);
  check<FormatError>(table.num_rows() > 0, table.source, ": no rows after the header");
  dataset.examples.reserve(table.num_rows());
  for (size_t r = 0; r < table.num_rows(); ++r) {
    const std::vector<std::string>& row = table.rows[r];
    ClassificationExample example;
    example.line = table.row_lines[r];
    example.text = row[static_cast<size_t>(text_column)];
    if (pair_column >= 0) example.pair = row[static_cast<size_t>(pair_column)];
    example.label = row[static_cast<size_t>(label_column)];
    check<FormatError>(!example.label.empty(), table.source, ":", example.line, ": empty label in column '",
                       columns.label, "'");
    dataset.examples.push_back(std::move(example));
  }
  return dataset;
}

// TSV without quoting: header line, then tab-separated records, one per line.
io::CsvTable parse_tsv(std::string_view text, const std::string& source) {
  io::check_utf8_lines(text, source);
  io::CsvTable table;
  table.source = source;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  int64_t line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view record = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (!record.empty() && record.back() == '\r') record.remove_suffix(1);
    if (record.empty()) continue;
    std::vector<std::string> fields;
    size_t start = 0;
    while (true) {
      const size_t tab = record.find('\t', start);
      fields.emplace_back(record.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
      if (tab == std::string_view::npos) break;
      start = tab + 1;
    }
    if (table.header.empty()) {
      table.header = std::move(fields);
      continue;
    }
    check<FormatError>(fields.size() == table.header.size(), source, ":", line, ": expected ", table.header.size(),
                       " tab-separated fields as in the header, got ", fields.size());
    table.rows.push_back(std::move(fields));
    table.row_lines.push_back(line);
  }
  check<FormatError>(!table.header.empty(), source, ": empty file (no header)");
  return table;
}

// A JSON field as text: strings as they are; for the label, integers as decimal.
std::string json_field(const nlohmann::json& object, const std::string& name, bool allow_integer,
                       const std::string& source, int64_t line) {
  const auto it = object.find(name);
  check<FormatError>(it != object.end(), source, ":", line, ": no field '", name, "'");
  if (it->is_string()) return it->get<std::string>();
  if (allow_integer && it->is_number_integer()) return std::to_string(it->get<int64_t>());
  throw FormatError(str_cat(source, ":", line, ": field '", name, "' must be a string",
                            allow_integer ? " or an integer" : "", ", got ", it->type_name()));
}

ClassificationDataset parse_jsonl(std::string_view text, const std::string& source, const ClassificationColumns& columns) {
  ClassificationDataset dataset;
  dataset.source = source;
  dataset.has_pair = !columns.pair.empty();
  int64_t line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view record = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (line == 1 && record.substr(0, 3) == "\xEF\xBB\xBF") record.remove_prefix(3);
    if (record.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json object;
    try {
      object = nlohmann::json::parse(record);
    } catch (const nlohmann::json::exception& error) {
      throw FormatError(str_cat(source, ":", line, ": invalid JSON: ", error.what()));
    }
    check<FormatError>(object.is_object(), source, ":", line, ": expected a JSON object, got ", object.type_name());
    ClassificationExample example;
    example.line = line;
    example.text = json_field(object, columns.text, false, source, line);
    if (dataset.has_pair) example.pair = json_field(object, columns.pair, false, source, line);
    example.label = json_field(object, columns.label, true, source, line);
    check<FormatError>(!example.label.empty(), source, ":", line, ": empty label in field '", columns.label, "'");
    dataset.examples.push_back(std::move(example));
  }
  check<FormatError>(!dataset.examples.empty(), source, ": empty file (no JSON lines)");
  return dataset;
}

}  // namespace

TableFormat table_format_for(const std::filesystem::path& path) {
  const std::string extension = lowercase_ascii(path.extension().string());
  if (extension == ".csv") return TableFormat::kCsv;
  if (extension == ".tsv" || extension == ".tab") return TableFormat::kTsv;
  if (extension == ".jsonl" || extension == ".ndjson") return TableFormat::kJsonl;
  throw InvalidArgument(str_cat(path.string(), ": cannot tell the table format from the extension '", extension,
                                "' (expected .csv, .tsv or .jsonl)"));
}

const char* table_format_name(TableFormat format) {
  switch (format) {
    case TableFormat::kCsv: return "csv";
    case TableFormat::kTsv: return "tsv";
    case TableFormat::kJsonl: return "jsonl";
  }
  return "?";
}

std::vector<std::string> ClassificationDataset::labels() const {
  std::vector<std::string> out;
  out.reserve(examples.size());
  for (const ClassificationExample& example : examples) out.push_back(example.label);
  return out;
}

ClassificationDataset parse_classification(std::string_view text, const std::string& source, TableFormat format,
                                           const ClassificationColumns& columns) {
  check<FormatError>(text.find_first_not_of(" \t\r\n") != std::string_view::npos, source, ": empty file");
  switch (format) {
    case TableFormat::kCsv: return from_table(io::parse_csv(text, source), columns);
    case TableFormat::kTsv: return from_table(parse_tsv(text, source), columns);
    case TableFormat::kJsonl: return parse_jsonl(text, source, columns);
  }
  throw InvalidArgument("unknown table format");
}

ClassificationDataset read_classification(const std::filesystem::path& path, const ClassificationColumns& columns) {
  return read_classification(path, table_format_for(path), columns);
}

ClassificationDataset read_classification(const std::filesystem::path& path, TableFormat format,
                                          const ClassificationColumns& columns) {
  return parse_classification(read_file(path), path.string(), format, columns);
}

void assign_labels(ClassificationDataset& dataset, const LabelMap& labels) {
  for (ClassificationExample& example : dataset.examples) {
    example.label_id = labels.resolve(example.label, str_cat(dataset.source, ":", example.line));
  }
}

std::vector<ClassificationFeature> featurize_classification(const ClassificationDataset& dataset,
                                                            const text::BertTokenizer& tokenizer, size_t max_length) {
  text::Truncation truncation;
  truncation.max_length = max_length;
  truncation.strategy = text::TruncationStrategy::kLongestFirst;
  std::vector<ClassificationFeature> features;
  features.reserve(dataset.examples.size());
  for (size_t i = 0; i < dataset.examples.size(); ++i) {
    const ClassificationExample& example = dataset.examples[i];
    check(example.label_id >= 0, dataset.source, ":", example.line, ": label '", example.label,
          "' has no id (call assign_labels first)");
    text::Encoding encoding = dataset.has_pair ? tokenizer.encode_pair(example.text, example.pair, truncation)
                                               : tokenizer.encode(example.text, truncation);
    ClassificationFeature feature;
    feature.input_ids = std::move(encoding.ids);
    feature.token_type_ids = std::move(encoding.type_ids);
    feature.label = example.label_id;
    feature.example_index = static_cast<int32_t>(i);
    features.push_back(std::move(feature));
  }
  return features;
}

}  // namespace scalebert::train::data
