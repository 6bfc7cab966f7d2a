// The 3x3 'same' convolution of pneumo/ops/conv2d.hpp through cuDNN's backend (graph) API, with
// our own engine search: every engine config the heuristics offer is filtered by its notes,
// built, timed on the caller's buffers, and the fastest is kept. Extra candidates beside
// cuda_conv.cpp's legacy cudnnFind* path, and the --precision bf16 path; PyTorch picks its
// convolutions the same way.
#pragma once

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cuda/cuda_raii.hpp"

namespace pneumo::cuda {

// One owned cuDNN backend descriptor (tensor, operation, graph, engine config, plan, ...).
// Creation needs the descriptor type, so it goes through make_backend_descriptor, not create().
struct BackendDescriptorTraits {
  static void destroy(cudnnBackendDescriptor_t d) noexcept { cudnnBackendDestroyDescriptor(d); }
};
using BackendDescriptor = Resource<cudnnBackendDescriptor_t, BackendDescriptorTraits>;
// Throws pneumo::Error naming `what` and cuDNN's status when cuDNN cannot create it.
BackendDescriptor make_backend_descriptor(cudnnBackendDescriptorType_t type, const char* what);

enum class ConvDirection { Forward, BackwardData, BackwardFilter };
std::string to_string(ConvDirection d);  // "forward", "backward_data", "backward_filter"

struct GraphConvProblem {
  int64_t n, c, h, w, k;  // x (N,C,H,W), weight (K,C,3,3), y (N,K,H,W): ConvGeometry's 3x3,
                          // stride 1, padding 1 each side (pneumo/op_geometry.hpp), dilation 1,
                          // CUDNN_CROSS_CORRELATION, float32 accumulation
  ConvDirection direction;
  bool allow_tf32 = false;    // false: skip engines noted CUDNN_NUMERICAL_NOTE_TENSOR_CORE (fp32
                              // data would run as TF32); DOWN_CONVERT_INPUTS is always skipped
  // false: x, weight, y are float32, packed NCHW / KCRS. true: bfloat16, packed channels-last
  // (NHWC, KRSC: kernels::to_bf16_channels_last writes them), tensor-core engines allowed
  // (--precision bf16).
  bool bf16_channels_last = false;
  bool deterministic = true;  // true: skip CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC
  // false: skip CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION (partial sums kept in less than
  // float32, which breaks pneumo/ops/conv2d.hpp's float32 accumulation). true only as the bf16
  // path's last resort when no engine is left otherwise (CudaBackend::bf16_plan warns).
  bool allow_reduced_precision_reduction = false;
};

// Why the problem forbids an engine config with these notes ("filtered out: ..." or "skipped:
// ..."), or "" when it may be built and timed. The rules the search applies, on their own so that
// they can be tested without a GPU.
std::string engine_filter_reason(const std::vector<cudnnBackendNumericalNote_t>& numerical,
                                 const std::vector<cudnnBackendBehaviorNote_t>& behavior,
                                 const GraphConvProblem& p);

// An engine config as numbers: the engine's global index and its knob choices (type, value).
// What a search found, kept so that the same config can be built for another batch size or in a
// later run (the tuning cache) without listing and timing the candidates again.
struct EngineChoice {
  int64_t engine = -1;
  std::vector<std::pair<int64_t, int64_t>> knobs;
  bool empty() const { return engine < 0; }
};
// {"engine": 7, "knobs": [[2, 1], [13, 0]]}; parse_engine_choice is its inverse and returns false
// (leaving `choice` empty) for anything else.
nlohmann::json to_json(const EngineChoice& choice);
bool parse_engine_choice(const nlohmann::json& json, EngineChoice& choice);

struct GraphConvCandidate {  // one engine config that was listed by the heuristics
  // "engine 7 (k2=1 k13=0) [winograd]": the engine's global index, its knob choices as
  // k<cudnnBackendKnobType_t>=<value>, and its numerical/behaviour notes in brackets.
  std::string name;
  bool ran = false;  // built, executed and timed
  float ms = 0;      // mean of the timed runs
  size_t workspace = 0;
  std::string error;  // why it did not run (filtered out, finalize refused, ...)
  EngineChoice choice;  // the config as numbers (empty when they could not be read)
};

// A built execution plan for one problem: the fastest engine config that ran. Move-only; owns
// every backend descriptor it was built from.
class GraphConvPlan {
 public:
  GraphConvPlan() = default;  // empty: execute() refuses it; assign a search() result
  GraphConvPlan(GraphConvPlan&&) noexcept = default;
  GraphConvPlan& operator=(GraphConvPlan&&) noexcept = default;
  GraphConvPlan(const GraphConvPlan&) = delete;
  GraphConvPlan& operator=(const GraphConvPlan&) = delete;

