// The stress validation (see stress.hpp): a fixed list of transforms, each run through the model
// over the whole split with Trainer::predict_logits, and the worst and mean over them.
#include "pneumo/stress.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

namespace pneumo {

namespace {

StressVariant variant(const std::string& name, const std::string& description,
                      void (*set)(AugmentParams&)) {
  StressVariant v{name, description, AugmentParams{}};
  set(v.params);
  return v;
}

const ThresholdMetrics& applied(const MetricsReport& report) {
  return report.at_tuned ? *report.at_tuned : report.at_default;
}

}  // namespace

const std::vector<StressVariant>& stress_variants() {
  // Widths: the original images' aspect ratio differs by class (median width/height 1.22 NORMAL,
  // 1.50 PNEUMONIA in train, 1.35 for test NORMALs), so after squashing to a square a wider
  // original shows its anatomy narrower (width-0.8) and a narrower one wider (width-1.25).
  static const std::vector<StressVariant> variants{
      variant("width-0.8", "content squeezed to 0.8 of its width, border replicated",
              [](AugmentParams& p) { p.scale_x = 0.8f; }),
      variant("width-1.25", "content stretched to 1.25 of its width",
              [](AugmentParams& p) { p.scale_x = 1.25f; }),
      variant("darker", "brightness -0.15", [](AugmentParams& p) { p.brightness = -0.15f; }),
      variant("brighter", "brightness +0.15", [](AugmentParams& p) { p.brightness = 0.15f; }),
      variant("contrast-0.7", "contrast x0.7 about mid-grey",
              [](AugmentParams& p) { p.contrast = 0.7f; }),
      variant("contrast-1.3", "contrast x1.3 about mid-grey",
              [](AugmentParams& p) { p.contrast = 1.3f; }),
      variant("gamma-0.7", "gamma 0.7 (mid-tones lighter)", [](AugmentParams& p) { p.gamma = 0.7f; }),
      variant("gamma-1.5", "gamma 1.5 (mid-tones darker)", [](AugmentParams& p) { p.gamma = 1.5f; }),
      variant("blur", "3x3 binomial blur (sharpness 0)", [](AugmentParams& p) { p.sharpness = 0.0f; }),
      variant("sharpen", "sharpness 2 (unsharp mask of the same blur)",
              [](AugmentParams& p) { p.sharpness = 2.0f; }),
  };
  return variants;
}

StressReport evaluate_stress(Trainer& trainer, const ImageSet& data,
                             const std::vector<uint8_t>& labels, std::optional<double> threshold) {
  return evaluate_stress(
      [&](const AugmentParams& p) { return trainer.predict_logits(data, nullptr, &p); }, labels,
      threshold);
}

StressReport evaluate_stress(const VariantPredictor& predict, const std::vector<uint8_t>& labels,
                             std::optional<double> threshold, const VariantProgress& on_variant) {
  StressReport report;
  report.threshold = threshold.value_or(0.5);
  report.worst_accuracy = report.worst_auc = report.worst_sensitivity =
      report.worst_specificity = std::numeric_limits<double>::infinity();
  double accuracy_sum = 0.0;
  for (const StressVariant& v : stress_variants()) {
    if (on_variant) on_variant(report.variants.size(), v.name);
    const std::vector<float> logits = predict(v.params);
    MetricsReport metrics = evaluate_binary(v.name, logits, labels, threshold);
    const ThresholdMetrics& at = applied(metrics);
    if (at.accuracy < report.worst_accuracy) {
      report.worst_accuracy = at.accuracy;
      report.worst_accuracy_variant = v.name;
    }
    accuracy_sum += at.accuracy;
    // fmin skips NaN (a split without one class has no sensitivity or AUC).
    report.worst_auc = std::fmin(report.worst_auc, metrics.auc_defined ? metrics.roc_auc : NAN);
    report.worst_sensitivity = std::fmin(report.worst_sensitivity, at.sensitivity);
    report.worst_specificity = std::fmin(report.worst_specificity, at.specificity);
    report.variants.emplace_back(v.name, std::move(metrics));
  }
  if (on_variant) on_variant(report.variants.size(), "");
  report.mean_accuracy = accuracy_sum / static_cast<double>(report.variants.size());
  for (double* value : {&report.worst_auc, &report.worst_sensitivity, &report.worst_specificity})
    if (std::isinf(*value)) *value = NAN;
  return report;
}

std::map<std::string, double> stress_as_values(const StressReport& report,
                                               const std::string& prefix) {
  return {{prefix + "worst_accuracy", report.worst_accuracy},
          {prefix + "mean_accuracy", report.mean_accuracy},
          {prefix + "worst_auc", report.worst_auc},
          {prefix + "worst_sensitivity", report.worst_sensitivity},
          {prefix + "worst_specificity", report.worst_specificity}};
}

nlohmann::json to_json(const StressReport& report) {
  auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  nlohmann::json variants = nlohmann::json::array();
  const auto& all = stress_variants();
  for (size_t i = 0; i < report.variants.size(); ++i)
    variants.push_back({{"name", report.variants[i].first},
                        {"description", i < all.size() ? all[i].description : ""},
                        {"metrics", to_json(report.variants[i].second)}});
  return {{"variants", variants},
          {"threshold", report.threshold},  // the summary's: evaluate's applied one, training's 0.5
          {"worst_accuracy", number(report.worst_accuracy)},
          {"worst_accuracy_variant", report.worst_accuracy_variant},
          {"mean_accuracy", number(report.mean_accuracy)},
          {"worst_auc", number(report.worst_auc)},
          {"worst_sensitivity", number(report.worst_sensitivity)},
          {"worst_specificity", number(report.worst_specificity)}};
}

std::string format_stress_table(const StressReport& report) {
  // As the metrics table: four decimals, "n/a" where a ratio is undefined (a class missing).
  const auto cell = [](double value) -> std::string {
    if (!std::isfinite(value)) return "n/a";
    std::ostringstream text;
    text << std::fixed << std::setprecision(4) << value;
    return text.str();
  };
  std::ostringstream out;
  if (!report.variants.empty())
    out << "stress variants at threshold "
        << format_threshold(applied(report.variants.front().second).threshold) << "\n";
  out << "stress variant   accuracy  sensitivity  specificity  auc\n";
  for (const auto& [name, metrics] : report.variants) {
    const ThresholdMetrics& at = applied(metrics);
    out << std::left << std::setw(16) << name << std::right << " " << std::setw(8)
        << cell(at.accuracy) << "  " << std::setw(11) << cell(at.sensitivity) << "  "
        << std::setw(11) << cell(at.specificity) << "  " << cell(metrics.roc_auc) << "\n";
  }
  out << "stress worst accuracy " << cell(report.worst_accuracy) << " ("
      << report.worst_accuracy_variant << "), mean accuracy " << cell(report.mean_accuracy)
      << ", worst auc " << cell(report.worst_auc) << ", worst sensitivity "
      << cell(report.worst_sensitivity) << ", worst specificity "
      << cell(report.worst_specificity) << "\n";
  return out.str();
}

}  // namespace pneumo
