// A SAX pass over JSON text before it is parsed: nlohmann's parser keeps the last of a key given
// twice without a word, and recurses as deep as the text nests. The safetensors header reader and
// the --config reader refuse both, each in its own words.
#pragma once

#include <cstddef>
#include <string>

namespace pneumo {

struct JsonStructure {
  bool valid = true;            // well-formed JSON (when no key was repeated and no level too deep)
  std::string parse_error;      // nlohmann's message, when not valid
  std::string repeated_key;     // the first key given twice in one object; "" when none
  size_t repeated_key_depth = 0;  // its object's level: 1 for the top-level object
  bool too_deep = false;        // arrays and objects nested more than max_depth levels
};

// Stops at the first problem; its cost is linear in the text's length.
JsonStructure check_json_structure(const char* begin, const char* end, size_t max_depth);

}  // namespace pneumo
