// The cache's reader and the tree plumbing: listing and hashing an image tree, loading a cache
// against its meta.json, opening "a cache or an image tree", and the atomic directory install.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <nlohmann/json.hpp>
#include <system_error>

#include "cache_internal.hpp"
#include "core/atomic_file.hpp"
#include "core/file_lock.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/npy.hpp"

namespace fs = std::filesystem;

namespace pneumo {

const char* const kDatasetCitation =
    "Kermany, Daniel; Zhang, Kang; Goldbaum, Michael (2018). \"Labeled Optical Coherence "
    "Tomography (OCT) and Chest X-Ray Images for Classification\". Mendeley Data, v2. "
    "doi:10.17632/rscbjbr9sj.2. Licence: CC BY 4.0. Paper: Kermany et al., \"Identifying Medical "
    "Diagnoses and Treatable Diseases by Image-Based Deep Learning\", Cell 172(5):1122-1131, 2018.";

std::string dataset_credit() {
  return std::string("Where these images are the pediatric chest X-rays pneumo is developed on (or "
                     "a part of them), their source and licence: ") +
         kDatasetCitation;
}

std::array<int64_t, kClassCount> Split::class_counts() const {
  std::array<int64_t, kClassCount> counts{};
  for (uint8_t l : labels)
    if (l < kClassCount) ++counts[l];
  return counts;
}

const Split* Dataset::find(const std::string& name) const {
  for (const Split& s : splits)
    if (s.name == name) return &s;
  return nullptr;
}

const Split& Dataset::split(const std::string& name) const {
  // A split whose every file prepare skipped is recorded with no image: scoring or training on it
  // stopped in an internal check ("an image set needs at least one image").
  const std::string where = tree_dir.empty() ? "cache " + cache_dir : "the image tree " + tree_dir;
  if (const Split* s = find(name)) {
    if (s->count() == 0)
      throw Error(where + ": its '" + name + "' split holds no image (every file in it was " +
                  "skipped when it was prepared, each with its reason: the warnings then, and " +
                  "'skipped' in " + (fs::path(cache_dir) / "meta.json").string() + ")");
    return *s;
  }
  std::string present;
  for (const Split& s : splits) present += (present.empty() ? "" : ", ") + s.name;
  present = present.empty() ? "none" : present;
  // Named as the user gave it: an image tree's cache is a folder they never saw.
  if (!tree_dir.empty())
    throw Error("the image tree " + tree_dir + " has no '" + name + "' split (no image in " +
                tree_dir + "/" + name + "/NORMAL or /PNEUMONIA; it holds: " + present + ")");
  throw Error("cache " + cache_dir + " has no '" + name + "' split (it holds: " + present + ")");
}

bool is_hidden_name(const std::string& name) { return !name.empty() && name[0] == '.'; }

bool has_image_extension(const std::string& name) {
  const size_t dot = name.find_last_of('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jpeg" || ext == "jpg" || ext == "png" || ext == "bmp" || ext == "tif" ||
         ext == "tiff";
}

namespace data_internal {

uint64_t fnv1a64(const std::string& text, uint64_t hash) {
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::string hex64(uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

std::vector<TreeFile> list_image_tree(const std::string& data_dir,
                                      std::vector<SkippedFile>* unlisted) {
  std::vector<TreeFile> files;
  bool any_folder = false;
  for (int s = 0; s < 3; ++s) {
    // A split folder holds both class folders or neither: a missing one is almost always a
    // mistake (a misspelt name, a half-copied tree) that would silently train on one class.
    std::string present, missing;
    for (int c = 0; c < kClassCount; ++c) {
      std::error_code ec;
      if (fs::is_directory(fs::path(data_dir) / kSplitNames[s] / kClassNames[c], ec))
        present = kClassNames[c];
      else
        missing = kClassNames[c];
    }
    if (!present.empty() && !missing.empty())
      throw Error((fs::path(data_dir) / kSplitNames[s] / missing).string() +
                  " is missing: the split folder " + kSplitNames[s] + "/ has " + present +
                  "/ but no " + missing + "/ (each split needs both NORMAL/ and PNEUMONIA/)");
    for (int c = 0; c < kClassCount; ++c) {
      const std::string relative_dir = std::string(kSplitNames[s]) + "/" + kClassNames[c];
      const fs::path dir = fs::path(data_dir) / kSplitNames[s] / kClassNames[c];
      std::error_code ec;
      if (!fs::is_directory(dir, ec)) continue;
      any_folder = true;
      std::vector<TreeFile> here;
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.empty() || is_hidden_name(name) || !has_image_extension(name)) continue;
        struct stat info {};
        if (::stat(it->path().c_str(), &info) != 0) {
          const int error_number = errno;
          if (unlisted)
            unlisted->push_back({relative_dir + "/" + name,
                                 error_number == ENOENT ? "a broken link (its target is missing)"
                                 : error_number == ELOOP
                                     ? "a loop of links"
                                     : std::string("cannot be read: ") + std::strerror(error_number)});
          continue;
        }
        if (S_ISDIR(info.st_mode)) continue;  // prepare warns about folders inside a class folder
        if (!S_ISREG(info.st_mode)) {
          if (unlisted)
            unlisted->push_back({relative_dir + "/" + name, "not a regular file (a FIFO or a device)"});
          continue;
        }
        TreeFile f;
        f.relative = relative_dir + "/" + name;
        f.split = s;
        f.label = c;
        f.bytes = static_cast<uint64_t>(info.st_size);
        f.mtime_ns = static_cast<int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec;
        f.ctime_ns = static_cast<int64_t>(info.st_ctim.tv_sec) * 1000000000 + info.st_ctim.tv_nsec;
        f.inode = static_cast<uint64_t>(info.st_ino);
        here.push_back(std::move(f));
      }
      if (ec) throw Error("cannot list " + dir.string() + ": " + ec.message());
      files.insert(files.end(), here.begin(), here.end());
    }
  }
  if (!any_folder)
    throw Error(data_dir +
                " is not an image tree: it holds none of {train,val,test}/{NORMAL,PNEUMONIA}/");
  // Split order first (train, val, test), then the path: NORMAL before PNEUMONIA, names sorted.
  std::stable_sort(files.begin(), files.end(), [](const TreeFile& a, const TreeFile& b) {
    return a.split != b.split ? a.split < b.split : a.relative < b.relative;
  });
  return files;
}

std::string hash_tree(const std::vector<TreeFile>& files) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (const TreeFile& f : files) {
    hash = fnv1a64(f.relative, hash);
    const std::string nul(1, '\0');
    hash = fnv1a64(nul + std::to_string(f.bytes) + nul + std::to_string(f.mtime_ns) + nul +
                       std::to_string(f.ctime_ns) + nul + std::to_string(f.inode) + "\n",
                   hash);
  }
  return "fnv1a64:" + hex64(hash);
}

namespace {

// The names prepare writes into a cache: meta.json and three files per split.
bool is_cache_file_name(const std::string& name) {
  if (name == "meta.json") return true;
  for (const char* split : kSplitNames)
    for (const char* suffix : {"_images.npy", "_labels.npy", "_files.txt"})
      if (name == std::string(split) + suffix) return true;
  return false;
}

// Does `dir`'s meta.json say that prepare wrote the folder?
bool meta_says_cache(const fs::path& dir) {
  try {
    const nlohmann::json meta = read_meta(dir);
    return meta.is_object() && meta.value("format", std::string()) == "pneumo-cache" &&
           meta.contains("splits") && meta["splits"].is_object();
  } catch (const std::exception&) {
    return false;
  }
}

// "" when `dir` is a cache that prepare wrote, else why not. A meta.json alone proves nothing (a
// project folder may hold one), and replacing a folder deletes all it holds, so the folder must
// hold the cache's own files only and its meta.json must say it is one.
std::string why_not_a_cache(const fs::path& dir, bool own_folder) {
  std::error_code ec;
  if (!fs::is_regular_file(dir / "meta.json", ec)) return "no meta.json";
  if (!own_folder && !meta_says_cache(dir)) return "its meta.json is not a pneumo cache's";
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!is_cache_file_name(name) || !it->is_regular_file(ec))
      return "it holds " + name + ", which no cache holds";
  }
  if (ec) return "it cannot be listed: " + ec.message();
  return "";
}

}  // namespace

