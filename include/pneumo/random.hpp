// Counter-based randomness: Philox4x32-10 (Salmon et al., SC'11) keyed by (seed, stream, epoch,
// step) and indexed by position. A CPU run and a CUDA run of the same step draw the same numbers,
// and a resumed run continues the same sequence: no generator state is ever carried.
#pragma once

#include <cstdint>

#include "pneumo/hostdevice.hpp"
#include "pneumo/live_step.hpp"

namespace pneumo {

// What a random number is for; each purpose gets its own independent stream.
enum class RngStream : uint32_t {
  kInit = 1,         // weight initialisation (index = parameter element)
  kShuffle = 2,      // epoch permutation
  kOversample = 3,   // minority-class replicas
  kAugment = 4,      // per-image augmentation parameters (index = image slot in the global batch)
  kValSplit = 5,     // validation split carving
  kDropout = 16,     // dropout masks: kDropout + layer index (index = element in the global batch)
};

struct RngKey {
  uint64_t seed = 0;
  uint32_t stream = 0;
  uint32_t epoch = 0;
  uint32_t step = 0;
  // Where this call's first item sits in the global batch: 0 on one process; a data-parallel
  // rank holding images [first, first + n) of each global batch draws what one process draws for
  // them. Augmentation counts it in images, dropout in elements (see each op's contract).
  uint32_t first = 0;
  // Set: the epoch and step are read from here when the numbers are drawn (a step recorded once
  // and replayed, pneumo/live_step.hpp); epoch and step above are then ignored.
  const LiveStep* live = nullptr;
};

inline RngKey make_key(uint64_t seed, RngStream stream, uint32_t epoch = 0, uint32_t step = 0,
                       uint32_t stream_offset = 0) {
  return {seed, static_cast<uint32_t>(stream) + stream_offset, epoch, step};
}

struct Philox4 {
  uint32_t v[4];
};

PNEUMO_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t product = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
}

// Ten rounds of Philox4x32 on the 128-bit counter (index, step, epoch, stream) under the
// 64-bit key (seed), the step and epoch taken from key.live where it is set. Returns four
// independent 32-bit words.
PNEUMO_HD Philox4 philox4x32(RngKey key, uint32_t index) {
  uint32_t c0 = index, c3 = key.stream;
  uint32_t c1 = key.live ? key.live->step : key.step, c2 = key.live ? key.live->epoch : key.epoch;
  uint32_t k0 = static_cast<uint32_t>(key.seed), k1 = static_cast<uint32_t>(key.seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = philox_mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform float in [0, 1) with 24 random bits (exactly representable, never 1.0).
PNEUMO_HD float uniform_from_bits(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

// Uniform float in [lo, hi).
PNEUMO_HD float uniform_in(uint32_t bits, float lo, float hi) {
  return lo + (hi - lo) * uniform_from_bits(bits);
}

}  // namespace pneumo
