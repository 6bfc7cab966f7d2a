// profiling/torch_reference.py builds the same network in PyTorch; loaded with a pneumo
// checkpoint it must give the logits `pneumo predict` gives (on the CPU). Runs where a Python with
// torch, numpy and safetensors is available ($PNEUMO_TORCH_PYTHON, default python3); skipped
// elsewhere (CI does not install PyTorch).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;

std::string torch_python() {
  const char* chosen = std::getenv("PNEUMO_TORCH_PYTHON");
  return chosen && *chosen ? chosen : "python3";
}

TEST(TorchReference, GivesTheLogitsOfPneumoPredictForTheSameWeights) {
  const std::string python = torch_python();
  if (std::system(("'" + python + "' -c 'import torch, numpy, safetensors' > /dev/null 2>&1")
                      .c_str()) != 0)
    GTEST_SKIP() << python << " lacks torch, numpy or safetensors";
  testing::TempDir dir;
  const std::string cache_root = dir.file("cache");
  auto train = testing::pneumo_command("train --data " PNEUMO_SOURCE_DIR "/data/sample --epochs 1 "
                                       "--device cpu --threads 2 --out " + dir.file("run"),
                                       cache_root);
  ASSERT_EQ(train.status, 0) << train.output;
  // The tree's cache: the folder holding a meta.json (beside it, the lock file a prepare of the
  // same tree takes, which the first entry listed could be).
  std::string cache;
  for (const auto& entry : fs::directory_iterator(cache_root))
    if (fs::is_regular_file(entry.path() / "meta.json")) cache = entry.path().string();
  ASSERT_FALSE(cache.empty()) << "no cache in " << cache_root;
  auto check = testing::run_command("'" + python + "' " PNEUMO_SOURCE_DIR
                                    "/profiling/torch_reference.py --check-model " +
                                    dir.file("run") + "/model.safetensors --cache " + cache +
                                    " --split train --count 60 --pneumo " PNEUMO_BINARY);
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("\"ok\": true"), std::string::npos) << check.output;
}

}  // namespace
}  // namespace pneumo
