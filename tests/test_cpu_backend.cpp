// The CPU backend as a whole: its name, the thread pool's static chunking and error propagation,
// the argument checks (wrong shapes name the op and both shapes; device views are refused), and
// the input-pipeline gathers.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cpu/parallel.hpp"
#include "gradient_check.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::nan_tensor;
using testing::random_tensor;
using testing::to_host;

TEST(CpuBackend, NameAndDevice) {
  auto backend = make_cpu_backend(2);
  EXPECT_EQ(backend->device(), Device::Cpu);
  EXPECT_EQ(backend->name().rfind("cpu (2 threads, ", 0), 0u) << backend->name();
  auto all_threads = make_cpu_backend(0);
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  EXPECT_EQ(all_threads->name().rfind("cpu (" + std::to_string(hardware) +
                                          (hardware == 1 ? " thread, " : " threads, "),
                                      0),
            0u)
      << all_threads->name();
  EXPECT_THROW(make_cpu_backend(-1), Error);
}

TEST(CpuThreadPool, StaticChunksAndErrors) {
  cpu::ThreadPool pool(3);
  ASSERT_EQ(pool.size(), 3);
  // 10 items over 3 workers: [0, 3), [3, 6), [6, 10), chunk w on worker w.
  std::vector<int> owner(10, -1);
  pool.parallel_for(10, [&](int64_t begin, int64_t end, int worker) {
    for (int64_t i = begin; i < end; ++i) owner[static_cast<size_t>(i)] = worker;
  });
  EXPECT_EQ(owner, (std::vector<int>{0, 0, 0, 1, 1, 1, 2, 2, 2, 2}));
  // Fewer items than workers: one item each, extra workers idle.
  std::atomic<int> calls{0};
  pool.parallel_for(2, [&](int64_t begin, int64_t end, int) {
    EXPECT_EQ(end - begin, 1);
    ++calls;
  });
  EXPECT_EQ(calls.load(), 2);
  // A chunk's exception reaches the caller, and the pool stays usable.
  EXPECT_THROW(pool.parallel_for(6,
                                 [](int64_t begin, int64_t, int) {
                                   if (begin >= 4) throw std::runtime_error("chunk failed");
                                 }),
               std::runtime_error);
  int64_t total = 0;
  std::vector<int64_t> partial(3, 0);
  pool.parallel_for(100, [&](int64_t begin, int64_t end, int worker) {
    for (int64_t i = begin; i < end; ++i) partial[static_cast<size_t>(worker)] += i;
  });
  for (int64_t p : partial) total += p;
  EXPECT_EQ(total, 4950);
}

