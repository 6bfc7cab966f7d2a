// Dropout multipliers for a run of elements on the CPU, eight Philox calls at a time where the CPU
// has AVX2: the scalar generator (one Philox4x32-10 call per four elements) made dropout an eighth
// of a CPU training step. The values are those of dropout_multiplier (kernels/elementwise.hpp),
// bit for bit, on every path.
#pragma once

#include <cstdint>

#include "pneumo/random.hpp"

namespace pneumo::cpu {

// m[j] = dropout_multiplier(key, begin + j, rate) for 0 <= j < end - begin (local element indices;
// the element's global index is key.first + begin + j, any value).
void dropout_multipliers(RngKey key, float rate, int64_t begin, int64_t end, float* m);

// y[i] = x[i] * dropout_multiplier(key, i, rate) for begin <= i < end; y may alias x.
void apply_dropout_range(const float* x, float* y, float rate, RngKey key, int64_t begin,
                         int64_t end);

// True where the eight-way generator runs (x86-64 with AVX2); the tests say which path they check.
bool dropout_uses_simd();

}  // namespace pneumo::cpu
