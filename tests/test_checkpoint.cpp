// Checkpoints: full round trip (tensors, every metadata field, callback state, bit-exact
// doubles), flat-buffer layout helpers, refusal of another architecture or input size, of
// truncated and foreign files, and atomic replacement of an existing checkpoint; on a GPU, a
// checkpoint restored into and captured from device tensors.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <limits>

#include "pneumo/backend.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/model_checkpoint.hpp"
#include "pneumo/safetensors.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using pneumo::testing::TempDir;

// A two-layer toy layout: conv1.weight (2, 1, 3, 3) at 0, conv1.bias (2) at 18, fc1.weight (1, 2)
// at 20 -> 22 parameters; buffers bn1.running_mean (2) and bn1.running_var (2).
std::vector<ParameterInfo> toy_parameters() {
  return {{"conv1.weight", Shape{2, 1, 3, 3}, 0},
          {"conv1.bias", Shape{2}, 18},
          {"fc1.weight", Shape{1, 2}, 20}};
}
std::vector<ParameterInfo> toy_buffers() {
  return {{"bn1.running_mean", Shape{2}, 0}, {"bn1.running_var", Shape{2}, 2}};
}

CheckpointData toy_checkpoint() {
  std::vector<float> parameters(22), mean_square(22), buffers{0.1f, -0.2f, 1.5f, 0.75f};
  for (size_t i = 0; i < parameters.size(); ++i) {
    parameters[i] = 0.01f * static_cast<float>(i) - 0.1f;
    mean_square[i] = 1e-6f * static_cast<float>(i * i);
  }
  CheckpointData data;
  data.tensors = tensors_from_flat(parameters.data(), 22, toy_parameters());
  auto buffer_tensors = tensors_from_flat(buffers.data(), 4, toy_buffers());
  auto optimizer_tensors =
      tensors_from_flat(mean_square.data(), 22, toy_parameters(), kRmspropMeanSquarePrefix);
  data.tensors.insert(data.tensors.end(), buffer_tensors.begin(), buffer_tensors.end());
  data.tensors.insert(data.tensors.end(), optimizer_tensors.begin(), optimizer_tensors.end());

  CheckpointMetadata& m = data.metadata;
  m.decision_threshold = 0.6791786991753930;
  m.threshold_rule = "Youden's J on val";
  m.epoch = 7;
  m.step = 1234567;
  m.weights_epoch = 6;  // a restored best epoch's weights
  m.epoch_step = 5;
  m.epoch_loss_sum = 0.1f + 0.2f;  // a float32 sum: must come back bit-exact
  m.epoch_correct = 117;
  m.epoch_seconds = 12.25;
  m.seed = std::numeric_limits<uint64_t>::max() - 5;  // beyond int64 and double precision
  m.learning_rate = 1e-3 * 0.3 * 0.3;               // 9.000000000000001e-05: must stay bit-exact
  m.callback_state = {{"reduce_lr_on_plateau", {{"best", "-inf"}, {"wait", 1}}}};
  m.config = {{"batch_size", 32}, {"epochs", 12}, {"data", "../shared/data/chest_xray"}};
  m.extra["git_commit"] = "abc123";
  return data;
}

