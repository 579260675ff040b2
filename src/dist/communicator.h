// The processes of one data-parallel training run and the collectives the trainer needs.
//
// Launched by `mpirun` (OpenMPI sets OMPI_COMM_WORLD_SIZE and OMPI_COMM_WORLD_RANK), the world is
// MPI_COMM_WORLD: one process per rank, each with its own OpenMP team. Launched any other way it
// is a world of one, where every collective returns its input and MPI is never initialized, so the
// single-process path costs nothing and needs no MPI runtime.
#pragma once

#include <cstdint>
#include <vector>

namespace scalebert::dist {

class Communicator {
 public:
  // The process's world, set up on first use (MPI_Init_thread, funneled: only the calling thread
  // communicates) and finalized at exit. Throws Error when launched by mpirun with more than one
  // rank in a build without MPI.
  static Communicator& world();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool distributed() const { return size_ > 1; }
  bool primary() const { return rank_ == 0; }

  // In-place element-wise sums over every rank; every rank gets the same result. Sums of floats are
  // done by MPI in the order it chooses, which is the same on every rank (one reduction result,
  // broadcast), so the ranks' copies never drift apart.
  void all_reduce_sum(float* values, int64_t count) const;
  void all_reduce_sum(double* values, int64_t count) const;
  // In-place element-wise maximum over every rank (flags: 1 on any rank makes 1 everywhere).
  void all_reduce_max(uint8_t* values, int64_t count) const;
  // Collectives over an array split into one block per rank, block r holding counts[r] elements
  // (in rank order, back to back):
  //  - reduce_scatter_sum: rank r's block becomes the sum over ranks of that block (the other
  //    blocks are left as they were);
  //  - all_gather: every rank's block, as its owner holds it, to every rank;
  //  - gather: every rank's block, as its owner holds it, to `root` (the others are unchanged).
  // Throws Error for a block of 2^31 elements or more (MPI counts are ints).
  void reduce_scatter_sum(float* values, const std::vector<int64_t>& counts) const;
  void all_gather(float* values, const std::vector<int64_t>& counts) const;
  void gather(float* values, const std::vector<int64_t>& counts, int root) const;
  // Whether `flag` holds on any rank (a stop request seen by one rank stops all at the same step).
  bool any(bool flag) const;
  // Rank `root`'s bytes to every rank.
  void broadcast(void* bytes, int64_t count, int root) const;
  void barrier() const;

  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

 private:
  Communicator();
  ~Communicator();
  int rank_ = 0;
  int size_ = 1;
  bool mpi_ = false;  // whether this process initialized MPI (and finalizes it)
};

// Whether this build can run distributed (it was built with MPI).
bool mpi_available();

// For a process about to exit with an error: when it is one of several MPI ranks, ends every rank
// of the job (MPI_Abort with `code`) instead of letting the others wait forever in their next
// collective (MPI_Finalize would wait for them too). Otherwise returns and changes nothing.
void abort_job_if_distributed(int code);

}  // namespace scalebert::dist
