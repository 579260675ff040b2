#include "dist/gradient_all_reduce.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace scalebert::dist {

GradientAllReduce::GradientAllReduce(const Communicator& world, int64_t elements, std::vector<RowSparseRegion> sparse)
    : world_(world), elements_(elements), sparse_(std::move(sparse)) {
  std::sort(sparse_.begin(), sparse_.end(),
            [](const RowSparseRegion& a, const RowSparseRegion& b) { return a.offset < b.offset; });
  int64_t covered = 0;
  for (const RowSparseRegion& region : sparse_) {
    check(region.rows >= 0 && region.width > 0 && region.offset >= covered &&
              region.offset + region.rows * region.width <= elements,
          "row-sparse region at element ", region.offset, " (", region.rows, " x ", region.width,
          ") is outside the gradient arena of ", elements, " elements or overlaps another region");
    covered = region.offset + region.rows * region.width;
  }
}

int64_t GradientAllReduce::run(float* gradients) {
  if (!world_.distributed()) return 0;
  int64_t sent = 0;
  int64_t dense_begin = 0;
  const auto reduce_dense = [&](int64_t end) {
    world_.all_reduce_sum(gradients + dense_begin, end - dense_begin);
    sent += end - dense_begin;
  };
  for (const RowSparseRegion& region : sparse_) {
    reduce_dense(region.offset);
    float* table = gradients + region.offset;
    used_.assign(static_cast<size_t>(region.rows), 0);
    for (int64_t row = 0; row < region.rows; ++row) {
      const float* values = table + row * region.width;
      used_[static_cast<size_t>(row)] =
          std::any_of(values, values + region.width, [](float value) { return value != 0.0f; }) ? 1 : 0;
    }
    world_.all_reduce_max(used_.data(), region.rows);
    const auto used_rows = static_cast<int64_t>(std::count(used_.begin(), used_.end(), uint8_t{1}));
    packed_.resize(static_cast<size_t>(used_rows * region.width));
    int64_t next = 0;
    for (int64_t row = 0; row < region.rows; ++row) {
      if (!used_[static_cast<size_t>(row)]) continue;
      std::memcpy(packed_.data() + next * region.width, table + row * region.width,
                  static_cast<size_t>(region.width) * sizeof(float));
      ++next;
    }
    world_.all_reduce_sum(packed_.data(), used_rows * region.width);
    sent += used_rows * region.width;
    next = 0;
    for (int64_t row = 0; row < region.rows; ++row) {
      if (!used_[static_cast<size_t>(row)]) continue;  // zero on every rank: the sum is zero
      std::memcpy(table + row * region.width, packed_.data() + next * region.width,
                  static_cast<size_t>(region.width) * sizeof(float));
      ++next;
    }
    dense_begin = region.offset + region.rows * region.width;
  }
  reduce_dense(elements_);
  return sent;
}

}  // namespace scalebert::dist