TEST(Checkpoint, RoundTripKeepsTensorsAndEveryMetadataField) {
  TempDir dir;
  std::string path = dir.file("last.safetensors");
  CheckpointData saved = toy_checkpoint();
  save_checkpoint(path, saved);
  CheckpointData loaded = load_checkpoint(path);

  ASSERT_EQ(loaded.tensors.size(), saved.tensors.size());
  for (const auto& tensor : saved.tensors) {
    const NamedTensor* back = loaded.find(tensor.name);
    ASSERT_NE(back, nullptr) << tensor.name;
    EXPECT_EQ(back->shape, tensor.shape) << tensor.name;
    EXPECT_EQ(back->values, tensor.values) << tensor.name;
  }
  const CheckpointMetadata &a = saved.metadata, &b = loaded.metadata;
  EXPECT_EQ(b.format_version, kCheckpointFormatVersion);
  EXPECT_EQ(b.architecture, "seed-cnn-v1");
  EXPECT_EQ(b.input_size, 150);
  EXPECT_EQ(b.channels, 1);
  EXPECT_EQ(b.classes, (std::vector<std::string>{"NORMAL", "PNEUMONIA"}));
  EXPECT_EQ(b.normalisation, "x/255, grayscale");
  EXPECT_EQ(b.decision_threshold, a.decision_threshold);  // bit-exact
  EXPECT_EQ(b.threshold_rule, a.threshold_rule);
  EXPECT_EQ(b.epoch, 7);
  EXPECT_EQ(b.step, 1234567);
  EXPECT_EQ(b.weights_epoch, 6);
  EXPECT_EQ(b.epoch_step, 5);
  EXPECT_EQ(b.epoch_loss_sum, a.epoch_loss_sum);
  EXPECT_EQ(b.epoch_correct, 117);
  EXPECT_EQ(b.epoch_seconds, 12.25);
  EXPECT_EQ(b.seed, a.seed);
  EXPECT_EQ(b.learning_rate, a.learning_rate);  // bit-exact
  EXPECT_EQ(b.optimizer, "rmsprop");
  EXPECT_EQ(b.callback_state, a.callback_state);
  EXPECT_EQ(b.config, a.config);
  EXPECT_EQ(b.extra, a.extra);

  // Readable by any safetensors reader: plain string metadata, optimizer tensors by name.
  SafetensorsFile raw = SafetensorsFile::read(path);
  EXPECT_EQ(raw.metadata().at("format"), "pneumo-checkpoint");
  EXPECT_EQ(raw.metadata().at("architecture"), "seed-cnn-v1");
  EXPECT_EQ(raw.metadata().at("input_size"), "150");
  EXPECT_EQ(raw.entry("optimizer.rmsprop.mean_square.conv1.weight").shape,
            (std::vector<int64_t>{2, 1, 3, 3}));
  EXPECT_EQ(read_checkpoint_metadata(path).epoch, 7);
}

TEST(Checkpoint, FlatBuffersRoundTripThroughNamedTensors) {
  CheckpointData data = toy_checkpoint();
  std::vector<float> parameters(22, -99.0f), mean_square(22, -99.0f), buffers(4, -99.0f);
  tensors_to_flat(data, toy_parameters(), "", parameters.data(), 22, "toy");
  tensors_to_flat(data, toy_parameters(), kRmspropMeanSquarePrefix, mean_square.data(), 22, "toy");
  tensors_to_flat(data, toy_buffers(), "", buffers.data(), 4, "toy");
  EXPECT_FLOAT_EQ(parameters[0], -0.1f);
  EXPECT_FLOAT_EQ(parameters[21], 0.11f);
  EXPECT_FLOAT_EQ(mean_square[21], 1e-6f * 441);
  EXPECT_EQ(buffers, (std::vector<float>{0.1f, -0.2f, 1.5f, 0.75f}));
  EXPECT_EQ(rmsprop_state_name("fc1.weight"), "optimizer.rmsprop.mean_square.fc1.weight");

  // A model whose layer is shaped differently, or that has a layer the checkpoint lacks.
  auto wider = toy_parameters();
  wider[2].shape = Shape{2, 2};
  std::vector<float> big(24);
  try {
    tensors_to_flat(data, wider, "", big.data(), 24, "old.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc1.weight has shape (1, 2) but this model expects (2, 2)"),
              std::string::npos)
        << e.what();
  }
  auto extra_layer = toy_parameters();
  extra_layer.push_back({"fc2.weight", Shape{1, 1}, 22});
  std::vector<float> more(23);
  EXPECT_THROW(tensors_to_flat(data, extra_layer, "", more.data(), 23, "old.safetensors"), Error);
  EXPECT_THROW(tensors_to_flat(data, toy_parameters(), "", parameters.data(), 21, "x"), Error);
  EXPECT_THROW(tensors_from_flat(parameters.data(), 21, toy_parameters()), Error);
}

