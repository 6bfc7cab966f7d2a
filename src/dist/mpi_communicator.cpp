// MPI_COMM_WORLD as a pneumo::Communicator. Every call checks MPI's return code (errors return
// instead of aborting, so the caller can say which rank failed and where); device buffers are
// copied through the host. A watchdog thread ends the rank when a collective is still unfinished
// PNEUMO_COLLECTIVE_TIMEOUT seconds after it began, as the NCCL watchdog does: MPI has no timeout
// of its own, and mpirun stops a job only when a rank exits, not when one hangs or is stopped.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
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

// The watchdog: a thread that wakes every second and, while a collective is under way (begin()
// to end(), around MPI's own blocking call, which progresses it at full speed), ends the process
// with a message once it has waited `timeout_seconds`: the launcher then stops the other ranks.
// A gap of more than 5 s between two wakes is the process suspended (Ctrl-Z, a scheduler's
// suspend), not time the collective waited: the deadline moves by it.
class CollectiveWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  CollectiveWatchdog(double timeout_seconds, int rank, int size)
      : timeout_(timeout_seconds), rank_(rank), size_(size) {
    if (timeout_ > 0) thread_ = std::thread([this] { watch(); });
  }
  ~CollectiveWatchdog() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  void begin(const char* call) {
    if (!thread_.joinable()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    call_ = call;
    began_ = Clock::now();
  }
  void end() {
    if (!thread_.joinable()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    call_ = nullptr;
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    Clock::time_point last = Clock::now();
    while (!stop_) {
      wake_.wait_for(lock, std::chrono::seconds(1));
      const Clock::time_point now = Clock::now();
      if (now - last > std::chrono::seconds(5)) began_ += now - last;  // suspended meanwhile
      last = now;
      if (call_ == nullptr) continue;
      const double waited = std::chrono::duration<double>(now - began_).count();
      if (waited <= timeout_) continue;
      const std::string line = detail::concat(
          "pneumo: error on rank ", rank_, " of ", size_, ": waited ",
          static_cast<int64_t>(waited), " s in an MPI collective (", call_,
          ") that another rank has not joined: it hangs, was stopped, or waits in another "
          "collective (PNEUMO_COLLECTIVE_TIMEOUT=", timeout_, " s; 0 turns this off)\n");
      std::fwrite(line.data(), 1, line.size(), stderr);
      std::fflush(stderr);
      std::_Exit(1);  // MPI_Abort is not for this thread; the launcher ends the other ranks
    }
  }

  const double timeout_;
  const int rank_, size_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  const char* call_ = nullptr;  // the collective under way, or none
  Clock::time_point began_;
  std::thread thread_;
};

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
    // make_communicator checked the value before MPI_Init; one made otherwise (a test) throws here.
    watchdog_ = std::make_unique<CollectiveWatchdog>(collective_timeout_seconds(), rank_, size_);
  }
  ~MpiCommunicator() override {
    watchdog_.reset();
    if (owns_mpi_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override {
    return detail::concat("MPI, ", size_, size_ == 1 ? " rank" : " ranks");
  }

  void all_reduce_sum(float* values, int64_t count, Device device) override {
    HostStaging staging(values, count, device);
    const int n = as_count(count, "all-reduce");
    watched("MPI_Allreduce", [&] {
      return MPI_Allreduce(MPI_IN_PLACE, staging.host(), n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    });
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
    started.swap(requests_);  // whatever the wait says, none is waited for twice
    watched("MPI_Waitall (gradients)", [&] {
      return MPI_Waitall(static_cast<int>(started.size()), started.data(), MPI_STATUSES_IGNORE);
    });
  }
  void all_reduce_sum(double* values, int count) override {
    watched("MPI_Allreduce", [&] {
      return MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    });
  }
  std::vector<double> all_gather(const std::vector<double>& local) override {
    return gather(local, MPI_DOUBLE);
  }
  std::vector<float> all_gather(const std::vector<float>& local) override {
    return gather(local, MPI_FLOAT);
  }
  void broadcast(float* values, int64_t count, Device device) override {
    HostStaging staging(values, count, device);
    const int n = as_count(count, "broadcast");
    watched("MPI_Bcast", [&] { return MPI_Bcast(staging.host(), n, MPI_FLOAT, 0, MPI_COMM_WORLD); });
    staging.write_back();
  }
  void broadcast_bytes(void* data, size_t bytes) override {
    const int n = as_count(static_cast<int64_t>(bytes), "broadcast");
    watched("MPI_Bcast", [&] { return MPI_Bcast(data, n, MPI_BYTE, 0, MPI_COMM_WORLD); });
  }
  [[noreturn]] void abort(int status) override {
    MPI_Abort(MPI_COMM_WORLD, status);
    std::_Exit(status);  // MPI_Abort does not return; should it, this rank still ends
  }

 private:
  // MPI's blocking `call` under the watchdog, its return code checked.
  template <class Call>
  void watched(const char* call, Call&& run) {
    watchdog_->begin(call);
    const int code = run();
    watchdog_->end();
    check_mpi(code, call);
  }

  template <class T>
  std::vector<T> gather(const std::vector<T>& local, MPI_Datatype type) {
    const int mine = as_count(static_cast<int64_t>(local.size()), "all-gather");
    std::vector<int> counts(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
    watched("MPI_Allgather", [&] {
      return MPI_Allgather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
    });
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      offsets[static_cast<size_t>(r)] = as_count(total, "all-gather");
      total += counts[static_cast<size_t>(r)];
    }
    std::vector<T> all(static_cast<size_t>(total));
    watched("MPI_Allgatherv", [&] {
      return MPI_Allgatherv(local.data(), mine, type, all.data(), counts.data(), offsets.data(),
                            type, MPI_COMM_WORLD);
    });
    return all;
  }

  int rank_ = 0, size_ = 1;
  bool owns_mpi_ = false;
  std::unique_ptr<CollectiveWatchdog> watchdog_;
  std::vector<MPI_Request> requests_;  // started, not yet finished
};

// The rank's place among the ranks on its machine, as the launcher numbers them (Open MPI, MPICH's
// Hydra, Slurm, a PMIx launcher, MVAPICH); 0 under none of them.
int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID",
                           "PMIX_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK"})
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
