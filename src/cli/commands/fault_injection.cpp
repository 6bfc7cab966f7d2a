// The --inject-fault test hook (see fault_injection.hpp).
#include "cli/commands/fault_injection.hpp"

#include <csignal>
#include <cstdlib>
#include <limits>

#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::cli {

Fault parse_fault(const std::string& text) {
  const auto at = text.find('@');
  const std::string kind = text.substr(0, at);
  Fault fault;
  if (kind == "nan") {
    fault.kind = Fault::Kind::NanLoss;
  } else if (kind == "nan-weight") {
    fault.kind = Fault::Kind::NanWeight;
  } else if (kind == "sigint" || kind == "sigterm") {
    fault.kind = Fault::Kind::Signal;
    fault.signal = kind == "sigint" ? SIGINT : SIGTERM;
  } else {
    throw Error(
        "--inject-fault must be nan@STEP, nan-weight@STEP, sigint@STEP or sigterm@STEP, "
        "got '" +
        text + "'");
  }
  char* end = nullptr;
  const std::string step = at == std::string::npos ? "" : text.substr(at + 1);
  fault.step = std::strtoll(step.c_str(), &end, 10);
  if (step.empty() || *end != '\0' || fault.step < 1)
    throw Error("--inject-fault needs a step >= 1 after '@', got '" + text + "'");
  return fault;
}

std::function<void(int64_t)> fault_hook(const Fault& fault, Model& model,
                                        int64_t steps_before_epoch) {
  return [fault, &model, steps_before_epoch](int64_t step) {
    if (steps_before_epoch + step + 1 != fault.step) return;
    if (fault.kind == Fault::Kind::Signal) {
      std::raise(fault.signal);
      return;
    }
    const float nan = std::numeric_limits<float>::quiet_NaN();
    TensorView weights = model.parameters();
    float* target = weights.data + (fault.kind == Fault::Kind::NanLoss ? weights.numel() - 1 : 0);
    copy_bytes(target, weights.device, &nan, Device::Cpu, sizeof(float));
  };
}

}  // namespace pneumo::cli
