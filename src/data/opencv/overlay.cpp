// Grad-CAM overlays as PNG (OpenCV builds only; explain.cpp says why there is none elsewhere).
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>

#include "pneumo/error.hpp"
#include "pneumo/explain.hpp"

namespace pneumo {

std::string write_heatmap_overlay(const std::string& path, const uint8_t* image, int size,
                                  const float* map) {
  const float peak = *std::max_element(map, map + static_cast<size_t>(size) * size);
  cv::Mat heat(size, size, CV_8UC1);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      heat.at<uint8_t>(y, x) = static_cast<uint8_t>(
          peak > 0.0f ? std::clamp(map[y * size + x] / peak, 0.0f, 1.0f) * 255.0f + 0.5f : 0.0f);
  cv::Mat coloured, gray(size, size, CV_8UC1, const_cast<uint8_t*>(image)), base, blended;
  cv::applyColorMap(heat, coloured, cv::COLORMAP_JET);
  cv::cvtColor(gray, base, cv::COLOR_GRAY2BGR);
  cv::addWeighted(base, 0.6, coloured, 0.4, 0.0, blended);
  // A write that fails (a full disk, a folder gone) stops the command: maps it was asked for
  // would be missing while it reported success.
  bool written = false;
  try {
    written = cv::imwrite(path, blended);
  } catch (const cv::Exception& e) {
    throw Error("cannot write " + path + ": " + e.what());
  }
  if (!written) throw Error("cannot write " + path);
  return "";
}

}  // namespace pneumo
