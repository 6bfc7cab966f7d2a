// The Backend interface's non-pure parts and the --device text.
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

}  // namespace pneumo
