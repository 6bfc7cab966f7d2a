// Where a path really is, and whether one folder lies in another: the checks that keep a
// command's output out of its own input (prepare, eda, explain).
#pragma once

#include <filesystem>
#include <string>

namespace pneumo {

// Absolute, with symbolic links resolved as far as the path exists.
std::filesystem::path resolved(const std::string& path);

// Is `inner` equal to `outer` or below it (both given resolved)?
bool is_same_or_inside(const std::filesystem::path& inner, const std::filesystem::path& outer);

}  // namespace pneumo
