// CUDA-side infrastructure that is testable without a GPU (these run in CI): RAII ownership and
// move-assignment, the error messages of the CUDA/cuDNN/cuBLAS checks, host-only cuDNN
// descriptor maths (the pooling padding convention), and backend selection with and without a
// device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "cuda/cuda_backend.hpp"
#include "cuda/cuda_raii.hpp"
#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"
#include "kernels.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

// ---- RAII ---------------------------------------------------------------------------------------

// Traits over fake handles (pointers into a static array) that count what was released.
std::vector<int*> released;
int fake_objects[4];
struct FakeTraits {
  static int* create() {
    static int next = 0;
    return &fake_objects[next++ % 4];
  }
  static void destroy(int* handle) noexcept { released.push_back(handle); }
};
using FakeResource = cuda::Resource<int*, FakeTraits>;

TEST(CudaRaii, MoveAssignmentReleasesWhatTheTargetHeld) {
  released.clear();
  {
    FakeResource a(&fake_objects[0]);
    FakeResource b(&fake_objects[1]);
    a = std::move(b);  // a's old handle goes now, b's moves into a
    ASSERT_EQ(released.size(), 1u);
    EXPECT_EQ(released[0], &fake_objects[0]);
    EXPECT_EQ(a.get(), &fake_objects[1]);
    EXPECT_FALSE(b);
    FakeResource c(std::move(a));  // move construction releases nothing
    EXPECT_EQ(released.size(), 1u);
    EXPECT_FALSE(a);
    c = std::move(c);  // self-move keeps the handle
    EXPECT_EQ(c.get(), &fake_objects[1]);
  }
  // Leaving the scope releases c's handle exactly once; empty a and b release nothing.
  ASSERT_EQ(released.size(), 2u);
  EXPECT_EQ(released[1], &fake_objects[1]);
}

TEST(CudaRaii, ResetReleasesOnce) {
  released.clear();
  FakeResource r = FakeResource::create();
  r.reset();
  r.reset();
  EXPECT_EQ(released.size(), 1u);
}

