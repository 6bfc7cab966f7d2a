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
  } else if (kind == "inf-state") {
    fault.kind = Fault::Kind::InfState;
  } else if (kind == "sigint" || kind == "sigterm") {
    fault.kind = Fault::Kind::Signal;
    fault.signal = kind == "sigint" ? SIGINT : SIGTERM;
  } else {
    throw Error(
        "--inject-fault must be nan@STEP, nan-weight@STEP, inf-state@STEP, sigint@STEP, "
        "sigterm@STEP, nan@valEPOCH, sigint@valEPOCH or sigterm@valEPOCH, got '" +
        text + "'");
  }
  char* end = nullptr;
  std::string step = at == std::string::npos ? "" : text.substr(at + 1);
  const bool in_validation = (fault.kind == Fault::Kind::NanLoss ||
                              fault.kind == Fault::Kind::Signal) &&
                             step.rfind("val", 0) == 0;
  if (in_validation) step.erase(0, 3);
  const long long number = std::strtoll(step.c_str(), &end, 10);
  if (step.empty() || *end != '\0' || number < 1 || number > std::numeric_limits<int>::max())
    throw Error("--inject-fault needs a step (or valEPOCH) >= 1 after '@', got '" + text + "'");
  if (in_validation)
    fault.validation_epoch = static_cast<int>(number);
  else
    fault.step = number;
  return fault;
}

namespace {

void strike(const Fault& fault, Model& model, TensorView optimizer_state) {
  if (fault.kind == Fault::Kind::Signal) {
    std::raise(fault.signal);
    return;
  }
  if (fault.kind == Fault::Kind::InfState) {
    // The last slot holds the mean squares (RMSprop's only slot, AdamW's second moment).
    const float inf = std::numeric_limits<float>::infinity();
    float* target = optimizer_state.data + optimizer_state.numel() - model.parameters().numel();
    copy_bytes(target, optimizer_state.device, &inf, Device::Cpu, sizeof(float));
    return;
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  TensorView weights = model.parameters();
  float* target = weights.data + (fault.kind == Fault::Kind::NanLoss ? weights.numel() - 1 : 0);
  copy_bytes(target, weights.device, &nan, Device::Cpu, sizeof(float));
}

}  // namespace

std::function<void(int64_t)> fault_hook(const Fault& fault, Model& model,
                                        TensorView optimizer_state, int64_t steps_before_epoch) {
  return [fault, &model, optimizer_state, steps_before_epoch](int64_t step) {
    if (fault.validation_epoch == 0 && steps_before_epoch + step + 1 == fault.step)
      strike(fault, model, optimizer_state);
  };
}

void fault_before_validation(const Fault& fault, Model& model, int epoch) {
  if (fault.validation_epoch == epoch + 1) strike(fault, model, TensorView{});
}

}  // namespace pneumo::cli
