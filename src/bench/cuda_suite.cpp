// The CUDA suite of `pneumo bench kernels`: on the model's exact shapes, our kernels against
// cuDNN: convolution forward (our two kernels vs every cuDNN forward algorithm, unfused with our
// bias/ReLU kernel and fused through cudnnConvolutionBiasActivationForward), max-pool forward and
// backward (kernels/pooling.cu vs both cuDNN max modes), batch-norm training forward and backward
// (kernels/batchnorm.cu vs cuDNN, each through a CudaBackend forced to it), the fused sigmoid +
// BCE kernel vs cuDNN's sigmoid followed by separate loss and gradient kernels, and the
// augmentation kernel vs a device-to-device copy of the same output bytes. Every variant's output
// starts poisoned, is checked against the fp64 references, and only then timed (CudaTimer:
// events, L2 flushed).
// This is the one file outside src/cuda that calls cuDNN directly: it benchmarks the descriptor
// API itself, through the descriptor factories of cuda/cuda_raii.hpp.
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "bench/dense_case.hpp"
#include "bench/kernel_bench.hpp"
#include "bench/reference.hpp"
#include "bench/suite_common.hpp"
#include "bench/tail_case.hpp"
#include "bench/timing.hpp"
#include "bf16.hpp"
#include "core/nvtx.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/cuda_raii.hpp"
#include "kernels.hpp"
#include "pneumo/augment.hpp"
#include "pneumo/model.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::bench {
namespace {

constexpr float kOne = 1.0f;
constexpr float kZero = 0.0f;
constexpr size_t kMaxWorkspace = size_t{4} << 30;  // per cuDNN algorithm

const char* forward_algo_name(int algo) {
  switch (algo) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM:
      return "IMPLICIT_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM:
      return "IMPLICIT_PRECOMP_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM:
      return "GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT:
      return "DIRECT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT:
      return "FFT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING:
      return "FFT_TILING";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD:
      return "WINOGRAD";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED:
      return "WINOGRAD_NONFUSED";
    default:
      return "UNKNOWN";
  }
}

// FFT and Winograd transform the data: fp32 results drift further from the exact sum.
bool is_transform_algo(int algo) {
  return algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT || algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
         algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
         algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
}

// A refused cuDNN call in words: the status name and cuDNN's own explanation.
std::string cudnn_refusal(const char* call, cudnnStatus_t status) {
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  std::string text = std::string(call) + ": " + cudnnGetErrorString(status);
  if (detail[0] != '\0') text += std::string(" (") + detail + ")";
  cudaGetLastError();  // a launch that failed inside cuDNN must not be blamed on a later call
  return text;
}

std::string mib(size_t bytes) {
  std::ostringstream out;
  out << static_cast<double>(bytes) / (1 << 20) << " MiB";
  return out.str();
}

std::string describe_device(int device) {
  cudaDeviceProp props{};
  PNEUMO_CUDA_CHECK(cudaGetDeviceProperties(&props, device), "device ", device);
  int driver = 0;
  cudaDriverGetVersion(&driver);
  const size_t cudnn = cudnnGetVersion();
  std::ostringstream out;
  out << props.name << " (sm_" << props.major << props.minor << ", " << props.multiProcessorCount
      << " SMs, " << props.totalGlobalMem / (1 << 30) << " GiB; driver " << driver / 1000 << "."
      << (driver % 1000) / 10 << ", cuDNN " << cudnn / 10000 << "." << (cudnn / 100) % 100 << "."
      << cudnn % 100 << ")";
  return out.str();
}

class CudaSuite {
 public:
  CudaSuite(const KernelBenchConfig& config, BenchRun& run) : config_(config), run_(run) {
    if (!cuda_device_available())
      throw Error(
          "bench kernels --device cuda: no CUDA device is visible on this machine; use "
          "--device cpu (or auto)");
    PNEUMO_CUDA_CHECK(cudaGetDevice(&device_), "bench kernels");
    PNEUMO_CUDNN_CHECK(cudnnCnnVersionCheck(), "cuDNN cnn library (libcudnn_cnn)");
    stream_ = cuda::Stream::create();
    cudnn_ = cuda::CudnnHandle::create();
    PNEUMO_CUDNN_CHECK(cudnnSetStream(cudnn_.get(), stream_.get()), "binding cuDNN to the stream");
    const size_t l2 = cuda_l2_bytes(device_);
    timer_ = std::make_unique<CudaTimer>(stream_.get(), l2 > 0 ? 2 * l2 : size_t{64} << 20);

    run_.platform = "CUDA";
    run_.device = describe_device(device_);
    run_.peaks = cuda_device_peaks(device_);
    std::ostringstream timing;
    timing << "timing: CUDA events around each run on one stream, median and min of "
           << config.repeats << " repeats after " << config.warmup << " warm-up run(s); L2 ("
           << mib(l2) << ") flushed before each repeat by a " << mib(timer_->flush_bytes())
           << " cudaMemsetAsync outside the events, then a 500 us hold of the stream (the GPU "
              "busy while the host enqueues the timed work)";
    run_.notes.push_back(timing.str());
    run_.notes.push_back(
        "convolutions: fp32, CUDNN_FMA_MATH (no TF32), output relu(conv(x) + bias) as the model "
        "layer computes it; cuDNN workspace capped at the smaller of 4 GiB and half the free "
        "memory; outputs checked on 3 images of the batch");
    run_.notes.push_back(kSpeedupNote);
  }

  void run() { run_cases(config_, *this); }
  template <class Suite>
  friend void bench::run_cases(const KernelBenchConfig& config, Suite& suite);  // calls the cases

 private:
  // ---- Plumbing ---------------------------------------------------------------------------------

  BenchRow row(const std::string& op, const std::string& layer, const std::string& shape,
               int64_t batch, const std::string& variant, bool baseline) const {
    return make_row("CUDA", op, layer, shape, batch, variant, baseline);
  }
  void case_failed(const char* family, const std::string& layer, int64_t batch,
                   const std::string& why) {
    run_.rows.push_back(failed_case_row("CUDA", family, layer, batch, why));
  }

  Tensor upload(const std::vector<float>& values, const Shape& shape) const {
    return Tensor::from_host(shape, values.data(), Device::Cuda);
  }
  void poison(Tensor& t) const {
    PNEUMO_CUDA_CHECK(
        cudaMemsetAsync(t.data(), kPoisonByte, static_cast<size_t>(t.numel()) * sizeof(float),
                        stream_.get()),
        "poisoning ", t.shape().str());
  }
  void synchronize(const std::string& what) const {
    PNEUMO_CUDA_CHECK(cudaStreamSynchronize(stream_.get()), what);
  }
  std::vector<float> download(const Tensor& t) const {
    synchronize("before reading back " + t.shape().str());
    std::vector<float> values(static_cast<size_t>(t.numel()));
    t.copy_to_host(values.data());
    return values;
  }

