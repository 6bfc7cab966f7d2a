// CPU-vs-CUDA parity for every Backend op: the same inputs go through the CPU backend (the
// reference) and the CUDA backend, and the outputs are compared with all_close. Every CUDA test
// calls PNEUMO_REQUIRE_CUDA() first (skips without a device) and checks that its outputs really
// are device memory. CUDA outputs start as NaN, so an element an op fails to write shows up.
// Tolerances (|a - e| <= atol + rtol |e|, atol = rtol * max|e| unless stated):
//   conv forward / backward-data 1e-4, backward-filter 2e-4 (sums over N*H*W), dense 1e-4,
//   batch-norm 1e-4 (backward 1e-3), loss and RMSprop 1e-5, TF32 paths 5e-3;
//   pooling, ReLU, dropout and gathers exact.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/cuda_backend.hpp"
#include "elementwise.hpp"
#include "bf16_agreement.hpp"
#include "channels_last.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::Bf16Agreement;
using testing::random_values;
using testing::to_host;

// ---- Helpers ------------------------------------------------------------------------------------

::testing::AssertionResult is_device_memory(const void* ptr) {
  cudaPointerAttributes attributes{};
  const cudaError_t status = cudaPointerGetAttributes(&attributes, ptr);
  if (status != cudaSuccess)
    return ::testing::AssertionFailure()
           << "cudaPointerGetAttributes: " << cudaGetErrorString(status);
  if (attributes.type != cudaMemoryTypeDevice)
    return ::testing::AssertionFailure() << "memory type " << attributes.type << ", not device";
  return ::testing::AssertionSuccess();
}
// An empty tensor holds no memory at all (its pointer may be null): nothing to check.
template <class T>
::testing::AssertionResult on_device_unless_empty(const T& tensor) {
  return tensor.numel() == 0 ? ::testing::AssertionSuccess() : is_device_memory(tensor.data());
}
#define EXPECT_ON_DEVICE(tensor) \
  EXPECT_TRUE(on_device_unless_empty(tensor)) << #tensor " is not CUDA device memory"

float max_abs(const std::vector<float>& values) {
  float m = 0.0f;
  for (float v : values) m = std::max(m, std::fabs(v));
  return m;
}

// all_close with atol scaled to the expected tensor's largest magnitude: entries that cancel to
// near zero are judged against the tensor's scale, not their own.
::testing::AssertionResult close_to(ConstTensorView actual, ConstTensorView expected, double rtol,
                                    const std::string& what) {
  const std::vector<float> e = to_host(expected);
  const double atol = rtol * std::max<double>(max_abs(e), 1e-20);
  return all_close(actual, expected, atol, rtol, what);
}

::testing::AssertionResult exactly_equal(ConstTensorView actual, ConstTensorView expected,
                                         const std::string& what) {
  return all_close(actual, expected, 0.0, 0.0, what);
}

std::vector<float> uniform(int64_t count, uint32_t seed, float lo, float hi) {
  return random_values(count, seed, lo, hi);
}

// ReLU'd values on a coarse grid: most are exactly 0 and the rest repeat, so pooling windows are
// full of ties.
std::vector<float> tie_heavy_values(int64_t count, uint32_t seed) {
  std::vector<float> values = uniform(count, seed, -1.0f, 1.0f);
  for (float& v : values) v = std::max(0.0f, std::round(v * 4.0f) / 4.0f);
  return values;
}

// Backends under test, and same-valued tensors on both.
class Parity : public ::testing::Test {
 protected:
  struct Pair {
    Tensor cpu, cuda;
  };

  void SetUp() override {
    PNEUMO_REQUIRE_CUDA();
    cpu_ = make_cpu_backend(0);
    cuda_ = make_cuda_backend(BackendOptions{});
    ASSERT_EQ(cpu_->device(), Device::Cpu);
    ASSERT_EQ(cuda_->device(), Device::Cuda);
  }

  Pair upload(const Shape& shape, const std::vector<float>& values) {
    return {Tensor::from_host(shape, values.data(), Device::Cpu),
            Tensor::from_host(shape, values.data(), Device::Cuda)};
  }
  Pair random(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    return upload(shape, uniform(shape.numel(), seed, lo, hi));
  }
  // Output tensors: CPU zeros, CUDA NaN (a missed write stays NaN and fails all_close).
  Pair output(const Shape& shape) {
    std::vector<float> nan(static_cast<size_t>(shape.numel()),
                           std::numeric_limits<float>::quiet_NaN());
    return {Tensor::zeros(shape, Device::Cpu), Tensor::from_host(shape, nan.data(), Device::Cuda)};
  }

  std::unique_ptr<Backend> cpu_, cuda_;
};

// ---- Convolution --------------------------------------------------------------------------------

struct ConvCase {
  int64_t n, c, h, w, k;
};
void PrintTo(const ConvCase& p, std::ostream* os) {
  *os << "x (" << p.n << ", " << p.c << ", " << p.h << ", " << p.w << ") -> K=" << p.k;
}
std::string conv_case_name(const ::testing::TestParamInfo<ConvCase>& info) {
  const ConvCase& p = info.param;
  std::ostringstream out;
  out << "n" << p.n << "_c" << p.c << "_" << p.h << "x" << p.w << "_k" << p.k;
  return out.str();
}

class ConvParity : public Parity, public ::testing::WithParamInterface<ConvCase> {
 protected:
  Shape x_shape() const { return {GetParam().n, GetParam().c, GetParam().h, GetParam().w}; }
  Shape y_shape() const { return {GetParam().n, GetParam().k, GetParam().h, GetParam().w}; }
  Shape w_shape() const { return {GetParam().k, GetParam().c, 3, 3}; }
  // Weights scaled by 1/sqrt(fan_in) keep outputs of order one at every layer size.
  Pair weights(uint32_t seed) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(GetParam().c * 9));
    return random(w_shape(), seed, -scale, scale);
  }
};

TEST_P(ConvParity, ForwardWithAndWithoutFusedRelu) {
  Pair x = random(x_shape(), 1), w = weights(2), b = random({GetParam().k}, 3, -0.5f, 0.5f);
  for (bool fuse_relu : {false, true}) {
    Pair y = output(y_shape());
    cpu_->conv2d_forward(x.cpu, w.cpu, b.cpu, y.cpu, fuse_relu);
    cuda_->conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, fuse_relu);
    EXPECT_ON_DEVICE(y.cuda);
    EXPECT_TRUE(close_to(y.cuda, y.cpu, 1e-4, fuse_relu ? "conv+bias+relu" : "conv+bias"));
  }
}

// The unfused path's bias + ReLU (kernels::bias_activation_forward), which a convolution takes
// when cuDNN refuses the fused call: the GPUs tested so far accept it for every shape, so the
// parity tests above may never reach it. Called directly, against a host loop, on planes of
// both of its kernels (one block walk per plane, and the flat walk for planes too small for it),
// with and without the ReLU.
TEST_F(Parity, BiasActivationKernelAddsTheBiasThenTheRelu) {
  cudaStream_t stream = dynamic_cast<CudaBackend&>(*cuda_).stream();
  for (const auto& [batch, channels, spatial] :
       {std::array<int64_t, 3>{3, 5, 150 * 150}, {2, 7, 19 * 19}, {4, 3, 1}, {1, 1, 4099}}) {
    const Shape shape{batch, channels, spatial};
    const std::vector<float> values = uniform(shape.numel(), 71, -1.0f, 1.0f);
    const std::vector<float> bias = uniform(channels, 72, -0.5f, 0.5f);
    Tensor b = Tensor::from_host({channels}, bias.data(), Device::Cuda);
    for (bool relu : {false, true}) {
      Tensor y = Tensor::from_host(shape, values.data(), Device::Cuda);
      kernels::bias_activation_forward(y.data(), b.data(), batch, channels, spatial, relu, stream);
      PNEUMO_CUDA_CHECK(cudaStreamSynchronize(stream), "bias_activation_forward test");
      std::vector<float> want(values.size());
      for (size_t i = 0; i < want.size(); ++i) {
        const float v = values[i] + bias[static_cast<size_t>((static_cast<int64_t>(i) / spatial) % channels)];
        want[i] = relu ? std::max(v, 0.0f) : v;
      }
      EXPECT_TRUE(all_close(to_host(y), want, 0, 0, shape.str() + (relu ? " relu" : " no relu")));
    }
  }
}

// The fused path passes y as cuDNN's z input with alpha2 = 0; whatever y held before (NaN here,
// after the algorithm search has run) must not leak into the result.
TEST_P(ConvParity, FusedForwardIgnoresWhatTheOutputHeld) {
  Pair x = random(x_shape(), 4), w = weights(5), b = random({GetParam().k}, 6, -0.5f, 0.5f);
  Pair y = output(y_shape());
  cuda_->conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);  // searches, caches the plan
  std::vector<float> nan(static_cast<size_t>(y_shape().numel()),
                         std::numeric_limits<float>::quiet_NaN());
  y.cuda.copy_from(ConstTensorView(nan.data(), y_shape(), Device::Cpu));
  cuda_->conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);
  cpu_->conv2d_forward(x.cpu, w.cpu, b.cpu, y.cpu, true);
  EXPECT_TRUE(close_to(y.cuda, y.cpu, 1e-4, "conv+bias+relu over a NaN-filled output"));
}

// A NaN input pixel reaches the fused conv + bias + ReLU's output (cuDNN's ReLU descriptor is
// CUDNN_PROPAGATE_NAN, as pneumo::relu): every output the CPU makes NaN is NaN here too, and the
// others agree. An FFT or Winograd algorithm may spread the NaN further than the 3x3
// neighbourhood, so only the CPU's NaNs are required.
TEST_P(ConvParity, FusedForwardPassesANan) {
  Pair w = weights(8), b = random({GetParam().k}, 9, -0.5f, 0.5f);
  std::vector<float> xs = uniform(x_shape().numel(), 7, -1.0f, 1.0f);
  xs[xs.size() / 2] = std::numeric_limits<float>::quiet_NaN();
  // Outputs start at 0, not output()'s NaN: an output the convolution never wrote must not pass
  // for a NaN it carried.
  Pair x = upload(x_shape(), xs);
  Pair y{Tensor::zeros(y_shape(), Device::Cpu), Tensor::zeros(y_shape(), Device::Cuda)};
  cpu_->conv2d_forward(x.cpu, w.cpu, b.cpu, y.cpu, true);
  cuda_->conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);
  const std::vector<float> want = to_host(y.cpu), got = to_host(y.cuda);
  int64_t nans = 0, lost = 0, differ = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) {
      ++nans;
      lost += !std::isnan(got[i]);
    } else if (!std::isnan(got[i])) {
      differ += std::fabs(got[i] - want[i]) > 1e-3f * (1.0f + std::fabs(want[i]));
    }
  }
  EXPECT_GT(nans, 0);
  EXPECT_EQ(lost, 0) << "of " << nans << " NaN outputs";
  EXPECT_EQ(differ, 0);
}

TEST_P(ConvParity, BackwardData) {
  Pair dy = random(y_shape(), 7), w = weights(8), dx = output(x_shape());
  cpu_->conv2d_backward_data(dy.cpu, w.cpu, dx.cpu);
  cuda_->conv2d_backward_data(dy.cuda, w.cuda, dx.cuda);
  EXPECT_ON_DEVICE(dx.cuda);
  EXPECT_TRUE(close_to(dx.cuda, dx.cpu, 1e-4, "dx"));
}

TEST_P(ConvParity, BackwardFilterAndBias) {
  Pair x = random(x_shape(), 9), dy = random(y_shape(), 10);
  Pair dw = output(w_shape()), db = output({GetParam().k});
  cpu_->conv2d_backward_filter(x.cpu, dy.cpu, dw.cpu, db.cpu);
  cuda_->conv2d_backward_filter(x.cuda, dy.cuda, dw.cuda, db.cuda);
  EXPECT_ON_DEVICE(dw.cuda);
  EXPECT_ON_DEVICE(db.cuda);
  EXPECT_TRUE(close_to(dw.cuda, dw.cpu, 2e-4, "dweight"));
  EXPECT_TRUE(close_to(db.cuda, db.cpu, 1e-4, "dbias"));
}

