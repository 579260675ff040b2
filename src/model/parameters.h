// The parameter table: every parameter of a model is a named, shaped slice of one flat F32 arena.
// Gradients and optimizer state use the same table over arenas of the same size, so an optimizer
// step, a gradient all-reduce or a shard of state is one loop over contiguous memory (DESIGN.md).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace scalebert {

struct ParameterEntry {
  std::string name;   // Hugging Face name without the "bert." prefix, e.g. "encoder.layer.0.output.dense.weight"
  Shape shape;
  int64_t offset;     // in elements from the start of the arena; a multiple of 16 (64 bytes)
  bool weight_decay;  // false for biases and LayerNorm parameters
};

class ParameterTable {
 public:
  // Registers a parameter; names are unique. Offsets are assigned in registration order.
  void add(const std::string& name, Shape shape, bool weight_decay);

  // Allocates (zeroed) the flat arena of values; call once after every add().
  void allocate();

  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  const ParameterEntry& entry(const std::string& name) const;
  const std::vector<ParameterEntry>& entries() const { return entries_; }
  // Elements in the arena including alignment padding between parameters.
  int64_t total_elements() const { return total_elements_; }
  // Sum of the parameters' own element counts.
  int64_t parameter_count() const;

  // A view of one parameter in the value arena; throws InvalidArgument naming unknown parameters.
  Tensor get(const std::string& name) const;
  // The whole value arena (total_elements) as one F32 vector.
  const Tensor& values() const { return values_; }
  // A new zeroed arena with this table's layout (gradients, moments), and a view into it.
  Tensor make_arena() const;
  Tensor view(const Tensor& arena, const std::string& name) const;

 private:
  std::vector<ParameterEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_elements_ = 0;
  Tensor values_;  // (total_elements) F32
};

}  // namespace scalebert