  // Builds the operation graph for p.direction, lists engine configs from CUDNN_HEUR_MODE_A and
  // then CUDNN_HEUR_MODE_FALLBACK (those not already listed), drops those whose notes the problem
  // forbids or that need runtime compilation, builds a plan for each of the first
  // `max_candidates` that remain, drops those wanting more than `max_workspace` bytes, and times
  // the rest on the given buffers on `stream` (1 warm-up run, then the mean of 3 timed between
  // CUDA events). Keeps the fastest. The handle is bound to `stream` during the search and given
  // back its previous stream afterwards; `stream` must not be capturing.
  // Buffers: Forward writes y from x, weight; BackwardData writes x (dx) from y (dy), weight;
  // BackwardFilter writes weight (dw) from x, y (dy). The written buffer is scratch during the
  // search (every candidate overwrites it). Each buffer's alignment (16, 8 or 4 bytes) is promised
  // to cuDNN, so execute() must get buffers aligned at least as well (it checks).
  // `workspace_for(bytes)` returns device memory of at least `bytes`; it may synchronise and
  // reallocate, so the pointer is fetched again for each candidate.
  // Throws pneumo::Error naming the cuDNN call, its status and the shapes when the graph cannot be
  // built, or listing every candidate and why it did not run when none ran.
  static GraphConvPlan search(cudnnHandle_t handle, cudaStream_t stream, const GraphConvProblem& p,
                              const void* x, const void* weight, const void* y,
                              std::function<void*(size_t)> workspace_for, size_t max_workspace,
                              int max_candidates = 16);

  // The plan of one engine config (a previous search's engine_choice(), for this problem at
  // another batch size or from the tuning cache), built without listing or timing anything; its
  // candidates() hold that one config. Buffers only promise their alignment (nothing runs).
  // Throws pneumo::Error naming the config and cuDNN's status when it cannot be built for `p`
  // (the caller then searches).
  static GraphConvPlan build(cudnnHandle_t handle, const GraphConvProblem& p,
                             const EngineChoice& choice, const void* x, const void* weight,
                             const void* y);

  // Runs the kept plan on the handle's current stream with alpha 1, beta 0 (the output is
  // overwritten). Buffers as for search(), each aligned at least as well as the one searched
  // with; `workspace`: at least workspace_bytes() of device memory (may be null when that is 0).
  // Use the handle the search used (a plan belongs to its device).
  void execute(cudnnHandle_t handle, const void* x, const void* weight, const void* y,
               void* workspace) const;

  bool ready() const { return static_cast<bool>(plan_); }  // a search() result
  size_t workspace_bytes() const { return workspace_; }
  float best_ms() const { return best_ms_; }
  const std::string& best_name() const { return best_name_; }
  const std::vector<GraphConvCandidate>& candidates() const { return candidates_; }
  const GraphConvProblem& problem() const { return problem_; }
  const EngineChoice& engine_choice() const { return choice_; }

 private:
  GraphConvProblem problem_{};
  std::array<int64_t, 3> alignment_{};  // bytes promised for x, weight, y
  // Tensors, convolution, operation, graph and the kept engine config: cuDNN's plan may refer to
  // them, so they live as long as the plan does.
  std::vector<BackendDescriptor> graph_parts_;
  BackendDescriptor plan_;
  size_t workspace_ = 0;
  float best_ms_ = 0;
  std::string best_name_;
  std::vector<GraphConvCandidate> candidates_;
  EngineChoice choice_;
};

}  // namespace pneumo::cuda
