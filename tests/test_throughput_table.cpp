// scripts/throughput_table.py, the GPU check's pneumo-against-PyTorch table: rows per
// configuration from bench train's and torch_reference.py's JSON lines, the recipe's end-to-end
// seconds, and the ratios of pneumo's best to the best PyTorch and to eager fp32. Skipped without
// python3.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

// scripts/throughput_table.py on one file, its stderr with its stdout.
testing::CommandResult run_table(const std::string& path) {
  return testing::run_command("python3 '" PNEUMO_SOURCE_DIR "/scripts/throughput_table.py' '" +
                              path + "' 2>&1");
}

TEST(ThroughputTable, RatiosAgainstTheBestPyTorchAndEagerFp32) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream(dir.file("t.jsonl"))
      << R"({"impl":"pneumo","batch":32,"images_per_second":9000,"precision":"fp32","augment":true})"
      << "\n"
      << R"({"impl":"pneumo","batch":32,"images_per_second":5000,"precision":"fp32","augment":false,"cudnn_only":true})"
      << "\n"
      << R"({"impl":"pneumo","batch":32,"images_per_second":8000,"precision":"fp32","augment":true,"fused_block_tails":true})"
      << "\n"
      << R"({"impl":"pneumo","measure":"recipe","total_seconds":4.5,"precision":"fp32","augment":true})"
      << "\n"
      // A --cuda-graph run times its steps op by op, as a plain run does: its speed does not
      // replace the plain run's (nor is it named after graphs); its recipe, which replays
      // graphs, is a row of its own
      << R"({"impl":"pneumo","batch":32,"images_per_second":9500,"precision":"fp32","augment":true,"cuda_graph":true})"
      << "\n"
      << R"({"impl":"pneumo","measure":"recipe","total_seconds":3.25,"precision":"fp32","augment":true,"cuda_graph":true})"
      << "\n"
      << R"({"impl":"torch-eager","batch":32,"images_per_second":3000,"precision":"fp32"})" << "\n"
      << R"({"impl":"torch-compile-max-bf16","batch":32,"images_per_second":6000,"precision":"bf16 autocast"})"
      << "\n"
      << R"({"impl":"torch-eager","measure":"recipe","recipe_seconds":20.25,"precision":"fp32","batch":32})"
      << "\n"
      << R"({"impl":"torch-eager","profile":"op","name":"aten::conv","ms_per_step":1.0})" << "\n"
      << "a log line\n";
  const testing::CommandResult run = run_table(dir.file("t.jsonl"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("| pneumo fp32 | 9,000 | 4.50 |"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("| pneumo fp32, steps as CUDA graphs |  | 3.25 |"), std::string::npos)
      << run.output;
  EXPECT_EQ(run.output.find("9,500"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("| pneumo fp32, no augmentation, cuDNN only | 5,000 |  |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| pneumo fp32, fused block tails | 8,000 |  |"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| PyTorch eager (fp32) | 3,000 | 20.25 |"), std::string::npos)
      << run.output;
  // Four of torch_reference.py's six configurations did not run: "the best PyTorch measured",
  // naming them (a cut budget once made eager fp32 "the best PyTorch").
  EXPECT_NE(run.output.find("is 1.50x the best PyTorch measured (PyTorch compile-max-bf16 (bf16 "
                            "autocast), 6,000; not measured: eager-bf16, compile, compile-bf16, "
                            "compile-graphs-bf16) and 3.00x PyTorch eager fp32"),
            std::string::npos)
      << run.output;
  EXPECT_EQ(run.output.find("aten::conv"), std::string::npos) << "profile rows are not speeds";

  std::ofstream(dir.file("empty.jsonl")) << "nothing here\n";
  EXPECT_NE(run_table(dir.file("empty.jsonl")).status, 0);
}

// With all six of torch_reference.py's configurations at a batch, the best of them is "the best
// PyTorch", and nothing is said missing.
TEST(ThroughputTable, EveryPyTorchConfigurationRanIsTheBestPyTorch) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream rows(dir.file("t.jsonl"));
  rows << R"({"impl":"pneumo","batch":256,"images_per_second":12000,"precision":"fp32"})" << "\n";
  int speed = 1000;
  for (const char* config : {"eager", "eager-bf16", "compile", "compile-bf16",
                             "compile-graphs-bf16", "compile-max-bf16"})
    rows << R"({"impl":"torch-)" << config << R"(","batch":256,"images_per_second":)"
         << (speed += 1000) << R"(,"precision":"fp32"})" << "\n";
  rows.close();
  const testing::CommandResult run = run_table(dir.file("t.jsonl"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("is 1.71x the best PyTorch (PyTorch compile-max-bf16 (fp32), 7,000) "
                            "and 6.00x PyTorch eager fp32."),
            std::string::npos)
      << run.output;
  EXPECT_EQ(run.output.find("not measured"), std::string::npos) << run.output;
}

// A recipe line that says how warm its start was keeps its seconds beside the configuration's
// other starts, labelled (the GPU check times pneumo's recipe on a cold and on a warm tuning cache,
// PyTorch's compiled one on a cold and a warm compile cache); the device is named when every row
// that says it ran on one card.
TEST(ThroughputTable, RecipeSecondsSayHowWarmTheirStartWas) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream(dir.file("t.jsonl"))
      << R"j({"impl":"pneumo","backend":"cuda (NVIDIA H200, sm_90, cuDNN 9.19.0, fp32)","batch":32,"images_per_second":9000,"precision":"fp32"})j"
      << "\n"
      << R"j({"impl":"pneumo","backend":"cuda (NVIDIA H200, sm_90, cuDNN 9.19.0, fp32)","measure":"recipe","total_seconds":9.5,"precision":"fp32","tuning_cache":{"state":"warm","loaded":40}})j"
      << "\n"
      << R"j({"impl":"pneumo","backend":"cuda (NVIDIA H200, sm_90, cuDNN 9.19.0, fp32)","measure":"recipe","total_seconds":10.75,"precision":"fp32","tuning_cache":{"state":"cold","loaded":0}})j"
      << "\n"
      << R"j({"impl":"torch-compile-bf16","device":"NVIDIA H200","measure":"recipe","recipe_seconds":65.5,"precision":"bf16 autocast","compile_cache":"cold"})j"
      << "\n"
      << R"j({"impl":"torch-compile-bf16","device":"NVIDIA H200","measure":"recipe","recipe_seconds":21.25,"precision":"bf16 autocast","compile_cache":"warm"})j"
      << "\n"
      << R"j({"impl":"torch-eager","device":"NVIDIA H200","batch":32,"images_per_second":3000,"precision":"fp32"})j"
      << "\n"
      << R"j({"impl":"torch-eager","device":"NVIDIA H200","measure":"recipe","recipe_seconds":19.5,"precision":"fp32"})j"
      << "\n";
  testing::CommandResult run = run_table(dir.file("t.jsonl"));
  ASSERT_EQ(run.status, 0) << run.output;
  for (const std::string row : {"| pneumo fp32 | 9,000 | 10.75 cold, 9.50 warm |",
                                "| PyTorch compile-bf16 (bf16 autocast) |  | 65.50 cold, 21.25 warm |",
                                "| PyTorch eager (fp32) | 3,000 | 19.50 |",
                                "Every row that names its device: NVIDIA H200.",
                                "is 3.00x the best PyTorch measured"})
    EXPECT_NE(run.output.find(row), std::string::npos) << row << "\n" << run.output;

  // A row from another card: the table still shows every row, but no ratio is worked out.
  std::ofstream(dir.file("t.jsonl"), std::ios::app)
      << R"j({"impl":"torch-compile-bf16","device":"NVIDIA H100 80GB HBM3","batch":32,"images_per_second":7000,"precision":"bf16 autocast"})j"
      << "\n";
  run = run_table(dir.file("t.jsonl"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("| PyTorch compile-bf16 (bf16 autocast) | 7,000 | 65.50 cold, 21.25 warm |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("Rows from 2 devices (NVIDIA H200, NVIDIA H100 80GB HBM3): not compared"),
            std::string::npos)
      << run.output;
  EXPECT_EQ(run.output.find("x the best PyTorch"), std::string::npos) << run.output;
}

// Measurements that are not the recipe's or a speed stay apart: a recipe of another batch or
// length, or with first-call probes, is a row of its own (a 2-epoch probed batch-256 recipe
// stood in the 12-epoch recipe's cell); a step timed without warm-up is skipped (a cold step
// read as 4,203 images/s beside a steady 9,202); and the table says which side augments.
TEST(ThroughputTable, OtherRecipesAndColdStepsAreNotTheRecipeOrASpeed) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream(dir.file("t.jsonl"))
      << R"({"impl":"pneumo","measure":"recipe","total_seconds":10.5,"precision":"fp32","batch":32,"epochs":12})"
      << "\n"
      << R"({"impl":"pneumo","measure":"recipe","total_seconds":3.0,"precision":"fp32","batch":256,"epochs":2,"first_calls":{}})"
      << "\n"
      << R"({"impl":"pneumo","batch":32,"images_per_second":9202,"precision":"fp32","warmup":3})"
      << "\n"
      << R"({"impl":"pneumo","batch":32,"images_per_second":4203,"precision":"fp32","warmup":0})"
      << "\n"
      << R"({"impl":"torch-eager","batch":32,"images_per_second":3000,"precision":"fp32"})" << "\n"
      // PyTorch's recipe lines alike: a 2-epoch batch-256 one on 640 images is not the recipe
      // (it took the 12-epoch line's cell).
      << R"({"impl":"torch-eager","measure":"recipe","recipe_seconds":60,"precision":"fp32","batch":32,"recipe_epochs":12,"recipe_train_images":6586})"
      << "\n"
      << R"({"impl":"torch-eager","measure":"recipe","recipe_seconds":3,"precision":"fp32","batch":256,"recipe_epochs":2,"recipe_train_images":640})"
      << "\n";
  const testing::CommandResult run = run_table(dir.file("t.jsonl"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("| pneumo fp32 | 9,202 | 10.50 |"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("| PyTorch eager (fp32) | 3,000 | 60.00 |"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| PyTorch eager (fp32), batch 256, 2 epochs, 640 images an epoch |  "
                            "| 3.00 |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| pneumo fp32, batch 256, 2 epochs, first-call probes |  | 3.00 |"),
            std::string::npos)
      << run.output;
  EXPECT_EQ(run.output.find("4,203"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("\"warmup\": 0) is a cold start, not a speed; line skipped"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("PyTorch's never augment"), std::string::npos) << run.output;
}

TEST(ThroughputTable, LinesWithFieldsOfTheWrongTypesAreSkippedWithAWarning) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream(dir.file("t.jsonl"))
      << R"({"impl":"pneumo","batch":32,"images_per_second":9000,"precision":"fp32"})" << "\n"
      << R"({"impl":"pneumo","batch":[1],"images_per_second":3})" << "\n"
      << R"({"impl":"pneumo","measure":"recipe","total_seconds":"x"})" << "\n"
      << R"({"impl":5})" << "\n"
      << R"({"impl":"torch-eager","batch":32,"images_per_second":0,"precision":"fp32"})" << "\n"
      << R"({"impl":"torch-eager","batch":32,"images_per_second":3000,"precision":"fp32"})"
      << "\n"
      // Tabulated before as inf, -5.00 and augmentation on ("no" is a true string).
      << R"({"impl":"torch-eager","batch":256,"images_per_second":Infinity})" << "\n"
      << R"({"impl":"pneumo","measure":"recipe","total_seconds":-5})" << "\n"
      << R"({"impl":"pneumo","batch":256,"images_per_second":5,"augment":"no"})" << "\n"
      << "\xff\xfe not UTF-8\n";
  const testing::CommandResult run = run_table(dir.file("t.jsonl"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(run.output.find("Traceback"), std::string::npos) << run.output;
  for (const std::string warning :
       {":2: \"batch\" is [1], not an integer; line skipped",
        ":3: \"total_seconds\" is 'x', not a positive number; line skipped",
        ":4: \"impl\" is 5, not a string; line skipped",
        ":5: \"images_per_second\" is 0, not a positive number; line skipped",
        ":7: \"images_per_second\" is inf, not a positive number; line skipped",
        ":8: \"total_seconds\" is -5, not a positive number; line skipped",
        ":9: \"augment\" is 'no', not true or false; line skipped"})
    EXPECT_NE(run.output.find("throughput_table: " + dir.file("t.jsonl") + warning),
              std::string::npos)
        << warning << "\n" << run.output;
  // The lines of the right types still make the table and its ratio.
  EXPECT_NE(run.output.find("| pneumo fp32 | 9,000 |  |"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("is 3.00x the best PyTorch measured (PyTorch eager (fp32), 3,000; not measured: "),
            std::string::npos)
      << run.output;
}

}  // namespace
}  // namespace pneumo
