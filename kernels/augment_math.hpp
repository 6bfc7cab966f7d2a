// The arithmetic of the gather-augment-normalise op, shared by the CUDA kernel
// (kernels/augment.cu) and its CPU twin (src/cpu/augment.cpp): one function draws an image's
// parameters, one turns them into the inverse affine map and the photometric factors, one computes
// an output pixel, two standardise an image.
#pragma once

#include <cmath>
#include <cstdint>

#include "pneumo/augment.hpp"
#include "pneumo/hostdevice.hpp"
#include "pneumo/random.hpp"

namespace pneumo {

// The inverse map from an output pixel to its source coordinate:
//   source_x = m00 x + m01 y + m02,  source_y = m10 x + m11 y + m12
// for output column x and row y (pixel centres at integer coordinates), and the photometric
// factors of AugmentParams. identity != 0 means a plain gather (settings.enabled == false),
// computed without any arithmetic on the pixel; photometric == 0 skips the photometric steps.
struct AugmentTransform {
  float m00, m01, m02;
  float m10, m11, m12;
  int identity;
  int photometric;
  float sharpness, gamma, contrast, brightness;
};

// The counter of the third Philox call of a slot: above every 2 * slot + 1 (slot < 65536).
constexpr uint32_t kPhotometricCounterBase = 0x80000000u;

// Parameters of image slot `slot` of a batch: three Philox calls under `key` (stream kAugment,
// keyed by epoch and step) for the global slot key.first + slot, so a slot's draw is independent
// of the batch size and of how the batch is split across ranks, and identical on the CPU and the
// GPU. Word use, first call (counter 2 slot): angle v[0], zoom v[1], shift_x v[2],
// shift_y v[3]; second (2 slot + 1): flip = top bit of v[0], y zoom v[1], sharpness v[2]; third
// (2^31 + slot): aspect v[0], brightness v[1], contrast v[2], gamma v[3]. Every word is drawn
// whether or not its option is on, so turning an option on leaves the other draws as they were.
// Zoom as Keras draws it (ZoomMode::Independent): per axis a factor k uniform in [1 - z, 1 + z]
// that scales source distances, i.e. the content is magnified by 1 / k; ZoomMode::Isotropic draws
// one magnification uniform in [1 - z, 1 + z] for both axes (pneumo's draw before 2026-12,
// bit for bit).
PNEUMO_HD AugmentParams draw_augment_params(RngKey key, uint32_t slot,
                                            const AugmentSettings& settings, int size) {
  slot += key.first;
  const Philox4 a = philox4x32(key, 2u * slot);
  const Philox4 b = philox4x32(key, 2u * slot + 1u);
  const Philox4 c = philox4x32(key, kPhotometricCounterBase + slot);
  const float r = settings.rotation_degrees, z = settings.zoom, s = settings.shift;
  AugmentParams p;
  p.angle_degrees = uniform_in(a.v[0], -r, r);
  if (settings.zoom_mode == ZoomMode::Isotropic) {
    p.scale_x = p.scale_y = uniform_in(a.v[1], 1.0f - z, 1.0f + z);
  } else {
    p.scale_x = 1.0f / uniform_in(a.v[1], 1.0f - z, 1.0f + z);
    p.scale_y = 1.0f / uniform_in(b.v[1], 1.0f - z, 1.0f + z);
  }
  p.shift_x = uniform_in(a.v[2], -s, s) * static_cast<float>(size);
  p.shift_y = uniform_in(a.v[3], -s, s) * static_cast<float>(size);
  p.flip = settings.horizontal_flip ? static_cast<int>(b.v[0] >> 31) : 0;
  p.zoom_after_rotation = settings.zoom_after_rotation ? 1 : 0;
  if (settings.aspect > 0.0f) {
    const float log_range = logf(1.0f + settings.aspect);
    const float root = expf(0.5f * uniform_in(c.v[0], -log_range, log_range));  // sqrt(ratio)
    p.scale_x *= root;
    p.scale_y /= root;
  }
  if (settings.sharpness > 0.0f)
    p.sharpness = uniform_in(b.v[2], 1.0f - settings.sharpness, 1.0f + settings.sharpness);
  if (settings.brightness > 0.0f)
    p.brightness = uniform_in(c.v[1], -settings.brightness, settings.brightness);
  if (settings.contrast > 0.0f)
    p.contrast = uniform_in(c.v[2], 1.0f - settings.contrast, 1.0f + settings.contrast);
  if (settings.gamma > 0.0f) {
    const float log_range = logf(1.0f + settings.gamma);
    p.gamma = expf(uniform_in(c.v[3], -log_range, log_range));
  }
  return p;
}

// The geometry, written once. With c = (size - 1) / 2 the image centre (pixel centres at
// integers, so the centre of a 150-pixel image is 74.5), the FORWARD map takes a source point
// p to the output point
//     q = c + R(angle) * S * F(p - c) + (shift_x, shift_y)
// where F mirrors x (x -> -x) when flip is set, S = diag(scale_x, scale_y) magnifies the content
// along the image's own axes, and R(a) = [[cos a, sin a], [-sin a, cos a]] in image coordinates
// (x right, y DOWN): a positive angle turns the picture counter-clockwise as seen on screen,
// exactly as cv::getRotationMatrix2D(c, angle, 1) does. So: flip, zoom, rotate about the centre,
// then shift. The op evaluates the INVERSE for every output pixel:
//     p = c + F(S^-1 R(-angle) (q - c - shift)).
// With zoom_after_rotation (Keras' order) S acts along the output's axes after R instead:
//     q = c + S * R(angle) * F(p - c) + shift,  p = c + F(R(-angle) S^-1 (q - c - shift)).
PNEUMO_HD AugmentTransform augment_inverse_transform(const AugmentParams& p, int size) {
  const float radians = p.angle_degrees * 0.017453292519943295f;  // pi / 180
  const float cos_a = cosf(radians), sin_a = sinf(radians);
  const float inv_x = 1.0f / p.scale_x, inv_y = 1.0f / p.scale_y;
  const float mirror = p.flip ? -1.0f : 1.0f;
  const float c = 0.5f * static_cast<float>(size - 1);
  AugmentTransform t;
  // S^-1 R(-a) = [[cos / sx, -sin / sx], [sin / sy, cos / sy]], or with the zoom after the
  // rotation (Keras) R(-a) S^-1 = [[cos / sx, -sin / sy], [sin / sx, cos / sy]]; the mirror
  // negates the x row.
  const float off_x = p.zoom_after_rotation ? inv_y : inv_x;  // m01's factor
  const float off_y = p.zoom_after_rotation ? inv_x : inv_y;  // m10's
  t.m00 = mirror * cos_a * inv_x;
  t.m01 = -mirror * sin_a * off_x;
  t.m10 = sin_a * off_y;
  t.m11 = cos_a * inv_y;
  const float ox = c + p.shift_x, oy = c + p.shift_y;  // where the source centre lands
  t.m02 = c - (t.m00 * ox + t.m01 * oy);
  t.m12 = c - (t.m10 * ox + t.m11 * oy);
  t.identity = 0;
  t.sharpness = p.sharpness;
  t.gamma = p.gamma;
  t.contrast = p.contrast;
  t.brightness = p.brightness;
  t.photometric = p.sharpness != 1.0f || p.gamma != 1.0f || p.contrast != 1.0f ||
                  p.brightness != 0.0f;
  return t;
}

// The per-image step both twins take: the transform of batch slot `slot`.
PNEUMO_HD AugmentTransform augment_transform(RngKey key, uint32_t slot,
                                             const AugmentSettings& settings, int size) {
  if (!settings.enabled) {
    AugmentTransform t{1.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f, 1, 0, 1.0f, 1.0f, 1.0f, 0.0f};
    return t;
  }
  if (settings.use_fixed) return augment_inverse_transform(settings.fixed, size);
  return augment_inverse_transform(draw_augment_params(key, slot, settings, size), size);
}

// Bilinear sample of a uint8 image (size, size) at (x, y), with 'nearest' fill: coordinates are
// clamped to [0, size - 1] first, which is the same as replicating the border pixels outward
// (OpenCV's BORDER_REPLICATE). At integer coordinates the weights are exactly 0 and 1, so the
// pixel comes back unchanged. Returns a value in [0, 255].
PNEUMO_HD float sample_bilinear_replicate(const uint8_t* image, int size, float x, float y) {
  const float last = static_cast<float>(size - 1);
  x = fminf(fmaxf(x, 0.0f), last);
  y = fminf(fmaxf(y, 0.0f), last);
  const int x0 = static_cast<int>(x), y0 = static_cast<int>(y);  // floor, as x, y >= 0
  const int x1 = x0 + 1 < size ? x0 + 1 : x0;
  const int y1 = y0 + 1 < size ? y0 + 1 : y0;
  const float fx = x - static_cast<float>(x0), fy = y - static_cast<float>(y0);
  const float p00 = image[y0 * size + x0], p01 = image[y0 * size + x1];
  const float p10 = image[y1 * size + x0], p11 = image[y1 * size + x1];
  const float top = p00 + fx * (p01 - p00);
  const float bottom = p10 + fx * (p11 - p10);
  return top + fy * (bottom - top);
}

// The warped image at output pixel (x, y), in [0, 255].
PNEUMO_HD float warped_value(const uint8_t* image, int size, const AugmentTransform& t, int x,
                             int y) {
  const float fx = static_cast<float>(x), fy = static_cast<float>(y);
  const float source_x = t.m00 * fx + t.m01 * fy + t.m02;
  const float source_y = t.m10 * fx + t.m11 * fy + t.m12;
  return sample_bilinear_replicate(image, size, source_x, source_y);
}

// The per-pixel function: output pixel (x = column, y = row) of one image, in [0, 1], before
// any standardisation. image: uint8 (size, size). A plain gather divides by 255 exactly as the
// warp path does, so an identity warp and a plain gather give bit-identical results.
// Sharpness blends the warped image with its 3x3 binomial blur ([1 2 1] x [1 2 1] / 16, taken on
// the warped image with the output's border replicated): blur + sharpness (value - blur), as
// PIL's and torchvision's sharpness adjustment do with their smoothing kernel.
PNEUMO_HD float augment_pixel(const uint8_t* image, int size, const AugmentTransform& t, int x,
                              int y) {
  if (t.identity) return static_cast<float>(image[y * size + x]) / 255.0f;
  float v = warped_value(image, size, t, x, y) / 255.0f;
  if (!t.photometric) return v;
  if (t.sharpness != 1.0f) {
    float blur = 0.0f;
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) {
        const int nx = x + dx < 0 ? 0 : (x + dx >= size ? size - 1 : x + dx);
        const int ny = y + dy < 0 ? 0 : (y + dy >= size ? size - 1 : y + dy);
        const float weight = static_cast<float>((2 - (dx < 0 ? -dx : dx)) * (2 - (dy < 0 ? -dy : dy)));
        blur += weight * warped_value(image, size, t, nx, ny);
      }
    blur *= 1.0f / (16.0f * 255.0f);
    v = fminf(fmaxf(blur + t.sharpness * (v - blur), 0.0f), 1.0f);
  }
  if (t.gamma != 1.0f) v = powf(v, t.gamma);
  if (t.contrast != 1.0f) v = 0.5f + t.contrast * (v - 0.5f);
  if (t.brightness != 0.0f) v += t.brightness;
  return fminf(fmaxf(v, 0.0f), 1.0f);
}

// Per-image standardisation (InputNormalization::PerImage): from the sum and the sum of squares
// of an image's `count` values (accumulated in double), its mean and 1 / max(std, 1 / sqrt(count))
// with the biased deviation, as TensorFlow's per_image_standardization.
struct ImageMoments {
  float mean;
  float inv_std;
};
PNEUMO_HD ImageMoments standardization_moments(double sum, double sum_squares, int64_t count) {
  const double n = static_cast<double>(count);
  const double mean = sum / n;
  const double variance = fmax(sum_squares / n - mean * mean, 0.0);
  const double deviation = fmax(sqrt(variance), 1.0 / sqrt(n));
  ImageMoments m;
  m.mean = static_cast<float>(mean);
  m.inv_std = static_cast<float>(1.0 / deviation);
  return m;
}
PNEUMO_HD float standardize_value(float v, ImageMoments m) { return (v - m.mean) * m.inv_std; }

}  // namespace pneumo
