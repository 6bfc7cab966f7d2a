// See paths.hpp.
#include "core/paths.hpp"

#include <sys/stat.h>

#include <cerrno>

namespace fs = std::filesystem;

namespace pneumo {

fs::path resolved(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) p = fs::absolute(path).lexically_normal();
  // A folder not made yet keeps the slash it was typed with ("new/", as a shell completes it):
  // its parent_path() would be the folder itself and its filename() empty.
  if (!p.has_filename() && p != p.root_path()) p = p.parent_path();
  return p;
}

bool is_same_or_inside(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // trailing slash
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

std::string why_not_there(const std::string& path, bool want_folder) {
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0)
    return !want_folder || S_ISDIR(info.st_mode) ? "" : "is not a folder";
  if (errno == ELOOP) return "is a loop of links";
  struct stat link {};
  if (::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode))
    return "is a broken link (its target is missing)";
  return "does not exist";
}

std::string why_a_link_leads_nowhere(const std::string& path) {
  const std::string why = why_not_there(path);
  return why == "does not exist" ? "" : why;
}

}  // namespace pneumo
