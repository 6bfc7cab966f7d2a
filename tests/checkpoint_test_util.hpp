// Comparing the tensors of two checkpoint files, for tests that check runs end alike.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "pneumo/checkpoint.hpp"

namespace pneumo::testing {

// Every tensor of `a_path` is in `b_path` with the same values, bit for bit, and (unless
// `skip_prefix` is given) both hold the same number of tensors. Tensors whose names start with
// `skip_prefix` ("optimizer.": the optimizer's state, which a restored model keeps from its last
// epoch) are left out on both sides.
inline ::testing::AssertionResult same_tensors(const std::string& a_path, const std::string& b_path,
                                               const std::string& skip_prefix = "") {
  const CheckpointData a = load_checkpoint(a_path), b = load_checkpoint(b_path);
  auto skipped = [&](const NamedTensor& t) {
    return !skip_prefix.empty() && t.name.rfind(skip_prefix, 0) == 0;
  };
  if (skip_prefix.empty() && a.tensors.size() != b.tensors.size())
    return ::testing::AssertionFailure() << a.tensors.size() << " vs " << b.tensors.size();
  for (const auto& tensor : a.tensors) {
    if (skipped(tensor)) continue;
    const NamedTensor* other = b.find(tensor.name);
    if (!other) return ::testing::AssertionFailure() << tensor.name << " missing";
    if (tensor.values != other->values)
      return ::testing::AssertionFailure() << tensor.name << " differs";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace pneumo::testing
