// `pneumo bench train`'s measurements (see train_bench.hpp). The CUDA specifics (events on the
// backend's stream, graph capture) live here, in the bench layer, not in the command line.
#include "bench/train_bench.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <map>
#include <random>
#include <sstream>

#include "cuda/cuda_backend.hpp"
#include "cuda_check.hpp"
#include "cuda/cuda_raii.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/trainer.hpp"

namespace pneumo::bench {

namespace {

constexpr int kPhases = 5;  // augment, forward, loss, backward, optimizer (StepPhase 1..5)

// Labelled marks through the steps of a pass: CUDA events on the backend's stream (the host clock
// on the CPU backend, whose ops finish before they return). Each label is credited with the time
// from the mark before it; a step begins with the mark "start", which is not timed from the end
// of the step before. With layer marks in between, the phase marks keep what the layers leave.
class MarkTimer {
 public:
  // expected: marks the pass will make, created up front so that timing adds no creation.
  MarkTimer(Backend& backend, size_t expected) : cuda_(dynamic_cast<CudaBackend*>(&backend)) {
    if (cuda_)
      for (size_t i = 0; i < expected; ++i) events_.emplace_back(cuda::Event::create());
    labels_.reserve(expected);
    host_marks_.reserve(expected);
  }

  void mark(std::string label) {
    if (cuda_) {
      if (labels_.size() == events_.size()) events_.emplace_back(cuda::Event::create());
      PNEUMO_CUDA_CHECK(cudaEventRecord(events_[labels_.size()].get(), cuda_->stream()),
                        "step mark '", label, "'");
    } else {
      host_marks_.push_back(std::chrono::steady_clock::now());
    }
    labels_.push_back(std::move(label));
  }

  PhaseMarker phase_marker() {
    return [this](StepPhase phase) { mark(kStepPhaseNames[static_cast<int>(phase)]); };
  }

  // Per label, in the order first marked: mean milliseconds and marks per step (call after
  // synchronising).
  struct Total {
    std::string label;
    double ms = 0.0;
    double per_step = 0.0;
  };
  std::vector<Total> totals() const {
    std::vector<Total> totals;
    std::map<std::string, size_t> index;
    size_t steps = 0;
    for (size_t i = 0; i < labels_.size(); ++i) {
      if (labels_[i] == kStepPhaseNames[0]) {
        ++steps;
        continue;
      }
      if (i == 0) continue;
      double ms = 0.0;
      if (cuda_) {
        float elapsed = 0.0f;
        PNEUMO_CUDA_CHECK(cudaEventElapsedTime(&elapsed, events_[i - 1].get(), events_[i].get()),
                          "timing '", labels_[i], "'");
        ms = elapsed;
      } else {
        ms = std::chrono::duration<double, std::milli>(host_marks_[i] - host_marks_[i - 1])
                 .count();
      }
      auto [at, added] = index.emplace(labels_[i], totals.size());
      if (added) totals.push_back({labels_[i]});
      totals[at->second].ms += ms;
      totals[at->second].per_step += 1.0;
    }
    for (auto& total : totals) {
      total.ms /= static_cast<double>(std::max<size_t>(steps, 1));
      total.per_step /= static_cast<double>(std::max<size_t>(steps, 1));
    }
    return totals;
  }

  // Mean milliseconds per step of one label (0 when it was never marked).
  static double ms_of(const std::vector<Total>& totals, const std::string& label) {
    for (const auto& total : totals)
      if (total.label == label) return total.ms;
    return 0.0;
  }

  static bool is_phase(const std::string& label) {
    return std::any_of(std::begin(kStepPhaseNames), std::end(kStepPhaseNames),
                       [&](const char* name) { return label == name; });
  }

