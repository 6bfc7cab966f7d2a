// The tuner (see chooser.hpp): time, compare, decide, run.
#include "cuda/chooser.hpp"

#include <algorithm>
#include <cmath>
#include <iostream>

#include "cuda/cuda_raii.hpp"
#include "cuda_check.hpp"
#include "pneumo/error.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::cuda {

std::string output_disagreement(const std::vector<float>& expected,
                                const std::vector<float>& actual, const char* name) {
  if (expected.size() != actual.size())
    return detail::concat(name, ": ", expected.size(), " values from cuDNN, ", actual.size(),
                          " from ours");
  double largest = 0.0;
  for (float v : expected) largest = std::max(largest, std::fabs(static_cast<double>(v)));
  const double tolerance = 1e-3 * largest;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double difference = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    if (!(difference <= tolerance))  // NaN on either side fails, as does a NaN tolerance
      return detail::concat(name, "[", i, "]: cuDNN ", expected[i], ", ours ", actual[i],
                            " (tolerance ", tolerance, ")");
  }
  return "";
}

float Chooser::mean_ms(const Candidate& candidate) {
  constexpr int kRuns = 5;
  candidate(
      Run::Trial);  // warm-up: first-use costs (module loading, cuDNN's fusion probe) stay out
  cuda::Event start = cuda::Event::create(), stop = cuda::Event::create();
  PNEUMO_CUDA_CHECK(cudaEventRecord(start.get(), stream_), "timing an implementation");
  for (int i = 0; i < kRuns; ++i) candidate(Run::Trial);
  PNEUMO_CUDA_CHECK(cudaEventRecord(stop.get(), stream_), "timing an implementation");
  PNEUMO_CUDA_CHECK(cudaEventSynchronize(stop.get()), "timing an implementation");
  float ms = 0;
  PNEUMO_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()), "timing an implementation");
  return ms / kRuns;
}

TuningCache::Hit Chooser::recall(Choice& choice) {
  if (!cache_ || choice.key.empty()) return {};
  const TuningCache::Hit hit = cache_->find(choice.key);
  if (!hit.decision || !hit.decision->contains("kernel") || !(*hit.decision)["kernel"].is_boolean())
    return {};
  const nlohmann::json& decision = *hit.decision;
  choice.kernel = decision["kernel"].get<bool>();
  choice.cudnn_ms = number_field(decision, "cudnn_ms", -1.0f);
  choice.kernel_ms = number_field(decision, "kernel_ms", -1.0f);
  choice.rejected = text_field(decision, "rejected");
  const int64_t checked_at = static_cast<int64_t>(number_field(decision, "timed_at_batch", -1.0f));
  choice.source = !hit.exact()     ? detail::concat("cache (batch ", hit.batch, ")")
                  : checked_at > 0 ? detail::concat("cache (timed at batch ", checked_at, ")")
                                   : "cache";
  return hit;
}

void Chooser::check_recalled(Choice& choice, const Candidate& cudnn, const Candidate& kernel,
                             const std::vector<Output>& outputs, int64_t batch) {
  if (choice.kernel) {
    choice.rejected = disagreement(cudnn, kernel, outputs);
    if (!choice.rejected.empty()) {
      choice.kernel = false;
      std::cerr << "pneumo: warning: our kernel, kept at batch " << batch
                << ", disagreed with cuDNN at a batch of " << choice.key.shape[0] << " ("
                << choice.rejected << "); cuDNN runs this op at that batch\n";
    }
  }
  // Stored for this batch, so that the next run recalls it exactly and compares nothing.
  cache_->store(choice.key, {{"kernel", choice.kernel},
                             {"cudnn_ms", choice.cudnn_ms},
                             {"kernel_ms", choice.kernel_ms},
                             {"rejected", choice.rejected},
                             {"timed_at_batch", batch}});
}

