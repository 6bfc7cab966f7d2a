// MPI_COMM_WORLD as a pneumo::Communicator. Every call checks MPI's return code (errors return
// instead of aborting, so the caller can say which rank failed and where); device buffers are
// copied through the host. Every collective is started non-blocking and waited for against
// PNEUMO_COLLECTIVE_TIMEOUT (as the NCCL watchdog does): MPI has no timeout of its own, and a
// launcher such as mpirun stops a job only when a rank exits, not when one hangs or is stopped.
#include <chrono>
#include <cstdlib>
#include <thread>

#include "dist/communicators.hpp"
#include "pneumo/error.hpp"

#ifdef PNEUMO_WITH_MPI
#include <mpi.h>
#endif
#include <cuda_runtime_api.h>

namespace pneumo::dist {

#ifdef PNEUMO_WITH_MPI
namespace {

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  throw Error(detail::concat(call, " failed on rank ", rank, ": ", std::string(text, length)));
}

// A device buffer's host copy for the duration of one collective (a host buffer is used as is).
class HostStaging {
 public:
  HostStaging(float* values, int64_t count, Device device)
      : values_(values), count_(count), device_(device) {
    if (device_ == Device::Cpu) return;
    copy_.resize(static_cast<size_t>(count));
    copy_bytes(copy_.data(), Device::Cpu, values, device, bytes());
  }
  float* host() { return device_ == Device::Cpu ? values_ : copy_.data(); }
  void write_back() {
    if (device_ != Device::Cpu) copy_bytes(values_, device_, copy_.data(), Device::Cpu, bytes());
  }

