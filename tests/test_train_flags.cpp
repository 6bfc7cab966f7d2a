// The `pneumo train` flag table (src/cli/commands/train_flags.cpp) walked row by row: every flag
// registers, its example value survives config.json and the --config / --resume expansion
// unchanged (written as given), its refused value stops validation naming the flag, and the
// defaults validate.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "cli/commands/commands.hpp"
#include "cli/commands/flag_text.hpp"
#include "cli/commands/train_flags.hpp"
#include "pneumo/error.hpp"

namespace pneumo::cli {
namespace {

// Parses `pneumo train ARGS` as the command line does (options keep the last value given).
TrainOptions parse(std::vector<std::string> args) {
  CLI::App app;
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  TrainOptions options;
  add_train_flags(app, options);
  std::reverse(args.begin(), args.end());
  app.parse(args);
  return options;
}

std::string as_text(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.dump();  // numbers as written; booleans as true / false
}

TEST(TrainFlags, NamesAreUniqueAndEveryRecordedFlagIsInConfigJson) {
  std::set<std::string> names;
  TrainOptions defaults;
  const nlohmann::json config = to_json(defaults);
  size_t recorded = 0;
  for (const TrainFlag& flag : train_flags()) {
    EXPECT_TRUE(names.insert(flag.name).second) << "--" << flag.name << " appears twice";
    if (!flag.recorded) continue;
    ++recorded;
    EXPECT_TRUE(config.contains(flag.name)) << "--" << flag.name;
  }
  EXPECT_EQ(config.size(), recorded) << config.dump(1);
  for (const char* unrecorded : {"config", "resume", "inject-fault"})
    EXPECT_FALSE(config.contains(unrecorded)) << unrecorded;
}

TEST(TrainFlags, DefaultsValidate) {
  TrainOptions defaults;
  defaults.data = "somewhere";
  EXPECT_NO_THROW(validate(defaults));
}

TEST(TrainFlags, EveryRecordedFlagRoundTripsThroughConfigJsonAsGiven) {
  const nlohmann::json defaults = to_json(TrainOptions{});
  for (const TrainFlag& flag : train_flags()) {
    if (!flag.recorded) continue;
    SCOPED_TRACE("--" + flag.name + "=" + flag.example);
    ASSERT_FALSE(flag.example.empty()) << "every recorded flag needs an example value";
    const TrainOptions given = parse({"--data=d", "--" + flag.name + "=" + flag.example});
    EXPECT_NO_THROW(validate(given));
    const nlohmann::json written = to_json(given);
    // The example is not the default, so the round trip below can tell a lost value.
    EXPECT_NE(written[flag.name], defaults[flag.name]);
    // Written as the user typed it: 0.1, not 0.10000000149011612.
    EXPECT_EQ(as_text(written[flag.name]), flag.example);
    // --config / --resume: config.json turned back into flags gives the same options.
    // ("out" is the exception by design: where a run writes is never inherited.)
    nlohmann::json expected = written;
    if (flag.name == "out") expected["out"] = defaults["out"];
    const TrainOptions again = parse(flags_from_json(written, "config.json"));
    EXPECT_EQ(to_json(again), expected);
  }
}

TEST(TrainFlags, EveryRefusedValueStopsValidationNamingTheFlag) {
  int refusals = 0;
  for (const TrainFlag& flag : train_flags()) {
    if (flag.refused.empty()) continue;
    SCOPED_TRACE("--" + flag.name + "=" + flag.refused);
    const TrainOptions given = parse({"--data=d", "--" + flag.name + "=" + flag.refused});
    try {
      validate(given);
      ADD_FAILURE() << "accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--" + flag.name), std::string::npos) << e.what();
      ++refusals;
    }
  }
  EXPECT_GE(refusals, 30);  // the range- and choice-checked flags
}

// No number flag takes infinity or NaN, whichever optimizer or mode makes it unused: config.json
// records every flag, JSON has neither, and a run whose config.json held null for one could be
// neither resumed nor used as --config (--weight-decay inf under rmsprop once was).
TEST(TrainFlags, EveryFloatingFlagRefusesInfinityAndNaN) {
  const nlohmann::json defaults = to_json(TrainOptions{});
  int checked = 0;
  for (const TrainFlag& flag : train_flags()) {
    if (!flag.recorded || !defaults[flag.name].is_number_float()) continue;
    for (const char* value : {"inf", "-inf", "nan"}) {
      SCOPED_TRACE("--" + flag.name + "=" + value);
      try {
        validate(parse({"--data=d", "--" + flag.name + "=" + value}));
        ADD_FAILURE() << "accepted";
      } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("--" + flag.name), std::string::npos) << e.what();
      }
    }
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