void check_replaceable_output(const fs::path& dir, const char* what, bool own_folder) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  if (!fs::is_directory(dir, ec))
    throw Error(std::string(what) + " " + dir.string() + " exists and is not a directory");
  // Replacing it would drop its write protection (and leave an old cache no one can delete).
  if (::access(dir.c_str(), W_OK) != 0)
    throw Error(std::string(what) + " " + dir.string() + " is not writable (" +
                std::strerror(errno) + "); it is replaced, not written around: make it "
                "writable or choose another directory");
  if (fs::is_empty(dir, ec)) return;
  const std::string why = why_not_a_cache(dir, own_folder);
  if (why.empty()) return;
  throw Error(std::string(what) + " " + dir.string() +
              " is a non-empty directory that is not a pneumo cache (" + why +
              "); refusing to replace it, which would delete what it holds: " +
              (own_folder ? std::string("move what it holds elsewhere and remove it, or set "
                                        "PNEUMO_CACHE_DIR to another folder")
                          : std::string("choose a new or empty directory")));
}

namespace {

// This machine's name, in the temporary folders' names ("" when it has none).
std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "";
  std::string host(name);
  for (char& c : host)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  return host;
}

// ".NAME.tmp-HOST-PID-N": a prepare's temporary folder beside NAME, on the machine HOST.
std::string temp_dir_prefix(const fs::path& final_dir) {
  return "." + final_dir.filename().string() + ".tmp-" + host_name() + "-";
}

