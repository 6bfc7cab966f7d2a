// Augmentation settings (the recipe's ImageDataGenerator: rotation, independent x/y zoom, shift,
// flip with 'nearest' fill; plus the options that attack shortcut cues: aspect-ratio, brightness,
// contrast, gamma and sharpness jitter), the input normalisation, and the batched op's two twins.
// The parameter draw, the affine geometry and the per-pixel arithmetic that both twins call live
// in kernels/augment_math.hpp.
#pragma once

#include <cstdint>
#include <string>

#include "pneumo/random.hpp"

namespace pneumo {

// How the zoom is drawn. Keras' ImageDataGenerator (the recipe) draws the x and the y zoom
// independently, which also changes the aspect ratio; pneumo before 2026-12 drew one isotropic
// scale (kept for comparison: with it, a model reads the class from the image's width).
enum class ZoomMode : int { Independent = 0, Isotropic = 1 };

// What the network sees: x / 255 ("unit", the recipe), or each image shifted and scaled to mean 0
// and standard deviation 1 over its pixels after augmentation (TensorFlow's
// per_image_standardization: the deviation is floored at 1 / sqrt(pixels)), which makes the model
// blind to an image's overall brightness and contrast.
enum class InputNormalization : int { Unit = 0, PerImage = 1 };

// One image's transform. Geometry: flip, then the per-axis magnification, then rotation about the
// centre, then the shift (see augment_inverse_transform). Photometry, applied after the warp and in
// this order: sharpness, gamma, contrast, brightness, then clamped to [0, 1].
struct AugmentParams {
  float angle_degrees = 0.0f;  // positive turns the picture counter-clockwise on screen
  float scale_x = 1.0f;        // magnification of the content's width (> 1 zooms in)
  float scale_y = 1.0f;        // ... and of its height
  float shift_x = 0.0f;        // pixels: positive moves the content right
  float shift_y = 0.0f;        // pixels: positive moves the content down
  int flip = 0;                // 1: mirror left-right
  // 1: the magnification acts along the output's axes after the rotation (Keras' order); 0: along
  // the image's own axes before it. The same at angle 0 or with scale_x == scale_y.
  int zoom_after_rotation = 0;
  float sharpness = 1.0f;      // 0: 3x3 binomial blur, 1: unchanged, 2: sharpened by as much
  float gamma = 1.0f;          // v -> v^gamma (v in [0, 1])
  float contrast = 1.0f;       // v -> 0.5 + contrast (v - 0.5)
  float brightness = 0.0f;     // v -> v + brightness
};

struct AugmentSettings {
  bool enabled = true;            // false: plain gather + scale to [0, 1] (evaluation inputs)
  float rotation_degrees = 30.0f; // angle drawn uniformly in [-r, +r]
  float zoom = 0.2f;              // per-axis zoom factor k uniform in [1 - z, 1 + z], content x 1/k
  ZoomMode zoom_mode = ZoomMode::Independent;
  float shift = 0.1f;             // per-axis shift drawn uniformly in [-s, +s] x size
  bool horizontal_flip = true;    // flip with probability 1/2
  bool zoom_after_rotation = false;  // AugmentParams::zoom_after_rotation of every draw
  // Shortcut-cue options, all off (0) in the recipe:
  float aspect = 0.0f;      // width/height ratio times r, log-uniform in [1/(1+a), 1+a], area kept
  float brightness = 0.0f;  // added, uniform in [-b, b] (units of full scale)
  float contrast = 0.0f;    // factor uniform in [1 - c, 1 + c] about mid-grey
  float gamma = 0.0f;       // exponent log-uniform in [1/(1+g), 1+g]
  float sharpness = 0.0f;   // factor uniform in [1 - s, 1 + s] (0 blurs, 2 sharpens)
  // Applied to every image, augmented or not (set from the model's configuration).
  InputNormalization normalization = InputNormalization::Unit;
  // A fixed transform for every image instead of a draw (evaluate --stress); needs enabled.
  bool use_fixed = false;
  AugmentParams fixed;
};

// "keras" / "isotropic", "unit" / "per-image" (the flags' text is read in
// src/cli/commands/flag_text.cpp).
const char* zoom_mode_name(ZoomMode mode);
const char* normalization_name(InputNormalization normalization);
// The checkpoint's "normalisation" metadata text for each, and back ("x/255, grayscale" is what
// every checkpoint written before per-image standardisation existed says).
std::string normalization_description(InputNormalization normalization);
InputNormalization normalization_from_description(const std::string& text);

// The batched gather-augment-normalise op, as the two backends call it.
// images: uint8 (image_count, size, size); indices: int32 (batch); out: float (batch, 1, size, size)
// in [0, 1] (or standardised). Image slot i draws its parameters from philox4x32(key, 2i),
// (key, 2i + 1) and (key, 2^31 + i); the key is make_key(seed, RngStream::kAugment, epoch, step).
// An index outside [0, image_count) throws on the CPU; the kernel cannot throw, so it writes NaN
// into that slot (never reads out of bounds).
// CPU twin: src/cpu/augment.cpp (host pointers). CUDA: kernels/augment.cu (device pointers,
// launched on `stream`, a cudaStream_t passed as void* so this header needs no CUDA headers).
void augment_batch_cpu(const uint8_t* images, int64_t image_count, int size,
                       const int32_t* indices, int batch, const AugmentSettings& settings,
                       RngKey key, float* out);
void augment_batch_cuda(const uint8_t* images, int64_t image_count, int size,
                        const int32_t* indices, int batch, const AugmentSettings& settings,
                        RngKey key, float* out, void* stream);

}  // namespace pneumo
