// bfloat16 channels-last tensors in tests (pneumo/tensor.hpp's Bf16NhwcView): owned bits on a
// device, made from float32 NCHW values and read back as them; and the check that the
// channels-last convolutions are the float32 ops on the decoded tensors (pneumo/ops/conv2d.hpp).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bf16.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/op_geometry.hpp"
#include "pneumo/tensor.hpp"
#include "test_util.hpp"

namespace pneumo::testing {

// Where NCHW element i of shape s sits channels-last (written here apart from the backends' code,
// so that the tests do not borrow what they test).
inline size_t channels_last_index(const Shape& s, int64_t i) {
  const int64_t pixels = s.h() * s.w();
  const int64_t n = i / (pixels * s.c()), c = (i / pixels) % s.c(), p = i % pixels;
  return static_cast<size_t>((n * pixels + p) * s.c() + c);
}

struct Bf16Tensor {
  Array<uint16_t> bits;
  Shape shape;
  Bf16Tensor(Shape s, Device device) : bits(s.numel(), device), shape(s) {}
  // nchw rounded to bfloat16, stored channels-last.
  Bf16Tensor(Shape s, const std::vector<float>& nchw, Device device) : Bf16Tensor(s, device) {
    std::vector<uint16_t> host(nchw.size());
    for (size_t i = 0; i < nchw.size(); ++i)
      host[channels_last_index(shape, static_cast<int64_t>(i))] = bf16_from_float(nchw[i]);
    copy_bytes(bits.data(), device, host.data(), Device::Cpu, bits.bytes());
  }
  Bf16NhwcView view() { return {bits.data(), shape, bits.device()}; }
  // The values, decoded, in NCHW order.
  std::vector<float> host_nchw() const {
    std::vector<uint16_t> raw(static_cast<size_t>(shape.numel()));
    copy_bytes(raw.data(), Device::Cpu, bits.data(), bits.device(), bits.bytes());
    std::vector<float> out(raw.size());
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = float_from_bf16(raw[channels_last_index(shape, static_cast<int64_t>(i))]);
    return out;
  }
};

// conv2d_forward_bf16 and conv2d_backward_bf16 on `channels_last` against conv2d_forward (zero
// bias, no ReLU) and conv2d_backward on `float_ops` (a --precision bf16 backend) with the decoded
// operands: equal values (compared as floats, so a zero's sign may differ).
inline void expect_channels_last_conv_is_the_float_ops(Backend& float_ops, Backend& channels_last,
                                                       const Shape& x_shape, int64_t k,
                                                       uint32_t seed) {
  const Device device = float_ops.device();
  const Shape w_shape{k, x_shape.c(), 3, 3}, y_shape{x_shape.n(), k, x_shape.h(), x_shape.w()};
  std::vector<float> x = random_values(x_shape.numel(), seed), dz = random_values(y_shape.numel(), seed + 1);
  for (auto* values : {&x, &dz})
    for (float& v : *values) v = round_to_bf16(v);
  const float bound = 1.0f / std::sqrt(static_cast<float>(9 * x_shape.c()));
  const Tensor w = random_tensor(w_shape, device, seed + 2, -bound, bound);
  const std::vector<float> zeros(static_cast<size_t>(k), 0.0f);
  const Tensor bias = Tensor::from_host(Shape{k}, zeros.data(), device);
  const Tensor xf = Tensor::from_host(x_shape, x.data(), device);
  const Tensor dzf = Tensor::from_host(y_shape, dz.data(), device);
  Tensor y(y_shape, device), dx(x_shape, device), dw(w_shape, device), db(Shape{k}, device);
  float_ops.conv2d_forward(xf, w, bias, y, /*fuse_relu=*/false);
  float_ops.conv2d_backward(xf, dzf, w, dx, dw, db);
  Bf16Tensor xb(x_shape, x, device), dzb(y_shape, dz, device);
  Bf16Tensor zb(y_shape, device), dxb(x_shape, device);
  Tensor dw16(w_shape, device);
  channels_last.conv2d_forward_bf16(xb.view(), w, zb.view());
  channels_last.conv2d_backward_bf16(xb.view(), dzb.view(), w, dxb.view(), dw16);
  float_ops.synchronize();
  channels_last.synchronize();
  EXPECT_TRUE(all_close(zb.host_nchw(), to_host(y), 0.0, 0.0, "z"));
  EXPECT_TRUE(all_close(dxb.host_nchw(), to_host(dx), 0.0, 0.0, "dx"));
  EXPECT_TRUE(all_close(to_host(dw16), to_host(dw), 0.0, 0.0, "dweight"));
}

}  // namespace pneumo::testing