// conv2d_backward (both gradients in one call) against conv2d_backward_filter then
// conv2d_backward_data on the same backend: the same bits (pneumo/ops/conv2d.hpp), with dx and
// without it (the first layer's call).
void expect_both_gradients_are_the_two_calls(Backend& gpu, const ConvCase& p, ConstTensorView x,
                                            ConstTensorView w, ConstTensorView dy) {
  const Shape x_shape{p.n, p.c, p.h, p.w}, w_shape{p.k, p.c, 3, 3};
  Tensor dx(x_shape, Device::Cuda), dw(w_shape, Device::Cuda), db({p.k}, Device::Cuda);
  gpu.conv2d_backward_filter(x, dy, dw, db);
  gpu.conv2d_backward_data(dy, w, dx);
  const std::vector<float> want_dx = to_host(dx), want_dw = to_host(dw), want_db = to_host(db);
  for (bool with_dx : {true, false}) {
    Tensor dx2(x_shape, Device::Cuda), dw2(w_shape, Device::Cuda), db2({p.k}, Device::Cuda);
    const std::vector<float> nan(static_cast<size_t>(x_shape.numel()),
                                 std::numeric_limits<float>::quiet_NaN());
    dx2.copy_from(ConstTensorView(nan.data(), x_shape, Device::Cpu));
    gpu.conv2d_backward(x, dy, w, with_dx ? TensorView(dx2) : TensorView{}, dw2, db2);
    EXPECT_ON_DEVICE(dw2);
    EXPECT_EQ(to_host(dw2), want_dw) << "dweight, with dx " << with_dx;
    EXPECT_EQ(to_host(db2), want_db) << "dbias, with dx " << with_dx;
    const std::vector<float> got_dx = to_host(dx2);
    if (with_dx) {
      EXPECT_EQ(got_dx, want_dx) << "dx";
    } else {
      EXPECT_TRUE(std::all_of(got_dx.begin(), got_dx.end(), [](float v) { return std::isnan(v); }))
          << "dx written though not asked for";
    }
  }
}

TEST_P(ConvParity, BothGradientsInOneCallAreTheTwoCalls) {
  Pair x = random(x_shape(), 11), w = weights(12), dy = random(y_shape(), 13);
  expect_both_gradients_are_the_two_calls(*cuda_, GetParam(), x.cuda, w.cuda, dy.cuda);
}

INSTANTIATE_TEST_SUITE_P(AwkwardShapes, ConvParity,
                         ::testing::Values(ConvCase{1, 1, 1, 1, 1}, ConvCase{1, 1, 5, 5, 1},
                                           ConvCase{1, 3, 7, 9, 4}, ConvCase{2, 5, 8, 6, 3},
                                           ConvCase{3, 2, 4, 1, 2}, ConvCase{1, 17, 11, 13, 33}),
                         conv_case_name);
// The seed network's five convolutions at batch 2-4.
INSTANTIATE_TEST_SUITE_P(ModelShapes, ConvParity,
                         ::testing::Values(ConvCase{2, 1, 150, 150, 32},
                                           ConvCase{3, 32, 75, 75, 64}, ConvCase{4, 64, 38, 38, 64},
                                           ConvCase{2, 64, 19, 19, 128},
                                           ConvCase{3, 128, 10, 10, 256}),
                         conv_case_name);

// ---- Ops with two CUDA implementations (cuDNN's and ours) ---------------------------------------

// One CUDA backend such an op is checked on.
struct ImplementationUnderTest {
  std::unique_ptr<CudaBackend> backend;
  CudaBackendOptions::Implementation impl;
  std::string label;  // begins its failure messages
};

constexpr int64_t kChunkImages = 3;

// `field` forced to cuDNN, forced to our kernels, left to the first call's timing, and, for the
// ops whose kernels sum per channel (batch-norm, the bias gradient), our kernels again with those
// sums split into chunks of kChunkImages images (the last one short where the batch does not
// divide): on a large GPU the SM count's split gives these tests' small batches one image per
// chunk, which never merges a chunk of several.
std::vector<ImplementationUnderTest> implementations_under_test(
    CudaBackendOptions::Implementation CudaBackendOptions::*field) {
  using Implementation = CudaBackendOptions::Implementation;
  const bool sums_per_channel =
      field == &CudaBackendOptions::batchnorm || field == &CudaBackendOptions::conv_bias_gradient;
  const struct {
    Implementation impl;
    int64_t images_per_chunk;  // 0: the backend's own split
    const char* label;
  } kinds[] = {{Implementation::Cudnn, 0, "cudnn "},
               {Implementation::Kernel, 0, "kernel "},
               {Implementation::Fastest, 0, "fastest "},
               {Implementation::Kernel, kChunkImages, "kernel, 3 images a chunk "}};
  std::vector<ImplementationUnderTest> backends;
  for (const auto& kind : kinds) {
    if (kind.images_per_chunk > 0 && !sums_per_channel) continue;
    CudaBackendOptions options;
    options.*field = kind.impl;
    options.reduction_images_per_chunk = kind.images_per_chunk;
    backends.push_back({std::make_unique<CudaBackend>(options), kind.impl, kind.label});
  }
  return backends;
}

// Calls body(backend, impl, what) on each of implementations_under_test(field); `what` labels
// the failures with `label`, the implementation and (for body to complete) the call.
template <class Body>
void for_each_implementation(CudaBackendOptions::Implementation CudaBackendOptions::*field,
                             const std::string& label, Body&& body) {
  for (ImplementationUnderTest& under_test : implementations_under_test(field))
    body(*under_test.backend, under_test.impl, label + " " + under_test.label + "call ");
}

// The first layer's forward and weight gradient (with the bias gradient, summed in the same pass
// by ours) run cuDNN's picks or our single-channel kernels, whichever was faster on the first
// call: each, forced, matches the CPU, and the choices are reported as made.
TEST_F(Parity, SingleChannelConvEitherImplementationAndTheChoiceIsReported) {
  using Implementation = CudaBackendOptions::Implementation;
  for (const ConvCase& p : {ConvCase{2, 1, 150, 150, 32}, ConvCase{1, 1, 7, 9, 16},
                            ConvCase{3, 1, 5, 6, 64}}) {
    const Shape x_shape{p.n, 1, p.h, p.w}, y_shape{p.n, p.k, p.h, p.w};
    Pair x = random(x_shape, 41), w = random({p.k, 1, 3, 3}, 42, -0.3f, 0.3f);
    Pair b = random({p.k}, 43, -0.5f, 0.5f), expected = output(y_shape);
    cpu_->conv2d_forward(x.cpu, w.cpu, b.cpu, expected.cpu, true);
    Pair dy = random(y_shape, 44), dw = output({p.k, 1, 3, 3}), db = output({p.k});
    cpu_->conv2d_backward_filter(x.cpu, dy.cpu, dw.cpu, db.cpu);
    for_each_implementation(&CudaBackendOptions::single_channel_conv, x_shape.str(),
                            [&](CudaBackend& backend, Implementation impl,
                                const std::string& what) {
      for (int call = 1; call <= 2; ++call) {
        Pair y = output(y_shape), dwc = output({p.k, 1, 3, 3}), dbc = output({p.k});
        backend.conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);
        EXPECT_TRUE(close_to(y.cuda, expected.cpu, 1e-4, what + std::to_string(call)));
        backend.conv2d_backward_filter(x.cuda, dy.cuda, dwc.cuda, dbc.cuda);
        EXPECT_TRUE(close_to(dwc.cuda, dw.cpu, 2e-4, what + std::to_string(call) + " dweight"));
        EXPECT_TRUE(close_to(dbc.cuda, db.cpu, 1e-4, what + std::to_string(call) + " dbias"));
      }
      int reported = 0;
      for (const ImplementationChoice& choice : backend.implementation_choices()) {
        if (choice.op != "conv2d_forward" && choice.op != "conv2d_backward_filter") continue;
        ++reported;
        EXPECT_EQ(choice.input, (std::array<int64_t, 4>{p.n, 1, p.h, p.w})) << choice.op;
        if (impl == Implementation::Fastest) {
          EXPECT_GE(choice.cudnn_ms, 0) << what << choice.op;
          EXPECT_GE(choice.kernel_ms, 0) << what << choice.op;
          EXPECT_EQ(choice.kernel, choice.kernel_ms < choice.cudnn_ms && choice.rejected.empty())
              << what << choice.op;
        } else {
          EXPECT_EQ(choice.kernel, impl == Implementation::Kernel) << what << choice.op;
          EXPECT_EQ(choice.kernel_ms, -1.0f) << what << choice.op << ": a forced choice was timed";
        }
        EXPECT_EQ(choice.rejected, "") << what << choice.op;
      }
      EXPECT_EQ(reported, 2) << what;
    });
  }
}

// Backward data and filter of a multi-channel convolution run the legacy cudnnFind pick or the
// graph API's fastest engine: each, forced, matches the CPU, and the default reports its choice.
TEST_F(Parity, ConvGraphEnginesEitherWay) {
  using Implementation = CudaBackendOptions::Implementation;
  for (const ConvCase& p : {ConvCase{2, 32, 75, 75, 64}, ConvCase{3, 5, 7, 9, 4}}) {
    const Shape x_shape{p.n, p.c, p.h, p.w}, y_shape{p.n, p.k, p.h, p.w}, w_shape{p.k, p.c, 3, 3};
    const float scale = 1.0f / std::sqrt(static_cast<float>(p.c * 9));
    Pair x = random(x_shape, 61), dy = random(y_shape, 62), w = random(w_shape, 63, -scale, scale);
    Pair dx = output(x_shape), dw = output(w_shape), db = output({p.k});
    cpu_->conv2d_backward_data(dy.cpu, w.cpu, dx.cpu);
    cpu_->conv2d_backward_filter(x.cpu, dy.cpu, dw.cpu, db.cpu);
    for_each_implementation(&CudaBackendOptions::conv_engines, x_shape.str() + " engines",
                            [&](CudaBackend& backend, Implementation impl,
                                const std::string& what) {
      for (int call = 1; call <= 2; ++call) {
        Pair dxc = output(x_shape), dwc = output(w_shape), dbc = output({p.k});
        backend.conv2d_backward_data(dy.cuda, w.cuda, dxc.cuda);
        backend.conv2d_backward_filter(x.cuda, dy.cuda, dwc.cuda, dbc.cuda);
        EXPECT_TRUE(close_to(dxc.cuda, dx.cpu, 1e-4, what + std::to_string(call) + " dx"));
        EXPECT_TRUE(close_to(dwc.cuda, dw.cpu, 2e-4, what + std::to_string(call) + " dweight"));
      }
      int reported = 0;
      for (const ImplementationChoice& choice : backend.implementation_choices()) {
        if (choice.op.find("(graph API)") == std::string::npos) continue;
        ++reported;
        if (impl == Implementation::Kernel) {
          EXPECT_TRUE(choice.kernel) << what << choice.op;
        } else if (impl == Implementation::Cudnn) {
          EXPECT_FALSE(choice.kernel) << what << choice.op;
        } else if (choice.rejected.empty()) {
          EXPECT_EQ(choice.kernel, choice.kernel_ms < choice.cudnn_ms) << what << choice.op;
        }
        std::cout << "[ graph choice ] " << what << choice.op << ": legacy " << choice.cudnn_ms
                  << " ms, graph " << choice.kernel_ms << " ms, runs "
                  << (choice.kernel ? "graph" : "legacy") << " " << choice.rejected << "\n";
      }
      EXPECT_EQ(reported, 2) << what;
    });
  }
}

// A convolution's bias gradient runs cuDNN's cudnnConvolutionBackwardBias or our two-pass
// reduction, whichever was faster on the first call: each, forced, matches the CPU (which sums
// in double), and so does the default, which reports having timed both. (With one input channel
// it comes with the weight gradient: the test above.)
TEST_F(Parity, ConvBiasGradientEitherImplementation) {
  using Implementation = CudaBackendOptions::Implementation;
  for (const ConvCase& p : {ConvCase{3, 32, 75, 75, 64}, ConvCase{1, 3, 1, 1, 5},
                            ConvCase{5, 2, 3, 4, 7}, ConvCase{7, 4, 6, 5, 8}}) {
    const Shape x_shape{p.n, p.c, p.h, p.w}, y_shape{p.n, p.k, p.h, p.w}, w_shape{p.k, p.c, 3, 3};
    Pair x = random(x_shape, 51), dy = random(y_shape, 52);
    Pair dw = output(w_shape), db = output({p.k});
    cpu_->conv2d_backward_filter(x.cpu, dy.cpu, dw.cpu, db.cpu);
    for_each_implementation(&CudaBackendOptions::conv_bias_gradient, y_shape.str(),
                            [&](CudaBackend& backend, Implementation impl,
                                const std::string& what) {
      for (int call = 1; call <= 2; ++call) {
        Pair dwc = output(w_shape), dbc = output({p.k});
        backend.conv2d_backward_filter(x.cuda, dy.cuda, dwc.cuda, dbc.cuda);
        EXPECT_TRUE(close_to(dbc.cuda, db.cpu, 1e-4, what + std::to_string(call) + " dbias"));
        EXPECT_TRUE(close_to(dwc.cuda, dw.cpu, 2e-4, what + std::to_string(call) + " dweight"));
      }
      bool found = false;
      for (const ImplementationChoice& choice : backend.implementation_choices()) {
        if (choice.op != "conv2d_bias_gradient") continue;
        found = true;
        EXPECT_EQ(choice.input, (std::array<int64_t, 4>{p.n, p.k, p.h, p.w})) << what;
        if (impl == Implementation::Fastest) {
          EXPECT_EQ(choice.kernel, choice.kernel_ms < choice.cudnn_ms) << what;
          EXPECT_EQ(choice.rejected, "") << what;
        } else {
          EXPECT_EQ(choice.kernel, impl == Implementation::Kernel) << what;
        }
      }
      EXPECT_TRUE(found) << what << ": no bias gradient choice reported";
    });
  }
}

