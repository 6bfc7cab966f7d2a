// GraphConvPlan: one-operation cuDNN graphs for the 3x3 'same' convolution and the engine search
// over them (heuristics, note filters, plan builds, timing). Attribute names, types and counts
// follow the cuDNN backend descriptor reference (cudnn_graph library, "Backend Descriptor Types").
#include "cuda/cudnn_graph_conv.hpp"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <utility>

#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cuda {

namespace {

// Unique ids tie the tensors of the graph to the pointers of a variant pack. dx shares x's id
// and dy y's, so the three directions use one layout of pointers.
constexpr int64_t kUidX = 'x';
constexpr int64_t kUidW = 'w';
constexpr int64_t kUidY = 'y';
constexpr int64_t kKernel = ConvGeometry::kKernel;
constexpr int kTimedRuns = 3;
constexpr size_t kMaxErrorChars = 160;

std::string shape_str(int64_t a, int64_t b, int64_t c, int64_t d) {
  return detail::concat("(", a, ", ", b, ", ", c, ", ", d, ")");
}

std::string describe(const GraphConvProblem& p) {
  return detail::concat("graph conv ", to_string(p.direction), " x ", shape_str(p.n, p.c, p.h, p.w),
                        " weight ", shape_str(p.k, p.c, kKernel, kKernel), " y ",
                        shape_str(p.n, p.k, p.h, p.w),
                        p.bf16_channels_last ? " bf16 channels-last" : "",
                        p.allow_reduced_precision_reduction ? " (reduced-precision sums allowed)"
                                                            : "");
}

// cuDNN's status name plus its own explanation of the last failure, cut to one short line.
std::string status_text(cudnnStatus_t status) {
  char detail_text[256] = {0};
  cudnnGetLastErrorString(detail_text, sizeof(detail_text));
  std::string text = cudnnGetErrorString(status);
  if (detail_text[0] != '\0') text += detail::concat(" (", detail_text, ")");
  return detail::excerpt(text, kMaxErrorChars);
}

// The alignment promised to cuDNN for a buffer: the largest of 16, 8, 4 that divides its address.
// CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT is a promise about every pointer later bound to the tensor, and
// engines with vector loads need 16. cudaMalloc'd buffers (activations, our Tensors) are 256-byte
// aligned and get 16; a weight view inside the parameter buffer may only be 4-byte aligned, and a
// promise of 16 there would let an engine read misaligned vectors. So the promise follows the
// buffers the search is given (as PyTorch's cuDNN v8 path does), capped at 16 (the usual value),
// and execute() checks that later buffers keep it.
int64_t promised_alignment(const void* ptr) {
  const auto address = reinterpret_cast<std::uintptr_t>(ptr);
  int64_t alignment = 16;
  while (alignment > 2 && address % static_cast<std::uintptr_t>(alignment) != 0) alignment /= 2;
  return alignment;
}

bool is_aligned(const void* ptr, int64_t alignment) {
  return reinterpret_cast<std::uintptr_t>(ptr) % static_cast<std::uintptr_t>(alignment) == 0;
}

// Descriptor-valued attributes take the address of the handle, as an array of one.
cudnnStatus_t set_descriptor(cudnnBackendDescriptor_t target, cudnnBackendAttributeName_t name,
                             cudnnBackendDescriptor_t value) {
  return cudnnBackendSetAttribute(target, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value);
}

// A packed tensor of logical dims (d0, d1, d2, d3) (NCHW, or KCRS for the weight): float32 with
// strides (d1 d2 d3, d2 d3, d3, 1), or bfloat16 stored channels-last, strides (d1 d2 d3, 1,
// d3 d1, d1) (NHWC, KRSC).
BackendDescriptor make_tensor(int64_t uid, const std::array<int64_t, 4>& dims, int64_t alignment,
                              bool bf16_channels_last, const std::string& context) {
  BackendDescriptor tensor = make_backend_descriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor");
  const std::array<int64_t, 4> strides =
      bf16_channels_last
          ? std::array<int64_t, 4>{dims[1] * dims[2] * dims[3], 1, dims[3] * dims[1], dims[1]}
          : std::array<int64_t, 4>{dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1};
  const cudnnDataType_t data_type = bf16_channels_last ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const std::string where =
      detail::concat(context, ": tensor '", static_cast<char>(uid), "' ",
                     shape_str(dims[0], dims[1], dims[2], dims[3]), " aligned to ", alignment);
  cudnnBackendDescriptor_t t = tensor.get();
  PNEUMO_CUDNN_CHECK(
      cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &data_type),
      where);
  PNEUMO_CUDNN_CHECK(
      cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data()),
      where);
  PNEUMO_CUDNN_CHECK(
      cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data()),
      where);
  PNEUMO_CUDNN_CHECK(
      cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), where);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64,
                                              1, &alignment),
                     where);
  PNEUMO_CUDNN_CHECK(cudnnBackendFinalize(t), where);
  return tensor;
}

