// Grad-CAM: the maps against an independent computation (central differences of the logit with
// respect to the layer's output, in double, then the weighting), and a synthetic model whose
// class is a dark patch at a known place: its map must light up there and not at the opposite
// corner. CPU backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "pneumo/explain.hpp"
#include "pneumo/model.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/trainer.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::to_host;

// Batch-norm running statistics and gammas away from (0, 1) and 1, so the inference backward
// (dy gamma / sqrt(var + eps)) is really tested.
void perturb_batchnorm(Model& model) {
  std::vector<float> buffers = to_host(model.buffers());
  for (const auto& info : model.buffer_infos())
    for (int64_t i = 0; i < info.shape.numel(); ++i) {
      const bool var = info.name.find("running_var") != std::string::npos;
      buffers[static_cast<size_t>(info.offset + i)] =
          var ? 0.5f + 0.1f * static_cast<float>(i % 7) : 0.05f * static_cast<float>(i % 5) - 0.1f;
    }
  copy_bytes(model.buffers().data, Device::Cpu, buffers.data(), Device::Cpu,
             buffers.size() * sizeof(float));
  std::vector<float> params = to_host(model.parameters());
  for (const auto& info : model.parameter_infos())
    if (info.name.rfind("bn", 0) == 0 && info.name.find(".weight") != std::string::npos)
      for (int64_t i = 0; i < info.shape.numel(); ++i)
        params[static_cast<size_t>(info.offset + i)] = 0.5f + 0.15f * static_cast<float>(i % 9);
  copy_bytes(model.parameters().data, Device::Cpu, params.data(), Device::Cpu,
             params.size() * sizeof(float));
}

