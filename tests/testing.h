// Shared helpers for tests: paths to sources, fixtures and ../shared, and float comparisons.
#pragma once

#include <filesystem>
#include <string>

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

}  // namespace scalebert::testing
