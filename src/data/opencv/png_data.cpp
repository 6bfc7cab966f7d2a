// The PNG check that needs zlib: a PNG's chunks can all pass their CRCs (check_png) while the
// compressed image data inside them is damaged (bytes changed before the CRCs were written, or a
// writer's bug). libpng would stop on it with "libpng error: IDAT: invalid distance too far back"
// or the like on stderr, naming no file; here it is found first, in words that say what is wrong.
// It is inflated as libpng inflates it (the window its zlib header gives, one row at a time), and
// refused only for what libpng refuses: surplus data after the rows is read past, as libpng does.
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../cache_internal.hpp"
#include "pneumo/error.hpp"

namespace pneumo::data_internal {

namespace {

// Where the inflated bytes are in the layout's rows: each row starts with its filter type.
class RowWalk {
 public:
  explicit RowWalk(const PngLayout& png) : groups_(png_rows(png)) {
    for (const auto& [rows, row_bytes] : groups_) expected_ += rows * row_bytes;
  }
  bool done() const { return group_ == groups_.size(); }
  uint64_t seen() const { return seen_; }
  uint64_t expected() const { return expected_; }
  // Bytes left in the current row: what one inflate call may give, as libpng asks for a row.
  uint64_t row_left() const { return done() ? 0 : groups_[group_].second - at_; }
  // `count` bytes (at most row_left()) of the current row: "" or why they cannot be.
  std::string take(const uint8_t* bytes, uint64_t count) {
    if (count == 0) return "";
    if (at_ == 0 && bytes[0] > 4)
      return detail::concat("damaged PNG (row ", rows_done_ + 1,
                            groups_.size() > 1 ? " of its interlaced data" : "",
                            " has filter type ", int{bytes[0]}, "; PNG has 0 to 4)");
    seen_ += count;
    at_ += count;
    if (at_ == groups_[group_].second) {
      at_ = 0;
      ++rows_done_;
      if (++row_ == groups_[group_].first) {
        row_ = 0;
        ++group_;
      }
    }
    return "";
  }

 private:
  std::vector<std::pair<uint64_t, uint64_t>> groups_;  // (rows, bytes per row)
  uint64_t expected_ = 0, seen_ = 0;
  size_t group_ = 0;
  uint64_t row_ = 0, at_ = 0, rows_done_ = 0;
};

}  // namespace

std::string check_png_image_data(const std::vector<uint8_t>& bytes, const PngLayout& layout) {
  z_stream z{};
  // Window bits 0: the window the stream's own header gives, as libpng reads it; a distance
  // past it is "invalid distance too far back" here as there.
  if (inflateInit2(&z, 0) != Z_OK) throw Error("zlib: inflateInit2 failed (out of memory?)");
  RowWalk walk(layout);
  std::vector<uint8_t> row(1 << 16);
  std::string why;
  bool ended = false;
  size_t chunk = 0;  // the next IDAT chunk to feed
  while (why.empty() && !ended) {
    if (z.avail_in == 0 && chunk < layout.image_data.size()) {
      const auto [offset, length] = layout.image_data[chunk++];
      z.next_in = const_cast<Bytef*>(bytes.data() + offset);
      z.avail_in = static_cast<uInt>(length);
      continue;
    }
    // One row at a time while rows are wanted; after them, what is left (libpng reads past
    // surplus data with a warning at most, and refuses a stream without its end). With the
    // input used up, inflate still gives what it holds back.
    const uint64_t wanted =
        walk.done() ? row.size() : std::min<uint64_t>(walk.row_left(), row.size());
    const uInt input_before = z.avail_in;
    z.next_out = row.data();
    z.avail_out = static_cast<uInt>(wanted);
    const int status = inflate(&z, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END && status != Z_BUF_ERROR) {
      why = detail::concat("damaged PNG (its compressed image data cannot be inflated: zlib says ",
                           z.msg ? z.msg : "error " + std::to_string(status), ")");
      break;
    }
    const uint64_t produced = wanted - z.avail_out;
    if (!walk.done()) why = walk.take(row.data(), produced);
    ended = status == Z_STREAM_END;
    if (!ended && produced == 0 && z.avail_in == input_before &&
        chunk == layout.image_data.size())
      break;  // nothing more to read, and no end of stream
  }
  inflateEnd(&z);
  if (!why.empty()) return why;
  if (walk.seen() < walk.expected())
    return detail::concat("damaged PNG (its image data inflates to ", walk.seen(), " of the ",
                          walk.expected(), " bytes its header needs)");
  if (!ended) return "damaged PNG (its compressed image data stops short of its end)";
  return "";
}

}  // namespace pneumo::data_internal
