// A validation that can see shift: the same split scored again under a fixed set of transforms
// (width squeezed and stretched as a wider or narrower original would look after squashing,
// brightness, contrast, gamma, blur and sharpening), each applied identically to every image.
// Used by `pneumo evaluate --stress` and, per epoch, by `pneumo train --val-stress` (whose
// summaries "val_stress_worst_accuracy", ... any callback can monitor).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pneumo/augment.hpp"
#include "pneumo/metrics.hpp"
#include "pneumo/trainer.hpp"

namespace pneumo {

struct StressVariant {
  std::string name;         // e.g. "width-0.8"
  std::string description;  // what it does to the image
  AugmentParams params;     // applied to every image of the split
};

// The fixed set, in report order. No randomness: the same images come out every time.
const std::vector<StressVariant>& stress_variants();

struct StressReport {
  std::vector<std::pair<std::string, MetricsReport>> variants;  // in stress_variants() order
  // Over the variants, at the threshold the reports apply (the tuned one when given, else 0.5):
  double worst_accuracy = 0, mean_accuracy = 0, worst_auc = 0;
  double worst_sensitivity = 0, worst_specificity = 0;
  std::string worst_accuracy_variant;
  double threshold = 0.5;  // the probability threshold the summary above applied
};

// Scores every variant: `predict` returns the logits of the split's images (labels: 0/1 per
// image, in the same order) with the variant's transform applied. threshold: applied as
// MetricsReport's tuned threshold when given. on_variant, when given, is called before each
// variant (variants done so far, the name of the next) and once at the end (all, "").
using VariantPredictor = std::function<std::vector<float>(const AugmentParams&)>;
using VariantProgress = std::function<void(size_t done, const std::string& next)>;
StressReport evaluate_stress(const VariantPredictor& predict, const std::vector<uint8_t>& labels,
                             std::optional<double> threshold = std::nullopt,
                             const VariantProgress& on_variant = {});
// The same for one model: trainer.predict_logits(data, nullptr, &variant).
StressReport evaluate_stress(Trainer& trainer, const ImageSet& data,
                             const std::vector<uint8_t>& labels,
                             std::optional<double> threshold = std::nullopt);

// prefix + "worst_accuracy", "mean_accuracy", "worst_auc", "worst_sensitivity",
// "worst_specificity" (e.g. "val_stress_worst_accuracy" for the callbacks).
std::map<std::string, double> stress_as_values(const StressReport& report,
                                               const std::string& prefix);
// {variants: [{name, description, metrics (as to_json(MetricsReport))}], threshold,
//  worst_accuracy, ...}
nlohmann::json to_json(const StressReport& report);
// One row per variant: accuracy, sensitivity, specificity, AUC; then the summary line.
std::string format_stress_table(const StressReport& report);

}  // namespace pneumo
