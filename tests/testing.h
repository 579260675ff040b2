// Shared helpers for tests: paths to sources, fixtures and ../shared, and float comparisons.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/tensor.h"

namespace scalebert::testing {

// The repository root (compiled in).
std::filesystem::path source_dir();
// Where reference/make_fixtures.py writes generated ground truth (under the build tree).
std::filesystem::path fixtures_dir();
// ../shared next to the repository; empty path when absent (a user's fresh clone has none).
std::filesystem::path shared_dir();

// Largest |a - b| over all elements; both tensors F32 with equal shapes.
float max_abs_diff(const Tensor& a, const Tensor& b);

// Runs `action`, requiring it to throw ErrorType (or a subclass) whose message contains every one of
// `fragments`; another exception type, or none, is a test failure.
template <typename ErrorType, typename Action>
void expect_error(Action&& action, const std::vector<std::string>& fragments) {
  try {
    action();
  } catch (const ErrorType& error) {
    const std::string message = error.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos) << "message \"" << message << "\" lacks \"" << fragment << "\"";
    }
    return;
  } catch (const std::exception& error) {
    ADD_FAILURE() << "wrong exception type: " << error.what();
    return;
  }
  ADD_FAILURE() << "no exception thrown; expected one mentioning \"" << fragments.at(0) << "\"";
}

}  // namespace scalebert::testing
