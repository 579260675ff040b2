// The sum over ranks of a flat gradient arena, sending less for tables whose rows are mostly zero.
//
// A word-embedding table's gradient is zero in every row whose token no sequence of the step used
// (all-MiniLM-L6-v2: 30,522 rows, half the model's parameters; a step of 32 tweets touches about
// 1,000). For such a row-sparse region, the ranks first agree on the rows that are nonzero on any
// rank (a max over one byte per row), then sum only those rows, packed; the rows left out are zero
// on every rank, so the result is exactly the dense sum's. A region whose rows are all in use (a
// masked-LM head tied to the embeddings makes every row nonzero) costs one byte per row more than
// the dense sum.
#pragma once

#include <cstdint>
#include <vector>

#include "dist/communicator.h"

namespace scalebert::dist {

// Rows [0, rows) of `width` elements each, at element `offset` of the arena.
struct RowSparseRegion {
  int64_t offset = 0, rows = 0, width = 0;
};

class GradientAllReduce {
 public:
  // `elements`: the arena's size; `sparse`: disjoint regions inside it. Throws InvalidArgument for a
  // region outside the arena or overlapping another.
  GradientAllReduce(const Communicator& world, int64_t elements, std::vector<RowSparseRegion> sparse);

  // Sums `gradients` (elements) over every rank, in place; the same result on every rank. Returns
  // the number of floats this rank put into sums (the dense parts plus the packed rows).
  int64_t run(float* gradients);

 private:
  const Communicator& world_;
  int64_t elements_;
  std::vector<RowSparseRegion> sparse_;  // sorted by offset
  std::vector<uint8_t> used_;            // (rows of a region) whether the row is nonzero on some rank
  std::vector<float> packed_;            // (used rows, width)
};

}  // namespace scalebert::dist
