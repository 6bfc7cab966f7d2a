// The epoch's progress line, epoch summaries and the CSV/JSONL history (when and how a line is
// drawn: src/core/progress_line.cpp). Formatting is in pure functions so tests compare exact
// strings; the reporter only decides when to print, from an injected clock.
#include "pneumo/progress.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

using nlohmann::json;

namespace {

std::string printf_string(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

std::string metric_text(double value) {
  return std::isnan(value) ? "n/a" : printf_string("%.4f", value);
}

// Shortest text that reads back as the same double; nan/inf spelled so pandas reads them.
std::string exact_number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return json(value).dump();
}

json number_or_null(double value) { return std::isfinite(value) ? json(value) : json(nullptr); }

bool is_reserved_column(const std::string& name) {
  return name == "epoch" || name == "learning_rate" || name == "seconds" ||
         name == "train_seconds" || name == "val_seconds";
}

// The summary's order and short names for the metrics pneumo reports.
const std::vector<std::pair<std::string, std::string>>& known_metrics() {
  static const std::vector<std::pair<std::string, std::string>> names{
      {"loss", "loss"},        {"accuracy", "acc"},     {"auc", "auc"},
      {"sensitivity", "sens"}, {"specificity", "spec"}, {"precision", "prec"},
      {"f1", "f1"}};
  return names;
}

// "loss 0.3124 acc 0.8650 ..." for the values whose name is prefix + metric.
std::string metric_group(const std::map<std::string, double>& values, const std::string& prefix) {
  std::ostringstream out;
  std::set<std::string> shown;
  auto add = [&](const std::string& key, const std::string& label) {
    out << (out.tellp() > 0 ? " " : "") << label << " " << metric_text(values.at(key));
    shown.insert(key);
  };
  for (const auto& [metric, label] : known_metrics())
    if (values.count(prefix + metric)) add(prefix + metric, label);
  for (const auto& [key, value] : values) {
    bool is_val = key.rfind("val_", 0) == 0;
    if (shown.count(key) || (prefix.empty() ? is_val : !is_val)) continue;
    add(key, key.substr(prefix.size()));
  }
  return out.str();
}

}  // namespace

double rate_as_run(double learning_rate) {
  if (!std::isfinite(learning_rate)) return learning_rate;
  const float ran = static_cast<float>(learning_rate);
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {  // 9 significant digits name any float
    std::snprintf(text, sizeof text, "%.*g", digits, static_cast<double>(ran));
    const double shortest = std::strtod(text, nullptr);
    if (static_cast<float>(shortest) == ran) return shortest;
  }
  return static_cast<double>(ran);
}

std::string format_progress_line(const ProgressSnapshot& s) {
  int64_t percent = s.total_steps > 0 ? s.step * 100 / s.total_steps : 0;
  const int64_t steps_here = s.step - s.first_step;
  double rate = s.elapsed_seconds > 0
                    ? static_cast<double>(s.images - s.first_images) / s.elapsed_seconds
                    : 0.0;
  double eta = steps_here > 0 ? s.elapsed_seconds / static_cast<double>(steps_here) *
                                    static_cast<double>(s.total_steps - s.step)
                              : -1.0;
  std::ostringstream out;
  out << "epoch " << s.epoch + 1 << "/" << s.total_epochs << "  step " << s.step << "/"
      << s.total_steps << "  " << printf_string("%3.0f", static_cast<double>(percent)) << "%  "
      << printf_string("%.1f", rate) << " img/s  loss " << metric_text(s.running_loss)
      << "  acc " << metric_text(s.running_accuracy) << "  ETA " << format_duration(eta);
  return out.str();
}

ProgressReporter::ProgressReporter(std::ostream& out, ProgressOptions options, Clock clock)
    : line_(out, options), clock_(std::move(clock)) {}

