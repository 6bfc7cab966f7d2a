// Grad-CAM (Selvaraju et al., 2017) for the seed network: where in the image the evidence for the
// pneumonia logit lies, as seen by one layer. For each image, with A (K, h, w) that layer's output
// and G its gradient of the logit (inference mode: batch-norm affine, dropout the identity):
// alpha_k = mean over (h, w) of G_k, map = ReLU(sum_k alpha_k A_k). Used by `pneumo explain`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pneumo/model.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {

struct GradCam {
  std::vector<float> logits;           // (N)
  int64_t channels = 0, height = 0, width = 0;  // the layer's output (K, h, w)
  std::vector<float> channel_weights;  // (N, K): alpha
  std::vector<float> maps;             // (N, h, w), >= 0
};

// input: (N, 1, S, S) as the model takes it (already normalised); layer: the index of the layer
// whose output is explained (Model::layer_index("conv5") for the last block's convolution).
// Computed on the model's backend; the weighting and the maps in double on the host, so both
// backends give the same numbers up to their forward and backward arithmetic.
GradCam grad_cam(Model& model, ConstTensorView input, size_t layer);

// Bilinear upsampling of a (h, w) map to (size, size), pixel centres aligned and the border
// replicated (cv::resize's INTER_LINEAR convention).
std::vector<float> upsample_map(const float* map, int64_t height, int64_t width, int size);

// A PNG of `image` (uint8 (size, size)) with `map` ((size, size), scaled by its maximum) blended
// over it as a colour map. Returns "" when written, else why not (a build without OpenCV).
std::string write_heatmap_overlay(const std::string& path, const uint8_t* image, int size,
                                  const float* map);

}  // namespace pneumo
