// Single image files for `pneumo predict`: finding them under folders and decoding one the way
// the cache does (the decoder itself is shared with prepare_cache).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "data/cache_internal.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"

namespace fs = std::filesystem;

namespace pneumo {

namespace {

// Image files under `dir`, recursively and sorted, following links to folders (each real folder
// once, so a loop of links ends). A folder that cannot be listed is added to `unreadable` with the
// reason, never dropped without a word; `dir` itself unreadable throws.
void walk_folder(const fs::path& dir, bool top, std::set<fs::path>& seen,
                 std::vector<std::string>& found, std::vector<SkippedFile>& unreadable) {
  std::error_code error;
  const fs::path real = fs::canonical(dir, error);
  if (!error && !seen.insert(real).second) return;  // reached again through a link
  std::vector<fs::directory_entry> entries;
  if (!error)
    for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error))
      entries.push_back(*it);
  if (error) {
    if (top) throw Error("cannot list folder '" + dir.string() + "': " + error.message());
    unreadable.push_back({dir.string(), "cannot list the folder: " + error.message()});
    return;
  }
  std::sort(entries.begin(), entries.end());
  for (const fs::directory_entry& entry : entries) {
    // Hidden names (is_hidden_name), as in prepare's tree: a folder scored by predict holds what
    // its cache does.
    if (is_hidden_name(entry.path().filename().string())) continue;
    std::error_code status;
    if (entry.is_directory(status))  // a link to a folder included
      walk_folder(entry.path(), false, seen, found, unreadable);
    // Every other name with an image extension: a broken link or a FIFO is then skipped by the
    // decoder with its reason, as an unreadable image is, not left out unsaid.
    else if (has_image_extension(entry.path().string()))
      found.push_back(entry.path().string());
  }
}

}  // namespace

std::vector<fs::path> folders_listed(const std::vector<std::string>& inputs) {
  std::set<fs::path> seen;
  for (const auto& input : inputs) {
    std::error_code error;
    if (!fs::is_directory(input, error)) continue;
    std::vector<std::string> found;
    std::vector<SkippedFile> unreadable;
    walk_folder(input, true, seen, found, unreadable);
  }
  return {seen.begin(), seen.end()};
}

std::vector<std::string> list_images(const std::vector<std::string>& inputs,
                                     std::vector<SkippedFile>* unreadable_folders) {
  std::vector<std::string> files;
  std::vector<SkippedFile> unreadable;
  for (const auto& input : inputs) {
    std::error_code error;
    if (fs::is_directory(input, error)) {
      std::vector<std::string> found;
      std::set<fs::path> seen;
      walk_folder(input, true, seen, found, unreadable);
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (const std::string why = why_not_there(input); why.empty()) {
      files.push_back(input);
    } else if (why == "does not exist") {
      throw Error("no such file or folder: '" + input + "'");
    } else {
      throw Error("'" + input + "' " + why);  // a broken link, a loop of links
    }
  }
  if (files.empty()) {
    std::string where;
    for (const auto& input : inputs) where += (where.empty() ? "'" : ", '") + input + "'";
    for (const SkippedFile& folder : unreadable)
      where += "; '" + folder.file + "' could not be read (" + folder.reason + ")";
    throw Error("no image file (.jpeg, .jpg, .png, .bmp, .tif, .tiff) in " + where);
  }
  if (unreadable_folders) *unreadable_folders = std::move(unreadable);
  return files;
}

namespace data_internal {

std::string read_image_bytes(const std::string& path, std::vector<uint8_t>& bytes) {
  std::error_code error;
  if (!fs::exists(path, error))
    return fs::is_symlink(path, error) ? "a broken link or a loop of links" : "no such file";
  if (!fs::is_regular_file(path, error)) return "not a regular file";  // a FIFO would block
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return std::string("cannot open the file: ") + std::strerror(errno);
  const std::streamoff length = in.tellg();
  if (length < 0) return "cannot read the file";
  if (length == 0) return "empty file (0 bytes)";
  if (length > kMaxImageFileBytes)
    return detail::concat("file of ", length, " bytes is larger than the ", kMaxImageFileBytes,
                          "-byte limit");
  bytes.resize(static_cast<size_t>(length));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), length)) return "read error";
  return "";
}

}  // namespace data_internal

std::string decode_image_file(const std::string& path, int size, uint8_t* out,
                              std::string* note) {
#ifdef PNEUMO_WITH_OPENCV
  std::vector<uint8_t> bytes;
  if (std::string why = data_internal::read_image_bytes(path, bytes); !why.empty()) return why;
  return data_internal::decode_square_gray(bytes, size, out, note);
#else
  (void)size;
  (void)out;
  (void)note;
  throw Error("cannot decode '" + path + "': this build of pneumo has no OpenCV (configure with "
              "-DPNEUMO_WITH_OPENCV=ON)");
#endif
}

}  // namespace pneumo
