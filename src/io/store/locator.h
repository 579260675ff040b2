// Store locators: one command-line string that names a model in a checkpoint store instead of a
// model folder, "store:/d0/ckpt,/d1/ckpt,/d2/ckpt" (the latest version) or "...@7" (version 7),
// and the way to open one as an ordinary model folder for code that reads folders (a temporary
// Hugging Face directory materialized from the verified, failed-over version, removed afterwards).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/store/store.h"

namespace scalebert::store {

inline constexpr std::string_view kLocatorPrefix = "store:";

struct StoreLocator {
  std::vector<std::filesystem::path> roots;  // in the store's order
  uint64_t version = 0;                      // 0: the latest version
};

// Comma-separated roots ("a,b,c"), empty parts skipped; InvalidArgument naming `what` when none.
std::vector<std::filesystem::path> split_roots(std::string_view text, std::string_view what);

// "512MB" (decimal units), "1GiB" (binary), "65536" (bytes): a shard size as `scalebert ckpt`
// takes it. InvalidArgument naming `what` for anything else or zero.
uint64_t parse_byte_size(std::string_view text, std::string_view what);

// Whether `text` starts with "store:".
bool is_store_locator(std::string_view text);
// "store:ROOT[,ROOT...][@VERSION]": nullopt when `text` is not a locator; InvalidArgument for a
// locator with no roots or a version that is not a positive integer.
std::optional<StoreLocator> parse_store_locator(std::string_view text);
// The inverse ("store:/a,/b@7").
std::string format_store_locator(const StoreLocator& locator);

// A store version written out as a Hugging Face folder (materialize_hf_directory, model tensors
// only: no optimizer state) under the temporary directory; the folder is removed when this object
// is destroyed. Move-only.
class MaterializedModel {
 public:
  MaterializedModel() = default;
  MaterializedModel(std::filesystem::path directory, uint64_t version, std::vector<std::string> warnings)
      : directory_(std::move(directory)), version_(version), warnings_(std::move(warnings)) {}
  ~MaterializedModel();
  MaterializedModel(MaterializedModel&& other) noexcept;
  MaterializedModel& operator=(MaterializedModel&& other) noexcept;
  MaterializedModel(const MaterializedModel&) = delete;
  MaterializedModel& operator=(const MaterializedModel&) = delete;

  const std::filesystem::path& directory() const { return directory_; }
  uint64_t version() const { return version_; }
  // Replicas that failed over while the version was read (also passed to on_warning as they happen).
  const std::vector<std::string>& warnings() const { return warnings_; }
  void set_warnings(std::vector<std::string> warnings) { warnings_ = std::move(warnings); }

 private:
  std::filesystem::path directory_;
  uint64_t version_ = 0;
  std::vector<std::string> warnings_;
};

// Loads version `version` (0: the latest) of the store at `roots` with eager verification and
// failover, and materializes it into a fresh temporary folder named after `purpose`. IoError when
// the store has no committed version or no good replica of some shard (listing every fault).
MaterializedModel materialize_version(const std::vector<std::filesystem::path>& roots, uint64_t version,
                                      const std::string& purpose,
                                      std::function<void(const std::string&)> on_warning = {});

}  // namespace scalebert::store
