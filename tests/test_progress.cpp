// Progress lines, epoch summaries, the CSV/JSONL history (including resume) and the Markdown +
// SVG report, checked by their exact text. A fake clock drives the reporter's timing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "core/atomic_file.hpp"
#include "pneumo/error.hpp"
#include "pneumo/progress.hpp"
#include "pneumo/report.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

using pneumo::testing::read_text;
using pneumo::testing::TempDir;

size_t count_of(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

TEST(Progress, DurationsAndTheProgressLine) {
  EXPECT_EQ(format_duration(7.4), "0:07");
  EXPECT_EQ(format_duration(754), "12:34");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "--:--");
  EXPECT_EQ(format_duration(NAN), "--:--");

  ProgressSnapshot s;
  s.epoch = 2;
  s.total_epochs = 12;
  s.step = 120;
  s.total_steps = 163;
  s.images = 3840;
  s.elapsed_seconds = 7.5;
  s.running_loss = 0.31244;
  s.running_accuracy = 0.865;
  // 3840 / 7.5 = 512 img/s; ETA 7.5 / 120 * 43 = 2.7 s.
  EXPECT_EQ(format_progress_line(s),
            "epoch 3/12  step 120/163   73%  512.0 img/s  loss 0.3124  acc 0.8650  ETA 0:03");
  s.step = 0;
  s.elapsed_seconds = 0;
  EXPECT_NE(format_progress_line(s).find("ETA --:--"), std::string::npos);
}

struct FakeClock {
  double now = 100.0;
  ProgressReporter::Clock function() {
    return [this] { return now; };
  }
};

