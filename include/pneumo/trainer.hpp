// The training step and loop over one Backend: images live on the backend's device as uint8,
// each step gathers + augments a batch there, runs forward, the fused loss, backward and one
// RMSprop launch. Loss and accuracy accumulate on the device and are read when asked for.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pneumo/augment.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/distributed.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {

// A labelled image set resident on one device: uint8 (count, size, size) and float labels.
struct ImageSet {
  Array<uint8_t> images;
  Tensor labels;        // (count) 0 = NORMAL, 1 = PNEUMONIA
  Tensor weights;       // (count) per-sample loss weights, or empty for 1
  int64_t count = 0;
  int size = 0;

  // Copies host arrays to `device`. labels: one uint8 per image.
  static ImageSet upload(Device device, const uint8_t* images, int64_t count, int size,
                         const uint8_t* labels);
  void set_weights(const std::vector<float>& per_image);  // e.g. class weights per label
  // Training targets smoothed towards 1/2 (smoothed_label in elementwise.hpp); labels: one uint8
  // per image, as given to upload. Validation and test sets keep their hard labels.
  void smooth_labels(const std::vector<uint8_t>& hard_labels, float smoothing);
};

enum class OptimizerKind { RmsProp, AdamW };
const char* optimizer_name(OptimizerKind kind);

struct OptimizerSettings {
  float learning_rate = 1e-3f;  // RMSprop defaults of Keras
  float rho = 0.9f;
  float epsilon = 1e-7f;        // both optimizers: added outside the square root...
  bool epsilon_inside = false;  // ... or, for RMSprop, under it (Keras 2.11+ and 3)
  float beta1 = 0.9f;           // AdamW (PyTorch's defaults)
  float beta2 = 0.999f;
  float weight_decay = 0.01f;   // AdamW, decoupled: param *= 1 - lr * weight_decay each step
};

struct EpochStats {
  double loss = 0.0;      // mean per-image loss
  double accuracy = 0.0;  // at threshold 0.5
  int64_t images = 0;
  double seconds = 0.0;
  // The device-side sums behind the means, as float32 held them (a resumed epoch restarts
  // from these, so it adds up exactly as an uninterrupted one).
  double loss_sum = 0.0;
  double correct = 0.0;
  // Each rank's own (loss sum, correct count) in rank order, as its float32 held them: a
  // data-parallel epoch resumed by as many ranks restarts each from its own, and adds up as the
  // uninterrupted one does (their total, carried by rank 0, rounded otherwise).
  std::vector<double> rank_sums;
  int64_t steps = 0;         // steps of this epoch done (all of them unless interrupted)
  int64_t first_nonfinite_step = -1;  // first step whose loss was NaN or infinite; -1: none
  bool interrupted = false;  // stopped early because EpochOptions::stop was set
};

// The training loss (a running sum on the device) stopped being finite.
class NonFiniteLoss : public Error {
 public:
  NonFiniteLoss(const std::string& message, uint32_t epoch, int64_t step)
      : Error(message), epoch_(epoch), step_(step) {}
  uint32_t epoch() const { return epoch_; }  // 0-based
  int64_t step() const { return step_; }     // 0-based step within the epoch

 private:
  uint32_t epoch_;
  int64_t step_;
};

// How train_epoch runs beyond its order: where to start (a run resumed mid-epoch), when to stop
// early (a signal), and a hook before each step (fault injection in tests).
struct EpochOptions {
  int64_t first_step = 0;       // steps [0, first_step) were done before an interruption
  double loss_sum = 0.0;        // ... and these were the epoch's sums after them
  double correct = 0.0;
  // ... or each rank's (EpochStats::rank_sums), used when there is a pair for every rank.
  std::vector<double> rank_sums;
  const std::atomic<bool>* stop = nullptr;  // checked after every step; set: finish and return
  const std::atomic<bool>* stop_too = nullptr;  // a second such flag (train: a file write failed)
  std::function<void(int64_t step)> before_step;
};