TEST(Checkpoint, ForeignArchitectureOrInputSizeIsRefused) {
  CheckpointMetadata m;  // seed-cnn-v1 at 150
  EXPECT_NO_THROW(validate_compatible(m, "seed-cnn-v1", 150, "best.safetensors"));
  try {
    validate_compatible(m, "seed-cnn-v2", 224, "runs/a/best.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "checkpoint runs/a/best.safetensors was trained for architecture seed-cnn-v1 at "
                 "input size 150; this run uses seed-cnn-v2 at 224 (the input size is --size, "
                 "or the size a --data cache was prepared at when --size is 0; give the "
                 "checkpoint's 150, or a --data prepared at it)");
  }
  // Ours: the flag that picks the architecture is named.
  try {
    validate_compatible(m, "seed-cnn-v1-gap", 150, "x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(--head gap; the checkpoint's: --head flatten)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(validate_compatible(m, "seed-cnn-v1", 224, "x"), Error);
  EXPECT_THROW(validate_compatible(m, "resnet", 150, "x"), Error);
  // Classes in another order (every prediction would be named wrongly), or others; RGB input.
  for (const std::vector<std::string>& classes :
       {std::vector<std::string>{"PNEUMONIA", "NORMAL"}, std::vector<std::string>{"A"}}) {
    CheckpointMetadata other;
    other.classes = classes;
    EXPECT_THROW(validate_compatible(other, "seed-cnn-v1", 150, "x"), Error);
  }
  CheckpointMetadata rgb;
  rgb.channels = 3;
  EXPECT_THROW(validate_compatible(rgb, "seed-cnn-v1", 150, "x"), Error);
}

TEST(Checkpoint, TruncatedForeignAndNewerFilesAreRefused) {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  save_checkpoint(path, toy_checkpoint());
  auto bytes = pneumo::testing::read_text(path);

  // Cut anywhere: in the data, in the header, inside the length field.
  for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t{100}, size_t{5}, size_t{0}}) {
    std::string cut = dir.file("cut.safetensors");
    pneumo::testing::write_bytes(cut, std::vector<uint8_t>(bytes.begin(), bytes.begin() + keep));
    try {
      load_checkpoint(cut);
      ADD_FAILURE() << "a file cut to " << keep << " bytes was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
    }
  }

  // A valid safetensors file that is not a pneumo checkpoint.
  SafetensorsWriter plain;
  float one = 1;
  plain.add_f32("w", {1}, &one);
  plain.write(dir.file("plain.safetensors"));
  try {
    load_checkpoint(dir.file("plain.safetensors"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a pneumo checkpoint"), std::string::npos) << e.what();
  }

  // A newer format version, a mistyped field, a non-float tensor.
  auto rewrite = [&](const std::string& key, const std::string& value) {
    SafetensorsFile file = SafetensorsFile::read(path);
    SafetensorsWriter writer;
    for (const auto& entry : file.tensors())
      writer.add_f32(entry.name, entry.shape, file.to_f32(entry.name).data());
    // Without metadata_crc32 (as a file from another tool): the field checks are what is tested.
    for (const auto& [k, v] : file.metadata())
      if (k != "metadata_crc32") writer.set_metadata(k, v);
    writer.set_metadata(key, value);
    writer.write(dir.file("edited.safetensors"));
    return dir.file("edited.safetensors");
  };
  EXPECT_THROW(load_checkpoint(rewrite("format_version", "2")), Error);
  EXPECT_THROW(load_checkpoint(rewrite("input_size", "\"150\"")), Error);
  EXPECT_THROW(load_checkpoint(rewrite("epoch", "-1")), Error);
  EXPECT_THROW(load_checkpoint(rewrite("decision_threshold", "1.5")), Error);
  EXPECT_THROW(load_checkpoint(rewrite("callback_state", "{not json")), Error);
  EXPECT_THROW(load_checkpoint(rewrite("epoch_step", "-2")), Error);
  EXPECT_THROW(load_checkpoint(rewrite("weights_epoch", "8")), Error);  // beyond epoch 7
  EXPECT_THROW(load_checkpoint(rewrite("epoch_seconds", "-1")), Error);
  EXPECT_THROW(load_checkpoint(rewrite("epoch_loss_sum", "\"x\"")), Error);
  EXPECT_NO_THROW(load_checkpoint(rewrite("epoch", "8")));

  // Checkpoints written before the mid-epoch fields existed load as "at an epoch end".
  {
    SafetensorsFile file = SafetensorsFile::read(path);
    SafetensorsWriter writer;
    for (const auto& entry : file.tensors())
      writer.add_f32(entry.name, entry.shape, file.to_f32(entry.name).data());
    for (const auto& [k, v] : file.metadata())
      if (k.rfind("epoch_", 0) != 0 && k != "weights_epoch" && k != "metadata_crc32")
        writer.set_metadata(k, v);
    writer.write(dir.file("older.safetensors"));
    const CheckpointMetadata older = load_checkpoint(dir.file("older.safetensors")).metadata;
    EXPECT_EQ(older.epoch_step, 0);
    EXPECT_EQ(older.epoch_loss_sum, 0.0);
    EXPECT_EQ(older.epoch_seconds, 0.0);
    EXPECT_EQ(older.epoch, 7);
    EXPECT_EQ(older.weights_epoch, 7) << "weights of the last epoch";
  }

  SafetensorsWriter with_int;
  int64_t count = 3;
  with_int.add_i64("bn1.num_batches_tracked", {}, &count);
  SafetensorsFile original = SafetensorsFile::read(path);
  for (const auto& [k, v] : original.metadata())
    if (k != "metadata_crc32") with_int.set_metadata(k, v);
  with_int.write(dir.file("int.safetensors"));
  EXPECT_THROW(load_checkpoint(dir.file("int.safetensors")), Error);
}

// A metadata value damaged into another one that still parses (a learning rate of 0.001 read as
// 9.001) is refused by the metadata's CRC, by load_checkpoint and read_checkpoint_metadata alike;
// the same file with the value it was written with loads.
TEST(Checkpoint, AMetadataValueChangedAfterWritingIsRefused) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  save_checkpoint(path, toy_checkpoint());
  const SafetensorsFile original = SafetensorsFile::read(path);
  ASSERT_EQ(original.metadata().count("metadata_crc32"), 1u);
  auto with = [&](const std::string& key, const std::string& value) {
    SafetensorsWriter writer;
    for (const auto& entry : original.tensors())
      writer.add_f32(entry.name, entry.shape, original.to_f32(entry.name).data());
    for (const auto& [k, v] : original.metadata()) writer.set_metadata(k, v);
    writer.set_metadata(key, value);
    const std::string edited = dir.file("edited.safetensors");
    writer.write(edited);
    return edited;
  };
  const std::string lr = original.metadata().at("learning_rate");
  EXPECT_NO_THROW(load_checkpoint(with("learning_rate", lr)));
  const std::string damaged = with("learning_rate", "9" + lr);
  for (int reader = 0; reader < 2; ++reader) {
    try {
      if (reader == 0) load_checkpoint(damaged);
      else read_checkpoint_metadata(damaged);
      ADD_FAILURE() << "a changed learning_rate was accepted by reader " << reader;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("its metadata has CRC-32"), std::string::npos)
          << error.what();
    }
  }
}

