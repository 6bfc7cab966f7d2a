// `pneumo eda`: what the data looks like and what training sees. Class counts per split (printed
// and counts.json, with patients per split, the ids two splits share and the original images'
// shapes, with a note where they differ by class or split), a grid of random images
// per class (samples.png), a grid of augmented copies made by the CPU twin of the augmentation
// kernel (augmented.png), and a README with the citation.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "../cache_internal.hpp"
#include "core/json_text.hpp"
#include "pneumo/augment.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/random.hpp"
#include "pneumo/sampling.hpp"

namespace fs = std::filesystem;

namespace pneumo {

namespace {

constexpr int kGap = 4;          // pixels between tiles
constexpr int kBandHeight = 22;  // caption band above each row
const cv::Scalar kBackground(40);
const cv::Scalar kText(235);

// A caption set smaller where the canvas is too narrow for it (small images make narrow grids).
void caption(cv::Mat& canvas, int y, const std::string& text) {
  double scale = 0.5;
  int baseline = 0;
  const int width = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &baseline).width;
  const int room = canvas.cols - 2 * kGap;
  if (width > room && width > 0) scale = std::max(0.25, scale * room / width);
  cv::putText(canvas, text, cv::Point(kGap, y + kBandHeight - 7), cv::FONT_HERSHEY_SIMPLEX, scale,
              kText, 1, cv::LINE_AA);
}

void paste(cv::Mat& canvas, int x, int y, const cv::Mat& tile) {
  tile.copyTo(canvas(cv::Rect(x, y, tile.cols, tile.rows)));
}

// A float image in [0, 1] (size, size) as 8-bit.
cv::Mat to_u8(const float* values, int size) {
  cv::Mat tile(size, size, CV_8UC1);
  for (int i = 0; i < size * size; ++i)
    tile.data[i] = static_cast<uint8_t>(std::lround(std::fmin(std::fmax(values[i], 0.0f), 1.0f) * 255.0f));
  return tile;
}

void write_png(const fs::path& path, const cv::Mat& image, EdaReport& report) {
  if (!cv::imwrite(path.string(), image)) throw Error("cannot write " + path.string());
  report.files_written.push_back(path.string());
}

// `count` distinct indices of `split` with label `label`, in a seeded random order.
std::vector<int32_t> pick(const Split& split, int label, int count, RngKey key) {
  std::vector<int32_t> members;
  for (int64_t i = 0; i < split.count(); ++i)
    if (split.labels[static_cast<size_t>(i)] == label) members.push_back(static_cast<int32_t>(i));
  for (size_t i = members.size(); i > 1; --i) {
    const Philox4 bits = philox4x32(key, static_cast<uint32_t>(i - 1));
    std::swap(members[i - 1], members[bits.v[0] % i]);
  }
  if (members.size() > static_cast<size_t>(count)) members.resize(static_cast<size_t>(count));
  return members;
}

// ---- Original sizes ----------------------------------------------------------------------------
// A dataset's images are squashed to a square; if one class's originals are wider than the
// other's, the squashed anatomy tells the classes apart (docs/generalisation.md). So: each split
// and class's width/height, read from the files' headers in the tree the cache was made from.

struct ShapeSummary {
  int64_t read = 0, unreadable = 0;
  // A size at least a quarter of 20 or more images share, e.g. a resize to 224 x 224
  // done before the data reached us: its images say nothing of their original shape.
  int64_t common_width = 0, common_height = 0, common_count = 0;
  std::vector<double> others;  // width/height of the images not of that size, sorted
  std::vector<double> all;     // width/height of every image read, sorted
};

// Linear interpolation between order statistics (numpy's default); `sorted` must not be empty.
double quantile(const std::vector<double>& sorted, double q) {
  const double at = q * static_cast<double>(sorted.size() - 1);
  const size_t low = static_cast<size_t>(std::floor(at));
  if (low + 1 >= sorted.size()) return sorted.back();
  return sorted[low] + (at - static_cast<double>(low)) * (sorted[low + 1] - sorted[low]);
}

bool read_header(const fs::path& file, data_internal::ImageHeader& header) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return false;
  constexpr std::streamsize kFirst = 1 << 16;  // the header lies here unless metadata precedes it
  std::vector<uint8_t> bytes(static_cast<size_t>(kFirst));
  in.read(reinterpret_cast<char*>(bytes.data()), kFirst);
  bytes.resize(static_cast<size_t>(in.gcount()));
  if (data_internal::read_image_header(bytes, header)) return true;
  if (static_cast<std::streamsize>(bytes.size()) < kFirst) return false;  // that was all of it
  return data_internal::read_image_bytes(file.string(), bytes).empty() &&
         data_internal::read_image_header(bytes, header);
}

