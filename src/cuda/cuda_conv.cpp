// CudaBackend's 3x3 'same' convolutions through cuDNN: forward (bias + ReLU fused by
// cudnnConvolutionBiasActivationForward where cuDNN accepts it), backward data, and backward
// filter with the bias gradient. Algorithms are chosen once per shape by measuring, then cached;
// with one input channel our kernels compete with cuDNN's picks for the forward and the weight
// gradient, and our bias gradient kernel with cudnnConvolutionBackwardBias.
#include <algorithm>
#include <iostream>
#include <optional>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/nvtx.hpp"
#include "cuda/cuda_backend.hpp"
#include "kernels.hpp"

namespace pneumo {

namespace {

constexpr float kOne = 1.0f;
constexpr float kZero = 0.0f;

// The algorithm to keep from a search's results (sorted fastest first): the fastest that ran
// and fits the workspace, without TF32 unless allowed; with `deterministic`, preferring
// deterministic algorithms (a non-deterministic one only when nothing else ran, with a warning).
template <class Perf>
const Perf* choose_algorithm(const std::vector<Perf>& results, int count, size_t workspace_limit,
                             bool allow_tf32, bool deterministic) {
  auto usable = [&](const Perf& p) {
    const bool math_ok = p.mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION &&
                         (allow_tf32 || p.mathType != CUDNN_TENSOR_OP_MATH);
    return p.status == CUDNN_STATUS_SUCCESS && p.memory <= workspace_limit && math_ok;
  };
  for (int i = 0; deterministic && i < count; ++i)
    if (usable(results[i]) && results[i].determinism == CUDNN_DETERMINISTIC) return &results[i];
  for (int i = 0; i < count; ++i)
    if (usable(results[i])) return &results[i];
  return nullptr;
}

template <class Perf>
std::string describe_results(const std::vector<Perf>& results, int count) {
  std::ostringstream out;
  for (int i = 0; i < count; ++i)
    out << (i ? "; " : "") << "algo " << static_cast<int>(results[i].algo) << ": "
        << cudnnGetErrorString(results[i].status) << ", " << results[i].memory << " B, "
        << cuda::math_type_name(results[i].mathType);
  return out.str();
}

template <class Perf>
std::vector<ConvAlgoTrial> to_trials(const std::vector<Perf>& results, int count) {
  std::vector<ConvAlgoTrial> trials;
  for (int i = 0; i < count; ++i)
    trials.push_back({static_cast<int>(results[i].algo), results[i].status, results[i].time,
                      results[i].memory, results[i].determinism == CUDNN_DETERMINISTIC,
                      results[i].mathType});
  return trials;
}

// The tuning cache's pick for `key` (this shape, or the layer at a larger batch), when its
// algorithm takes a workspace here, under the math type it will run with (set on `conv` first),
// that the search's limit allows; else nothing. Without TF32 that math type is FMA whatever the
// file says.
template <class WorkspaceSize, class Reserve>
std::optional<ConvAlgorithmPick> recalled_algorithm(cuda::TuningCache& cache,
                                                const cuda::TuningKey& key,
                                                cudnnConvolutionDescriptor_t conv,
                                                WorkspaceSize workspace_size, Reserve reserve,
                                                bool allow_tf32) {
  const cuda::TuningCache::Hit hit = cache.find(key);
  if (!hit.decision) return std::nullopt;
  const nlohmann::json& decision = *hit.decision;
  if (!decision.contains("algo") || !decision["algo"].is_number_integer() ||
      !decision.contains("math") || !decision["math"].is_number_integer())
    return std::nullopt;
  const int algo = decision["algo"].get<int>();
  cudnnMathType_t math = CUDNN_FMA_MATH;
  if (allow_tf32) {
    const int stored = decision["math"].get<int>();
    if (stored != CUDNN_DEFAULT_MATH && stored != CUDNN_TENSOR_OP_MATH && stored != CUDNN_FMA_MATH)
      return std::nullopt;
    math = static_cast<cudnnMathType_t>(stored);
  }
  size_t bytes = 0;
  if (cudnnSetConvolutionMathType(conv, math) != CUDNN_STATUS_SUCCESS ||
      workspace_size(algo, &bytes) != CUDNN_STATUS_SUCCESS)
    return std::nullopt;
  if (reserve(bytes) < bytes) return std::nullopt;
  return ConvAlgorithmPick{algo, bytes, cuda::number_field(decision, "ms", 0.0f), math, {},
                       hit.exact() ? "cache" : detail::concat("cache (batch ", hit.batch, ")")};
}

// One algorithm search, in any of the three directions: size a workspace for the hungriest
// algorithm (reserve caps it and returns the bytes available), let cuDNN run and time every
// algorithm on the real buffers (the output is scratch until the real call), keep one by
// choose_algorithm's rule. The direction's cuDNN calls come in as functions, all on the
// direction's descriptor `conv`: workspace_size(algo, &bytes), max_count(&n),
// find(requested, &returned, results). The workspace sizes and the search run under
// `search_math` (the backend's conv_math_type()).
//
// The tuning cache is asked first (recalled_algorithm); a search's pick is stored in it.
template <class Perf, class WorkspaceSize, class MaxCount, class Find, class Reserve>
ConvAlgorithmPick search_algorithm(cuda::TuningCache& cache, const cuda::TuningKey& key,
                               cudnnConvolutionDescriptor_t conv, cudnnMathType_t search_math,
                               int algo_count, WorkspaceSize workspace_size, MaxCount max_count,
                               Find find, Reserve reserve, bool allow_tf32, bool deterministic,
                               const std::string& what) {
  if (std::optional<ConvAlgorithmPick> recalled =
          recalled_algorithm(cache, key, conv, workspace_size, reserve, allow_tf32))
    return *recalled;
  PNEUMO_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, search_math), what);
  size_t wanted = 0;
  for (int a = 0; a < algo_count; ++a) {
    size_t bytes = 0;
    if (workspace_size(a, &bytes) == CUDNN_STATUS_SUCCESS) wanted = std::max(wanted, bytes);
  }
  const size_t available = reserve(wanted);
  int requested = 0, returned = 0;
  PNEUMO_CUDNN_CHECK(max_count(&requested), what);
  std::vector<Perf> results(static_cast<size_t>(requested));
  PNEUMO_CUDNN_CHECK(find(requested, &returned, results.data()), what, " (algorithm search)");
  const Perf* best = choose_algorithm(results, returned, available, allow_tf32, deterministic);
  PNEUMO_CHECK(best != nullptr, what, ": no cuDNN algorithm ran (",
               describe_results(results, returned), ")");
  if (deterministic && best->determinism != CUDNN_DETERMINISTIC) {
    // Said on every run and never stored: a later run (another workspace cap, another cuDNN)
    // may find a deterministic one, and a recalled pick would keep this one silently.
    std::cerr << "pneumo: warning: --deterministic: " << what
              << ": no deterministic cuDNN algorithm ran within the " << (available >> 20)
              << " MiB workspace; using algorithm " << static_cast<int>(best->algo)
              << ", which is not deterministic (" << describe_results(results, returned) << ")\n";
  } else {
    cache.store(key, {{"algo", static_cast<int>(best->algo)},
                      {"math", static_cast<int>(best->mathType)},
                      {"ms", best->time},
                      {"workspace_bytes", best->memory}});
  }
  return {static_cast<int>(best->algo), best->memory, best->time, best->mathType,
          to_trials(results, returned), "searched", static_cast<int>(best - results.data())};
}

