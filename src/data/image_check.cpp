// Checks on encoded images made before they are decoded (no OpenCV needed): the pixel size from
// the header (so a huge or lying image is refused before any memory is spent on it), and a walk
// through a sequential JPEG's compressed data that finds truncation and corruption, which libjpeg
// would otherwise "repair" into grey or garbled pixels with only a warning on stderr; and a walk
// through a PNG's chunks with their CRCs and its IHDR, for the damage libpng would report on
// stderr alone (its compressed data is checked by opencv/png_data.cpp, which has zlib).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "cache_internal.hpp"
#include "core/checksum.hpp"
#include "pneumo/error.hpp"

namespace pneumo::data_internal {

namespace {

uint32_t big_endian_16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t big_endian_32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
int32_t little_endian_i32(const uint8_t* p) {
  return static_cast<int32_t>(uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) |
                              (uint32_t{p[3]} << 24));
}

bool is_jpeg(const std::vector<uint8_t>& b) {
  return b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF;
}

bool is_png(const std::vector<uint8_t>& b) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  return b.size() >= 8 && std::equal(kSignature, kSignature + 8, b.begin());
}

// The bit depths PNG allows for each colour type (PNG spec, table 11.1); none for another type.
bool valid_png_depth(int colour_type, int bit_depth) {
  switch (colour_type) {
    case 0:
      return bit_depth == 1 || bit_depth == 2 || bit_depth == 4 || bit_depth == 8 ||
             bit_depth == 16;
    case 3:
      return bit_depth == 1 || bit_depth == 2 || bit_depth == 4 || bit_depth == 8;
    case 2:
    case 4:
    case 6:
      return bit_depth == 8 || bit_depth == 16;
    default:
      return false;
  }
}

