// RFC-4180 CSV reading: quoted fields with embedded commas, doubled quotes and line breaks, a header
// row, columns looked up by name, and errors that name the file and the line (quotes left open,
// wrong field counts, invalid UTF-8).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace scalebert::io {

struct CsvTable {
  std::string source;                          // file name (or "<string>") used in every error
  std::vector<std::string> header;             // (F) column names from the first record
  std::vector<std::vector<std::string>> rows;  // (R, F) records after the header
  std::vector<int64_t> row_lines;              // (R) 1-based line on which each record starts

  size_t num_rows() const { return rows.size(); }
  // Index of column `name`, or -1 when absent.
  int64_t find_column(std::string_view name) const;
  // Index of column `name`; InvalidArgument naming the file and listing the columns it has.
  int64_t column(std::string_view name) const;
  // Every row's value of column `name` (copies).
  std::vector<std::string> column_values(std::string_view name) const;
};

// Parses CSV text. Rules (RFC 4180, with what real files need):
//  - records end at LF or CRLF outside quotes; a UTF-8 byte order mark at the start is skipped;
//  - a field that starts with '"' is quoted: it runs to the next lone '"', "" inside it is one '"',
//    and commas and line breaks inside it are data (kept as written, CRLF included); after the
//    closing quote only ',' or the end of the record may follow;
//  - a '"' inside an unquoted field is kept as data (as Python's csv module does);
//  - blank lines (outside quotes) are skipped; every other record must have as many fields as the
//    header;
//  - the text must be valid UTF-8.
// Errors are FormatError "<source>:<line>: <what>", e.g. "tweets.csv:17: unterminated quoted
// field (opened here)", "tweets.csv:40: expected 2 fields as in the header, got 3",
// "tweets.csv:5: invalid UTF-8 (byte 0xff at column 12)". Empty text (no header) is a FormatError.
CsvTable parse_csv(std::string_view text, const std::string& source = "<string>");

// Reads and parses a file; IoError naming the path when it cannot be read.
CsvTable read_csv(const std::filesystem::path& path);

// Throws FormatError "<source>:<line>: invalid UTF-8 ..." naming the first malformed line of
// `text` (lines counted from `first_line`), the byte value and its 1-based column.
void check_utf8_lines(std::string_view text, const std::string& source, int64_t first_line = 1);

}  // namespace scalebert::io
