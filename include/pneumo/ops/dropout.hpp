// Contract of dropout (Backend::dropout_forward, dropout_backward) and its argument checks.
//
// - inverted dropout: y = x * dropout_multiplier(key, element index, rate) (elementwise.hpp),
//   0 or 1 / (1 - rate); the backward pass applies the same mask to dy, recomputed, not stored;
// - the element index is global: key.first (a multiple of 4: masks are drawn four elements at a
//   time) + the flat position in x, as a 32-bit counter, so data-parallel ranks holding parts of
//   one batch draw the masks one process would.
#pragma once

#include <cstdint>

#include "pneumo/ops/checks.hpp"
#include "pneumo/random.hpp"

namespace pneumo::ops {

inline void check_dropout(Device device, const char* op, ConstTensorView input,
                          ConstTensorView output, float rate, RngKey key) {
  expect_on(device, op, {{"input", input}, {"output", output}});
  expect_shape(op, "output", output.shape, input.shape);
  PNEUMO_CHECK(rate >= 0.0f && rate < 1.0f, op, ": rate ", rate, " outside [0, 1)");
  PNEUMO_CHECK(input.numel() + key.first <= (int64_t{1} << 32), op, ": ", input.shape.str(),
               " from element ", key.first,
               " of the global batch goes past what the 32-bit mask index covers");
  PNEUMO_CHECK(key.first % 4 == 0, op, ": the global offset ", key.first,
               " is not a multiple of 4 (masks are drawn four elements at a time)");
}

inline void check_dropout_forward(Device device, ConstTensorView x, ConstTensorView y, float rate,
                                  RngKey key) {
  check_dropout(device, "dropout_forward", x, y, rate, key);
}

inline void check_dropout_backward(Device device, ConstTensorView dy, ConstTensorView dx,
                                   float rate, RngKey key) {
  check_dropout(device, "dropout_backward", dy, dx, rate, key);
}

}  // namespace pneumo::ops
