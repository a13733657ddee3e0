# cuda.cmake — builds libembd-cuda.so (a MODULE library that libembd loads with
# dlopen) when EMBD_CUDA is ON, or AUTO and a CUDA compiler is found.
# Sets EMBD_HAVE_CUDA and the target embd_cuda.
set(EMBD_HAVE_CUDA OFF)
if(EMBD_CUDA STREQUAL "AUTO" AND EMBD_SANITIZE)
  # nvcc takes minutes for five architectures; the sanitizer build tests the
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
  # sm_75 .. sm_90 code plus compute_90 PTX for newer GPUs.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 75-real 80-real 86-real 89-real 90)
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  file(GLOB EMBD_CUDA_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/backend/cuda/*.cu)
  add_library(embd_cuda MODULE ${EMBD_CUDA_SOURCES})
  set_target_properties(embd_cuda PROPERTIES OUTPUT_NAME embd-cuda PREFIX lib
                        CUDA_RUNTIME_LIBRARY Static CUDA_VISIBILITY_PRESET hidden
                        CXX_VISIBILITY_PRESET hidden)
  target_include_directories(embd_cuda PRIVATE ${PROJECT_SOURCE_DIR}/include
                             ${PROJECT_SOURCE_DIR}/src)
  # The project's C warning flags are not for nvcc: warnings as errors, nvcc's own way.
  set_property(TARGET embd_cuda PROPERTY COMPILE_OPTIONS "")
  set_property(TARGET embd_cuda PROPERTY LINK_OPTIONS "")
  target_compile_options(embd_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror,-fvisibility=hidden
    --expt-relaxed-constexpr -lineinfo>)
  target_link_libraries(embd_cuda PRIVATE CUDA::cublasLt CUDA::cublas CUDA::cudart_static)
  target_compile_definitions(embd PRIVATE EMBD_HAVE_CUDA=1)
  target_compile_definitions(embd_internal PRIVATE EMBD_HAVE_CUDA=1)
endif()