// ---- ReLU ---------------------------------------------------------------------------------------

TEST_F(Parity, ReluForwardAndBackwardIncludingInPlace) {
  // One span of a block's four values a thread, and many (an odd length: the last span partial).
  for (const Shape& shape : {Shape{3, 5, 7, 9}, Shape{1, 1, 1, 1000003}}) {
    SCOPED_TRACE(shape.str());
    Pair x = random(shape, 11), dy = random(shape, 12);
    Pair y = output(shape), dx = output(shape);
    cpu_->relu_forward(x.cpu, y.cpu);
    cuda_->relu_forward(x.cuda, y.cuda);
    EXPECT_ON_DEVICE(y.cuda);
    EXPECT_TRUE(exactly_equal(y.cuda, y.cpu, "relu y"));
    cpu_->relu_backward(y.cpu, dy.cpu, dx.cpu);
    cuda_->relu_backward(y.cuda, dy.cuda, dx.cuda);
    EXPECT_ON_DEVICE(dx.cuda);
    EXPECT_TRUE(exactly_equal(dx.cuda, dx.cpu, "relu dx"));
    // In place: y aliases x, dx aliases dy.
    cuda_->relu_forward(x.cuda, x.cuda);
    EXPECT_TRUE(exactly_equal(x.cuda, y.cpu, "relu in place"));
    cuda_->relu_backward(y.cuda, dy.cuda, dy.cuda);
    EXPECT_TRUE(exactly_equal(dy.cuda, dx.cpu, "relu backward in place"));
  }
}

// A NaN passes through both ways, as on the CPU (pneumo::relu; test_cpu_elementwise.cpp).
TEST_F(Parity, ReluPassesANan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> xs{nan, -1.0f, 0.0f, 2.0f}, dys{1, 2, 3, 4};
  Tensor x = Tensor::from_host({4}, xs.data(), Device::Cuda);
  Tensor dy = Tensor::from_host({4}, dys.data(), Device::Cuda);
  // Finite before the call (fresh memory may be NaN under PNEUMO_POISON_ALLOCATIONS): the NaN
  // read back is one the op wrote.
  Tensor y = Tensor::zeros({4}, Device::Cuda), dx = Tensor::zeros({4}, Device::Cuda);
  cuda_->relu_forward(x, y);
  const std::vector<float> ys = to_host(y);
  EXPECT_TRUE(std::isnan(ys[0]));
  EXPECT_EQ(std::vector<float>(ys.begin() + 1, ys.end()), (std::vector<float>{0, 0, 2}));
  cuda_->relu_backward(y, dy, dx);
  EXPECT_EQ(to_host(dx), (std::vector<float>{1, 0, 0, 4}));
}

// ---- Max pooling --------------------------------------------------------------------------------

struct PoolCase {
  int64_t n, c, h, w;
};
void PrintTo(const PoolCase& p, std::ostream* os) {
  *os << "(" << p.n << ", " << p.c << ", " << p.h << ", " << p.w << ")";
}
std::string pool_case_name(const ::testing::TestParamInfo<PoolCase>& info) {
  const PoolCase& p = info.param;
  std::ostringstream out;
  out << "n" << p.n << "_c" << p.c << "_" << p.h << "x" << p.w;
  return out.str();
}

// A fixture for ops with two CUDA implementations: each check runs on every one of
// implementations_under_test(kField).
template <CudaBackendOptions::Implementation CudaBackendOptions::*kField>
class EveryImplementation : public Parity, public ::testing::WithParamInterface<PoolCase> {
 protected:
  using Implementation = CudaBackendOptions::Implementation;
  void SetUp() override {
    Parity::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    under_test_ = implementations_under_test(kField);
  }
  // (backend, label) of each, for checks that hold whichever it is.
  std::vector<std::pair<CudaBackend*, std::string>> cuda_backends() const {
    std::vector<std::pair<CudaBackend*, std::string>> backends;
    for (const ImplementationUnderTest& under_test : under_test_)
      backends.emplace_back(under_test.backend.get(), under_test.label);
    return backends;
  }
  CudaBackend& chunked() const { return *under_test_.at(3).backend; }  // sums_per_channel ops
  std::vector<ImplementationUnderTest> under_test_;
};

// Every check on each max-pool implementation; the default must say what it timed.
class MaxPoolParity : public EveryImplementation<&CudaBackendOptions::pooling> {
 protected:
  Shape x_shape() const { return {GetParam().n, GetParam().c, GetParam().h, GetParam().w}; }
  Shape y_shape() const {
    return {GetParam().n, GetParam().c, (GetParam().h + 1) / 2, (GetParam().w + 1) / 2};
  }
  void check(const std::vector<float>& x_values, const char* what) {
    Pair x = upload(x_shape(), x_values), dy = random(y_shape(), 21);
    Pair y = output(y_shape()), dx = output(x_shape());
    cpu_->maxpool2d_forward(x.cpu, y.cpu);
    cpu_->maxpool2d_backward(x.cpu, y.cpu, dy.cpu, dx.cpu);
    for (const ImplementationUnderTest& under_test : under_test_) {
      const std::string& impl = under_test.label;
      Pair yc = output(y_shape()), dxc = output(x_shape());
      under_test.backend->maxpool2d_forward(x.cuda, yc.cuda);
      under_test.backend->maxpool2d_backward(x.cuda, yc.cuda, dy.cuda, dxc.cuda);
      EXPECT_ON_DEVICE(yc.cuda);
      EXPECT_ON_DEVICE(dxc.cuda);
      EXPECT_TRUE(exactly_equal(yc.cuda, y.cpu, impl + what + " y"));
      EXPECT_TRUE(exactly_equal(dxc.cuda, dx.cpu, impl + what + " dx"));
      // The default timed both and says so; a forced one timed nothing.
      const auto choices = under_test.backend->implementation_choices();
      EXPECT_EQ(choices.size(), 2u) << impl << "choices (forward and backward)";
      for (const ImplementationChoice& choice : choices) {
        if (under_test.impl == Implementation::Fastest) {
          EXPECT_GE(choice.cudnn_ms, 0) << impl << choice.op;
          EXPECT_GE(choice.kernel_ms, 0) << impl << choice.op;
          EXPECT_EQ(choice.kernel, choice.kernel_ms < choice.cudnn_ms) << impl << choice.op;
        } else {
          EXPECT_EQ(choice.kernel, under_test.impl == Implementation::Kernel) << impl << choice.op;
          EXPECT_EQ(choice.cudnn_ms, -1.0f) << impl << choice.op << ": a forced choice was timed";
          EXPECT_EQ(choice.kernel_ms, -1.0f) << impl << choice.op << ": a forced choice was timed";
        }
        EXPECT_EQ(choice.rejected, "") << impl << choice.op;
      }
    }
  }
};

TEST_P(MaxPoolParity, DistinctValues) { check(uniform(x_shape().numel(), 22, -1, 1), "random"); }

// ReLU'd inputs: ties everywhere; the gradient goes to the first maximum in row-major order.
TEST_P(MaxPoolParity, TiesGoToTheFirstMaximum) {
  check(tie_heavy_values(x_shape().numel(), 23), "ties");
}

// All inputs negative: a zero padding value would win every edge window on an odd axis.
TEST_P(MaxPoolParity, PaddingNeverWins) {
  check(uniform(x_shape().numel(), 24, -2.0f, -1.0f), "negative");
}

INSTANTIATE_TEST_SUITE_P(AwkwardShapes, MaxPoolParity,
                         ::testing::Values(PoolCase{1, 1, 1, 1}, PoolCase{1, 1, 2, 2},
                                           PoolCase{1, 2, 3, 3}, PoolCase{2, 3, 5, 4},
                                           PoolCase{1, 1, 4, 7}, PoolCase{3, 2, 9, 9},
                                           PoolCase{1, 3, 1, 6}),
                         pool_case_name);
// The seed network's five pools (after each block's batch-norm) at batch 2-4.
INSTANTIATE_TEST_SUITE_P(ModelShapes, MaxPoolParity,
                         ::testing::Values(PoolCase{2, 32, 150, 150}, PoolCase{3, 64, 75, 75},
                                           PoolCase{4, 64, 38, 38}, PoolCase{2, 128, 19, 19},
                                           PoolCase{3, 256, 10, 10}),
                         pool_case_name);

// The instantiations' names of a suite run on cuDNN and on our kernel.
std::string implementation_name(
    const ::testing::TestParamInfo<CudaBackendOptions::Implementation>& info) {
  return info.param == CudaBackendOptions::Implementation::Cudnn ? "Cudnn" : "Kernel";
}

// Known answers, independent of the CPU backend: which element of a tied window takes the
// gradient, for cuDNN and for the kernel. The interface says: the first in row-major order.
class MaxPoolTies : public ::testing::TestWithParam<CudaBackendOptions::Implementation> {};

