// Device collectives through NCCL on the CUDA backend's stream, so the all-reduce is ordered after
// the backward pass and before the optimizer without a host synchronisation; the unique id and
// every host collective go through the host group (MPI, or the group of one).
#include <cstdlib>

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
  NcclCommunicator(std::unique_ptr<Communicator> host, Backend& backend)
      : host_(std::move(host)), stream_(static_cast<cudaStream_t>(backend.native_stream())) {
    PNEUMO_CHECK(backend.device() == Device::Cuda && stream_ != nullptr,
                 "NCCL needs the CUDA backend's stream");
    ncclUniqueId id{};
    if (host_->rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    host_->broadcast_bytes(&id, sizeof(id));
    check(ncclCommInitRank(&comm_, host_->size(), id, host_->rank()), "ncclCommInitRank");
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
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
  }
  void broadcast_bytes(void* data, size_t bytes) override { host_->broadcast_bytes(data, bytes); }
  [[noreturn]] void abort(int status) override {
    if (comm_) ncclCommAbort(comm_);  // unblocks kernels waiting on ranks that are gone
    comm_ = nullptr;
    host_->abort(status);
    std::_Exit(status);  // not reached: the host group's abort ends the process
  }

 private:
  void check(ncclResult_t result, const char* call) const {
    if (result == ncclSuccess) return;
    throw Error(detail::concat(call, " failed on rank ", host_->rank(), ": ",
                               ncclGetErrorString(result),
                               comm_ ? detail::concat(" (", ncclGetLastError(comm_), ")")
                                     : std::string()));
  }

  std::unique_ptr<Communicator> host_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host,
                                                     Backend& backend) {
  return std::make_unique<NcclCommunicator>(std::move(host), backend);
}

#else

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator>, Backend&) {
  throw Error("pneumo was built without NCCL");
}

#endif

}  // namespace pneumo::dist