// The phases of a training step, in order. A PhaseMarker set on the Trainer is called with Start
// when a step begins and with each phase as it is issued to the device (on the CUDA backend the
// work may still be running: a marker that times phases records events on the backend's stream).
enum class StepPhase { Start, Augment, Forward, Loss, Backward, Optimizer };
inline constexpr const char* kStepPhaseNames[] = {"start",  "augment",  "forward",
                                                  "loss",   "backward", "optimizer"};
using PhaseMarker = std::function<void(StepPhase)>;

// Called every few steps with (steps done, total steps, running stats so far).
using StepCallback = std::function<void(int64_t step, int64_t steps, const EpochStats& running)>;

// An epoch's order without its last, partial batch (`--drop-last`, PyTorch's drop_last): every
// step a full batch of `batch`, so no step meets a batch shape the others do not (the backend's
// first calls at a new shape, a step graph that cannot replay). The images left out are the
// order's last ones, so which they are changes with each epoch's shuffle. Throws when `order`
// holds no full batch.
std::vector<int32_t> whole_batches(std::vector<int32_t> order, int batch);

class Trainer {
 public:
  Trainer(Backend& backend, Model& model, int batch_size, AugmentSettings augment,
          uint64_t seed);

  OptimizerSettings& optimizer() { return optimizer_; }
  // RMSprop (the default) or AdamW: reallocates the state as zeros (call before training).
  void use_optimizer(OptimizerKind kind);
  OptimizerKind optimizer_kind() const { return optimizer_kind_; }
  // The optimizer's state, one slot per parameter buffer: RMSprop's mean squares, or AdamW's
  // first then second moments ((2 x parameters) elements).
  Tensor& optimizer_state() { return optimizer_state_; }
  // Optimizer steps taken over the whole run (AdamW's bias correction counts them); a resumed
  // run sets it from its checkpoint.
  int64_t optimizer_steps() const { return optimizer_steps_; }
  void set_optimizer_steps(int64_t steps) { optimizer_steps_ = steps; }

  // Data-parallel training: this process is one rank of `group` (which must outlive the trainer).
  // Each step then takes the rank's shard of the global batch, adds the gradients up across the
  // ranks before the optimizer, and epoch statistics and predictions cover every rank's images.
  // The default is the group of one.
  void set_group(Communicator& group) { group_ = &group; }
  Communicator& group() const { return *group_; }
  // Gradients travel in buckets of at least `elements` floats, cut at layer boundaries from the
  // end of the buffer, each started as soon as the backward pass has written it (so it overlaps
  // the rest of the backward pass); 0 (the default): one bucket after the backward pass.
  void set_all_reduce_bucket(int64_t elements);
  const std::vector<Shard>& all_reduce_buckets() const { return buckets_; }

  // One training step on the global batch of n images device_order[0 .. n) of `data` (order on
  // the device); this rank takes shard_of(n, rank, ranks) of them. Random keys: (seed, epoch,
  // step) at the images' places in the global batch, so the ranks together draw what one process
  // draws. Accumulates into this rank's device-side epoch statistics, and marks the step if the
  // running loss stops being finite.
  void train_step(const ImageSet& data, const int32_t* device_order, int n, uint32_t epoch,
                  uint32_t step);

  // A whole epoch over `order` (host indices into data, e.g. shuffled and balanced), or its
  // steps from options.first_step on, stopping early when options.stop is set. Throws
  // NonFiniteLoss naming the first step whose loss was NaN or infinite (checked whenever the
  // statistics are read: every progress report and at the end).
  EpochStats train_epoch(const ImageSet& data, const std::vector<int32_t>& order, uint32_t epoch,
                         const StepCallback& on_progress = {}, const EpochOptions& options = {});

  // Inference over every image of `data` in order (each rank predicts its shard; the logits are
  // gathered so every rank returns all of them); returns the logits on the host and the mean
  // loss/accuracy at 0.5 in `stats`. With `fixed`, every image first goes through that one
  // transform (a stress variant of the split, or a flip for test-time augmentation).
  std::vector<float> predict_logits(const ImageSet& data, EpochStats* stats = nullptr,
                                    const AugmentParams* fixed = nullptr);

