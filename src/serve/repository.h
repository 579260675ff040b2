// The model repository in Triton's layout: <root>/<model>/config.pbtxt and numeric version folders
// (<root>/<model>/<version>/ holding a model folder's files, or a symlink to one). Tracks every
// model's state (LOADING, READY, UNAVAILABLE with its reason, UNLOADING) and swaps versions in and
// out atomically: a reload builds the new versions first and replaces the old ones only when all
// loaded; a failed load leaves whatever was serving in place and reports the reason.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/served_model.h"

namespace scalebert::serve {

class ModelRepository {
 public:
  ModelRepository(std::filesystem::path root, ServeLimits limits);

  // Loads every model folder of the root (startup). Failures are recorded, never thrown.
  void load_all();
  // (Re)loads one model from its folder. Throws NotFound when the folder does not exist and the
  // load error (recorded too) when it fails.
  void load(const std::string& name);
  // Stops serving a model; requests in flight finish on the versions they hold.
  void unload(const std::string& name);
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

  const std::filesystem::path& root() const { return root_; }

 private:
  struct Entry {
    std::string state = "UNAVAILABLE";
    std::string reason;
    std::map<int64_t, std::shared_ptr<ServedModel>> versions;
  };

  std::filesystem::path root_;
  ServeLimits limits_;
  mutable std::mutex mutex_;
  std::mutex load_mutex_;  // one load or unload at a time (loads take seconds; reads never wait on them)
  std::map<std::string, Entry> models_;
};

}  // namespace scalebert::serve
