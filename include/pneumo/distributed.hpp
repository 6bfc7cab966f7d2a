// Data-parallel training: the processes of one run (ranks) and the collectives the trainer needs.
// Every rank holds the whole model and takes a contiguous shard of every global batch; gradients
// are added across ranks as one flat buffer (NCCL for device buffers, MPI for host ones), so every
// rank applies the same update. One process is a group of size 1 whose collectives return their
// input, and the trainer runs the same code either way.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pneumo/tensor.hpp"

namespace pneumo {

class Backend;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // e.g. "one process", "MPI, 2 ranks", "NCCL 2.28 over MPI, 4 ranks".
  virtual std::string name() const = 0;

  // count floats at `values` on `device` (the gradients) become their sum over the ranks, the
  // same bits on every rank. Ranks call it in the same order with the same count.
  virtual void all_reduce_sum(float* values, int64_t count, Device device) = 0;
  // The same sum, started now and complete once finish_all_reduces() returns (in the device's
  // stream order: later ops on `device` see the sums). Started in the same order on every rank,
  // a bucket of the gradients can travel while the backward pass is still writing the others.
  // The default runs it at once.
  virtual void start_all_reduce_sum(float* values, int64_t count, Device device) {
    all_reduce_sum(values, count, device);
  }
  virtual void finish_all_reduces() {}
  // Host values summed over the ranks, the same on every rank (statistics, sums, flags).
  virtual void all_reduce_sum(double* values, int count) = 0;
  // Every rank's `local` (any length, including 0), concatenated in rank order, on every rank.
  virtual std::vector<double> all_gather(const std::vector<double>& local) = 0;
  virtual std::vector<float> all_gather(const std::vector<float>& local) = 0;
  // Rank 0's count floats at `values` (on `device`) copied to every rank.
  virtual void broadcast(float* values, int64_t count, Device device) = 0;
  // Rank 0's host bytes copied to every rank (an NCCL unique id, a file's contents).
  virtual void broadcast_bytes(void* data, size_t bytes) = 0;
  // Ends every rank of the run now with `status` (after a failure on this rank, which has said why).
  [[noreturn]] virtual void abort(int status) = 0;

  // True on a rank when any rank's `flag` is true (a collective: every rank must call it).
  bool any(bool flag) {
    double value = flag ? 1.0 : 0.0;
    all_reduce_sum(&value, 1);
    return value > 0.0;
  }
};

// The group of one: every collective leaves its input as it is.
Communicator& single_process();

// The images [begin, end) of `count` (a global batch, or a split) that rank `rank` of `size`
// takes: contiguous, in rank order, sizes differing by at most one.
struct Shard {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
inline Shard shard_of(int64_t count, int rank, int size) {
  return {count * rank / size, count * (rank + 1) / size};
}

// The floats in a gradient bucket of `mebibytes` MiB (--bucket-mb): 0 for 0 (one buffer after
// the backward pass), at least 1 for any positive size (buckets are cut at layer boundaries, so a
// size under one layer's gradients is a bucket per layer).
int64_t bucket_elements(double mebibytes);

// How gradients travel between ranks: Auto takes NCCL for a CUDA backend (when pneumo was built
// with NCCL) and MPI otherwise; Mpi stages device buffers through the host.
enum class AllReduceTransport { Auto, Mpi, Nccl };

// The launcher's environment (mpirun / srun set OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_SIZE or
// SLURM_NTASKS with SLURM_PROCID) says this process is one of several.
bool launched_by_mpi();
// The number of processes the launcher started (OMPI_COMM_WORLD_SIZE, PMI_SIZE or SLURM_NTASKS),
// 0 when none of them says (not launched, or PMIx without a size variable).
int launcher_size();
// This process's rank among them (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK or SLURM_PROCID), -1
// when not launched or none of them says: known before MPI starts, for what is said before there
// is a group (a flag the command line cannot parse: the launcher's rank 0 alone says it).
int launcher_rank();
// How long an NCCL collective may stay unfinished before its rank gives up and ends the job:
// PNEUMO_COLLECTIVE_TIMEOUT seconds (default 600, as PyTorch's NCCL watchdog; 0: never). A peer
// that dies or hangs without NCCL noticing would otherwise leave the others waiting forever.
// Throws a pneumo::UsageError on a value that is not a number of seconds >= 0.
double collective_timeout_seconds();
// True when pneumo was built with MPI, and with NCCL.
bool built_with_mpi();
bool built_with_nccl();

// The run's group: one process unless launched by mpirun/srun, then MPI (initialised here,
// finalised when the communicator is destroyed). Throws a pneumo::Error when launched by MPI for
// several processes but built without it (a launcher's step of one process, as srun inside a
// batch job, runs as one process then). Call it before creating the backend: on a machine with
// several GPUs it makes the rank's GPU current (local rank modulo the GPUs there).
std::unique_ptr<Communicator> make_communicator();
// Throws the pneumo::Error add_transport would throw for `transport` on a backend of `device`
// (NCCL asked for on the CPU, or by a build without it): a command can refuse before it starts.
void check_transport(AllReduceTransport transport, Device device);
// Makes `group`'s device collectives run through NCCL on the CUDA backend's stream (host ones stay
// with the group it wraps) when `transport` asks for it or Auto finds a CUDA backend, several ranks
// and NCCL; else leaves `group` as it is. Throws a pneumo::Error when NCCL is asked for and cannot
// be had, or fails to start; `group` is then unchanged, so that the caller can still name its rank
// and stop every rank through it.
void add_transport(std::unique_ptr<Communicator>& group, Backend& backend,
                   AllReduceTransport transport);

}  // namespace pneumo
