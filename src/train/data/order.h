// Deterministic data order: a seeded permutation per epoch that can be resumed from (seed, epoch,
// position), and batches cut from it by a number of sequences or by a token budget. The order is
// a pure function of the seed and the epoch, so a resumed run, or a run on another machine, sees
// exactly the same batches.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace scalebert::train::data {

// Fisher-Yates permutation of [0, n) from a generator keyed by (seed, epoch); the identity when
// shuffle is false.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch, bool shuffle = true);

// Where a data stream stands: saved in checkpoints, restored on resume.
struct DataOrderState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t position = 0;  // examples of this epoch already handed out
  friend bool operator==(const DataOrderState&, const DataOrderState&) = default;
};

class DataOrder {
 public:
  // n examples; InvalidArgument for n <= 0 or a state outside [0, n].
  DataOrder(int64_t n, DataOrderState state, bool shuffle = true);

  // The next example index; rolls over to the next epoch (a new permutation) at the end.
  int64_t next();
  // Examples left in the current epoch.
  int64_t remaining_in_epoch() const { return size_ - state_.position; }
  // Peeks at the index `ahead` positions further within the current epoch (ahead < remaining).
  int64_t peek(int64_t ahead) const { return permutation_[static_cast<size_t>(state_.position + ahead)]; }
  const DataOrderState& state() const { return state_; }
  int64_t size() const { return size_; }

 private:
  void start_epoch();

  int64_t size_;
  bool shuffle_;
  DataOrderState state_;
  std::vector<int64_t> permutation_;  // (n) of state_.epoch
};

struct BatchLimits {
  int64_t max_sequences = 0;  // 0: no limit on sequences
  int64_t max_tokens = 0;     // 0: no limit on tokens (sum of sequence lengths, packed as the trainer runs)
};

// Cuts batches from a DataOrder. A batch never spans two epochs: the epoch's last batch may be
// smaller. With a token budget, sequences are added while the sum of their lengths stays within
// it; a sequence longer than the budget forms a batch of its own (the budget is a memory target,
// and max_length bounds it anyway).
class Batcher {
 public:
  // `lengths[i]` is example i's token count. InvalidArgument when both limits are 0, or a limit is
  // negative, or lengths is empty.
  Batcher(std::span<const int64_t> lengths, BatchLimits limits, DataOrderState state, bool shuffle = true);

  // Example indices of the next batch.
  std::vector<int64_t> next();
  const DataOrderState& state() const { return order_.state(); }
  // Batches in one whole epoch with these limits (walks the epoch's order; for progress and ETA).
  int64_t batches_in_epoch(int64_t epoch) const;

 private:
  std::vector<int64_t> lengths_;
  BatchLimits limits_;
  DataOrder order_;
  bool shuffle_;
};

}  // namespace scalebert::train::data