// Start-of-frame markers: C0..CF except C4 (DHT), C8 (reserved) and CC (DAC).
bool is_start_of_frame(uint8_t marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

// A canonical Huffman table (JPEG Annex C/F), with a lookahead of kLookBits for the short codes
// that make up most of the data.
constexpr int kLookBits = 10;
struct HuffmanTable {
  bool defined = false;
  std::array<int32_t, 17> min_code{}, max_code{}, first_value{};  // per code length 1..16
  std::vector<uint8_t> values;
  std::array<uint8_t, 1 << kLookBits> look_length{};  // 0: a longer code, or no such code
  std::array<uint8_t, 1 << kLookBits> look_value{};
};

// "" or why the table is bogus.
std::string build_huffman_table(const uint8_t* counts, const uint8_t* symbols, size_t symbol_count,
                                HuffmanTable& table) {
  table = HuffmanTable{};
  table.values.assign(symbols, symbols + symbol_count);
  int32_t code = 0;
  size_t k = 0;
  for (int length = 1; length <= 16; ++length) {
    const int n = counts[length - 1];
    table.first_value[static_cast<size_t>(length)] = static_cast<int32_t>(k);
    table.min_code[static_cast<size_t>(length)] = code;
    code += n;
    k += static_cast<size_t>(n);
    table.max_code[static_cast<size_t>(length)] = n ? code - 1 : -1;
    if (code > (1 << length)) return "a Huffman table has more codes than fit";
    if (length <= kLookBits)
      for (int c = code - n; c < code; ++c)
        for (int fill = 0; fill < (1 << (kLookBits - length)); ++fill) {
          const size_t index = static_cast<size_t>((c << (kLookBits - length)) | fill);
          table.look_length[index] = static_cast<uint8_t>(length);
          table.look_value[index] = symbols[k - static_cast<size_t>(code - c)];
        }
    code <<= 1;
  }
  table.defined = true;
  return "";
}

// Reads the entropy-coded bits of a scan: unstuffs FF 00, stops at a marker or the end of the
// file and then supplies zero bits, remembering how many of the buffered bits are real.
class BitReader {
 public:
  BitReader(const std::vector<uint8_t>& bytes, size_t pos) : b_(bytes), pos_(pos) {}

  // Whether n more real bits are there (n <= 16).
  bool ensure(int n) {
    if (bits_ < n) fill();
    return bits_ - padding_ >= n;
  }
  uint32_t peek(int n) const {
    return static_cast<uint32_t>(buffer_ >> (bits_ - n)) & ((1u << n) - 1);
  }
  // Consumes n bits; false when some of them were padding (the data ended first).
  bool skip(int n) {
    if (!ensure(n)) return false;
    bits_ -= n;
    return true;
  }
  // Decodes one Huffman symbol; -1 for a code the table does not have, -2 when the data ended.
  int decode(const HuffmanTable& table) {
    if (bits_ < 16) fill();
    const uint32_t look = peek(kLookBits);
    if (const int length = table.look_length[look]; length != 0)
      return skip(length) ? table.look_value[look] : -2;
    for (int length = kLookBits + 1; length <= 16; ++length) {
      const int32_t code = static_cast<int32_t>(peek(length));
      if (code <= table.max_code[static_cast<size_t>(length)]) {
        if (!skip(length)) return -2;
        const size_t index = static_cast<size_t>(table.first_value[static_cast<size_t>(length)] +
                                                 code - table.min_code[static_cast<size_t>(length)]);
        return index < table.values.size() ? table.values[index] : -1;
      }
    }
    return bits_ - padding_ >= 16 ? -1 : -2;
  }
  // Whole real bytes buffered but not consumed (after the padding bits of the last byte).
  int unread_whole_bytes() const { return (bits_ - padding_) / 8; }
  // Bytes of entropy-coded data between here and the next marker.
  size_t bytes_before_marker() const {
    size_t n = 0;
    for (size_t p = pos_; p < b_.size() && b_[p] != 0xFF; ++p) ++n;
    return n + static_cast<size_t>(unread_whole_bytes());
  }
  size_t position() const { return pos_; }
  bool at_end_of_file() const { return stopped_ ? at_end_of_file_ : pos_ >= b_.size(); }
  void restart_at(size_t pos) {
    pos_ = pos;
    buffer_ = 0;
    bits_ = padding_ = 0;
    stopped_ = at_end_of_file_ = false;
  }

 private:
  // Tops the buffer up to more than 56 bits (the low bits_ bits of buffer_ are the unread ones).
  void fill() {
    while (bits_ <= 56) {
      uint64_t byte = 0;
      if (!stopped_) {
        if (pos_ >= b_.size()) {
          stopped_ = at_end_of_file_ = true;
        } else if (b_[pos_] != 0xFF) {
          byte = b_[pos_++];
        } else {
          size_t next = pos_ + 1;
          while (next < b_.size() && b_[next] == 0xFF) ++next;  // fill bytes
          if (next < b_.size() && b_[next] == 0x00) {
            byte = 0xFF;
            pos_ = next + 1;
          } else {
            stopped_ = true;  // a marker (pos_ stays on its first FF) or the end of the file
            at_end_of_file_ = next >= b_.size();
          }
        }
      }
      if (stopped_) padding_ += 8;
      buffer_ = (buffer_ << 8) | byte;
      bits_ += 8;
    }
  }

  const std::vector<uint8_t>& b_;
  size_t pos_;
  uint64_t buffer_ = 0;
  int bits_ = 0;     // buffered bits (the low bits_ of buffer_)
  int padding_ = 0;  // of which this many, at the bottom, are zeros made up after the data ended
  bool stopped_ = false;
  bool at_end_of_file_ = false;
};

struct Component {
  int id = 0, h = 1, v = 1;
  int quant_table = 0;
  bool scanned = false;
};

// The magnitude bits that follow a Huffman symbol of `size`, as a signed value (JPEG F.2.2.1).
int32_t extend(uint32_t bits, int size) {
  return size == 0 ? 0
                   : bits < (1u << (size - 1)) ? static_cast<int32_t>(bits) - (1 << size) + 1
                                               : static_cast<int32_t>(bits);
}

const char* const kTruncated = "truncated JPEG (the file ends before the end of the image data)";

std::string corrupt(const std::string& what) { return "corrupt JPEG (" + what + ")"; }

// The whole JPEG structure, sequential Huffman frames decoded down to every block's codes.
// Progressive, lossless and arithmetic-coded frames are only checked for an end-of-image marker
// after their image data (their decoders report errors themselves, or the file is rare here).
std::string check_jpeg_structure(const std::vector<uint8_t>& b) {
  std::array<HuffmanTable, 4> dc_tables, ac_tables;
  std::array<int32_t, 4> dc_quant{};  // first entry of each quantization table; 0 undefined
  std::vector<Component> components;
  int width = 0, height = 0, precision = 8, h_max = 1, v_max = 1;
  uint32_t restart_interval = 0;
  bool sequential = false, frame_seen = false, scan_seen = false;
  size_t pos = 2;  // after SOI
  while (true) {
    // A marker: FF, any fill FFs, then the code.
    if (pos >= b.size()) return kTruncated;
    if (b[pos] != 0xFF) return corrupt(detail::concat("no marker at byte ", pos));
    while (pos < b.size() && b[pos] == 0xFF) ++pos;
    if (pos >= b.size()) return kTruncated;
    const uint8_t marker = b[pos++];
    if (marker == 0xD9) {  // end of image
      if (!scan_seen) return corrupt("no image data before the end-of-image marker");
      if (sequential)
        for (const Component& c : components)
          if (!c.scanned) return corrupt(detail::concat("component ", c.id, " has no image data"));
      return "";
    }
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no-ops out of scans
    if (marker == 0xD8) return corrupt(detail::concat("a second start-of-image at byte ", pos - 2));
    if (pos + 2 > b.size()) return kTruncated;
    const size_t length = big_endian_16(&b[pos]);
    if (length < 2) return corrupt(detail::concat("segment length ", length, " at byte ", pos));
    if (pos + length > b.size()) return kTruncated;
    const uint8_t* s = b.data() + pos + 2;
    const size_t n = length - 2;
    const size_t segment_end = pos + length;

    if (is_start_of_frame(marker)) {
      if (frame_seen) return corrupt("two frames in one image");
      frame_seen = true;
      sequential = marker == 0xC0 || marker == 0xC1;  // Huffman, baseline or extended
      if (n < 6) return corrupt("short frame header");
      precision = s[0];
      height = static_cast<int>(big_endian_16(s + 1));
      width = static_cast<int>(big_endian_16(s + 3));
      const int count = s[5];
      if (count < 1 || n < 6 + 3 * static_cast<size_t>(count))
        return corrupt("bad frame header");
      if (width == 0) return corrupt("width 0");
      if (height == 0) sequential = false;  // height given later (DNL): leave it to the decoder
      if (precision != 8 && precision != 12) sequential = false;
      for (int i = 0; i < count; ++i) {
        Component c;
        c.id = s[6 + 3 * i];
        c.h = s[7 + 3 * i] >> 4;
        c.v = s[7 + 3 * i] & 15;
        c.quant_table = s[8 + 3 * i] & 3;
        if (c.h < 1 || c.h > 4 || c.v < 1 || c.v > 4) return corrupt("bad sampling factors");
        h_max = std::max(h_max, c.h);
        v_max = std::max(v_max, c.v);
        components.push_back(c);
      }
    } else if (marker == 0xC4) {  // Huffman tables
      size_t p = 0;
      while (p < n) {
        if (p + 17 > n) return corrupt("short Huffman table");
        const int table_class = s[p] >> 4, id = s[p] & 15;
        if (table_class > 1 || id > 3) return corrupt("bad Huffman table id");
        size_t symbols = 0;
        for (int i = 1; i <= 16; ++i) symbols += s[p + static_cast<size_t>(i)];
        if (symbols > 256 || p + 17 + symbols > n) return corrupt("bad Huffman table");
        HuffmanTable& table = (table_class == 0 ? dc_tables : ac_tables)[static_cast<size_t>(id)];
        if (std::string why = build_huffman_table(s + p + 1, s + p + 17, symbols, table); !why.empty())
          return corrupt(why);
        p += 17 + symbols;
      }
    } else if (marker == 0xDB) {  // quantization tables
      size_t p = 0;
      while (p < n) {
        const int entry_bytes = (s[p] >> 4) == 0 ? 1 : 2, id = s[p] & 15;
        if (id > 3 || p + 1 + 64 * static_cast<size_t>(entry_bytes) > n)
          return corrupt("bad quantization table");
        dc_quant[static_cast<size_t>(id)] =
            entry_bytes == 1 ? s[p + 1] : static_cast<int32_t>(big_endian_16(s + p + 1));
        p += 1 + 64 * static_cast<size_t>(entry_bytes);
      }
    } else if (marker == 0xDD) {  // restart interval
      if (n < 2) return corrupt("short restart interval");
      restart_interval = big_endian_16(s);
    } else if (marker == 0xDA) {  // start of scan, then the entropy-coded data
      if (!frame_seen) return corrupt("image data before the frame header");
      if (n < 1) return corrupt("short scan header");
      const int count = s[0];
      if (count < 1 || count > 4 || n < 1 + 2 * static_cast<size_t>(count) + 3)
        return corrupt("bad scan header");
      scan_seen = true;
      if (!sequential) {
        // Not walked: an end-of-image marker must follow somewhere after the image data.
        for (size_t i = segment_end; i + 1 < b.size(); ++i)
          if (b[i] == 0xFF && b[i + 1] == 0xD9) return "";
        return kTruncated;
      }
      struct ScanPart {
        const Component* component;
        const HuffmanTable* dc;
        const HuffmanTable* ac;
        int32_t dc_quant;          // 0: unknown, no range check
        int32_t dc_prediction = 0;  // the running DC value (JPEG codes differences)
      };
      std::vector<ScanPart> parts;
      for (int i = 0; i < count; ++i) {
        const int id = s[1 + 2 * i], dc = s[2 + 2 * i] >> 4, ac = s[2 + 2 * i] & 15;
        auto it = std::find_if(components.begin(), components.end(),
                               [&](const Component& c) { return c.id == id; });
        if (it == components.end()) return corrupt(detail::concat("scan of unknown component ", id));
        if (dc > 3 || ac > 3 || !dc_tables[static_cast<size_t>(dc)].defined ||
            !ac_tables[static_cast<size_t>(ac)].defined)
          return corrupt("scan uses an undefined Huffman table");
        it->scanned = true;
        parts.push_back({&*it, &dc_tables[static_cast<size_t>(dc)], &ac_tables[static_cast<size_t>(ac)],
                         dc_quant[static_cast<size_t>(it->quant_table)]});
      }
      // MCUs of the scan: interleaved scans cover the image in (8 h_max) x (8 v_max) tiles with
      // h x v blocks per component; a single-component scan goes block by block.
      int64_t mcus = 0;
      std::vector<std::pair<ScanPart*, int>> blocks_per_mcu;
      if (count == 1) {
        const Component& c = *parts[0].component;
        const int64_t w = (static_cast<int64_t>(width) * c.h + h_max - 1) / h_max;
        const int64_t h = (static_cast<int64_t>(height) * c.v + v_max - 1) / v_max;
        mcus = ((w + 7) / 8) * ((h + 7) / 8);
        blocks_per_mcu.push_back({&parts[0], 1});
      } else {
        mcus = ((width + 8 * h_max - 1) / (8 * h_max)) *
               static_cast<int64_t>((height + 8 * v_max - 1) / (8 * v_max));
        for (ScanPart& part : parts)
          blocks_per_mcu.push_back({&part, part.component->h * part.component->v});
      }
      const int dc_limit = precision == 8 ? 11 : 15, ac_limit = precision == 8 ? 10 : 14;
      // A block's DC coefficient is 8 x its mean level-shifted sample, so within 2^(precision + 2)
      // in size; with a quantization step of rounding room, more means the data was misread: a
      // damaged difference shifts every later DC value of the component (they are coded as
      // differences), which pushes dark or bright regions out of range.
      const int64_t dc_bound = int64_t{1} << (precision + 2);
      BitReader bits(b, segment_end);
      int next_restart = 0;
      for (int64_t mcu = 0; mcu < mcus; ++mcu) {
        if (restart_interval > 0 && mcu > 0 && mcu % restart_interval == 0) {
          if (bits.unread_whole_bytes() > 0 || bits.bytes_before_marker() > 0)
            return corrupt(detail::concat("extra data before restart marker ", next_restart));
          size_t p = bits.position();
          while (p < b.size() && b[p] == 0xFF) ++p;
          if (p >= b.size()) return kTruncated;
          if (b[p] != 0xD0 + next_restart)
            return corrupt(detail::concat("expected restart marker ", next_restart, " at byte ", p));
          next_restart = (next_restart + 1) % 8;
          bits.restart_at(p + 1);
          for (ScanPart& part : parts) part.dc_prediction = 0;
        }
        for (const auto& [part, blocks] : blocks_per_mcu)
          for (int block = 0; block < blocks; ++block) {
            auto fail = [&](const char* what) {
              if (bits.at_end_of_file()) return std::string(kTruncated);
              return corrupt(detail::concat(what, " at MCU ", mcu, " of ", mcus));
            };
            int symbol = bits.decode(*part->dc);
            if (symbol < 0) return fail(symbol == -1 ? "bad Huffman code" : "image data ends early");
            if (symbol > dc_limit) return fail("bad DC coefficient size");
            if (symbol > 0) {
              if (!bits.ensure(symbol)) return fail("image data ends early");
              part->dc_prediction += extend(bits.peek(symbol), symbol);
              bits.skip(symbol);
            }
            if (part->dc_quant > 0 &&
                std::abs(static_cast<int64_t>(part->dc_prediction) * part->dc_quant) >
                    dc_bound + part->dc_quant)
              return fail("DC coefficient out of range");
            for (int k = 1; k < 64; ++k) {
              symbol = bits.decode(*part->ac);
              if (symbol < 0) return fail(symbol == -1 ? "bad Huffman code" : "image data ends early");
              const int run = symbol >> 4, size = symbol & 15;
              if (size == 0) {
                if (run != 15) break;  // end of block
                k += 15;
                continue;
              }
              k += run;
              if (k > 63 || size > ac_limit) return fail("bad AC coefficient");
              if (!bits.skip(size)) return fail("image data ends early");
            }
          }
      }
      // After the last block only the padding bits of its byte may remain before the next marker.
      if (const size_t extra = bits.bytes_before_marker(); extra > 0) {
        if (bits.at_end_of_file()) return kTruncated;
        return corrupt(detail::concat(extra, " bytes of extra data after the last block"));
      }
      pos = bits.position();
      continue;
    }
    pos = segment_end;  // APPn, COM, DQT, DNL, ...: skipped by their length
  }
}

}  // namespace