 private:
  CudaBackend* cuda_;
  std::vector<cuda::Event> events_;
  std::vector<std::string> labels_;
  std::vector<std::chrono::steady_clock::time_point> host_marks_;
};

struct GraphTiming {
  bool captured = false;
  std::string error;  // why not, when not
  double step_ms = 0.0;
};

// Records one call of `step` as a CUDA Graph through the backend (the capture the trainer's
// --cuda-graph makes, in the same mode) and times `replays` launches of it with CUDA events. A
// recording the libraries refuse is reported, not fatal.
GraphTiming time_graph(CudaBackend& cuda, const std::function<void()>& step, int replays) {
  GraphTiming timing;
  cudaStream_t stream = cuda.stream();
  cuda.synchronize();
  std::unique_ptr<Recording> recording;
  try {
    recording = cuda.record(step);
  } catch (const Error& e) {
    timing.error = e.what();
    return timing;
  }
  for (int i = 0; i < 3; ++i) recording->replay();
  cuda::Event start = cuda::Event::create(), stop = cuda::Event::create();
  PNEUMO_CUDA_CHECK(cudaEventRecord(start.get(), stream), "graph timing");
  for (int i = 0; i < replays; ++i) recording->replay();
  PNEUMO_CUDA_CHECK(cudaEventRecord(stop.get(), stream), "graph timing");
  PNEUMO_CUDA_CHECK(cudaEventSynchronize(stop.get()), "graph timing");
  float ms = 0.0f;
  PNEUMO_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()), "graph timing");
  timing.step_ms = ms / replays;
  timing.captured = true;
  return timing;
}

// `count` random images of size x size pixels with random labels, on the host: eight pixels a
// draw (one draw a pixel took 0.5 to 1.5 s for the recipe's 166 M on the dev VM, eight 0.05 to
// 0.2 s).
struct HostImages {
  int64_t count = 0;
  int size = 0;
  std::vector<uint8_t> pixels, labels;
  ImageSet upload(Device device) const {
    return ImageSet::upload(device, pixels.data(), count, size, labels.data());
  }
};
HostImages random_host_images(int64_t count, int size, uint32_t seed) {
  std::mt19937_64 generator(seed);
  HostImages images{count, size, std::vector<uint8_t>(static_cast<size_t>(count) * size * size),
                    std::vector<uint8_t>(static_cast<size_t>(count))};
  for (size_t i = 0; i < images.pixels.size(); i += 8) {
    const uint64_t bits = generator();
    for (size_t k = 0; k < 8 && i + k < images.pixels.size(); ++k)
      images.pixels[i + k] = static_cast<uint8_t>(bits >> (8 * k));
  }
  for (auto& l : images.labels) l = static_cast<uint8_t>(generator() & 1u);
  return images;
}

// The same, on `device`.
ImageSet random_images(Device device, int64_t count, int size, uint32_t seed = 1) {
  return random_host_images(count, size, seed).upload(device);
}

AugmentSettings augment_settings(const TrainBenchOptions& options) {
  AugmentSettings augment;
  augment.enabled = options.augment;
  return augment;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t half = values.size() / 2;
  return values.size() % 2 ? values[half] : 0.5 * (values[half - 1] + values[half]);
}

// What Trainer::use_step_graphs did in the measured epochs.
nlohmann::json step_graph_json(const Trainer::StepGraphStats& stats) {
  return {{"replayed", stats.replayed},
          {"recorded", stats.recorded},
          {"issued", stats.issued},
          {"refused", stats.refused}};
}

std::string fixed(double value, int digits) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}


// The random images, model and trainer one batch size is measured on, and each measurement
// (`layers`: the backend's op observer marks every op).
class StepBench {
 public:
  StepBench(Backend& backend, const TrainBenchOptions& options, int batch)
      : backend_(backend),
        options_(options),
        batch_(batch),
        // Enough distinct images that a step never reuses one (4 batches' worth, at least
        // 256), and at least an epoch's worth for the epoch measurement.
        epoch_images_(recipe_train_images(options, backend.device(), batch)),
        count_(std::max({int64_t{256}, 4 * int64_t{batch}, epoch_images_})),
        data_(random_images(backend.device(), count_, ModelConfig{}.input_size)),
        order_(static_cast<size_t>(count_)),
        device_order_(count_, backend.device()),
        model_(backend, bench_model_config(options), batch),
        trainer_(backend, model_, batch, augment_settings(options), 1),
        pass_steps_(std::min(options.steps, 50)) {
    trainer_.use_step_graphs(options.cuda_graph);  // train_epoch only (time_epoch)
    for (int64_t i = 0; i < count_; ++i) order_[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    copy_bytes(device_order_.data(), backend.device(), order_.data(), Device::Cpu,
               device_order_.bytes());
    model_.initialize(1);
  }

  // The images the one-epoch pass trains on (with --drop-last, its whole batches).
  int64_t epoch_images() const {
    return options_.drop_last ? epoch_images_ - epoch_images_ % batch_ : epoch_images_;
  }

  // 1. Milliseconds per step, end to end, after `warmup` untimed steps.
  double time_steps() {
    for (int i = 0; i < options_.warmup; ++i) step(i);
    backend_.synchronize();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < options_.steps; ++i) step(options_.warmup + i);
    backend_.synchronize();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return seconds / options_.steps * 1e3;
  }

