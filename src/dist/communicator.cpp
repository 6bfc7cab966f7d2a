// The launcher's environment and the choice of transport (distributed.hpp).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <initializer_list>

#include "dist/communicators.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"

namespace pneumo {
namespace {

bool has_env(const char* name) { return std::getenv(name) != nullptr; }

}  // namespace

bool launched_by_mpi() {
  return has_env("OMPI_COMM_WORLD_SIZE") || has_env("PMIX_RANK") || has_env("PMI_SIZE") ||
         (has_env("SLURM_NTASKS") && has_env("SLURM_PROCID") && has_env("SLURM_STEP_ID"));
}

namespace {

// The first of `names` set to a whole number in [least, 2^20], or -1.
int launcher_number(std::initializer_list<const char*> names, long least) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value == nullptr) continue;
    char* end = nullptr;
    const long number = std::strtol(value, &end, 10);
    if (end != value && *end == '\0' && number >= least && number <= 1 << 20)
      return static_cast<int>(number);
  }
  return -1;
}

}  // namespace

int launcher_size() {
  return std::max(0, launcher_number({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}, 1));
}

int launcher_rank() {
  if (!launched_by_mpi()) return -1;
  return launcher_number({"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}, 0);
}

double collective_timeout_seconds() {
  constexpr double kDefault = 600.0;
  const char* value = std::getenv("PNEUMO_COLLECTIVE_TIMEOUT");
  if (value == nullptr || *value == '\0') return kDefault;
  char* end = nullptr;
  const double seconds = std::strtod(value, &end);
  if (end == value || *end != '\0' || !std::isfinite(seconds) || seconds < 0)
    throw UsageError(detail::concat("PNEUMO_COLLECTIVE_TIMEOUT=", value,
                               ": expected a number of seconds >= 0 (0: no timeout)"));
  return seconds;
}

int64_t bucket_elements(double mebibytes) {
  if (!(mebibytes > 0)) return 0;
  const auto floats = static_cast<int64_t>(mebibytes * (1 << 20)) / static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(floats, 1);
}

bool built_with_mpi() {
#ifdef PNEUMO_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool built_with_nccl() {
#ifdef PNEUMO_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> make_communicator() {
  if (!launched_by_mpi()) return dist::make_single_process();
  if (!built_with_mpi() && launcher_size() == 1) return dist::make_single_process();
  if (!built_with_mpi())
    throw Error("pneumo was started by an MPI launcher (mpirun or srun) but built without MPI; "
                "install Open MPI (scripts/install_deps.sh) and build again, or run one process");
  // A bad PNEUMO_COLLECTIVE_TIMEOUT is refused before MPI starts (the MPI communicator's
  // watchdog reads it), as bad usage: a rank that failed after MPI_Init left it unfinalised.
  collective_timeout_seconds();
  std::unique_ptr<Communicator> group = dist::make_mpi_communicator();
  dist::select_local_gpu(*group);
  return group;
}

void check_transport(AllReduceTransport transport, Device device) {
  if (transport != AllReduceTransport::Nccl) return;
  if (device != Device::Cuda)
    throw Error("--all-reduce nccl needs the CUDA backend (this run is on the CPU); the CPU "
                "backend adds gradients through MPI");
  if (!built_with_nccl())
    throw Error("--all-reduce nccl: pneumo was built without NCCL (not found next to the CUDA "
                "toolkit when CMake ran)");
}

void add_transport(std::unique_ptr<Communicator>& group, Backend& backend,
                   AllReduceTransport transport) {
  const bool cuda = backend.device() == Device::Cuda;
  if (transport == AllReduceTransport::Mpi) return;  // one process: nothing travels
  check_transport(transport, backend.device());
  if (transport == AllReduceTransport::Nccl) {
    dist::wrap_in_nccl(group, backend);
  } else if (cuda && group->size() > 1 && built_with_nccl()) {
    dist::wrap_in_nccl(group, backend);
  }
}

}  // namespace pneumo