// The temporary folders that prepares on this machine left beside `final_dir` when a signal or a
// crash stopped them: named for this host and a process that is gone, untouched for an hour (a
// live prepare refreshes its folder's time while it decodes).
void remove_abandoned_temp_dirs(const fs::path& parent, const fs::path& final_dir) {
  const std::string prefix = temp_dir_prefix(final_dir);
  std::error_code ec;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0 || !it->is_directory(ec)) continue;
    const std::string rest = name.substr(prefix.size());  // PID-N
    const size_t dash = rest.find('-');
    if (dash == 0 || dash == std::string::npos || dash + 1 == rest.size() ||
        rest.find_first_not_of("0123456789-") != std::string::npos ||
        rest.find('-', dash + 1) != std::string::npos)
      continue;
    const long pid = std::strtol(rest.c_str(), nullptr, 10);
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    const auto age = fs::file_time_type::clock::now() - fs::last_write_time(it->path(), ec);
    if (ec || age < std::chrono::hours(1)) continue;
    std::error_code ignored;
    fs::remove_all(it->path(), ignored);
  }
}

}  // namespace

fs::path make_temp_dir_beside(const fs::path& final_dir) {
  static std::atomic<int> counter{0};
  const fs::path parent = final_dir.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) throw Error("cannot create " + parent.string() + ": " + ec.message());
  remove_abandoned_temp_dirs(parent, final_dir);
  for (int attempt = 0; attempt < 100; ++attempt) {
    const fs::path temp = parent / (temp_dir_prefix(final_dir) + std::to_string(::getpid()) +
                                    "-" + std::to_string(counter++));
    if (fs::create_directory(temp, ec)) return temp;
    if (ec)
      throw Error("cannot write " + final_dir.string() + ": creating " + temp.string() +
                  " beside it failed: " + ec.message());
  }
  throw Error("cannot create a temporary directory beside " + final_dir.string());
}

namespace {

void move_into_place(const fs::path& temp_dir, const fs::path& final_dir, bool own_folder) {
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    check_replaceable_output(final_dir, "output", own_folder);
    if (fs::is_empty(final_dir, ec)) {
      fs::remove(final_dir, ec);
    } else {
#ifdef RENAME_EXCHANGE
      // One atomic step: readers see the old cache or the new one, never neither.
      if (::renameat2(AT_FDCWD, temp_dir.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) ==
          0) {
        fs::remove_all(temp_dir, ec);  // now holds the old cache
        return;
      }
#endif
      const fs::path aside = make_temp_dir_beside(final_dir);
      fs::remove(aside, ec);
      fs::rename(final_dir, aside, ec);
      if (ec) throw Error("cannot move the old cache " + final_dir.string() + " aside: " + ec.message());
      fs::rename(temp_dir, final_dir, ec);
      if (ec) {
        std::error_code ignored;
        fs::rename(aside, final_dir, ignored);
        throw Error("cannot rename " + temp_dir.string() + " to " + final_dir.string() + ": " +
                    ec.message());
      }
      fs::remove_all(aside, ec);
      return;
    }
  }
  fs::rename(temp_dir, final_dir, ec);
  if (ec)
    throw Error("cannot rename " + temp_dir.string() + " to " + final_dir.string() + ": " +
                ec.message());
}

}  // namespace

