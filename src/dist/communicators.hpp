// The communicators behind pneumo::make_communicator and with_transport (internal).
#pragma once

#include <memory>

#include "pneumo/distributed.hpp"

namespace pneumo::dist {

// A group of one of its own (src/core/single_process.cpp), for a run that owns its group.
std::unique_ptr<Communicator> make_single_process();

// MPI_COMM_WORLD; MPI is initialised on creation and finalised on destruction. Device buffers
// travel through host copies. Throws when pneumo was built without MPI.
std::unique_ptr<Communicator> make_mpi_communicator();
// Makes GPU (local rank mod GPUs on this machine) current, when there are GPUs; does nothing
// otherwise.
void select_local_gpu(const Communicator& group);
// Device collectives through NCCL on the backend's stream (its unique id broadcast through
// `host`); host collectives through `host`. Throws when pneumo was built without NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host,
                                                     Backend& backend);

}  // namespace pneumo::dist
