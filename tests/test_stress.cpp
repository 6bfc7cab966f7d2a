// The stress validation and the inference paths the generalisation work added: the fixed variants
// and their summary (a scripted predictor, so every number is known), the Trainer applying a fixed
// transform and the model's input normalisation, and checkpoints recording that normalisation.
#include <gtest/gtest.h>

#include <cmath>

#include "pneumo/model.hpp"
#include "pneumo/model_checkpoint.hpp"
#include "pneumo/stress.hpp"
#include "pneumo/trainer.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

TEST(Stress, VariantsAreFixedAndEachChangesSomething) {
  const auto& variants = stress_variants();
  ASSERT_EQ(variants.size(), 10u);
  EXPECT_EQ(variants.front().name, "width-0.8");
  EXPECT_EQ(variants.front().params.scale_x, 0.8f);
  EXPECT_EQ(variants.front().params.scale_y, 1.0f);
  for (const StressVariant& v : variants) {
    const AugmentParams& p = v.params;
    const bool changes = p.scale_x != 1.0f || p.scale_y != 1.0f || p.brightness != 0.0f ||
                         p.contrast != 1.0f || p.gamma != 1.0f || p.sharpness != 1.0f;
    EXPECT_TRUE(changes) << v.name;
    EXPECT_EQ(p.angle_degrees, 0.0f) << v.name;
    EXPECT_EQ(p.flip, 0) << v.name;
  }
}

