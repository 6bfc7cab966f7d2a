// The training step and loop (see trainer.hpp). Everything inside a step stays on the backend's
// device; the host only picks the epoch order and reads statistics when asked.
#include "pneumo/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "elementwise.hpp"
#include "pneumo/error.hpp"
#include "core/nvtx.hpp"
#include "pneumo/random.hpp"

namespace pneumo {

ImageSet ImageSet::upload(Device device, const uint8_t* images, int64_t count, int size,
                          const uint8_t* labels) {
  PNEUMO_CHECK(count > 0, "an image set needs at least one image");
  ImageSet set;
  set.count = count;
  set.size = size;
  set.images = Array<uint8_t>(count * size * size, device);
  copy_bytes(set.images.data(), device, images, Device::Cpu, set.images.bytes());
  std::vector<float> label_values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    PNEUMO_CHECK(labels[i] <= 1, "label ", int(labels[i]), " of image ", i, " is not 0 or 1");
    label_values[static_cast<size_t>(i)] = labels[i];
  }
  set.labels = Tensor::from_host({count}, label_values.data(), device);
  return set;
}

void ImageSet::smooth_labels(const std::vector<uint8_t>& hard_labels, float smoothing) {
  PNEUMO_CHECK(static_cast<int64_t>(hard_labels.size()) == count, "got ", hard_labels.size(),
               " labels for ", count, " images");
  PNEUMO_CHECK(smoothing >= 0.0f && smoothing < 1.0f, "label smoothing ", smoothing,
               " is outside [0, 1)");
  std::vector<float> targets(hard_labels.size());
  for (size_t i = 0; i < targets.size(); ++i)
    targets[i] = smoothed_label(static_cast<float>(hard_labels[i]), smoothing);
  labels = Tensor::from_host({count}, targets.data(), labels.device());
}


const char* optimizer_name(OptimizerKind kind) {
  return kind == OptimizerKind::AdamW ? "adamw" : "rmsprop";
}

void ImageSet::set_weights(const std::vector<float>& per_image) {
  PNEUMO_CHECK(static_cast<int64_t>(per_image.size()) == count, "got ", per_image.size(),
               " sample weights for ", count, " images");
  weights = Tensor::from_host({count}, per_image.data(), labels.device());
}

Trainer::Trainer(Backend& backend, Model& model, int batch_size, AugmentSettings augment,
                 uint64_t seed)
    : backend_(backend),
      model_(model),
      batch_size_(batch_size),
      predict_batch_(batch_size),
      augment_(augment),
      seed_(seed) {
  augment_.normalization = model.config().input_normalization;  // the model decides, always
  PNEUMO_CHECK(batch_size >= 1, "batch size must be at least 1, got ", batch_size);
  PNEUMO_CHECK(batch_size <= model.max_batch(), "batch size ", batch_size,
               " exceeds the model's maximum batch ", model.max_batch());
  const int size = model.config().input_size;
  optimizer_state_ = backend.zeros(model.parameters().shape);
  batch_images_ = backend.empty({batch_size, 1, size, size});
  batch_labels_ = backend.empty({batch_size});
  batch_weights_ = backend.empty({batch_size});
  dlogits_ = backend.empty({batch_size, 1});
  stats_ = backend.zeros({3});
  set_all_reduce_bucket(0);
}

void Trainer::set_predict_batch(int batch) {
  PNEUMO_CHECK(batch >= 1 && batch <= model_.max_batch(), "prediction batch ", batch,
               " outside [1, ", model_.max_batch(), "], the model's maximum batch");
  predict_batch_ = batch;
  if (batch_images_.shape()[0] >= batch) return;
  const int size = model_.config().input_size;
  batch_images_ = backend_.empty({batch, 1, size, size});
  batch_labels_ = backend_.empty({batch});
  dlogits_ = backend_.empty({batch, 1});
}

void Trainer::set_all_reduce_bucket(int64_t elements) {
  PNEUMO_CHECK(elements >= 0, "all-reduce bucket of ", elements, " elements");
  buckets_.clear();
  std::vector<int64_t> cuts = model_.gradients_final_from();
  cuts.push_back(0);
  std::sort(cuts.rbegin(), cuts.rend());
  int64_t end = model_.gradients().numel();
  if (elements > 0)
    for (int64_t cut : cuts)  // from the end of the buffer, as the backward pass completes it
      if (cut < end && (end - cut >= elements || cut == 0)) {
        buckets_.push_back({cut, end});
        end = cut;
      }
  if (end > 0) buckets_.push_back({0, end});
}