// (N, C, H, W) -> K: a convolution's key in the tuning cache.
cuda::TuningKey conv_tuning_key(const char* op, const Shape& x_shape, int64_t out_channels) {
  return {op, {x_shape.n(), x_shape.c(), x_shape.h(), x_shape.w(), out_channels}};
}

}  // namespace

// ---- Plans and algorithm search -----------------------------------------------------------------

CudaBackend::ConvPlan& CudaBackend::conv_plan(const Shape& x_shape, int64_t out_channels) {
  const ConvKey key{x_shape.n(), x_shape.c(), x_shape.h(), x_shape.w(), out_channels};
  auto found = conv_plans_.find(key);
  if (found != conv_plans_.end()) return found->second;
  ConvPlan plan;
  plan.x = cuda::make_tensor_descriptor(x_shape.n(), x_shape.c(), x_shape.h(), x_shape.w());
  plan.y = cuda::make_tensor_descriptor(x_shape.n(), out_channels, x_shape.h(), x_shape.w());
  plan.bias = cuda::make_tensor_descriptor(1, out_channels, 1, 1);
  plan.weight = cuda::make_filter_descriptor(out_channels, x_shape.c(), 3, 3);
  plan.relu = cuda::make_relu_descriptor();
  plan.single_channel = Choice(conv_tuning_key("conv2d_forward", x_shape, out_channels));
  plan.single_channel_filter =
      Choice(conv_tuning_key("conv2d_backward_filter", x_shape, out_channels));
  plan.bias_gradient = Choice(conv_tuning_key("conv2d_bias_gradient", x_shape, out_channels));
  for (ConvPlan::Direction* direction : {&plan.forward, &plan.backward_data, &plan.backward_filter})
    direction->conv = cuda::make_conv3x3_same_descriptor(conv_math_type());
  return conv_plans_.emplace(key, std::move(plan)).first->second;
}

// The three searches: the direction's cuDNN calls for search_algorithm, then keep_pick.
void CudaBackend::find_forward_algorithm(ConvPlan& plan, ConstTensorView x, ConstTensorView weight,
                                         TensorView y) {
  PNEUMO_NVTX_RANGE("conv2d_forward algorithm search");
  const std::string what =
      detail::concat("conv2d_forward x=", x.shape.str(), " weight=", weight.shape.str());
  ConvAlgorithmPick pick = search_algorithm<cudnnConvolutionFwdAlgoPerf_t>(
      tuning_, conv_tuning_key("conv2d_forward algorithm", x.shape, weight.shape[0]),
      plan.forward.conv.get(), conv_math_type(), CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
      [&](int a, size_t* bytes) {
        return cudnnGetConvolutionForwardWorkspaceSize(
            cudnn_.get(), plan.x.get(), plan.weight.get(), plan.forward.conv.get(), plan.y.get(),
            static_cast<cudnnConvolutionFwdAlgo_t>(a), bytes);
      },
      [&](int* count) { return cudnnGetConvolutionForwardAlgorithmMaxCount(cudnn_.get(), count); },
      [&](int requested, int* returned, cudnnConvolutionFwdAlgoPerf_t* results) {
        return cudnnFindConvolutionForwardAlgorithmEx(
            cudnn_.get(), plan.x.get(), x.data, plan.weight.get(), weight.data,
            plan.forward.conv.get(), plan.y.get(), y.data, requested, returned, results,
            workspace_.data(), workspace_.bytes());
      },
      [&](size_t wanted) { return reserve_search_workspace(wanted); }, options_.allow_tf32,
      options_.deterministic, what);
  keep_pick(plan.forward, std::move(pick), what);
}

