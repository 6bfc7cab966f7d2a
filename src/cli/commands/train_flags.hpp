// The table of `pneumo train` flags: one row per flag holds its name, help, the TrainOptions field
// it sets, the check of its value, and whether runs record it. CLI registration, config.json,
// validation and the --config / --resume round trip are all read off this one table, so a new
// flag is one row (plus its field in TrainOptions) and cannot be half-wired.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands/commands.hpp"

namespace CLI {
class App;
class Option;
class Validator;
}

namespace pneumo::cli {

struct TrainFlag {
  std::string name;  // without the leading "--"
  std::string help;
  // Written to config.json (and so to checkpoints) and inherited by --config / --resume. False
  // for --config and --resume themselves and for the hidden test hook --inject-fault.
  bool recorded = true;
  // A value that passes `check` and differs from the default, and one that `check` refuses, as
  // command-line text; the round-trip test walks the table with them. Empty: not applicable.
  std::string example;
  std::string refused;
  std::function<void(CLI::App&, TrainOptions&)> add;         // registers the flag
  std::function<nlohmann::json(const TrainOptions&)> value;  // as config.json writes it
  std::function<void(const TrainOptions&)> check;            // throws UsageError naming --name
};

// For an unsigned option (a seed): refuses a negative number, which the conversion would wrap
// to 2^64 - 1 ("--seed must be >= 0, got -1").
CLI::Validator non_negative_integer();

// A boolean switch as every command takes one: a bare `--name` means true, a value still wins
// (`--name false`, `--name=true`); --help shows the default. Returns the option.
CLI::Option* add_switch(CLI::App& command, const std::string& name, bool& value,
                        const std::string& help);

// Every flag, in --help order.
const std::vector<TrainFlag>& train_flags();

// Registers every flag of the table on `command`, bound to `options`.
void add_train_flags(CLI::App& command, TrainOptions& options);

// A JSON configuration (a --config file, or a checkpoint's recorded configuration) as flags
// "--key=value", to be placed before the user's own so that the command line wins. "out" and
// "resume" are skipped: where a run writes is never inherited. `source` names the file in errors.
std::vector<std::string> flags_from_json(const nlohmann::json& config, const std::string& source);

}  // namespace pneumo::cli
