// 64-byte-aligned memory: owned aligned blocks, and a bump arena that hands out aligned slices of
// one block. Execution plans size an arena from (batch, sequence) before the first step, so the hot
// path never allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace scalebert {

inline constexpr size_t kAlignment = 64;  // one cache line; also the AVX-512 vector width

// Rounds `bytes` up to a multiple of kAlignment.
constexpr size_t align_up(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

// Allocates `bytes` (rounded up) aligned to kAlignment; freed by the returned pointer's deleter.
// Throws IoError-free std::bad_alloc only from the system; zero bytes gives a valid 64-byte block.
std::shared_ptr<void> allocate_aligned(size_t bytes);

// A fixed-capacity bump allocator over one aligned block. Not thread-safe: one owner.
class Arena {
 public:
  Arena() = default;
  explicit Arena(size_t capacity_bytes);

  // Returns an aligned slice of `bytes`; throws InvalidArgument naming the sizes when the arena is
  // full (a planning bug: plans compute their exact capacity up front).
  void* allocate(size_t bytes);

  // Forgets every slice; the memory is reused by later allocations.
  void reset() { used_ = 0; }

  size_t capacity() const { return capacity_; }
  size_t used() const { return used_; }
  // Keeps the block alive for tensors viewing it.
  const std::shared_ptr<void>& block() const { return block_; }

 private:
  std::shared_ptr<void> block_;
  size_t capacity_ = 0;
  size_t used_ = 0;
};

}  // namespace scalebert
