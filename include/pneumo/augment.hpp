// Augmentation settings (the recipe's ImageDataGenerator: rotation, zoom, shift, flip with
// 'nearest' fill), and the batched op's two twins. The parameter draw, the affine geometry and the
// per-pixel sampling that both twins call live in pneumo/augment_math.hpp.
#pragma once

namespace pneumo {

struct AugmentSettings {
  bool enabled = true;            // false: plain gather + scale to [0, 1] (evaluation inputs)
  float rotation_degrees = 30.0f; // angle drawn uniformly in [-r, +r]
  float zoom = 0.2f;              // scale drawn uniformly in [1 - z, 1 + z]
  float shift = 0.1f;             // per-axis shift drawn uniformly in [-s, +s] x size
  bool horizontal_flip = true;    // flip with probability 1/2
};

}  // namespace pneumo

#include <cstdint>

#include "pneumo/random.hpp"

namespace pneumo {

// The batched gather-augment-normalise op, as the two backends call it.
// images: uint8 (image_count, size, size); indices: int32 (batch); out: float (batch, 1, size, size)
// in [0, 1]. Image slot i draws its parameters from philox4x32(key, 2i) and (key, 2i + 1); the key
// is make_key(seed, RngStream::kAugment, epoch, step). An index outside [0, image_count) throws
// on the CPU; the kernel cannot throw, so it writes NaN into that slot (never reads out of bounds).
// CPU twin: src/cpu/augment.cpp (host pointers). CUDA: kernels/augment.cu (device pointers,
// launched on `stream`, a cudaStream_t passed as void* so this header needs no CUDA headers).
void augment_batch_cpu(const uint8_t* images, int64_t image_count, int size,
                       const int32_t* indices, int batch, const AugmentSettings& settings,
                       RngKey key, float* out);
void augment_batch_cuda(const uint8_t* images, int64_t image_count, int size,
                        const int32_t* indices, int batch, const AugmentSettings& settings,
                        RngKey key, float* out, void* stream);

}  // namespace pneumo
