// Flag text -> the lower layers' types (see flag_text.hpp).
#include "cli/commands/flag_text.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "pneumo/error.hpp"

namespace pneumo::cli {

DeviceChoice parse_device_choice(const std::string& text) {
  return pick_choice<DeviceChoice>(
      "--device", text,
      {{"auto", DeviceChoice::Auto}, {"cpu", DeviceChoice::Cpu}, {"cuda", DeviceChoice::Cuda}});
}

void apply_precision(const std::string& text, BackendOptions& options) {
  enum class Precision { Fp32, Tf32, Bf16 };
  const Precision precision = pick_choice<Precision>(
      "--precision", text,
      {{"fp32", Precision::Fp32}, {"tf32", Precision::Tf32}, {"bf16", Precision::Bf16}});
  options.allow_tf32 = precision == Precision::Tf32;
  options.bf16 = precision == Precision::Bf16;
}

BalanceMode parse_balance_mode(const std::string& text) {
  return pick_choice<BalanceMode>("--balance", text,
                                  {{"oversample", BalanceMode::Oversample},
                                   {"class-weight", BalanceMode::ClassWeight},
                                   {"none", BalanceMode::None}});
}

size_t digits_start(const std::string& text) {
  size_t at = 0;
  while (at < text.size() && std::isspace(static_cast<unsigned char>(text[at]))) ++at;
  if (at < text.size() && (text[at] == '+' || text[at] == '-')) ++at;
  return at;
}

bool starts_hexadecimal(const std::string& text) {
  const size_t at = digits_start(text);
  return text.size() > at + 1 && text[at] == '0' && (text[at + 1] == 'x' || text[at + 1] == 'X');
}

std::optional<double> parse_decimal(const std::string& text) {
  if (starts_hexadecimal(text)) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) return std::nullopt;
  return value;
}

ValidationOptions parse_val_split(const std::string& text, uint64_t seed) {
  ValidationOptions options;
  options.seed = seed;
  if (text == "official") {
    options.source = ValidationSource::Official;
    return options;
  }
  const double value = parse_decimal(text).value_or(-1.0);
  if (!(value > 0.0 && value < 1.0))
    throw Error("--val-split '" + detail::excerpt(text) +
                "': expected 'official' or a fraction of train in (0, 1), e.g. 0.15 (every run "
                "needs validation images)");
  options.source = ValidationSource::Carve;
  options.fraction = value;
  return options;
}

std::optional<LearningRateScheduleOptions::Kind> parse_schedule_kind(const std::string& text) {
  using K = LearningRateScheduleOptions::Kind;
  return pick_choice<std::optional<K>>("--schedule", text,
                                       {{"none", std::nullopt, "ReduceLROnPlateau"},
                                        {"step", K::Step},
                                        {"exponential", K::Exponential},
                                        {"cosine", K::Cosine}});
}

OptimizerKind parse_optimizer(const std::string& text) {
  return pick_choice<OptimizerKind>(
      "--optimizer", text, {{"rmsprop", OptimizerKind::RmsProp}, {"adamw", OptimizerKind::AdamW}});
}

ZoomMode parse_zoom_mode(const std::string& text) {
  return pick_choice<ZoomMode>(
      "--zoom-mode", text,
      {{"keras", ZoomMode::Independent, "x and y drawn independently"},
       {"isotropic", ZoomMode::Isotropic}});
}

AllReduceTransport parse_all_reduce(const std::string& text) {
  return pick_choice<AllReduceTransport>("--all-reduce", text,
                                         {{"auto", AllReduceTransport::Auto},
                                          {"mpi", AllReduceTransport::Mpi},
                                          {"nccl", AllReduceTransport::Nccl}});
}

InputNormalization parse_normalization(const std::string& text) {
  return pick_choice<InputNormalization>(
      "--normalization", text,
      {{"unit", InputNormalization::Unit, "x/255"},
       {"per-image", InputNormalization::PerImage, "standardised per image"}});
}

ModelHead parse_model_head(const std::string& text) {
  return pick_choice<ModelHead>("--head", text,
                                {{"flatten", ModelHead::Flatten, "the recipe"},
                                 {"gap", ModelHead::GlobalAverage, "global average pooling"}});
}

std::string tuning_cache_path(const std::string& text) {
  if (text.empty()) throw Error("--tuning-cache: expected auto, none or a file path");
  if (text == "none") return "";
  if (text != "auto") return text;
  auto variable = [](const char* name) {
    const char* value = std::getenv(name);
    return std::string(value ? value : "");
  };
  const std::string chosen = variable("PNEUMO_TUNING_CACHE");
  if (!chosen.empty() && chosen != "auto") return tuning_cache_path(chosen);
  const std::string xdg = variable("XDG_CACHE_HOME"), home = variable("HOME");
  if (!xdg.empty()) return xdg + "/pneumo/tuning.json";
  if (!home.empty()) return home + "/.cache/pneumo/tuning.json";
  return "";
}

void check_threads(int threads) {
  if (threads < 0 || threads > kMaxThreads)
    throw UsageError("--threads must be in [0, " + std::to_string(kMaxThreads) +
                     "] (0: all cores), got " + std::to_string(threads));
}

namespace {

// Edits from `a` to `b`: characters added, dropped or changed, and two neighbours swapped (the
// optimal string alignment distance).
size_t edits_between(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

}  // namespace

std::vector<std::string> nearest_names(const std::string& typed,
                                       const std::vector<std::string>& known) {
  if (std::find(known.begin(), known.end(), typed) != known.end()) return {};
  size_t best = typed.size() <= 5 ? 1 : 2;  // the most edits allowed, then the fewest found
  std::vector<std::string> nearest;
  for (const std::string& name : known) {
    // The lengths' difference is edits already: a long value (a --config file's has no limit)
    // is passed over without its table.
    const size_t longer = std::max(typed.size(), name.size());
    if (longer - std::min(typed.size(), name.size()) > best) continue;
    const size_t edits = edits_between(typed, name);
    // Not every character replaced: "z" is one edit from "a", and no slip of the keys.
    if (edits > best || edits >= longer) continue;
    if (edits < best) nearest.clear();
    best = edits;
    if (std::find(nearest.begin(), nearest.end(), name) == nearest.end()) nearest.push_back(name);
  }
  return nearest;
}

std::string listed_with_or(const std::vector<std::string>& names) {
  std::string text;
  for (size_t i = 0; i < names.size(); ++i)
    text += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return text;
}

std::string listed_with_commas(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

std::string did_you_mean(const std::string& typed, const std::vector<std::string>& known) {
  std::string lower = typed;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::vector<std::string> nearest;
  if (lower != typed && std::find(known.begin(), known.end(), lower) != known.end())
    nearest = {lower};
  else
    nearest = nearest_names(lower, known);
  return nearest.empty() ? "" : " (did you mean " + listed_with_or(nearest) + "?)";
}

std::string not_a_choice(const std::string& flag, const std::string& value,
                         const std::vector<std::string>& names,
                         const std::vector<std::string>& described) {
  return flag + " must be " + listed_with_or(described.empty() ? names : described) + ", got '" +
         detail::excerpt(value) + "'" + did_you_mean(value, names);
}

}  // namespace pneumo::cli
