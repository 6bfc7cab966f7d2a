// The tuning cache (see tuning_cache.hpp): keys, lookup with reuse from a larger batch, and the
// file, merged and replaced atomically.
#include "cuda/tuning_cache.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "core/atomic_file.hpp"
#include "pneumo/error.hpp"

namespace pneumo::cuda {

namespace {

constexpr const char* kFormat = "pneumo-tuning-cache";
constexpr int kVersion = 1;

}  // namespace

std::string TuningCache::key_text(const TuningKey& key) {
  std::ostringstream out;
  out << key.op << " ";
  for (size_t i = 0; i < key.shape.size(); ++i) out << (i ? "," : "") << key.shape[i];
  return out.str();
}

bool TuningCache::parse_key(const std::string& text, TuningKey& key) {
  const size_t space = text.rfind(' ');
  if (space == std::string::npos || space == 0 || space + 1 == text.size()) return false;
  TuningKey parsed;
  parsed.op = text.substr(0, space);
  std::istringstream dims(text.substr(space + 1));
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    if (dim.empty() || dim.find_first_not_of("0123456789") != std::string::npos ||
        dim.size() > 12)
      return false;
    parsed.shape.push_back(std::stoll(dim));
  }
  if (parsed.shape.empty() || parsed.shape[0] < 1) return false;
  key = std::move(parsed);
  return true;
}

std::string TuningCache::layer_text(const TuningKey& key) {
  TuningKey rest{key.op, std::vector<int64_t>(key.shape.begin() + 1, key.shape.end())};
  return key_text(rest);
}

nlohmann::json TuningCache::read_file(bool warn) const {
  std::error_code error;
  if (path_.empty() || !std::filesystem::exists(path_, error)) return nlohmann::json::object();
  try {
    const std::vector<uint8_t> bytes = read_file_bytes(path_);
    nlohmann::json file = nlohmann::json::parse(bytes.begin(), bytes.end());
    if (!file.is_object() || file.value("format", "") != kFormat ||
        file.value("version", 0) != kVersion || !file.contains("contexts") ||
        !file["contexts"].is_object())
      throw Error("not a pneumo tuning cache of version " + std::to_string(kVersion));
    return file["contexts"];
  } catch (const std::exception& e) {
    if (warn)
      std::cerr << "pneumo: warning: tuning cache " << path_ << " not used (" << e.what()
                << "); it will be replaced\n";
    return nlohmann::json::object();
  }
}

TuningCache::TuningCache(std::string path, std::string context)
    : path_(std::move(path)), context_(std::move(context)) {
  const nlohmann::json contexts = read_file(true);
  if (!contexts.contains(context_) || !contexts[context_].is_object()) return;
  for (const auto& [text, decision] : contexts[context_].items()) {
    TuningKey key;
    if (!parse_key(text, key) || !decision.is_object()) continue;  // not ours to understand
    layers_[layer_text(key)][key.shape[0]] = decision;
    ++loaded_;
  }
}

TuningCache::Hit TuningCache::find(const TuningKey& key) {
  Hit hit;
  hit.requested = key.shape.empty() ? 0 : key.shape[0];
  const auto layer = key.shape.empty() ? layers_.end() : layers_.find(layer_text(key));
  if (layer != layers_.end()) {
    const auto at = layer->second.lower_bound(hit.requested);  // this batch, or the next larger
    if (at != layer->second.end()) {
      hit.decision = &at->second;
      hit.batch = at->first;
    }
  }
  if (!hit.decision)
    ++misses_;
  else if (hit.exact())
    ++exact_hits_;
  else
    ++larger_batch_hits_;
  return hit;
}

void TuningCache::store(const TuningKey& key, nlohmann::json decision) {
  PNEUMO_CHECK(!key.empty() && !key.shape.empty() && key.shape[0] >= 1,
               "tuning cache: a decision needs an op and a shape with its batch first, got '",
               key_text(key), "'");
  layers_[layer_text(key)][key.shape[0]] = std::move(decision);
  ++stored_;
  dirty_ = true;
}

size_t TuningCache::size() const {
  size_t count = 0;
  for (const auto& [layer, batches] : layers_) count += batches.size();
  return count;
}

nlohmann::json TuningCache::entries_json() const {
  nlohmann::json entries = nlohmann::json::object();
  for (const auto& [layer, batches] : layers_) {
    const size_t space = layer.rfind(' ');
    for (const auto& [batch, decision] : batches) {
      const std::string rest = layer.substr(space + 1);
      entries[layer.substr(0, space) + " " + std::to_string(batch) + (rest.empty() ? "" : ",") +
              rest] = decision;
    }
  }
  return entries;
}

namespace {

// An exclusive advisory lock on `path` + ".lock" while it lives: the ranks of a data-parallel run
// (and runs side by side) save the same file at the same moments, and each one's read, merge and
// replace must not interleave with another's, or one's new entries vanish. Without the lock file
// (a read-only folder: the save fails anyway) the save goes on unlocked.
class FileLock {
 public:
  explicit FileLock(const std::string& path)
      : fd_(::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ >= 0)
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

}  // namespace

bool TuningCache::save() {
  if (path_.empty() || !dirty_) return true;
  try {
    const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    const FileLock lock(path_);
    nlohmann::json contexts = read_file(false);  // what other runs added meanwhile stays
    nlohmann::json& mine = contexts[context_];
    if (!mine.is_object()) mine = nlohmann::json::object();
    const nlohmann::json entries = entries_json();
    for (const auto& [text, decision] : entries.items()) mine[text] = decision;
    const nlohmann::json file = {{"format", kFormat}, {"version", kVersion}, {"contexts", contexts}};
    write_file_atomically(path_, file.dump(1) + "\n");
    dirty_ = false;
    return true;
  } catch (const std::exception& e) {
    if (!save_failed_)
      std::cerr << "pneumo: warning: could not write the tuning cache " << path_ << " ("
                << e.what() << "); the next run will search and time again\n";
    save_failed_ = true;
    return false;
  }
}

std::string TuningCache::state() const {
  if (path_.empty()) return "in memory";
  // Nothing for this context, or nothing of it answered a lookup this run made (other shapes'
  // decisions): every decision was made now.
  const bool none_answered = exact_hits_ + larger_batch_hits_ == 0 && (misses_ > 0 || stored_ > 0);
  if (loaded_ == 0 || none_answered) return "cold";
  return stored_ == 0 && misses_ == 0 ? "warm" : "partly warm";
}

nlohmann::json TuningCache::report() const {
  return {{"path", path_.empty() ? "none (in memory)" : path_},
          {"context", context_},
          {"state", state()},
          {"loaded", loaded_},
          {"exact_hits", exact_hits_},
          {"larger_batch_hits", larger_batch_hits_},
          {"misses", misses_},
          {"stored", stored_}};
}

float number_field(const nlohmann::json& decision, const char* name, float fallback) {
  const auto found = decision.find(name);
  return found != decision.end() && found->is_number() ? found->get<float>() : fallback;
}

std::string text_field(const nlohmann::json& decision, const char* name) {
  const auto found = decision.find(name);
  return found != decision.end() && found->is_string() ? found->get<std::string>() : "";
}

}  // namespace pneumo::cuda
