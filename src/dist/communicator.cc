// MPI behind the Communicator: collectives over MPI_COMM_WORLD in chunks of at most 2^30 elements
// (MPI counts are ints).
#include "dist/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#ifdef SCALEBERT_WITH_MPI
#include <mpi.h>
#endif

#include "core/error.h"

namespace scalebert::dist {
namespace {

// The world size mpirun announces in the environment (OpenMPI, or a PMI launcher), 1 if none.
int launched_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const char* value = std::getenv(name)) {
      const int size = std::atoi(value);
      if (size > 0) return size;
    }
  }
  return 1;
}

#ifdef SCALEBERT_WITH_MPI
constexpr int64_t kMaxChunk = int64_t{1} << 30;

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw Error(str_cat("MPI ", what, " failed: ", std::string(text, static_cast<size_t>(length))));
}

template <typename T>
void all_reduce_chunks(T* values, int64_t count, MPI_Datatype type, MPI_Op op) {
  for (int64_t begin = 0; begin < count; begin += kMaxChunk) {
    const int chunk = static_cast<int>(std::min(kMaxChunk, count - begin));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, values + begin, chunk, type, op, MPI_COMM_WORLD), "all-reduce");
  }
}
#endif

}  // namespace

bool mpi_available() {
#ifdef SCALEBERT_WITH_MPI
  return true;
#else
  return false;
#endif
}

void abort_job_if_distributed(int code) {
#ifdef SCALEBERT_WITH_MPI
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
  (void)code;
#endif
}

Communicator& Communicator::world() {
  static Communicator world;
  return world;
}

Communicator::Communicator() {
  const int launched = launched_world_size();
  if (launched == 1) return;
#ifdef SCALEBERT_WITH_MPI
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "initialization");
    mpi_ = true;
  }
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "size");
#else
  throw Error(str_cat("launched as one of ", launched,
                      " ranks, but this scalebert was built without MPI (install libopenmpi-dev and rebuild)"));
#endif
}

Communicator::~Communicator() {
#ifdef SCALEBERT_WITH_MPI
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (mpi_ && !finalized) MPI_Finalize();
#endif
}

void Communicator::all_reduce_sum(float* values, int64_t count) const {
  if (size_ == 1 || count == 0) return;
#ifdef SCALEBERT_WITH_MPI
  all_reduce_chunks(values, count, MPI_FLOAT, MPI_SUM);
#endif
}

void Communicator::all_reduce_sum(double* values, int64_t count) const {
  if (size_ == 1 || count == 0) return;
#ifdef SCALEBERT_WITH_MPI
  all_reduce_chunks(values, count, MPI_DOUBLE, MPI_SUM);
#endif
}

void Communicator::all_reduce_max(uint8_t* values, int64_t count) const {
  if (size_ == 1 || count == 0) return;
#ifdef SCALEBERT_WITH_MPI
  all_reduce_chunks(values, count, MPI_UINT8_T, MPI_MAX);
#endif
}

#ifdef SCALEBERT_WITH_MPI
namespace {

// MPI's int counts and displacements of the blocks.
struct Blocks {
  std::vector<int> counts, displacements;
};

Blocks int_blocks(const std::vector<int64_t>& counts, int size) {
  check(static_cast<int>(counts.size()) == size, "collective: ", counts.size(), " block sizes for ", size, " ranks");
  Blocks blocks;
  int64_t offset = 0;
  for (int64_t count : counts) {
    check(count >= 0 && count < (int64_t{1} << 31) && offset < (int64_t{1} << 31),
          "collective: a block of ", count, " elements at ", offset, " is beyond MPI's int counts");
    blocks.counts.push_back(static_cast<int>(count));
    blocks.displacements.push_back(static_cast<int>(offset));
    offset += count;
  }
  return blocks;
}

}  // namespace
#endif

void Communicator::reduce_scatter_sum(float* values, const std::vector<int64_t>& counts) const {
  if (size_ == 1) return;
#ifdef SCALEBERT_WITH_MPI
  const Blocks blocks = int_blocks(counts, size_);
  // One MPI_Reduce to each block's owner per piece of at most 1 Mi elements, in place at the owner:
  // MPI_Reduce_scatter on the whole array made OpenMPI allocate temporaries of the array's size,
  // more than sharding the optimizer saves (MiniLM, 2 ranks: +60 MB a rank).
  constexpr int64_t kPiece = int64_t{1} << 20;
  for (int owner = 0; owner < size_; ++owner) {
    const auto o = static_cast<size_t>(owner);
    for (int64_t begin = 0; begin < blocks.counts[o]; begin += kPiece) {
      const int count = static_cast<int>(std::min<int64_t>(kPiece, blocks.counts[o] - begin));
      float* piece = values + blocks.displacements[o] + begin;
      check_mpi(MPI_Reduce(owner == rank_ ? MPI_IN_PLACE : piece, owner == rank_ ? piece : nullptr, count, MPI_FLOAT,
                           MPI_SUM, owner, MPI_COMM_WORLD),
                "reduce");
    }
  }
#endif
}

void Communicator::all_gather(float* values, const std::vector<int64_t>& counts) const {
  if (size_ == 1) return;
#ifdef SCALEBERT_WITH_MPI
  const Blocks blocks = int_blocks(counts, size_);
  check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, values, blocks.counts.data(),
                           blocks.displacements.data(), MPI_FLOAT, MPI_COMM_WORLD),
            "all-gather");
#endif
}

void Communicator::gather(float* values, const std::vector<int64_t>& counts, int root) const {
  if (size_ == 1) return;
#ifdef SCALEBERT_WITH_MPI
  const Blocks blocks = int_blocks(counts, size_);
  const auto me = static_cast<size_t>(rank_);
  if (rank_ == root) {
    check_mpi(MPI_Gatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, values, blocks.counts.data(),
                          blocks.displacements.data(), MPI_FLOAT, root, MPI_COMM_WORLD),
              "gather");
  } else {
    check_mpi(MPI_Gatherv(values + blocks.displacements[me], blocks.counts[me], MPI_FLOAT, nullptr, nullptr, nullptr,
                          MPI_FLOAT, root, MPI_COMM_WORLD),
              "gather");
  }
#endif
}

bool Communicator::any(bool flag) const {
  if (size_ == 1) return flag;
#ifdef SCALEBERT_WITH_MPI
  int value = flag ? 1 : 0;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "all-reduce");
  return value != 0;
#else
  return flag;
#endif
}

void Communicator::broadcast(void* bytes, int64_t count, int root) const {
  if (size_ == 1 || count == 0) return;
#ifdef SCALEBERT_WITH_MPI
  auto* data = static_cast<char*>(bytes);
  for (int64_t begin = 0; begin < count; begin += kMaxChunk) {
    const int chunk = static_cast<int>(std::min(kMaxChunk, count - begin));
    check_mpi(MPI_Bcast(data + begin, chunk, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
  }
#endif
}

void Communicator::barrier() const {
  if (size_ == 1) return;
#ifdef SCALEBERT_WITH_MPI
  check_mpi(MPI_Barrier(MPI_COMM_WORLD), "barrier");
#endif
}

}  // namespace scalebert::dist
