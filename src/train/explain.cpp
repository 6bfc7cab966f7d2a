// Grad-CAM (see explain.hpp): one inference forward, a backward of the logits down to the chosen
// layer, then the channel weights and the maps on the host.
#include "pneumo/explain.hpp"

#include <algorithm>
#include <cmath>

#include "pneumo/error.hpp"

namespace pneumo {

GradCam grad_cam(Model& model, ConstTensorView input, size_t layer) {
  PNEUMO_CHECK(layer + 1 < model.layer_count(), "grad_cam: layer ", layer, " has no layer after it");
  const int64_t n = input.shape.n();
  ConstTensorView logits = model.forward(input, /*training=*/false);
  GradCam cam;
  cam.logits.resize(static_cast<size_t>(n));
  copy_bytes(cam.logits.data(), Device::Cpu, logits.data, logits.device,
             static_cast<size_t>(n) * sizeof(float));
  // d logit_i / d logit_i = 1; the images of a batch are independent at inference.
  std::vector<float> ones(static_cast<size_t>(n), 1.0f);
  Tensor dlogits = Tensor::from_host({n, 1}, ones.data(), input.device);
  model.backward(dlogits, layer + 1);
  const ConstTensorView activations = model.last_outputs().at(layer);
  const ConstTensorView gradients = model.last_input_gradients().at(layer + 1);
  PNEUMO_CHECK(activations.shape.rank() == 4 && gradients.shape == activations.shape,
               "grad_cam: layer ", model.layer_name(layer), " outputs ", activations.shape.str(),
               " (a (N, K, h, w) map is needed) and receives ", gradients.shape.str());
  cam.channels = activations.shape.c();
  cam.height = activations.shape.h();
  cam.width = activations.shape.w();
  std::vector<float> a(static_cast<size_t>(activations.numel())), g(a.size());
  copy_bytes(a.data(), Device::Cpu, activations.data, activations.device, a.size() * sizeof(float));
  copy_bytes(g.data(), Device::Cpu, gradients.data, gradients.device, g.size() * sizeof(float));
  const int64_t k = cam.channels, plane = cam.height * cam.width;
  cam.channel_weights.assign(static_cast<size_t>(n * k), 0.0f);
  cam.maps.assign(static_cast<size_t>(n * plane), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> map(static_cast<size_t>(plane), 0.0);
    for (int64_t c = 0; c < k; ++c) {
      const size_t base = static_cast<size_t>((i * k + c) * plane);
      double alpha = 0.0;
      for (int64_t p = 0; p < plane; ++p) alpha += g[base + static_cast<size_t>(p)];
      alpha /= static_cast<double>(plane);
      cam.channel_weights[static_cast<size_t>(i * k + c)] = static_cast<float>(alpha);
      for (int64_t p = 0; p < plane; ++p) map[static_cast<size_t>(p)] += alpha * a[base + static_cast<size_t>(p)];
    }
    for (int64_t p = 0; p < plane; ++p)
      cam.maps[static_cast<size_t>(i * plane + p)] = static_cast<float>(std::max(map[static_cast<size_t>(p)], 0.0));
  }
  return cam;
}

std::vector<float> upsample_map(const float* map, int64_t height, int64_t width, int size) {
  std::vector<float> out(static_cast<size_t>(size) * size);
  const double sy = static_cast<double>(height) / size, sx = static_cast<double>(width) / size;
  for (int y = 0; y < size; ++y) {
    const double fy = std::clamp((y + 0.5) * sy - 0.5, 0.0, static_cast<double>(height - 1));
    const int64_t y0 = static_cast<int64_t>(fy), y1 = std::min(y0 + 1, height - 1);
    const double wy = fy - static_cast<double>(y0);
    for (int x = 0; x < size; ++x) {
      const double fx = std::clamp((x + 0.5) * sx - 0.5, 0.0, static_cast<double>(width - 1));
      const int64_t x0 = static_cast<int64_t>(fx), x1 = std::min(x0 + 1, width - 1);
      const double wx = fx - static_cast<double>(x0);
      const double top = map[y0 * width + x0] * (1 - wx) + map[y0 * width + x1] * wx;
      const double bottom = map[y1 * width + x0] * (1 - wx) + map[y1 * width + x1] * wx;
      out[static_cast<size_t>(y) * size + x] = static_cast<float>(top * (1 - wy) + bottom * wy);
    }
  }
  return out;
}

#ifndef PNEUMO_WITH_OPENCV
std::string write_heatmap_overlay(const std::string&, const uint8_t*, int, const float*) {
  return "this build of pneumo has no OpenCV, which writing PNG overlays needs (the .npy maps "
         "are written)";
}
#endif

}  // namespace pneumo
