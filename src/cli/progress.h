// A one-line progress bar on stderr (count, rate, ETA) for long inputs. It draws only when stderr
// is a terminal or when forced (--progress), and on a terminal only once a run has lasted half a
// second, so short runs and pipes stay clean. Forced into a pipe or file, it writes a plain line
// at most once a second instead of redrawing.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace scalebert::cli {

class ProgressBar {
 public:
  // `label` names the work ("embed"); `total` is the count at completion.
  ProgressBar(std::string label, int64_t total, bool forced);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Called after each batch; redraws at most 10 times a second.
  void update(int64_t done);
  // Draws the final state and ends the line (once; the destructor calls it too).
  void finish();

  // "1:05" / "0:09" / "1:02:03"
  static std::string format_duration(double seconds);
  // The bar line for a state (without the leading carriage return), for tests and drawing.
  static std::string render(const std::string& label, int64_t done, int64_t total, double elapsed_seconds);

 private:
  void draw();

  std::string label_;
  int64_t total_ = 0;
  int64_t done_ = 0;
  bool enabled_ = false;
  bool forced_ = false;
  bool terminal_ = false;  // redraw in place; otherwise (forced into a pipe) one line per draw
  bool drawn_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace scalebert::cli
