// Out of memory through the `pneumo` binary: a batch that cannot fit is refused with a message
// naming the batch size held and suggesting a smaller one, on the host (CPU backend) and on the
// GPU (skipped without one). The data is a hand-made cache of 1024x1024 images, where one image
// a step holds about 1.2 GB of arrays. A --batch above the data's size holds the data only
// (12 training images, 8 validation ones here, about 14 GB), so on the host the command runs
// under a 5 GB address-space limit (`ulimit -v`), where the allocator refuses at once; the GPU
// test writes 256 training images (about 300 GB at one step).
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

// train: `count` images, half NORMAL and half PNEUMONIA, of distinct patients, flat grey; val:
// 4 + 4 more.
void write_large_cache(const fs::path& dir, int count = 12) {
  fs::create_directories(dir);
  auto write_split = [&](const std::string& split, int images) {
    std::vector<uint8_t> pixels(size_t(images) * kSize * kSize, 90);
    std::vector<uint8_t> labels(static_cast<size_t>(images));
    std::ofstream files(dir / (split + "_files.txt"));
    for (int i = 0; i < images; ++i) {
      labels[size_t(i)] = static_cast<uint8_t>(i % 2);
      files << (i % 2 ? split + "/PNEUMONIA/person" + std::to_string(i) + "_virus_1.jpeg"
                      : split + "/NORMAL/IM-" + std::to_string(1000 + i) + "-0001.jpeg")
            << "\n";
    }
    write_npy((dir / (split + "_images.npy")).string(), NpyType::UInt8, {images, kSize, kSize},
              pixels.data());
    write_npy((dir / (split + "_labels.npy")).string(), NpyType::UInt8, {images}, labels.data());
  };
  write_split("train", count);
  write_split("val", 8);
  std::ofstream(dir / "meta.json")
      << R"({"format": "pneumo-cache", "format_version": 1, "size": 1024,
    "classes": ["NORMAL", "PNEUMONIA"], "splits": {"train": {"count": )"
      << count << R"(, "per_class": {"NORMAL": )" << count / 2 << R"(, "PNEUMONIA": )"
      << count / 2 << R"(}}, "val": {"count": 8, "per_class": {"NORMAL": 4, "PNEUMONIA": 4}}},
    "source": {"hash": "fnv1a64:0000000000000000"}})";
}

// `flags`: the batch flags; `held`: the batch size the message must name; `advice`: the flag
// and value it must suggest; `asked`: what it must say the flags asked for ("" when they asked
// for no more than was held).
void expect_batch_advice(const std::string& device, const std::string& flags, int held,
                         const std::string& advice, const std::string& asked, int train_images = 12) {
  testing::TempDir dir;
  write_large_cache(dir.file("cache"), train_images);
  const std::string limit = device == "cpu" ? "ulimit -v 5242880 && " : "";
  auto result = testing::run_command(
      limit + "PNEUMO_CACHE_DIR='" + dir.file("tree-cache") + "' '" PNEUMO_BINARY "' train --data " +
      dir.file("cache") + " --size 1024 --val-split official " + flags +
      " --epochs 1 --threads 2 --device " + device + " --out " + dir.file("run") + " 2>&1");
  EXPECT_EQ(result.status, 1) << result.output;
  const std::string where = device == "cuda" ? "GPU" : "host";
  EXPECT_NE(result.output.find("out of " + where + " memory with batch size " + std::to_string(held)),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("e.g. " + advice), std::string::npos) << result.output;
  if (asked.empty())
    EXPECT_EQ(result.output.find("is more than the"), std::string::npos) << result.output;
  else
    EXPECT_NE(result.output.find("(" + asked + " is more than the " + std::to_string(held)),
              std::string::npos)
        << result.output;
  EXPECT_EQ(result.output.find("internal error"), std::string::npos) << result.output;
}

// AddressSanitizer reserves terabytes of address space: no limit can be set under it.
#if defined(__SANITIZE_ADDRESS__)
#define PNEUMO_SKIP_UNDER_ASAN() GTEST_SKIP() << "an address-space limit cannot hold under ASan"
#else
#define PNEUMO_SKIP_UNDER_ASAN() (void)0
#endif

TEST(CliMemory, AHostAllocationThatCannotFitNamesTheBatchSize) {
  PNEUMO_SKIP_UNDER_ASAN();
  expect_batch_advice("cpu", "--batch 8", 8, "--batch 4", "");
}

// A --batch above the epoch's images holds the epoch (it held arrays for the --batch asked):
// the advice names the 12 held, and says the flag asked for more.
TEST(CliMemory, ABatchAboveTheDataHoldsTheDataAndTheAdviceSaysSo) {
  PNEUMO_SKIP_UNDER_ASAN();
  expect_batch_advice("cpu", "--batch 4096", 12, "--batch 6", "--batch 4096");
}

// When validation's chunk is the largest held (8 validation images against steps of 2),
// halving --batch would not help: the advice names --val-batch.
TEST(CliMemory, AValidationBatchThatCannotFitNamesValBatch) {
  PNEUMO_SKIP_UNDER_ASAN();
  expect_batch_advice("cpu", "--batch 2 --val-batch 4096", 8, "--val-batch 4", "--val-batch 4096");
}

TEST(CliMemory, AGpuAllocationThatCannotFitNamesTheBatchSize) {
  PNEUMO_REQUIRE_CUDA();
  expect_batch_advice("cuda", "--batch 4096", 256, "--batch 128", "--batch 4096", 256);
}

}  // namespace
}  // namespace pneumo
