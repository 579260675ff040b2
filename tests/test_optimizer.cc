// AdamW, LAMB and the gradient utilities: 20 steps against PyTorch (reference/optimizer_reference.py:
// torch.optim.AdamW, a torch LAMB, clip_grad_norm_, transformers' linear warmup schedule) within
// 1e-6 relative, plus hand-computed steps, the trust-ratio and weight-decay exclusions, sharded
// two-phase steps, thread-count invariance, state save/restore and every error path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/threads.h"
#include "io/safetensors.h"
#include "model/parameters.h"
#include "testing.h"
#include "train/grad_utils.h"
#include "train/optimizer.h"
#include "train/schedule.h"

using namespace scalebert;
using namespace scalebert::train;

namespace {

std::filesystem::path optimizer_fixture() {
  return scalebert::testing::fixture_path("optimizer") / "optimizer_reference.safetensors";
}

// Copies `source` (any F32 tensor with the parameter's element count) into the parameter's slice.
void copy_into(const ParameterTable& table, const Tensor& arena, const std::string& name, const Tensor& source) {
  Tensor destination = table.view(arena, name);
  ASSERT_EQ(destination.numel(), source.numel()) << name;
  std::memcpy(destination.raw(), source.raw(), destination.nbytes());
}

void fill(const ParameterTable& table, const Tensor& arena, const std::string& name, std::vector<float> values) {
  Tensor destination = table.view(arena, name);
  ASSERT_EQ(destination.numel(), static_cast<int64_t>(values.size())) << name;
  std::memcpy(destination.raw(), values.data(), destination.nbytes());
}

std::vector<float> values_of(const ParameterTable& table, const Tensor& arena, const std::string& name) {
  Tensor view = table.view(arena, name);
  return std::vector<float>(view.data<float>(), view.data<float>() + view.numel());
}

// A deterministic pseudo-random arena (xorshift), values in [-scale, scale]; padding left zero.
void fill_random(const ParameterTable& table, const Tensor& arena, uint64_t seed, float scale) {
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (const ParameterEntry& entry : table.entries()) {
    float* data = table.view(arena, entry.name).data<float>();
    for (int64_t i = 0; i < shape_numel(entry.shape); ++i) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      data[i] = scale * (static_cast<float>(state >> 40) / static_cast<float>(1ull << 24) * 2.0f - 1.0f);
    }
  }
}

bool bytes_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

Tensor clone(const Tensor& source) {
  Tensor copy = Tensor::empty(source.shape(), source.dtype());
  std::memcpy(copy.raw(), source.raw(), source.nbytes());
  return copy;
}

// A small model-like table: a decayed matrix, a bias and a LayerNorm weight (no decay), a big
// matrix spanning several arena pieces, and a zero-sized-norm candidate.
ParameterTable small_table(bool with_big = false) {
  ParameterTable table;
  table.add("encoder.layer.0.output.dense.weight", {3, 5}, true);
  table.add("encoder.layer.0.output.dense.bias", {3}, false);
  table.add("encoder.layer.0.output.LayerNorm.weight", {5}, false);
  if (with_big) table.add("embeddings.word_embeddings.weight", {2100, 20}, true);  // 42000 > 2 pieces
  table.allocate();
  return table;
}

// ------------------------------------------------------------------------------------------------
// PyTorch ground truth

struct RunResult {
  double worst_relative = 0.0;  // max over elements of |got - want| / max(|want|, max |want| of the tensor)
  double worst_absolute = 0.0;
  double worst_norm_relative = 0.0;
};