void CudaBackend::find_backward_data_algorithm(ConvPlan& plan, ConstTensorView dy,
                                               ConstTensorView weight, TensorView dx) {
  PNEUMO_NVTX_RANGE("conv2d_backward_data algorithm search");
  const std::string what =
      detail::concat("conv2d_backward_data dy=", dy.shape.str(), " weight=", weight.shape.str());
  ConvAlgorithmPick pick = search_algorithm<cudnnConvolutionBwdDataAlgoPerf_t>(
      tuning_, conv_tuning_key("conv2d_backward_data algorithm", dx.shape, weight.shape[0]),
      plan.backward_data.conv.get(), conv_math_type(), CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
      [&](int a, size_t* bytes) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            cudnn_.get(), plan.weight.get(), plan.y.get(), plan.backward_data.conv.get(),
            plan.x.get(), static_cast<cudnnConvolutionBwdDataAlgo_t>(a), bytes);
      },
      [&](int* count) {
        return cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnn_.get(), count);
      },
      [&](int requested, int* returned, cudnnConvolutionBwdDataAlgoPerf_t* results) {
        return cudnnFindConvolutionBackwardDataAlgorithmEx(
            cudnn_.get(), plan.weight.get(), weight.data, plan.y.get(), dy.data,
            plan.backward_data.conv.get(), plan.x.get(), dx.data, requested, returned, results,
            workspace_.data(), workspace_.bytes());
      },
      [&](size_t wanted) { return reserve_search_workspace(wanted); }, options_.allow_tf32,
      options_.deterministic, what);
  keep_pick(plan.backward_data, std::move(pick), what);
}

void CudaBackend::find_backward_filter_algorithm(ConvPlan& plan, ConstTensorView x,
                                                 ConstTensorView dy, TensorView dweight) {
  PNEUMO_NVTX_RANGE("conv2d_backward_filter algorithm search");
  const std::string what =
      detail::concat("conv2d_backward_filter x=", x.shape.str(), " dy=", dy.shape.str());
  ConvAlgorithmPick pick = search_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t>(
      tuning_, conv_tuning_key("conv2d_backward_filter algorithm", x.shape, dweight.shape[0]),
      plan.backward_filter.conv.get(), conv_math_type(), CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
      [&](int a, size_t* bytes) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            cudnn_.get(), plan.x.get(), plan.y.get(), plan.backward_filter.conv.get(),
            plan.weight.get(), static_cast<cudnnConvolutionBwdFilterAlgo_t>(a), bytes);
      },
      [&](int* count) {
        return cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnn_.get(), count);
      },
      [&](int requested, int* returned, cudnnConvolutionBwdFilterAlgoPerf_t* results) {
        return cudnnFindConvolutionBackwardFilterAlgorithmEx(
            cudnn_.get(), plan.x.get(), x.data, plan.y.get(), dy.data,
            plan.backward_filter.conv.get(), plan.weight.get(), dweight.data, requested, returned,
            results, workspace_.data(), workspace_.bytes());
      },
      [&](size_t wanted) { return reserve_search_workspace(wanted); }, options_.allow_tf32,
      options_.deterministic, what);
  keep_pick(plan.backward_filter, std::move(pick), what);
}

// Keeps a direction's pick, its descriptor set to the math type the algorithm was timed with
// (FMA unless TF32 is allowed).
void CudaBackend::keep_pick(ConvPlan::Direction& direction, ConvAlgorithmPick pick,
                            const std::string& what) {
  PNEUMO_CUDNN_CHECK(cudnnSetConvolutionMathType(direction.conv.get(),
                                                 options_.allow_tf32 ? pick.math : CUDNN_FMA_MATH),
                     what);
  direction.pick = std::move(pick);
  direction.found = true;
}

// The workspace for a search: what the hungriest algorithm wants, capped; the bytes available.
size_t CudaBackend::reserve_search_workspace(size_t wanted) {
  ensure_workspace(std::min(wanted, search_workspace_limit()));
  return workspace_.bytes();
}

std::string CudaBackend::describe_conv_plans() const {
  std::ostringstream out;
  for (const auto& [key, plan] : conv_plans_) {
    out << "conv (" << key[0] << ", " << key[1] << ", " << key[2] << ", " << key[3] << ") -> "
        << key[4] << ":";
    if (plan.forward.found) {
      std::string fusion = "not run";
      if (plan.relu_fusion == ConvPlan::Fusion::Fused) fusion = "fused";
      if (plan.relu_fusion == ConvPlan::Fusion::Unfused)
        fusion =
            std::string("unfused, cuDNN said ") + cudnnGetErrorString(plan.relu_fusion_refusal);
      out << " forward algo " << plan.forward_algo() << " (" << plan.forward.pick.ms << " ms, "
          << plan.forward.pick.workspace << " B, bias+relu " << fusion << ")";
      if (plan.single_channel.decided)
        out << (plan.single_channel.kernel ? " replaced by" : " kept over")
            << " conv3x3_forward_single_channel (cuDNN " << plan.single_channel.cudnn_ms
            << " ms, ours " << plan.single_channel.kernel_ms << " ms)";
    }
    if (plan.backward_data.found)
      out << " backward-data algo " << plan.backward_data_algo() << " ("
          << plan.backward_data.pick.ms << " ms, " << plan.backward_data.pick.workspace << " B)";
    if (plan.backward_filter.found)
      out << " backward-filter algo " << plan.backward_filter_algo() << " ("
          << plan.backward_filter.pick.ms << " ms, " << plan.backward_filter.pick.workspace
          << " B)";
    out << "\n";
  }
  out << "workspace " << workspace_.bytes() << " B, math " << cuda::math_type_name(conv_math_type())
      << "\n";
  return out.str();
}

