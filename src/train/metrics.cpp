// Binary classification metrics from logits: counting at a threshold, the ROC curve and its
// area with ties, Youden's threshold, and the report's JSON and text forms.
// Everything is computed in double precision on the host; inputs are a few thousand scores.
#include "pneumo/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <limits>
#include <numeric>
#include <sstream>

#include "pneumo/error.hpp"

namespace pneumo {

using nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInfinity = std::numeric_limits<double>::infinity();

double ratio(int64_t numerator, int64_t denominator) {
  return denominator == 0 ? kNaN
                          : static_cast<double>(numerator) / static_cast<double>(denominator);
}

json number_or_null(double value) { return std::isfinite(value) ? json(value) : json(nullptr); }

// Same length, not empty, labels 0 or 1, logits finite: anything else is a caller's bug or a
// broken model, and sorting NaNs would silently scramble the ROC.
void check_inputs(const std::vector<float>& logits, const std::vector<uint8_t>& labels,
                  const char* what) {
  if (logits.size() != labels.size())
    throw Error(detail::concat(what, ": ", logits.size(), " logits but ", labels.size(),
                               " labels"));
  if (logits.empty()) throw Error(detail::concat(what, ": no samples"));
  for (size_t i = 0; i < logits.size(); ++i) {
    if (labels[i] > 1)
      throw Error(detail::concat(what, ": label ", static_cast<int>(labels[i]), " at index ", i,
                                 " is neither 0 (NORMAL) nor 1 (PNEUMONIA)"));
    if (!std::isfinite(logits[i]))
      throw Error(detail::concat(what, ": logit at index ", i, " is ", logits[i],
                                 " (the model produced a non-finite output)"));
  }
}

void check_threshold(double threshold) {
  if (!(threshold >= 0.0 && threshold <= 1.0))
    throw Error(detail::concat("decision threshold ", threshold, " is outside [0, 1]"));
}

// Distinct logits from highest to lowest, with how many of each class hold each one.
struct ScoreGroup {
  float logit;
  int64_t positives = 0, negatives = 0;
};

std::vector<ScoreGroup> group_by_score(const std::vector<float>& logits,
                                       const std::vector<uint8_t>& labels) {
  std::vector<size_t> order(logits.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  std::vector<ScoreGroup> groups;
  for (size_t index : order) {
    if (groups.empty() || groups.back().logit != logits[index]) groups.push_back({logits[index]});
    (labels[index] ? groups.back().positives : groups.back().negatives) += 1;
  }
  return groups;
}

// The decimal with the fewest significant digits near `threshold` that still separates `above`
// from `below` and lies in the middle half of the gap between them (in logit space, around the
// midpoint `logit_cut`): the stored cut is then the number printed, and still about as far from
// either score. `threshold` itself (all 17 digits) when no shorter one does. A full-precision cut
// printed with six digits contradicted its own counts ("p > 0.999999" beside a NORMAL image of p
// 0.99999908 called negative), and typed back as --threshold gave another confusion matrix. Any
// cut between the two scores makes the same decisions on the images it was tuned on.
double shortest_separating_decimal(double threshold, double logit_cut, float above, float below) {
  const double quarter = 0.25 * (static_cast<double>(above) - static_cast<double>(below));
  for (int digits = 1; digits <= 16; ++digits) {
    char text[40];
    std::snprintf(text, sizeof text, "%.*e", digits - 1, threshold);
    const double rounded = std::strtod(text, nullptr);
    // The nearest decimal of this length, and its neighbours one unit in the last place away.
    const double unit = std::pow(10.0, std::floor(std::log10(std::fabs(rounded))) - (digits - 1));
    for (const double candidate : {rounded, rounded - unit, rounded + unit}) {
      std::snprintf(text, sizeof text, "%.*e", digits - 1, candidate);
      const double decimal = std::strtod(text, nullptr);
      if (decimal > 0.0 && decimal < 1.0 && predicts_pneumonia(above, decimal) &&
          !predicts_pneumonia(below, decimal) &&
          std::fabs(logit_of(decimal) - logit_cut) <= quarter)
        return decimal;
    }
  }
  return threshold;
}

// A probability threshold whose decisions separate `above` (called positive) from `below`
// (called negative) under predicts_pneumonia, starting from the cut `logit_cut` between them.
// The probability <-> logit round trip can move the cut by a few ulps, so the result is checked
// with the shipped rule and nudged by one double at a time if needed.
double separating_threshold(double logit_cut, float above, float below) {
  double threshold = sigmoid(logit_cut);
  for (int step = 0; step < 64; ++step) {
    if (!predicts_pneumonia(above, threshold))
      threshold = std::nextafter(threshold, 0.0);
    else if (predicts_pneumonia(below, threshold))
      threshold = std::nextafter(threshold, 1.0);
    else
      break;
  }
  return shortest_separating_decimal(threshold, logit_cut, above, below);
}

std::string format_ratio(double value) { return format_fraction(value, 4); }

}  // namespace

std::string format_fraction(double value, int decimals) {
  if (std::isnan(value)) return "n/a";
  char text[40];
  for (int shown = decimals; shown <= 15; ++shown) {
    std::snprintf(text, sizeof text, "%.*f", shown, value);
    const double read = std::strtod(text, nullptr);
    // Rounded onto 1 or 0 (a perfect or a null score) while it is not: more digits.
    if (!((read == 1.0 && value != 1.0) || (read == 0.0 && value != 0.0))) return text;
  }
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

std::string format_decided_probability(double probability, bool predicted_pneumonia,
                                       double threshold, int decimals) {
  if (std::isnan(probability)) return "n/a";
  char text[40];
  for (int shown = decimals; shown <= 17; ++shown) {
    std::snprintf(text, sizeof text, "%.*f", shown, probability);
    const double read = std::strtod(text, nullptr);
    const bool onto_end = (read == 1.0 && probability != 1.0) || (read == 0.0 && probability != 0.0);
    // On the cut itself only if p is (a label at p == cut is read from the rule, p > cut).
    const bool on_cut = read == threshold && probability != threshold;
    if (!onto_end && !on_cut && (read > threshold) == predicted_pneumonia) return text;
  }
  // The label disagrees with p itself (the decision is made on the logit): every digit.
  std::snprintf(text, sizeof text, "%.17g", probability);
  return text;
}

std::string format_threshold(double threshold) {
  // Exactly: the shortest decimal that reads back as this threshold. A cut printed rounded
  // contradicted the counts beside it (an image's p between the printed and the applied cut), and
  // typed back as --threshold applied another one. Youden's cuts are chosen short
  // (shortest_separating_decimal), so the exact text is short; a typed one is printed as typed.
  char text[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, threshold);
    if (std::strtod(text, nullptr) == threshold) break;
  }
  return text;
}

// ---- The decision rule and the loss ----------------------------------------------------------

double sigmoid(double logit) {
  if (logit >= 0) return 1.0 / (1.0 + std::exp(-logit));
  double e = std::exp(logit);
  return e / (1.0 + e);
}

double log_sigmoid(double logit) {
  // -softplus(-z): log1p keeps the small term exact when exp(-|z|) is tiny.
  return std::min(logit, 0.0) - std::log1p(std::exp(-std::fabs(logit)));
}

double log_sum_exp(const std::vector<double>& values) {
  PNEUMO_CHECK(!values.empty(), "log_sum_exp: no values");
  const double top = *std::max_element(values.begin(), values.end());
  if (!std::isfinite(top)) return top;
  double sum = 0.0;
  for (double v : values) sum += std::exp(v - top);
  return top + std::log(sum);
}

double logit_of(double probability) {
  check_threshold(probability);
  if (probability == 0.5) return 0.0;  // exactly, so the default agrees with the kernel's z > 0
  return std::log(probability / (1.0 - probability));
}

bool predicts_pneumonia(float logit, double threshold) {
  return static_cast<double>(logit) > logit_of(threshold);
}

double mean_bce_with_logits(const std::vector<float>& logits, const std::vector<uint8_t>& labels) {
  check_inputs(logits, labels, "binary cross-entropy");
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    double z = logits[i], y = labels[i];
    sum += std::max(z, 0.0) - z * y + std::log1p(std::exp(-std::fabs(z)));
  }
  return sum / static_cast<double>(logits.size());
}