// Metadata JSON nested deeper than a real checkpoint's is refused with the file and field named:
// a callback state of 200,000 nested arrays (400 KB) used to load, then crashed
// `pneumo train --resume` with a stack overflow when the callbacks printed it in their error.
TEST(Checkpoint, DeeplyNestedMetadataJsonIsRefused) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  save_checkpoint(path, toy_checkpoint());
  const SafetensorsFile original = SafetensorsFile::read(path);
  auto with = [&](const std::string& key, const std::string& value) {
    SafetensorsWriter writer;
    for (const auto& entry : original.tensors())
      writer.add_f32(entry.name, entry.shape, original.to_f32(entry.name).data());
    for (const auto& [k, v] : original.metadata())
      if (k != "metadata_crc32") writer.set_metadata(k, v);
    writer.set_metadata(key, value);
    const std::string edited = dir.file("nested.safetensors");
    writer.write(edited);
    return edited;
  };
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };

  for (const char* key : {"callback_state", "config", "classes"}) {
    for (int depth : {65, 200000}) {
      const std::string edited = with(key, nested(depth));
      try {
        read_checkpoint_metadata(edited);
        ADD_FAILURE() << key << " nested " << depth << " deep was accepted";
      } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(edited), std::string::npos) << what;
        EXPECT_NE(what.find(key), std::string::npos) << what;
        EXPECT_NE(what.find("deeper than 64"), std::string::npos) << what;
      }
      EXPECT_THROW(load_checkpoint(edited), Error);
    }
  }
  // 64 levels are still fine (objects and arrays alike).
  std::string objects;
  for (int i = 0; i < 63; ++i) objects += "{\"a\":";
  objects += "[1]" + std::string(63, '}');
  const CheckpointMetadata ok = read_checkpoint_metadata(with("callback_state", objects));
  EXPECT_TRUE(ok.callback_state.is_object());
  EXPECT_EQ(load_checkpoint(with("config", nested(64))).metadata.config,
            nlohmann::json::parse(nested(64)));

  // A key given twice would be read at its last value without a word (as the header's is).
  try {
    read_checkpoint_metadata(with("callback_state", R"({"a":1,"b":{"c":1,"c":2}})"));
    ADD_FAILURE() << "a key given twice was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gives \"c\" twice"), std::string::npos) << e.what();
  }
  // Wide is read as it is: 20,000 empty objects in one (the parse callback this replaced rescanned
  // the enclosing object as each closed, 1.4 s here and quadratic beyond).
  std::string wide = "{";
  for (int i = 0; i < 20000; ++i) wide += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":{}";
  wide += "}";
  EXPECT_EQ(read_checkpoint_metadata(with("config", wide)).config.size(), 20000u);
}

