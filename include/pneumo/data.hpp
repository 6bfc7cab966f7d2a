// The dataset: the prepared cache of docs/conventions.md (decoding an image tree once into NumPy files),
// loading it, opening "a cache or an image tree" for training, and the exploratory report.
// Splitting and per-epoch sampling live in pneumo/sampling.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <iostream>
#include <string>
#include <vector>

#include "pneumo/augment.hpp"

namespace pneumo {

// Label = index: NORMAL 0, PNEUMONIA 1. Splits in the order they are listed and written.
inline constexpr int kClassCount = 2;
inline constexpr const char* kClassNames[kClassCount] = {"NORMAL", "PNEUMONIA"};
inline constexpr const char* kSplitNames[3] = {"train", "val", "test"};
inline constexpr int kCacheFormatVersion = 1;
inline constexpr int kDefaultImageSize = 150;
// Images larger than this (width x height, read from the header before decoding) are skipped:
// 100 megapixels, e.g. 10000 x 10000, about 100 MB to decode. The dataset's largest is about
// 3000 x 2700; anything far beyond is a mistake or a decompression bomb.
inline constexpr int64_t kMaxImagePixels = 100'000'000;
// Files larger than this are not read at all.
inline constexpr int64_t kMaxImageFileBytes = int64_t{1} << 30;

// The dataset's citation (CC BY 4.0 asks for it wherever the images are used).
extern const char* const kDatasetCitation;
// kDatasetCitation as a report shows it: pneumo cannot tell where a folder's images came from, so
// the credit says when it applies (the dataset pneumo is developed on, or a part of it).
std::string dataset_credit();

// One split in memory.
struct Split {
  std::string name;                // "train", "val", "test" (or a carved subset's name)
  int size = 0;                    // images are size x size
  std::vector<uint8_t> images;     // (count, size, size) uint8, row-major
  std::vector<uint8_t> labels;     // (count): 0 NORMAL, 1 PNEUMONIA
  std::vector<std::string> files;  // (count): source path relative to the image tree

  int64_t count() const { return static_cast<int64_t>(labels.size()); }
  const uint8_t* image(int64_t i) const {
    return images.data() + i * static_cast<int64_t>(size) * size;
  }
  std::array<int64_t, kClassCount> class_counts() const;
};

// A loaded cache.
struct Dataset {
  std::string cache_dir;    // where it was loaded from
  std::string tree_dir;     // the image tree given as --data, when it was one (else empty)
  int size = 0;
  std::string source_hash;  // content hash of the image tree it was prepared from
  std::string source_dir;   // that tree's path as prepare recorded it (it may have moved since)
  std::vector<Split> splits;  // those present, in the order train, val, test

