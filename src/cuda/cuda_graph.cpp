// CudaBackend::record: the ops issued on the backend's stream captured as one CUDA graph, then
// instantiated once and replayed with one launch (Backend::record, Trainer::use_step_graphs).
#include <cuda_runtime_api.h>

#include <memory>

#include "cuda/cuda_backend.hpp"
#include "cuda_check.hpp"

namespace pneumo {
namespace {

class GraphRecording final : public Recording {
 public:
  // generation: the backend's count of reallocations, read at every current().
  GraphRecording(cudaGraphExec_t exec, cudaStream_t stream, const uint64_t& generation)
      : exec_(exec), stream_(stream), generation_(generation), recorded_at_(generation) {}
  ~GraphRecording() override { cudaGraphExecDestroy(exec_); }
  GraphRecording(const GraphRecording&) = delete;
  GraphRecording& operator=(const GraphRecording&) = delete;

  void replay() override {
    PNEUMO_CUDA_CHECK(cudaGraphLaunch(exec_, stream_), "replaying a recorded step (CUDA graph)");
  }
  bool current() const override { return generation_ == recorded_at_; }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
  const uint64_t& generation_;
  uint64_t recorded_at_;
};

// Ends a capture that `issue` left open by throwing, so the stream can take ordinary work again.
void abandon_capture(cudaStream_t stream) {
  cudaGraph_t partial = nullptr;
  cudaStreamEndCapture(stream, &partial);
  if (partial) cudaGraphDestroy(partial);
  cudaGetLastError();  // a capture's error is not sticky; clear it for the next launch check
}

}  // namespace

std::unique_ptr<Recording> CudaBackend::record(const std::function<void()>& issue) {
  cudaStream_t stream = stream_.get();
  const uint64_t generation = memory_generation_;
  // Relaxed: queries the libraries and our ops make while issuing (pointer attributes, handles)
  // stay legal; what cannot be recorded (synchronising the stream, which growing a workspace or a
  // first call's timing does) still fails the capture, caught below.
  PNEUMO_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed),
                    "starting to record a step (CUDA graph)");
  try {
    issue();
  } catch (...) {
    abandon_capture(stream);
    throw;
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (ended != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    // Cleared as abandon_capture does: the trainer falls back to running the step op by op, whose
    // first launch check would otherwise report this error as its own.
    cudaGetLastError();
    PNEUMO_CUDA_CHECK(ended,
                      "recording a step (CUDA graph): an op synchronised or allocated while being "
                      "recorded; run each op once at these shapes before recording");
  }
  if (memory_generation_ != generation) {
    cudaGraphDestroy(graph);
    throw Error("recording a step (CUDA graph): the workspace grew while recording");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (instantiated != cudaSuccess) cudaGetLastError();  // as above: the fallback starts clean
  PNEUMO_CUDA_CHECK(instantiated, "instantiating a recorded step (CUDA graph)");
  return std::make_unique<GraphRecording>(exec, stream, memory_generation_);
}

}  // namespace pneumo