// 3x3 'same' (ConvGeometry): padding kPadding before and after, stride 1, dilation 1, float32
// accumulation.
BackendDescriptor make_convolution(const std::string& context) {
  BackendDescriptor conv =
      make_backend_descriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, "convolution");
  const cudnnDataType_t compute_type = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t spatial_dims = 2;
  const std::array<int64_t, 2> ones{1, 1};
  const std::array<int64_t, 2> padding{ConvGeometry::kPadding, ConvGeometry::kPadding};
  cudnnBackendDescriptor_t d = conv.get();
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_COMP_TYPE,
                                              CUDNN_TYPE_DATA_TYPE, 1, &compute_type),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_CONV_MODE,
                                              CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS,
                                              CUDNN_TYPE_INT64, 1, &spatial_dims),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64,
                                              2, ones.data()),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES,
                                              CUDNN_TYPE_INT64, 2, ones.data()),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS,
                                              CUDNN_TYPE_INT64, 2, padding.data()),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS,
                                              CUDNN_TYPE_INT64, 2, padding.data()),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendFinalize(d), context);
  return conv;
}

// The operation's descriptor type and attribute names for one direction; x, w, y name the
// attributes bound to the tensors with ids 'x', 'w', 'y' (dx, dw and dy where they are outputs or
// gradients).
struct OperationAttributes {
  cudnnBackendDescriptorType_t type;
  cudnnBackendAttributeName_t x, w, y, alpha, beta, conv;
};

OperationAttributes operation_attributes(ConvDirection direction) {
  switch (direction) {
    case ConvDirection::Forward:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC};
    case ConvDirection::BackwardData:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC};
    case ConvDirection::BackwardFilter:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC};
  }
  throw Error("graph conv: unknown convolution direction");
}

// Everything the graph is built from, in creation order; `graph` is the last element.
std::vector<BackendDescriptor> build_graph(cudnnHandle_t handle, const GraphConvProblem& p,
                                           const std::array<int64_t, 3>& alignment,
                                           const std::string& context) {
  std::vector<BackendDescriptor> parts;
  const bool bf16 = p.bf16_channels_last;
  parts.push_back(make_tensor(kUidX, {p.n, p.c, p.h, p.w}, alignment[0], bf16, context));
  parts.push_back(make_tensor(kUidW, {p.k, p.c, kKernel, kKernel}, alignment[1], bf16, context));
  parts.push_back(make_tensor(kUidY, {p.n, p.k, p.h, p.w}, alignment[2], bf16, context));
  parts.push_back(make_convolution(context));
  const cudnnBackendDescriptor_t x = parts[0].get(), w = parts[1].get(), y = parts[2].get();
  const cudnnBackendDescriptor_t conv = parts[3].get();

  const OperationAttributes a = operation_attributes(p.direction);
  parts.push_back(make_backend_descriptor(a.type, "convolution operation"));
  const cudnnBackendDescriptor_t op = parts.back().get();
  // Float scaling factors: cudnn-frontend passes CUDNN_TYPE_DOUBLE only when the convolution
  // computes in double; our compute type is float.
  const float alpha = 1.0f, beta = 0.0f;
  PNEUMO_CUDNN_CHECK(set_descriptor(op, a.x, x), context);
  PNEUMO_CUDNN_CHECK(set_descriptor(op, a.w, w), context);
  PNEUMO_CUDNN_CHECK(set_descriptor(op, a.y, y), context);
  PNEUMO_CUDNN_CHECK(set_descriptor(op, a.conv, conv), context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(op, a.alpha, CUDNN_TYPE_FLOAT, 1, &alpha), context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(op, a.beta, CUDNN_TYPE_FLOAT, 1, &beta), context);
  PNEUMO_CUDNN_CHECK(cudnnBackendFinalize(op), context);

  parts.push_back(make_backend_descriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "graph"));
  const cudnnBackendDescriptor_t graph = parts.back().get();
  // CUDNN_ATTR_OPERATIONGRAPH_HANDLE (like CUDNN_ATTR_EXECUTION_PLAN_HANDLE below) is marked
  // deprecated in cuDNN 9.19's header in favour of device-property descriptors, but it is still
  // accepted and works with every cuDNN 9; the warning only shows under CUDNN_WARN_DEPRECATED.
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
                                              CUDNN_TYPE_HANDLE, 1, &handle),
                     context);
  PNEUMO_CUDNN_CHECK(set_descriptor(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, op), context);
  PNEUMO_CUDNN_CHECK(cudnnBackendFinalize(graph), context);
  return parts;
}

