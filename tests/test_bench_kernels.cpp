// `pneumo bench kernels`: its pieces (medians, comparison, derived columns, output formats, the
// fp64 references themselves against the CPU backend) and the command end to end through the
// binary: the CPU run prints a table with a CPU row for every op and exits 0, its JSON lines and
// CSV parse, bad flags are refused; with a GPU, the CUDA run validates every variant.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/dense_case.hpp"
#include "bench/kernel_bench.hpp"
#include "bench/reference.hpp"
#include "bench/suite_common.hpp"
#include "bench/tail_case.hpp"
#include "bench/timing.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace pneumo::bench {
namespace {

// ---- Timing helpers -----------------------------------------------------------------------------

TEST(BenchTiming, MedianAndMinimum) {
  TimingSummary odd = summarize({3.0, 1.0, 2.0});
  EXPECT_EQ(odd.repeats, 3);
  EXPECT_DOUBLE_EQ(odd.median_ms, 2.0);
  EXPECT_DOUBLE_EQ(odd.min_ms, 1.0);
  TimingSummary even = summarize({4.0, 1.0, 3.0, 2.0});
  EXPECT_DOUBLE_EQ(even.median_ms, 2.5);
  TimingSummary none = summarize({});
  EXPECT_EQ(none.repeats, 0);
  EXPECT_TRUE(std::isnan(none.median_ms));
}

TEST(BenchTiming, HostTimerRunsWarmupThenRepeats) {
  HostTimer timer(1 << 16);
  int calls = 0;
  TimingSummary t = timer.time([&] { ++calls; }, 2, 5);
  EXPECT_EQ(calls, 7);
  EXPECT_EQ(t.repeats, 5);
  EXPECT_GE(t.median_ms, t.min_ms);
  EXPECT_GE(t.min_ms, 0.0);
}

TEST(BenchTiming, Fp32LanesPerSm) {
  EXPECT_EQ(fp32_lanes_per_sm(9, 0), 128);  // H100, H200
  EXPECT_EQ(fp32_lanes_per_sm(8, 0), 64);   // A100
  EXPECT_EQ(fp32_lanes_per_sm(8, 6), 128);
  EXPECT_EQ(fp32_lanes_per_sm(8, 9), 128);
  EXPECT_EQ(fp32_lanes_per_sm(7, 0), 64);
  EXPECT_EQ(fp32_lanes_per_sm(10, 0), 128);
  EXPECT_EQ(fp32_lanes_per_sm(3, 5), 0);  // unknown: "peak unknown", never a guess
  // Dense bf16 tensor-core flops a clock per SM: the datasheets' 312 TFLOP/s (A100, 108 SMs at
  // 1.41 GHz) and 989 TFLOP/s (H100 SXM, 132 SMs at 1.83 GHz), within rounding of the clock.
  EXPECT_NEAR(108 * bf16_tensor_flops_per_sm_clock(8, 0) * 1.41e9 / 1e12, 312, 1);
  EXPECT_NEAR(132 * bf16_tensor_flops_per_sm_clock(9, 0) * 1.83e9 / 1e12, 989, 1);
  EXPECT_EQ(bf16_tensor_flops_per_sm_clock(8, 6), 0);  // GeForce and workstation parts differ
  EXPECT_EQ(bf16_tensor_flops_per_sm_clock(7, 5), 0);
}

// ---- Comparison and the measuring protocol ------------------------------------------------------

TEST(BenchCompare, ToleranceIsScaledByTheLargestExpectedValue) {
  const std::vector<float> expected{10.0f, 0.0f, -1.0f, 2.0f};
  std::vector<float> actual = expected;
  EXPECT_TRUE(compare_outputs(actual.data(), expected.data(), Shape{4}, 0.0).passed());
  actual[1] = 5e-4f;  // 5e-5 of max|e| = 10: inside rtol 1e-4 (atol 1e-3), outside 1e-5
  EXPECT_TRUE(compare_outputs(actual.data(), expected.data(), Shape{4}, 1e-4).passed());
  const Comparison tight = compare_outputs(actual.data(), expected.data(), Shape{4}, 1e-5);
  EXPECT_FALSE(tight.passed());
  EXPECT_EQ(tight.failing, 1);
  EXPECT_NEAR(tight.max_abs_error, 5e-4, 1e-9);
  EXPECT_NEAR(tight.max_rel_error, 5e-5, 1e-9);
}

TEST(BenchCompare, NamesTheFirstFailingElementByIndex) {
  std::vector<float> expected(2 * 3 * 4 * 5, 1.0f), actual = expected;
  actual[1 * 60 + 2 * 20 + 3 * 5 + 4] = 2.0f;  // element [1, 2, 3, 4]
  const Comparison c = compare_outputs(actual.data(), expected.data(), Shape{2, 3, 4, 5}, 1e-4);
  EXPECT_FALSE(c.passed());
  EXPECT_NE(c.describe().find("[1, 2, 3, 4]"), std::string::npos) << c.describe();
  EXPECT_NE(c.describe().find("got 2"), std::string::npos) << c.describe();
}

TEST(BenchCompare, NonFiniteValuesAlwaysFail) {
  const std::vector<float> expected{1.0f, 2.0f};
  const std::vector<float> actual{1.0f, NAN};
  const Comparison c = compare_outputs(actual.data(), expected.data(), Shape{2}, 1.0, 0.9);
  EXPECT_FALSE(c.passed());
  EXPECT_EQ(c.nonfinite, 1);
  EXPECT_TRUE(std::isnan(c.max_abs_error));
}

TEST(BenchCompare, AllowedFractionOfMismatches) {
  std::vector<float> expected(200, 0.5f), actual = expected;
  actual[7] = 0.0f;  // 1 of 200 = 0.5%
  EXPECT_TRUE(compare_outputs(actual.data(), expected.data(), Shape{200}, 1e-5, 0.005).passed());
  actual[8] = 0.0f;
  EXPECT_FALSE(compare_outputs(actual.data(), expected.data(), Shape{200}, 1e-5, 0.005).passed());
}

TEST(BenchMeasure, InvalidVariantsAreNotTimedAndErrorsBecomeNotes) {
  const std::vector<float> expected{1.0f};
  int timed = 0;
  auto time_it = [&] {
    ++timed;
    return summarize({1.0, 2.0, 3.0});
  };
  BenchRow wrong;
  const std::vector<float> bad{3.0f};
  measure(wrong, [] {}, [&] { return compare_outputs(bad.data(), expected.data(), Shape{1}, 0); },
          time_it);
  EXPECT_EQ(wrong.status, Status::Invalid);
  EXPECT_EQ(timed, 0);
  EXPECT_NE(wrong.note.find("1 of 1"), std::string::npos) << wrong.note;

  BenchRow throws;
  measure(throws, [] { throw Error("cudnnSomething failed: CUDNN_STATUS_BAD_PARAM"); },
          [&] { return compare_outputs(expected.data(), expected.data(), Shape{1}, 0); }, time_it);
  EXPECT_EQ(throws.status, Status::Invalid);
  EXPECT_NE(throws.note.find("CUDNN_STATUS_BAD_PARAM"), std::string::npos);
  EXPECT_EQ(timed, 0);

  BenchRow good;
  measure(good, [] {}, [&] { return compare_outputs(expected.data(), expected.data(), Shape{1}, 0); },
          time_it);
  EXPECT_EQ(good.status, Status::Ok);
  EXPECT_EQ(timed, 1);
  EXPECT_DOUBLE_EQ(good.median_ms, 2.0);
  EXPECT_DOUBLE_EQ(good.min_ms, 1.0);
  EXPECT_EQ(good.repeats, 3);
}

// ---- Derived columns and formats ----------------------------------------------------------------

BenchRow timed_row(const std::string& variant, bool baseline, double median_ms, Status status) {
  BenchRow r;
  r.platform = "CUDA";
  r.op = "conv2d_forward";
  r.layer = "conv1";
  r.shape = "1x150x150 -> 32";
  r.batch = 32;
  r.variant = variant;
  r.baseline = baseline;
  r.status = status;
  r.median_ms = r.min_ms = median_ms;
  r.flops = 2e9;
  r.bytes = 1e9;
  return r;
}

// A case whose set-up throws (a backend refusing a shape its reference needs) becomes one
// SKIPPED row naming why, and the cases after it still run.
struct RefusingSuite {
  std::vector<std::string> ran;
  BenchRun run;
  void conv(const LayerShape& layer, int64_t) { ran.push_back(layer.conv); }
  void pool(const LayerShape&, int64_t) {}
  void batchnorm(const LayerShape&, int64_t) {}
  void loss(int64_t, int64_t, const char*) {}
  void augment(int64_t) {}
  void bf16(const LayerShape&, int64_t) {}
  void tail(size_t block, int64_t) {
    if (block == 1) throw Error("cuDNN refused batch-norm at this shape");
    ran.push_back("block " + std::to_string(block + 1));
  }
  void dense(int layer, int64_t) { ran.push_back(layer == 0 ? "fc1" : "fc2"); }
  void case_failed(const char* family, const std::string& layer, int64_t batch,
                   const std::string& why) {
    run.rows.push_back(failed_case_row("CPU", family, layer, batch, why));
  }
};

TEST(BenchCases, ACaseThatCannotBeSetUpCostsItsRowsNotTheRun) {
  KernelBenchConfig config;
  config.batches = {4};
  config.ops = {"tail", "dense"};
  RefusingSuite suite;
  run_cases(config, suite);
  EXPECT_EQ(suite.ran, (std::vector<std::string>{"block 1", "block 3", "block 4", "block 5",
                                                  "fc1", "fc2"}));
  ASSERT_EQ(suite.run.rows.size(), 1u);
  const BenchRow& row = suite.run.rows.front();
  EXPECT_EQ(row.status, Status::Skipped);
  EXPECT_EQ(row.op, "tail");
  EXPECT_EQ(row.layer, "block 2");
  EXPECT_EQ(row.batch, 4);
  EXPECT_NE(row.note.find("cuDNN refused batch-norm"), std::string::npos) << row.note;
}

TEST(BenchReport, SpeedupIsOverTheFastestValidBaselineOfTheGroup) {
  BenchRun run;
  run.platform = "CUDA";
  run.device = "test GPU";
  run.peaks.fp32_gflops = 4000;
  run.peaks.bf16_tensor_gflops = 8000;
  run.peaks.dram_gbps = 2000;
  run.rows = {timed_row("cudnn: slow", true, 4.0, Status::Ok),
              timed_row("cudnn: fast", true, 2.0, Status::Ok),
              timed_row("cudnn: wrong", true, 0.5, Status::Invalid),
              timed_row("ours", false, 1.0, Status::Ok)};
  BenchRow other = timed_row("ours", false, 1.0, Status::Ok);
  other.layer = "conv2";  // no baseline in its group
  run.rows.push_back(other);
  BenchRow tensor_cores = timed_row("ours on bf16 tensor cores", false, 1.0, Status::Ok);
  tensor_cores.not_fp32 = true;
  run.rows.push_back(tensor_cores);
  finalize(run);
  // Not held to the fp32 CUDA-core peak but to the tensor cores'; its rate and bandwidth derived.
  EXPECT_TRUE(std::isnan(run.rows[5].percent_fp32_peak));
  EXPECT_DOUBLE_EQ(run.rows[5].percent_tensor_peak, 25.0);
  EXPECT_TRUE(std::isnan(run.rows[3].percent_tensor_peak)) << "an fp32 row";
  EXPECT_DOUBLE_EQ(run.rows[5].gflops, 2000.0);
  EXPECT_DOUBLE_EQ(run.rows[5].percent_dram_peak, 50.0);
  EXPECT_DOUBLE_EQ(run.rows[3].speedup, 2.0);
  EXPECT_EQ(run.rows[3].speedup_over, "cudnn: fast");
  EXPECT_DOUBLE_EQ(run.rows[0].speedup, 0.5);
  EXPECT_TRUE(std::isnan(run.rows[2].speedup));
  EXPECT_TRUE(std::isnan(run.rows[4].speedup));
  EXPECT_DOUBLE_EQ(run.rows[3].gflops, 2000.0);  // 2e9 flops in 1 ms
  EXPECT_DOUBLE_EQ(run.rows[3].gbps, 1000.0);
  EXPECT_DOUBLE_EQ(run.rows[3].percent_fp32_peak, 50.0);
  EXPECT_DOUBLE_EQ(run.rows[3].percent_dram_peak, 50.0);
  EXPECT_EQ(count_invalid(run), 1);
}

TEST(BenchReport, FormatsKeepEveryRowAndQuoteText) {
  BenchRun run;
  run.platform = "CUDA";
  run.device = "GPU, \"quoted\"";
  run.peaks.fp32_basis = "peak unknown (test)";
  run.peaks.dram_basis = "peak unknown (test)";
  run.rows = {timed_row("cudnn: a, b", true, 2.0, Status::Ok),
              timed_row("ours | piped", false, 1.0, Status::Invalid)};
  BenchRow skipped = timed_row("cudnn: FFT", true, NAN, Status::Skipped);
  skipped.note = "cudnnGetConvolutionForwardWorkspaceSize: CUDNN_STATUS_NOT_SUPPORTED";
  run.rows.push_back(skipped);
  run.rows[1].note = "3 of 10 elements outside rtol";
  finalize(run);

  const std::string md = markdown_report(run);
  EXPECT_NE(md.find("## pneumo bench kernels: CUDA"), std::string::npos) << md;
  EXPECT_NE(md.find("**INVALID**"), std::string::npos) << md;
  EXPECT_NE(md.find("ours / piped"), std::string::npos) << md;  // '|' would break the table
  EXPECT_NE(md.find("Skipped (1)"), std::string::npos) << md;
  EXPECT_NE(md.find("CUDNN_STATUS_NOT_SUPPORTED"), std::string::npos) << md;
  EXPECT_NE(md.find("peak unknown (test)"), std::string::npos) << md;

  std::istringstream csv(rows_to_csv(run));
  std::string line;
  std::getline(csv, line);
  const size_t columns = testing::split_csv(line).size();
  EXPECT_EQ(testing::split_csv(line)[0], "platform");
  int rows = 0;
  while (std::getline(csv, line)) {
    const auto fields = testing::split_csv(line);
    EXPECT_EQ(fields.size(), columns) << line;
    EXPECT_EQ(fields[1], "GPU, \"quoted\"") << line;
    ++rows;
  }
  EXPECT_EQ(rows, 3);

  const nlohmann::ordered_json j = row_to_json(run.rows[2], run);
  EXPECT_EQ(j["status"], "skipped");
  EXPECT_TRUE(j["median_ms"].is_null());
  EXPECT_TRUE(j["peak_fp32_gflops"].is_null());
}

// ---- The references themselves ------------------------------------------------------------------

TEST(BenchReference, ConvMatchesTheCpuBackend) {
  auto cpu = make_cpu_backend(2);
  const LayerShape layer{"convX", "poolX", 5, 7, 9};
  const ConvProblem p = make_conv_problem(layer, 4, 3);
  Tensor y(p.y, Device::Cpu);
  cpu->conv2d_forward({p.x_values.data(), p.x, Device::Cpu},
                      {p.weight_values.data(), p.weight, Device::Cpu},
                      {p.bias_values.data(), {7}, Device::Cpu}, y, true);
  const std::vector<int64_t> images = checked_images(4);
  EXPECT_EQ(images, (std::vector<int64_t>{0, 2, 3}));
  const std::vector<float> expected = reference_conv(p, images);
  const std::vector<float> all = testing::to_host(y);
  const int64_t per_image = 7 * 9 * 9;
  for (size_t i = 0; i < images.size(); ++i) {
    const std::vector<float> slice(all.begin() + images[i] * per_image,
                                   all.begin() + (images[i] + 1) * per_image);
    const std::vector<float> ref(expected.begin() + static_cast<int64_t>(i) * per_image,
                                 expected.begin() + static_cast<int64_t>(i + 1) * per_image);
    EXPECT_TRUE(testing::all_close(slice, ref, 1e-5, 1e-5, "image " + std::to_string(images[i])));
  }
  EXPECT_EQ(checked_images(1), (std::vector<int64_t>{0}));
  EXPECT_EQ(checked_images(2), (std::vector<int64_t>{0, 1}));
}

TEST(BenchReference, PoolInputHasNoTiesAndReferencesMatchTheCpuBackend) {
  for (const Shape& x_shape : {Shape{2, 3, 7, 5}, Shape{1, 2, 6, 8}}) {
    const std::vector<float> x = tie_free_pool_input(x_shape, 11);
    const int64_t h = x_shape.h(), w = x_shape.w(), pt = h % 2, pl = w % 2;
    for (int64_t p = 0; p < x_shape.n() * x_shape.c(); ++p)
      for (int64_t oy = 0; oy < (h + 1) / 2; ++oy)
        for (int64_t ox = 0; ox < (w + 1) / 2; ++ox) {
          std::set<float> seen;
          int count = 0;
          for (int64_t dy = 0; dy < 2; ++dy)
            for (int64_t dx = 0; dx < 2; ++dx) {
              const int64_t row = 2 * oy - pt + dy, col = 2 * ox - pl + dx;
              if (row < 0 || row >= h || col < 0 || col >= w) continue;
              seen.insert(x[static_cast<size_t>((p * h + row) * w + col)]);
              ++count;
            }
          ASSERT_EQ(static_cast<int>(seen.size()), count) << "tie in a window of " << x_shape.str();
        }
    auto cpu = make_cpu_backend(1);
    const Shape y_shape = pooled_shape(x_shape);
    Tensor y(y_shape, Device::Cpu), dx(x_shape, Device::Cpu);
    const std::vector<float> dy = uniform_values(y_shape.numel(), 5, -1.0f, 1.0f);
    cpu->maxpool2d_forward({x.data(), x_shape, Device::Cpu}, y);
    cpu->maxpool2d_backward({x.data(), x_shape, Device::Cpu}, y, {dy.data(), y_shape, Device::Cpu},
                            dx);
    EXPECT_TRUE(testing::all_close(testing::to_host(y), reference_maxpool_forward(x, x_shape), 0, 0));
    EXPECT_TRUE(testing::all_close(testing::to_host(dx),
                                   reference_maxpool_backward(x, dy, x_shape), 0, 0));
  }
}

// The fp64 batch-norm problem against the CPU backend, through the checks the suites use; and
// the checks fail on one wrong value of each output.
TEST(BenchReference, BatchNormMatchesTheCpuBackendAndItsChecksCanFail) {
  const LayerShape layer{"convX", "poolX", 5, 3, 6};
  const BatchNormProblem p = make_batchnorm_problem(layer, 4, 21);
  ASSERT_EQ(p.x, (Shape{4, 3, 6, 6}));
  auto cpu = make_cpu_backend(1);
  Tensor y(p.x, Device::Cpu), dx(p.x, Device::Cpu);
  Tensor mean(p.channel, Device::Cpu), inv_std(p.channel, Device::Cpu);
  Tensor dgamma(p.channel, Device::Cpu), dbeta(p.channel, Device::Cpu);
  Tensor running_mean = Tensor::zeros(p.channel, Device::Cpu);
  Tensor running_var = Tensor::zeros(p.channel, Device::Cpu);
  const ConstTensorView x{p.x_values.data(), p.x, Device::Cpu};
  const ConstTensorView gamma{p.gamma.data(), p.channel, Device::Cpu};
  cpu->batchnorm_forward_training(x, gamma, {p.beta.data(), p.channel, Device::Cpu}, running_mean,
                                  running_var, BatchNormProblem::kFactor,
                                  BatchNormProblem::kEpsilon, y, mean, inv_std);
  cpu->batchnorm_backward(x, {p.dy_values.data(), p.x, Device::Cpu}, gamma, mean, inv_std,
                          BatchNormProblem::kEpsilon, dx, dgamma, dbeta);
  std::vector<float> y_h = testing::to_host(y), dx_h = testing::to_host(dx);
  std::vector<float> mean_h = testing::to_host(mean), inv_std_h = testing::to_host(inv_std);
  std::vector<float> dgamma_h = testing::to_host(dgamma), dbeta_h = testing::to_host(dbeta);
  const auto forward = check_batchnorm_forward(y_h.data(), mean_h.data(), inv_std_h.data(), p);
  const auto backward = check_batchnorm_backward(dx_h.data(), dgamma_h.data(), dbeta_h.data(), p);
  EXPECT_TRUE(forward.passed()) << forward.describe();
  EXPECT_TRUE(backward.passed()) << backward.describe();
  // One value off by 1% of its output's largest value fails each check.
  auto nudge = [](std::vector<float>& v, size_t i) {
    float largest = 0.0f;
    for (float e : v) largest = std::max(largest, std::fabs(e));
    v[i] += 0.01f * largest;
  };
  nudge(y_h, 17);
  EXPECT_FALSE(check_batchnorm_forward(y_h.data(), mean_h.data(), inv_std_h.data(), p).passed());
  nudge(dbeta_h, 2);
  EXPECT_FALSE(check_batchnorm_backward(dx_h.data(), dgamma_h.data(), dbeta_h.data(), p).passed());
}

// The gated backward's host reference (the model's dropout rate for conv2, dx gated and scaled,
// its channel sums) against the CPU backend called as the model calls it; one wrong sum fails.
TEST(BenchReference, GatedBatchNormMatchesTheCpuBackendAndItsCheckCanFail) {
  const LayerShape layer{"conv2", "pool2", 5, 3, 6};
  ASSERT_TRUE(has_gated_batchnorm(layer));
  EXPECT_FALSE(has_gated_batchnorm(LayerShape{"conv1", "pool1", 1, 3, 6}));
  const BatchNormProblem p = make_batchnorm_problem(layer, 4, 23);
  const GatedBatchNormExpected expected = gated_batchnorm_expected(p, layer);
  EXPECT_EQ(expected.rate, ModelConfig{}.conv_dropout.at(1));
  ASSERT_GT(expected.rate, 0.0f) << "the case should carry a dropout multiplier";
  auto cpu = make_cpu_backend(1);
  Tensor dx(p.x, Device::Cpu), dgamma(p.channel, Device::Cpu), dbeta(p.channel, Device::Cpu);
  Tensor sums(p.channel, Device::Cpu);
  const ConstTensorView x{p.x_values.data(), p.x, Device::Cpu};
  cpu->batchnorm_backward(x, {p.dy_values.data(), p.x, Device::Cpu},
                          {p.gamma.data(), p.channel, Device::Cpu},
                          {p.mean_expected.data(), p.channel, Device::Cpu},
                          {p.inv_std_expected.data(), p.channel, Device::Cpu},
                          BatchNormProblem::kEpsilon, dx, dgamma, dbeta, true, expected.rate, sums);
  std::vector<float> dx_h = testing::to_host(dx), sums_h = testing::to_host(sums);
  const std::vector<float> dgamma_h = testing::to_host(dgamma), dbeta_h = testing::to_host(dbeta);
  const auto gated = check_gated_batchnorm_backward(dx_h.data(), dgamma_h.data(),
                                                    dbeta_h.data(), sums_h.data(), p, expected);
  EXPECT_TRUE(gated.passed()) << gated.describe();
  float largest = 0.0f;
  for (float v : sums_h) largest = std::max(largest, std::fabs(v));
  sums_h[1] += 0.01f * largest;
  EXPECT_FALSE(check_gated_batchnorm_backward(dx_h.data(), dgamma_h.data(), dbeta_h.data(),
                                              sums_h.data(), p, expected)
                   .passed());
}

TEST(BenchReference, LossMatchesTheCpuBackend) {
  const LossProblem p = make_loss_problem(1000, 9);
  for (float z : p.logits) ASSERT_GE(std::fabs(z), 1e-3f);
  auto cpu = make_cpu_backend(1);
  std::vector<float> dlogits(1000), stats(2, 0.0f);
  cpu->sigmoid_bce({p.logits.data(), {1000}, Device::Cpu}, {p.labels.data(), {1000}, Device::Cpu},
                   ConstTensorView{}, {dlogits.data(), {1000}, Device::Cpu},
                   {stats.data(), {2}, Device::Cpu});
  // |dlogits| <= 1/n; p - y cancels in float near saturation, so atol is scaled to 1/n.
  EXPECT_TRUE(testing::all_close(dlogits, p.expected.dlogits, 1e-5 / 1000, 1e-5, "dlogits"));
  EXPECT_TRUE(testing::all_close(stats, p.expected.stats, 0, 1e-5, "stats"));
}

}  // namespace
}  // namespace pneumo::bench