void ProgressReporter::begin_epoch(int epoch, int total_epochs, int64_t total_steps,
                                   int64_t first_step, int64_t first_images) {
  PNEUMO_CHECK(total_steps > 0, "progress: an epoch needs at least one step, got ", total_steps);
  PNEUMO_CHECK(first_step >= 0 && first_step <= total_steps && first_images >= 0,
               "progress: resuming at step ", first_step, " of ", total_steps, " after ",
               first_images, " images");
  snapshot_ = ProgressSnapshot{};
  snapshot_.epoch = epoch;
  snapshot_.total_epochs = total_epochs;
  snapshot_.total_steps = total_steps;
  snapshot_.first_step = first_step;
  snapshot_.first_images = first_images;
  snapshot_.step = first_step;
  snapshot_.images = first_images;
  epoch_start_ = clock_();
  line_.start(epoch_start_);
}

void ProgressReporter::update(int64_t step, int64_t images, double running_loss,
                              double running_accuracy) {
  const double now = clock_();
  snapshot_.step = step;
  snapshot_.images = images;
  snapshot_.running_loss = running_loss;
  snapshot_.running_accuracy = running_accuracy;
  snapshot_.elapsed_seconds = now - epoch_start_;
  line_.show(step, snapshot_.total_steps, now, [&] { return format_progress_line(snapshot_); });
}

void ProgressReporter::end_epoch() { line_.erase(); }

double ProgressReporter::elapsed_seconds() const { return clock_() - epoch_start_; }

// ---- Epoch summary ---------------------------------------------------------------------------

std::string seconds_text(double seconds) {
  return printf_string(std::fabs(seconds) < 10.0 ? "%.2f" : "%.1f", seconds);
}

std::string format_epoch_summary(const EpochRecord& record, int total_epochs) {
  std::ostringstream out;
  out << "epoch " << record.epoch + 1 << "/" << total_epochs;
  std::string train = metric_group(record.values, "");
  std::string val = metric_group(record.values, "val_");
  out << "  ";
  if (!train.empty()) out << "train " << train << " | ";
  if (!val.empty()) out << "val " << val << " | ";
  out << "lr " << printf_string("%.2e", record.learning_rate) << " | "
      << seconds_text(record.seconds) << " s";
  if (std::isfinite(record.train_seconds) && std::isfinite(record.val_seconds))
    out << " (train " << seconds_text(record.train_seconds) << ", val "
        << seconds_text(record.val_seconds) << ")";
  return out.str();
}

// ---- History files ---------------------------------------------------------------------------

std::string history_to_csv(const std::vector<EpochRecord>& records) {
  std::set<std::string> columns;
  for (const auto& record : records)
    for (const auto& [key, value] : record.values) columns.insert(key);
  std::ostringstream out;
  out << "epoch,learning_rate,seconds,train_seconds,val_seconds";
  for (const auto& column : columns) out << "," << column;
  out << "\n";
  for (const auto& record : records) {
    out << record.epoch << "," << exact_number(record.learning_rate) << ","
        << exact_number(record.seconds) << "," << exact_number(record.train_seconds) << ","
        << exact_number(record.val_seconds);
    for (const auto& column : columns) {
      auto it = record.values.find(column);
      out << "," << (it == record.values.end() ? "" : exact_number(it->second));
    }
    out << "\n";
  }
  return out.str();
}

std::string history_to_jsonl(const std::vector<EpochRecord>& records) {
  std::string out;
  for (const auto& record : records) {
    json line = {{"epoch", record.epoch},
                 {"learning_rate", number_or_null(record.learning_rate)},
                 {"seconds", number_or_null(record.seconds)},
                 {"train_seconds", number_or_null(record.train_seconds)},
                 {"val_seconds", number_or_null(record.val_seconds)}};
    for (const auto& [key, value] : record.values) line[key] = number_or_null(value);
    out += line.dump() + "\n";
  }
  return out;
}

namespace {

// A history file's column (a key of history.jsonl, a header of history.csv) other than epoch, read
// into its record: the row's own fields, or a metric.
void set_column(EpochRecord& record, const std::string& column, double value) {
  if (column == "learning_rate")
    record.learning_rate = value;
  else if (column == "seconds")
    record.seconds = value;
  else if (column == "train_seconds")
    record.train_seconds = value;
  else if (column == "val_seconds")
    record.val_seconds = value;
  else
    record.values[column] = value;
}

}  // namespace

