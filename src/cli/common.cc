// Shared command helpers: options, output, JSON formatting.
#include "cli/common.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/threads.h"

namespace scalebert::cli {

pipeline::PipelineOptions pipeline_options(const ArgParser& args) {
  set_num_threads(static_cast<int>(args.get_int("threads", 0)));
  pipeline::PipelineOptions options;
  options.batch_size = args.get_int("batch-size", 1);
  if (args.given("max-length")) options.max_length = args.get_int("max-length", 3);
  return options;
}

Output::Output(const std::string& path) {
  if (path.empty() || path == "-") {
    file_ = stdout;
    name_ = "<stdout>";
    return;
  }
  name_ = path;
  file_ = std::fopen(path.c_str(), "wb");
  check<IoError>(file_ != nullptr, "cannot open output file ", path, ": ", std::strerror(errno));
  owned_ = true;
}

Output::~Output() {
  if (owned_ && file_ != nullptr) std::fclose(file_);
}

void Output::write(std::string_view text) {
  check<IoError>(file_ != nullptr, "write to closed output ", name_);
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size()) {
    throw IoError(str_cat("cannot write to ", name_, ": ", std::strerror(errno)));
  }
}

void Output::close() {
  if (file_ == nullptr) return;
  const bool flushed = std::fflush(file_) == 0;
  const int saved_errno = errno;
  bool closed = true;
  if (owned_) closed = std::fclose(file_) == 0;
  file_ = nullptr;
  check<IoError>(flushed && closed, "cannot write to ", name_, ": ", std::strerror(saved_errno));
}

void append_float(std::string& out, float value) {
  if (!std::isfinite(value)) {
    out += "null";
    return;
  }
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, result.ptr);
}

std::string json_quote(std::string_view text) { return nlohmann::json(std::string(text)).dump(); }

std::string one_line(std::string_view text) {
  std::string line(text);
  for (char& c : line) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return line;
}

}  // namespace scalebert::cli
