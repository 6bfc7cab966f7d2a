// The 2x2 / stride-2 'same' pooling window (pneumo/ops/pooling.hpp) as host-device code: its four
// positions and the first-maximum rule (a NaN wins), shared by the max-pooling kernels
// (kernels/pooling.cu) and the fused block tail (block_tail_math.hpp, its CPU twin included).
#pragma once

#include <cstdint>

#include "pneumo/hostdevice.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo {

// The window of pooled output (oy, ox) in a plane of g.height x g.width, as its four positions
// p = 0..3, row-major: (row0 + p / 2, col0 + p % 2). A position on the padding row or column
// (-1: only the top and left are ever padded) is not real; every window has at least one real
// one. Positions are numbered, never listed, so that a kernel's loops over them unroll into
// registers (a list of the real ones, indexed by a count known only at run time, sat in local
// memory: 80 to 208 bytes of stack in every tail kernel, read by ptxas -v).
struct PoolWindow {
  int64_t row0, col0, width;
  PNEUMO_HD int64_t row(int p) const { return row0 + p / 2; }
  PNEUMO_HD int64_t col(int p) const { return col0 + p % 2; }
  PNEUMO_HD bool real(int p) const { return row(p) >= 0 && col(p) >= 0; }
  PNEUMO_HD int64_t offset(int p) const { return row(p) * width + col(p); }
};

PNEUMO_HD PoolWindow pool_window(const PoolGeometry& g, int64_t oy, int64_t ox) {
  return {2 * oy - g.pad_top(), 2 * ox - g.pad_left(), g.width};
}

// visit(p) for each real position p of w, in row-major order. The loop over the four positions
// unrolls, so p is a constant in each visit and nothing about the window leaves registers.
template <class Visit>
PNEUMO_HD void for_each_real_position(const PoolWindow& w, Visit&& visit) {
  for (int p = 0; p < 4; ++p)
    if (w.real(p)) visit(p);
}

// The window's max and which of its positions holds it.
struct WindowWinner {
  float value;
  int position;  // 0..3, PoolWindow's numbering
};

// Whether a window's value v, visited after `best` in row-major order, takes the max from it:
// when strictly larger (ties go to the first), or when it is the window's first NaN (a NaN wins
// wherever it stands and stays: pneumo/ops/pooling.hpp's rule, cuDNN's CUDNN_PROPAGATE_NAN).
// Also the CPU pooling's rule (src/cpu/pool.cpp), which walks its windows its own way.
PNEUMO_HD bool takes_max(float v, float best) { return v > best || (v != v && best == best); }

// value(p): what position p holds. Its real positions are visited in row-major order, the first
// is the best so far and each later one replaces it when takes_max says so.
template <class Value>
PNEUMO_HD WindowWinner window_first_max(const PoolWindow& w, Value&& value) {
  WindowWinner best{0.0f, -1};
  for_each_real_position(w, [&](int p) {
    const float v = value(p);
    if (best.position < 0 || takes_max(v, best.value)) best = {v, p};
  });
  return best;
}

}  // namespace pneumo