std::vector<ConvSearch> CudaBackend::conv_searches() const {
  std::vector<ConvSearch> searches;
  for (const auto& [key, plan] : conv_plans_) {
    const std::pair<const char*, const ConvPlan::Direction*> directions[] = {
        {"forward", &plan.forward},
        {"backward_data", &plan.backward_data},
        {"backward_filter", &plan.backward_filter}};
    for (const auto& [name, direction] : directions) {
      if (!direction->found) continue;
      searches.push_back({key, name, direction->pick});
    }
  }
  return searches;
}

// ---- The ops ------------------------------------------------------------------------------------

void CudaBackend::conv2d_forward_impl(ConstTensorView x, ConstTensorView weight,
                                      ConstTensorView bias, TensorView y, bool fuse_relu) {
  PNEUMO_NVTX_RANGE("conv2d_forward");
  const int64_t k = weight.shape[0];
  if (x.numel() == 0 || y.numel() == 0) return;
  ConvPlan& plan = conv_plan(x.shape, k);
  if (runs_bf16(x.shape.c())) {
    conv_forward_bf16(plan, x, weight, bias, y, fuse_relu);
    return;
  }
  if (!plan.forward.found) find_forward_algorithm(plan, x, weight, y);
  if (!kernels::conv3x3_single_channel_supported(x.shape.c(), k)) {
    conv_forward_cudnn(plan, x, weight, bias, y, fuse_relu);
    return;
  }
  // One input channel (the first layer): cuDNN's best, or kernels/conv_direct.cu's kernel for it.
  chooser_.run(
      plan.single_channel, options_.single_channel_conv,
      [&] { conv_forward_cudnn(plan, x, weight, bias, y, fuse_relu); },
      [&] {
        kernels::conv3x3_forward_single_channel(x.data, weight.data, bias.data, y.data, x.shape.n(),
                                                x.shape.h(), x.shape.w(), k, fuse_relu,
                                                stream_.get());
      },
      {{y.data, y.numel(), "y"}});
}

void CudaBackend::conv_forward_cudnn(ConvPlan& plan, ConstTensorView x, ConstTensorView weight,
                                     ConstTensorView bias, TensorView y, bool fuse_relu) {
  constexpr const char* op = "conv2d_forward";
  const int64_t k = weight.shape[0];
  const size_t workspace = plan.forward.pick.workspace;
  if (fuse_relu && plan.relu_fusion != ConvPlan::Fusion::Unfused) {
    // y = relu(conv(x) + bias) in one call. z (the residual input) is y with alpha2 = 0, as
    // PyTorch's cudnn_convolution_relu does; the chosen algorithm is tried once, and a refusal
    // switches this shape to the unfused path below for good (describe_conv_plans names the
    // status). A BAD_PARAM on that first try is a refusal too: what the fused call adds to the
    // unfused one is the bias and ReLU descriptors (the ReLU propagates NaN, which the fused
    // call's documentation does not promise to take), and a fault in the x, weight or y
    // descriptors the two share still stops the unfused call below.
    const cudnnStatus_t status = cudnnConvolutionBiasActivationForward(
        cudnn_.get(), &kOne, plan.x.get(), x.data, plan.weight.get(), weight.data,
        plan.forward.conv.get(), plan.forward_algo(), workspace_of(workspace), workspace, &kZero,
        plan.y.get(), y.data, plan.bias.get(), bias.data, plan.relu.get(), plan.y.get(), y.data);
    if (status == CUDNN_STATUS_SUCCESS) {
      plan.relu_fusion = ConvPlan::Fusion::Fused;
      return;
    }
    if (plan.relu_fusion == ConvPlan::Fusion::Untried) {
      plan.relu_fusion = ConvPlan::Fusion::Unfused;
      plan.relu_fusion_refusal = status;
      cudaGetLastError();  // a failed launch inside cuDNN must not be blamed on our next kernel
    } else {
      cuda::throw_cudnn_error(status, "cudnnConvolutionBiasActivationForward", __FILE__, __LINE__,
                              detail::concat(op, " x=", x.shape.str(), " weight=",
                                             weight.shape.str(), " algo=", plan.forward_algo()));
    }
  }
  PNEUMO_CUDNN_CHECK(cudnnConvolutionForward(
                         cudnn_.get(), &kOne, plan.x.get(), x.data, plan.weight.get(), weight.data,
                         plan.forward.conv.get(), plan.forward_algo(), workspace_of(workspace),
                         workspace, &kZero, plan.y.get(), y.data),
                     op, " x=", x.shape.str(), " weight=", weight.shape.str(),
                     " algo=", plan.forward_algo());
  // y: (N, K, H*W) += bias[k], then relu when asked.
  kernels::bias_activation_forward(y.data, bias.data, x.shape.n(), k, x.shape.h() * x.shape.w(),
                                   fuse_relu, stream_.get());
}