  int batch_size() const { return batch_size_; }
  // predict_logits' batch (validation, stress variants): the training batch unless set, at most
  // the model's max_batch (a model built for a larger batch than it trains at holds activations
  // for it). Larger batches mean fewer, fuller launches in each validation pass.
  void set_predict_batch(int batch);
  int predict_batch() const { return predict_batch_; }
  void set_phase_marker(PhaseMarker marker) { phase_marker_ = std::move(marker); }

  // Step graphs (`--cuda-graph`): train_epoch's steps take what changes from step to step (the
  // random keys' epoch and step, the learning rate, AdamW's bias corrections, where the step's
  // images sit in the epoch order) from a per-epoch table on the device (pneumo/live_step.hpp),
  // so a full-batch step is recorded once (Backend::record) after it first ran and replayed for
  // every later one, one launch each. The same numbers as without: the CPU backend, which
  // records nothing, runs the same live path. Steps that cannot be replayed are issued as usual:
  // the last partial batch, any step while a phase marker is set or with more than one rank.
  void use_step_graphs(bool on);
  // What use_step_graphs did so far: steps replayed, recordings made, steps issued op by op,
  // and why recording stopped being tried (empty while it is not refused).
  struct StepGraphStats {
    int64_t replayed = 0, recorded = 0, issued = 0;
    std::string refused;
  };
  const StepGraphStats& step_graph_stats() const { return graph_stats_; }

  // The device-side loss/accuracy accumulators: reset (to sums carried over from before an
  // interruption, or 0, on rank 0), and read as means over `images` (reading synchronises with
  // the device): this rank's sums, or (read_group_stats, a collective) every rank's added up.
  void reset_stats(double loss_sum = 0.0, double correct = 0.0,
                   const std::vector<double>& rank_sums = {});
  EpochStats read_stats(int64_t images) const;
  EpochStats read_group_stats(int64_t images) const;

 private:
  TensorView loss_and_correct();  // the first two statistics, as sigmoid_bce accumulates them
  // AdamW's constants for optimizer step t (counted from 1 over the run), in double on the host.
  AdamWStep adamw_constants(int64_t t) const;
  // The ops of one step on `indices` (n images of the global batch, on the device), optimizer
  // step optimizer_steps_. Without `live` the epoch and step are these arguments and the
  // learning rate and bias corrections the optimizer's; with it, the device reads them from *live.
  void issue_step(const ImageSet& data, const int32_t* indices, int n, uint32_t epoch,
                  uint32_t step, const LiveStep* live);
  // Step graphs: the epoch's table on the device and the cursor at first_step; one live step.
  void prepare_live_epoch(uint32_t epoch, int64_t steps, int64_t first_step);
  void live_step(const ImageSet& data, int n);

  Backend& backend_;
  Model& model_;
  int batch_size_;
  int predict_batch_;
  AugmentSettings augment_;
  uint64_t seed_;
  OptimizerSettings optimizer_;
  OptimizerKind optimizer_kind_ = OptimizerKind::RmsProp;
  Tensor optimizer_state_;
  int64_t optimizer_steps_ = 0;
  Tensor batch_images_, batch_labels_, batch_weights_, dlogits_;
  Tensor stats_;  // (3): loss sum, correct count, first non-finite step + 1 (0: none)
  Array<int32_t> order_;
  PhaseMarker phase_marker_;
  Communicator* group_ = &single_process();
  std::vector<Shard> buckets_;  // ranges of the gradient buffer, in the order they are sent
  // Step graphs (use_step_graphs): the epoch's table, its cursor, the current step's values and
  // image indices, all on the device; the recording and the buffers it was made on.
  bool live_steps_ = false;
  Array<LiveStep> step_table_;
  Array<uint32_t> step_cursor_;
  Array<LiveStep> live_;
  Array<int32_t> step_indices_;
  std::unique_ptr<Recording> step_graph_;
  using RecordedBuffers = std::array<const void*, 11>;  // what live_step compares, in its order
  RecordedBuffers recorded_on_{};
  bool full_step_ran_ = false;  // a full-batch live step ran op by op since memory last moved
  StepGraphStats graph_stats_;
};

}  // namespace pneumo
