// Input files of the command-line tasks: text lines or CSV columns, with their line numbers.
#include "pipeline/input_file.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "io/csv.h"
#include "io/file_util.h"

namespace scalebert::pipeline {

namespace {

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

bool ends_with_csv(const std::filesystem::path& path) {
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  return extension == ".csv";
}

}  // namespace

std::string read_stdin() {
  std::string text;
  char buffer[1 << 16];
  size_t count;
  while ((count = std::fread(buffer, 1, sizeof buffer, stdin)) > 0) text.append(buffer, count);
  check<IoError>(!std::ferror(stdin), "cannot read standard input: ", std::strerror(errno));
  return text;
}

std::vector<std::string> split_lines(const std::string& text, const std::string& source) {
  io::check_utf8_lines(text, source);
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    size_t stop = end;
    if (stop > begin && text[stop - 1] == '\r') --stop;
    lines.emplace_back(text, begin, stop - begin);
    begin = end + 1;
  }
  return lines;
}

InputSet read_inputs(const std::filesystem::path& path, const InputOptions& options) {
  const bool from_stdin = path == "-";
  InputSet inputs;
  inputs.source = from_stdin ? "<stdin>" : path.string();
  if (!from_stdin) {
    check<IoError>(std::filesystem::exists(path), "input file ", path.string(), " does not exist");
    check<IoError>(!std::filesystem::is_directory(path), "input ", path.string(), " is a directory, not a file");
  }
  const std::string content = from_stdin ? read_stdin() : read_file(path);
  check(!content.empty(), inputs.source, ": empty input file");
  inputs.is_csv = options.csv.value_or(!from_stdin && ends_with_csv(path));

  if (inputs.is_csv) {
    const io::CsvTable table = io::parse_csv(content, inputs.source);
    const int64_t text_column = table.column(options.text_column);
    const int64_t pair_column = options.pair_column.empty() ? -1 : table.column(options.pair_column);
    int64_t label_column = -1;
    if (!options.label_column.empty()) {
      label_column = table.column(options.label_column);
    } else {
      label_column = table.find_column("label");
    }
    inputs.has_pairs = pair_column >= 0;
    inputs.has_labels = label_column >= 0;
    check(table.num_rows() > 0, inputs.source, ": the CSV file has a header but no data rows");
    inputs.records.reserve(table.num_rows());
    for (size_t r = 0; r < table.num_rows(); ++r) {
      InputRecord& record = inputs.records.emplace_back();
      record.text = table.rows[r][text_column];
      if (pair_column >= 0) record.pair = table.rows[r][pair_column];
      if (label_column >= 0) record.label = table.rows[r][label_column];
      record.line = table.row_lines[r];
    }
    return inputs;
  }

  check(options.pair_column.empty() && options.label_column.empty(), inputs.source,
        ": --pair-column and --label-column need a CSV input (a .csv file, or --csv)");
  const std::vector<std::string> lines = split_lines(content, inputs.source);
  inputs.has_pairs = options.tab_pairs;
  for (size_t i = 0; i < lines.size(); ++i) {
    const int64_t line = static_cast<int64_t>(i) + 1;
    if (options.skip_blank && is_blank(lines[i])) continue;
    InputRecord& record = inputs.records.emplace_back();
    record.line = line;
    if (options.tab_pairs) {
      const size_t tab = lines[i].find('\t');
      check(tab != std::string::npos, inputs.source, ":", line,
            ": expected two texts separated by a TAB (pair input), found no TAB");
      record.text = lines[i].substr(0, tab);
      record.pair = lines[i].substr(tab + 1);
    } else {
      record.text = lines[i];
    }
  }
  check(!inputs.records.empty(), inputs.source, ": no input lines (the file holds only blank lines)");
  return inputs;
}

}  // namespace scalebert::pipeline
