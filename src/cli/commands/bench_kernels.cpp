// `pneumo bench kernels`: resolves the options (per-platform defaults), runs the CUDA suite or,
// without a GPU, the CPU suite (src/bench/), and writes the rows: a Markdown table on stdout, JSON
// lines and CSV on request. Rows finished before a fatal error are still written.
#include <algorithm>
#include <filesystem>
#include <iostream>

#include "bench/kernel_bench.hpp"
#include "cli/commands/commands.hpp"
#include "cli/commands/flag_text.hpp"
#include "cli/commands/guards.hpp"
#include "core/atomic_file.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"

namespace pneumo::cli {

namespace {

bench::KernelBenchConfig resolve(const BenchKernelsOptions& o, bool cuda) {
  bench::KernelBenchConfig config;
  config.batches = !o.batches.empty() ? o.batches
                   : o.quick        ? std::vector<int>{2}
                   : cuda           ? std::vector<int>{32, 256}
                                    : std::vector<int>{4};
  config.repeats = o.repeats > 0 ? o.repeats : o.quick ? 3 : cuda ? 20 : 5;
  config.warmup = o.warmup ? *o.warmup : (cuda && !o.quick) ? 3 : 1;
  config.ops = o.ops;
  config.threads = o.threads;
  return config;
}

void validate(const BenchKernelsOptions& o) {
  for (int batch : o.batches)
    if (batch < 1 || batch > 65535)
      throw UsageError("--batches: batch sizes must be in [1, 65535], got " +
                       std::to_string(batch));
  if (o.repeats < 0)
    throw UsageError("--repeats must be at least 1 (0: the default), got " + std::to_string(o.repeats));
  if (o.warmup && *o.warmup < 0)
    throw UsageError("--warmup must be at least 0, got " + std::to_string(*o.warmup));
  check_threads(o.threads);
  const auto& known = bench::known_ops();
  const std::string names = listed_with_commas(known);
  if (o.ops.empty()) throw UsageError("--ops: name at least one of " + names);
  for (const std::string& op : o.ops)
    if (std::find(known.begin(), known.end(), op) == known.end())
      throw UsageError("--ops: unknown op '" + op + "' (expected one of " + names + ")" +
                       did_you_mean(op, known));
}

}  // namespace

int run_bench_kernels(const BenchKernelsOptions& options) {
  validate(options);
  if (same_output_file(options.json, options.csv))
    throw UsageError("--json and --csv name the same file; give each its own");
  // Before the benchmark runs (minutes on a GPU), not after.
  check_output_file(options.json, "--json", OutputFile::BenchJsonLines);
  check_output_file(options.csv, "--csv", OutputFile::BenchCsv);
  const DeviceChoice choice =
      as_usage("--device", [&] { return parse_device_choice(options.device); });
  const bool cuda = choice == DeviceChoice::Cuda ||
                    (choice == DeviceChoice::Auto && cuda_device_available());
  if (choice == DeviceChoice::Auto && !cuda)
    std::cerr << "pneumo: no CUDA device found, benchmarking the CPU backend\n";
  const bench::KernelBenchConfig config = resolve(options, cuda);
  // The bf16 family times the conversions around the tensor-core convolutions: CUDA kernels,
  // which the CPU backend has no counterpart of. Asked alone, there is nothing to run.
  if (!cuda && config.wants("bf16")) {
    const char* why = "the bf16 conversions are CUDA kernels; the CPU backend has no rows for them";
    if (config.ops.size() == 1) throw UsageError(std::string("--ops bf16: ") + why);
    std::cerr << "pneumo: note: --ops bf16: " << why << "\n";
  }

  bench::BenchRun run;
  std::string failure;
  try {
    if (cuda)
      bench::run_cuda_suite(config, run);
    else
      bench::run_cpu_suite(config, run);
  } catch (const Error& e) {
    if (run.rows.empty()) throw;
    failure = e.what();
  }
  bench::finalize(run);
  std::cout << bench::markdown_report(run) << std::flush;
  if (!options.json.empty()) {
    std::string lines;
    for (const bench::BenchRow& row : run.rows) lines += bench::row_to_json(row, run).dump() + "\n";
    write_file_atomically(options.json, lines);
  }
  if (!options.csv.empty()) write_file_atomically(options.csv, bench::rows_to_csv(run));
  if (!failure.empty())
    throw Error(failure + " (the " + std::to_string(run.rows.size()) +
                " rows finished before it are above)");
  const int invalid = bench::count_invalid(run);
  if (invalid > 0) {
    std::cerr << "pneumo: error: " << invalid
              << " variant(s) failed validation; see the INVALID rows and their notes\n";
    return 1;
  }
  return 0;
}

}  // namespace pneumo::cli
