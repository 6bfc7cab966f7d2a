// Finite-difference gradient checking for backward ops. The op runs in float; the scalar loss
// L = sum_i weight_i * output_i (fixed random weights, which are also dL/doutput, the dy fed to
// the backward) is accumulated in double, and central differences use the step actually taken
// after rounding the perturbed input to float.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace pneumo::testing {

struct FiniteDifference {
  double step = 1e-2;
  double atol = 1e-3;
  double rtol = 1e-2;
  // Fail when kinks leave fewer than this fraction of the elements checked: a check that skips
  // everything would pass whatever the backward does.
  double min_checked_fraction = 0.5;
};

// sum_i weights[i] * output[i] in double.
inline double weighted_sum(ConstTensorView output, const std::vector<float>& weights) {
  std::vector<float> values = to_host(output);
  EXPECT_EQ(values.size(), weights.size()) << "loss weights do not match the output";
  double sum = 0.0;
  for (size_t i = 0; i < values.size() && i < weights.size(); ++i)
    sum += static_cast<double>(weights[i]) * values[i];
  return sum;
}

// Compares `analytic` (dL/dinput from the backward) with central differences of `loss`, which
// must evaluate the forward op on the current contents of `input` (a CPU tensor that this
// function perturbs in place and restores). Elements for which near_kink(i) is true (evaluated
// at the unperturbed point) are skipped: there the loss is not differentiable within a step.
inline ::testing::AssertionResult check_gradient(
    const std::string& what, TensorView input, ConstTensorView analytic,
    const std::function<double()>& loss, const FiniteDifference& options = {},
    const std::function<bool(int64_t)>& near_kink = {}) {
  if (input.device != Device::Cpu)
    return ::testing::AssertionFailure() << what << ": the input must be a CPU tensor";
  if (analytic.shape != input.shape)
    return ::testing::AssertionFailure() << what << ": gradient shape " << analytic.shape.str()
                                         << " != input shape " << input.shape.str();
  const std::vector<float> analytic_values = to_host(analytic);
  std::vector<float> checked_analytic, numeric;
  int64_t skipped = 0;
  for (int64_t i = 0; i < input.numel(); ++i) {
    if (near_kink && near_kink(i)) {
      ++skipped;
      continue;
    }
    const float original = input.data[i];
    const float plus = static_cast<float>(original + options.step);
    const float minus = static_cast<float>(original - options.step);
    input.data[i] = plus;
    const double loss_plus = loss();
    input.data[i] = minus;
    const double loss_minus = loss();
    input.data[i] = original;
    numeric.push_back(static_cast<float>((loss_plus - loss_minus) /
                                         (static_cast<double>(plus) - static_cast<double>(minus))));
    checked_analytic.push_back(analytic_values[static_cast<size_t>(i)]);
  }
  const int64_t checked = input.numel() - skipped;
  if (checked < options.min_checked_fraction * static_cast<double>(input.numel()))
    return ::testing::AssertionFailure() << what << ": only " << checked << " of "
                                         << input.numel() << " elements are away from kinks";
  std::ostringstream label;
  label << what << " (analytic vs numeric; " << checked << " checked, " << skipped
        << " skipped near kinks)";
  return all_close(checked_analytic, numeric, options.atol, options.rtol, label.str());
}

// A tensor filled with NaN, for outputs that an op must overwrite completely.
inline Tensor nan_tensor(Shape shape) {
  std::vector<float> values(static_cast<size_t>(shape.numel()), NAN);
  return Tensor::from_host(shape, values.data(), Device::Cpu);
}

}  // namespace pneumo::testing
