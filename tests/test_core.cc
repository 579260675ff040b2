// Core: dtypes, bf16 rounding, tensors and arenas.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "core/arena.h"
#include "core/dtype.h"
#include "core/tensor.h"

using namespace scalebert;

TEST(DType, NamesRoundTrip) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8, DType::kI32, DType::kI64, DType::kF16,
                      DType::kU8}) {
    EXPECT_EQ(dtype_from_name(dtype_name(dtype)), dtype);
  }
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kI64), 8u);
  EXPECT_THROW(dtype_from_name("F64"), FormatError);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f)), 1.0f);
  // 1 + 2^-8 lies exactly between two bf16 values (spacing 2^-7): ties go to the even one (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3*2^-8 is a tie between 1+2^-7 and 1+2^-6: the even mantissa is 1+2^-6.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))),
            1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

TEST(DType, F16Decodes) {
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0xc000), -2.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(f16_to_float(0x7c00)));
}

TEST(Tensor, EmptyIsAlignedAndTyped) {
  Tensor tensor = Tensor::empty({3, 5}, DType::kF32);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor.raw()) % kAlignment, 0u);
  EXPECT_EQ(tensor.numel(), 15);
  EXPECT_EQ(tensor.nbytes(), 60u);
  EXPECT_EQ(tensor.dim(-1), 5);
  EXPECT_THROW(tensor.dim(2), InvalidArgument);
  EXPECT_THROW(tensor.data<int32_t>(), InvalidArgument);
  EXPECT_THROW(tensor.reshape({4, 4}), InvalidArgument);
  EXPECT_THROW(Tensor::empty({-1, 2}, DType::kF32), InvalidArgument);
}

TEST(Tensor, SliceRowsViewsTheSameMemory) {
  Tensor tensor = Tensor::zeros({4, 2}, DType::kI32);
  Tensor rows = tensor.slice_rows(1, 3);
  rows.data<int32_t>()[0] = 7;
  EXPECT_EQ(tensor.data<int32_t>()[2], 7);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_THROW(tensor.slice_rows(3, 5), InvalidArgument);
}

TEST(Tensor, ExpectNamesTheMismatch) {
  Tensor tensor = Tensor::zeros({2, 3}, DType::kF32);
  try {
    tensor.expect({3, 2}, DType::kF32, "query weight");
    FAIL() << "expected a throw";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("query weight: expected shape [3, 2] F32, got [2, 3]"),
              std::string::npos)
        << error.what();
  }
}

TEST(Arena, HandsOutAlignedSlicesAndRefusesOverflow) {
  Arena arena(256);
  void* first = arena.allocate(10);
  void* second = arena.allocate(64);
  EXPECT_EQ(static_cast<char*>(second) - static_cast<char*>(first), 64);
  EXPECT_EQ(arena.used(), 128u);
  EXPECT_THROW(arena.allocate(200), InvalidArgument);
  arena.reset();
  EXPECT_EQ(arena.allocate(256), first);
}