TEST(Checkpoint, SaveRefusesInconsistentDataAndKeepsTheOldFile) {
  TempDir dir;
  std::string path = dir.file("last.safetensors");
  save_checkpoint(path, toy_checkpoint());

  CheckpointData bad = toy_checkpoint();
  bad.tensors[0].values.pop_back();  // 17 values for a (2, 1, 3, 3) tensor
  EXPECT_THROW(save_checkpoint(path, bad), Error);
  CheckpointData clash = toy_checkpoint();
  clash.metadata.extra["epoch"] = "3";
  EXPECT_THROW(save_checkpoint(path, clash), Error);
  CheckpointData bad_threshold = toy_checkpoint();
  bad_threshold.metadata.decision_threshold = std::nan("");
  EXPECT_THROW(save_checkpoint(path, bad_threshold), Error);

  EXPECT_EQ(load_checkpoint(path).metadata.epoch, 7) << "the previous checkpoint is intact";
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"last.safetensors"});
  EXPECT_THROW(save_checkpoint(dir.file("missing/last.safetensors"), toy_checkpoint()), Error);
}

// A checkpoint holding a value no trained model holds (a NaN or infinite weight, a negative
// running variance) is refused by name, for inference as for --resume; the model's own values
// restore.
TEST(Checkpoint, NonFiniteWeightsAndNegativeVariancesAreRefused) {
  auto cpu = make_cpu_backend(1);
  ModelConfig config;
  config.input_size = 40;
  Model model(*cpu, config, 2), target(*cpu, config, 2);
  model.initialize(3);
  CheckpointMetadata metadata;
  metadata.optimizer = "rmsprop";
  const CheckpointData good = capture_checkpoint(model, nullptr, metadata);
  EXPECT_NO_THROW(restore_checkpoint(good, target, nullptr, "good.safetensors"));
  struct Case {
    const char* tensor;
    float value;
  };
  for (const Case& c : {Case{"fc2.weight", std::numeric_limits<float>::quiet_NaN()},
                        Case{"conv1.weight", std::numeric_limits<float>::infinity()},
                        Case{"bn1.running_var", -0.5f}}) {
    CheckpointData bad = good;
    bool found = false;
    for (auto& tensor : bad.tensors)
      if (tensor.name == c.tensor) tensor.values.back() = c.value, found = true;
    ASSERT_TRUE(found) << c.tensor;
    try {
      restore_checkpoint(bad, target, nullptr, "bad.safetensors");
      ADD_FAILURE() << c.tensor << " = " << c.value << " was accepted";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(std::string("bad.safetensors: ") + c.tensor + "["), std::string::npos)
          << message;
      EXPECT_EQ(message.find("[check"), std::string::npos) << message;
    }
  }
  // A negative value elsewhere (a weight, a running mean) is an ordinary value.
  CheckpointData negative_mean = good;
  for (auto& tensor : negative_mean.tensors)
    if (tensor.name == "bn1.running_mean") tensor.values.back() = -0.5f;
  EXPECT_NO_THROW(restore_checkpoint(negative_mean, target, nullptr, "mean.safetensors"));
}

