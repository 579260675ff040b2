// Learning-rate schedules (step -> multiplier of the peak learning rate, as transformers'
// get_*_schedule_with_warmup lambdas compute them) and the batch-size scaling rules that set the
// peak learning rate when the global batch grows.
//
// Step convention (transformers + torch LambdaLR): the optimizer step with index s (0-based) uses
// lr = peak * multiplier(s), so the very first step of a warmed-up run has multiplier 0.
//   constant:              1
//   constant_with_warmup:  s / max(1, W) for s < W, then 1
//   linear:                s / max(1, W) for s < W, then max(0, (N - s) / max(1, N - W))
//   polynomial:            s / max(1, W) for s < W; for s > N: lr_end / peak; otherwise
//                          ((peak - lr_end) * (1 - (s - W) / (N - W))^power + lr_end) / peak
//   cosine:                s / max(1, W) for s < W, then with p = (s - W) / max(1, N - W):
//                          max(0, (1 + cos(pi * 2 * num_cycles * p)) / 2)   (num_cycles 0.5: one half-wave)
// with W warmup steps and N total steps.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace scalebert::train {

enum class ScheduleKind { kConstant, kConstantWithWarmup, kLinear, kPolynomial, kCosine };

// transformers' names: "constant", "constant_with_warmup", "linear", "polynomial", "cosine".
// Throws InvalidArgument naming the value and the accepted names.
ScheduleKind parse_schedule_kind(std::string_view text);
std::string_view schedule_kind_name(ScheduleKind kind);

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::kLinear;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;       // N; needed by linear, polynomial and cosine
  double peak_learning_rate = 0; // the optimizer's lr (polynomial's lr_init); learning_rate() scales by it
  double lr_end = 1e-7;          // polynomial only, an absolute learning rate as in transformers
  double power = 1.0;            // polynomial only
  double num_cycles = 0.5;       // cosine only
  // Multiplier at step 0 of the warmup, rising linearly to 1 at step W. 0 is transformers'
  // warmup; Goyal et al. 2017's gradual warmup starts at the unscaled rate, i.e. 1 / k when the
  // batch grew k times (gradual_warmup_start below).
  double warmup_start = 0.0;
};

class LearningRateSchedule {
 public:
  // Throws InvalidArgument naming the value for: negative step counts, total_steps < warmup_steps
  // for a decaying schedule, polynomial with total_steps == warmup_steps (its decay would divide
  // by zero) or with peak_learning_rate <= lr_end (transformers refuses both), a non-finite
  // power / num_cycles, or warmup_start outside [0, 1].
  explicit LearningRateSchedule(const ScheduleOptions& options);

  // The multiplier for optimizer step `step` (0-based); throws InvalidArgument for step < 0.
  double multiplier(int64_t step) const;
  // peak_learning_rate * multiplier(step).
  double learning_rate(int64_t step) const { return options_.peak_learning_rate * multiplier(step); }
  const ScheduleOptions& options() const { return options_; }

 private:
  ScheduleOptions options_;
};

// --scale-lr: how the peak learning rate follows the global batch size.
enum class LrScaling { kNone, kLinear, kSqrt };

// "none", "linear", "sqrt"; throws InvalidArgument naming the value ("--scale-lr \"cube\": expected
// linear, sqrt or none").
LrScaling parse_lr_scaling(std::string_view text);
std::string_view lr_scaling_name(LrScaling rule);

// With k = global_batch / base_batch: linear (Goyal et al. 2017) gives base_lr * k, sqrt
// (Krizhevsky 2014; Hoffer et al. 2017; You et al. 2019 use it with LAMB) gives
// base_lr * sqrt(k), none gives base_lr. Large k needs warmup (Goyal: 5 epochs of gradual warmup).
// Throws InvalidArgument for a non-positive batch or a negative or non-finite base_lr.
double scaled_learning_rate(double base_lr, int64_t base_batch, int64_t global_batch, LrScaling rule);

// Goyal et al.'s gradual warmup starts at the base (unscaled) rate: the multiplier
// base_batch / global_batch of the scaled peak (1 when the batch did not grow).
double gradual_warmup_start(int64_t base_batch, int64_t global_batch);

}  // namespace scalebert::train
