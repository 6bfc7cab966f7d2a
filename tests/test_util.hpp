// Test helpers shared by every test file: the one comparison helper (|a - b| <= atol + rtol |b|,
// non-finite values fail, first mismatches printed with the worst error as a fraction of the
// threshold), seeded random tensors, and the backend list for typed CPU-vs-CUDA tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "pneumo/backend.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::testing {

inline std::vector<float> to_host(ConstTensorView v) {
  std::vector<float> out(static_cast<size_t>(v.numel()));
  copy_bytes(out.data(), Device::Cpu, v.data, v.device, out.size() * sizeof(float));
  return out;
}

// Returns success when every |actual - expected| <= atol + rtol * |expected| and all are finite.
inline ::testing::AssertionResult all_close(const std::vector<float>& actual,
                                            const std::vector<float>& expected, double atol,
                                            double rtol, const std::string& what = "values") {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << what << ": size " << actual.size() << " != expected " << expected.size();
  size_t bad = 0;
  double worst_ratio = 0.0;
  size_t worst_index = 0;
  std::ostringstream first;
  for (size_t i = 0; i < actual.size(); ++i) {
    double a = actual[i], e = expected[i];
    double threshold = atol + rtol * std::fabs(e);
    bool finite = std::isfinite(a) && std::isfinite(e);
    double ratio = finite ? std::fabs(a - e) / threshold : INFINITY;
    if (ratio > worst_ratio || !finite) {
      worst_ratio = ratio;
      worst_index = i;
    }
    if (!finite || ratio > 1.0) {
      if (bad < 5) first << "\n  [" << i << "] actual " << a << " expected " << e;
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << actual.size() << " elements differ (atol " << atol
         << ", rtol " << rtol << "); worst at [" << worst_index << "] is " << worst_ratio
         << "x the threshold" << first.str();
}

inline ::testing::AssertionResult all_close(ConstTensorView actual, ConstTensorView expected,
                                            double atol, double rtol,
                                            const std::string& what = "values") {
  if (actual.shape != expected.shape)
    return ::testing::AssertionFailure() << what << ": shape " << actual.shape.str()
                                         << " != expected " << expected.shape.str();
  return all_close(to_host(actual), to_host(expected), atol, rtol, what);
}

// The largest |a - b| / (|b| + floor) over the elements, or with floor 0 the largest |a - b|;
// infinite where a value is not finite or the sizes differ: std::max would pass over a NaN, and
// an output a backend never wrote holds NaN under PNEUMO_POISON_ALLOCATIONS.
inline double largest_relative_difference(const std::vector<float>& a, const std::vector<float>& b,
                                          double floor) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double difference = std::fabs(double(a[i]) - b[i]);
    const double scaled = floor > 0.0 ? difference / (std::fabs(double(b[i])) + floor) : difference;
    if (!std::isfinite(scaled)) return INFINITY;
    worst = std::max(worst, scaled);
  }
  return worst;
}

inline double largest_difference(const std::vector<float>& a, const std::vector<float>& b) {
  return largest_relative_difference(a, b, 0.0);
}

// Deterministic random values in [lo, hi).
inline std::vector<float> random_values(int64_t count, uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> out(static_cast<size_t>(count));
  for (auto& v : out) v = dist(gen);
  return out;
}

// `count` uint8 images of size x size, pixels uniform over [0, 255] (random_values, truncated).
inline std::vector<uint8_t> random_pixels(int64_t count, int size, uint32_t seed) {
  const auto values = random_values(count * size * size, seed, 0.0f, 255.0f);
  return std::vector<uint8_t>(values.begin(), values.end());
}

inline Tensor random_tensor(Shape shape, Device device, uint32_t seed, float lo = -1.0f,
                            float hi = 1.0f) {
  auto values = random_values(shape.numel(), seed, lo, hi);
  return Tensor::from_host(shape, values.data(), device);
}

// A running statistic's move in a step, after - before: compared as values, 0.99 of the old
// value would hide a wrong batch statistic inside any tolerance.
inline std::vector<float> moved(const std::vector<float>& after, const std::vector<float>& before) {
  std::vector<float> delta(after.size());
  for (size_t i = 0; i < after.size(); ++i) delta[i] = after[i] - before[i];
  return delta;
}

