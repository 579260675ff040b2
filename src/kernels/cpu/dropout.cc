// Dropout kernels: Philox blocks generated 16 at a time (one AVX-512 lane per block), so every
// element's mask is the one dropout_keep() gives it, whatever the chunking.
#include "kernels/cpu/dropout.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_avx512.h"

namespace scalebert::kernels {
namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel chunk, a multiple of 4

constexpr int64_t kBlocks = 16;  // Philox blocks generated together: 64 elements

// words[w][b] = word w of Philox block block0 + b, for b < 16 (the same values dropout_block_words gives).
#ifdef __AVX512F__
// One 32x32 -> 64-bit product per lane: lo by VPMULLD, hi from VPMULUDQ on the even lanes and on the
// odd lanes shifted down, blended back into place.
inline void multiply_high_low(__m512i a, __m512i multiplier, __m512i& high, __m512i& low) {
  low = _mm512_mullo_epi32(a, multiplier);
  // The maskz forms (all lanes selected) avoid GCC 12's false -Wuninitialized on the plain forms'
  // undefined pass-through operand.
  const __mmask8 all = 0xFF;
  const __m512i even = _mm512_maskz_srli_epi64(all, _mm512_maskz_mul_epu32(all, a, multiplier), 32);
  const __m512i odd = _mm512_maskz_mul_epu32(all, _mm512_maskz_srli_epi64(all, a, 32), multiplier);
  high = _mm512_mask_blend_epi32(static_cast<__mmask16>(0xAAAA), even, odd);
}

void philox_blocks(uint64_t seed, uint64_t block0, uint32_t words[4][kBlocks]) {
  alignas(64) uint32_t low[kBlocks], high[kBlocks];
  for (int64_t b = 0; b < kBlocks; ++b) {
    const uint64_t block = block0 + static_cast<uint64_t>(b);
    low[b] = static_cast<uint32_t>(block);
    high[b] = static_cast<uint32_t>(block >> 32);
  }
  __m512i c0 = _mm512_load_si512(low), c1 = _mm512_load_si512(high);
  __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
  uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    __m512i high0, low0, high1, low1;
    multiply_high_low(c0, m0, high0, low0);
    multiply_high_low(c2, m1, high1, low1);
    const __m512i k0 = _mm512_set1_epi32(static_cast<int>(key0)), k1 = _mm512_set1_epi32(static_cast<int>(key1));
    c0 = _mm512_xor_si512(_mm512_xor_si512(high1, c1), k0);
    c1 = low1;
    c2 = _mm512_xor_si512(_mm512_xor_si512(high0, c3), k1);
    c3 = low0;
  }
  _mm512_storeu_si512(words[0], c0);
  _mm512_storeu_si512(words[1], c1);
  _mm512_storeu_si512(words[2], c2);
  _mm512_storeu_si512(words[3], c3);
}
#else
void philox_blocks(uint64_t seed, uint64_t block0, uint32_t words[4][kBlocks]) {
  for (int64_t b = 0; b < kBlocks; ++b) {
    const std::array<uint32_t, 4> block = dropout_block_words(seed, block0 + static_cast<uint64_t>(b));
    for (int w = 0; w < 4; ++w) words[w][b] = block[w];
  }
}
#endif

// Calls visit(i, keep) for i in [begin, end) (element indices relative to the site), element i at
// counter index offset + i: word (offset + i) % 4 of block (offset + i) / 4. Blocks are generated
// 16 at a time.
template <typename Visit>
void for_each_keep(int64_t begin, int64_t end, uint64_t seed, uint64_t offset, uint64_t threshold, Visit&& visit) {
  int64_t i = begin;
  while (i < end) {
    const uint64_t first = offset + static_cast<uint64_t>(i);
    const uint64_t block0 = first >> 2;
    uint32_t words[4][kBlocks];
    philox_blocks(seed, block0, words);
    const int64_t count = std::min<int64_t>(end - i, static_cast<int64_t>(4 * (block0 + kBlocks) - first));
    for (int64_t k = 0; k < count; ++k, ++i) {
      const uint64_t index = first + static_cast<uint64_t>(k);
      visit(i, words[index & 3][(index >> 2) - block0] >= threshold);
    }
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
