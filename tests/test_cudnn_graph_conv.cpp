// GraphConvPlan (src/cuda/cudnn_graph_conv.hpp) against the CPU backend's convolutions: for each
// direction, on an awkward shape and the model's conv2 shape, the engine search runs on device
// buffers, the kept plan's output matches the CPU op, and the search's report is consistent.
// GPU tests skip without a CUDA device; the output buffer starts as NaN so a missed write fails.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/cuda_raii.hpp"
#include "cuda/cudnn_graph_conv.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using cuda::ConvDirection;
using cuda::GraphConvCandidate;
using cuda::GraphConvPlan;
using cuda::GraphConvProblem;
using testing::random_values;
using testing::to_host;

// |a - e| <= atol + rtol |e| with atol = rtol * max|e|: entries that cancel to near zero are judged
// against the tensor's scale (the tolerance rule of test_backend_parity.cpp).
::testing::AssertionResult matches_cpu(ConstTensorView actual, ConstTensorView expected,
                                       double rtol, const std::string& what) {
  double scale = 0;
  for (float v : to_host(expected)) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  return testing::all_close(actual, expected, rtol * std::max(scale, 1e-20), rtol, what);
}

struct GraphConvCase {
  int64_t n, c, h, w, k;
  ConvDirection direction;
};
void PrintTo(const GraphConvCase& p, std::ostream* os) {
  *os << cuda::to_string(p.direction) << " x (" << p.n << ", " << p.c << ", " << p.h << ", " << p.w
      << ") -> K=" << p.k;
}
std::string case_name(const ::testing::TestParamInfo<GraphConvCase>& info) {
  const GraphConvCase& p = info.param;
  std::ostringstream out;
  out << cuda::to_string(p.direction) << "_n" << p.n << "_c" << p.c << "_" << p.h << "x" << p.w
      << "_k" << p.k;
  return out.str();
}

class GraphConvSearch : public ::testing::TestWithParam<GraphConvCase> {};

