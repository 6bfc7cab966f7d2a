// Binary classification metrics for NORMAL (label 0) vs PNEUMONIA (label 1) from the model's
// logits: loss, accuracy, sensitivity, specificity, precision, F1, ROC AUC (ties count one half),
// the confusion matrix, the ROC curve, and the decision threshold chosen on validation by Youden's J.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pneumo {

// THE decision rule, used everywhere (metrics, predict, the fused loss kernel's correct count at
// 0.5): an image is called PNEUMONIA iff sigmoid(logit) > threshold. It is evaluated exactly as
// logit > logit_of(threshold) (logit_of(0.5) == 0), so probabilities that round to 0 or 1 in
// floating point cannot flip a decision. Threshold must be in [0, 1].
bool predicts_pneumonia(float logit, double threshold);
double sigmoid(double logit);           // overflow-free
double logit_of(double probability);    // log(p / (1 - p)); 0 -> -inf, 1 -> +inf
double log_sigmoid(double logit);       // log(sigmoid(logit)), finite for every finite logit
double log_sum_exp(const std::vector<double>& values);  // log(sum(exp(v))) without overflow; not empty

// Mean binary cross-entropy over the samples, computed from logits in double precision as
// max(z, 0) - z y + log1p(exp(-|z|)), which is exact and finite for every finite logit.
double mean_bce_with_logits(const std::vector<float>& logits, const std::vector<uint8_t>& labels);

// [[TN FP] [FN TP]]: rows are the true class, columns the predicted one.
struct ConfusionMatrix {
  int64_t true_negatives = 0, false_positives = 0, false_negatives = 0, true_positives = 0;
  int64_t total() const {
    return true_negatives + false_positives + false_negatives + true_positives;
  }
};

// Everything that depends on the threshold. A ratio whose denominator is zero (sensitivity
// without positives, precision without predicted positives, ...) is NaN, written null in JSON.
struct ThresholdMetrics {
  double threshold = 0.5;
  ConfusionMatrix confusion;
  double accuracy = 0, sensitivity = 0, specificity = 0, precision = 0, f1 = 0;
  double youden_j = 0;  // sensitivity + specificity - 1
};

ConfusionMatrix confusion_matrix(const std::vector<float>& logits,
                                 const std::vector<uint8_t>& labels, double threshold);
ThresholdMetrics metrics_at_threshold(const std::vector<float>& logits,
                                      const std::vector<uint8_t>& labels, double threshold);

// One ROC point per distinct logit, from (0, 0) to (1, 1): the classifier that calls PNEUMONIA
// every image whose probability is >= `probability` (+inf at the first point: none). Tied logits
// enter together, so a tie is a diagonal segment.
struct RocPoint {
  double false_positive_rate = 0;
  double true_positive_rate = 0;
  double probability = 0;
};
// Empty when the labels lack a class (the rates are undefined).
std::vector<RocPoint> roc_curve(const std::vector<float>& logits,
                                const std::vector<uint8_t>& labels);
// Area under that curve by the trapezoid rule, equal to the probability that a random PNEUMONIA
// image scores above a random NORMAL one with ties counting 1/2 (Mann-Whitney). NaN when the
// labels lack a class.
double roc_auc(const std::vector<float>& logits, const std::vector<uint8_t>& labels);

// Youden's J on a validation split. Candidate cuts lie between consecutive distinct logits (at
// their midpoint in logit space, so the cut is never equal to a score), plus one logit unit beyond
// the extremes (nothing / everything positive). The cut with the largest J wins, compared exactly
// as TP * N - FP * P in integers. Tie-break: among equally good cuts, the one closest to
// probability 0.5 (the untuned default), and of two equally close the higher one (fewer false
// alarms). Without both classes J is undefined: defined = false and threshold = 0.5.
// The returned probability is checked to reproduce the chosen split under predicts_pneumonia,
// and is the shortest decimal that does so within the middle half of the gap around the midpoint
// (0.7 for a cut between logits 0.5 and 1): the stored threshold is the number printed.
// Limit: beyond |logit| ~ 23 (p within 1e-10 of 0 or 1) neighbouring float logits can map to
// the same double probability; a cut between two such scores then lands on one side of them.
struct ThresholdChoice {
  double threshold = 0.5;  // probability; apply with predicts_pneumonia
  double logit = 0.0;      // the same cut in logit space
  double youden_j = 0.0;
  bool defined = false;
  // The best cut lies where probabilities round to 0 or 1 in double (|logit| beyond about 36.7,
  // a saturated model), so no probability threshold applies it; defined is then false and 0.5 kept.
  bool saturated = false;
  double saturated_logit = 0.0;  // that cut, when saturated
  // No cut beats chance (J <= 0 at best: the scores rank validation no better than a coin, or
  // worse): the best cut would call every image one class; defined is then false and 0.5 kept.
  bool chance = false;
};
ThresholdChoice choose_threshold_youden(const std::vector<float>& logits,
                                        const std::vector<uint8_t>& labels);

