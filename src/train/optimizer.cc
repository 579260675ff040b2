// AdamW and LAMB over flat arenas; the math and the choice of LAMB variant are in optimizer.h.
#include "train/optimizer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <unordered_map>

#include "core/error.h"
#include "kernels/cpu/parallel.h"
#include "train/grad_utils.h"

namespace scalebert::train {

namespace {

constexpr const char* kExpAvgSuffix = ".exp_avg";
constexpr const char* kExpAvgSqSuffix = ".exp_avg_sq";

float* mutable_floats(const Tensor& arena) { return const_cast<float*>(arena.data<float>()); }

// (elements) F32 zeros on freshly mapped pages: the kernel backs a page on its first write, and
// madvise(MADV_DONTNEED) gives it back (it then reads as zero again).
Tensor zero_page_arena(int64_t elements) {
  const size_t bytes = std::max<size_t>(1, static_cast<size_t>(elements) * sizeof(float));
  void* pages = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pages == MAP_FAILED) throw std::bad_alloc();
  std::shared_ptr<void> owner(pages, [bytes](void* p) { munmap(p, bytes); });
  return Tensor::view(pages, {elements}, DType::kF32, std::move(owner));
}

// Returns the whole pages of [begin, end) elements of `arena` to the system.
void release_pages(float* arena, int64_t begin, int64_t end) {
  static const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto first = (reinterpret_cast<uintptr_t>(arena + begin) + page - 1) / page * page;
  const auto last = reinterpret_cast<uintptr_t>(arena + end) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

void check_learning_rate(double learning_rate) {
  check(std::isfinite(learning_rate) && learning_rate >= 0.0, "learning rate must be finite and >= 0, got ",
        learning_rate);
}

// The per-step constants of the moment update and LAMB's direction, as F32 like the tensors they
// scale. The element loops vectorize fully only with -fno-math-errno (std::sqrt otherwise keeps
// a branch to set errno): about 4x on AdamW, 6x on LAMB.
struct StepConstants {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float bias_correction1, bias_correction2;  // 1 - beta^t, or 1 without bias correction
  float eps;
};

// Moment update for one element (shared by AdamW and LAMB, the order torch uses):
//   m <- m * beta1 + (1 - beta1) * g;  v <- v * beta2 + (1 - beta2) * g * g
inline void update_moments(float& m, float& v, float g, const StepConstants& c) {
  m = m * c.beta1 + c.one_minus_beta1 * g;
  v = v * c.beta2 + c.one_minus_beta2 * g * g;
}

// u = m_hat / (sqrt(v_hat) + eps) + wd * w. Phase 1 (norms) and phase 2 (apply) both call this
// with unchanged m, v, w, so the direction applied is the one whose norm was taken.
inline float lamb_direction(float m, float v, float w, float decay, const StepConstants& c) {
  return (m / c.bias_correction1) / (std::sqrt(v / c.bias_correction2) + c.eps) + decay * w;
}

}  // namespace

OptimizerKind parse_optimizer_kind(std::string_view text) {
  if (text == "adamw") return OptimizerKind::kAdamW;
  if (text == "lamb") return OptimizerKind::kLamb;
  throw InvalidArgument(str_cat("unknown optimizer \"", text, "\" (expected adamw or lamb)"));
}

std::string_view optimizer_kind_name(OptimizerKind kind) {
  return kind == OptimizerKind::kAdamW ? "adamw" : "lamb";
}

Optimizer::Optimizer(const ParameterTable& table, const OptimizerOptions& options)
    : table_(table), options_(options) {
  check(options.beta1 >= 0.0 && options.beta1 < 1.0, "optimizer beta1 must be in [0, 1), got ", options.beta1);
  check(options.beta2 >= 0.0 && options.beta2 < 1.0, "optimizer beta2 must be in [0, 1), got ", options.beta2);
  check(std::isfinite(options.eps) && options.eps >= 0.0, "optimizer eps must be finite and >= 0, got ",
        options.eps);
  check(std::isfinite(options.weight_decay) && options.weight_decay >= 0.0,
        "optimizer weight_decay must be finite and >= 0, got ", options.weight_decay);
  exp_avg_ = zero_page_arena(table.total_elements());
  exp_avg_sq_ = zero_page_arena(table.total_elements());
}

void Optimizer::step(Tensor params, const Tensor& grads, double learning_rate, float grad_scale) {
  check_learning_rate(learning_rate);  // before begin_step counts the step and moves the moments
  const int64_t end = table_.total_elements();
  const std::vector<double> norm_sums = begin_step(params, grads, 0, end, grad_scale);
  finish_step(std::move(params), grads, learning_rate, norm_sums, 0, end);
}

void Optimizer::release_moments_outside(int64_t begin, int64_t end) {
  const int64_t total = table_.total_elements();
  check(0 <= begin && begin <= end && end <= total, "optimizer shard [", begin, ", ", end,
        ") is not inside the parameter arena [0, ", total, ")");
  for (float* arena : {exp_avg_data(), exp_avg_sq_data()}) {
    release_pages(arena, 0, begin);
    release_pages(arena, end, total);
  }
}

void Optimizer::check_step_arguments(const Tensor& params, const Tensor& grads, int64_t begin, int64_t end) const {
  params.expect({table_.total_elements()}, DType::kF32, "optimizer parameter arena");
  grads.expect({table_.total_elements()}, DType::kF32, "optimizer gradient arena");
  check(0 <= begin && begin <= end && end <= table_.total_elements(), "optimizer range [", begin, ", ", end,
        ") is not inside the parameter arena [0, ", table_.total_elements(), ")");
}

void Optimizer::open_step(float grad_scale) {
  check(std::isfinite(grad_scale) && grad_scale > 0.0f, "optimizer gradient scale must be finite and > 0, got ",
        grad_scale);
  ++step_;
  step_open_ = true;
  grad_scale_ = grad_scale;
}

OptimizerState Optimizer::get_state() const {
  OptimizerState state;
  state.algorithm = std::string(optimizer_kind_name(kind()));
  state.step = step_;
  state.hyperparameters = {{"beta1", options_.beta1},
                           {"beta2", options_.beta2},
                           {"eps", options_.eps},
                           {"weight_decay", options_.weight_decay}};
  if (kind() == OptimizerKind::kLamb) {
    state.hyperparameters["bias_correction"] = options_.lamb_bias_correction ? 1.0 : 0.0;
    state.hyperparameters["exclude_from_adaptation"] = options_.lamb_exclude_from_adaptation ? 1.0 : 0.0;
  }
  for (const ParameterEntry& entry : table_.entries()) {
    state.tensors.emplace_back(entry.name + kExpAvgSuffix, table_.view(exp_avg_, entry.name));
    state.tensors.emplace_back(entry.name + kExpAvgSqSuffix, table_.view(exp_avg_sq_, entry.name));
  }
  return state;
}

void Optimizer::set_state(const OptimizerState& state) {
  check(state.algorithm == optimizer_kind_name(kind()), "optimizer state is for \"", state.algorithm,
        "\", this optimizer is ", optimizer_kind_name(kind()));
  check(state.step >= 0, "optimizer state has a negative step count ", state.step);
  // Validate everything before copying anything, so a bad state leaves this optimizer untouched.
  std::unordered_map<std::string, const Tensor*> found;
  for (const auto& [name, tensor] : state.tensors) {
    std::string parameter;
    for (const char* suffix : {kExpAvgSqSuffix, kExpAvgSuffix}) {
      const size_t length = std::strlen(suffix);
      if (name.size() > length && name.compare(name.size() - length, length, suffix) == 0) {
        parameter = name.substr(0, name.size() - length);
        break;
      }
    }
    check(!parameter.empty() && table_.contains(parameter), "optimizer state tensor \"", name,
          "\" does not belong to any parameter of this model");
    check(found.emplace(name, &tensor).second, "optimizer state tensor \"", name, "\" appears twice");
    tensor.expect(table_.entry(parameter).shape, DType::kF32, str_cat("optimizer state tensor \"", name, "\""));
  }
  for (const ParameterEntry& entry : table_.entries()) {
    for (const char* suffix : {kExpAvgSuffix, kExpAvgSqSuffix}) {
      check(found.count(entry.name + suffix) == 1, "optimizer state lacks tensor \"", entry.name, suffix, "\"");
    }
  }
  for (const ParameterEntry& entry : table_.entries()) {
    const size_t bytes = static_cast<size_t>(shape_numel(entry.shape)) * sizeof(float);
    std::memcpy(mutable_floats(exp_avg_) + entry.offset, found.at(entry.name + kExpAvgSuffix)->raw(), bytes);
    std::memcpy(mutable_floats(exp_avg_sq_) + entry.offset, found.at(entry.name + kExpAvgSqSuffix)->raw(), bytes);
  }
  step_ = state.step;
  step_open_ = false;
}

// ---------------------------------------------------------------------------------------------
// AdamW

AdamW::AdamW(const ParameterTable& table, const OptimizerOptions& options) : Optimizer(table, options) {}

std::vector<double> AdamW::begin_step(const Tensor& params, const Tensor& grads, int64_t begin, int64_t end,
                                      float grad_scale) {
  check_step_arguments(params, grads, begin, end);
  check(!step_open_, "AdamW begin_step called twice without finish_step (step ", step_, ")");
  open_step(grad_scale);
  return {};
}

void AdamW::finish_step(Tensor params, const Tensor& grads, double learning_rate,
                        const std::vector<double>& norm_sums, int64_t begin, int64_t end) {
  check_step_arguments(params, grads, begin, end);
  check(step_open_, "AdamW finish_step called without begin_step");
  check_learning_rate(learning_rate);
  step_open_ = false;
  // Scalars as torch forms them: in double, then rounded to F32 where they meet the tensors.
  const double t = static_cast<double>(step_);
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(options_.beta2, t);
  const StepConstants c{static_cast<float>(options_.beta1), static_cast<float>(1.0 - options_.beta1),
                        static_cast<float>(options_.beta2), static_cast<float>(1.0 - options_.beta2),
                        1.0f, 1.0f, static_cast<float>(options_.eps)};
  const float grad_scale = grad_scale_;
  const float step_size = static_cast<float>(learning_rate / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float decayed = static_cast<float>(1.0 - learning_rate * options_.weight_decay);

  float* w = params.data<float>();               // (total_elements)
  const float* g = grads.data<float>();          // (total_elements)
  float* m = mutable_floats(exp_avg_);           // (total_elements)
  float* v = mutable_floats(exp_avg_sq_);        // (total_elements)
  const std::vector<ArenaPiece> pieces = arena_pieces(table_, begin, end);
  const std::vector<ParameterEntry>& entries = table_.entries();
  kernels::parallel_chunks(static_cast<int64_t>(pieces.size()), 1, [&, w, g, m, v, grad_scale](int64_t first,
                                                                                             int64_t last) {
    const StepConstants k = c;  // a local copy: read through the captured reference, GCC's simd loop gathers
    for (int64_t p = first; p < last; ++p) {
      const ArenaPiece& piece = pieces[p];
      // Local pointers and bounds: through the captured ones GCC's simd loop gathers.
      const int64_t n = piece.end - piece.begin;
      float* wp = w + piece.begin;
      const float* gp = g + piece.begin;
      float* mp = m + piece.begin;
      float* vp = v + piece.begin;
      // torch multiplies the no-decay group by 1 - lr * 0 = 1 exactly: skipping it is identical.
      const float decay = entries[piece.entry].weight_decay ? decayed : 1.0f;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        wp[i] *= decay;
        update_moments(mp[i], vp[i], gp[i] * grad_scale, k);
        const float denominator = std::sqrt(vp[i]) / bias_correction2_sqrt + k.eps;
        wp[i] += -step_size * (mp[i] / denominator);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// LAMB

Lamb::Lamb(const ParameterTable& table, const OptimizerOptions& options) : Optimizer(table, options) {}

namespace {

StepConstants lamb_constants(const OptimizerOptions& options, int64_t step) {
  const double t = static_cast<double>(step);
  const bool correct = options.lamb_bias_correction;
  return StepConstants{static_cast<float>(options.beta1),
                       static_cast<float>(1.0 - options.beta1),
                       static_cast<float>(options.beta2),
                       static_cast<float>(1.0 - options.beta2),
                       correct ? static_cast<float>(1.0 - std::pow(options.beta1, t)) : 1.0f,
                       correct ? static_cast<float>(1.0 - std::pow(options.beta2, t)) : 1.0f,
                       static_cast<float>(options.eps)};
}

}  // namespace

std::vector<double> Lamb::begin_step(const Tensor& params, const Tensor& grads, int64_t begin, int64_t end,
                                     float grad_scale) {
  check_step_arguments(params, grads, begin, end);
  check(!step_open_, "LAMB begin_step called twice without finish_step (step ", step_, ")");
  open_step(grad_scale);
  const StepConstants c = lamb_constants(options_, step_);
  const float weight_decay = static_cast<float>(options_.weight_decay);

  const float* w = params.data<float>();  // (total_elements)
  const float* g = grads.data<float>();   // (total_elements)
  float* m = mutable_floats(exp_avg_);    // (total_elements)
  float* v = mutable_floats(exp_avg_sq_); // (total_elements)
  const std::vector<ArenaPiece> pieces = arena_pieces(table_, begin, end);
  const std::vector<ParameterEntry>& entries = table_.entries();
  std::vector<double> piece_sums(2 * pieces.size(), 0.0);  // (pieces, 2) {sum w^2, sum u^2}
  kernels::parallel_chunks(static_cast<int64_t>(pieces.size()), 1, [&, w, g, m, v, grad_scale](int64_t first,
                                                                                             int64_t last) {
    const StepConstants k = c;  // a local copy: read through the captured reference, GCC's simd loop gathers
    for (int64_t p = first; p < last; ++p) {
      const ArenaPiece& piece = pieces[p];
      const int64_t n = piece.end - piece.begin;
      const float* wp = w + piece.begin;
      const float* gp = g + piece.begin;
      float* mp = m + piece.begin;
      float* vp = v + piece.begin;
      const float decay = entries[piece.entry].weight_decay ? weight_decay : 0.0f;
      // u for this piece (64 KiB, stays in L2), so that the element-wise loop and the double
      // sums are each a loop the compiler vectorizes.
      alignas(64) float update[kArenaPieceElements];  // (piece)
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        update_moments(mp[i], vp[i], gp[i] * grad_scale, k);
        update[i] = lamb_direction(mp[i], vp[i], wp[i], decay, k);
      }
      piece_sums[2 * p] = squared_sum(wp, n);
      piece_sums[2 * p + 1] = squared_sum(update, n);
    }
  });
  std::vector<double> norm_sums(2 * entries.size(), 0.0);  // (entries, 2), summed in piece order
  for (size_t p = 0; p < pieces.size(); ++p) {
    norm_sums[2 * pieces[p].entry] += piece_sums[2 * p];
    norm_sums[2 * pieces[p].entry + 1] += piece_sums[2 * p + 1];
  }
  return norm_sums;
}

void Lamb::finish_step(Tensor params, const Tensor& grads, double learning_rate,
                       const std::vector<double>& norm_sums, int64_t begin, int64_t end) {
  check_step_arguments(params, grads, begin, end);
  check(step_open_, "LAMB finish_step called without begin_step");
  check_learning_rate(learning_rate);
  const std::vector<ParameterEntry>& entries = table_.entries();
  check(norm_sums.size() == 2 * entries.size(), "LAMB finish_step needs ", 2 * entries.size(),
        " norm sums (2 per parameter), got ", norm_sums.size());
  step_open_ = false;

  trust_ratios_.assign(entries.size(), 1.0);
  std::vector<float> step_sizes(entries.size());  // (entries) lr * trust ratio
  for (size_t e = 0; e < entries.size(); ++e) {
    const double weight_norm = std::sqrt(norm_sums[2 * e]);
    const double update_norm = std::sqrt(norm_sums[2 * e + 1]);
    const bool adapt = entries[e].weight_decay || !options_.lamb_exclude_from_adaptation;
    if (adapt && weight_norm > 0.0 && update_norm > 0.0) trust_ratios_[e] = weight_norm / update_norm;
    step_sizes[e] = static_cast<float>(learning_rate * trust_ratios_[e]);
  }

  const StepConstants c = lamb_constants(options_, step_);
  const float weight_decay = static_cast<float>(options_.weight_decay);
  float* w = params.data<float>();              // (total_elements)
  const float* m = exp_avg_.data<float>();      // (total_elements)
  const float* v = exp_avg_sq_.data<float>();   // (total_elements)
  const std::vector<ArenaPiece> pieces = arena_pieces(table_, begin, end);
  kernels::parallel_chunks(static_cast<int64_t>(pieces.size()), 1, [&, w, m, v](int64_t first, int64_t last) {
    const StepConstants k = c;  // a local copy: read through the captured reference, GCC's simd loop gathers
    for (int64_t p = first; p < last; ++p) {
      const ArenaPiece& piece = pieces[p];
      const int64_t n = piece.end - piece.begin;
      float* wp = w + piece.begin;
      const float* mp = m + piece.begin;
      const float* vp = v + piece.begin;
      const float decay = entries[piece.entry].weight_decay ? weight_decay : 0.0f;
      const float step_size = step_sizes[piece.entry];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        wp[i] -= step_size * lamb_direction(mp[i], vp[i], wp[i], decay, k);
      }
    }
  });
}

std::unique_ptr<Optimizer> make_optimizer(OptimizerKind kind, const ParameterTable& table,
                                          const OptimizerOptions& options) {
  if (kind == OptimizerKind::kAdamW) return std::make_unique<AdamW>(table, options);
  return std::make_unique<Lamb>(table, options);
}

}  // namespace scalebert::train