TEST_P(GraphConvSearch, KeptPlanMatchesTheCpuAndIsTheFastestThatRan) {
  PNEUMO_REQUIRE_CUDA();
  const GraphConvCase& c = GetParam();
  const Shape x_shape{c.n, c.c, c.h, c.w}, w_shape{c.k, c.c, 3, 3}, y_shape{c.n, c.k, c.h, c.w};
  // Weights scaled by 1/sqrt(fan_in) keep outputs of order one.
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.c * 9));
  const std::vector<float> x_values = random_values(x_shape.numel(), 11);
  const std::vector<float> w_values = random_values(w_shape.numel(), 12, -scale, scale);
  const std::vector<float> dy_values = random_values(y_shape.numel(), 13);

  // The CPU reference for this direction, and the shape of the buffer the plan writes.
  std::unique_ptr<Backend> cpu = make_cpu_backend(0);
  const Tensor x_cpu = Tensor::from_host(x_shape, x_values.data(), Device::Cpu);
  const Tensor w_cpu = Tensor::from_host(w_shape, w_values.data(), Device::Cpu);
  const Tensor dy_cpu = Tensor::from_host(y_shape, dy_values.data(), Device::Cpu);
  Tensor expected;
  double rtol = 1e-4;
  switch (c.direction) {
    case ConvDirection::Forward: {
      expected = Tensor::zeros(y_shape, Device::Cpu);
      const Tensor bias = Tensor::zeros({c.k}, Device::Cpu);
      cpu->conv2d_forward(x_cpu, w_cpu, bias, expected, false);
      break;
    }
    case ConvDirection::BackwardData:
      expected = Tensor::zeros(x_shape, Device::Cpu);
      cpu->conv2d_backward_data(dy_cpu, w_cpu, expected);
      break;
    case ConvDirection::BackwardFilter: {
      expected = Tensor::zeros(w_shape, Device::Cpu);
      Tensor dbias = Tensor::zeros({c.k}, Device::Cpu);
      cpu->conv2d_backward_filter(x_cpu, dy_cpu, expected, dbias);
      rtol = 2e-4;  // sums over N*H*W
      break;
    }
  }

  // Device buffers: the inputs of this direction hold the values, its output holds NaN.
  const std::vector<float> nan_values(static_cast<size_t>(expected.numel()),
                                      std::numeric_limits<float>::quiet_NaN());
  const ConstTensorView nan_view(nan_values.data(), expected.shape(), Device::Cpu);
  auto device_buffer = [&](const Shape& shape, const std::vector<float>& values, bool is_output) {
    return is_output ? Tensor::from_host(shape, nan_values.data(), Device::Cuda)
                     : Tensor::from_host(shape, values.data(), Device::Cuda);
  };
  Tensor x = device_buffer(x_shape, x_values, c.direction == ConvDirection::BackwardData);
  Tensor w = device_buffer(w_shape, w_values, c.direction == ConvDirection::BackwardFilter);
  Tensor y = device_buffer(y_shape, dy_values, c.direction == ConvDirection::Forward);
  Tensor& output = c.direction == ConvDirection::Forward        ? y
                   : c.direction == ConvDirection::BackwardData ? x
                                                                : w;

  cuda::CudnnHandle handle = cuda::CudnnHandle::create();
  cuda::Stream stream = cuda::Stream::create();
  ASSERT_EQ(cudnnSetStream(handle.get(), stream.get()), CUDNN_STATUS_SUCCESS);
  Array<uint8_t> workspace;
  auto workspace_for = [&](size_t bytes) -> void* {
    if (bytes > workspace.bytes()) {
      EXPECT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
      workspace = Array<uint8_t>();
      workspace = Array<uint8_t>(static_cast<int64_t>(bytes), Device::Cuda);
    }
    return workspace.data();
  };

  GraphConvProblem problem;
  problem.n = c.n;
  problem.c = c.c;
  problem.h = c.h;
  problem.w = c.w;
  problem.k = c.k;
  problem.direction = c.direction;
  problem.allow_tf32 = false;
  problem.deterministic = true;
  constexpr size_t kMaxWorkspace = size_t{256} << 20;
  GraphConvPlan plan = GraphConvPlan::search(handle.get(), stream.get(), problem, x.data(),
                                             w.data(), y.data(), workspace_for, kMaxWorkspace);

  // The search wrote the output many times; start again from NaN so only execute() counts.
  output.copy_from(nan_view);
  void* workspace_ptr =
      plan.workspace_bytes() > 0 ? workspace_for(plan.workspace_bytes()) : nullptr;
  plan.execute(handle.get(), x.data(), w.data(), y.data(), workspace_ptr);
  ASSERT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
  EXPECT_TRUE(matches_cpu(output, expected, rtol, cuda::to_string(c.direction) + " output"))
      << "kept " << plan.best_name();

  // The kept config built again from its numbers (what the tuning cache stores) runs the same
  // engine and gives the same bits.
  ASSERT_FALSE(plan.engine_choice().empty()) << plan.best_name();
  const std::vector<float> first = to_host(output);
  GraphConvPlan rebuilt = GraphConvPlan::build(handle.get(), problem, plan.engine_choice(),
                                               x.data(), w.data(), y.data());
  EXPECT_EQ(rebuilt.best_name(), plan.best_name());
  output.copy_from(nan_view);
  void* rebuilt_workspace =
      rebuilt.workspace_bytes() > 0 ? workspace_for(rebuilt.workspace_bytes()) : nullptr;
  rebuilt.execute(handle.get(), x.data(), w.data(), y.data(), rebuilt_workspace);
  ASSERT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
  EXPECT_EQ(to_host(output), first) << "rebuilt " << rebuilt.best_name();

  // The report: something ran, the kept one is the fastest that ran, and its notes (in its name)
  // respect the problem (no TF32, no down-conversion, deterministic).
  EXPECT_GT(plan.best_ms(), 0.0f);
  EXPECT_LE(plan.workspace_bytes(), kMaxWorkspace);
  const std::vector<GraphConvCandidate>& candidates = plan.candidates();
  int ran = 0;
  float fastest = std::numeric_limits<float>::infinity();
  for (const GraphConvCandidate& candidate : candidates) {
    if (!candidate.ran) {
      EXPECT_FALSE(candidate.error.empty()) << candidate.name << " did not run and says not why";
      continue;
    }
    ++ran;
    fastest = std::min(fastest, candidate.ms);
    EXPECT_GT(candidate.ms, 0.0f) << candidate.name;
  }
  EXPECT_GE(ran, 1);
  EXPECT_EQ(plan.best_ms(), fastest);
  const auto kept =
      std::find_if(candidates.begin(), candidates.end(), [&](const GraphConvCandidate& candidate) {
        return candidate.ran && candidate.name == plan.best_name();
      });
  ASSERT_NE(kept, candidates.end()) << plan.best_name() << " is not among the candidates that ran";
  EXPECT_EQ(kept->ms, plan.best_ms());
  EXPECT_EQ(kept->workspace, plan.workspace_bytes());
  for (const char* note :
       {"nondeterministic", "tensor_core", "down_convert_inputs", "reduced_precision_reduction",
        "runtime_compilation"})
    EXPECT_EQ(plan.best_name().find(note), std::string::npos)
        << "kept " << plan.best_name() << " although the problem forbids " << note;
  EXPECT_EQ(plan.problem().direction, c.direction);
  // For the log of a GPU run: what the search kept and how many it tried.
  std::cout << "[ graph conv ] " << case_name(::testing::TestParamInfo<GraphConvCase>(c, 0))
            << ": kept " << plan.best_name() << " (" << plan.best_ms() << " ms, "
            << plan.workspace_bytes() << " B workspace); " << ran << " of " << candidates.size()
            << " listed configs ran\n";
  // Why the others did not: each reason up to its parenthesised detail, with a count.
  std::map<std::string, int> reasons;
  for (const GraphConvCandidate& candidate : candidates)
    if (!candidate.ran) ++reasons[candidate.error.substr(0, candidate.error.find(" ("))];
  for (const auto& [reason, count] : reasons)
    std::cout << "[ graph conv ]   " << count << " x " << reason << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GraphConvSearch,
    ::testing::Values(GraphConvCase{2, 3, 7, 5, 4, ConvDirection::Forward},
                      GraphConvCase{2, 3, 7, 5, 4, ConvDirection::BackwardData},
                      GraphConvCase{2, 3, 7, 5, 4, ConvDirection::BackwardFilter},
                      GraphConvCase{2, 32, 75, 75, 64, ConvDirection::Forward},
                      GraphConvCase{2, 32, 75, 75, 64, ConvDirection::BackwardData},
                      GraphConvCase{2, 32, 75, 75, 64, ConvDirection::BackwardFilter}),
    case_name);