// Descriptor creation and setting are host-only cuDNN calls: they work without a device.
TEST(CudaRaii, TensorDescriptorsOwnAndMove) {
  cuda::TensorDescriptor a = cuda::make_tensor_descriptor(2, 3, 5, 7);
  cuda::TensorDescriptor b = cuda::make_tensor_descriptor(Shape{4, 6});  // (N, F) as (N, F, 1, 1)
  a = std::move(b);
  cudnnDataType_t type{};
  int n = 0, c = 0, h = 0, w = 0, sn = 0, sc = 0, sh = 0, sw = 0;
  ASSERT_EQ(cudnnGetTensor4dDescriptor(a.get(), &type, &n, &c, &h, &w, &sn, &sc, &sh, &sw),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(type, CUDNN_DATA_FLOAT);
  EXPECT_EQ(std::vector<int>({n, c, h, w}), std::vector<int>({4, 6, 1, 1}));
  EXPECT_EQ(std::vector<int>({sn, sc, sh, sw}), std::vector<int>({6, 1, 1, 1}));  // packed NCHW
}

// ---- The 'same' pooling convention through cuDNN's own output-size arithmetic -------------------

TEST(CudaPoolingDescriptor, SamePaddingGivesCeilHalfOnEveryModelSize) {
  for (int64_t size : {1, 2, 3, 4, 5, 10, 19, 38, 75, 150}) {
    const cuda::PoolingDescriptor pool = cuda::make_maxpool2x2_same_descriptor(size, size + 1);
    const cuda::TensorDescriptor x = cuda::make_tensor_descriptor(2, 3, size, size + 1);
    int n = 0, c = 0, h = 0, w = 0;
    ASSERT_EQ(cudnnGetPooling2dForwardOutputDim(pool.get(), x.get(), &n, &c, &h, &w),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(h, (size + 1) / 2) << "H=" << size;
    EXPECT_EQ(w, (size + 2) / 2) << "W=" << size + 1;
    EXPECT_EQ(n, 2);
    EXPECT_EQ(c, 3);
  }
  // The recipe's chain: 150 -> 75 -> 38 -> 19 -> 10 -> 5.
  EXPECT_EQ((PoolGeometry{1, 1, 150, 150}.pad_top()), 0);
  EXPECT_EQ((PoolGeometry{1, 1, 75, 75}.pad_top()), 1);
  EXPECT_EQ((PoolGeometry{1, 1, 19, 19}.pad_left()), 1);
}

TEST(CudaConvolutionDescriptor, SameOutputSizeAndRequestedMathType) {
  for (cudnnMathType_t math : {CUDNN_FMA_MATH, CUDNN_TENSOR_OP_MATH}) {
    const cuda::ConvolutionDescriptor conv = cuda::make_conv3x3_same_descriptor(math);
    const cuda::TensorDescriptor x = cuda::make_tensor_descriptor(3, 64, 19, 19);
    const cuda::FilterDescriptor w = cuda::make_filter_descriptor(128, 64, 3, 3);
    int n = 0, c = 0, h = 0, wd = 0;
    ASSERT_EQ(cudnnGetConvolution2dForwardOutputDim(conv.get(), x.get(), w.get(), &n, &c, &h, &wd),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(std::vector<int>({n, c, h, wd}), std::vector<int>({3, 128, 19, 19}));
    cudnnMathType_t actual{};
    ASSERT_EQ(cudnnGetConvolutionMathType(conv.get(), &actual), CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(actual, math);
  }
}

// ---- Error messages name the call, the status, the shapes, the file and line --------------------

std::string message_of(void (*thrower)()) {
  try {
    thrower();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CudaErrors, CudnnCheckNamesCallStatusShapesAndLocation) {
  const std::string message = message_of([] {
    PNEUMO_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(nullptr, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, -1, 1, 1, 1),
        "conv2d_forward x=", Shape({32, 1, 150, 150}).str());
  });
  EXPECT_NE(message.find("cudnnSetTensor4dDescriptor(nullptr"), std::string::npos) << message;
  EXPECT_NE(message.find("CUDNN_STATUS_BAD_PARAM"), std::string::npos) << message;
  EXPECT_NE(message.find("conv2d_forward x=(32, 1, 150, 150)"), std::string::npos) << message;
  EXPECT_NE(message.find("test_cuda_infrastructure.cpp:"), std::string::npos) << message;
}

// cuDNN 9 tells a device allocation failure from a host one (CUDNN_STATUS_ALLOC_FAILED is the
// host one's old name): the device one must reach the out-of-memory advice as device memory.
TEST(CudaErrors, CudnnAllocationFailuresAreOutOfMemoryOnTheRightSide) {
  const auto side = [](cudnnStatus_t status) -> std::string {
    try {
      cuda::throw_cudnn_error(status, "cudnnConvolutionForward", __FILE__, __LINE__, "conv1");
    } catch (const OutOfMemory& e) {
      return e.on_device() ? "device" : "host";
    } catch (const Error&) {
      return "other";
    }
    return "none";
  };
  EXPECT_EQ(side(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED), "device");
  EXPECT_EQ(side(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED), "host");
  EXPECT_EQ(side(CUDNN_STATUS_BAD_PARAM), "other");
}

TEST(CudaErrors, CublasAndCudaChecksNameTheCall) {
  const std::string cublas = message_of([] {
    PNEUMO_CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE, "dense_forward x=", Shape({2, 3}).str());
  });
  EXPECT_NE(cublas.find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos) << cublas;
  EXPECT_NE(cublas.find("dense_forward x=(2, 3)"), std::string::npos) << cublas;
  const std::string runtime =
      message_of([] { PNEUMO_CUDA_CHECK(cudaErrorInvalidValue, "copy of ", 12, " bytes"); });
  EXPECT_NE(runtime.find("cudaErrorInvalidValue"), std::string::npos) << runtime;
  EXPECT_NE(runtime.find("copy of 12 bytes"), std::string::npos) << runtime;
}

// Without a device a launch fails at once, and the launch check names the kernel.
TEST(CudaErrors, LaunchCheckNamesTheKernelWithoutADevice) {
  if (cuda_device_available()) GTEST_SKIP() << "a device is present: the launch would run";
  const std::string message =
      message_of([] { kernels::relu_forward(nullptr, nullptr, 1000, nullptr); });
  EXPECT_NE(message.find("relu_forward_kernel"), std::string::npos) << message;
  EXPECT_NE(message.find("n=1000"), std::string::npos) << message;
}

// ---- Host-side launch arithmetic -----------------------------------------------------------------

// The bias gradient's split into chunks of whole images: every image in exactly one non-empty
// chunk, a grid that fits, about four blocks per SM when the batch allows, and the same split for
// the same shape (what makes the sum deterministic).
TEST(BiasReduction, ChunksCoverTheBatchOnceAndFillTheGpu) {
  for (int sm_count : {1, 132}) {
    for (int64_t batch : {1, 2, 7, 32, 33, 256, 100000}) {
      for (int64_t channels : {1, 5, 32, 128, 256}) {
        const kernels::BiasReduction r = kernels::bias_reduction(batch, channels, sm_count);
        const std::string where = "batch " + std::to_string(batch) + ", channels " +
                                  std::to_string(channels) + ", SMs " + std::to_string(sm_count);
        EXPECT_GE(r.chunks * r.images_per_chunk, batch) << where;
        EXPECT_LT((r.chunks - 1) * r.images_per_chunk, batch) << where << ": an empty chunk";
        EXPECT_LE(r.chunks, 65535) << where;
        EXPECT_EQ(r.partial_floats, channels * r.chunks) << where;
        if (channels * batch >= 4 * sm_count) {
          EXPECT_GE(channels * r.chunks, 2 * sm_count) << where << ": too few blocks";
        }
        EXPECT_LE(channels * r.chunks, std::max<int64_t>(channels, 8 * sm_count)) << where;
        const kernels::BiasReduction again = kernels::bias_reduction(batch, channels, sm_count);
        EXPECT_EQ(again.chunks, r.chunks);
        EXPECT_EQ(again.images_per_chunk, r.images_per_chunk);
      }
    }
  }
}

// The split the parity tests force (CudaBackendOptions::reduction_images_per_chunk): chunks of
// that many whole images, the last one holding the rest.
TEST(BiasReduction, AForcedChunkSizeLeavesTheRestToTheLastChunk) {
  const struct {
    int64_t batch, images_per_chunk, chunks, last;
  } cases[] = {{7, 3, 3, 1}, {8, 3, 3, 2}, {4, 3, 2, 1}, {5, 2, 3, 1}, {32, 7, 5, 4},
               {6, 3, 2, 3}, {3, 10, 1, 3}, {3, 0, 3, 1}, {0, 3, 1, 1}};
  for (const auto& c : cases) {
    const kernels::BiasReduction r = kernels::reduction_of_chunk_size(c.batch, 16, c.images_per_chunk);
    const std::string where = "batch " + std::to_string(c.batch) + ", " +
                              std::to_string(c.images_per_chunk) + " per chunk";
    EXPECT_EQ(r.chunks, c.chunks) << where;
    EXPECT_EQ(std::max<int64_t>(c.batch, 1) - (r.chunks - 1) * r.images_per_chunk, c.last) << where;
    EXPECT_EQ(r.partial_floats, 16 * r.chunks) << where;
  }
}

// Our kernel is kept only when its outputs agree with cuDNN's: within 1e-3 of the largest
// magnitude, and never with a NaN on either side.
TEST(OutputDisagreement, ToleranceIsRelativeToTheLargestValueAndNaNNeverAgrees) {
  const std::vector<float> expected{100.0f, -2.0f, 0.0f};
  EXPECT_EQ(cuda::output_disagreement(expected, {100.05f, -2.09f, 0.09f}, "y"), "");
  const std::string off = cuda::output_disagreement(expected, {100.0f, -2.0f, 0.2f}, "y");
  EXPECT_NE(off.find("y[2]"), std::string::npos) << off;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(cuda::output_disagreement(expected, {100.0f, nan, 0.0f}, "dx"), "");
  EXPECT_NE(cuda::output_disagreement({nan, 1.0f}, {nan, 1.0f}, "dx"), "");
  EXPECT_NE(cuda::output_disagreement(expected, {100.0f}, "y").find("3 values"), std::string::npos);
  EXPECT_EQ(cuda::output_disagreement({0.0f, 0.0f}, {0.0f, 0.0f}, "zeros"), "");
}

// ---- Backend selection --------------------------------------------------------------------------

TEST(CudaBackendSelection, MakeCudaBackendThrowsClearlyWithoutADevice) {
  if (cuda_device_available()) GTEST_SKIP() << "a device is present";
  try {
    make_cuda_backend(BackendOptions{});
    FAIL() << "make_cuda_backend returned without a device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no usable CUDA device"), std::string::npos) << e.what();
  }
}

TEST(CudaBackendSelection, DeviceCudaFailsClearlyWithoutADevice) {
  if (cuda_device_available()) GTEST_SKIP() << "a device is present";
  BackendOptions options;
  options.device = DeviceChoice::Cuda;
  try {
    make_backend(options);
    FAIL() << "make_backend(--device cuda) returned without a device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cuda"), std::string::npos) << e.what();
  }
}

