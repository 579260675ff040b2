// A tensor is a typed view of memory with an explicit shape (row-major, contiguous). It may own
// its memory or keep an owner alive (an mmap'd file, an arena block); copying a Tensor copies the
// view, not the data.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace scalebert {

using Shape = std::vector<int64_t>;

// "[2, 3, 4]"
std::string shape_string(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Arena;

class Tensor {
 public:
  Tensor() = default;

  // New owned, 64-byte-aligned, uninitialized memory.
  static Tensor empty(Shape shape, DType dtype);
  // New owned memory filled with zero bytes.
  static Tensor zeros(Shape shape, DType dtype);
  // A slice of an arena (the arena's block is kept alive by the tensor).
  static Tensor from_arena(Arena& arena, Shape shape, DType dtype);
  // A view of external memory; `owner` (may be empty) is kept alive with the view.
  static Tensor view(void* data, Shape shape, DType dtype, std::shared_ptr<void> owner = {});

  bool defined() const { return data_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  // Size of dimension `axis`; negative counts from the end. Throws on an axis out of range.
  int64_t dim(int axis) const;
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }

  // Typed access; throws InvalidArgument when T is not the tensor's dtype.
  template <typename T>
  T* data() {
    check_dtype(DTypeOf<T>::value);
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* data() const {
    check_dtype(DTypeOf<T>::value);
    return static_cast<const T*>(data_);
  }

  // Same memory, another shape with the same element count.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of the first dimension, as a view.
  Tensor slice_rows(int64_t begin, int64_t end) const;

  // Throws InvalidArgument("<what>: expected shape [..] dtype .., got ..") on any mismatch.
  void expect(const Shape& shape, DType dtype, const std::string& what) const;

  const std::shared_ptr<void>& owner() const { return owner_; }

 private:
  void check_dtype(DType wanted) const;

  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  std::shared_ptr<void> owner_;
};

}  // namespace scalebert