void Chooser::decide(Choice& choice, Implementation option, const Candidate& cudnn,
                     const Candidate& kernel, const std::vector<Output>& outputs) {
  if (choice.decided) return;
  if (option != Implementation::Fastest) {
    choice.kernel = option == Implementation::Kernel;
    choice.source = "forced";
  } else if (const TuningCache::Hit hit = recall(choice); hit.decision) {
    // A decision made at a larger batch has never seen this shape: before our kernel runs on it,
    // its output is compared with cuDNN's once (not timed).
    if (!hit.exact()) check_recalled(choice, cudnn, kernel, outputs, hit.batch);
  } else {
    choice.cudnn_ms = mean_ms(cudnn);
    choice.kernel_ms = mean_ms(kernel);
    choice.kernel = choice.kernel_ms < choice.cudnn_ms;
    if (choice.kernel) choice.rejected = disagreement(cudnn, kernel, outputs);
    if (!choice.rejected.empty()) {
      choice.kernel = false;
      std::cerr << "pneumo: warning: our kernel was faster than cuDNN but disagreed with it ("
                << choice.rejected << "); cuDNN runs this op\n";
    }
    choice.source = "timed";
    if (cache_ && !choice.key.empty())
      cache_->store(choice.key, {{"kernel", choice.kernel},
                                 {"cudnn_ms", choice.cudnn_ms},
                                 {"kernel_ms", choice.kernel_ms},
                                 {"rejected", choice.rejected}});
  }
  choice.decided = true;
}

void Chooser::run(Choice& choice, Implementation option, const Candidate& cudnn,
                  const Candidate& kernel, const std::vector<Output>& outputs) {
  decide(choice, option, cudnn, kernel, outputs);
  (choice.kernel ? kernel : cudnn)(Run::Kept);
}

void Chooser::run(Choice& choice, Implementation option, const std::function<void()>& cudnn,
                  const std::function<void()>& kernel, const std::vector<Output>& outputs) {
  run(choice, option, Candidate([&cudnn](Run) { cudnn(); }),
      Candidate([&kernel](Run) { kernel(); }), outputs);
}

std::string Chooser::disagreement(const Candidate& cudnn, const Candidate& kernel,
                                  const std::vector<Output>& outputs) {
  // Large outputs are compared on their first and last 2^20 values (first and last images, edges
  // and all), each part on its own so that a message's index is the tensor's, without copying
  // hundreds of MB to the host on the first step.
  constexpr int64_t kEnd = int64_t{1} << 20;
  struct Part {
    const float* data;
    int64_t count;
    std::string name;  // the tail's index i is element tail + i of the output
  };
  std::vector<Part> parts;
  for (const Output& out : outputs) {
    if (out.count <= 2 * kEnd) {
      parts.push_back({out.data, out.count, out.name});
    } else {
      const int64_t tail = out.count - kEnd;
      parts.push_back({out.data, kEnd, out.name});
      parts.push_back(
          {out.data + tail, kEnd, detail::concat(out.name, " (from element ", tail, ")")});
    }
  }
  auto download = [&] {
    std::vector<std::vector<float>> values;
    if (parts.empty()) return values;  // nothing to compare (and no device to wait for)
    PNEUMO_CUDA_CHECK(cudaStreamSynchronize(stream_), "comparing our kernel with cuDNN");
    for (const Part& part : parts) {
      std::vector<float>& v = values.emplace_back(static_cast<size_t>(part.count));
      copy_bytes(v.data(), Device::Cpu, part.data, Device::Cuda, v.size() * sizeof(float));
    }
    return values;
  };
  cudnn(Run::Trial);
  const std::vector<std::vector<float>> expected = download();
  kernel(Run::Trial);
  const std::vector<std::vector<float>> actual = download();
  for (size_t k = 0; k < parts.size(); ++k) {
    std::string why = output_disagreement(expected[k], actual[k], parts[k].name.c_str());
    if (!why.empty()) return why;
  }
  return "";
}

}  // namespace pneumo::cuda
