// Where a checkpoint's bytes go: how tensors are grouped into shards of bounded size, and which of
// the K storage roots hold each replica. Both are pure functions of their inputs, so a reader, a
// verifier and a repairer agree with the writer without asking it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace scalebert::store {

// Groups tensors (given by their byte sizes, in the caller's order) into shards: consecutive
// tensors are packed while the shard's tensor bytes stay <= shard_size_bytes. A tensor larger
// than shard_size_bytes gets a shard of its own (tensors are never split, so that every shard is
// a plain safetensors file other tools can read whole). Every shard holds at least one tensor; no
// tensors gives no shards. Throws InvalidArgument when shard_size_bytes is 0.
// Returns, per shard, the indices of its tensors (ascending).
std::vector<std::vector<size_t>> plan_shards(const std::vector<uint64_t>& tensor_bytes,
                                             uint64_t shard_size_bytes);

// The roots to try for object `object_index` (shards first, then the store's small files), in
// order: replica j goes preferably to root (object_index * R + j) mod K, i.e. replicas are dealt
// to the roots like cards, so replica counts per root differ by at most one over any prefix of
// objects and the R preferred roots of an object are distinct (R <= K). The remaining roots
// follow, around the ring, as fallbacks when a preferred root fails during a write or a repair.
// Returns all K roots, the first R being the preferred ones. Throws InvalidArgument unless
// 1 <= replication <= root_count.
std::vector<size_t> placement_order(uint64_t object_index, size_t replication, size_t root_count);

}  // namespace scalebert::store