// ---- The command through the binary -------------------------------------------------------------

namespace pneumo {
namespace {

struct CommandResult {
  int status = -1;
  std::string out, err;
};

// Runs `pneumo ARGS`, stdout and stderr apart (the table on stdout, progress on stderr).
CommandResult run_pneumo(const std::string& args, const testing::TempDir& dir) {
  const std::string err_path = dir.file("stderr.txt");
  const std::string command = "'" PNEUMO_BINARY "' " + args + " 2>'" + err_path + "'";
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.out.append(buffer.data(), n);
  const int raw = pclose(pipe);
  result.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  result.err = testing::read_text(err_path);
  return result;
}

std::vector<std::string> table_rows(const std::string& out, const std::string& platform) {
  std::vector<std::string> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("| " + platform + " |", 0) == 0) rows.push_back(line);
  return rows;
}

// The dense rows' checks tell the precisions apart: each backend's outputs pass against the sums
// of the operands as it reads them and fail against the other precision's (fc1 at batch 4).
TEST(BenchReference, DenseChecksTellThePrecisionsApart) {
  auto fp32 = make_cpu_backend(2), bf16 = make_cpu_backend(2, /*bf16=*/true);
  for (Backend* backend : {fp32.get(), bf16.get()}) {
    const bool is_bf16 = backend == bf16.get();
    bench::DenseCase d(0, 4, Device::Cpu);
    EXPECT_EQ(d.layer(), "fc1");
    EXPECT_EQ(d.shape_label(), "6400 -> 128");
    d.poison_outputs();
    d.forward(*backend);
    d.backward(*backend);
    EXPECT_TRUE(d.check_forward(is_bf16).passed()) << d.check_forward(is_bf16).describe();
    EXPECT_TRUE(d.check_backward(is_bf16).passed()) << d.check_backward(is_bf16).describe();
    EXPECT_FALSE(d.check_forward(!is_bf16).passed()) << backend->name();
    EXPECT_FALSE(d.check_backward(!is_bf16).passed()) << backend->name();
    d.poison_outputs();  // an output left unwritten fails
    EXPECT_FALSE(d.check_forward(is_bf16).passed());
  }
}

// The tail and stem rows' backward check covers every gradient a variant writes: the fused ops
// pass against the unfused chain, and a wrong or unwritten dgamma, dbeta or (stem) dbias fails,
// not only a wrong da or dweight (block 1 at batch 2, the smallest case with a stem).
TEST(BenchReference, TailChecksCoverEveryGradient) {
  auto cpu = make_cpu_backend(2);
  bench::TailCase t(0, 2, Device::Cpu);
  ASSERT_TRUE(t.has_stem());
  t.conv_forward(*cpu);
  t.chain_forward(*cpu);
  t.chain_backward(*cpu);
  t.conv_backward(*cpu);
  const bench::TailCase::Gradients tail = t.gradients(false), stem = t.gradients(true);
  EXPECT_FALSE(tail.da.empty());
  EXPECT_TRUE(stem.da.empty()) << "the fused stem never writes da";
  t.poison_gradients();
  EXPECT_FALSE(t.check_gradients(tail).passed()) << "unwritten gradients passed";
  t.fused_backward(*cpu);
  EXPECT_TRUE(t.check_gradients(tail).passed()) << t.check_gradients(tail).describe();
  t.poison_gradients();
  t.stem_forward(*cpu);
  t.stem_backward(*cpu);
  EXPECT_TRUE(t.check_gradients(stem).passed()) << t.check_gradients(stem).describe();
  auto off = [](std::vector<float> v) {
    v[v.size() / 2] += 1.0f + 2.0f * std::fabs(v[v.size() / 2]);
    return v;
  };
  for (const char* part : {"dgamma", "dbeta", "dbias"}) {
    bench::TailCase::Gradients wrong = stem;
    if (std::string(part) == "dgamma") wrong.dgamma = off(wrong.dgamma);
    if (std::string(part) == "dbeta") wrong.dbeta = off(wrong.dbeta);
    if (std::string(part) == "dbias") wrong.dbias = off(wrong.dbias);
    EXPECT_FALSE(t.check_gradients(wrong).passed()) << part << " off by much passed";
  }
}

TEST(BenchKernelsCli, CpuRunPrintsARowForEveryOpAndWritesJsonAndCsv) {
  testing::TempDir dir;
  const auto r = run_pneumo("bench kernels --device cpu --quick --threads 2 --json " +
                                dir.file("rows.jsonl") + " --csv " + dir.file("rows.csv"),
                            dir);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("## pneumo bench kernels: CPU"), std::string::npos) << r.out;
  // Every table row is labelled CPU; none is INVALID; each op and layer is there.
  const auto rows = table_rows(r.out, "CPU");
  std::istringstream in(r.out);
  std::string line;
  int table_lines = 0;
  while (std::getline(in, line))
    if (line.rfind("| ", 0) == 0 && line.rfind("| platform", 0) != 0) ++table_lines;
  EXPECT_EQ(static_cast<int>(rows.size()), table_lines) << "a table row without the CPU label";
  EXPECT_EQ(r.out.find("INVALID"), std::string::npos) << r.out;
  std::map<std::string, int> per_op;
  for (const auto& row : rows) {
    std::istringstream cells(row);
    std::string platform_cell, op;
    std::getline(cells, platform_cell, '|');
    std::getline(cells, platform_cell, '|');
    std::getline(cells, op, '|');
    ++per_op[op.substr(1, op.size() - 2)];
  }
  EXPECT_EQ(per_op["conv2d_forward"], 5) << r.out;
  EXPECT_EQ(per_op["maxpool2d_forward"], 5) << r.out;
  EXPECT_EQ(per_op["maxpool2d_backward"], 5) << r.out;
  EXPECT_EQ(per_op["batchnorm_forward_training"], 5) << r.out;  // every conv layer's output
  EXPECT_EQ(per_op["batchnorm_backward"], 5) << r.out;
  EXPECT_EQ(per_op[bench::kGatedBatchNormOp], 4) << r.out;  // conv2..conv5's outputs, as training calls it
  EXPECT_EQ(per_op["sigmoid_bce"], 2) << r.out;      // the batch, and the synthetic n
  EXPECT_EQ(per_op["gather_augment"], 3) << r.out;   // augment, gather only, memcpy
  EXPECT_EQ(per_op["block_tail_forward"], 10) << r.out;   // fused and unfused, 5 blocks
  EXPECT_EQ(per_op["block_tail_backward"], 10) << r.out;
  EXPECT_EQ(per_op["dense_forward"], 4) << r.out;  // fp32 and bf16, fc1 and fc2
  EXPECT_EQ(per_op["dense_backward"], 4) << r.out;
  for (const char* layer :
       {"conv1", "conv5", "pool1", "pool5", "loss", "input", "tail1", "tail5", "fc1", "fc2"})
    EXPECT_NE(r.out.find(std::string("| ") + layer + " |"), std::string::npos) << layer;
  EXPECT_NE(r.out.find("memcpy"), std::string::npos);