RunResult replay_run(const SafetensorsFile& file, const nlohmann::json& config, const std::string& run) {
  ParameterTable table;
  for (const auto& parameter : config["parameters"]) {
    table.add(parameter["name"].get<std::string>(), parameter["shape"].get<Shape>(), parameter["weight_decay"].get<bool>());
  }
  table.allocate();
  const nlohmann::json& hyper = config["runs"][run];
  OptimizerOptions options;
  options.beta1 = hyper["beta1"];
  options.beta2 = hyper["beta2"];
  options.eps = hyper["eps"];
  options.weight_decay = hyper["weight_decay"];
  if (hyper["algorithm"] == "lamb") {
    options.lamb_bias_correction = hyper["bias_correction"];
    options.lamb_exclude_from_adaptation = hyper["exclude_from_adaptation"];
  }
  auto optimizer = make_optimizer(parse_optimizer_kind(hyper["algorithm"].get<std::string>()), table, options);

  ScheduleOptions schedule_options;
  schedule_options.kind = parse_schedule_kind(config["schedule"].get<std::string>());
  schedule_options.warmup_steps = config["warmup_steps"];
  schedule_options.total_steps = config["steps"];
  schedule_options.peak_learning_rate = config["peak_lr"];
  const LearningRateSchedule schedule(schedule_options);
  const double max_grad_norm = config["max_grad_norm"];

  Tensor values = table.values();
  for (const ParameterEntry& entry : table.entries()) copy_into(table, values, entry.name, file.tensor("initial." + entry.name));
  Tensor grads = table.make_arena();
  const Tensor want_norms = file.tensor(run + ".grad_norm");
  RunResult result;
  const int steps = config["steps"];
  for (int k = 0; k < steps; ++k) {
    zero_arena(grads);
    for (const ParameterEntry& entry : table.entries()) {
      copy_into(table, grads, entry.name, file.tensor(str_cat("grad.", k, ".", entry.name)));
    }
    const ClipResult clip = clip_grad_norm(table, grads, max_grad_norm);
    const double want_norm = want_norms.data<float>()[k];
    result.worst_norm_relative = std::max(result.worst_norm_relative, std::fabs(clip.total_norm - want_norm) / want_norm);
    const double learning_rate = schedule.learning_rate(k);
    const double want_lr = config["learning_rates"][k];
    EXPECT_NEAR(learning_rate, want_lr, 1e-15) << run << " step " << k;
    optimizer->step(values, grads, learning_rate);
    for (const ParameterEntry& entry : table.entries()) {
      const Tensor want = file.tensor(str_cat(run, ".", k, ".", entry.name));
      const Tensor got = table.view(values, entry.name);
      double scale = 0;  // the tensor's largest |value|
      for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, std::fabs(static_cast<double>(want.data<float>()[i])));
      for (int64_t i = 0; i < got.numel(); ++i) {
        const double g = got.data<float>()[i];
        const double w = want.data<float>()[i];
        const double relative = std::fabs(g - w) / std::max({std::fabs(w), scale, 1e-30});
        result.worst_absolute = std::max(result.worst_absolute, std::fabs(g - w));
        if (!(relative <= result.worst_relative)) {
          result.worst_relative = std::isnan(relative) ? INFINITY : relative;
          if (!(relative <= 1e-6)) {
            ADD_FAILURE() << run << " step " << k << " " << entry.name << "[" << i << "]: got " << g << ", PyTorch "
                          << w << " (tensor scale " << scale << ")";
          }
        }
      }
    }
  }
  EXPECT_EQ(optimizer->step_count(), steps);
  return result;
}

class PyTorchReference : public ::testing::TestWithParam<std::string> {};

TEST_P(PyTorchReference, TwentyStepsWithClippingAndWarmup) {
  SCALEBERT_REQUIRE_PATH(optimizer_fixture());
  const SafetensorsFile file = SafetensorsFile::open(optimizer_fixture());
  const nlohmann::json config = nlohmann::json::parse(file.metadata().at("config"));
  const RunResult result = replay_run(file, config, GetParam());
  // Relative to the larger of |PyTorch's value| and the tensor's largest |value|: an element that
  // passes through zero is a difference of updates of size ~lr, so its own magnitude is no scale
  // for F32 rounding (AdamW and LAMB reach 1e-5 element-wise relative there from ulp-level
  // differences in m / (sqrt(v) + eps), while any error in the math moves values by >= 1e-4 of the
  // tensor's scale over 20 steps).
  EXPECT_LE(result.worst_relative, 1e-6) << GetParam();
  EXPECT_LE(result.worst_norm_relative, 1e-6) << GetParam();
  std::printf("[ figures  ] %s: 20 steps vs PyTorch: worst relative %.3g, worst absolute %.3g; clip norm relative %.3g\n",
              GetParam().c_str(), result.worst_relative, result.worst_absolute, result.worst_norm_relative);
}

INSTANTIATE_TEST_SUITE_P(Runs, PyTorchReference,
                         ::testing::Values("adamw", "lamb", "lamb_no_bias_correction", "lamb_exclude"));

TEST(PyTorchReferenceFixture, ClippingHappensOnSomeStepsOnly) {
  SCALEBERT_REQUIRE_PATH(optimizer_fixture());
  const SafetensorsFile file = SafetensorsFile::open(optimizer_fixture());
  const nlohmann::json config = nlohmann::json::parse(file.metadata().at("config"));
  const int clipped = config["clipped_steps"]["adamw"];
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, config["steps"].get<int>());
}

// ------------------------------------------------------------------------------------------------
// AdamW by hand

