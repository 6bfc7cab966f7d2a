// The arithmetic of the gather-augment-normalise op, shared by the CUDA kernel
// (kernels/augment.cu) and its CPU twin (src/cpu/augment.cpp): one function draws an image's
// parameters, one turns them into the inverse affine map, one computes an output pixel.
#pragma once

#include <cmath>
#include <cstdint>

#include "pneumo/augment.hpp"
#include "pneumo/hostdevice.hpp"
#include "pneumo/random.hpp"

namespace pneumo {

// One image's random transform, as drawn (see draw_augment_params).
struct AugmentParams {
  float angle_degrees;  // in [-r, r): positive turns the picture counter-clockwise on screen
  float scale;          // in [1 - z, 1 + z): > 1 enlarges the content (zooms in)
  float shift_x;        // in [-s, s) * size pixels: positive moves the content right
  float shift_y;        // in [-s, s) * size pixels: positive moves the content down
  int flip;             // 1: mirror left-right (probability 1/2 when enabled)
};

// The inverse map from an output pixel to its source coordinate:
//   source_x = m00 x + m01 y + m02,  source_y = m10 x + m11 y + m12
// for output column x and row y (pixel centres at integer coordinates). identity != 0 means a
// plain gather (settings.enabled == false), computed without any arithmetic on the pixel.
struct AugmentTransform {
  float m00, m01, m02;
  float m10, m11, m12;
  int identity;
};

// Parameters of image slot `slot` of a batch: two Philox calls, counters 2*slot and 2*slot + 1
// under `key` (stream kAugment, keyed by epoch and step), so a slot's draw is independent of the
// batch size and identical on the CPU and the GPU. Word use: angle v[0], scale v[1], shift_x v[2],
// shift_y v[3] of the first call; flip is the top bit of v[0] of the second.
// Unlike Keras, which draws x and y zoom independently, the zoom here is isotropic.
PNEUMO_HD AugmentParams draw_augment_params(RngKey key, uint32_t slot,
                                            const AugmentSettings& settings, int size) {
  const Philox4 a = philox4x32(key, 2u * slot);
  const Philox4 b = philox4x32(key, 2u * slot + 1u);
  const float r = settings.rotation_degrees, z = settings.zoom, s = settings.shift;
  AugmentParams p;
  p.angle_degrees = uniform_in(a.v[0], -r, r);
  p.scale = uniform_in(a.v[1], 1.0f - z, 1.0f + z);
  p.shift_x = uniform_in(a.v[2], -s, s) * static_cast<float>(size);
  p.shift_y = uniform_in(a.v[3], -s, s) * static_cast<float>(size);
  p.flip = settings.horizontal_flip ? static_cast<int>(b.v[0] >> 31) : 0;
  return p;
}

// The geometry, written once. With c = (size - 1) / 2 the image centre (pixel centres at
// integers, so the centre of a 150-pixel image is 74.5), the FORWARD map takes a source point
// p to the output point
//     q = c + R(angle) * scale * F(p - c) + (shift_x, shift_y)
// where F mirrors x (x -> -x) when flip is set, and R(a) = [[cos a, sin a], [-sin a, cos a]] in
// image coordinates (x right, y DOWN): a positive angle turns the picture counter-clockwise as
// seen on screen, exactly as cv::getRotationMatrix2D(c, angle, scale) does. So: flip, then zoom
// and rotate about the centre, then shift. The op evaluates the INVERSE for every output pixel:
//     p = c + F(R(-angle) (q - c - shift) / scale).
PNEUMO_HD AugmentTransform augment_inverse_transform(const AugmentParams& p, int size) {
  const float radians = p.angle_degrees * 0.017453292519943295f;  // pi / 180
  const float cos_a = cosf(radians), sin_a = sinf(radians);
  const float inv_scale = 1.0f / p.scale;
  const float mirror = p.flip ? -1.0f : 1.0f;
  const float c = 0.5f * static_cast<float>(size - 1);
  AugmentTransform t;
  // R(-a) = [[cos, -sin], [sin, cos]]; the mirror negates the resulting x row.
  t.m00 = mirror * cos_a * inv_scale;
  t.m01 = -mirror * sin_a * inv_scale;
  t.m10 = sin_a * inv_scale;
  t.m11 = cos_a * inv_scale;
  const float ox = c + p.shift_x, oy = c + p.shift_y;  // where the source centre lands
  t.m02 = c - (t.m00 * ox + t.m01 * oy);
  t.m12 = c - (t.m10 * ox + t.m11 * oy);
  t.identity = 0;
  return t;
}

// The per-image step both twins take: the transform of batch slot `slot`.
PNEUMO_HD AugmentTransform augment_transform(RngKey key, uint32_t slot,
                                             const AugmentSettings& settings, int size) {
  if (!settings.enabled) {
    AugmentTransform t{1.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f, 1};
    return t;
  }
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

// The per-pixel function: output pixel (x = column, y = row) of one image, in [0, 1].
// image: uint8 (size, size). A plain gather divides by 255 exactly as the warp path does, so an
// identity warp and a plain gather give bit-identical results.
PNEUMO_HD float augment_pixel(const uint8_t* image, int size, const AugmentTransform& t, int x,
                              int y) {
  if (t.identity) return static_cast<float>(image[y * size + x]) / 255.0f;
  const float fx = static_cast<float>(x), fy = static_cast<float>(y);
  const float source_x = t.m00 * fx + t.m01 * fy + t.m02;
  const float source_y = t.m10 * fx + t.m11 * fy + t.m12;
  return sample_bilinear_replicate(image, size, source_x, source_y) / 255.0f;
}

}  // namespace pneumo
