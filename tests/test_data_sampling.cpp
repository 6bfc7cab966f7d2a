// Patient ids, the patient-grouped stratified validation split (on synthetic lists and on the
// real train file list when the dataset is present), and the per-epoch balanced sampler.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "cli/commands/flag_text.hpp"
#include "data_test_util.hpp"
#include "pneumo/error.hpp"
#include "pneumo/sampling.hpp"

namespace pneumo {
namespace {

TEST(PatientId, ParsesTheDatasetsNamingSchemes) {
  EXPECT_EQ(patient_id("person1000_bacteria_2931.jpeg"), "person1000");
  EXPECT_EQ(patient_id("train/PNEUMONIA/person1000_virus_1681.jpeg"), "person1000");
  EXPECT_EQ(patient_id("person1_virus_6_1.jpeg"), "person1");
  EXPECT_EQ(patient_id("IM-0115-0001.jpeg"), "IM-0115");
  EXPECT_EQ(patient_id("IM-0629-0001-0002.jpeg"), "IM-0629");
  EXPECT_EQ(patient_id("test/NORMAL/NORMAL2-IM-0095-0001.jpeg"), "NORMAL2-IM-0095");
  EXPECT_EQ(patient_id("NORMAL2-IM-1345-0001-0002.jpeg"), "NORMAL2-IM-1345");
  // Anything else is its own patient.
  EXPECT_EQ(patient_id("scan_42.png"), "scan_42");
  EXPECT_EQ(patient_id("person_x.jpeg"), "person_x");
  EXPECT_EQ(patient_id("IM-abc.jpeg"), "IM-abc");
  EXPECT_NE(patient_id("IM-0001-0001.jpeg"), patient_id("NORMAL2-IM-0001-0001.jpeg"));
}

// Ids shared by two lists of files, and the files of each under them: as this dataset's train and
// test, whose pneumonia ids overlap by name while their image numbers differ.
TEST(Patients, SharedIdsAndTheFilesUnderThem) {
  const std::vector<std::string> train = {"person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg",
                                          "person2_virus_3.jpeg", "IM-0115-0001.jpeg"};
  const std::vector<std::string> test = {"person1_virus_7.jpeg", "person1_virus_9.jpeg",
                                         "person1_virus_12.jpeg", "IM-0001-0001.jpeg",
                                         "person3_bacteria_4.jpeg"};
  EXPECT_EQ(count_patients(train), 3);
  EXPECT_EQ(count_patients(test), 3);
  const SharedPatients both = shared_patients(train, test);
  EXPECT_EQ(both.patients, 1);  // person1
  EXPECT_EQ(both.files_a, 2);
  EXPECT_EQ(both.files_b, 3);
  EXPECT_EQ(shared_patients(test, train).files_a, 3);
  EXPECT_EQ(shared_patients(train, {}).patients, 0);
}

struct FileList {
  std::vector<uint8_t> labels;
  std::vector<std::string> files;
};

// Patients with 1 to 5 images each: NORMAL ones named IM-/NORMAL2-IM-, PNEUMONIA person*_*.
FileList synthetic_list(int normal_patients, int pneumonia_patients) {
  FileList list;
  for (int p = 0; p < normal_patients; ++p)
    for (int k = 0; k < 1 + (p * 7) % 5; ++k) {
      list.files.push_back((p % 2 ? "NORMAL2-IM-" : "IM-") + std::to_string(1000 + p) + "-000" +
                           std::to_string(k + 1) + ".jpeg");
      list.labels.push_back(0);
    }
  for (int p = 0; p < pneumonia_patients; ++p)
    for (int k = 0; k < 1 + (p * 3) % 4; ++k) {
      list.files.push_back("person" + std::to_string(p) + (k % 2 ? "_virus_" : "_bacteria_") +
                           std::to_string(100 * p + k) + ".jpeg");
      list.labels.push_back(1);
    }
  return list;
}

// Checks the invariants every carve must keep; returns val images per class.
std::array<int64_t, 2> check_carve(const FileList& list, const ValidationSplit& split) {
  std::vector<int> side(list.labels.size(), -1);
  for (int32_t i : split.train) side[static_cast<size_t>(i)] = 0;
  for (int32_t i : split.val) {
    EXPECT_EQ(side[static_cast<size_t>(i)], -1) << "image " << i << " on both sides";
    side[static_cast<size_t>(i)] = 1;
  }
  EXPECT_EQ(std::count(side.begin(), side.end(), -1), 0) << "some image on neither side";
  EXPECT_TRUE(std::is_sorted(split.train.begin(), split.train.end()));
  EXPECT_TRUE(std::is_sorted(split.val.begin(), split.val.end()));
  std::map<std::string, int> patient_side;
  for (size_t i = 0; i < list.files.size(); ++i) {
    auto [it, inserted] = patient_side.emplace(patient_id(list.files[i]), side[i]);
    EXPECT_TRUE(inserted || it->second == side[i])
        << "patient " << it->first << " is on both sides (" << list.files[i] << ")";
  }
  std::array<int64_t, 2> val_counts{};
  for (int32_t i : split.val) ++val_counts[list.labels[static_cast<size_t>(i)]];
  return val_counts;
}

TEST(CarveValidation, GroupsByPatientStratifiesAndIsDeterministic) {
  const FileList list = synthetic_list(300, 700);
  std::array<int64_t, 2> totals{};
  for (uint8_t l : list.labels) ++totals[l];
  const ValidationSplit split = carve_validation(list.labels, list.files, 0.2, 7);
  const auto val = check_carve(list, split);
  for (int c = 0; c < 2; ++c)
    EXPECT_NEAR(static_cast<double>(val[c]) / static_cast<double>(totals[c]), 0.2, 0.01)
        << "class " << c << ": " << val[c] << " of " << totals[c];

  const ValidationSplit again = carve_validation(list.labels, list.files, 0.2, 7);
  EXPECT_EQ(again.val, split.val);
  const ValidationSplit other_seed = carve_validation(list.labels, list.files, 0.2, 8);
  EXPECT_NE(other_seed.val, split.val);
  check_carve(list, other_seed);
}

TEST(CarveValidation, DoesNotDependOnTheInputOrder) {
  const FileList list = synthetic_list(40, 90);
  std::vector<size_t> order(list.files.size());
  std::iota(order.begin(), order.end(), 0);
  std::reverse(order.begin(), order.end());
  std::rotate(order.begin(), order.begin() + 17, order.end());
  FileList shuffled;
  for (size_t i : order) {
    shuffled.files.push_back(list.files[i]);
    shuffled.labels.push_back(list.labels[i]);
  }
  std::set<std::string> a, b;
  for (int32_t i : carve_validation(list.labels, list.files, 0.3, 1).val)
    a.insert(list.files[static_cast<size_t>(i)]);
  for (int32_t i : carve_validation(shuffled.labels, shuffled.files, 0.3, 1).val)
    b.insert(shuffled.files[static_cast<size_t>(i)]);
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, b);
}

TEST(CarveValidation, EdgeCasesAndBadInput) {
  const FileList list = synthetic_list(10, 10);
  EXPECT_TRUE(carve_validation(list.labels, list.files, 0.0, 1).val.empty());
  EXPECT_THROW(carve_validation(list.labels, list.files, 1.0, 1), Error);
  EXPECT_THROW(carve_validation(list.labels, list.files, -0.1, 1), Error);
  EXPECT_THROW(carve_validation({0, 1}, {"a.jpeg"}, 0.1, 1), Error);
  EXPECT_THROW(carve_validation({0, 2}, {"a.jpeg", "b.jpeg"}, 0.1, 1), Error);
  const auto empty = carve_validation({}, {}, 0.5, 1);
  EXPECT_EQ(empty.train.size(), 0u);
  EXPECT_EQ(empty.val.size(), 0u);
}

TEST(CarveValidation, NeverSplitsAPatientOfTheRealTrainSet) {
  const std::string root = testing::shared_dataset_dir();
  if (root.empty()) GTEST_SKIP() << "the full dataset is absent (set PNEUMO_SHARED_DATA)";
  FileList list;
  for (int c = 0; c < 2; ++c)
    for (const auto& entry :
         std::filesystem::directory_iterator(std::filesystem::path(root) / "train" / kClassNames[c])) {
      list.files.push_back(entry.path().filename().string());
      list.labels.push_back(static_cast<uint8_t>(c));
    }
  ASSERT_EQ(list.files.size(), 5216u);
  std::set<std::string> patients;
  for (const auto& f : list.files) patients.insert(patient_id(f));
  EXPECT_LT(patients.size(), list.files.size());  // many patients have several images
  for (uint64_t seed : {0u, 1u, 2u}) {
    const ValidationSplit split = carve_validation(list.labels, list.files, kDefaultValFraction, seed);
    const auto val = check_carve(list, split);
    EXPECT_NEAR(static_cast<double>(val[0]) / 1341.0, kDefaultValFraction, 0.01);
    EXPECT_NEAR(static_cast<double>(val[1]) / 3875.0, kDefaultValFraction, 0.01);
  }
}

TEST(ValSplitOption, Parses) {
  EXPECT_EQ(cli::parse_val_split("official").source, ValidationSource::Official);
  const auto carve = cli::parse_val_split("0.2", 5);
  EXPECT_EQ(carve.source, ValidationSource::Carve);
  EXPECT_DOUBLE_EQ(carve.fraction, 0.2);
  EXPECT_EQ(carve.seed, 5u);
  for (const char* bad : {"", "1", "1.5", "-0.1", "abc", "0.2x"})
    EXPECT_THROW(cli::parse_val_split(bad), Error) << bad;
}

Split tiny_train_split(const FileList& list, int size) {
  Split split;
  split.name = "train";
  split.size = size;
  split.labels = list.labels;
  split.files = list.files;
  split.images.resize(list.labels.size() * static_cast<size_t>(size * size));
  for (size_t i = 0; i < split.images.size(); ++i)
    split.images[i] = static_cast<uint8_t>(i / static_cast<size_t>(size * size));
  return split;
}

TEST(MakeTrainVal, CarvedAndOfficial) {
  const FileList list = synthetic_list(20, 30);
  Dataset dataset;
  dataset.cache_dir = "/nowhere";
  dataset.size = 3;
  dataset.splits.push_back(tiny_train_split(list, 3));
  const auto carved = make_train_val(dataset, cli::parse_val_split("0.25", 3));
  EXPECT_EQ(carved.train.count() + carved.val.count(), dataset.splits[0].count());
  EXPECT_EQ(carved.val.name, "val-carved");
  // Pixels and labels follow their images: image i is filled with the value i.
  const auto split = carve_validation(list.labels, list.files, 0.25, 3);
  ASSERT_FALSE(split.val.empty());
  ASSERT_EQ(carved.val.count(), static_cast<int64_t>(split.val.size()));
  for (size_t k = 0; k < split.val.size(); ++k) {
    EXPECT_EQ(carved.val.image(static_cast<int64_t>(k))[4], static_cast<uint8_t>(split.val[k]));
    EXPECT_EQ(carved.val.files[k], list.files[static_cast<size_t>(split.val[k])]);
  }
  EXPECT_NE(carved.description.find("grouped by patient"), std::string::npos);
  // No val split in the cache: "official" is refused with the cache named.
  try {
    make_train_val(dataset, cli::parse_val_split("official"));
    ADD_FAILURE() << "official val accepted without a val split";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nowhere"), std::string::npos) << e.what();
  }
  Split val = tiny_train_split(synthetic_list(2, 2), 3);
  val.name = "val";
  dataset.splits.push_back(val);
  const auto official = make_train_val(dataset, cli::parse_val_split("official"));
  EXPECT_EQ(official.train.count(), dataset.splits[0].count());
  EXPECT_EQ(official.val.count(), val.count());
  EXPECT_EQ(official.val.images, val.images);
}

// A fraction that carves nothing, or carves away a class, is the flag's fault: bad usage (exit 2)
// naming --val-split and the counts, not an internal check once training starts.
TEST(MakeTrainVal, AFractionThatEmptiesValidationOrATrainingClassIsBadUsage) {
  const FileList list = synthetic_list(20, 30);
  Dataset dataset;
  dataset.cache_dir = "/nowhere";
  dataset.size = 3;
  dataset.splits.push_back(tiny_train_split(list, 3));
  auto expect_usage_error = [&](const std::string& fraction, const std::string& part) {
    try {
      make_train_val(dataset, cli::parse_val_split(fraction, 3));
      ADD_FAILURE() << "--val-split " << fraction << " accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--val-split " + fraction), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_usage_error("0.001", "carves no validation image (train ");
  expect_usage_error("0.001", "50 patients");
  expect_usage_error("0.99", "leaves no NORMAL image to train on");
}

std::vector<uint8_t> labels_with(int normal, int pneumonia) {
  std::vector<uint8_t> labels(static_cast<size_t>(normal), 0);
  labels.resize(static_cast<size_t>(normal + pneumonia), 1);
  // Mixed so that class membership is not a contiguous range of indices.
  std::shuffle(labels.begin(), labels.end(), std::mt19937(1234));
  return labels;
}

TEST(EpochIndices, PlainShuffleIsAPermutationKeyedByEpoch) {
  const auto labels = labels_with(30, 90);
  for (BalanceMode mode : {BalanceMode::None, BalanceMode::ClassWeight}) {
    auto order = epoch_indices(labels, mode, 11, 0);
    EXPECT_EQ(order, epoch_indices(labels, mode, 11, 0)) << "not deterministic";
    EXPECT_NE(order, epoch_indices(labels, mode, 11, 1)) << "same order in the next epoch";
    EXPECT_NE(order, epoch_indices(labels, mode, 12, 0)) << "seed ignored";
    std::vector<int32_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int32_t> all(labels.size());
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(sorted, all);
  }
}

TEST(EpochIndices, OversamplingBalancesTheClassesAndKeepsEveryImage) {
  const auto labels = labels_with(30, 87);
  std::vector<double> appearances(labels.size(), 0.0);
  const int epochs = 400;
  for (uint32_t epoch = 0; epoch < static_cast<uint32_t>(epochs); ++epoch) {
    const auto order = epoch_indices(labels, BalanceMode::Oversample, 5, epoch);
    ASSERT_EQ(order.size(), 2u * 87u);
    std::array<int, 2> counts{};
    std::vector<int> seen(labels.size(), 0);
    for (int32_t i : order) {
      ++counts[labels[static_cast<size_t>(i)]];
      ++seen[static_cast<size_t>(i)];
      appearances[static_cast<size_t>(i)] += 1.0;
    }
    EXPECT_EQ(counts[0], counts[1]);
    for (size_t i = 0; i < labels.size(); ++i) {
      ASSERT_GE(seen[i], 1) << "image " << i << " missing from epoch " << epoch;
      if (labels[i] == 1) {
        ASSERT_EQ(seen[i], 1) << "majority image repeated";
      }
    }
  }
  // Replicas are spread evenly: each minority image is expected 87/30 = 2.9 times an epoch.
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] == 0) {
      EXPECT_NEAR(appearances[i] / epochs, 87.0 / 30.0, 0.25) << "image " << i;
    }
  // The minority may be PNEUMONIA too.
  const auto flipped = labels_with(50, 20);
  const auto order = epoch_indices(flipped, BalanceMode::Oversample, 5, 0);
  EXPECT_EQ(order.size(), 2u * 50u);
  // One class only: nothing to balance.
  EXPECT_EQ(epoch_indices(std::vector<uint8_t>(9, 1), BalanceMode::Oversample, 1, 0).size(), 9u);
  EXPECT_THROW(epoch_indices({0, 1, 5}, BalanceMode::Oversample, 1, 0), Error);
}