TEST(AdamW, FirstStepByHand) {
  // Step 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2, so
  // w <- w (1 - lr wd) - lr g / (|g| + eps) on decayed entries and without the factor elsewhere.
  ParameterTable table = small_table();
  Tensor values = table.values();
  Tensor grads = table.make_arena();
  fill(table, values, "encoder.layer.0.output.dense.weight", {1, 2, 3, 4, 5, -1, -2, -3, -4, -5, 0.5f, 0, 0, 0, 0});
  // g = 1e-8 = eps: the step is lr / 2 only when eps is added to sqrt(v_hat) (inside the root it
  // would be ~lr * 1e-4).
  fill(table, grads, "encoder.layer.0.output.dense.weight", {0.5f, -2, 1e-8f, 3, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1});
  fill(table, values, "encoder.layer.0.output.dense.bias", {1, 2, 3});
  fill(table, grads, "encoder.layer.0.output.dense.bias", {4, -4, 0.25f});
  OptimizerOptions options;
  options.weight_decay = 0.1;
  AdamW optimizer(table, options);
  const double lr = 0.01;
  const std::vector<float> w0 = values_of(table, values, "encoder.layer.0.output.dense.weight");
  const std::vector<float> g0 = values_of(table, grads, "encoder.layer.0.output.dense.weight");
  optimizer.step(values, grads, lr);
  const std::vector<float> w1 = values_of(table, values, "encoder.layer.0.output.dense.weight");
  for (size_t i = 0; i < w0.size(); ++i) {
    const double want = w0[i] * (1 - lr * 0.1) - lr * g0[i] / (std::fabs(g0[i]) + 1e-8);
    EXPECT_NEAR(w1[i], want, 1e-6 * std::max(1.0, std::fabs(want))) << i;
  }
  EXPECT_NEAR(w1[2], 3 * (1 - lr * 0.1) - lr / 2, 1e-6);
  const std::vector<float> b1 = values_of(table, values, "encoder.layer.0.output.dense.bias");
  EXPECT_NEAR(b1[0], 1 - lr, 1e-6);
  EXPECT_NEAR(b1[1], 2 + lr, 1e-6);
  EXPECT_NEAR(b1[2], 3 - lr, 1e-6);
  EXPECT_EQ(optimizer.step_count(), 1);
}

TEST(AdamW, NoWeightDecayOnExcludedEntries) {
  // Zero gradients leave m = v = 0 and an update of exactly 0 / (0 + eps) = 0, so only the
  // decoupled decay can move a parameter: decayed entries shrink by (1 - lr wd)^steps, biases and
  // LayerNorm weights stay bit-identical.
  ParameterTable table = small_table();
  Tensor values = table.values();
  fill_random(table, values, 7, 1.0f);
  const Tensor before = clone(values);
  Tensor grads = table.make_arena();
  OptimizerOptions options;
  options.weight_decay = 0.5;
  AdamW optimizer(table, options);
  for (int k = 0; k < 3; ++k) optimizer.step(values, grads, 0.1);
  const float factor = static_cast<float>(1.0 - 0.1 * 0.5);
  for (const ParameterEntry& entry : table.entries()) {
    const std::vector<float> got = values_of(table, values, entry.name);
    const std::vector<float> start = values_of(table, before, entry.name);
    for (size_t i = 0; i < got.size(); ++i) {
      const float want = entry.weight_decay ? start[i] * factor * factor * factor : start[i];
      EXPECT_EQ(got[i], want) << entry.name << "[" << i << "]";
    }
  }
}

// ------------------------------------------------------------------------------------------------
// LAMB by hand

