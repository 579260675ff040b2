// Checkpoint store: save (shard, place, write replicas, manifests last, then `latest`), load with
// per-replica verification and failover, verify, repair, gc and the version watcher.
#include "io/store/store.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/store/checksum.h"
#include "io/store/placement.h"

namespace scalebert::store {

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr std::string_view kIdentityFileName = "scalebert-store.json";
constexpr std::string_view kLatestFileName = "latest";
constexpr std::string_view kIdentityFormat = "scalebert-checkpoint-store-root";

bool exists_no_throw(const fs::path& path) {
  std::error_code error;
  return fs::exists(path, error);
}

// create_directories, then fsync each parent whose entry was created, so the new directory
// survives a crash (its files' renames are fsynced separately).
void make_directories(const fs::path& directory) {
  std::error_code error;
  if (fs::is_directory(directory, error)) return;
  fs::path parent = directory.parent_path();
  if (!parent.empty() && parent != directory) make_directories(parent);
  if (!fs::create_directory(directory, error) && error) {
    throw IoError(str_cat("cannot create directory ", directory, ": ", error.message()));
  }
  fsync_directory(parent.empty() ? fs::path(".") : parent);
}

// Throws FormatError/IoError when the replica at `path` is not exactly `object`; for a shard
// (`tensors` non-null) the safetensors header must also list exactly the manifest's tensors of
// that shard with their dtype and shape. Returns the opened shard file (null for side files).
std::shared_ptr<SafetensorsFile> check_replica(const fs::path& path, const ManifestObject& object,
                                               const std::vector<const ManifestTensor*>* tensors,
                                               bool verify_checksum) {
  {
    std::shared_ptr<MappedFile> mapped = MappedFile::open(path);
    if (mapped->size() != object.bytes) {
      throw FormatError(str_cat("size ", mapped->size(), " bytes, manifest says ", object.bytes));
    }
    if (verify_checksum) {
      uint64_t actual = xxh64(mapped->data(), mapped->size());
      if (actual != object.xxh64) {
        throw FormatError(str_cat("checksum mismatch: xxh64 ", hex64(actual), ", manifest says ",
                                  hex64(object.xxh64)));
      }
    }
  }
  if (tensors == nullptr) return nullptr;
  auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(path));
  if (file->size() != tensors->size()) {
    throw FormatError(str_cat("holds ", file->size(), " tensors, manifest says ", tensors->size()));
  }
  for (const ManifestTensor* tensor : *tensors) {
    if (!file->has(tensor->name)) throw FormatError(str_cat("lacks tensor \"", tensor->name, "\""));
    const SafetensorsTensorInfo& info = file->info(tensor->name);
    if (info.dtype_name != tensor->dtype || info.shape != tensor->shape) {
      throw FormatError(str_cat("tensor \"", tensor->name, "\" is ", info.dtype_name, " ",
                                shape_string(info.shape), ", manifest says ", tensor->dtype, " ",
                                shape_string(tensor->shape)));
    }
  }
  return file;
}

// Per shard, its manifest tensors.
std::vector<std::vector<const ManifestTensor*>> tensors_by_shard(const Manifest& manifest) {
  std::vector<std::vector<const ManifestTensor*>> grouped(manifest.shards.size());
  for (const ManifestTensor& tensor : manifest.tensors) grouped[tensor.shard].push_back(&tensor);
  return grouped;
}

std::string join_faults(const std::vector<ReplicaFault>& faults) {
  std::string text;
  for (const ReplicaFault& fault : faults) text += "\n  " + fault.describe();
  return text;
}

void check_plain_name(const std::string& name, const std::string& what) {
  check(!name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
            name.find('\0') == std::string::npos,
        what, " \"", name, "\" must be a plain file name (no '/', not empty, not . or ..)");
}

}  // namespace

std::string ReplicaFault::describe() const {
  return str_cat("v", version, " ", object, " on root ", root, " (", path.string(), "): ", reason);
}

// ---------------------------------------------------------------------------------------------
// Store basics

CheckpointStore::CheckpointStore(std::vector<fs::path> roots, StoreOptions options)
    : roots_(std::move(roots)), options_(std::move(options)) {
  check(!roots_.empty(), "a checkpoint store needs at least one root");
  check(options_.copy_chunk_bytes > 0, "copy_chunk_bytes must be positive");
  std::set<fs::path> seen;
  for (size_t index = 0; index < roots_.size(); ++index) {
    fs::path normal = roots_[index].lexically_normal();
    check(seen.insert(normal).second, "root ", roots_[index], " is given twice");
    // A root that remembers another position means the roots were listed in another order than
    // when the store was made: replica locations would all point at the wrong folders.
    fs::path identity = roots_[index] / kIdentityFileName;
    if (!exists_no_throw(identity)) continue;
    try {
      Json json = Json::parse(read_file(identity));
      size_t recorded = json.at("root_index").get<size_t>();
      check(recorded == index, "root ", roots_[index], " was root ", recorded,
            " when the store was made but is given as root ", index, ": list the roots in their original order");
    } catch (const Json::exception&) {
      // Unreadable identity: verify reports it and repair rewrites it.
    } catch (const IoError&) {
    }
  }
}

