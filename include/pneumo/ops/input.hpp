// Contract of the input pipeline's ops (Backend::gather_augment, gather_values) and their
// argument checks.
//
// - gather_augment: images uint8 (image_count, size, size) on the backend's device; indices int32
//   (N) on the device. out: (N, 1, size, size) float in [0, 1]. With settings.enabled, image slot
//   i is warped by parameters drawn from (key, key.first + i) (augment.hpp); else a plain gather
//   and scale;
// - gather_values: out[i] = values[indices[i]]; values (value_count of them) and indices on the
//   device (labels, sample weights). An index outside [0, value_count) is a caller's bug: the CPU
//   throws, CUDA (which cannot stop a kernel with a message) writes NaN there, as gather_augment
//   does, so the loss turns NaN and the trainer's guard names the step, instead of reading
//   another allocation's memory;
// - begin_step: a live step's start (pneumo/live_step.hpp): the table entry under the cursor
//   becomes the current step, its `count` indices are gathered from the epoch order, the cursor
//   advances by one. All pointers on the device; count >= 1; the cursor below table_size.
#pragma once

#include <cstdint>

#include "pneumo/live_step.hpp"
#include "pneumo/ops/checks.hpp"

namespace pneumo::ops {

inline void check_gather_augment(Device device, const uint8_t* images, int size,
                                 const int32_t* indices, ConstTensorView out) {
  const char* op = "gather_augment";
  expect_on(device, op, {{"out", out}});
  expect_rank(op, "out", out.shape, 4);
  const int64_t batch = out.shape.n();
  expect_shape(op, "out", out.shape, Shape{batch, 1, size, size});
  PNEUMO_CHECK(batch == 0 || (images && indices), op, ": null images or indices for a batch of ",
               batch);
}

inline void check_gather_values(Device device, const float* values, int64_t value_count,
                                const int32_t* indices, ConstTensorView out) {
  const char* op = "gather_values";
  expect_on(device, op, {{"out", out}});
  PNEUMO_CHECK(out.numel() == 0 || (values && indices), op, ": null values or indices for ",
               out.numel(), " outputs");
  PNEUMO_CHECK(out.numel() == 0 || value_count > 0, op, ": ", out.numel(),
               " outputs gathered from ", value_count, " values");
}

inline void check_begin_step(const LiveStep* table, int64_t table_size, const uint32_t* cursor,
                             const int32_t* order, int count, const LiveStep* current,
                             const int32_t* indices) {
  const char* op = "begin_step";
  PNEUMO_CHECK(table && cursor && order && current && indices, op, ": null pointer");
  PNEUMO_CHECK(table_size >= 1, op, ": empty step table");
  PNEUMO_CHECK(count >= 1, op, ": a step of ", count, " images");
}

}  // namespace pneumo::ops