// A TIFF's first image directory: its ImageWidth (256) and ImageLength (257) tags, SHORT or LONG
// (SSHORT, SLONG read signed), in the byte order the file declares ("II": little-endian, "MM":
// big-endian). A size tag given twice or of another type says nothing: decoders differ on which
// one they believe (libtiff takes the first), so such a file is not let past the pixel limit.
bool read_tiff_header(const std::vector<uint8_t>& b, ImageHeader& header) {
  const bool little = b.size() >= 8 && b[0] == 'I' && b[1] == 'I' && b[2] == 42 && b[3] == 0;
  const bool big = b.size() >= 8 && b[0] == 'M' && b[1] == 'M' && b[2] == 0 && b[3] == 42;
  if (!little && !big) return false;
  auto u16 = [&](size_t at) -> uint32_t {
    return little ? uint32_t{b[at]} | (uint32_t{b[at + 1]} << 8) : big_endian_16(&b[at]);
  };
  auto u32 = [&](size_t at) -> uint32_t {
    return little ? u16(at) | (u16(at + 2) << 16) : big_endian_32(&b[at]);
  };
  const uint64_t directory = u32(4);
  if (directory + 2 > b.size()) return false;
  const uint64_t entries = u16(directory);
  if (directory + 2 + 12 * entries > b.size()) return false;
  header.format = "TIFF";
  bool width = false, height = false;
  for (uint64_t i = 0; i < entries; ++i) {
    const size_t at = static_cast<size_t>(directory + 2 + 12 * i);
    const uint32_t tag = u16(at), type = u16(at + 2);
    if (tag != 256 && tag != 257) continue;
    bool& seen = tag == 256 ? width : height;
    if (seen) return false;
    int64_t value = 0;
    switch (type) {
      case 3: value = u16(at + 8); break;                                       // SHORT
      case 4: value = u32(at + 8); break;                                       // LONG
      case 8: value = static_cast<int16_t>(static_cast<uint16_t>(u16(at + 8))); break;  // SSHORT
      case 9: value = static_cast<int32_t>(u32(at + 8)); break;                 // SLONG
      default: return false;
    }
    (tag == 256 ? header.width : header.height) = value;
    seen = true;
  }
  return width && height;
}