  // Runs `prepare` + `enqueue` once and checks the result, then times `enqueue` alone; appends
  // the row. A fault inside a kernel leaves the CUDA context unusable: the run stops there with
  // the rows so far (the command still prints them) and a message naming the variant.
  // `timer`: another stream's (a Backend's ops run on the backend's own stream); default, the
  // suite's.
  void measure_variant(BenchRow& r, const std::function<void()>& prepare,
                       const std::function<void()>& enqueue,
                       const std::function<Comparison()>& check, CudaTimer* timer = nullptr) {
    const std::string range = "bench " + r.layer + " b" + std::to_string(r.batch) + " " + r.variant;
    const NvtxRange nvtx(range.c_str());
    CudaTimer& clock = timer ? *timer : *timer_;
    measure(
        r,
        [&] {
          prepare();
          enqueue();
          synchronize("checked run of " + r.variant);
          PNEUMO_CUDA_CHECK(cudaDeviceSynchronize(), "checked run of ", r.variant);
        },
        check, [&] { return clock.time(enqueue, config_.warmup, config_.repeats); });
    run_.rows.push_back(r);
    const cudaError_t status = cudaDeviceSynchronize();
    if (status != cudaSuccess)
      throw Error(detail::concat(
          "the CUDA context is unusable after '", r.variant, "' on ", r.op, " ", r.layer, " batch ",
          r.batch, ": ", cudaGetErrorName(status), " (", cudaGetErrorString(status),
          "). The rows so far are reported; run the failing op alone (--ops) under "
          "compute-sanitizer to find the fault"));
  }

  void skip(BenchRow r, const std::string& why) {
    r.status = Status::Skipped;
    r.note = why;
    log_row(r);
    run_.rows.push_back(r);
  }

  size_t workspace_limit() const {
    size_t free = 0, total = 0;
    PNEUMO_CUDA_CHECK(cudaMemGetInfo(&free, &total), "free device memory");
    return std::min(kMaxWorkspace, free / 2);
  }

  // ---- Convolution forward ----------------------------------------------------------------------

  void conv(const LayerShape& layer, int64_t batch) {
    const ConvProblem p = make_conv_problem(layer, batch, kSeed);
    const std::vector<int64_t> images = checked_images(batch);
    const std::vector<float> expected = reference_conv(p, images);
    const int64_t n = p.x.n(), c = p.x.c(), k = p.weight[0], size = p.x.h();
    Tensor x = upload(p.x_values, p.x), w = upload(p.weight_values, p.weight),
           b = upload(p.bias_values, {k}), y(p.y, Device::Cuda);
    const cuda::TensorDescriptor x_desc = cuda::make_tensor_descriptor(p.x);
    const cuda::TensorDescriptor y_desc = cuda::make_tensor_descriptor(p.y);
    const cuda::TensorDescriptor bias_desc = cuda::make_tensor_descriptor(1, k, 1, 1);
    const cuda::FilterDescriptor w_desc = cuda::make_filter_descriptor(k, c, 3, 3);
    const cuda::ConvolutionDescriptor conv_desc =
        cuda::make_conv3x3_same_descriptor(CUDNN_FMA_MATH);
    const cuda::ActivationDescriptor relu = cuda::make_relu_descriptor();

    auto check = [&](double rtol) {
      return [&, rtol] {
        synchronize("before reading back the conv output");
        const int64_t per_image = k * size * size;
        std::vector<float> actual(images.size() * static_cast<size_t>(per_image));
        for (size_t i = 0; i < images.size(); ++i)
          copy_bytes(actual.data() + i * static_cast<size_t>(per_image), Device::Cpu,
                     y.data() + images[i] * per_image, Device::Cuda,
                     static_cast<size_t>(per_image) * sizeof(float));
        return compare_outputs(actual.data(), expected.data(), checked_shape(p.y, images), rtol);
      };
    };
    auto conv_row = [&](const std::string& variant, bool baseline, size_t workspace) {
      BenchRow r =
          row("conv2d_forward", layer.conv, conv_shape_label(layer), batch, variant, baseline);
      r.reference = conv_reference_label(images);
      r.flops = p.flops();
      r.bytes = p.bytes();
      r.workspace_bytes = workspace;
      if (workspace > 0) r.note = "workspace " + mib(workspace);
      return r;
    };
    auto poison_y = [&] { poison(y); };

    // Every cuDNN forward algorithm: first the workspace query, then one trial call; a refusal
    // at either step is a skipped row with cuDNN's status.
    const size_t limit = workspace_limit();
    Array<uint8_t> workspace;
    for (int a = 0; a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; ++a) {
      const auto algo = static_cast<cudnnConvolutionFwdAlgo_t>(a);
      const std::string name = forward_algo_name(a);
      const double rtol = is_transform_algo(a) ? kConvTransformRtol : kConvRtol;
      size_t bytes = 0;
      const cudnnStatus_t query = cudnnGetConvolutionForwardWorkspaceSize(
          cudnn_.get(), x_desc.get(), w_desc.get(), conv_desc.get(), y_desc.get(), algo, &bytes);
      if (query != CUDNN_STATUS_SUCCESS) {
        skip(conv_row("cudnn: " + name, true, 0),
             cudnn_refusal("cudnnGetConvolutionForwardWorkspaceSize", query));
        continue;
      }
      if (bytes > limit) {
        skip(conv_row("cudnn: " + name, true, bytes),
             "needs " + mib(bytes) + " of workspace, over the " + mib(limit) + " limit");
        continue;
      }
      if (bytes > workspace.bytes()) {
        workspace = Array<uint8_t>();  // free the old block before allocating the larger one
        workspace = Array<uint8_t>(static_cast<int64_t>(bytes), Device::Cuda);
      }
      auto unfused = [&, algo, bytes] {
        return cudnnConvolutionForward(cudnn_.get(), &kOne, x_desc.get(), x.data(), w_desc.get(),
                                       w.data(), conv_desc.get(), algo, workspace.data(), bytes,
                                       &kZero, y_desc.get(), y.data());
      };
      auto fused = [&, algo, bytes] {
        // z = y with alpha2 = 0, as CudaBackend (and PyTorch) call it.
        return cudnnConvolutionBiasActivationForward(
            cudnn_.get(), &kOne, x_desc.get(), x.data(), w_desc.get(), w.data(), conv_desc.get(),
            algo, workspace.data(), bytes, &kZero, y_desc.get(), y.data(), bias_desc.get(),
            b.data(), relu.get(), y_desc.get(), y.data());
      };
      {
        BenchRow r = conv_row("cudnn: " + name + " + our bias/ReLU kernel", true, bytes);
        const cudnnStatus_t trial = unfused();
        if (trial != CUDNN_STATUS_SUCCESS) {
          skip(r, cudnn_refusal("cudnnConvolutionForward", trial));
        } else {
          measure_variant(
              r, poison_y,
              [&] {
                PNEUMO_CUDNN_CHECK(unfused(), "cudnnConvolutionForward ", name);
                kernels::bias_activation_forward(y.data(), b.data(), n, k, size * size, true,
                                                 stream_.get());
              },
              check(rtol));
        }
      }
      {
        BenchRow r = conv_row("cudnn: " + name + ", fused bias+ReLU", true, bytes);
        const cudnnStatus_t trial = fused();
        if (trial != CUDNN_STATUS_SUCCESS) {
          skip(r, cudnn_refusal("cudnnConvolutionBiasActivationForward", trial));
        } else {
          measure_variant(
              r, poison_y,
              [&] { PNEUMO_CUDNN_CHECK(fused(), "cudnnConvolutionBiasActivationForward ", name); },
              check(rtol));
        }
      }
    }
    workspace = Array<uint8_t>();

    // Ours: bias and ReLU fused, no workspace.
    if (kernels::conv3x3_single_channel_supported(c, k)) {
      BenchRow r = conv_row("ours: conv3x3_forward_single_channel (fused bias+ReLU)", false, 0);
      measure_variant(
          r, poison_y,
          [&] {
            kernels::conv3x3_forward_single_channel(x.data(), w.data(), b.data(), y.data(), n, size,
                                                    size, k, true, stream_.get());
          },
          check(kConvRtol));
    }
    BenchRow r = conv_row("ours: conv3x3_forward_tiled (fused bias+ReLU)", false, 0);
    measure_variant(
        r, poison_y,
        [&] {
          kernels::conv3x3_forward_tiled(x.data(), w.data(), b.data(), y.data(), n, c, size, size,
                                         k, true, stream_.get());
        },
        check(kConvRtol));
  }

