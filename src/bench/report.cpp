// Rows of `pneumo bench kernels`: output comparison, the measure-one-variant protocol, derived
// columns (GFLOP/s, GB/s, % of peak, speed-ups) and the three output formats (Markdown, JSON
// lines, CSV).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>

#include "bench/kernel_bench.hpp"
#include "bench/timing.hpp"
#include "pneumo/error.hpp"

namespace pneumo::bench {

bool KernelBenchConfig::wants(const std::string& op) const {
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

const std::vector<std::string>& known_ops() {
  static const std::vector<std::string> ops{"conv",    "pool", "batchnorm", "loss",
                                            "augment", "bf16", "tail",      "dense"};
  return ops;
}

const std::vector<LayerShape>& model_layers() {
  static const std::vector<LayerShape> layers{{"conv1", "pool1", 1, 32, 150},
                                              {"conv2", "pool2", 32, 64, 75},
                                              {"conv3", "pool3", 64, 64, 38},
                                              {"conv4", "pool4", 64, 128, 19},
                                              {"conv5", "pool5", 128, 256, 10}};
  return layers;
}

const char* to_string(Status status) {
  switch (status) {
    case Status::Ok: return "ok";
    case Status::Invalid: return "INVALID";
    case Status::Skipped: return "skipped";
  }
  return "?";
}

// ---- Comparison ---------------------------------------------------------------------------------

bool Comparison::passed() const {
  return nonfinite == 0 &&
         static_cast<double>(failing) <= allowed_fraction * static_cast<double>(count);
}

std::string Comparison::describe() const {
  if (failing == 0) return "";
  std::ostringstream out;
  out << failing << " of " << count << " elements outside rtol " << rtol;
  if (allowed_fraction > 0) out << " (" << allowed_fraction * 100 << "% allowed)";
  if (nonfinite > 0) out << ", " << nonfinite << " not finite";
  // Unravel the flat index over the shape: [n, c, y, x] for NCHW.
  std::vector<int64_t> index(static_cast<size_t>(std::max(shape.rank(), 1)));
  int64_t rest = first_failing;
  for (int axis = shape.rank() - 1; axis >= 0; --axis) {
    index[static_cast<size_t>(axis)] = rest % shape[axis];
    rest /= shape[axis];
  }
  if (shape.rank() == 0) index[0] = first_failing;
  out << "; first at [";
  for (size_t i = 0; i < index.size(); ++i) out << (i ? ", " : "") << index[i];
  out << "] of " << shape.str() << ": got " << first_actual << ", expected " << first_expected;
  return out.str();
}

Comparison compare_outputs(const float* actual, const float* expected, const Shape& shape,
                           double rtol, double allowed_fraction) {
  Comparison c;
  c.count = shape.numel();
  c.rtol = rtol;
  c.allowed_fraction = allowed_fraction;
  c.shape = shape;
  for (int64_t i = 0; i < c.count; ++i)
    if (std::isfinite(expected[i]))
      c.max_abs_expected = std::max(c.max_abs_expected, std::fabs(static_cast<double>(expected[i])));
  const double atol = rtol * c.max_abs_expected;
  for (int64_t i = 0; i < c.count; ++i) {
    const double a = actual[i], e = expected[i];
    bool fails = false;
    if (!std::isfinite(a) || !std::isfinite(e)) {
      ++c.nonfinite;
      fails = true;
    } else {
      const double error = std::fabs(a - e);
      c.max_abs_error = std::max(c.max_abs_error, error);
      fails = error > atol + rtol * std::fabs(e);
    }
    if (fails) {
      if (c.failing == 0) {
        c.first_failing = i;
        c.first_actual = a;
        c.first_expected = e;
      }
      ++c.failing;
    }
  }
  c.max_rel_error = c.max_abs_expected > 0 ? c.max_abs_error / c.max_abs_expected : c.max_abs_error;
  if (c.nonfinite > 0) c.max_abs_error = c.max_rel_error = kNaN;
  return c;
}

// ---- Measuring one variant ----------------------------------------------------------------------

namespace {

void append_note(BenchRow& row, const std::string& text) {
  if (text.empty()) return;
  row.note += (row.note.empty() ? "" : "; ") + text;
}

}  // namespace

void measure(BenchRow& row, const std::function<void()>& run_once,
             const std::function<Comparison()>& check,
             const std::function<TimingSummary()>& time_it) {
  try {
    run_once();
    const Comparison c = check();
    row.max_abs_error = c.max_abs_error;
    row.max_rel_error = c.max_rel_error;
    row.tolerance = c.rtol;
    if (!c.passed()) {
      row.status = Status::Invalid;
      append_note(row, c.describe());
    } else {
      if (c.failing > 0) append_note(row, c.describe());
      const TimingSummary t = time_it();
      row.repeats = t.repeats;
      row.median_ms = t.median_ms;
      row.min_ms = t.min_ms;
      row.status = Status::Ok;
    }
  } catch (const Error& e) {
    row.status = Status::Invalid;
    append_note(row, e.what());
  }
  log_row(row);
}

void log_row(const BenchRow& row) {
  std::ostringstream line;
  line << "[bench kernels] " << row.platform << " " << row.op << " " << row.layer << " batch "
       << row.batch << " (" << row.shape << ") " << row.variant << ": " << to_string(row.status);
  if (row.status == Status::Ok) line << ", median " << row.median_ms << " ms";
  if (!row.note.empty()) line << " [" << row.note << "]";
  std::cerr << line.str() << std::endl;
}

// ---- Derived columns ----------------------------------------------------------------------------

void finalize(BenchRun& run) {
  std::map<std::string, const BenchRow*> best;  // group -> fastest valid baseline
  auto group = [](const BenchRow& r) {
    return r.op + "|" + r.layer + "|" + r.shape + "|" + std::to_string(r.batch);
  };
  for (BenchRow& r : run.rows) {
    if (r.status != Status::Ok || !(r.median_ms > 0)) continue;
    const double seconds = r.median_ms * 1e-3;
    if (r.flops > 0) r.gflops = r.flops / seconds / 1e9;
    if (r.bytes > 0) r.gbps = r.bytes / seconds / 1e9;
    if (run.peaks.fp32_gflops > 0 && std::isfinite(r.gflops) && !r.not_fp32)
      r.percent_fp32_peak = 100.0 * r.gflops / run.peaks.fp32_gflops;
    if (run.peaks.bf16_tensor_gflops > 0 && std::isfinite(r.gflops) && r.not_fp32)
      r.percent_tensor_peak = 100.0 * r.gflops / run.peaks.bf16_tensor_gflops;
    if (run.peaks.dram_gbps > 0 && std::isfinite(r.gbps))
      r.percent_dram_peak = 100.0 * r.gbps / run.peaks.dram_gbps;
    if (r.baseline) {
      const BenchRow*& b = best[group(r)];
      if (!b || r.median_ms < b->median_ms) b = &r;
    }
  }
  for (BenchRow& r : run.rows) {
    auto found = best.find(group(r));
    if (r.status != Status::Ok || found == best.end() || !(r.median_ms > 0)) continue;
    r.speedup = found->second->median_ms / r.median_ms;
    r.speedup_over = found->second->variant;
  }
}

int count_invalid(const BenchRun& run) {
  return static_cast<int>(std::count_if(run.rows.begin(), run.rows.end(), [](const BenchRow& r) {
    return r.status == Status::Invalid;
  }));
}

// ---- Formats ------------------------------------------------------------------------------------

namespace {

std::string format(double value, const char* spec) {
  if (!std::isfinite(value)) return "-";
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), spec, value);
  return buffer;
}

// Markdown cells must not contain '|'.
std::string cell(std::string text) {
  std::replace(text.begin(), text.end(), '|', '/');
  return text;
}

}  // namespace