// A run resumed inside an epoch: its rate and ETA count the steps and images of this process,
// not those done before the interruption (which took no time on this clock).
TEST(Progress, AResumedEpochRatesOnlyWhatThisProcessDid) {
  FakeClock clock;
  std::ostringstream out;
  ProgressReporter reporter(out, ProgressOptions{}, clock.function());
  reporter.begin_epoch(0, 1, 13, 8, 256);  // steps 1-8 (256 images) done before
  clock.now += 2.0;
  reporter.update(9, 288, 0.5, 0.75);
  // 32 images in 2 s = 16 img/s; 2 s a step, 4 steps left: ETA 8 s.
  EXPECT_NE(out.str().find("step 9/13   69%  16.0 img/s"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("ETA 0:08"), std::string::npos) << out.str();
  EXPECT_THROW(reporter.begin_epoch(0, 1, 13, 14, 0), Error);
}

TEST(Progress, PlainModePrintsEveryTenPercentAndOnLongGaps) {
  FakeClock clock;
  std::ostringstream out;
  ProgressOptions options;  // plain, 10%, 30 s
  ProgressReporter reporter(out, options, clock.function());
  reporter.begin_epoch(0, 2, 100);
  for (int step = 1; step <= 100; ++step) {
    clock.now += 0.1;
    reporter.update(step, step * 32, 0.5, 0.75);
  }
  std::string text = out.str();
  EXPECT_EQ(count_of(text, "\n"), 10u) << text;
  EXPECT_EQ(count_of(text, "\r"), 0u);
  EXPECT_NE(text.find("step 10/100"), std::string::npos);
  EXPECT_NE(text.find("step 100/100  100%"), std::string::npos);
  reporter.update(100, 3200, 0.5, 0.75);  // a repeated last call adds nothing
  EXPECT_EQ(out.str(), text);

  // A slow epoch: 1000 steps of 1 s each print every 30 s as well as every 10%.
  std::ostringstream slow_out;
  ProgressReporter slow(slow_out, options, clock.function());
  slow.begin_epoch(1, 2, 1000);
  for (int step = 1; step <= 1000; ++step) {
    clock.now += 1.0;
    slow.update(step, step * 32, 0.5, 0.75);
  }
  // 1000 s / 30 s = 33 timed lines, some coinciding with the 10 percent lines.
  size_t lines = count_of(slow_out.str(), "\n");
  EXPECT_GE(lines, 33u);
  EXPECT_LE(lines, 43u);
  EXPECT_NEAR(slow.elapsed_seconds(), 1000.0, 1e-9);
}

TEST(Progress, LiveModeRedrawsInPlaceAndErasesAtTheEnd) {
  FakeClock clock;
  std::ostringstream out;
  ProgressOptions options;
  options.live = true;
  ProgressReporter reporter(out, options, clock.function());
  reporter.begin_epoch(0, 1, 50);
  for (int step = 1; step <= 50; ++step) {
    clock.now += 0.0625;  // a redraw every other step (0.1 s interval); exact in binary
    reporter.update(step, step * 32, 1.0 / step, 0.5);
  }
  std::string text = out.str();
  EXPECT_EQ(count_of(text, "\n"), 0u);
  size_t draws = count_of(text, "\r");
  EXPECT_GE(draws, 25u);
  EXPECT_LE(draws, 27u);
  EXPECT_NE(text.rfind("step 50/50"), std::string::npos) << "the last step is always drawn";
  reporter.end_epoch();
  std::string erased = out.str().substr(text.size());
  EXPECT_EQ(erased.front(), '\r');
  EXPECT_EQ(erased.back(), '\r');
  EXPECT_EQ(erased.find_first_not_of(" \r"), std::string::npos);
  EXPECT_THROW(reporter.begin_epoch(1, 1, 0), Error);
}

// A pass that is not an epoch (evaluate --stress, a gallery's Grad-CAM): done/total, elapsed,
// ETA from the rate so far, and what is being worked on.
TEST(Progress, TaskLineCountsItemsAndEstimatesTheRest) {
  EXPECT_EQ(format_task_line("stress", 3, 10, 41.0, "darker"),
            "stress  3/10   30%  0:41  ETA 1:36  darker");
  EXPECT_EQ(format_task_line("explain: Grad-CAM", 0, 624, 0.0, ""),
            "explain: Grad-CAM  0/624    0%  0:00  ETA --:--");
  FakeClock clock;
  std::ostringstream plain_out;
  TaskProgress plain(plain_out, "stress", 10, ProgressOptions{}, clock.function());
  for (int done = 0; done <= 10; ++done) {
    plain.update(done, done < 10 ? "variant" : "");
    clock.now += 15.0;
  }
  plain.finish();
  // Plain: one line per 10% (nothing at 0 of 10), the last one complete.
  EXPECT_EQ(count_of(plain_out.str(), "\n"), 10u) << plain_out.str();
  EXPECT_NE(plain_out.str().find("stress  10/10  100%  2:30  ETA 0:00\n"), std::string::npos)
      << plain_out.str();
  std::ostringstream live_out;
  ProgressOptions live;
  live.live = true;
  TaskProgress drawn(live_out, "gallery", 4, live, clock.function());
  drawn.update(0, "images");
  EXPECT_EQ(live_out.str().rfind("\rgallery  0/4", 0), 0u) << live_out.str();
  drawn.finish();
  EXPECT_EQ(live_out.str().back(), '\r');
  EXPECT_EQ(count_of(live_out.str(), "\n"), 0u);
}

EpochRecord sample_record(int epoch) {
  EpochRecord record;
  record.epoch = epoch;
  record.learning_rate = 3e-4;
  record.seconds = 42.06;
  record.values = {{"loss", 0.31244},          {"accuracy", 0.865},
                   {"val_loss", 0.28},         {"val_accuracy", 0.90123},
                   {"val_auc", 0.955},         {"val_sensitivity", 0.93},
                   {"val_specificity", NAN},   {"val_custom", 2.0}};
  return record;
}

TEST(Progress, EpochSummaryLine) {
  EXPECT_EQ(format_epoch_summary(sample_record(2), 12),
            "epoch 3/12  train loss 0.3124 acc 0.8650 | val loss 0.2800 acc 0.9012 auc 0.9550 "
            "sens 0.9300 spec n/a custom 2.0000 | lr 3.00e-04 | 42.1 s");
  EpochRecord timed = sample_record(0);
  timed.train_seconds = 38.04;
  timed.val_seconds = 3.96;
  const std::string line = format_epoch_summary(timed, 1);
  EXPECT_EQ(line.substr(line.rfind("| ")), "| 42.1 s (train 38.0, val 3.96)");
  timed.seconds = 0.81;
  timed.train_seconds = 0.77;
  timed.val_seconds = 0.04;  // a GPU's: two decimals, not "val 0.0"
  const std::string fast = format_epoch_summary(timed, 1);
  EXPECT_EQ(fast.substr(fast.rfind("| ")), "| 0.81 s (train 0.77, val 0.04)");
  EpochRecord bare;
  bare.learning_rate = 1e-3;
  bare.seconds = 1;
  EXPECT_EQ(format_epoch_summary(bare, 1), "epoch 1/1  lr 1.00e-03 | 1.00 s");
}

TEST(History, CsvAndJsonlFileContents) {
  TempDir dir;
  EpochLogWriter writer(dir.file("run"));
  EpochRecord first;
  first.epoch = 0;
  first.learning_rate = 1e-3;
  first.seconds = 40.5;
  first.train_seconds = 38.25;
  first.val_seconds = 2;
  first.values = {{"loss", 0.5}, {"val_accuracy", 0.75}};
  writer.append(first);
  EpochRecord second = first;
  second.epoch = 1;
  second.train_seconds = NAN;  // not recorded (a row read back from an older history)
  second.learning_rate = 3e-4;
  second.values = {{"loss", 0.25}, {"val_accuracy", NAN}, {"val_auc", 0.9}};
  writer.append(second);

  EXPECT_EQ(read_text(writer.csv_path()),
            "epoch,learning_rate,seconds,train_seconds,val_seconds,loss,val_accuracy,val_auc\n"
            "0,0.001,40.5,38.25,2.0,0.5,0.75,\n"
            "1,0.0003,40.5,nan,2.0,0.25,nan,0.9\n");
  EXPECT_EQ(read_text(writer.jsonl_path()),
            "{\"epoch\":0,\"learning_rate\":0.001,\"loss\":0.5,\"seconds\":40.5,"
            "\"train_seconds\":38.25,\"val_accuracy\":0.75,\"val_seconds\":2.0}\n"
            "{\"epoch\":1,\"learning_rate\":0.0003,\"loss\":0.25,\"seconds\":40.5,"
            "\"train_seconds\":null,\"val_accuracy\":null,\"val_auc\":0.9,\"val_seconds\":2.0}\n");

  auto back = read_history_jsonl(writer.jsonl_path());
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].train_seconds, 38.25);
  EXPECT_EQ(back[0].val_seconds, 2);
  EXPECT_TRUE(std::isnan(back[1].train_seconds));
  EXPECT_EQ(back[0].values.count("train_seconds"), 0u) << "a column of its own, not a metric";
  EXPECT_EQ(back[1].learning_rate, 3e-4);
  EXPECT_TRUE(std::isnan(back[1].values.at("val_accuracy")));
  EXPECT_EQ(back[0].values.count("val_auc"), 0u);

  // history.csv reads back to the same rows (a resume takes rows history.jsonl lacks from it):
  // an empty cell is an absent metric, nan a NaN one.
  const auto from_csv = read_history_csv(writer.csv_path());
  ASSERT_EQ(from_csv.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(history_to_jsonl({from_csv[i]}), history_to_jsonl({back[i]})) << "row " << i;
    EXPECT_EQ(from_csv[i].values.size(), back[i].values.size()) << "row " << i;
  }
  EXPECT_EQ(from_csv[0].values.count("val_auc"), 0u);
  EXPECT_TRUE(std::isnan(from_csv[1].values.at("val_accuracy")));
  struct Damaged {
    const char* text;
    const char* said;
  };
  for (const Damaged& d :
       {Damaged{"loss,epoch\n1,2\n", ":1: expected a header that starts with epoch"},
        Damaged{"epoch,learning_rate,seconds,train_seconds,val_seconds,loss\n0,1,2,3,4\n",
                ":2: 5 cells, the header has 6"},
        Damaged{"epoch,learning_rate,seconds,train_seconds,val_seconds\n\n1.5,1,2,3,4\n",
                ":3: column epoch holds '1.5', not an epoch number"},
        Damaged{"epoch,learning_rate,seconds,train_seconds,val_seconds\n0,x,2,3,4\n",
                ":2: column learning_rate holds 'x', not a number"},
        Damaged{"epoch,learning_rate,seconds,train_seconds,val_seconds\n0,,2,3,4\n",
                ":2: column learning_rate holds '', not a number"}}) {
    const std::string file = dir.path() + "/damaged.csv";
    std::ofstream(file) << d.text;
    try {
      read_history_csv(file);
      ADD_FAILURE() << "read: " << d.text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(file + d.said), std::string::npos) << e.what();
    }
  }

  EXPECT_THROW(writer.append(first), Error) << "epochs must increase";
  EpochRecord reserved = second;
  reserved.epoch = 5;
  reserved.values["seconds"] = 1;
  EXPECT_THROW(writer.append(reserved), Error);
  reserved.values = {{"val_seconds", 1}};
  EXPECT_THROW(writer.append(reserved), Error);
}