TEST_P(MaxPoolTies, FirstInRowMajorOrderTakesTheGradient) {
  PNEUMO_REQUIRE_CUDA();
  CudaBackendOptions options;
  options.pooling = GetParam();
  CudaBackend backend(options);
  {
    // 4x4, four windows: all equal; tie down the right column; three-way tie; diagonal tie.
    const std::vector<float> x{5, 5, 1, 7,  //
                               5, 5, 3, 7,  //
                               2, 4, 6, 0,  //
                               4, 4, 0, 6};
    const std::vector<float> dy{10, 20, 30, 40};
    const std::vector<float> expected_dx{10, 0,  0,  20,  //
                                         0,  0,  0,  0,   //
                                         0,  30, 40, 0,   //
                                         0,  0,  0,  0};
    Tensor xt = Tensor::from_host({1, 1, 4, 4}, x.data(), Device::Cuda);
    Tensor dyt = Tensor::from_host({1, 1, 2, 2}, dy.data(), Device::Cuda);
    Tensor y = backend.empty({1, 1, 2, 2}), dx = backend.empty({1, 1, 4, 4});
    backend.maxpool2d_forward(xt, y);
    backend.maxpool2d_backward(xt, y, dyt, dx);
    EXPECT_TRUE(all_close(to_host(y), {5, 7, 4, 6}, 0, 0, "4x4 y"));
    EXPECT_TRUE(all_close(to_host(dx), expected_dx, 0, 0, "4x4 dx (ties)"));
  }
  {
    // 3x3 of ones: top/left padding makes windows of 1, 2, 2 and 4 real elements, all tied.
    const std::vector<float> x(9, 1.0f), dy{1, 2, 3, 4};
    const std::vector<float> expected_dx{1, 2, 0,  //
                                         3, 4, 0,  //
                                         0, 0, 0};
    Tensor xt = Tensor::from_host({1, 1, 3, 3}, x.data(), Device::Cuda);
    Tensor dyt = Tensor::from_host({1, 1, 2, 2}, dy.data(), Device::Cuda);
    Tensor y = backend.empty({1, 1, 2, 2}), dx = backend.empty({1, 1, 3, 3});
    backend.maxpool2d_forward(xt, y);
    backend.maxpool2d_backward(xt, y, dyt, dx);
    EXPECT_TRUE(all_close(to_host(y), {1, 1, 1, 1}, 0, 0, "3x3 y"));
    EXPECT_TRUE(all_close(to_host(dx), expected_dx, 0, 0, "3x3 dx (ties, padded)"));
  }
  {
    // 3x3 of negatives: the padding row/column (top/left) never wins.
    const std::vector<float> x{-1, -2, -3, -4, -5, -6, -7, -8, -9};
    Tensor xt = Tensor::from_host({1, 1, 3, 3}, x.data(), Device::Cuda);
    Tensor y = backend.empty({1, 1, 2, 2});
    backend.maxpool2d_forward(xt, y);
    EXPECT_TRUE(all_close(to_host(y), {-1, -2, -4, -5}, 0, 0, "3x3 negative y"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Implementations, MaxPoolTies,
    ::testing::Values(CudaBackendOptions::Implementation::Cudnn,
                      CudaBackendOptions::Implementation::Kernel),
    implementation_name);

// A NaN is its window's max wherever it stands (CUDNN_PROPAGATE_NAN; takes_max): first, second,
// last, none. Where its gradient goes cuDNN does not document, so dx is checked for the kernel
// only, against the CPU's (test_cpu_pool.cpp's rule). Its own suite, so that gpu_check.sh's
// summary, which reads a MaxPoolTies failure as the tie rule broken, does not blame that rule.
class MaxPoolNan : public ::testing::TestWithParam<CudaBackendOptions::Implementation> {};

TEST_P(MaxPoolNan, ANanWinsItsWindow) {
  PNEUMO_REQUIRE_CUDA();
  CudaBackendOptions options;
  options.pooling = GetParam();
  CudaBackend backend(options);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x{nan, 1, 4, nan, 7, 8, 1, 2,  //
                             5,   2, 3, 6,   9, nan, 3, 4};
  const std::vector<float> dy{10, 20, 30, 40};
  Tensor xt = Tensor::from_host({1, 1, 2, 8}, x.data(), Device::Cuda);
  Tensor dyt = Tensor::from_host({1, 1, 1, 4}, dy.data(), Device::Cuda);
  // Finite before the call (fresh memory may be NaN under PNEUMO_POISON_ALLOCATIONS): the NaNs
  // read back are ones the op wrote.
  Tensor y = Tensor::zeros({1, 1, 1, 4}, Device::Cuda), dx = Tensor::zeros({1, 1, 2, 8}, Device::Cuda);
  backend.maxpool2d_forward(xt, y);
  const std::vector<float> ys = to_host(y);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(std::isnan(ys[static_cast<size_t>(i)])) << i;
  EXPECT_EQ(ys[3], 4.0f);
  backend.maxpool2d_backward(xt, y, dyt, dx);
  if (GetParam() == CudaBackendOptions::Implementation::Kernel) {
    EXPECT_EQ(to_host(dx), (std::vector<float>{10, 0, 0, 20, 0, 0, 0, 0,  //
                                               0,  0, 0, 0,  0, 30, 0, 40}));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Implementations, MaxPoolNan,
    ::testing::Values(CudaBackendOptions::Implementation::Cudnn,
                      CudaBackendOptions::Implementation::Kernel),
    implementation_name);

// ---- Batch normalisation ------------------------------------------------------------------------

// Training forward and backward run on cuDNN, on kernels/batchnorm.cu, and on the default
// backend (whichever was faster on the first call: its timing runs must leave the running
// averages updated exactly once).
class BatchNormParity : public EveryImplementation<&CudaBackendOptions::batchnorm> {
 protected:
  Shape x_shape() const { return {GetParam().n, GetParam().c, GetParam().h, GetParam().w}; }
  Shape c_shape() const { return {GetParam().c}; }
  static constexpr double kFactor = 0.01;  // 1 - Keras momentum 0.99
  static constexpr double kEpsilon = 1e-3;
};

TEST_P(BatchNormParity, TrainingOutputsSavedAndRunningStatistics) {
  Pair x = random(x_shape(), 31, -1.0f, 3.0f);  // mean far from zero
  Pair gamma = random(c_shape(), 32, 0.5f, 1.5f), beta = random(c_shape(), 33, -0.5f, 0.5f);
  Pair running_mean = random(c_shape(), 34), running_var = random(c_shape(), 35, 0.5f, 2.0f);
  const std::vector<float> mean_before = to_host(running_mean.cpu), var_before = to_host(running_var.cpu);
  Pair y = output(x_shape()), saved_mean = output(c_shape()), saved_inv_std = output(c_shape());
  cpu_->batchnorm_forward_training(x.cpu, gamma.cpu, beta.cpu, running_mean.cpu, running_var.cpu,
                                   kFactor, kEpsilon, y.cpu, saved_mean.cpu, saved_inv_std.cpu);
  // The CPU's move against the rule itself: factor x (batch statistic - running), the variance
  // unbiased (N / (N - 1)), from the saved statistics. At N of a few thousand or less the
  // unbiased and biased moves differ by more than the tolerance.
  const double count = static_cast<double>(x_shape().numel() / GetParam().c);
  const std::vector<float> cpu_mean = to_host(saved_mean.cpu), cpu_inv_std = to_host(saved_inv_std.cpu);
  std::vector<float> rule_mean(mean_before.size()), rule_var(var_before.size());
  for (size_t c = 0; c < rule_mean.size(); ++c) {
    const double biased = 1.0 / (double{cpu_inv_std[c]} * cpu_inv_std[c]) - kEpsilon;
    rule_mean[c] = static_cast<float>(kFactor * (cpu_mean[c] - mean_before[c]));
    rule_var[c] = static_cast<float>(kFactor * (biased * count / (count - 1.0) - var_before[c]));
  }
  const std::vector<float> cpu_mean_move = testing::moved(to_host(running_mean.cpu), mean_before);
  const std::vector<float> cpu_var_move = testing::moved(to_host(running_var.cpu), var_before);
  EXPECT_TRUE(all_close(cpu_mean_move, rule_mean, 1e-6, 1e-4, "cpu running_mean move"));
  EXPECT_TRUE(all_close(cpu_var_move, rule_var, 1e-6, 1e-4, "cpu running_var move (unbiased)"));
  for (const auto& [backend, impl] : cuda_backends()) {
    Pair rm = random(c_shape(), 34), rv = random(c_shape(), 35, 0.5f, 2.0f);
    Pair yc = output(x_shape()), mean = output(c_shape()), inv_std = output(c_shape());
    backend->batchnorm_forward_training(x.cuda, gamma.cuda, beta.cuda, rm.cuda, rv.cuda, kFactor,
                                        kEpsilon, yc.cuda, mean.cuda, inv_std.cuda);
    for (const Tensor* t : {&yc.cuda, &mean.cuda, &inv_std.cuda, &rm.cuda, &rv.cuda})
      EXPECT_TRUE(is_device_memory(t->data()));
    EXPECT_TRUE(close_to(yc.cuda, y.cpu, 1e-4, impl + "y"));
    EXPECT_TRUE(close_to(mean.cuda, saved_mean.cpu, 1e-4, impl + "saved_mean"));
    EXPECT_TRUE(close_to(inv_std.cuda, saved_inv_std.cpu, 1e-4, impl + "saved_inv_std"));
    // Moved once (a timing run must not move them again), by the CPU's move.
    EXPECT_TRUE(all_close(testing::moved(to_host(rm.cuda), mean_before), cpu_mean_move, 1e-6, 1e-3,
                          impl + "running_mean move, once"));
    EXPECT_TRUE(all_close(testing::moved(to_host(rv.cuda), var_before), cpu_var_move, 1e-6, 1e-3,
                          impl + "running_var move (unbiased), once"));
  }
}

TEST_P(BatchNormParity, Inference) {
  Pair x = random(x_shape(), 41, -1.0f, 3.0f);
  Pair gamma = random(c_shape(), 42, 0.5f, 1.5f), beta = random(c_shape(), 43, -0.5f, 0.5f);
  Pair mean = random(c_shape(), 44), var = random(c_shape(), 45, 0.5f, 2.0f);
  Pair y = output(x_shape());
  cpu_->batchnorm_forward_inference(x.cpu, gamma.cpu, beta.cpu, mean.cpu, var.cpu, kEpsilon, y.cpu);
  cuda_->batchnorm_forward_inference(x.cuda, gamma.cuda, beta.cuda, mean.cuda, var.cuda, kEpsilon,
                                     y.cuda);
  EXPECT_ON_DEVICE(y.cuda);
  EXPECT_TRUE(close_to(y.cuda, y.cpu, 1e-4, "y"));
}

// A gradient like a real one: per channel an offset and a part that follows x (a_c + b_c x-hat,
// a_c and b_c of order 1), plus noise. Batch-norm's backward takes both out again through its
// mean(dy) and mean(dy x-hat) terms, so dx is mostly what the noise leaves and an error in those
// terms (a wrong count, a chunk's sum dropped) shows at the size of a_c and b_c. Random dy that
// ignores x makes both terms shrink like 1 / sqrt(N): at the model's shapes under 1% of dx.
std::vector<float> gradient_following(const std::vector<float>& x, const Shape& shape, uint32_t seed) {
  const int64_t channels = shape.c(), plane = shape.h() * shape.w(), n = shape.n();
  const std::vector<float> noise = uniform(shape.numel(), seed, -0.3f, 0.3f);
  const std::vector<float> offset = uniform(channels, seed + 1, -1.0f, 1.0f);
  const std::vector<float> slope = uniform(channels, seed + 2, -1.0f, 1.0f);
  std::vector<float> dy(x.size());
  for (int64_t c = 0; c < channels; ++c) {
    double sum = 0.0, squares = 0.0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < plane; ++i) {
        const double v = x[static_cast<size_t>((b * channels + c) * plane + i)];
        sum += v;
        squares += v * v;
      }
    const double count = static_cast<double>(n * plane), mean = sum / count;
    const double inv_std = 1.0 / std::sqrt(std::max(squares / count - mean * mean, 0.0) + 1e-3);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < plane; ++i) {
        const size_t at = static_cast<size_t>((b * channels + c) * plane + i);
        dy[at] = static_cast<float>(offset[static_cast<size_t>(c)] +
                                    slope[static_cast<size_t>(c)] * (x[at] - mean) * inv_std + noise[at]);
      }
  }
  return dy;
}

TEST_P(BatchNormParity, Backward) {
  Pair x = random(x_shape(), 51, -1.0f, 3.0f);
  Pair dy = upload(x_shape(), gradient_following(to_host(x.cpu), x_shape(), 52));
  Pair gamma = random(c_shape(), 53, 0.5f, 1.5f), beta = random(c_shape(), 54, -0.5f, 0.5f);
  // Both backends get the same saved statistics: the CPU forward's.
  Tensor running_mean = Tensor::zeros(c_shape(), Device::Cpu);
  std::vector<float> ones(static_cast<size_t>(GetParam().c), 1.0f);
  Tensor running_var = Tensor::from_host(c_shape(), ones.data(), Device::Cpu);
  Tensor y = Tensor::zeros(x_shape(), Device::Cpu), mean = Tensor::zeros(c_shape(), Device::Cpu),
         inv_std = Tensor::zeros(c_shape(), Device::Cpu);
  cpu_->batchnorm_forward_training(x.cpu, gamma.cpu, beta.cpu, running_mean, running_var, kFactor,
                                   kEpsilon, y, mean, inv_std);
  Pair saved_mean = upload(c_shape(), to_host(mean));
  Pair saved_inv_std = upload(c_shape(), to_host(inv_std));
  // dx is a difference of terms of size |dy| |gamma| inv_std that cancel exactly when a channel
  // holds two values (then dx is rounding noise), so its scale is theirs, not its own.
  const double dx_scale = max_abs(to_host(dy.cpu)) * max_abs(to_host(gamma.cpu)) *
                          max_abs(to_host(saved_inv_std.cpu));
  // Without and with the ReLU gate (x < 0 in about a quarter of the elements), and with the gate
  // carrying a dropout's multiplier: cuDNN's candidate gates in a second pass, ours in its own.
  // And with dx's channel sums (the convolution's bias gradient) from the same op.
  const struct {
    bool gate;
    float dropout_rate;
    bool sums;
    const char* what;
  } gates[] = {{false, 0.0f, false, ""},
               {true, 0.0f, false, "ReLU-gated "},
               {true, 0.2f, false, "ReLU+dropout-gated "},
               {true, 0.2f, true, "ReLU+dropout-gated, summed "}};
  for (const auto& [gate, rate, with_sums, what_text] : gates) {
    const std::string what = what_text;
    Pair dx = output(x_shape()), dgamma = output(c_shape()), dbeta = output(c_shape());
    Pair sums = output(c_shape());
    cpu_->batchnorm_backward(x.cpu, dy.cpu, gamma.cpu, saved_mean.cpu, saved_inv_std.cpu,
                             kEpsilon, dx.cpu, dgamma.cpu, dbeta.cpu, gate, rate,
                             with_sums ? TensorView(sums.cpu) : TensorView{});
    for (const auto& [backend, impl] : cuda_backends()) {
      Pair dxc = output(x_shape()), dgammac = output(c_shape()), dbetac = output(c_shape());
      Pair sumsc = output(c_shape());
      backend->batchnorm_backward(x.cuda, dy.cuda, gamma.cuda, saved_mean.cuda,
                                  saved_inv_std.cuda, kEpsilon, dxc.cuda, dgammac.cuda,
                                  dbetac.cuda, gate, rate,
                                  with_sums ? TensorView(sumsc.cuda) : TensorView{});
      if (with_sums) {
        // Sums of dx, whose terms cancel: held against the scale of their terms.
        const double sum_scale = dx_scale * static_cast<double>(x_shape().numel()) /
                                 static_cast<double>(GetParam().c);
        EXPECT_TRUE(all_close(sumsc.cuda, sums.cpu, 1e-6 * sum_scale, 1e-3, impl + what + "sums"));
      }
      EXPECT_ON_DEVICE(dxc.cuda);
      EXPECT_ON_DEVICE(dgammac.cuda);
      EXPECT_ON_DEVICE(dbetac.cuda);
      EXPECT_TRUE(all_close(dxc.cuda, dx.cpu, 1e-5 * dx_scale / (1.0 - rate), 1e-3,
                            impl + what + "dx"));
      EXPECT_TRUE(close_to(dgammac.cuda, dgamma.cpu, 1e-4, impl + what + "dgamma"));
      EXPECT_TRUE(close_to(dbetac.cuda, dbeta.cpu, 1e-4, impl + what + "dbeta"));
    }
  }
}

// dx from sums given (synchronised batch-norm): the CUDA kernel against the CPU twin, with sums
// that are not this batch's own (as another rank's images would make them).
TEST_P(BatchNormParity, BackwardInputFromSums) {
  Pair x = random(x_shape(), 55, -1.0f, 3.0f), dy = random(x_shape(), 56);
  Pair gamma = random(c_shape(), 57, 0.5f, 1.5f);
  Pair mean = random(c_shape(), 58, 0.0f, 2.0f), inv_std = random(c_shape(), 59, 0.5f, 2.0f);
  Pair sums = random(Shape{2, GetParam().c}, 60, -3.0f, 3.0f);
  const double count = 3.0 * static_cast<double>(x_shape().numel() / GetParam().c);
  Pair dx = output(x_shape());
  cpu_->batchnorm_backward_input(x.cpu, dy.cpu, gamma.cpu, mean.cpu, inv_std.cpu, sums.cpu, count,
                                 dx.cpu);
  cuda_->batchnorm_backward_input(x.cuda, dy.cuda, gamma.cuda, mean.cuda, inv_std.cuda, sums.cuda,
                                  count, dx.cuda);
  EXPECT_ON_DEVICE(dx.cuda);
  EXPECT_TRUE(close_to(dx.cuda, dx.cpu, 1e-5, "dx"));
}

INSTANTIATE_TEST_SUITE_P(AwkwardShapes, BatchNormParity,
                         ::testing::Values(PoolCase{1, 3, 4, 5}, PoolCase{2, 4, 3, 3},
                                           PoolCase{4, 2, 1, 1}, PoolCase{3, 5, 7, 1},
                                           PoolCase{1, 1, 2, 1}),
                         pool_case_name);
// Batches that chunks of 3 images split with a short last chunk (3 + 3 + 1, 3 + 2, 3 + 3 + 2),
// and the forced split checked, so a change to it cannot quietly drop that coverage.
INSTANTIATE_TEST_SUITE_P(ShortLastChunk, BatchNormParity,
                         ::testing::Values(PoolCase{7, 8, 5, 5}, PoolCase{5, 16, 10, 10},
                                           PoolCase{8, 32, 19, 19}),
                         pool_case_name);
TEST_P(BatchNormParity, TheChunkedBackendSplitsAsForced) {
  const kernels::BiasReduction r = chunked().reduction(GetParam().n, GetParam().c);
  EXPECT_EQ(r.images_per_chunk, std::min(kChunkImages, GetParam().n));
  EXPECT_EQ(r.chunks, (GetParam().n + kChunkImages - 1) / kChunkImages);
}
INSTANTIATE_TEST_SUITE_P(ModelShapes, BatchNormParity,
                         ::testing::Values(PoolCase{2, 32, 150, 150}, PoolCase{3, 64, 75, 75},
                                           PoolCase{4, 64, 38, 38}, PoolCase{2, 128, 19, 19},
                                           PoolCase{3, 256, 10, 10}),
                         pool_case_name);

// ---- Dropout ------------------------------------------------------------------------------------

class DropoutParity : public Parity, public ::testing::WithParamInterface<PoolCase> {};

// The mask is a pure function of (key, index): CPU and CUDA must agree exactly, and both must
// equal x * dropout_multiplier computed here on the host.
TEST_P(DropoutParity, ForwardAndBackwardMasksAreIdentical) {
  const Shape shape{GetParam().n, GetParam().c, GetParam().h, GetParam().w};
  RngKey key = make_key(1234, RngStream::kDropout, 3, 17, 2);
  for (float rate : {0.0f, 0.1f, 0.2f, 0.5f, 0.3f}) {
    if (rate == 0.3f) key.first = 4 * 12345;  // a data-parallel rank's place in the global batch
    const std::vector<float> x_values = uniform(shape.numel(), 61, 0.5f, 1.5f);  // never 0
    Pair x = upload(shape, x_values), y = output(shape), dx = output(shape);
    cpu_->dropout_forward(x.cpu, y.cpu, rate, key);
    cuda_->dropout_forward(x.cuda, y.cuda, rate, key);
    EXPECT_ON_DEVICE(y.cuda);
    const std::string what = "rate " + std::to_string(rate);
    EXPECT_TRUE(exactly_equal(y.cuda, y.cpu, what + " y"));
    std::vector<float> expected(x_values.size());
    for (size_t i = 0; i < expected.size(); ++i)
      expected[i] = x_values[i] * dropout_multiplier(key, static_cast<uint32_t>(i), rate);
    EXPECT_TRUE(all_close(to_host(y.cuda), expected, 0, 0, what + " y vs host twin"));
    cpu_->dropout_backward(x.cpu, dx.cpu, rate, key);  // dy := x
    cuda_->dropout_backward(x.cuda, dx.cuda, rate, key);
    EXPECT_ON_DEVICE(dx.cuda);
    EXPECT_TRUE(exactly_equal(dx.cuda, dx.cpu, what + " dx"));
  }
}

// Full groups of 16-byte-aligned tensors move as float4 (kernels/dropout.cu); a view one float
// into its buffer is not aligned, so it takes the scalar path: both must give the host twin's bits.
TEST_F(Parity, DropoutOnAViewOneFloatInMatchesTheHostTwin) {
  const int64_t n = 1001;
  const RngKey key = make_key(99, RngStream::kDropout, 1, 4);
  const std::vector<float> values = uniform(n + 1, 62, 0.5f, 1.5f);
  Pair x = upload({n + 1}, values), y = output({n + 1});
  const ConstTensorView x_view(x.cuda.data() + 1, Shape{n}, Device::Cuda);
  const TensorView y_view{y.cuda.data() + 1, Shape{n}, Device::Cuda};
  for (bool forward : {true, false}) {
    if (forward)
      cuda_->dropout_forward(x_view, y_view, 0.3f, key);
    else
      cuda_->dropout_backward(x_view, y_view, 0.3f, key);
    const std::vector<float> got = to_host(y.cuda);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(got[size_t(i + 1)],
                values[size_t(i + 1)] * dropout_multiplier(key, static_cast<uint32_t>(i), 0.3f))
          << (forward ? "forward" : "backward") << ", element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AwkwardShapes, DropoutParity,
                         ::testing::Values(PoolCase{1, 1, 1, 1}, PoolCase{2, 3, 5, 7},
                                           PoolCase{1, 1, 1, 1000003}),
                         pool_case_name);
INSTANTIATE_TEST_SUITE_P(ModelShapes, DropoutParity,
                         ::testing::Values(PoolCase{4, 64, 75, 75}, PoolCase{3, 128, 19, 19},
                                           PoolCase{2, 256, 10, 10}, PoolCase{3, 128, 1, 1}),
                         pool_case_name);

// ---- Dense --------------------------------------------------------------------------------------

struct DenseCase {
  int64_t n, in, out;
};
void PrintTo(const DenseCase& p, std::ostream* os) {
  *os << "x (" << p.n << ", " << p.in << ") -> " << p.out;
}
std::string dense_case_name(const ::testing::TestParamInfo<DenseCase>& info) {
  std::ostringstream out;
  out << "n" << info.param.n << "_in" << info.param.in << "_out" << info.param.out;
  return out.str();
}

class DenseParity : public Parity, public ::testing::WithParamInterface<DenseCase> {
 protected:
  Shape x_shape() const { return {GetParam().n, GetParam().in}; }
  Shape y_shape() const { return {GetParam().n, GetParam().out}; }
  Shape w_shape() const { return {GetParam().out, GetParam().in}; }
  Pair weights(uint32_t seed) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(GetParam().in));
    return random(w_shape(), seed, -scale, scale);
  }
};

TEST_P(DenseParity, Forward) {
  Pair x = random(x_shape(), 71), w = weights(72), b = random({GetParam().out}, 73);
  Pair y = output(y_shape());
  cpu_->dense_forward(x.cpu, w.cpu, b.cpu, y.cpu);
  cuda_->dense_forward(x.cuda, w.cuda, b.cuda, y.cuda);
  EXPECT_ON_DEVICE(y.cuda);
  EXPECT_TRUE(close_to(y.cuda, y.cpu, 1e-4, "y"));
}

TEST_P(DenseParity, BackwardWithAndWithoutDx) {
  Pair x = random(x_shape(), 74), w = weights(75), dy = random(y_shape(), 76);
  Pair dx = output(x_shape()), dw = output(w_shape()), db = output({GetParam().out});
  cpu_->dense_backward(x.cpu, w.cpu, dy.cpu, dx.cpu, dw.cpu, db.cpu);
  cuda_->dense_backward(x.cuda, w.cuda, dy.cuda, dx.cuda, dw.cuda, db.cuda);
  EXPECT_ON_DEVICE(dx.cuda);
  EXPECT_ON_DEVICE(dw.cuda);
  EXPECT_ON_DEVICE(db.cuda);
  EXPECT_TRUE(close_to(dx.cuda, dx.cpu, 1e-4, "dx"));
  EXPECT_TRUE(close_to(dw.cuda, dw.cpu, 1e-4, "dweight"));
  EXPECT_TRUE(close_to(db.cuda, db.cpu, 1e-5, "dbias"));
  // dx.data == nullptr: the input gradient is skipped, the others still written.
  Pair dw2 = output(w_shape()), db2 = output({GetParam().out});
  cuda_->dense_backward(x.cuda, w.cuda, dy.cuda, TensorView{nullptr, x_shape(), Device::Cuda},
                        dw2.cuda, db2.cuda);
  EXPECT_TRUE(close_to(dw2.cuda, dw.cpu, 1e-4, "dweight without dx"));
  EXPECT_TRUE(close_to(db2.cuda, db.cpu, 1e-5, "dbias without dx"));
}

// n = 0: a rank whose shard of a small global batch is empty; dweight and dbias are still
// written (zeros), as every backward op writes its outputs.
INSTANTIATE_TEST_SUITE_P(AwkwardShapes, DenseParity,
                         ::testing::Values(DenseCase{1, 1, 1}, DenseCase{3, 7, 5},
                                           DenseCase{5, 33, 17}, DenseCase{0, 5, 3}),
                         dense_case_name);
// fc1 (6400 -> 128) and fc2 (128 -> 1) at batch 1-4.
INSTANTIATE_TEST_SUITE_P(ModelShapes, DenseParity,
                         ::testing::Values(DenseCase{2, 6400, 128}, DenseCase{1, 6400, 128},
                                           DenseCase{4, 128, 1}),
                         dense_case_name);

// ---- Fused sigmoid + BCE ------------------------------------------------------------------------

class SigmoidBceParity : public Parity, public ::testing::WithParamInterface<int64_t> {};

// count labels of 0 or 1, about half each.
std::vector<float> binary_labels(int64_t count, uint32_t seed) {
  std::vector<float> labels = uniform(count, seed, 0.0f, 1.0f);
  for (float& y : labels) y = y < 0.5f ? 0.0f : 1.0f;
  return labels;
}

TEST_P(SigmoidBceParity, LossGradientAndCountsWithAndWithoutWeights) {
  const int64_t n = GetParam();
  std::vector<float> logits = uniform(n, 81, -8.0f, 8.0f);
  const float extremes[] = {100.0f, -100.0f, 0.0f, 1e-3f, -1e-3f, 30.0f, -30.0f};
  for (size_t i = 0; i < std::size(extremes) && i < logits.size(); ++i) logits[i] = extremes[i];
  const std::vector<float> labels = binary_labels(n, 82);
  const std::vector<float> weight_values = uniform(n, 83, 0.5f, 2.0f);
  for (bool weighted : {false, true}) {
    // Unweighted: these logits as one rank's shard of a batch of 3n (the gradient is of the
    // whole batch's mean loss), so the divisor is batch_count, not the shard's length.
    const int64_t batch_count = weighted ? n : 3 * n;
    const std::string what = weighted ? "weighted " : "unweighted shard ";
    Pair z = upload({n, 1}, logits), y = upload({n}, labels), w = upload({n}, weight_values);
    Pair dz = output({n, 1});
    const std::vector<float> stats_start{1.5f, 2.0f};  // stats accumulate: +=
    Pair stats = upload({2}, stats_start);
    const ConstTensorView no_weights_cpu(nullptr, {n}, Device::Cpu);
    const ConstTensorView no_weights_cuda(nullptr, {n}, Device::Cuda);
    cpu_->sigmoid_bce(z.cpu, y.cpu, weighted ? ConstTensorView(w.cpu) : no_weights_cpu, dz.cpu,
                      stats.cpu, batch_count);
    cuda_->sigmoid_bce(z.cuda, y.cuda, weighted ? ConstTensorView(w.cuda) : no_weights_cuda,
                       dz.cuda, stats.cuda, batch_count);
    EXPECT_ON_DEVICE(dz.cuda);
    EXPECT_ON_DEVICE(stats.cuda);
    EXPECT_TRUE(all_close(dz.cuda, dz.cpu, 1e-9, 1e-5, what + "dlogits"));
    // The host twin: the shared per-element function, summed in double.
    std::vector<float> expected_dz(static_cast<size_t>(n));
    double loss = stats_start[0], correct = stats_start[1];
    for (int64_t i = 0; i < n; ++i) {
      const BceElement e =
          pneumo::sigmoid_bce(logits[static_cast<size_t>(i)], labels[static_cast<size_t>(i)],
                              weighted ? weight_values[static_cast<size_t>(i)] : 1.0f);
      expected_dz[static_cast<size_t>(i)] = e.gradient / static_cast<float>(batch_count);
      loss += e.loss;
      correct += e.correct;
    }
    EXPECT_TRUE(all_close(to_host(dz.cuda), expected_dz, 1e-9, 1e-5, what + "dlogits vs twin"));
    const std::vector<float> s = to_host(stats.cuda), s_cpu = to_host(stats.cpu);
    EXPECT_TRUE(all_close(std::vector<float>{s[0]}, std::vector<float>{static_cast<float>(loss)},
                          1e-6, 1e-5, what + "loss sum"));
    EXPECT_TRUE(all_close(std::vector<float>{s[0]}, std::vector<float>{s_cpu[0]}, 1e-6, 1e-5,
                          what + "loss sum vs cpu"));
    EXPECT_EQ(s[1], static_cast<float>(correct)) << what << "correct count";
    EXPECT_EQ(s[1], s_cpu[1]) << what << "correct count vs cpu";
  }
}

// The running sums are the same bits on every call: with more logits than one block's threads the
// kernel's per-block atomics once landed in the order the blocks finished.
TEST_P(SigmoidBceParity, TheSumsAreTheSameBitsOnEveryCall) {
  const int64_t n = GetParam();
  Pair z = upload({n, 1}, uniform(n, 84, -8.0f, 8.0f));
  Pair y = upload({n}, binary_labels(n, 85)), dz = output({n, 1});
  const ConstTensorView no_weights(nullptr, {n}, Device::Cuda);
  std::vector<float> first;
  for (int call = 0; call < 20; ++call) {
    Pair stats = upload({2}, std::vector<float>{0.25f, 0.0f});
    cuda_->sigmoid_bce(z.cuda, y.cuda, no_weights, dz.cuda, stats.cuda);
    const std::vector<float> s = to_host(stats.cuda);
    if (call == 0) first = s;
    ASSERT_EQ(std::memcmp(s.data(), first.data(), 2 * sizeof(float)), 0)
        << "call " << call << ": loss " << s[0] << " against " << first[0];
  }
}

INSTANTIATE_TEST_SUITE_P(BatchSizes, SigmoidBceParity,
                         ::testing::Values<int64_t>(1, 7, 32, 257, 1000, 4099));

// ---- RMSprop ------------------------------------------------------------------------------------

// Both placements of epsilon (outside: PyTorch; inside: Keras), on gradients small enough
// (|g| <= 1e-3, mean_square <= 1e-6) for the placement to matter.
TEST_F(Parity, RmspropOverAnOddLengthBuffer) {
  const int64_t n = 1000003;
  const Shape shape{n};
  for (bool inside : {false, true}) {
    SCOPED_TRACE(inside ? "epsilon inside" : "epsilon outside");
    std::vector<float> p = uniform(n, 91, -1.0f, 1.0f), g = uniform(n, 92, -1e-3f, 1e-3f);
    std::vector<float> ms = uniform(n, 93, 0.0f, 1e-6f);
    Pair params = upload(shape, p), grads = upload(shape, g), mean_square = upload(shape, ms);
    for (int step = 0; step < 2; ++step) {  // the second step starts from updated state
      cpu_->rmsprop_step(params.cpu, grads.cpu, mean_square.cpu, 1e-3f, 0.9f, 1e-7f, inside);
      cuda_->rmsprop_step(params.cuda, grads.cuda, mean_square.cuda, 1e-3f, 0.9f, 1e-7f, inside);
      for (size_t i = 0; i < p.size(); ++i)
        rmsprop_update(p[i], ms[i], g[i], 1e-3f, 0.9f, 1e-7f, inside);
    }
    EXPECT_ON_DEVICE(params.cuda);
    EXPECT_ON_DEVICE(mean_square.cuda);
    EXPECT_TRUE(all_close(params.cuda, params.cpu, 1e-7, 1e-5, "params"));
    EXPECT_TRUE(all_close(mean_square.cuda, mean_square.cpu, 1e-12, 1e-5, "mean_square"));
    EXPECT_TRUE(all_close(to_host(params.cuda), p, 1e-7, 1e-5, "params vs host twin"));
    EXPECT_TRUE(all_close(to_host(mean_square.cuda), ms, 1e-12, 1e-5, "mean_square vs host twin"));
  }
}

TEST_F(Parity, GlobalAvgPoolBitForBit) {
  for (const Shape shape : {Shape{32, 256, 5, 5}, Shape{3, 7, 3, 1}}) {
    const std::vector<float> x = uniform(shape.numel(), 96, -2.0f, 2.0f);
    const Shape pooled{shape.n(), shape.c()};
    const std::vector<float> g = uniform(pooled.numel(), 97, -1.0f, 1.0f);
    Pair xs = upload(shape, x), dys = upload(pooled, g);
    Pair y = output(pooled), dx = output(shape);
    cpu_->global_avgpool_forward(xs.cpu, y.cpu);
    cuda_->global_avgpool_forward(xs.cuda, y.cuda);
    cpu_->global_avgpool_backward(dys.cpu, dx.cpu);
    cuda_->global_avgpool_backward(dys.cuda, dx.cuda);
    EXPECT_ON_DEVICE(y.cuda);
    EXPECT_TRUE(exactly_equal(y.cuda, y.cpu, "pooled"));
    EXPECT_TRUE(exactly_equal(dx.cuda, dx.cpu, "dx"));
  }
}

TEST_F(Parity, AdamWOverAnOddLengthBuffer) {
  const int64_t n = 1000003;
  const Shape shape{n};
  std::vector<float> p = uniform(n, 94, -1.0f, 1.0f), g = uniform(n, 95, -0.1f, 0.1f);
  std::vector<float> m(static_cast<size_t>(n), 0.0f), v(static_cast<size_t>(n), 0.0f);
  Pair params = upload(shape, p), grads = upload(shape, g), exp_avg = upload(shape, m),
       exp_avg_sq = upload(shape, v);
  for (int t = 1; t <= 2; ++t) {  // the second step starts from updated state
    const AdamWStep step{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, float(1 - std::pow(0.9, t)),
                         float(1 - std::pow(0.999, t))};
    cpu_->adamw_step(params.cpu, grads.cpu, exp_avg.cpu, exp_avg_sq.cpu, step);
    cuda_->adamw_step(params.cuda, grads.cuda, exp_avg.cuda, exp_avg_sq.cuda, step);
    for (size_t i = 0; i < p.size(); ++i) adamw_update(p[i], m[i], v[i], g[i], step);
  }
  EXPECT_ON_DEVICE(params.cuda);
  EXPECT_ON_DEVICE(exp_avg_sq.cuda);
  EXPECT_TRUE(all_close(params.cuda, params.cpu, 1e-7, 1e-5, "params"));
  EXPECT_TRUE(all_close(exp_avg.cuda, exp_avg.cpu, 1e-9, 1e-5, "exp_avg"));
  EXPECT_TRUE(all_close(exp_avg_sq.cuda, exp_avg_sq.cpu, 1e-12, 1e-5, "exp_avg_sq"));
  EXPECT_TRUE(all_close(to_host(params.cuda), p, 1e-7, 1e-5, "params vs host twin"));
}

// ---- Non-finite marker --------------------------------------------------------------------------

TEST_F(Parity, MarkNonfiniteKeepsTheFirstBadStep) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> values{0.5f, 1e30f, inf, nan, 7.0f};
  Pair marker = upload({1}, {0.0f});
  for (size_t step = 0; step < values.size(); ++step) {
    Pair value = upload({1}, {values[step]});
    cpu_->mark_nonfinite(value.cpu, static_cast<int64_t>(step) + 10, marker.cpu);
    cuda_->mark_nonfinite(value.cuda, static_cast<int64_t>(step) + 10, marker.cuda);
  }
  EXPECT_ON_DEVICE(marker.cuda);
  EXPECT_EQ(to_host(marker.cpu)[0], 13.0f);  // step 12 (+1): the infinity, not the NaN after it
  EXPECT_TRUE(exactly_equal(marker.cuda, marker.cpu, "marker"));
}

