// Model repository: folder scanning, config parsing, version selection, and the state table.
#include "serve/repository.h"

#include <algorithm>

#include "core/error.h"
#include "io/file_util.h"
#include "serve/status.h"

namespace scalebert::serve {

namespace {

bool valid_model_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

std::optional<int64_t> version_number(const std::string& folder) {
  if (folder.empty() || folder.size() > 18) return std::nullopt;
  if (!std::all_of(folder.begin(), folder.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  return std::stoll(folder);
}

}  // namespace

ModelRepository::ModelRepository(std::filesystem::path root, ServeLimits limits)
    : root_(std::move(root)), limits_(limits) {
  check<IoError>(std::filesystem::is_directory(root_), "model repository ", root_.string(),
                 " does not exist or is not a directory");
}

void ModelRepository::load_all() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(root_)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && valid_model_name(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  {
    std::lock_guard lock(mutex_);
    for (const std::string& name : names) models_[name].state = "LOADING";
  }
  for (const std::string& name : names) {
    try {
      load(name);
    } catch (const std::exception&) {
      // Recorded in the entry's reason; the other models keep loading.
    }
  }
}

void ModelRepository::load(const std::string& name) {
  if (!valid_model_name(name)) throw NotFound(str_cat("no model '", name, "' in the repository"));
  const std::filesystem::path folder = root_ / name;
  if (!std::filesystem::is_directory(folder)) {
    throw NotFound(str_cat("no model '", name, "' in the repository (", folder.string(), ")"));
  }
  std::lock_guard load_lock(load_mutex_);
  {
    std::lock_guard lock(mutex_);
    Entry& entry = models_[name];
    if (entry.versions.empty()) entry.state = "LOADING";
  }
  try {
    const std::filesystem::path config_path = folder / "config.pbtxt";
    check<IoError>(std::filesystem::exists(config_path), "model '", name, "': no config.pbtxt in ", folder.string());
    ModelConfig config = parse_model_config(read_file(config_path), config_path.string());
    if (config.name.empty()) config.name = name;
    check<FormatError>(config.name == name, config_path.string(), ": name \"", config.name,
                       "\" differs from its folder name \"", name, "\"");
    std::vector<int64_t> available;
    for (const auto& child : std::filesystem::directory_iterator(folder)) {
      if (!child.is_directory()) continue;  // follows symlinks
      if (const auto version = version_number(child.path().filename().string())) available.push_back(*version);
    }
    const std::vector<int64_t> chosen = config.version_policy.select(available);
    check<IoError>(!chosen.empty(), "model '", name, "': no version folder matches the version policy (found ",
                   available.size(), " numeric folders)");
    std::map<int64_t, std::shared_ptr<ServedModel>> versions;
    for (int64_t version : chosen) {
      try {
        versions[version] = ServedModel::load(config, version, folder / std::to_string(version), limits_);
      } catch (const std::exception& error) {
        throw Error(str_cat("model '", name, "' version ", version, ": ", error.what()));
      }
    }
    std::map<int64_t, std::shared_ptr<ServedModel>> old;
    {
      std::lock_guard lock(mutex_);
      Entry& entry = models_[name];
      old.swap(entry.versions);
      entry.versions = std::move(versions);
      entry.state = "READY";
      entry.reason.clear();
    }
    // `old` is released here, outside the lock: each old version drains once its last request ends.
  } catch (const std::exception& error) {
    std::lock_guard lock(mutex_);
    Entry& entry = models_[name];
    entry.reason = error.what();
    // A failed reload keeps the versions that were serving.
    entry.state = entry.versions.empty() ? "UNAVAILABLE" : "READY";
    throw;
  }
}

void ModelRepository::unload(const std::string& name) {
  std::lock_guard load_lock(load_mutex_);
  std::map<int64_t, std::shared_ptr<ServedModel>> old;
  {
    std::lock_guard lock(mutex_);
    const auto found = models_.find(name);
    if (found == models_.end()) throw NotFound(str_cat("no model '", name, "' in the repository"));
    old.swap(found->second.versions);
    found->second.state = "UNAVAILABLE";
    found->second.reason = "unloaded";
  }
}

void ModelRepository::unload_all() {
  std::vector<std::string> names;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [name, entry] : models_) names.push_back(name);
  }
  for (const std::string& name : names) unload(name);
}

std::shared_ptr<ServedModel> ModelRepository::get(const std::string& name, std::optional<int64_t> version) const {
  std::lock_guard lock(mutex_);
  const auto found = models_.find(name);
  if (found == models_.end()) throw NotFound(str_cat("unknown model '", name, "'"));
  const Entry& entry = found->second;
  if (entry.versions.empty()) {
    throw Unavailable(str_cat("model '", name, "' is not ready (", entry.state,
                              entry.reason.empty() ? "" : ": " + entry.reason, ")"));
  }
  if (!version) return entry.versions.rbegin()->second;
  const auto chosen = entry.versions.find(*version);
  if (chosen == entry.versions.end()) throw NotFound(str_cat("model '", name, "' has no version ", *version));
  return chosen->second;
}

bool ModelRepository::ready(const std::string& name, std::optional<int64_t> version) const {
  std::lock_guard lock(mutex_);
  const auto found = models_.find(name);
  if (found == models_.end() || found->second.versions.empty()) return false;
  return !version || found->second.versions.count(*version) > 0;
}

nlohmann::json ModelRepository::index() const {
  // Folders not loaded yet are listed too, as Triton's index does.
  std::map<std::string, bool> folders;
  if (std::filesystem::is_directory(root_)) {
    for (const auto& entry : std::filesystem::directory_iterator(root_)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_directory() && valid_model_name(name)) folders[name] = true;
    }
  }
  std::lock_guard lock(mutex_);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [name, present] : folders) {
    const auto found = models_.find(name);
    if (found == models_.end()) {
      list.push_back({{"name", name}});
      continue;
    }
    const Entry& entry = found->second;
    if (entry.versions.empty()) {
      nlohmann::json item = {{"name", name}, {"state", entry.state}};
      if (!entry.reason.empty()) item["reason"] = entry.reason;
      list.push_back(item);
    }
    for (const auto& [version, model] : entry.versions) {
      nlohmann::json item = {{"name", name}, {"version", std::to_string(version)}, {"state", entry.state}};
      if (!entry.reason.empty()) item["reason"] = entry.reason;
      list.push_back(item);
    }
  }
  return list;
}

bool ModelRepository::all_ready() const {
  std::lock_guard lock(mutex_);
  if (models_.empty()) return false;
  for (const auto& [name, entry] : models_) {
    if (entry.versions.empty() && entry.reason != "unloaded") return false;
  }
  return true;
}

std::vector<std::shared_ptr<ServedModel>> ModelRepository::loaded() const {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<ServedModel>> all;
  for (const auto& [name, entry] : models_) {
    for (const auto& [version, model] : entry.versions) all.push_back(model);
  }
  return all;
}

std::vector<std::shared_ptr<ServedModel>> ModelRepository::versions(const std::string& name) const {
  std::lock_guard lock(mutex_);
  const auto found = models_.find(name);
  if (found == models_.end()) throw NotFound(str_cat("unknown model '", name, "'"));
  std::vector<std::shared_ptr<ServedModel>> all;
  for (const auto& [version, model] : found->second.versions) all.push_back(model);
  return all;
}

}  // namespace scalebert::serve