  // ---- Max pooling ------------------------------------------------------------------------------

  void pool(const LayerShape& layer, int64_t batch) {
    const PoolProblem p = make_pool_problem(layer, batch, kSeed);
    const int64_t planes = p.x.n() * p.x.c(), h = p.x.h(), w = p.x.w();
    Tensor x = upload(p.x_values, p.x), y(p.y, Device::Cuda), dx(p.x, Device::Cuda);
    Tensor y_expected = upload(p.y_expected, p.y), dy = upload(p.dy_values, p.y);
    const cuda::TensorDescriptor x_desc = cuda::make_tensor_descriptor(p.x);
    const cuda::TensorDescriptor y_desc = cuda::make_tensor_descriptor(p.y);
    // CudaBackend's descriptor (deterministic), and cuDNN's other max mode for comparison.
    const cuda::PoolingDescriptor deterministic = cuda::make_maxpool2x2_same_descriptor(h, w);
    cuda::PoolingDescriptor plain = cuda::PoolingDescriptor::create();
    PNEUMO_CUDNN_CHECK(
        cudnnSetPooling2dDescriptor(plain.get(), CUDNN_POOLING_MAX, CUDNN_PROPAGATE_NAN, 2, 2,
                                    static_cast<int>(PoolGeometry{1, 1, h, w}.pad_top()),
                                    static_cast<int>(PoolGeometry{1, 1, h, w}.pad_left()), 2, 2),
        "max pool ", p.x.str());
    struct CudnnMode {
      const char* name;
      cudnnPoolingDescriptor_t desc;
    };
    const CudnnMode modes[] = {{"cudnn: CUDNN_POOLING_MAX_DETERMINISTIC", deterministic.get()},
                               {"cudnn: CUDNN_POOLING_MAX", plain.get()}};
    auto pool_row = [&](const char* op, const std::string& variant, bool baseline, double bytes) {
      BenchRow r = row(op, layer.pool, pool_shape_label(p.x), batch, variant, baseline);
      r.reference = kPoolReference;
      r.bytes = bytes;
      return r;
    };
    auto check_y = [&] {
      return compare_outputs(download(y).data(), p.y_expected.data(), p.y, 0.0);
    };
    auto check_dx = [&] {
      return compare_outputs(download(dx).data(), p.dx_expected.data(), p.x, 0.0);
    };

    for (const CudnnMode& mode : modes) {
      BenchRow r = pool_row("maxpool2d_forward", mode.name, true, p.forward_bytes());
      measure_variant(
          r, [&] { poison(y); },
          [&] {
            PNEUMO_CUDNN_CHECK(cudnnPoolingForward(cudnn_.get(), mode.desc, &kOne, x_desc.get(),
                                                   x.data(), &kZero, y_desc.get(), y.data()),
                               mode.name, " x=", p.x.str());
          },
          check_y);
    }
    {
      BenchRow r =
          pool_row("maxpool2d_forward", "ours: kernels/pooling.cu", false, p.forward_bytes());
      measure_variant(
          r, [&] { poison(y); },
          [&] { kernels::maxpool2d_forward(x.data(), y.data(), planes, h, w, stream_.get()); },
          check_y);
    }
    for (const CudnnMode& mode : modes) {
      BenchRow r = pool_row("maxpool2d_backward", mode.name, true, p.backward_bytes());
      measure_variant(
          r, [&] { poison(dx); },
          [&] {
            PNEUMO_CUDNN_CHECK(
                cudnnPoolingBackward(cudnn_.get(), mode.desc, &kOne, y_desc.get(),
                                     y_expected.data(), y_desc.get(), dy.data(), x_desc.get(),
                                     x.data(), &kZero, x_desc.get(), dx.data()),
                mode.name, " x=", p.x.str());
          },
          check_dx);
    }
    {
      BenchRow r =
          pool_row("maxpool2d_backward", "ours: kernels/pooling.cu", false, p.backward_bytes());
      measure_variant(
          r, [&] { poison(dx); },
          [&] {
            kernels::maxpool2d_backward(x.data(), dy.data(), dx.data(), planes, h, w,
                                        stream_.get());
          },
          check_dx);
    }
  }

  // ---- The fused block tail -------------------------------------------------------------------
  // Through CudaBackend objects, timed on their streams: the fused op (kernels/batchnorm.cu)
  // against the unfused chain as the backend runs it (its timed picks between cuDNN and our
  // kernels) and as cuDNN alone runs it (batch-norm and pooling by cuDNN; dropout and ReLU's
  // gradient are ours in both). The cuDNN chain's outputs are the reference.

  struct TimedBackend {  // a CudaBackend and a timer on its stream (batch-norm, tail, stem, dense)
    std::unique_ptr<Backend> backend;
    std::unique_ptr<CudaTimer> timer;
  };
  TimedBackend& timed_backend(TimedBackend& b, BackendOptions options) {
    options.tuning_cache = "";  // decide afresh, as the other rows do
    return timed_backend(b, [&] { return make_cuda_backend(options); });
  }
  TimedBackend& timed_backend(TimedBackend& b,
                             const std::function<std::unique_ptr<Backend>()>& make) {
    if (!b.backend) {
      b.backend = make();
      b.timer = std::make_unique<CudaTimer>(static_cast<cudaStream_t>(b.backend->native_stream()),
                                            timer_->flush_bytes());
    }
    return b;
  }
  TimedBackend& tail_backend(bool cudnn_only) {
    BackendOptions options;
    options.cudnn_only = cudnn_only;
    return timed_backend(cudnn_only ? tail_cudnn_ : tail_picks_, options);
  }