fs::path CheckpointStore::version_path(size_t root, uint64_t version) const {
  return roots_.at(root) / version_directory_name(version);
}

void CheckpointStore::warn(std::vector<std::string>& sink, const std::string& message) const {
  sink.push_back(message);
  if (options_.on_warning) options_.on_warning(message);
}

void CheckpointStore::check_write(size_t root, const fs::path& path, uint64_t bytes, bool begin) const {
  if (options_.write_hook) options_.write_hook(WriteEvent{root, path, bytes, begin});
}

void CheckpointStore::write_replica(size_t root, const fs::path& path, const uint8_t* bytes, size_t count) const {
  check_write(root, path, 0, true);
  make_directories(path.parent_path());
  AtomicFileWriter writer(path);
  size_t done = 0;
  while (done < count) {
    size_t chunk = std::min(options_.copy_chunk_bytes, count - done);
    writer.write(bytes + done, chunk);
    done += chunk;
    check_write(root, path, done, false);
  }
  writer.commit();
}

void CheckpointStore::write_identity(size_t root) const {
  Json identity{{"format", kIdentityFormat}, {"root_index", root}, {"root_count", roots_.size()}};
  std::string text = identity.dump() + "\n";
  write_replica(root, roots_[root] / kIdentityFileName, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

void CheckpointStore::write_latest(size_t root, uint64_t version) const {
  std::string text = str_cat(version, "\n");
  write_replica(root, roots_[root] / kLatestFileName, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

std::optional<uint64_t> CheckpointStore::read_latest(size_t root) const {
  try {
    std::string text = read_file(roots_[root] / kLatestFileName);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    uint64_t value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || text.empty() || value == 0) return std::nullopt;
    return value;
  } catch (const IoError&) {
    return std::nullopt;
  }
}

// ---------------------------------------------------------------------------------------------
// Save

SaveResult CheckpointStore::save(const std::vector<std::pair<std::string, Tensor>>& tensors, const Json& metadata,
                                 const SaveOptions& options, const std::vector<SideFile>& files) {
  const size_t root_count = roots_.size();
  const size_t replication = options.replication;
  check(replication >= 1 && replication <= root_count, "replication factor ", replication,
        " must be between 1 and the number of roots (", root_count, ")");
  check(options.shard_size_bytes > 0, "shard size must be at least 1 byte, got 0");
  // Validate everything first: below, an error while writing is blamed on the root.
  std::set<std::string> names;
  std::vector<uint64_t> tensor_bytes;
  for (const auto& [name, tensor] : tensors) {
    check(!name.empty() && name != "__metadata__", "checkpoint tensor name \"", name, "\" is empty or reserved");
    check(names.insert(name).second, "checkpoint tensor \"", name, "\" given twice");
    check(tensor.defined() || tensor.numel() == 0, "checkpoint tensor \"", name, "\" is undefined");
    tensor_bytes.push_back(tensor.nbytes());
  }
  std::set<std::string> file_names;
  for (const SideFile& file : files) {
    check_plain_name(file.name, "side file");
    check(file_names.insert(file.name).second, "side file \"", file.name, "\" given twice");
  }

  SaveResult result;
  std::vector<bool> usable(root_count, true);
  auto refuse = [&](size_t root, const std::string& object, const fs::path& path, const std::string& reason) {
    usable[root] = false;
    ReplicaFault fault{result.version, object, root, path, reason};
    warn(result.warnings, "save: skipping root " + std::to_string(root) + ": " + fault.describe());
    result.faults.push_back(std::move(fault));
  };

  // Next version: above every version directory on any reachable root (committed or not), so
  // numbers only grow even across crashed writes.
  uint64_t highest = 0;
  for (const VersionInfo& info : versions()) highest = std::max(highest, info.version);
  for (size_t root = 0; root < root_count; ++root) highest = std::max(highest, read_latest(root).value_or(0));
  result.version = highest + 1;

  for (size_t root = 0; root < root_count; ++root) {
    fs::path directory = version_path(root, result.version);
    try {
      check_write(root, directory, 0, true);
      make_directories(roots_[root]);
      write_identity(root);
      make_directories(directory);
    } catch (const IoError& error) {
      refuse(root, "version directory", directory, error.what());
    }
  }
  if (static_cast<size_t>(std::count(usable.begin(), usable.end(), true)) < replication) {
    throw IoError(str_cat("cannot save version ", result.version, ": fewer than ", replication,
                          " roots accept writes:", join_faults(result.faults)));
  }

  Manifest manifest;
  manifest.version = result.version;
  manifest.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch()).count();
  manifest.replication = replication;
  manifest.shard_size_bytes = options.shard_size_bytes;
  manifest.root_count = root_count;
  manifest.metadata = metadata;

  // Writes one object: the first replica from `write_first` (which returns the bytes now on disk,
  // kept mapped), the others copied from those bytes, each on the next usable root in placement
  // order. Fewer than R roots taking it aborts the save.
  uint64_t object_index = 0;
  auto place = [&](ManifestObject& object,
                   const std::function<std::pair<const uint8_t*, size_t>(size_t, const fs::path&)>& write_first) {
    const uint8_t* bytes = nullptr;
    size_t count = 0;
    for (size_t root : placement_order(object_index, replication, root_count)) {
      if (object.replicas.size() == replication) break;
      if (!usable[root]) continue;
      fs::path path = version_path(root, result.version) / object.file;
      try {
        if (object.replicas.empty()) {
          std::tie(bytes, count) = write_first(root, path);
          object.bytes = count;
          object.xxh64 = xxh64(bytes, count);
        } else {
          write_replica(root, path, bytes, count);
        }
        object.replicas.push_back(root);
      } catch (const IoError& error) {
        refuse(root, object.file, path, error.what());
      }
    }
    ++object_index;
    if (object.replicas.size() < replication) {
      throw IoError(str_cat("cannot save version ", result.version, ": only ", object.replicas.size(), " of ",
                            replication, " roots took ", object.file, ":", join_faults(result.faults)));
    }
  };

  std::vector<std::vector<size_t>> plan = plan_shards(tensor_bytes, options.shard_size_bytes);
  for (size_t shard = 0; shard < plan.size(); ++shard) {
    std::vector<std::pair<std::string, Tensor>> members;
    for (size_t index : plan[shard]) {
      members.push_back(tensors[index]);
      manifest.tensors.push_back(ManifestTensor{tensors[index].first,
                                                std::string(dtype_name(tensors[index].second.dtype())),
                                                tensors[index].second.shape(), shard});
    }
    ManifestObject object;
    object.file = shard_file_name(shard);
    std::shared_ptr<MappedFile> written;  // the first replica, mapped: source of the others
    place(object, [&](size_t root, const fs::path& path) {
      check_write(root, path, 0, true);
      save_safetensors(path, members, {{"scalebert.store.version", std::to_string(result.version)},
                                       {"scalebert.store.shard", str_cat(shard, "/", plan.size())}});
      written = MappedFile::open(path);
      return std::make_pair<const uint8_t*, size_t>(written->data(), written->size());
    });
    manifest.shards.push_back(std::move(object));
  }
  // Tensors come back in the caller's order whatever the packing.
  std::unordered_map<std::string, size_t> order;
  for (size_t i = 0; i < tensors.size(); ++i) order[tensors[i].first] = i;
  std::sort(manifest.tensors.begin(), manifest.tensors.end(),
            [&](const ManifestTensor& a, const ManifestTensor& b) { return order[a.name] < order[b.name]; });

  for (const SideFile& file : files) {
    ManifestObject object;
    object.file = "files/" + file.name;
    place(object, [&](size_t root, const fs::path& path) {
      write_replica(root, path, reinterpret_cast<const uint8_t*>(file.contents.data()), file.contents.size());
      return std::make_pair(reinterpret_cast<const uint8_t*>(file.contents.data()), file.contents.size());
    });
    manifest.files.push_back(std::move(object));
  }

  // Commit: the manifest on every root that still takes writes, then the pointers.
  const std::string text = manifest.to_text();
  size_t manifest_copies = 0;
  for (size_t root = 0; root < root_count; ++root) {
    if (!usable[root]) continue;
    fs::path path = version_path(root, result.version) / kManifestFileName;
    try {
      write_replica(root, path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
      ++manifest_copies;
    } catch (const IoError& error) {
      refuse(root, std::string(kManifestFileName), path, error.what());
    }
  }
  if (manifest_copies == 0) {
    throw IoError(str_cat("cannot save version ", result.version, ": no root took its manifest:",
                          join_faults(result.faults)));
  }
  for (size_t root = 0; root < root_count; ++root) {
    if (!usable[root]) continue;
    try {
      write_latest(root, result.version);
    } catch (const IoError& error) {
      refuse(root, std::string(kLatestFileName), roots_[root] / kLatestFileName, error.what());
    }
  }
  result.shards = manifest.shards.size();
  result.bytes = manifest.total_bytes();
  return result;
}

// ---------------------------------------------------------------------------------------------
// Versions and manifests

std::vector<VersionInfo> CheckpointStore::versions() const {
  std::map<uint64_t, VersionInfo> found;
  for (size_t root = 0; root < roots_.size(); ++root) {
    std::error_code error;
    fs::directory_iterator iterator(roots_[root], error);
    if (error) continue;  // a vanished root: verify reports it
    for (const fs::directory_entry& entry : iterator) {
      std::optional<uint64_t> version = parse_version_directory_name(entry.path().filename().string());
      if (!version || !entry.is_directory(error)) continue;
      VersionInfo& info = found[*version];
      info.version = *version;
      ++info.roots_with_directory;
      try {
        fs::path path = entry.path() / kManifestFileName;
        Manifest manifest = Manifest::parse(read_file(path), path.string());
        if (manifest.version != *version) continue;
        ++info.manifest_copies;
        info.committed = true;
        if (!info.manifest) info.manifest = std::move(manifest);
      } catch (const Error&) {
      }
    }
  }
  std::optional<uint64_t> current = latest();
  std::vector<VersionInfo> list;
  for (auto& [version, info] : found) {
    info.latest = current == version;
    list.push_back(std::move(info));
  }
  return list;
}

Manifest CheckpointStore::read_manifest(uint64_t version, std::vector<ReplicaFault>* faults) const {
  std::vector<ReplicaFault> tried;
  for (size_t root = 0; root < roots_.size(); ++root) {
    fs::path path = version_path(root, version) / kManifestFileName;
    try {
      Manifest manifest = Manifest::parse(read_file(path), path.string());
      check<FormatError>(manifest.version == version, path.string(), " describes version ", manifest.version);
      if (faults) faults->insert(faults->end(), tried.begin(), tried.end());
      return manifest;
    } catch (const Error& error) {
      tried.push_back(ReplicaFault{version, std::string(kManifestFileName), root, path, error.what()});
    }
  }
  throw IoError(str_cat("no valid manifest of version ", version, " on any root:", join_faults(tried)));
}

std::optional<uint64_t> CheckpointStore::latest() const {
  std::set<uint64_t, std::greater<>> pointers;
  for (size_t root = 0; root < roots_.size(); ++root) {
    if (std::optional<uint64_t> value = read_latest(root)) pointers.insert(*value);
  }
  for (uint64_t candidate : pointers) {
    try {
      read_manifest(candidate);
      return candidate;
    } catch (const IoError&) {
    }
  }
  // No usable pointer (none written yet, or every root's pointer lost): the newest committed.
  std::optional<uint64_t> newest;
  for (size_t root = 0; root < roots_.size(); ++root) {
    std::error_code error;
    fs::directory_iterator iterator(roots_[root], error);
    if (error) continue;
    for (const fs::directory_entry& entry : iterator) {
      std::optional<uint64_t> version = parse_version_directory_name(entry.path().filename().string());
      if (!version || (newest && *version <= *newest)) continue;
      try {
        fs::path path = entry.path() / kManifestFileName;
        if (Manifest::parse(read_file(path), path.string()).version == *version) newest = version;
      } catch (const Error&) {
      }
    }
  }
  return newest;
}

std::optional<uint64_t> StoreWatcher::poll() {
  std::optional<uint64_t> current = store_.latest();
  if (!current || *current == known_) return std::nullopt;
  known_ = *current;
  return current;
}

// ---------------------------------------------------------------------------------------------
// Load

struct Checkpoint::State {
  Manifest manifest;
  std::vector<fs::path> roots;
  VerifyMode verify = VerifyMode::kEager;
  std::function<void(const std::string&)> on_warning;
  std::unordered_map<std::string, size_t> tensor_index;  // name -> manifest.tensors index
  std::vector<std::vector<const ManifestTensor*>> shard_tensors;

  std::mutex mutex;  // guards everything below (lazy opening from any thread)
  std::vector<std::shared_ptr<SafetensorsFile>> shard_files;
  std::vector<ReplicaFault> faults;

  fs::path replica_path(size_t root, const ManifestObject& object) const {
    return roots[root] / version_directory_name(manifest.version) / object.file;
  }

  void record(ReplicaFault fault) {
    if (on_warning) on_warning("load: failing over: " + fault.describe());
    faults.push_back(std::move(fault));
  }

  // The first good replica of `shard`, appending the bad ones to `failed`; null when none is
  // good. Touches no shared state, so shards can be checked in parallel.
  std::shared_ptr<SafetensorsFile> find_good_replica(size_t shard, std::vector<ReplicaFault>& failed) const {
    const ManifestObject& object = manifest.shards[shard];
    for (size_t root : object.replicas) {
      fs::path path = root < roots.size() ? replica_path(root, object) : fs::path();
      try {
        check<IoError>(root < roots.size(), "root ", root, " is not among the ", roots.size(), " roots given");
        return check_replica(path, object, &shard_tensors[shard], verify != VerifyMode::kNone);
      } catch (const Error& error) {
        failed.push_back(ReplicaFault{manifest.version, object.file, root, path, error.what()});
      }
    }
    return nullptr;
  }

  // Records the outcome of find_good_replica; throws IoError naming every replica when none was
  // good. Caller holds the mutex.
  const SafetensorsFile& settle(size_t shard, std::shared_ptr<SafetensorsFile> file, std::vector<ReplicaFault>& failed) {
    for (ReplicaFault& fault : failed) record(fault);
    if (!file) {
      throw IoError(str_cat("no good replica of ", manifest.shards[shard].file, " of version ", manifest.version, ":",
                            join_faults(failed)));
    }
    shard_files[shard] = std::move(file);
    return *shard_files[shard];
  }

  // Caller holds the mutex.
  const SafetensorsFile& open_shard(size_t shard) {
    if (shard_files[shard]) return *shard_files[shard];
    std::vector<ReplicaFault> failed;
    std::shared_ptr<SafetensorsFile> file = find_good_replica(shard, failed);
    return settle(shard, std::move(file), failed);
  }

  // Checks every shard, on up to hardware_concurrency threads (checksumming is the cost of an
  // eager load and shards are independent), then records results in shard order.
  void open_all_shards() {
    const size_t count = manifest.shards.size();
    std::vector<std::shared_ptr<SafetensorsFile>> files(count);
    std::vector<std::vector<ReplicaFault>> failed(count);
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t shard = next++; shard < count; shard = next++) files[shard] = find_good_replica(shard, failed[shard]);
    };
    size_t threads = std::min<size_t>(count, std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (std::thread& thread : pool) thread.join();
    std::lock_guard<std::mutex> lock(mutex);
    for (size_t shard = 0; shard < count; ++shard) settle(shard, std::move(files[shard]), failed[shard]);
  }
};

Checkpoint CheckpointStore::load(const LoadOptions& options) const {
  uint64_t version = options.version;
  if (version == 0) {
    std::optional<uint64_t> current = latest();
    if (!current) throw IoError(str_cat("the checkpoint store at ", roots_.front(), " holds no committed version"));
    version = *current;
  }
  auto state = std::make_shared<Checkpoint::State>();
  std::vector<ReplicaFault> manifest_faults;
  state->manifest = read_manifest(version, &manifest_faults);
  state->roots = roots_;
  state->verify = options.verify;
  state->on_warning = options_.on_warning;
  for (ReplicaFault& fault : manifest_faults) state->record(std::move(fault));
  for (size_t i = 0; i < state->manifest.tensors.size(); ++i) state->tensor_index[state->manifest.tensors[i].name] = i;
  state->shard_tensors = tensors_by_shard(state->manifest);
  state->shard_files.resize(state->manifest.shards.size());
  if (options.verify != VerifyMode::kLazy) state->open_all_shards();
  return Checkpoint(std::move(state));
}

uint64_t Checkpoint::version() const { return state_->manifest.version; }
const Manifest& Checkpoint::manifest() const { return state_->manifest; }
const Json& Checkpoint::metadata() const { return state_->manifest.metadata; }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> names;
  for (const ManifestTensor& tensor : state_->manifest.tensors) names.push_back(tensor.name);
  return names;
}

bool Checkpoint::has(std::string_view name) const { return state_->tensor_index.count(std::string(name)) > 0; }

Tensor Checkpoint::tensor(std::string_view name) const {
  auto found = state_->tensor_index.find(std::string(name));
  if (found == state_->tensor_index.end()) {
    throw InvalidArgument(str_cat("no tensor \"", name, "\" in checkpoint version ", state_->manifest.version));
  }
  const ManifestTensor& entry = state_->manifest.tensors[found->second];
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->open_shard(entry.shard).tensor(entry.name);
}

std::vector<std::pair<std::string, Tensor>> Checkpoint::tensors() const {
  std::vector<std::pair<std::string, Tensor>> all;
  for (const ManifestTensor& entry : state_->manifest.tensors) all.emplace_back(entry.name, tensor(entry.name));
  return all;
}

std::vector<std::string> Checkpoint::file_names() const {
  std::vector<std::string> names;
  for (const ManifestObject& object : state_->manifest.files) names.push_back(object.file.substr(6));  // "files/"
  return names;
}

bool Checkpoint::has_file(std::string_view name) const {
  for (const ManifestObject& object : state_->manifest.files) {
    if (std::string_view(object.file).substr(6) == name) return true;
  }
  return false;
}

std::string Checkpoint::file(std::string_view name) const {
  for (const ManifestObject& object : state_->manifest.files) {
    if (std::string_view(object.file).substr(6) != name) continue;
    std::lock_guard<std::mutex> lock(state_->mutex);
    std::vector<ReplicaFault> failed;
    for (size_t root : object.replicas) {
      fs::path path = root < state_->roots.size() ? state_->replica_path(root, object) : fs::path();
      try {
        check<IoError>(root < state_->roots.size(), "root ", root, " is not among the roots given");
        std::string contents = read_file(path);
        check<FormatError>(contents.size() == object.bytes, "size ", contents.size(), " bytes, manifest says ",
                           object.bytes);
        uint64_t actual = xxh64(contents);
        check<FormatError>(actual == object.xxh64, "checksum mismatch: xxh64 ", hex64(actual), ", manifest says ",
                           hex64(object.xxh64));
        return contents;
      } catch (const Error& error) {
        failed.push_back(ReplicaFault{state_->manifest.version, object.file, root, path, error.what()});
        state_->record(failed.back());
      }
    }
    throw IoError(str_cat("no good replica of ", object.file, " of version ", state_->manifest.version, ":",
                          join_faults(failed)));
  }
  throw InvalidArgument(str_cat("no file \"", name, "\" in checkpoint version ", state_->manifest.version));
}

std::vector<ReplicaFault> Checkpoint::faults() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->faults;
}