// Only notes that every cuDNN 9 header declares are named, so this compiles against the older
// cuDNN a GPU host's Python packages may ship; the others appear by number.
const char* numerical_note_name(cudnnBackendNumericalNote_t note) {
  switch (note) {
    case CUDNN_NUMERICAL_NOTE_TENSOR_CORE: return "tensor_core";
    case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS: return "down_convert_inputs";
    case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION: return "reduced_precision_reduction";
    case CUDNN_NUMERICAL_NOTE_FFT: return "fft";
    case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC: return "nondeterministic";
    case CUDNN_NUMERICAL_NOTE_WINOGRAD: return "winograd";
    case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4: return "winograd_4x4";
    case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6: return "winograd_6x6";
    case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13: return "winograd_13x13";
    default: return "";  // a note newer than these (cuDNN adds them): named by its number
  }
}

const char* behavior_note_name(cudnnBackendBehaviorNote_t note) {
  switch (note) {
    case CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION: return "runtime_compilation";
    case CUDNN_BEHAVIOR_NOTE_REQUIRES_FILTER_INT8x32_REORDER: return "filter_int8x32_reorder";
    case CUDNN_BEHAVIOR_NOTE_REQUIRES_BIAS_INT8x32_REORDER: return "bias_int8x32_reorder";
    default: return "";  // a note newer than these: named by its number
  }
}

// What the search needs to know of one engine config before building it.
struct ConfigInfo {
  std::string name;
  EngineChoice choice;  // empty when the index could not be read
  std::vector<cudnnBackendNumericalNote_t> numerical;
  std::vector<cudnnBackendBehaviorNote_t> behavior;
  std::string error;  // the engine or its notes could not be read
};

// Reads the engine out of the config (a descriptor-typed attribute is read into a descriptor we
// created, passed by the address of its handle), then its global index, notes and the config's
// knob choices.
ConfigInfo read_config(cudnnBackendDescriptor_t config) {
  ConfigInfo info;
  BackendDescriptor engine_owner =
      make_backend_descriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine");
  cudnnBackendDescriptor_t engine = engine_owner.get();
  int64_t count = 0;
  cudnnStatus_t status = cudnnBackendGetAttribute(
      config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &engine);
  if (status != CUDNN_STATUS_SUCCESS) {
    info.name = "engine ?";
    info.error = "reading CUDNN_ATTR_ENGINECFG_ENGINE: " + status_text(status);
    return info;
  }

  int64_t index = -1;
  status = cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                                    &count, &index);
  std::ostringstream name;
  name << "engine ";
  if (status == CUDNN_STATUS_SUCCESS) {
    name << index;
    info.choice.engine = index;
  } else {
    name << "?";
  }

  // Knob choices are read into descriptors we created, one per possible knob type.
  std::vector<BackendDescriptor> knob_owners;
  std::vector<cudnnBackendDescriptor_t> knobs;
  for (int i = 0; i < CUDNN_KNOB_TYPE_COUNTS; ++i) {
    knob_owners.push_back(make_backend_descriptor(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR, "knob"));
    knobs.push_back(knob_owners.back().get());
  }
  int64_t knob_count = 0;
  if (cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, CUDNN_KNOB_TYPE_COUNTS, &knob_count,
                               knobs.data()) == CUDNN_STATUS_SUCCESS &&
      knob_count > 0) {
    knob_count = std::min<int64_t>(knob_count, CUDNN_KNOB_TYPE_COUNTS);
    name << " (";
    for (int64_t i = 0; i < knob_count; ++i) {
      cudnnBackendKnobType_t type = CUDNN_KNOB_TYPE_COUNTS;
      int64_t value = 0;
      const cudnnBackendDescriptor_t knob = knobs[static_cast<size_t>(i)];
      if (cudnnBackendGetAttribute(knob, CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1,
                                   &count, &type) != CUDNN_STATUS_SUCCESS ||
          cudnnBackendGetAttribute(knob, CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1,
                                   &count, &value) != CUDNN_STATUS_SUCCESS)
        continue;
      name << (i ? " " : "") << "k" << static_cast<int>(type) << "=" << value;
      info.choice.knobs.emplace_back(static_cast<int64_t>(type), value);
    }
    name << ")";
  }

  std::array<cudnnBackendNumericalNote_t, CUDNN_NUMERICAL_NOTE_TYPE_COUNT> numerical{};
  int64_t numerical_count = 0;
  status =
      cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                               CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &numerical_count, numerical.data());
  if (status != CUDNN_STATUS_SUCCESS) {
    info.error = "reading CUDNN_ATTR_ENGINE_NUMERICAL_NOTE: " + status_text(status);
  } else {
    numerical_count = std::min<int64_t>(numerical_count, CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
    info.numerical.assign(numerical.begin(), numerical.begin() + numerical_count);
  }
  std::array<cudnnBackendBehaviorNote_t, CUDNN_BEHAVIOR_NOTE_TYPE_COUNT> behavior{};
  int64_t behavior_count = 0;
  status =
      cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                               CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &behavior_count, behavior.data());
  if (status != CUDNN_STATUS_SUCCESS) {
    if (info.error.empty())
      info.error = "reading CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE: " + status_text(status);
  } else {
    behavior_count = std::min<int64_t>(behavior_count, CUDNN_BEHAVIOR_NOTE_TYPE_COUNT);
    info.behavior.assign(behavior.begin(), behavior.begin() + behavior_count);
  }

  if (!info.numerical.empty() || !info.behavior.empty()) {
    name << " [";
    bool first = true;
    for (auto note : info.numerical) {
      const std::string known = numerical_note_name(note);
      name << (first ? "" : " ")
           << (known.empty() ? detail::concat("numerical_note_", static_cast<int>(note)) : known);
      first = false;
    }
    for (auto note : info.behavior) {
      const std::string known = behavior_note_name(note);
      name << (first ? "" : " ")
           << (known.empty() ? detail::concat("behavior_note_", static_cast<int>(note)) : known);
      first = false;
    }
    name << "]";
  }
  info.name = name.str();
  return info;
}