TEST(Lamb, TrustRatioByHandAndOneWhereANormIsZero) {
  ParameterTable table;
  table.add("a.weight", {2}, false);   // ||w|| = 5, trust ratio 5 / ||u||
  table.add("b.weight", {3}, true);    // ||w|| = 0 with decay: ratio 1
  table.add("c.bias", {4}, false);     // zero gradient, no decay: u = 0, ratio 1, unchanged
  table.allocate();
  Tensor values = table.values();
  Tensor grads = table.make_arena();
  fill(table, values, "a.weight", {3, 4});
  fill(table, grads, "a.weight", {1, -3});
  fill(table, grads, "b.weight", {0.5f, 1, -2});
  fill(table, values, "c.bias", {1, 2, 3, 4});
  OptimizerOptions options;
  options.eps = 1e-6;
  options.weight_decay = 0.01;
  Lamb optimizer(table, options);
  const double lr = 0.1;
  optimizer.step(values, grads, lr);
  // Step 1 with bias correction: u = g / (|g| + eps) (+ wd w).
  const double u0 = 1 / (1 + 1e-6), u1 = -3 / (3 + 1e-6);
  const double ratio = 5 / std::sqrt(u0 * u0 + u1 * u1);
  ASSERT_EQ(optimizer.last_trust_ratios().size(), 3u);
  EXPECT_NEAR(optimizer.last_trust_ratios()[0], ratio, 1e-6 * ratio);
  EXPECT_EQ(optimizer.last_trust_ratios()[1], 1.0);
  EXPECT_EQ(optimizer.last_trust_ratios()[2], 1.0);
  const std::vector<float> a = values_of(table, values, "a.weight");
  EXPECT_NEAR(a[0], 3 - lr * ratio * u0, 1e-6);
  EXPECT_NEAR(a[1], 4 - lr * ratio * u1, 1e-6);
  const std::vector<float> b = values_of(table, values, "b.weight");  // w = 0: plain lr * u
  EXPECT_NEAR(b[0], -lr * 0.5 / (0.5 + 1e-6), 1e-7);
  EXPECT_NEAR(b[1], -lr * 1 / (1 + 1e-6), 1e-7);
  EXPECT_NEAR(b[2], lr * 2 / (2 + 1e-6), 1e-7);
  EXPECT_EQ(values_of(table, values, "c.bias"), (std::vector<float>{1, 2, 3, 4}));
}

TEST(Lamb, ExcludeFromAdaptationUsesRatioOneOnNoDecayEntries) {
  ParameterTable table = small_table();
  Tensor values = table.values();
  Tensor grads = table.make_arena();
  fill_random(table, values, 3, 2.0f);
  fill_random(table, grads, 4, 0.1f);
  OptimizerOptions options;
  options.lamb_exclude_from_adaptation = true;
  Lamb excluded(table, options);
  Tensor values_excluded = clone(values);
  excluded.step(values_excluded, grads, 0.01);
  options.lamb_exclude_from_adaptation = false;
  Lamb adapted(table, options);
  adapted.step(values, grads, 0.01);
  for (size_t e = 0; e < table.entries().size(); ++e) {
    SCOPED_TRACE(table.entries()[e].name);
    EXPECT_NE(adapted.last_trust_ratios()[e], 1.0);
    if (table.entries()[e].weight_decay) {
      EXPECT_EQ(excluded.last_trust_ratios()[e], adapted.last_trust_ratios()[e]);
    } else {
      EXPECT_EQ(excluded.last_trust_ratios()[e], 1.0);
    }
  }
}

TEST(Lamb, ManyPieceTensorNormsMatchADoubleReference) {
  // The embedding spans three arena pieces; its trust ratio must be the whole tensor's.
  ParameterTable table = small_table(/*with_big=*/true);
  Tensor values = table.values();
  Tensor grads = table.make_arena();
  fill_random(table, values, 11, 0.05f);
  fill_random(table, grads, 12, 1.0f);
  const Tensor w0 = clone(values);
  OptimizerOptions options;
  options.eps = 1e-6;
  options.weight_decay = 0.01;
  Lamb optimizer(table, options);
  optimizer.step(values, grads, 0.001);
  const std::string name = "embeddings.word_embeddings.weight";
  const std::vector<float> w = values_of(table, w0, name), g = values_of(table, grads, name);
  double weight_squares = 0, update_squares = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double u = g[i] / (std::fabs(static_cast<double>(g[i])) + 1e-6) + 0.01 * w[i];
    weight_squares += static_cast<double>(w[i]) * w[i];
    update_squares += u * u;
  }
  const double want = std::sqrt(weight_squares / update_squares);
  const size_t index = 3;
  ASSERT_EQ(table.entries()[index].name, name);
  EXPECT_NEAR(optimizer.last_trust_ratios()[index], want, 1e-6 * want);
}

// ------------------------------------------------------------------------------------------------
// Sharding, threads, state

