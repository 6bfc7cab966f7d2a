// Image decoding for `pneumo prepare` (OpenCV builds only): bytes -> 8-bit grayscale -> squashed
// to size x size with area interpolation. Also refuses truncated JPEGs, which libjpeg would
// otherwise "decode" with a grey lower part and only a warning.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "../cache_internal.hpp"

namespace pneumo::data_internal {

namespace {

// A JPEG is complete when an end-of-image marker (FF D9) follows the first start-of-scan
// segment of the main image. Segments before the scan (APPn with EXIF thumbnails, tables) are
// skipped by their lengths, so a thumbnail's own FF D9 is not mistaken for the image's; inside
// entropy-coded data FF is always stuffed (FF 00) or a restart marker, so FF D9 there is the EOI.
bool jpeg_is_complete(const std::vector<uint8_t>& b) {
  size_t pos = 2;  // after SOI (FF D8)
  while (pos + 4 <= b.size()) {
    if (b[pos] != 0xFF) return true;  // not a segment: leave the verdict to the decoder
    const uint8_t marker = b[pos + 1];
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) {  // no length field
      pos += 2;
      continue;
    }
    if (marker == 0xD9) return true;  // EOI before any scan: the decoder will complain
    const size_t length = (static_cast<size_t>(b[pos + 2]) << 8) | b[pos + 3];
    if (marker == 0xDA) {  // start of scan: the EOI must come somewhere after it
      for (size_t i = pos + 2 + length; i + 1 < b.size(); ++i)
        if (b[i] == 0xFF && b[i + 1] == 0xD9) return true;
      return false;
    }
    pos += 2 + length;
  }
  return false;  // the file ends before the image data begins
}

}  // namespace

std::string decode_square_gray(const std::vector<uint8_t>& encoded, int size, uint8_t* out) {
  if (encoded.empty()) return "empty file (0 bytes)";
  const bool is_jpeg = encoded.size() >= 3 && encoded[0] == 0xFF && encoded[1] == 0xD8 &&
                       encoded[2] == 0xFF;
  if (is_jpeg && !jpeg_is_complete(encoded))
    return "truncated JPEG (no end-of-image marker after the image data)";
  cv::Mat gray;
  try {
    // IMREAD_GRAYSCALE: 8-bit, colour converted with the luma weights, EXIF orientation applied.
    gray = cv::imdecode(cv::_InputArray(encoded.data(), static_cast<int>(encoded.size())),
                        cv::IMREAD_GRAYSCALE);
  } catch (const cv::Exception& e) {
    return std::string("not a decodable image (OpenCV: ") + e.what() + ")";
  }
  if (gray.empty() || gray.type() != CV_8UC1) return "not a decodable image";
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
