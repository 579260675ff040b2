// `scalebert data`: converts the shared financial datasets into the training formats, and builds
// a WordPiece vocabulary from a corpus.
#pragma once

#include <string>
#include <vector>

namespace scalebert::cli {

// `args` are the arguments after "data" (subcommand first). Returns the exit code; throws
// UsageError for a wrong command line and scalebert::Error for failures, as every command.
int run_data_command(const std::vector<std::string>& args);

}  // namespace scalebert::cli