  const Split* find(const std::string& name) const;  // nullptr when absent
  const Split& split(const std::string& name) const;  // throws naming the cache when absent
};

// ---- The cache ----------------------------------------------------------------------------
// A cache directory holds, for each split present in the tree:
//   <split>_images.npy  uint8 (N, size, size), C order
//   <split>_labels.npy  uint8 (N), 0 NORMAL / 1 PNEUMONIA
//   <split>_files.txt   N lines: the source path relative to the tree ("train/NORMAL/x.jpeg"),
//                       in the same order as the arrays (sorted by path: NORMAL first)
// and meta.json: {"format": "pneumo-cache", "format_version": 1, "size", "classes", "splits":
// {split: {"count", "per_class": {class: n}, "images", "labels", "files"}}, "source": {"path",
// "hash", "hash_of", "image_files"}, "skipped": [{"file", "reason"}], "settings", "command",
// "created", "citation"}. Anyone can read it: numpy.load("train_images.npy").
//
// The source hash (image_tree_hash) is FNV-1a 64 over every image file the tree holds, in sorted
// order, of "<relative path>\0<size in bytes>\0<mtime in ns>\0<ctime in ns>\0<inode>\n":
// cheap enough to check on every `pneumo train` (no file is read), and it changes whenever a file
// is added, removed, renamed, rewritten, touched or has its permissions changed, also when its
// old size and modification time are put back (cp -p, rsync -t, touch -r).

struct PrepareOptions {
  std::string data_dir;        // the image tree: {train,val,test}/{NORMAL,PNEUMONIA}/*
  std::string out_dir;         // the cache to write; must not lie inside data_dir
  int size = kDefaultImageSize;
  int threads = 0;             // decoding threads; 0: all hardware threads
  std::string command;         // recorded in meta.json (e.g. the command line), may be empty
  // An image tree's automatic cache (a folder pneumo named under its cache root): replaced even
  // when its meta.json is damaged, as long as it holds a cache's files only. --out's never is.
  bool own_cache_folder = false;
  // Progress line, per-file warnings and the summary go here; nullptr: silent. On a terminal the
  // progress line is redrawn in place (\r); elsewhere a line is printed every ~10%.
  std::ostream* log = &std::cerr;
};

struct SkippedFile {
  std::string file;    // relative to data_dir
  std::string reason;  // "empty file", "truncated JPEG ...", "corrupt JPEG (...)", "image of W x H
                       // pixels is larger than ...", "not a decodable image"
};

struct PrepareReport {
  std::string out_dir;
  int size = 0;
  int threads = 0;
  int64_t images = 0;                      // written, all splits
  std::vector<std::string> splits;         // those written, in order
  std::vector<std::array<int64_t, kClassCount>> counts;  // per written split, per class
  std::vector<SkippedFile> skipped;        // unreadable files, sorted by path
  std::vector<SkippedFile> noted;          // kept, with a warning (decode_square_gray's), by path
  std::string source_hash;
  double seconds = 0.0;                    // listing + decoding + writing
  double images_per_second = 0.0;          // files decoded (written + skipped) per second of
                                           // listing + decoding (writing excluded)
};

// Decodes the tree with OpenCV (8-bit grayscale: 16-bit samples keep their high byte, colour is
// converted with the standard luma weights), squashes every image to size x size with area
// interpolation (no crop), and writes the cache atomically: into a temporary directory beside
// out_dir (made first, so an unwritable output stops it before any decoding), then renamed into
// place (an existing cache at out_dir is swapped out; an existing non-empty directory that is not
// a cache is refused). Nothing is ever written into data_dir. Unreadable files are skipped, each
// named in a warning and in the report: empty, truncated or corrupt JPEGs (their compressed data
// is checked before decoding), images over kMaxImagePixels (from the header), anything OpenCV
// cannot decode. A split folder holding one class folder but not the other stops it, naming the
// missing folder. Without OpenCV (PNEUMO_WITH_OPENCV undefined) it throws a pneumo::Error saying
// to prepare the cache on a machine with OpenCV.
PrepareReport prepare_cache(const PrepareOptions& options);

// Loads every split a cache holds, checking each file against meta.json (shapes, dtypes, counts,
// labels in {0, 1}); errors name the file.
Dataset load_cache(const std::string& cache_dir);

// Holds a meta.json; an image tree (below) only when its meta.json says "format": "pneumo-cache".
bool is_cache_dir(const std::string& path);
// A name an image tree's files are read by: .jpeg .jpg .png .bmp .tif .tiff, any case.
bool has_image_extension(const std::string& name);
// A name starting with a dot (.DS_Store, macOS's ._*.jpeg, .git): nobody's X-ray. Every walk of
// images (prepare's tree, predict's and explain's folders) passes over it in silence.
bool is_hidden_name(const std::string& name);
// One of the files prepare writes (meta.json, <split>_images.npy, ...), in a folder whose meta.json
// says prepare wrote it.
bool is_file_of_a_cache(const std::string& path);
bool is_image_tree(const std::string& path);  // holds at least one {split}/{class} folder

// "fnv1a64:<16 hex digits>" of the tree (see above).
std::string image_tree_hash(const std::string& data_dir);

struct OpenDatasetOptions {
  int size = 0;            // 0: the cache's own size, or 150 for an image tree
  int threads = 0;         // for preparing
  std::string cache_root;  // "" : default_cache_root()
  std::ostream* log = &std::cerr;
};

// Throws pneumo::Error unless PATH is a cache or an image tree (by its folders; nothing is read),
// in open_dataset's words: checked before a run makes its folder, so that a mistyped --data
// leaves nothing behind.
void check_data_path(const std::string& path);

// `pneumo train --data PATH`: a cache is loaded as it is; an image tree is prepared once into
// <cache_root>/<hash of its absolute path and size>/ and that cache is reused while the tree's
// content hash and the size are unchanged (else prepared again, atomically). Never writes next
// to or inside the tree.
Dataset open_dataset(const std::string& path, const OpenDatasetOptions& options = {});

// $PNEUMO_CACHE_DIR if set, else $XDG_CACHE_HOME/pneumo, else $HOME/.cache/pneumo.
std::string default_cache_root();
// <cache_root>/tree-<fnv1a64 of the tree's absolute path>-<size>, e.g.
// ~/.cache/pneumo/tree-3f2a...-150.
std::string default_cache_dir_for(const std::string& tree, int size,
                                  const std::string& cache_root = "");

// ---- Single images (`pneumo predict`) ------------------------------------------------------
// Decodes one image file exactly as prepare_cache does (8-bit grayscale, squashed to size x size
// with area interpolation) into `out` (size*size bytes). Returns "" on success, else why the file
// was refused (missing, not a regular file, empty, truncated or corrupt JPEG, too large, not an
// image). Without OpenCV it throws. `note`, if given, receives a warning about an image decoded but
// likely not as meant (a 16-bit PNG holding unscaled 12-bit data, nearly black), or "".
std::string decode_image_file(const std::string& path, int size, uint8_t* out,
                              std::string* note = nullptr);
// The image files named in `inputs`, and those found under the folders among them (recursively,
// following links to folders, each real folder once; sorted; names starting with a dot, such as
// macOS's ._*.jpeg and __MACOSX's, left out below a folder given, as prepare leaves them out of
// a tree; a hidden file named as an input is read). A missing input throws, naming it, and so do
// inputs that hold no image file. A subfolder that cannot be listed (no permission) is added to
// `unreadable_folders` with the reason, for the caller to warn about and count as skipped.
std::vector<std::string> list_images(const std::vector<std::string>& inputs,
                                     std::vector<SkippedFile>* unreadable_folders = nullptr);
// The real (canonical) folders list_images reads for `inputs`: each folder given and every folder
// below it, links to folders followed. An output written into one of them would be read back as
// input the next time (explain's overlays as X-rays).
std::vector<std::filesystem::path> folders_listed(const std::vector<std::string>& inputs);

// ---- Exploratory report (`pneumo eda`) ------------------------------------------------------
struct EdaOptions {
  std::string data;             // a cache or an image tree (opened with open_dataset)
  std::string out_dir;          // created if needed; must not lie inside the data
  uint64_t seed = 0;            // which images are shown and how they are augmented
  int size = 0;                 // as OpenDatasetOptions::size
  int samples_per_class = 8;    // columns of samples.png
  int augmented_images = 4;     // rows of augmented.png
  int augmented_variants = 7;   // augmented copies per row (after the original)
  AugmentSettings augment;      // the training defaults
  std::string cache_root;       // as OpenDatasetOptions::cache_root
  std::ostream* log = &std::cerr;
};

struct EdaReport {
  std::vector<std::string> files_written;  // absolute paths
};

// Writes into out_dir: counts.json (images per split and class), samples.png (a row of random
// images per class from the first split present, train normally), augmented.png (a few images,
// original then augmented copies by augment_batch_cpu), README.md (what each file shows, and the
// dataset's citation). Prints the class counts to `log`. OpenCV only (PNG writing); without it
// throws a pneumo::Error.
EdaReport run_eda(const EdaOptions& options);

}  // namespace pneumo