void install_directory(const fs::path& temp_dir, const fs::path& final_dir, bool own_folder) {
  // The files, their names in the folder and the folder's new name in its parent reach the disk
  // before anyone reads the cache: a crash leaves no cache or a whole one, never named empty files.
  std::error_code ec;
  for (fs::directory_iterator it(temp_dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) sync_file(it->path().string());
  sync_directory(temp_dir.string());
  move_into_place(temp_dir, final_dir, own_folder);
  sync_directory(final_dir.has_parent_path() ? final_dir.parent_path().string() : ".");
}

TempDirGuard::~TempDirGuard() {
  if (dir_.empty()) return;
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

}  // namespace data_internal

using namespace data_internal;

bool is_file_of_a_cache(const std::string& path) {
  const fs::path file(path);
  std::error_code ec;
  return is_cache_file_name(file.filename().string()) &&
         fs::is_regular_file(file.parent_path() / "meta.json", ec) &&
         meta_says_cache(file.parent_path());
}

bool is_cache_dir(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(path) / "meta.json", ec)) return false;
  // An image tree may keep a meta.json of its own (a dataset's description): a cache only if that
  // file says so, or train and evaluate refused the tree as "not a pneumo cache". A cache holds
  // no {split}/{class} folders, so this reads no file for one.
  if (!is_image_tree(path)) return true;
  try {
    return data_internal::read_meta(path).value("format", std::string()) == "pneumo-cache";
  } catch (const std::exception&) {
    return false;
  }
}

bool is_image_tree(const std::string& path) {
  std::error_code ec;
  for (const char* split : kSplitNames)
    for (const char* cls : kClassNames)
      if (fs::is_directory(fs::path(path) / split / cls, ec)) return true;
  return false;
}

std::string image_tree_hash(const std::string& data_dir) {
  return hash_tree(list_image_tree(data_dir));
}

nlohmann::json data_internal::read_meta(const fs::path& cache) {
  const fs::path meta_path = cache / "meta.json";
  // Not a FIFO waited on for ever, nor a huge file read whole (a cache's is about 2 KB).
  const std::string text = read_file_text(meta_path.string(), 16u << 20);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(meta_path.string() + ": not valid JSON: " + e.what());
  }
}

namespace {

// A file name from meta.json, refused if it tries to leave the cache directory.
fs::path cache_member(const fs::path& cache, const nlohmann::json& entry, const char* key,
                      const std::string& fallback) {
  std::string name = fallback;
  if (entry.contains(key)) name = entry.at(key).get<std::string>();
  if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
      name == "." || name == "..")
    throw Error((cache / "meta.json").string() + ": bad file name '" + name + "' for " + key);
  return cache / name;
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::istringstream in(read_file_text(path.string()));  // a FIFO refused, not waited on
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

Split load_split(const fs::path& cache, const std::string& name, const nlohmann::json& entry,
                 int size) {
  Split split;
  split.name = name;
  split.size = size;
  const int64_t count = entry.at("count").get<int64_t>();
  if (count < 0) throw Error(detail::concat((cache / "meta.json").string(), ": split '", name,
                                            "' has a negative count ", count));

  const fs::path images_path = cache_member(cache, entry, "images", name + "_images.npy");
  // At most the pixels meta.json promises and a header: a huge file put there is refused, not
  // read whole into memory. (count and size are checked against the file's own shape below.)
  constexpr uint64_t kHeaderRoom = 1 << 20;
  const auto at_most = [&](uint64_t bytes_each) {  // saturating: meta.json's count may be absurd
    const uint64_t limit = std::numeric_limits<uint64_t>::max() - kHeaderRoom;
    return bytes_each == 0 ? kHeaderRoom
           : static_cast<uint64_t>(count) > limit / bytes_each
               ? std::numeric_limits<uint64_t>::max()
               : static_cast<uint64_t>(count) * bytes_each + kHeaderRoom;
  };
  NpyArray images = npy_from_bytes(
      read_file_bytes(images_path.string(), at_most(static_cast<uint64_t>(size) * size)),
      images_path.string());
  const std::vector<int64_t> image_shape{count, size, size};
  if (images.type != NpyType::UInt8 || images.shape != image_shape)
    throw Error(detail::concat(images_path.string(), ": expected uint8 (", count, ", ", size, ", ",
                               size, ") as meta.json says, found ", npy_descr(images.type), " ",
                               images.shape_string()));
  split.images = std::move(images.bytes);

  const fs::path labels_path = cache_member(cache, entry, "labels", name + "_labels.npy");
  NpyArray labels = npy_from_bytes(
      read_file_bytes(labels_path.string(), at_most(1)),
      labels_path.string());
  if (labels.type != NpyType::UInt8 || labels.shape != std::vector<int64_t>{count})
    throw Error(detail::concat(labels_path.string(), ": expected uint8 (", count,
                               ",) as meta.json says, found ", npy_descr(labels.type), " ",
                               labels.shape_string()));
  split.labels = std::move(labels.bytes);
  for (size_t i = 0; i < split.labels.size(); ++i)
    if (split.labels[i] >= kClassCount)
      throw Error(detail::concat(labels_path.string(), ": label ",
                                 static_cast<int>(split.labels[i]), " at index ", i,
                                 " is not 0 (NORMAL) or 1 (PNEUMONIA)"));

  const fs::path files_path = cache_member(cache, entry, "files", name + "_files.txt");
  split.files = read_lines(files_path);
  if (static_cast<int64_t>(split.files.size()) != count)
    throw Error(detail::concat(files_path.string(), ": ", split.files.size(),
                               " lines, but meta.json says the split has ", count, " images"));

  if (entry.contains("per_class")) {
    const auto counts = split.class_counts();
    for (int c = 0; c < kClassCount; ++c) {
      const int64_t expected = entry.at("per_class").value(kClassNames[c], int64_t{0});
      if (expected != counts[static_cast<size_t>(c)])
        throw Error(detail::concat(labels_path.string(), ": ", counts[static_cast<size_t>(c)], " ",
                                   kClassNames[c], " labels, but meta.json says ", expected));
    }
  }
  return split;
}

}  // namespace

