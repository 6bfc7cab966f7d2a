// Inputs and naive fp64 references of `pneumo bench kernels` (see reference.hpp).
#include "bench/reference.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::bench {

std::vector<float> uniform_values(int64_t count, uint32_t seed, float lo, float hi) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(lo, hi);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = distribution(generator);
  return values;
}

// ---- Convolution --------------------------------------------------------------------------------

double ConvProblem::flops() const {
  return 2.0 * static_cast<double>(y.numel()) * static_cast<double>(x.c()) * 9.0;
}

double ConvProblem::bytes() const {
  return 4.0 * static_cast<double>(x.numel() + weight.numel() + weight[0] + y.numel());
}

ConvProblem make_conv_problem(const LayerShape& layer, int64_t batch, uint32_t seed) {
  ConvProblem p;
  const int64_t c = layer.in_channels, k = layer.out_channels, s = layer.size;
  p.x = Shape{batch, c, s, s};
  p.weight = Shape{k, c, 3, 3};
  p.y = Shape{batch, k, s, s};
  const float bound = std::sqrt(6.0f / (9.0f * static_cast<float>(c)));
  p.x_values = uniform_values(p.x.numel(), seed, c == 1 ? 0.0f : -1.0f, 1.0f);
  p.weight_values = uniform_values(p.weight.numel(), seed + 1, -bound, bound);
  p.bias_values = uniform_values(k, seed + 2, -0.1f, 0.1f);
  return p;
}

std::vector<int64_t> checked_images(int64_t batch) {
  std::vector<int64_t> images{0, batch / 2, batch - 1};
  images.erase(std::unique(images.begin(), images.end()), images.end());
  return images;
}

std::vector<float> reference_conv(const ConvProblem& p, const std::vector<int64_t>& images) {
  const int64_t c_count = p.x.c(), k_count = p.weight[0], h = p.x.h(), w = p.x.w();
  const int64_t plane = h * w;
  std::vector<float> out(images.size() * static_cast<size_t>(k_count * plane));
  std::vector<double> acc(static_cast<size_t>(plane));
  for (size_t i = 0; i < images.size(); ++i) {
    const float* image = p.x_values.data() + images[i] * c_count * plane;
    for (int64_t k = 0; k < k_count; ++k) {
      std::fill(acc.begin(), acc.end(), static_cast<double>(p.bias_values[static_cast<size_t>(k)]));
      for (int64_t c = 0; c < c_count; ++c) {
        const float* in = image + c * plane;
        for (int64_t ky = 0; ky < 3; ++ky)
          for (int64_t kx = 0; kx < 3; ++kx) {
            const double weight = p.weight_values[static_cast<size_t>(((k * c_count + c) * 3 + ky) * 3 + kx)];
            // Output (y, x) reads input (y + ky - 1, x + kx - 1) where that lies inside.
            for (int64_t y = std::max<int64_t>(0, 1 - ky); y < std::min(h, h + 1 - ky); ++y) {
              const float* row = in + (y + ky - 1) * w;
              double* out_row = acc.data() + y * w;
              for (int64_t x = std::max<int64_t>(0, 1 - kx); x < std::min(w, w + 1 - kx); ++x)
                out_row[x] += weight * row[x + kx - 1];
            }
          }
      }
      float* dst = out.data() + (i * static_cast<size_t>(k_count) + static_cast<size_t>(k)) * static_cast<size_t>(plane);
      for (int64_t j = 0; j < plane; ++j)
        dst[j] = static_cast<float>(std::max(0.0, acc[static_cast<size_t>(j)]));
    }
  }
  return out;
}

// ---- Max pooling --------------------------------------------------------------------------------

Shape pooled_shape(const Shape& x) { return pool_geometry(x).output(); }

std::vector<float> tie_free_pool_input(const Shape& x, uint32_t seed) {
  std::mt19937 generator(seed);
  const PoolGeometry g = pool_geometry(x);
  const int64_t h = g.height, w = g.width, pad_top = g.pad_top(), pad_left = g.pad_left();
  std::vector<float> values(static_cast<size_t>(x.numel()));
  size_t i = 0;
  for (int64_t plane = 0; plane < x.n() * x.c(); ++plane)
    for (int64_t row = 0; row < h; ++row)
      for (int64_t col = 0; col < w; ++col) {
        const uint32_t position = static_cast<uint32_t>(((row + pad_top) % 2) * 2 + (col + pad_left) % 2);
        const uint32_t r = generator() >> 12;  // 20 bits
        values[i++] = static_cast<float>(4u * r + position) / 4194304.0f - 0.5f;  // 2^22
      }
  return values;
}

