// `pneumo bench train`: the command line's side of src/bench/train_bench.hpp (which holds what
// is measured and how): checks the flags, makes the backend, prints one JSON line per batch size on
// stdout and the Markdown summary on stderr at the end.
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/train_bench.hpp"
#include "cli/commands/commands.hpp"
#include "cli/commands/flag_text.hpp"
#include "cli/commands/guards.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"

namespace pneumo::cli {

int run_bench_train(const BenchTrainOptions& given) {
  // (An explicit --steps 0 or --warmup -1 was refused with the flags; here 0 and -1 are unset.)
  if (given.steps < 0 || given.warmup < -1)
    throw UsageError("--steps must be at least 1 and --warmup at least 0");
  if (given.epoch_images < 0) throw UsageError("--epoch-images must be >= 0");
  if (given.recipe_epochs < -1)
    throw UsageError("--recipe-epochs must be >= 0 (or -1: the default)");
  for (int batch : given.batches)
    if (batch < 1 || batch > 65535)
      throw UsageError("--batch: batch sizes must be in [1, 65535], got " + std::to_string(batch));
  check_threads(given.threads);
  BackendOptions backend_options;
  as_usage("--precision", [&] { apply_precision(given.precision, backend_options); });
  backend_options.device =
      as_usage("--device", [&] { return parse_device_choice(given.device); });
  backend_options.deterministic = given.deterministic;
  backend_options.cudnn_only = given.cudnn_only;
  backend_options.graph_engines = given.graph_engines;
  backend_options.cpu_threads = given.threads;
  backend_options.tuning_cache = tuning_cache_path(given.tuning_cache);
  // The recipe end to end first, on a backend of its own: in a new process, as a training run.
  const bool on_cuda = backend_options.device == DeviceChoice::Cuda ||
                       (backend_options.device == DeviceChoice::Auto && cuda_device_available());
  const BenchTrainOptions options =
      bench::with_device_defaults(given, on_cuda ? Device::Cuda : Device::Cpu);
  const int recipe_epochs = options.recipe_epochs >= 0 ? options.recipe_epochs : on_cuda ? 12 : 0;
  if (options.first_calls && recipe_epochs < 2)
    throw UsageError("--first-calls compares the recipe's first two epochs: it needs "
                     "--recipe-epochs 2 or more (the default is 12 on CUDA, none on the CPU)");
  // Refused before anything is timed: the default epochs hold two batches or more.
  if (options.drop_last && options.epoch_images > 0)
    for (int batch : options.batches)
      if (options.epoch_images < batch)
        throw UsageError("--drop-last: --epoch-images " + std::to_string(options.epoch_images) +
                         " holds no full batch of " + std::to_string(batch));
  if (options.first_calls && options.cuda_graph)
    throw UsageError("--first-calls synchronises at every op, which a CUDA graph's recording "
                     "cannot: leave out --cuda-graph");
  nlohmann::json recipe;
  // What runs, before it runs: on the CPU a batch takes tens of seconds.
  if (recipe_epochs > 0)
    std::cerr << "bench train: the recipe end to end, " << recipe_epochs << " epochs\n";
  if (recipe_epochs > 0) {
    recipe = bench::bench_train_recipe([&] { return make_backend(backend_options); }, options,
                                       recipe_epochs);
    std::cout << recipe.dump() << std::endl;
  }
  auto backend = make_backend(backend_options);
  std::vector<nlohmann::json> rows;
  for (int batch : options.batches) {
    std::cerr << "bench train: batch " << batch << ", " << options.warmup << " warm-up and "
              << options.steps << " timed steps, then the step's phases and an epoch\n";
    try {
      rows.push_back(bench::bench_train_batch(*backend, options, batch));
      std::cout << rows.back().dump() << std::endl;
    } catch (const OutOfMemory& e) {
      throw Error(out_of_memory_advice(e, batch, "--batch"));
    }
  }
  if (!recipe.is_null()) bench::write_recipe_summary(recipe, std::cerr);
  bench::write_train_bench_summary(rows, options, *backend, std::cerr);
  return 0;
}

}  // namespace pneumo::cli
