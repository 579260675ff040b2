// Gradient utilities over the flat gradient arena of a ParameterTable: the global L2 norm, clipping
// by that norm (torch.nn.utils.clip_grad_norm_), scaling for gradient accumulation, zeroing, and the
// NaN/Inf check that names the parameter. Also the fixed partition of an arena range into pieces
// that the optimizers and these utilities share, so that every reduction sums in one order whatever
// the thread count (bit-identical results on 1 or 64 threads).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "model/parameters.h"

namespace scalebert::train {

// A contiguous run of one parameter's elements, [begin, end) in arena elements. Pieces never
// cover the alignment padding between parameters (its contents are never read or written).
struct ArenaPiece {
  int64_t begin;
  int64_t end;
  size_t entry;  // index into ParameterTable::entries()
};

// Elements per piece: 64 KiB of floats, small enough to balance 2..64 threads on BERT-base's
// ~200 tensors and large enough that the loop overhead is invisible.
inline constexpr int64_t kArenaPieceElements = 16384;

// The parameters' elements inside [begin, end), in arena order, split into pieces of at most
// kArenaPieceElements. The split depends only on the table and the range. Throws InvalidArgument
// when the range is not inside [0, total_elements].
std::vector<ArenaPiece> arena_pieces(const ParameterTable& table, int64_t begin, int64_t end);

// sum x[i]^2 in double over 16 interleaved partial sums (lane j takes i = j mod 16) added pairwise
// at the end: the compiler vectorizes it without -ffast-math, and the order is fixed.
double squared_sum(const float* x, int64_t n);

// Sum of squares, accumulated in double, of the parameter elements of `arena` in [begin, end)
// (a distributed optimizer sums these over ranks, then takes the square root).
double sum_of_squares(const ParameterTable& table, const Tensor& arena, int64_t begin, int64_t end);

// ||g||_2 over every parameter of the arena (padding excluded), accumulated in double.
double global_norm(const ParameterTable& table, const Tensor& arena);

// A value that is NaN or +-Inf, located by parameter.
struct NonFiniteValue {
  std::string parameter;  // the entry's name
  int64_t index;          // flat index inside that parameter
  float value;
};

// Thrown when gradients (or parameters) hold NaN or Inf; the message names the parameter, the
// element and the value, and parameter() gives the name to callers that react (a trainer keeps
// its last good checkpoint).
class NonFiniteError : public Error {
 public:
  NonFiniteError(const std::string& message, std::string parameter)
      : Error(message), parameter_(std::move(parameter)) {}
  const std::string& parameter() const { return parameter_; }

 private:
  std::string parameter_;
};

// The first non-finite element in table order (lowest arena offset), or nullopt when all are
// finite.
std::optional<NonFiniteValue> find_non_finite(const ParameterTable& table, const Tensor& arena);

// Throws NonFiniteError("<what>: parameter \"name\" element i of shape [..] is nan") at the first
// non-finite element.
void check_finite(const ParameterTable& table, const Tensor& arena, const std::string& what);

struct ClipResult {
  double total_norm;  // the global norm before clipping (what torch's clip_grad_norm_ returns)
  double scale;       // the factor applied to every gradient; 1 when no clipping happened
};

// torch.nn.utils.clip_grad_norm_(parameters, max_norm) with norm_type 2: total = ||g||_2 over
// all parameters; coef = max_norm / (total + 1e-6); when coef < 1 every gradient is multiplied by
// coef (torch multiplies by min(coef, 1), which is the same). The 1e-6 keeps the division finite
// for zero gradients and makes the clipped norm land just under max_norm. Unlike torch's default
// (error_if_nonfinite=False, which silently spreads NaN into every gradient), a non-finite total
// throws NonFiniteError naming the first offending parameter: a training step must never apply
// it. Throws InvalidArgument when max_norm is not positive and finite.
ClipResult clip_grad_norm(const ParameterTable& table, Tensor grads, double max_norm);

// clip_grad_norm without the scaling: the norm and the coefficient (same checks, same errors),
// for callers that fold the coefficient into their next pass over the arena (Optimizer::step's
// grad_scale) instead of a separate read-and-write pass.
ClipResult clip_coefficient(const ParameterTable& table, const Tensor& grads, double max_norm);
// The coefficient of a global norm known already (a distributed optimizer sums its shards' squares
// over the ranks): min(1, max_norm / (total_norm + 1e-6)), as torch's clip_grad_norm_.
ClipResult clip_coefficient_of_norm(double total_norm, double max_norm);

// Multiplies every element of the arena by `factor` (one flat loop; padding stays zero).
void scale_arena(Tensor arena, float factor);

// Gradient accumulation: backward passes add into the gradient arena (STYLE.md), so after
// `micro_batches` passes whose losses are each a mean over their own micro-batch, the arena holds
// the sum of the micro-batch means; multiplying by 1/micro_batches gives the gradient of the mean
// loss over the whole (equal-sized) batch, as transformers' Trainer does by dividing each loss by
// gradient_accumulation_steps. Throws InvalidArgument when micro_batches < 1.
void average_accumulated_gradients(Tensor grads, int64_t micro_batches);

// Sets the whole arena to zero (before the first micro-batch of a step).
void zero_arena(Tensor arena);

}  // namespace scalebert::train
