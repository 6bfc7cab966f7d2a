// PNG files built byte by byte for the image checks' tests: chunks with their CRCs, image data
// compressed with zlib, and a way to rewrite one chunk's data with its CRC made right again (so
// damage inside the compressed data is all that is wrong).
#pragma once

#include <zlib.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/checksum.hpp"

namespace pneumo::testing {

inline std::string big_endian(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

inline std::string png_chunk(const std::string& type, const std::string& data) {
  const std::string body = type + data;
  return big_endian(static_cast<uint32_t>(data.size())) + body + big_endian(crc32(body.data(), body.size()));
}

inline std::string png_header(uint32_t width, uint32_t height, int bit_depth, int colour_type,
                              int interlace = 0, int compression = 0, int filter = 0) {
  return png_chunk("IHDR", big_endian(width) + big_endian(height) +
                               std::string{static_cast<char>(bit_depth), static_cast<char>(colour_type),
                                           static_cast<char>(compression), static_cast<char>(filter),
                                           static_cast<char>(interlace)});
}

inline std::string zlib_compressed(const std::string& raw, int level = 6) {
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string out(size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(raw.data()),
                static_cast<uLong>(raw.size()), level) != Z_OK)
    throw std::runtime_error("compress2 failed");
  out.resize(size);
  return out;
}

inline const std::string kPngSignature = "\x89PNG\r\n\x1a\n";

// A whole PNG: signature, IHDR, a 256-entry grey palette for colour type 3, the compressed data
// in IDAT chunks of at most `idat_size` bytes, IEND.
inline std::string png_file(uint32_t width, uint32_t height, int bit_depth, int colour_type,
                            int interlace, const std::string& compressed, size_t idat_size = 1 << 20) {
  std::string png = kPngSignature + png_header(width, height, bit_depth, colour_type, interlace);
  if (colour_type == 3) {
    std::string palette;
    for (int i = 0; i < 256; ++i) palette += std::string(3, static_cast<char>(i));
    png += png_chunk("PLTE", palette);
  }
  for (size_t at = 0; at < compressed.size(); at += idat_size)
    png += png_chunk("IDAT", compressed.substr(at, idat_size));
  return png + png_chunk("IEND", "");
}

// The (offset of the data, length) of the first chunk of `type` in a PNG; throws if none.
inline std::pair<size_t, size_t> find_png_chunk(const std::string& png, const std::string& type) {
  for (size_t pos = 8; pos + 12 <= png.size();) {
    const auto length = static_cast<size_t>((static_cast<uint8_t>(png[pos]) << 24) |
                                            (static_cast<uint8_t>(png[pos + 1]) << 16) |
                                            (static_cast<uint8_t>(png[pos + 2]) << 8) |
                                            static_cast<uint8_t>(png[pos + 3]));
    if (png.compare(pos + 4, 4, type) == 0) return {pos + 8, length};
    pos += 12 + length;
  }
  throw std::runtime_error("no " + type + " chunk");
}

// The PNG with its first IDAT chunk's data bytes [at, at + count) XORed with `mask` and the
// chunk's CRC written again over the damaged bytes.
inline std::string damage_idat_keeping_crc(std::string png, size_t at, size_t count, uint8_t mask = 0x5A) {
  const auto [offset, length] = find_png_chunk(png, "IDAT");
  for (size_t i = at; i < at + count && i < length; ++i)
    png[offset + i] = static_cast<char>(static_cast<uint8_t>(png[offset + i]) ^ mask);
  const std::string crc = big_endian(crc32(png.data() + offset - 4, 4 + length));
  png.replace(offset + length, 4, crc);
  return png;
}

}  // namespace pneumo::testing