// Two parts, as Grad-CAM has two: (1) the gradient of each image's logit with respect to the
// layer's output, against central differences in double through the rest of the network
// (Model::forward_from); elements where two step sizes disagree sit near a kink (a max-pool
// near-tie, a ReLU near 0) and are skipped, at most 10% of them; (2) the channel weights and the
// maps against the formula applied here, in double, to that output and that gradient.
TEST(GradCam, GradientMatchesFiniteDifferencesAndMapsTheFormula) {
  auto backend = make_cpu_backend(1);
  ModelConfig config;
  config.input_size = 24;  // pool4 gives 2x2 maps, pool5 1x1
  Model model(*backend, config, 2);
  model.initialize(11);
  perturb_batchnorm(model);
  Tensor x = testing::random_tensor({2, 1, 24, 24}, Device::Cpu, 5, 0.0f, 1.0f);
  // Pooled outputs: a convolution's output holds ReLU zeros that tie in the next max-pool window
  // exactly, a kink no step size reveals; the maps of any layer come from the same code.
  for (const char* name : {"pool4", "pool5"}) {
    const size_t layer = model.layer_index(name);
    const GradCam cam = grad_cam(model, x, layer);
    const std::vector<float> g = to_host(model.last_input_gradients()[layer + 1]);
    Tensor a = Tensor::from_host(model.last_outputs()[layer].shape,
                                 to_host(model.last_outputs()[layer]).data(), Device::Cpu);
    const int64_t per_image = a.numel() / 2, plane = cam.height * cam.width;
    auto difference = [&](int64_t e, double step) {
      const float kept = a.data()[e];
      const size_t image = static_cast<size_t>(e / per_image);
      a.data()[e] = static_cast<float>(kept + step);
      const double up = to_host(model.forward_from(layer, a))[image];
      a.data()[e] = static_cast<float>(kept - step);
      const double down = to_host(model.forward_from(layer, a))[image];
      a.data()[e] = kept;
      return (up - down) / (2 * step);
    };
    // The forward pass runs in float: a difference quotient carries a rounding error of a few
    // units in the last place of the logit, divided by the step; it dominates at small steps and
    // small gradients. Larger steps cross more kinks (a ReLU input within step x weight of zero),
    // so three steps are taken and the backward value must match the quotient of one of them.
    const std::vector<float> logits = to_host(model.forward_from(layer, a));
    int64_t checked = 0, failed = 0;
    for (int64_t e = 0; e < a.numel(); ++e) {
      const float logit = logits[static_cast<size_t>(e / per_image)];
      const double ulp = std::nextafter(std::fabs(logit), INFINITY) - std::fabs(logit);
      auto tolerance = [&](double quotient, double step) {
        return 2e-4 + 2e-2 * std::fabs(quotient) + 8 * ulp / step;
      };
      const double steps[3] = {4e-3, 1e-3, 2.5e-4};
      double quotients[3];
      for (int k = 0; k < 3; ++k) quotients[k] = difference(e, steps[k]);
      // Near a kink the two finer quotients disagree: skipped (at most 10% of the elements).
      if (std::fabs(quotients[1] - quotients[2]) > tolerance(quotients[2], steps[2])) continue;
      ++checked;
      bool matched = false;
      for (int k = 0; k < 3; ++k)
        matched = matched || std::fabs(g[static_cast<size_t>(e)] - quotients[k]) <=
                                 tolerance(quotients[k], steps[k]);
      if (!matched && ++failed <= 5)
        ADD_FAILURE() << name << " element " << e << ": backward " << g[static_cast<size_t>(e)]
                      << ", finite differences " << quotients[0] << ", " << quotients[1] << ", "
                      << quotients[2] << " (steps 4e-3, 1e-3, 2.5e-4)";
    }
    EXPECT_EQ(failed, 0) << name;
    EXPECT_GE(checked, a.numel() * 9 / 10) << name << ": too many elements near kinks";

    double largest = 0.0;
    for (int64_t i = 0; i < 2; ++i) {
      std::vector<double> map(static_cast<size_t>(plane), 0.0);
      for (int64_t c = 0; c < cam.channels; ++c) {
        const size_t base = static_cast<size_t>((i * cam.channels + c) * plane);
        double alpha = 0.0;
        for (int64_t p = 0; p < plane; ++p) alpha += g[base + static_cast<size_t>(p)];
        alpha /= static_cast<double>(plane);
        ASSERT_NEAR(cam.channel_weights[static_cast<size_t>(i * cam.channels + c)], alpha,
                    1e-6 + 1e-5 * std::fabs(alpha));
        for (int64_t p = 0; p < plane; ++p)
          map[static_cast<size_t>(p)] += alpha * a.data()[base + static_cast<size_t>(p)];
      }
      for (int64_t p = 0; p < plane; ++p) {
        const double expected = std::max(map[static_cast<size_t>(p)], 0.0);
        largest = std::max(largest, expected);
        ASSERT_NEAR(cam.maps[static_cast<size_t>(i * plane + p)], expected, 1e-6 + 1e-5 * expected)
            << name << " image " << i << " cell " << p;
      }
    }
    if (std::string(name) == "pool4") {
      EXPECT_GT(largest, 1e-4) << "every map is zero: the weighting is not tested";
    }
  }
}

