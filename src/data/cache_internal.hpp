// Pieces shared by the cache's writer (prepare.cpp), its reader (cache.cpp) and the decoder
// (opencv/decode.cpp): walking an image tree, hashing it, path checks, and installing a finished
// directory in one rename. Internal to src/data; not a public header.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/paths.hpp"
#include "pneumo/data.hpp"

namespace pneumo::data_internal {

// One image file of the tree.
struct TreeFile {
  std::string relative;  // "train/NORMAL/IM-0115-0001.jpeg"
  int split = 0;         // index into kSplitNames
  int label = 0;         // index into kClassNames
  uint64_t bytes = 0;
  int64_t mtime_ns = 0;
  // The status-change time and the inode: no user sets them, and rewriting a file with its old
  // size and modification time (cp -p, rsync -t, touch -r) or fixing its permissions (a file
  // skipped as unreadable) changes them. (Not the device number: a container's mounts may get
  // another one at every start.)
  int64_t ctime_ns = 0;
  uint64_t inode = 0;
};

// Files with an image extension (.jpeg .jpg .png .bmp .tif .tiff, any case; hidden files left
// out) directly inside <data_dir>/<split>/<class>/, ordered by split (train, val, test), then by
// relative path. Throws when data_dir holds no <split>/<class> folder at all, or a split folder
// with one class folder but not the other (naming the missing one). A name with an image
// extension that is no readable regular file (a broken link, a link loop, a FIFO) is left out
// and, when `unlisted` is given, added to it with the reason.
std::vector<TreeFile> list_image_tree(const std::string& data_dir,
                                      std::vector<SkippedFile>* unlisted = nullptr);

// The cache's meta.json parsed; throws naming the file when it cannot be opened or parsed.
nlohmann::json read_meta(const std::filesystem::path& cache);

// FNV-1a 64 over "<relative>\0<bytes>\0<mtime_ns>\0<ctime_ns>\0<inode>\n" of each file, as
// "fnv1a64:<16 hex>".
std::string hash_tree(const std::vector<TreeFile>& files);

uint64_t fnv1a64(const std::string& text, uint64_t hash = 0xcbf29ce484222325ull);
std::string hex64(uint64_t value);

using pneumo::is_same_or_inside;  // core/paths.hpp
using pneumo::resolved;

// Throws unless `dir` is absent, an empty directory, or a pneumo cache (which may be replaced):
// a meta.json of format "pneumo-cache" and nothing but the files prepare writes (replacing a
// folder deletes what it holds, so a stray meta.json is not enough). `own_folder`: the automatic
// cache of an image tree (a folder pneumo named under its cache root), replaced also when its
// meta.json is damaged, as long as it holds a cache's files only.
void check_replaceable_output(const std::filesystem::path& dir, const char* what,
                              bool own_folder = false);

// A fresh hidden directory beside `final_dir` ("<parent>/.<name>.tmp-<pid>-<n>").
std::filesystem::path make_temp_dir_beside(const std::filesystem::path& final_dir);

// Moves the finished `temp_dir` to `final_dir`: a plain rename when final_dir is absent or empty;
// over an existing cache, an atomic exchange (renameat2 RENAME_EXCHANGE) where the filesystem
// offers it, else old-aside-then-rename; the old cache is then deleted.
void install_directory(const std::filesystem::path& temp_dir,
                       const std::filesystem::path& final_dir, bool own_folder = false);

// Removes a temporary directory when the scope ends (unless released).
class TempDirGuard {
 public:
  explicit TempDirGuard(std::filesystem::path dir) : dir_(std::move(dir)) {}
  ~TempDirGuard();
  TempDirGuard(const TempDirGuard&) = delete;
  TempDirGuard& operator=(const TempDirGuard&) = delete;
  void release() { dir_.clear(); }

