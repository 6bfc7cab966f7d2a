// Single image files for `pneumo predict`: finding them under folders and decoding one the way
// the cache does (the decoder itself is shared with prepare_cache).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/cache_internal.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"

namespace fs = std::filesystem;

namespace pneumo {

std::vector<std::string> list_images(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& input : inputs) {
    std::error_code error;
    if (fs::is_directory(input, error)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(
               input, fs::directory_options::skip_permission_denied, error);
           !error && it != fs::recursive_directory_iterator(); it.increment(error))
        // Every name with an image extension but folders: a broken link or a FIFO is then
        // skipped by the decoder with its reason, as an unreadable image is, not left out unsaid.
        if (std::error_code status; data_internal::has_image_extension(it->path().string()) &&
                                    !it->is_directory(status))
          found.push_back(it->path().string());
      if (error) throw Error("cannot list folder '" + input + "': " + error.message());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::exists(input, error)) {
      files.push_back(input);
    } else if (fs::is_symlink(input, error)) {
      throw Error("'" + input + "' is a broken link or a loop of links");
    } else {
      throw Error("no such file or folder: '" + input + "'");
    }
  }
  if (files.empty()) {
    std::string where;
    for (const auto& input : inputs) where += (where.empty() ? "'" : ", '") + input + "'";
    throw Error("no image file (.jpeg, .jpg, .png, .bmp, .tif, .tiff) in " + where);
  }
  return files;
}

std::string decode_image_file(const std::string& path, int size, uint8_t* out) {
#ifdef PNEUMO_WITH_OPENCV
  std::error_code error;
  if (!fs::exists(path, error))
    return fs::is_symlink(path, error) ? "a broken link or a loop of links" : "no such file";
  if (!fs::is_regular_file(path, error)) return "not a regular file";  // a FIFO would block
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "cannot open the file";
  const std::streamoff length = in.tellg();
  if (length < 0) return "cannot read the file";
  if (length > kMaxImageFileBytes)
    return detail::concat("file of ", length, " bytes is larger than the ", kMaxImageFileBytes,
                          "-byte limit");
  std::vector<uint8_t> bytes(static_cast<size_t>(length));
  in.seekg(0);
  if (length > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), length)) return "read error";
  return data_internal::decode_square_gray(bytes, size, out);
#else
  (void)size;
  (void)out;
  throw Error("cannot decode '" + path + "': this build of pneumo has no OpenCV (configure with "
              "-DPNEUMO_WITH_OPENCV=ON)");
#endif
}

}  // namespace pneumo