std::vector<std::string> Checkpoint::warnings() const {
  std::vector<std::string> text;
  for (const ReplicaFault& fault : faults()) text.push_back(fault.describe());
  return text;
}

// ---------------------------------------------------------------------------------------------
// Verify, repair, gc

namespace {

// Good replica roots of `object`, faults for the others.
std::vector<size_t> good_replicas(const CheckpointStore& store, const Manifest& manifest, const ManifestObject& object,
                                  const std::vector<const ManifestTensor*>* tensors, std::vector<ReplicaFault>& faults,
                                  size_t& checked) {
  std::vector<size_t> good;
  for (size_t root : object.replicas) {
    ++checked;
    fs::path path;
    try {
      check<IoError>(root < store.roots().size(), "root ", root, " is not among the ", store.roots().size(),
                     " roots given");
      path = store.version_path(root, manifest.version) / object.file;
      check_replica(path, object, tensors, true);
      good.push_back(root);
    } catch (const Error& error) {
      faults.push_back(ReplicaFault{manifest.version, object.file, root, path, error.what()});
    }
  }
  return good;
}

}  // namespace

VerifyReport CheckpointStore::verify(std::optional<uint64_t> version) const {
  VerifyReport report;
  if (version) {
    report.versions.push_back(*version);
  } else {
    for (const VersionInfo& info : versions()) {
      if (info.committed) report.versions.push_back(info.version);
    }
  }
  for (uint64_t current : report.versions) {
    // Every root should hold a valid manifest.
    std::optional<Manifest> manifest;
    for (size_t root = 0; root < roots_.size(); ++root) {
      fs::path path = version_path(root, current) / kManifestFileName;
      ++report.replicas_checked;
      try {
        Manifest parsed = Manifest::parse(read_file(path), path.string());
        check<FormatError>(parsed.version == current, "describes version ", parsed.version);
        if (!manifest) manifest = std::move(parsed);
      } catch (const Error& error) {
        report.faults.push_back(ReplicaFault{current, std::string(kManifestFileName), root, path, error.what()});
      }
    }
    if (!manifest) {
      report.lost.push_back(str_cat("v", current, " ", kManifestFileName, ": no valid copy on any root"));
      continue;
    }
    std::vector<std::vector<const ManifestTensor*>> grouped = tensors_by_shard(*manifest);
    for (size_t index = 0; index < manifest->shards.size() + manifest->files.size(); ++index) {
      bool is_shard = index < manifest->shards.size();
      const ManifestObject& object = is_shard ? manifest->shards[index] : manifest->files[index - manifest->shards.size()];
      std::vector<size_t> good = good_replicas(*this, *manifest, object, is_shard ? &grouped[index] : nullptr,
                                               report.faults, report.replicas_checked);
      if (good.empty()) {
        report.lost.push_back(str_cat("v", current, " ", object.file, ": no good replica"));
      } else if (good.size() < manifest->replication) {
        report.under_replicated.push_back(str_cat("v", current, " ", object.file, ": ", good.size(), " good of ",
                                                  manifest->replication));
      }
    }
  }
  if (!version) {
    std::optional<uint64_t> current = latest();
    for (size_t root = 0; root < roots_.size() && current; ++root) {
      std::optional<uint64_t> pointer = read_latest(root);
      if (pointer != current) {
        report.faults.push_back(ReplicaFault{*current, std::string(kLatestFileName), root, roots_[root] / kLatestFileName,
                                             pointer ? str_cat("points to ", *pointer) : "missing or unreadable"});
      }
    }
  }
  return report;
}