 private:
  std::filesystem::path dir_;
};

// A whole image file into `bytes` (image_files.cpp): "" on success, else why not ("no such
// file", "a broken link or a loop of links", "not a regular file", "cannot open the file: ...",
// "empty file (0 bytes)", "file of N bytes is larger than the ...-byte limit", "read error").
std::string read_image_bytes(const std::string& path, std::vector<uint8_t>& bytes);

// Checks made before decoding (image_check.cpp, no OpenCV needed).
struct ImageHeader {
  std::string format;  // "PNG", "JPEG", "BMP", "TIFF"
  int64_t width = 0, height = 0;
};
// The format and pixel size from a PNG, JPEG, BMP or TIFF header (a TIFF's first image); false
// for anything else (or a header too short to say).
bool read_image_header(const std::vector<uint8_t>& bytes, ImageHeader& header);
// "" unless `bytes` is a JPEG that is truncated ("truncated JPEG ...") or damaged ("corrupt JPEG
// (...)"). Sequential Huffman JPEGs (baseline and extended, all the dataset holds) are walked down
// to every block's Huffman codes: a bad code, a coefficient out of range (a DC value beyond what
// 8-bit samples can give is how misread data usually shows), image data that ends before the last
// block or runs on after it, or a missing restart marker is corruption that libjpeg would paper
// over with a warning. Other JPEG kinds only need an end-of-image marker after
// their image data. Bytes flipped inside a coefficient's magnitude bits cannot be detected.
std::string check_jpeg(const std::vector<uint8_t>& bytes);
// "" unless `bytes` is a BMP whose pixel data reach past the end of the file ("truncated BMP
// (...)"): uncompressed rows, or run-length codes (RLE8, RLE4) that end before their end-of-bitmap
// code. OpenCV's decoder fails on it after printing an error of its own, over several lines and
// naming no file, straight to the standard error.
std::string check_bmp(const std::vector<uint8_t>& bytes);
// "" unless `bytes` is a TIFF whose first image's strips or tiles reach past the end of the file
// ("truncated TIFF (...)"), or whose samples are wider than 16 bits or floating point, which
// OpenCV's grey reading refuses: the same kind of unnamed error lines as a BMP's.
std::string check_tiff(const std::vector<uint8_t>& bytes);
// What a PNG's IHDR says and where its IDAT chunks' data lie (offset, length in the file).
struct PngLayout {
  uint64_t width = 0, height = 0;
  int bit_depth = 0, colour_type = 0;
  bool interlaced = false;
  std::vector<std::pair<size_t, size_t>> image_data;
};
// "" unless `bytes` is a PNG whose chunks are cut short ("truncated PNG (...)"), fail their CRC
// ("damaged PNG (the CRC of the IDAT chunk does not match its bytes)"), whose IHDR is missing or
// gives a layout PNG does not allow, or that holds no image data: libpng would print its own
// "libpng error: ..." line for these, naming no file. For a good PNG, fills `layout` if given.
// Compressed data that is damaged under right CRCs is checked by check_png_image_data (opencv/).
std::string check_png(const std::vector<uint8_t>& bytes, PngLayout* layout = nullptr);
// How a PNG's image data inflates: groups of (rows, bytes per row) in order, one group per Adam7
// pass when interlaced (empty passes left out); each row is a filter-type byte and the row's
// pixels packed to whole bytes.
std::vector<std::pair<uint64_t, uint64_t>> png_rows(const PngLayout& png);

// Decoding, implemented in opencv/ (only built with OpenCV, which brings zlib).
// "" unless the image data of a PNG that passed check_png (its `layout`) is damaged: zlib cannot
// inflate it, it inflates to more or fewer bytes than its header needs, or a row's filter type is
// not one of PNG's five. libpng reports these on stderr in words that name no file.
std::string check_png_image_data(const std::vector<uint8_t>& bytes, const PngLayout& layout);
// Decodes an encoded image to 8-bit grayscale and squashes it to size x size with area
// interpolation into `out` (size*size bytes). Returns "" on success, else why the file was
// refused ("empty file", "truncated JPEG ...", "corrupt JPEG ...", "image of W x H pixels is larger
// than ...", "not a decodable image").
// `note`, if given, receives a warning about an image that decodes but likely not as meant ("" if
// none): a 16-bit PNG whose samples all lie below 4096 (unscaled 12-bit data) decodes nearly black.
std::string decode_square_gray(const std::vector<uint8_t>& encoded, int size, uint8_t* out,
                               std::string* note = nullptr);
std::string decoder_description();  // e.g. "OpenCV 4.6.0 imdecode(IMREAD_GRAYSCALE) ..."

}  // namespace pneumo::data_internal
