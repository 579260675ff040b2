// Dropout kernels: Philox blocks generated 16 at a time (one AVX-512 lane per block, 64 elements),
// compared with the threshold into a 64-bit keep mask, and applied 16 floats per masked multiply.
// Every element's mask is the one dropout_keep() (the scalar reference) gives it, whatever the
// chunking or the alignment of the offset.
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

// Keep bits of one 64-element group: bit j of the result is dropout_keep(seed, 64 * group + j,
// threshold), i.e. word j % 4 of Philox block 16 * group + j / 4 compared with the threshold.
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

// Spreads the 16 bits of `bits` to positions shift, shift + 4, ..., shift + 60 (PDEP where BMI2 exists).
inline uint64_t spread_every_fourth(uint32_t bits, int shift) {
#ifdef __BMI2__
  return _pdep_u64(bits, 0x1111111111111111ull << shift);
#else
  uint64_t out = 0;
  for (int b = 0; b < 16; ++b) out |= static_cast<uint64_t>((bits >> b) & 1u) << (4 * b + shift);
  return out;
#endif
}

// Philox4x32-10 on 16 blocks at once (one per lane), then four unsigned compares: lane b of word w
// is element 4 b + w of the group.
uint64_t group_keep_bits(uint64_t seed, uint64_t group, uint64_t threshold) {
  if (threshold > 0xFFFFFFFFull) return 0;  // p == 1: no 32-bit word reaches 2^32
  const uint64_t block0 = 16 * group;
  // Blocks block0 .. block0 + 15 never carry into the high word: block0 is a multiple of 16.
  __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(block0))),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  __m512i c1 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(block0 >> 32)));
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
  const __m512i t = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(threshold)));
  return spread_every_fourth(_mm512_cmpge_epu32_mask(c0, t), 0) | spread_every_fourth(_mm512_cmpge_epu32_mask(c1, t), 1) |
         spread_every_fourth(_mm512_cmpge_epu32_mask(c2, t), 2) | spread_every_fourth(_mm512_cmpge_epu32_mask(c3, t), 3);
}
#else
uint64_t group_keep_bits(uint64_t seed, uint64_t group, uint64_t threshold) {
  uint64_t bits = 0;
  for (uint64_t b = 0; b < 16; ++b) {
    const std::array<uint32_t, 4> words = dropout_block_words(seed, 16 * group + b);
    for (uint64_t w = 0; w < 4; ++w) bits |= static_cast<uint64_t>(words[w] >= threshold) << (4 * b + w);
  }
  return bits;
}
#endif

constexpr int64_t kRun = 1024;  // elements whose keep bits are gathered at once (16 words)

// bits[k] bit j = keep of counter index first + 64 k + j, for the n <= kRun elements from `first`:
// the aligned groups' bits shifted down by first % 64.
void keep_bits(uint64_t seed, uint64_t first, int64_t n, uint64_t threshold, uint64_t bits[kRun / 64]) {
  const uint64_t group0 = first / 64;
  const int shift = static_cast<int>(first % 64);
  const int64_t words = (n + 63) / 64;
  uint64_t current = group_keep_bits(seed, group0, threshold);  // the group word k starts in
  for (int64_t k = 0; k < words; ++k) {
    const int64_t count = std::min<int64_t>(64, n - 64 * k);
    if (shift == 0) {
      bits[k] = current;
      if (k + 1 < words) current = group_keep_bits(seed, group0 + k + 1, threshold);
    } else {
      // Elements 64 - shift .. count - 1 of word k lie in the next group.
      const uint64_t next = shift + count > 64 ? group_keep_bits(seed, group0 + k + 1, threshold) : 0;
      bits[k] = (current >> shift) | (next << (64 - shift));
      current = next;
    }
  }
}

// Calls visit(i, keep16, count) for i in [begin, end) in steps of 16 (count < 16 only at the end):
// bit l of keep16 is the keep bit of element i + l, at counter index offset + i + l.
template <typename Visit>
void for_each_keep16(int64_t begin, int64_t end, uint64_t seed, uint64_t offset, uint64_t threshold, Visit&& visit) {
  uint64_t bits[kRun / 64];
  for (int64_t run = begin; run < end; run += kRun) {
    const int64_t n = std::min(kRun, end - run);
    keep_bits(seed, offset + static_cast<uint64_t>(run), n, threshold, bits);
    for (int64_t j = 0; j < n; j += 16) {
      const uint32_t keep16 = static_cast<uint32_t>(bits[j / 64] >> (j % 64)) & 0xFFFFu;
      visit(run + j, keep16, std::min<int64_t>(16, n - j));
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
    for_each_keep16(begin, end, seed, offset, threshold, [&](int64_t i, uint32_t keep16, int64_t count) {
#ifdef __AVX512F__
      const __mmask16 lanes = simd::tail_mask(count);
      const __m512 x = _mm512_maskz_loadu_ps(lanes, in + i);
      _mm512_mask_storeu_ps(out + i, lanes,
                            _mm512_maskz_mul_ps(static_cast<__mmask16>(keep16), x, _mm512_set1_ps(scale)));
#else
      for (int64_t l = 0; l < count; ++l) out[i + l] = (keep16 >> l) & 1u ? in[i + l] * scale : 0.0f;
#endif
    });
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
    for_each_keep16(begin, end, seed, offset, threshold, [&](int64_t i, uint32_t keep16, int64_t count) {
#ifdef __AVX512F__
      _mm512_mask_storeu_ps(mask + i, simd::tail_mask(count),
                            _mm512_maskz_mov_ps(static_cast<__mmask16>(keep16), _mm512_set1_ps(scale)));
#else
      for (int64_t l = 0; l < count; ++l) mask[i + l] = (keep16 >> l) & 1u ? scale : 0.0f;
#endif
    });
  });
}

int64_t dropout_keep_words(int64_t n) { return (std::max<int64_t>(n, 0) + 63) / 64 + 1; }

void dropout_keep_bits(uint64_t* bits, int64_t n, float p, uint64_t seed, uint64_t offset) {
  check(n >= 0, "dropout_keep_bits: n must be >= 0, got ", n);
  const uint64_t threshold = dropout_threshold(p);
  for (int64_t run = 0; run < n; run += kRun) {  // kRun is a multiple of 64: runs fill whole words
    const int64_t count = std::min(kRun, n - run);
    keep_bits(seed, offset + static_cast<uint64_t>(run), count, threshold, bits + run / 64);
  }
  if (n % 64 != 0) bits[n / 64] &= (uint64_t{1} << (n % 64)) - 1;
  bits[dropout_keep_words(n) - 1] = 0;
}

void dropout_forward(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t offset) {
  apply_mask(out, in, n, p, seed, offset, "dropout_forward");
}

void dropout_backward(float* din, const float* dout, int64_t n, float p, uint64_t seed, uint64_t offset) {
  apply_mask(din, dout, n, p, seed, offset, "dropout_backward");
}

}  // namespace scalebert::kernels
