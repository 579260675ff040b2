// Model repository: folder scanning, config parsing, version selection, the state table, and
// versions from a checkpoint store with the watcher that reloads them.
#include "serve/repository.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "io/file_util.h"
#include "io/store/locator.h"
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

std::string roots_text(const StoreSource& source) {
  std::string text;
  for (const std::filesystem::path& root : source.roots) {
    if (!text.empty()) text += ',';
    text += root.string();
  }
  return text;
}

}  // namespace

ModelRepository::ModelRepository(std::filesystem::path root, ServeLimits limits)
    : root_(std::move(root)), limits_(limits) {
  check<IoError>(std::filesystem::is_directory(root_), "model repository ", root_.string(),
                 " does not exist or is not a directory");
}

ModelRepository::~ModelRepository() { stop_watching(); }

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
  std::lock_guard load_lock(load_mutex_);
  load_locked(name);
}

void ModelRepository::load_locked(const std::string& name) {
  if (!valid_model_name(name)) throw NotFound(str_cat("no model '", name, "' in the repository"));
  const std::filesystem::path folder = root_ / name;
  if (!std::filesystem::is_directory(folder)) {
    throw NotFound(str_cat("no model '", name, "' in the repository (", folder.string(), ")"));
  }
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
    const std::optional<StoreSource> source = store_source(config, folder, config_path.string());
    std::vector<int64_t> available;
    for (const auto& child : std::filesystem::directory_iterator(folder)) {
      if (!child.is_directory()) continue;  // follows symlinks
      if (const auto version = version_number(child.path().filename().string())) available.push_back(*version);
    }
    std::map<int64_t, std::shared_ptr<ServedModel>> versions;
    std::vector<std::string> warnings;
    uint64_t store_latest = 0;
    if (source) {
      check<FormatError>(available.empty(), config_path.string(), ": model '", name,
                         "' takes its versions from the checkpoint store (parameter ", kStoreRootsParameter, ") but ",
                         folder.string(), " also has ", available.size(),
                         " numeric version folders: remove them or the parameter");
      versions = load_store_versions(config, *source, warnings, store_latest);
    } else {
      const std::vector<int64_t> chosen = config.version_policy.select(available);
      check<IoError>(!chosen.empty(), "model '", name, "': no version folder matches the version policy (found ",
                     available.size(), " numeric folders)");
      for (int64_t version : chosen) {
        try {
          versions[version] = ServedModel::load(config, version, folder / std::to_string(version), limits_);
        } catch (const std::exception& error) {
          throw Error(str_cat("model '", name, "' version ", version, ": ", error.what()));
        }
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
      entry.warnings = std::move(warnings);
    }
    if (source && source->poll_interval.count() > 0) {
      watch(name, *source, store_latest);
    } else {
      unwatch(name);
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
  // Under the load lock: a watcher reload either finished before (and is undone here) or sees
  // the watch gone and skips.
  std::lock_guard load_lock(load_mutex_);
  unwatch(name);
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
  stop_watching();
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

std::vector<std::string> ModelRepository::load_warnings(const std::string& name) const {
  std::lock_guard lock(mutex_);
  const auto found = models_.find(name);
  if (found == models_.end()) throw NotFound(str_cat("unknown model '", name, "'"));
  return found->second.warnings;
}

// ---------------------------------------------------------------------------------------------
// Versions from a checkpoint store

std::map<int64_t, std::shared_ptr<ServedModel>> ModelRepository::load_store_versions(
    const ModelConfig& config, const StoreSource& source, std::vector<std::string>& warnings, uint64_t& latest) const {
  const std::string roots = roots_text(source);
  const std::string& name = config.name;
  auto on_warning = [&](const std::string& warning) {
    warnings.push_back(warning);
    std::fprintf(stderr, "serve: model '%s': checkpoint store: %s\n", name.c_str(), warning.c_str());
  };
  store::StoreOptions options;
  options.on_warning = on_warning;
  const store::CheckpointStore checkpoint_store(source.roots, options);
  const std::optional<uint64_t> current = checkpoint_store.latest();
  check<IoError>(current.has_value(), "model '", name, "': checkpoint store ", roots, " has no committed version");
  // The versions a folder repository would list: every committed one, up to `latest` (a newer
  // committed version whose pointer was not written yet is not published).
  std::vector<int64_t> available;
  for (const store::VersionInfo& info : checkpoint_store.versions()) {
    if (info.committed && info.version <= *current) available.push_back(static_cast<int64_t>(info.version));
  }
  const std::vector<int64_t> chosen = config.version_policy.select(available);
  check<IoError>(!chosen.empty(), "model '", name, "': no version of checkpoint store ", roots,
                 " matches the version policy (", available.size(), " committed versions up to ", *current, ")");
  std::map<int64_t, std::shared_ptr<ServedModel>> versions;
  for (int64_t version : chosen) {
    try {
      const store::MaterializedModel folder =
          store::materialize_version(source.roots, static_cast<uint64_t>(version), "serve-" + name, on_warning);
      versions[version] = ServedModel::load(config, version, folder.directory(), limits_);
    } catch (const std::exception& error) {
      throw Error(str_cat("model '", name, "' version ", version, " of checkpoint store ", roots, ": ", error.what()));
    }
  }
  latest = *current;
  return versions;
}

void ModelRepository::watch(const std::string& name, const StoreSource& source, uint64_t known) {
  std::lock_guard lock(watch_mutex_);
  if (watch_stop_) return;  // shutting down
  Watch& entry = watches_[name];
  entry.store = std::make_unique<store::CheckpointStore>(source.roots);
  entry.watcher = std::make_unique<store::StoreWatcher>(*entry.store, known);
  entry.interval = source.poll_interval;
  entry.next = std::chrono::steady_clock::now() + entry.interval;
  if (!watch_thread_.joinable()) watch_thread_ = std::thread([this] { watch_loop(); });
  watch_wakeup_.notify_all();
}

void ModelRepository::unwatch(const std::string& name) {
  std::lock_guard lock(watch_mutex_);
  watches_.erase(name);
}

void ModelRepository::watch_loop() {
  std::unique_lock lock(watch_mutex_);
  while (!watch_stop_) {
    const Clock::time_point now = Clock::now();
    Clock::time_point wake = now + std::chrono::hours(1);
    std::vector<std::pair<std::string, uint64_t>> moved;  // (model, the version it served)
    for (auto& [name, entry] : watches_) {
      if (entry.next <= now) {
        entry.next = now + entry.interval;
        const uint64_t served = entry.watcher->known_version();
        try {
          if (entry.watcher->poll()) moved.emplace_back(name, served);
        } catch (const std::exception& error) {
          std::fprintf(stderr, "serve: model '%s': cannot poll its checkpoint store: %s\n", name.c_str(), error.what());
        }
      }
      wake = std::min(wake, entry.next);
    }
    if (moved.empty()) {
      watch_wakeup_.wait_until(lock, wake);
      continue;
    }
    // Reload outside the lock: load() re-registers the watch (with the store's latest version).
    lock.unlock();
    for (const auto& [name, served] : moved) {
      std::lock_guard load_lock(load_mutex_);
      {
        std::lock_guard check_lock(watch_mutex_);
        if (watch_stop_ || watches_.count(name) == 0) continue;  // unloaded or stopping meanwhile
      }
      try {
        load_locked(name);
      } catch (const std::exception& error) {
        // The previous version keeps serving (the reason is in the index); poll again from it.
        std::fprintf(stderr, "serve: model '%s': reload from its checkpoint store failed: %s\n", name.c_str(),
                     error.what());
        std::lock_guard retry_lock(watch_mutex_);
        const auto found = watches_.find(name);
        if (found != watches_.end()) {
          found->second.watcher = std::make_unique<store::StoreWatcher>(*found->second.store, served);
        }
      }
    }
    lock.lock();
  }
}

void ModelRepository::stop_watching() {
  {
    std::lock_guard lock(watch_mutex_);
    watch_stop_ = true;
    watches_.clear();
  }
  watch_wakeup_.notify_all();
  if (watch_thread_.joinable()) watch_thread_.join();
  std::lock_guard lock(watch_mutex_);
  watch_stop_ = false;  // a later load() may watch again
}

}  // namespace scalebert::serve
