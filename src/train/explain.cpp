// Grad-CAM (see explain.hpp): one inference forward, a backward of the logits down to the chosen
// layer, then the channel weights and the maps on the host.
#include "pneumo/explain.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/metrics.hpp"
#include "pneumo/op_geometry.hpp"
#include "pneumo/npy.hpp"

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
  std::tie(cam.cell_stride, cam.cell_offset) = grad_cam_cell_grid(model, layer);
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

size_t grad_cam_layer(const Model& model, const std::string& name) {
  const auto shapes = model.layer_shapes();  // (name, output shape per image: C, H, W or F)
  std::string explainable;
  for (size_t i = 0; i + 1 < shapes.size(); ++i) {
    if (shapes[i].second.rank() != 4) continue;
    if (shapes[i].first == name) return i;
    explainable += (explainable.empty() ? "" : ", ") + shapes[i].first;
  }
  throw Error("Grad-CAM explains a layer with a (channels, height, width) output and a layer "
              "after it: one of " + explainable + "; got '" + name + "'");
}

std::pair<double, double> grad_cam_cell_grid(const Model& model, size_t layer) {
  const auto shapes = model.layer_shapes();
  PNEUMO_CHECK(layer < shapes.size(), "grad_cam_cell_grid: no layer ", layer);
  double stride = 1.0, offset = 0.0;
  int64_t rows = model.config().input_size;
  for (size_t i = 0; i <= layer; ++i) {
    const Shape& out = shapes[i].second;
    if (out.rank() != 4 || out.h() == rows) continue;
    // A 2x2 pool: output row r covers input rows 2 r - pad_top + {0, 1}.
    offset += stride * (0.5 - static_cast<double>(PoolGeometry{1, 1, rows, rows}.pad_top()));
    stride *= 2.0;
    rows = out.h();
  }
  return {stride, offset};
}