// ---- Input pipeline -----------------------------------------------------------------------------

template <class T>
Array<T> array_on(Device device, const std::vector<T>& values) {
  Array<T> a(static_cast<int64_t>(values.size()), device);
  copy_bytes(a.data(), device, values.data(), Device::Cpu, a.bytes());
  return a;
}

TEST_F(Parity, GatherValues) {
  const std::vector<float> values = uniform(100, 101, -5.0f, 5.0f);
  std::vector<int32_t> indices(37);
  std::mt19937 gen(102);
  for (int32_t& i : indices) i = static_cast<int32_t>(gen() % 100);
  Array<float> v_cpu = array_on(Device::Cpu, values), v_cuda = array_on(Device::Cuda, values);
  Array<int32_t> i_cpu = array_on(Device::Cpu, indices), i_cuda = array_on(Device::Cuda, indices);
  Pair out = output({37});
  cpu_->gather_values(v_cpu.data(), 100, i_cpu.data(), out.cpu);
  cuda_->gather_values(v_cuda.data(), 100, i_cuda.data(), out.cuda);
  EXPECT_ON_DEVICE(out.cuda);
  EXPECT_TRUE(exactly_equal(out.cuda, out.cpu, "gathered"));
  // An index outside the values (a caller's bug): NaN on CUDA, which cannot stop a kernel with a
  // message (the CPU refuses it: CpuBackend.GatherValuesAndPlainGather), never other memory.
  const std::vector<int32_t> bad{7, 100, -1, 99};
  Array<int32_t> bad_cuda = array_on(Device::Cuda, bad);
  Tensor bad_out = cuda_->zeros({4});
  cuda_->gather_values(v_cuda.data(), 100, bad_cuda.data(), bad_out);
  const std::vector<float> got = to_host(bad_out);
  EXPECT_EQ(got[0], values[7]);
  EXPECT_TRUE(std::isnan(got[1])) << got[1];
  EXPECT_TRUE(std::isnan(got[2])) << got[2];
  EXPECT_EQ(got[3], values[99]);
}

