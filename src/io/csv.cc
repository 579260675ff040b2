// RFC-4180 CSV reader: one pass over the text with a small state machine per record.
#include "io/csv.h"

#include <cctype>

#include "core/error.h"
#include "io/file_util.h"
#include "text/utf8.h"

namespace scalebert::io {

namespace {

// Shows a byte in an error message: printable ASCII as itself, anything else as hex.
std::string describe_byte(char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7F) return str_cat("'", c, "'");
  return str_cat("byte 0x", std::hex, static_cast<int>(byte));
}

class RecordParser {
 public:
  RecordParser(std::string_view text, const std::string& source) : text_(text), source_(source) {
    // A byte order mark is an encoding signature, not part of the first column's name.
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
  }

  // Reads the next non-blank record into `fields`; false at the end of the text. `record_line` is
  // the line it starts on.
  bool next(std::vector<std::string>& fields, int64_t& record_line) {
    fields.clear();
    // Blank lines between records carry no data.
    while (pos_ < text_.size()) {
      if (text_[pos_] == '\n') {
        ++pos_, ++line_;
      } else if (text_[pos_] == '\r' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n') {
        pos_ += 2, ++line_;
      } else {
        break;
      }
    }
    if (pos_ >= text_.size()) return false;
    record_line = line_;
    while (true) {
      std::string& field = fields.emplace_back();
      const bool quoted = pos_ < text_.size() && text_[pos_] == '"';
      const bool more = quoted ? read_quoted(field, fields.size()) : read_unquoted(field);
      if (!more) return true;
    }
  }

 private:
  // Consumes the record terminator at pos_ if there is one. Returns true when pos_ was at the end
  // of the record (terminator or end of text).
  bool at_record_end() {
    if (pos_ >= text_.size()) return true;
    if (text_[pos_] == '\n') {
      ++pos_, ++line_;
      return true;
    }
    if (text_[pos_] == '\r' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n') {
      pos_ += 2, ++line_;
      return true;
    }
    return false;
  }

  // Unquoted field up to ',' or the end of the record. Returns whether another field follows.
  bool read_unquoted(std::string& field) {
    const size_t begin = pos_;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == ',' || c == '\n' || (c == '\r' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n')) break;
      ++pos_;
    }
    field.assign(text_.substr(begin, pos_ - begin));
    if (pos_ < text_.size() && text_[pos_] == ',') {
      ++pos_;
      return true;
    }
    at_record_end();
    return false;
  }

  // Quoted field starting at the opening quote. Returns whether another field follows.
  bool read_quoted(std::string& field, size_t field_number) {
    const int64_t opened_line = line_;
    ++pos_;  // opening quote
    while (true) {
      if (pos_ >= text_.size()) {
        throw FormatError(str_cat(source_, ":", opened_line, ": unterminated quoted field ", field_number,
                                  " (its opening quote is on this line; the file ends at line ", line_,
                                  " before the closing quote)"));
      }
      const char c = text_[pos_];
      if (c == '"') {
        if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '"') {  // "" is one literal quote
          field.push_back('"');
          pos_ += 2;
          continue;
        }
        ++pos_;  // closing quote
        break;
      }
      if (c == '\n') ++line_;
      field.push_back(c);
      ++pos_;
    }
    if (pos_ < text_.size() && text_[pos_] == ',') {
      ++pos_;
      return true;
    }
    if (at_record_end()) return false;
    throw FormatError(str_cat(source_, ":", line_, ": unexpected ", describe_byte(text_[pos_]),
                              " after the closing quote of field ", field_number,
                              " (a quote inside a quoted field must be doubled: \"\")"));
  }

  std::string_view text_;
  const std::string& source_;
  size_t pos_ = 0;
  int64_t line_ = 1;
};

}  // namespace

int64_t CsvTable::find_column(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return static_cast<int64_t>(i);
  }
  return -1;
}

int64_t CsvTable::column(std::string_view name) const {
  const int64_t index = find_column(name);
  if (index < 0) {
    std::string columns;
    for (const std::string& column_name : header) columns += (columns.empty() ? "\"" : ", \"") + column_name + "\"";
    throw InvalidArgument(str_cat(source, ": no column \"", name, "\" (the header has ", columns, ")"));
  }
  return index;
}

std::vector<std::string> CsvTable::column_values(std::string_view name) const {
  const auto index = static_cast<size_t>(column(name));
  std::vector<std::string> values;
  values.reserve(rows.size());
  for (const auto& row : rows) values.push_back(row[index]);
  return values;
}

void check_utf8_lines(std::string_view text, const std::string& source, int64_t first_line) {
  try {
    text::validate_utf8(text);
    return;
  } catch (const FormatError&) {
    // Slow path, only on failure: find the line. UTF-8 never uses 0x0A inside a multi-byte
    // sequence, so lines can be validated one by one.
  }
  int64_t line = first_line;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line_text = text.substr(begin, end - begin);
    size_t pos = 0;
    try {
      while (pos < line_text.size()) text::decode_utf8(line_text, pos);
    } catch (const FormatError&) {
      throw FormatError(str_cat(source, ":", line, ": invalid UTF-8 (", describe_byte(line_text[pos]),
                                " at column ", pos + 1, "); the file must be UTF-8 encoded"));
    }
    begin = end + 1;
    ++line;
  }
  // validate_utf8 and the line scan disagree only if the library's decoder changed: still refuse.
  throw FormatError(str_cat(source, ": invalid UTF-8"));
}

CsvTable parse_csv(std::string_view text, const std::string& source) {
  check_utf8_lines(text, source);
  CsvTable table;
  table.source = source;
  RecordParser parser(text, table.source);
  int64_t line = 0;
  if (!parser.next(table.header, line)) {
    throw FormatError(str_cat(source, ": empty CSV file (no header row)"));
  }
  std::vector<std::string> fields;
  while (parser.next(fields, line)) {
    if (fields.size() != table.header.size()) {
      throw FormatError(str_cat(source, ":", line, ": expected ", table.header.size(),
                                " fields as in the header, got ", fields.size()));
    }
    table.rows.push_back(fields);
    table.row_lines.push_back(line);
  }
  return table;
}

CsvTable read_csv(const std::filesystem::path& path) {
  return parse_csv(read_file(path), path.string());
}

}  // namespace scalebert::io
