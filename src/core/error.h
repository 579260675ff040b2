// Typed errors for library code. Messages carry the offending values; only `main` turns these
// into exit codes and the server into HTTP status codes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace scalebert {

// Base of every ScaleBERT error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A caller passed a value the function cannot accept (bad shape, bad flag, bad option).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A file or text does not follow its format (safetensors header, config.json, vocab, UTF-8).
class FormatError : public Error {
 public:
  using Error::Error;
};

// The operating system refused: a file is missing, unreadable, or a write failed.
class IoError : public Error {
 public:
  using Error::Error;
};

// A feature that this build or this CPU does not have.
class Unsupported : public Error {
 public:
  using Error::Error;
};

// Concatenates any streamable values into one string: str_cat("shape ", 3, "x", 4).
template <typename... Parts>
std::string str_cat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

// Throws ErrorType with the concatenated message when `condition` is false.
template <typename ErrorType = InvalidArgument, typename... Parts>
void check(bool condition, Parts&&... parts) {
  if (!condition) throw ErrorType(str_cat(std::forward<Parts>(parts)...));
}

}  // namespace scalebert