TEST_F(Parity, GatherAugment) {
  const int size = 32, count = 6;
  std::vector<uint8_t> images(static_cast<size_t>(count * size * size));
  std::mt19937 gen(111);
  for (uint8_t& p : images) p = static_cast<uint8_t>(gen() % 256);
  const std::vector<int32_t> indices{5, 0, 3, 3};
  Array<uint8_t> im_cpu = array_on(Device::Cpu, images), im_cuda = array_on(Device::Cuda, images);
  Array<int32_t> i_cpu = array_on(Device::Cpu, indices), i_cuda = array_on(Device::Cuda, indices);
  const RngKey key = make_key(7, RngStream::kAugment, 1, 2);
  const Shape shape{4, 1, size, size};
  {
    AugmentSettings plain;
    plain.enabled = false;
    Pair out = output(shape);
    cpu_->gather_augment(im_cpu.data(), count, size, i_cpu.data(), plain, key, out.cpu);
    cuda_->gather_augment(im_cuda.data(), count, size, i_cuda.data(), plain, key, out.cuda);
    EXPECT_ON_DEVICE(out.cuda);
    EXPECT_TRUE(exactly_equal(out.cuda, out.cpu, "plain gather + scale"));
  }
  {
    // Warped: both twins call the same per-pixel function, the device's sines and fused
    // multiply-adds rounding differently. Bilinear sampling with a clamped border is continuous
    // in the coordinate, so a coordinate off by r pixels moves a value by at most r times the
    // image's steepest step (1 here, noise from 0 to 255): with r ~ 1e-5 at 32 px every pixel is
    // within 1e-4 (AugmentCuda.MatchesTheCpuTwin's bound, 0.026 grey levels). No pixel is let off.
    AugmentSettings warp;
    Pair out = output(shape);
    cpu_->gather_augment(im_cpu.data(), count, size, i_cpu.data(), warp, key, out.cpu);
    cuda_->gather_augment(im_cuda.data(), count, size, i_cuda.data(), warp, key, out.cuda);
    const std::vector<float> a = to_host(out.cuda), e = to_host(out.cpu);
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_TRUE(std::isfinite(a[i]) && a[i] >= 0.0f && a[i] <= 1.0f) << "pixel " << i;
    EXPECT_TRUE(all_close(a, e, 1e-4, 0.0, "warped gather cuda vs cpu"));
  }
}

