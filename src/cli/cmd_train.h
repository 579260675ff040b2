// `scalebert train`: fine-tune or pretrain a BERT model from a JSON config file and/or flags.
#pragma once

#include <string>
#include <vector>

namespace scalebert::cli {

// `args` are the words after "train". Every training config key is also a flag (--learning-rate
// 3e-5; booleans as --shuffle / --no-shuffle); --config FILE reads a JSON config that flags
// override. Returns 0 when the run finished (or stopped at stop_after_steps), 130 when Ctrl-C or
// SIGTERM stopped it (checkpoint-last was saved first). Throws UsageError for a wrong command
// line and scalebert::Error for failures, as every command.
int run_train_command(const std::vector<std::string>& args);

}  // namespace scalebert::cli
