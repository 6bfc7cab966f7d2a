// Image decoding for `pneumo prepare` (OpenCV builds only): bytes -> 8-bit grayscale -> squashed
// to size x size with area interpolation. Refuses huge images before decoding them, and truncated
// or corrupt JPEGs, which libjpeg would otherwise "decode" into grey or garbled pixels with only a
// warning (the checks are in ../image_check.cpp).
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "../cache_internal.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"

namespace pneumo::data_internal {

std::string decode_square_gray(const std::vector<uint8_t>& encoded, int size, uint8_t* out,
                               std::string* note) {
  if (note) note->clear();
  if (encoded.empty()) return "empty file (0 bytes)";
  if (static_cast<int64_t>(encoded.size()) > kMaxImageFileBytes)
    return detail::concat("file of ", encoded.size(), " bytes is larger than the ",
                          kMaxImageFileBytes, "-byte limit");
  // The pixel size comes from the header, so a huge image (or a small file that claims to be
  // one) is refused before OpenCV allocates anything for it; content whose header is none of the
  // formats read here is not handed to OpenCV unchecked.
  ImageHeader header;
  if (!read_image_header(encoded, header))
    return "unsupported image format (its content is none of PNG, JPEG, BMP and TIFF, or its "
           "header is cut short)";
  if (header.width <= 0 || header.height <= 0)
    return detail::concat(header.format, " header says the image is ", header.width, " x ",
                          header.height, " pixels");
  // Compared by division: a PNG may claim 2^32 - 1 pixels a side, whose product overflows.
  if (header.width > kMaxImagePixels / header.height)
    return detail::concat("image of ", header.width, " x ", header.height,
                          " pixels is larger than the limit of ", kMaxImagePixels / 1000000,
                          " megapixels");
  if (std::string why = check_jpeg(encoded); !why.empty()) return why;
  if (std::string why = check_bmp(encoded); !why.empty()) return why;
  if (std::string why = check_tiff(encoded); !why.empty()) return why;
  PngLayout png;
  if (std::string why = check_png(encoded, &png); !why.empty()) return why;
  if (!png.image_data.empty())
    if (std::string why = check_png_image_data(encoded, png); !why.empty()) return why;
  // OpenCV's own warning about a file it cannot decode (a 32-bit TIFF) would come before
  // pneumo's skip message, which names the file and why: only its errors are let through.
  static const bool quiet = [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_ERROR);
    return true;
  }();
  (void)quiet;
  cv::Mat gray;
  try {
    // IMREAD_GRAYSCALE: 8-bit (16-bit samples keep their high byte), colour converted with the
    // luma weights, alpha dropped, EXIF orientation applied.
    gray = cv::imdecode(cv::_InputArray(encoded.data(), static_cast<int>(encoded.size())),
                        cv::IMREAD_GRAYSCALE);
  } catch (const cv::Exception& e) {
    return std::string("not a decodable image (OpenCV: ") + e.what() + ")";
  }
  if (gray.empty() || gray.type() != CV_8UC1) return "not a decodable image";
  // 12-bit data (a detector's) stored in 16-bit samples without scaling them up, as PNG asks: the
  // high byte kept is at most 15 everywhere, a nearly black image with 16 grey levels.
  if (note && png.bit_depth == 16) {
    double largest = 0.0;
    cv::minMaxLoc(gray, nullptr, &largest);
    if (largest <= 15.0)
      *note = "16-bit PNG whose samples all lie below 4096: pneumo keeps each sample's high byte, "
              "so it decodes nearly black (largest value " +
              std::to_string(static_cast<int>(largest)) +
              " of 255); if it holds unscaled 12-bit data, scale it by 16 first";
  }
  cv::Mat destination(size, size, CV_8UC1, out);  // writes straight into the cache buffer
  cv::resize(gray, destination, destination.size(), 0, 0, cv::INTER_AREA);
  CV_Assert(destination.data == out);
  return "";
}

std::string decoder_description() {
  return std::string("OpenCV ") + CV_VERSION +
         ": cv::imdecode(IMREAD_GRAYSCALE), then cv::resize(INTER_AREA) to size x size "
         "(squashed, no crop)";
}

}  // namespace pneumo::data_internal