// Why the problem forbids this engine, or "" when it may be tried.
std::string filter_reason(const ConfigInfo& info, const GraphConvProblem& p) {
  if (!info.error.empty()) return info.error;
  return engine_filter_reason(info.numerical, info.behavior, p);
}

BackendDescriptor make_variant_pack(const std::array<void*, 3>& pointers, void* workspace,
                                    const std::string& context) {
  BackendDescriptor pack =
      make_backend_descriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "variant pack");
  const std::array<int64_t, 3> uids{kUidX, kUidW, kUidY};
  cudnnBackendDescriptor_t v = pack.get();
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(v, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                                              CUDNN_TYPE_INT64, 3, uids.data()),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(v, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                              CUDNN_TYPE_VOID_PTR, 3, pointers.data()),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(v, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                              CUDNN_TYPE_VOID_PTR, 1, &workspace),
                     context);
  PNEUMO_CUDNN_CHECK(cudnnBackendFinalize(v), context);
  return pack;
}

// cuDNN's data pointers are void*; the inputs are only read.
std::array<void*, 3> data_pointers(const void* x, const void* weight, const void* y) {
  return {const_cast<void*>(x), const_cast<void*>(weight), const_cast<void*>(y)};
}

// cudnnBackendExecute runs on the stream bound to the handle; the search binds the caller's
// stream for its duration and puts the previous one back, even when it throws.
class StreamBinding {
 public:
  StreamBinding(cudnnHandle_t handle, cudaStream_t stream, const std::string& context)
      : handle_(handle) {
    PNEUMO_CUDNN_CHECK(cudnnGetStream(handle, &previous_), context);
    PNEUMO_CUDNN_CHECK(cudnnSetStream(handle, stream), context);
  }
  ~StreamBinding() { cudnnSetStream(handle_, previous_); }
  StreamBinding(const StreamBinding&) = delete;
  StreamBinding& operator=(const StreamBinding&) = delete;

 private:
  cudnnHandle_t handle_;
  cudaStream_t previous_ = nullptr;
};

// One warm-up run (first-use costs stay out of the timing, and a refusal shows before the events
// are recorded), then kTimedRuns between two events. Returns "" and sets `ms` to the mean, or why
// the plan did not run. A failed launch inside cuDNN leaves a CUDA error pending; it is cleared
// so that it is not blamed on the next candidate or on the caller's next kernel.
std::string time_plan(cudnnHandle_t handle, cudaStream_t stream, cudnnBackendDescriptor_t plan,
                      cudnnBackendDescriptor_t pack, const std::string& context, float& ms) {
  cudnnStatus_t status = cudnnBackendExecute(handle, plan, pack);
  if (status != CUDNN_STATUS_SUCCESS) {
    cudaGetLastError();
    return "cudnnBackendExecute (warm-up): " + status_text(status);
  }
  const cudaError_t warm = cudaStreamSynchronize(stream);
  if (warm != cudaSuccess) {
    cudaGetLastError();
    return detail::concat("warm-up run: ", cudaGetErrorString(warm));
  }
  Event start = Event::create(), stop = Event::create();
  PNEUMO_CUDA_CHECK(cudaEventRecord(start.get(), stream), context);
  for (int i = 0; i < kTimedRuns && status == CUDNN_STATUS_SUCCESS; ++i)
    status = cudnnBackendExecute(handle, plan, pack);
  PNEUMO_CUDA_CHECK(cudaEventRecord(stop.get(), stream), context);
  PNEUMO_CUDA_CHECK(cudaEventSynchronize(stop.get()), context);
  if (status != CUDNN_STATUS_SUCCESS) {
    cudaGetLastError();
    return "cudnnBackendExecute (timed): " + status_text(status);
  }
  float total = 0;
  PNEUMO_CUDA_CHECK(cudaEventElapsedTime(&total, start.get(), stop.get()), context);
  ms = total / kTimedRuns;
  return "";
}