void Trainer::use_optimizer(OptimizerKind kind) {
  optimizer_kind_ = kind;
  const int64_t slots = kind == OptimizerKind::AdamW ? 2 : 1;
  optimizer_state_ = backend_.zeros({slots * model_.parameters().numel()});
}

AdamWStep Trainer::adamw_constants(int64_t t) const {
  const OptimizerSettings& o = optimizer_;
  const double steps = static_cast<double>(t);
  return {o.learning_rate, o.beta1, o.beta2, o.epsilon, o.weight_decay,
          static_cast<float>(1.0 - std::pow(double(o.beta1), steps)),
          static_cast<float>(1.0 - std::pow(double(o.beta2), steps))};
}

void Trainer::train_step(const ImageSet& data, const int32_t* device_order, int n, uint32_t epoch,
                         uint32_t step) {
  PNEUMO_CHECK(n >= 1 && n <= batch_size_, "step of ", n, " images with batch size ",
               batch_size_);
  PNEUMO_CHECK(data.size == model_.config().input_size, "images are ", data.size, "x", data.size,
               " but the model expects ", model_.config().input_size);
  ++optimizer_steps_;
  issue_step(data, device_order, n, epoch, step, nullptr);
}

void Trainer::issue_step(const ImageSet& data, const int32_t* device_order, int n, uint32_t epoch,
                         uint32_t step, const LiveStep* live) {
  PNEUMO_NVTX_RANGE("train step");
  const int size = data.size;
  // This rank's images of the global batch, and where they sit in it (the random streams' index).
  const Shard shard = shard_of(n, group_->rank(), group_->size());
  const int local = static_cast<int>(shard.size());
  PNEUMO_CHECK(local >= 1, "a global batch of ", n, " images leaves rank ", group_->rank(),
               " of ", group_->size(), " none");
  device_order += shard.begin;
  TensorView x{batch_images_.data(), {local, 1, size, size}, backend_.device()};
  TensorView labels{batch_labels_.data(), {local}, backend_.device()};
  TensorView weights{batch_weights_.data(), {local}, backend_.device()};
  auto mark = [this](StepPhase phase) {
    if (phase_marker_) phase_marker_(phase);
  };
  mark(StepPhase::Start);
  {
    PNEUMO_NVTX_RANGE("augment");
    RngKey key = make_key(seed_, RngStream::kAugment, epoch, step);
    key.first = static_cast<uint32_t>(shard.begin);
    key.live = live;
    backend_.gather_augment(data.images.data(), data.count, size, device_order, augment_, key, x);
    backend_.gather_values(data.labels.data(), data.labels.numel(), device_order, labels);
    if (data.weights.numel() > 0)
      backend_.gather_values(data.weights.data(), data.weights.numel(), device_order, weights);
  }
  mark(StepPhase::Augment);
  RngKey dropout_key = make_key(seed_, RngStream::kDropout, epoch, step);
  dropout_key.first = static_cast<uint32_t>(shard.begin);
  dropout_key.live = live;
  ConstTensorView logits = model_.forward(x, /*training=*/true, dropout_key);
  mark(StepPhase::Forward);
  TensorView dlogits{dlogits_.data(), {local, 1}, backend_.device()};
  {
    PNEUMO_NVTX_RANGE("loss");
    ConstTensorView no_weights;
    // Divided by the global batch: the ranks' gradients then add up to the batch-mean loss's.
    backend_.sigmoid_bce(logits.reshaped({local}), labels,
                         data.weights.numel() > 0 ? ConstTensorView(weights) : no_weights,
                         dlogits.reshaped({local}), loss_and_correct(), n);
    backend_.mark_nonfinite(ConstTensorView{stats_.data(), {1}, backend_.device()}, step,
                            TensorView{stats_.data() + 2, {1}, backend_.device()}, live);
  }
  mark(StepPhase::Loss);
  {
    // Each bucket of the gradients is summed across the ranks as soon as the backward pass has
    // written it (a no-op for the group of one; one NCCL rank still runs the collective).
    TensorView gradients = model_.gradients();
    size_t sent = 0;
    auto send_final = [&](int64_t from) {
      for (; sent < buckets_.size() && buckets_[sent].begin >= from; ++sent)
        group_->start_all_reduce_sum(gradients.data + buckets_[sent].begin, buckets_[sent].size(),
                                     gradients.device);
    };
    model_.backward(dlogits, 0, send_final);
    send_final(0);
    PNEUMO_NVTX_RANGE("all-reduce gradients (wait)");
    group_->finish_all_reduces();
  }
  mark(StepPhase::Backward);
  {
    PNEUMO_NVTX_RANGE("optimizer");
    TensorView params = model_.parameters();
    if (optimizer_kind_ == OptimizerKind::AdamW) {
      const int64_t n = params.numel();
      backend_.adamw_step(params, model_.gradients(),
                          TensorView{optimizer_state_.data(), params.shape, backend_.device()},
                          TensorView{optimizer_state_.data() + n, params.shape, backend_.device()},
                          adamw_constants(optimizer_steps_), live);
    } else {
      backend_.rmsprop_step(params, model_.gradients(),
                            TensorView{optimizer_state_.data(), params.shape, backend_.device()},
                            optimizer_.learning_rate, optimizer_.rho, optimizer_.epsilon,
                            optimizer_.epsilon_inside, live);
    }
  }
  mark(StepPhase::Optimizer);
}

