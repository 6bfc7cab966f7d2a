// Backend selection (--device auto|cpu|cuda): the one place that knows both backends, so it sits
// above them in the build (target pneumo_backends).
#include <iostream>

#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

Device backend_device(DeviceChoice choice) {
  if (choice == DeviceChoice::Cpu) return Device::Cpu;
  if (cuda_device_available()) return Device::Cuda;
  if (choice == DeviceChoice::Cuda)
    throw Error("--device cuda: no CUDA device is visible on this machine (no GPU, or no "
                "driver); use --device cpu or --device auto");
  return Device::Cpu;
}

std::unique_ptr<Backend> make_backend(const BackendOptions& options) {
  if (backend_device(options.device) == Device::Cuda) return make_cuda_backend(options);
  if (options.device == DeviceChoice::Auto)
    std::cerr << "pneumo: no CUDA device found, running on the CPU backend\n";
  return make_cpu_backend(options.cpu_threads, options.bf16);
}

}  // namespace pneumo
