// bfloat16 as `--precision bf16` stores it, shared by the CUDA conversion kernels and the CPU
// backend's emulation, so both round the same way: the top 16 bits of a float32 (sign, 8 exponent
// bits, 7 mantissa bits), rounded to nearest with ties to even, as cuDNN, cuBLAS and
// __float2bfloat16_rn do. NaN stays NaN (quiet); infinities and overflow to infinity behave as
// IEEE rounding says.
#pragma once

#include <cstdint>
#include <cstring>

#include "pneumo/hostdevice.hpp"

namespace pneumo {

PNEUMO_HD uint32_t float_bits(float value) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(value);
#else
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
#endif
}

PNEUMO_HD float float_from_bits(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

// float32 -> bfloat16 bits, round to nearest, ties to even.
PNEUMO_HD uint16_t bf16_from_float(float value) {
  const uint32_t bits = float_bits(value);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0)
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // NaN: keep the sign, stay quiet
  // Adding 0x7fff plus the lowest kept bit rounds the dropped half up exactly when it is above
  // one half, or equal to one half with an odd kept part (ties to even).
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

PNEUMO_HD float float_from_bf16(uint16_t value) {
  return float_from_bits(static_cast<uint32_t>(value) << 16);
}

// The float32 nearest to `value` that bfloat16 can hold (what a round trip through storage gives).
PNEUMO_HD float round_to_bf16(float value) { return float_from_bf16(bf16_from_float(value)); }

// out[i] = round_to_bf16(in[i]) for i < count, on the host (the CPU backend's emulation and the
// benchmarks' references); out may be in.
inline void round_all_to_bf16(const float* in, float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = round_to_bf16(in[i]);
}
inline void round_all_to_bf16(float* values, int64_t count) {
  round_all_to_bf16(values, values, count);
}

}  // namespace pneumo
