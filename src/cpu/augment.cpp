// CPU twin of the gather-augment-normalise op: the same per-image transform, per-pixel function
// and standardisation (kernels/augment_math.hpp) as the CUDA kernels in kernels/augment.cu, in
// plain loops; plus the names of the zoom modes and normalisations.
#include "pneumo/augment.hpp"
#include "augment_math.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

const char* zoom_mode_name(ZoomMode mode) {
  return mode == ZoomMode::Isotropic ? "isotropic" : "keras";
}


const char* normalization_name(InputNormalization normalization) {
  return normalization == InputNormalization::PerImage ? "per-image" : "unit";
}


namespace {
constexpr const char* kUnitDescription = "x/255, grayscale";
constexpr const char* kPerImageDescription =
    "x/255, grayscale, then per-image standardisation (mean 0, std 1, std floored at "
    "1/sqrt(pixels))";
}  // namespace

std::string normalization_description(InputNormalization normalization) {
  return normalization == InputNormalization::PerImage ? kPerImageDescription : kUnitDescription;
}

InputNormalization normalization_from_description(const std::string& text) {
  if (text == kUnitDescription) return InputNormalization::Unit;
  if (text == kPerImageDescription) return InputNormalization::PerImage;
  throw Error("unknown input normalisation '" + text + "' (this build knows '" +
              kUnitDescription + "' and '" + kPerImageDescription + "')");
}

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
    if (settings.normalization == InputNormalization::PerImage) {
      double sum = 0.0, sum_squares = 0.0;
      for (int64_t i = 0; i < pixels; ++i) {
        sum += dst[i];
        sum_squares += static_cast<double>(dst[i]) * dst[i];
      }
      const ImageMoments moments = standardization_moments(sum, sum_squares, pixels);
      for (int64_t i = 0; i < pixels; ++i) dst[i] = standardize_value(dst[i], moments);
    }
  }
}

}  // namespace pneumo
