// Learning-rate schedules and batch-size scaling rules; formulas in schedule.h.
#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace scalebert::train {

namespace {

constexpr const char* kScheduleNames = "constant, constant_with_warmup, linear, polynomial, cosine";

bool decays(ScheduleKind kind) {
  return kind == ScheduleKind::kLinear || kind == ScheduleKind::kPolynomial || kind == ScheduleKind::kCosine;
}

}  // namespace

ScheduleKind parse_schedule_kind(std::string_view text) {
  if (text == "constant") return ScheduleKind::kConstant;
  if (text == "constant_with_warmup") return ScheduleKind::kConstantWithWarmup;
  if (text == "linear") return ScheduleKind::kLinear;
  if (text == "polynomial") return ScheduleKind::kPolynomial;
  if (text == "cosine") return ScheduleKind::kCosine;
  throw InvalidArgument(str_cat("unknown learning-rate schedule \"", text, "\" (expected one of: ", kScheduleNames, ")"));
}

std::string_view schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kConstant: return "constant";
    case ScheduleKind::kConstantWithWarmup: return "constant_with_warmup";
    case ScheduleKind::kLinear: return "linear";
    case ScheduleKind::kPolynomial: return "polynomial";
    case ScheduleKind::kCosine: return "cosine";
  }
  return "unknown";
}

LearningRateSchedule::LearningRateSchedule(const ScheduleOptions& options) : options_(options) {
  const std::string_view name = schedule_kind_name(options.kind);
  check(options.warmup_steps >= 0, name, " schedule: warmup_steps must be >= 0, got ", options.warmup_steps);
  check(options.total_steps >= 0, name, " schedule: total_steps must be >= 0, got ", options.total_steps);
  if (decays(options.kind)) {
    check(options.total_steps >= options.warmup_steps, name, " schedule: total_steps (", options.total_steps,
          ") must be >= warmup_steps (", options.warmup_steps, ")");
  }
  if (options.kind == ScheduleKind::kPolynomial) {
    check(options.total_steps > options.warmup_steps, "polynomial schedule: total_steps (", options.total_steps,
          ") must exceed warmup_steps (", options.warmup_steps, ")");
    check(options.peak_learning_rate > options.lr_end, "polynomial schedule: lr_end (", options.lr_end,
          ") must be smaller than the peak learning rate (", options.peak_learning_rate, ")");
    check(std::isfinite(options.power), "polynomial schedule: power must be finite, got ", options.power);
  }
  check(std::isfinite(options.num_cycles), name, " schedule: num_cycles must be finite, got ", options.num_cycles);
  check(options.warmup_start >= 0.0 && options.warmup_start <= 1.0, name,
        " schedule: warmup_start must be in [0, 1], got ", options.warmup_start);
}

double LearningRateSchedule::multiplier(int64_t step) const {
  check(step >= 0, "learning-rate schedule asked for negative step ", step);
  const int64_t warmup = options_.warmup_steps;
  const int64_t total = options_.total_steps;
  if (options_.kind == ScheduleKind::kConstant) return 1.0;
  if (step < warmup) {
    const double fraction = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
    // warmup_start 0 leaves transformers' expression bit-for-bit.
    return options_.warmup_start == 0.0 ? fraction
                                         : options_.warmup_start + (1.0 - options_.warmup_start) * fraction;
  }
  switch (options_.kind) {
    case ScheduleKind::kConstant:
    case ScheduleKind::kConstantWithWarmup:
      return 1.0;
    case ScheduleKind::kLinear:
      return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
    case ScheduleKind::kPolynomial: {
      const double peak = options_.peak_learning_rate;
      if (step > total) return options_.lr_end / peak;
      const double remaining =
          1.0 - static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
      return ((peak - options_.lr_end) * std::pow(remaining, options_.power) + options_.lr_end) / peak;
    }
    case ScheduleKind::kCosine: {
      const double progress =
          static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
      return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * options_.num_cycles * 2.0 * progress)));
    }
  }
  return 1.0;
}

LrScaling parse_lr_scaling(std::string_view text) {
  if (text == "none") return LrScaling::kNone;
  if (text == "linear") return LrScaling::kLinear;
  if (text == "sqrt") return LrScaling::kSqrt;
  throw InvalidArgument(str_cat("--scale-lr \"", text, "\": expected linear, sqrt or none"));
}

std::string_view lr_scaling_name(LrScaling rule) {
  switch (rule) {
    case LrScaling::kNone: return "none";
    case LrScaling::kLinear: return "linear";
    case LrScaling::kSqrt: return "sqrt";
  }
  return "unknown";
}

double scaled_learning_rate(double base_lr, int64_t base_batch, int64_t global_batch, LrScaling rule) {
  check(std::isfinite(base_lr) && base_lr >= 0.0, "learning-rate scaling: base learning rate must be finite and >= 0, got ",
        base_lr);
  check(base_batch > 0, "learning-rate scaling: base batch size must be positive, got ", base_batch);
  check(global_batch > 0, "learning-rate scaling: global batch size must be positive, got ", global_batch);
  const double k = static_cast<double>(global_batch) / static_cast<double>(base_batch);
  switch (rule) {
    case LrScaling::kNone: return base_lr;
    case LrScaling::kLinear: return base_lr * k;
    case LrScaling::kSqrt: return base_lr * std::sqrt(k);
  }
  return base_lr;
}

double gradual_warmup_start(int64_t base_batch, int64_t global_batch) {
  check(base_batch > 0 && global_batch > 0, "gradual warmup: batch sizes must be positive, got base ", base_batch,
        " and global ", global_batch);
  return std::min(1.0, static_cast<double>(base_batch) / static_cast<double>(global_batch));
}

}  // namespace scalebert::train