bool read_image_header(const std::vector<uint8_t>& b, ImageHeader& header) {
  header = ImageHeader{};
  if (read_tiff_header(b, header)) return true;
  header = ImageHeader{};
  if (b.size() >= 24 && is_png(b) && std::equal(b.begin() + 12, b.begin() + 16, "IHDR")) {
    header.format = "PNG";
    header.width = big_endian_32(&b[16]);
    header.height = big_endian_32(&b[20]);
    return true;
  }
  if (b.size() >= 26 && b[0] == 'B' && b[1] == 'M') {
    const uint32_t info_size = uint32_t{b[14]} | (uint32_t{b[15]} << 8) |
                               (uint32_t{b[16]} << 16) | (uint32_t{b[17]} << 24);
    header.format = "BMP";
    if (info_size == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
      header.width = uint32_t{b[18]} | (uint32_t{b[19]} << 8);
      header.height = uint32_t{b[20]} | (uint32_t{b[21]} << 8);
    } else {
      header.width = std::abs(static_cast<int64_t>(little_endian_i32(&b[18])));
      header.height = std::abs(static_cast<int64_t>(little_endian_i32(&b[22])));
    }
    return true;
  }
  if (is_jpeg(b)) {
    size_t pos = 2;
    while (pos + 4 <= b.size() && b[pos] == 0xFF) {
      const uint8_t marker = b[pos + 1];
      if (marker == 0xFF) {
        ++pos;
        continue;
      }
      if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD9)) {
        pos += 2;
        continue;
      }
      if (is_start_of_frame(marker)) {
        if (pos + 9 > b.size()) return false;
        header.format = "JPEG";
        header.height = big_endian_16(&b[pos + 5]);
        header.width = big_endian_16(&b[pos + 7]);
        return true;
      }
      if (marker == 0xDA) return false;
      pos += 2 + big_endian_16(&b[pos + 2]);
    }
  }
  return false;
}