// A flag checked against an interval says it in --help ("range: [0, 1)"), in the check's own words.
TEST(TrainFlags, EveryIntervalInAnErrorIsInTheFlagsHelp) {
  int intervals = 0;
  for (const TrainFlag& flag : train_flags()) {
    if (flag.refused.empty()) continue;
    SCOPED_TRACE("--" + flag.name + "=" + flag.refused);
    try {
      validate(parse({"--data=d", "--" + flag.name + "=" + flag.refused}));
    } catch (const UsageError& e) {
      std::string words = e.what();  // "--x must be in [0, 1), got 2"
      const size_t from = words.find(" must be "), to = words.rfind(", got ");
      if (from == std::string::npos || to == std::string::npos) continue;
      words = words.substr(from + 9, to - from - 9);
      for (const std::string prefix : {"a finite number ", "in "})
        if (words.rfind(prefix, 0) == 0) words = words.substr(prefix.size());
      if (words.empty() || std::string("[(>").find(words[0]) == std::string::npos) continue;
      EXPECT_NE(flag.help.find("range: " + words), std::string::npos) << flag.help;
      ++intervals;
    }
  }
  EXPECT_GE(intervals, 20);
}

// Every boolean flag is a switch: bare means true, wherever it stands; a value still wins.
TEST(TrainFlags, EveryBooleanIsASwitchWhenBare) {
  const nlohmann::json defaults = to_json(TrainOptions{});
  int switches = 0;
  for (const TrainFlag& flag : train_flags()) {
    if (!flag.recorded || !defaults[flag.name].is_boolean()) continue;
    SCOPED_TRACE("--" + flag.name);
    ++switches;
    EXPECT_EQ(to_json(parse({"--data=d", "--" + flag.name}))[flag.name], true);
    const TrainOptions followed = parse({"--" + flag.name, "--data", "d"});
    EXPECT_EQ(to_json(followed)[flag.name], true);
    EXPECT_EQ(followed.data, "d");
    EXPECT_EQ(to_json(parse({"--data=d", "--" + flag.name, "false"}))[flag.name], false);
    EXPECT_EQ(to_json(parse({"--data=d", "--" + flag.name + "=false"}))[flag.name], false);
    EXPECT_EQ(to_json(parse({"--data=d", "--" + flag.name, "true"}))[flag.name], true);
  }
  EXPECT_GE(switches, 8);  // augment, flip, val-stress, restore-best, cuda-graph, ...
}

