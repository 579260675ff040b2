// The scalebert flag parser and its --help text.
#include "cli/args.h"

#include <charconv>
#include <cstdio>

namespace scalebert::cli {

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

ArgParser& ArgParser::option(const std::string& name, const std::string& metavar, const std::string& help,
                             const std::string& default_value, bool required) {
  options_.push_back({name, metavar, help, default_value, false, required});
  return *this;
}

ArgParser& ArgParser::flag(const std::string& name, const std::string& help) {
  options_.push_back({name, "", help, "", true, false});
  return *this;
}

ArgParser& ArgParser::positional(const std::string& name, const std::string& help) {
  positionals_.emplace_back(name, help);
  return *this;
}

ArgParser& ArgParser::epilog(const std::string& text) {
  epilog_ = text;
  return *this;
}

ArgParser& ArgParser::common_options() {
  option("threads", "N", "threads for the kernels (0 = all cores)", "0");
  option("batch-size", "N", "sequences per forward pass (inputs are sorted by length first)", "32");
  option("max-length", "N",
         "tokens per sequence incl. [CLS]/[SEP], longer texts are truncated (default: the model's "
         "max_seq_length or max_position_embeddings, at most 512)");
  flag("progress", "draw a progress bar on stderr even when it is not a terminal");
  return *this;
}

const ArgParser::Spec* ArgParser::find(const std::string& name) const {
  for (const Spec& spec : options_) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

bool ArgParser::parse(std::span<char* const> args) {
  const std::string hint = str_cat(" (see 'scalebert ", command_, " --help')");
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (arg.size() > 2 && arg.substr(0, 2) == "--") {
      std::string_view body = arg.substr(2);
      std::optional<std::string> value;
      const size_t equals = body.find('=');
      if (equals != std::string_view::npos) value = std::string(body.substr(equals + 1));
      const std::string name(body.substr(0, equals));
      const Spec* spec = find(name);
      if (spec == nullptr) throw UsageError(str_cat("unknown option --", name, " for '", command_, "'", hint));
      if (spec->is_flag) {
        if (value) throw UsageError(str_cat("option --", name, " takes no value, got '", *value, "'", hint));
        values_.insert_or_assign(name, std::string(1, '1'));
        continue;
      }
      if (!value) {
        if (i + 1 >= args.size()) throw UsageError(str_cat("option --", name, " needs a value (", spec->metavar, ")", hint));
        value = args[++i];
      }
      values_[name] = *value;
      continue;
    }
    if (arg.size() > 1 && arg[0] == '-' && arg != "-") {
      throw UsageError(str_cat("unknown option ", arg, " for '", command_, "'", hint));
    }
    if (positional_values_.size() >= positionals_.size()) {
      throw UsageError(str_cat("unexpected argument '", arg, "' for '", command_, "'", hint));
    }
    positional_values_.emplace_back(arg);
  }
  if (positional_values_.size() < positionals_.size()) {
    throw UsageError(str_cat("missing argument ", positionals_[positional_values_.size()].first, " for '", command_,
                             "'", hint));
  }
  for (const Spec& spec : options_) {
    if (spec.required && !values_.count(spec.name)) {
      throw UsageError(str_cat("missing required option --", spec.name, " ", spec.metavar, " for '", command_, "'",
                               hint));
    }
  }
  return true;
}

std::string ArgParser::help() const {
  std::string text = str_cat("usage: scalebert ", command_);
  for (const auto& positional : positionals_) text += " " + positional.first;
  for (const Spec& spec : options_) {
    if (spec.required) text += str_cat(" --", spec.name, " ", spec.metavar);
  }
  text += " [options]\n\n" + summary_ + "\n";
  if (!positionals_.empty()) {
    text += "\narguments:\n";
    for (const auto& [name, help] : positionals_) text += str_cat("  ", name, "\n      ", help, "\n");
  }
  text += "\noptions:\n";
  for (const Spec& spec : options_) {
    text += str_cat("  --", spec.name, spec.metavar.empty() ? "" : " " + spec.metavar, "\n      ", spec.help);
    if (spec.required) text += " (required)";
    if (!spec.default_value.empty()) text += str_cat(" [default: ", spec.default_value, "]");
    text += "\n";
  }
  text += "  --help\n      show this help\n";
  if (!epilog_.empty()) text += "\n" + epilog_ + "\n";
  return text;
}

bool ArgParser::given(const std::string& name) const { return values_.count(name) > 0; }

std::string ArgParser::get(const std::string& name) const {
  if (auto found = values_.find(name); found != values_.end()) return found->second;
  const Spec* spec = find(name);
  return spec ? spec->default_value : std::string();
}

int64_t ArgParser::get_int(const std::string& name, int64_t minimum) const {
  const std::string text = get(name);
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value < minimum) {
    throw UsageError(str_cat("option --", name, " expects an integer >= ", minimum, ", got '", text, "'"));
  }
  return value;
}

std::string ArgParser::positional_value(const std::string& name) const {
  for (size_t i = 0; i < positionals_.size(); ++i) {
    if (positionals_[i].first == name && i < positional_values_.size()) return positional_values_[i];
  }
  return {};
}

}  // namespace scalebert::cli
