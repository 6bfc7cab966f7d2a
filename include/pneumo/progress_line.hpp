// A line of progress on stderr for long work: redrawn in place on a terminal, plain lines at each
// tenth (and on long gaps) otherwise. The training epoch's line (pneumo/progress.hpp) and every
// other long pass (prepare, evaluate --stress, Grad-CAM) draw theirs through ProgressLine.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <ostream>
#include <string>

namespace pneumo {

// True when `stream` is an interactive terminal (then progress is redrawn in place with \r).
bool is_terminal(std::FILE* stream);

// "0:07", "12:34", "1:02:03"; "--:--" for a negative or non-finite duration (ETA unknown).
std::string format_duration(double seconds);

struct ProgressOptions {
  bool live = false;                   // redraw one line in place (use is_terminal(stderr))
  double live_interval_seconds = 0.1;  // live: at most this often (and always at the last step)
  int plain_percent_step = 10;         // plain: a line at every 10% of the epoch...
  double plain_interval_seconds = 30;  // ...and at least this often on long epochs
};
// The defaults, live when `stream` is a terminal.
ProgressOptions progress_options_for(std::FILE* stream);

// When a line of progress is printed, and how: redrawn in place (live) or as plain lines at each
// percent step and on long gaps. Shared by the epoch reporter (pneumo/progress.hpp) and
// TaskProgress.
class ProgressLine {
 public:
  ProgressLine(std::ostream& out, ProgressOptions options);
  void start(double now);
  // `done` of `total` at time `now`; `text` makes the line, called only when one is printed.
  void show(int64_t done, int64_t total, double now, const std::function<std::string()>& text);
  void erase();  // live: blanks the line so the next output takes its place

 private:
  std::ostream& out_;
  ProgressOptions options_;
  double last_output_ = 0;
  int next_percent_ = 0;
  int64_t printed_ = -1;    // plain: the count last printed, so a repeated call adds nothing
  size_t drawn_width_ = 0;  // live: length of the line on screen, to blank leftovers
};

// Seconds on a monotonic clock; the progress classes take such a clock so tests can pass a fake.
using ProgressClock = std::function<double()>;
double steady_seconds();

// "stress  3/10   30%  0:41  ETA 1:35  darker": a long pass that is not a training epoch (the
// images `prepare` decodes, the stress variants of `evaluate --stress`, the Grad-CAM of a gallery
// or of `explain`'s images).
// item: what is being worked on now (may be empty).
std::string format_task_line(const std::string& task, int64_t done, int64_t total,
                             double elapsed_seconds, const std::string& item);

// Progress of such a pass, printed as ProgressLine decides (live on a terminal).
class TaskProgress {
 public:
  TaskProgress(std::ostream& out, std::string task, int64_t total, ProgressOptions options,
               ProgressClock clock = steady_seconds);
  void update(int64_t done, const std::string& item = "");
  void finish();  // live: erases the line

 private:
  ProgressLine line_;
  ProgressClock clock_;
  std::string task_;
  int64_t total_;
  double start_;
};

}  // namespace pneumo
