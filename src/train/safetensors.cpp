// safetensors reading (with full validation of hostile input: every length and offset is checked
// against the buffer before use) and writing (sorted JSON header padded to 8 bytes, atomic file).
// Tensor bytes are copied with memcpy, so no alignment is assumed anywhere.
#include "pneumo/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/json_structure.hpp"
#include "pneumo/error.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian and is copied as is; add byte swapping to port");

namespace pneumo {

using nlohmann::json;

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::Bool, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2}, {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},   {DType::I64, "I64", 8}, {DType::U64, "U64", 8},
    {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

const DTypeInfo* find_dtype(const std::string& name) {
  for (const auto& info : kDTypes)
    if (name == info.name) return &info;
  return nullptr;
}

const DTypeInfo& info_of(DType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info;
  throw Error("unknown dtype enumerator");  // unreachable for valid enum values
}

// Root object -> tensor entry object -> shape array: the format never nests deeper.
constexpr size_t kMaxJsonDepth = 3;

// JSON text of a value for an error message, cut short: hostile values can be megabytes long.
std::string short_dump(const json& value) {
  std::string text = value.dump();
  return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// numel and byte count of (dtype, shape), or false when either overflows 64 bits.
bool checked_byte_count(DType dtype, const std::vector<int64_t>& shape, uint64_t* numel,
                        uint64_t* bytes) {
  uint64_t count = 1;
  for (int64_t dim : shape)
    if (dim < 0 || __builtin_mul_overflow(count, static_cast<uint64_t>(dim), &count)) return false;
  *numel = count;
  return !__builtin_mul_overflow(count, static_cast<uint64_t>(dtype_size(dtype)), bytes);
}

}  // namespace

const char* dtype_name(DType dtype) { return info_of(dtype).name; }
size_t dtype_size(DType dtype) { return info_of(dtype).size; }

uint64_t TensorEntry::numel() const {
  uint64_t count = 1;
  for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
  return count;
}

// ---- Parsing ---------------------------------------------------------------------------------

namespace {

// The checks of a file's first bytes: "" when `data` (its first min(size, 9) bytes) starts as a
// safetensors file of `size` bytes does, with `header_length` set; else why not.
std::string prefix_problem(const uint8_t* data, uint64_t size, uint64_t& header_length) {
  if (size < 8)
    return detail::concat("file is ", size,
                          " bytes, too short to hold the 8-byte header length (truncated, or not "
                          "a safetensors file)");
  header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | data[i];
  if (header_length > kMaxSafetensorsHeaderBytes)
    return detail::concat("header length ", header_length, " bytes exceeds the limit of ",
                          kMaxSafetensorsHeaderBytes, " (corrupt, or not a safetensors file)");
  if (header_length > size - 8)
    return detail::concat("header length ", header_length,
                          " bytes runs past the end of the file (", size, " bytes): truncated?");
  if (header_length == 0 || data[8] != '{')
    return "header does not start with '{' (not a safetensors file)";
  return "";
}

}  // namespace

namespace {

// prefix_problem of a regular file's first bytes, read without the rest; nothing when they cannot
// be read (a FIFO or a device is not read at all).
std::optional<std::string> file_prefix_problem(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) return std::nullopt;
  const uintmax_t size = std::filesystem::file_size(path, error);
  std::ifstream in(path, std::ios::binary);
  uint8_t first[9] = {};
  in.read(reinterpret_cast<char*>(first), sizeof first);
  if (error || !(in || in.gcount() == static_cast<std::streamsize>(size))) return std::nullopt;
  uint64_t header_length = 0;
  return prefix_problem(first, size, header_length);
}

}  // namespace