  // 2. Milliseconds per phase, from marks in a pass of up to 50 steps of its own (so that the
  // events cannot slow pass 1).
  nlohmann::json time_phases() {
    MarkTimer phases(backend_, marked_steps() * kPhaseMarks);
    const auto phase_ms = marked_pass(phases);
    nlohmann::json json;
    for (int p = 1; p <= kPhases; ++p)
      json[kStepPhaseNames[p]] = MarkTimer::ms_of(phase_ms, kStepPhaseNames[p]);
    return json;
  }

  // Each layer's forward and backward, from a pass with a mark after every one.
  nlohmann::json time_layers() {
    MarkTimer layers(backend_, marked_steps() * (kPhaseMarks + 2 * model_.layer_count()));
    model_.set_layer_marker([&](size_t layer, bool backward) {
      layers.mark(model_.layer_name(layer) + (backward ? " backward" : " forward"));
    });
    const auto layer_ms = marked_pass(layers);
    model_.set_layer_marker({});
    nlohmann::json json;
    for (size_t i = 0; i < model_.layer_count(); ++i) {
      const std::string name = model_.layer_name(i);
      json.push_back({{"layer", name},
                      {"forward_ms", MarkTimer::ms_of(layer_ms, name + " forward")},
                      {"backward_ms", MarkTimer::ms_of(layer_ms, name + " backward")}});
    }
    return json;
  }

  // Each backend op, from a pass with a mark after every one.
  nlohmann::json time_ops() {
    // Up to five ops a layer, forward and backward together (the pool grows past that).
    MarkTimer ops(backend_, marked_steps() * (kPhaseMarks + 5 * model_.layer_count()));
    backend_.set_op_observer([&](const char* op, const Shape& shape) {
      ops.mark(std::string(op) + " " + shape.str());
    });
    const auto op_ms = marked_pass(ops);
    backend_.set_op_observer({});
    nlohmann::json json;
    for (const auto& total : op_ms)
      if (!MarkTimer::is_phase(total.label))  // phase marks keep only the gaps between ops
        json.push_back({{"op", total.label}, {"ms", total.ms}, {"calls_per_step", total.per_step}});
    return json;
  }

  // 3. One step as a CUDA Graph, replayed; step_ms: pass 1's, for the speed-up.
  nlohmann::json time_as_graph(double step_ms) {
    auto* cuda = dynamic_cast<CudaBackend*>(&backend_);
    if (!cuda) return {{"error", "not applicable on the CPU backend"}};
    const GraphTiming graph = time_graph(*cuda, [&] { step(0); }, options_.steps);
    if (!graph.captured) return {{"error", graph.error}};
    return {{"step_ms", graph.step_ms},
            {"images_per_second", batch_ / graph.step_ms * 1e3},
            {"speedup", step_ms / graph.step_ms}};
  }

  // An epoch through the trainer's loop (host order upload, progress reads, stats read): the
  // progress reads happen only for a progress callback, so one that prints nothing is given.
  EpochStats time_epoch() {
    std::vector<int32_t> epoch_order(order_.begin(), order_.begin() + epoch_images_);
    if (options_.drop_last) epoch_order = whole_batches(std::move(epoch_order), batch_);
    return trainer_.train_epoch(data_, epoch_order, 1, [](int64_t, int64_t, const EpochStats&) {});
  }
  const Trainer& trainer() const { return trainer_; }

 private:
  static constexpr size_t kPhaseMarks = kPhases + 1;  // "start" and one per phase

  void step(int i) {
    const int64_t slots = count_ / batch_;
    trainer_.train_step(data_, device_order_.data() + (i % slots) * batch_, batch_, 0,
                        static_cast<uint32_t>(i));
  }

  size_t marked_steps() const { return static_cast<size_t>(pass_steps_); }

  std::vector<MarkTimer::Total> marked_pass(MarkTimer& timer) {
    trainer_.set_phase_marker(timer.phase_marker());
    for (int i = 0; i < pass_steps_; ++i) step(i);
    backend_.synchronize();
    trainer_.set_phase_marker({});
    return timer.totals();
  }

  Backend& backend_;
  const TrainBenchOptions& options_;
  const int batch_;
  const int64_t epoch_images_;
  const int64_t count_;
  ImageSet data_;
  std::vector<int32_t> order_;
  Array<int32_t> device_order_;
  Model model_;
  Trainer trainer_;
  const int pass_steps_;
};