  // JSON lines: one object per row, all valid, all CPU, timed.
  std::istringstream jsonl(testing::read_text(dir.file("rows.jsonl")));
  int objects = 0;
  while (std::getline(jsonl, line)) {
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(line)) << line;
    EXPECT_EQ(j["platform"], "CPU");
    EXPECT_EQ(j["status"], "ok") << line;
    EXPECT_EQ(j["batch"], 2);
    EXPECT_EQ(j["repeats"], 3);
    EXPECT_TRUE(j["median_ms"].is_number()) << line;
    EXPECT_TRUE(j["max_abs_error"].is_number()) << line;
    ++objects;
  }
  EXPECT_EQ(objects, static_cast<int>(rows.size()));

  // CSV: a header and one record per row, every record as wide as the header.
  std::istringstream csv(testing::read_text(dir.file("rows.csv")));
  std::getline(csv, line);
  EXPECT_EQ(line.rfind("platform,device,op,layer,batch,", 0), 0u) << line;
  const size_t columns = testing::split_csv(line).size();
  int records = 0;
  while (std::getline(csv, line)) {
    EXPECT_EQ(testing::split_csv(line).size(), columns) << line;
    EXPECT_EQ(testing::split_csv(line)[0], "CPU");
    ++records;
  }
  EXPECT_EQ(records, objects);
}