void Trainer::use_step_graphs(bool on) {
  live_steps_ = on;
  if (on && live_.empty()) {
    live_ = Array<LiveStep>(1, backend_.device());
    step_cursor_ = Array<uint32_t>(1, backend_.device());
    step_indices_ = Array<int32_t>(batch_size_, backend_.device());
  }
  step_graph_.reset();
  full_step_ran_ = false;
}

void Trainer::prepare_live_epoch(uint32_t epoch, int64_t steps, int64_t first_step) {
  // The previous epoch's replays have read their table (reading the statistics synchronised;
  // this makes it explicit).
  backend_.synchronize();
  if (step_table_.size() < steps) step_table_ = Array<LiveStep>(steps, backend_.device());
  std::vector<LiveStep> table(static_cast<size_t>(steps));
  for (int64_t i = first_step; i < steps; ++i) {
    LiveStep& s = table[static_cast<size_t>(i)];
    s.epoch = epoch;
    s.step = static_cast<uint32_t>(i);
    s.learning_rate = optimizer_.learning_rate;
    // Optimizer step t of the run, as train_step counts it.
    const AdamWStep adamw = adamw_constants(optimizer_steps_ + (i - first_step) + 1);
    s.bias_correction1 = adamw.bias_correction1;
    s.bias_correction2 = adamw.bias_correction2;
    s.first = static_cast<int32_t>(i * batch_size_);
  }
  copy_bytes(step_table_.data(), backend_.device(), table.data(), Device::Cpu,
             table.size() * sizeof(LiveStep));
  const auto cursor = static_cast<uint32_t>(first_step);
  copy_bytes(step_cursor_.data(), backend_.device(), &cursor, Device::Cpu, sizeof(cursor));
}

