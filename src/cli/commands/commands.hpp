// The subcommands of `pneumo`, as functions over resolved option structs: main.cpp only parses
// flags into these, so the commands are testable without a shell and their defaults live here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/kernel_bench.hpp"
#include "bench/train_bench.hpp"
#include "pneumo/augment.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"

namespace pneumo::cli {

// The largest batch any command takes (--batch, --val-batch): its arrays are sized by it.
constexpr int kMaxBatch = 4096;

// Everything `pneumo train` can be told; the defaults are the seed recipe (docs/recipe.md), except
// where the recipe has a known weakness (val carved from train instead of 16 images).
struct TrainOptions {
  std::string data;                 // image tree or prepared cache
  std::string out;                  // run directory; "" -> runs/<date>-<time>
  std::string device = "auto";      // auto | cuda | cpu
  std::string precision = "fp32";   // fp32 | tf32 | bf16
  bool deterministic = true;        // CUDA: deterministic convolution algorithms only
  std::string tuning_cache = "auto";  // CUDA: where choices are remembered (tuning_cache_path)
  // Data-parallel runs (mpirun / srun): batch-norm statistics over every rank's images, and how
  // gradients travel (auto: NCCL on the CUDA backend, MPI on the CPU).
  bool sync_batchnorm = false;
  // Each block's dropout -> batch-norm -> max pool as one fused op (ModelConfig::
  // fused_block_tails): a speed option, same parameters and checkpoints.
  bool fused_block_tails = false;
  // Full-batch steps recorded once as a CUDA graph and replayed (Trainer::use_step_graphs).
  bool cuda_graph = false;
  // Each epoch's last, partial batch left out (whole_batches): every step at the full batch.
  bool drop_last = false;
  std::string all_reduce = "auto";  // auto | mpi | nccl
  double bucket_mb = 1.0;           // gradient buckets sent during the backward pass; 0: one
  int threads = 0;                  // CPU backend threads; 0: all
  int size = 0;                     // 0: a cache's own size, kDefaultImageSize for a tree
  int epochs = 12;
  int batch = 32;
  int val_batch = 0;                // validation passes' batch; 0: batch
  std::string optimizer = "rmsprop";  // rmsprop (the recipe) | adamw
  double learning_rate = 1e-3;
  double rho = 0.9;                 // RMSprop
  double epsilon = 1e-7;            // both, outside the square root...
  std::string rmsprop_epsilon = "outside";  // ... or, for RMSprop, "inside" it (Keras 2.11+, 3)
  double beta1 = 0.9, beta2 = 0.999;  // AdamW
  double weight_decay = 0.01;       // AdamW, decoupled
  double label_smoothing = 0.0;     // training targets y (1 - s) + s / 2
  uint64_t seed = 1;
  std::string val_split = "0.15";   // fraction carved from train (by patient), or "official"
  // The carve's seed; -1: --seed (each training seed its own validation split, as before the
  // flag). A fixed one keeps the validation images when only the training seed changes.
  int64_t val_seed = -1;
  std::string balance = "oversample";  // oversample | class-weight | none
  bool augment = true;
  AugmentSettings augmentation;     // rotation 30, zoom 0.2 (x, y apart), shift 0.1, flip
  std::string zoom_mode = "keras";  // keras (x and y zoom drawn apart) | isotropic
  std::string head = "flatten";     // flatten (the recipe) | gap (global average pooling)
  std::string normalization = "unit";  // unit (x/255) | per-image (standardised per image)
  // Score the stress variants of validation every epoch (val_stress_* metrics, monitorable).
  bool val_stress = false;
  // ReduceLROnPlateau (the recipe's callback); off when an lr schedule is chosen.
  std::string plateau_monitor = "val_accuracy";
  double plateau_factor = 0.3;
  int plateau_patience = 2;
  double plateau_min_delta = 1e-4;
  int plateau_cooldown = 0;
  double min_lr = 1e-6;
  std::string schedule = "none";    // none | step | exponential | cosine
  // EarlyStopping; off while patience is 0.
  std::string early_stopping_monitor = "val_loss";
  int early_stopping_patience = 0;
  bool restore_best = false;
  // The decision threshold stored with the model: youden (Youden's J on validation, when it holds
  // at least kMinThresholdClassImages images of each class; else 0.5) or 0.5.
  std::string threshold_rule = "youden";
  std::string checkpoint_monitor = "val_loss";  // which epoch is "best"
  std::string resume;               // checkpoint to continue from ("" none)
  // Testing aid, never saved with a run. Steps count from 1 over the whole run: "nan@K" poisons a
  // weight just before step K (so its loss is NaN); "sigint@K" / "sigterm@K" raise that signal
  // just before step K (the run finishes step K, then stops).
  std::string inject_fault;
};

// Youden's J on fewer validation images of a class than this picks cuts that do not carry over
// (on the official 16-image split it chose 0.984, labelling p = 0.98 NORMAL): 0.5 is kept instead.
constexpr int kMinThresholdClassImages = 20;
// The threshold rule of a training checkpoint (checkpoints/last, best, an interrupted run's): 0.5,
// since the run chooses its threshold on validation only when it ends, into model.safetensors.
inline constexpr const char* kTrainingCheckpointRule =
    "default 0.5: a training checkpoint; a finished run's model.safetensors holds the threshold "
    "it chose on validation";

nlohmann::json to_json(const TrainOptions& options);
// Checks every value a user can get wrong; throws pneumo::Error naming the flag and the value.
void validate(const TrainOptions& options);

int run_train(const TrainOptions& options);

// The metrics every epoch of a run records (train.cpp's validation, with --val-stress its stress
// variants' summaries): what a callback may monitor.
std::vector<std::string> epoch_metric_names(bool val_stress);
// The largest batch a training run holds (a step's or a validation chunk's: --batch and
// --val-batch, or the images there are when fewer) and the flag that sets it: the model is sized
// for it, and out-of-memory advice names it.
struct BatchFlag {
  int batch;
  const char* flag;
};
// What `pneumo train` says when memory runs out: the batch held and a smaller one for its flag
// (out_of_memory_advice), and when `--batch` (`--val-batch`, 0 when not given) asked for more
// than was held, that it did; with no batch held yet (held.batch 0: reading the data), that the
// data did not fit.
std::string training_memory_advice(const OutOfMemory& error, const BatchFlag& held, int batch,
                                   int val_batch);

// `pneumo --version` (without a final newline): release, CUDA runtime and driver, GPUs, cuDNN,
// cuBLAS, OpenCV, CPU GEMM.
std::string version_text();

struct EvaluateOptions {
  std::vector<std::string> models;  // checkpoints; several: an ensemble (mean probability)
  std::string data;           // image tree or cache
  std::string split = "test";
  std::string device = "auto";
  int batch = 64;
  std::string json;           // also write the metrics as JSON here ("" none)
  std::string scores;         // also write each image's logit as CSV here ("" none)
  std::string tuned_threshold = "checkpoint";  // "checkpoint" (the one chosen on val) or a value
  bool stress = false;        // also score the stress variants (pneumo/stress.hpp)
  std::string tta = "none";   // none | flip (mean probability of the image and its mirror)
  int gallery = 0;            // > 0: Grad-CAM gallery of the N most confident per confusion cell
  std::string gallery_out;    // its folder ("" -> gallery-<split>)
};
int run_evaluate(const EvaluateOptions& options);

struct PredictOptions {
  std::vector<std::string> models;  // several: an ensemble (mean probability)
  std::vector<std::string> inputs;  // images or folders
  std::string device = "auto";
  bool csv = false;
  bool logits = false;                   // add the raw logit (a last CSV column "logit")
  std::string threshold = "checkpoint";  // or a probability in [0, 1]
  int batch = 64;
  std::string tta = "none";              // none | flip
};
int run_predict(const PredictOptions& options);

// The images named by predict's and explain's inputs (files, or folders walked for images),
// decoded to `size` x `size` grey pixels in order. A file or subfolder that cannot be read gets a
// warning on stderr and is counted in `failures` (the command then exits 3); none readable at all
// is an error.
struct DecodedInputs {
  std::vector<uint8_t> pixels;     // files.size() images of size * size bytes
  std::vector<std::string> files;  // those decoded
  int failures = 0;
};
DecodedInputs decode_inputs(const std::vector<std::string>& inputs, int size);

// A file path as one CSV field: quoted, with inner quotes doubled, when it holds a comma, a quote
// or a line break (predict --csv and explain.csv).
std::string csv_field(const std::string& path);
using detail::one_line;  // pneumo/error.hpp
// A number with every digit it needs to read back exactly (a probability as a double; a logit or
// a map's value as a float), for the CSV files: 6 digits printed 0.5000004 as 0.5 beside the label
// PNEUMONIA at threshold 0.5. No stream's settings are changed.
std::string exact_text(double value);
// The refusal of a model whose output for an image (`which`: "image 3, mirrored", a file) is not
// finite: evaluate, predict and explain say it alike.
Error non_finite_output(const std::string& model, float logit, const std::string& which);
std::string exact_text(float value);

// `pneumo explain`: Grad-CAM maps of one model for image files (pneumo/explain.hpp).
struct ExplainOptions {
  std::string model;
  std::vector<std::string> inputs;  // images or folders
  std::string out;                  // folder for the maps, overlays and explain.csv
  std::string layer = "conv5";      // the layer whose output is explained
  std::string device = "auto";
  int batch = 16;
};
int run_explain(const ExplainOptions& options);

}  // namespace pneumo::cli

