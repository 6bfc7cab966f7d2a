// The training step and loop over one Backend: images live on the backend's device as uint8,
// each step gathers + augments a batch there, runs forward, the fused loss, backward and one
// RMSprop launch. Loss and accuracy accumulate on the device and are read when asked for.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "pneumo/augment.hpp"
#include "pneumo/backend.hpp"
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
};

struct OptimizerSettings {
  float learning_rate = 1e-3f;  // RMSprop defaults of Keras
  float rho = 0.9f;
  float epsilon = 1e-7f;
};

struct EpochStats {
  double loss = 0.0;      // mean per-image loss
  double accuracy = 0.0;  // at threshold 0.5
  int64_t images = 0;
  double seconds = 0.0;
};

// Called every few steps with (step, total steps, running stats so far).
using StepCallback = std::function<void(int64_t step, int64_t steps, const EpochStats& running)>;

class Trainer {
 public:
  Trainer(Backend& backend, Model& model, int batch_size, AugmentSettings augment,
          uint64_t seed);

  OptimizerSettings& optimizer() { return optimizer_; }
  Tensor& optimizer_state() { return mean_square_; }  // RMSprop mean squares, like parameters

  // One training step on images order[first .. first + n) of `data` (order on the device).
  // Random keys: (seed, epoch, step). Accumulates into the device-side epoch statistics.
  void train_step(const ImageSet& data, const int32_t* device_order, int n, uint32_t epoch,
                  uint32_t step);

  // A whole epoch over `order` (host indices into data, e.g. shuffled and balanced).
  EpochStats train_epoch(const ImageSet& data, const std::vector<int32_t>& order, uint32_t epoch,
                         const StepCallback& on_progress = {});

  // Inference over every image of `data` in order; returns the logits on the host and the mean
  // loss/accuracy at 0.5 in `stats`.
  std::vector<float> predict_logits(const ImageSet& data, EpochStats* stats = nullptr);

  int batch_size() const { return batch_size_; }

  // The device-side loss/accuracy accumulators: reset, and read as means over `images`
  // (reading synchronises with the device).
  void reset_stats();
  EpochStats read_stats(int64_t images) const;

 private:
  Backend& backend_;
  Model& model_;
  int batch_size_;
  AugmentSettings augment_;
  uint64_t seed_;
  OptimizerSettings optimizer_;
  Tensor mean_square_;
  Tensor batch_images_, batch_labels_, batch_weights_, dlogits_, stats_;
  Array<int32_t> order_;
};

}  // namespace pneumo
