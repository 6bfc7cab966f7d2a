// float32 NCHW <-> bfloat16 channels-last on the CPU (pneumo/tensor.hpp's Bf16NhwcView): the
// CPU twins of the bfloat16 ops decode their inputs, run the float32 code and encode the results.
#pragma once

#include <cstdint>

#include "bf16.hpp"
#include "pneumo/op_geometry.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::cpu {

// visit(nchw, nhwc) for every element of an (N, C, H, W) shape: its index in NCHW order and in
// channels-last order.
template <class Visit>
void for_each_layout_pair(const Shape& shape, Visit&& visit) {
  const ChannelLayout l = channel_layout(shape);
  for (int64_t n = 0; n < l.batch; ++n)
    for (int64_t c = 0; c < l.channels; ++c)
      for (int64_t p = 0; p < l.pixels; ++p)
        visit((n * l.channels + c) * l.pixels + p, (n * l.pixels + p) * l.channels + c);
}

// bits = the (N, C, H, W) values of `nchw`, rounded to nearest even, channels-last.
inline void encode_channels_last(const float* nchw, const Shape& shape, uint16_t* bits) {
  for_each_layout_pair(shape, [&](int64_t i, int64_t j) { bits[j] = bf16_from_float(nchw[i]); });
}

// nchw = the values of channels-last `bits` of (N, C, H, W) `shape`, exactly.
inline void decode_channels_last(const uint16_t* bits, const Shape& shape, float* nchw) {
  for_each_layout_pair(shape, [&](int64_t i, int64_t j) { nchw[i] = float_from_bf16(bits[j]); });
}

inline Tensor decoded(ConstBf16NhwcView x) {
  Tensor out(x.shape, Device::Cpu);
  decode_channels_last(x.data, x.shape, out.data());
  return out;
}

}  // namespace pneumo::cpu
