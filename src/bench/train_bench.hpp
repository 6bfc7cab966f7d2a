// `pneumo bench train`: throughput of the whole training step on device-resident random images,
// per batch size, in three measurements:
//   1. images/s of the step: `warmup` steps first (cuDNN algorithm search, first-touch
//      allocations), then `steps` steps between two synchronisations, timed by the host clock;
//   2. the same step split into its phases (augment, forward, loss, backward, optimizer): CUDA
//      events recorded on the backend's stream between phases (the host clock on the CPU backend,
//      whose ops finish before they return), in a separate pass so the events cannot slow pass 1;
//      with `layers`, two more passes mark the end of every layer's forward and backward, and
//      of every backend op;
//   3. on the CUDA backend, one step captured as a CUDA Graph and replayed `steps` times (the same
//      batch and random keys each replay: it measures what launching costs, not new work);
// plus the images/s of one epoch through Trainer::train_epoch (order upload, progress reads).
// Before those, the recipe end to end (bench_train_recipe): a new backend, the model and the
// recipe's epochs with a validation pass after each, timed from the backend's creation.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pneumo/backend.hpp"
#include "pneumo/model.hpp"

namespace pneumo::bench {

struct TrainBenchOptions {
  std::string device = "auto";
  std::string precision = "fp32";
  bool deterministic = true;
  std::string tuning_cache = "auto";  // --tuning-cache (the CLI resolves it: tuning_cache_path)
  // Unset (empty, 0, -1): the device's defaults, filled in by with_device_defaults: batches 32
  // and 256, 100 steps after 20 warm-up ones on CUDA; batch 32, 10 steps after 2 on the CPU
  // (CUDA's are 240 steps, half at batch 256, where a batch-32 step takes about 0.6 s on the
  // 2-core dev VM).
  std::vector<int> batches;
  int steps = 0;
  int warmup = -1;
  bool augment = true;
  int threads = 0;
  int64_t epoch_images = 0;  // 0: the recipe's train epoch (6586) on CUDA, 2 batches on the CPU
  int recipe_epochs = -1;    // the end-to-end measurement's epochs; -1: 12 on CUDA, none on CPU
  bool layers = false;       // also time each layer's forward and backward, and each backend op
  bool cudnn_only = false;   // CUDA: no kernel of ours where cuDNN has the op (A/B on one card)
  bool graph_engines = false;  // CUDA: also time cuDNN graph-API engines for conv backward
  bool fused_block_tails = false;  // the model's blocks end in the fused tail op
  // The epochs (the recipe's, and the one-epoch pass) replay each full-batch step as a CUDA
  // graph (Trainer::use_step_graphs); the timed steps stay op by op.
  bool cuda_graph = false;
  // The recipe's epochs and the one-epoch pass without their last, partial batch (whole_batches).
  bool drop_last = false;
  int val_batch = 0;  // the recipe's validation passes; 0: its training batch
  // The recipe's first two epochs synchronised at every backend op, each op's time charged to it,
  // to show where the first epoch's overhead goes ("first_calls" in the recipe's JSON line).
  bool first_calls = false;
};

// `options` with its unset batches, steps and warm-up set to the device's defaults (above).
TrainBenchOptions with_device_defaults(TrainBenchOptions options, Device device);

// The model the benchmarks train: the recipe's, with the options' speed settings.
ModelConfig bench_model_config(const TrainBenchOptions& options);

// The recipe's epoch: 6,586 oversampled training images, 782 validation images (the benches'
// fixed stand-in: the carve of seed 0 gives 6,586 and 783, the default seed 1's 6,588 and 782;
// an epoch's length follows its seed's carve).
constexpr int64_t kRecipeTrainImages = 6586;
constexpr int64_t kRecipeValImages = 782;

// Images in a timed epoch: --epoch-images, else the recipe's on CUDA and two batches on the CPU.
int64_t recipe_train_images(const TrainBenchOptions& options, Device device, int batch);

using BackendFactory = std::function<std::unique_ptr<Backend>()>;

// The recipe end to end, as `pneumo train` runs it but on random images held in memory: from
// the creation of a new backend (`make`; on CUDA the first in the process also pays for the
// context and the libraries' loading) through the model, then `epochs` epochs of training
// (recipe_train_images at the first batch size) each followed by a pass over validation images
// (kRecipeValImages in the same proportion). JSON: total_seconds, setup_seconds, per-epoch
// epoch/train/val seconds, first_epoch_seconds, steady_epoch_seconds (median of the later
// epochs) and first_epoch_overhead (first / steady - 1); with options.first_calls, first_calls
// (epochs >= 2, no cuda_graph): epochs 1 and 2 synchronised op by op, each op's time in both and
// the difference, largest first.
nlohmann::json bench_train_recipe(const BackendFactory& make, const TrainBenchOptions& options,
                                  int epochs);
void write_recipe_summary(const nlohmann::json& recipe, std::ostream& out);

// Every measurement of one batch size on `backend`, as the JSON line `pneumo bench train`
// prints: step_ms_mean, images_per_second, phases_ms, graph, the epoch, memory, the backend's own
// report (Backend::report), and with `layers` layers_ms and ops_ms. Throws OutOfMemory when the
// batch does not fit.
nlohmann::json bench_train_batch(Backend& backend, const TrainBenchOptions& options, int batch);

// The Markdown summary of the rows (one per batch size): the step table, with `layers` the
// per-layer and per-op tables, the backend's cuDNN-or-ours choices and algorithm searches, and
// any failed graph capture.
void write_train_bench_summary(const std::vector<nlohmann::json>& rows,
                               const TrainBenchOptions& options, const Backend& backend,
                               std::ostream& out);

}  // namespace pneumo::bench