std::string short_list(const std::vector<GraphConvCandidate>& candidates) {
  if (candidates.empty()) return "none listed";
  std::ostringstream out;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const GraphConvCandidate& c = candidates[i];
    out << (i ? "; " : "") << c.name << ": ";
    if (c.ran)
      out << c.ms << " ms";
    else
      out << c.error;
  }
  return out.str();
}

// search()'s preconditions, checked before any cuDNN call.
void check_search_arguments(cudnnHandle_t handle, cudaStream_t stream, const GraphConvProblem& p,
                            const void* x, const void* weight, const void* y,
                            const std::function<void*(size_t)>& workspace_for, int max_candidates,
                            const std::string& context) {
  PNEUMO_CHECK(p.n > 0 && p.c > 0 && p.h > 0 && p.w > 0 && p.k > 0, context,
               ": every size must be positive");
  PNEUMO_CHECK(p.direction == ConvDirection::Forward ||
                   p.direction == ConvDirection::BackwardData ||
                   p.direction == ConvDirection::BackwardFilter,
               context, ": unknown direction");
  PNEUMO_CHECK(max_candidates > 0, context, ": max_candidates = ", max_candidates);
  PNEUMO_CHECK(static_cast<bool>(workspace_for), context, ": no workspace_for function");
  PNEUMO_CHECK(handle != nullptr, context, ": no cuDNN handle");
  PNEUMO_CHECK(x != nullptr && weight != nullptr && y != nullptr, context, ": a buffer is null");
  const int64_t element = p.bf16_channels_last ? 2 : 4;
  PNEUMO_CHECK(is_aligned(x, element) && is_aligned(weight, element) && is_aligned(y, element),
               context, ": a buffer is not aligned to its ", element, "-byte elements");
  // Timing synchronises the stream, which a capture forbids (and would invalidate).
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  PNEUMO_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture), context);
  PNEUMO_CHECK(capture == cudaStreamCaptureStatusNone, context,
               ": the engine search cannot run while the stream is being captured");
}

// What the heuristics in one mode offer for the graph: engine configs, best first, read into
// descriptors we created. The heuristics descriptor lives beside them while they are read: cuDNN
// does not say whether the configs it filled still refer to it.
struct HeuristicResults {
  BackendDescriptor heuristics;
  std::vector<BackendDescriptor> configs;
  // "; <mode>: <status>" when the mode could not list (configs empty), for the search's final
  // message; "" otherwise.
  std::string error;
};

// A mode with nothing for this graph is not an error of ours; the other mode may still have some.
HeuristicResults heuristic_configs(cudnnBackendDescriptor_t graph, cudnnBackendHeurMode_t mode,
                                   const std::string& context) {
  HeuristicResults results;
  const char* mode_name =
      mode == CUDNN_HEUR_MODE_A ? "CUDNN_HEUR_MODE_A" : "CUDNN_HEUR_MODE_FALLBACK";
  results.heuristics =
      make_backend_descriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "engine heuristics");
  const cudnnBackendDescriptor_t heur = results.heuristics.get();
  PNEUMO_CUDNN_CHECK(set_descriptor(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph), context);
  PNEUMO_CUDNN_CHECK(
      cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode),
      context);
  cudnnStatus_t status = cudnnBackendFinalize(heur);
  int64_t available = 0;
  if (status == CUDNN_STATUS_SUCCESS)
    status = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                      CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &available, nullptr);
  if (status != CUDNN_STATUS_SUCCESS) {
    results.error = detail::concat("; ", mode_name, ": ", status_text(status));
    return results;
  }
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < available; ++i) {
    results.configs.push_back(
        make_backend_descriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config"));
    raw.push_back(results.configs.back().get());
  }
  int64_t returned = 0;
  if (available > 0) {
    status =
        cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, available, &returned, raw.data());
    if (status != CUDNN_STATUS_SUCCESS) {
      results.configs.clear();
      results.error = detail::concat("; ", mode_name, " results: ", status_text(status));
      return results;
    }
  }
  returned = std::min(returned, available);
  results.configs.resize(static_cast<size_t>(returned));  // only those cuDNN filled
  return results;
}

// Every engine config the heuristics listed, once each, as a candidate (with the reason when the
// problem forbids it), and the configs the search will build and time.
struct EngineConfigs {
  std::vector<GraphConvCandidate> candidates;  // in listing order
  std::vector<BackendDescriptor> accepted;     // to build and time, in candidate order
  std::vector<size_t> accepted_candidate;      // index into candidates of each accepted config
  std::string heuristics_errors;               // "; <mode>: <status>" for each mode that failed
};