// The full account of one split. at_tuned is filled when a threshold is applied besides 0.5
// (the model's stored one, chosen on validation and applied unchanged to test, or one given on
// the command line); applied_rule says where it came from, in words ("Youden's J on 886
// validation images", "default 0.5 (validation lacks a class)", "given on the command line").
struct MetricsReport {
  std::string split;  // "val", "test", ...
  int64_t count = 0, positives = 0, negatives = 0;
  double loss = 0;
  double roc_auc = 0;
  bool auc_defined = false;
  ThresholdMetrics at_default;  // threshold 0.5
  std::optional<ThresholdMetrics> at_tuned;
  std::string applied_rule;
  // The applied threshold was tuned on these very images (validation scored with the Youden cut
  // chosen on it): its row is optimistic, and the table, JSON and report say so.
  bool applied_in_sample = false;
};
MetricsReport evaluate_binary(const std::string& split, const std::vector<float>& logits,
                              const std::vector<uint8_t>& labels,
                              std::optional<double> applied_threshold = std::nullopt,
                              std::string applied_rule = "");

// JSON: {split, count, positives, negatives, loss, roc_auc (null if undefined), auc_defined,
// default_threshold: {threshold, confusion_matrix [[TN,FP],[FN,TP]], accuracy, sensitivity,
// specificity, precision, f1, youden_j}, applied_threshold: {...} or null (the applied
// threshold, whatever its rule; also under its older name tuned_threshold), threshold_rule:
// applied_rule or null, applied_threshold_in_sample}. NaN -> null.
nlohmann::json to_json(const ThresholdMetrics& metrics);
nlohmann::json to_json(const MetricsReport& report);
nlohmann::json to_json(const std::vector<RocPoint>& curve);  // {fpr: [...], tpr: [...], probability: [...]}

// Per-epoch values for callbacks and logs at threshold 0.5: prefix + loss, accuracy, auc,
// sensitivity, specificity, precision, f1 (e.g. "val_accuracy", the recipe's monitor).
std::map<std::string, double> metrics_as_values(const MetricsReport& report,
                                                const std::string& prefix);

// A score in [0, 1] (accuracy, AUC, ...) with `decimals` digits, or more where they would round
// it onto 1 or 0 while it is not (AUC 0.99997, 3 pairs of 91,260 out of order, printed as
// "1.0000"); NaN as "n/a".
std::string format_fraction(double value, int decimals);
// An image's probability beside the label it got at `threshold` (explain's file names): as
// format_fraction, with more digits where rounding would carry it onto the threshold or to its
// other side from the label (0.6996, called NORMAL at 0.7, is "0.6996", not "0.700").
std::string format_decided_probability(double probability, bool predicted_pneumonia,
                                       double threshold, int decimals);
// A decision threshold as tables print it: exactly, in the fewest digits that read back as it
// (0.7, a typed 0.554952600001), so the printed cut is the one applied.
std::string format_threshold(double threshold);

// The table `pneumo evaluate` prints: counts, loss, AUC, one row per threshold, and the
// confusion matrix of each threshold with named rows and columns.
std::string format_metrics_table(const MetricsReport& report);

// Labels held as floats (the loss kernel's input) -> 0/1 bytes; anything but 0 or 1 is refused.
std::vector<uint8_t> labels_from_floats(const std::vector<float>& labels);

}  // namespace pneumo
