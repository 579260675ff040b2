// XXH64 as the specification states it: four accumulator lanes over 32-byte stripes, a merge of
// the lanes, then 8-, 4- and 1-byte tail steps and a final avalanche.
#include "io/store/checksum.h"

#include <bit>
#include <cstring>

#include "core/error.h"

namespace scalebert::store {

namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ull;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ull;

static_assert(std::endian::native == std::endian::little,
              "XXH64 reads little-endian words; a big-endian host would need byte swaps");

inline uint64_t read64(const unsigned char* bytes) {
  uint64_t value;
  std::memcpy(&value, bytes, 8);
  return value;
}
inline uint32_t read32(const unsigned char* bytes) {
  uint32_t value;
  std::memcpy(&value, bytes, 4);
  return value;
}

// acc = rotl(acc + lane * P2, 31) * P1
inline uint64_t round(uint64_t accumulator, uint64_t lane) {
  accumulator += lane * kPrime2;
  accumulator = std::rotl(accumulator, 31);
  return accumulator * kPrime1;
}

// acc = (acc ^ round(0, lane)) * P1 + P4
inline uint64_t merge(uint64_t accumulator, uint64_t lane) {
  accumulator ^= round(0, lane);
  return accumulator * kPrime1 + kPrime4;
}

// Consumes whole 32-byte stripes; returns how many bytes it used.
inline size_t consume_stripes(uint64_t lanes[4], const unsigned char* bytes, size_t count) {
  size_t used = 0;
  uint64_t v1 = lanes[0], v2 = lanes[1], v3 = lanes[2], v4 = lanes[3];
  for (; used + 32 <= count; used += 32) {
    v1 = round(v1, read64(bytes + used));
    v2 = round(v2, read64(bytes + used + 8));
    v3 = round(v3, read64(bytes + used + 16));
    v4 = round(v4, read64(bytes + used + 24));
  }
  lanes[0] = v1, lanes[1] = v2, lanes[2] = v3, lanes[3] = v4;
  return used;
}

}  // namespace

Xxh64::Xxh64(uint64_t seed) : seed_(seed) {
  lanes_[0] = seed + kPrime1 + kPrime2;
  lanes_[1] = seed + kPrime2;
  lanes_[2] = seed;
  lanes_[3] = seed - kPrime1;
}

void Xxh64::update(const void* bytes, size_t count) {
  const unsigned char* input = static_cast<const unsigned char*>(bytes);
  total_ += count;
  if (buffered_ > 0) {
    size_t take = std::min(count, 32 - buffered_);
    std::memcpy(buffer_ + buffered_, input, take);
    buffered_ += take;
    input += take;
    count -= take;
    if (buffered_ < 32) return;
    consume_stripes(lanes_, buffer_, 32);
    buffered_ = 0;
  }
  size_t used = consume_stripes(lanes_, input, count);
  std::memcpy(buffer_, input + used, count - used);
  buffered_ = count - used;
}

uint64_t Xxh64::digest() const {
  uint64_t hash;
  if (total_ >= 32) {
    hash = std::rotl(lanes_[0], 1) + std::rotl(lanes_[1], 7) + std::rotl(lanes_[2], 12) +
           std::rotl(lanes_[3], 18);
    for (uint64_t lane : lanes_) hash = merge(hash, lane);
  } else {
    hash = seed_ + kPrime5;
  }
  hash += total_;

  const unsigned char* tail = buffer_;
  size_t remaining = buffered_;
  for (; remaining >= 8; remaining -= 8, tail += 8) {
    hash ^= round(0, read64(tail));
    hash = std::rotl(hash, 27) * kPrime1 + kPrime4;
  }
  if (remaining >= 4) {
    hash ^= static_cast<uint64_t>(read32(tail)) * kPrime1;
    hash = std::rotl(hash, 23) * kPrime2 + kPrime3;
    remaining -= 4;
    tail += 4;
  }
  for (; remaining > 0; --remaining, ++tail) {
    hash ^= static_cast<uint64_t>(*tail) * kPrime5;
    hash = std::rotl(hash, 11) * kPrime1;
  }
  // Avalanche: every input bit affects every output bit.
  hash ^= hash >> 33;
  hash *= kPrime2;
  hash ^= hash >> 29;
  hash *= kPrime3;
  hash ^= hash >> 32;
  return hash;
}

uint64_t xxh64(const void* bytes, size_t count, uint64_t seed) {
  Xxh64 state(seed);
  state.update(bytes, count);
  return state.digest();
}

std::string hex64(uint64_t value) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) text[static_cast<size_t>(i)] = kDigits[value & 15];
  return text;
}

uint64_t parse_hex64(std::string_view text, std::string_view what) {
  if (text.size() != 16) {
    throw FormatError(str_cat(what, ": expected 16 hex digits, got \"", text, "\""));
  }
  uint64_t value = 0;
  for (char digit : text) {
    int nibble;
    if (digit >= '0' && digit <= '9') nibble = digit - '0';
    else if (digit >= 'a' && digit <= 'f') nibble = digit - 'a' + 10;
    else if (digit >= 'A' && digit <= 'F') nibble = digit - 'A' + 10;
    else throw FormatError(str_cat(what, ": \"", text, "\" is not hexadecimal"));
    value = (value << 4) | static_cast<uint64_t>(nibble);
  }
  return value;
}

}  // namespace scalebert::store