namespace {

// The cache of an image tree, remembering the tree so that messages name what the user gave.
Dataset load_tree_cache(const std::string& cache_dir, const std::string& tree) {
  Dataset dataset = load_cache(cache_dir);
  dataset.tree_dir = tree;
  return dataset;
}

}  // namespace

Dataset load_cache(const std::string& cache_dir) {
  const fs::path cache(cache_dir);
  const nlohmann::json meta = read_meta(cache);
  const std::string meta_name = (cache / "meta.json").string();
  Dataset dataset;
  dataset.cache_dir = cache_dir;
  std::string field = "format";  // the one being read, for the message when it is wrong
  try {
    if (meta.value("format", std::string()) != "pneumo-cache")
      throw Error(meta_name + ": not a pneumo cache (\"format\" is not \"pneumo-cache\")");
    field = "format_version";
    const int version = meta.at("format_version").get<int>();
    if (version != kCacheFormatVersion)
      throw Error(detail::concat(meta_name, ": cache format version ", version,
                                 ", this pneumo reads version ", kCacheFormatVersion,
                                 "; prepare the cache again"));
    field = "size";
    dataset.size = meta.at("size").get<int>();
    if (dataset.size <= 0 || dataset.size > 8192)
      throw Error(detail::concat(meta_name, ": bad image size ", dataset.size));
    field = "classes";
    const auto classes = meta.at("classes").get<std::vector<std::string>>();
    if (classes != std::vector<std::string>(std::begin(kClassNames), std::end(kClassNames)))
      throw Error(meta_name + ": classes must be [\"NORMAL\", \"PNEUMONIA\"]");
    field = "source";
    if (meta.contains("source")) {
      dataset.source_hash = meta["source"].value("hash", std::string());
      // Read by eda only: a path of another type is as good as none, not a broken cache.
      const auto path = meta["source"].find("path");
      if (path != meta["source"].end() && path->is_string()) dataset.source_dir = *path;
    }
    field = "splits";
    const auto& splits = meta.at("splits");
    for (const char* name : kSplitNames)
      if (splits.contains(name)) {
        field = std::string("splits.") + name;
        dataset.splits.push_back(load_split(cache, name, splits.at(name), dataset.size));
      }
  } catch (const nlohmann::json::exception& e) {
    throw Error(meta_name + ": field \"" + field + "\" is missing or of the wrong type (" +
                e.what() + ")");
  }
  if (dataset.splits.empty()) throw Error(meta_name + ": the cache holds no split");
  return dataset;
}

