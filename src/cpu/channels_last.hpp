// float32 NCHW <-> bfloat16 channels-last on the CPU (pneumo/tensor.hpp's Bf16NhwcView): the
// CPU twins of the bfloat16 ops decode their inputs, run the float32 code and encode the results.
#pragma once

#include <cstdint>

#include "bf16.hpp"
#include "pneumo/op_geometry.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::cpu {

// bits = the (N, C, H, W) values of `nchw`, rounded to nearest even, channels-last.
inline void encode_channels_last(const float* nchw, const Shape& shape, uint16_t* bits) {
  const ChannelLayout l = channel_layout(shape);
  for (int64_t n = 0; n < l.batch; ++n)
    for (int64_t c = 0; c < l.channels; ++c)
      for (int64_t p = 0; p < l.pixels; ++p)
        bits[(n * l.pixels + p) * l.channels + c] =
            bf16_from_float(nchw[(n * l.channels + c) * l.pixels + p]);
}

// nchw = the values of channels-last `bits` of (N, C, H, W) `shape`, exactly.
inline void decode_channels_last(const uint16_t* bits, const Shape& shape, float* nchw) {
  const ChannelLayout l = channel_layout(shape);
  for (int64_t n = 0; n < l.batch; ++n)
    for (int64_t c = 0; c < l.channels; ++c)
      for (int64_t p = 0; p < l.pixels; ++p)
        nchw[(n * l.channels + c) * l.pixels + p] =
            float_from_bf16(bits[(n * l.pixels + p) * l.channels + c]);
}

inline Tensor decoded(ConstBf16NhwcView x) {
  Tensor out(x.shape, Device::Cpu);
  decode_channels_last(x.data, x.shape, out.data());
  return out;
}

}  // namespace pneumo::cpu
