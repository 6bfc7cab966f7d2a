// `pneumo bench train`: throughput of the whole training step on device-resident random images.
// Timing: `warmup` steps first (cuDNN algorithm search, first-touch allocations), then `steps`
// steps between two synchronisations; the host clock over that span gives images/s.
#include <chrono>
#include <iostream>
#include <random>

#include <nlohmann/json.hpp>

#include "cli/commands/commands.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/trainer.hpp"

namespace pneumo::cli {

int run_bench_train(const BenchTrainOptions& options) {
  if (options.steps < 1 || options.warmup < 0)
    throw Error("--steps must be at least 1 and --warmup at least 0");
  BackendOptions backend_options;
  backend_options.device = parse_device_choice(options.device);
  backend_options.allow_tf32 = options.precision == "tf32";
  backend_options.cpu_threads = options.threads;
  if (options.precision != "fp32" && options.precision != "tf32")
    throw Error("--precision must be fp32 or tf32, got '" + options.precision + "'");
  auto backend = make_backend(backend_options);
  const ModelConfig config;
  const int size = config.input_size;
  for (int batch : options.batches) {
    if (batch < 1) throw Error("batch sizes must be positive, got " + std::to_string(batch));
    // Enough distinct images that a step never reuses one: 4 batches' worth, at least 256.
    const int64_t count = std::max<int64_t>(256, 4 * static_cast<int64_t>(batch));
    std::mt19937 generator(1);
    std::vector<uint8_t> pixels(static_cast<size_t>(count) * size * size), labels(count);
    for (auto& p : pixels) p = static_cast<uint8_t>(generator());
    for (auto& l : labels) l = static_cast<uint8_t>(generator() & 1u);
    ImageSet data = ImageSet::upload(backend->device(), pixels.data(), count, size, labels.data());
    std::vector<int32_t> order(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) order[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    Array<int32_t> device_order(count, backend->device());
    copy_bytes(device_order.data(), backend->device(), order.data(), Device::Cpu,
               device_order.bytes());

    Model model(*backend, config, batch);
    model.initialize(1);
    AugmentSettings augment;
    augment.enabled = options.augment;
    Trainer trainer(*backend, model, batch, augment, 1);
    const int64_t slots = count / batch;
    auto step = [&](int i) {
      trainer.train_step(data, device_order.data() + (i % slots) * batch, batch, 0,
                         static_cast<uint32_t>(i));
    };
    for (int i = 0; i < options.warmup; ++i) step(i);
    backend->synchronize();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < options.steps; ++i) step(options.warmup + i);
    backend->synchronize();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    nlohmann::json line = {{"impl", "pneumo"},
                           {"backend", backend->name()},
                           {"batch", batch},
                           {"precision", options.precision},
                           {"augment", options.augment},
                           {"steps", options.steps},
                           {"step_ms_mean", seconds / options.steps * 1e3},
                           {"images_per_second", batch * options.steps / seconds}};
    std::cout << line.dump() << std::endl;
  }
  return 0;
}

}  // namespace pneumo::cli
