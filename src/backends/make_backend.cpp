// Backend selection (--device auto|cpu|cuda): the one place that knows both backends, so it sits
// above them in the build (target pneumo_backends).
#include <iostream>

#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

std::unique_ptr<Backend> make_backend(const BackendOptions& options) {
  switch (options.device) {
    case DeviceChoice::Cpu:
      return make_cpu_backend(options.cpu_threads, options.bf16);
    case DeviceChoice::Cuda:
      if (!cuda_device_available())
        throw Error("--device cuda: no CUDA device is visible on this machine (no GPU, or no "
                    "driver); use --device cpu or --device auto");
      return make_cuda_backend(options);
    case DeviceChoice::Auto:
      break;
  }
  if (cuda_device_available())
    return make_cuda_backend(options);
  std::cerr << "pneumo: no CUDA device found, running on the CPU backend\n";
  return make_cpu_backend(options.cpu_threads, options.bf16);
}

}  // namespace pneumo
