// Dropout kernels: Philox blocks generated four elements at a time over chunks aligned to block
// boundaries, so every element's mask is the one dropout_keep() gives it.
#include "kernels/cpu/dropout.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu/parallel.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel chunk, a multiple of 4

// Calls visit(i, keep) for i in [begin, end) (element indices relative to the site), elements at
// counter index offset + i. Generates one Philox block per 4 counter indices.
template <typename Visit>
void for_each_keep(int64_t begin, int64_t end, uint64_t seed, uint64_t offset, uint64_t threshold, Visit&& visit) {
  int64_t i = begin;
  while (i < end) {
    const uint64_t index = offset + static_cast<uint64_t>(i);
    const std::array<uint32_t, 4> words = dropout_block_words(seed, index >> 2);
    for (uint64_t lane = index & 3; lane < 4 && i < end; ++lane, ++i) visit(i, words[lane] >= threshold);
  }
}

// out[i] = in[i] * (kept ? scale : 0) over n elements, parallel over chunks.
void apply_mask(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t offset, const char* who) {
  check(n >= 0, who, ": n must be >= 0, got ", n);
  const uint64_t threshold = dropout_threshold(p);
  const float scale = dropout_scale(p);
  if (threshold == 0) {  // p == 0: identity
    if (out != in && n > 0) std::memmove(out, in, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    for_each_keep(begin, end, seed, offset, threshold,
                  [&](int64_t i, bool keep) { out[i] = keep ? in[i] * scale : 0.0f; });
  });
}

}  // namespace

uint64_t dropout_threshold(float p) {
  check(p >= 0.0f && p <= 1.0f, "dropout probability must be in [0, 1], got ", p);
  return static_cast<uint64_t>(std::llround(static_cast<double>(p) * 4294967296.0));
}

float dropout_scale(float p) {
  check(p >= 0.0f && p <= 1.0f, "dropout probability must be in [0, 1], got ", p);
  return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

void dropout_mask(float* mask, int64_t n, float p, uint64_t seed, uint64_t offset) {
  check(n >= 0, "dropout_mask: n must be >= 0, got ", n);
  const uint64_t threshold = dropout_threshold(p);
  const float scale = dropout_scale(p);
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    for_each_keep(begin, end, seed, offset, threshold, [&](int64_t i, bool keep) { mask[i] = keep ? scale : 0.0f; });
  });
}

void dropout_forward(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t offset) {
  apply_mask(out, in, n, p, seed, offset, "dropout_forward");
}

void dropout_backward(float* din, const float* dout, int64_t n, float p, uint64_t seed, uint64_t offset) {
  apply_mask(din, dout, n, p, seed, offset, "dropout_backward");
}

}  // namespace scalebert::kernels