std::string markdown_report(const BenchRun& run) {
  std::ostringstream out;
  out << "## pneumo bench kernels: " << run.platform << ", " << run.device << "\n\n";
  if (run.peaks.fp32_gflops > 0)
    out << "- fp32 peak: " << format(run.peaks.fp32_gflops, "%.0f") << " GFLOP/s ("
        << run.peaks.fp32_basis << ")\n";
  else
    out << "- fp32 peak: " << run.peaks.fp32_basis << "\n";
  if (run.peaks.bf16_tensor_gflops > 0)
    out << "- bf16 tensor-core peak: " << format(run.peaks.bf16_tensor_gflops, "%.0f")
        << " GFLOP/s (" << run.peaks.bf16_tensor_basis << ")\n";
  else if (!run.peaks.bf16_tensor_basis.empty())
    out << "- bf16 tensor-core peak: " << run.peaks.bf16_tensor_basis << "\n";
  if (run.peaks.dram_gbps > 0)
    out << "- DRAM peak: " << format(run.peaks.dram_gbps, "%.0f") << " GB/s ("
        << run.peaks.dram_basis << ")\n";
  else
    out << "- DRAM peak: " << run.peaks.dram_basis << "\n";
  for (const std::string& note : run.notes) out << "- " << note << "\n";
  out << "\n| platform | op | layer | batch | shape | variant | status | median ms | min ms | "
         "GFLOP/s | GB/s | % fp32 peak | % bf16 tensor peak | % DRAM peak | speed-up | max abs "
         "err | max rel err |\n"
      << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::vector<const BenchRow*> skipped, with_notes;
  for (const BenchRow& r : run.rows) {
    if (r.status == Status::Skipped) {
      skipped.push_back(&r);
      continue;
    }
    if (!r.note.empty()) with_notes.push_back(&r);
    out << "| " << r.platform << " | " << r.op << " | " << r.layer << " | " << r.batch << " | "
        << cell(r.shape) << " | " << cell(r.variant) << " | "
        << (r.status == Status::Invalid ? "**INVALID**" : "ok") << " | "
        << format(r.median_ms, "%.4g") << " | " << format(r.min_ms, "%.4g") << " | "
        << format(r.gflops, "%.3g") << " | " << format(r.gbps, "%.3g") << " | "
        << format(r.percent_fp32_peak, "%.1f") << " | " << format(r.percent_tensor_peak, "%.1f")
        << " | " << format(r.percent_dram_peak, "%.1f")
        << " | " << format(r.speedup, "%.2fx") << " | " << format(r.max_abs_error, "%.2e")
        << " | " << format(r.max_rel_error, "%.2e") << " |\n";
  }
  auto list = [&](const char* title, const std::vector<const BenchRow*>& rows) {
    if (rows.empty()) return;
    out << "\n" << title << " (" << rows.size() << "):\n\n";
    for (const BenchRow* r : rows)
      out << "- " << r->platform << " " << r->op << " " << r->layer << " batch " << r->batch
          << ", " << r->variant << " (" << to_string(r->status) << "): " << r->note << "\n";
  };
  list("Notes", with_notes);
  list("Skipped", skipped);
  return out.str();
}