ShapeSummary summarise_shapes(const Split& split, int label, const fs::path& tree) {
  ShapeSummary s;
  std::map<std::pair<int64_t, int64_t>, int64_t> sizes;
  std::vector<std::pair<int64_t, int64_t>> read;
  for (int64_t i = 0; i < split.count(); ++i) {
    if (split.labels[static_cast<size_t>(i)] != label) continue;
    data_internal::ImageHeader header;
    if (!read_header(tree / split.files[static_cast<size_t>(i)], header) || header.width <= 0 ||
        header.height <= 0) {
      ++s.unreadable;
      continue;
    }
    read.emplace_back(header.width, header.height);
    ++sizes[read.back()];
  }
  s.read = static_cast<int64_t>(read.size());
  for (const auto& [size, count] : sizes)
    if (s.read >= 20 && 4 * count >= s.read && count > s.common_count) {
      s.common_width = size.first;
      s.common_height = size.second;
      s.common_count = count;
    }
  for (const auto& [width, height] : read) {
    const double shape = static_cast<double>(width) / static_cast<double>(height);
    s.all.push_back(shape);
    if (s.common_count == 0 || width != s.common_width || height != s.common_height)
      s.others.push_back(shape);
  }
  std::sort(s.others.begin(), s.others.end());
  std::sort(s.all.begin(), s.all.end());
  return s;
}

// The table, counts.json's "original_sizes", and a note wherever the shapes differ by class
// within a split, or by split within a class, by more than 10% (medians over at least 5 images).
nlohmann::json original_sizes(const Dataset& dataset, std::ostringstream& table) {
  const std::string tree = dataset.tree_dir.empty() ? dataset.source_dir : dataset.tree_dir;
  std::error_code error;
  if (tree.empty() || !fs::is_directory(tree, error)) {
    table << "\noriginal sizes: not read (the image tree "
          << (tree.empty() ? std::string("is not recorded in the cache") : tree + " is not there")
          << ")\n";
    return {{"source", tree}, {"read", false}};
  }
  nlohmann::json out = {{"source", tree}, {"read", true}};
  if (!dataset.tree_dir.empty() || dataset.source_hash.empty()) {
    out["tree_changed_since_cache"] = nullptr;  // given as a tree, or no hash recorded
  } else {
    bool changed = true;
    try {
      changed = image_tree_hash(tree) != dataset.source_hash;
    } catch (const Error&) {
    }
    out["tree_changed_since_cache"] = changed;
  }
  std::map<std::pair<std::string, int>, ShapeSummary> all;
  table << "\noriginal sizes (from the file headers in " << tree;
  if (out["tree_changed_since_cache"] == true)
    table << "; its files' hash is not the one the cache recorded (files added, removed, "
             "rewritten or touched since, or the tree copied): sizes of the files as they are now";
  table << "):\n"
        << "split    class       images  one size shared by many   the others' width/height "
           "(quartiles)\n";
  for (const Split& split : dataset.splits)
    for (int c = 0; c < kClassCount; ++c) {
      const ShapeSummary s = summarise_shapes(split, c, tree);
      all[{split.name, c}] = s;
      nlohmann::json entry = {{"images", s.read}, {"unreadable", s.unreadable},
                              {"others", s.others.size()}};
      std::ostringstream shared, spread;
      if (s.common_count > 0) {
        entry["common_size"] = {s.common_width, s.common_height};
        entry["common_count"] = s.common_count;
        shared << s.common_count << " at " << s.common_width << " x " << s.common_height;
      } else {
        shared << "-";
      }
      if (!s.others.empty()) {
        const double q[3] = {quantile(s.others, 0.25), quantile(s.others, 0.5),
                             quantile(s.others, 0.75)};
        entry["width_over_height_quartiles"] = {q[0], q[1], q[2]};
        spread << s.others.size() << ": " << std::fixed << std::setprecision(3) << q[0] << "  "
               << q[1] << "  " << q[2];
      } else {
        spread << "-";
      }
      out[split.name][kClassNames[c]] = entry;
      table << std::left << std::setw(9) << split.name << std::setw(10) << kClassNames[c]
            << std::right << std::setw(8) << s.read << "  " << std::left << std::setw(26)
            << shared.str() << spread.str() << std::right;
      if (s.unreadable > 0) table << "  (" << s.unreadable << " unreadable)";
      table << "\n";
    }
  // `wider(true)` starts the note when a's median is the larger, `wider(false)` otherwise. The
  // medians of the images not of a shared size when both have 5 or more (a resize before the
  // data reached us hides the originals' shapes); else of all images (a class all of one size,
  // another of another, is the plainest cue of all).
  int notes = 0;
  const auto note = [&](const ShapeSummary& a, const ShapeSummary& b,
                        const std::function<std::string(bool)>& wider) {
    const bool others = a.others.size() >= 5 && b.others.size() >= 5;
    const std::vector<double>&sa = others ? a.others : a.all, &sb = others ? b.others : b.all;
    if (sa.size() < 5 || sb.size() < 5) return;
    const double ma = quantile(sa, 0.5), mb = quantile(sb, 0.5);
    if (std::max(ma, mb) <= 1.1 * std::min(ma, mb)) return;
    table << "note: " << wider(ma > mb) << " (median width/height " << std::fixed
          << std::setprecision(2) << std::max(ma, mb) << " against " << std::min(ma, mb)
          << (others ? ", images not of a shared size" : ", all images") << ")\n";
    ++notes;
  };
  for (const Split& split : dataset.splits)
    note(all[{split.name, 1}], all[{split.name, 0}], [&](bool pneumonia_wider) {
      return "in " + split.name + ", " + (pneumonia_wider ? "PNEUMONIA" : "NORMAL") +
             " images are wider than " + (pneumonia_wider ? "NORMAL" : "PNEUMONIA") + " ones";
    });
  for (int c = 0; c < kClassCount; ++c)
    for (size_t i = 0; i < dataset.splits.size(); ++i)
      for (size_t j = i + 1; j < dataset.splits.size(); ++j) {
        const std::string &a = dataset.splits[i].name, &b = dataset.splits[j].name;
        note(all[{a, c}], all[{b, c}], [&](bool a_wider) {
          return std::string(kClassNames[c]) + " images are wider in " + (a_wider ? a : b) +
                 " than in " + (a_wider ? b : a);
        });
      }
  if (notes > 0)
    table << "Squashed to a square, images of "
             "different shapes have their anatomy compressed differently: between classes a cue "
             "a model can learn in place of the disease, between splits a shift that validation "
             "may not show (docs/generalisation.md: train --aspect, evaluate --stress)\n";
  out["notes"] = notes;
  return out;
}

}  // namespace

