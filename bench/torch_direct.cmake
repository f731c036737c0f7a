# LibTorch without its CMake config, for the benchmark-only build: its headers and shared libraries used
# directly, as torch.utils.cpp_extension uses a pip wheel's torch/include and torch/lib.
# bench/gpu-check.sh falls back to this when PyTorch's own config fails: on a CUDA build that config
# enables CMake's CUDA language and looks up every CUDA library of a complete toolkit, which a machine
# with only pip's CUDA wheels may not have. Sets what find_package(Torch) would for this project:
# TORCH_LIBRARIES, TORCH_CXX_FLAGS and Torch_VERSION, and, for a CUDA LibTorch whose runtime headers
# are given, the c10_cuda target and CUDA_INCLUDE_DIRS (bench/CMakeLists.txt: peak GPU memory).
#
#   MOESWEEP_TORCH_DIRECT_INCLUDE  LibTorch's include folder (holds torch/csrc/api/include/torch/torch.h)
#   MOESWEEP_TORCH_DIRECT_LIB      the folder of libtorch.so, libtorch_cpu.so, libc10.so (and the CUDA ones)
#   MOESWEEP_TORCH_CXX11_ABI       0 or 1, as torch._C._GLIBCXX_USE_CXX11_ABI says
#   MOESWEEP_CUDA_INCLUDE_DIR      optional: the folder of cuda_runtime_api.h
set(_include "${MOESWEEP_TORCH_DIRECT_INCLUDE}")
set(_lib "${MOESWEEP_TORCH_DIRECT_LIB}")
if(NOT EXISTS "${_include}/torch/csrc/api/include/torch/torch.h")
  message(FATAL_ERROR "MOESWEEP_TORCH_DIRECT_INCLUDE (${_include}) holds no torch/csrc/api/include/torch/torch.h")
endif()
foreach(_name torch torch_cpu c10)
  if(NOT EXISTS "${_lib}/lib${_name}.so")
    message(FATAL_ERROR "MOESWEEP_TORCH_DIRECT_LIB (${_lib}) holds no lib${_name}.so")
  endif()
endforeach()
if(NOT DEFINED MOESWEEP_TORCH_CXX11_ABI)
  message(FATAL_ERROR "MOESWEEP_TORCH_DIRECT_LIB needs MOESWEEP_TORCH_CXX11_ABI (0 or 1)")
endif()

file(STRINGS "${_include}/torch/csrc/api/include/torch/version.h" _version_lines
     REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) ")
set(Torch_VERSION "")
foreach(_line IN LISTS _version_lines)
  string(REGEX REPLACE ".* ([0-9]+).*" "\\1" _number "${_line}")
  string(APPEND Torch_VERSION "${_number}.")
endforeach()
string(REGEX REPLACE "\\.$" " (headers and libraries used directly)" Torch_VERSION "${Torch_VERSION}")

find_package(Threads REQUIRED)
add_library(moesweep_torch_direct INTERFACE)
target_include_directories(moesweep_torch_direct SYSTEM INTERFACE
  "${_include}" "${_include}/torch/csrc/api/include")
target_link_libraries(moesweep_torch_direct INTERFACE
  "${_lib}/libtorch.so" "${_lib}/libtorch_cpu.so" "${_lib}/libc10.so" Threads::Threads ${CMAKE_DL_LIBS})
if(EXISTS "${_lib}/libtorch_cuda.so")
  # Nothing calls into libtorch_cuda.so by name; loading it is what registers the CUDA kernels, so keep
  # it even where the linker drops unused libraries (as Caffe2's own targets do).
  target_link_libraries(moesweep_torch_direct INTERFACE
    "-Wl,--no-as-needed,\"${_lib}/libtorch_cuda.so\" -Wl,--as-needed")
  if(MOESWEEP_CUDA_INCLUDE_DIR)
    add_library(c10_cuda SHARED IMPORTED)
    set_target_properties(c10_cuda PROPERTIES IMPORTED_LOCATION "${_lib}/libc10_cuda.so")
    target_link_libraries(moesweep_torch_direct INTERFACE c10_cuda)
    set(CUDA_INCLUDE_DIRS "${MOESWEEP_CUDA_INCLUDE_DIR}")
  else()
    # c10/cuda's headers include the CUDA runtime's: without them, no peak GPU memory.
    target_link_libraries(moesweep_torch_direct INTERFACE "${_lib}/libc10_cuda.so")
    message(STATUS "moesweep: no MOESWEEP_CUDA_INCLUDE_DIR, so trainer_bench reports no peak GPU memory")
  endif()
endif()
set(TORCH_LIBRARIES moesweep_torch_direct)
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=${MOESWEEP_TORCH_CXX11_ABI}")
