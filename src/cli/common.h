// Pieces every scalebert command shares: the command table, pipeline options from the common
// flags, output files, and compact JSON number formatting.
#pragma once

#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "cli/args.h"
#include "pipeline/text_pipeline.h"

namespace scalebert::cli {

// Each command parses its own arguments (after the command name) and returns the exit code.
int run_info(std::span<char* const> args);
int run_tokenize(std::span<char* const> args);
int run_embed(std::span<char* const> args);
int run_classify(std::span<char* const> args);
int run_search(std::span<char* const> args);
int run_features(std::span<char* const> args);
int run_train_head(std::span<char* const> args);
int run_quantize(std::span<char* const> args);
int run_serve(std::span<char* const> args);

// Applies --threads and builds the pipeline options from --batch-size and --max-length (UsageError
// for a malformed value).
pipeline::PipelineOptions pipeline_options(const ArgParser& args);

// Standard output ("-" or empty path) or a file; write errors are IoErrors naming the destination.
class Output {
 public:
  explicit Output(const std::string& path);
  ~Output();
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;
  void write(std::string_view text);
  // Flushes and closes, reporting a failed write (disk full) as IoError.
  void close();
  const std::string& name() const { return name_; }

 private:
  std::FILE* file_ = nullptr;
  bool owned_ = false;
  std::string name_;
};

// Shortest text that reads back as the same float (std::to_chars), JSON-safe (non-finite -> null).
void append_float(std::string& out, float value);
// A JSON string literal with escapes.
std::string json_quote(std::string_view text);
// Text on one line for human-readable output: line breaks and tabs become spaces.
std::string one_line(std::string_view text);

}  // namespace scalebert::cli
