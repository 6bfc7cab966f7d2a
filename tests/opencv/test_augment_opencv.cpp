// The augmentation's CPU twin against OpenCV on real X-rays: for drawn and for extreme
// parameters, cv::warpAffine with a forward matrix built independently from
// cv::getRotationMatrix2D (INTER_LINEAR, BORDER_REPLICATE) must give the same image within
// OpenCV's fixed-point rounding (the bound is derived at tolerance_at). Changing the rotation direction, the rotation centre or the
// interpolation in augment_math.hpp makes this test fail (checked once by hand).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "data_test_util.hpp"
#include "pneumo/augment.hpp"
#include "augment_math.hpp"

namespace pneumo {
namespace {

constexpr int kSize = 150;

// A few real images at 150x150: from data/sample, else from the full dataset resized.
std::vector<cv::Mat> real_images() {
  std::vector<cv::Mat> images;
  std::string root = testing::sample_dataset_dir();
  if (root.empty()) root = testing::shared_dataset_dir();
  if (root.empty()) return images;
  for (const char* split : {"train", "test"})
    for (const char* cls : {"NORMAL", "PNEUMONIA"}) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(root) / split / cls))
        files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (size_t k = 0; k < 2 && k < files.size(); ++k) {
        cv::Mat gray = cv::imread(files[k].string(), cv::IMREAD_GRAYSCALE);
        // The sample is committed: an image OpenCV cannot read (a build without JPEG, a damaged
        // file) fails here rather than turning the comparisons into skips.
        if (gray.empty()) {
          ADD_FAILURE() << "OpenCV cannot read " << files[k];
          continue;
        }
        cv::Mat resized;
        cv::resize(gray, resized, cv::Size(kSize, kSize), 0, 0, cv::INTER_AREA);
        images.push_back(resized);
      }
    }
  return images;
}

// The forward map source -> output from the documented recipe, built the OpenCV way: mirror
// about the centre, magnify each axis about the centre, getRotationMatrix2D (rotate about the
// centre), then shift; or with zoom_after_rotation, mirror, rotate, magnify, shift.
cv::Mat forward_matrix(const AugmentParams& p, int size) {
  const double c = (size - 1) / 2.0;
  cv::Mat flip = cv::Mat::eye(3, 3, CV_64F);
  if (p.flip) {
    flip.at<double>(0, 0) = -1.0;
    flip.at<double>(0, 2) = 2.0 * c;
  }
  // Per-axis magnification about the centre: x' = c + sx (x - c), y' = c + sy (y - c).
  cv::Mat zoom = cv::Mat::eye(3, 3, CV_64F);
  zoom.at<double>(0, 0) = p.scale_x;
  zoom.at<double>(0, 2) = c * (1.0 - p.scale_x);
  zoom.at<double>(1, 1) = p.scale_y;
  zoom.at<double>(1, 2) = c * (1.0 - p.scale_y);
  cv::Mat rotate = cv::Mat::eye(3, 3, CV_64F);
  cv::getRotationMatrix2D(cv::Point2f(static_cast<float>(c), static_cast<float>(c)),
                          p.angle_degrees, 1.0)
      .copyTo(rotate(cv::Rect(0, 0, 3, 2)));
  cv::Mat shift = cv::Mat::eye(3, 3, CV_64F);
  shift.at<double>(0, 2) = p.shift_x;
  shift.at<double>(1, 2) = p.shift_y;
  // Keras' order (zoom_after_rotation): the magnification along the output's axes, after the
  // rotation.
  cv::Mat full = p.zoom_after_rotation ? shift * zoom * rotate * flip : shift * rotate * zoom * flip;
  return full(cv::Rect(0, 0, 3, 2)).clone();
}

// OpenCV's bilinear warp is fixed-point: it rounds each source coordinate to 1/32 pixel (after
// a 1/1024 intermediate), the weights to 1/32768, and the result to 8 bits. So an exact bilinear
// sample may differ from it by up to 0.5 (output rounding) plus the coordinate error (< 1/50
// pixel per axis) times the local slope. The tolerance is that bound, per pixel, with the slope
// taken as the largest neighbour difference around the sample point: about 0.55 grey levels in
// flat regions, a few levels on sharp edges. A half-pixel error anywhere (wrong centre, nearest
// neighbour) exceeds it by an order of magnitude.
double tolerance_at(const cv::Mat& image, float source_x, float source_y) {
  const int x0 = static_cast<int>(std::floor(std::clamp(source_x, 0.0f, kSize - 1.0f)));
  const int y0 = static_cast<int>(std::floor(std::clamp(source_y, 0.0f, kSize - 1.0f)));
  double slope_x = 0.0, slope_y = 0.0;
  auto at = [&](int x, int y) {
    return static_cast<double>(image.at<uint8_t>(std::clamp(y, 0, kSize - 1), std::clamp(x, 0, kSize - 1)));
  };
  for (int y = y0 - 1; y <= y0 + 2; ++y)
    for (int x = x0 - 1; x <= x0 + 2; ++x) {
      slope_x = std::max(slope_x, std::fabs(at(x + 1, y) - at(x, y)));
      slope_y = std::max(slope_y, std::fabs(at(x, y + 1) - at(x, y)));
    }
  return 0.55 + (slope_x + slope_y) / 50.0;
}