// Where the recipe's first epoch spends the time its second does not (--first-calls): for each
// of the two epochs, the device is synchronised as every backend op ends (the backend observes
// an op after running it) and the time since the previous op ended is charged to the op that
// just ended (the host code before it, its host side and its GPU work), keyed by op and main
// operand's shape. An op's first-call costs (lazy kernel
// loading, cuDNN plans, the backend's choices, allocations) are then its epoch 1 time less its
// epoch 2 time, since both epochs run the same ops on the same shapes.
class OpTimeProbe {
 public:
  void start(Backend& backend, int epoch) {
    epoch_ = epoch;
    backend.synchronize();
    const Clock::time_point now = Clock::now();
    epoch_start_[epoch_] = last_ = now;
    backend.set_op_observer([this, &backend](const char* op, const Shape& shape) {
      backend.synchronize();
      charge(std::string(op) + " " + shape.str());
    });
  }
  void stop(Backend& backend) {
    backend.set_op_observer({});
    backend.synchronize();
    charge("(after the epoch's last op)");
    epoch_seconds_[epoch_] = std::chrono::duration<double>(last_ - epoch_start_[epoch_]).count();
  }

  // {epoch_seconds: the two synchronised epochs (each the sum of its ops' charges), ops: [{op,
  // calls, ms, first_call_ms, excess_ms}] in decreasing excess_ms (epoch 1's ms less epoch 2's)}.
  nlohmann::json json() const {
    std::vector<const Entry*> sorted;
    for (const Entry& e : entries_) sorted.push_back(&e);
    std::stable_sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) {
      return a->ms[0] - a->ms[1] > b->ms[0] - b->ms[1];
    });
    nlohmann::json ops = nlohmann::json::array();
    for (const Entry* e : sorted)
      ops.push_back({{"op", e->label},
                     {"calls", {e->calls[0], e->calls[1]}},
                     {"ms", {e->ms[0], e->ms[1]}},
                     {"first_call_ms", e->first_call_ms},
                     {"excess_ms", e->ms[0] - e->ms[1]}});
    return {{"epoch_seconds", {epoch_seconds_[0], epoch_seconds_[1]}}, {"ops", ops}};
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::string label;
    int64_t calls[2] = {0, 0};
    double ms[2] = {0.0, 0.0};
    double first_call_ms = 0.0;  // epoch 1's first call
  };

  // Charges the time since the last op ended to `label`, the op that has just ended.
  void charge(const std::string& label) {
    const Clock::time_point now = Clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    auto [it, added] = index_.try_emplace(label, entries_.size());
    if (added) entries_.push_back(Entry{label});
    Entry& e = entries_[it->second];
    if (epoch_ == 0 && e.calls[0] == 0) e.first_call_ms = ms;
    e.ms[epoch_] += ms;
    ++e.calls[epoch_];
    last_ = now;
  }

  int epoch_ = 0;
  Clock::time_point last_, epoch_start_[2];
  double epoch_seconds_[2] = {0.0, 0.0};
  std::vector<Entry> entries_;  // in the order first charged
  std::map<std::string, size_t> index_;
};

}  // namespace

ModelConfig bench_model_config(const TrainBenchOptions& options) {
  ModelConfig config;
  config.fused_block_tails = options.fused_block_tails;
  config.bf16_activations = options.fused_block_tails && options.precision == "bf16";
  return config;
}

TrainBenchOptions with_device_defaults(TrainBenchOptions options, Device device) {
  const bool cpu = device == Device::Cpu;
  if (options.batches.empty()) options.batches = cpu ? std::vector<int>{32} : std::vector<int>{32, 256};
  if (options.steps == 0) options.steps = cpu ? 10 : 100;
  if (options.warmup < 0) options.warmup = cpu ? 2 : 20;
  return options;
}

int64_t recipe_train_images(const TrainBenchOptions& options, Device device, int batch) {
  if (options.epoch_images > 0) return options.epoch_images;
  return device == Device::Cpu ? 2 * int64_t{batch} : kRecipeTrainImages;
}