namespace {

// Flat index (within the plane) of the first maximum of output cell (oy, ox)'s window.
int64_t window_argmax(const float* plane, int64_t h, int64_t w, int64_t oy, int64_t ox) {
  const PoolGeometry g{1, 1, h, w};
  const int64_t pad_top = g.pad_top(), pad_left = g.pad_left();
  int64_t best = -1;
  for (int64_t dy = 0; dy < 2; ++dy)
    for (int64_t dx = 0; dx < 2; ++dx) {
      const int64_t row = 2 * oy - pad_top + dy, col = 2 * ox - pad_left + dx;
      if (row < 0 || row >= h || col < 0 || col >= w) continue;
      const int64_t offset = row * w + col;
      if (best < 0 || plane[offset] > plane[best]) best = offset;
    }
  return best;
}

}  // namespace

std::vector<float> reference_maxpool_forward(const std::vector<float>& x, const Shape& x_shape) {
  const Shape y_shape = pooled_shape(x_shape);
  const int64_t h = x_shape.h(), w = x_shape.w(), oh = y_shape.h(), ow = y_shape.w();
  std::vector<float> y(static_cast<size_t>(y_shape.numel()));
  for (int64_t p = 0; p < x_shape.n() * x_shape.c(); ++p) {
    const float* plane = x.data() + p * h * w;
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        y[static_cast<size_t>((p * oh + oy) * ow + ox)] = plane[window_argmax(plane, h, w, oy, ox)];
  }
  return y;
}

std::vector<float> reference_maxpool_backward(const std::vector<float>& x,
                                              const std::vector<float>& dy, const Shape& x_shape) {
  const Shape y_shape = pooled_shape(x_shape);
  const int64_t h = x_shape.h(), w = x_shape.w(), oh = y_shape.h(), ow = y_shape.w();
  std::vector<float> dx(x.size(), 0.0f);
  for (int64_t p = 0; p < x_shape.n() * x_shape.c(); ++p) {
    const float* plane = x.data() + p * h * w;
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        dx[static_cast<size_t>(p * h * w + window_argmax(plane, h, w, oy, ox))] =
            dy[static_cast<size_t>((p * oh + oy) * ow + ox)];
  }
  return dx;
}

double PoolProblem::forward_bytes() const { return 4.0 * static_cast<double>(x.numel() + y.numel()); }
double PoolProblem::backward_bytes() const {
  return 4.0 * static_cast<double>(2 * x.numel() + y.numel());
}

PoolProblem make_pool_problem(const LayerShape& layer, int64_t batch, uint32_t seed) {
  PoolProblem p;
  p.x = Shape{batch, layer.out_channels, layer.size, layer.size};
  p.y = pooled_shape(p.x);
  p.x_values = tie_free_pool_input(p.x, seed);
  p.y_expected = reference_maxpool_forward(p.x_values, p.x);
  p.dy_values = uniform_values(p.y.numel(), seed + 5, -1.0f, 1.0f);
  p.dx_expected = reference_maxpool_backward(p.x_values, p.dy_values, p.x);
  return p;
}

// ---- Batch normalisation ----------------------------------------------------------------------

double BatchNormProblem::forward_bytes() const {
  return 4.0 * 3.0 * static_cast<double>(x.numel());
}
double BatchNormProblem::backward_bytes() const {
  return 4.0 * 5.0 * static_cast<double>(x.numel());
}

