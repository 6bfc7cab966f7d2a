// Patient ids, the patient-grouped stratified validation split, subsets, and the per-epoch
// sampler with class balancing (see include/pneumo/sampling.hpp for the rules).
#include "pneumo/sampling.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "core/checksum.hpp"
#include "pneumo/error.hpp"
#include "pneumo/random.hpp"

namespace pneumo {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Length of the run of digits starting at `pos` (0 when none).
size_t digits_at(const std::string& s, size_t pos) {
  size_t end = pos;
  while (end < s.size() && is_digit(s[end])) ++end;
  return end - pos;
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.compare(0, std::strlen(prefix), prefix) == 0;
}

// Uniform index in [0, n) from 64 random bits: the modulo bias is below n / 2^64, far below
// anything a training run could notice, and it keeps the draw one Philox call.
uint32_t index_below(const Philox4& bits, uint32_t n) {
  const uint64_t r = (static_cast<uint64_t>(bits.v[0]) << 32) | bits.v[1];
  return static_cast<uint32_t>(r % n);
}

// In-place Fisher-Yates shuffle; the swap partner of position i comes from counter i.
template <class T>
void philox_shuffle(std::vector<T>& items, RngKey key) {
  for (size_t i = items.size(); i > 1; --i) {
    const uint32_t j = index_below(philox4x32(key, static_cast<uint32_t>(i - 1)),
                                   static_cast<uint32_t>(i));
    std::swap(items[i - 1], items[j]);
  }
}

void check_labels(const std::vector<uint8_t>& labels, const char* what) {
  PNEUMO_CHECK(labels.size() < static_cast<size_t>(INT32_MAX), what, ": ", labels.size(),
               " images exceed int32 indices");
  for (size_t i = 0; i < labels.size(); ++i)
    PNEUMO_CHECK(labels[i] < kClassCount, what, ": label ", static_cast<int>(labels[i]),
                 " of image ", i, " is not 0 (NORMAL) or 1 (PNEUMONIA)");
}

}  // namespace

std::string patient_id(const std::string& file) {
  // Base name without folders and extension.
  size_t slash = file.find_last_of("/\\");
  std::string name = slash == std::string::npos ? file : file.substr(slash + 1);
  size_t dot = name.find_last_of('.');
  if (dot != std::string::npos && dot > 0) name = name.substr(0, dot);

  if (starts_with(name, "person")) {
    size_t n = digits_at(name, 6);
    if (n > 0 && 6 + n < name.size() && name[6 + n] == '_') return name.substr(0, 6 + n);
  }
  for (const char* prefix : {"NORMAL2-IM-", "IM-"}) {
    if (!starts_with(name, prefix)) continue;
    size_t start = std::strlen(prefix);
    size_t n = digits_at(name, start);
    if (n > 0 && start + n < name.size() && name[start + n] == '-') return name.substr(0, start + n);
  }
  return name;
}

int64_t count_patients(const std::vector<std::string>& files) {
  std::set<std::string> patients;
  for (const std::string& file : files) patients.insert(patient_id(file));
  return static_cast<int64_t>(patients.size());
}

SharedPatients shared_patients(const std::vector<std::string>& a,
                               const std::vector<std::string>& b) {
  std::set<std::string> in_a, in_b;
  for (const std::string& file : a) in_a.insert(patient_id(file));
  for (const std::string& file : b) in_b.insert(patient_id(file));
  SharedPatients shared;
  for (const std::string& id : in_a) shared.patients += in_b.count(id);
  for (const std::string& file : a) shared.files_a += in_b.count(patient_id(file));
  for (const std::string& file : b) shared.files_b += in_a.count(patient_id(file));
  return shared;
}