std::string check_jpeg(const std::vector<uint8_t>& bytes) {
  if (!is_jpeg(bytes)) return "";
  return check_jpeg_structure(bytes);
}

namespace {

// A BMP's compression field (0 for an OS/2 header, which has none).
uint32_t compression_of(const std::vector<uint8_t>& b) {
  const auto u32 = [&](size_t at) {
    return uint32_t{b[at]} | (uint32_t{b[at + 1]} << 8) | (uint32_t{b[at + 2]} << 16) |
           (uint32_t{b[at + 3]} << 24);
  };
  return b.size() >= 34 && u32(14) != 12 ? u32(30) : 0;
}

// Walks RLE8 (compression 1) or RLE4 (2) codes from `offset` to their end-of-bitmap code: ""
// when every code lies inside the file.
std::string check_bmp_run_lengths(const std::vector<uint8_t>& b, uint64_t offset) {
  const bool four = compression_of(b) == 2;
  uint64_t at = offset;
  while (at + 2 <= b.size()) {
    const uint8_t count = b[at], code = b[at + 1];
    at += 2;
    if (count != 0) continue;  // a run: count pixels of one value
    if (code == 1) return "";  // end of bitmap
    if (code == 0) continue;   // end of line
    if (code == 2) {           // delta: two more bytes
      at += 2;
      continue;
    }
    // Absolute: `code` pixels, a byte each (RLE8) or two to a byte (RLE4), padded to a word.
    const uint64_t bytes = four ? (code + 1u) / 2 : code;
    at += (bytes + 1) / 2 * 2;
  }
  return detail::concat("truncated BMP (its run-length codes reach byte ", at,
                        " with no end-of-bitmap code; the file holds ", b.size(), " bytes)");
}

}  // namespace