TEST(CudaBackendSelection, AutoFallsBackToCpuWithANotice) {
  if (cuda_device_available()) GTEST_SKIP() << "a device is present";
  BackendOptions options;
  options.device = DeviceChoice::Auto;
  ::testing::internal::CaptureStderr();
  std::unique_ptr<Backend> backend = make_backend(options);
  const std::string notice = ::testing::internal::GetCapturedStderr();
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->device(), Device::Cpu);
  EXPECT_NE(notice.find("CPU"), std::string::npos) << notice;
}

TEST(CudaBackendSelection, AutoPicksCudaWhenADeviceExists) {
  PNEUMO_REQUIRE_CUDA();
  BackendOptions options;
  options.device = DeviceChoice::Auto;
  std::unique_ptr<Backend> backend = make_backend(options);
  EXPECT_EQ(backend->device(), Device::Cuda);
  EXPECT_EQ(backend->name().rfind("cuda (", 0), 0u) << backend->name();
}

// A recording that the issued work invalidated without throwing (here: synchronising the stream
// being captured) fails with a message, and leaves no error behind for the op-by-op fallback's
// first launch check to report as its own.
TEST(CudaGraphs, AFailedRecordingLeavesNoErrorForTheNextOp) {
  PNEUMO_REQUIRE_CUDA();
  auto backend = make_cuda_backend(BackendOptions{});
  auto& cuda = dynamic_cast<CudaBackend&>(*backend);
  const std::vector<float> values{-1.0f, 2.0f, -3.0f, 4.0f};
  Tensor x = Tensor::from_host({4}, values.data(), Device::Cuda), y = backend->empty({4});
  EXPECT_THROW(cuda.record([&] {
    backend->relu_forward(x, y);
    (void)cudaStreamSynchronize(cuda.stream());  // illegal while capturing: invalidates it
  }),
               Error);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  backend->relu_forward(x, y);
  backend->synchronize();
  EXPECT_EQ(testing::to_host(y), (std::vector<float>{0.0f, 2.0f, 0.0f, 4.0f}));
}

