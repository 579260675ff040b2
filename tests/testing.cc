// Shared helpers for tests.
#include "testing.h"

#include <cmath>
#include <cstdlib>

namespace scalebert::testing {

std::filesystem::path source_dir() { return SCALEBERT_SOURCE_DIR; }

std::filesystem::path fixtures_dir() {
  if (const char* override_dir = std::getenv("SCALEBERT_FIXTURES")) return override_dir;
  return std::filesystem::path(SCALEBERT_BINARY_DIR) / "fixtures";
}

std::filesystem::path shared_dir() {
  if (const char* override_dir = std::getenv("SCALEBERT_SHARED")) return override_dir;
  std::filesystem::path candidate = source_dir().parent_path() / "shared";
  return std::filesystem::exists(candidate / "data") ? candidate : std::filesystem::path();
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  a.expect(b.shape(), DType::kF32, "max_abs_diff left operand");
  b.expect(a.shape(), DType::kF32, "max_abs_diff right operand");
  const float* left = a.data<float>();
  const float* right = b.data<float>();
  float worst = 0.0f;
  for (int64_t i = 0; i < a.numel(); ++i) {
    float difference = std::fabs(left[i] - right[i]);
    if (std::isnan(difference)) return INFINITY;
    if (difference > worst) worst = difference;
  }
  return worst;
}

}  // namespace scalebert::testing