void CudaBackend::conv2d_backward_data_impl(ConstTensorView dy, ConstTensorView weight,
                                            TensorView dx) {
  PNEUMO_NVTX_RANGE("conv2d_backward_data");
  constexpr const char* op = "conv2d_backward_data";
  if (dx.numel() == 0 || dy.numel() == 0) return;
  ConvPlan& plan = conv_plan(dx.shape, weight.shape[0]);
  if (runs_bf16(dx.shape.c())) {
    conv_backward_data_bf16(plan, dy, weight, dx);
    return;
  }
  if (!plan.backward_data.found) find_backward_data_algorithm(plan, dy, weight, dx);
  if (!plan.graph_backward_data.decided)
    search_graph_engine(plan.graph_backward_data, plan.graph_data_plan, dx.shape, weight.shape[0],
                        cuda::ConvDirection::BackwardData, dx.data, weight.data, dy.data);
  ensure_workspace(plan.graph_data_plan.workspace_bytes());
  chooser_.run(
      plan.graph_backward_data, options_.conv_engines,
      [&] {
        const size_t workspace = plan.backward_data.pick.workspace;
        PNEUMO_CUDNN_CHECK(
            cudnnConvolutionBackwardData(
                cudnn_.get(), &kOne, plan.weight.get(), weight.data, plan.y.get(), dy.data,
                plan.backward_data.conv.get(), plan.backward_data_algo(), workspace_of(workspace),
                workspace, &kZero, plan.x.get(), dx.data),
            op, " dy=", dy.shape.str(), " weight=", weight.shape.str(),
            " algo=", plan.backward_data_algo());
      },
      [&] {
        plan.graph_data_plan.execute(cudnn_.get(), dx.data, weight.data, dy.data,
                                     workspace_.data());
      },
      {{dx.data, dx.numel(), "dx"}});
}

void CudaBackend::search_graph_engine(Choice& choice, cuda::GraphConvPlan& graph,
                                      const Shape& x_shape, int64_t k,
                                      cuda::ConvDirection direction, const float* x,
                                      const float* weight, const float* y) {
  using Implementation = CudaBackendOptions::Implementation;
  if (options_.conv_engines == Implementation::Cudnn) return;  // decided as forced, unsearched
  PNEUMO_NVTX_RANGE("graph API engine search");
  cuda::GraphConvProblem problem{x_shape.n(), x_shape.c(), x_shape.h(), x_shape.w(), k, direction};
  problem.allow_tf32 = options_.allow_tf32;
  problem.deterministic = options_.deterministic;
  try {
    graph = cuda::GraphConvPlan::search(
        cudnn_.get(), stream_.get(), problem, x, weight, y,
        [this](size_t bytes) { return workspace_of(bytes); },
        search_workspace_limit());
  } catch (const Error& e) {
    if (options_.conv_engines == Implementation::Kernel) throw;  // asked for: a real failure
    // No engine ran for this shape: the legacy pick stays, and the report says why.
    std::string why = std::string(e.what()).substr(0, 300);
    std::replace(why.begin(), why.end(), '\n', ' ');
    choice.rejected = "graph API: " + why;
    choice.decided = true;
    choice.kernel = false;
  }
}

void CudaBackend::conv2d_backward_filter_impl(ConstTensorView x, ConstTensorView dy,
                                              TensorView dweight, TensorView dbias) {
  PNEUMO_NVTX_RANGE("conv2d_backward_filter");
  constexpr const char* op = "conv2d_backward_filter";
  const int64_t k = dweight.shape[0];
  const bool bias = dbias.shape.rank() != 0;  // conv2d_backward's TensorView{}: summed after
  if (x.numel() == 0) {  // empty batch: the sums over it are zero (on the stream: recordable)
    kernels::zero_floats(dweight.data, dweight.numel(), stream_.get());
    if (bias) kernels::zero_floats(dbias.data, k, stream_.get());
    return;
  }
  ConvPlan& plan = conv_plan(x.shape, k);
  auto cudnn_filter = [&] {
    const size_t workspace = plan.backward_filter.pick.workspace;
    PNEUMO_CUDNN_CHECK(
        cudnnConvolutionBackwardFilter(
            cudnn_.get(), &kOne, plan.x.get(), x.data, plan.y.get(), dy.data,
            plan.backward_filter.conv.get(), plan.backward_filter_algo(), workspace_of(workspace),
            workspace, &kZero, plan.weight.get(), dweight.data),
        op, " x=", x.shape.str(), " dy=", dy.shape.str(), " algo=", plan.backward_filter_algo());
  };
  if (x.shape.c() == 1) {
    if (!plan.backward_filter.found) find_backward_filter_algorithm(plan, x, dy, dweight);
    // One input channel (the first layer): cuDNN's weight and bias gradients, or
    // kernels/conv_backward.cu's one pass over dy for both.
    const int64_t n = x.shape.n(), h = x.shape.h(), w = x.shape.w();
    const int64_t scratch =
        kernels::conv3x3_backward_filter_single_channel_scratch_floats(n, h, w, k);
    ensure_workspace(static_cast<size_t>(scratch) * sizeof(float));
    chooser_.run(plan.single_channel_filter, options_.single_channel_conv,
                 [&] {
                   cudnn_filter();
                   cudnn_bias_gradient(plan, dy, dbias);
                 },
                 [&] {
                   kernels::conv3x3_backward_filter_single_channel(
                       x.data, dy.data, dweight.data, dbias.data,
                       reinterpret_cast<float*>(workspace_.data()), n, h, w, k, stream_.get());
                 },
                 {{dweight.data, dweight.numel(), "dweight"}, {dbias.data, k, "dbias"}});
    return;
  }
  if (runs_bf16(x.shape.c())) {
    conv_backward_filter_bf16(plan, x, dy, dweight);
  } else {
    if (!plan.backward_filter.found) find_backward_filter_algorithm(plan, x, dy, dweight);
    if (!plan.graph_backward_filter.decided)
      search_graph_engine(plan.graph_backward_filter, plan.graph_filter_plan, x.shape, k,
                          cuda::ConvDirection::BackwardFilter, x.data, dweight.data, dy.data);
    ensure_workspace(plan.graph_filter_plan.workspace_bytes());
    chooser_.run(plan.graph_backward_filter, options_.conv_engines, cudnn_filter,
                 [&] {
                   plan.graph_filter_plan.execute(cudnn_.get(), x.data, dweight.data, dy.data,
                                                  workspace_.data());
                 },
                 {{dweight.data, dweight.numel(), "dweight"}});
  }
  if (bias) conv_bias_gradient(plan, dy, dbias);
}

