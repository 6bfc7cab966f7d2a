// Grad-CAM (Selvaraju et al., 2017) for the seed network: where in the image the evidence for the
// pneumonia logit lies, as seen by one layer. For each image, with A (K, h, w) that layer's output
// and G its gradient of the logit (inference mode: batch-norm affine, dropout the identity):
// alpha_k = mean over (h, w) of G_k, map = ReLU(sum_k alpha_k A_k). Used by `pneumo explain`.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pneumo/model.hpp"
#include "pneumo/tensor.hpp"
#include "pneumo/trainer.hpp"

namespace pneumo {

struct GradCam {
  std::vector<float> logits;           // (N)
  int64_t channels = 0, height = 0, width = 0;  // the layer's output (K, h, w)
  // Where the layer's cells sit in the input: cell j's centre is at input pixel coordinate
  // cell_offset + cell_stride * j (rows and columns alike). The pools put an odd size's padding
  // on the top / left, so at 150 px conv5's cells are at 16 j - 2.5, not evenly over the image.
  double cell_stride = 1.0, cell_offset = 0.0;
  std::vector<float> channel_weights;  // (N, K): alpha
  std::vector<float> maps;             // (N, h, w), >= 0
};

// input: (N, 1, S, S) as the model takes it (already normalised); layer: the index of the layer
// whose output is explained (Model::layer_index("conv5") for the last block's convolution).
// Computed on the model's backend; the weighting and the maps in double on the host, so both
// backends give the same numbers up to their forward and backward arithmetic.
GradCam grad_cam(Model& model, ConstTensorView input, size_t layer);

// The index of the layer named `name` if Grad-CAM can explain it: an (N, K, h, w) output with a
// layer after it (conv1 .. pool5, the dropouts and batch-norms between). Otherwise a pneumo::Error
// naming those layers (what `explain --layer` refuses before reading any image).
size_t grad_cam_layer(const Model& model, const std::string& name);

// Grad-CAM of every image of `data` (uint8 images on the model's device), `batch` at a time, each
// image first put through the model's own input normalisation: what `pneumo explain` and the
// evaluate gallery call. The maps are (count, h, w) at the layer's resolution. on_batch, when
// given, is told the number of images done after each batch (for a progress line).
GradCam grad_cam_images(Model& model, const ImageSet& data, size_t layer, int batch,
                        const std::function<void(int64_t done)>& on_batch = {});

// The gallery of `pneumo evaluate --gallery N`: into `folder`, the N most confident false
// positives, false negatives, true positives and true negatives of a split with their overlays,
// and the mean map (each map scaled to a peak of 1 first) of each confusion cell over that cell's
// mean image, listed in gallery.md with the dataset's citation. labels: 0/1 per image; images:
// the split's uint8 images on the host, in data's order; files: their names.
struct GalleryInputs {
  std::string title;                 // e.g. "test split, model runs/x/model.safetensors"
  double threshold = 0.5;            // the decision rule applied
  const std::vector<uint8_t>* images = nullptr;
  const std::vector<uint8_t>* labels = nullptr;
  const std::vector<std::string>* files = nullptr;
  int size = 0;
  std::string layer;
};
void write_gallery(const std::string& folder, const GradCam& cam, const GalleryInputs& inputs,
                   int per_group);

// The input coordinates of a layer's cells (GradCam::cell_stride, cell_offset): each 2x2 pool up
// to and including `layer` doubles the stride and moves the offset by stride (1/2 - padding).
std::pair<double, double> grad_cam_cell_grid(const Model& model, size_t layer);

// Bilinear upsampling of a (h, w) map to (size, size), the border replicated. With stride 0 the
// cells are spread evenly, pixel centres aligned (cv::resize's INTER_LINEAR convention);
// otherwise cell j's centre is at offset + stride * j (a GradCam's cell grid).
std::vector<float> upsample_map(const float* map, int64_t height, int64_t width, int size,
                                double stride = 0.0, double offset = 0.0);

// A PNG of `image` (uint8 (size, size)) with `map` ((size, size), scaled by its maximum) blended
// over it as a colour map. Returns "" when written, else why not (a build without OpenCV, which
// writes none); throws pneumo::Error when the file cannot be written.
std::string write_heatmap_overlay(const std::string& path, const uint8_t* image, int size,
                                  const float* map);

}  // namespace pneumo
