// The CUDA backend's decisions, remembered across runs: which of cuDNN and our kernel runs an op
// at a shape (the Chooser's timing) and which algorithm cuDNN runs a convolution direction with
// (its search), stored per context (GPU, driver, cuDNN, precision, determinism, pneumo release)
// in one JSON file, so that a second run makes no search and no timing on the shapes the first
// saw, and runs the same algorithms (with --deterministic, the same bits).
//
// A shape not seen yet reuses the decision of the same op and layer at the nearest larger batch
// (the last partial batch of an epoch, validation's batches): what was fastest at 32 images is
// taken for 26 rather than timed again. The caller checks that a reused algorithm still applies
// (its workspace at the new shape).
//
// Plain host code (no CUDA calls), so its tests run on any machine. File layout:
//   {"format": "pneumo-tuning-cache", "version": 1,
//    "contexts": {"<context>": {"<op> <N>,<C>,<H>,<W>[,<K>]": {decision...}, ...}, ...}}
// A missing file is an empty cache; one that cannot be read as that layout is reported once on
// stderr and replaced at the next save. Saving merges with what the file holds by then (another
// run may have added shapes) and replaces it atomically; a cache that cannot be written is a
// warning, never a failed run.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pneumo::cuda {

// An op at one input shape (batch first).
struct TuningKey {
  std::string op;
  std::vector<int64_t> shape;
  bool empty() const { return op.empty(); }
};

class TuningCache {
 public:
  TuningCache() = default;  // in memory only: nothing read or written
  // Reads the decisions `path` holds for `context` (empty path: in memory only).
  TuningCache(std::string path, std::string context);

  struct Hit {
    const nlohmann::json* decision = nullptr;  // null: nothing known for this op and layer
    int64_t batch = 0;                         // the batch it was decided at
    int64_t requested = 0;                     // the batch asked about
    bool exact() const { return decision != nullptr && batch == requested; }
  };
  // The decision for `key` itself, else for the same op and the rest of the shape at the
  // smallest larger batch; counted in report().
  Hit find(const TuningKey& key);
  // Records a decision made now (replacing any for the same key); written at the next save().
  void store(const TuningKey& key, nlohmann::json decision);
  // Writes the file when something was stored since the last save; false (and one warning on
  // stderr) when it cannot. In memory only: does nothing, true.
  bool save();

  const std::string& path() const { return path_; }
  const std::string& context() const { return context_; }
  size_t size() const;
  // How much of this run's deciding the file spared it, for clocks that say what they include:
  // "in memory" (no file: every decision made in this run), "cold" (the file held nothing for
  // this context, or nothing that answered one of this run's lookups), "warm" (every lookup
  // answered by it, nothing decided now), "partly warm".
  std::string state() const;
  // path, context, state, entries loaded, hits (exact, from a larger batch), decisions stored.
  nlohmann::json report() const;

  // "conv2d_forward 32,1,150,150,32"; parse_key is its inverse (false when `text` is not one).
  static std::string key_text(const TuningKey& key);
  static bool parse_key(const std::string& text, TuningKey& key);

 private:
  // op and shape without the batch -> batch -> decision
  using Layers = std::map<std::string, std::map<int64_t, nlohmann::json>>;
  static std::string layer_text(const TuningKey& key);
  // The file's object for every context, or empty when missing or unreadable (`warn`: say so).
  nlohmann::json read_file(bool warn) const;
  nlohmann::json entries_json() const;

  std::string path_, context_;
  Layers layers_;
  size_t loaded_ = 0, exact_hits_ = 0, larger_batch_hits_ = 0, misses_ = 0, stored_ = 0;
  bool dirty_ = false, save_failed_ = false;
};

// A decision's field when it holds a value of the kind asked for, else `fallback`: a file edited
// by hand (a string where a number was) must cost a search, not the run.
float number_field(const nlohmann::json& decision, const char* name, float fallback);
std::string text_field(const nlohmann::json& decision, const char* name);

}  // namespace pneumo::cuda
