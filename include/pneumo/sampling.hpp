// Which images train and which validate, and in what order an epoch visits them: the
// patient-grouped, stratified validation split carved from train, and the per-epoch sampler that
// balances the classes (oversampling or class weights). All randomness is Philox (random.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "pneumo/data.hpp"

namespace pneumo {

// ---- Patients -------------------------------------------------------------------------------
// The patient a file belongs to, parsed from its base name (any folders and extension dropped):
//   personNNN_bacteria_MMM, personNNN_virus_MMM[_K] -> "personNNN"
//   NORMAL2-IM-NNNN-MMMM[-K]                         -> "NORMAL2-IM-NNNN"
//   IM-NNNN-MMMM[-K]                                 -> "IM-NNNN"
// Any other name is its own patient (the whole base name).
std::string patient_id(const std::string& file);

// How many patients a list of files holds, and which of them two lists share: the ids found in
// both, and how many files of each list carry one. In this dataset the ids come from file names
// that each split may number on its own, so a shared id is not proof of a shared child.
int64_t count_patients(const std::vector<std::string>& files);
struct SharedPatients {
  int64_t patients = 0;
  int64_t files_a = 0, files_b = 0;
};
SharedPatients shared_patients(const std::vector<std::string>& a, const std::vector<std::string>& b);

// ---- Validation split -----------------------------------------------------------------------
// The recipe's official val split has 16 images, too few to steer callbacks, so by default 15%
// of train is carved out instead (about 780 images of the official 5216).
inline constexpr double kDefaultValFraction = 0.15;

struct ValidationSplit {
  std::vector<int32_t> train;  // indices into the split that was carved, ascending
  std::vector<int32_t> val;
};

// Carves `fraction` (in [0, 1)) of the images out for validation, GROUPED BY PATIENT (all of a
// patient's images land on one side) and STRATIFIED by class: each patient is assigned the
// majority label of their images (ties: NORMAL); for each class the patients are shuffled with
// Philox stream kValSplit (step = class) and visited in that order, each one taken when that
// brings the class's validation image count closer to round(fraction x the class's images).
// Deterministic given (labels, files, fraction, seed); independent of the order of the input.
ValidationSplit carve_validation(const std::vector<uint8_t>& labels,
                                 const std::vector<std::string>& files, double fraction,
                                 uint64_t seed);

enum class ValidationSource { Carve, Official };

struct ValidationOptions {
  ValidationSource source = ValidationSource::Carve;
  double fraction = kDefaultValFraction;  // for Carve
  uint64_t seed = 0;
};

struct TrainValSplits {
  Split train;
  Split val;
  std::string description;  // e.g. "val carved from train: 15% grouped by patient (783 images, ...)"
};

// The images the trainer fits on and those it validates on. Carve: both come out of the
// dataset's train split (named "train" and "val-carved"); Official: train and val as they are.
TrainValSplits make_train_val(const Dataset& dataset, const ValidationOptions& options);

// A CRC-32 (hex) of the file names of a run's training and validation images, in order: stored
// in the checkpoints as "carved_split_crc32", so `evaluate --split val-carved` can tell whether
// the --data it is given carves the same validation images (and not some training ones).
std::string carved_split_fingerprint(const Split& train, const Split& val);

// The images at `indices` of `split`, in that order, as a new split called `name`.
Split subset(const Split& split, const std::vector<int32_t>& indices, const std::string& name);

// ---- Balancing and the epoch order ------------------------------------------------------------
enum class BalanceMode { Oversample, ClassWeight, None };
const char* to_string(BalanceMode mode);

// The order in which epoch `epoch` visits the training images: int32 indices into `labels`.
// - None, ClassWeight: every image once.
// - Oversample: every image once, plus (majority - minority) extra draws of minority images with
//   replacement (Philox stream kOversample, keyed by epoch), so both classes count the majority
//   count. Each replica sits in a different batch slot, so the augmentation draws it afresh.
// Then shuffled (Fisher-Yates driven by Philox stream kShuffle, keyed by epoch). A pure function
// of (labels, mode, seed, epoch): a resumed run continues the same sequence.
std::vector<int32_t> epoch_indices(const std::vector<uint8_t>& labels, BalanceMode mode,
                                   uint64_t seed, uint32_t epoch);
// How many images epoch_indices gives an epoch (the same every epoch), without drawing them.
size_t epoch_size(const std::vector<uint8_t>& labels, BalanceMode mode);

// Per-class loss weights: ClassWeight gives Keras' "balanced" n_total / (2 n_class) (a class
// with no image gets 0); the other modes give 1.
std::array<float, kClassCount> class_weights(const std::vector<uint8_t>& labels, BalanceMode mode);

// Per-image loss weights (N) from class_weights, for Backend::gather_values.
std::vector<float> sample_weights(const std::vector<uint8_t>& labels, BalanceMode mode);

// Labels as float (N), 0.0 or 1.0, the form the loss takes.
std::vector<float> labels_as_float(const std::vector<uint8_t>& labels);

}  // namespace pneumo