  // ---- Batch normalisation ----------------------------------------------------------------------
  // Training forward and backward through two CudaBackend objects, one forced to cuDNN and one to
  // kernels/batchnorm.cu (what training runs with either pick; the default backend times both on
  // a shape's first call and keeps the faster), each timed on its own stream.

  TimedBackend& batchnorm_backend(bool ours) {
    return timed_backend(ours ? batchnorm_ours_ : batchnorm_cudnn_, [ours] {
      CudaBackendOptions options;
      options.batchnorm = ours ? CudaBackendOptions::Implementation::Kernel
                               : CudaBackendOptions::Implementation::Cudnn;
      return std::make_unique<CudaBackend>(options);
    });
  }

  void batchnorm(const LayerShape& layer, int64_t batch) {
    const BatchNormProblem p = make_batchnorm_problem(layer, batch, kSeed);
    const Tensor x = upload(p.x_values, p.x), dy = upload(p.dy_values, p.x);
    const Tensor gamma = upload(p.gamma, p.channel), beta = upload(p.beta, p.channel);
    const Tensor saved_mean_in = upload(p.mean_expected, p.channel);
    const Tensor saved_inv_std_in = upload(p.inv_std_expected, p.channel);
    Tensor y(p.x, Device::Cuda), dx(p.x, Device::Cuda);
    Tensor mean(p.channel, Device::Cuda), inv_std(p.channel, Device::Cuda);
    Tensor dgamma(p.channel, Device::Cuda), dbeta(p.channel, Device::Cuda);
    Tensor running_mean = Tensor::zeros(p.channel, Device::Cuda);
    Tensor running_var = upload(std::vector<float>(static_cast<size_t>(p.channel.numel()), 1.0f),
                                p.channel);
    // Poisoned on the suite's stream, finished before a backend's stream reads or writes them.
    auto poison_now = [&](const std::vector<Tensor*>& outputs) {
      for (Tensor* t : outputs) poison(*t);
      synchronize("poisoning batch-norm outputs");
    };
    const std::string shape = batchnorm_shape_label(p.x);
    // The forward row, then the backward row, of one variant.
    auto measure_both = [&](const std::string& variant, bool baseline,
                            const std::function<void()>& forward,
                            const std::function<void()>& backward, CudaTimer* timer) {
      struct Direction {
        const char* op;
        double bytes;
        std::vector<Tensor*> outputs;
        const std::function<void()>& enqueue;
        std::function<Comparison()> check;
      };
      const Direction directions[] = {
          {"batchnorm_forward_training", p.forward_bytes(), {&y, &mean, &inv_std}, forward,
           [&] {
             return check_batchnorm_forward(download(y).data(), download(mean).data(),
                                            download(inv_std).data(), p);
           }},
          {"batchnorm_backward", p.backward_bytes(), {&dx, &dgamma, &dbeta}, backward, [&] {
             return check_batchnorm_backward(download(dx).data(), download(dgamma).data(),
                                             download(dbeta).data(), p);
           }}};
      for (const Direction& d : directions) {
        BenchRow r = row(d.op, layer.conv, shape, batch, variant, baseline);
        r.reference = kBatchNormReference;
        r.bytes = d.bytes;
        measure_variant(r, [&] { poison_now(d.outputs); }, d.enqueue, d.check, timer);
      }
    };
    for (const bool ours : {false, true}) {
      TimedBackend& timed = batchnorm_backend(ours);
      Backend& b = *timed.backend;
      measure_both(
          ours ? "ours: kernels/batchnorm.cu" : "cudnn: cudnnBatchNormalization*", !ours,
          [&] {
            b.batchnorm_forward_training(x, gamma, beta, running_mean, running_var,
                                         BatchNormProblem::kFactor, BatchNormProblem::kEpsilon, y,
                                         mean, inv_std);
          },
          [&] {
            b.batchnorm_backward(x, dy, gamma, saved_mean_in, saved_inv_std_in,
                                 BatchNormProblem::kEpsilon, dx, dgamma, dbeta);
          },
          timed.timer.get());
    }
    // The backward as the unfused model calls it for conv2..conv5's outputs: x the dropout of a
    // ReLU's output, so the ReLU gate carries the dropout's kept multiplier, and dx's channel sums
    // are the convolution's bias gradient (Backend::batchnorm_backward's relu_gate,
    // gate_dropout_rate, dx_sums), against dx gated and scaled on the host and its sums in double.
    if (has_gated_batchnorm(layer)) {
      const GatedBatchNormExpected expected = gated_batchnorm_expected(p, layer);
      Tensor dx_sums(p.channel, Device::Cuda);
      for (const bool ours : {false, true}) {
        TimedBackend& timed = batchnorm_backend(ours);
        Backend& b = *timed.backend;
        BenchRow r = row(kGatedBatchNormOp, layer.conv, shape, batch,
                         ours ? "ours: kernels/batchnorm.cu, sums in the dx pass"
                              : "cudnn: cudnnBatchNormalizationBackward + our gate and bias passes",
                         !ours);
        r.reference = kBatchNormReference;
        r.bytes = p.backward_bytes();
        r.note = "dropout rate " + std::to_string(expected.rate).substr(0, 4);
        measure_variant(
            r, [&] { poison_now({&dx, &dgamma, &dbeta, &dx_sums}); },
            [&] {
              b.batchnorm_backward(x, dy, gamma, saved_mean_in, saved_inv_std_in,
                                   BatchNormProblem::kEpsilon, dx, dgamma, dbeta, true,
                                   expected.rate, dx_sums);
            },
            [&] {
              return check_gated_batchnorm_backward(download(dx).data(), download(dgamma).data(),
                                                    download(dbeta).data(),
                                                    download(dx_sums).data(), p, expected);
            },
            timed.timer.get());
      }
    }
    // Our kernels launched directly with more blocks for the per-channel sums than the backend's
    // split (about 4 per SM): whether more loads in flight would pay. Training is unchanged.
    int sms = 0;
    PNEUMO_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_),
                      "SM count");
    const int64_t n = p.x.n(), k = p.x.c(), spatial = p.x.h() * p.x.w();
    for (const int per_sm : {8, 16}) {
      const kernels::BiasReduction split = kernels::bias_reduction(n, k, sms, per_sm);
      Tensor scratch(Shape{kernels::batchnorm_scratch_floats(split, k)}, Device::Cuda);
      measure_both(
          "ours: kernels/batchnorm.cu, about " + std::to_string(per_sm) +
              " blocks per SM for the sums (" + std::to_string(split.chunks) + " chunks a channel)",
          false,
          [&] {
            kernels::batchnorm_forward_training(
                x.data(), gamma.data(), beta.data(), running_mean.data(), running_var.data(),
                BatchNormProblem::kFactor, BatchNormProblem::kEpsilon, y.data(), mean.data(),
                inv_std.data(), scratch.data(), split, n, k, spatial, stream_.get());
          },
          [&] {
            kernels::batchnorm_backward(x.data(), dy.data(), gamma.data(), saved_mean_in.data(),
                                        saved_inv_std_in.data(), dx.data(), dgamma.data(),
                                        dbeta.data(), scratch.data(), split, n, k, spatial,
                                        stream_.get());
          },
          nullptr);
    }
  }

  void tail(size_t block, int64_t batch) {
    TailCase t(block, batch, Device::Cuda);
    TimedBackend& cudnn = tail_backend(true);
    TimedBackend& picks = tail_backend(false);
    t.chain_forward(*cudnn.backend);
    t.chain_backward(*cudnn.backend);
    cudnn.backend->synchronize();
    const std::vector<float> y = t.y();
    const TailCase::Gradients gradients = t.gradients(/*stem=*/false);
    const std::function<Comparison()> check_y = [&] {
      return compare_outputs(t.y().data(), y.data(), t.y_shape(), kTailRtol);
    };
    const std::function<Comparison()> check_gradients = [&] {
      return t.check_gradients(gradients);
    };
    struct Variant {
      const char* name;
      bool baseline;
      TimedBackend* on;
      bool fused;
    };
    const Variant variants[] = {
        {"cudnn: batch-norm + pooling (dropout, ReLU backward ours), unfused", true, &cudnn, false},
        {"cuda backend: unfused chain, its picks", true, &picks, false},
        {"ours: fused block tail (kernels/batchnorm.cu)", false, &picks, true}};
    for (const bool backward : {false, true}) {
      for (const Variant& v : variants) {
        Backend& b = *v.on->backend;
        BenchRow r = row(backward ? "block_tail_backward" : "block_tail_forward", t.layer(),
                         t.shape_label(), batch, v.name, v.baseline);
        r.reference = kTailReference;
        r.bytes = backward ? t.backward_bytes() : t.forward_bytes();
        auto forward = [&] { v.fused ? t.fused_forward(b) : t.chain_forward(b); };
        auto enqueue = [&] {
          if (backward)
            v.fused ? t.fused_backward(b) : t.chain_backward(b);
          else
            forward();
        };
        if (backward) forward();  // the state its backward reads
        measure_variant(
            r, [&] { backward ? t.poison_gradients() : t.poison_y(); }, enqueue,
            backward ? check_gradients : check_y,
            v.on->timer.get());
      }
    }
    if (t.has_stem()) stem(t, batch);
    else tail_bf16(block, batch);
  }

  // ---- The tail in bfloat16 channels-last (blocks 2-5) -----------------------------------------
  // What --precision bf16 runs around a block's fused tail today, on the backend's stream: the
  // convolution's bfloat16 output converted to float32 NCHW with its bias and ReLU, the float32
  // tail, its output converted for the next convolution; backward, the next convolution's dx
  // converted back, the tail, da converted for the convolution and its bias gradient summed.
  // Against block_tail_*_bf16, which reads and writes the bfloat16 tensors and sums the bias
  // gradient in its input-gradient pass. The two index their dropout masks differently (NCHW,
  // channels-last), so the checked run is without dropout, against the conversions' path; the
  // timed runs use the block's rate.
  void tail_bf16(size_t block, int64_t batch) {
    const LayerShape& l = model_layers().at(block);
    TimedBackend& picks = tail_backend(false);
    Backend& b = *picks.backend;
    const auto stream = static_cast<cudaStream_t>(b.native_stream());
    const Shape a_shape{batch, l.out_channels, l.size, l.size}, c{l.out_channels};
    const Shape pooled = pool_geometry(a_shape).output();
    const int64_t k = l.out_channels, spatial = l.size * l.size;
    const int64_t pooled_spatial = pooled.h() * pooled.w();
    // Operands: z and dy exact in bfloat16, the per-channel ones as TailCase's.
    std::vector<uint16_t> z_host(static_cast<size_t>(a_shape.numel()));
    std::vector<uint16_t> dy_host(static_cast<size_t>(pooled.numel()));
    {
      const std::vector<float> zv = uniform_values(a_shape.numel(), kSeed + 11, -1.5f, 2.0f);
      const std::vector<float> dyv = uniform_values(pooled.numel(), kSeed + 12, -1.0f, 1.0f);
      for (size_t i = 0; i < z_host.size(); ++i) z_host[i] = bf16_from_float(zv[i]);
      for (size_t i = 0; i < dy_host.size(); ++i) dy_host[i] = bf16_from_float(dyv[i]);
    }
    auto bits_on_device = [&](const std::vector<uint16_t>& host) {
      Array<uint16_t> out(static_cast<int64_t>(host.size()), Device::Cuda);
      copy_bytes(out.data(), Device::Cuda, host.data(), Device::Cpu, out.bytes());
      return out;
    };
    const Array<uint16_t> z = bits_on_device(z_host), dy = bits_on_device(dy_host);
    Array<uint16_t> y(pooled.numel(), Device::Cuda), dz(a_shape.numel(), Device::Cuda);
    const Tensor bias = upload(uniform_values(k, kSeed + 13, -0.5f, 0.5f), c);
    const Tensor gamma = upload(uniform_values(k, kSeed + 14, 0.5f, 1.5f), c);
    const Tensor beta = upload(uniform_values(k, kSeed + 15, -0.5f, 0.5f), c);
    Tensor running_mean = Tensor::zeros(c, Device::Cuda);
    Tensor running_var = upload(std::vector<float>(static_cast<size_t>(k), 1.0f), c);
    Tensor mean(c, Device::Cuda), inv_std(c, Device::Cuda), dbias(c, Device::Cuda);
    Tensor dgamma(c, Device::Cuda), dbeta(c, Device::Cuda);
    Tensor a(a_shape, Device::Cuda), y32(pooled, Device::Cuda), dy32(pooled, Device::Cuda);
    Tensor da(a_shape, Device::Cuda);
    int sms = 0;
    PNEUMO_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_),
                      "SM count");
    const kernels::BiasReduction split = kernels::bias_reduction(batch, k, sms);
    Tensor partial(Shape{std::max<int64_t>(split.partial_floats, 1)}, Device::Cuda);
    BlockTailSettings s;
    s.training = true;
    s.dropout_key = RngKey{kSeed, 9, 0, 1, 0};
    s.average_factor = 1.0 - ModelConfig{}.batchnorm_momentum;
    s.epsilon = ModelConfig{}.batchnorm_epsilon;
    const float rate = ModelConfig{}.conv_dropout.at(block);

    const ConstBf16NhwcView zv{z.data(), a_shape, Device::Cuda};
    const Bf16NhwcView yv{y.data(), pooled, Device::Cuda}, dzv{dz.data(), a_shape, Device::Cuda};
    const ConstBf16NhwcView dyv{dy.data(), pooled, Device::Cuda};
    auto converted_forward = [&] {
      kernels::from_bf16_channels_last(z.data(), a.data(), batch, k, spatial, bias.data(),
                                       /*relu=*/true, stream);
      b.block_tail_forward(a, gamma, beta, running_mean, running_var, s, y32, mean, inv_std);
      kernels::to_bf16_channels_last(y32.data(), y.data(), batch, k, pooled_spatial, stream);
    };
    auto converted_backward = [&] {
      kernels::from_bf16_channels_last(dy.data(), dy32.data(), batch, k, pooled_spatial, nullptr,
                                       /*relu=*/false, stream);
      b.block_tail_backward(a, dy32, gamma, beta, mean, inv_std, s, da, dgamma, dbeta);
      kernels::to_bf16_channels_last(da.data(), dz.data(), batch, k, spatial, stream);
      kernels::bias_backward(da.data(), dbias.data(), partial.data(), split, batch, k, spatial,
                             stream);
    };
    auto bf16_forward = [&] {
      b.block_tail_forward_bf16(zv, bias, gamma, beta, running_mean, running_var, s, yv, mean,
                                inv_std);
    };
    auto bf16_backward = [&] {
      b.block_tail_backward_bf16(zv, bias, dyv, gamma, beta, mean, inv_std, s, dzv, dbias, dgamma,
                                 dbeta);
    };
    auto decoded = [&](const Array<uint16_t>& bits) {
      synchronize("reading bfloat16 outputs");
      b.synchronize();
      std::vector<uint16_t> host(static_cast<size_t>(bits.size()));
      copy_bytes(host.data(), Device::Cpu, bits.data(), Device::Cuda, bits.bytes());
      std::vector<float> out(host.size());
      for (size_t i = 0; i < host.size(); ++i) out[i] = float_from_bf16(host[i]);
      return out;
    };
    // The expected outputs: the conversions' path without dropout.
    s.dropout_rate = 0.0f;
    converted_forward();
    converted_backward();
    const std::vector<float> y_expected = decoded(y), dz_expected = decoded(dz);
    const std::vector<float> dbias_expected = download(dbias), dgamma_expected = download(dgamma);
    const std::vector<float> dbeta_expected = download(dbeta);
    // bfloat16 outputs may differ by one step (2^-8) where the float32 values straddle a rounding
    // boundary (statistics summed in another order); the sums as the float32 tail's.
    constexpr double kBf16Rtol = 1.0 / 128;
    const Shape y_nhwc{batch, pooled.h(), pooled.w(), k}, z_nhwc{batch, l.size, l.size, k};
    const std::function<Comparison()> check_forward = [&] {
      const Comparison cmp = compare_outputs(decoded(y).data(), y_expected.data(), y_nhwc,
                                             kBf16Rtol);
      s.dropout_rate = rate;  // checked: time with dropout
      return cmp;
    };
    const std::function<Comparison()> check_backward = [&] {
      const struct {
        std::vector<float> actual;
        const std::vector<float>& expected;
        Shape shape;
        double rtol;
      } parts[] = {{decoded(dz), dz_expected, z_nhwc, kBf16Rtol},
                   {download(dbias), dbias_expected, c, kStemGradientRtol},
                   {download(dgamma), dgamma_expected, c, kTailRtol},
                   {download(dbeta), dbeta_expected, c, kTailRtol}};
      s.dropout_rate = rate;
      std::optional<Comparison> first;
      for (const auto& p : parts) {
        const Comparison cmp =
            compare_outputs(p.actual.data(), p.expected.data(), p.shape, p.rtol);
        if (!cmp.passed()) return cmp;
        if (!first) first = cmp;
      }
      return *first;  // dz's
    };
    auto poison_bits = [&](Array<uint16_t>& bits) {
      PNEUMO_CUDA_CHECK(cudaMemsetAsync(bits.data(), kPoisonByte, bits.bytes(), stream),
                        "poisoning bfloat16 outputs");
    };
    struct Variant {
      const char* name;
      bool baseline;
      const std::function<void()>& forward;
      const std::function<void()>& backward;
    };
    const std::function<void()> cf = converted_forward, cb = converted_backward;
    const std::function<void()> bf = bf16_forward, bb = bf16_backward;
    const Variant variants[] = {
        {"cuda backend: conversions around the float32 fused tail", true, cf, cb},
        {"ours: bfloat16 channels-last tail (kernels/batchnorm.cu)", false, bf, bb}};
    std::ostringstream label;
    label << pool_shape_label(a_shape) << ", dropout " << rate;
    const double elements = static_cast<double>(a_shape.numel()), outputs = pooled.numel();
    for (const bool backward : {false, true}) {
      for (const Variant& v : variants) {
        BenchRow r = row(backward ? "block_tail_backward_bf16" : "block_tail_forward_bf16",
                         "tail" + std::to_string(block + 1), label.str(), batch, v.name,
                         v.baseline);
        r.reference = "the conversions' path without dropout (the masks differ by design)";
        r.note = "bfloat16 in and out; checked without dropout, timed with it";
        // Compulsory: z read, y written (forward); z and dy read, dz written (backward).
        r.bytes = sizeof(uint16_t) * (backward ? 2 * elements + outputs : elements + outputs);
        s.dropout_rate = 0.0f;
        if (backward) v.forward();  // the statistics its backward reads
        measure_variant(
            r,
            [&] {
              if (!backward) return poison_bits(y);
              // Every output: block 3 (no dropout) would otherwise find the expected sums left
              // by the baseline's runs in them.
              poison_bits(dz);
              for (Tensor* t : {&dbias, &dgamma, &dbeta})
                PNEUMO_CUDA_CHECK(cudaMemsetAsync(t->data(), kPoisonByte,
                                                  static_cast<size_t>(t->numel()) * sizeof(float),
                                                  stream),
                                  "poisoning the gradients");
            },
            backward ? v.backward : v.forward, backward ? check_backward : check_forward,
            picks.timer.get());
      }
    }
  }

  // Block 1 whole: convolution + the unfused chain (cuDNN only, and the backend's picks), the
  // convolution + the fused tail, and the fused stem (kernels/batchnorm.cu, the convolution's
  // output recomputed). Reference: the cuDNN-only path's y and dweight.
  void stem(TailCase& t, int64_t batch) {
    TimedBackend& cudnn = tail_backend(true);
    TimedBackend& picks = tail_backend(false);
    enum class Path { Chain, Tail, Stem };
    auto forward = [&](Backend& b, Path p) {
      if (p == Path::Stem) return t.stem_forward(b);
      t.conv_forward(b);
      p == Path::Chain ? t.chain_forward(b) : t.fused_forward(b);
    };
    auto backward = [&](Backend& b, Path p) {
      if (p == Path::Stem) return t.stem_backward(b);
      p == Path::Chain ? t.chain_backward(b) : t.fused_backward(b);
      t.conv_backward(b);
    };
    forward(*cudnn.backend, Path::Chain);
    backward(*cudnn.backend, Path::Chain);
    cudnn.backend->synchronize();
    const std::vector<float> y = t.y();
    const TailCase::Gradients gradients = t.gradients(/*stem=*/true);
    struct Variant {
      const char* name;
      bool baseline;
      TimedBackend* on;
      Path path;
    };
    const Variant variants[] = {
        {"cudnn: convolution, batch-norm + pooling, unfused", true, &cudnn, Path::Chain},
        {"cuda backend: convolution + unfused chain, its picks", true, &picks, Path::Chain},
        {"cuda backend: convolution + ours: fused tail", false, &picks, Path::Tail},
        {"ours: fused stem (convolution recomputed)", false, &picks, Path::Stem}};
    const std::string shape = "1x150x150 -> " + t.shape_label();
    for (const bool is_backward : {false, true}) {
      for (const Variant& v : variants) {
        Backend& b = *v.on->backend;
        BenchRow r = row(is_backward ? "stem_backward" : "stem_forward", "block1", shape, batch,
                         v.name, v.baseline);
        r.reference = kTailReference;
        r.bytes = is_backward ? t.stem_backward_bytes() : t.stem_forward_bytes();
        if (is_backward) forward(b, v.path);
        measure_variant(
            r, [&] { is_backward ? t.poison_gradients() : t.poison_y(); },
            [&] { is_backward ? backward(b, v.path) : forward(b, v.path); },
            [&] {
              return is_backward ? t.check_gradients(gradients)
                                 : compare_outputs(t.y().data(), y.data(), t.y_shape(), kTailRtol);
            },
            v.on->timer.get());
      }
    }
  }

  // ---- Sigmoid + binary cross-entropy -----------------------------------------------------------

  void loss(int64_t batch, int64_t n, const std::string& layer) {
    const LossProblem p = make_loss_problem(n, kSeed);
    Tensor logits = upload(p.logits, {n}), labels = upload(p.labels, {n});
    Tensor dlogits({n}, Device::Cuda), stats({2}, Device::Cuda), probabilities({n}, Device::Cuda);
    const cuda::TensorDescriptor vector_desc = cuda::make_tensor_descriptor(n, 1, 1, 1);
    cuda::ActivationDescriptor sigmoid = cuda::ActivationDescriptor::create();
    PNEUMO_CUDNN_CHECK(cudnnSetActivationDescriptor(sigmoid.get(), CUDNN_ACTIVATION_SIGMOID,
                                                    CUDNN_NOT_PROPAGATE_NAN, 0.0),
                       "sigmoid activation");
    auto prepare = [&] {
      poison(dlogits);
      PNEUMO_CUDA_CHECK(cudaMemsetAsync(stats.data(), 0, 2 * sizeof(float), stream_.get()),
                        "zeroing stats");
    };
    auto check = [&] {
      const std::vector<float> d = download(dlogits), s = download(stats);
      return check_loss(d.data(), s.data(), p);
    };
    auto loss_row = [&](const std::string& variant, bool baseline) {
      BenchRow r = row("sigmoid_bce", layer, loss_shape_label(n), batch, variant, baseline);
      r.reference = kLossReference;
      r.bytes = p.bytes();
      return r;
    };
    {
      BenchRow r = loss_row("cudnn sigmoid, then our loss kernel, then our gradient kernel", true);
      measure_variant(
          r, prepare,
          [&] {
            PNEUMO_CUDNN_CHECK(cudnnActivationForward(cudnn_.get(), sigmoid.get(), &kOne,
                                                      vector_desc.get(), logits.data(), &kZero,
                                                      vector_desc.get(), probabilities.data()),
                               "sigmoid n=", n);
            kernels::bce_loss_from_probabilities(probabilities.data(), labels.data(), nullptr,
                                                 stats.data(), n, stream_.get());
            kernels::bce_gradient_from_probabilities(probabilities.data(), labels.data(), nullptr,
                                                     dlogits.data(), n, stream_.get());
          },
          check);
    }
    {
      BenchRow r = loss_row("ours: fused sigmoid_bce kernel (kernels/loss.cu)", false);
      measure_variant(
          r, prepare,
          [&] {
            kernels::sigmoid_bce(logits.data(), labels.data(), nullptr, dlogits.data(),
                                 stats.data(), n, n, stream_.get());
          },
          check);
    }
  }

  // ---- Augmentation -----------------------------------------------------------------------------

  void augment(int64_t batch) {
    const AugmentProblem p = make_augment_problem(batch, kSeed);
    const int size = p.size;
    const Shape out_shape{batch, 1, size, size};
    Array<uint8_t> images(static_cast<int64_t>(p.images.size()), Device::Cuda);
    copy_bytes(images.data(), Device::Cuda, p.images.data(), Device::Cpu, images.bytes());
    Array<int32_t> indices(static_cast<int64_t>(p.indices.size()), Device::Cuda);
    copy_bytes(indices.data(), Device::Cuda, p.indices.data(), Device::Cpu, indices.bytes());
    Tensor out(out_shape, Device::Cuda);
    const std::vector<float> augmented = reference_augment(p, true);

    {
      // The copy: the same output bytes, device to device.
      Tensor source = upload(augmented, out_shape);
      BenchRow r = row("gather_augment", "input", augment_shape_label(size), batch,
                       "cudaMemcpyAsync D2D of the output bytes", true);
      r.reference = "the copied buffer";
      r.bytes = 2.0 * p.output_bytes();
      measure_variant(
          r, [&] { poison(out); },
          [&] {
            PNEUMO_CUDA_CHECK(cudaMemcpyAsync(out.data(), source.data(),
                                              static_cast<size_t>(out.numel()) * sizeof(float),
                                              cudaMemcpyDeviceToDevice, stream_.get()),
                              "D2D copy");
          },
          [&] { return compare_outputs(download(out).data(), augmented.data(), out_shape, 0.0); });
    }
    for (bool enabled : {true, false}) {
      AugmentSettings settings = p.settings;
      settings.enabled = enabled;
      const std::vector<float> expected = enabled ? augmented : reference_augment(p, false);
      BenchRow r = row("gather_augment", "input", augment_shape_label(size), batch,
                       enabled ? "ours: gather + augment (kernels/augment.cu)"
                               : "ours: gather only (augmentation off)",
                       false);
      // Both twins call the same per-pixel function; a few sampling coordinates may round to the
      // other side of a pixel boundary on the device (FMA contraction), as Parity.GatherAugment
      // allows.
      r.reference = enabled
                        ? "augment_batch_cpu (CPU twin), |diff| <= ~1e-5 except <= 0.5% of pixels"
                        : "augment_batch_cpu (CPU twin), exact";
      r.bytes = p.bytes();
      measure_variant(
          r, [&] { poison(out); },
          [&] {
            augment_batch_cuda(images.data(), p.image_count, size, indices.data(),
                               static_cast<int>(batch), settings, p.key, out.data(), stream_.get());
          },
          [&] {
            return compare_outputs(download(out).data(), expected.data(), out_shape,
                                   enabled ? 1e-5 : 0.0, enabled ? 0.005 : 0.0);
          });
    }
  }

  // ---- --precision bf16's conversions ----------------------------------------------------------
  // kernels/bf16_convert.cu on every convolution the rule converts (conv2..conv5): the input
  // activation to channels-last bfloat16, and the output back to fp32 NCHW with bias and ReLU;
  // against a device-to-device copy of the fp32 tensor (what the bytes alone cost). Exact: the
  // expected values are the same rounding (bf16.hpp) and transposition done on the host.

  void bf16(const LayerShape& layer, int64_t batch) {
    if (layer.in_channels == 1) return;  // conv1 stays fp32 (pneumo/ops/conv2d.hpp)
    const int64_t spatial = layer.size * layer.size;
    const std::string shape = conv_shape_label(layer);
    auto copy_row = [&](const char* op, int64_t channels) {
      const Shape s{batch, channels, layer.size, layer.size};
      const std::vector<float> values = uniform_values(s.numel(), kSeed + 7, -2.0f, 2.0f);
      Tensor src = upload(values, s), dst(s, Device::Cuda);
      BenchRow r = row(op, layer.conv, shape, batch, "cudaMemcpyAsync D2D of the fp32 tensor", true);
      r.reference = "the copied buffer";
      r.bytes = 2.0 * static_cast<double>(s.numel()) * sizeof(float);
      measure_variant(
          r, [&] { poison(dst); },
          [&] {
            PNEUMO_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(),
                                              static_cast<size_t>(s.numel()) * sizeof(float),
                                              cudaMemcpyDeviceToDevice, stream_.get()),
                              "D2D copy");
          },
          [&] { return compare_outputs(download(dst).data(), values.data(), s, 0.0); });
    };
    {  // The input activation x (N, C, S, S) -> (N, S, S, C) bfloat16.
      const int64_t c = layer.in_channels;
      const Shape s{batch, c, layer.size, layer.size};
      copy_row("to_bf16_channels_last", c);
      const std::vector<float> x = uniform_values(s.numel(), kSeed + 8, -2.0f, 2.0f);
      std::vector<float> expected(x.size());
      for (int64_t n = 0; n < batch; ++n)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t p = 0; p < spatial; ++p)
            expected[size_t((n * spatial + p) * c + ch)] = round_to_bf16(x[size_t((n * c + ch) * spatial + p)]);
      Tensor src = upload(x, s);
      Array<uint16_t> dst(s.numel(), Device::Cuda);
      BenchRow r = row("to_bf16_channels_last", layer.conv, shape, batch,
                       "ours: kernels/bf16_convert.cu", false);
      r.reference = "bf16.hpp rounding and the NHWC transposition on the host, exact";
      r.bytes = static_cast<double>(s.numel()) * (sizeof(float) + sizeof(uint16_t));
      measure_variant(
          r,
          [&] {
            PNEUMO_CUDA_CHECK(cudaMemsetAsync(dst.data(), kPoisonByte, dst.bytes(), stream_.get()),
                              "poisoning the bf16 copy");
          },
          [&] { kernels::to_bf16_channels_last(src.data(), dst.data(), batch, c, spatial, stream_.get()); },
          [&] {
            synchronize("reading the bf16 copy");
            std::vector<uint16_t> bits(static_cast<size_t>(s.numel()));
            copy_bytes(bits.data(), Device::Cpu, dst.data(), Device::Cuda, dst.bytes());
            std::vector<float> got(bits.size());
            for (size_t i = 0; i < bits.size(); ++i) got[i] = float_from_bf16(bits[i]);
            return compare_outputs(got.data(), expected.data(), Shape{batch, layer.size, layer.size, c}, 0.0);
          });
    }
    {  // The output y (N, S, S, K) bfloat16 -> (N, K, S, S) fp32, + bias, ReLU.
      const int64_t k = layer.out_channels;
      const Shape s{batch, k, layer.size, layer.size};
      copy_row("from_bf16_channels_last", k);
      const std::vector<float> y = uniform_values(s.numel(), kSeed + 9, -2.0f, 2.0f);
      const std::vector<float> bias = uniform_values(k, kSeed + 10, -0.5f, 0.5f);
      std::vector<uint16_t> bits(y.size());
      for (size_t i = 0; i < y.size(); ++i) bits[i] = bf16_from_float(y[i]);
      std::vector<float> expected(y.size());
      for (int64_t n = 0; n < batch; ++n)
        for (int64_t ch = 0; ch < k; ++ch)
          for (int64_t p = 0; p < spatial; ++p) {
            const float v = float_from_bf16(bits[size_t((n * spatial + p) * k + ch)]) + bias[size_t(ch)];
            expected[size_t((n * k + ch) * spatial + p)] = v > 0.0f ? v : 0.0f;
          }
      Array<uint16_t> src(s.numel(), Device::Cuda);
      copy_bytes(src.data(), Device::Cuda, bits.data(), Device::Cpu, src.bytes());
      Tensor b = upload(bias, {k}), dst(s, Device::Cuda);
      BenchRow r = row("from_bf16_channels_last", layer.conv, shape, batch,
                       "ours: kernels/bf16_convert.cu (+ bias, ReLU)", false);
      r.reference = "the NCHW transposition, bias and ReLU on the host, exact";
      r.bytes = static_cast<double>(s.numel()) * (sizeof(float) + sizeof(uint16_t));
      measure_variant(
          r, [&] { poison(dst); },
          [&] {
            kernels::from_bf16_channels_last(src.data(), dst.data(), batch, k, spatial, b.data(),
                                             true, stream_.get());
          },
          [&] { return compare_outputs(download(dst).data(), expected.data(), s, 0.0); });
    }
  }

  // ---- The dense layers ------------------------------------------------------------------------
  // fc1 and fc2 through CudaBackend objects: cublasSgemm (fp32) against --precision bf16's
  // cublasGemmEx on bfloat16 copies (the conversions timed with it), forward and backward, each
  // against the double sums of the operands as it reads them.

  void dense(int layer, int64_t batch) {
    BackendOptions bf16_options;
    bf16_options.bf16 = true;
    TimedBackend& fp32 = timed_backend(dense_fp32_, BackendOptions{});
    TimedBackend& bf16 = timed_backend(dense_bf16_, bf16_options);
    DenseCase d(layer, batch, Device::Cuda);
    const struct {
      const char* name;
      bool baseline, bf16;
      TimedBackend* on;
    } variants[] = {{"cublas: Sgemm, fp32 (cuda backend)", true, false, &fp32},
                    {"cublas: GemmEx on bf16 copies, fp32 sums (conversions included)", false, true,
                     &bf16}};
    for (const bool backward : {false, true}) {
      for (const auto& v : variants) {
        Backend& b = *v.on->backend;
        BenchRow r = d.row("CUDA", backward, batch, v.name, v.baseline);
        r.not_fp32 = v.bf16;
        measure_variant(
            r, [&] { d.poison_outputs(); }, [&] { d.run(b, backward); },
            [&] {
              b.synchronize();
              return d.check(backward, v.bf16);
            },
            v.on->timer.get());
      }
    }
  }

  const KernelBenchConfig& config_;
  BenchRun& run_;
  int device_ = 0;
  cuda::Stream stream_;
  cuda::CudnnHandle cudnn_;
  std::unique_ptr<CudaTimer> timer_;
  TimedBackend tail_cudnn_, tail_picks_;  // made on the first tail case
  TimedBackend batchnorm_cudnn_, batchnorm_ours_;  // made on the first batch-norm case
  TimedBackend dense_fp32_, dense_bf16_;  // made on the first dense case
};

}  // namespace

void run_cuda_suite(const KernelBenchConfig& config, BenchRun& run) {
  CudaSuite(config, run).run();
}

}  // namespace pneumo::bench
