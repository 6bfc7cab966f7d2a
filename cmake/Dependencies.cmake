# Finds everything pneumo links against and gathers it in one interface target, pneumo::deps.
# CUDA (cudart, cuBLAS, cuDNN 9, NVTX3) is required everywhere: it compiles and links without a GPU.
find_package(Threads REQUIRED)
find_package(CUDAToolkit REQUIRED)

# A relative PNEUMO_DEPS_DIR (-DPNEUMO_DEPS_DIR=.deps) means relative to the source tree; if(EXISTS)
# below is only well-defined on absolute paths.
if(PNEUMO_DEPS_DIR)
  get_filename_component(PNEUMO_DEPS_DIR "${PNEUMO_DEPS_DIR}" ABSOLUTE BASE_DIR "${PROJECT_SOURCE_DIR}")
endif()

# cuDNN: the toolkit's copy, a CUDNN_ROOT, or the one inside a Python environment (the GPU host's
# PyTorch ships nvidia/cudnn/{include,lib}); the library may only exist as libcudnn.so.9 there.
set(CUDNN_ROOT "" CACHE PATH "Folder holding cuDNN's include/ and lib/")
find_path(CUDNN_INCLUDE_DIR cudnn.h
  HINTS ${CUDNN_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS} /usr/include /usr/local/include)
find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9
  HINTS ${CUDNN_ROOT}/lib ${CUDNN_ROOT}/lib64 ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
  message(FATAL_ERROR "cuDNN 9 not found: set -DCUDNN_ROOT=<folder with include/cudnn.h and lib/libcudnn.so*>")
endif()
message(STATUS "cuDNN: ${CUDNN_LIBRARY} (headers ${CUDNN_INCLUDE_DIR})")

add_library(pneumo_deps INTERFACE)
add_library(pneumo::deps ALIAS pneumo_deps)
target_include_directories(pneumo_deps INTERFACE ${CUDNN_INCLUDE_DIR})
target_link_libraries(pneumo_deps INTERFACE
  CUDA::cudart_static CUDA::cublas CUDA::nvtx3 ${CUDNN_LIBRARY} Threads::Threads ${CMAKE_DL_LIBS})

# JSON and command-line parsing: Debian packages, or headers under PNEUMO_DEPS_DIR.
find_package(nlohmann_json 3.10 QUIET)
if(nlohmann_json_FOUND)
  target_link_libraries(pneumo_deps INTERFACE nlohmann_json::nlohmann_json)
elseif(PNEUMO_DEPS_DIR AND EXISTS ${PNEUMO_DEPS_DIR}/nlohmann/json.hpp)
  target_include_directories(pneumo_deps SYSTEM INTERFACE ${PNEUMO_DEPS_DIR})
else()
  message(FATAL_ERROR "nlohmann-json not found: run scripts/install_deps.sh (or set PNEUMO_DEPS_DIR)")
endif()
find_package(CLI11 QUIET)
if(CLI11_FOUND)
  target_link_libraries(pneumo_deps INTERFACE CLI11::CLI11)
elseif(PNEUMO_DEPS_DIR AND EXISTS ${PNEUMO_DEPS_DIR}/CLI/CLI.hpp)
  target_include_directories(pneumo_deps SYSTEM INTERFACE ${PNEUMO_DEPS_DIR})
else()
  message(FATAL_ERROR "CLI11 not found: run scripts/install_deps.sh (or set PNEUMO_DEPS_DIR)")
endif()

# BLAS for the CPU backend's GEMMs. OpenBLAS is preferred (its thread count can be pinned to one
# per worker); without it the CPU backend uses its own blocked GEMM (slower, same results within
# float rounding).
set(PNEUMO_HAVE_BLAS OFF)
if(PNEUMO_WITH_BLAS)
  find_path(OPENBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas-pthread openblas)
  find_library(OPENBLAS_LIBRARY NAMES openblas)
  if(OPENBLAS_INCLUDE_DIR AND OPENBLAS_LIBRARY)
    target_include_directories(pneumo_deps INTERFACE ${OPENBLAS_INCLUDE_DIR})
    target_link_libraries(pneumo_deps INTERFACE ${OPENBLAS_LIBRARY})
    set(PNEUMO_HAVE_BLAS ON)
    message(STATUS "BLAS: ${OPENBLAS_LIBRARY}")
  else()
    message(WARNING "OpenBLAS not found: the CPU backend falls back to its built-in GEMM")
  endif()
endif()

# OpenCV: only core, imgproc and imgcodecs are needed. Debian's -dev packages for those three ship
# no CMake config, so headers and libraries are found directly.
if(PNEUMO_WITH_OPENCV)
  find_path(OpenCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4)
  foreach(component core imgproc imgcodecs)
    find_library(OpenCV_${component}_LIBRARY NAMES opencv_${component})
    if(NOT OpenCV_${component}_LIBRARY)
      message(FATAL_ERROR "OpenCV ${component} not found: run scripts/install_deps.sh or configure with -DPNEUMO_WITH_OPENCV=OFF")
    endif()
    target_link_libraries(pneumo_deps INTERFACE ${OpenCV_${component}_LIBRARY})
  endforeach()
  if(NOT OpenCV_INCLUDE_DIR)
    message(FATAL_ERROR "OpenCV headers not found: run scripts/install_deps.sh or configure with -DPNEUMO_WITH_OPENCV=OFF")
  endif()
  target_include_directories(pneumo_deps SYSTEM INTERFACE ${OpenCV_INCLUDE_DIR})
  # zlib (which OpenCV's PNG reading brings anyway): src/data/opencv/png_data.cpp inflates a PNG's
  # image data to find damage before libpng does.
  find_package(ZLIB REQUIRED)
  target_link_libraries(pneumo_deps INTERFACE ZLIB::ZLIB)
endif()

if(PNEUMO_SANITIZE)
  target_compile_options(pneumo_deps INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all>)
  target_link_options(pneumo_deps INTERFACE -fsanitize=address,undefined)
endif()

# Data-parallel training (src/dist/): MPI starts the ranks and carries host collectives (and the
# CPU backend's gradients); NCCL, shipped with the CUDA toolkit, carries device gradients. Both
# optional: without them pneumo trains as one process and says so when launched by mpirun.
set(PNEUMO_HAVE_MPI OFF)
if(PNEUMO_WITH_MPI)
  find_package(MPI COMPONENTS CXX QUIET)
  if(MPI_CXX_FOUND)
    set(PNEUMO_HAVE_MPI ON)
    message(STATUS "MPI: ${MPI_CXX_LIBRARIES}")
  else()
    message(STATUS "MPI not found: pneumo trains as one process (scripts/install_deps.sh installs Open MPI)")
  endif()
endif()
set(PNEUMO_HAVE_NCCL OFF)
if(PNEUMO_WITH_NCCL)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS})
  # NAMES_PER_DIR: the library beside the header found (NCCL_ROOT first), not a libnccl.so from
  # a system folder with another version's header.
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR
    HINTS ${NCCL_ROOT}/lib ${NCCL_ROOT}/lib64 ${CUDAToolkit_LIBRARY_DIR})
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(PNEUMO_HAVE_NCCL ON)
    message(STATUS "NCCL: ${NCCL_LIBRARY}")
  else()
    message(STATUS "NCCL not found: device gradients travel through MPI's host copies")
  endif()
endif()