struct Difference {
  double worst_ratio = 0.0;  // max over pixels of |ours - OpenCV| / tolerance: must be <= 1
  double max = 0.0;          // in grey levels (0..255)
  double mean = 0.0;
};

Difference compare(const cv::Mat& image, const AugmentParams& p, const float* ours_0_to_1) {
  cv::Mat expected;
  cv::warpAffine(image, expected, forward_matrix(p, kSize), cv::Size(kSize, kSize),
                 cv::INTER_LINEAR, cv::BORDER_REPLICATE);
  const AugmentTransform t = augment_inverse_transform(p, kSize);
  Difference d;
  for (int y = 0; y < kSize; ++y)
    for (int x = 0; x < kSize; ++x) {
      const double ours = ours_0_to_1[y * kSize + x] * 255.0;
      const double diff = std::fabs(ours - expected.at<uint8_t>(y, x));
      const float sx = t.m00 * x + t.m01 * y + t.m02, sy = t.m10 * x + t.m11 * y + t.m12;
      d.worst_ratio = std::max(d.worst_ratio, diff / tolerance_at(image, sx, sy));
      d.max = std::max(d.max, diff);
      d.mean += diff;
    }
  d.mean /= kSize * kSize;
  return d;
}

Difference compare_with_opencv(const cv::Mat& image, const AugmentParams& p) {
  const AugmentTransform t = augment_inverse_transform(p, kSize);
  std::vector<float> ours(kSize * kSize);
  for (int y = 0; y < kSize; ++y)
    for (int x = 0; x < kSize; ++x) ours[static_cast<size_t>(y * kSize + x)] = augment_pixel(image.data, kSize, t, x, y);
  return compare(image, p, ours.data());
}

// On average the two agree far better than the worst-case bound.
constexpr double kMeanLevels = 0.3;

TEST(AugmentVsOpenCV, DrawnParametersOnRealImages) {
  const auto images = real_images();
  if (images.empty()) GTEST_SKIP() << "no sample images (data/sample) and no dataset";
  AugmentSettings settings;  // the recipe's ranges (x and y zoom drawn apart), aspect jitter too
  settings.aspect = 0.3f;
  double worst_ratio = 0.0, worst_max = 0.0, worst_mean = 0.0;
  for (size_t i = 0; i < images.size(); ++i)
    for (uint32_t slot = 0; slot < 6; ++slot) {
      const AugmentParams p = draw_augment_params(
          make_key(2024, RngStream::kAugment, 0, static_cast<uint32_t>(i)), slot, settings, kSize);
      const Difference d = compare_with_opencv(images[i], p);
      worst_ratio = std::max(worst_ratio, d.worst_ratio);
      worst_max = std::max(worst_max, d.max);
      worst_mean = std::max(worst_mean, d.mean);
      EXPECT_LE(d.worst_ratio, 1.0) << "image " << i << " max " << d.max << " angle " << p.angle_degrees << " scale "
                                   << p.scale_x << "," << p.scale_y << " shift " << p.shift_x << "," << p.shift_y
                                   << " flip " << p.flip << " mean " << d.mean;
      EXPECT_LE(d.mean, kMeanLevels) << "image " << i;
    }
  std::cout << "[ info ] " << images.size() << " images x 6 draws: worst |diff| / tolerance "
            << worst_ratio << ", worst max |diff| " << worst_max << " levels, worst mean "
            << worst_mean << "\n";
}

