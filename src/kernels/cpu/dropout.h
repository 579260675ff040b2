// Dropout with a counter-based generator (Philox4x32-10, Salmon et al. 2011, as in Random123 and
// cuRAND): element e of a dropout site draws word e % 4 of Philox(counter = e / 4, key = seed), so a
// mask depends only on (seed, offset + i), never on thread count or chunking, and backward
// recomputes it instead of storing it.
//
// Gradient convention: dropout_backward OVERWRITES din (an activation gradient); there are no
// parameters.
//
// Counter layout: a site that drops n elements with offset o uses element indices o .. o + n - 1.
// Callers give each site of a step its own index range (e.g. a running offset advanced by n per
// site) and each step its own seed or offset range; two sites with overlapping ranges and the same
// seed get correlated masks.
#pragma once

#include <array>
#include <cstdint>

namespace scalebert::kernels {

// One Philox4x32-10 block: 10 rounds of the multiply-xor bijection with a Weyl key schedule.
inline std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
  constexpr uint32_t kMultiplier0 = 0xD2511F53u;
  constexpr uint32_t kMultiplier1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u;
  constexpr uint32_t kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kWeyl0;
      key[1] += kWeyl1;
    }
    const uint64_t product0 = static_cast<uint64_t>(kMultiplier0) * counter[0];
    const uint64_t product1 = static_cast<uint64_t>(kMultiplier1) * counter[2];
    counter = {static_cast<uint32_t>(product1 >> 32) ^ counter[1] ^ key[0], static_cast<uint32_t>(product1),
               static_cast<uint32_t>(product0 >> 32) ^ counter[3] ^ key[1], static_cast<uint32_t>(product0)};
  }
  return counter;
}

// The four 32-bit words of block `block` (element indices 4*block .. 4*block + 3) for `seed`.
inline std::array<uint32_t, 4> dropout_block_words(uint64_t seed, uint64_t block) {
  return philox4x32_10({static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u},
                       {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
}

// Words >= threshold are kept: threshold = round(p * 2^32), so P(keep) = 1 - p to within 2^-32.
// Throws InvalidArgument unless 0 <= p <= 1.
uint64_t dropout_threshold(float p);

// Scale applied to kept elements: 1 / (1 - p), and 0 for p == 1 (nothing is kept).
float dropout_scale(float p);

// Whether element `index` of the counter space is kept (slow single-element form for references
// and tests; the kernels generate four elements per Philox block).
inline bool dropout_keep(uint64_t seed, uint64_t index, uint64_t threshold) {
  return dropout_block_words(seed, index >> 2)[index & 3] >= threshold;
}

// mask: (n) <- dropout_scale(p) where element offset + i is kept, else 0.
void dropout_mask(float* mask, int64_t n, float p, uint64_t seed, uint64_t offset);

// bits: (dropout_keep_words(n)) <- the keep bits of elements offset .. offset + n - 1: bit i % 64 of
// bits[i / 64] is dropout_keep(seed, offset + i, threshold); the last word's unused bits are zero
// and one more zero word follows (so dropout_keep16 may read past the end). Runs on the calling
// thread: for kernels that apply one mask to many short rows inside their own parallel loop.
int64_t dropout_keep_words(int64_t n);
void dropout_keep_bits(uint64_t* bits, int64_t n, float p, uint64_t seed, uint64_t offset);

// The 16 keep bits of elements index .. index + 15 of a dropout_keep_bits array (bit l = element
// index + l; bits past the array's n are zero).
inline uint32_t dropout_keep16(const uint64_t* bits, int64_t index) {
  const int64_t word = index >> 6;
  const int shift = static_cast<int>(index & 63);
  uint64_t value = bits[word] >> shift;
  if (shift > 48) value |= bits[word + 1] << (64 - shift);
  return static_cast<uint32_t>(value & 0xFFFFu);
}

// out: (n) <- in * mask(seed, offset) with mask as dropout_mask writes it; out == in is allowed.
// p == 0 copies. Throws InvalidArgument unless n >= 0 and 0 <= p <= 1.
void dropout_forward(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t offset);

// Forward: out[i] = in[i] * mask[i]          =>  din[i] = dout[i] * mask[i], same mask recomputed.
// din: (n) OVERWRITTEN; din == dout is allowed.
void dropout_backward(float* din, const float* dout, int64_t n, float p, uint64_t seed, uint64_t offset);

}  // namespace scalebert::kernels