// The same model, weights and images on the CUDA backend give the CPU's maps (their forward and
// backward arithmetic differ in rounding only). pool4 is compared because its maps are far from
// zero on this model (on the CPU every conv3 map is 0 and conv5 has 4 positive cells of 27, so
// those comparisons alone would pass for a CUDA map of zeros). Skipped without a GPU.
TEST(GradCamCuda, MatchesTheCpu) {
  PNEUMO_REQUIRE_CUDA();
  auto cpu = make_cpu_backend(1);
  auto cuda = make_cuda_backend(BackendOptions{});
  ModelConfig config;
  config.input_size = 40;
  Model on_cpu(*cpu, config, 3), on_cuda(*cuda, config, 3);
  on_cpu.initialize(4);
  perturb_batchnorm(on_cpu);
  const std::vector<float> params = to_host(on_cpu.parameters()), buffers = to_host(on_cpu.buffers());
  copy_bytes(on_cuda.parameters().data, Device::Cuda, params.data(), Device::Cpu, params.size() * sizeof(float));
  copy_bytes(on_cuda.buffers().data, Device::Cuda, buffers.data(), Device::Cpu, buffers.size() * sizeof(float));
  const std::vector<float> images = testing::random_values(3 * 40 * 40, 21, 0.0f, 1.0f);
  Tensor x_cpu = Tensor::from_host({3, 1, 40, 40}, images.data(), Device::Cpu);
  Tensor x_cuda = Tensor::from_host({3, 1, 40, 40}, images.data(), Device::Cuda);
  for (const char* name : {"pool4", "conv5", "conv3"}) {
    const GradCam a = grad_cam(on_cpu, x_cpu, on_cpu.layer_index(name));
    const GradCam b = grad_cam(on_cuda, x_cuda, on_cuda.layer_index(name));
    EXPECT_TRUE(testing::all_close(b.logits, a.logits, 1e-5, 1e-4, "logits"));
    EXPECT_TRUE(testing::all_close(b.channel_weights, a.channel_weights, 1e-6, 1e-3, "alpha"));
    EXPECT_TRUE(testing::all_close(b.maps, a.maps, 1e-5, 1e-3, "maps"));
    if (std::string(name) == "pool4") {
      EXPECT_GT(*std::max_element(a.maps.begin(), a.maps.end()), 1e-4f)
          << "the CPU's pool4 maps are all zero: the comparison tests nothing";
    }
  }
}

// Where each layer's cells sit in the input: the pools pad an odd size on the top / left, so at
// 150 px (150 -> 75 -> 38 -> 19 -> 10 -> 5) conv5's cell j covers input rows centred on 16 j - 2.5,
// not on the even spread 15 j + 7 a plain resize assumes; at 96 px nothing is padded and the two
// agree (16 j + 7.5).
TEST(GradCam, CellsSitWhereThePoolsPutThem) {
  auto backend = make_cpu_backend(1);
  ModelConfig config;
  config.input_size = 150;
  Model model(*backend, config, 1);
  const auto at = [&](const char* layer) {
    return grad_cam_cell_grid(model, grad_cam_layer(model, layer));
  };
  EXPECT_EQ(at("conv1"), std::make_pair(1.0, 0.0));
  EXPECT_EQ(at("pool1"), std::make_pair(2.0, 0.5));
  EXPECT_EQ(at("conv3"), std::make_pair(4.0, -0.5));  // 75 -> 38 pads a row: 0.5 + 2 (0.5 - 1)
  EXPECT_EQ(at("conv5"), std::make_pair(16.0, -2.5));
  config.input_size = 96;
  Model small(*backend, config, 1);
  EXPECT_EQ(grad_cam_cell_grid(small, grad_cam_layer(small, "conv5")), std::make_pair(16.0, 7.5));
  // A one-hot cell (row 0, column 2 of conv5's 5 x 5) upsampled on that grid: input pixel v is
  // at cell coordinate (v + 2.5) / 16, so column 29 is 0.97 of the way to column 2 and row 0 is
  // 0.16 past row 0's centre; by row 14 (1.03) the next row has taken over.
  std::vector<float> hot(25, 0.0f);
  hot[2] = 1.0f;
  const std::vector<float> up = upsample_map(hot.data(), 5, 5, 150, 16.0, -2.5);
  const float column_weight = 31.0f / 32.0f;  // column 29: (29 + 2.5) / 16 = 1.97
  EXPECT_FLOAT_EQ(up[0 * 150 + 29], (1.0f - 2.5f / 16.0f) * column_weight);
  EXPECT_FLOAT_EQ(up[13 * 150 + 29], (1.0f - 15.5f / 16.0f) * column_weight);
  EXPECT_FLOAT_EQ(up[14 * 150 + 29], 0.0f);
}

TEST(GradCam, UpsamplingKeepsConstantsAndCentresPixels) {
  const std::vector<float> flat(4, 2.5f);
  for (float v : upsample_map(flat.data(), 2, 2, 7)) EXPECT_FLOAT_EQ(v, 2.5f);
  // A 1x2 map [0, 1] upsampled to 4: pixel centres at 0.125, 0.375, 0.625, 0.875 of the width.
  const std::vector<float> ramp{0.0f, 1.0f};
  const std::vector<float> up = upsample_map(ramp.data(), 1, 2, 4);
  EXPECT_FLOAT_EQ(up[0], 0.0f);
  EXPECT_FLOAT_EQ(up[1], 0.25f);
  EXPECT_FLOAT_EQ(up[2], 0.75f);
  EXPECT_FLOAT_EQ(up[3], 1.0f);
}