EdaReport run_eda(const EdaOptions& options) {
  PNEUMO_CHECK(!options.out_dir.empty(), "eda: an output directory is needed");
  PNEUMO_CHECK(options.samples_per_class > 0 && options.augmented_images > 0 &&
                   options.augmented_variants > 0,
               "eda: samples_per_class, augmented_images and augmented_variants must be positive");
  const fs::path out = data_internal::resolved(options.out_dir);
  if (data_internal::is_same_or_inside(out, data_internal::resolved(options.data)))
    throw Error("eda: the output " + out.string() + " lies inside the data " + options.data +
                "; nothing is written there: choose another --out");
  // Its four files would replace any of the same name (a project's README.md, say).
  std::error_code status;
  if (fs::exists(out, status) && (!fs::is_directory(out, status) || !fs::is_empty(out, status)))
    throw Error("eda: the output " + out.string() +
                (fs::is_directory(out, status) ? " already holds files" : " is a file") +
                "; counts.json, samples.png, augmented.png and README.md go into a new or empty "
                "folder: choose another --out");

  // Made (and tried for writing) before the data is read: an --out that cannot be written is
  // said at once, not after decoding a whole tree. A folder made here goes again when the data
  // then cannot be read.
  std::error_code ec;
  // A link to nowhere is there, not a folder to make (it was counted as made, and removed).
  if (const std::string nowhere = why_a_link_leads_nowhere(out.string()); !nowhere.empty())
    throw Error("eda: the output " + out.string() + " " + nowhere + "; choose another --out");
  // The outermost folder this call makes (the others lie in it), removed again on failure.
  fs::path made;
  // (Only what certainly is not there, links included: a folder that cannot be looked at, or a
  // link to nowhere on the way, is never counted.)
  for (fs::path p = out; !p.empty(); p = p.parent_path()) {
    // (libstdc++ sets `ec` for a path that is not there too: the type says which it is.)
    if (fs::symlink_status(p, ec).type() != fs::file_type::not_found) break;
    made = p;
    if (p == p.parent_path()) break;
  }
  const auto unmake = [&] {
    std::error_code ignored;  // the reason kept for the message is the failure's, not this one's
    if (!made.empty()) fs::remove_all(made, ignored);
  };
  fs::create_directories(out, ec);
  if (ec) {
    const std::string why = ec.message();
    unmake();
    throw Error("eda: cannot create " + out.string() + ": " + why);
  }
  const fs::path probe = out / ".write-test";
  if (!std::ofstream(probe)) {
    unmake();
    throw Error("eda: cannot write into " + out.string() + ": choose another --out");
  }
  fs::remove(probe, ec);

  OpenDatasetOptions open;
  open.size = options.size;
  open.cache_root = options.cache_root;
  open.log = options.log;
  const Dataset dataset = [&] {
    try {
      return open_dataset(options.data, open);
    } catch (...) {
      unmake();
      throw;
    }
  }();
  const int size = dataset.size;
  EdaReport report;

  // ---- Counts --------------------------------------------------------------------------------
  nlohmann::json counts = nlohmann::json::object();
  std::ostringstream table;
  table << "split      NORMAL  PNEUMONIA   total  PNEUMONIA:NORMAL\n";
  for (const Split& split : dataset.splits) {
    const auto c = split.class_counts();
    counts[split.name] = {{"NORMAL", c[0]}, {"PNEUMONIA", c[1]}, {"total", split.count()}};
    table << std::left << std::setw(8) << split.name << std::right << std::setw(9) << c[0]
          << std::setw(11) << c[1] << std::setw(8) << split.count() << std::setw(12);
    if (c[0] > 0)
      table << std::fixed << std::setprecision(2) << static_cast<double>(c[1]) / c[0] << "\n";
    else
      table << "-" << "\n";
  }
  // Patients by file name (patient_id, the grouping of the carved validation split), and the ids
  // two splits share: in this dataset a split may number its patients on its own, so a shared id
  // says the names collide, not that a child is in both.
  nlohmann::json patients = nlohmann::json::object(), shared = nlohmann::json::array();
  table << "\npatients (ids from file names):";
  for (const Split& split : dataset.splits) {
    patients[split.name] = count_patients(split.files);
    table << " " << split.name << " " << patients[split.name].get<int64_t>();
  }
  table << "\n";
  for (size_t i = 0; i < dataset.splits.size(); ++i)
    for (size_t j = i + 1; j < dataset.splits.size(); ++j) {
      const Split &a = dataset.splits[i], &b = dataset.splits[j];
      const SharedPatients both = shared_patients(a.files, b.files);
      shared.push_back({{"splits", {a.name, b.name}},
                        {"ids", both.patients},
                        {"images", {{a.name, both.files_a}, {b.name, both.files_b}}}});
      table << "ids in both " << a.name << " and " << b.name << ": " << both.patients;
      if (both.patients > 0)
        table << " (" << both.files_a << " " << a.name << " and " << both.files_b << " " << b.name
              << " images; a split may number its ids on its own)";
      table << "\n";
    }
  const nlohmann::json shapes = original_sizes(dataset, table);
  {
    const fs::path path = out / "counts.json";
    std::ofstream file(path);
    file << json_text({{"source", dataset.cache_dir},
                       {"size", size},
                       {"splits", counts},
                       {"patients", patients},
                       {"shared_patient_ids", shared},
                       {"original_sizes", shapes}},
                      2)
         << "\n";
    if (!file) throw Error("cannot write " + path.string());
    report.files_written.push_back(path.string());
  }
  if (options.log) *options.log << table.str() << std::flush;

  // ---- Samples per class ---------------------------------------------------------------------
  const Split& shown = dataset.splits.front();
  const int columns = options.samples_per_class;
  const int tile = size + kGap;
  cv::Mat samples(kClassCount * (kBandHeight + tile) + kGap, columns * tile + kGap, CV_8UC1,
                  kBackground);
  for (int c = 0; c < kClassCount; ++c) {
    const int y = c * (kBandHeight + tile);
    const auto chosen = pick(shown, c, columns, make_key(options.seed, RngStream::kShuffle, 0, 1000u + c));
    caption(samples, y, std::string(kClassNames[c]) + " (" + shown.name + ", " +
                            std::to_string(shown.class_counts()[static_cast<size_t>(c)]) +
                            " images)");
    for (size_t k = 0; k < chosen.size(); ++k) {
      const cv::Mat image(size, size, CV_8UC1, const_cast<uint8_t*>(shown.image(chosen[k])));
      paste(samples, kGap + static_cast<int>(k) * tile, y + kBandHeight, image);
    }
  }
  write_png(out / "samples.png", samples, report);

  // ---- Augmented copies ------------------------------------------------------------------------
  // Rows alternate NORMAL and PNEUMONIA; column 0 is the plain image, the rest are augmented
  // copies (one batch per row: slot k draws its own parameters).
  const int rows = options.augmented_images;
  const int variants = options.augmented_variants;
  std::vector<int32_t> row_image;
  {
    const auto normal = pick(shown, 0, rows, make_key(options.seed, RngStream::kShuffle, 0, 2000));
    const auto pneumonia = pick(shown, 1, rows, make_key(options.seed, RngStream::kShuffle, 0, 2001));
    for (int r = 0; r < rows; ++r) {
      const auto& from = r % 2 == 0 ? normal : pneumonia;
      if (static_cast<size_t>(r / 2) < from.size()) row_image.push_back(from[static_cast<size_t>(r / 2)]);
    }
  }
  cv::Mat augmented(kBandHeight + static_cast<int>(row_image.size()) * tile + kGap,
                    (1 + variants) * tile + kGap, CV_8UC1, kBackground);
  std::ostringstream header;
  header << "original | augmented: rotation +-" << options.augment.rotation_degrees << " deg, zoom +-"
         << options.augment.zoom * 100 << "%, shift +-" << options.augment.shift * 100 << "%"
         << (options.augment.horizontal_flip ? ", flip" : "");
  caption(augmented, 0, header.str());
  std::vector<float> batch(static_cast<size_t>(1 + variants) * size * size);
  for (size_t r = 0; r < row_image.size(); ++r) {
    std::vector<int32_t> indices(static_cast<size_t>(1 + variants), row_image[r]);
    AugmentSettings plain = options.augment;
    plain.enabled = false;
    augment_batch_cpu(shown.images.data(), shown.count(), size, indices.data(), 1, plain, {},
                      batch.data());
    const RngKey key = make_key(options.seed, RngStream::kAugment, 0, static_cast<uint32_t>(r));
    augment_batch_cpu(shown.images.data(), shown.count(), size, indices.data() + 1, variants,
                      options.augment, key, batch.data() + static_cast<size_t>(size) * size);
    const int y = kBandHeight + static_cast<int>(r) * tile;
    for (int k = 0; k <= variants; ++k)
      paste(augmented, kGap + k * tile, y,
            to_u8(batch.data() + static_cast<size_t>(k) * size * size, size));
  }
  write_png(out / "augmented.png", augmented, report);

  // ---- README with the citation -------------------------------------------------------------------
  {
    const fs::path path = out / "README.md";
    std::ofstream file(path);
    file << "# Exploratory look at the data\n\n"
         << "Made by `pneumo eda` from " << options.data;
    if (dataset.cache_dir != options.data) file << " (through its cache " << dataset.cache_dir << ")";
    file << ": images " << size << "x" << size << ", seed " << options.seed << ".\n\n"
         << "- `counts.json`: images per split and class, patients per split (ids from the file "
         << "names), the ids two splits share, and the original images' sizes (from their "
         << "headers: a size many share, and the others' width/height quartiles).\n"
         << "- `samples.png`: random " << shown.name << " images, one row per class.\n"
         << "- `augmented.png`: a few " << shown.name << " images, rows alternating NORMAL and "
         << "PNEUMONIA; first column as stored, then "
         << "augmented copies exactly as training sees them (the CPU twin of the augmentation "
         << "kernel, " << header.str().substr(header.str().find(':') + 2) << ").\n\n"
         << "```\n" << table.str() << "```\n\n"
         << "## Dataset\n\n" << dataset_credit() << "\n";
    if (!file) throw Error("cannot write " + path.string());
    report.files_written.push_back(path.string());
  }
  if (options.log) {
    *options.log << "eda: wrote";
    for (const std::string& f : report.files_written) *options.log << " " << f;
    *options.log << "\n" << std::flush;
  }
  return report;
}

}  // namespace pneumo
