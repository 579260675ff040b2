// Optimizers over the flat parameter, gradient and moment arenas of a ParameterTable: AdamW
// (exactly torch.optim.AdamW) and LAMB (You et al. 2019), behind one interface that a trainer, a
// checkpoint and a distributed (sharded) optimizer share.
//
// AdamW, per element, step t (torch.optim.AdamW, amsgrad off, in this order, in F32):
//   p <- p * (1 - lr * wd)                      (decoupled decay; wd = 0 for entries with weight_decay=false)
//   m <- beta1 * m + (1 - beta1) * g
//   v <- beta2 * v + (1 - beta2) * g^2
//   p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// so eps is added to sqrt(v_hat), as torch does (not inside the square root).
//
// LAMB: You et al. 2019 (arXiv 1904.00962 v5) Algorithm 2, which is also NVIDIA apex's FusedLAMB
// with adam_w_mode=True, grad_averaging=True and use_nvlamb=True. Per tensor (layer) l:
//   m <- beta1 * m + (1 - beta1) * g,  v <- beta2 * v + (1 - beta2) * g^2
//   m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)      (bias correction; an option, default on)
//   u = m_hat / (sqrt(v_hat) + eps) + wd * w                   (wd = 0 for excluded entries)
//   r = ||w||_2 / ||u||_2, or 1 when either norm is 0 (phi = identity in the paper's notation)
//   w <- w - lr * r * u
// Why this variant: it is the paper's algorithm (trust ratio on every layer, eps outside the
// root, bias correction as in its Algorithm 2), and it is what DESIGN.md specifies. Two
// differences from popular implementations are deliberate and documented:
//   * apex's default (use_nvlamb=False) and Google's BERT LAMB (exclude_from_layer_adaptation =
//     the weight-decay exclusions) use r = 1 for biases and LayerNorm; set
//     OptimizerOptions::lamb_exclude_from_adaptation to get that behaviour.
//   * apex's FusedLAMB also clips the global gradient norm inside the optimizer (max_grad_norm=1);
//     here clipping is a separate step (train/grad_utils.h: clip_grad_norm), so the caller chooses.
//
// Sharding: every step is begin_step() then finish_step() over an element range [begin, end) of
// the arenas. AdamW is element-wise, so any range works alone. LAMB's trust ratio needs norms of
// whole tensors: begin_step() updates the moments in its range and returns, per entry, the partial
// sums of w^2 and u^2 over that range; a distributed optimizer all-reduces (sums) these vectors
// over ranks and passes the totals to finish_step(). One process passes them straight through
// (step() does exactly that). The moment arenas are full size on every rank; a rank simply never
// touches elements outside its range.
//
// Determinism: ranges are split into fixed pieces (train/grad_utils.h: arena_pieces) and partial
// norms are added in piece order, so results do not depend on the thread count, and restoring a
// state continues bit-identically.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/parameters.h"

namespace scalebert::train {

enum class OptimizerKind { kAdamW, kLamb };

// "adamw" or "lamb"; throws InvalidArgument naming the value otherwise.
OptimizerKind parse_optimizer_kind(std::string_view text);
std::string_view optimizer_kind_name(OptimizerKind kind);

struct OptimizerOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  // torch.optim.AdamW's default; LAMB implementations (apex, the paper's BERT runs) use 1e-6.
  double eps = 1e-8;
  // Applied only to entries whose weight_decay flag is set (not biases, not LayerNorm).
  double weight_decay = 0.01;
  // LAMB only: divide m and v by (1 - beta^t). apex's bias_correction flag; default on.
  bool lamb_bias_correction = true;
  // LAMB only: trust ratio 1 for entries without weight decay (apex use_nvlamb=False, Google's
  // exclude_from_layer_adaptation); default off, the paper's algorithm.
  bool lamb_exclude_from_adaptation = false;
};

// What a checkpoint stores: named tensors by parameter name (so any world size can resume) and
// scalars. Tensors are "<parameter>.exp_avg" and "<parameter>.exp_avg_sq" (torch's state names),
// F32 with the parameter's shape, in table order.
struct OptimizerState {
  std::string algorithm;                                // "adamw" or "lamb"
  int64_t step = 0;                                     // steps taken (bias correction uses step + 1 next)
  std::map<std::string, double> hyperparameters;        // beta1, beta2, eps, weight_decay, ... for the record
  std::vector<std::pair<std::string, Tensor>> tensors;  // from get_state(): views into the live arenas
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One full step over the whole arena: begin_step, then finish_step with its own partial norms.
  // `params` is the value arena (a view: written through), `grads` the gradient arena, both
  // (total_elements) F32 with the table's layout. The step reads every gradient as
  // grads[i] * grad_scale (an F32 product, exactly what scaling the arena first would give): the
  // trainer folds clipping's coefficient (clip_coefficient in grad_utils.h) into the optimizer's
  // pass instead of a separate read-and-write pass over the whole gradient arena.
  void step(Tensor params, const Tensor& grads, double learning_rate, float grad_scale = 1.0f);

