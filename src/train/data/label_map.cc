// Label map construction and lookup.
#include "train/data/label_map.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace scalebert::train::data {

bool parse_label_index(std::string_view text, int32_t& value) {
  if (text.empty() || text.size() > 9) return false;
  int32_t result = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    result = result * 10 + (c - '0');
  }
  value = result;
  return true;
}

LabelMap LabelMap::from_names(std::vector<std::string> names) {
  check(!names.empty(), "label map: no labels");
  LabelMap map;
  for (size_t i = 0; i < names.size(); ++i) {
    check(!names[i].empty(), "label map: label ", i, " has an empty name");
    const auto [it, inserted] = map.ids_.emplace(names[i], static_cast<int32_t>(i));
    check(inserted, "label map: label '", names[i], "' is listed twice (ids ", it->second, " and ", i, ")");
  }
  map.names_ = std::move(names);
  return map;
}

LabelMap LabelMap::build(const std::vector<std::string>& labels) {
  check(!labels.empty(), "label map: no labels to build it from");
  bool all_integers = true;
  int32_t max_index = -1;
  for (const std::string& label : labels) {
    check(!label.empty(), "label map: empty label");
    int32_t index = 0;
    if (parse_label_index(label, index)) {
      max_index = std::max(max_index, index);
    } else {
      all_integers = false;
    }
  }
  std::vector<std::string> names;
  if (all_integers) {
    // Integer labels are ids already; a class absent from the file still owns its id.
    check(max_index < 1000000, "label map: integer label ", max_index, " is too large for a class id");
    for (int32_t i = 0; i <= max_index; ++i) names.push_back(std::to_string(i));
    // "01" and "1" both parse as 1; only canonical spellings become names, others resolve by value.
  } else {
    const std::set<std::string> distinct(labels.begin(), labels.end());
    names.assign(distinct.begin(), distinct.end());
  }
  return from_names(std::move(names));
}

int32_t LabelMap::find(std::string_view label) const {
  const auto it = ids_.find(std::string(label));
  if (it != ids_.end()) return it->second;
  int32_t index = 0;
  if (parse_label_index(label, index) && index < size()) return index;
  return -1;
}

int32_t LabelMap::resolve(std::string_view label, std::string_view where) const {
  const int32_t id = find(label);
  if (id < 0) throw FormatError(str_cat(where, ": unknown label '", label, "' (known: ", describe(), ")"));
  return id;
}

const std::string& LabelMap::name(int32_t id) const {
  check(id >= 0 && id < size(), "label id ", id, " is outside [0, ", size(), ")");
  return names_[static_cast<size_t>(id)];
}

std::string LabelMap::describe() const {
  std::string out;
  for (size_t i = 0; i < names_.size() && i < 20; ++i) {
    if (i > 0) out += ", ";
    out += names_[i];
  }
  if (names_.size() > 20) out += str_cat(", ... (", names_.size(), " in all)");
  return out;
}

}  // namespace scalebert::train::data
