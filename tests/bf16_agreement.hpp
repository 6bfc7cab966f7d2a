// How far one set of bfloat16-rounded results is from another (the bf16 tests): the share equal
// bit for bit, and the largest difference in bfloat16 steps. Sums that cancel to far below the
// tensor's scale are judged at 1/64 of that scale: there the summation order alone moves them by
// many of their own (tiny) steps.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace pneumo::testing {

struct Bf16Agreement {
  double exact = 0;        // share equal bit for bit
  double worst_steps = 0;  // largest difference, in bfloat16 steps at the expected value
};

inline Bf16Agreement bf16_agreement(const std::vector<float>& actual,
                                    const std::vector<float>& expected) {
  float scale = 0.0f;
  for (float v : expected) scale = std::max(scale, std::fabs(v));
  const float floor = scale / 64.0f;
  Bf16Agreement result;
  size_t exact = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (actual[i] == expected[i]) {
      ++exact;
      continue;
    }
    int exponent = 0;  // one bfloat16 step at |expected| is 2^(exponent - 8)
    std::frexp(std::max(std::fabs(expected[i]), floor), &exponent);
    const double diff = std::isfinite(actual[i])
                            ? std::fabs(static_cast<double>(actual[i]) - expected[i])
                            : std::numeric_limits<double>::infinity();
    result.worst_steps = std::max(result.worst_steps, diff / std::ldexp(1.0, exponent - 8));
  }
  result.exact =
      static_cast<double>(exact) / static_cast<double>(std::max<size_t>(expected.size(), 1));
  return result;
}

}  // namespace pneumo::testing