// A scripted model: right on every image except under a squeezed width, where it calls every
// image PNEUMONIA (the shortcut the stress set is there to expose).
TEST(Stress, SummaryNamesTheWorstVariantAndAveragesTheRest) {
  const std::vector<uint8_t> labels{0, 0, 0, 1, 1, 1, 1, 1};  // 3 NORMAL, 5 PNEUMONIA
  int calls = 0;
  std::vector<std::string> told;  // the progress callback: before each variant, then at the end
  const StressReport report = evaluate_stress(
      [&](const AugmentParams& p) {
        ++calls;
        std::vector<float> logits;
        for (uint8_t label : labels) logits.push_back(p.scale_x < 1.0f || label ? 3.0f : -3.0f);
        return logits;
      },
      labels, std::nullopt,
      [&](size_t done, const std::string& next) {
        EXPECT_EQ(done, told.size()) << next;
        EXPECT_EQ(static_cast<int>(done), calls) << "told before the variant is scored";
        told.push_back(next);
      });
  EXPECT_EQ(calls, 10);
  ASSERT_EQ(told.size(), 11u);
  EXPECT_EQ(told.front(), "width-0.8");
  EXPECT_EQ(told.back(), "");
  ASSERT_EQ(report.variants.size(), 10u);
  EXPECT_EQ(report.worst_accuracy_variant, "width-0.8");
  EXPECT_DOUBLE_EQ(report.worst_accuracy, 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(report.mean_accuracy, (9 * 1.0 + 5.0 / 8.0) / 10.0);
  EXPECT_DOUBLE_EQ(report.worst_specificity, 0.0);
  EXPECT_DOUBLE_EQ(report.worst_sensitivity, 1.0);
  const auto values = stress_as_values(report, "val_stress_");
  EXPECT_DOUBLE_EQ(values.at("val_stress_worst_accuracy"), 5.0 / 8.0);
  EXPECT_EQ(values.size(), 5u);
  const nlohmann::json json = to_json(report);
  EXPECT_EQ(json["variants"].size(), 10u);
  EXPECT_EQ(json["worst_accuracy_variant"], "width-0.8");
  EXPECT_EQ(json["threshold"], 0.5) << "the summary says which threshold it applied";
  const auto at_cut = [](const AugmentParams&) { return std::vector<float>{-1, -1, 1, 1}; };
  EXPECT_EQ(to_json(evaluate_stress(at_cut, {0, 0, 1, 1}, 0.3))["threshold"], 0.3);
  const std::string table = format_stress_table(report);
  EXPECT_NE(table.find("width-0.8"), std::string::npos) << table;
  EXPECT_NE(table.find("worst accuracy 0.6250 (width-0.8)"), std::string::npos) << table;
  // A split with one class: sensitivity and AUC are undefined, shown as in the metrics table.
  const std::vector<uint8_t> normals(4, 0);
  const std::string one_class = format_stress_table(evaluate_stress(
      [&](const AugmentParams&) { return std::vector<float>(4, -1.0f); }, normals));
  EXPECT_NE(one_class.find("n/a"), std::string::npos) << one_class;
  EXPECT_EQ(one_class.find("nan"), std::string::npos) << one_class;
  // A tuned threshold is applied when given: at 0.99 every logit of 3 becomes NORMAL.
  const StressReport strict = evaluate_stress(
      [&](const AugmentParams&) { return std::vector<float>(labels.size(), 3.0f); }, labels, 0.99);
  EXPECT_DOUBLE_EQ(strict.worst_accuracy, 3.0 / 8.0);
}

struct SmallSetup {
  std::unique_ptr<Backend> backend = make_cpu_backend(1);
  static constexpr int kSize = 16, kCount = 5;
  std::vector<uint8_t> images, labels;

  SmallSetup() {
    images.resize(kCount * kSize * kSize);
    for (size_t i = 0; i < images.size(); ++i)
      images[i] = static_cast<uint8_t>(40 + (i * 37 + (i / kSize) * 11) % 100);  // 40..139
    for (int i = 0; i < kCount; ++i) labels.push_back(static_cast<uint8_t>(i % 2));
  }
  std::unique_ptr<Model> model(InputNormalization normalization) {
    ModelConfig config;
    config.input_size = kSize;
    config.input_normalization = normalization;
    auto m = std::make_unique<Model>(*backend, config, 4);
    m->initialize(3);
    return m;
  }
  ImageSet set(const std::vector<uint8_t>& pixels) {
    return ImageSet::upload(Device::Cpu, pixels.data(), kCount, kSize, labels.data());
  }
};

TEST(Stress, TrainerAppliesAFixedTransformToEveryImage) {
  SmallSetup s;
  auto model = s.model(InputNormalization::Unit);
  AugmentSettings none;
  none.enabled = false;
  Trainer trainer(*s.backend, *model, 4, none, 1);
  // A flip as the fixed transform equals inference on images mirrored by hand.
  std::vector<uint8_t> mirrored(s.images.size());
  for (int n = 0; n < s.kCount; ++n)
    for (int y = 0; y < s.kSize; ++y)
      for (int x = 0; x < s.kSize; ++x)
        mirrored[static_cast<size_t>((n * s.kSize + y) * s.kSize + x)] =
            s.images[static_cast<size_t>((n * s.kSize + y) * s.kSize + s.kSize - 1 - x)];
  AugmentParams flip;
  flip.flip = 1;
  const std::vector<float> flipped = trainer.predict_logits(s.set(s.images), nullptr, &flip);
  const std::vector<float> by_hand = trainer.predict_logits(s.set(mirrored));
  const std::vector<float> plain = trainer.predict_logits(s.set(s.images));
  EXPECT_EQ(flipped, by_hand);
  EXPECT_NE(flipped, plain);
}

TEST(Stress, PerImageModelsIgnoreBrightnessAndContrastAndSayWhatTheyAre) {
  SmallSetup s;
  std::vector<uint8_t> brighter(s.images.size());  // v -> 2 v - 30 in [50, 248], no clipping
  for (size_t i = 0; i < s.images.size(); ++i) brighter[i] = static_cast<uint8_t>(2 * s.images[i] - 30);
  for (InputNormalization normalization : {InputNormalization::Unit, InputNormalization::PerImage}) {
    auto model = s.model(normalization);
    AugmentSettings none;
    none.enabled = false;
    Trainer trainer(*s.backend, *model, 4, none, 1);  // the model's normalisation, not none's
    const std::vector<float> a = trainer.predict_logits(s.set(s.images));
    const std::vector<float> b = trainer.predict_logits(s.set(brighter));
    const double worst = testing::largest_difference(a, b);
    ASSERT_FALSE(a.empty());
    if (normalization == InputNormalization::PerImage)
      EXPECT_LT(worst, 1e-4) << "a standardised input does not depend on brightness or contrast";
    else
      EXPECT_GT(worst, 1e-3) << "x/255 inputs do";

    // The checkpoint records it; loading it builds the same model; another model refuses it.
    CheckpointData checkpoint = capture_checkpoint(*model, nullptr, CheckpointMetadata{});
    EXPECT_EQ(checkpoint.metadata.normalisation, normalization_description(normalization));
    EXPECT_EQ(model_config_for(checkpoint.metadata, "a checkpoint").input_normalization, normalization);
    // One this build does not know is named with its file (one model of an ensemble's).
    for (const bool architecture : {true, false}) {
      CheckpointMetadata foreign = checkpoint.metadata;
      (architecture ? foreign.architecture : foreign.normalisation) = "foo";
      try {
        model_config_for(foreign, "m2.safetensors");
        ADD_FAILURE() << "a foreign " << (architecture ? "architecture" : "normalisation");
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("checkpoint m2.safetensors: ", 0), 0u) << e.what();
      }
    }
    auto other = s.model(normalization == InputNormalization::Unit ? InputNormalization::PerImage
                                                                   : InputNormalization::Unit);
    EXPECT_THROW(restore_checkpoint(checkpoint, *other, nullptr, "ckpt"), Error);
  }
}

}  // namespace
}  // namespace pneumo