// epoch_size counts what epoch_indices draws, in every mode, without drawing it.
TEST(EpochOrder, EpochSizeCountsWhatTheOrderHolds) {
  const std::vector<std::vector<uint8_t>> sets = {
      labels_with(20, 50), labels_with(50, 20), labels_with(7, 7), std::vector<uint8_t>(9, 1),
      std::vector<uint8_t>(4, 0), labels_with(1, 30), {}};
  for (const auto& labels : sets)
    for (BalanceMode mode : {BalanceMode::Oversample, BalanceMode::ClassWeight, BalanceMode::None})
      EXPECT_EQ(epoch_size(labels, mode), epoch_indices(labels, mode, 3, 2).size())
          << to_string(mode) << ", " << labels.size() << " labels";
  EXPECT_EQ(epoch_size(labels_with(20, 50), BalanceMode::Oversample), 100u);
  EXPECT_THROW(epoch_size({0, 1, 5}, BalanceMode::None), Error);
}

TEST(ClassWeights, KerasBalancedFormula) {
  const auto labels = labels_with(1341, 3875);
  const auto w = class_weights(labels, BalanceMode::ClassWeight);
  EXPECT_FLOAT_EQ(w[0], 5216.0f / (2.0f * 1341.0f));
  EXPECT_FLOAT_EQ(w[1], 5216.0f / (2.0f * 3875.0f));
  // Weighted class totals are equal.
  EXPECT_NEAR(w[0] * 1341.0, w[1] * 3875.0, 1e-2);
  EXPECT_EQ(class_weights(labels, BalanceMode::Oversample), (std::array<float, 2>{1.0f, 1.0f}));
  EXPECT_EQ(class_weights(labels, BalanceMode::None), (std::array<float, 2>{1.0f, 1.0f}));
  EXPECT_EQ(class_weights(std::vector<uint8_t>(4, 1), BalanceMode::ClassWeight)[0], 0.0f);
  const auto per_sample = sample_weights({0, 1, 1, 1}, BalanceMode::ClassWeight);
  EXPECT_EQ(per_sample, (std::vector<float>{2.0f, 4.0f / 6.0f, 4.0f / 6.0f, 4.0f / 6.0f}));
  EXPECT_EQ(labels_as_float({0, 1, 1}), (std::vector<float>{0.0f, 1.0f, 1.0f}));
  EXPECT_EQ(cli::parse_balance_mode("class-weight"), BalanceMode::ClassWeight);
  EXPECT_EQ(cli::parse_balance_mode("oversample"), BalanceMode::Oversample);
  EXPECT_EQ(cli::parse_balance_mode("none"), BalanceMode::None);
  EXPECT_THROW(cli::parse_balance_mode("balanced"), Error);
  EXPECT_STREQ(to_string(BalanceMode::ClassWeight), "class-weight");
}

}  // namespace
}  // namespace pneumo
