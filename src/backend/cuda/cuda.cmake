# cuda.cmake — builds the CUDA plugin libembd-cudaMAJOR.so (a MODULE library
# that libembd loads with dlopen; libembd-cuda13.so with CUDA 13) when
# EMBD_CUDA is ON, or AUTO and a CUDA compiler is found. The target itself
# is in plugin.cmake, shared with the plugin's own project (CMakeLists.txt
# here), which builds libembd-cuda11.so with CUDA 11.8 (scripts/build-cuda11).
# Sets EMBD_HAVE_CUDA and the target embd_cuda.
set(EMBD_HAVE_CUDA OFF)
if(EMBD_CUDA STREQUAL "AUTO" AND EMBD_SANITIZE)
  # nvcc's seven architectures take about 20 s of CPU; the sanitizer build tests the
  # CPU library (which runs without the plugin). EMBD_CUDA=ON forces it.
  message(STATUS "embd: sanitizer build; CUDA plugin skipped (EMBD_CUDA=ON to build it)")
elseif(NOT EMBD_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(EMBD_HAVE_CUDA ON)
  elseif(EMBD_CUDA STREQUAL "ON")
    message(FATAL_ERROR "EMBD_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "embd: no CUDA compiler; building without the CUDA plugin")
  endif()
endif()

if(EMBD_HAVE_CUDA)
  include(${CMAKE_CURRENT_LIST_DIR}/plugin.cmake)
  embd_cuda_enable()
  embd_cuda_plugin(embd_cuda)
  target_compile_definitions(embd PRIVATE EMBD_HAVE_CUDA=1)
  target_compile_definitions(embd_internal PRIVATE EMBD_HAVE_CUDA=1)
endif()

# Not a test: the card's ceilings (cuBLASLt peak, each model's GEMM shapes,
# memory bandwidth of the element-wise kernels) for scripts/gpu-check. Only
# where bench/ is there (the container images' build context leaves it out).
if(EMBD_HAVE_CUDA AND EXISTS ${PROJECT_SOURCE_DIR}/bench/cuda_ceilings.cu)
  add_executable(bench_cuda_ceilings ${PROJECT_SOURCE_DIR}/bench/cuda_ceilings.cu)
  target_include_directories(bench_cuda_ceilings PRIVATE ${PROJECT_SOURCE_DIR}/include
                             ${PROJECT_SOURCE_DIR}/src)
  set_property(TARGET bench_cuda_ceilings PROPERTY COMPILE_OPTIONS "")
  set_property(TARGET bench_cuda_ceilings PROPERTY LINK_OPTIONS "")
  target_compile_options(bench_cuda_ceilings PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror>)
  # one architecture and its PTX (newer GPUs JIT it): a quick build in every CUDA tree
  set_target_properties(bench_cuda_ceilings PROPERTIES CUDA_RUNTIME_LIBRARY Static
                        CUDA_ARCHITECTURES 90)
  target_link_libraries(bench_cuda_ceilings PRIVATE CUDA::cublasLt)
endif()