// The history's rate is the float the optimizer ran at, named as Keras's CSVLogger names it (the
// shortest decimal that reads back as that float).
TEST(History, TheRateIsTheFloatTheOptimizerRanAtInItsShortestDecimal) {
  // A plateau cut by 0.3 from 0.001: Keras multiplies the float32 it reads back.
  const double cut = static_cast<double>(0.001f) * 0.3;  // 0.0003000000142492354
  EXPECT_EQ(rate_as_run(cut), 0.0003);
  EXPECT_EQ(rate_as_run(0.001 * 0.3), 0.0003);  // the exact double product, 0.00030000000000000003
  EXPECT_EQ(rate_as_run(0.001), 0.001);
  EXPECT_EQ(rate_as_run(1e-3 * 0.1 * 0.1), 1e-5);
  // A schedule's rate with more digits than a float holds keeps the float's (at most nine).
  const double cosine = 7.123456789012345e-4;
  const double kept = rate_as_run(cosine);
  EXPECT_EQ(static_cast<float>(kept), static_cast<float>(cosine));
  EXPECT_NE(kept, cosine);
  char nine[32];  // a decimal of nine significant digits at most
  std::snprintf(nine, sizeof nine, "%.9g", kept);
  EXPECT_EQ(std::strtod(nine, nullptr), kept) << nine;
  EXPECT_EQ(rate_as_run(0.0), 0.0);
  // Written to history.csv as that decimal.
  EpochRecord record;
  record.epoch = 0;
  record.learning_rate = rate_as_run(cut);
  EXPECT_NE(history_to_csv({record}).find("\n0,0.0003,"), std::string::npos)
      << history_to_csv({record});
}