std::string default_cache_root() {
  if (const char* dir = std::getenv("PNEUMO_CACHE_DIR"); dir && *dir) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && xdg[0] == '/')
    return (fs::path(xdg) / "pneumo").string();
  if (const char* home = std::getenv("HOME"); home && *home)
    return (fs::path(home) / ".cache" / "pneumo").string();
  throw Error("no place for the dataset cache: set PNEUMO_CACHE_DIR (or HOME), or prepare one "
              "with `pneumo prepare --data DIR --out CACHE` and pass the cache");
}

std::string default_cache_dir_for(const std::string& tree, int size,
                                  const std::string& cache_root) {
  const std::string root = cache_root.empty() ? default_cache_root() : cache_root;
  const std::string key = hex64(fnv1a64(resolved(tree).string()));
  return (fs::path(root) / ("tree-" + key + "-" + std::to_string(size))).string();
}

namespace {

// A reused cache left out the files its prepare skipped: said again on every use, not only when
// it was made (a file skipped as unreadable stays out until the tree changes).
void log_skipped_files(const std::string& cache, std::ostream& log) {
  nlohmann::json skipped;
  try {
    skipped = read_meta(cache).value("skipped", nlohmann::json::array());
  } catch (const std::exception&) {
    return;  // load_tree_cache reports an unreadable meta.json
  }
  if (!skipped.is_array() || skipped.empty()) return;
  log << "data: the cache leaves out " << skipped.size() << " file"
      << (skipped.size() == 1 ? "" : "s") << " its prepare skipped (listed under \"skipped\" in "
      << (fs::path(cache) / "meta.json").string() << ")";
  const size_t shown = std::min<size_t>(skipped.size(), 3);
  for (size_t i = 0; i < shown; ++i)
    if (skipped[i].is_object())
      log << (i == 0 ? ": " : "; ") << detail::one_line(skipped[i].value("file", std::string("?")))
          << " (" << skipped[i].value("reason", std::string("?")) << ")";
  log << (skipped.size() > shown ? "; ..." : "") << "\n";
}

// Where the cache root came from, for a message telling how to move it.
std::string cache_root_origin(const std::string& given_root) {
  if (!given_root.empty()) return "the cache root " + given_root;
  if (const char* dir = std::getenv("PNEUMO_CACHE_DIR"); dir && *dir)
    return std::string("PNEUMO_CACHE_DIR=") + dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && xdg[0] == '/')
    return std::string("XDG_CACHE_HOME=") + xdg;
  return "the default cache folder under HOME";
}

// Nothing is written into an image tree: a cache root inside it is refused before any folder is
// made there, naming the setting that put it there.
void check_cache_outside_tree(const std::string& cache, const std::string& tree,
                              const std::string& given_root) {
  if (!is_same_or_inside(resolved(cache), resolved(tree))) return;
  throw Error("the cache of the image tree " + tree + " would go to " + cache + " (from " +
              cache_root_origin(given_root) + "), inside the tree; nothing may be written "
              "there: set PNEUMO_CACHE_DIR to a folder outside the tree, or run `pneumo prepare "
              "--data " + tree + " --out CACHE` with CACHE outside it and pass the cache as --data");
}

// True when `cache` was prepared from the tree `path` as it is now (its `hash`), at `size`, by
// this build's decoder (saying so in the log); false, saying why when there was a cache, when it
// must be prepared again. Another decoder (an OpenCV upgrade) may give other pixels.
bool fresh_tree_cache(const std::string& cache, const std::string& path, const std::string& hash,
                      int size, std::ostream* log) {
  if (!is_cache_dir(cache)) return false;
  std::string stale;
  try {
    const nlohmann::json meta = read_meta(cache);
    if (!(meta.value("format_version", 0) == kCacheFormatVersion &&
          meta.value("size", 0) == size && meta.contains("source") &&
          meta["source"].value("hash", std::string()) == hash))
      stale = path + " changed since its cache was made";
#ifdef PNEUMO_WITH_OPENCV
    const nlohmann::json settings = meta.value("settings", nlohmann::json::object());
    const std::string decoder =
        settings.is_object() ? settings.value("decoder", std::string()) : std::string();
    if (stale.empty() && decoder != decoder_description())
      stale = "the cache of " + path + " was decoded by " +
              (decoder.empty() ? std::string("an unnamed decoder") : decoder) +
              ", this pneumo decodes with " + decoder_description();
#endif
  } catch (const std::exception&) {
    stale = "the cache of " + path + " has unreadable metadata";
  }
  if (log && stale.empty()) {
    *log << "data: using the cache " << cache << " of " << path << "\n";
    log_skipped_files(cache, *log);
  }
  if (log && !stale.empty()) *log << "data: " << stale << "; preparing again\n";
  return stale.empty();
}

}  // namespace