// dbias (K) = sum of dy over N, H, W.
void CudaBackend::cudnn_bias_gradient(ConvPlan& plan, ConstTensorView dy, TensorView dbias) {
  PNEUMO_CUDNN_CHECK(cudnnConvolutionBackwardBias(cudnn_.get(), &kOne, plan.y.get(), dy.data,
                                                  &kZero, plan.bias.get(), dbias.data),
                     "conv2d_backward_filter (dbias) dy=", dy.shape.str());
}

void CudaBackend::conv_bias_gradient(ConvPlan& plan, ConstTensorView dy, TensorView dbias) {
  const int64_t k = dbias.shape[0];
  chooser_.run(
      plan.bias_gradient, options_.conv_bias_gradient, [&] { cudnn_bias_gradient(plan, dy, dbias); },
      [&] {
        bias_gradient_kernel(dy.data, dbias.data, dy.shape.n(), k, dy.shape.h() * dy.shape.w());
      },
      {{dbias.data, k, "dbias"}});
}

void CudaBackend::conv2d_backward_impl(ConstTensorView x, ConstTensorView dy,
                                       ConstTensorView weight, TensorView dx, TensorView dweight,
                                       TensorView dbias) {
  const bool wants_dx = dx.shape.rank() != 0;
  // Every backward spends the forward's kept copy, this one too when it does not read it.
  uint16_t* kept = take_kept_input(x, weight);
  if (wants_dx && x.numel() > 0 && runs_bf16(x.shape.c())) {
    PNEUMO_NVTX_RANGE("conv2d_backward");
    ConvPlan& plan = conv_plan(x.shape, weight.shape[0]);
    conv_backward_bf16(plan, x, dy, weight, dx, dweight, kept);
    if (dbias.shape.rank() != 0) conv_bias_gradient(plan, dy, dbias);
    return;
  }
  conv2d_backward_filter_impl(x, dy, dweight, dbias);
  if (wants_dx) conv2d_backward_data_impl(dy, weight, dx);
}

// ---- --precision bf16 -------------------------------------------------------------------------
// x, dy and the weight are converted to bfloat16 channels-last copies, the graph API's fastest
// tensor-core engine for the shape runs on them, and the bfloat16 result comes back as float32
// NCHW (the forward pass adding bias and ReLU on the way): pneumo/ops/conv2d.hpp's precision
// rule, which the CPU backend emulates.

CudaBackend::Bf16Buffers CudaBackend::bf16_buffers(int64_t x_elements, int64_t y_elements,
                                                   int64_t weight_elements) {
  constexpr size_t kAlign = 256;
  const auto part = [](int64_t elements) {
    return (static_cast<size_t>(elements) * sizeof(uint16_t) + kAlign - 1) / kAlign * kAlign;
  };
  const size_t bytes = part(x_elements) + part(y_elements) + part(weight_elements);
  if (bytes > bf16_scratch_.bytes()) {
    // Queued conversions and convolutions may still use the old block.
    PNEUMO_CUDA_CHECK(cudaStreamSynchronize(stream_.get()), "growing the bf16 buffers to ", bytes,
                      " bytes");
    bf16_scratch_ = Array<uint8_t>();
    ++memory_generation_;  // recordings holding the old block are stale, even if this throws
    bf16_scratch_ = Array<uint8_t>(static_cast<int64_t>(bytes), Device::Cuda);
  }
  uint8_t* base = bf16_scratch_.data();
  Bf16Buffers b;
  b.x = reinterpret_cast<uint16_t*>(base);
  b.y = reinterpret_cast<uint16_t*>(base + part(x_elements));
  b.weight = reinterpret_cast<uint16_t*>(base + part(x_elements) + part(y_elements));
  return b;
}