// Host-side checks that need no device: names, and a bad problem refused before any cuDNN call.
TEST(GraphConvNames, DirectionsHaveStableNames) {
  EXPECT_EQ(cuda::to_string(ConvDirection::Forward), "forward");
  EXPECT_EQ(cuda::to_string(ConvDirection::BackwardData), "backward_data");
  EXPECT_EQ(cuda::to_string(ConvDirection::BackwardFilter), "backward_filter");
}

TEST(GraphConvNames, EmptyPlanRefusesToExecuteAndBadProblemsAreRefused) {
  const GraphConvPlan empty;
  float buffer[4] = {0, 0, 0, 0};
  EXPECT_THROW(empty.execute(nullptr, buffer, buffer, buffer, nullptr), Error);
  GraphConvProblem problem;
  problem.n = 0;
  problem.c = problem.h = problem.w = problem.k = 1;
  problem.direction = ConvDirection::Forward;
  try {
    GraphConvPlan::search(
        nullptr, nullptr, problem, buffer, buffer, buffer, [](size_t) -> void* { return nullptr; },
        0);
    FAIL() << "a zero batch was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x (0, 1, 1, 1)"), std::string::npos) << e.what();
  }
}

// The search's filter rules, from an engine's notes alone (no device needed).
TEST(GraphConvFilter, EachRuleRefusesItsNoteAndOnlyThat) {
  using Notes = std::vector<cudnnBackendNumericalNote_t>;
  using Behaviour = std::vector<cudnnBackendBehaviorNote_t>;
  GraphConvProblem fp32;  // the defaults: float32, no TF32, deterministic, float32 sums
  GraphConvProblem bf16 = fp32;
  bf16.bf16_channels_last = true;
  auto reason = [](const Notes& n, const GraphConvProblem& p, const Behaviour& b = {}) {
    return cuda::engine_filter_reason(n, b, p);
  };
  auto refused = [&](const Notes& n, const GraphConvProblem& p, const char* why,
                     const Behaviour& b = {}) {
    return reason(n, p, b).find(why) != std::string::npos;
  };
  EXPECT_EQ(reason({}, fp32), "");
  EXPECT_EQ(reason({CUDNN_NUMERICAL_NOTE_WINOGRAD}, fp32), "");
  EXPECT_TRUE(refused({CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS}, bf16, "down-converts"));
  // Tensor cores: TF32 for float32 data unless allowed; what bf16 is for.
  EXPECT_TRUE(refused({CUDNN_NUMERICAL_NOTE_TENSOR_CORE}, fp32, "tensor cores"));
  GraphConvProblem tf32 = fp32;
  tf32.allow_tf32 = true;
  EXPECT_EQ(reason({CUDNN_NUMERICAL_NOTE_TENSOR_CORE}, tf32), "");
  EXPECT_EQ(reason({CUDNN_NUMERICAL_NOTE_TENSOR_CORE}, bf16), "");
  // Reduced-precision sums: refused unless the bf16 path's last resort allows them.
  const Notes reduced{CUDNN_NUMERICAL_NOTE_TENSOR_CORE,
                      CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION};
  EXPECT_TRUE(refused(reduced, bf16, "less than float32"));
  GraphConvProblem relaxed = bf16;
  relaxed.allow_reduced_precision_reduction = true;
  EXPECT_EQ(reason(reduced, relaxed), "");
  // Determinism: refused while deterministic, whatever else is relaxed.
  const Notes racy{CUDNN_NUMERICAL_NOTE_TENSOR_CORE, CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC};
  EXPECT_TRUE(refused(racy, relaxed, "non-deterministic"));
  relaxed.deterministic = false;
  EXPECT_EQ(reason(racy, relaxed), "");
  // Runtime compilation is never tried, however relaxed the rest.
  EXPECT_TRUE(
      refused({}, relaxed, "runtime compilation", {CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION}));
}