std::string check_bmp(const std::vector<uint8_t>& b) {
  ImageHeader header;
  if (b.size() < 30 || b[0] != 'B' || b[1] != 'M' || !read_image_header(b, header)) return "";
  const auto u16 = [&](size_t at) { return uint32_t{b[at]} | (uint32_t{b[at + 1]} << 8); };
  const auto u32 = [&](size_t at) { return u16(at) | (u16(at + 2) << 16); };
  const uint32_t info_size = u32(14);
  uint32_t bits = 0;
  if (info_size == 12) {  // OS/2 BITMAPCOREHEADER: never compressed
    bits = u16(24);
  } else {
    if (b.size() < 34) return "";
    const uint32_t compression = u32(30);
    // Run-length (1: RLE8, 2: RLE4) walked below; embedded JPEG and PNG left to their decoders.
    if (compression != 0 && compression != 3 && compression != 1 && compression != 2) return "";
    bits = u16(28);
  }
  if (bits == 0 || bits > 64) return "";  // OpenCV's decoder judges those
  const uint64_t offset = u32(10);
  if (compression_of(b) == 1 || compression_of(b) == 2) return check_bmp_run_lengths(b, offset);
  const uint64_t row = (static_cast<uint64_t>(header.width) * bits + 31) / 32 * 4;
  const uint64_t needed = offset + row * static_cast<uint64_t>(header.height);
  if (needed <= b.size()) return "";
  return detail::concat("truncated BMP (its ", header.width, " x ", header.height,
                        " pixels need ", needed, " bytes, the file holds ", b.size(), ")");
}