TEST(BenchKernelsCli, OpsAndBatchesSelectTheRows) {
  testing::TempDir dir;
  const auto r = run_pneumo(
      "bench kernels --device cpu --ops pool,loss --batches 1 3 --repeats 1 --warmup 0 --threads 2",
      dir);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  const auto rows = table_rows(r.out, "CPU");
  EXPECT_EQ(rows.size(), 2u * (10 + 2)) << r.out;  // two batches x (5 pools x 2 + 2 losses)
  EXPECT_EQ(r.out.find("conv2d_forward"), std::string::npos);
  EXPECT_NE(r.out.find("| 3 |"), std::string::npos);
}

TEST(BenchKernelsCli, BadFlagsAreRefused) {
  testing::TempDir dir;
  // A bad value is bad usage (status 2, docs/usage.md), as an unknown flag is.
  auto r = run_pneumo("bench kernels --device cpu --ops conv,nonsense", dir);
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("unknown op 'nonsense'"), std::string::npos) << r.err;
  r = run_pneumo("bench kernels --device cpu --ops batch-norm", dir);
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("(did you mean batchnorm?)"), std::string::npos) << r.err;
  r = run_pneumo("bench kernels --device cpu --batches 0", dir);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("error: --batches: batch sizes must be"), std::string::npos) << r.err;
  r = run_pneumo("bench kernels --device tpu", dir);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("error: --device must be auto, cpu or cuda, got 'tpu'"), std::string::npos) << r.err;
  r = run_pneumo("bench kernels --no-such-flag", dir);
  EXPECT_EQ(r.status, 2) << r.err;
  // -1 was the unset default inside, so a user's -1 passed as "the default".
  r = run_pneumo("bench kernels --device cpu --ops loss --warmup -1", dir);
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("--warmup must be at least 0, got -1"), std::string::npos) << r.err;
  // One file for both outputs kept only the CSV.
  r = run_pneumo("bench kernels --device cpu --ops loss --json " + dir.file("rows.out") +
                     " --csv " + dir.path() + "/./rows.out",
                 dir);
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("--json and --csv name the same file"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("rows.out")));
  // The bf16 family is CUDA's: alone on the CPU it is refused (it printed an empty table, status
  // 0); beside others it is said.
  r = run_pneumo("bench kernels --device cpu --ops bf16", dir);
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("--ops bf16: the bf16 conversions are CUDA kernels"), std::string::npos)
      << r.err;
  r = run_pneumo("bench kernels --device cpu --quick --ops bf16,loss", dir);
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("note: --ops bf16"), std::string::npos) << r.err;
}