GradCam grad_cam_images(Model& model, const ImageSet& data, size_t layer, int batch,
                        const std::function<void(int64_t done)>& on_batch) {
  PNEUMO_CHECK(batch >= 1 && batch <= model.max_batch(), "grad_cam_images: batch ", batch,
               " outside [1, ", model.max_batch(), "]");
  Backend& backend = model.backend();
  const int size = data.size;
  std::vector<int32_t> order(static_cast<size_t>(data.count));
  for (int64_t i = 0; i < data.count; ++i) order[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  Array<int32_t> indices(data.count, backend.device());
  copy_bytes(indices.data(), backend.device(), order.data(), Device::Cpu, indices.bytes());
  Tensor input = backend.empty({batch, 1, size, size});
  AugmentSettings plain;  // no augmentation; the model's own input normalisation
  plain.enabled = false;
  plain.normalization = model.config().input_normalization;
  GradCam all;
  for (int64_t first = 0; first < data.count; first += batch) {
    const int n = static_cast<int>(std::min<int64_t>(batch, data.count - first));
    TensorView x{input.data(), {n, 1, size, size}, backend.device()};
    backend.gather_augment(data.images.data(), data.count, size, indices.data() + first, plain, {},
                           x);
    GradCam part = grad_cam(model, x, layer);
    all.channels = part.channels;
    all.height = part.height;
    all.width = part.width;
    all.cell_stride = part.cell_stride;
    all.cell_offset = part.cell_offset;
    all.logits.insert(all.logits.end(), part.logits.begin(), part.logits.end());
    all.channel_weights.insert(all.channel_weights.end(), part.channel_weights.begin(),
                               part.channel_weights.end());
    all.maps.insert(all.maps.end(), part.maps.begin(), part.maps.end());
    if (on_batch) on_batch(first + n);
  }
  return all;
}

std::vector<float> upsample_map(const float* map, int64_t height, int64_t width, int size,
                                double stride, double offset) {
  std::vector<float> out(static_cast<size_t>(size) * size);
  // Cell coordinate of input pixel v: (v - offset) / stride; evenly spread, (v + 0.5) h / S - 0.5.
  const double sy = stride > 0 ? 1.0 / stride : static_cast<double>(height) / size;
  const double sx = stride > 0 ? 1.0 / stride : static_cast<double>(width) / size;
  const double ty = stride > 0 ? -offset / stride : 0.5 * sy - 0.5;
  const double tx = stride > 0 ? -offset / stride : 0.5 * sx - 0.5;
  for (int y = 0; y < size; ++y) {
    const double fy = std::clamp(y * sy + ty, 0.0, static_cast<double>(height - 1));
    const int64_t y0 = static_cast<int64_t>(fy), y1 = std::min(y0 + 1, height - 1);
    const double wy = fy - static_cast<double>(y0);
    for (int x = 0; x < size; ++x) {
      const double fx = std::clamp(x * sx + tx, 0.0, static_cast<double>(width - 1));
      const int64_t x0 = static_cast<int64_t>(fx), x1 = std::min(x0 + 1, width - 1);
      const double wx = fx - static_cast<double>(x0);
      const double top = map[y0 * width + x0] * (1 - wx) + map[y0 * width + x1] * wx;
      const double bottom = map[y1 * width + x0] * (1 - wx) + map[y1 * width + x1] * wx;
      out[static_cast<size_t>(y) * size + x] = static_cast<float>(top * (1 - wy) + bottom * wy);
    }
  }
  return out;
}

void write_gallery(const std::string& folder, const GradCam& cam, const GalleryInputs& in,
                   int per_group) {
  namespace fs = std::filesystem;
  std::error_code error;
  fs::create_directories(folder, error);
  if (error) throw Error("cannot create gallery folder '" + folder + "': " + error.message());
  const size_t count = cam.logits.size();
  const int size = in.size;
  const size_t pixels = static_cast<size_t>(size) * size;
  PNEUMO_CHECK(in.images && in.labels && in.files && in.labels->size() == count &&
                   in.files->size() == count && in.images->size() == count * pixels,
               "write_gallery: ", count, " maps but other counts of images, labels or files");
  // Each image's map at the input size, scaled to a peak of 1 (an all-zero map stays zero).
  auto map_of = [&](size_t i) {
    std::vector<float> map = upsample_map(cam.maps.data() + i * cam.height * cam.width,
                                          cam.height, cam.width, size, cam.cell_stride,
                                          cam.cell_offset);
    const float peak = *std::max_element(map.begin(), map.end());
    if (peak > 0.0f)
      for (float& v : map) v /= peak;
    return map;
  };
  // Cells: 0 TN, 1 FP, 2 FN, 3 TP (2 label + predicted).
  const char* cell_names[4] = {"true negatives (NORMAL called NORMAL)",
                               "false positives (NORMAL called PNEUMONIA)",
                               "false negatives (PNEUMONIA called NORMAL)",
                               "true positives (PNEUMONIA called PNEUMONIA)"};
  const char* cell_files[4] = {"true_negative", "false_positive", "false_negative", "true_positive"};
  std::vector<size_t> members[4];
  for (size_t i = 0; i < count; ++i) {
    const int predicted = predicts_pneumonia(cam.logits[i], in.threshold) ? 1 : 0;
    members[2 * (*in.labels)[i] + predicted].push_back(i);
  }
  std::ostringstream md;
  md << "# Gallery: " << in.title << "\n\nGrad-CAM of " << in.layer
     << " for the PNEUMONIA logit, whatever the prediction (for an image called NORMAL the map "
        "shows what pushed it towards pneumonia, so the NORMAL columns' maps are often faint), "
        "threshold "
     << format_threshold(in.threshold) << ". Each overlay is scaled to its own peak; the mean maps average maps"
     << " scaled to a peak of 1, drawn over the mean image of their cell.\n\n"
     << "## Mean map per confusion cell\n\n"
     << "| true \\ predicted | NORMAL | PNEUMONIA |\n|---|---|---|\n";
  std::string cell_image[4];
  for (int c = 0; c < 4; ++c) {
    if (members[c].empty()) {
      cell_image[c] = "no images";
      continue;
    }
    std::vector<double> mean_map(pixels, 0.0), mean_image(pixels, 0.0);
    for (size_t i : members[c]) {
      const std::vector<float> map = map_of(i);
      for (size_t p = 0; p < pixels; ++p) {
        mean_map[p] += map[p];
        mean_image[p] += (*in.images)[i * pixels + p];
      }
    }
    std::vector<float> map(pixels);
    std::vector<uint8_t> image(pixels);
    for (size_t p = 0; p < pixels; ++p) {
      map[p] = static_cast<float>(mean_map[p] / static_cast<double>(members[c].size()));
      image[p] = static_cast<uint8_t>(std::lround(mean_image[p] / static_cast<double>(members[c].size())));
    }
    write_npy((fs::path(folder) / (std::string("mean_") + cell_files[c] + ".npy")).string(),
              NpyType::Float32, {size, size}, map.data());
    const std::string png = std::string("mean_") + cell_files[c] + ".png";
    const std::string problem =
        write_heatmap_overlay((fs::path(folder) / png).string(), image.data(), size, map.data());
    cell_image[c] = problem.empty()
                        ? detail::concat("![", cell_files[c], "](", png, ") ", members[c].size(), " images")
                        : detail::concat(members[c].size(), " images (no PNG: ", problem, ")");
  }
  md << "| NORMAL | " << cell_image[0] << " | " << cell_image[1] << " |\n"
     << "| PNEUMONIA | " << cell_image[2] << " | " << cell_image[3] << " |\n";
  // The most confident of each cell: FP and TP by the highest probability, FN and TN the lowest.
  for (int c : {1, 2, 3, 0}) {
    std::vector<size_t> order = members[c];
    const bool highest = c == 1 || c == 3;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return highest ? cam.logits[a] > cam.logits[b] : cam.logits[a] < cam.logits[b];
    });
    if (static_cast<int>(order.size()) > per_group) order.resize(static_cast<size_t>(per_group));
    md << "\n## Most confident " << cell_names[c] << "\n\n";
    if (order.empty()) md << "(none)\n";
    for (size_t i : order) {
      std::ostringstream name;
      name << cell_files[c] << "_" << std::setw(4) << std::setfill('0') << i << ".png";
      const std::vector<float> map = map_of(i);
      const std::string problem = write_heatmap_overlay(
          (fs::path(folder) / name.str()).string(), in.images->data() + i * pixels, size, map.data());
      // Not rounded onto 1 or 0 (a false positive read "p(pneumonia) 1.0000"), nor onto the
      // threshold or past it (0.50004, a false positive at 0.5, read "0.5000").
      md << "- p(pneumonia) "
         << format_decided_probability(sigmoid(cam.logits[i]),
                                       predicts_pneumonia(cam.logits[i], in.threshold),
                                       in.threshold, 4)
         << ", `"
         << (*in.files)[i] << "`"
         << (problem.empty() ? "\n\n  ![](" + name.str() + ")\n" : " (no PNG: " + problem + ")\n");
    }
  }
  md << "\n" << dataset_credit() << "\n";
  std::ofstream out(fs::path(folder) / "gallery.md");
  if (!(out << md.str())) throw Error("cannot write " + (fs::path(folder) / "gallery.md").string());
}

#ifndef PNEUMO_WITH_OPENCV
std::string write_heatmap_overlay(const std::string&, const uint8_t*, int, const float*) {
  return "this build of pneumo has no OpenCV, which writing PNG overlays needs (the .npy maps "
         "are written)";
}
#endif

}  // namespace pneumo
