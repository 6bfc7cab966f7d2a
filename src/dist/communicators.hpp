// The communicators behind pneumo::make_communicator and add_transport (internal).
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
// Replaces `group` by one whose device collectives go through NCCL on the backend's stream (its
// unique id broadcast through `group`) and whose host collectives go through `group`. Throws when
// pneumo was built without NCCL or NCCL fails to start; `group` is then left as it was.
void wrap_in_nccl(std::unique_ptr<Communicator>& group, Backend& backend);

}  // namespace pneumo::dist
