// `pneumo explain`: for each image, the probability of pneumonia and the Grad-CAM map of one layer
// (default conv5, the last block's convolution), written as a float32 .npy at the input size, a PNG
// overlay (OpenCV builds) and one line of explain.csv.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/commands/commands.hpp"
#include "cli/commands/flag_text.hpp"
#include "cli/commands/guards.hpp"
#include "core/paths.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/explain.hpp"
#include "pneumo/metrics.hpp"
#include "pneumo/model_checkpoint.hpp"
#include "pneumo/npy.hpp"
#include "pneumo/progress.hpp"
#include "pneumo/tensor.hpp"
#include "pneumo/trainer.hpp"

namespace fs = std::filesystem;

namespace pneumo::cli {

namespace {

// An input's name in its map's file names: at most this many bytes of it (the index before it
// keeps the names apart, explain.csv gives the whole path), so that NNNN_<name>_pX.XXX.npy (p
// of up to 19 characters) and its temporary twin fit in a file name's 255 bytes.
constexpr size_t kMaxStemBytes = 120;

// The first bytes of `name`, at most `limit`, not cutting a UTF-8 character in two; control
// characters (a line break in the input's name) made '_': a map's name is one line of `ls`.
std::string name_prefix(std::string name, size_t limit) {
  for (char& c : name)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = '_';
  if (name.size() <= limit) return name;
  size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(name[end]) & 0xC0) == 0x80) --end;
  return name.substr(0, end);
}

}  // namespace

int run_explain(const ExplainOptions& options) {
  if (options.model.empty()) throw UsageError("--model is required");
  if (options.out.empty()) throw UsageError("--out is required: the folder for the maps");
  if (options.inputs.empty()) throw UsageError("give at least one image or folder to explain");
  if (options.batch < 1 || options.batch > kMaxBatch)
    throw UsageError(
        detail::concat("--batch must be in [1, ", kMaxBatch, "], got ", options.batch));
  const DeviceChoice device =
      as_usage("--device", [&] { return parse_device_choice(options.device); });
  const CheckpointData checkpoint = load_checkpoint(options.model);
  BackendOptions backend_options;
  backend_options.device = device;
  backend_options.tuning_cache = tuning_cache_path("auto");
  std::unique_ptr<Backend> backend = make_backend(backend_options);
  const ModelConfig config = model_config_for(checkpoint.metadata, options.model);
  Model model(*backend, config, options.batch);
  restore_checkpoint(checkpoint, model, nullptr, options.model);
  const size_t layer = as_usage("--layer", [&] { return grad_cam_layer(model, options.layer); });
  std::error_code error;
  // A folder holding another run's maps is refused (explain.csv would list only some of those
  // beside it); the folder is made only once there is something to write.
  require_new_or_empty_folder(options.out, "--out folder", "folder",
                              "its maps would mix with those of this run");
  // Inside a folder of inputs, the overlays would be read as X-rays by the next explain or
  // predict of it: any folder the inputs' walk reads, a linked one included (`in/ext/maps` with
  // `in/ext` a link elsewhere passed a check of `in` alone). (An input file names no folder:
  // `explain a.jpeg --out maps` beside it is the user's choice.)
  const fs::path out = resolved(options.out);
  for (const std::string& input : options.inputs) {
    if (!fs::is_directory(input, error)) continue;
    for (const fs::path& folder : folders_listed({input}))
      if (is_same_or_inside(out, folder))
        throw UsageError("--out " + options.out + " lies inside " +
                         (folder == resolved(input) ? std::string("the input folder ") + input
                                                    : folder.string() + ", a folder that the "
                                                      "input folder " + input + " reads through "
                                                      "a link") +
                         ": its PNG overlays would be read as X-rays the next time that folder "
                         "is given; choose a folder outside it");
  }
  const int size = config.input_size;
  const DecodedInputs inputs = decode_inputs(options.inputs, size);
  const std::vector<std::string>& kept = inputs.files;
  fs::create_directories(options.out, error);
  if (error) throw Error("cannot create --out folder '" + options.out + "': " + error.message());

  const int64_t count = static_cast<int64_t>(kept.size());
  std::vector<uint8_t> no_labels(static_cast<size_t>(count), 0);
  const ImageSet images =
      ImageSet::upload(backend->device(), inputs.pixels.data(), count, size, no_labels.data());
  const double threshold = checkpoint.metadata.decision_threshold;
  std::cerr << "explain: " << count << " images, Grad-CAM of " << options.layer << " (output "
            << model.layer_shapes().at(layer).second.str() << " per image), threshold "
            << format_threshold(threshold) << " (" << checkpoint.metadata.threshold_rule << ")\n";
  TaskProgress progress(std::cerr, "explain: Grad-CAM", images.count, progress_options_for(stderr));
  const GradCam cam = grad_cam_images(model, images, layer, options.batch,
                                      [&](int64_t done) { progress.update(done); });
  progress.finish();
  // As predict and evaluate refuse it: a NaN logit was written "-nan,NORMAL", status 0.
  for (size_t index = 0; index < kept.size(); ++index)
    if (!std::isfinite(cam.logits[index]))
      throw non_finite_output(options.model, cam.logits[index], kept[index]);

  std::ofstream csv(fs::path(options.out) / "explain.csv");
  csv << "path,probability_pneumonia,label,map,map_peak\n";
  std::string no_png;
  for (size_t index = 0; index < kept.size(); ++index) {
    const std::vector<float> map =
        upsample_map(cam.maps.data() + index * cam.height * cam.width, cam.height, cam.width, size,
                     cam.cell_stride, cam.cell_offset);
    const float peak = *std::max_element(map.begin(), map.end());
    const double p = sigmoid(cam.logits[index]);
    const bool pneumonia = predicts_pneumonia(cam.logits[index], threshold);
    std::ostringstream stem;
    // p in 3 decimals, more where those would round it onto 0 or 1 or across the threshold from
    // its label (a NORMAL at 0.6996 under a 0.7 cut was named _p0.700).
    stem << std::setw(4) << std::setfill('0') << index << "_"
         << name_prefix(fs::path(kept[index]).stem().string(), kMaxStemBytes) << "_p"
         << format_decided_probability(p, pneumonia, threshold, 3);
    const std::string npy = (fs::path(options.out) / (stem.str() + ".npy")).string();
    write_npy(npy, NpyType::Float32, {size, size}, map.data());
    if (no_png.empty())
      no_png = write_heatmap_overlay((fs::path(options.out) / (stem.str() + ".png")).string(),
                                     inputs.pixels.data() + index * size * size, size, map.data());
    csv << csv_field(kept[index]) << "," << exact_text(p) << ","
        << (pneumonia ? "PNEUMONIA" : "NORMAL") << ","
        << csv_field(fs::path(npy).filename().string()) << "," << exact_text(peak) << "\n";
  }
  if (!csv) throw Error("cannot write " + (fs::path(options.out) / "explain.csv").string());
  if (!no_png.empty()) std::cerr << "explain: no PNG overlays: " << no_png << "\n";
  std::cout << "explain: " << count << " maps in " << options.out << " (explain.csv lists them)\n";
  return inputs.failures == 0 ? 0 : 3;
}

}  // namespace pneumo::cli
