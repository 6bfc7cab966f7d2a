// The argument checks every op contract (pneumo/ops/*.hpp) is written with. Each throws
// pneumo::Error naming the op, the argument and the shapes. The public entry of every Backend op
// (src/core/backend_entry.cpp) runs its contract's check before the backend's implementation, so
// the checks hold for every backend.
#pragma once

#include <initializer_list>
#include <utility>

#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::ops {

using NamedView = std::pair<const char*, ConstTensorView>;

// A view lives on the backend's device and has data unless it is empty.
template <class View>
void expect_placed(Device device, const char* op, const char* argument, const View& view) {
  PNEUMO_CHECK(view.device == device, op, ": ", argument, " ", view.shape.str(), " is on ",
               to_string(view.device), ", but the ", to_string(device),
               " backend needs it in its own memory");
  PNEUMO_CHECK(view.data != nullptr || view.numel() == 0, op, ": ", argument, " ",
               view.shape.str(), " has no data");
}

inline void expect_on(Device device, const char* op, std::initializer_list<NamedView> views) {
  for (const auto& [argument, view] : views) expect_placed(device, op, argument, view);
}

// A bfloat16 channels-last view: placed as above, with the expected logical shape.
inline void expect_bf16(Device device, const char* op, const char* argument,
                        ConstBf16NhwcView view, const Shape& expected) {
  expect_placed(device, op, argument, view);
  PNEUMO_CHECK(view.shape == expected, op, ": ", argument, " (bfloat16, channels-last) has shape ",
               view.shape.str(), ", expected ", expected.str());
}

inline void expect_shape(const char* op, const char* argument, const Shape& shape,
                         const Shape& expected) {
  PNEUMO_CHECK(shape == expected, op, ": ", argument, " has shape ", shape.str(), ", expected ",
               expected.str());
}

inline void expect_rank(const char* op, const char* argument, const Shape& shape, int rank) {
  PNEUMO_CHECK(shape.rank() == rank, op, ": ", argument, " has shape ", shape.str(),
               ", expected rank ", rank);
}

// Every view has the expected shape (the per-channel tensors of batch-norm, an optimizer's state).
inline void expect_shapes(const char* op, const Shape& expected,
                          std::initializer_list<NamedView> views) {
  for (const auto& [argument, view] : views) expect_shape(op, argument, view.shape, expected);
}

}  // namespace pneumo::ops