nlohmann::json bench_train_recipe(const BackendFactory& make, const TrainBenchOptions& options,
                                  int epochs) {
  using Clock = std::chrono::steady_clock;
  Clock::time_point start = Clock::now();
  std::unique_ptr<Backend> backend = make();
  backend->synchronize();
  // The backend alone: on CUDA the context, cuDNN and cuBLAS (what any run pays before its data).
  const double backend_seconds = seconds_since(start);
  const int batch = options.batches.empty() ? 32 : options.batches.front();
  const int64_t train_images = recipe_train_images(options, backend->device(), batch);
  const int64_t val_images = std::max<int64_t>(
      1, (train_images * kRecipeValImages + kRecipeTrainImages / 2) / kRecipeTrainImages);
  const int size = ModelConfig{}.input_size;
  // Making the random images stands in for reading a dataset, which no clock here covers (the
  // PyTorch reference draws its images on the device): the clock stops while they are drawn, and
  // their upload, which a run pays too, counts.
  const Clock::time_point drawing = Clock::now();
  const HostImages train_host = random_host_images(train_images, size, 1);
  const HostImages val_host = random_host_images(val_images, size, 2);
  const double drawing_seconds = seconds_since(drawing);
  start += Clock::now() - drawing;
  const ImageSet train = train_host.upload(backend->device());
  const ImageSet val = val_host.upload(backend->device());
  const int val_batch = options.val_batch > 0 ? options.val_batch : batch;
  Model model(*backend, bench_model_config(options), std::max(batch, val_batch));
  model.initialize(1);
  Trainer trainer(*backend, model, batch, augment_settings(options), 1);
  trainer.use_step_graphs(options.cuda_graph);
  trainer.set_predict_batch(val_batch);
  backend->synchronize();
  const double setup_seconds = seconds_since(start);

  std::vector<int32_t> order(static_cast<size_t>(train_images));
  std::vector<double> epoch_seconds, train_seconds, val_seconds;
  OpTimeProbe probe;
  const bool probing = options.first_calls;
  PNEUMO_CHECK(!probing || (epochs >= 2 && !options.cuda_graph),
               "bench train --first-calls: needs 2 or more recipe epochs and no --cuda-graph");
  for (int epoch = 0; epoch < epochs; ++epoch) {
    if (probing && epoch < 2) probe.start(*backend, epoch);
    const Clock::time_point epoch_start = Clock::now();
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
    std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<uint32_t>(epoch)));
    const EpochStats stats =
        trainer.train_epoch(train, options.drop_last ? whole_batches(order, batch) : order,
                            static_cast<uint32_t>(epoch));
    const Clock::time_point val_start = Clock::now();
    trainer.predict_logits(val);  // returns once the logits are on the host
    train_seconds.push_back(stats.seconds);
    val_seconds.push_back(seconds_since(val_start));
    epoch_seconds.push_back(seconds_since(epoch_start));
    if (probing && epoch < 2) probe.stop(*backend);
  }
  const double total_seconds = seconds_since(start);
  const std::vector<double> later(epoch_seconds.begin() + std::min<size_t>(1, epoch_seconds.size()),
                                  epoch_seconds.end());
  nlohmann::json line = {{"impl", "pneumo"},
                         {"measure", "recipe"},
                         {"backend", backend->name()},
                         {"precision", options.precision},
                         {"fused_block_tails", options.fused_block_tails},
                         {"cuda_graph", options.cuda_graph},
                         {"drop_last", options.drop_last},
                         {"deterministic", options.deterministic},
                         {"augment", options.augment},
                         {"batch", batch},
                         {"val_batch", val_batch},
                         {"epochs", epochs},
                         {"train_images", train_images},
                         {"val_images", val_images},
                         {"total_seconds", total_seconds},
                         {"setup_seconds", setup_seconds},
                         {"setup_backend_seconds", backend_seconds},
                         {"random_images_seconds", drawing_seconds},  // outside every clock
                         {"epoch_seconds", epoch_seconds},
                         {"train_seconds", train_seconds},
                         {"val_seconds", val_seconds}};
  if (options.cuda_graph) line["step_graphs"] = step_graph_json(trainer.step_graph_stats());
  // Whether the tuning cache spared this run its timing and searches (CUDA): a warm recipe and
  // a cold one are different measurements, and the clock above holds whichever this was.
  const nlohmann::json choices = backend->report(batch);
  if (choices.contains("tuning_cache")) line["tuning_cache"] = choices["tuning_cache"];
  if (probing) line["first_calls"] = probe.json();
  if (!epoch_seconds.empty()) line["first_epoch_seconds"] = epoch_seconds.front();
  if (!later.empty()) {
    line["steady_epoch_seconds"] = median(later);
    line["first_epoch_overhead"] = epoch_seconds.front() / median(later) - 1.0;
  }
  return line;
}

