// Tensor views: construction, shape checks, reshapes and row slices.
#include "core/tensor.h"

#include <cstring>

#include "core/arena.h"

namespace scalebert {

std::string shape_string(const Shape& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t count = 1;
  for (int64_t extent : shape) count *= extent;
  return count;
}

static void check_shape(const Shape& shape) {
  for (int64_t extent : shape) {
    check(extent >= 0, "negative dimension in shape ", shape_string(shape));
  }
}

Tensor Tensor::empty(Shape shape, DType dtype) {
  check_shape(shape);
  size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  std::shared_ptr<void> memory = allocate_aligned(bytes);
  return view(memory.get(), std::move(shape), dtype, memory);
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  Tensor tensor = empty(std::move(shape), dtype);
  std::memset(tensor.raw(), 0, tensor.nbytes());
  return tensor;
}

Tensor Tensor::from_arena(Arena& arena, Shape shape, DType dtype) {
  check_shape(shape);
  size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return view(arena.allocate(bytes), std::move(shape), dtype, arena.block());
}

Tensor Tensor::view(void* data, Shape shape, DType dtype, std::shared_ptr<void> owner) {
  check_shape(shape);
  Tensor tensor;
  tensor.data_ = data;
  tensor.shape_ = std::move(shape);
  tensor.dtype_ = dtype;
  tensor.owner_ = std::move(owner);
  return tensor;
}

int64_t Tensor::dim(int axis) const {
  int index = axis < 0 ? axis + rank() : axis;
  check(index >= 0 && index < rank(), "axis ", axis, " out of range for shape ",
        shape_string(shape_));
  return shape_[index];
}

Tensor Tensor::reshape(Shape shape) const {
  check(shape_numel(shape) == numel(), "cannot reshape ", shape_string(shape_), " to ",
        shape_string(shape));
  return view(data_, std::move(shape), dtype_, owner_);
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  check(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "rows [", begin, ", ", end,
        ") out of range for shape ", shape_string(shape_));
  Shape shape = shape_;
  shape[0] = end - begin;
  size_t row_bytes = shape_[0] == 0 ? 0 : nbytes() / static_cast<size_t>(shape_[0]);
  return view(static_cast<char*>(data_) + row_bytes * begin, std::move(shape), dtype_, owner_);
}

void Tensor::expect(const Shape& shape, DType dtype, const std::string& what) const {
  check(shape == shape_ && dtype == dtype_, what, ": expected shape ", shape_string(shape), " ",
        dtype_name(dtype), ", got ", shape_string(shape_), " ", dtype_name(dtype_));
}

void Tensor::check_dtype(DType wanted) const {
  check(wanted == dtype_, "tensor of dtype ", dtype_name(dtype_), " accessed as ",
        dtype_name(wanted));
}

}  // namespace scalebert