const cuda::GraphConvPlan& CudaBackend::bf16_plan(cuda::GraphConvPlan& plan,
                                                  cuda::ConvDirection direction,
                                                  const Shape& x_shape, int64_t k,
                                                  const Bf16Buffers& b) {
  if (!plan.ready()) {
    cuda::GraphConvProblem problem{x_shape.n(), x_shape.c(), x_shape.h(), x_shape.w(), k,
                                   direction};
    problem.bf16_channels_last = true;
    problem.deterministic = options_.deterministic;
    // The engine config found for this layer before (this shape, or a larger batch of it, in
    // this run or an earlier one: the tuning cache) is built again without a search.
    const cuda::TuningKey key =
        conv_tuning_key(("bf16_graph_conv2d_" + cuda::to_string(direction)).c_str(), x_shape, k);
    const cuda::TuningCache::Hit hit = tuning_.find(key);
    cuda::EngineChoice remembered;
    if (hit.decision && cuda::parse_engine_choice(*hit.decision, remembered)) {
      try {
        cuda::GraphConvPlan built =
            cuda::GraphConvPlan::build(cudnn_.get(), problem, remembered, b.x, b.weight, b.y);
        if (built.workspace_bytes() <= search_workspace_limit()) {
          // Run once before it is kept, as the search runs each candidate: an engine that builds
          // at this shape may still refuse to execute here (it was found at a larger batch, or in
          // another run). The run computes this call's own output, which the caller computes again.
          built.execute(cudnn_.get(), b.x, b.weight, b.y, workspace_of(built.workspace_bytes()));
          plan = std::move(built);
        }
      } catch (const Error&) {
        cudaGetLastError();  // a refused launch inside cuDNN is not our next kernel's error
        // Not buildable or not runnable for this shape (or a stale file): search below.
      }
    }
    if (!plan.ready()) {
      PNEUMO_NVTX_RANGE("bf16 graph engine search");
      auto search = [&](const cuda::GraphConvProblem& rules) {
        return cuda::GraphConvPlan::search(
            cudnn_.get(), stream_.get(), rules, b.x, b.weight, b.y,
            [this](size_t bytes) { return workspace_of(bytes); }, search_workspace_limit());
      };
      // The contract's rules first; when they leave no engine, the ones a GPU may lack are
      // relaxed one at a time (float32 partial sums, then determinism), said on every run and
      // never stored, as the legacy path does for a missing deterministic algorithm.
      std::vector<cuda::GraphConvProblem> attempts{problem};
      attempts.push_back(attempts.back());
      attempts.back().allow_reduced_precision_reduction = true;
      if (problem.deterministic) {
        attempts.push_back(attempts.back());
        attempts.back().deterministic = false;
      }
      std::string refusals;
      size_t used = 0;
      for (; used < attempts.size() && !plan.ready(); ++used) {
        try {
          plan = search(attempts[used]);
        } catch (const Error& e) {
          refusals += detail::concat(used ? "; then " : "", e.what());
        }
      }
      const std::string conv = detail::concat("the ", cuda::to_string(direction),
                                              " convolution of ", x_shape.str(), " -> K=", k);
      if (!plan.ready())
        throw Error(detail::concat("--precision bf16: cuDNN ran no bfloat16 engine for ", conv,
                                   " on this GPU, even with reduced-precision sums",
                                   problem.deterministic ? " and non-deterministic engines" : "",
                                   " allowed; use --precision fp32 or tf32 (", refusals, ")"));
      if (used > 1) {
        std::cerr << "pneumo: warning: --precision bf16: no engine for " << conv
                  << " met the rules (float32 sums"
                  << (problem.deterministic ? ", deterministic" : "") << "); using "
                  << plan.best_name() << ", which "
                  << (used == 2 ? "may sum in less than float32"
                                : "may sum in less than float32 and is not deterministic")
                  << ": results drift further from the CPU emulation (" << refusals << ")\n";
      } else if (!plan.engine_choice().empty()) {
        nlohmann::json decision = cuda::to_json(plan.engine_choice());
        decision["ms"] = plan.best_ms();
        decision["name"] = plan.best_name();
        tuning_.store(key, decision);
      }
    }
  }
  ensure_workspace(plan.workspace_bytes());
  return plan;
}

namespace {

// A float32 tensor read as (shape[0], shape[1], the rest): an activation (N, C, H, W) or a weight
// (K, C, 3, 3), both converted by the same kernels (NCHW <-> NHWC, KCRS <-> KRSC).
void to_bf16(ConstTensorView t, uint16_t* dst, cudaStream_t stream) {
  kernels::to_bf16_channels_last(t.data, dst, t.shape[0], t.shape[1], t.shape[2] * t.shape[3],
                                 stream);
}
void from_bf16(const uint16_t* src, TensorView t, const float* bias, bool relu,
               cudaStream_t stream) {
  kernels::from_bf16_channels_last(src, t.data, t.shape[0], t.shape[1], t.shape[2] * t.shape[3],
                                   bias, relu, stream);
}

}  // namespace

uint16_t* CudaBackend::take_kept_input(ConstTensorView x, ConstTensorView weight) {
  const auto found = kept_inputs_.find(weight.data);
  if (found == kept_inputs_.end()) return nullptr;
  KeptInput& kept = found->second;
  const bool same = kept.x == x.data && kept.shape == x.shape;
  kept.x = nullptr;  // used; its memory stays for the next forward, which rewrites it on this stream
  return same ? kept.copy.data() : nullptr;
}

uint16_t* CudaBackend::keep_input(ConstTensorView x, ConstTensorView weight) {
  KeptInput& kept = kept_inputs_[weight.data];
  kept.x = nullptr;  // until the new copy is queued
  if (kept.copy.size() < x.numel()) {
    // Queued convolutions may still read the old copy.
    PNEUMO_CUDA_CHECK(cudaStreamSynchronize(stream_.get()), "growing a kept bf16 input to ",
                      x.numel(), " values");
    kept.copy = Array<uint16_t>();
    ++memory_generation_;  // recordings holding the old copy are stale, even if this throws
    kept.copy = Array<uint16_t>(x.numel(), Device::Cuda);
  }
  to_bf16(x, kept.copy.data(), stream_.get());
  kept.x = x.data;
  kept.shape = x.shape;
  return kept.copy.data();
}

void CudaBackend::conv_forward_bf16(ConvPlan& plan, ConstTensorView x, ConstTensorView weight,
                                    ConstTensorView bias, TensorView y, bool fuse_relu) {
  // No scratch part for x: the kept copy (keep_input) is what the convolution reads.
  Bf16Buffers b = bf16_buffers(0, y.numel(), weight.numel());
  b.x = keep_input(x, weight);
  to_bf16(weight, b.weight, stream_.get());
  bf16_plan(plan.bf16_forward, cuda::ConvDirection::Forward, x.shape, weight.shape[0], b)
      .execute(cudnn_.get(), b.x, b.weight, b.y, workspace_.data());
  from_bf16(b.y, y, bias.data, fuse_relu, stream_.get());
}