// On a GPU: a checkpoint captured on the CPU (weights, batch-norm statistics and the optimizer's
// state, RMSprop's one slot and AdamW's two) restores into a CUDA model and state, and captured
// back from the device it is the same, value for value (copies only: what `--resume` and every
// checkpoint of a CUDA run go through). Skipped without a GPU.
TEST(CheckpointCuda, RestoresIntoAndCapturesFromDeviceTensors) {
  PNEUMO_REQUIRE_CUDA();
  auto cpu = make_cpu_backend(1);
  auto cuda = make_cuda_backend(BackendOptions{});
  ModelConfig config;
  config.input_size = 40;
  for (const char* optimizer : {"rmsprop", "adamw"}) {
    SCOPED_TRACE(optimizer);
    const int64_t slots = std::string(optimizer) == "adamw" ? 2 : 1;
    Model on_cpu(*cpu, config, 2), on_cuda(*cuda, config, 2);
    on_cpu.initialize(7);
    const std::vector<float> stats =
        testing::random_values(on_cpu.buffers().numel(), 12, 0.5f, 1.5f);
    copy_bytes(on_cpu.buffers().data, Device::Cpu, stats.data(), Device::Cpu,
               stats.size() * sizeof(float));
    const int64_t state_size = slots * on_cpu.parameters().numel();
    Tensor state_cpu = testing::random_tensor({state_size}, Device::Cpu, 13, 0.0f, 1.0f);
    Tensor state_cuda = cuda->zeros({state_size});
    CheckpointMetadata metadata;
    metadata.optimizer = optimizer;
    const CheckpointData written = capture_checkpoint(on_cpu, &state_cpu, metadata);
    restore_checkpoint(written, on_cuda, &state_cuda, "written.safetensors");
    const CheckpointData read = capture_checkpoint(on_cuda, &state_cuda, metadata);
    ASSERT_EQ(read.tensors.size(), written.tensors.size());
    for (size_t i = 0; i < written.tensors.size(); ++i) {
      EXPECT_EQ(read.tensors[i].name, written.tensors[i].name);
      EXPECT_EQ(read.tensors[i].shape, written.tensors[i].shape);
      EXPECT_EQ(read.tensors[i].values, written.tensors[i].values) << written.tensors[i].name;
    }
  }
}

}  // namespace
}  // namespace pneumo
