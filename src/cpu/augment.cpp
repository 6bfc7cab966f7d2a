// CPU twin of the gather-augment-normalise op: the same per-image transform and per-pixel
// function (pneumo/augment_math.hpp) as the CUDA kernel in kernels/augment.cu, in plain loops.
#include "pneumo/augment.hpp"
#include "pneumo/augment_math.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

void augment_batch_cpu(const uint8_t* images, int64_t image_count, int size,
                       const int32_t* indices, int batch, const AugmentSettings& settings,
                       RngKey key, float* out) {
  PNEUMO_CHECK(size > 0 && batch >= 0, "augment_batch_cpu: bad size ", size, " or batch ", batch);
  if (batch == 0) return;
  PNEUMO_CHECK(images != nullptr && indices != nullptr && out != nullptr,
               "augment_batch_cpu: null pointer (batch ", batch, ", size ", size, ")");
  const int64_t pixels = static_cast<int64_t>(size) * size;
  for (int slot = 0; slot < batch; ++slot) {
    const int32_t index = indices[slot];
    PNEUMO_CHECK(index >= 0 && index < image_count, "augment_batch_cpu: image index ", index,
                 " of batch slot ", slot, " out of range [0, ", image_count, ")");
    const uint8_t* image = images + index * pixels;
    const AugmentTransform t = augment_transform(key, static_cast<uint32_t>(slot), settings, size);
    float* dst = out + slot * pixels;  // (1, size, size) plane of slot
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) dst[y * size + x] = augment_pixel(image, size, t, x, y);
  }
}

}  // namespace pneumo
