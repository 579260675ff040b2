// xxHash64 (XXH64), implemented from the xxHash specification (Collet, doc/xxhash_spec.md): the
// checkpoint store's per-file checksum. Chosen over CRC32C and SHA-256 because it runs at memory
// speed in portable C++ (about 1 byte per cycle per lane, four lanes), so hashing never limits a
// save or a load; it detects corruption, it does not authenticate (not a cryptographic hash).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace scalebert::store {

// Incremental XXH64: update() any number of times, digest() at any point (it does not consume).
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* bytes, size_t count);
  uint64_t digest() const;

 private:
  uint64_t lanes_[4];
  uint64_t seed_;
  uint64_t total_ = 0;
  unsigned char buffer_[32];  // a partial 32-byte stripe
  size_t buffered_ = 0;
};

// One-shot XXH64 of a byte range.
uint64_t xxh64(const void* bytes, size_t count, uint64_t seed = 0);
inline uint64_t xxh64(std::string_view bytes, uint64_t seed = 0) {
  return xxh64(bytes.data(), bytes.size(), seed);
}

// 16 lowercase hex digits (the form xxhsum and Python's xxhash.hexdigest() print), and back;
// parse_hex64 throws FormatError naming `what` and the text when it is not 16 hex digits.
std::string hex64(uint64_t value);
uint64_t parse_hex64(std::string_view text, std::string_view what);

}  // namespace scalebert::store