TEST(History, ResumeKeepsEarlierEpochsAndDropsLaterOnes) {
  TempDir dir;
  {
    EpochLogWriter writer(dir.path());
    for (int epoch = 0; epoch < 4; ++epoch) writer.append(sample_record(epoch));
  }
  // The checkpoint being resumed was written after epoch 2 (epoch count 2): epochs 2 and 3 ran
  // after it and are run again.
  EpochLogWriter resumed(dir.path(), 2);
  ASSERT_EQ(resumed.records().size(), 2u);
  EXPECT_EQ(resumed.records().back().epoch, 1);
  resumed.append(sample_record(2));
  EXPECT_EQ(read_history_jsonl(resumed.jsonl_path()).size(), 3u);
  EXPECT_EQ(count_of(read_text(resumed.csv_path()), "\n"), 4u);  // header + 3 rows

  // Rows the caller read before (train reads them ahead of writing anything): the same rule.
  EpochLogWriter again(dir.path(), 1, read_history_jsonl(resumed.jsonl_path()));
  ASSERT_EQ(again.records().size(), 1u);
  EXPECT_EQ(read_history_jsonl(again.jsonl_path()).size(), 1u);

  EpochLogWriter fresh(dir.path());  // a new run starts over
  EXPECT_TRUE(fresh.records().empty());
  EXPECT_EQ(read_text(fresh.csv_path()), "epoch,learning_rate,seconds,train_seconds,val_seconds\n");

  pneumo::testing::write_bytes(dir.file("history.jsonl"), {'{', 'x', '\n'});
  try {
    EpochLogWriter broken(dir.path(), 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("history.jsonl:1"), std::string::npos) << e.what();
  }
  write_file_atomically(dir.file("blocker"), std::string("x"));
  EXPECT_THROW(EpochLogWriter(dir.file("blocker/run")), Error);
}

