// Device collectives through NCCL on the CUDA backend's stream, so the all-reduce is ordered after
// the backward pass and before the optimizer without a host synchronisation; the unique id and
// every host collective go through the host group (MPI, or the group of one). A watchdog thread
// asks NCCL every second for an asynchronous error (a peer or link gone bad while a collective is
// in flight, where the stream would otherwise wait forever): on one it names the rank and the
// error, aborts the communicator (which unblocks the waiting kernels) and ends the process, so
// the launcher stops every rank; checkpoints are written whole or not at all (atomic renames). It
// also ends the rank when a collective is still unfinished collective_timeout_seconds() after it
// was issued (a peer dead or hung without NCCL noticing, which NCCL would wait for forever).
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include "dist/communicators.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"

#ifdef PNEUMO_WITH_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace pneumo::dist {

#ifdef PNEUMO_WITH_NCCL
namespace {

class NcclCommunicator final : public Communicator {
 public:
  // Takes `host` over only once NCCL has started: on a throw the caller keeps it, to report the
  // failing rank and stop the others through it.
  NcclCommunicator(std::unique_ptr<Communicator>& host, Backend& backend)
      : rank_(host->rank()),
        size_(host->size()),
        stream_(static_cast<cudaStream_t>(backend.native_stream())),
        timeout_seconds_(collective_timeout_seconds()) {
    PNEUMO_CHECK(backend.device() == Device::Cuda && stream_ != nullptr,
                 "NCCL needs the CUDA backend's stream");
    try {
      ncclUniqueId id{};
      if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      host->broadcast_bytes(&id, sizeof(id));
      check(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
      check_cuda(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), "cudaStreamCreate");
      check_cuda(cudaEventCreateWithFlags(&issued_, cudaEventDisableTiming), "cudaEventCreate");
      check_cuda(cudaEventCreateWithFlags(&reduced_, cudaEventDisableTiming), "cudaEventCreate");
      for (InFlight& slot : in_flight_)
        check_cuda(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming), "cudaEventCreate");
      check_cuda(cudaGetDevice(&device_), "cudaGetDevice");
      watchdog_ = std::thread([this] { watch(); });
    } catch (...) {
      release(/*in_error=*/true);
      throw;
    }
    host_ = std::move(host);
  }
  ~NcclCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    // A communicator in error may never finish a destroy (it waits for its peers): abort it.
    ncclResult_t async = ncclSuccess;
    const bool in_error =
        comm_ != nullptr && (ncclCommGetAsyncError(comm_, &async) != ncclSuccess ||
                             (async != ncclSuccess && async != ncclInProgress));
    release(in_error);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override {
    int version = 0;
    ncclGetVersion(&version);
    return detail::concat("NCCL ", version / 10000, ".", (version / 100) % 100, " (host: ",
                          host_->name(), ")");
  }