// Runs `call`, expecting a pneumo::Error whose message holds every one of `parts`.
void expect_error_naming(const std::function<void()>& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one naming " << parts.front();
  } catch (const Error& error) {
    const std::string message = error.what();
    for (const auto& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

TEST(CpuBackend, WrongShapesNameTheOpAndBothShapes) {
  auto backend = make_cpu_backend(1);
  Tensor x = random_tensor({1, 3, 5, 5}, Device::Cpu, 1);
  Tensor weight = random_tensor({4, 2, 3, 3}, Device::Cpu, 2);
  Tensor bias = random_tensor({4}, Device::Cpu, 3);
  Tensor y = nan_tensor({1, 4, 5, 5});
  expect_error_naming([&] { backend->conv2d_forward(x, weight, bias, y, false); },
                      {"conv2d_forward", "weight", "(4, 2, 3, 3)", "(4, 3, 3, 3)"});
  Tensor good_weight = random_tensor({4, 3, 3, 3}, Device::Cpu, 4);
  Tensor wrong_y = nan_tensor({1, 4, 5, 4});
  expect_error_naming([&] { backend->conv2d_forward(x, good_weight, bias, wrong_y, true); },
                      {"conv2d_forward", "y", "(1, 4, 5, 4)", "(1, 4, 5, 5)"});
  Tensor dx = nan_tensor({1, 3, 5, 5});
  expect_error_naming([&] { backend->conv2d_backward_data(wrong_y, good_weight, dx); },
                      {"conv2d_backward_data", "dy", "(1, 4, 5, 4)", "(1, 4, 5, 5)"});
  Tensor dweight = nan_tensor({4, 3, 3, 3}), wrong_dbias = nan_tensor({3});
  expect_error_naming([&] { backend->conv2d_backward_filter(x, y, dweight, wrong_dbias); },
                      {"conv2d_backward_filter", "dbias", "(3)", "(4)"});

  Tensor pooled = nan_tensor({1, 3, 2, 3});
  expect_error_naming([&] { backend->maxpool2d_forward(x, pooled); },
                      {"maxpool2d_forward", "(1, 3, 2, 3)", "(1, 3, 3, 3)"});
  Tensor flat = nan_tensor({75});
  expect_error_naming([&] { backend->relu_forward(x, flat); },
                      {"relu_forward", "(75)", "(1, 3, 5, 5)"});
  expect_error_naming([&] { backend->dropout_forward(x, flat, 0.1f, RngKey{}); },
                      {"dropout_forward", "(75)", "(1, 3, 5, 5)"});
  expect_error_naming([&] { backend->dropout_forward(x, x, 1.0f, RngKey{}); },
                      {"dropout_forward", "rate"});

  Tensor channels = nan_tensor({3}), wrong_channels = nan_tensor({4});
  expect_error_naming(
      [&] {
        backend->batchnorm_forward_training(x, channels, wrong_channels, channels, channels, 0.01,
                                            1e-3, y, channels, channels);
      },
      {"batchnorm_forward_training", "beta", "(4)", "(3)"});

  Tensor features = random_tensor({2, 6}, Device::Cpu, 5);
  Tensor dense_weight = random_tensor({3, 5}, Device::Cpu, 6), dense_bias = nan_tensor({3});
  Tensor dense_y = nan_tensor({2, 3});
  expect_error_naming([&] { backend->dense_forward(features, dense_weight, dense_bias, dense_y); },
                      {"dense_forward", "weight", "(3, 5)", "(3, 6)"});

  Tensor logits = nan_tensor({4, 2}), labels = nan_tensor({4}), stats = nan_tensor({2});
  expect_error_naming(
      [&] { backend->sigmoid_bce(logits, labels, ConstTensorView(), logits, stats); },
      {"sigmoid_bce", "(4, 2)"});
  Tensor params = nan_tensor({10}), grads = nan_tensor({9});
  expect_error_naming([&] { backend->rmsprop_step(params, grads, params, 1e-3f, 0.9f, 1e-7f); },
                      {"rmsprop_step", "grads", "(9)", "(10)"});
}

TEST(CpuBackend, RefusesDeviceViews) {
  auto backend = make_cpu_backend(1);
  Tensor x = random_tensor({1, 1, 4, 4}, Device::Cpu, 1);
  Tensor y = nan_tensor({1, 1, 4, 4});
  TensorView on_device = y.view();
  on_device.device = Device::Cuda;  // never dereferenced: the check comes first
  expect_error_naming([&] { backend->relu_forward(x, on_device); },
                      {"relu_forward", "y", "cuda"});
  expect_error_naming([&] { backend->maxpool2d_forward(on_device, y); },
                      {"maxpool2d_forward", "x", "cuda"});
}

TEST(CpuBackend, GatherValuesAndPlainGather) {
  auto backend = make_cpu_backend(2);
  const std::vector<float> values{0.5f, 1.5f, 2.5f, 3.5f};
  const std::vector<int32_t> indices{3, 0, 3};
  Tensor out = nan_tensor({3});
  backend->gather_values(values.data(), 4, indices.data(), out);
  EXPECT_EQ(to_host(out), (std::vector<float>{3.5f, 0.5f, 3.5f}));
  // An index past the values (or before them) is refused, not read from other memory.
  const std::vector<int32_t> past{3, 4, 0}, before{-1, 0, 0};
  EXPECT_THROW(backend->gather_values(values.data(), 4, past.data(), out), Error);
  EXPECT_THROW(backend->gather_values(values.data(), 4, before.data(), out), Error);
  EXPECT_THROW(backend->gather_values(values.data(), 0, indices.data(), out), Error);

  // Two 2x2 uint8 images; augmentation off: gather and scale to [0, 1].
  const std::vector<uint8_t> images{0, 51, 102, 255, 10, 20, 30, 40};
  const std::vector<int32_t> slots{1, 0};
  AugmentSettings plain;
  plain.enabled = false;
  Tensor batch = nan_tensor({2, 1, 2, 2});
  backend->gather_augment(images.data(), 2, 2, slots.data(), plain, RngKey{}, batch);
  const std::vector<float> got = to_host(batch);
  const std::vector<uint8_t> expected_bytes{10, 20, 30, 40, 0, 51, 102, 255};
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_FLOAT_EQ(got[i], expected_bytes[i] / 255.0f) << "pixel " << i;
  Tensor wrong = nan_tensor({2, 1, 3, 3});
  expect_error_naming(
      [&] { backend->gather_augment(images.data(), 2, 2, slots.data(), plain, RngKey{}, wrong); },
      {"gather_augment", "(2, 1, 3, 3)", "(2, 1, 2, 2)"});
}

}  // namespace
}  // namespace pneumo
