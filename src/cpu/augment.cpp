// CPU twin of the gather-augment-normalise op. TEMPORARY: plain gather only, until the data issue
// lands the warp (kernels/augment.cu holds the CUDA side).
#include "pneumo/augment.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

void augment_batch_cpu(const uint8_t* images, int64_t image_count, int size,
                       const int32_t* indices, int batch, const AugmentSettings& settings,
                       RngKey /*key*/, float* out) {
  PNEUMO_CHECK(!settings.enabled, "augmentation is not implemented yet on the CPU");
  const int64_t pixels = static_cast<int64_t>(size) * size;
  for (int i = 0; i < batch; ++i) {
    PNEUMO_CHECK(indices[i] >= 0 && indices[i] < image_count, "image index ", indices[i],
                 " out of range [0, ", image_count, ")");
    const uint8_t* src = images + indices[i] * pixels;
    for (int64_t p = 0; p < pixels; ++p) out[i * pixels + p] = src[p] * (1.0f / 255.0f);
  }
}

}  // namespace pneumo