ValidationSplit carve_validation(const std::vector<uint8_t>& labels,
                                 const std::vector<std::string>& files, double fraction,
                                 uint64_t seed) {
  PNEUMO_CHECK(labels.size() == files.size(), "carve_validation: ", labels.size(),
               " labels but ", files.size(), " file names");
  PNEUMO_CHECK(fraction >= 0.0 && fraction < 1.0, "validation fraction ", fraction,
               " is outside [0, 1)");
  check_labels(labels, "carve_validation");

  // Patients in sorted id order (so the result does not depend on the input order), with their
  // images and majority label.
  std::map<std::string, std::vector<int32_t>> images_of;
  for (size_t i = 0; i < files.size(); ++i)
    images_of[patient_id(files[i])].push_back(static_cast<int32_t>(i));

  std::array<std::vector<const std::vector<int32_t>*>, kClassCount> patients_of_class;
  std::array<int64_t, kClassCount> images_in_class{};
  for (const auto& [id, images] : images_of) {
    std::array<int64_t, kClassCount> votes{};
    for (int32_t i : images) ++votes[labels[static_cast<size_t>(i)]];
    const int label = votes[1] > votes[0] ? 1 : 0;
    patients_of_class[static_cast<size_t>(label)].push_back(&images);
    images_in_class[static_cast<size_t>(label)] += static_cast<int64_t>(images.size());
  }

  std::vector<uint8_t> in_val(labels.size(), 0);
  for (int c = 0; c < kClassCount; ++c) {
    auto& patients = patients_of_class[static_cast<size_t>(c)];
    philox_shuffle(patients, make_key(seed, RngStream::kValSplit, 0, static_cast<uint32_t>(c)));
    const int64_t target =
        std::llround(fraction * static_cast<double>(images_in_class[static_cast<size_t>(c)]));
    int64_t taken = 0;
    for (const auto* images : patients) {
      const int64_t with = taken + static_cast<int64_t>(images->size());
      if (std::llabs(with - target) < std::llabs(taken - target)) {
        taken = with;
        for (int32_t i : *images) in_val[static_cast<size_t>(i)] = 1;
      }
    }
  }

  ValidationSplit split;
  for (size_t i = 0; i < labels.size(); ++i)
    (in_val[i] ? split.val : split.train).push_back(static_cast<int32_t>(i));
  return split;
}


Split subset(const Split& split, const std::vector<int32_t>& indices, const std::string& name) {
  Split out;
  out.name = name;
  out.size = split.size;
  const size_t pixels = static_cast<size_t>(split.size) * static_cast<size_t>(split.size);
  out.images.resize(indices.size() * pixels);
  out.labels.reserve(indices.size());
  out.files.reserve(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const int32_t i = indices[k];
    PNEUMO_CHECK(i >= 0 && i < split.count(), "subset of split '", split.name, "': index ", i,
                 " out of range [0, ", split.count(), ")");
    std::copy_n(split.image(i), pixels, out.images.data() + k * pixels);
    out.labels.push_back(split.labels[static_cast<size_t>(i)]);
    out.files.push_back(split.files.empty() ? std::string() : split.files[static_cast<size_t>(i)]);
  }
  return out;
}

namespace {

// A fraction that carves no validation image, or carves away a whole class the training images
// held, is the flag's fault, not the data's: bad usage (exit 2) naming --val-split and the counts,
// instead of an internal check once training starts.
void check_carve(const Split& train, const TrainValSplits& carved, double fraction) {
  const auto all = train.class_counts(), tc = carved.train.class_counts(),
             vc = carved.val.class_counts();
  const std::string counts =
      detail::concat("train ", tc[0], " NORMAL + ", tc[1], " PNEUMONIA, val ", vc[0],
                     " NORMAL + ", vc[1], " PNEUMONIA, from ", train.count(), " images of ",
                     count_patients(train.files), " patients");
  if (carved.val.count() == 0)
    throw UsageError(detail::concat("--val-split ", fraction, " carves no validation image (",
                                    counts, "): use a larger fraction"));
  for (int c = 0; c < kClassCount; ++c)
    if (all[static_cast<size_t>(c)] > 0 && tc[static_cast<size_t>(c)] == 0)
      throw UsageError(detail::concat("--val-split ", fraction, " leaves no ", kClassNames[c],
                                      " image to train on (", counts, "): use a smaller fraction"));
}

}  // namespace

TrainValSplits make_train_val(const Dataset& dataset, const ValidationOptions& options) {
  const Split& train = dataset.split("train");
  TrainValSplits result;
  std::ostringstream text;
  if (options.source == ValidationSource::Official) {
    const Split& val = dataset.split("val");
    result.train = subset(train, [&] {
      std::vector<int32_t> all(static_cast<size_t>(train.count()));
      std::iota(all.begin(), all.end(), 0);
      return all;
    }(), "train");
    result.val = subset(val, [&] {
      std::vector<int32_t> all(static_cast<size_t>(val.count()));
      std::iota(all.begin(), all.end(), 0);
      return all;
    }(), "val");
    text << "official val split";
  } else {
    PNEUMO_CHECK(train.files.size() == train.labels.size(), "cache ", dataset.cache_dir,
                 ": the train split has no file list, so patients cannot be grouped");
    const ValidationSplit carved =
        carve_validation(train.labels, train.files, options.fraction, options.seed);
    result.train = subset(train, carved.train, "train");
    result.val = subset(train, carved.val, "val-carved");
    check_carve(train, result, options.fraction);
    text << "val carved from train: " << options.fraction * 100.0 << "% grouped by patient, seed "
         << options.seed;
  }
  const auto tc = result.train.class_counts(), vc = result.val.class_counts();
  // Fitting needs both classes (else every loss is one-sided and oversampling has no pool).
  for (int c = 0; c < kClassCount; ++c)
    if (tc[static_cast<size_t>(c)] == 0)
      throw Error(detail::concat("the training images of ", dataset.cache_dir, " hold no ",
                                 kClassNames[c], " image (", tc[0], " NORMAL + ", tc[1],
                                 " PNEUMONIA): training needs both classes"));
  text << " (train " << tc[0] << " NORMAL + " << tc[1] << " PNEUMONIA, val " << vc[0]
       << " NORMAL + " << vc[1] << " PNEUMONIA)";
  result.description = text.str();
  return result;
}

