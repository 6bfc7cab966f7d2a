// `pneumo bench kernels`: the project's hand-written kernels against cuDNN on the model's exact
// layer shapes (or, without a GPU, the CPU backend's ops), every variant validated against a CPU
// reference before it is timed. One row per variant, written as a Markdown table, JSON lines, CSV.
// Files: cpu_suite.cpp and cuda_suite.cpp (the two suites), timing.hpp (medians, cache flushes,
// CUDA events, device peaks), reference.hpp (inputs and naive fp64 references), report.cpp
// (comparison, derived columns, output formats).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pneumo/tensor.hpp"

namespace pneumo::bench {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The op families --ops accepts, in table order (the default: all of them).
const std::vector<std::string>& known_ops();

struct KernelBenchConfig {
  std::vector<int> batches;
  int repeats = 20;
  int warmup = 3;
  std::vector<std::string> ops = known_ops();
  int threads = 0;  // CPU backend threads, 0: all (the CPU suite, and CPU references)
  bool wants(const std::string& op) const;
};

// One block of the model (docs/recipe.md): its 3x3 'same' convolution on size x size inputs, and the
// max-pool over that convolution's output.
struct LayerShape {
  std::string conv, pool;  // "conv1", "pool1"
  int64_t in_channels, out_channels, size;
};
const std::vector<LayerShape>& model_layers();

enum class Status { Ok, Invalid, Skipped };
const char* to_string(Status status);

// actual vs expected, element by element: an element passes when it is finite and
// |a - e| <= rtol * max|expected| + rtol * |e| (the backend parity tests' rule). The op passes when
// the share of failing elements is at most allowed_fraction (0 for all but augmentation, whose
// nearest-neighbour sampling may round differently on the device for a few pixels).
struct Comparison {
  int64_t count = 0;
  double max_abs_error = 0, max_rel_error = 0;  // relative: max_abs_error / max|expected|
  double max_abs_expected = 0;
  double rtol = 0, allowed_fraction = 0;
  int64_t failing = 0, nonfinite = 0;
  int64_t first_failing = -1;  // flat index
  double first_actual = 0, first_expected = 0;
  Shape shape;  // for naming the first failing element
  bool passed() const;
  std::string describe() const;  // "3 of 720000 elements outside rtol 1e-4; first at [0, 5, 0, 149] ..."
};
Comparison compare_outputs(const float* actual, const float* expected, const Shape& shape,
                           double rtol, double allowed_fraction = 0.0);

struct DevicePeaks {
  double fp32_gflops = 0;         // 0: unknown
  double bf16_tensor_gflops = 0;  // dense bf16 on tensor cores, fp32 sums; 0: unknown
  double dram_gbps = 0;           // 0: unknown
  // How each was computed, or why it is unknown.
  std::string fp32_basis, bf16_tensor_basis, dram_basis;
};

struct BenchRow {
  std::string platform;  // "CPU" or "CUDA", in every row
  std::string op;        // conv2d_forward, maxpool2d_forward, maxpool2d_backward, sigmoid_bce, gather_augment
  std::string layer;     // conv1..conv5, pool1..pool5, loss, input
  std::string shape;     // compact: "1x150x150 -> 32", "32x150x150", "n=32", "150x150 u8 -> f32"
  int64_t batch = 0;
  std::string variant;   // "ours: ...", "cudnn: ...", "cpu backend: ...", "memcpy D2D"
  bool baseline = false;  // one of the variants "ours" is compared with
  // Its arithmetic runs in another precision than fp32 on CUDA cores (bf16 tensor cores): the
  // fp32 peak is not its ceiling, so no % of it is derived; the bf16 tensor-core peak is.
  bool not_fp32 = false;
  Status status = Status::Skipped;
  std::string note;       // why skipped or invalid (cuDNN status, first mismatch), workspace
  std::string reference;  // what the outputs were checked against
  double max_abs_error = kNaN, max_rel_error = kNaN, tolerance = kNaN;
  int repeats = 0;
  double median_ms = kNaN, min_ms = kNaN;
  double flops = 0;  // per run (multiply-adds count 2); 0 where not meaningful
  double bytes = 0;  // per run: compulsory traffic (each input read once, each output written once)
  size_t workspace_bytes = 0;
  // Derived by finalize():
  double gflops = kNaN, gbps = kNaN, percent_fp32_peak = kNaN, percent_dram_peak = kNaN;
  double percent_tensor_peak = kNaN;  // of DevicePeaks::bf16_tensor_gflops, not_fp32 rows only
  double speedup = kNaN;     // best valid baseline's median / this median
  std::string speedup_over;  // that baseline's variant
};

// What ran where, and the rows so far (a suite appends as it goes, so a failure part-way still
// leaves the finished rows to report).
struct BenchRun {
  std::string platform;  // "CPU" or "CUDA"
  std::string device;    // backend or GPU description
  DevicePeaks peaks;
  std::vector<std::string> notes;  // timing method, flush size, repeats
  std::vector<BenchRow> rows;
};

// The two suites (cpu_suite.cpp, cuda_suite.cpp). Each throws pneumo::Error for failures that
// end the run (no device); per-variant failures become INVALID rows, and a case whose set-up
// fails one SKIPPED row (run_cases in suite_common.hpp).
void run_cpu_suite(const KernelBenchConfig& config, BenchRun& run);
void run_cuda_suite(const KernelBenchConfig& config, BenchRun& run);

// Runs one variant: `run_once` (after any preparation it does itself), then `check` on its output;
// a valid variant is then timed by `time_it`, an invalid one is not. A pneumo::Error from any of
// them marks the row INVALID with the message. Fills status, errors, timing; logs one line.
struct TimingSummary;
void measure(BenchRow& row, const std::function<void()>& run_once,
             const std::function<Comparison()>& check,
             const std::function<TimingSummary()>& time_it);
// One progress line on stderr per finished row (the table comes at the end).
void log_row(const BenchRow& row);

// GFLOP/s, GB/s, % of peak and speed-ups (over the best valid baseline of the same op, layer and
// shape).
void finalize(BenchRun& run);
int count_invalid(const BenchRun& run);
std::string markdown_report(const BenchRun& run);
nlohmann::ordered_json row_to_json(const BenchRow& row, const BenchRun& run);
std::string rows_to_csv(const BenchRun& run);

}  // namespace pneumo::bench
