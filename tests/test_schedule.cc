// Learning-rate schedules against transformers' get_*_schedule_with_warmup (schedules.json from
// reference/optimizer_reference.py: every step of several configurations, as exact doubles), the
// batch-size scaling rules, and the errors for bad names and options.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "testing.h"
#include "train/schedule.h"

using namespace scalebert;
using namespace scalebert::train;

namespace {

std::string error_of(auto&& action) {
  try {
    action();
  } catch (const InvalidArgument& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(Schedule, EqualsTransformersAtEveryStep) {
  const std::filesystem::path path = scalebert::testing::fixture_path("optimizer") / "schedules.json";
  SCALEBERT_REQUIRE_PATH(path);
  std::ifstream input(path);
  const nlohmann::json reference = nlohmann::json::parse(input);
  ASSERT_GE(reference["cases"].size(), 5u);
  int kinds_seen = 0;
  for (const nlohmann::json& item : reference["cases"]) {
    const std::string label = item["label"];
    SCOPED_TRACE(label);
    ScheduleOptions options;
    options.kind = parse_schedule_kind(item["kind"].get<std::string>());
    options.warmup_steps = item["warmup_steps"];
    options.total_steps = item["total_steps"];
    options.peak_learning_rate = item["peak_lr"];
    options.lr_end = item["lr_end"];
    options.power = item["power"];
    options.num_cycles = item["num_cycles"];
    const LearningRateSchedule schedule(options);
    const nlohmann::json& multipliers = item["multipliers"];
    ASSERT_GE(multipliers.size(), static_cast<size_t>(options.total_steps + 1));
    double worst = 0;
    for (size_t step = 0; step < multipliers.size(); ++step) {
      const double want = multipliers[step];
      const double got = schedule.multiplier(static_cast<int64_t>(step));
      worst = std::max(worst, std::fabs(got - want));
      EXPECT_NEAR(got, want, 1e-14) << "step " << step;
      EXPECT_NEAR(schedule.learning_rate(static_cast<int64_t>(step)), options.peak_learning_rate * want, 1e-18);
    }
    kinds_seen |= 1 << static_cast<int>(options.kind);
    std::printf("[ figures  ] %-32s %zu steps, worst |difference| %.3g\n", label.c_str(), multipliers.size(), worst);
  }
  EXPECT_EQ(kinds_seen, 0b11111) << "every schedule kind must be in the fixture";
}

TEST(Schedule, HandValues) {
  ScheduleOptions options;
  options.kind = ScheduleKind::kLinear;
  options.warmup_steps = 10;
  options.total_steps = 110;
  const LearningRateSchedule linear(options);
  EXPECT_EQ(linear.multiplier(0), 0.0);
  EXPECT_EQ(linear.multiplier(5), 0.5);
  EXPECT_EQ(linear.multiplier(10), 1.0);
  EXPECT_EQ(linear.multiplier(60), 0.5);
  EXPECT_EQ(linear.multiplier(110), 0.0);
  EXPECT_EQ(linear.multiplier(500), 0.0);

  options.kind = ScheduleKind::kCosine;
  const LearningRateSchedule cosine(options);
  EXPECT_NEAR(cosine.multiplier(60), 0.5, 1e-15);
  EXPECT_NEAR(cosine.multiplier(35), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_NEAR(cosine.multiplier(110), 0.0, 1e-15);

  options.kind = ScheduleKind::kPolynomial;
  options.peak_learning_rate = 1e-3;
  options.lr_end = 1e-5;
  options.power = 2.0;
  const LearningRateSchedule polynomial(options);
  EXPECT_NEAR(polynomial.learning_rate(60), (1e-3 - 1e-5) * 0.25 + 1e-5, 1e-18);
  EXPECT_NEAR(polynomial.learning_rate(111), 1e-5, 1e-18);

  options.kind = ScheduleKind::kConstant;
  EXPECT_EQ(LearningRateSchedule(options).multiplier(0), 1.0);
  options.kind = ScheduleKind::kConstantWithWarmup;
  EXPECT_EQ(LearningRateSchedule(options).multiplier(2), 0.2);
  EXPECT_EQ(LearningRateSchedule(options).multiplier(1000), 1.0);
}

TEST(Schedule, GradualWarmupStartsAtTheUnscaledRate) {
  // Goyal et al.: batch 8x larger, peak 8x larger, warmup from the base rate (1/8 of the peak).
  ScheduleOptions options;
  options.kind = ScheduleKind::kLinear;
  options.warmup_steps = 4;
  options.total_steps = 20;
  options.warmup_start = gradual_warmup_start(32, 256);
  EXPECT_EQ(options.warmup_start, 0.125);
  const LearningRateSchedule schedule(options);
  EXPECT_EQ(schedule.multiplier(0), 0.125);
  EXPECT_EQ(schedule.multiplier(2), 0.125 + 0.875 * 0.5);
  EXPECT_EQ(schedule.multiplier(4), 1.0);
  EXPECT_EQ(gradual_warmup_start(256, 32), 1.0);
}

TEST(Schedule, BadOptionsNameTheValue) {
  EXPECT_NE(error_of([] { parse_schedule_kind("cosine_with_restarts"); }).find("\"cosine_with_restarts\""),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_schedule_kind("Linear"); }).find("constant_with_warmup"), std::string::npos);
  ScheduleOptions options;
  options.kind = ScheduleKind::kLinear;
  options.warmup_steps = 50;
  options.total_steps = 40;
  EXPECT_NE(error_of([&] { LearningRateSchedule{options}; }).find("total_steps (40)"), std::string::npos);
  options.warmup_steps = -1;
  EXPECT_NE(error_of([&] { LearningRateSchedule{options}; }).find("-1"), std::string::npos);
  options = ScheduleOptions{};
  options.kind = ScheduleKind::kPolynomial;
  options.total_steps = 100;
  options.peak_learning_rate = 1e-4;
  options.lr_end = 1e-3;
  EXPECT_NE(error_of([&] { LearningRateSchedule{options}; }).find("lr_end (0.001)"), std::string::npos);
  options.lr_end = 0;
  options.warmup_steps = 100;
  EXPECT_NE(error_of([&] { LearningRateSchedule{options}; }).find("must exceed warmup_steps"), std::string::npos);
  options = ScheduleOptions{};
  options.warmup_start = 1.5;
  EXPECT_NE(error_of([&] { LearningRateSchedule{options}; }).find("1.5"), std::string::npos);
  options = ScheduleOptions{};
  EXPECT_NE(error_of([&] { LearningRateSchedule(options).multiplier(-3); }).find("-3"), std::string::npos);
}

TEST(BatchScaling, LinearSqrtAndNone) {
  EXPECT_DOUBLE_EQ(scaled_learning_rate(1e-4, 32, 256, LrScaling::kLinear), 8e-4);
  EXPECT_DOUBLE_EQ(scaled_learning_rate(1e-4, 32, 512, LrScaling::kSqrt), 4e-4);
  EXPECT_DOUBLE_EQ(scaled_learning_rate(1e-4, 32, 512, LrScaling::kNone), 1e-4);
  EXPECT_DOUBLE_EQ(scaled_learning_rate(1e-4, 256, 32, LrScaling::kLinear), 1.25e-5);  // smaller batches scale down
  EXPECT_DOUBLE_EQ(scaled_learning_rate(2e-5, 32, 32, LrScaling::kSqrt), 2e-5);
  EXPECT_EQ(parse_lr_scaling("linear"), LrScaling::kLinear);
  EXPECT_EQ(parse_lr_scaling("sqrt"), LrScaling::kSqrt);
  EXPECT_EQ(parse_lr_scaling("none"), LrScaling::kNone);
  EXPECT_EQ(lr_scaling_name(LrScaling::kSqrt), "sqrt");
  EXPECT_NE(error_of([] { parse_lr_scaling("quadratic"); }).find("--scale-lr \"quadratic\""), std::string::npos);
  EXPECT_NE(error_of([] { scaled_learning_rate(1e-4, 0, 32, LrScaling::kLinear); }).find("base batch size"),
            std::string::npos);
  EXPECT_NE(error_of([] { scaled_learning_rate(1e-4, 32, -8, LrScaling::kLinear); }).find("-8"), std::string::npos);
  EXPECT_NE(error_of([] { scaled_learning_rate(-1.0, 32, 64, LrScaling::kLinear); }).find("-1"), std::string::npos);
}

}  // namespace