void check_data_path(const std::string& path) {
  if (is_cache_dir(path)) return;
  if (const std::string why = why_not_there(path); !why.empty())
    throw Error("the data path " + path + " " + why);
  if (!is_image_tree(path))
    throw Error(path + " is neither a pneumo cache (no meta.json) nor an image tree "
                       "({train,val,test}/{NORMAL,PNEUMONIA}/ with images)");
}

Dataset open_dataset(const std::string& path, const OpenDatasetOptions& options) {
  if (is_cache_dir(path)) {
    Dataset dataset = load_cache(path);
    if (options.size != 0 && options.size != dataset.size)
      throw Error(detail::concat("cache ", path, " holds ", dataset.size, "x", dataset.size,
                                 " images, but size ", options.size,
                                 " was asked for: prepare a cache of that size"));
    if (options.log) log_skipped_files(path, *options.log);  // as an image tree's cache says it
    return dataset;
  }
  check_data_path(path);

  std::error_code ec;
  const int size = options.size != 0 ? options.size : kDefaultImageSize;
  const std::string cache = default_cache_dir_for(path, size, options.cache_root);
  check_cache_outside_tree(cache, path, options.cache_root);
  // The tree is read first: a half-made one stops the run before anything is made for it.
  const std::string hash = image_tree_hash(path);
  // Where the cache goes must be writable; if not, say where else it can go.
  const fs::path cache_parent = fs::path(cache).parent_path();
  fs::create_directories(cache_parent, ec);
  if (ec)
    throw Error("cannot make the cache of the image tree " + path + " in " +
                cache_parent.string() + ": " + ec.message() +
                "; set PNEUMO_CACHE_DIR to a writable folder, or run `pneumo prepare --data " +
                path + " --out CACHE` and pass the cache as --data");
  // Two runs started together on one tree (a sweep's jobs) prepared its cache twice, and the
  // second's rename onto the first's failed: the check and the prepare are done by one process
  // at a time, so the second finds the first's cache fresh. The cache is read after.
  // `stale` is asked under the lock: whether the cache must be made (again) now.
  const auto check_or_prepare = [&](const std::function<bool()>& stale) {
    FileLock preparing;
    const std::string lock_path =
        (cache_parent / ("." + fs::path(cache).filename().string() + ".lock")).string();
    bool waiting = false;
    try {
      waiting = !preparing.try_acquire(lock_path);
    } catch (const Error&) {
      // A cache root this user cannot write (a shared, prepared one): its fresh caches are only
      // read, and a prepare there fails below with its own message.
    }
    if (waiting) {
      if (options.log)
        *options.log << "data: waiting for another pneumo that is checking or preparing " << cache
                     << "\n";
      preparing.acquire(lock_path);
    }
    if (stale()) {
      PrepareOptions prepare;
      prepare.data_dir = path;
      prepare.out_dir = cache;
      prepare.size = size;
      prepare.threads = options.threads;
      prepare.command = "open_dataset (pneumo train --data " + path + ")";
      prepare.own_cache_folder = true;  // tree-<hash>-<size> under the cache root: pneumo's
      prepare.log = options.log;
      prepare_cache(prepare);
    }
  };
  check_or_prepare([&] { return !fresh_tree_cache(cache, path, hash, size, options.log); });
  try {
    return load_tree_cache(cache, path);
  } catch (const Error& e) {
    // Its meta.json current but its arrays damaged (a full disk, a copy of the cache root cut
    // short): made again, once, where every later run on the tree stopped on the same file.
    if (options.log)
      *options.log << "data: the cache " << cache << " of " << path << " cannot be read ("
                   << e.what() << "); preparing again\n";
  }
  // Read again under the lock first: a run started beside this one may have made it meanwhile.
  std::optional<Dataset> loaded;
  check_or_prepare([&] {
    try {
      loaded = load_tree_cache(cache, path);
      return false;
    } catch (const Error&) {
      return true;
    }
  });
  return loaded ? std::move(*loaded) : load_tree_cache(cache, path);
}

}  // namespace pneumo
