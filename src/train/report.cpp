// SVG line charts (axes, "nice" ticks, polylines, legend) and the Markdown run report built from
// the epoch history and the validation/test metrics. No image library: everything is text.
#include "pneumo/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "core/atomic_file.hpp"
#include "core/json_text.hpp"
#include "pneumo/error.hpp"
#include "pneumo/progress.hpp"

namespace pneumo {

namespace {

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string number(double value, const char* format = "%g") {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

// Seconds as the epoch line prints them; empty when not recorded (histories older than the
// column).
std::string seconds_cell(double seconds) {
  return std::isfinite(seconds) ? seconds_text(seconds) : std::string();
}

std::string ratio_cell(double value) { return format_fraction(value, 4); }

// Tick spacing of 1, 2 or 5 times a power of ten giving about `target` intervals.
double nice_step(double span, int target) {
  double raw = span / target;
  double power = std::pow(10.0, std::floor(std::log10(raw)));
  double fraction = raw / power;
  double nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * power;
}

// Data bounds widened to whole ticks; a flat or empty range gets some room.
std::pair<double, double> nice_range(double lo, double hi) {
  if (!(lo <= hi)) return {0.0, 1.0};
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {
    double pad = std::fabs(lo) > 0 ? std::fabs(lo) * 0.1 : 0.5;
    lo -= pad;
    hi += pad;
  }
  double step = nice_step(hi - lo, 5);
  return {std::floor(lo / step) * step, std::ceil(hi / step) * step};
}

std::string history_chart(const std::vector<EpochRecord>& history, const std::string& key,
                          const std::string& what) {
  LineChart chart;
  chart.title = what + " per epoch";
  chart.x_label = "epoch";
  chart.y_label = what;
  const std::pair<std::string, std::string> sources[] = {{key, "train"}, {"val_" + key, "validation"}};
  const char* colors[] = {"#1f77b4", "#ff7f0e"};
  for (int i = 0; i < 2; ++i) {
    ChartSeries series;
    series.label = sources[i].second;
    series.color = colors[i];
    for (const auto& record : history) {
      auto it = record.values.find(sources[i].first);
      if (it == record.values.end()) continue;
      series.x.push_back(record.epoch + 1);
      series.y.push_back(it->second);
    }
    if (!series.x.empty()) chart.series.push_back(series);
  }
  if (chart.series.empty()) return "";
  chart.legend_at_bottom = key != "loss";  // accuracy rises toward the top-right corner
  double first = history.front().epoch + 1, last = history.back().epoch + 1;
  chart.x_range = std::make_pair(first, std::max(last, first + 1));
  return svg_line_chart(chart);
}

bool history_has(const std::vector<EpochRecord>& history, const std::string& key) {
  for (const auto& record : history)
    if (record.values.count(key) || record.values.count("val_" + key)) return true;
  return false;
}

void metrics_section(std::ostringstream& md, const std::string& heading,
                     const MetricsReport& report) {
  md << "## " << heading << "\n\n"
     << report.count << " images: " << report.negatives << " NORMAL, " << report.positives
     << " PNEUMONIA. Loss " << ratio_cell(report.loss) << ", ROC AUC "
     << (report.auc_defined ? ratio_cell(report.roc_auc) : "undefined (one class only)")
     << ".\n\n"
     << "| threshold | value | accuracy | sensitivity | specificity | precision | F1 |\n"
     << "|---|---:|---:|---:|---:|---:|---:|\n";
  std::vector<std::pair<std::string, const ThresholdMetrics*>> rows{{"default", &report.at_default}};
  if (report.at_tuned) rows.push_back({"applied", &*report.at_tuned});
  for (const auto& [label, m] : rows)
    md << "| " << label << " | " << format_threshold(m->threshold) << " | "
       << ratio_cell(m->accuracy) << " | " << ratio_cell(m->sensitivity) << " | "
       << ratio_cell(m->specificity) << " | " << ratio_cell(m->precision) << " | "
       << ratio_cell(m->f1) << " |\n";
  if (report.at_tuned && !report.applied_rule.empty())
    md << "\nApplied threshold: " << report.applied_rule << ".\n";
  if (report.at_tuned && report.applied_in_sample)
    md << "It was tuned on these very images, so the applied row is optimistic; the test split "
          "gives its unbiased value.\n";
  for (const auto& [label, m] : rows) {
    const ConfusionMatrix& c = m->confusion;
    md << "\nConfusion matrix, " << label << " threshold " << format_threshold(m->threshold)
       << ":\n\n"
       << "| | predicted NORMAL | predicted PNEUMONIA |\n|---|---:|---:|\n"
       << "| **true NORMAL** | " << c.true_negatives << " | " << c.false_positives << " |\n"
       << "| **true PNEUMONIA** | " << c.false_negatives << " | " << c.true_positives << " |\n";
  }
  md << "\n";
}

}  // namespace

std::string svg_line_chart(const LineChart& chart) {
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const auto& s : chart.series) {
    if (s.x.size() != s.y.size())
      throw Error(detail::concat("chart '", chart.title, "': series '", s.label, "' has ",
                                 s.x.size(), " x values but ", s.y.size(), " y values"));
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
    }
  }
  auto [x_min, x_max] = chart.x_range ? *chart.x_range : nice_range(x_lo, x_hi);
  auto [y_min, y_max] = chart.y_range ? *chart.y_range : nice_range(y_lo, y_hi);
  if (!(x_max > x_min)) x_max = x_min + 1;
  if (!(y_max > y_min)) y_max = y_min + 1;