namespace pneumo::cli {

// `pneumo bench train`: images/s of the whole training step (augment, forward, loss, backward,
// RMSprop) on random images resident on the device, after warm-up; its per-phase split; the step
// as a CUDA Graph; and one epoch through the training loop. Prints one JSON line per batch size
// and a Markdown table (stderr).
using BenchTrainOptions = bench::TrainBenchOptions;  // src/bench/train_bench.hpp
int run_bench_train(const BenchTrainOptions& options);

}  // namespace pneumo::cli

namespace pneumo::cli {

// `pneumo bench kernels`: the hand-written kernels against cuDNN on the model's layer shapes (on
// the CPU backend alone where there is no GPU); each variant validated, then timed. Prints a
// Markdown table; --json / --csv write every row. Exit 1 when any variant is INVALID.
struct BenchKernelsOptions {
  std::string device = "auto";
  std::vector<int> batches;  // empty: 32 256 on CUDA, 4 on the CPU (2 with --quick)
  int repeats = 0;           // 0: 20 on CUDA, 5 on the CPU (3 with --quick)
  std::optional<int> warmup;  // unset: 3 on CUDA, 1 on the CPU (1 with --quick)
  bool quick = false;        // a smoke run: batch 2, 3 repeats, 1 warm-up
  std::vector<std::string> ops = bench::known_ops();
  int threads = 0;           // CPU backend threads (0: all)
  std::string json;          // JSON lines, one per row ("" none)
  std::string csv;           // CSV with a header row ("" none)
};
int run_bench_kernels(const BenchKernelsOptions& options);

}  // namespace pneumo::cli