// Lists the configs: mode A ranks by expected speed; FALLBACK adds engines that A may leave out.
// Configs the problem forbids are listed with the reason but do not count toward max_candidates:
// on Ampere and newer, mode A's first picks for float32 are often TF32 engines, and counting them
// would leave no room for the FP32 ones.
EngineConfigs list_engine_configs(cudnnBackendDescriptor_t graph, const GraphConvProblem& p,
                                  int max_candidates, const std::string& context) {
  EngineConfigs listed;
  int accepted = 0;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    if (accepted >= max_candidates) break;
    HeuristicResults found = heuristic_configs(graph, mode, context);
    if (!found.error.empty()) {
      listed.heuristics_errors += found.error;
      continue;
    }
    for (size_t i = 0; i < found.configs.size() && accepted < max_candidates; ++i) {
      const ConfigInfo info = read_config(found.configs[i].get());
      const bool seen =
          std::any_of(listed.candidates.begin(), listed.candidates.end(),
                      [&](const GraphConvCandidate& c) { return c.name == info.name; });
      if (seen) continue;
      GraphConvCandidate candidate;
      candidate.name = info.name;
      candidate.choice = info.choice;
      candidate.error = filter_reason(info, p);
      listed.candidates.push_back(candidate);
      if (!candidate.error.empty()) continue;
      listed.accepted.push_back(std::move(found.configs[i]));
      listed.accepted_candidate.push_back(listed.candidates.size() - 1);
      ++accepted;
    }
  }
  return listed;
}

// Builds the execution plan of `config` and reads its workspace size into candidate.workspace.
// A config the heuristics listed may still be refused here (not supported on this device or for
// these shapes): returns an empty descriptor with candidate.error saying why, and the search goes
// on without it.
BackendDescriptor build_plan(cudnnHandle_t handle, cudnnBackendDescriptor_t config,
                             const std::string& context, GraphConvCandidate& candidate) {
  BackendDescriptor plan =
      make_backend_descriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan");
  const cudnnBackendDescriptor_t desc = plan.get();
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(desc, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                                              CUDNN_TYPE_HANDLE, 1, &handle),
                     context);
  PNEUMO_CUDNN_CHECK(set_descriptor(desc, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config),
                     context);
  cudnnStatus_t status = cudnnBackendFinalize(desc);
  if (status != CUDNN_STATUS_SUCCESS) {
    candidate.error = "cudnnBackendFinalize(execution plan): " + status_text(status);
    return BackendDescriptor();
  }
  int64_t workspace = 0;
  status = cudnnBackendGetAttribute(desc, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                    CUDNN_TYPE_INT64, 1, nullptr, &workspace);
  if (status != CUDNN_STATUS_SUCCESS || workspace < 0) {
    candidate.error = "reading CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE: " + status_text(status);
    return BackendDescriptor();
  }
  candidate.workspace = static_cast<size_t>(workspace);
  return plan;
}

// Builds one accepted config's plan, fetches its workspace and times it on the search's buffers.
// Returns the plan with candidate.ran and candidate.ms set, or (when the plan is refused, wants
// too much workspace, cannot get it, or fails to run) an empty descriptor with candidate.error
// saying why.
BackendDescriptor build_and_time(cudnnHandle_t handle, cudaStream_t stream,
                                 cudnnBackendDescriptor_t config,
                                 const std::array<void*, 3>& pointers,
                                 const std::function<void*(size_t)>& workspace_for,
                                 size_t max_workspace, const std::string& context,
                                 GraphConvCandidate& candidate) {
  BackendDescriptor plan = build_plan(handle, config, context, candidate);
  if (!plan) return plan;
  if (candidate.workspace > max_workspace) {
    candidate.error = detail::concat("skipped: needs ", candidate.workspace,
                                     " bytes of workspace, over the limit of ", max_workspace);
    return BackendDescriptor();
  }
  void* workspace_ptr = nullptr;
  if (candidate.workspace > 0) {
    try {
      workspace_ptr = workspace_for(candidate.workspace);
    } catch (const OutOfMemory& e) {
      cudaGetLastError();  // the failed cudaMalloc's error must not outlive this candidate
      candidate.error = detail::excerpt(
          detail::concat("workspace of ", candidate.workspace, " bytes: ", e.what()),
          kMaxErrorChars);
      return BackendDescriptor();
    }
    PNEUMO_CHECK(workspace_ptr != nullptr, context, ": workspace_for(", candidate.workspace,
                 ") returned null");
  }
  BackendDescriptor pack = make_variant_pack(pointers, workspace_ptr, context);
  float ms = 0;
  candidate.error = time_plan(handle, stream, plan.get(), pack.get(), context, ms);
  if (!candidate.error.empty()) return BackendDescriptor();
  candidate.ran = true;
  candidate.ms = ms;
  return plan;
}

}  // namespace

BackendDescriptor make_backend_descriptor(cudnnBackendDescriptorType_t type, const char* what) {
  cudnnBackendDescriptor_t descriptor = nullptr;
  PNEUMO_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &descriptor), "creating the ", what,
                     " backend descriptor");
  return BackendDescriptor(descriptor);
}

std::string to_string(ConvDirection d) {
  switch (d) {
    case ConvDirection::Forward: return "forward";
    case ConvDirection::BackwardData: return "backward_data";
    case ConvDirection::BackwardFilter: return "backward_filter";
  }
  return "unknown";
}