  const double left = 70, right = 20, top = 40, bottom = 55;
  const double plot_left = left, plot_right = chart.width - right;
  const double plot_top = top, plot_bottom = chart.height - bottom;
  auto px = [&](double x) { return plot_left + (x - x_min) / (x_max - x_min) * (plot_right - plot_left); };
  auto py = [&](double y) { return plot_bottom - (y - y_min) / (y_max - y_min) * (plot_bottom - plot_top); };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << chart.width << "\" height=\""
      << chart.height << "\" viewBox=\"0 0 " << chart.width << " " << chart.height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << chart.width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << xml_escape(chart.title) << "</text>\n";

  // Grid and tick labels.
  double x_step = nice_step(x_max - x_min, 6), y_step = nice_step(y_max - y_min, 5);
  for (double t = std::ceil(x_min / x_step - 1e-9) * x_step; t <= x_max + 1e-9 * x_step; t += x_step)
    svg << "<line x1=\"" << number(px(t)) << "\" y1=\"" << plot_top << "\" x2=\"" << number(px(t))
        << "\" y2=\"" << plot_bottom << "\" stroke=\"#e5e5e5\"/>\n<text x=\"" << number(px(t))
        << "\" y=\"" << plot_bottom + 17 << "\" text-anchor=\"middle\">"
        << number(std::fabs(t) < 1e-12 * x_step ? 0.0 : t) << "</text>\n";
  for (double t = std::ceil(y_min / y_step - 1e-9) * y_step; t <= y_max + 1e-9 * y_step; t += y_step)
    svg << "<line x1=\"" << plot_left << "\" y1=\"" << number(py(t)) << "\" x2=\"" << plot_right
        << "\" y2=\"" << number(py(t)) << "\" stroke=\"#e5e5e5\"/>\n<text x=\"" << plot_left - 6
        << "\" y=\"" << number(py(t) + 4) << "\" text-anchor=\"end\">"
        << number(std::fabs(t) < 1e-12 * y_step ? 0.0 : t) << "</text>\n";
  svg << "<rect x=\"" << plot_left << "\" y=\"" << plot_top << "\" width=\""
      << plot_right - plot_left << "\" height=\"" << plot_bottom - plot_top
      << "\" fill=\"none\" stroke=\"#333\"/>\n"
      << "<text x=\"" << (plot_left + plot_right) / 2 << "\" y=\"" << chart.height - 12
      << "\" text-anchor=\"middle\">" << xml_escape(chart.x_label) << "</text>\n"
      << "<text x=\"16\" y=\"" << (plot_top + plot_bottom) / 2
      << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " << (plot_top + plot_bottom) / 2
      << ")\">" << xml_escape(chart.y_label) << "</text>\n";

  // Series: one polyline per run of finite points; markers on short series.
  for (const auto& s : chart.series) {
    std::string dash = s.dashed ? " stroke-dasharray=\"6 4\"" : "";
    std::vector<std::string> runs(1);
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
        if (!runs.back().empty()) runs.emplace_back();
        continue;
      }
      runs.back() += (runs.back().empty() ? "" : " ") + number(px(s.x[i]), "%.2f") + "," +
                     number(py(s.y[i]), "%.2f");
      if (s.x.size() <= 50)
        svg << "<circle cx=\"" << number(px(s.x[i]), "%.2f") << "\" cy=\""
            << number(py(s.y[i]), "%.2f") << "\" r=\"2.5\" fill=\"" << s.color << "\"/>\n";
    }
    for (const auto& points : runs)
      if (!points.empty())
        svg << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"2\"" << dash
            << " points=\"" << points << "\"/>\n";
  }

  // Legend in the top-right (or bottom-right) corner of the plot, over a white box.
  double legend_height = 16.0 * static_cast<double>(chart.series.size()) + 6;
  double legend_top = chart.legend_at_bottom ? plot_bottom - legend_height - 6 : plot_top + 6;
  size_t longest = 0;
  for (const auto& s : chart.series) longest = std::max(longest, s.label.size());
  double legend_width = 40 + 7.0 * static_cast<double>(longest);
  svg << "<rect x=\"" << plot_right - legend_width - 6 << "\" y=\"" << legend_top
      << "\" width=\"" << legend_width << "\" height=\"" << legend_height
      << "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n";
  double legend_y = legend_top + 16;
  for (const auto& s : chart.series) {
    double x = plot_right - legend_width;
    svg << "<line x1=\"" << x << "\" y1=\"" << legend_y - 4 << "\" x2=\"" << x + 22 << "\" y2=\""
        << legend_y - 4 << "\" stroke=\"" << s.color << "\" stroke-width=\"2\""
        << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << "/>\n<text x=\"" << x + 28
        << "\" y=\"" << legend_y << "\">" << xml_escape(s.label) << "</text>\n";
    legend_y += 16;
  }
  svg << "</svg>\n";
  return svg.str();
}