// ---- TF32 ---------------------------------------------------------------------------------------

TEST_F(Parity, Tf32ConvAndDenseStayWithinTf32Tolerance) {
  BackendOptions tf32_options;
  tf32_options.allow_tf32 = true;
  std::unique_ptr<Backend> tf32 = make_cuda_backend(tf32_options);
  EXPECT_NE(tf32->name().find("tf32"), std::string::npos) << tf32->name();
  const Shape x_shape{2, 64, 19, 19}, w_shape{128, 64, 3, 3}, y_shape{2, 128, 19, 19};
  Pair x = random(x_shape, 121), w = random(w_shape, 122, -1.0f / 24, 1.0f / 24);
  Pair b = random({128}, 123), y = output(y_shape);
  cpu_->conv2d_forward(x.cpu, w.cpu, b.cpu, y.cpu, true);
  tf32->conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);
  EXPECT_TRUE(close_to(y.cuda, y.cpu, 5e-3, "tf32 conv"));
  Pair dx = output(x_shape), dw = output(w_shape), db = output({128}), dy = random(y_shape, 124);
  cpu_->conv2d_backward_data(dy.cpu, w.cpu, dx.cpu);
  tf32->conv2d_backward_data(dy.cuda, w.cuda, dx.cuda);
  EXPECT_TRUE(close_to(dx.cuda, dx.cpu, 5e-3, "tf32 conv dx"));
  cpu_->conv2d_backward_filter(x.cpu, dy.cpu, dw.cpu, db.cpu);
  tf32->conv2d_backward_filter(x.cuda, dy.cuda, dw.cuda, db.cuda);
  EXPECT_TRUE(close_to(dw.cuda, dw.cpu, 5e-3, "tf32 conv dweight"));
  Pair fx = random({3, 6400}, 125), fw = random({128, 6400}, 126, -0.0125f, 0.0125f);
  Pair fb = random({128}, 127), fy = output({3, 128});
  cpu_->dense_forward(fx.cpu, fw.cpu, fb.cpu, fy.cpu);
  tf32->dense_forward(fx.cuda, fw.cuda, fb.cuda, fy.cuda);
  EXPECT_TRUE(close_to(fy.cuda, fy.cpu, 5e-3, "tf32 dense"));
  // The tolerance alone would pass a backend that ignored allow_tf32 (fp32 is closer still): the
  // math each library was given, read back. Whether cuDNN's pick then runs on tensor cores is its
  // own choice (the fastest under TENSOR_OP_MATH may be an FMA algorithm).
  auto& tf32_cuda = dynamic_cast<CudaBackend&>(*tf32);
  EXPECT_EQ(tf32_cuda.gemm_math_mode(), CUBLAS_TF32_TENSOR_OP_MATH);
  // cuDNN's searches ran with tensor-op math allowed: on sm_80 and newer tensor-op algorithms
  // are among the trials they timed (a weaker check than cuBLAS's: which one is kept is cuDNN's
  // choice, and the timing may keep an FMA one).
  int major = 0;
  PNEUMO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), "cc");
  bool tensor_op_tried = false;
  for (const ConvSearch& search : tf32_cuda.conv_searches())
    for (const ConvAlgoTrial& trial : search.pick.trials)
      tensor_op_tried = tensor_op_tried || trial.math == CUDNN_TENSOR_OP_MATH;
  if (major >= 8) {
    EXPECT_TRUE(tensor_op_tried) << tf32_cuda.describe_conv_plans();
  }
  // And the fp32 backend is given neither, nor keeps a tensor-op pick.
  auto& fp32_cuda = dynamic_cast<CudaBackend&>(*cuda_);
  EXPECT_EQ(fp32_cuda.gemm_math_mode(), CUBLAS_DEFAULT_MATH);
  Pair y32 = output(y_shape);
  fp32_cuda.conv2d_forward(x.cuda, w.cuda, b.cuda, y32.cuda, true);
  // (cuDNN may list tensor-op algorithms under FMA_MATH too; the search must not keep one.)
  // (`algo` is the algorithm's id, not its place among the trials, which are fastest first:
  // the kept entry is `kept`, and the math type it was measured with `math`.)
  EXPECT_FALSE(fp32_cuda.conv_searches().empty()) << "the fp32 forward recorded no search";
  for (const ConvSearch& search : fp32_cuda.conv_searches()) {
    const ConvAlgorithmPick& pick = search.pick;
    EXPECT_NE(pick.math, CUDNN_TENSOR_OP_MATH) << search.direction;
    if (pick.kept >= 0) {
      ASSERT_LT(static_cast<size_t>(pick.kept), pick.trials.size()) << search.direction;
      EXPECT_EQ(pick.trials[static_cast<size_t>(pick.kept)].algo, pick.algo) << search.direction;
    }
  }
}

// ---- BF16 ---------------------------------------------------------------------------------------

// The CUDA bf16 results against the CPU's emulation of them (ops/conv2d.hpp's precision rule):
// both round the same operands and round their float32 sums once, so they differ only where the
// two summation orders straddle a rounding boundary: by one bfloat16 step, rarely.
Bf16Agreement bf16_agreement(ConstTensorView actual, ConstTensorView expected) {
  return testing::bf16_agreement(to_host(actual), to_host(expected));
}

void expect_bf16_twins(ConstTensorView cuda, ConstTensorView cpu_bf16, ConstTensorView cpu_fp32,
                       const std::string& what) {
  const Bf16Agreement twins = bf16_agreement(cuda, cpu_bf16);
  EXPECT_GE(twins.exact, 0.9) << what << ": share equal to the CPU emulation";
  EXPECT_LE(twins.worst_steps, 1.0) << what << ": at most one bfloat16 step from the emulation";
  // The GPU really took the bfloat16 path: float32 results would rarely match the emulation.
  EXPECT_LT(bf16_agreement(cpu_fp32, cpu_bf16).exact, 0.5) << what << ": (self-check)";
  EXPECT_LT(bf16_agreement(cuda, cpu_fp32).exact, 0.5) << what << ": float32 bits on the GPU";
}

class Bf16ConvParity : public Parity, public ::testing::WithParamInterface<ConvCase> {};

TEST_P(Bf16ConvParity, EveryDirectionMatchesTheCpuEmulation) {
  const ConvCase& p = GetParam();
  BackendOptions bf16_options;
  bf16_options.bf16 = true;
  std::unique_ptr<Backend> gpu = make_cuda_backend(bf16_options);
  std::unique_ptr<Backend> cpu = make_cpu_backend(0, /*bf16=*/true);
  EXPECT_NE(gpu->name().find("bf16"), std::string::npos) << gpu->name();
  const Shape x_shape{p.n, p.c, p.h, p.w}, w_shape{p.k, p.c, 3, 3}, y_shape{p.n, p.k, p.h, p.w};
  const float bound = 1.0f / std::sqrt(static_cast<float>(9 * p.c));
  Pair x = random(x_shape, 131), w = random(w_shape, 132, -bound, bound);
  Pair zero = upload({p.k}, std::vector<float>(static_cast<size_t>(p.k), 0.0f));
  Pair dy = random(y_shape, 134);
  // Forward without bias or ReLU: the rounded sums themselves.
  Pair y = output(y_shape), y32 = output(y_shape);
  cpu->conv2d_forward(x.cpu, w.cpu, zero.cpu, y.cpu, false);
  gpu->conv2d_forward(x.cuda, w.cuda, zero.cuda, y.cuda, false);
  cpu_->conv2d_forward(x.cpu, w.cpu, zero.cpu, y32.cpu, false);
  expect_bf16_twins(y.cuda, y.cpu, y32.cpu, "bf16 conv forward");
  // With bias and ReLU (added in float32 after the rounding).
  Pair b = random({p.k}, 133), yr = output(y_shape);
  cpu->conv2d_forward(x.cpu, w.cpu, b.cpu, yr.cpu, true);
  gpu->conv2d_forward(x.cuda, w.cuda, b.cuda, yr.cuda, true);
  EXPECT_TRUE(close_to(yr.cuda, yr.cpu, 1e-2, "bf16 conv forward + bias + relu"));
  Pair dx = output(x_shape), dx32 = output(x_shape);
  cpu->conv2d_backward_data(dy.cpu, w.cpu, dx.cpu);
  gpu->conv2d_backward_data(dy.cuda, w.cuda, dx.cuda);
  cpu_->conv2d_backward_data(dy.cpu, w.cpu, dx32.cpu);
  expect_bf16_twins(dx.cuda, dx.cpu, dx32.cpu, "bf16 conv backward data");
  Pair dw = output(w_shape), db = output({p.k}), dw32 = output(w_shape), db32 = output({p.k});
  cpu->conv2d_backward_filter(x.cpu, dy.cpu, dw.cpu, db.cpu);
  gpu->conv2d_backward_filter(x.cuda, dy.cuda, dw.cuda, db.cuda);
  cpu_->conv2d_backward_filter(x.cpu, dy.cpu, dw32.cpu, db32.cpu);
  expect_bf16_twins(dw.cuda, dw.cpu, dw32.cpu, "bf16 conv backward filter");
  // The bias gradient sums the float32 dy: float32 parity.
  EXPECT_TRUE(close_to(db.cuda, db32.cpu, 1e-4, "bf16 conv dbias"));
}

