// Metrics against hand-computed cases: the confusion matrix and ratios at 0.5, the ROC AUC with
// tied scores (checked against a brute-force pair count), Youden's threshold and its tie-break,
// one-class splits, the stable loss, and the JSON/table forms.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "pneumo/error.hpp"
#include "pneumo/metrics.hpp"

namespace pneumo {
namespace {

// Hand case: 4 NORMAL and 4 PNEUMONIA, with a NORMAL and a PNEUMONIA tied at logit 1.
//   index   0   1    2    3  4    5   6  7
//   label   0   0    0    1  1    1   0  1
//   logit  -2  -1  0.5    1  2 -0.5   1  3
const std::vector<float> kLogits{-2, -1, 0.5f, 1, 2, -0.5f, 1, 3};
const std::vector<uint8_t> kLabels{0, 0, 0, 1, 1, 1, 0, 1};

TEST(Metrics, ConfusionMatrixAndRatiosAtHalf) {
  // Called positive (logit > 0): 2 (N), 3 (P), 4 (P), 6 (N), 7 (P); index 5 is a missed P.
  ThresholdMetrics m = metrics_at_threshold(kLogits, kLabels, 0.5);
  EXPECT_EQ(m.confusion.true_negatives, 2);
  EXPECT_EQ(m.confusion.false_positives, 2);
  EXPECT_EQ(m.confusion.false_negatives, 1);
  EXPECT_EQ(m.confusion.true_positives, 3);
  EXPECT_DOUBLE_EQ(m.accuracy, 5.0 / 8);
  EXPECT_DOUBLE_EQ(m.sensitivity, 3.0 / 4);
  EXPECT_DOUBLE_EQ(m.specificity, 2.0 / 4);
  EXPECT_DOUBLE_EQ(m.precision, 3.0 / 5);
  EXPECT_DOUBLE_EQ(m.f1, 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.youden_j, 0.25);
}

TEST(Metrics, DecisionRuleIsStrictAndAgreesWithTheKernelAtHalf) {
  EXPECT_FALSE(predicts_pneumonia(0.0f, 0.5));  // p = 0.5 is not > 0.5
  EXPECT_TRUE(predicts_pneumonia(1e-30f, 0.5));  // rounds to p = 0.5 in double, still positive
  EXPECT_FALSE(predicts_pneumonia(-1e-30f, 0.5));
  EXPECT_TRUE(predicts_pneumonia(-1000.0f, 0.0));
  EXPECT_FALSE(predicts_pneumonia(1000.0f, 1.0));
  EXPECT_THROW(predicts_pneumonia(0.0f, 1.5), Error);
  // The counting path applies the same rule: logit 0 is NORMAL at 0.5.
  ConfusionMatrix at_zero = confusion_matrix({0.0f, 0.0f, 1e-30f}, {1, 0, 1}, 0.5);
  EXPECT_EQ(at_zero.false_negatives, 1);
  EXPECT_EQ(at_zero.true_negatives, 1);
  EXPECT_EQ(at_zero.true_positives, 1);
  EXPECT_EQ(logit_of(0.5), 0.0);
  EXPECT_NEAR(logit_of(sigmoid(2.5)), 2.5, 1e-12);
  EXPECT_EQ(sigmoid(-1000.0), 0.0);
  EXPECT_EQ(sigmoid(1000.0), 1.0);
}

TEST(Metrics, AucCountsTiesAsOneHalf) {
  // Pairs (P, N) with P above N: logit 1 beats -2, -1, 0.5 and ties 1 (3.5); 2 and 3 beat all
  // four (8); -0.5 beats -2 and -1 (2). Total 13.5 of 16.
  EXPECT_DOUBLE_EQ(roc_auc(kLogits, kLabels), 13.5 / 16);
  // All scores tied: the diagonal.
  EXPECT_DOUBLE_EQ(roc_auc({0.3f, 0.3f, 0.3f, 0.3f}, {0, 1, 0, 1}), 0.5);
  // Perfect and inverted rankings.
  EXPECT_DOUBLE_EQ(roc_auc({-1, -2, 1, 2}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(roc_auc({1, 2, -1, -2}, {0, 0, 1, 1}), 0.0);
}

TEST(Metrics, AucMatchesABruteForcePairCountWithManyTies) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<int> score(-3, 3), label(0, 1);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits(57);
    std::vector<uint8_t> labels(57);
    for (size_t i = 0; i < logits.size(); ++i) {
      logits[i] = static_cast<float>(score(gen)) * 0.5f;
      labels[i] = static_cast<uint8_t>(label(gen));
    }
    labels[0] = 0;
    labels[1] = 1;
    double wins = 0;
    int64_t pairs = 0;
    for (size_t p = 0; p < logits.size(); ++p)
      for (size_t n = 0; n < logits.size(); ++n)
        if (labels[p] == 1 && labels[n] == 0) {
          ++pairs;
          wins += logits[p] > logits[n] ? 1.0 : logits[p] == logits[n] ? 0.5 : 0.0;
        }
    EXPECT_NEAR(roc_auc(logits, labels), wins / static_cast<double>(pairs), 1e-12)
        << "trial " << trial;
  }
}

TEST(Metrics, RocCurvePointsAndTiesAsDiagonalSteps) {
  auto curve = roc_curve(kLogits, kLabels);
  // Distinct logits 3, 2, 1 (P+N tied), 0.5, -0.5, -1, -2 after the (0, 0) start.
  const std::vector<std::pair<double, double>> expected{
      {0, 0}, {0, 0.25}, {0, 0.5}, {0.25, 0.75}, {0.5, 0.75}, {0.5, 1}, {0.75, 1}, {1, 1}};
  ASSERT_EQ(curve.size(), expected.size());
  for (size_t i = 0; i < curve.size(); ++i) {
    EXPECT_DOUBLE_EQ(curve[i].false_positive_rate, expected[i].first) << i;
    EXPECT_DOUBLE_EQ(curve[i].true_positive_rate, expected[i].second) << i;
  }
  EXPECT_TRUE(std::isinf(curve[0].probability));
  EXPECT_DOUBLE_EQ(curve[1].probability, sigmoid(3.0));
  auto as_json = to_json(curve);
  EXPECT_EQ(as_json["fpr"].size(), expected.size());
  EXPECT_TRUE(as_json["probability"][0].is_null());
}

TEST(Metrics, YoudenPicksTheMaximumAndBreaksTiesTowardHalf) {
  // J by cut (groups above the cut called positive): 3 -> .25, 2 -> .5, 1 -> .5, 0.5 -> .25,
  // -0.5 -> .5, -1 -> .25. Three cuts reach .5, at logits 1.5, 0.75 and -0.75; 0.75 and -0.75
  // are equally close to 0 (probability 0.5), and the higher one wins. Stored as the shortest
  // decimal in the middle half of its gap (logits 0.5 to 1: 0.625 to 0.875 around 0.75): 0.7.
  ThresholdChoice choice = choose_threshold_youden(kLogits, kLabels);
  ASSERT_TRUE(choice.defined);
  EXPECT_DOUBLE_EQ(choice.youden_j, 0.5);
  EXPECT_EQ(choice.threshold, 0.7);
  EXPECT_DOUBLE_EQ(choice.logit, logit_of(0.7));
  EXPECT_NEAR(choice.logit, 0.75, 0.125);
  // Applied with the shipped rule, the chosen threshold gives the J it promised.
  ThresholdMetrics at_choice = metrics_at_threshold(kLogits, kLabels, choice.threshold);
  EXPECT_DOUBLE_EQ(at_choice.youden_j, 0.5);
  EXPECT_EQ(at_choice.confusion.true_positives, 3);
  EXPECT_EQ(at_choice.confusion.false_positives, 1);
}

TEST(Metrics, YoudenSeparatesAdjacentFloatsAndPerfectSplits) {
  // A perfect split between logits 2 and 4: around their midpoint, 3 (p 0.9526), the shortest
  // decimal within a quarter of the gap (logits 2.5 to 3.5): 0.95.
  ThresholdChoice perfect = choose_threshold_youden({1, 2, 4, 5}, {0, 0, 1, 1});
  EXPECT_DOUBLE_EQ(perfect.youden_j, 1.0);
  EXPECT_EQ(perfect.threshold, 0.95);
  EXPECT_NEAR(perfect.logit, 3.0, 0.5);
  // Neighbouring floats: the threshold must still fall strictly between them.
  float low = 0.7f, high = std::nextafter(low, 1.0f);
  ThresholdChoice tight = choose_threshold_youden({low, high}, {0, 1});
  EXPECT_DOUBLE_EQ(tight.youden_j, 1.0);
  EXPECT_TRUE(predicts_pneumonia(high, tight.threshold));
  EXPECT_FALSE(predicts_pneumonia(low, tight.threshold));
  // Near logit 23 (p within 1e-10 of 1) neighbouring floats are a few doubles apart in
  // probability, and the probability <-> logit round trip of the midpoint can land on the wrong
  // side; the choice is checked with the shipped rule and nudged.
  float saturated_low = 22.9301815f, saturated_high = std::nextafter(saturated_low, 100.0f);
  ThresholdChoice nudged = choose_threshold_youden({saturated_low, saturated_high}, {0, 1});
  EXPECT_TRUE(predicts_pneumonia(saturated_high, nudged.threshold));
  EXPECT_FALSE(predicts_pneumonia(saturated_low, nudged.threshold));
  // Beyond logit ~36.7 every probability rounds to 1 in double: no threshold can apply a cut
  // between 40 and 41, so the choice says so and keeps 0.5 (it used to return 1.0, which then
  // called every image NORMAL while claiming J = 1).
  ThresholdChoice beyond = choose_threshold_youden({40.0f, 41.0f, 45.0f}, {0, 1, 1});
  EXPECT_FALSE(beyond.defined);
  EXPECT_TRUE(beyond.saturated);
  EXPECT_NEAR(beyond.saturated_logit, 40.5, 1e-9);
  EXPECT_EQ(beyond.threshold, 0.5);
  EXPECT_FALSE(choose_threshold_youden({-1.0f, 2.0f}, {0, 1}).saturated);
}

// Scores that rank validation no better than chance: every cut has J <= 0, and the best is an
// extreme one (everything PNEUMONIA or nothing), which was stored as "Youden's J". Now undefined,
// 0.5 kept, and said why.
TEST(Metrics, YoudenKeepsHalfWhenNoCutBeatsChance) {
  for (const auto& [logits, labels] :
       std::vector<std::pair<std::vector<float>, std::vector<uint8_t>>>{
           {{3, 2, -1, -2}, {0, 0, 1, 1}},       // reversed: every inner cut has J < 0
           {{1, 1, 1, 1}, {0, 1, 0, 1}},         // one score for all
           {{-4, 5, 5, -4}, {0, 0, 1, 1}}}) {    // a cut above or below every pair: J 0
    const ThresholdChoice choice = choose_threshold_youden(logits, labels);
    EXPECT_FALSE(choice.defined);
    EXPECT_TRUE(choice.chance);
    EXPECT_EQ(choice.threshold, 0.5);
  }
  const ThresholdChoice better = choose_threshold_youden({-2, -1, 2, 3}, {0, 0, 1, 1});
  EXPECT_TRUE(better.defined);
  EXPECT_FALSE(better.chance);
}

TEST(Metrics, OneClassSplitsGiveNanAndFlagsNotCrashes) {
  std::vector<float> logits{-1, 0.5f, 2};
  std::vector<uint8_t> normals{0, 0, 0};
  MetricsReport report = evaluate_binary("val", logits, normals);
  EXPECT_FALSE(report.auc_defined);
  EXPECT_TRUE(std::isnan(report.roc_auc));
  EXPECT_TRUE(std::isnan(report.at_default.sensitivity));
  EXPECT_DOUBLE_EQ(report.at_default.specificity, 1.0 / 3);
  EXPECT_TRUE(roc_curve(logits, normals).empty());
  ThresholdChoice choice = choose_threshold_youden(logits, normals);
  EXPECT_FALSE(choice.defined);
  EXPECT_EQ(choice.threshold, 0.5);
  auto json = to_json(report);
  EXPECT_TRUE(json["roc_auc"].is_null());
  EXPECT_FALSE(json["auc_defined"].get<bool>());
  EXPECT_TRUE(json["default_threshold"]["sensitivity"].is_null());
  EXPECT_NE(format_metrics_table(report).find("undefined"), std::string::npos);
  // No predicted positives: precision is 0/0.
  EXPECT_TRUE(std::isnan(metrics_at_threshold({-1, -2}, {0, 1}, 0.5).precision));
}

TEST(Metrics, StableLossFromLogits) {
  EXPECT_NEAR(mean_bce_with_logits({0.0f}, {1}), std::log(2.0), 1e-15);
  EXPECT_NEAR(mean_bce_with_logits({100.0f}, {0}), 100.0, 1e-12);  // naive log(1 - p) is -inf
  EXPECT_NEAR(mean_bce_with_logits({-100.0f}, {0}), std::exp(-100.0), 1e-50);
  EXPECT_NEAR(mean_bce_with_logits({2.0f, -1.0f}, {1, 1}),
              0.5 * (std::log1p(std::exp(-2.0)) + std::log1p(std::exp(1.0))), 1e-15);
}

TEST(Metrics, BadInputsAreRefusedWithTheIndex) {
  EXPECT_THROW(roc_auc({1, 2}, {0}), Error);
  EXPECT_THROW(roc_auc({}, {}), Error);
  try {
    roc_auc({1, NAN, 2}, {0, 1, 0});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(roc_auc({1, 2}, {0, 2}), Error);
  EXPECT_THROW(labels_from_floats({0.0f, 0.5f}), Error);
  EXPECT_EQ(labels_from_floats({0.0f, 1.0f}), (std::vector<uint8_t>{0, 1}));
}

TEST(Metrics, ReportWithTunedThresholdAndItsForms) {
  ThresholdChoice choice = choose_threshold_youden(kLogits, kLabels);
  MetricsReport report =
      evaluate_binary("test", kLogits, kLabels, choice.threshold, "Youden's J on 8 images");
  EXPECT_EQ(report.count, 8);
  EXPECT_EQ(report.positives, 4);
  EXPECT_EQ(report.negatives, 4);
  ASSERT_TRUE(report.at_tuned.has_value());
  EXPECT_EQ(report.at_tuned->confusion.true_negatives, 3);

  auto json = to_json(report);
  EXPECT_EQ(json["default_threshold"]["confusion_matrix"], nlohmann::json({{2, 2}, {1, 3}}));
  EXPECT_DOUBLE_EQ(json["roc_auc"].get<double>(), 13.5 / 16);
  EXPECT_DOUBLE_EQ(json["tuned_threshold"]["threshold"].get<double>(), choice.threshold);
  EXPECT_EQ(json["threshold_rule"], "Youden's J on 8 images");
  EXPECT_TRUE(to_json(evaluate_binary("test", kLogits, kLabels))["threshold_rule"].is_null());

  auto values = metrics_as_values(report, "val_");
  EXPECT_DOUBLE_EQ(values.at("val_accuracy"), 5.0 / 8);
  EXPECT_DOUBLE_EQ(values.at("val_auc"), 13.5 / 16);
  EXPECT_EQ(values.count("val_loss"), 1u);

  std::string table = format_metrics_table(report);
  EXPECT_NE(table.find("test: 8 images (4 NORMAL, 4 PNEUMONIA)"), std::string::npos) << table;
  // The second row says what was applied and why, whatever the rule (not always a tuned one).
  const size_t applied_row = table.find("\napplied ");
  ASSERT_NE(applied_row, std::string::npos) << table;
  EXPECT_NE(table.substr(applied_row, table.find('\n', applied_row + 1) - applied_row)
                .find(" " + format_threshold(choice.threshold) + " "),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("applied threshold: Youden's J on 8 images"), std::string::npos) << table;
  const std::string given =
      format_metrics_table(evaluate_binary("test", kLogits, kLabels, 0.3, "given on the command line"));
  EXPECT_NE(given.find("applied threshold: given on the command line"), std::string::npos) << given;
  // The applied threshold under its own name (tuned_threshold kept for older readers), and, when
  // it was tuned on these very images, said so in the JSON and the table.
  EXPECT_EQ(json["applied_threshold"], json["tuned_threshold"]);
  EXPECT_FALSE(json["applied_threshold_in_sample"].get<bool>());
  EXPECT_EQ(table.find("tuned on these images or a part of them"), std::string::npos) << table;
  report.applied_in_sample = true;
  EXPECT_TRUE(to_json(report)["applied_threshold_in_sample"].get<bool>());
  EXPECT_NE(format_metrics_table(report).find("(tuned on these images or a part of them: the applied row is "
                                              "optimistic"),
            std::string::npos);
  EXPECT_EQ(given.find("tuned"), std::string::npos) << given;
  // Exactly, in the fewest digits that read back as the threshold: a rounded cut contradicted the
  // counts beside it, and typed back applied another. So near 1 or 0.5 it is never rounded onto
  // them, a typed one is printed as typed, and 0 and 1 stay short.
  EXPECT_EQ(format_threshold(0.99997), "0.99997");
  EXPECT_EQ(format_threshold(0.500031), "0.500031");
  EXPECT_EQ(format_threshold(0.5), "0.5");
  EXPECT_EQ(format_threshold(0.50000005), "0.50000005");
  EXPECT_EQ(format_threshold(0.6227457), "0.6227457");
  EXPECT_EQ(format_threshold(0.554952600001), "0.554952600001");
  EXPECT_EQ(format_threshold(0.25), "0.25");
  EXPECT_EQ(format_threshold(0.6271881234567891), "0.6271881234567891");
  EXPECT_EQ(format_threshold(std::nextafter(0.5, 1.0)), "0.5000000000000001");
  EXPECT_EQ(format_threshold(0.9999998492832337), "0.9999998492832337");
  EXPECT_EQ(format_threshold(2e-9), "2e-09");
  EXPECT_EQ(format_threshold(1.0 - 1e-15), "0.999999999999999");
  EXPECT_EQ(format_threshold(1.0), "1");
  EXPECT_EQ(format_threshold(0.0), "0");
  // Youden's cut itself is stored short (above), so its exact text is.
  EXPECT_EQ(format_threshold(choice.threshold), "0.7");
  EXPECT_NE(table.find("0.8438"), std::string::npos) << table;  // AUC
  // A score is not rounded onto a perfect or a null one.
  EXPECT_EQ(format_fraction(0.99997, 4), "0.99997");
  EXPECT_EQ(format_fraction(0.999999, 3), "0.999999");
  EXPECT_EQ(format_fraction(1.0, 4), "1.0000");
  EXPECT_EQ(format_fraction(0.00004, 4), "0.00004");
  EXPECT_EQ(format_fraction(0.0, 4), "0.0000");
  EXPECT_EQ(format_fraction(0.84375, 4), "0.8438");
  EXPECT_EQ(format_fraction(std::nan(""), 4), "n/a");
}

// explain's file names: p beside its label, never on the other side of the threshold or on 0/1.
TEST(Metrics, ADecidedProbabilityStaysOnItsLabelsSideOfTheThreshold) {
  EXPECT_EQ(format_decided_probability(0.6996, false, 0.7, 3), "0.6996");  // was "0.700"
  EXPECT_EQ(format_decided_probability(0.70004, true, 0.7, 3), "0.70004");
  EXPECT_EQ(format_decided_probability(0.7004, true, 0.7, 3), "0.7004");  // "0.700" is not > 0.7
  EXPECT_EQ(format_decided_probability(0.7006, true, 0.7, 3), "0.701");
  EXPECT_EQ(format_decided_probability(0.123456, false, 0.5, 3), "0.123");
  EXPECT_EQ(format_decided_probability(0.99996, true, 0.5, 3), "0.99996");
  EXPECT_EQ(format_decided_probability(0.00001, false, 0.5, 3), "0.00001");
  EXPECT_EQ(format_decided_probability(1.0, true, 0.5, 3), "1.000");
  EXPECT_EQ(format_decided_probability(std::nan(""), false, 0.5, 3), "n/a");
}

}  // namespace
}  // namespace pneumo
