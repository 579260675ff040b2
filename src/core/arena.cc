// Aligned allocation and the bump arena.
#include "core/arena.h"

#include <cstdlib>
#include <new>

#include "core/error.h"

namespace scalebert {

std::shared_ptr<void> allocate_aligned(size_t bytes) {
  size_t rounded = align_up(bytes == 0 ? 1 : bytes);
  void* pointer = std::aligned_alloc(kAlignment, rounded);
  if (pointer == nullptr) throw std::bad_alloc();
  return std::shared_ptr<void>(pointer, [](void* p) { std::free(p); });
}

Arena::Arena(size_t capacity_bytes)
    : block_(allocate_aligned(capacity_bytes)), capacity_(align_up(capacity_bytes)) {}

void* Arena::allocate(size_t bytes) {
  size_t rounded = align_up(bytes);
  check(used_ + rounded <= capacity_, "arena full: asked for ", bytes, " bytes with ", used_, " of ",
        capacity_, " used");
  void* pointer = static_cast<char*>(block_.get()) + used_;
  used_ += rounded;
  return pointer;
}

}  // namespace scalebert
