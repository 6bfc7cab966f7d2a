// Helpers for the data tests: a scratch directory removed at the end of a test, where the real
// dataset and the sample lie, and running a Python snippet with numpy when it is there.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace pneumo::testing {

// A fresh directory under the system temp dir, deleted (recursively) when it goes out of scope.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("pneumo-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The full dataset: $PNEUMO_SHARED_DATA, else ../shared/data/chest_xray beside the checkout
// (where CI and the main checkout have it). "" when absent: the caller skips.
inline std::string shared_dataset_dir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("PNEUMO_SHARED_DATA"); env && *env)
    return fs::is_directory(env) ? env : "";
  for (const char* rel : {"../shared/data/chest_xray", "../../shared/data/chest_xray"}) {
    const fs::path candidate = fs::path(PNEUMO_SOURCE_DIR) / rel;
    if (fs::is_directory(candidate / "train")) return candidate.lexically_normal().string();
  }
  return "";
}

// The committed sample tree (data/sample), "" when absent.
inline std::string sample_dataset_dir() {
  const std::filesystem::path dir = std::filesystem::path(PNEUMO_SOURCE_DIR) / "data" / "sample";
  return std::filesystem::is_directory(dir / "train") ? dir.string() : "";
}

inline bool python_numpy_available() {
  static const bool available =
      std::system("python3 -c 'import numpy' >/dev/null 2>&1") == 0;
  return available;
}

// Runs `python3 -c <code>` and returns what it printed on stdout (trailing newline removed);
// fails the test when python exits non-zero.
inline std::string run_python(const std::string& code) {
  const std::string script = (std::filesystem::temp_directory_path() /
                              ("pneumo-test-" + std::to_string(::getpid()) + ".py")).string();
  write_file(script, code);
  FILE* pipe = ::popen(("python3 " + script + " 2>&1").c_str(), "r");
  std::string output;
  char buffer[4096];
  for (size_t n; pipe && (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;)
    output.append(buffer, n);
  const int status = pipe ? ::pclose(pipe) : -1;
  std::filesystem::remove(script);
  EXPECT_EQ(status, 0) << "python3 failed:\n" << output;
  while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
  return output;
}

}  // namespace pneumo::testing
