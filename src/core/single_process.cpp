// The group of one (distributed.hpp): in the core layer, so that the trainer's default needs
// neither MPI nor NCCL.
#include <cstdlib>

#include "pneumo/distributed.hpp"

namespace pneumo {
namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "one process"; }
  void all_reduce_sum(float*, int64_t, Device) override {}
  void all_reduce_sum(double*, int) override {}
  std::vector<double> all_gather(const std::vector<double>& local) override { return local; }
  std::vector<float> all_gather(const std::vector<float>& local) override { return local; }
  void broadcast(float*, int64_t, Device) override {}
  void broadcast_bytes(void*, size_t) override {}
  [[noreturn]] void abort(int status) override { std::exit(status); }
};

}  // namespace

Communicator& single_process() {
  static SingleProcess group;
  return group;
}

namespace dist {
std::unique_ptr<Communicator> make_single_process() { return std::make_unique<SingleProcess>(); }
}  // namespace dist

}  // namespace pneumo
