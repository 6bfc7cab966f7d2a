// The Backend interface's non-pure parts and the --device text.
#include "pneumo/backend.hpp"

#include <nlohmann/json.hpp>
#include "pneumo/error.hpp"

namespace pneumo {

nlohmann::json Backend::report(int /*batch*/) const { return nlohmann::json::object(); }

std::string describe_tuning_cache(const nlohmann::json& report) {
  const auto found = report.find("tuning_cache");
  if (found == report.end() || !found->is_object()) return "";
  const nlohmann::json& cache = *found;
  const auto count = [&](const char* field) { return cache.value(field, int64_t{0}); };
  return detail::concat("tuning cache ", cache.value("state", std::string("?")), " (",
                        cache.value("path", std::string("?")), "): ", count("loaded"),
                        " decisions loaded for this GPU and precision, ",
                        count("exact_hits") + count("larger_batch_hits"),
                        " lookups answered from them, ", count("stored"), " decided in this run");
}

std::unique_ptr<Recording> Backend::record(const std::function<void()>& /*issue*/) {
  return nullptr;
}


}  // namespace pneumo