std::string check_png(const std::vector<uint8_t>& b, PngLayout* layout) {
  if (!is_png(b)) return "";
  PngLayout found;
  bool header = false, palette = false, after_image_data = false;
  for (size_t pos = 8;;) {
    if (b.size() - pos < 12) return "truncated PNG (the file ends before its IEND chunk)";
    const uint32_t length = big_endian_32(&b[pos]);
    const uint8_t* type_bytes = &b[pos + 4];
    // A chunk's type is four ASCII letters; a damaged one is not named.
    const bool letters = std::all_of(type_bytes, type_bytes + 4, [](uint8_t c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    });
    const std::string chunk = letters
                                  ? "the " + std::string(type_bytes, type_bytes + 4) + " chunk"
                                  : std::string("a chunk");
    if (length > b.size() - pos - 12)
      return "truncated PNG (" + chunk + " runs past the end of the file)";
    if (crc32(type_bytes, 4 + size_t{length}) != big_endian_32(&b[pos + 8 + length]))
      return "damaged PNG (the CRC of " + chunk + " does not match its bytes)";
    const std::string type(type_bytes, type_bytes + 4);
    const uint8_t* data = &b[pos + 8];
    if (!header) {
      // IHDR comes first and says how the image data is laid out; libpng stops at a bad one.
      if (type != "IHDR" || length != 13)
        return "corrupt PNG (it does not start with an IHDR chunk)";
      found.width = big_endian_32(data);
      found.height = big_endian_32(data + 4);
      found.bit_depth = data[8];
      found.colour_type = data[9];
      found.interlaced = data[12] == 1;
      if (!valid_png_depth(found.colour_type, found.bit_depth) || data[10] != 0 || data[11] != 0 ||
          data[12] > 1)
        return detail::concat("corrupt PNG (its IHDR chunk gives colour type ", found.colour_type,
                              ", bit depth ", found.bit_depth, ", compression ", int{data[10]},
                              ", filter ", int{data[11]}, ", interlace ", int{data[12]},
                              ": not a combination PNG allows)");
      header = true;
    } else if (type == "PLTE") {
      palette = true;
    } else if (type == "IDAT") {
      if (found.colour_type == 3 && !palette)
        return "corrupt PNG (a palette image whose IDAT comes before any PLTE chunk)";
      // libpng reads the image data up to the first other chunk after it.
      if (!found.image_data.empty() && after_image_data)
        return "corrupt PNG (its IDAT chunks are not consecutive: another chunk comes between "
               "them)";
      found.image_data.emplace_back(pos + 8, size_t{length});
    } else if (!found.image_data.empty() && type != "IEND") {
      after_image_data = true;
    }
    if (type == "IEND") {
      if (found.image_data.empty()) return "corrupt PNG (no IDAT chunk: no image data)";
      if (layout) *layout = std::move(found);
      return "";
    }
    pos += 12 + size_t{length};
  }
}