// Two "ranks" each update half the arena (split inside a tensor that spans several pieces), with
// the LAMB norm sums added across ranks as an all-reduce would: the result equals one full step.
void check_sharded_equals_full(OptimizerKind kind) {
  ParameterTable table = small_table(/*with_big=*/true);
  Tensor values = table.values();
  fill_random(table, values, 21, 0.5f);
  Tensor grads = table.make_arena();
  OptimizerOptions options;
  auto full = make_optimizer(kind, table, options);
  auto rank0 = make_optimizer(kind, table, options);
  auto rank1 = make_optimizer(kind, table, options);
  Tensor sharded = clone(values);
  const int64_t split = table.entries()[3].offset + 12345;  // mid-embedding
  const int64_t total = table.total_elements();
  for (int k = 0; k < 3; ++k) {
    fill_random(table, grads, 100 + k, 0.2f);
    const float grad_scale = k == 1 ? 0.375f : 1.0f;  // one clipped step
    full->step(values, grads, 0.01, grad_scale);
    std::vector<double> sums0 = rank0->begin_step(sharded, grads, 0, split, grad_scale);
    const std::vector<double> sums1 = rank1->begin_step(sharded, grads, split, total, grad_scale);
    ASSERT_EQ(sums0.size(), sums1.size());
    for (size_t i = 0; i < sums0.size(); ++i) sums0[i] += sums1[i];
    rank0->finish_step(sharded, grads, 0.01, sums0, 0, split);
    rank1->finish_step(sharded, grads, 0.01, sums0, split, total);
  }
  const float* a = values.data<float>();
  const float* b = sharded.data<float>();
  double worst = 0;
  for (int64_t i = 0; i < total; ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  // AdamW is element-wise: identical. LAMB's norm sums associate differently across the split:
  // the trust ratio may differ in its last bits.
  if (kind == OptimizerKind::kAdamW) {
    EXPECT_TRUE(bytes_equal(values, sharded));
  } else {
    EXPECT_LE(worst, 1e-7);
  }
}

TEST(Sharding, AdamWShardsEqualFullStep) { check_sharded_equals_full(OptimizerKind::kAdamW); }
TEST(Sharding, LambShardsWithSummedNormsEqualFullStep) { check_sharded_equals_full(OptimizerKind::kLamb); }

// The trainer folds clipping into the step: step(..., grad_scale) must equal scaling the arena
// by the same F32 factor first (clip_grad_norm), bit for bit, or the PyTorch loss curves drift.
void check_grad_scale_equals_scaled_arena(OptimizerKind kind) {
  ParameterTable table = small_table(/*with_big=*/true);
  Tensor folded = table.values();
  fill_random(table, folded, 41, 0.5f);
  Tensor separate = clone(folded);
  Tensor grads = table.make_arena();
  auto with_scale = make_optimizer(kind, table, OptimizerOptions{});
  auto with_scaled_arena = make_optimizer(kind, table, OptimizerOptions{});
  for (int k = 0; k < 3; ++k) {
    fill_random(table, grads, 300 + k, 2.0f);
    const ClipResult clip = clip_coefficient(table, grads, 1.0);
    ASSERT_LT(clip.scale, 1.0);  // the gradients are large enough to be clipped
    with_scale->step(folded, grads, 0.01, static_cast<float>(clip.scale));
    Tensor scaled = clone(grads);
    const ClipResult applied = clip_grad_norm(table, scaled, 1.0);
    EXPECT_EQ(applied.scale, clip.scale);
    EXPECT_EQ(applied.total_norm, clip.total_norm);
    with_scaled_arena->step(separate, scaled, 0.01);
  }
  EXPECT_TRUE(bytes_equal(folded, separate));
}

TEST(GradScale, AdamWStepWithScaleEqualsScalingTheArenaFirst) {
  check_grad_scale_equals_scaled_arena(OptimizerKind::kAdamW);
}
TEST(GradScale, LambStepWithScaleEqualsScalingTheArenaFirst) {
  check_grad_scale_equals_scaled_arena(OptimizerKind::kLamb);
}

TEST(Determinism, ResultsDoNotDependOnThreadCount) {
  ParameterTable table = small_table(/*with_big=*/true);
  Tensor grads = table.make_arena();
  fill_random(table, grads, 5, 0.3f);
  const int threads_before = num_threads();
  std::vector<Tensor> results;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Tensor values = table.make_arena();
    fill_random(table, values, 6, 0.5f);
    Lamb optimizer(table, OptimizerOptions{});
    for (int k = 0; k < 2; ++k) optimizer.step(values, grads, 0.01);
    ClipResult clip = clip_grad_norm(table, clone(grads), 0.5);
    EXPECT_EQ(clip.total_norm, global_norm(table, grads));
    results.push_back(values);
  }
  set_num_threads(threads_before);
  EXPECT_TRUE(bytes_equal(results[0], results[1]));
  EXPECT_TRUE(bytes_equal(results[0], results[2]));
}

