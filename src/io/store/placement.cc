// Shard planning (greedy packing in the caller's order) and round-robin replica placement.
#include "io/store/placement.h"

#include "core/error.h"

namespace scalebert::store {

std::vector<std::vector<size_t>> plan_shards(const std::vector<uint64_t>& tensor_bytes,
                                             uint64_t shard_size_bytes) {
  check(shard_size_bytes > 0, "shard size must be at least 1 byte, got 0");
  std::vector<std::vector<size_t>> shards;
  uint64_t current_bytes = 0;
  for (size_t index = 0; index < tensor_bytes.size(); ++index) {
    uint64_t bytes = tensor_bytes[index];
    bool fits = !shards.empty() && current_bytes + bytes <= shard_size_bytes &&
                current_bytes + bytes >= current_bytes;  // no overflow
    if (!fits) {
      shards.emplace_back();
      current_bytes = 0;
    }
    shards.back().push_back(index);
    current_bytes += bytes;
  }
  return shards;
}

std::vector<size_t> placement_order(uint64_t object_index, size_t replication, size_t root_count) {
  check(root_count >= 1, "a checkpoint store needs at least one root");
  check(replication >= 1 && replication <= root_count, "replication factor ", replication,
        " must be between 1 and the number of roots (", root_count, ")");
  // Preferred slots are consecutive modulo K starting at object_index * R, hence distinct; the
  // fallbacks continue around the ring, so the whole list is a rotation of 0..K-1.
  const uint64_t first = (object_index % root_count) * (replication % root_count) % root_count;
  std::vector<size_t> order;
  order.reserve(root_count);
  for (size_t step = 0; step < root_count; ++step) {
    order.push_back(static_cast<size_t>((first + step) % root_count));
  }
  return order;
}

}  // namespace scalebert::store