  // Phase 1 over [begin, end): counts the step, records grad_scale for the step (see step()) and,
  // for LAMB, updates the moments there and returns 2 * entries() partial sums {sum w^2, sum u^2}
  // per entry (entry i at 2i, 2i+1). AdamW returns an empty vector. Every rank calls it once per
  // step. Throws InvalidArgument unless grad_scale is finite and > 0.
  virtual std::vector<double> begin_step(const Tensor& params, const Tensor& grads, int64_t begin, int64_t end,
                                         float grad_scale) = 0;
  // Phase 2 over the same range, with the partial sums summed over all ranks.
  virtual void finish_step(Tensor params, const Tensor& grads, double learning_rate,
                           const std::vector<double>& norm_sums, int64_t begin, int64_t end) = 0;

  virtual OptimizerKind kind() const = 0;
  int64_t step_count() const { return step_; }
  const OptimizerOptions& options() const { return options_; }
  const ParameterTable& table() const { return table_; }
  // Moment arenas (total_elements) F32, the table's layout.
  const Tensor& exp_avg() const { return exp_avg_; }
  const Tensor& exp_avg_sq() const { return exp_avg_sq_; }

  // Distributed optimizer (one shard per rank): this rank updates elements [begin, end) only, so
  // it returns the moment arenas' whole pages outside that range to the system; they read as
  // zero until written again (a gather before a checkpoint, a restored state). The arenas are
  // mapped zero pages (calloc-like), so pages never written never take memory.
  void release_moments_outside(int64_t begin, int64_t end);
  // The moment arenas, writable: for collectives that assemble them from the ranks' shards.
  float* exp_avg_data() { return exp_avg_.data<float>(); }
  float* exp_avg_sq_data() { return exp_avg_sq_.data<float>(); }
  // The state as named tensors (views into the live moment arenas: copy or save before the next
  // step) and scalars.
  OptimizerState get_state() const;
  // Restores a state saved by any optimizer of this kind over a table with the same parameter
  // names and shapes. Throws InvalidArgument naming the offending value: another algorithm, a
  // negative step, a missing, unknown, non-F32 or wrongly shaped tensor. Hyperparameters are not
  // compared (a resumed run may change them on purpose); the ones in effect are this object's.
  void set_state(const OptimizerState& state);

 protected:
  Optimizer(const ParameterTable& table, const OptimizerOptions& options);
  // Validates a step's arenas and range.
  void check_step_arguments(const Tensor& params, const Tensor& grads, int64_t begin, int64_t end) const;
  // Validates and records begin_step's grad_scale.
  void open_step(float grad_scale);

  const ParameterTable& table_;
  OptimizerOptions options_;
  Tensor exp_avg_;     // (total_elements) first moment m
  Tensor exp_avg_sq_;  // (total_elements) second moment v
  int64_t step_ = 0;
  bool step_open_ = false;  // begin_step ran and finish_step has not
  float grad_scale_ = 1.0f;  // of the open step (begin_step's argument)
};

class AdamW final : public Optimizer {
 public:
  // The table must outlive the optimizer. Throws InvalidArgument for betas outside [0, 1), a
  // negative or non-finite eps or weight decay.
  AdamW(const ParameterTable& table, const OptimizerOptions& options);
  std::vector<double> begin_step(const Tensor& params, const Tensor& grads, int64_t begin, int64_t end,
                                 float grad_scale) override;
  void finish_step(Tensor params, const Tensor& grads, double learning_rate, const std::vector<double>& norm_sums,
                   int64_t begin, int64_t end) override;
  OptimizerKind kind() const override { return OptimizerKind::kAdamW; }
};

class Lamb final : public Optimizer {
 public:
  Lamb(const ParameterTable& table, const OptimizerOptions& options);
  std::vector<double> begin_step(const Tensor& params, const Tensor& grads, int64_t begin, int64_t end,
                                 float grad_scale) override;
  void finish_step(Tensor params, const Tensor& grads, double learning_rate, const std::vector<double>& norm_sums,
                   int64_t begin, int64_t end) override;
  OptimizerKind kind() const override { return OptimizerKind::kLamb; }

  // The trust ratios of the last finish_step, one per entry (1 where a norm was 0 or the entry is
  // excluded): for logging, and for the tests.
  const std::vector<double>& last_trust_ratios() const { return trust_ratios_; }

 private:
  std::vector<double> trust_ratios_;
};

std::unique_ptr<Optimizer> make_optimizer(OptimizerKind kind, const ParameterTable& table,
                                          const OptimizerOptions& options);

}  // namespace scalebert::train
