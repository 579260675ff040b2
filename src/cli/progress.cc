// Progress bar drawing: "\r<label> [=====>    ] 120/400  30%  85.2/s  ETA 0:03".
#include "cli/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace scalebert::cli {

ProgressBar::ProgressBar(std::string label, int64_t total, bool forced)
    : label_(std::move(label)), total_(total), forced_(forced) {
  terminal_ = isatty(STDERR_FILENO) == 1;
  enabled_ = forced || terminal_;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() { finish(); }

std::string ProgressBar::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<int64_t>(seconds + 0.5);
  const int64_t hours = total / 3600, minutes = total / 60 % 60, rest = total % 60;
  char buffer[32];
  if (hours > 0) {
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", static_cast<long long>(hours),
                  static_cast<long long>(minutes), static_cast<long long>(rest));
  } else {
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld", static_cast<long long>(minutes), static_cast<long long>(rest));
  }
  return buffer;
}

std::string ProgressBar::render(const std::string& label, int64_t done, int64_t total, double elapsed_seconds) {
  constexpr int kWidth = 24;
  const double fraction = total > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 1.0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(static_cast<size_t>(filled), '=');
  if (filled < kWidth) bar += '>';
  bar.resize(kWidth, ' ');
  const double rate = elapsed_seconds > 0 ? static_cast<double>(done) / elapsed_seconds : 0.0;
  const double remaining = rate > 0 ? static_cast<double>(total - done) / rate : NAN;
  char numbers[96];
  std::snprintf(numbers, sizeof numbers, " %lld/%lld %3d%%  %.1f/s  ", static_cast<long long>(done),
                static_cast<long long>(total), static_cast<int>(fraction * 100.0), rate);
  return str_cat(label, " [", bar, "]", numbers,
                 done >= total ? "in " + format_duration(elapsed_seconds) : "ETA " + format_duration(remaining));
}

void ProgressBar::update(int64_t done) {
  done_ = done;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  if (!forced_ && elapsed < 0.5) return;
  const double interval = terminal_ ? 0.1 : 1.0;
  if (drawn_ && std::chrono::duration<double>(now - last_draw_).count() < interval) return;
  last_draw_ = now;
  draw();
}

void ProgressBar::draw() {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::string line = render(label_, done_, total_, elapsed);
  if (terminal_) {
    std::fprintf(stderr, "\r%s\x1b[K", line.c_str());  // redraw in place, clearing the rest of the line
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  // A bar that was shown (or forced) ends on its final state; a short unforced run shows nothing.
  if (!enabled_ || (!drawn_ && !forced_)) return;
  draw();
  if (terminal_) std::fputc('\n', stderr);
}

}  // namespace scalebert::cli