std::string carved_split_fingerprint(const Split& train, const Split& val) {
  uint32_t crc = 0;
  const char separator = '\n', between = '\0';
  for (const Split* split : {&train, &val}) {
    for (const std::string& file : split->files) {
      crc = crc32(file.data(), file.size(), crc);
      crc = crc32(&separator, 1, crc);
    }
    crc = crc32(&between, 1, crc);
  }
  return hex32(crc);
}


const char* to_string(BalanceMode mode) {
  switch (mode) {
    case BalanceMode::Oversample: return "oversample";
    case BalanceMode::ClassWeight: return "class-weight";
    case BalanceMode::None: return "none";
  }
  return "?";
}

std::vector<int32_t> epoch_indices(const std::vector<uint8_t>& labels, BalanceMode mode,
                                   uint64_t seed, uint32_t epoch) {
  check_labels(labels, "epoch_indices");
  std::vector<int32_t> order(labels.size());
  std::iota(order.begin(), order.end(), 0);

  if (mode == BalanceMode::Oversample) {
    std::array<std::vector<int32_t>, kClassCount> members;
    for (int32_t i : order) members[labels[static_cast<size_t>(i)]].push_back(i);
    const size_t minority = members[0].size() <= members[1].size() ? 0 : 1;
    const auto& pool = members[minority];
    const size_t extra = members[1 - minority].size() - pool.size();
    if (!pool.empty()) {
      const RngKey key = make_key(seed, RngStream::kOversample, epoch);
      for (size_t k = 0; k < extra; ++k)
        order.push_back(pool[index_below(philox4x32(key, static_cast<uint32_t>(k)),
                                         static_cast<uint32_t>(pool.size()))]);
    }
  }
  PNEUMO_CHECK(order.size() < static_cast<size_t>(INT32_MAX), "epoch of ", order.size(),
               " images exceeds int32 indices");
  philox_shuffle(order, make_key(seed, RngStream::kShuffle, epoch));
  return order;
}

size_t epoch_size(const std::vector<uint8_t>& labels, BalanceMode mode) {
  check_labels(labels, "epoch_size");
  if (mode != BalanceMode::Oversample) return labels.size();
  std::array<size_t, kClassCount> counts{};
  for (uint8_t l : labels) ++counts[l];
  const size_t minority = std::min(counts[0], counts[1]);
  // No minority image to draw the extra ones from: every image once.
  return minority == 0 ? labels.size() : 2 * std::max(counts[0], counts[1]);
}

std::array<float, kClassCount> class_weights(const std::vector<uint8_t>& labels,
                                             BalanceMode mode) {
  std::array<float, kClassCount> weights{1.0f, 1.0f};
  if (mode != BalanceMode::ClassWeight) return weights;
  check_labels(labels, "class_weights");
  std::array<int64_t, kClassCount> counts{};
  for (uint8_t l : labels) ++counts[l];
  for (int c = 0; c < kClassCount; ++c)
    weights[static_cast<size_t>(c)] =
        counts[static_cast<size_t>(c)] == 0
            ? 0.0f
            : static_cast<float>(static_cast<double>(labels.size()) /
                                 (kClassCount * static_cast<double>(counts[static_cast<size_t>(c)])));
  return weights;
}

std::vector<float> sample_weights(const std::vector<uint8_t>& labels, BalanceMode mode) {
  const auto weights = class_weights(labels, mode);
  std::vector<float> out(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    PNEUMO_CHECK(labels[i] < kClassCount, "sample_weights: label ", static_cast<int>(labels[i]),
                 " of image ", i, " is not 0 or 1");
    out[i] = weights[labels[i]];
  }
  return out;
}

std::vector<float> labels_as_float(const std::vector<uint8_t>& labels) {
  return std::vector<float>(labels.begin(), labels.end());
}

}  // namespace pneumo
