// Out of memory through the `pneumo` binary: a batch that cannot fit is refused with a message
// naming the batch size and suggesting a smaller one, on the host (CPU backend) and on the GPU
// (skipped without one). The data is a hand-made cache of 1024x1024 images, so that batch 4096
// needs one 512 GiB activation: more than any machine here has, refused at once by the allocator
// (nothing is touched, so the test is safe to run anywhere).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli_test_util.hpp"
#include "pneumo/npy.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;

constexpr int kSize = 1024;

// train: 6 NORMAL + 6 PNEUMONIA images of distinct patients, flat grey.
void write_large_cache(const fs::path& dir) {
  fs::create_directories(dir);
  const int count = 12;
  std::vector<uint8_t> images(size_t{count} * kSize * kSize, 90), labels(count);
  std::ofstream files(dir / "train_files.txt");
  for (int i = 0; i < count; ++i) {
    labels[size_t(i)] = static_cast<uint8_t>(i % 2);
    files << (i % 2 ? "train/PNEUMONIA/person" + std::to_string(i) + "_virus_1.jpeg"
                    : "train/NORMAL/IM-00" + std::to_string(10 + i) + "-0001.jpeg")
          << "\n";
  }
  write_npy((dir / "train_images.npy").string(), NpyType::UInt8, {count, kSize, kSize},
            images.data());
  write_npy((dir / "train_labels.npy").string(), NpyType::UInt8, {count}, labels.data());
  std::ofstream(dir / "meta.json") << R"({"format": "pneumo-cache", "format_version": 1,
    "size": 1024, "classes": ["NORMAL", "PNEUMONIA"],
    "splits": {"train": {"count": 12, "per_class": {"NORMAL": 6, "PNEUMONIA": 6}}},
    "source": {"hash": "fnv1a64:0000000000000000"}})";
}

bool overcommit_always() {
  std::ifstream mode("/proc/sys/vm/overcommit_memory");
  int value = 0;
  return (mode >> value) && value == 1;
}

// `batches`: the flags that make 4096 images the largest batch held; `advice`: the flag the
// message must suggest halving.
void expect_batch_advice(const std::string& device, const std::string& batches = "--batch 4096",
                         const std::string& advice = "--batch 2048") {
  testing::TempDir dir;
  write_large_cache(dir.file("cache"));
  auto result = testing::pneumo_command("train --data " + dir.file("cache") + " --size 1024 " +
                                            batches + " --epochs 1 --threads 2 --device " +
                                            device + " --out " + dir.file("run"),
                                        dir.file("tree-cache"));
  EXPECT_EQ(result.status, 1) << result.output;
  const std::string where = device == "cuda" ? "GPU" : "host";
  EXPECT_NE(result.output.find("out of " + where + " memory with batch size 4096"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find(advice), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("internal error"), std::string::npos) << result.output;
}

TEST(CliMemory, AHostAllocationThatCannotFitNamesTheBatchSize) {
  if (overcommit_always())
    GTEST_SKIP() << "vm.overcommit_memory = 1: the kernel would grant 512 GiB";
  expect_batch_advice("cpu");
}

// The model is sized for the larger of --batch and --val-batch: when validation's batch is the
// one that cannot fit, halving --batch would not help, and the advice names --val-batch.
TEST(CliMemory, AValidationBatchThatCannotFitNamesValBatch) {
  if (overcommit_always())
    GTEST_SKIP() << "vm.overcommit_memory = 1: the kernel would grant 512 GiB";
  expect_batch_advice("cpu", "--batch 8 --val-batch 4096", "--val-batch 2048");
}

TEST(CliMemory, AGpuAllocationThatCannotFitNamesTheBatchSize) {
  PNEUMO_REQUIRE_CUDA();
  expect_batch_advice("cuda");
}

}  // namespace
}  // namespace pneumo