// A callback's monitor is checked before training (not after the first epoch), and only where
// that callback runs: the plateau callback without a --schedule, early stopping with a patience.
TEST(TrainFlags, AMonitorMustBeAMetricEveryEpochHas) {
  auto refusal = [](std::vector<std::string> args) -> std::string {
    args.insert(args.begin(), "--data=d");
    try {
      validate(parse(args));
    } catch (const UsageError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(refusal({"--plateau-monitor=val_acc"}).find("--plateau-monitor"), std::string::npos);
  EXPECT_NE(refusal({"--plateau-monitor=val_acc"}).find("val_accuracy"), std::string::npos)
      << "names the metrics there are";
  EXPECT_EQ(refusal({"--plateau-monitor=val_acc", "--schedule=cosine"}), "");
  EXPECT_NE(refusal({"--checkpoint-monitor=val_sensitivty"})
                .find("(did you mean val_sensitivity?)"),
            std::string::npos);
  EXPECT_EQ(refusal({"--early-stopping-monitor=nothing"}), "");  // patience 0: off
  EXPECT_NE(refusal({"--early-stopping-monitor=nothing", "--early-stopping-patience=2"})
                .find("--early-stopping-monitor"),
            std::string::npos);
  EXPECT_NE(refusal({"--checkpoint-monitor=val_stress_worst_specificity"}).find("--val-stress"),
            std::string::npos);
  EXPECT_EQ(refusal({"--checkpoint-monitor=val_stress_worst_specificity", "--val-stress"}), "");
  for (const std::string& name : epoch_metric_names(false))
    EXPECT_EQ(refusal({"--checkpoint-monitor=" + name}), "") << name;
}

TEST(TrainFlags, ConfigJsonNamesOnlyFlagsTheCommandKnows) {
  // A configuration naming an unknown flag fails to parse rather than being ignored.
  nlohmann::json config = to_json(TrainOptions{});
  config["data"] = "data/sample";  // required, and no flag takes an empty value
  config["no-such-flag"] = 1;
  EXPECT_THROW(parse(flags_from_json(config, "config.json")), CLI::ParseError);
  EXPECT_THROW(flags_from_json(nlohmann::json::array(), "x.json"), Error);
  EXPECT_THROW(flags_from_json({{"lr", nlohmann::json::array()}}, "x.json"), Error);
}

// "Did you mean": the nearest names within one edit (names of up to five characters) or two,
// a swap of neighbours one edit; every name equally near, in order; none for a name that is known
// or far from all.
TEST(TrainFlags, NearestNamesAreOneOrTwoKeysOff) {
  const std::vector<std::string> flags = {"epochs", "batch", "val-batch", "val-split", "lr",
                                          "seed", "size"};
  using V = std::vector<std::string>;
  EXPECT_EQ(nearest_names("epoch", flags), V{"epochs"});
  EXPECT_EQ(nearest_names("bacth", flags), V{"batch"});  // a swap is one edit
  EXPECT_EQ(nearest_names("val_split", flags), V{"val-split"});
  EXPECT_EQ(nearest_names("val-spilt", flags), V{"val-split"});
  EXPECT_EQ(nearest_names("vl-splt", flags), V{"val-split"});  // two edits in a longer name
  EXPECT_EQ(nearest_names("sed", flags), V{"seed"});
  EXPECT_EQ(nearest_names("sz", flags), V{});  // two edits from size: too many for a short name
  EXPECT_EQ(nearest_names("bach", {"batch", "bash", "back-up"}), (V{"batch", "bash"}));
  EXPECT_EQ(nearest_names("batch", flags), V{});  // known: nothing to mean
  EXPECT_EQ(nearest_names("bogus", flags), V{});
  EXPECT_EQ(nearest_names("learning-rate", flags), V{});
  // Every character replaced is no slip of the keys ("z" for "a"); one kept is ("l" for "lr").
  EXPECT_EQ(nearest_names("z", {"a", "b"}), V{});
  EXPECT_EQ(nearest_names("ab", {"cd"}), V{});
  EXPECT_EQ(nearest_names("l", {"lr"}), V{"lr"});
  EXPECT_EQ(nearest_names("lr", {"l", "r", "x"}), (V{"l", "r"}));
  EXPECT_EQ(nearest_names("lx", {"lr"}), V{"lr"});
  // Short names allow one edit: "fit" is two from "eda" and from "bench"'s nothing.
  const std::vector<std::string> commands = {"prepare", "train", "evaluate", "predict", "explain",
                                             "eda", "bench"};
  EXPECT_EQ(nearest_names("trian", commands), V{"train"});
  EXPECT_EQ(nearest_names("ed", commands), V{"eda"});
  EXPECT_EQ(nearest_names("fit", commands), V{});
  EXPECT_EQ(nearest_names("prdict", commands), V{"predict"});
  EXPECT_EQ(nearest_names("evalute", commands), V{"evaluate"});
  EXPECT_EQ(listed_with_or({}), "");
  EXPECT_EQ(listed_with_or({"a"}), "a");
  EXPECT_EQ(listed_with_or({"a", "b"}), "a or b");
  EXPECT_EQ(listed_with_or({"a", "b", "c"}), "a, b or c");
  EXPECT_EQ(listed_with_commas({}), "");
  EXPECT_EQ(listed_with_commas({"a", "b", "c"}), "a, b, c");
}

// A choice flag's refusal lists what it takes (with a meaning where given) and, for a slip of the
// keys or of the shift key, the value meant; every parser of a choice answers in those words.
TEST(TrainFlags, AChoiceRefusedListsTheChoicesAndTheOneMeant) {
  using V = std::vector<std::string>;
  EXPECT_EQ(did_you_mean("cude", {"auto", "cpu", "cuda"}), " (did you mean cuda?)");
  EXPECT_EQ(did_you_mean("CPU", {"auto", "cpu", "cuda"}), " (did you mean cpu?)");
  EXPECT_EQ(did_you_mean("CUDE", {"auto", "cpu", "cuda"}), " (did you mean cuda?)");
  EXPECT_EQ(did_you_mean("tpu", {"auto", "cpu", "cuda"}), " (did you mean cpu?)");
  EXPECT_EQ(did_you_mean("quantum", {"auto", "cpu", "cuda"}), "");
  EXPECT_EQ(did_you_mean("cpu", {"auto", "cpu", "cuda"}), "");
  EXPECT_EQ(not_a_choice("--x", "bbx", V{"a", "bbb", "c"}),
            "--x must be a, bbb or c, got 'bbx' (did you mean bbb?)");
  EXPECT_EQ(not_a_choice("--x", "z", V{"a", "b"}, V{"a (first)", "b"}),
            "--x must be a (first) or b, got 'z'");
  // A value too long to echo whole is cut (detail::excerpt), the list is not.
  const std::string long_value(500, 'q');
  EXPECT_LT(not_a_choice("--x", long_value, V{"a"}).size(), 300u);

  auto refusal = [](auto&& parse) -> std::string {
    try {
      parse();
    } catch (const Error& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_EQ(parse_device_choice("cuda"), DeviceChoice::Cuda);
  EXPECT_EQ(refusal([] { parse_device_choice("Cuda"); }),
            "--device must be auto, cpu or cuda, got 'Cuda' (did you mean cuda?)");
  EXPECT_EQ(parse_balance_mode("class-weight"), BalanceMode::ClassWeight);
  EXPECT_EQ(refusal([] { parse_balance_mode("class-weights"); }),
            "--balance must be oversample, class-weight or none, got 'class-weights' (did you "
            "mean class-weight?)");
  EXPECT_EQ(parse_zoom_mode("keras"), ZoomMode::Independent);
  EXPECT_EQ(refusal([] { parse_zoom_mode("squash"); }),
            "--zoom-mode must be keras (x and y drawn independently) or isotropic, got 'squash'");
  EXPECT_EQ(parse_model_head("gap"), ModelHead::GlobalAverage);
  EXPECT_EQ(refusal([] { parse_model_head("gpa"); }),
            "--head must be flatten (the recipe) or gap (global average pooling), got 'gpa' (did "
            "you mean gap?)");
  EXPECT_EQ(parse_optimizer("adamw"), OptimizerKind::AdamW);
  EXPECT_EQ(parse_normalization("per-image"), InputNormalization::PerImage);
  EXPECT_EQ(parse_all_reduce("nccl"), AllReduceTransport::Nccl);
  EXPECT_EQ(parse_schedule_kind("cosine"), LearningRateScheduleOptions::Kind::Cosine);
  EXPECT_EQ(parse_schedule_kind("none"), std::nullopt);
  EXPECT_EQ(refusal([] { parse_schedule_kind("cosin"); }),
            "--schedule must be none (ReduceLROnPlateau), step, exponential or cosine, got "
            "'cosin' (did you mean cosine?)");
  BackendOptions backend;
  apply_precision("bf16", backend);
  EXPECT_TRUE(backend.bf16);
  EXPECT_FALSE(backend.allow_tf32);
  apply_precision("tf32", backend);
  EXPECT_FALSE(backend.bf16);
  EXPECT_TRUE(backend.allow_tf32);
  EXPECT_EQ(refusal([&] { apply_precision("fp8", backend); }),
            "--precision must be fp32, tf32 or bf16, got 'fp8'");
}

// Out of memory names the batch held and a smaller one for the flag that set it, says when the
// flag asked for more than was held, and, before any batch is held (reading the data), says that
// instead of advising a smaller batch.
TEST(TrainFlags, OutOfMemoryAdviceNamesWhatWasHeld) {
  const OutOfMemory host("allocating 4096 bytes", false, 4096), gpu("cudaMalloc", true, 0);
  const std::string step = training_memory_advice(host, {8, "--batch"}, 8, 0);
  EXPECT_NE(step.find("out of host memory with batch size 8: allocating 4096 bytes"),
            std::string::npos) << step;
  EXPECT_NE(step.find("e.g. --batch 4"), std::string::npos) << step;
  EXPECT_EQ(step.find("is more than"), std::string::npos) << step;
  const std::string clamped = training_memory_advice(gpu, {12, "--batch"}, 4096, 0);
  EXPECT_NE(clamped.find("out of GPU memory with batch size 12"), std::string::npos) << clamped;
  EXPECT_NE(clamped.find("e.g. --batch 6 (--batch 4096 is more than the 12 images of an epoch, "
                         "so a step holds 12)"),
            std::string::npos) << clamped;
  // --val-batch not given: validation's chunks are --batch's size, and --batch is named.
  const std::string chunk = training_memory_advice(host, {8, "--val-batch"}, 64, 0);
  EXPECT_NE(chunk.find("e.g. --val-batch 4 (--batch 64 is more than the 8 validation images, "
                       "so a validation chunk holds 8)"),
            std::string::npos) << chunk;
  const std::string given = training_memory_advice(host, {8, "--val-batch"}, 2, 4096);
  EXPECT_NE(given.find("(--val-batch 4096 is more than the 8 validation images"),
            std::string::npos) << given;
  for (const OutOfMemory* error : {&host, &gpu}) {
    const std::string reading = training_memory_advice(*error, {0, "--batch"}, 32, 0);
    EXPECT_NE(reading.find(std::string("out of ") + (error->on_device() ? "GPU" : "host") +
                           " memory while reading the data: " + error->what()),
              std::string::npos) << reading;
    EXPECT_EQ(reading.find("--batch"), std::string::npos) << reading;
  }
}

}  // namespace
}  // namespace pneumo::cli