 private:
  size_t bytes() const { return static_cast<size_t>(count_) * sizeof(float); }
  float* values_;
  int64_t count_;
  Device device_;
  std::vector<float> copy_;
};

// Waits for `count` started requests of `call`; one still unfinished `timeout_seconds` after it
// was issued (0: no limit) throws, naming the call, and run_train's handler then ends every rank.
// Tested often at first, then every millisecond: a small host collective pays microseconds.
void wait_for(MPI_Request* requests, int count, const char* call, double timeout_seconds) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point issued = Clock::now();
  for (int tries = 0;; ++tries) {
    int done = 0;
    check_mpi(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE), call);
    if (done) return;
    const double waited = std::chrono::duration<double>(Clock::now() - issued).count();
    if (timeout_seconds > 0 && waited > timeout_seconds)
      throw Error(detail::concat(
          "an MPI collective (", call, ") issued ", static_cast<int64_t>(waited),
          " s ago has not finished: another rank hangs, was stopped or waits in another "
          "collective (PNEUMO_COLLECTIVE_TIMEOUT=", timeout_seconds, " s; 0 turns this off)"));
    if (tries > 1000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

int as_count(int64_t count, const char* what) {
  PNEUMO_CHECK(count >= 0 && count <= INT32_MAX, what, ": ", count,
               " elements exceed what one MPI call takes");
  return static_cast<int>(count);
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init");
      owns_mpi_ = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
    timeout_seconds_ = collective_timeout_seconds();  // a value that is no number stops here
  }
  ~MpiCommunicator() override {
    if (owns_mpi_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override {
    return detail::concat("MPI, ", size_, size_ == 1 ? " rank" : " ranks");
  }

  void all_reduce_sum(float* values, int64_t count, Device device) override {
    HostStaging staging(values, count, device);
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, staging.host(), as_count(count, "all-reduce"),
                             MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &request),
              "MPI_Iallreduce");
    wait_for(&request, 1, "MPI_Iallreduce", timeout_seconds_);
    staging.write_back();
  }
  // Host buffers travel while the caller goes on (MPI_Iallreduce); device buffers are staged
  // through the host at once.
  void start_all_reduce_sum(float* values, int64_t count, Device device) override {
    if (device != Device::Cpu) return all_reduce_sum(values, count, device);
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, values, as_count(count, "all-reduce"), MPI_FLOAT,
                             MPI_SUM, MPI_COMM_WORLD, &request),
              "MPI_Iallreduce");
    requests_.push_back(request);
  }
  void finish_all_reduces() override {
    if (requests_.empty()) return;
    std::vector<MPI_Request> started;
    started.swap(requests_);  // whatever the wait throws, none is waited for twice
    wait_for(started.data(), static_cast<int>(started.size()), "MPI_Iallreduce (gradients)",
             timeout_seconds_);
  }
  void all_reduce_sum(double* values, int count) override {
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD,
                             &request),
              "MPI_Iallreduce");
    wait_for(&request, 1, "MPI_Iallreduce", timeout_seconds_);
  }
  std::vector<double> all_gather(const std::vector<double>& local) override {
    return gather(local, MPI_DOUBLE);
  }
  std::vector<float> all_gather(const std::vector<float>& local) override {
    return gather(local, MPI_FLOAT);
  }
  void broadcast(float* values, int64_t count, Device device) override {
    HostStaging staging(values, count, device);
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Ibcast(staging.host(), as_count(count, "broadcast"), MPI_FLOAT, 0,
                         MPI_COMM_WORLD, &request),
              "MPI_Ibcast");
    wait_for(&request, 1, "MPI_Ibcast", timeout_seconds_);
    staging.write_back();
  }
  void broadcast_bytes(void* data, size_t bytes) override {
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Ibcast(data, as_count(static_cast<int64_t>(bytes), "broadcast"), MPI_BYTE, 0,
                         MPI_COMM_WORLD, &request),
              "MPI_Ibcast");
    wait_for(&request, 1, "MPI_Ibcast", timeout_seconds_);
  }
  [[noreturn]] void abort(int status) override {
    MPI_Abort(MPI_COMM_WORLD, status);
    std::_Exit(status);  // MPI_Abort does not return; should it, this rank still ends
  }

 private:
  template <class T>
  std::vector<T> gather(const std::vector<T>& local, MPI_Datatype type) {
    const int mine = as_count(static_cast<int64_t>(local.size()), "all-gather");
    std::vector<int> counts(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallgather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD,
                             &request),
              "MPI_Iallgather");
    wait_for(&request, 1, "MPI_Iallgather", timeout_seconds_);
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      offsets[static_cast<size_t>(r)] = as_count(total, "all-gather");
      total += counts[static_cast<size_t>(r)];
    }
    std::vector<T> all(static_cast<size_t>(total));
    check_mpi(MPI_Iallgatherv(local.data(), mine, type, all.data(), counts.data(),
                              offsets.data(), type, MPI_COMM_WORLD, &request),
              "MPI_Iallgatherv");
    wait_for(&request, 1, "MPI_Iallgatherv", timeout_seconds_);
    return all;
  }

  int rank_ = 0, size_ = 1;
  bool owns_mpi_ = false;
  double timeout_seconds_ = 0;  // PNEUMO_COLLECTIVE_TIMEOUT
  std::vector<MPI_Request> requests_;  // started, not yet finished
};

// The rank's place among the ranks on its machine, as the launcher numbers them.
int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* value = std::getenv(name)) return std::atoi(value);
  return 0;
}

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() {
  return std::make_unique<MpiCommunicator>();
}

#else

std::unique_ptr<Communicator> make_mpi_communicator() {
  throw Error("pneumo was built without MPI");
}

namespace {
int local_rank() { return 0; }
}  // namespace

#endif

void select_local_gpu(const Communicator& group) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // no GPU here: the CPU backend (or --device auto) decides what to do
    return;
  }
  const int device = local_rank() % count;
  const cudaError_t status = cudaSetDevice(device);
  if (status != cudaSuccess)
    throw Error(detail::concat("rank ", group.rank(), ": cannot use GPU ", device, ": ",
                               cudaGetErrorString(status)));
}

}  // namespace pneumo::dist