nlohmann::json bench_train_batch(Backend& backend, const TrainBenchOptions& options, int batch) {
  reset_peak_memory(backend.device());
  StepBench bench(backend, options, batch);
  const double step_ms = bench.time_steps();
  const nlohmann::json phases = bench.time_phases();
  nlohmann::json layers, ops;
  if (options.layers) {
    layers = bench.time_layers();
    ops = bench.time_ops();
  }
  const nlohmann::json graph = bench.time_as_graph(step_ms);
  const EpochStats epoch = bench.time_epoch();

  const bool on_cpu = backend.device() == Device::Cpu;
  nlohmann::json line = {{"impl", "pneumo"},
                         {"backend", backend.name()},
                         {"device", on_cpu ? "CPU" : "CUDA"},
                         {"batch", batch},
                         {"precision", options.precision},
                         {"deterministic", options.deterministic},
                         {"cudnn_only", options.cudnn_only},
                         {"graph_engines", options.graph_engines},
                         {"fused_block_tails", options.fused_block_tails},
                         {"cuda_graph", options.cuda_graph},
                         {"drop_last", options.drop_last},
                         {"augment", options.augment},
                         {"steps", options.steps},
                         {"warmup", options.warmup},  // 0: the steps timed include a cold one
                         {"step_ms_mean", step_ms},
                         {"images_per_second", batch / step_ms * 1e3},
                         {"phases_ms", phases},
                         {"graph", graph},
                         {"epoch_images", bench.epoch_images()},
                         {"epoch_seconds", epoch.seconds},
                         {"epoch_images_per_second", bench.epoch_images() / epoch.seconds}};
  // Memory: the most pneumo held while this batch size ran (images, model, trainer, the
  // backend's cuDNN workspace, which stays from one batch size to the next); on CUDA also
  // what the device has in use now, the CUDA context and libraries (and any other
  // process) included.
  if (options.cuda_graph) line["step_graphs"] = step_graph_json(bench.trainer().step_graph_stats());
  constexpr double kMiB = 1 << 20;
  line["memory_peak_mib"] = static_cast<double>(memory_stats(backend.device()).peak) / kMiB;
  if (!on_cpu) {
    size_t free_bytes = 0, total_bytes = 0;
    PNEUMO_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes), "device memory in use");
    line["device_memory_in_use_mib"] = static_cast<double>(total_bytes - free_bytes) / kMiB;
  }
  const nlohmann::json report = backend.report(batch);  // CUDA: algorithm searches, choices
  for (const auto& [key, value] : report.items()) line[key] = value;
  if (!layers.is_null()) line["layers_ms"] = layers;
  if (!ops.is_null()) line["ops_ms"] = ops;
  return line;
}