// ---- Threshold metrics ---------------------------------------------------------------------

ConfusionMatrix confusion_matrix(const std::vector<float>& logits,
                                 const std::vector<uint8_t>& labels, double threshold) {
  check_inputs(logits, labels, "confusion matrix");
  double cut = logit_of(threshold);
  ConfusionMatrix matrix;
  for (size_t i = 0; i < logits.size(); ++i) {
    bool predicted = static_cast<double>(logits[i]) > cut;  // predicts_pneumonia, hoisted
    if (labels[i])
      (predicted ? matrix.true_positives : matrix.false_negatives) += 1;
    else
      (predicted ? matrix.false_positives : matrix.true_negatives) += 1;
  }
  return matrix;
}

ThresholdMetrics metrics_at_threshold(const std::vector<float>& logits,
                                      const std::vector<uint8_t>& labels, double threshold) {
  ThresholdMetrics m;
  m.threshold = threshold;
  m.confusion = confusion_matrix(logits, labels, threshold);
  const ConfusionMatrix& c = m.confusion;
  m.accuracy = ratio(c.true_positives + c.true_negatives, c.total());
  m.sensitivity = ratio(c.true_positives, c.true_positives + c.false_negatives);
  m.specificity = ratio(c.true_negatives, c.true_negatives + c.false_positives);
  m.precision = ratio(c.true_positives, c.true_positives + c.false_positives);
  m.f1 = ratio(2 * c.true_positives, 2 * c.true_positives + c.false_positives + c.false_negatives);
  m.youden_j = m.sensitivity + m.specificity - 1.0;
  return m;
}

