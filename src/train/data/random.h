// Seeded, counter-based random numbers for the data pipeline: every draw is a pure function of
// (seed, stream keys), so data order and masking are reproducible across runs, batch sizes,
// ranks and resumes, and never depend on what was drawn before.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace scalebert::train::data {

// SplitMix64 finalizer (Steele, Lea, Flood 2014): a bijective avalanche of 64 bits.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// One 64-bit key from a seed and any number of stream keys (epoch, example index, ...). Each key
// is folded in through the mixer, so (1, 2) and (2, 1) give unrelated streams.
inline uint64_t derive_key(uint64_t seed, std::initializer_list<uint64_t> keys) {
  uint64_t state = mix64(seed ^ 0x5CA1AB1Eull);
  for (uint64_t key : keys) state = mix64(state ^ mix64(key + 0x632BE59BD9B4E019ull));
  return state;
}

// xoshiro256** (Blackman & Vigna 2018) seeded from one derived key through SplitMix64, as its
// authors recommend. Small, fast, and identical on every platform (std:: distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t key) {
    // SplitMix64 stream: mix64 adds the golden-ratio increment itself.
    for (uint64_t& word : state_) {
      word = mix64(key);
      key += 0x9E3779B97F4A7C15ull;
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform integer in [0, bound), bound > 0, without modulo bias (Lemire 2019, with rejection).
  uint64_t uniform(uint64_t bound) {
    __extension__ typedef unsigned __int128 Wide;  // GCC/Clang extension; -Wpedantic accepts it so marked
    Wide product = static_cast<Wide>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(product);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        product = static_cast<Wide>(next()) * bound;
        low = static_cast<uint64_t>(product);
      }
    }
    return static_cast<uint64_t>(product >> 64);
  }

  // Uniform double in [0, 1) with 53 random bits.
  double uniform_double() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace scalebert::train::data
