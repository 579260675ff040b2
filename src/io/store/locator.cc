// Store locators ("store:/a,/b@7") and temporary model folders materialized from a store version.
#include "io/store/locator.h"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <charconv>
#include <climits>
#include <cstdint>

#include "core/error.h"
#include "io/store/model_checkpoint.h"

namespace scalebert::store {

namespace fs = std::filesystem;

std::vector<fs::path> split_roots(std::string_view text, std::string_view what) {
  std::vector<fs::path> roots;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    if (comma > start) roots.emplace_back(std::string(text.substr(start, comma - start)));
    start = comma + 1;
  }
  check(!roots.empty(), what, ": no store roots in \"", text, "\" (expected comma-separated folders)");
  return roots;
}

uint64_t parse_byte_size(std::string_view text, std::string_view what) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  uint64_t number = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + digits, number);
  const std::string_view unit = text.substr(digits);
  static const std::pair<std::string_view, uint64_t> kUnits[] = {
      {"", 1},   {"B", 1}, {"KB", 1000}, {"MB", 1000000}, {"GB", 1000000000}, {"KiB", uint64_t{1} << 10},
      {"MiB", uint64_t{1} << 20}, {"GiB", uint64_t{1} << 30}};
  uint64_t scale = 0;
  for (const auto& [name, factor] : kUnits) {
    if (unit == name) scale = factor;
  }
  check(digits > 0 && error == std::errc() && end == text.data() + digits && scale > 0 && number > 0, what, " \"",
        text, "\": expected a positive size such as 512MB, 1GiB or 65536");
  check(number <= UINT64_MAX / scale, what, " \"", text, "\" is too large");
  return number * scale;
}

bool is_store_locator(std::string_view text) { return text.substr(0, kLocatorPrefix.size()) == kLocatorPrefix; }

std::optional<StoreLocator> parse_store_locator(std::string_view text) {
  if (!is_store_locator(text)) return std::nullopt;
  std::string_view body = text.substr(kLocatorPrefix.size());
  StoreLocator locator;
  // "@N" at the end selects a version; an '@' followed by anything but digits belongs to a path.
  const size_t at = body.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view digits = body.substr(at + 1);
    const bool numeric = !digits.empty() && digits.find_first_not_of("0123456789") == std::string_view::npos;
    if (numeric) {
      auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), locator.version);
      check(error == std::errc() && end == digits.data() + digits.size() && locator.version > 0, "store locator \"",
            text, "\": version \"", digits, "\" must be a positive integer");
      body = body.substr(0, at);
    }
  }
  locator.roots = split_roots(body, str_cat("store locator \"", text, "\""));
  return locator;
}

std::string format_store_locator(const StoreLocator& locator) {
  std::string text(kLocatorPrefix);
  for (size_t i = 0; i < locator.roots.size(); ++i) {
    if (i > 0) text += ',';
    text += locator.roots[i].string();
  }
  if (locator.version > 0) text += str_cat("@", locator.version);
  return text;
}

MaterializedModel::~MaterializedModel() {
  if (directory_.empty()) return;
  std::error_code ignored;
  fs::remove_all(directory_, ignored);
}

MaterializedModel::MaterializedModel(MaterializedModel&& other) noexcept
    : directory_(std::move(other.directory_)), version_(other.version_), warnings_(std::move(other.warnings_)) {
  other.directory_.clear();
}

MaterializedModel& MaterializedModel::operator=(MaterializedModel&& other) noexcept {
  if (this != &other) {
    if (!directory_.empty()) {
      std::error_code ignored;
      fs::remove_all(directory_, ignored);
    }
    directory_ = std::move(other.directory_);
    version_ = other.version_;
    warnings_ = std::move(other.warnings_);
    other.directory_.clear();
  }
  return *this;
}

MaterializedModel materialize_version(const std::vector<fs::path>& roots, uint64_t version,
                                      const std::string& purpose, std::function<void(const std::string&)> on_warning) {
  std::vector<std::string> warnings;
  StoreOptions options;
  options.on_warning = [&](const std::string& warning) {
    warnings.push_back(warning);
    if (on_warning) on_warning(warning);
  };
  CheckpointStore store(roots, options);
  if (version == 0) {
    std::optional<uint64_t> latest = store.latest();
    if (!latest) {
      std::string listed;
      for (const fs::path& root : roots) {
        if (!listed.empty()) listed += ',';
        listed += root.string();
      }
      throw IoError(str_cat("checkpoint store ", listed, " has no committed version"));
    }
    version = *latest;
  }
  Checkpoint checkpoint = store.load(LoadOptions{version, VerifyMode::kEager});

  static std::atomic<uint64_t> counter{0};
  std::string tag = purpose;
  for (char& c : tag) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  }
  const fs::path directory = fs::temp_directory_path() /
                             str_cat("scalebert-", tag, "-v", version, "-", ::getpid(), "-", counter++);
  MaterializedModel result(directory, version, {});  // removes a half-written folder if this throws
  materialize_hf_directory(checkpoint, directory, /*include_optimizer=*/false);
  // Eager verification read every shard and side files fail over as they are read, so the list
  // is complete once the folder is written.
  result.set_warnings(std::move(warnings));
  return result;
}

}  // namespace scalebert::store