TEST(EngineChoice, JsonRoundTripAndRefusals) {
  cuda::EngineChoice choice;
  choice.engine = 7;
  choice.knobs = {{2, 1}, {13, 0}};
  const nlohmann::json json = cuda::to_json(choice);
  EXPECT_EQ(json.dump(), R"({"engine":7,"knobs":[[2,1],[13,0]]})");
  cuda::EngineChoice parsed;
  ASSERT_TRUE(cuda::parse_engine_choice(json, parsed));
  EXPECT_EQ(parsed.engine, 7);
  EXPECT_EQ(parsed.knobs, choice.knobs);
  // No knobs is a valid config (the engine's defaults).
  ASSERT_TRUE(cuda::parse_engine_choice(nlohmann::json{{"engine", 0}}, parsed));
  EXPECT_TRUE(parsed.knobs.empty());
  // What a damaged or foreign cache file may hold: refused, and the choice left empty.
  for (const char* text :
       {R"({"algo":3})", R"({"engine":-1})", R"({"engine":"7"})", R"({"engine":7,"knobs":3})",
        R"({"engine":7,"knobs":[[2]]})", R"({"engine":7,"knobs":[[2,"1"]]})",
        R"({"engine":7,"knobs":[[-1,1]]})", R"({"engine":7,"knobs":[[100000,1]]})", "[7]"}) {
    parsed.engine = 5;
    EXPECT_FALSE(cuda::parse_engine_choice(nlohmann::json::parse(text), parsed)) << text;
    EXPECT_TRUE(parsed.empty()) << text;
  }
}

}  // namespace
}  // namespace pneumo