nlohmann::ordered_json row_to_json(const BenchRow& r, const BenchRun& run) {
  using json = nlohmann::ordered_json;
  auto number = [](double v) { return std::isfinite(v) ? json(v) : json(); };
  return {{"platform", r.platform},
          {"device", run.device},
          {"op", r.op},
          {"layer", r.layer},
          {"batch", r.batch},
          {"shape", r.shape},
          {"variant", r.variant},
          {"baseline", r.baseline},
          {"status", to_string(r.status)},
          {"note", r.note},
          {"reference", r.reference},
          {"tolerance_rtol", number(r.tolerance)},
          {"max_abs_error", number(r.max_abs_error)},
          {"max_rel_error", number(r.max_rel_error)},
          {"repeats", r.repeats},
          {"median_ms", number(r.median_ms)},
          {"min_ms", number(r.min_ms)},
          {"flops", r.flops},
          {"bytes", r.bytes},
          {"workspace_bytes", r.workspace_bytes},
          {"gflops", number(r.gflops)},
          {"gbps", number(r.gbps)},
          {"percent_fp32_peak", number(r.percent_fp32_peak)},
          {"percent_dram_peak", number(r.percent_dram_peak)},
          {"percent_tensor_peak", number(r.percent_tensor_peak)},
          {"peak_fp32_gflops", number(run.peaks.fp32_gflops > 0 ? run.peaks.fp32_gflops : kNaN)},
          {"peak_bf16_tensor_gflops",
           number(run.peaks.bf16_tensor_gflops > 0 ? run.peaks.bf16_tensor_gflops : kNaN)},
          {"peak_dram_gbps", number(run.peaks.dram_gbps > 0 ? run.peaks.dram_gbps : kNaN)},
          {"speedup", number(r.speedup)},
          {"speedup_over", r.speedup_over}};
}

std::string rows_to_csv(const BenchRun& run) {
  static const std::vector<std::string> columns{
      "platform", "device",      "op",          "layer",           "batch",
      "shape",    "variant",     "baseline",    "status",          "note",
      "reference", "tolerance_rtol", "max_abs_error", "max_rel_error", "repeats",
      "median_ms", "min_ms",     "flops",       "bytes",           "workspace_bytes",
      "gflops",   "gbps",        "percent_fp32_peak", "percent_dram_peak", "percent_tensor_peak",
      "peak_fp32_gflops", "peak_bf16_tensor_gflops", "peak_dram_gbps", "speedup", "speedup_over"};
  auto quoted = [](const std::string& text) {
    if (text.find_first_of(",\"\n") == std::string::npos) return text;
    std::string out = "\"";
    for (char ch : text) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return out + "\"";
  };
  std::ostringstream out;
  for (size_t i = 0; i < columns.size(); ++i) out << (i ? "," : "") << columns[i];
  out << "\n";
  for (const BenchRow& r : run.rows) {
    const nlohmann::ordered_json j = row_to_json(r, run);
    for (size_t i = 0; i < columns.size(); ++i) {
      const nlohmann::ordered_json& v = j.at(columns[i]);
      std::string text;
      if (v.is_string())
        text = quoted(v.get<std::string>());
      else if (v.is_boolean())
        text = v.get<bool>() ? "true" : "false";
      else if (v.is_number_float())
        text = format(v.get<double>(), "%.6g");
      else if (!v.is_null())
        text = v.dump();
      out << (i ? "," : "") << text;
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace pneumo::bench
