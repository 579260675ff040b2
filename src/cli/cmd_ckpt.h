// `scalebert ckpt save|ls|verify|repair|gc|export`: the checkpoint store from the command line.
#pragma once

#include <string>
#include <vector>

namespace scalebert::cli {

// `args` are the words after "ckpt". Returns the exit code: 0 on success; 1 when verify finds a
// bad replica or repair cannot restore everything (the report says which). Prints usage on
// --help. Throws scalebert errors (InvalidArgument for a bad command line, IoError, ...) for
// failures; main turns them into exit code 1.
int run_ckpt_command(const std::vector<std::string>& args);

}  // namespace scalebert::cli
