// JSON text of values that may hold file paths. A Linux path is bytes, not necessarily UTF-8 (a
// Latin-1 name such as "caf\xe9.jpeg"), and nlohmann::json's plain dump() throws type_error 316 on
// such bytes, which stopped a whole prepare or run over one file name (docs/bad-input.md). Here
// each invalid byte becomes U+FFFD instead: the same bytes always give the same text.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace pneumo {

inline std::string json_text(const nlohmann::json& value, int indent = -1) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace pneumo
