// Command-line flags of the scalebert tool: a small declarative parser (--name VALUE, --name=VALUE,
// boolean flags, positional arguments, generated --help) whose mistakes are UsageErrors (exit 2).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"

namespace scalebert::cli {

// The command line itself is wrong (unknown flag, missing value or argument): exit code 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

class ArgParser {
 public:
  // `command` as typed after "scalebert" (e.g. "embed"); `summary` is the first line of --help.
  ArgParser(std::string command, std::string summary);

  // An option taking a value; `default_value` empty with `required` false means "unset".
  ArgParser& option(const std::string& name, const std::string& metavar, const std::string& help,
                    const std::string& default_value = "", bool required = false);
  ArgParser& required(const std::string& name, const std::string& metavar, const std::string& help) {
    return option(name, metavar, help, "", true);
  }
  // A boolean flag (false unless given).
  ArgParser& flag(const std::string& name, const std::string& help);
  // A required positional argument, in declaration order.
  ArgParser& positional(const std::string& name, const std::string& help);
  // Free text appended to --help (examples, formats).
  ArgParser& epilog(const std::string& text);

  // --threads, --batch-size, --max-length, --progress.
  ArgParser& common_options();

  // Parses the arguments after the command name. Returns false when --help/-h was given (the help
  // was printed to stdout); throws UsageError naming the offending flag otherwise.
  bool parse(std::span<char* const> args);
  std::string help() const;

  bool given(const std::string& name) const;  // set on the command line (flags: present)
  bool flag_set(const std::string& name) const { return given(name); }
  // The value, or the default; empty when unset.
  std::string get(const std::string& name) const;
  // The value as an integer >= minimum; UsageError naming the flag otherwise.
  int64_t get_int(const std::string& name, int64_t minimum) const;
  std::string positional_value(const std::string& name) const;

 private:
  struct Spec {
    std::string name, metavar, help, default_value;
    bool is_flag = false;
    bool required = false;
  };
  const Spec* find(const std::string& name) const;

  std::string command_, summary_, epilog_;
  std::vector<Spec> options_;
  std::vector<std::pair<std::string, std::string>> positionals_;  // (name, help)
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_values_;
};

}  // namespace scalebert::cli
