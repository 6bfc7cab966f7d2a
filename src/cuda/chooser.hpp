// The CUDA backend's tuner: for an op cuDNN and a kernel of ours both implement, which one runs
// on each shape. Decided once per (op, shape) on the first call, as an option forces or by
// timing both on the real buffers and keeping the faster (ours only if its outputs then agree
// with cuDNN's); the op bodies hand it their two candidates and never see how the choice is made.
// A timed decision is remembered in the tuning cache (tuning_cache.hpp) under the choice's key and
// taken from there in later runs, and for smaller batches of the same layer, without timing; on
// a smaller batch our kernel's output is first compared with cuDNN's once.
// cuDNN's own algorithm search is cuda_conv.cpp's search_algorithm.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "cuda/tuning_cache.hpp"

namespace pneumo::cuda {

// Always cuDNN, always ours, or the faster of the two, decided per shape.
enum class Implementation { Cudnn, Kernel, Fastest };

// A candidate is called with Trial while it is timed or checked (it must then leave alone any
// state the op updates in place, such as batch-norm's running averages) and with Kept for the
// one call whose results count.
enum class Run { Trial, Kept };
using Candidate = std::function<void(Run)>;

// One (op, shape)'s decision, and what it was based on (-1: not timed).
struct Choice {
  Choice() = default;
  explicit Choice(TuningKey what) : key(std::move(what)) {}
  TuningKey key;  // the op and its input shape; empty: never cached (decided anew each run)
  bool decided = false, kernel = false;
  float cudnn_ms = -1, kernel_ms = -1;  // as timed when decided (in the run that timed them)
  std::string rejected;  // why our faster kernel was not kept, when it disagreed with cuDNN
  // "timed", "forced", "cache", "cache (batch N)" (taken from batch N, compared with cuDNN here)
  // or "cache (timed at batch N)" (a later run's exact recall of such a decision)
  std::string source;
};

// An output both candidates write, compared before our kernel is kept.
struct Output {
  const float* data;
  int64_t count;
  const char* name;
};

// Empty when `actual` is within 1e-3 of `expected`'s largest magnitude everywhere, else the first
// element that is not (a NaN on either side never agrees), labelled with `name`.
std::string output_disagreement(const std::vector<float>& expected,
                                const std::vector<float>& actual, const char* name);

class Chooser {
 public:
  Chooser() = default;
  // `cache` (may be null: nothing remembered) outlives the chooser.
  Chooser(cudaStream_t stream, TuningCache* cache) : stream_(stream), cache_(cache) {}

  // Decides `choice` if it is not decided yet, then runs the kept candidate (Run::Kept). The
  // trial runs write the same outputs; the kept call writes them last.
  void run(Choice& choice, Implementation option, const Candidate& cudnn, const Candidate& kernel,
           const std::vector<Output>& outputs);
  // Candidates that behave the same in trial and for real.
  void run(Choice& choice, Implementation option, const std::function<void()>& cudnn,
           const std::function<void()>& kernel, const std::vector<Output>& outputs);

 private:
  void decide(Choice& choice, Implementation option, const Candidate& cudnn,
              const Candidate& kernel, const std::vector<Output>& outputs);
  float mean_ms(const Candidate& candidate);  // 1 warm-up, then the mean of 5, by CUDA events
  // Empty when `kernel` writes what `cudnn` writes (outputs over 2^21 values on their first and
  // last 2^20, each part against its own largest magnitude), else where they differ.
  std::string disagreement(const Candidate& cudnn, const Candidate& kernel,
                           const std::vector<Output>& outputs);

  // The cached decision for `choice`'s key, if any, applied to `choice`; the cache's hit (decision
  // null when nothing was applied).
  TuningCache::Hit recall(Choice& choice);
  // A decision recalled from a larger `batch` of the same layer, for this smaller one: our kernel
  // (when it is the one kept) compared with cuDNN on this shape, cuDNN kept instead when they
  // disagree; the outcome stored under this shape's key.
  void check_recalled(Choice& choice, const Candidate& cudnn, const Candidate& kernel,
                      const std::vector<Output>& outputs, int64_t batch);

  cudaStream_t stream_ = nullptr;
  TuningCache* cache_ = nullptr;
};

}  // namespace pneumo::cuda