// Where a device is expected (PNEUMO_EXPECT_CUDA=1, which the GPU check sets, or a GPU the
// kernel's driver lists), a missing one (say, a driver older than the CUDA 13 runtime) must fail
// loudly instead of turning every CUDA test into a skip.
TEST(CudaEnvironment, DeviceVisibleWhenExpected) {
  if (!testing::cuda_expected()) GTEST_SKIP() << "no CUDA device expected here";
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  ASSERT_EQ(status, cudaSuccess) << "cudaGetDeviceCount: " << cudaGetErrorString(status)
                                 << " (is the driver older than the CUDA runtime?)";
  ASSERT_GT(count, 0);
}

// When a CUDA test may skip: the decision itself, on a made-up driver folder and device node
// (runs on any machine; the real paths are what PNEUMO_REQUIRE_CUDA reads).
TEST(CudaEnvironment, ADeviceIsExpectedWhereTheDriverListsAGpu) {
  testing::TempDir root;
  const std::string gpus = root.file("gpus"), node = root.file("nvidia0");
  std::filesystem::create_directory(gpus);
  // No GPU listed, no device node: a missing device is fine, unless the variable asks for one.
  EXPECT_EQ(testing::cuda_expected_because(nullptr, nullptr, gpus, node), "");
  EXPECT_EQ(testing::cuda_expected_because("0", nullptr, gpus, node), "");
  EXPECT_EQ(testing::cuda_expected_because("1", nullptr, gpus, node), "PNEUMO_EXPECT_CUDA=1");
  EXPECT_EQ(testing::cuda_expected_because("yes", nullptr, gpus, node), "") << "only 1 and 0 mean anything";
  // The driver lists a GPU: expected, unless PNEUMO_EXPECT_CUDA=0 says skip anyway.
  std::filesystem::create_directory(gpus + "/0000:19:00.0");
  EXPECT_NE(testing::cuda_expected_because(nullptr, nullptr, gpus, node).find("lists a GPU in " + gpus),
            std::string::npos);
  EXPECT_EQ(testing::cuda_expected_because("0", nullptr, gpus, node), "");
  // Every GPU hidden on purpose: none expected; one index named: expected as before.
  EXPECT_EQ(testing::cuda_expected_because(nullptr, "", gpus, node), "");
  EXPECT_EQ(testing::cuda_expected_because(nullptr, "-1", gpus, node), "");
  EXPECT_NE(testing::cuda_expected_because(nullptr, "0", gpus, node), "");
  EXPECT_EQ(testing::cuda_expected_because("1", "", gpus, node), "PNEUMO_EXPECT_CUDA=1");
  // Only the device node (a container given /dev/nvidia0 without /proc/driver/nvidia).
  std::filesystem::remove(gpus + "/0000:19:00.0");
  std::ofstream(node).put('\n');
  EXPECT_NE(testing::cuda_expected_because(nullptr, nullptr, gpus, node).find(node + " exists"),
            std::string::npos);
  EXPECT_NE(testing::cuda_expected_because(nullptr, nullptr, root.file("absent"), node), "");
}

}  // namespace
}  // namespace pneumo
