// The model repository in Triton's layout: <root>/<model>/config.pbtxt and numeric version folders
// (<root>/<model>/<version>/ holding a model folder's files, or a symlink to one). Tracks every
// model's state (LOADING, READY, UNAVAILABLE with its reason, UNLOADING) and swaps versions in and
// out atomically: a reload builds the new versions first and replaces the old ones only when all
// loaded; a failed load leaves whatever was serving in place and reports the reason.
//
// A model whose config.pbtxt sets store_roots (model_config.h) takes its versions from a
// checkpoint store instead of numeric folders: each chosen version is read with checksums
// verified (failing over to good replicas; the skipped ones are printed to stderr and kept in
// load_warnings), written out as a temporary model folder, loaded, and the folder removed. With
// store_poll_interval_ms > 0 a watcher thread polls the store's `latest` and, when it moves,
// reloads the model through load(): the new version is built first and swapped in, requests in
// flight finish on the version they hold, so none is dropped. A failed reload keeps the old
// version serving, records the reason, and is retried at the next poll. unload() stops watching.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/store/store.h"
#include "serve/served_model.h"

namespace scalebert::serve {

class ModelRepository {
 public:
  ModelRepository(std::filesystem::path root, ServeLimits limits);
  ~ModelRepository();  // stops the store watcher
  ModelRepository(const ModelRepository&) = delete;
  ModelRepository& operator=(const ModelRepository&) = delete;

  // Loads every model folder of the root (startup). Failures are recorded, never thrown.
  void load_all();
  // (Re)loads one model from its folder. Throws NotFound when the folder does not exist and the
  // load error (recorded too) when it fails.
  void load(const std::string& name);
  // Stops serving a model (and watching its store); requests in flight finish on the versions
  // they hold.
  void unload(const std::string& name);
  // Stops the store watcher, then unloads every model.
  void unload_all();

  // The version to serve: `version` when given, else the highest. NotFound for an unknown model or
  // version, Unavailable for a model that is not ready.
  std::shared_ptr<ServedModel> get(const std::string& name, std::optional<int64_t> version = std::nullopt) const;
  // Whether the model (version) is ready; false for unknown ones.
  bool ready(const std::string& name, std::optional<int64_t> version = std::nullopt) const;
  // Every model folder and loaded model: [{name, version, state, reason}] as Triton's index.
  nlohmann::json index() const;
  // Every model ready (and at least one model)?
  bool all_ready() const;
  // Every loaded version (for metrics and stats).
  std::vector<std::shared_ptr<ServedModel>> loaded() const;
  // All versions of one model (NotFound when unknown).
  std::vector<std::shared_ptr<ServedModel>> versions(const std::string& name) const;

  // Replicas skipped (failed over) by the model's last successful store load; empty for folder
  // models. NotFound when unknown.
  std::vector<std::string> load_warnings(const std::string& name) const;

  const std::filesystem::path& root() const { return root_; }

 private:
  struct Entry {
    std::string state = "UNAVAILABLE";
    std::string reason;
    std::map<int64_t, std::shared_ptr<ServedModel>> versions;
    std::vector<std::string> warnings;
  };
  // A watched store: polled every `interval` by watch_loop.
  struct Watch {
    std::unique_ptr<store::CheckpointStore> store;
    std::unique_ptr<store::StoreWatcher> watcher;
    std::chrono::milliseconds interval{0};
    std::chrono::steady_clock::time_point next;
  };

  // load() with load_mutex_ held.
  void load_locked(const std::string& name);
  // The versions of a store-backed model chosen by its policy, loaded; `latest` gets the store's
  // latest version at the time.
  std::map<int64_t, std::shared_ptr<ServedModel>> load_store_versions(const ModelConfig& config,
                                                                      const StoreSource& source,
                                                                      std::vector<std::string>& warnings,
                                                                      uint64_t& latest) const;
  void watch(const std::string& name, const StoreSource& source, uint64_t known);
  void unwatch(const std::string& name);
  void watch_loop();
  void stop_watching();

  std::filesystem::path root_;
  ServeLimits limits_;
  mutable std::mutex mutex_;
  std::mutex load_mutex_;  // one load or unload at a time (loads take seconds; reads never wait on them)
  std::map<std::string, Entry> models_;

  std::mutex watch_mutex_;  // guards the watch state below; never held while loading
  std::condition_variable watch_wakeup_;
  std::map<std::string, Watch> watches_;
  std::thread watch_thread_;
  bool watch_stop_ = false;
};

}  // namespace scalebert::serve