std::vector<std::pair<uint64_t, uint64_t>> png_rows(const PngLayout& png) {
  static const uint64_t kChannels[7] = {1, 0, 3, 1, 2, 0, 4};  // by colour type
  const uint64_t bits_per_pixel = kChannels[png.colour_type] * static_cast<uint64_t>(png.bit_depth);
  std::vector<std::pair<uint64_t, uint64_t>> rows;
  // A pass of `height` rows `width` pixels wide: each row a filter-type byte, then its pixels
  // packed to whole bytes. An empty pass has no rows at all, not even filter bytes.
  const auto add_pass = [&](uint64_t width, uint64_t height) {
    if (width && height) rows.emplace_back(height, 1 + (width * bits_per_pixel + 7) / 8);
  };
  if (!png.interlaced) {
    add_pass(png.width, png.height);
    return rows;
  }
  // Adam7: seven passes over the pixels at (x0 + k dx, y0 + j dy).
  static const uint64_t kPasses[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                         {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
  for (const auto& [x0, y0, dx, dy] : kPasses)
    add_pass(png.width > x0 ? (png.width - x0 + dx - 1) / dx : 0,
             png.height > y0 ? (png.height - y0 + dy - 1) / dy : 0);
  return rows;
}

std::string check_tiff(const std::vector<uint8_t>& b) {
  ImageHeader header;
  if (!read_tiff_header(b, header)) return "";  // not a TIFF, or one the pixel limit judged
  const bool little = b[0] == 'I';
  auto u16 = [&](uint64_t at) -> uint32_t {
    return little ? uint32_t{b[at]} | (uint32_t{b[at + 1]} << 8) : big_endian_16(&b[at]);
  };
  auto u32 = [&](uint64_t at) -> uint32_t {
    return little ? u16(at) | (u16(at + 2) << 16) : big_endian_32(&b[at]);
  };
  const uint64_t directory = u32(4), entries = u16(directory);  // checked by read_tiff_header
  // A tag's values (SHORT or LONG), inline when they fit in 4 bytes, else at the offset given;
  // empty when the tag is absent or its values lie outside the file.
  auto values = [&](uint32_t wanted) {
    std::vector<uint64_t> found;
    for (uint64_t i = 0; i < entries; ++i) {
      const uint64_t at = directory + 2 + 12 * i;
      if (u16(at) != wanted) continue;
      const uint32_t type = u16(at + 2);
      const uint64_t count = u32(at + 4), size = type == 3 ? 2 : type == 4 ? 4 : 0;
      if (size == 0 || count > b.size()) return found;
      const uint64_t start = count * size <= 4 ? at + 8 : u32(at + 8);
      if (start + count * size > b.size()) return found;
      for (uint64_t k = 0; k < count; ++k)
        found.push_back(size == 2 ? u16(start + 2 * k) : u32(start + 4 * k));
      return found;
    }
    return found;
  };
  for (const uint64_t bits : values(258))  // BitsPerSample
    if (bits > 16)
      return detail::concat("TIFF of ", bits, "-bit samples (pneumo reads 8- and 16-bit ones)");
  for (const uint64_t format : values(339))  // SampleFormat: 3 is IEEE floating point
    if (format == 3) return "TIFF of floating-point samples (pneumo reads 8- and 16-bit integers)";
  for (const auto& [offsets_tag, counts_tag] : {std::pair<uint32_t, uint32_t>{273, 279}, {324, 325}}) {
    const std::vector<uint64_t> offsets = values(offsets_tag), counts = values(counts_tag);
    for (size_t k = 0; k < std::min(offsets.size(), counts.size()); ++k)
      if (offsets[k] + counts[k] > b.size())
        return detail::concat("truncated TIFF (its ", offsets_tag == 273 ? "strip " : "tile ",
                              k + 1, " of ", offsets.size(), " ends at byte ",
                              offsets[k] + counts[k], ", the file holds ", b.size(), ")");
  }
  return "";
}

}  // namespace pneumo::data_internal
