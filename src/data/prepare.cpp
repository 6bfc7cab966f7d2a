// `pneumo prepare`: decodes an image tree once, in parallel, into the NumPy cache of docs/conventions.md
// (layout in include/pneumo/data.hpp), with a progress line, per-file warnings for unreadable
// images, and an atomic install. The OpenCV part is opencv/decode.cpp.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "cache_internal.hpp"
#include "core/json_text.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/npy.hpp"
#include "pneumo/progress_line.hpp"

namespace fs = std::filesystem;

namespace pneumo {

#ifndef PNEUMO_WITH_OPENCV

PrepareReport prepare_cache(const PrepareOptions& options) {
  throw Error("cannot prepare a cache from the image tree " + options.data_dir +
              ": this build of pneumo has no OpenCV to decode images. Prepare the cache on a "
              "machine with OpenCV (`pneumo prepare --data " + options.data_dir +
              " --out CACHE`), copy CACHE here and pass it to --data");
}

#else

namespace {

using Clock = std::chrono::steady_clock;
using data_internal::TreeFile;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  ::gmtime_r(&now, &parts);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return buffer;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.flush();
  if (!out) throw Error("cannot write " + path.string());
}

}  // namespace

PrepareReport prepare_cache(const PrepareOptions& options) {
  const Clock::time_point start = Clock::now();
  PNEUMO_CHECK(options.size > 0 && options.size <= 8192, "prepare: image size ", options.size,
               " is outside [1, 8192]");
  PNEUMO_CHECK(options.threads >= 0, "prepare: thread count ", options.threads, " is negative");
  PNEUMO_CHECK(!options.data_dir.empty() && !options.out_dir.empty(),
               "prepare: both the data directory and the output directory are needed");
  std::error_code ec;
  if (const std::string why = why_not_there(options.data_dir, /*want_folder=*/true); !why.empty())
    throw Error("prepare: the data directory " + options.data_dir + " " + why);
  const fs::path data_dir = data_internal::resolved(options.data_dir);
  const fs::path out_dir = data_internal::resolved(options.out_dir);
  if (data_internal::is_same_or_inside(out_dir, data_dir))
    throw Error("prepare: the output " + out_dir.string() + " lies inside the data directory " +
                data_dir.string() + "; nothing may be written there: choose another --out");
  // Replacing the output deletes what it holds: the images themselves, were they inside it.
  if (data_internal::is_same_or_inside(data_dir, out_dir))
    throw Error("prepare: the data directory " + data_dir.string() + " lies inside the output " +
                out_dir.string() + ", which a cache would replace: choose an --out outside it");
  data_internal::check_replaceable_output(out_dir, "prepare: the output", options.own_cache_folder);
  // A cache already there is replaced (it can be prepared again); what it held is said.
  std::string replaced;
  if (fs::is_regular_file(out_dir / "meta.json", ec)) {
    try {
      const int size = data_internal::read_meta(out_dir).value("size", 0);
      replaced = detail::concat("a cache of ", size, "x", size, " images");
    } catch (const std::exception&) {
      replaced = "a cache whose meta.json could not be read";
    }
  }

  // The temporary directory comes first: an unwritable output stops the run before any decoding.
  const fs::path temp = data_internal::make_temp_dir_beside(out_dir);
  data_internal::TempDirGuard guard(temp);

  std::vector<SkippedFile> unlisted;  // names that are no regular file: skipped with a reason
  const std::vector<TreeFile> files = data_internal::list_image_tree(data_dir.string(), &unlisted);
  const std::string source_hash = data_internal::hash_tree(files);
  const int64_t total = static_cast<int64_t>(files.size());
  if (total == 0)
    throw Error("prepare: no image file (.jpeg .jpg .png .bmp .tif .tiff) under " +
                data_dir.string() + "/{train,val,test}/{NORMAL,PNEUMONIA}/");
  const size_t pixels = static_cast<size_t>(options.size) * static_cast<size_t>(options.size);

  // Each split decodes straight into its own buffer (one slot per listed file); slots of
  // skipped files are squeezed out afterwards, so memory stays one copy of the images.
  std::array<std::vector<uint8_t>, 3> split_images;
  std::vector<size_t> slot_in_split(files.size());
  std::array<size_t, 3> split_files{};
  for (size_t i = 0; i < files.size(); ++i)
    slot_in_split[i] = split_files[static_cast<size_t>(files[i].split)]++;
  for (size_t s = 0; s < 3; ++s) split_images[s].resize(split_files[s] * pixels);
  std::vector<std::string> failure(files.size());
  std::vector<std::string> noted(files.size());  // kept, with a warning

  int threads = options.threads > 0 ? options.threads
                                    : static_cast<int>(std::thread::hardware_concurrency());
  threads = static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(total, 1)));
  std::atomic<int64_t> next{0}, done{0};
  auto worker = [&] {
    std::vector<uint8_t> encoded;
    for (int64_t i; (i = next.fetch_add(1)) < total;) {
      const TreeFile& f = files[static_cast<size_t>(i)];
      std::string& why = failure[static_cast<size_t>(i)];
      std::string& warning = noted[static_cast<size_t>(i)];
      try {
        if (f.relative.find_first_of("\r\n") != std::string::npos)
          why = "file name holds a line break";
        else
          why = data_internal::read_image_bytes((data_dir / f.relative).string(), encoded);
        if (why.empty())
          why = data_internal::decode_square_gray(
              encoded, options.size,
              split_images[static_cast<size_t>(f.split)].data() + slot_in_split[static_cast<size_t>(i)] * pixels,
              &warning);
      } catch (const std::exception& e) {
        why = std::string("decoder error: ") + e.what();
      }
      done.fetch_add(1);
    }
  };
  // Redrawn in place on a terminal, a line at each tenth otherwise (pneumo/progress_line.hpp).
  std::optional<TaskProgress> progress;
  if (options.log)
    progress.emplace(*options.log, "prepare: decoding", total,
                     options.log == &std::cerr ? progress_options_for(stderr) : ProgressOptions{});
  {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
    // Poll often: a tiny tree finishes in milliseconds (the line itself is drawn at most 10 times
    // a second, or at each tenth).
    // The temporary folder's time is kept fresh while it fills: a folder an hour old whose
    // process is gone is another prepare's to remove (data_internal::make_temp_dir_beside).
    Clock::time_point touched = Clock::now();
    while (done.load() < total) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (progress) progress->update(done.load());
      if (Clock::now() - touched > std::chrono::minutes(1)) {
        std::error_code ignored;
        fs::last_write_time(temp, fs::file_time_type::clock::now(), ignored);
        touched = Clock::now();
      }
    }
    for (std::thread& t : pool) t.join();
  }
  if (progress) {
    progress->update(done.load());
    progress->finish();
  }
  const double decode_seconds = seconds_since(start);

  PrepareReport report;
  report.out_dir = out_dir.string();
  report.size = options.size;
  report.threads = threads;
  report.source_hash = source_hash;

  report.skipped = unlisted;
  // Squeeze out skipped files, split by split, keeping the sorted order.
  std::array<std::vector<uint8_t>, 3> split_labels;
  std::array<std::vector<std::string>, 3> split_names;
  std::array<size_t, 3> kept{};
  for (size_t i = 0; i < files.size(); ++i) {
    const TreeFile& f = files[i];
    const size_t s = static_cast<size_t>(f.split);
    if (!failure[i].empty()) {
      report.skipped.push_back({f.relative, failure[i]});
      continue;
    }
    if (!noted[i].empty()) report.noted.push_back({f.relative, noted[i]});
    if (kept[s] != slot_in_split[i])
      std::copy_n(split_images[s].data() + slot_in_split[i] * pixels, pixels,
                  split_images[s].data() + kept[s] * pixels);
    ++kept[s];
    split_labels[s].push_back(static_cast<uint8_t>(f.label));
    split_names[s].push_back(f.relative);
  }
  // By path, as data.hpp promises: the unlisted entries (broken links, FIFOs) came first.
  std::sort(report.skipped.begin(), report.skipped.end(),
            [](const SkippedFile& a, const SkippedFile& b) { return a.file < b.file; });
  // Not one image decoded: a cache of none would be written, and status 0 given, for a `train`
  // to refuse later. Nothing is written (the temporary folder goes with the guard).
  if (kept[0] + kept[1] + kept[2] == 0)
    throw Error(detail::concat("prepare: none of the ", report.skipped.size(), " image file",
                               report.skipped.size() == 1 ? "" : "s", " under ", data_dir.string(),
                               " could be read (", detail::one_line(report.skipped[0].file), ": ",
                               report.skipped[0].reason, report.skipped.size() > 1 ? "; ..." : "",
                               "); nothing was written"));

  // Write everything into the temporary directory beside the output, then rename it into place.
  nlohmann::json meta;
  meta["format"] = "pneumo-cache";
  meta["format_version"] = kCacheFormatVersion;
  meta["size"] = options.size;
  meta["layout"] = "images uint8 (N, size, size) C order; labels uint8 (N); files: one path a line";
  meta["classes"] = std::vector<std::string>(std::begin(kClassNames), std::end(kClassNames));
  meta["splits"] = nlohmann::json::object();
  for (size_t s = 0; s < 3; ++s) {
    if (split_files[s] == 0) continue;  // no folder or no image file: the split is absent
    const std::string name = kSplitNames[s];
    split_images[s].resize(kept[s] * pixels);
    const int64_t count = static_cast<int64_t>(kept[s]);
    write_npy((temp / (name + "_images.npy")).string(), NpyType::UInt8,
              {count, options.size, options.size}, split_images[s].data());
    write_npy((temp / (name + "_labels.npy")).string(), NpyType::UInt8, {count},
              split_labels[s].data());
    std::string list;
    for (const std::string& n : split_names[s]) list += n + "\n";
    write_text(temp / (name + "_files.txt"), list);
    std::array<int64_t, kClassCount> counts{};
    for (uint8_t l : split_labels[s]) ++counts[l];
    meta["splits"][name] = {{"count", count},
                            {"per_class", {{kClassNames[0], counts[0]}, {kClassNames[1], counts[1]}}},
                            {"images", name + "_images.npy"},
                            {"labels", name + "_labels.npy"},
                            {"files", name + "_files.txt"}};
    report.splits.push_back(name);
    report.counts.push_back(counts);
    report.images += count;
    split_images[s] = {};  // free as we go
  }
  meta["source"] = {{"path", data_dir.string()},
                    {"hash", source_hash},
                    {"hash_of", "FNV-1a 64 over sorted image files: relative path, size in bytes, "
                                "mtime in ns, ctime in ns, inode"},
                    {"image_files", total}};
  meta["skipped"] = nlohmann::json::array();
  for (const SkippedFile& f : report.skipped)
    meta["skipped"].push_back({{"file", f.file}, {"reason", f.reason}});
  meta["settings"] = {{"decoder", data_internal::decoder_description()},
                      {"threads", threads}};
  meta["command"] = options.command;
  meta["created"] = utc_now();
  meta["citation"] = kDatasetCitation;
  write_text(temp / "meta.json", json_text(meta, 2) + "\n");

  data_internal::install_directory(temp, out_dir, options.own_cache_folder);
  guard.release();

  report.seconds = seconds_since(start);
  report.images_per_second =
      decode_seconds > 0 ? static_cast<double>(total) / decode_seconds : 0.0;

  if (options.log) {
    std::ostringstream log;  // formatted here so the caller's stream keeps its own settings
    if (!replaced.empty())
      log << "prepare: replaced " << replaced << " in " << out_dir.string() << "\n";
    for (const SkippedFile& f : report.skipped)
      log << "prepare: warning: skipped " << detail::one_line(f.file) << ": " << f.reason << "\n";
    for (const SkippedFile& f : report.noted)
      log << "prepare: warning: kept " << detail::one_line(f.file) << ", but: " << f.reason << "\n";
    // Only the files directly in each class folder are read (predict and explain recurse): a
    // folder inside one would otherwise vanish from the data without a word.
    // So are other folders beside the splits (a "validation/") or beside the classes (a third
    // class, "COVID/"), and files there: named, so that no image is left out without a word.
    const auto known = [](const std::string& name, const auto& names) {
      return std::find(std::begin(names), std::end(names), name) != std::end(names);
    };
    const auto warn_unread = [&](const fs::path& entry, bool folder, const std::string& read) {
      log << "prepare: warning: ignored the " << (folder ? "folder " : "file ")
          << detail::one_line(entry.string())
          << ": only " << read << " are read\n";
    };
    std::error_code ec;
    for (fs::directory_iterator it(data_dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!is_hidden_name(name) && it->is_directory(ec) && !known(name, kSplitNames))
        warn_unread(it->path(), true, "train/, val/ and test/");
    }
    for (const char* split : kSplitNames) {
      for (fs::directory_iterator it(data_dir / split, ec), end; !ec && it != end;
           it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!is_hidden_name(name) && !known(name, kClassNames))
          warn_unread(it->path(), it->is_directory(ec),
                      std::string("the folders NORMAL/ and PNEUMONIA/ in ") + split + "/");
      }
      // In a class folder: folders, and files without an image's name (a scan.dcm, notes.txt).
      for (const char* label : kClassNames)
        for (fs::directory_iterator it(data_dir / split / label, ec), end; !ec && it != end;
             it.increment(ec)) {
          const std::string name = it->path().filename().string();
          if (is_hidden_name(name)) continue;
          if (it->is_directory(ec))
            warn_unread(it->path(), true,
                        std::string("the image files directly in ") + split + "/" + label + "/");
          else if (!has_image_extension(name))
            warn_unread(it->path(), false,
                        std::string("files named *.jpeg, *.jpg, *.png, *.bmp, *.tif or *.tiff ") +
                            "in " + split + "/" + label + "/");
        }
      ec.clear();
    }
    log << "prepare: wrote " << report.images << " images of " << options.size << "x"
        << options.size << " to " << report.out_dir << " (";
    for (size_t k = 0; k < report.splits.size(); ++k)
      log << (k ? ", " : "") << report.splits[k] << " " << report.counts[k][0] << " NORMAL + "
          << report.counts[k][1] << " PNEUMONIA";
    // Written + skipped = every entry looked at; links and FIFOs are skipped before decoding, so
    // the files decoded are fewer.
    log << ")\n"
        << "prepare: " << report.images << " images written; skipped " << report.skipped.size()
        << " unreadable file" << (report.skipped.size() == 1 ? "" : "s") << "; decoding "
        << total << " file" << (total == 1 ? "" : "s") << " took " << std::fixed
        << std::setprecision(1) << decode_seconds << " s (" << std::setprecision(0)
        << report.images_per_second << " files/s on " << threads << " thread"
        << (threads == 1 ? "" : "s") << ")\n";
    *options.log << log.str() << std::flush;
  }
  return report;
}

#endif  // PNEUMO_WITH_OPENCV

}  // namespace pneumo
