// Seeded epoch permutations, resumable data order, and batch cutting.
#include "train/data/order.h"

#include <numeric>

#include "core/error.h"
#include "train/data/random.h"

namespace scalebert::train::data {

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  check(n >= 0, "epoch_permutation: negative size ", n);
  std::vector<int64_t> permutation(static_cast<size_t>(n));
  std::iota(permutation.begin(), permutation.end(), 0);
  if (!shuffle) return permutation;
  // A distinct stream tag keeps data order independent of masking streams keyed by the same seed.
  Rng rng(derive_key(seed, {0x0D17A0D3ull, static_cast<uint64_t>(epoch)}));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.uniform(static_cast<uint64_t>(i + 1)));
    std::swap(permutation[static_cast<size_t>(i)], permutation[static_cast<size_t>(j)]);
  }
  return permutation;
}

DataOrder::DataOrder(int64_t n, DataOrderState state, bool shuffle) : size_(n), shuffle_(shuffle), state_(state) {
  check(n > 0, "data order: no examples");
  check(state.epoch >= 0 && state.position >= 0 && state.position <= n, "data order: state (epoch ", state.epoch,
        ", position ", state.position, ") does not fit ", n, " examples");
  permutation_ = epoch_permutation(size_, state_.seed, state_.epoch, shuffle_);
}

void DataOrder::start_epoch() {
  ++state_.epoch;
  state_.position = 0;
  permutation_ = epoch_permutation(size_, state_.seed, state_.epoch, shuffle_);
}

int64_t DataOrder::next() {
  if (state_.position == size_) start_epoch();
  return permutation_[static_cast<size_t>(state_.position++)];
}

Batcher::Batcher(std::span<const int64_t> lengths, BatchLimits limits, DataOrderState state, bool shuffle)
    : lengths_(lengths.begin(), lengths.end()),
      limits_(limits),
      order_(static_cast<int64_t>(lengths.size()), state, shuffle),
      shuffle_(shuffle) {
  check(limits.max_sequences >= 0 && limits.max_tokens >= 0 && (limits.max_sequences > 0 || limits.max_tokens > 0),
        "batcher: limits (sequences ", limits.max_sequences, ", tokens ", limits.max_tokens,
        ") need at least one positive value and none negative");
}

std::vector<int64_t> Batcher::next() {
  std::vector<int64_t> batch;
  int64_t tokens = 0;
  // At an epoch boundary the first next() rolls over; after that the batch stays in one epoch.
  const int64_t first = order_.next();
  batch.push_back(first);
  tokens += lengths_[static_cast<size_t>(first)];
  while (order_.remaining_in_epoch() > 0) {
    if (limits_.max_sequences > 0 && static_cast<int64_t>(batch.size()) >= limits_.max_sequences) break;
    const int64_t candidate = order_.peek(0);
    const int64_t length = lengths_[static_cast<size_t>(candidate)];
    if (limits_.max_tokens > 0 && tokens + length > limits_.max_tokens) break;
    batch.push_back(order_.next());
    tokens += length;
  }
  return batch;
}

int64_t Batcher::batches_in_epoch(int64_t epoch) const {
  const std::vector<int64_t> permutation =
      epoch_permutation(static_cast<int64_t>(lengths_.size()), order_.state().seed, epoch, shuffle_);
  int64_t batches = 0;
  size_t i = 0;
  while (i < permutation.size()) {
    int64_t sequences = 1;
    int64_t tokens = lengths_[static_cast<size_t>(permutation[i++])];
    while (i < permutation.size()) {
      if (limits_.max_sequences > 0 && sequences >= limits_.max_sequences) break;
      const int64_t length = lengths_[static_cast<size_t>(permutation[i])];
      if (limits_.max_tokens > 0 && tokens + length > limits_.max_tokens) break;
      tokens += length;
      ++sequences;
      ++i;
    }
    ++batches;
  }
  return batches;
}

}  // namespace scalebert::train::data