// On a GPU machine its GPUs are hidden from the run.
TEST(BenchKernelsCli, CudaWithoutAGpuFailsClearly) {
  const testing::GpusHiddenFromChildren no_gpu;
  testing::TempDir dir;
  const auto r = run_pneumo("bench kernels --device cuda --quick", dir);
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("no CUDA device"), std::string::npos) << r.err;
}

// On a GPU: every variant is validated (no INVALID row), and our kernels have timed rows on
// every layer. The next GPU session runs this first.
TEST(BenchKernelsCli, CudaQuickRunValidatesEveryVariant) {
  PNEUMO_REQUIRE_CUDA();
  testing::TempDir dir;
  const auto r =
      run_pneumo("bench kernels --device cuda --quick --json " + dir.file("rows.jsonl"), dir);
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find("INVALID"), std::string::npos) << r.out;
  std::istringstream jsonl(testing::read_text(dir.file("rows.jsonl")));
  std::string line;
  std::map<std::string, int> ours_ok;
  while (std::getline(jsonl, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["platform"], "CUDA");
    EXPECT_NE(j["status"], "INVALID") << line;
    if (j["status"] == "ok" && j["variant"].get<std::string>().rfind("ours", 0) == 0)
      ++ours_ok[j["op"].get<std::string>() + " " + j["layer"].get<std::string>()];
  }
  for (const char* layer : {"conv1", "conv2", "conv3", "conv4", "conv5"})
    EXPECT_GE(ours_ok[std::string("conv2d_forward ") + layer], 1) << layer << "\n" << r.out;
  EXPECT_EQ(ours_ok["conv2d_forward conv1"], 2) << "single-channel and tiled kernels on conv1";
  EXPECT_EQ(ours_ok["maxpool2d_backward pool1"], 1);
  // Batch-norm: ours through the backend, and with 8 and 16 blocks per SM for the sums.
  for (const char* op : {"batchnorm_forward_training", "batchnorm_backward"})
    for (const char* layer : {"conv1", "conv5"})
      EXPECT_EQ(ours_ok[std::string(op) + " " + layer], 3) << op << " " << layer;
  EXPECT_EQ(ours_ok["sigmoid_bce loss"], 1);
  EXPECT_EQ(ours_ok["gather_augment input"], 2);
  EXPECT_EQ(ours_ok["dense_forward fc1"] + ours_ok["dense_backward fc2"], 0) << "no 'ours' GEMM";
}

}  // namespace
}  // namespace pneumo