TEST(AugmentVsOpenCV, ExtremeParameters) {
  const auto images = real_images();
  if (images.empty()) GTEST_SKIP() << "no sample images (data/sample) and no dataset";
  auto params = [](float angle, float scale_x, float scale_y, float shift_x, float shift_y,
                   int flip) {
    AugmentParams p;
    p.angle_degrees = angle;
    p.scale_x = scale_x;
    p.scale_y = scale_y;
    p.shift_x = shift_x;
    p.shift_y = shift_y;
    p.flip = flip;
    return p;
  };
  // Anisotropic cases: Keras' independent x/y zoom and the aspect-ratio jitter.
  const std::vector<AugmentParams> cases{
      params(30.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0),      params(-30.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0),
      params(0.0f, 0.8f, 0.8f, 0.0f, 0.0f, 0),       params(0.0f, 1.2f, 1.2f, 0.0f, 0.0f, 0),
      params(0.0f, 0.8f, 1.25f, 0.0f, 0.0f, 0),      params(0.0f, 1.25f, 0.8f, 0.0f, 0.0f, 1),
      params(0.0f, 1.0f, 1.0f, 15.0f, -15.0f, 0),    params(0.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1),
      params(-29.5f, 0.81f, 1.1f, -14.2f, 13.7f, 1), params(12.25f, 1.19f, 0.9f, 7.3f, 2.1f, 1)};
  for (int zoom_after_rotation : {0, 1})
    for (AugmentParams p : cases) {
      p.zoom_after_rotation = zoom_after_rotation;
      const Difference d = compare_with_opencv(images[0], p);
      EXPECT_LE(d.worst_ratio, 1.0) << "max " << d.max << " angle " << p.angle_degrees << " scale "
                                    << p.scale_x << "," << p.scale_y << " shift " << p.shift_x
                                    << "," << p.shift_y << " flip " << p.flip
                                    << " zoom after rotation " << zoom_after_rotation;
      EXPECT_LE(d.mean, kMeanLevels);
    }
}

// Blur and sharpening against OpenCV: cv::GaussianBlur with a 3x3 kernel and sigma 0 is the
// binomial [1 2 1] / 4 per axis; sharpening is the image plus (image - blur), saturated. OpenCV
// rounds the blur to 8 bits, so the two agree within one grey level (half a level of OpenCV's
// rounding, doubled by the sharpening's factor 2, plus the float arithmetic).
TEST(AugmentVsOpenCV, BlurAndSharpenMatchGaussianBlur) {
  const auto images = real_images();
  if (images.empty()) GTEST_SKIP() << "no sample images (data/sample) and no dataset";
  for (const cv::Mat& image : images) {
    cv::Mat blurred, sharpened;
    cv::GaussianBlur(image, blurred, cv::Size(3, 3), 0.0, 0.0, cv::BORDER_REPLICATE);
    cv::addWeighted(image, 2.0, blurred, -1.0, 0.0, sharpened);  // saturates to [0, 255]
    for (const float sharpness : {0.0f, 2.0f}) {
      AugmentParams p;
      p.sharpness = sharpness;
      const AugmentTransform t = augment_inverse_transform(p, kSize);
      const cv::Mat& expected = sharpness == 0.0f ? blurred : sharpened;
      double worst = 0.0, changed = 0.0;
      for (int y = 0; y < kSize; ++y)
        for (int x = 0; x < kSize; ++x) {
          const double ours = augment_pixel(image.data, kSize, t, x, y) * 255.0;
          worst = std::max(worst, std::fabs(ours - expected.at<uint8_t>(y, x)));
          changed = std::max(changed, std::fabs(ours - image.at<uint8_t>(y, x)));
        }
      EXPECT_LE(worst, 1.01) << "sharpness " << sharpness;
      EXPECT_GT(changed, 3.0) << "sharpness " << sharpness << " left the image as it was";
    }
  }
}

// The batched op itself (not only the per-pixel function) against OpenCV.
TEST(AugmentVsOpenCV, BatchedOpOnRealImages) {
  const auto images = real_images();
  if (images.empty()) GTEST_SKIP() << "no sample images (data/sample) and no dataset";
  std::vector<uint8_t> stack;
  for (const cv::Mat& m : images) stack.insert(stack.end(), m.data, m.data + kSize * kSize);
  const int count = static_cast<int>(images.size());
  std::vector<int32_t> indices;
  for (int i = 0; i < 2 * count; ++i) indices.push_back((i * 5) % count);
  std::vector<float> out(indices.size() * kSize * kSize);
  const AugmentSettings settings;
  const RngKey key = make_key(77, RngStream::kAugment, 3, 5);
  augment_batch_cpu(stack.data(), count, kSize, indices.data(), static_cast<int>(indices.size()),
                    settings, key, out.data());
  for (size_t slot = 0; slot < indices.size(); ++slot) {
    const AugmentParams p = draw_augment_params(key, static_cast<uint32_t>(slot), settings, kSize);
    const Difference d =
        compare(images[static_cast<size_t>(indices[slot])], p, out.data() + slot * kSize * kSize);
    EXPECT_LE(d.worst_ratio, 1.0) << "slot " << slot << " max " << d.max;
    EXPECT_LE(d.mean, kMeanLevels) << "slot " << slot;
  }
}

}  // namespace
}  // namespace pneumo