// ---- ROC -----------------------------------------------------------------------------------

std::vector<RocPoint> roc_curve(const std::vector<float>& logits,
                                const std::vector<uint8_t>& labels) {
  check_inputs(logits, labels, "ROC curve");
  auto groups = group_by_score(logits, labels);
  int64_t positives = 0, negatives = 0;
  for (const auto& g : groups) {
    positives += g.positives;
    negatives += g.negatives;
  }
  if (positives == 0 || negatives == 0) return {};
  std::vector<RocPoint> curve{{0.0, 0.0, kInfinity}};
  int64_t true_positives = 0, false_positives = 0;
  for (const auto& g : groups) {
    true_positives += g.positives;
    false_positives += g.negatives;
    curve.push_back({ratio(false_positives, negatives), ratio(true_positives, positives),
                     sigmoid(g.logit)});
  }
  return curve;
}

double roc_auc(const std::vector<float>& logits, const std::vector<uint8_t>& labels) {
  check_inputs(logits, labels, "ROC AUC");
  auto groups = group_by_score(logits, labels);
  // Trapezoids in counts: each group adds a strip FP_g wide between heights TP_before and
  // TP_before + TP_g; twice its area is FP_g * (2 TP_before + TP_g), an integer.
  int64_t positives = 0, negatives = 0, twice_area = 0;
  for (const auto& g : groups) {
    twice_area += g.negatives * (2 * positives + g.positives);
    positives += g.positives;
    negatives += g.negatives;
  }
  if (positives == 0 || negatives == 0) return kNaN;
  return static_cast<double>(twice_area) /
         (2.0 * static_cast<double>(positives) * static_cast<double>(negatives));
}

// ---- Youden's threshold ----------------------------------------------------------------------