std::string engine_filter_reason(const std::vector<cudnnBackendNumericalNote_t>& numerical,
                                 const std::vector<cudnnBackendBehaviorNote_t>& behavior,
                                 const GraphConvProblem& p) {
  auto has = [&](cudnnBackendNumericalNote_t note) {
    return std::find(numerical.begin(), numerical.end(), note) != numerical.end();
  };
  if (has(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS))
    return "filtered out: down-converts its inputs";
  // Partial sums kept in the data type (split-K in bfloat16, say) break the contract's float32
  // accumulation (pneumo/ops/conv2d.hpp), and with it the parity with the CPU emulation.
  if (!p.allow_reduced_precision_reduction &&
      has(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION))
    return "filtered out: reduces in less than float32";
  if (!p.allow_tf32 && !p.bf16_channels_last && has(CUDNN_NUMERICAL_NOTE_TENSOR_CORE))
    return "filtered out: tensor cores (TF32 for float32 data) and allow_tf32 is false";
  if (p.deterministic && has(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC))
    return "filtered out: non-deterministic and deterministic is true";
  if (std::find(behavior.begin(), behavior.end(), CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) !=
      behavior.end())
    return "skipped: needs runtime compilation";
  return "";
}

GraphConvPlan GraphConvPlan::search(cudnnHandle_t handle, cudaStream_t stream,
                                    const GraphConvProblem& p, const void* x, const void* weight,
                                    const void* y, std::function<void*(size_t)> workspace_for,
                                    size_t max_workspace, int max_candidates) {
  const std::string context = describe(p);
  check_search_arguments(handle, stream, p, x, weight, y, workspace_for, max_candidates, context);

  GraphConvPlan result;
  result.problem_ = p;
  result.alignment_ = {promised_alignment(x), promised_alignment(weight), promised_alignment(y)};
  std::vector<BackendDescriptor> parts = build_graph(handle, p, result.alignment_, context);
  const cudnnBackendDescriptor_t graph = parts.back().get();
  StreamBinding binding(handle, stream, context);

  EngineConfigs listed = list_engine_configs(graph, p, max_candidates, context);
  result.candidates_ = std::move(listed.candidates);

  // Time every accepted config; keep the fastest plan (the first of equals).
  const std::array<void*, 3> pointers = data_pointers(x, weight, y);
  int best = -1;  // index into listed.accepted
  BackendDescriptor best_plan;
  for (size_t i = 0; i < listed.accepted.size(); ++i) {
    GraphConvCandidate& candidate = result.candidates_[listed.accepted_candidate[i]];
    BackendDescriptor plan = build_and_time(handle, stream, listed.accepted[i].get(), pointers,
                                            workspace_for, max_workspace, context, candidate);
    if (!candidate.ran) continue;
    if (best < 0 || candidate.ms < result.best_ms_) {
      best = static_cast<int>(i);
      best_plan = std::move(plan);
      result.best_ms_ = candidate.ms;
      result.best_name_ = candidate.name;
      result.workspace_ = candidate.workspace;
      result.choice_ = candidate.choice;
    }
  }

  PNEUMO_CHECK(best >= 0, context,
               ": no cuDNN graph engine config ran; candidates: ", short_list(result.candidates_),
               listed.heuristics_errors);
  parts.push_back(std::move(listed.accepted[static_cast<size_t>(best)]));
  result.graph_parts_ = std::move(parts);
  result.plan_ = std::move(best_plan);
  return result;
}