// PNEUMONIA = a bright 8x8 patch at the top right of a noise image; NORMAL = noise only. The
// positives' maps of a trained model (at conv3, 8x8 cells over the 32x32 image) must put their
// mass on the patch and next to none on the opposite corner. (A bright distractor patch in both
// classes does not work as a control: the model then reads "more bright pixels", and Grad-CAM
// rightly shows both patches.)
TEST(GradCam, ASyntheticModelLooksAtThePatchThatDecidesTheClass) {
  auto backend = make_cpu_backend(0);
  ModelConfig config;
  config.input_size = 32;
  config.batchnorm_momentum = 0.7;  // settle the running statistics within the few steps here
  const int count = 128, size = 32;
  std::vector<uint8_t> images(static_cast<size_t>(count * size * size)), labels(count);
  auto noise = testing::random_values(count * size * size, 9, 120.0f, 240.0f);
  auto inside = [](int y, int x, int y0, int x0) { return y >= y0 && y < y0 + 8 && x >= x0 && x < x0 + 8; };
  for (int i = 0; i < count; ++i) {
    labels[static_cast<size_t>(i)] = static_cast<uint8_t>(i % 2);
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        const size_t p = static_cast<size_t>((i * size + y) * size + x);
        const bool signal = labels[static_cast<size_t>(i)] && inside(y, x, 2, 22);
        images[p] = static_cast<uint8_t>(signal ? 10 : noise[p]);
      }
  }
  ImageSet data = ImageSet::upload(Device::Cpu, images.data(), count, size, labels.data());
  Model model(*backend, config, 16);
  model.initialize(1);
  AugmentSettings none;
  none.enabled = false;
  Trainer trainer(*backend, model, 16, none, 1);
  for (uint32_t epoch = 0; epoch < 4; ++epoch)
    trainer.train_epoch(data, epoch_indices(labels, BalanceMode::None, 1, epoch), epoch);
  EpochStats after;
  trainer.predict_logits(data, &after);
  ASSERT_GT(after.accuracy, 0.9) << "the synthetic model did not learn; the map would mean nothing";

  // The positives' maps at conv3 (8x8 here), upsampled to the image.
  std::vector<float> input;
  for (int i = 1; i < 32; i += 2)
    for (int p = 0; p < size * size; ++p) input.push_back(images[static_cast<size_t>(i * size * size + p)] / 255.0f);
  Tensor x = Tensor::from_host({16, 1, size, size}, input.data(), Device::Cpu);
  const GradCam cam = grad_cam(model, x, model.layer_index("conv3"));
  double signal = 0.0, opposite = 0.0, total = 0.0;
  for (int i = 0; i < 16; ++i) {
    const std::vector<float> map =
        upsample_map(cam.maps.data() + i * cam.height * cam.width, cam.height, cam.width, size);
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        const double v = map[static_cast<size_t>(y * size + x)];
        total += v;
        if (inside(y, x, 2, 22)) signal += v;
        if (inside(y, x, 22, 2)) opposite += v;
      }
  }
  ASSERT_GT(total, 0.0) << "every map is zero";
  std::cout << "[ info ] patch share " << signal / total << ", opposite corner "
            << opposite / total << "\n";
  // The patch is 1/16 of the image; its share of the map must be well above that (0.19 seen),
  // and the opposite corner's far below (0.02 seen).
  EXPECT_GT(signal / total, 0.15) << "patch share " << signal / total << ", opposite corner "
                                  << opposite / total;
  EXPECT_GT(signal, 4.0 * opposite) << "patch share " << signal / total << ", opposite corner "
                                      << opposite / total;
}

}  // namespace
}  // namespace pneumo
