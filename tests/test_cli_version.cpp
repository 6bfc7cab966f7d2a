// `pneumo --version`: exits 0 and prints the project's version (read from CMakeLists.txt here),
// the CUDA runtime, whether a driver and GPU were found, cuDNN and cuBLAS, and how images and CPU
// GEMMs are handled in this build.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "cli/commands/commands.hpp"
#include "cli_test_util.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {
namespace {

std::string project_version() {
  std::ifstream in(std::string(PNEUMO_SOURCE_DIR) + "/CMakeLists.txt");
  std::stringstream text;
  text << in.rdbuf();
  // Plain string search: std::regex draws a false -Wmaybe-uninitialized from g++ 12 in the
  // sanitizer build (-O1, -Werror).
  const std::string s = text.str(), key = "project(pneumo VERSION ";
  const size_t at = s.find(key);
  if (at == std::string::npos) return "(no version in CMakeLists.txt)";
  const size_t begin = at + key.size();
  return s.substr(begin, s.find_first_not_of("0123456789.", begin) - begin);
}

TEST(CliVersion, NamesTheReleaseAndWhatTheBinaryRunsWith) {
  const testing::CommandResult run = testing::pneumo_command("--version", "/nonexistent");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(run.output.rfind("pneumo " + project_version() + "\n", 0), 0u) << run.output;
  EXPECT_EQ(run.output, cli::version_text() + "\n");  // CLI11 ends the text with a newline
  for (const char* part : {"CUDA runtime 13.", "cuDNN 9.", "cuBLAS 13.", "images: ", "CPU GEMM: "})
    EXPECT_NE(run.output.find(part), std::string::npos) << part << " missing from\n" << run.output;
  const bool gpu = cuda_device_available();
  EXPECT_EQ(run.output.find("GPU(s): ") != std::string::npos, gpu) << run.output;
  EXPECT_EQ(run.output.find("training runs on the CPU") != std::string::npos, !gpu) << run.output;
}

TEST(CliVersion, HelpNamesTheProgram) {
  const testing::CommandResult run = testing::pneumo_command("--help", "/nonexistent");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("Usage: pneumo "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("--version"), std::string::npos) << run.output;
}

// --version and --help printed into a full device said nothing and ended in status 0; anything
// after them was ignored (status 0 too).
TEST(CliVersion, AnUnwritableOutputOrAnArgumentAfterVersionOrHelpFails) {
  for (const char* command : {"--version", "--help", "train --help"}) {
    const testing::CommandResult full =
        testing::run_command(std::string("('" PNEUMO_BINARY "' ") + command + " > /dev/full)");
    EXPECT_EQ(full.status, 1) << command << "\n" << full.output;
    EXPECT_NE(full.output.find("cannot write to standard output"), std::string::npos)
        << full.output;
  }
  for (const char* command : {"--version --bogus", "--help extra"}) {
    const testing::CommandResult run = testing::pneumo_command(command, "/nonexistent");
    EXPECT_EQ(run.status, 2) << command << "\n" << run.output;
    EXPECT_NE(run.output.find("takes nothing after it"), std::string::npos) << run.output;
  }
}

// A whole number past an INT's range was told only "takes an INT".
TEST(CliCommands, AWholeNumberOutOfRangeIsSaidToBe) {
  const testing::CommandResult run =
      testing::pneumo_command("train --data x --epochs 99999999999", "/nonexistent");
  EXPECT_EQ(run.status, 2) << run.output;
  EXPECT_NE(run.output.find("--epochs takes an INT, got '99999999999' (out of an INT's range"),
            std::string::npos)
      << run.output;
  // A word is not a number out of range: said as what it is.
  const testing::CommandResult word =
      testing::pneumo_command("train --data x --epochs 12x", "/nonexistent");
  EXPECT_EQ(word.status, 2) << word.output;
  EXPECT_NE(word.output.find("--epochs takes an INT, got '12x'"), std::string::npos) << word.output;
  EXPECT_EQ(word.output.find("range"), std::string::npos) << word.output;
}

// A mistyped command, bench command or option before the command is named with the choices
// (status 2), and the nearest command when it is a slip of the keys; CLI11 said "A subcommand is
// required", naming neither. predict and explain without
// an input say what is missing in the command's words (CLI11 named its internal "inputs").
TEST(CliCommands, AMistypedCommandIsNamedWithTheChoices) {
  const std::pair<const char*, const char*> cases[] = {
      {"trian --data x",
       "pneumo: unknown command 'trian'; did you mean train? (expected one of prepare, train, "},
      {"bench kernel",
       "pneumo bench: unknown command 'kernel'; did you mean kernels? (expected one of train, "
       "kernels;"},
      {"fit --data x", "pneumo: unknown command 'fit' (expected one of prepare, train, "},
      {"--bogus train", "pneumo: unknown option '--bogus' before the command"},
      {"predict --model m.safetensors", "give at least one image or folder to predict"},
      {"explain --model m.safetensors --out o", "give at least one image or folder to explain"}};
  for (const auto& [command, said] : cases) {
    const testing::CommandResult run = testing::pneumo_command(command, "/nonexistent");
    EXPECT_EQ(run.status, 2) << command << "\n" << run.output;
    EXPECT_NE(run.output.find(said), std::string::npos) << command << "\n" << run.output;
  }
  // --resume twice is the command line's mistake: said before either file is read (the note on
  // where flags came from pointed at the first).
  const testing::CommandResult twice =
      testing::pneumo_command("train --resume a.safetensors --resume=b.safetensors", "/nonexistent");
  EXPECT_EQ(twice.status, 2) << twice.output;
  EXPECT_NE(twice.output.find("--resume is given twice"), std::string::npos) << twice.output;
  EXPECT_EQ(twice.output.find("flags were also read from"), std::string::npos) << twice.output;
  const testing::CommandResult help = testing::pneumo_command("predict --help", "/nonexistent");
  EXPECT_NE(help.output.find("IMAGE|DIR"), std::string::npos) << help.output;
}

}  // namespace
}  // namespace pneumo
