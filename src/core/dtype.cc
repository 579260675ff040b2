// Element type names, sizes and the scalar conversions between float formats.
#include "core/dtype.h"

#include <cstring>

#include "core/error.h"

namespace scalebert {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kI8: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kF16: return 2;
    case DType::kU8: return 1;
  }
  throw InvalidArgument(str_cat("unknown dtype value ", static_cast<int>(dtype)));
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kI8: return "I8";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kF16: return "F16";
    case DType::kU8: return "U8";
  }
  return "?";
}

DType dtype_from_name(std::string_view name) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8, DType::kI32, DType::kI64, DType::kF16,
                      DType::kU8}) {
    if (dtype_name(dtype) == name) return dtype;
  }
  throw FormatError(str_cat("unknown dtype \"", name, "\""));
}

BFloat16 float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return BFloat16{static_cast<uint16_t>((bits >> 16) | 0x40)};  // quiet NaN
  }
  // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit, then truncate.
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return BFloat16{static_cast<uint16_t>((bits + rounding) >> 16)};
}

float bf16_to_float(BFloat16 value) {
  uint32_t bits = static_cast<uint32_t>(value.bits) << 16;
  float result;
  std::memcpy(&result, &bits, 4);
  return result;
}

float f16_to_float(uint16_t half) {
  uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  uint32_t exponent = (half >> 10) & 0x1fu;
  uint32_t mantissa = half & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      mantissa &= 0x3ffu;
      bits = sign | (exponent << 23) | (mantissa << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float result;
  std::memcpy(&result, &bits, 4);
  return result;
}

}  // namespace scalebert
