// The sharded, replicated, checksummed checkpoint store (DESIGN.md "Files"). A store is K root
// folders (different disks or mounts); a version is a set of named tensors cut into safetensors
// shards of bounded size, each shard written to R distinct roots, plus small side files
// (config.json, vocab.txt) replicated the same way, plus opaque metadata JSON.
//
// Layout of every root:
//   <root>/scalebert-store.json         which root this is (index, count), to catch reordering
//   <root>/latest                       the current version number, replaced atomically
//   <root>/v0000000007/manifest.json    the commit record, on every root, written last
//   <root>/v0000000007/shard-00000.safetensors, files/vocab.txt   replicas placed on this root
//
// Crash safety: every file is written to a temporary name, fsynced, renamed and its directory
// fsynced (AtomicFileWriter). A version's manifests are written only after every replica of every
// shard is durable, and `latest` only after the manifests, so a writer killed at any instant
// leaves earlier versions untouched and the new one either committed (a valid manifest exists)
// or an incomplete directory that readers ignore and gc removes. One writer per store at a time
// (the trainer or a CLI save); readers, verify and the server's watcher may run alongside it.
//
// Reads map each shard replica (mmap), check its size and XXH64 (eagerly, lazily on the first
// touch of a shard, or not at all) and its safetensors header against the manifest; any failure
// moves on to the next replica and is recorded as a ReplicaFault, so a model loads while one
// good replica of each shard exists.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/store/manifest.h"

namespace scalebert::store {

// One bad replica (or manifest, or pointer) and why: what a load, verify or repair reports.
struct ReplicaFault {
  uint64_t version = 0;
  std::string object;  // "shard-00002.safetensors", "files/vocab.txt", "manifest.json", "latest", ...
  size_t root = 0;     // index into the store's roots
  std::filesystem::path path;
  std::string reason;

  // "v3 shard-00002.safetensors on root 1 (/disk1/v0000000003/shard-00002.safetensors): <reason>"
  std::string describe() const;
};

// A test seam on every file the store writes: called with begin=true before a file is created
// and with the running byte count after each chunk of a replica copy. Throwing (an IoError)
// simulates a root that refuses writes (read-only, vanished) or a write that fails midway.
struct WriteEvent {
  size_t root;
  const std::filesystem::path& path;
  uint64_t bytes_written;
  bool begin;
};
using WriteHook = std::function<void(const WriteEvent&)>;

struct StoreOptions {
  WriteHook write_hook;
  // Replica copies (extra replicas during save, repairs) are written in chunks of this size.
  size_t copy_chunk_bytes = size_t{8} << 20;
  // Called with each warning as it happens (a failed-over replica, a root that refused a write);
  // the same warnings are also returned in the results below.
  std::function<void(const std::string&)> on_warning;
};

// A small file stored beside the tensors (config.json, vocab.txt, tokenizer.json, ...): `name`
// is its path inside the version directory below "files/", a plain relative name.
struct SideFile {
  std::string name;
  std::string contents;
};

struct SaveOptions {
  size_t replication = 2;                             // R: distinct roots per shard
  uint64_t shard_size_bytes = uint64_t{1} << 30;      // tensor bytes per shard at most (see plan_shards)
};

struct SaveResult {
  uint64_t version = 0;
  size_t shards = 0;
  uint64_t bytes = 0;                 // one replica of everything
  std::vector<ReplicaFault> faults;   // roots that refused a write; the replica went elsewhere
  std::vector<std::string> warnings;
};

enum class VerifyMode {
  kEager,  // every shard is checksummed when the checkpoint is opened
  kLazy,   // a shard is checksummed when one of its tensors is first requested
  kNone,   // sizes and safetensors headers only (fastest; bit flips in data go unnoticed)
};

struct LoadOptions {
  uint64_t version = 0;  // 0: the latest version
  VerifyMode verify = VerifyMode::kEager;
};

// A loaded version: tensors are views into mmap'd, verified shard replicas (read-only use;
// writes touch private copy-on-write pages). Copies share state; thread-safe.
class Checkpoint {
 public:
  uint64_t version() const;
  const Manifest& manifest() const;
  const nlohmann::json& metadata() const;
  // Tensor names in the order they were saved.
  std::vector<std::string> names() const;
  bool has(std::string_view name) const;
  // Throws InvalidArgument for an unknown name and IoError (listing every replica's fault) when
  // no replica of its shard is good.
  Tensor tensor(std::string_view name) const;
  std::vector<std::pair<std::string, Tensor>> tensors() const;
  // Side files ("config.json", ...): names and verified contents (with failover).
  std::vector<std::string> file_names() const;
  bool has_file(std::string_view name) const;
  std::string file(std::string_view name) const;

  // Every replica that was skipped so far (grows as lazy shards are opened), and the same as text.
  std::vector<ReplicaFault> faults() const;
  std::vector<std::string> warnings() const;