void write_train_bench_summary(const std::vector<nlohmann::json>& rows,
                               const TrainBenchOptions& options, const Backend& backend,
                               std::ostream& out) {
  const bool on_cpu = backend.device() == Device::Cpu;
  out << "\n### pneumo bench train on " << (on_cpu ? "the CPU backend: " : "CUDA: ")
      << backend.name() << ", " << options.precision << ", augmentation "
      << (options.augment ? "on" : "off")
      << (options.cudnn_only ? ", cuDNN only (no kernel of ours timed against it)" : "")
      << (options.fused_block_tails ? ", fused block tails" : "")
      << (bench_model_config(options).bf16_activations ? " (bfloat16 between them)" : "")
      << (options.cuda_graph ? ", epochs' steps as CUDA graphs" : "")
      << (options.drop_last ? ", epochs without their last, partial batch" : "")
      << (options.warmup == 0 ? "; no warm-up step (--warmup 0): step ms, images/s and graph gain "
                                "include a cold first step, not a speed"
                              : "")
      << "\n\n"
      << "| batch | step ms | images/s | augment ms | forward ms | loss ms | backward ms | "
         "optimizer ms | graph step ms | graph gain | epoch images/s | memory MiB |\n"
      << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& row : rows) {
    out << "| " << row["batch"].get<int>() << " | " << fixed(row["step_ms_mean"], 3) << " | "
        << fixed(row["images_per_second"], 0);
    for (int p = 1; p <= kPhases; ++p)
      out << " | " << fixed(row["phases_ms"][kStepPhaseNames[p]].get<double>(), 3);
    if (row["graph"].contains("step_ms"))
      out << " | " << fixed(row["graph"]["step_ms"], 3) << " | "
          << fixed(row["graph"]["speedup"], 2) << "x";
    else
      out << " | n/a | n/a";
    out << " | " << fixed(row["epoch_images_per_second"], 0) << " | "
        << fixed(row["memory_peak_mib"], 0) << " |\n";
  }
  if (options.layers && !rows.empty()) {
    out << "\nPer layer, ms per step (" << (on_cpu ? "host clock" : "CUDA events")
        << " after every layer, mean over the steps of a pass of its own):\n\n| layer |";
    for (const auto& row : rows)
      out << " forward b" << row["batch"].get<int>() << " | backward b" << row["batch"].get<int>()
          << " |";
    out << "\n|---|";
    for (size_t i = 0; i < rows.size(); ++i) out << "---:|---:|";
    out << "\n";
    const auto& first = rows.front()["layers_ms"];
    for (size_t i = 0; i < first.size(); ++i) {
      out << "| " << first[i]["layer"].get<std::string>() << " |";
      for (const auto& row : rows)
        out << " " << fixed(row["layers_ms"][i]["forward_ms"], 3) << " | "
            << fixed(row["layers_ms"][i]["backward_ms"], 3) << " |";
      out << "\n";
    }
    for (const auto& row : rows) {
      out << "\nPer backend op at batch " << row["batch"].get<int>()
          << ", in step order (a mark after every op, a pass of its own, which the marks slow;\n"
          << "the share is of the ops' total in that pass):\n\n"
          << "| op, main operand | calls per step | ms per step | % of the ops' ms |\n"
          << "|---|---:|---:|---:|\n";
      double step = 0.0;
      for (const auto& op : row["ops_ms"]) step += op["ms"].get<double>();
      for (const auto& op : row["ops_ms"])
        out << "| " << op["op"].get<std::string>() << " | " << fixed(op["calls_per_step"], 1)
            << " | " << fixed(op["ms"], 3) << " | "
            << fixed(100.0 * op["ms"].get<double>() / step, 1) << " |\n";
    }
  }
  for (const auto& row : rows) {
    if (!row.contains("implementation_choices") || row["implementation_choices"].empty()) continue;
    out << "\ncuDNN or our kernel at batch " << row["batch"].get<int>()
        << " (mean of 5 calls each, timed on the first call; -1: not timed; for the graph API\n"
        << "rows: cuDNN's legacy cudnnFind pick against the graph API's fastest engine; source:\n"
        << "timed now, forced, or taken from the tuning cache with the times it was decided on):\n\n"
        << "| op | input N, C, H, W | cuDNN ms | ours (or graph engine) ms | runs | source |\n"
        << "|---|---|---:|---:|---|---|\n";
    for (const auto& choice : row["implementation_choices"]) {
      const auto& in = choice["input"];
      out << "| " << choice["op"].get<std::string>() << " | " << in[0] << ", " << in[1] << ", "
          << in[2] << ", " << in[3] << " | " << fixed(choice["cudnn_ms"], 4) << " | "
          << fixed(choice["kernel_ms"], 4) << " | " << choice["runs"].get<std::string>();
      const std::string rejected = choice["rejected"].get<std::string>();
      if (!rejected.empty()) out << " (not ours: " << rejected << ")";
      out << " | " << choice.value("source", "") << " |\n";
    }
  }
  for (const auto& row : rows) {
    if (!row.contains("conv_searches") || row["conv_searches"].empty()) continue;
    out << "\ncuDNN's algorithm searches at batch " << row["batch"].get<int>()
        << " (ms as cuDNN timed each algorithm once; none timed when the tuning cache had it):\n\n"
        << "| conv N, C, H, W -> K | direction | kept algo | ms | fastest algo | ms | "
           "deterministic | source |\n|---|---|---:|---:|---:|---:|---|---|\n";
    for (const auto& search : row["conv_searches"]) {
      const auto& shape = search["shape"];
      out << "| " << shape[0] << ", " << shape[1] << ", " << shape[2] << ", " << shape[3]
          << " -> " << shape[4] << " | " << search["direction"].get<std::string>();
      for (const char* which : {"chosen", "fastest"}) {
        const auto& trial = search[which];
        if (trial.is_null())
          out << " | none | n/a";
        else
          out << " | " << trial["algo"] << " | "
              << (trial.contains("ms") ? fixed(trial["ms"], 3) : std::string("n/a"));
      }
      const auto& fastest = search["fastest"];
      const char* deterministic = fastest.is_null()                     ? "n/a"
                                  : fastest["deterministic"].get<bool>() ? "yes"
                                                                         : "no";
      out << " | " << deterministic << " | " << search.value("source", "") << " |\n";
    }
  }
  for (const auto& row : rows)
    if (row["graph"].contains("error") && !on_cpu)
      out << "\nCUDA Graph capture failed at batch " << row["batch"] << ": "
          << row["graph"]["error"].get<std::string>() << "\n";
}