// Why a CUDA device must be usable here, or "" when a missing one is fine (the test skips):
// PNEUMO_EXPECT_CUDA=1 (the GPU check sets it), or, unless PNEUMO_EXPECT_CUDA=0 or
// CUDA_VISIBLE_DEVICES hides every GPU ("" or -1), the kernel's NVIDIA driver listing a GPU (an
// entry in `proc_gpus`) or its first device node existing. So a
// GPU machine whose CUDA cannot start (a driver older than the runtime, say) fails its CUDA tests
// under a plain ctest too, instead of passing by skipping them all.
inline std::string cuda_expected_because(const char* expect_env, const char* visible_devices_env,
                                         const std::string& proc_gpus = "/proc/driver/nvidia/gpus",
                                         const std::string& device_node = "/dev/nvidia0") {
  const std::string expect = expect_env ? expect_env : "";
  if (expect == "1") return "PNEUMO_EXPECT_CUDA=1";
  if (expect == "0") return "";
  // CUDA_VISIBLE_DEVICES="" or -1 hides every GPU on purpose: nothing to expect.
  if (visible_devices_env && (visible_devices_env[0] == '\0' || visible_devices_env[0] == '-'))
    return "";
  std::error_code error;
  if (std::filesystem::is_directory(proc_gpus, error) &&
      std::filesystem::directory_iterator(proc_gpus, error) != std::filesystem::directory_iterator())
    return "the NVIDIA driver lists a GPU in " + proc_gpus + " (PNEUMO_EXPECT_CUDA=0 to skip instead)";
  if (std::filesystem::exists(device_node, error))
    return device_node + " exists (PNEUMO_EXPECT_CUDA=0 to skip instead)";
  return "";
}
inline std::string cuda_expected_because() {
  return cuda_expected_because(std::getenv("PNEUMO_EXPECT_CUDA"), std::getenv("CUDA_VISIBLE_DEVICES"));
}
inline bool cuda_expected() { return !cuda_expected_because().empty(); }

// Hides every GPU from the processes a test starts while it lives (CUDA_VISIBLE_DEVICES=""), and
// puts the variable back after: a test of what pneumo says on a machine without a GPU then runs
// on a GPU machine too, instead of skipping there.
class GpusHiddenFromChildren {
 public:
  GpusHiddenFromChildren() {
    // This process's CUDA starts first, with the GPUs it was given: a CUDA call after the
    // variable is set (this test's, or a later test's in the same process) would find none.
    (void)cuda_device_available();
    if (const char* old = std::getenv("CUDA_VISIBLE_DEVICES")) old_ = old, had_ = true;
    ::setenv("CUDA_VISIBLE_DEVICES", "", 1);
  }
  ~GpusHiddenFromChildren() {
    if (had_)
      ::setenv("CUDA_VISIBLE_DEVICES", old_.c_str(), 1);
    else
      ::unsetenv("CUDA_VISIBLE_DEVICES");
  }
  GpusHiddenFromChildren(const GpusHiddenFromChildren&) = delete;
  GpusHiddenFromChildren& operator=(const GpusHiddenFromChildren&) = delete;

 private:
  std::string old_;
  bool had_ = false;
};

// Skips the current test when no CUDA device is usable (use at the top of CUDA tests, or in their
// fixture's SetUp); fails it instead where one is expected (cuda_expected_because), so that a GPU
// run whose device went unseen cannot pass by skipping everything.
#define PNEUMO_REQUIRE_CUDA()                                                              \
  do {                                                                                     \
    if (!::pneumo::cuda_device_available()) {                                              \
      const std::string pneumo_expected_ = ::pneumo::testing::cuda_expected_because();     \
      if (!pneumo_expected_.empty())                                                       \
        GTEST_FAIL() << "no usable CUDA device, but one is expected: " << pneumo_expected_; \
      GTEST_SKIP() << "no CUDA device";                                                    \
    }                                                                                      \
  } while (0)

// Splits one CSV record (quotes and doubled quotes, no embedded newlines).
inline std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted && ch == '"' && i + 1 < line.size() && line[i + 1] == '"') {
      fields.back() += '"';
      ++i;
    } else if (ch == '"') {
      quoted = !quoted;
    } else if (ch == ',' && !quoted) {
      fields.emplace_back();
    } else {
      fields.back() += ch;
    }
  }
  return fields;
}

}  // namespace pneumo::testing