RepairReport CheckpointStore::repair(std::optional<uint64_t> version) {
  RepairReport report;
  report.before = verify(version);
  report.lost = report.before.lost;
  std::vector<bool> refused(roots_.size(), false);  // roots that failed a write during this repair

  for (uint64_t current : report.before.versions) {
    Manifest manifest;
    try {
      manifest = read_manifest(current);
    } catch (const IoError& error) {
      report.failures.push_back(error.what());
      continue;
    }
    bool replicas_changed = false;
    std::vector<std::vector<const ManifestTensor*>> grouped = tensors_by_shard(manifest);
    std::vector<ManifestObject*> objects = manifest.objects();
    for (size_t index = 0; index < objects.size(); ++index) {
      ManifestObject& object = *objects[index];
      bool is_shard = index < manifest.shards.size();
      std::vector<ReplicaFault> faults;
      size_t checked = 0;
      std::vector<size_t> good = good_replicas(*this, manifest, object, is_shard ? &grouped[index] : nullptr, faults, checked);
      if (good.empty()) continue;  // already in report.lost
      if (good.size() == object.replicas.size() && good.size() >= manifest.replication) continue;
      std::shared_ptr<MappedFile> source = MappedFile::open(version_path(good.front(), current) / object.file);

      std::vector<size_t> replicas = good;
      auto rewrite = [&](size_t root) {
        fs::path path = version_path(root, current) / object.file;
        try {
          // Whatever occupies the name (a directory, a special file) is ours to replace: the
          // version directory belongs to the store, and rename() cannot replace a directory.
          std::error_code error;
          if (fs::exists(fs::symlink_status(path, error)) && !fs::is_regular_file(fs::symlink_status(path, error))) {
            fs::remove_all(path, error);
            if (error) throw IoError(str_cat("cannot remove ", path, " to rewrite it: ", error.message()));
          }
          write_replica(root, path, source->data(), source->size());
          check_replica(path, object, is_shard ? &grouped[index] : nullptr, true);  // what landed
          replicas.push_back(root);
          report.actions.push_back(str_cat("rewrote v", current, " ", object.file, " on root ", root, " from root ",
                                           good.front()));
        } catch (const Error& error) {
          refused[root] = true;
          report.actions.push_back(str_cat("root ", root, " refused v", current, " ", object.file, ": ", error.what()));
        }
      };
      // In place first (keeps the placement), then other roots around the ring.
      for (size_t root : object.replicas) {
        if (replicas.size() >= manifest.replication) break;
        if (root < roots_.size() && !refused[root] &&
            std::find(replicas.begin(), replicas.end(), root) == replicas.end()) {
          rewrite(root);
        }
      }
      for (size_t root : placement_order(index, std::min(manifest.replication, roots_.size()), roots_.size())) {
        if (replicas.size() >= manifest.replication) break;
        if (!refused[root] && std::find(replicas.begin(), replicas.end(), root) == replicas.end()) rewrite(root);
      }
      if (replicas.size() < manifest.replication) {
        report.failures.push_back(str_cat("v", current, " ", object.file, ": only ", replicas.size(), " good replicas of ",
                                          manifest.replication, " (not enough roots accept writes)"));
      }
      if (replicas != object.replicas) {
        object.replicas = replicas;
        replicas_changed = true;
      }
    }
    if (replicas_changed) manifest.root_count = std::max(manifest.root_count, roots_.size());

    // Manifests: everywhere when replica locations moved, else where missing or bad.
    const std::string text = manifest.to_text();
    for (size_t root = 0; root < roots_.size(); ++root) {
      fs::path path = version_path(root, current) / kManifestFileName;
      bool needed = replicas_changed;
      if (!needed) {
        try {
          needed = Manifest::parse(read_file(path), path.string()).version != current;
        } catch (const Error&) {
          needed = true;
        }
      }
      if (!needed) continue;
      try {
        write_replica(root, path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
        report.actions.push_back(str_cat("wrote v", current, " manifest on root ", root));
      } catch (const Error& error) {
        report.failures.push_back(str_cat("v", current, " manifest on root ", root, ": ", error.what()));
      }
    }
  }

  // Identity files and pointers.
  std::optional<uint64_t> current = latest();
  for (size_t root = 0; root < roots_.size(); ++root) {
    try {
      fs::path identity = roots_[root] / kIdentityFileName;
      bool identity_ok = false;
      try {
        identity_ok = Json::parse(read_file(identity)).at("root_index").get<size_t>() == root;
      } catch (const std::exception&) {
      }
      if (!identity_ok) {
        make_directories(roots_[root]);
        write_identity(root);
        report.actions.push_back(str_cat("wrote identity of root ", root));
      }
      if (current && !version && read_latest(root) != current) {
        write_latest(root, *current);
        report.actions.push_back(str_cat("pointed latest of root ", root, " to v", *current));
      }
    } catch (const Error& error) {
      report.failures.push_back(str_cat("root ", root, " (", roots_[root].string(), "): ", error.what()));
    }
  }
  return report;
}

GcReport CheckpointStore::gc(size_t keep, const std::set<uint64_t>& also_keep) {
  check(keep >= 1, "gc must keep at least one version, got keep = 0");
  GcReport report;
  std::vector<VersionInfo> all = versions();
  std::optional<uint64_t> current = latest();
  std::vector<uint64_t> committed;
  for (const VersionInfo& info : all) {
    if (info.committed) committed.push_back(info.version);
  }
  std::sort(committed.rbegin(), committed.rend());
  std::set<uint64_t> kept(committed.begin(), committed.begin() + static_cast<ptrdiff_t>(std::min(keep, committed.size())));
  if (current) kept.insert(*current);
  for (uint64_t version : committed) {
    if (also_keep.count(version)) kept.insert(version);
  }
  const uint64_t newest = committed.empty() ? 0 : committed.front();

  std::vector<uint64_t> doomed;
  for (const VersionInfo& info : all) {
    if (kept.count(info.version)) continue;
    // An incomplete version newer than every committed one may be a save in progress.
    if (!info.committed && info.version > newest) continue;
    doomed.push_back(info.version);
    (info.committed ? report.removed : report.removed_incomplete).push_back(info.version);
  }
  // Manifests first, on every root, so that a gc interrupted midway leaves incomplete versions
  // (ignored by readers), never committed versions with missing shards.
  for (uint64_t version : doomed) {
    for (size_t root = 0; root < roots_.size(); ++root) {
      fs::path path = version_path(root, version) / kManifestFileName;
      std::error_code error;
      if (fs::remove(path, error)) {
        try {
          fsync_directory(path.parent_path());
        } catch (const IoError& failure) {
          warn(report.warnings, failure.what());
        }
      } else if (error && error != std::errc::no_such_file_or_directory) {
        warn(report.warnings, str_cat("gc: cannot remove ", path, ": ", error.message()));
      }
    }
  }
  for (uint64_t version : doomed) {
    for (size_t root = 0; root < roots_.size(); ++root) {
      std::error_code error;
      fs::remove_all(version_path(root, version), error);
      if (error && error != std::errc::no_such_file_or_directory) {
        warn(report.warnings, str_cat("gc: cannot remove ", version_path(root, version), ": ", error.message()));
      }
    }
  }
  report.kept.assign(kept.begin(), kept.end());

  // Temporary files ("<name>.tmp.<pid>.<n>") whose writer process is gone.
  auto sweep = [&](const fs::path& directory) {
    std::error_code error;
    fs::directory_iterator iterator(directory, error);
    if (error) return;
    for (const fs::directory_entry& entry : iterator) {
      std::string name = entry.path().filename().string();
      size_t marker = name.rfind(".tmp.");
      if (marker == std::string::npos) continue;
      int pid = 0;
      const char* begin = name.data() + marker + 5;
      auto [end, parse_error] = std::from_chars(begin, name.data() + name.size(), pid);
      if (parse_error != std::errc() || end == begin || *end != '.' || pid <= 0) continue;
      if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
      if (fs::remove(entry.path(), error)) ++report.temporary_files_removed;
    }
  };
  for (size_t root = 0; root < roots_.size(); ++root) {
    sweep(roots_[root]);
    for (uint64_t version : kept) {
      sweep(version_path(root, version));
      sweep(version_path(root, version) / "files");
    }
  }
  return report;
}

}  // namespace scalebert::store