std::string report_markdown(const ReportInputs& inputs, bool has_loss_chart,
                            bool has_accuracy_chart, bool has_roc_chart) {
  std::ostringstream md;
  md << "# " << inputs.title << "\n\n";
  if (!inputs.history.empty()) {
    md << "## Training\n\n";
    if (has_loss_chart) md << "![Loss per epoch](loss.svg)\n\n";
    if (has_accuracy_chart) md << "![Accuracy per epoch](accuracy.svg)\n\n";
    const char* const columns[] = {"loss", "accuracy", "val_loss", "val_accuracy", "val_auc",
                                   "val_sensitivity", "val_specificity"};
    std::vector<std::string> shown;
    for (const char* column : columns)
      for (const auto& record : inputs.history)
        if (record.values.count(column)) {
          shown.push_back(column);
          break;
        }
    md << "| epoch | learning rate | time (s) | training (s) | validation (s)";
    for (const auto& column : shown) md << " | " << column;
    md << " |\n|---:|---:|---:|---:|---:";
    for (size_t i = 0; i < shown.size(); ++i) md << "|---:";
    md << "|\n";
    for (const auto& record : inputs.history) {
      md << "| " << record.epoch + 1 << " | " << number(record.learning_rate, "%.3g") << " | "
         << seconds_cell(record.seconds) << " | " << seconds_cell(record.train_seconds) << " | "
         << seconds_cell(record.val_seconds);
      for (const auto& column : shown) {
        auto it = record.values.find(column);
        md << " | " << (it == record.values.end() ? "" : ratio_cell(it->second));
      }
      md << " |\n";
    }
    md << "\nThe validation columns score each epoch at threshold 0.5 (the threshold the model\n"
          "stores is chosen after training; the sections below apply it).\n\n";
  }
  if (!inputs.weights_note.empty()) md << inputs.weights_note << "\n\n";
  if (inputs.validation) metrics_section(md, "Validation", *inputs.validation);
  if (inputs.test) metrics_section(md, "Test", *inputs.test);
  if ((inputs.validation && inputs.validation->at_tuned) || (inputs.test && inputs.test->at_tuned))
    md << "The applied threshold is the one stored with the model, by the rule named above "
          "(Youden's J, sensitivity + specificity - 1, at its best on the validation split, "
          "unless it says otherwise); `pneumo evaluate` applies it unchanged to test.\n\n";
  if (has_roc_chart) md << "![ROC curves](roc.svg)\n\n";
  if (!inputs.config.is_null() && !inputs.config.empty())
    md << "## Configuration\n\n```json\n" << json_text(inputs.config, 2) << "\n```\n\n";
  if (!inputs.notes.empty()) md << "## Notes\n\n" << inputs.notes << "\n";
  return md.str();
}

std::string write_report(const std::string& run_directory, const ReportInputs& inputs) {
  std::error_code error;
  std::filesystem::create_directories(run_directory, error);
  if (error)
    throw Error(detail::concat("cannot create report directory ", run_directory, ": ",
                               error.message()));
  bool has_loss = history_has(inputs.history, "loss");
  bool has_accuracy = history_has(inputs.history, "accuracy");
  if (has_loss)
    write_file_atomically(run_directory + "/loss.svg", history_chart(inputs.history, "loss", "loss"));
  if (has_accuracy)
    write_file_atomically(run_directory + "/accuracy.svg",
                          history_chart(inputs.history, "accuracy", "accuracy"));

  bool has_roc = !inputs.validation_roc.empty() || !inputs.test_roc.empty();
  if (has_roc) {
    LineChart roc;
    roc.title = "ROC curve";
    roc.x_label = "false positive rate (1 - specificity)";
    roc.y_label = "true positive rate (sensitivity)";
    roc.x_range = roc.y_range = std::make_pair(0.0, 1.0);
    roc.width = roc.height = 480;
    roc.legend_at_bottom = true;  // the curves hug the top-left
    auto add = [&](const std::vector<RocPoint>& curve, const std::string& label,
                   const std::optional<MetricsReport>& report, const char* color) {
      if (curve.empty()) return;
      ChartSeries series;
      series.label = label;
      if (report && report->auc_defined) series.label += " (AUC " + format_fraction(report->roc_auc, 3) + ")";
      series.color = color;
      for (const auto& point : curve) {
        series.x.push_back(point.false_positive_rate);
        series.y.push_back(point.true_positive_rate);
      }
      roc.series.push_back(series);
    };
    add(inputs.validation_roc, "validation", inputs.validation, "#1f77b4");
    add(inputs.test_roc, "test", inputs.test, "#ff7f0e");
    roc.series.push_back({"chance", {0, 1}, {0, 1}, "#999999", true});
    write_file_atomically(run_directory + "/roc.svg", svg_line_chart(roc));
  }
  std::string path = run_directory + "/report.md";
  write_file_atomically(path, report_markdown(inputs, has_loss, has_accuracy, has_roc));
  return path;
}

}  // namespace pneumo
