// float32 NCHW <-> bfloat16 channels-last on the CPU (pneumo/tensor.hpp's Bf16NhwcView): the
// CPU twins of the bfloat16 ops decode their inputs, run the float32 code and encode the results.
#pragma once

#include <cstdint>

#include "bf16.hpp"
#include "cpu/parallel.hpp"
#include "pneumo/op_geometry.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::cpu {

// visit(nchw, nhwc) for every element of images [first, last) of an (N, C, H, W) shape: its
// index in NCHW order and in channels-last order, channels-last storage walked in order (each
// image's pixels, each pixel's channels), so the channels-last side is read or written once,
// front to back, and the NCHW side as C streams a plane apart.
template <class Visit>
void for_each_layout_pair(const Shape& shape, int64_t first, int64_t last, Visit&& visit) {
  const ChannelLayout l = channel_layout(shape);
  for (int64_t n = first; n < last; ++n)
    for (int64_t p = 0; p < l.pixels; ++p)
      for (int64_t c = 0; c < l.channels; ++c)
        visit((n * l.channels + c) * l.pixels + p, (n * l.pixels + p) * l.channels + c);
}

// bits = the (N, C, H, W) values of `nchw`, rounded to nearest even, channels-last; images split
// over the pool's workers.
inline void encode_channels_last(ThreadPool& pool, const float* nchw, const Shape& shape,
                                 uint16_t* bits) {
  pool.parallel_for(shape.n(), [&](int64_t first, int64_t last, int /*worker*/) {
    for_each_layout_pair(shape, first, last,
                         [&](int64_t i, int64_t j) { bits[j] = bf16_from_float(nchw[i]); });
  });
}

// nchw = the values of channels-last `bits` of (N, C, H, W) `shape`, exactly.
inline void decode_channels_last(ThreadPool& pool, const uint16_t* bits, const Shape& shape,
                                 float* nchw) {
  pool.parallel_for(shape.n(), [&](int64_t first, int64_t last, int /*worker*/) {
    for_each_layout_pair(shape, first, last,
                         [&](int64_t i, int64_t j) { nchw[i] = float_from_bf16(bits[j]); });
  });
}

}  // namespace pneumo::cpu
