// Flag text -> the lower layers' types (see flag_text.hpp).
#include "cli/commands/flag_text.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "pneumo/error.hpp"

namespace pneumo::cli {

DeviceChoice parse_device_choice(const std::string& text) {
  if (text == "auto") return DeviceChoice::Auto;
  if (text == "cpu") return DeviceChoice::Cpu;
  if (text == "cuda") return DeviceChoice::Cuda;
  throw Error("unknown device '" + text + "': expected auto, cpu or cuda");
}

void apply_precision(const std::string& text, BackendOptions& options) {
  if (text != "fp32" && text != "tf32" && text != "bf16")
    throw Error("--precision must be fp32, tf32 or bf16, got '" + text + "'");
  options.allow_tf32 = text == "tf32";
  options.bf16 = text == "bf16";
}

BalanceMode parse_balance_mode(const std::string& text) {
  if (text == "oversample") return BalanceMode::Oversample;
  if (text == "class-weight") return BalanceMode::ClassWeight;
  if (text == "none") return BalanceMode::None;
  throw Error("--balance '" + text + "': expected oversample, class-weight or none");
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

LearningRateScheduleOptions::Kind parse_schedule_kind(const std::string& text) {
  using Kind = LearningRateScheduleOptions::Kind;
  if (text == "step") return Kind::Step;
  if (text == "exponential") return Kind::Exponential;
  if (text == "cosine") return Kind::Cosine;
  throw Error("unknown learning-rate schedule '" + text + "': expected step, exponential or cosine");
}

OptimizerKind parse_optimizer(const std::string& text) {
  if (text == "rmsprop") return OptimizerKind::RmsProp;
  if (text == "adamw") return OptimizerKind::AdamW;
  throw Error("--optimizer must be rmsprop or adamw, got '" + text + "'");
}

ZoomMode parse_zoom_mode(const std::string& text) {
  if (text == "keras") return ZoomMode::Independent;
  if (text == "isotropic") return ZoomMode::Isotropic;
  throw Error("--zoom-mode must be keras (x and y drawn independently) or isotropic, got '" +
              text + "'");
}

AllReduceTransport parse_all_reduce(const std::string& text) {
  if (text == "auto") return AllReduceTransport::Auto;
  if (text == "mpi") return AllReduceTransport::Mpi;
  if (text == "nccl") return AllReduceTransport::Nccl;
  throw Error("--all-reduce must be auto, mpi or nccl, got '" + text + "'");
}

InputNormalization parse_normalization(const std::string& text) {
  if (text == "unit") return InputNormalization::Unit;
  if (text == "per-image") return InputNormalization::PerImage;
  throw Error("--normalization must be unit (x/255) or per-image (standardised per image), got '" +
              text + "'");
}

ModelHead parse_model_head(const std::string& text) {
  if (text == "flatten") return ModelHead::Flatten;
  if (text == "gap") return ModelHead::GlobalAverage;
  throw Error("--head must be flatten (the recipe) or gap (global average pooling), got '" +
              text + "'");
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
    const size_t edits = edits_between(typed, name);
    if (edits > best) continue;
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

}  // namespace pneumo::cli