ThresholdChoice choose_threshold_youden(const std::vector<float>& logits,
                                        const std::vector<uint8_t>& labels) {
  check_inputs(logits, labels, "threshold choice");
  auto groups = group_by_score(logits, labels);
  int64_t positives = 0, negatives = 0;
  for (const auto& g : groups) {
    positives += g.positives;
    negatives += g.negatives;
  }
  ThresholdChoice choice;
  if (positives == 0 || negatives == 0) return choice;  // undefined: keep 0.5

  // Cut k calls the first k groups positive (k = 0 .. groups.size()).
  struct Candidate {
    int64_t score;      // J * P * N = TP * N - FP * P
    double logit_cut;
    size_t k;
  };
  std::vector<Candidate> candidates;
  int64_t true_positives = 0, false_positives = 0;
  for (size_t k = 0; k <= groups.size(); ++k) {
    double cut;
    if (k == 0)
      cut = static_cast<double>(groups.front().logit) + 1.0;
    else if (k == groups.size())
      cut = static_cast<double>(groups.back().logit) - 1.0;
    else  // exact in double: floats have far fewer bits, so the midpoint lies strictly between
      cut = 0.5 * (static_cast<double>(groups[k - 1].logit) + static_cast<double>(groups[k].logit));
    candidates.push_back({true_positives * negatives - false_positives * positives, cut, k});
    if (k < groups.size()) {
      true_positives += groups[k].positives;
      false_positives += groups[k].negatives;
    }
  }
  const Candidate* best = &candidates.front();
  for (const auto& c : candidates) {
    bool better = c.score > best->score ||
                  (c.score == best->score &&
                   (std::fabs(c.logit_cut) < std::fabs(best->logit_cut) ||
                    (std::fabs(c.logit_cut) == std::fabs(best->logit_cut) &&
                     c.logit_cut > best->logit_cut)));
    if (better) best = &c;
  }
  if (best->score <= 0) {
    choice.chance = true;  // the best cut is an extreme one: every image PNEUMONIA, or none
    return choice;         // undefined: keep 0.5
  }
  // The groups just above and below the cut, for checking the probability round trip.
  float above = best->k == 0 ? static_cast<float>(best->logit_cut + 1.0) : groups[best->k - 1].logit;
  float below = best->k == groups.size() ? static_cast<float>(best->logit_cut - 1.0)
                                          : groups[best->k].logit;
  const double threshold = separating_threshold(best->logit_cut, above, below);
  if (!predicts_pneumonia(above, threshold) || predicts_pneumonia(below, threshold)) {
    choice.saturated = true;
    choice.saturated_logit = best->logit_cut;
    return choice;  // undefined: keep 0.5
  }
  choice.threshold = threshold;
  choice.logit = logit_of(choice.threshold);
  choice.youden_j = static_cast<double>(best->score) /
                    (static_cast<double>(positives) * static_cast<double>(negatives));
  choice.defined = true;
  return choice;
}

// ---- Reports ---------------------------------------------------------------------------------

MetricsReport evaluate_binary(const std::string& split, const std::vector<float>& logits,
                              const std::vector<uint8_t>& labels,
                              std::optional<double> applied_threshold, std::string applied_rule) {
  check_inputs(logits, labels, ("metrics of split " + split).c_str());
  MetricsReport report;
  report.split = split;
  report.count = static_cast<int64_t>(logits.size());
  report.positives = std::count(labels.begin(), labels.end(), uint8_t{1});
  report.negatives = report.count - report.positives;
  report.loss = mean_bce_with_logits(logits, labels);
  report.roc_auc = roc_auc(logits, labels);
  report.auc_defined = !std::isnan(report.roc_auc);
  report.at_default = metrics_at_threshold(logits, labels, 0.5);
  if (applied_threshold) {
    report.at_tuned = metrics_at_threshold(logits, labels, *applied_threshold);
    report.applied_rule = std::move(applied_rule);
  }
  return report;
}

json to_json(const ThresholdMetrics& m) {
  const ConfusionMatrix& c = m.confusion;
  return {{"threshold", m.threshold},
          {"confusion_matrix",
           {{c.true_negatives, c.false_positives}, {c.false_negatives, c.true_positives}}},
          {"accuracy", number_or_null(m.accuracy)},
          {"sensitivity", number_or_null(m.sensitivity)},
          {"specificity", number_or_null(m.specificity)},
          {"precision", number_or_null(m.precision)},
          {"f1", number_or_null(m.f1)},
          {"youden_j", number_or_null(m.youden_j)}};
}

json to_json(const MetricsReport& report) {
  return {{"split", report.split},
          {"count", report.count},
          {"positives", report.positives},
          {"negatives", report.negatives},
          {"classes", {"NORMAL", "PNEUMONIA"}},
          {"loss", number_or_null(report.loss)},
          {"roc_auc", number_or_null(report.roc_auc)},
          {"auc_defined", report.auc_defined},
          {"default_threshold", to_json(report.at_default)},
          {"applied_threshold", report.at_tuned ? to_json(*report.at_tuned) : json(nullptr)},
          // The same, under the name it had when only a tuned threshold was applied (readers of
          // older files): it holds an ensemble's 0.5 or a --threshold as well.
          {"tuned_threshold", report.at_tuned ? to_json(*report.at_tuned) : json(nullptr)},
          {"threshold_rule", report.at_tuned ? json(report.applied_rule) : json(nullptr)},
          {"applied_threshold_in_sample", report.at_tuned && report.applied_in_sample}};
}

