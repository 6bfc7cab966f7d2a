// Per-channel walks and sums over an (N, C, H, W) tensor for the CPU backend's batch-norm and the
// fused block tail: one summation order for both, so their statistics agree bit for bit.
#pragma once

#include <cstdint>

#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {

// x: (N, C, H, W); a channel's values are N planes of H*W, C planes apart.
// Calls visit(i) for the flat index i of every value of channel c, in memory order.
template <class Visit>
inline void for_each_in_channel(const ChannelLayout& layout, int64_t c, Visit&& visit) {
  for (int64_t n = 0; n < layout.batch; ++n) {
    const int64_t plane = (n * layout.channels + c) * layout.pixels;
    for (int64_t p = 0; p < layout.pixels; ++p) visit(plane + p);
  }
}

// The sum of term(i) over channel c's values, in double, with four interleaved accumulators: a
// single one makes every add wait for the last (the latency chain, not memory, bounded these
// loops), and the fixed combination order keeps the result deterministic.
template <class Term>
inline double channel_sum(const ChannelLayout& layout, int64_t c, Term&& term) {
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t n = 0; n < layout.batch; ++n) {
    const int64_t plane = (n * layout.channels + c) * layout.pixels;
    int64_t p = 0;
    for (; p + 4 <= layout.pixels; p += 4)
      for (int j = 0; j < 4; ++j) acc[j] += term(plane + p + j);
    for (; p < layout.pixels; ++p) acc[0] += term(plane + p);
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

}  // namespace pneumo::cpu
