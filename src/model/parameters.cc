// Parameter table over flat, 64-byte-aligned F32 arenas.
#include "model/parameters.h"

#include "core/arena.h"
#include "core/error.h"

namespace scalebert {

namespace {
constexpr int64_t kFloatsPerAlignment = static_cast<int64_t>(kAlignment / sizeof(float));
}

void ParameterTable::add(const std::string& name, Shape shape, bool weight_decay) {
  check(!values_.defined(), "parameter \"", name, "\" added after the arena was allocated");
  check(index_.count(name) == 0, "parameter \"", name, "\" registered twice");
  int64_t count = shape_numel(shape);
  index_.emplace(name, entries_.size());
  entries_.push_back(ParameterEntry{name, std::move(shape), total_elements_, weight_decay});
  total_elements_ += (count + kFloatsPerAlignment - 1) / kFloatsPerAlignment * kFloatsPerAlignment;
}

void ParameterTable::allocate() {
  check(!values_.defined(), "parameter arena allocated twice");
  values_ = make_arena();
}

const ParameterEntry& ParameterTable::entry(const std::string& name) const {
  auto found = index_.find(name);
  check(found != index_.end(), "unknown parameter \"", name, "\"");
  return entries_[found->second];
}

int64_t ParameterTable::parameter_count() const {
  int64_t count = 0;
  for (const ParameterEntry& parameter : entries_) count += shape_numel(parameter.shape);
  return count;
}

Tensor ParameterTable::get(const std::string& name) const {
  check(values_.defined(), "parameter \"", name, "\" read before the arena was allocated");
  return view(values_, name);
}

Tensor ParameterTable::make_arena() const { return Tensor::zeros({total_elements_}, DType::kF32); }

Tensor ParameterTable::view(const Tensor& arena, const std::string& name) const {
  arena.expect({total_elements_}, DType::kF32, "parameter arena");
  const ParameterEntry& parameter = entry(name);
  float* base = const_cast<float*>(arena.data<float>()) + parameter.offset;
  return Tensor::view(base, parameter.shape, DType::kF32, arena.owner());
}

}  // namespace scalebert