GraphConvPlan GraphConvPlan::build(cudnnHandle_t handle, const GraphConvProblem& p,
                                   const EngineChoice& choice, const void* x, const void* weight,
                                   const void* y) {
  const std::string context = describe(p);
  PNEUMO_CHECK(!choice.empty(), context, ": no engine to build");
  PNEUMO_CHECK(handle != nullptr, context, ": no cuDNN handle");
  PNEUMO_CHECK(x != nullptr && weight != nullptr && y != nullptr, context, ": a buffer is null");
  GraphConvPlan result;
  result.problem_ = p;
  result.alignment_ = {promised_alignment(x), promised_alignment(weight), promised_alignment(y)};
  std::vector<BackendDescriptor> parts = build_graph(handle, p, result.alignment_, context);
  const cudnnBackendDescriptor_t graph = parts.back().get();
  const std::string what = detail::concat(context, ": engine ", choice.engine);

  // The engine: the graph and its global index.
  parts.push_back(make_backend_descriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine"));
  const cudnnBackendDescriptor_t engine = parts.back().get();
  PNEUMO_CUDNN_CHECK(set_descriptor(engine, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, graph), what);
  PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX,
                                              CUDNN_TYPE_INT64, 1, &choice.engine),
                     what);
  PNEUMO_CUDNN_CHECK(cudnnBackendFinalize(engine), what);
  // Its knob choices, one descriptor each.
  std::vector<cudnnBackendDescriptor_t> knobs;
  for (const auto& [type_number, value] : choice.knobs) {
    parts.push_back(make_backend_descriptor(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR, "knob choice"));
    const cudnnBackendDescriptor_t knob = parts.back().get();
    const auto type = static_cast<cudnnBackendKnobType_t>(type_number);
    PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(knob, CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE,
                                                CUDNN_TYPE_KNOB_TYPE, 1, &type),
                       what);
    PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(knob, CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE,
                                                CUDNN_TYPE_INT64, 1, &value),
                       what);
    PNEUMO_CUDNN_CHECK(cudnnBackendFinalize(knob), what);
    knobs.push_back(knob);
  }
  // The config, then the plan (build_plan reads its workspace size).
  parts.push_back(make_backend_descriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config"));
  const cudnnBackendDescriptor_t config = parts.back().get();
  PNEUMO_CUDNN_CHECK(set_descriptor(config, CUDNN_ATTR_ENGINECFG_ENGINE, engine), what);
  if (!knobs.empty())
    PNEUMO_CUDNN_CHECK(cudnnBackendSetAttribute(config, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES,
                                                CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                                static_cast<int64_t>(knobs.size()), knobs.data()),
                       what);
  PNEUMO_CUDNN_CHECK(cudnnBackendFinalize(config), what);
  // A remembered engine meets the search's rules too (a file from before a rule, or edited).
  const ConfigInfo info = read_config(config);
  const std::string refused = filter_reason(info, p);
  PNEUMO_CHECK(refused.empty(), what, " (", info.name, "): ", refused);
  GraphConvCandidate candidate;
  candidate.name = info.name;
  candidate.choice = choice;
  BackendDescriptor plan = build_plan(handle, config, what, candidate);
  PNEUMO_CHECK(static_cast<bool>(plan), what, ": ", candidate.error);
  result.workspace_ = candidate.workspace;
  result.best_name_ = candidate.name;
  result.choice_ = choice;
  result.candidates_ = {candidate};
  result.graph_parts_ = std::move(parts);
  result.plan_ = std::move(plan);
  return result;
}

nlohmann::json to_json(const EngineChoice& choice) {
  nlohmann::json knobs = nlohmann::json::array();
  for (const auto& [type, value] : choice.knobs) knobs.push_back({type, value});
  return {{"engine", choice.engine}, {"knobs", knobs}};
}

bool parse_engine_choice(const nlohmann::json& json, EngineChoice& choice) {
  choice = EngineChoice{};
  if (!json.is_object() || !json.contains("engine") || !json["engine"].is_number_integer() ||
      json["engine"].get<int64_t>() < 0)
    return false;
  EngineChoice parsed;
  parsed.engine = json["engine"].get<int64_t>();
  if (json.contains("knobs")) {
    const nlohmann::json& knobs = json["knobs"];
    if (!knobs.is_array()) return false;
    for (const nlohmann::json& knob : knobs) {
      if (!knob.is_array() || knob.size() != 2 || !knob[0].is_number_integer() ||
          !knob[1].is_number_integer() || knob[0].get<int64_t>() < 0 ||
          knob[0].get<int64_t>() >= CUDNN_KNOB_TYPE_COUNTS)
        return false;
      parsed.knobs.emplace_back(knob[0].get<int64_t>(), knob[1].get<int64_t>());
    }
  }
  choice = parsed;
  return true;
}

void GraphConvPlan::execute(cudnnHandle_t handle, const void* x, const void* weight,
                            const void* y, void* workspace) const {
  PNEUMO_CHECK(static_cast<bool>(plan_), "GraphConvPlan::execute: the plan is empty (no search)");
  const std::string context = describe(problem_);
  PNEUMO_CHECK(x != nullptr && weight != nullptr && y != nullptr, context, ": a buffer is null");
  PNEUMO_CHECK(workspace != nullptr || workspace_ == 0, context, ": the plan needs ", workspace_,
               " bytes of workspace and got none");
  const std::array<const void*, 3> buffers{x, weight, y};
  const char* names[3] = {"x", "weight", "y"};
  for (size_t i = 0; i < buffers.size(); ++i)
    PNEUMO_CHECK(is_aligned(buffers[i], alignment_[i]), context, ": ", names[i], " at ", buffers[i],
                 " is not ", alignment_[i],
                 "-byte aligned as the buffer searched with was; search again for this buffer");
  BackendDescriptor pack = make_variant_pack(data_pointers(x, weight, y), workspace, context);
  const cudnnStatus_t status = cudnnBackendExecute(handle, plan_.get(), pack.get());
  if (status != CUDNN_STATUS_SUCCESS) {
    cudaGetLastError();  // the error is reported here; it must not be blamed on a later kernel
    throw_cudnn_error(status, "cudnnBackendExecute", __FILE__, __LINE__,
                      detail::concat(context, " with ", best_name_));
  }
}

}  // namespace pneumo::cuda
