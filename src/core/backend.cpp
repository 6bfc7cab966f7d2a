// The Backend interface's non-pure parts and the --device text.
#include "pneumo/backend.hpp"

#include <nlohmann/json.hpp>
#include "pneumo/error.hpp"

namespace pneumo {

nlohmann::json Backend::report(int /*batch*/) const { return nlohmann::json::object(); }


}  // namespace pneumo
