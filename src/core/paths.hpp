// Where a path really is, and whether one folder lies in another: the checks that keep a
// command's output out of its own input (prepare, eda, explain).
#pragma once

#include <filesystem>
#include <string>

namespace pneumo {

// Absolute, with symbolic links resolved as far as the path exists, without a trailing slash.
std::filesystem::path resolved(const std::string& path);

// Why nothing can be read at `path`, said after its name: "does not exist", "is a broken link
// (its target is missing)", "is a loop of links", or "is not a folder" (`want_folder`, for a
// file); "" when it is there (a folder when `want_folder`).
std::string why_not_there(const std::string& path, bool want_folder = false);

// why_not_there's words when `path` is a link that leads nowhere (broken, or a loop), else "": an
// output there can be neither made (it exists, "File exists") nor used.
std::string why_a_link_leads_nowhere(const std::string& path);

// Is `inner` equal to `outer` or below it (both given resolved)?
bool is_same_or_inside(const std::filesystem::path& inner, const std::filesystem::path& outer);

}  // namespace pneumo