std::vector<EpochRecord> read_history_jsonl(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  std::vector<EpochRecord> records;
  std::string line;
  int line_number = 0;
  auto as_number = [&](const json& value, const std::string& key) {
    if (value.is_null()) return std::nan("");
    if (!value.is_number())
      throw Error(detail::concat(path, ":", line_number, ": field '", key,
                                 "' must be a number or null, got ", value.dump()));
    return value.get<double>();
  };
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json object;
    try {
      object = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(detail::concat(path, ":", line_number, ": not valid JSON: ", e.what()));
    }
    if (!object.is_object() || !object.contains("epoch") || !object["epoch"].is_number_integer())
      throw Error(detail::concat(path, ":", line_number,
                                 ": expected an object with an integer \"epoch\""));
    EpochRecord record;
    record.epoch = object["epoch"].get<int>();
    for (auto item = object.begin(); item != object.end(); ++item)
      if (item.key() != "epoch") set_column(record, item.key(), as_number(item.value(), item.key()));
    records.push_back(std::move(record));
  }
  return records;
}

std::vector<EpochRecord> read_history_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path);
  const auto cells_of = [](const std::string& line) {
    std::vector<std::string> cells(1);
    for (char ch : line) {
      if (ch == ',')
        cells.emplace_back();
      else
        cells.back() += ch;
    }
    return cells;
  };
  std::vector<std::string> columns;
  std::vector<EpochRecord> records;
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::vector<std::string> cells = cells_of(line);
    if (columns.empty()) {
      if (cells.front() != "epoch")
        throw Error(detail::concat(path, ":", line_number, ": expected a header that starts "
                                   "with epoch, got '", line, "'"));
      columns = cells;
      continue;
    }
    if (cells.size() != columns.size())
      throw Error(detail::concat(path, ":", line_number, ": ", cells.size(), " cells, the header "
                                 "has ", columns.size()));
    EpochRecord record;
    for (size_t i = 0; i < cells.size(); ++i) {
      const std::string& cell = cells[i];
      if (cell.empty() && i > 0 && !is_reserved_column(columns[i])) continue;  // metric absent
      char* end = nullptr;
      const double value = std::strtod(cell.c_str(), &end);
      const bool epoch_number = value >= 0 && value < 1e9 && value == std::floor(value);
      if (cell.empty() || *end != '\0' || (i == 0 && !epoch_number))
        throw Error(detail::concat(path, ":", line_number, ": column ", columns[i], " holds '",
                                   cell, "', not ", i == 0 ? "an epoch number" : "a number"));
      if (i == 0)
        record.epoch = static_cast<int>(value);
      else
        set_column(record, columns[i], value);
    }
    records.push_back(std::move(record));
  }
  return records;
}

namespace {

std::vector<EpochRecord> earlier_rows(const std::string& run_directory, int first_epoch) {
  const std::string path = run_directory + "/history.jsonl";
  if (first_epoch > 0 && std::filesystem::exists(path)) return read_history_jsonl(path);
  return {};
}

}  // namespace

EpochLogWriter::EpochLogWriter(std::string run_directory, int first_epoch)
    : EpochLogWriter(run_directory, first_epoch, earlier_rows(run_directory, first_epoch)) {}

EpochLogWriter::EpochLogWriter(std::string run_directory, int first_epoch,
                               std::vector<EpochRecord> earlier)
    : run_directory_(std::move(run_directory)) {
  std::error_code error;
  std::filesystem::create_directories(run_directory_, error);
  if (error)
    throw Error(detail::concat("cannot create run directory ", run_directory_, ": ",
                               error.message()));
  for (auto& record : earlier)
    if (record.epoch < first_epoch) records_.push_back(std::move(record));
  rewrite();
}

void EpochLogWriter::append(const EpochRecord& record) {
  if (!records_.empty() && record.epoch <= records_.back().epoch)
    throw Error(detail::concat("history: epoch ", record.epoch, " comes after epoch ",
                               records_.back().epoch, "; epochs must increase"));
  for (const auto& [key, value] : record.values)
    if (is_reserved_column(key))
      throw Error("history: a metric may not be called '" + key + "' (a column of its own)");
  records_.push_back(record);
  rewrite();
}

void EpochLogWriter::rewrite() const {
  write_file_atomically(csv_path(), history_to_csv(records_));
  write_file_atomically(jsonl_path(), history_to_jsonl(records_));
}

}  // namespace pneumo
