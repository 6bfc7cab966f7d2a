// The text of `pneumo` flags that name a choice, read into the types the lower layers take:
// parsing a flag's value lives with the command line (the train flag table, evaluate, predict,
// explain, bench), not in the layer that uses the value. Each function throws pneumo::Error
// naming the accepted values; the table (train_flags.cpp) turns that into a usage error naming
// the flag.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "pneumo/augment.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/callbacks.hpp"
#include "pneumo/distributed.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/trainer.hpp"

namespace pneumo::cli {

DeviceChoice parse_device_choice(const std::string& text);  // "auto" | "cpu" | "cuda"
// --precision: "fp32" | "tf32" | "bf16", set into the backend options' precision fields.
void apply_precision(const std::string& text, BackendOptions& options);
BalanceMode parse_balance_mode(const std::string& text);  // "oversample" | "class-weight" | "none"
// A number as a flag's text: decimal, nothing after it, no C hexadecimal float (strtod reads
// "0x1p-10", which no flag's documentation promises); nullopt otherwise. nan and inf read as
// themselves: each flag's range check refuses them.
std::optional<double> parse_decimal(const std::string& text);
// Where a number's digits start: after the white space and the sign that strtod, strtoll and
// CLI11 pass over.
size_t digits_start(const std::string& text);
bool starts_hexadecimal(const std::string& text);  // "0x..." or "0X..." from digits_start
// --val-split: "official" (the dataset's own val split) or a fraction in (0, 1), e.g. "0.15".
ValidationOptions parse_val_split(const std::string& text, uint64_t seed = 0);
// The carve's seed: --val-seed, or --seed where that is -1 (its default, and what a checkpoint
// from before the flag carved with).
inline uint64_t carve_seed(int64_t val_seed, uint64_t seed) {
  return val_seed >= 0 ? static_cast<uint64_t>(val_seed) : seed;
}
// --schedule: "step" | "exponential" | "cosine", or "none" (nullopt: no schedule, the
// ReduceLROnPlateau callback instead).
std::optional<LearningRateScheduleOptions::Kind> parse_schedule_kind(const std::string& text);
OptimizerKind parse_optimizer(const std::string& text);  // "rmsprop" | "adamw"
ZoomMode parse_zoom_mode(const std::string& text);  // "keras" | "isotropic"
InputNormalization parse_normalization(const std::string& text);  // "unit" | "per-image"
ModelHead parse_model_head(const std::string& text);  // "flatten" | "gap"
AllReduceTransport parse_all_reduce(const std::string& text);  // "auto" | "mpi" | "nccl"
// --tuning-cache: "none" (""), a path, or "auto": $PNEUMO_TUNING_CACHE when set (its own "none"
// included), else $XDG_CACHE_HOME/pneumo/tuning.json, else $HOME/.cache/pneumo/tuning.json
// ("" when neither variable is set).
std::string tuning_cache_path(const std::string& text);

// The most CPU threads a command takes (--threads): each starts a worker with its own workspace,
// so a typo of 5000 cost a minute and 8.5 GB before anything ran. check_threads throws the
// UsageError "--threads must be in [0, 1024] (0: all cores), got N" outside [0, kMaxThreads].
constexpr int kMaxThreads = 1024;
void check_threads(int threads);

// "A, B, C" ("" for none): a list inside a message that goes on after it.
std::string listed_with_commas(const std::vector<std::string>& names);
// The names in `known` nearest to `typed` when it looks like a slip of the keys (a flag or
// command name typed wrong: `--epoch` for `--epochs`, `trian` for `train`): the fewest edits, each
// a character added, dropped or changed or two neighbours swapped, and at most 1 edit for a name
// of up to five characters, 2 for a longer one, and fewer than the longer name's length (not
// every character replaced); in `known`'s order, none when nothing is that near or `typed` is
// itself in `known`.
std::vector<std::string> nearest_names(const std::string& typed,
                                       const std::vector<std::string>& known);
// "A", "A or B", "A, B or C" ("" for none).
std::string listed_with_or(const std::vector<std::string>& names);
// " (did you mean A?)" when `typed` is the same letters as a name in `known` in another case
// ("CPU" for "cpu"), or, in lower case, a slip of the keys from names there (nearest_names:
// "CUDE" for "cuda"); "" otherwise.
std::string did_you_mean(const std::string& typed, const std::vector<std::string>& known);

// The error of a choice flag given a value it does not take: "FLAG must be A, B or C, got 'x'",
// then did_you_mean's words. `described` is the list as shown (each name, or a name with its
// meaning: "keras (x and y drawn independently)"); empty: the names themselves.
std::string not_a_choice(const std::string& flag, const std::string& value,
                         const std::vector<std::string>& names,
                         const std::vector<std::string>& described = {});

// One accepted value of a choice flag: its text, what it reads as, and (optionally) a few words
// on what it means for the error's list.
template <class T>
struct Choice {
  const char* name;
  T value;
  const char* meaning = nullptr;
};

// not_a_choice for a table of choices (below): the names, each with its meaning where given.
template <class T>
std::string not_a_choice(const std::string& flag, const std::string& value,
                         std::initializer_list<Choice<T>> choices) {
  std::vector<std::string> names, described;
  for (const Choice<T>& choice : choices) {
    names.emplace_back(choice.name);
    described.push_back(choice.meaning ? names.back() + " (" + choice.meaning + ")"
                                       : names.back());
  }
  return not_a_choice(flag, value, names, described);
}

// `text` read as the choice of that name, or pneumo::Error(not_a_choice(...)).
template <class T>
T pick_choice(const std::string& flag, const std::string& text,
              std::initializer_list<Choice<T>> choices) {
  for (const Choice<T>& choice : choices)
    if (text == choice.name) return choice.value;
  throw Error(not_a_choice(flag, text, choices));
}

// Runs `parse` (one of the functions above, or any check that throws pneumo::Error) as the check
// of `flag` and returns what it returns: the plain Error it throws (which names the accepted
// values) becomes a UsageError (exit status 2) that names the flag.
template <class Parse>
auto as_usage(const std::string& flag, Parse&& parse) -> decltype(parse()) {
  try {
    return parse();
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    const std::string why = e.what();
    throw UsageError(why.find(flag) == std::string::npos ? flag + ": " + why : why);
  }
}

}  // namespace pneumo::cli