void Trainer::live_step(const ImageSet& data, int n) {
  PNEUMO_CHECK(data.size == model_.config().input_size, "images are ", data.size, "x", data.size,
               " but the model expects ", model_.config().input_size);
  ++optimizer_steps_;
  auto issue = [&] {
    backend_.begin_step(step_table_.data(), step_table_.size(), step_cursor_.data(),
                        order_.data(), n, live_.data(), step_indices_.data());
    // The epoch and step passed here, the learning rate and the bias corrections are replaced by
    // *live_ on the device.
    issue_step(data, step_indices_.data(), n, 0, 0, live_.data());
  };
  // The memory a recording holds and the optimizer it runs: it replays only on the same.
  const RecordedBuffers buffers = {
      data.images.data(),    data.labels.data(),       data.weights.data(),
      order_.data(),         step_table_.data(),       optimizer_state_.data(),
      batch_images_.data(),  batch_labels_.data(),     dlogits_.data(),
      reinterpret_cast<const void*>(static_cast<intptr_t>(step_table_.size())),
      // The optimizer the step runs: its state may be reallocated at the old address.
      reinterpret_cast<const void*>(static_cast<intptr_t>(optimizer_kind_))};
  if (graph_stats_.refused.empty()) {
    if (group_->size() > 1)
      graph_stats_.refused = detail::concat("the steps of a data-parallel run (", group_->size(),
                                            " ranks) are not recorded");
    else if (phase_marker_)
      graph_stats_.refused = "timing each phase of the step needs its ops issued one by one";
    else if (model_.batchnorm_synchronised())
      graph_stats_.refused =
          "synchronised batch-norm reads its statistics back to the host within the step";
  }
  const bool replayable = n == batch_size_ && graph_stats_.refused.empty();
  if (!replayable) {
    issue();
    ++graph_stats_.issued;
    return;
  }
  if (step_graph_ && (!step_graph_->current() || recorded_on_ != buffers)) {
    step_graph_.reset();
    full_step_ran_ = false;  // memory moved: run op by op once more (workspaces grow there)
  }
  if (!step_graph_ && full_step_ran_) {
    try {
      step_graph_ = backend_.record(issue);
    } catch (const Error& e) {
      graph_stats_.refused = e.what();
    }
    if (step_graph_) {
      recorded_on_ = buffers;
      ++graph_stats_.recorded;
    } else if (graph_stats_.refused.empty()) {
      graph_stats_.refused = "the " + backend_.name() + " backend records no graphs";
    }
  }
  if (step_graph_) {
    step_graph_->replay();
    ++graph_stats_.replayed;
    return;
  }
  issue();
  ++graph_stats_.issued;
  full_step_ran_ = true;
}

TensorView Trainer::loss_and_correct() { return {stats_.data(), {2}, backend_.device()}; }

void Trainer::reset_stats(double loss_sum, double correct, const std::vector<double>& rank_sums) {
  const auto rank = static_cast<size_t>(group_->rank());
  if (rank_sums.size() == 2 * static_cast<size_t>(group_->size())) {  // each rank its own
    loss_sum = rank_sums[2 * rank];
    correct = rank_sums[2 * rank + 1];
  } else if (rank != 0) {
    loss_sum = correct = 0.0;  // carried-over sums are counted once
  }
  const float host[3] = {static_cast<float>(loss_sum), static_cast<float>(correct), 0.0f};
  copy_bytes(stats_.data(), stats_.device(), host, Device::Cpu, sizeof(host));
}

namespace {

// The statistics of `images` from the device's sums: (loss sum, correct count, first non-finite
// step + 1) per rank, three values each, added up in rank order (the same on every rank); the
// earliest non-finite step of any rank.
EpochStats stats_from_sums(const std::vector<double>& sums, int64_t images) {
  EpochStats stats;
  stats.images = images;
  for (size_t r = 0; r + 2 < sums.size(); r += 3) {
    stats.loss_sum += sums[r];
    stats.correct += sums[r + 1];
    stats.rank_sums.insert(stats.rank_sums.end(), {sums[r], sums[r + 1]});
    const auto step = static_cast<int64_t>(sums[r + 2]) - 1;
    if (step >= 0 && (stats.first_nonfinite_step < 0 || step < stats.first_nonfinite_step))
      stats.first_nonfinite_step = step;
  }
  if (images > 0) {
    stats.loss = stats.loss_sum / static_cast<double>(images);
    stats.accuracy = stats.correct / static_cast<double>(images);
  }
  return stats;
}

}  // namespace

EpochStats Trainer::read_stats(int64_t images) const {
  float host[3];
  stats_.copy_to_host(host);  // synchronises with the device
  return stats_from_sums(std::vector<double>(host, host + 3), images);
}

EpochStats Trainer::read_group_stats(int64_t images) const {
  float host[3];
  stats_.copy_to_host(host);
  return stats_from_sums(group_->all_gather(std::vector<double>(host, host + 3)), images);
}