void write_recipe_summary(const nlohmann::json& recipe, std::ostream& out) {
  out << "\n### The recipe end to end: " << recipe["backend"].get<std::string>() << ", "
      << recipe["precision"].get<std::string>()
      << (recipe.value("fused_block_tails", false) ? ", fused block tails" : "")
      << (recipe.value("fused_block_tails", false) && recipe["precision"] == "bf16"
              ? " (bfloat16 between them)"
              : "")
      << (recipe.value("cuda_graph", false) ? ", steps as CUDA graphs" : "") << ", batch "
      << recipe["batch"].get<int>() << " (validation " << recipe.value("val_batch", 0) << "), "
      << recipe["epochs"].get<int>() << " epochs of " << recipe["train_images"].get<int64_t>()
      << " random images"
      << (recipe.value("drop_last", false) ? " (the last, partial batch left out)" : "")
      << ", each followed by a pass over " << recipe["val_images"].get<int64_t>()
      << "\n\n| total s | set-up s (backend) | first epoch s | steady epoch s (median) | "
         "first-epoch overhead |\n|---:|---:|---:|---:|---:|\n| "
      << fixed(recipe["total_seconds"], 2) << " | " << fixed(recipe["setup_seconds"], 2) << " ("
      << (recipe.contains("setup_backend_seconds") ? fixed(recipe["setup_backend_seconds"], 2)
                                                   : std::string("n/a"))
      << ") | ";
  out << (recipe.contains("first_epoch_seconds") ? fixed(recipe["first_epoch_seconds"], 2) : "n/a")
      << " | "
      << (recipe.contains("steady_epoch_seconds") ? fixed(recipe["steady_epoch_seconds"], 2)
                                                  : "n/a")
      << " | "
      << (recipe.contains("first_epoch_overhead")
              ? fixed(100.0 * recipe["first_epoch_overhead"].get<double>(), 0) + "%"
              : std::string("n/a"))
      << " |\n\nPer epoch, training steps / validation pass, s:";
  for (size_t i = 0; i < recipe["epoch_seconds"].size(); ++i)
    out << (i ? ", " : " ") << fixed(recipe["train_seconds"][i], 2) << " / "
        << fixed(recipe["val_seconds"][i], 2);
  out << "\n";
  const std::string cache = describe_tuning_cache(recipe);
  if (!cache.empty()) out << "\n" << char(std::toupper(cache[0])) << cache.substr(1) << "\n";
  if (recipe.contains("first_calls")) {
    const auto& probe = recipe["first_calls"];
    constexpr size_t kShown = 15;
    out << "\nWhere epoch 1 spends what epoch 2 does not (--first-calls: the device synchronised "
           "at every op of both, so the times above are not the recipe's speed): epochs "
        << fixed(probe["epoch_seconds"][0], 2) << " and " << fixed(probe["epoch_seconds"][1], 2)
        << " s, the difference of "
        << fixed(1e3 * (probe["epoch_seconds"][0].get<double>() -
                        probe["epoch_seconds"][1].get<double>()),
                 1)
        << " ms charged op by op; the " << std::min(kShown, probe["ops"].size())
        << " largest:\n\n| op (main operand) | calls | epoch 1 ms | epoch 2 ms | first call ms | "
           "epoch 1 - 2 ms |\n|---|---:|---:|---:|---:|---:|\n";
    for (size_t i = 0; i < probe["ops"].size() && i < kShown; ++i) {
      const auto& op = probe["ops"][i];
      out << "| " << op["op"].get<std::string>() << " | " << op["calls"][0].get<int64_t>() << " | "
          << fixed(op["ms"][0], 1) << " | " << fixed(op["ms"][1], 1) << " | "
          << fixed(op["first_call_ms"], 2) << " | " << fixed(op["excess_ms"], 1) << " |\n";
    }
  }
  if (recipe.contains("step_graphs")) {
    const auto& g = recipe["step_graphs"];
    out << "\nSteps: " << g["replayed"].get<int64_t>() << " replayed from "
        << g["recorded"].get<int64_t>() << " recording(s), " << g["issued"].get<int64_t>()
        << " issued op by op"
        << (g["refused"].get<std::string>().empty()
                ? std::string()
                : "; not recorded: " + g["refused"].get<std::string>())
        << "\n";
  }
}

}  // namespace pneumo::bench