void CudaBackend::filter_from_bf16(ConvPlan& plan, const Shape& x_shape, const Bf16Buffers& b,
                                   TensorView dweight) {
  bf16_plan(plan.bf16_backward_filter, cuda::ConvDirection::BackwardFilter, x_shape,
            dweight.shape[0], b)
      .execute(cudnn_.get(), b.x, b.weight, b.y, workspace_.data());
  from_bf16(b.weight, dweight, nullptr, false, stream_.get());
}

void CudaBackend::data_from_bf16(ConvPlan& plan, ConstTensorView weight, const Bf16Buffers& b,
                                 TensorView dx) {
  to_bf16(weight, b.weight, stream_.get());
  bf16_plan(plan.bf16_backward_data, cuda::ConvDirection::BackwardData, dx.shape,
            weight.shape[0], b)
      .execute(cudnn_.get(), b.x, b.weight, b.y, workspace_.data());
  from_bf16(b.x, dx, nullptr, false, stream_.get());
}

void CudaBackend::conv_backward_data_bf16(ConvPlan& plan, ConstTensorView dy,
                                          ConstTensorView weight, TensorView dx) {
  const Bf16Buffers b = bf16_buffers(dx.numel(), dy.numel(), weight.numel());
  to_bf16(dy, b.y, stream_.get());
  data_from_bf16(plan, weight, b, dx);
}

void CudaBackend::conv_backward_filter_bf16(ConvPlan& plan, ConstTensorView x, ConstTensorView dy,
                                            TensorView dweight) {
  const Bf16Buffers b = bf16_buffers(x.numel(), dy.numel(), dweight.numel());
  to_bf16(x, b.x, stream_.get());
  to_bf16(dy, b.y, stream_.get());
  filter_from_bf16(plan, x.shape, b, dweight);
}

// The weight gradient reads x's copy from the forward where there is one (`kept`, else x is
// converted into the scratch). The copy serves this one backward: take_kept_input marked it used,
// so a later backward on the same address, whose tensor may have been freed and its memory given
// to another since, converts x afresh.
void CudaBackend::conv_backward_bf16(ConvPlan& plan, ConstTensorView x, ConstTensorView dy,
                                     ConstTensorView weight, TensorView dx, TensorView dweight,
                                     uint16_t* kept) {
  const Bf16Buffers b = bf16_buffers(x.numel(), dy.numel(), weight.numel());
  Bf16Buffers filter = b;
  if (kept) {
    filter.x = kept;  // read only: the filter plan's input
  } else {
    to_bf16(x, b.x, stream_.get());
  }
  to_bf16(dy, b.y, stream_.get());
  filter_from_bf16(plan, x.shape, filter, dweight);
  data_from_bf16(plan, weight, b, dx);
}

// ---- bfloat16 channels-last in and out: the same plans, on the caller's tensors ----------------
// The bf16 path above without its conversions: x and dz are already what cuDNN reads, z and dx
// what it writes; only the weight is converted (and dweight back).

void CudaBackend::conv2d_forward_bf16_impl(ConstBf16NhwcView x, ConstTensorView weight,
                                           Bf16NhwcView z) {
  PNEUMO_NVTX_RANGE("conv2d_forward_bf16");
  const int64_t k = weight.shape[0];
  if (x.numel() == 0) return;
  ConvPlan& plan = conv_plan(x.shape, k);
  Bf16Buffers b = bf16_buffers(0, 0, weight.numel());
  b.x = const_cast<uint16_t*>(x.data);  // read only: the forward plan's input
  b.y = z.data;
  to_bf16(weight, b.weight, stream_.get());
  bf16_plan(plan.bf16_forward, cuda::ConvDirection::Forward, x.shape, k, b)
      .execute(cudnn_.get(), b.x, b.weight, b.y, workspace_.data());
}

void CudaBackend::conv2d_backward_bf16_impl(ConstBf16NhwcView x, ConstBf16NhwcView dz,
                                            ConstTensorView weight, Bf16NhwcView dx,
                                            TensorView dweight) {
  PNEUMO_NVTX_RANGE("conv2d_backward_bf16");
  const int64_t k = weight.shape[0];
  if (x.numel() == 0) {  // empty batch: the weight gradient's sums are zero
    kernels::zero_floats(dweight.data, dweight.numel(), stream_.get());
    return;
  }
  ConvPlan& plan = conv_plan(x.shape, k);
  Bf16Buffers b = bf16_buffers(0, 0, weight.numel());
  b.x = const_cast<uint16_t*>(x.data);  // read only: the filter plan's input
  b.y = const_cast<uint16_t*>(dz.data);  // read only: both plans' input
  filter_from_bf16(plan, x.shape, b, dweight);
  if (dx.data == nullptr) return;
  b.x = dx.data;  // the data plan's output
  to_bf16(weight, b.weight, stream_.get());
  bf16_plan(plan.bf16_backward_data, cuda::ConvDirection::BackwardData, x.shape, k, b)
      .execute(cudnn_.get(), b.x, b.weight, b.y, workspace_.data());
}

void CudaBackend::to_bf16_channels_last_impl(ConstTensorView x, Bf16NhwcView y) {
  if (x.numel() > 0) to_bf16(x, y.data, stream_.get());
}

void CudaBackend::from_bf16_channels_last_impl(ConstBf16NhwcView x, TensorView y) {
  if (x.numel() > 0) from_bf16(x.data, y, nullptr, /*relu=*/false, stream_.get());
}

}  // namespace pneumo
