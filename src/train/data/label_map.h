// Label names <-> class ids for classification and tagging: taken from a model config's id2label
// or built from the labels of a training file, and used to resolve every label of every split.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace scalebert::train::data {

class LabelMap {
 public:
  LabelMap() = default;
  // id2label as a model config gives it (id i -> names[i]). InvalidArgument for an empty list, an
  // empty name, or a name listed twice (naming it and both ids).
  static LabelMap from_names(std::vector<std::string> names);
  // Built from the labels seen in a training file. When every label is a decimal integer the ids
  // are those integers and the map covers 0..max (names "0".."max"), so "10" sorts after "9";
  // otherwise the distinct names sorted bytewise get ids 0..n-1, as a sorted label list does in
  // the transformers examples. InvalidArgument for no labels or an empty label.
  static LabelMap build(const std::vector<std::string>& labels);

  // Id of `label`: an exact name first; otherwise a decimal integer in [0, size) is taken as the
  // id itself (so "0"/"1"/"2" files work with a config whose names are "Bearish"...). -1 when
  // neither applies.
  int32_t find(std::string_view label) const;
  // As find, but an unknown label is a FormatError "<where>: unknown label '<label>' (known: ...)".
  int32_t resolve(std::string_view label, std::string_view where) const;

  const std::string& name(int32_t id) const;  // InvalidArgument outside [0, size)
  int32_t size() const { return static_cast<int32_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }
  // "a, b, c" (the first 20) for error messages.
  std::string describe() const;

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, int32_t> ids_;
};

// Parses a non-negative decimal integer (digits only, at most 9 of them); false otherwise.
bool parse_label_index(std::string_view text, int32_t& value);

}  // namespace scalebert::train::data
