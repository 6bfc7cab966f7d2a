// The PNG check that needs zlib: a PNG's chunks can all pass their CRCs (check_png) while the
// compressed image data inside them is damaged (bytes changed before the CRCs were written, or a
// writer's bug). libpng would stop on it with "libpng error: IDAT: invalid distance too far back"
// or the like on stderr, naming no file; here it is found first, in words that say what is wrong.
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../cache_internal.hpp"
#include "pneumo/error.hpp"

namespace pneumo::data_internal {

namespace {

// Walks the inflated bytes as they come, row by row, checking each row's filter-type byte.
class RowWalk {
 public:
  explicit RowWalk(const PngLayout& png) : groups_(png_rows(png)) {
    for (const auto& [rows, row_bytes] : groups_) expected_ += rows * row_bytes;
  }
  // "" while the bytes fit the layout, else why not.
  std::string take(const uint8_t* bytes, uint64_t count) {
    seen_ += count;
    if (seen_ > expected_) return "";  // said by finish(), which knows the whole count
    while (count) {
      const auto [rows, row_bytes] = groups_[group_];
      if (at_ == 0 && bytes[0] > 4)
        return detail::concat("damaged PNG (row ", rows_done_ + 1,
                              groups_.size() > 1 ? " of its interlaced data" : "", " has filter type ",
                              int{bytes[0]}, "; PNG has 0 to 4)");
      const uint64_t step = std::min(count, row_bytes - at_);
      bytes += step;
      count -= step;
      at_ += step;
      if (at_ == row_bytes) {
        at_ = 0;
        ++rows_done_;
        if (++row_ == rows) {
          row_ = 0;
          ++group_;
        }
      }
      if (group_ == groups_.size()) break;
    }
    return "";
  }
  std::string finish(bool stream_ended) const {
    if (seen_ > expected_)
      return detail::concat("damaged PNG (its image data inflates to more than the ", expected_,
                            " bytes its header needs)");
    if (seen_ < expected_)
      return detail::concat("damaged PNG (its image data inflates to ", seen_, " of the ", expected_,
                            " bytes its header needs", stream_ended ? ")" : ", then stops short)");
    if (!stream_ended) return "damaged PNG (its compressed image data stops short of its end)";
    return "";
  }

 private:
  std::vector<std::pair<uint64_t, uint64_t>> groups_;
  uint64_t expected_ = 0, seen_ = 0;
  size_t group_ = 0;
  uint64_t row_ = 0, at_ = 0, rows_done_ = 0;
};

}  // namespace

std::string check_png_image_data(const std::vector<uint8_t>& bytes, const PngLayout& layout) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) throw Error("zlib: inflateInit failed (out of memory?)");
  RowWalk walk(layout);
  uint8_t out[1 << 15];
  std::string why;
  bool ended = false;
  for (const auto& [offset, length] : layout.image_data) {
    if (ended) {
      if (length) why = "damaged PNG (more compressed image data follows the end of its stream)";
      if (!why.empty()) break;
      continue;
    }
    z.next_in = const_cast<Bytef*>(bytes.data() + offset);
    z.avail_in = static_cast<uInt>(length);
    while (why.empty() && !ended && z.avail_in) {
      z.next_out = out;
      z.avail_out = sizeof out;
      const int status = inflate(&z, Z_NO_FLUSH);
      if (status != Z_OK && status != Z_STREAM_END) {
        why = detail::concat("damaged PNG (its compressed image data cannot be inflated: zlib says ",
                             z.msg ? z.msg : "error " + std::to_string(status), ")");
        break;
      }
      why = walk.take(out, sizeof out - z.avail_out);
      ended = status == Z_STREAM_END;
      if (ended && z.avail_in) why = "damaged PNG (more compressed image data follows the end of its stream)";
    }
    if (!why.empty()) break;
  }
  // The last input may leave output inside zlib's window: drain it.
  while (why.empty() && !ended) {
    z.next_in = nullptr;
    z.avail_in = 0;
    z.next_out = out;
    z.avail_out = sizeof out;
    const int status = inflate(&z, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) break;  // Z_BUF_ERROR: nothing more to give
    why = walk.take(out, sizeof out - z.avail_out);
    ended = status == Z_STREAM_END;
    if (sizeof out - z.avail_out == 0 && !ended) break;
  }
  inflateEnd(&z);
  return why.empty() ? walk.finish(ended) : why;
}

}  // namespace pneumo::data_internal
