// bfloat16 rounding (kernels/bf16.hpp) against an independent reference: the two bfloat16 values
// around a float, the nearer chosen by distance in double, ties to the even one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "bf16.hpp"

namespace pneumo {
namespace {

// The bfloat16 bits IEEE round-to-nearest-even gives for a finite or infinite float.
uint16_t reference_bf16(float value) {
  const uint32_t bits = float_bits(value);
  const uint32_t toward_zero = bits & 0xffff0000u;  // same sign, magnitude truncated
  if (toward_zero == bits) return static_cast<uint16_t>(bits >> 16);  // exact (incl. 0, inf)
  const uint32_t away = toward_zero + 0x10000u;  // next magnitude up (may be infinity)
  const auto magnitude = [](uint32_t b) {
    // Infinity counts as 2^128: the value rounding would give with an unbounded exponent.
    if ((b & 0x7fffffffu) == 0x7f800000u) return std::ldexp(1.0, 128);
    return std::fabs(static_cast<double>(float_from_bits(b)));
  };
  const double v = std::fabs(static_cast<double>(value));
  const double below = v - magnitude(toward_zero), above = magnitude(away) - v;
  if (below < above) return static_cast<uint16_t>(toward_zero >> 16);
  if (above < below) return static_cast<uint16_t>(away >> 16);
  return static_cast<uint16_t>(((toward_zero >> 16) & 1u) == 0 ? toward_zero >> 16 : away >> 16);
}

bool is_nan_bits(uint32_t bits) { return (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu); }

TEST(Bf16, RandomBitPatternsRoundToNearestEven) {
  std::mt19937 rng(20261203);
  int checked = 0;
  for (int i = 0; i < 1000000; ++i) {
    const uint32_t bits = rng();
    if (is_nan_bits(bits)) continue;
    const float value = float_from_bits(bits);
    ASSERT_EQ(bf16_from_float(value), reference_bf16(value)) << std::hex << "bits 0x" << bits;
    ++checked;
  }
  EXPECT_GT(checked, 990000);
}

TEST(Bf16, TiesGoToTheEvenNeighbour) {
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: the even one is 1 (0x3f80).
  EXPECT_EQ(bf16_from_float(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (0x3f81, odd) and 1 + 2^-6 (0x3f82): up.
  EXPECT_EQ(bf16_from_float(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  // Just above a tie rounds up, just below rounds down.
  EXPECT_EQ(bf16_from_float(float_from_bits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(bf16_from_float(float_from_bits(0x3f817fffu)), 0x3f81);
  // Every tie pattern, both parities, both signs.
  for (uint32_t kept = 0; kept < 0x7f7fu; kept += 97) {
    for (uint32_t sign : {0u, 0x8000u}) {
      const float tie = float_from_bits(((kept | sign) << 16) | 0x8000u);
      ASSERT_EQ(bf16_from_float(tie), reference_bf16(tie)) << std::hex << kept;
    }
  }
}

TEST(Bf16, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bf16_from_float(0.0f), 0x0000);
  EXPECT_EQ(bf16_from_float(-0.0f), 0x8000);
  EXPECT_EQ(bf16_from_float(inf), 0x7f80);
  EXPECT_EQ(bf16_from_float(-inf), 0xff80);
  // The largest float is above bfloat16's largest finite value by more than half its ulp.
  EXPECT_EQ(bf16_from_float(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_TRUE(std::isnan(round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  // A signalling-style NaN whose payload sits in the dropped bits only must not become infinity.
  EXPECT_TRUE(std::isnan(round_to_bf16(float_from_bits(0x7f800001u))));
  EXPECT_TRUE(std::isnan(round_to_bf16(float_from_bits(0xff800001u))));
  // Subnormals round like any other value.
  const float tiny = std::numeric_limits<float>::denorm_min();
  EXPECT_EQ(bf16_from_float(tiny), reference_bf16(tiny));
  EXPECT_EQ(round_to_bf16(tiny), 0.0f);
}

TEST(Bf16, RoundTripKeepsWhatBf16CanHold) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    if (is_nan_bits(b << 16)) continue;
    ASSERT_EQ(bf16_from_float(float_from_bf16(static_cast<uint16_t>(b))), b) << std::hex << b;
  }
  // Relative error of a rounded normal value is at most 2^-8 (8 significant bits, half a step).
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1000.0f, 1000.0f);
  for (int i = 0; i < 10000; ++i) {
    const float v = uniform(rng);
    if (v == 0.0f) continue;
    ASSERT_LE(std::fabs(round_to_bf16(v) - v), std::ldexp(std::fabs(v), -8)) << v;
  }
}

}  // namespace
}  // namespace pneumo
