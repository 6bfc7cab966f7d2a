// The end-of-run report: a Markdown file with the metrics tables and confusion matrices, and
// SVG charts (loss and accuracy curves, ROC curves) beside it. SVG is plain text, so plots need
// no image library and render in browsers, GitHub and most Markdown viewers.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "pneumo/metrics.hpp"
#include "pneumo/progress.hpp"

namespace pneumo {

struct ChartSeries {
  std::string label;
  std::vector<double> x, y;  // same length; non-finite points break the line
  std::string color = "#1f77b4";
  bool dashed = false;
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<ChartSeries> series;
  // Axis ranges; when absent, "nice" bounds around the finite data.
  std::optional<std::pair<double, double>> x_range, y_range;
  int width = 640, height = 400;
  bool legend_at_bottom = false;  // bottom-right instead of top-right (rising curves, ROC)
};

// A self-contained SVG document: axes with ticks, one polyline per series, a legend. Text is
// XML-escaped. Throws pneumo::Error when a series' x and y lengths differ.
std::string svg_line_chart(const LineChart& chart);

struct ReportInputs {
  std::string title = "pneumo training report";
  std::vector<EpochRecord> history;  // EpochLogWriter::records()
  std::optional<MetricsReport> validation, test;
  std::vector<RocPoint> validation_roc, test_roc;
  nlohmann::json config;  // the run's resolved configuration, shown verbatim
  std::string notes;      // free Markdown: data source and licence, machine, command line
  // Said before the metrics when the model's weights are not the last epoch's (--restore-best):
  // which epoch's they are, so the metrics are not read as the training table's last row.
  std::string weights_note;
};

// Writes run_directory/report.md plus loss.svg, accuracy.svg (when the history has them) and
// roc.svg (when a ROC curve is given), each atomically. Returns the path of report.md.
std::string write_report(const std::string& run_directory, const ReportInputs& inputs);

// The Markdown alone (image links are relative: loss.svg, accuracy.svg, roc.svg).
std::string report_markdown(const ReportInputs& inputs, bool has_loss_chart,
                            bool has_accuracy_chart, bool has_roc_chart);

}  // namespace pneumo
