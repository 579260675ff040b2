// Gradient utilities: norms, clipping, accumulation scaling, zeroing and finiteness checks over the
// flat gradient arena.
#include "train/grad_utils.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/parallel.h"

namespace scalebert::train {

namespace {

// Views a whole arena of the table's layout as floats, checking its shape.
float* arena_data(const ParameterTable& table, const Tensor& arena, const char* what) {
  arena.expect({table.total_elements()}, DType::kF32, what);
  return const_cast<float*>(arena.data<float>());
}

}  // namespace

double squared_sum(const float* x, int64_t n) {
  constexpr int kLanes = 16;
  double lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += static_cast<double>(x[i + j]) * x[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) lanes[j] += static_cast<double>(x[i]) * x[i];
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  }
  return lanes[0];
}

std::vector<ArenaPiece> arena_pieces(const ParameterTable& table, int64_t begin, int64_t end) {
  check(0 <= begin && begin <= end && end <= table.total_elements(), "arena range [", begin, ", ", end,
        ") is not inside the parameter arena [0, ", table.total_elements(), ")");
  std::vector<ArenaPiece> pieces;
  const std::vector<ParameterEntry>& entries = table.entries();
  for (size_t index = 0; index < entries.size(); ++index) {
    const int64_t first = std::max(begin, entries[index].offset);
    const int64_t last = std::min(end, entries[index].offset + shape_numel(entries[index].shape));
    for (int64_t start = first; start < last; start += kArenaPieceElements) {
      pieces.push_back(ArenaPiece{start, std::min(last, start + kArenaPieceElements), index});
    }
  }
  return pieces;
}

double sum_of_squares(const ParameterTable& table, const Tensor& arena, int64_t begin, int64_t end) {
  const float* data = arena_data(table, arena, "sum_of_squares arena");
  const std::vector<ArenaPiece> pieces = arena_pieces(table, begin, end);
  std::vector<double> partial(pieces.size(), 0.0);  // (pieces) one sum per piece, added in order below
  kernels::parallel_chunks(static_cast<int64_t>(pieces.size()), 1, [&, data](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) {
      partial[p] = squared_sum(data + pieces[p].begin, pieces[p].end - pieces[p].begin);
    }
  });
  double total = 0.0;
  for (double sum : partial) total += sum;
  return total;
}

double global_norm(const ParameterTable& table, const Tensor& arena) {
  return std::sqrt(sum_of_squares(table, arena, 0, table.total_elements()));
}

std::optional<NonFiniteValue> find_non_finite(const ParameterTable& table, const Tensor& arena) {
  const float* data = arena_data(table, arena, "finiteness check arena");
  const std::vector<ArenaPiece> pieces = arena_pieces(table, 0, table.total_elements());
  constexpr int64_t kNone = -1;
  std::vector<int64_t> first_bad(pieces.size(), kNone);  // (pieces) arena index of the first bad element
  kernels::parallel_chunks(static_cast<int64_t>(pieces.size()), 1, [&, data](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) {
      for (int64_t i = pieces[p].begin; i < pieces[p].end; ++i) {
        if (!std::isfinite(data[i])) {
          first_bad[p] = i;
          break;
        }
      }
    }
  });
  for (size_t p = 0; p < pieces.size(); ++p) {
    if (first_bad[p] == kNone) continue;
    const ParameterEntry& entry = table.entries()[pieces[p].entry];
    return NonFiniteValue{entry.name, first_bad[p] - entry.offset, data[first_bad[p]]};
  }
  return std::nullopt;
}

void check_finite(const ParameterTable& table, const Tensor& arena, const std::string& what) {
  const std::optional<NonFiniteValue> bad = find_non_finite(table, arena);
  if (!bad) return;
  const ParameterEntry& entry = table.entry(bad->parameter);
  throw NonFiniteError(str_cat(what, ": parameter \"", bad->parameter, "\" element ", bad->index, " of shape ",
                               shape_string(entry.shape), " is ", bad->value),
                       bad->parameter);
}

ClipResult clip_grad_norm(const ParameterTable& table, Tensor grads, double max_norm) {
  const ClipResult clip = clip_coefficient(table, grads, max_norm);
  if (clip.scale < 1.0) scale_arena(std::move(grads), static_cast<float>(clip.scale));
  return clip;
}

ClipResult clip_coefficient(const ParameterTable& table, const Tensor& grads, double max_norm) {
  check(std::isfinite(max_norm) && max_norm > 0.0, "gradient clipping max_norm must be positive and finite, got ",
        max_norm);
  const double total_norm = global_norm(table, grads);
  if (!std::isfinite(total_norm)) {
    check_finite(table, grads, "gradient clipping");
    // Every element finite but the sum of squares overflowed double: impossible for F32 arenas
    // under 2^900 elements, kept so the function can never return a non-finite norm.
    throw NonFiniteError(str_cat("gradient clipping: global gradient norm is ", total_norm), "");
  }
  return clip_coefficient_of_norm(total_norm, max_norm);
}

ClipResult clip_coefficient_of_norm(double total_norm, double max_norm) {
  check(std::isfinite(max_norm) && max_norm > 0.0, "gradient clipping max_norm must be positive and finite, got ",
        max_norm);
  const double coefficient = max_norm / (total_norm + 1e-6);
  return ClipResult{total_norm, std::min(coefficient, 1.0)};
}

void scale_arena(Tensor arena, float factor) {
  check(arena.dtype() == DType::kF32 && arena.rank() == 1, "scale_arena: expected a flat F32 arena, got ",
        dtype_name(arena.dtype()), " ", shape_string(arena.shape()));
  float* data = arena.data<float>();
  kernels::parallel_chunks(arena.numel(), kArenaPieceElements, [data, factor](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) data[i] *= factor;
  });
}

void average_accumulated_gradients(Tensor grads, int64_t micro_batches) {
  check(micro_batches >= 1, "gradient accumulation needs at least 1 micro-batch, got ", micro_batches);
  if (micro_batches == 1) return;
  scale_arena(grads, static_cast<float>(1.0 / static_cast<double>(micro_batches)));
}

void zero_arena(Tensor arena) {
  check(arena.dtype() == DType::kF32 && arena.rank() == 1, "zero_arena: expected a flat F32 arena, got ",
        dtype_name(arena.dtype()), " ", shape_string(arena.shape()));
  std::memset(arena.raw(), 0, arena.nbytes());
}

}  // namespace scalebert::train