// Under bf16 the one call converts dy once for both gradients, and takes x's bfloat16 copy from
// the forward that read the same x (once: the first backward after it): the same bits as the two
// calls, which convert everything.
TEST_P(Bf16ConvParity, BothGradientsInOneCallAreTheTwoCalls) {
  const ConvCase& p = GetParam();
  BackendOptions bf16_options;
  bf16_options.bf16 = true;
  std::unique_ptr<Backend> gpu = make_cuda_backend(bf16_options);
  const float bound = 1.0f / std::sqrt(static_cast<float>(9 * p.c));
  const Shape x_shape{p.n, p.c, p.h, p.w}, y_shape{p.n, p.k, p.h, p.w};
  Pair x = random(x_shape, 141), w = random({p.k, p.c, 3, 3}, 142, -bound, bound);
  Pair dy = random(y_shape, 143), other = random(x_shape, 144), b = random({p.k}, 145);
  Pair y = output(y_shape);
  {
    SCOPED_TRACE("no forward before: x converted by the backward");
    expect_both_gradients_are_the_two_calls(*gpu, p, x.cuda, w.cuda, dy.cuda);
  }
  gpu->conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);
  {
    SCOPED_TRACE("after a forward that read x: its copy serves the weight gradient");
    expect_both_gradients_are_the_two_calls(*gpu, p, x.cuda, w.cuda, dy.cuda);
  }
  gpu->conv2d_forward(other.cuda, w.cuda, b.cuda, y.cuda, true);
  {
    SCOPED_TRACE("after a forward that read another tensor: x read afresh");
    expect_both_gradients_are_the_two_calls(*gpu, p, x.cuda, w.cuda, dy.cuda);
  }
  // The copy serves the first conv2d_backward after its forward only (with dx or without): a
  // second one on the same address, whose contents may have changed since (here: replaced in
  // place), reads them afresh.
  Tensor dx(x_shape, Device::Cuda), dw({p.k, p.c, 3, 3}, Device::Cuda), db({p.k}, Device::Cuda);
  for (bool first_with_dx : {true, false}) {
    SCOPED_TRACE(first_with_dx ? "a second backward after one forward (the first with dx), x "
                                 "changed in between: x read afresh"
                               : "the same, the first backward without dx");
    x.cuda.copy_from(first_with_dx ? x.cpu : other.cpu);
    gpu->conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);
    gpu->conv2d_backward(x.cuda, dy.cuda, w.cuda, first_with_dx ? TensorView(dx) : TensorView{},
                         dw, db);
    x.cuda.copy_from(first_with_dx ? other.cpu : x.cpu);
    expect_both_gradients_are_the_two_calls(*gpu, p, x.cuda, w.cuda, dy.cuda);
  }
}

// The channels-last ops run the same plans on the same bfloat16 tensors as the float32 ops'
// bf16 path, without its conversions: the same values.
TEST_P(Bf16ConvParity, ChannelsLastOpsAreTheFloatOpsBitForBit) {
  const ConvCase& p = GetParam();
  BackendOptions bf16_options;
  bf16_options.bf16 = true;
  std::unique_ptr<Backend> gpu = make_cuda_backend(bf16_options);
  testing::expect_channels_last_conv_is_the_float_ops(*gpu, *gpu, {p.n, p.c, p.h, p.w}, p.k, 151);
}

// The model's shapes at 150 px after block 1 (x (N, 32, 75, 75) -> 64, ...), a deep small one,
// and channel counts tensor cores do not like (3 and 12 input channels).
INSTANTIATE_TEST_SUITE_P(Shapes, Bf16ConvParity,
                         ::testing::Values(ConvCase{4, 32, 75, 75, 64}, ConvCase{2, 64, 19, 19, 128},
                                           ConvCase{3, 128, 5, 5, 256}, ConvCase{2, 12, 9, 7, 16},
                                           ConvCase{3, 3, 7, 5, 4}),
                         conv_case_name);

TEST_F(Parity, Bf16LeavesTheOneChannelConvolutionInFloat32) {
  BackendOptions bf16_options;
  bf16_options.bf16 = true;
  std::unique_ptr<Backend> gpu = make_cuda_backend(bf16_options);
  const Shape x_shape{4, 1, 30, 30}, w_shape{32, 1, 3, 3}, y_shape{4, 32, 30, 30};
  Pair x = random(x_shape, 141), w = random(w_shape, 142, -0.3f, 0.3f), b = random({32}, 143);
  Pair y = output(y_shape);
  cpu_->conv2d_forward(x.cpu, w.cpu, b.cpu, y.cpu, true);
  gpu->conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);
  EXPECT_TRUE(close_to(y.cuda, y.cpu, 1e-5, "one-channel conv under bf16"));
}

// The dense layers' bf16 GEMMs (ops/dense.hpp's precision rule) against the CPU's emulation: the
// same rounded operands summed in float32 in two orders, so CUDA lands far closer to the
// emulation than the float32 products are; results not rounded, dbias the float32 one. Every
// DenseParity shape, the model's included.
TEST_P(DenseParity, Bf16GemmsMatchTheCpuEmulation) {
  BackendOptions bf16_options;
  bf16_options.bf16 = true;
  std::unique_ptr<Backend> gpu = make_cuda_backend(bf16_options);
  std::unique_ptr<Backend> cpu = make_cpu_backend(0, /*bf16=*/true);
  Pair x = random(x_shape(), 151), w = weights(152), b = random({GetParam().out}, 153);
  Pair dy = random(y_shape(), 154);
  const auto expect_twins = [](ConstTensorView cuda, ConstTensorView emulated,
                               ConstTensorView fp32, const char* what) {
    const std::vector<float> c = to_host(cuda), e = to_host(emulated), f = to_host(fp32);
    double to_emulation = 0.0, rounding = 0.0;
    for (size_t i = 0; i < e.size(); ++i) {
      to_emulation = std::max(to_emulation, std::fabs(static_cast<double>(c[i]) - e[i]));
      rounding = std::max(rounding, std::fabs(static_cast<double>(f[i]) - e[i]));
    }
    EXPECT_LE(to_emulation, 1e-4 * std::max<double>(max_abs(e), 1e-20)) << what;
    // Where the operands' rounding moved the result, CUDA followed it (not the float32 sums).
    if (rounding > 0.0) {
      EXPECT_LT(to_emulation, 0.05 * rounding) << what << ": float32 GEMM?";
    }
  };
  Pair y = output(y_shape()), y32 = output(y_shape());
  cpu->dense_forward(x.cpu, w.cpu, b.cpu, y.cpu);
  gpu->dense_forward(x.cuda, w.cuda, b.cuda, y.cuda);
  cpu_->dense_forward(x.cpu, w.cpu, b.cpu, y32.cpu);
  expect_twins(y.cuda, y.cpu, y32.cpu, "bf16 dense y");
  Pair dx = output(x_shape()), dw = output(w_shape()), db = output({GetParam().out});
  Pair dx32 = output(x_shape()), dw32 = output(w_shape()), db32 = output({GetParam().out});
  cpu->dense_backward(x.cpu, w.cpu, dy.cpu, dx.cpu, dw.cpu, db.cpu);
  gpu->dense_backward(x.cuda, w.cuda, dy.cuda, dx.cuda, dw.cuda, db.cuda);
  cpu_->dense_backward(x.cpu, w.cpu, dy.cpu, dx32.cpu, dw32.cpu, db32.cpu);
  expect_twins(dx.cuda, dx.cpu, dx32.cpu, "bf16 dense dx");
  expect_twins(dw.cuda, dw.cpu, dw32.cpu, "bf16 dense dweight");
  EXPECT_TRUE(close_to(db.cuda, db32.cpu, 1e-5, "bf16 dense dbias"));
}

// ---- Contract checks on the CUDA backend alone --------------------------------------------------

// Host tensors are refused with a clear error: never a silent CPU fallback or a device fault.
TEST_F(Parity, CudaBackendRefusesHostTensors) {
  Tensor host = Tensor::zeros({2, 3, 4, 4}, Device::Cpu);
  Tensor device = cuda_->zeros({2, 3, 4, 4});
  EXPECT_THROW(cuda_->relu_forward(host, device), Error);
  EXPECT_THROW(cuda_->relu_forward(device, host), Error);
  Tensor w = cuda_->zeros({5, 3, 3, 3}), b = cuda_->zeros({5}), y = cuda_->zeros({2, 5, 4, 4});
  Tensor host_w = Tensor::zeros({5, 3, 3, 3}, Device::Cpu);
  EXPECT_THROW(cuda_->conv2d_forward(device, host_w, b, y, true), Error);
  std::vector<int32_t> indices{0};
  std::vector<float> values{1.0f};
  Tensor out = cuda_->zeros({1});
  EXPECT_THROW(cuda_->gather_values(values.data(), 1, indices.data(), out), Error);
  try {
    cuda_->conv2d_forward(device, w, b, cuda_->zeros({2, 4, 4, 4}), false);
    FAIL() << "a wrong output shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(2, 4, 4, 4)"), std::string::npos) << e.what();
  }
}

// Algorithms are searched once per shape; later calls neither search nor allocate.
TEST_F(Parity, ConvPlansAreFoundOnceAndReused) {
  CudaBackend backend;
  const Shape x_shape{2, 32, 75, 75}, w_shape{64, 32, 3, 3}, y_shape{2, 64, 75, 75};
  Pair x = random(x_shape, 131), w = random(w_shape, 132, -0.06f, 0.06f);
  Pair b = random({64}, 133), y = output(y_shape), dy = random(y_shape, 134);
  Pair dx = output(x_shape), dw = output(w_shape), db = output({64});
  auto step = [&] {
    backend.conv2d_forward(x.cuda, w.cuda, b.cuda, y.cuda, true);
    backend.conv2d_backward_data(dy.cuda, w.cuda, dx.cuda);
    backend.conv2d_backward_filter(x.cuda, dy.cuda, dw.cuda, db.cuda);
    backend.synchronize();
  };
  step();
  const size_t workspace = backend.workspace_bytes();
  const std::vector<float> first_dw = to_host(dw.cuda), first_dx = to_host(dx.cuda),
                           first_y = to_host(y.cuda);
  // This process's own allocations (pneumo's ledger, the workspace included): the device's free
  // memory also moves with the other test processes ctest runs beside this one.
  const size_t held = memory_stats(Device::Cuda).current;
  step();
  EXPECT_EQ(backend.conv_plan_count(), 1u);
  EXPECT_EQ(backend.workspace_bytes(), workspace);
  EXPECT_EQ(memory_stats(Device::Cuda).current, held) << "a repeated step kept device memory";
  // Deterministic algorithms are preferred: a repeated step is bitwise identical.
  EXPECT_TRUE(all_close(to_host(y.cuda), first_y, 0, 0, "repeated forward"));
  EXPECT_TRUE(all_close(to_host(dx.cuda), first_dx, 0, 0, "repeated backward data"));
  EXPECT_TRUE(all_close(to_host(dw.cuda), first_dw, 0, 0, "repeated backward filter"));
  Pair x1 = random({1, 32, 75, 75}, 135), y1 = output({1, 64, 75, 75});
  backend.conv2d_forward(x1.cuda, w.cuda, b.cuda, y1.cuda, false);
  EXPECT_EQ(backend.conv_plan_count(), 2u);
  // The searches are kept for reports: 3 directions of the first shape, the forward of the
  // second. Each searched algorithm is one of its search's trials and ran there; the smaller
  // batch's forward is not searched but recalled from the batch of 2 (the tuning cache's rule
  // for a smaller shape of the same layer), with no trials of its own.
  const std::vector<ConvSearch> searches = backend.conv_searches();
  ASSERT_EQ(searches.size(), 4u);
  EXPECT_EQ(searches[0].shape[0], 1);  // shapes in key order: N=1 before N=2
  EXPECT_STREQ(searches[0].direction, "forward");
  EXPECT_STREQ(searches[1].direction, "forward");
  EXPECT_STREQ(searches[3].direction, "backward_filter");
  for (const ConvSearch& search : searches) {
    if (search.shape[0] == 1) {
      EXPECT_EQ(search.pick.source, "cache (batch 2)");
      EXPECT_TRUE(search.pick.trials.empty());
      EXPECT_EQ(search.pick.algo, searches[1].pick.algo) << "N=1 forward is not the N=2 pick";
      continue;
    }
    EXPECT_EQ(search.pick.source, "searched") << search.direction;
    const bool kept_ran = std::any_of(
        search.pick.trials.begin(), search.pick.trials.end(), [&](const ConvAlgoTrial& t) {
          return t.algo == search.pick.algo && t.status == CUDNN_STATUS_SUCCESS && t.ms > 0;
        });
    EXPECT_TRUE(kept_ran) << search.direction << " of N=" << search.shape[0];
  }
  // The recalled algorithm computes the same convolution on the smaller batch.
  cpu_->conv2d_forward(x1.cpu, w.cpu, b.cpu, y1.cpu, false);
  EXPECT_TRUE(close_to(y1.cuda, y1.cpu, 1e-4, "forward at N=1 by the recalled algorithm"));
  std::cout << "[ conv plans ] " << backend.name() << "\n" << backend.describe_conv_plans();
}

}  // namespace
}  // namespace pneumo