json to_json(const std::vector<RocPoint>& curve) {
  json fpr = json::array(), tpr = json::array(), probability = json::array();
  for (const auto& p : curve) {
    fpr.push_back(p.false_positive_rate);
    tpr.push_back(p.true_positive_rate);
    probability.push_back(number_or_null(p.probability));
  }
  return {{"fpr", fpr}, {"tpr", tpr}, {"probability", probability}};
}

std::map<std::string, double> metrics_as_values(const MetricsReport& report,
                                                const std::string& prefix) {
  const ThresholdMetrics& m = report.at_default;
  return {{prefix + "loss", report.loss},         {prefix + "accuracy", m.accuracy},
          {prefix + "auc", report.roc_auc},       {prefix + "sensitivity", m.sensitivity},
          {prefix + "specificity", m.specificity}, {prefix + "precision", m.precision},
          {prefix + "f1", m.f1}};
}

std::string format_metrics_table(const MetricsReport& report) {
  std::ostringstream out;
  out << report.split << ": " << report.count << " images (" << report.negatives << " NORMAL, "
      << report.positives << " PNEUMONIA)\n";
  out << "loss " << format_ratio(report.loss) << "   ROC AUC "
      << (report.auc_defined ? format_ratio(report.roc_auc) : "undefined (one class only)")
      << "\n\n";
  std::vector<std::pair<std::string, const ThresholdMetrics*>> rows{{"default", &report.at_default}};
  if (report.at_tuned) rows.push_back({"applied", &*report.at_tuned});
  out << std::left << std::setw(14) << "threshold" << std::right << std::setw(8) << "value"
      << std::setw(10) << "accuracy" << std::setw(13) << "sensitivity" << std::setw(13)
      << "specificity" << std::setw(11) << "precision" << std::setw(8) << "F1" << "\n";
  for (const auto& [label, m] : rows)
    out << std::left << std::setw(14) << label << std::right << std::setw(8)
        << format_threshold(m->threshold) << std::setw(10) << format_ratio(m->accuracy)
        << std::setw(13) << format_ratio(m->sensitivity) << std::setw(13)
        << format_ratio(m->specificity) << std::setw(11) << format_ratio(m->precision)
        << std::setw(8) << format_ratio(m->f1) << "\n";
  if (report.at_tuned && !report.applied_rule.empty())
    out << "applied threshold: " << report.applied_rule << "\n";
  if (report.at_tuned && report.applied_in_sample)
    out << "(tuned on these images or a part of them: the applied row is optimistic; the test "
           "split gives "
           "its unbiased value)\n";
  for (const auto& [label, m] : rows) {
    const ConfusionMatrix& c = m->confusion;
    out << "\nconfusion matrix, " << label << " threshold " << format_threshold(m->threshold) << "\n"
        << std::left << std::setw(16) << "" << std::right << std::setw(13) << "pred NORMAL"
        << std::setw(16) << "pred PNEUMONIA" << "\n"
        << std::left << std::setw(16) << "true NORMAL" << std::right << std::setw(13)
        << c.true_negatives << std::setw(16) << c.false_positives << "\n"
        << std::left << std::setw(16) << "true PNEUMONIA" << std::right << std::setw(13)
        << c.false_negatives << std::setw(16) << c.true_positives << "\n";
  }
  return out.str();
}

std::vector<uint8_t> labels_from_floats(const std::vector<float>& labels) {
  std::vector<uint8_t> out(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] != 0.0f && labels[i] != 1.0f)
      throw Error(detail::concat("label ", labels[i], " at index ", i,
                                 " is neither 0 (NORMAL) nor 1 (PNEUMONIA)"));
    out[i] = labels[i] == 1.0f ? 1 : 0;
  }
  return out;
}

}  // namespace pneumo