namespace {

[[noreturn]] void throw_nonfinite(const EpochStats& stats, uint32_t epoch, int64_t steps,
                                  float learning_rate) {
  throw NonFiniteLoss(
      detail::concat("the training loss became ", stats.loss_sum, " at step ",
                     stats.first_nonfinite_step + 1, " of ", steps, " in epoch ", epoch + 1,
                     " (learning rate ", learning_rate, ")"),
      epoch, stats.first_nonfinite_step);
}

}  // namespace

std::vector<int32_t> whole_batches(std::vector<int32_t> order, int batch) {
  PNEUMO_CHECK(batch > 0, "whole_batches: batch ", batch);
  const auto images = static_cast<int64_t>(order.size());
  if (images < batch)
    throw Error(detail::concat("--drop-last: an epoch of ", images,
                               " training images holds no full batch of ", batch,
                               "; choose a smaller --batch or train without --drop-last"));
  order.resize(static_cast<size_t>(images - images % batch));
  return order;
}

EpochStats Trainer::train_epoch(const ImageSet& data, const std::vector<int32_t>& order,
                                uint32_t epoch, const StepCallback& on_progress,
                                const EpochOptions& options) {
  PNEUMO_NVTX_RANGE("epoch");
  const auto start = std::chrono::steady_clock::now();
  const auto total = static_cast<int64_t>(order.size());
  PNEUMO_CHECK(total > 0, "an epoch needs at least one image");
  for (int32_t index : order)
    PNEUMO_CHECK(index >= 0 && index < data.count, "epoch order holds index ", index,
                 " outside [0, ", data.count, ")");
  if (order_.size() < total) order_ = Array<int32_t>(total, backend_.device());
  copy_bytes(order_.data(), backend_.device(), order.data(), Device::Cpu,
             static_cast<size_t>(total) * sizeof(int32_t));
  const int64_t steps = (total + batch_size_ - 1) / batch_size_;
  const int64_t last_batch = total - (steps - 1) * batch_size_;
  PNEUMO_CHECK(last_batch >= group_->size(), "the epoch's last batch holds ", last_batch,
               " images, fewer than the ", group_->size(),
               " ranks sharing it; choose a --batch that leaves at least one image per rank");
  PNEUMO_CHECK(options.first_step >= 0 && options.first_step <= steps, "resuming at step ",
               options.first_step, " of an epoch of ", steps, " steps");
  reset_stats(options.loss_sum, options.correct, options.rank_sums);
  if (live_steps_) prepare_live_epoch(epoch, steps, options.first_step);

  auto last_report = start;
  int64_t done = options.first_step;
  // The images behind this rank's running sums: its own shard of each step, and on rank 0 the
  // sums a resumed epoch carried over (every rank's images before options.first_step).
  int64_t summed_images =
      group_->rank() == 0 ? std::min<int64_t>(total, options.first_step * batch_size_) : 0;
  bool interrupted = false;
  while (done < steps) {
    // Every rank stops at the same step (a signal may reach them at different ones).
    const bool stop = (options.stop && options.stop->load()) ||
                      (options.stop_too && options.stop_too->load());
    if ((options.stop || options.stop_too) && group_->any(stop)) {
      interrupted = true;
      break;
    }
    if (options.before_step) options.before_step(done);
    const int64_t first = done * batch_size_;
    const int n = static_cast<int>(std::min<int64_t>(batch_size_, total - first));
    if (live_steps_)
      live_step(data, n);
    else
      train_step(data, order_.data() + first, n, epoch, static_cast<uint32_t>(done));
    ++done;
    summed_images += shard_of(n, group_->rank(), group_->size()).size();
    const auto now = std::chrono::steady_clock::now();
    // Reading the running statistics synchronises, so do it a few times a second at most. This
    // rank's (no collective: ranks report at different times); the epoch's end adds them up.
    if (on_progress && (done == steps || now - last_report > std::chrono::milliseconds(250))) {
      last_report = now;
      EpochStats running = read_stats(summed_images);
      if (running.first_nonfinite_step >= 0)
        throw_nonfinite(running, epoch, steps, optimizer_.learning_rate);
      running.seconds = std::chrono::duration<double>(now - start).count();
      on_progress(done, steps, running);
    }
  }
  EpochStats stats = read_group_stats(std::min<int64_t>(total, done * batch_size_));
  if (stats.first_nonfinite_step >= 0) throw_nonfinite(stats, epoch, steps, optimizer_.learning_rate);
  {
    // Without synchronised batch-norm each rank's running averages saw its shards only; rank 0's
    // become everyone's (as DDP broadcasts its buffers), so validation and checkpoints agree.
    TensorView buffers = model_.buffers();
    group_->broadcast(buffers.data, buffers.numel(), buffers.device);
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats.steps = done;
  stats.interrupted = interrupted;
  return stats;
}

std::vector<float> Trainer::predict_logits(const ImageSet& data, EpochStats* stats,
                                           const AugmentParams* fixed) {
  PNEUMO_NVTX_RANGE("evaluate");
  const auto start = std::chrono::steady_clock::now();
  // This rank's contiguous share of the images (all of them on one process, or when there are
  // fewer images than ranks).
  const bool sharded = group_->size() > 1 && data.count >= group_->size();
  const Shard shard =
      sharded ? shard_of(data.count, group_->rank(), group_->size()) : Shard{0, data.count};
  const int batch = predict_batch_;
  // The last, partial batch runs at the full batch when full ones ran before it (its extra places
  // repeat the last image; their logits are dropped), so a pass meets one shape, not a second one
  // the backend has never seen, whose first calls choose algorithms and build plans again.
  // Inference treats each image alone (batch-norm's running statistics, no dropout), so the
  // padding changes no logit.
  const int64_t count = shard.size();
  const int64_t passes = (count + batch - 1) / batch;
  const int64_t places = count > batch ? passes * batch : count;
  std::vector<int32_t> identity(static_cast<size_t>(places));
  for (int64_t i = 0; i < places; ++i)
    identity[static_cast<size_t>(i)] = static_cast<int32_t>(shard.begin + std::min(i, count - 1));
  Array<int32_t> order(places, backend_.device());
  copy_bytes(order.data(), backend_.device(), identity.data(), Device::Cpu, order.bytes());
  reset_stats();
  AugmentSettings plain = augment_;
  plain.enabled = fixed != nullptr;  // evaluation inputs are never augmented at random
  plain.use_fixed = fixed != nullptr;
  if (fixed) plain.fixed = *fixed;
  // The logits stay on the device until the pass ends: one copy to the host per pass, not a
  // synchronising one per batch. positions: 0, 1, ..., batch - 1 (gather_values as a copy).
  Array<float> device_logits(shard.size(), backend_.device());
  std::vector<int32_t> counting(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) counting[static_cast<size_t>(i)] = i;
  Array<int32_t> positions(batch, backend_.device());
  copy_bytes(positions.data(), backend_.device(), counting.data(), Device::Cpu, positions.bytes());
  std::vector<float> logits(static_cast<size_t>(shard.size()));
  const int size = data.size;
  for (int64_t first = 0; first < count; first += batch) {
    const int n = static_cast<int>(std::min<int64_t>(batch, count - first));  // real images
    const int run = static_cast<int>(std::min<int64_t>(batch, places - first));
    TensorView x{batch_images_.data(), {run, 1, size, size}, backend_.device()};
    TensorView labels{batch_labels_.data(), {n}, backend_.device()};
    backend_.gather_augment(data.images.data(), data.count, size, order.data() + first, plain, {},
                            x);
    backend_.gather_values(data.labels.data(), data.labels.numel(), order.data() + first, labels);
    ConstTensorView out = model_.forward(x, /*training=*/false);
    TensorView dlogits{dlogits_.data(), {n}, backend_.device()};
    backend_.sigmoid_bce(ConstTensorView{out.data, {n}, out.device}, labels, {}, dlogits,
                         loss_and_correct());
    backend_.gather_values(out.data, out.numel(), positions.data(),
                           TensorView{device_logits.data() + first, {n}, backend_.device()});
  }
  copy_bytes(logits.data(), Device::Cpu, device_logits.data(), backend_.device(),
             device_logits.bytes());
  if (sharded) {
    logits = group_->all_gather(logits);
    if (stats) *stats = read_group_stats(data.count);
  } else if (stats) {
    *stats = read_stats(data.count);
  }
  if (stats) stats->seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return logits;
}

}  // namespace pneumo