// Steps 3 times, saves the state to a safetensors file (by name, step in the metadata), restores
// it into a new optimizer and steps both 3 more times: the parameters stay bit-identical.
void check_save_restore(OptimizerKind kind) {
  ParameterTable table = small_table(/*with_big=*/true);
  Tensor values = table.values();
  fill_random(table, values, 31, 0.5f);
  Tensor grads = table.make_arena();
  auto original = make_optimizer(kind, table, OptimizerOptions{});
  for (int k = 0; k < 3; ++k) {
    fill_random(table, grads, 200 + k, 0.2f);
    original->step(values, grads, 0.01);
  }
  const OptimizerState state = original->get_state();
  ASSERT_EQ(state.tensors.size(), 2 * table.entries().size());
  const scalebert::testing::TempDir temp;
  const std::filesystem::path path = temp / str_cat("optimizer_state_", optimizer_kind_name(kind), ".safetensors");
  save_safetensors(path, state.tensors, {{"algorithm", state.algorithm}, {"step", std::to_string(state.step)}});

  const SafetensorsFile file = SafetensorsFile::open(path);
  OptimizerState loaded;
  loaded.algorithm = file.metadata().at("algorithm");
  loaded.step = std::stoll(file.metadata().at("step"));
  for (const std::string& name : file.names()) loaded.tensors.emplace_back(name, file.tensor(name));
  auto resumed = make_optimizer(kind, table, OptimizerOptions{});
  resumed->set_state(loaded);
  EXPECT_EQ(resumed->step_count(), 3);
  EXPECT_TRUE(bytes_equal(resumed->exp_avg(), original->exp_avg()));
  EXPECT_TRUE(bytes_equal(resumed->exp_avg_sq(), original->exp_avg_sq()));

  Tensor resumed_values = clone(values);
  for (int k = 3; k < 6; ++k) {
    fill_random(table, grads, 200 + k, 0.2f);
    original->step(values, grads, 0.01);
    resumed->step(resumed_values, grads, 0.01);
  }
  EXPECT_TRUE(bytes_equal(values, resumed_values));
  EXPECT_TRUE(bytes_equal(resumed->exp_avg_sq(), original->exp_avg_sq()));

  // Without the restore the continuation differs (bias correction restarts at step 1).
  auto fresh = make_optimizer(kind, table, OptimizerOptions{});
  Tensor fresh_values = clone(values);
  fresh->step(fresh_values, grads, 0.01);
  original->step(values, grads, 0.01);
  EXPECT_FALSE(bytes_equal(values, fresh_values));
}

TEST(State, AdamWRestoreContinuesBitIdentically) { check_save_restore(OptimizerKind::kAdamW); }
TEST(State, LambRestoreContinuesBitIdentically) { check_save_restore(OptimizerKind::kLamb); }

TEST(State, BadStatesAreRefusedNamingTheValueAndLeaveTheOptimizerUntouched) {
  ParameterTable table = small_table();
  Tensor values = table.values();
  Tensor grads = table.make_arena();
  fill_random(table, grads, 1, 1.0f);
  AdamW optimizer(table, OptimizerOptions{});
  optimizer.step(values, grads, 0.01);
  const Tensor before = clone(optimizer.exp_avg());

  auto expect_refused = [&](OptimizerState state, const std::string& fragment) {
    try {
      optimizer.set_state(state);
      ADD_FAILURE() << "accepted a state that should fail with \"" << fragment << "\"";
    } catch (const InvalidArgument& error) {
      EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
    }
    EXPECT_EQ(optimizer.step_count(), 1);
    EXPECT_TRUE(bytes_equal(optimizer.exp_avg(), before));
  };
  // Independent copies of the good state, each with one defect.
  auto good = [&] {
    OptimizerState state = optimizer.get_state();
    for (auto& [name, tensor] : state.tensors) tensor = clone(tensor);
    for (auto& [name, tensor] : state.tensors) std::memset(tensor.raw(), 0, tensor.nbytes());
    return state;
  };
  OptimizerState state = good();
  state.algorithm = "lamb";
  expect_refused(state, "\"lamb\"");
  state = good();
  state.step = -4;
  expect_refused(state, "-4");
  state = good();
  state.tensors.pop_back();
  expect_refused(state, "encoder.layer.0.output.LayerNorm.weight.exp_avg_sq");
  state = good();
  state.tensors[0].second = Tensor::zeros({5, 3}, DType::kF32);
  expect_refused(state, "encoder.layer.0.output.dense.weight.exp_avg");
  state = good();
  state.tensors[1].second = Tensor::zeros({3, 5}, DType::kI32);
  expect_refused(state, "encoder.layer.0.output.dense.weight.exp_avg_sq");
  state = good();
  state.tensors.emplace_back("pooler.dense.weight.exp_avg", Tensor::zeros({3}, DType::kF32));
  expect_refused(state, "pooler.dense.weight.exp_avg");
  state = good();
  state.tensors.push_back(state.tensors[0]);
  expect_refused(state, "appears twice");
}

