// The progress line shared by every long pass (pneumo/progress_line.hpp).
#include "pneumo/progress_line.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "pneumo/error.hpp"

namespace pneumo {

// ---- When and how a line is drawn -------------------------------------------------------------

bool is_terminal(std::FILE* stream) { return stream && ::isatty(::fileno(stream)) == 1; }

ProgressOptions progress_options_for(std::FILE* stream) {
  ProgressOptions options;
  options.live = is_terminal(stream);
  return options;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  auto total = static_cast<long long>(std::llround(seconds));
  char buffer[32];
  if (total >= 3600)
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", total / 3600, total / 60 % 60,
                  total % 60);
  else
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld", total / 60, total % 60);
  return buffer;
}

double steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

ProgressLine::ProgressLine(std::ostream& out, ProgressOptions options)
    : out_(out), options_(options) {
  PNEUMO_CHECK(options_.plain_percent_step > 0, "progress: plain_percent_step must be > 0, got ",
               options_.plain_percent_step);
}

void ProgressLine::start(double now) {
  last_output_ = now;
  next_percent_ = options_.plain_percent_step;
  printed_ = -1;
  drawn_width_ = 0;
}

void ProgressLine::show(int64_t done, int64_t total, double now,
                        const std::function<std::string()>& text) {
  const bool last = done >= total;
  if (options_.live) {
    const bool first_draw = drawn_width_ == 0;
    if (!(first_draw || last || now - last_output_ >= options_.live_interval_seconds)) return;
    const std::string line = text();
    out_ << '\r' << line;
    if (line.size() < drawn_width_) out_ << std::string(drawn_width_ - line.size(), ' ');
    out_.flush();
    drawn_width_ = std::max(drawn_width_, line.size());
    last_output_ = now;
    return;
  }
  if (done == printed_) return;
  const int64_t percent = total > 0 ? done * 100 / total : 100;
  const bool percent_mark = percent >= next_percent_;
  if (!(percent_mark || last || now - last_output_ >= options_.plain_interval_seconds)) return;
  out_ << text() << '\n';
  out_.flush();
  last_output_ = now;
  printed_ = done;
  while (next_percent_ <= percent) next_percent_ += options_.plain_percent_step;
}

void ProgressLine::erase() {
  if (options_.live && drawn_width_ > 0) {
    out_ << '\r' << std::string(drawn_width_, ' ') << '\r';
    out_.flush();
  }
  drawn_width_ = 0;
}

namespace {

// "  7", " 42", "100": a percentage right-aligned in three columns.
std::string percent_text(int64_t percent) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%3lld", static_cast<long long>(percent));
  return buffer;
}

}  // namespace

std::string format_task_line(const std::string& task, int64_t done, int64_t total,
                             double elapsed_seconds, const std::string& item) {
  const int64_t percent = total > 0 ? done * 100 / total : 100;
  const double eta = done > 0 ? elapsed_seconds / static_cast<double>(done) *
                                    static_cast<double>(total - done)
                              : -1.0;
  std::ostringstream out;
  out << task << "  " << done << "/" << total << "  "
      << percent_text(percent) << "%  "
      << format_duration(elapsed_seconds) << "  ETA " << format_duration(eta);
  if (!item.empty()) out << "  " << item;
  return out.str();
}

TaskProgress::TaskProgress(std::ostream& out, std::string task, int64_t total,
                           ProgressOptions options, ProgressClock clock)
    : line_(out, options), clock_(std::move(clock)), task_(std::move(task)), total_(total) {
  PNEUMO_CHECK(total_ >= 0, "progress: ", task_, " has ", total_, " items");
  start_ = clock_();
  line_.start(start_);
}

void TaskProgress::update(int64_t done, const std::string& item) {
  const double now = clock_();
  line_.show(done, total_, now,
             [&] { return format_task_line(task_, done, total_, now - start_, item); });
}

void TaskProgress::finish() { line_.erase(); }

}  // namespace pneumo