bool starts_like_safetensors(const std::string& path) {
  const std::optional<std::string> problem = file_prefix_problem(path);
  return problem && problem->empty();
}

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& source) {
  auto fail = [&source](const auto&... parts) -> Error {
    return Error(detail::concat(source, ": ", parts...));
  };
  uint64_t header_length = 0;
  if (const std::string problem = prefix_problem(data, size, header_length); !problem.empty())
    throw fail(problem);

  // Two passes: a SAX pass refuses deep nesting and duplicate keys (nlohmann's DOM parser would
  // keep the last value silently), then the plain DOM parse. Not a parse callback: nlohmann's
  // callback parser rescans the enclosing object each time a child value closes, which is
  // quadratic in the number of tensors (on a loaded 2-core machine, 10,000 entries took 10 s to
  // parse and 40,000 over 5 minutes).
  const char* text = reinterpret_cast<const char*>(data + 8);
  const JsonStructure structure = check_json_structure(text, text + header_length, kMaxJsonDepth);
  if (structure.too_deep)
    throw fail("header nests JSON deeper than the format allows (", kMaxJsonDepth, " levels)");
  if (!structure.repeated_key.empty())
    throw fail("header has the key \"", structure.repeated_key, "\" twice",
               structure.repeated_key_depth == 1 ? " (two tensors with one name)" : "");
  if (!structure.valid) throw fail("header is not valid JSON: ", structure.parse_error);
  json header;
  try {
    header = json::parse(text, text + header_length);
  } catch (const json::exception& e) {  // not expected after the SAX pass accepted the text
    throw fail("header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) throw fail("header must be a JSON object, got ", header.type_name());

  SafetensorsHeader result;
  result.data_offset = 8 + header_length;
  const uint64_t data_size = size - result.data_offset;
  for (auto item = header.begin(); item != header.end(); ++item) {
    const std::string& name = item.key();
    const json& value = item.value();
    if (name == "__metadata__") {
      if (!value.is_object())
        throw fail("__metadata__ must be an object of strings, got ", short_dump(value));
      for (auto field = value.begin(); field != value.end(); ++field) {
        if (!field.value().is_string())
          throw fail("__metadata__ value of \"", field.key(), "\" must be a string, got ",
                     short_dump(field.value()));
        result.metadata[field.key()] = field.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const auto&... parts) { return fail("tensor \"", name, "\": ", parts...); };
    if (!value.is_object())
      throw bad("expected an object {dtype, shape, data_offsets}, got ", short_dump(value));
    for (auto field = value.begin(); field != value.end(); ++field)
      if (field.key() != "dtype" && field.key() != "shape" && field.key() != "data_offsets")
        throw bad("unexpected field \"", field.key(), "\"");
    if (!value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets"))
      throw bad("needs all of dtype, shape and data_offsets");

    TensorEntry entry;
    entry.name = name;
    const json& dtype = value.at("dtype");
    const DTypeInfo* info = dtype.is_string() ? find_dtype(dtype.get<std::string>()) : nullptr;
    if (!info) throw bad("unknown dtype ", short_dump(dtype));
    entry.dtype = info->dtype;

    const json& shape = value.at("shape");
    if (!shape.is_array()) throw bad("shape must be an array, got ", short_dump(shape));
    for (const json& dim : shape) {
      if (!dim.is_number_unsigned() ||
          dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw bad("shape ", short_dump(shape), " must hold non-negative integers");
      entry.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
    }
    uint64_t numel = 0, expected_bytes = 0;
    if (!checked_byte_count(entry.dtype, entry.shape, &numel, &expected_bytes))
      throw bad("shape ", short_dump(shape), " of ", info->name,
                " overflows 64 bits in its element or byte count");

    const json& offsets = value.at("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      throw bad("data_offsets must be [begin, end] with non-negative integers, got ",
                short_dump(offsets));
    entry.begin = offsets[0].get<uint64_t>();
    entry.end = offsets[1].get<uint64_t>();
    if (entry.begin > entry.end)
      throw bad("data_offsets [", entry.begin, ", ", entry.end, "] are reversed");
    if (entry.end > data_size)
      throw bad("data_offsets [", entry.begin, ", ", entry.end,
                "] run past the end of the data section (", data_size, " bytes): truncated file?");
    if (entry.end - entry.begin != expected_bytes)
      throw bad("holds ", entry.end - entry.begin, " bytes but ", info->name, " x ",
                shape_string(entry.shape), " needs ", expected_bytes);
    result.tensors.push_back(std::move(entry));
  }

  // Every data byte belongs to exactly one tensor: no overlaps, no gaps, nothing trailing.
  std::sort(result.tensors.begin(), result.tensors.end(),
            [](const TensorEntry& a, const TensorEntry& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  uint64_t covered = 0;
  const TensorEntry* previous = nullptr;
  for (const auto& entry : result.tensors) {
    if (entry.begin < covered)
      throw fail("tensor \"", entry.name, "\" data [", entry.begin, ", ", entry.end,
                 ") overlaps tensor \"", previous->name, "\" [", previous->begin, ", ",
                 previous->end, ")");
    if (entry.begin > covered)
      throw fail("gap of ", entry.begin - covered, " bytes in the data section before tensor \"",
                 entry.name, "\"");
    covered = entry.end;
    previous = &entry;
  }
  if (covered != data_size)
    throw fail("data section holds ", data_size, " bytes but the tensors cover ", covered,
               " (trailing bytes, or a tensor missing from the header)");
  return result;
}

// ---- SafetensorsFile -------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::read(const std::string& path) {
  // The first bytes checked before the whole file is read: a large file named by mistake
  // (--model data.tar) was read whole, gigabytes, before its header was refused (or memory ran
  // out first, "try a smaller --batch"). A file that is not a regular one goes to
  // read_file_bytes, which refuses it without waiting on it.
  // (One that cannot be read at all is left to read_file_bytes' own message.)
  if (const std::optional<std::string> problem = file_prefix_problem(path);
      problem && !problem->empty())
    throw Error(path + ": " + *problem);
  return from_bytes(read_file_bytes(path), path);
}

SafetensorsFile SafetensorsFile::from_bytes(std::vector<uint8_t> bytes, std::string source) {
  SafetensorsFile file;
  file.header_ = parse_safetensors(bytes.data(), bytes.size(), source);
  for (size_t i = 0; i < file.header_.tensors.size(); ++i)
    file.index_.emplace(file.header_.tensors[i].name, i);
  file.bytes_ = std::move(bytes);
  file.source_ = std::move(source);
  return file;
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  const auto found = index_.find(name);
  return found == index_.end() ? nullptr : &header_.tensors[found->second];
}

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  const TensorEntry* found = find(name);
  if (!found) throw Error(detail::concat(source_, ": no tensor named \"", name, "\""));
  return *found;
}

const uint8_t* SafetensorsFile::raw_bytes(const TensorEntry& entry) const {
  return bytes_.data() + header_.data_offset + entry.begin;
}

template <class T>
std::vector<T> SafetensorsFile::copy_as(const std::string& name, DType expected,
                                        DType also_accepted) const {
  const TensorEntry& found = entry(name);
  if (found.dtype != expected && found.dtype != also_accepted)
    throw Error(detail::concat(source_, ": tensor \"", name, "\" is ", dtype_name(found.dtype),
                               ", expected ", dtype_name(expected)));
  std::vector<T> values(static_cast<size_t>(found.numel()));
  if (!values.empty()) std::memcpy(values.data(), raw_bytes(found), found.byte_size());
  return values;
}

std::vector<float> SafetensorsFile::to_f32(const std::string& name) const {
  return copy_as<float>(name, DType::F32, DType::F32);
}
std::vector<int64_t> SafetensorsFile::to_i64(const std::string& name) const {
  return copy_as<int64_t>(name, DType::I64, DType::I64);
}
std::vector<uint8_t> SafetensorsFile::to_u8(const std::string& name) const {
  return copy_as<uint8_t>(name, DType::U8, DType::Bool);
}

// ---- Writing ---------------------------------------------------------------------------------

void SafetensorsWriter::add_raw(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                const void* bytes, size_t byte_count) {
  if (name.empty() || name == "__metadata__")
    throw Error("safetensors: tensor name \"" + name + "\" is empty or reserved");
  for (const auto& pending : tensors_)
    if (pending.name == name) throw Error("safetensors: tensor \"" + name + "\" added twice");
  uint64_t numel = 0, expected = 0;
  if (!checked_byte_count(dtype, shape, &numel, &expected))
    throw Error(detail::concat("safetensors: tensor \"", name, "\" has an invalid shape ",
                               shape_string(shape)));
  if (expected != byte_count || (byte_count > 0 && bytes == nullptr))
    throw Error(detail::concat("safetensors: tensor \"", name, "\" of ", dtype_name(dtype), " x ",
                               shape_string(shape), " needs ", expected, " bytes, got ",
                               byte_count));
  const auto* first = static_cast<const uint8_t*>(bytes);
  tensors_.push_back({name, dtype, std::move(shape),
                      byte_count ? std::vector<uint8_t>(first, first + byte_count)
                                 : std::vector<uint8_t>{}});
}

void SafetensorsWriter::add_f32(const std::string& name, std::vector<int64_t> shape,
                                const float* values) {
  uint64_t numel = 1;
  for (int64_t dim : shape) numel *= static_cast<uint64_t>(std::max<int64_t>(dim, 0));
  add_raw(name, DType::F32, std::move(shape), values, numel * sizeof(float));
}

void SafetensorsWriter::add_i64(const std::string& name, std::vector<int64_t> shape,
                                const int64_t* values) {
  uint64_t numel = 1;
  for (int64_t dim : shape) numel *= static_cast<uint64_t>(std::max<int64_t>(dim, 0));
  add_raw(name, DType::I64, std::move(shape), values, numel * sizeof(int64_t));
}

void SafetensorsWriter::add_u8(const std::string& name, std::vector<int64_t> shape,
                               const uint8_t* values) {
  uint64_t numel = 1;
  for (int64_t dim : shape) numel *= static_cast<uint64_t>(std::max<int64_t>(dim, 0));
  add_raw(name, DType::U8, std::move(shape), values, numel);
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

std::vector<uint8_t> SafetensorsWriter::serialize() const {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    throw Error(std::string("safetensors: a tensor name or metadata string is not valid UTF-8: ") +
                e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  uint64_t length = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(length >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const auto& t : tensors_) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

void SafetensorsWriter::write(const std::string& path) const {
  std::vector<uint8_t> bytes = serialize();
  write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace pneumo
