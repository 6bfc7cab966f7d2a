// Backend selection: --device auto|cpu|cuda.
#include <iostream>

#include "pneumo/backend.hpp"

#include <nlohmann/json.hpp>
#include "pneumo/error.hpp"

namespace pneumo {

nlohmann::json Backend::report(int /*batch*/) const { return nlohmann::json::object(); }

DeviceChoice parse_device_choice(const std::string& text) {
  if (text == "auto") return DeviceChoice::Auto;
  if (text == "cpu") return DeviceChoice::Cpu;
  if (text == "cuda") return DeviceChoice::Cuda;
  throw Error("unknown device '" + text + "': expected auto, cpu or cuda");
}

std::unique_ptr<Backend> make_backend(const BackendOptions& options) {
  switch (options.device) {
    case DeviceChoice::Cpu:
      return make_cpu_backend(options.cpu_threads);
    case DeviceChoice::Cuda:
      if (!cuda_device_available())
        throw Error("--device cuda: no CUDA device is visible on this machine (no GPU, or no "
                    "driver); use --device cpu or --device auto");
      return make_cuda_backend(options.allow_tf32, options.deterministic, options.cudnn_only,
                             options.graph_engines);
    case DeviceChoice::Auto:
      break;
  }
  if (cuda_device_available())
    return make_cuda_backend(options.allow_tf32, options.deterministic, options.cudnn_only,
                             options.graph_engines);
  std::cerr << "pneumo: no CUDA device found, running on the CPU backend\n";
  return make_cpu_backend(options.cpu_threads);
}

}  // namespace pneumo