BatchNormProblem make_batchnorm_problem(const LayerShape& layer, int64_t batch, uint32_t seed) {
  BatchNormProblem p;
  const int64_t channels = layer.out_channels, spatial = int64_t{layer.size} * layer.size;
  p.x = Shape{batch, channels, layer.size, layer.size};
  p.channel = Shape{channels};
  p.x_values = uniform_values(p.x.numel(), seed, -1.0f, 3.0f);
  p.gamma = uniform_values(channels, seed + 1, 0.5f, 1.5f);
  p.beta = uniform_values(channels, seed + 2, -0.5f, 0.5f);
  p.dy_values = uniform_values(p.x.numel(), seed + 3, -1.0f, 1.0f);
  const size_t n = static_cast<size_t>(p.x.numel()), k = static_cast<size_t>(channels);
  p.y_expected.resize(n);
  p.dx_expected.resize(n);
  p.mean_expected.resize(k);
  p.inv_std_expected.resize(k);
  p.dgamma_expected.resize(k);
  p.dbeta_expected.resize(k);
  const double count = static_cast<double>(batch * spatial);
  // Calls f(flat index) for every element of channel c.
  auto each = [&](int64_t c, const auto& f) {
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t s = 0; s < spatial; ++s)
        f(static_cast<size_t>((b * channels + c) * spatial + s));
  };
  for (int64_t c = 0; c < channels; ++c) {
    double sum = 0.0;
    each(c, [&](size_t i) { sum += p.x_values[i]; });
    const double mean = sum / count;
    double squares = 0.0;
    each(c, [&](size_t i) { squares += (p.x_values[i] - mean) * (p.x_values[i] - mean); });
    const double inv_std = 1.0 / std::sqrt(squares / count + BatchNormProblem::kEpsilon);
    const double gamma = p.gamma[static_cast<size_t>(c)], beta = p.beta[static_cast<size_t>(c)];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    each(c, [&](size_t i) {
      const double xhat = (p.x_values[i] - mean) * inv_std;
      p.y_expected[i] = static_cast<float>(gamma * xhat + beta);
      sum_dy += p.dy_values[i];
      sum_dy_xhat += p.dy_values[i] * xhat;
    });
    each(c, [&](size_t i) {
      const double xhat = (p.x_values[i] - mean) * inv_std;
      p.dx_expected[i] = static_cast<float>(gamma * inv_std *
                                            (p.dy_values[i] - sum_dy / count -
                                             xhat * sum_dy_xhat / count));
    });
    p.mean_expected[static_cast<size_t>(c)] = static_cast<float>(mean);
    p.inv_std_expected[static_cast<size_t>(c)] = static_cast<float>(inv_std);
    p.dgamma_expected[static_cast<size_t>(c)] = static_cast<float>(sum_dy_xhat);
    p.dbeta_expected[static_cast<size_t>(c)] = static_cast<float>(sum_dy);
  }
  return p;
}

// ---- Loss ---------------------------------------------------------------------------------------

std::vector<float> bce_logits(int64_t n, uint32_t seed) {
  std::vector<float> z = uniform_values(n, seed, -6.0f, 6.0f);
  for (float& v : z)
    if (std::fabs(v) < 1e-3f) v = v < 0.0f ? -1e-3f : 1e-3f;
  return z;
}

std::vector<float> bce_labels(int64_t n, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<float> y(static_cast<size_t>(n));
  for (float& v : y) v = static_cast<float>(generator() & 1u);
  return y;
}

BceReference reference_sigmoid_bce(const std::vector<float>& logits,
                                   const std::vector<float>& labels) {
  PNEUMO_CHECK(logits.size() == labels.size(), "reference_sigmoid_bce: sizes differ");
  const double n = static_cast<double>(logits.size());
  BceReference r;
  r.dlogits.resize(logits.size());
  double loss = 0.0, correct = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double z = logits[i], y = labels[i];
    loss += std::max(z, 0.0) - z * y + std::log1p(std::exp(-std::fabs(z)));
    r.dlogits[i] = static_cast<float>((1.0 / (1.0 + std::exp(-z)) - y) / n);
    correct += ((z > 0.0) == (y > 0.5)) ? 1.0 : 0.0;
  }
  r.stats = {static_cast<float>(loss), static_cast<float>(correct)};
  return r;
}

double LossProblem::bytes() const { return 12.0 * static_cast<double>(logits.size()); }

LossProblem make_loss_problem(int64_t n, uint32_t seed) {
  LossProblem p;
  p.logits = bce_logits(n, seed);
  p.labels = bce_labels(n, seed + 1);
  p.expected = reference_sigmoid_bce(p.logits, p.labels);
  return p;
}

// ---- Augmentation -------------------------------------------------------------------------------

double AugmentProblem::output_bytes() const {
  return 4.0 * static_cast<double>(indices.size()) * size * size;
}

double AugmentProblem::bytes() const { return output_bytes() * 5.0 / 4.0; }

AugmentProblem make_augment_problem(int64_t batch, uint32_t seed) {
  AugmentProblem p;
  p.image_count = std::max<int64_t>(256, 4 * batch);
  std::mt19937 generator(seed);
  p.images.resize(static_cast<size_t>(p.image_count) * p.size * p.size);
  for (uint8_t& v : p.images) v = static_cast<uint8_t>(generator() >> 24);
  p.indices.resize(static_cast<size_t>(batch));
  for (int32_t& i : p.indices)
    i = static_cast<int32_t>(generator() % static_cast<uint32_t>(p.image_count));
  p.key = make_key(seed, RngStream::kAugment, 1, 2);
  return p;
}

std::vector<float> reference_augment(const AugmentProblem& p, bool enabled) {
  AugmentSettings settings = p.settings;
  settings.enabled = enabled;
  std::vector<float> out(p.indices.size() * static_cast<size_t>(p.size) * p.size);
  augment_batch_cpu(p.images.data(), p.image_count, p.size, p.indices.data(),
                    static_cast<int>(p.indices.size()), settings, p.key, out.data());
  return out;
}

}  // namespace pneumo::bench