// ------------------------------------------------------------------------------------------------
// Optimizer errors

TEST(OptimizerErrors, BadArgumentsThrowNamingTheValue) {
  ParameterTable table = small_table();
  Tensor values = table.values();
  Tensor grads = table.make_arena();
  auto message_of = [](auto&& action) -> std::string {
    try {
      action();
    } catch (const InvalidArgument& error) {
      return error.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message_of([] { parse_optimizer_kind("adam"); }).find("\"adam\""), std::string::npos);
  OptimizerOptions bad;
  bad.beta2 = 1.0;
  EXPECT_NE(message_of([&] { AdamW(table, bad); }).find("beta2"), std::string::npos);
  bad = OptimizerOptions{};
  bad.weight_decay = -0.1;
  EXPECT_NE(message_of([&] { Lamb(table, bad); }).find("-0.1"), std::string::npos);
  bad = OptimizerOptions{};
  bad.eps = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(message_of([&] { AdamW(table, bad); }).find("eps"), std::string::npos);

  Lamb optimizer(table, OptimizerOptions{});
  EXPECT_NE(message_of([&] { optimizer.step(values, grads, -1e-3); }).find("-0.001"), std::string::npos);
  EXPECT_EQ(optimizer.step_count(), 0);  // a refused learning rate does not count a step
  EXPECT_NE(message_of([&] { optimizer.step(values, Tensor::zeros({7}, DType::kF32), 1e-3); }).find("gradient arena"),
            std::string::npos);
  EXPECT_NE(message_of([&] { optimizer.begin_step(values, grads, 0, table.total_elements() + 1, 1.0f); }).find("range"),
            std::string::npos);
  for (float bad_scale : {0.0f, -1.0f, NAN, INFINITY}) {
    EXPECT_NE(message_of([&] { optimizer.step(values, grads, 1e-3, bad_scale); }).find("gradient scale"),
              std::string::npos)
        << bad_scale;
  }
  EXPECT_EQ(optimizer.step_count(), 0);  // a refused scale does not count a step either
  EXPECT_NE(message_of([&] { optimizer.finish_step(values, grads, 1e-3, {}, 0, 1); }).find("without begin_step"),
            std::string::npos);
  std::vector<double> sums = optimizer.begin_step(values, grads, 0, table.total_elements(), 1.0f);
  EXPECT_NE(message_of([&] { optimizer.begin_step(values, grads, 0, 1, 1.0f); }).find("twice"), std::string::npos);
  EXPECT_NE(message_of([&] { optimizer.finish_step(values, grads, 1e-3, {1.0}, 0, table.total_elements()); })
                .find("6 norm sums"),
            std::string::npos);
  optimizer.finish_step(values, grads, 1e-3, sums, 0, table.total_elements());
  EXPECT_EQ(optimizer.step_count(), 1);
}

// ------------------------------------------------------------------------------------------------
// Gradient utilities

TEST(GradUtils, PiecesCoverParametersOnlyAndSplitLargeTensors) {
  ParameterTable table = small_table(/*with_big=*/true);
  const std::vector<ArenaPiece> pieces = arena_pieces(table, 0, table.total_elements());
  int64_t covered = 0;
  for (const ArenaPiece& piece : pieces) {
    const ParameterEntry& entry = table.entries()[piece.entry];
    EXPECT_GE(piece.begin, entry.offset);
    EXPECT_LE(piece.end, entry.offset + shape_numel(entry.shape));
    EXPECT_LE(piece.end - piece.begin, kArenaPieceElements);
    covered += piece.end - piece.begin;
  }
  EXPECT_EQ(covered, table.parameter_count());
  EXPECT_EQ(pieces.size(), 3u + 3u);  // three small tensors, the 42000-element one in three
  EXPECT_THROW(arena_pieces(table, 5, 4), InvalidArgument);
  EXPECT_THROW(arena_pieces(table, 0, table.total_elements() + 16), InvalidArgument);
}

TEST(GradUtils, GlobalNormIgnoresPaddingAndAccumulatesInDouble) {
  ParameterTable table = small_table();
  Tensor grads = table.make_arena();
  fill(table, grads, "encoder.layer.0.output.dense.bias", {3, 0, 4});
  fill(table, grads, "encoder.layer.0.output.LayerNorm.weight", {0, 0, 12, 0, 0});
  // Padding after the 15-element matrix holds garbage that must never be read.
  grads.data<float>()[15] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_DOUBLE_EQ(global_norm(table, grads), 13.0);
  EXPECT_FALSE(find_non_finite(table, grads).has_value());
}

TEST(GradUtils, ClipGradNormMatchesTorchFormula) {
  ParameterTable table = small_table();
  Tensor grads = table.make_arena();
  fill(table, grads, "encoder.layer.0.output.dense.bias", {3, 0, 4});  // norm 5
  ClipResult clip = clip_grad_norm(table, grads, 1.0);
  EXPECT_DOUBLE_EQ(clip.total_norm, 5.0);
  EXPECT_DOUBLE_EQ(clip.scale, 1.0 / (5.0 + 1e-6));
  const std::vector<float> clipped = values_of(table, grads, "encoder.layer.0.output.dense.bias");
  EXPECT_EQ(clipped[0], 3.0f * static_cast<float>(1.0 / (5.0 + 1e-6)));
  EXPECT_NEAR(global_norm(table, grads), 1.0, 1e-6);
  EXPECT_LT(global_norm(table, grads), 1.0);

  // Under the limit: untouched, bit for bit.
  const Tensor before = clone(grads);
  clip = clip_grad_norm(table, grads, 2.0);
  EXPECT_EQ(clip.scale, 1.0);
  EXPECT_TRUE(bytes_equal(before, grads));
  EXPECT_THROW(clip_grad_norm(table, grads, 0.0), InvalidArgument);
  EXPECT_THROW(clip_grad_norm(table, grads, INFINITY), InvalidArgument);
}

TEST(GradUtils, NonFiniteGradientsNameTheParameter) {
  ParameterTable table = small_table();
  Tensor grads = table.make_arena();
  fill(table, grads, "encoder.layer.0.output.LayerNorm.weight", {0, 1, INFINITY, 0, 0});
  fill(table, grads, "encoder.layer.0.output.dense.bias", {0, std::numeric_limits<float>::quiet_NaN(), 0});
  const std::optional<NonFiniteValue> bad = find_non_finite(table, grads);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->parameter, "encoder.layer.0.output.dense.bias");  // first in table order
  EXPECT_EQ(bad->index, 1);
  EXPECT_TRUE(std::isnan(bad->value));
  try {
    clip_grad_norm(table, grads, 1.0);
    ADD_FAILURE() << "clip_grad_norm accepted a NaN gradient";
  } catch (const NonFiniteError& error) {
    EXPECT_EQ(error.parameter(), "encoder.layer.0.output.dense.bias");
    const std::string message = error.what();
    EXPECT_NE(message.find("\"encoder.layer.0.output.dense.bias\" element 1 of shape [3] is nan"), std::string::npos)
        << message;
  }
  fill(table, grads, "encoder.layer.0.output.dense.bias", {0, 0, 0});
  try {
    check_finite(table, grads, "loss backward");
    ADD_FAILURE() << "check_finite accepted an infinite gradient";
  } catch (const NonFiniteError& error) {
    EXPECT_EQ(error.parameter(), "encoder.layer.0.output.LayerNorm.weight");
    EXPECT_NE(std::string(error.what()).find("loss backward: parameter \"encoder.layer.0.output.LayerNorm.weight\" element 2"),
              std::string::npos)
        << error.what();
  }
}

TEST(GradUtils, AccumulationAveragesMicroBatchGradients) {
  // Four micro-batches adding into one arena (as backward does), then 1/4: the mean.
  ParameterTable table = small_table();
  Tensor grads = table.make_arena();
  Tensor micro = table.make_arena();
  Tensor want = table.make_arena();
  for (int k = 0; k < 4; ++k) {
    fill_random(table, micro, 50 + k, 1.0f);
    for (int64_t i = 0; i < table.total_elements(); ++i) {
      grads.data<float>()[i] += micro.data<float>()[i];
      want.data<float>()[i] += micro.data<float>()[i] / 4.0f;
    }
  }
  average_accumulated_gradients(grads, 4);
  EXPECT_LE(scalebert::testing::max_abs_diff(grads, want), 1e-6f);
  const Tensor before = clone(grads);
  average_accumulated_gradients(grads, 1);
  EXPECT_TRUE(bytes_equal(before, grads));
  EXPECT_THROW(average_accumulated_gradients(grads, 0), InvalidArgument);
  zero_arena(grads);
  EXPECT_EQ(global_norm(table, grads), 0.0);
}

}  // namespace