  struct State;
  explicit Checkpoint(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

struct VersionInfo {
  uint64_t version = 0;
  bool committed = false;       // a valid manifest exists on some root
  bool latest = false;
  size_t manifest_copies = 0;   // roots with a valid manifest
  size_t roots_with_directory = 0;
  std::optional<Manifest> manifest;
};

struct VerifyReport {
  std::vector<uint64_t> versions;         // versions checked
  size_t replicas_checked = 0;
  std::vector<ReplicaFault> faults;       // every bad replica, manifest copy, pointer
  std::vector<std::string> under_replicated;  // "v3 shard-00001.safetensors: 1 good of 2"
  std::vector<std::string> lost;          // objects with no good replica
  bool clean() const { return faults.empty() && under_replicated.empty() && lost.empty(); }
};

struct RepairReport {
  VerifyReport before;
  std::vector<std::string> actions;       // "rewrote v3 shard-00001.safetensors on root 2 from root 0"
  std::vector<std::string> failures;      // what could not be repaired, and why
  std::vector<std::string> lost;          // objects with no good replica left: unrecoverable
  bool complete() const { return failures.empty() && lost.empty(); }
};

struct GcReport {
  std::vector<uint64_t> kept;
  std::vector<uint64_t> removed;             // committed versions removed
  std::vector<uint64_t> removed_incomplete;  // crashed writes removed
  size_t temporary_files_removed = 0;
  std::vector<std::string> warnings;
};

class CheckpointStore {
 public:
  // Roots in a fixed order (replica locations are root indices). Nothing is created until the
  // first save. Throws InvalidArgument for no roots, duplicate roots, or a root whose identity
  // file says it was given at another position.
  explicit CheckpointStore(std::vector<std::filesystem::path> roots, StoreOptions options = {});

  const std::vector<std::filesystem::path>& roots() const { return roots_; }

  // Saves a new version (latest + 1) and moves `latest` to it. Roots that refuse a write are
  // skipped (reported in the result) and their replicas go to the next root around the ring;
  // throws IoError when fewer than R roots can take a shard, or no root takes a manifest — the
  // previous versions are then untouched. InvalidArgument for bad names, R or shard size.
  SaveResult save(const std::vector<std::pair<std::string, Tensor>>& tensors, const nlohmann::json& metadata,
                  const SaveOptions& options, const std::vector<SideFile>& files = {});

  // Every version directory found on any root, ascending, with its manifest when committed.
  std::vector<VersionInfo> versions() const;
  // The version `latest` points to on the reachable roots (the highest valid pointer whose
  // manifest exists); when no pointer is readable, the newest committed version. nullopt: none.
  std::optional<uint64_t> latest() const;
  // The manifest of `version` from the first root holding a valid copy; faults get the others
  // that were tried. Throws IoError naming each root's problem when no copy is valid.
  Manifest read_manifest(uint64_t version, std::vector<ReplicaFault>* faults = nullptr) const;

  Checkpoint load(const LoadOptions& options = {}) const;

  // Checks every replica (size, XXH64, header) of one version or, with nullopt, every committed
  // version, plus manifests on every root and the `latest` pointers.
  VerifyReport verify(std::optional<uint64_t> version = std::nullopt) const;
  // Rewrites missing or corrupt replicas from good ones (in place, or on another root when the
  // root refuses), restores manifests, identity files and `latest` pointers, until every object
  // has R good replicas again.
  RepairReport repair(std::optional<uint64_t> version = std::nullopt);
  // Keeps the newest `keep` committed versions (and whatever `latest` points to, and the versions
  // in `also_keep`: a trainer's best checkpoint, say), removes older ones and incomplete versions
  // older than the newest committed one, and stale temporary files of dead writers. Throws
  // InvalidArgument for keep = 0.
  GcReport gc(size_t keep, const std::set<uint64_t>& also_keep = {});

  std::filesystem::path version_path(size_t root, uint64_t version) const;

 private:
  void warn(std::vector<std::string>& sink, const std::string& message) const;
  void check_write(size_t root, const std::filesystem::path& path, uint64_t bytes, bool begin) const;
  // Writes `bytes` as `path` on `root` (atomically, in chunks, through the hook).
  void write_replica(size_t root, const std::filesystem::path& path, const uint8_t* bytes, size_t count) const;
  void write_identity(size_t root) const;
  void write_latest(size_t root, uint64_t version) const;
  std::optional<uint64_t> read_latest(size_t root) const;

  std::vector<std::filesystem::path> roots_;
  StoreOptions options_;
};

// Polls a store for a newer committed version (the server's hot reload): poll() returns the new
// version number once per change, nullopt otherwise. Cheap: reads K small `latest` files.
class StoreWatcher {
 public:
  StoreWatcher(const CheckpointStore& store, uint64_t known_version) : store_(store), known_(known_version) {}
  std::optional<uint64_t> poll();
  uint64_t known_version() const { return known_; }

 private:
  const CheckpointStore& store_;
  uint64_t known_;
};

}  // namespace scalebert::store