  void all_reduce_sum(float* values, int64_t count, Device device) override {
    if (device != Device::Cuda) return host_->all_reduce_sum(values, count, device);
    check(ncclAllReduce(values, values, static_cast<size_t>(count), ncclFloat, ncclSum, comm_,
                        stream_),
          "ncclAllReduce");
    issued(kMainStream, stream_);
  }
  // A bucket travels on a side stream once the ops issued so far on the backend's stream (the
  // backward of the layers that wrote it) are done, while the backward goes on; finishing makes
  // the backend's stream wait for the side stream. No host synchronisation either way.
  void start_all_reduce_sum(float* values, int64_t count, Device device) override {
    if (device != Device::Cuda) return host_->start_all_reduce_sum(values, count, device);
    check_cuda(cudaEventRecord(issued_, stream_), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(side_, issued_, 0), "cudaStreamWaitEvent");
    check(ncclAllReduce(values, values, static_cast<size_t>(count), ncclFloat, ncclSum, comm_,
                        side_),
          "ncclAllReduce");
    issued(kSideStream, side_);
    pending_ = true;
  }
  void finish_all_reduces() override {
    host_->finish_all_reduces();
    if (!pending_) return;
    check_cuda(cudaEventRecord(reduced_, side_), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(stream_, reduced_, 0), "cudaStreamWaitEvent");
    pending_ = false;
  }
  void all_reduce_sum(double* values, int count) override { host_->all_reduce_sum(values, count); }
  std::vector<double> all_gather(const std::vector<double>& local) override {
    return host_->all_gather(local);
  }
  std::vector<float> all_gather(const std::vector<float>& local) override {
    return host_->all_gather(local);
  }
  void broadcast(float* values, int64_t count, Device device) override {
    if (device != Device::Cuda) return host_->broadcast(values, count, device);
    check(ncclBroadcast(values, values, static_cast<size_t>(count), ncclFloat, 0, comm_, stream_),
          "ncclBroadcast");
    issued(kMainStream, stream_);
  }
  void broadcast_bytes(void* data, size_t bytes) override { host_->broadcast_bytes(data, bytes); }
  // Ends every rank through the host group (MPI_Abort) without aborting the NCCL communicator
  // first: since NCCL 2.16 ncclCommAbort may wait for the other ranks of the node to abort too
  // (NVIDIA/nccl#863), and they are waiting in a collective for this one, so it could hang the
  // job. Ending the process frees what the communicator holds.
  [[noreturn]] void abort(int status) override {
    {
      // The watchdog stops looking: it holds mutex_ through each look, so none starts after this.
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    host_->abort(status);
    std::_Exit(status);  // not reached: the host group's abort ends the process
  }

 private:
  // The watchdog's loop: every kPoll, NCCL's asynchronous error state; on an error, the message
  // and the process ended (status 1), without ncclCommAbort: the main thread may be inside a
  // collective on the same communicator, and the abort may wait for the other ranks (see abort()).
  void watch() {
    // This rank's GPU, before any CUDA call of the thread's: without it the runtime would make a
    // context on GPU 0 for the event queries, memory taken from whichever rank owns GPU 0.
    const bool can_query = cudaSetDevice(device_) == cudaSuccess;
    constexpr auto kPoll = std::chrono::seconds(1);
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, kPoll, [this] { return stopping_; })) {
      if (comm_ == nullptr) continue;
      if (can_query) end_if_overdue();
      ncclResult_t async = ncclSuccess;
      const ncclResult_t queried = ncclCommGetAsyncError(comm_, &async);
      if (queried == ncclSuccess && (async == ncclSuccess || async == ncclInProgress)) continue;
      const ncclResult_t error = queried != ncclSuccess ? queried : async;
      std::cerr << "pneumo: error on rank " << rank_ << " of " << size_ << ": NCCL reported "
                << ncclGetErrorString(error) << " (" << ncclGetLastError(comm_)
                << ") while a collective was in flight; ending this rank (the launcher stops the "
                << "others)" << std::endl;
      std::_Exit(1);
    }
  }

  // An event recorded after the latest collective issued on `stream`, and when it was issued, for
  // the watchdog. The slot is off while the event is recorded again (outside mutex_, so that a
  // CUDA call that blocks cannot stop the watchdog), so a new recording never pairs with an old
  // time. Not while the stream is being recorded into a CUDA graph: the event would be recorded
  // again at every replay, long after the time kept here.
  void issued(int slot, cudaStream_t stream) {
    if (timeout_seconds_ <= 0) return;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone) return;
    InFlight& latest = in_flight_[slot];
    {
      std::lock_guard<std::mutex> lock(mutex_);
      latest.pending = false;
    }
    check_cuda(cudaEventRecord(latest.done, stream), "cudaEventRecord");
    std::lock_guard<std::mutex> lock(mutex_);
    latest.issued_at = Clock::now();
    latest.pending = true;
  }

  // Under mutex_ (the watchdog): a collective unfinished timeout_seconds_ after it was issued ends
  // the rank, as an NCCL error does. The event is asked only then, so a finished one costs nothing
  // until it is old; an error from the query is the main thread's to report.
  void end_if_overdue() {
    if (timeout_seconds_ <= 0) return;
    for (InFlight& slot : in_flight_) {
      if (!slot.pending) continue;
      const double waited = std::chrono::duration<double>(Clock::now() - slot.issued_at).count();
      if (waited < timeout_seconds_) continue;
      const cudaError_t state = cudaEventQuery(slot.done);
      if (state != cudaErrorNotReady) {
        slot.pending = false;
        continue;
      }
      std::cerr << "pneumo: error on rank " << rank_ << " of " << size_ << ": an NCCL collective "
                << "issued " << static_cast<long long>(waited) << " s ago has not finished "
                << "(PNEUMO_COLLECTIVE_TIMEOUT=" << timeout_seconds_ << " s): a peer may have "
                << "died or hung; ending this rank (the launcher stops the others)" << std::endl;
      std::_Exit(1);
    }
  }

  // The communicator (aborted when `in_error`), the side stream and the events, as far as made.
  void release(bool in_error) {
    if (comm_) in_error ? ncclCommAbort(comm_) : ncclCommDestroy(comm_);
    comm_ = nullptr;
    for (InFlight& slot : in_flight_) {
      if (slot.done) cudaEventDestroy(slot.done);
      slot.done = nullptr;
    }
    if (reduced_) cudaEventDestroy(reduced_);
    if (issued_) cudaEventDestroy(issued_);
    if (side_) cudaStreamDestroy(side_);
    reduced_ = issued_ = nullptr;
    side_ = nullptr;
  }

  void check_cuda(cudaError_t result, const char* call) const {
    if (result == cudaSuccess) return;
    throw Error(detail::concat(call, " failed on rank ", rank_, ": ",
                               cudaGetErrorString(result)));
  }
  void check(ncclResult_t result, const char* call) const {
    if (result == ncclSuccess) return;
    throw Error(detail::concat(call, " failed on rank ", rank_, ": ", ncclGetErrorString(result),
                               comm_ ? detail::concat(" (", ncclGetLastError(comm_), ")")
                                     : std::string()));
  }

  int rank_, size_;
  std::unique_ptr<Communicator> host_;  // set once NCCL has started
  cudaStream_t stream_;             // the backend's
  cudaStream_t side_ = nullptr;     // bucketed all-reduces
  cudaEvent_t issued_ = nullptr, reduced_ = nullptr;
  bool pending_ = false;            // a bucket started on the side stream, not yet waited for
  ncclComm_t comm_ = nullptr;
  // The latest collective on each stream (issued(), end_if_overdue()), read under mutex_.
  using Clock = std::chrono::steady_clock;
  static constexpr int kMainStream = 0, kSideStream = 1;
  struct InFlight {
    cudaEvent_t done = nullptr;
    Clock::time_point issued_at;
    bool pending = false;
  };
  InFlight in_flight_[2];
  double timeout_seconds_;  // 0: never
  int device_ = 0;          // this rank's GPU, made current on the watchdog's thread
  // The watchdog (watch()): comm_ is read by it and set to null by abort() under mutex_.
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace

void wrap_in_nccl(std::unique_ptr<Communicator>& group, Backend& backend) {
  group = std::make_unique<NcclCommunicator>(group, backend);
}

#else

void wrap_in_nccl(std::unique_ptr<Communicator>&, Backend&) {
  throw Error("pneumo was built without NCCL");
}

#endif

}  // namespace pneumo::dist
