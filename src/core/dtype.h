// Element types. The enum only grows at the end: its values are stored in ScaleBERT files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace scalebert {

enum class DType : uint8_t {
  kF32 = 0,
  kBF16 = 1,
  kI8 = 2,
  kI32 = 3,
  kI64 = 4,
  kF16 = 5,  // only read from checkpoints and converted at load
  kU8 = 6,   // unsigned activations of the int8 (VNNI) path
};

// Bytes per element.
size_t dtype_size(DType dtype);

// Name as safetensors writes it: "F32", "BF16", "I8", "I32", "I64", "F16", "U8".
std::string_view dtype_name(DType dtype);

// Inverse of dtype_name; throws FormatError naming the text when it is not a known dtype.
DType dtype_from_name(std::string_view name);

// Maps a C++ element type to its DType at compile time.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::kI8;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::kU8;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};

// bfloat16 storage: the upper 16 bits of an IEEE float.
struct BFloat16 {
  uint16_t bits;
};
static_assert(sizeof(BFloat16) == 2);
template <>
struct DTypeOf<BFloat16> {
  static constexpr DType value = DType::kBF16;
};

// Round-to-nearest-even float -> bf16 (NaN stays NaN).
BFloat16 float_to_bf16(float value);
float bf16_to_float(BFloat16 value);
// IEEE half -> float (for F16 checkpoints).
float f16_to_float(uint16_t bits);

}  // namespace scalebert