TEST(Report, SvgChartHasAxesSeriesAndEscapedText) {
  LineChart chart;
  chart.title = "loss <per> epoch & more";
  chart.x_label = "epoch";
  chart.y_label = "loss";
  chart.series.push_back({"train", {1, 2, 3, 4}, {0.9, 0.5, NAN, 0.3}, "#1f77b4", false});
  chart.series.push_back({"val \"held out\"", {1, 2, 3, 4}, {1.0, 0.7, 0.6, 0.55}, "#ff7f0e", true});
  std::string svg = svg_line_chart(chart);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("loss &lt;per&gt; epoch &amp; more"), std::string::npos);
  EXPECT_NE(svg.find("val &quot;held out&quot;"), std::string::npos);
  // The NaN splits the train line in two; the val line is one dashed polyline.
  EXPECT_EQ(count_of(svg, "<polyline"), 3u);
  EXPECT_EQ(count_of(svg, "stroke-dasharray"), 2u);  // the val line and its legend sample
  EXPECT_EQ(count_of(svg, "<circle"), 7u);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  chart.series[0].y.pop_back();
  EXPECT_THROW(svg_line_chart(chart), Error);
}

TEST(Report, MarkdownReportWithCurvesRocAndConfusionMatrices) {
  TempDir dir;
  ReportInputs inputs;
  inputs.title = "seed recipe, 2 epochs";
  inputs.history = {sample_record(0), sample_record(1)};
  inputs.history[1].train_seconds = 38.04;
  inputs.history[1].val_seconds = 3.96;
  std::vector<float> logits{-2, -1, 0.5f, 1, 2, -0.5f, 1, 3};
  std::vector<uint8_t> labels{0, 0, 0, 1, 1, 1, 0, 1};
  ThresholdChoice choice = choose_threshold_youden(logits, labels);
  inputs.validation =
      evaluate_binary("val", logits, labels, choice.threshold, "Youden's J on 8 validation images");
  inputs.validation_roc = roc_curve(logits, labels);
  inputs.test =
      evaluate_binary("test", logits, labels, choice.threshold, "Youden's J on 8 validation images");
  inputs.test_roc = inputs.validation_roc;
  inputs.config = {{"batch_size", 32}};
  inputs.notes = "Data: Kermany et al. (CC BY 4.0).";

  std::string path = write_report(dir.file("run"), inputs);
  EXPECT_EQ(path, dir.file("run") + "/report.md");
  std::string md = read_text(path);
  EXPECT_EQ(md.rfind("# seed recipe, 2 epochs\n", 0), 0u);
  EXPECT_NE(md.find("![Loss per epoch](loss.svg)"), std::string::npos);
  EXPECT_NE(md.find("![Accuracy per epoch](accuracy.svg)"), std::string::npos);
  EXPECT_NE(md.find("![ROC curves](roc.svg)"), std::string::npos);
  EXPECT_NE(md.find("| 2 | 0.0003 | 42.1 | 38.0 | 3.96 | 0.3124 | 0.8650 | 0.2800 | 0.9012 | 0.9550 | 0.9300 | n/a |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| 1 | 0.0003 | 42.1 |  |  | 0.3124"), std::string::npos)
      << "an epoch without the split leaves its cells empty\n" << md;
  EXPECT_NE(md.find("| **true NORMAL** | 2 | 2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| **true PNEUMONIA** | 1 | 3 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| applied | " + format_threshold(choice.threshold) + " | 0.7500 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("Applied threshold: Youden's J on 8 validation images."), std::string::npos)
      << md;
  EXPECT_NE(md.find("ROC AUC 0.8438"), std::string::npos);
  EXPECT_NE(md.find("\"batch_size\": 32"), std::string::npos);
  EXPECT_NE(md.find("CC BY 4.0"), std::string::npos);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"run"});
  std::string roc = read_text(dir.file("run/roc.svg"));
  EXPECT_NE(roc.find("validation (AUC 0.844)"), std::string::npos);
  EXPECT_EQ(count_of(roc, "<polyline"), 3u);  // val, test, chance
  EXPECT_NE(read_text(dir.file("run/loss.svg")).find("validation"), std::string::npos);

  // Without history or curves: just the tables, no dangling image links.
  ReportInputs minimal;
  minimal.test = inputs.test;
  std::string minimal_md = read_text(write_report(dir.file("eval"), minimal));
  EXPECT_EQ(minimal_md.find(".svg"), std::string::npos);
  EXPECT_NE(minimal_md.find("## Test"), std::string::npos);
}

}  // namespace
}  // namespace pneumo
