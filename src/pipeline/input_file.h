// Reading the texts a command works on: plain text lines (one input per line, optionally two texts
// separated by a TAB) or a CSV file with named text, pair and label columns. Every record remembers
// the line it came from, so that messages and outputs can point back into the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace scalebert::pipeline {

struct InputRecord {
  std::string text;
  std::string pair;   // second text; empty when the input has no pairs
  std::string label;  // label column value; empty when the input has none
  int64_t line = 0;   // 1-based line of the file where the record starts
};

struct InputOptions {
  // CSV or text lines; unset: CSV when the file name ends in ".csv" (any case).
  std::optional<bool> csv;
  std::string text_column = "text";
  std::string pair_column;   // CSV: column of the second text; "" = no pairs
  std::string label_column;  // CSV: column of gold labels; "" = none (see read_inputs)
  bool tab_pairs = false;    // text lines: "first<TAB>second" on every line
  bool skip_blank = true;    // text lines: skip lines that are empty or only whitespace
};

struct InputSet {
  std::string source;  // the file name, or "<stdin>"
  bool is_csv = false;
  bool has_pairs = false;
  bool has_labels = false;
  std::vector<InputRecord> records;
};

// Reads `path` ("-" reads standard input). For CSV, label_column "" takes a column named "label"
// when there is one. Errors name the file and the line: IoError for a missing or unreadable file;
// FormatError for invalid UTF-8 or malformed CSV; InvalidArgument for an unknown column, a text line
// without the TAB that tab_pairs needs, or a file with no input at all.
InputSet read_inputs(const std::filesystem::path& path, const InputOptions& options);

// Splits text into lines (LF or CRLF; no empty last line for a final newline), checking UTF-8 and
// naming `source` and the line in errors.
std::vector<std::string> split_lines(const std::string& text, const std::string& source);

// All of standard input; IoError when it cannot be read.
std::string read_stdin();

}  // namespace scalebert::pipeline
