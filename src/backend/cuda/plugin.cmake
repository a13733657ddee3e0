# plugin.cmake — the CUDA plugin's target, its sources, flags and
# architectures, written once for the two builds that make it:
#   cuda.cmake, inside embd's own project, with the CUDA compiler CMake finds
#     there (CUDA 13: libembd-cuda13.so next to libembd.so);
#   src/backend/cuda/CMakeLists.txt, a project of its own for a second
#     toolkit, since one CMake project has one CUDA compiler (CUDA 11.8:
#     libembd-cuda11.so, see scripts/build-cuda11).
# The plugin is named after its toolkit's major version: libembd-cudaMAJOR.so.
#
# Architectures: CMAKE_CUDA_ARCHITECTURES when the caller sets it (e.g. a
# shorter list for a quicker build), else every one the plugin supports that
# the toolkit compiles: sm_75, sm_80, sm_86, sm_89, sm_90 and compute_90 PTX
# (for GPUs newer than the toolkit knows); from CUDA 12.8 on also sm_100 and
# sm_120 (Blackwell) code.

set(EMBD_CUDA_DIR ${CMAKE_CURRENT_LIST_DIR})
get_filename_component(EMBD_CUDA_ROOT ${CMAKE_CURRENT_LIST_DIR}/../../.. ABSOLUTE)

# embd_cuda_enable() — enables the CUDA language and finds the toolkit. Call
# it where CMAKE_CUDA_ARCHITECTURES is still as the caller gave it.
macro(embd_cuda_enable)
  if(DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(EMBD_CUDA_ARCHS_GIVEN TRUE)
  else()
    # Only for CMake's compiler check; embd_cuda_plugin sets the real list
    # once the toolkit's version is known. Set here, CMake caches none of its own.
    set(EMBD_CUDA_ARCHS_GIVEN FALSE)
    set(CMAKE_CUDA_ARCHITECTURES 75-real)
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
endmacro()

# embd_cuda_plugin(TARGET) — adds the MODULE library TARGET, libembd-cudaMAJOR.so:
# static CUDA runtime, cuBLASLt and cuBLAS, hidden symbols but the entry
# point, warnings as errors in nvcc and in the host compiler.
function(embd_cuda_plugin target)
  if(EMBD_CUDA_ARCHS_GIVEN)
    set(archs ${CMAKE_CUDA_ARCHITECTURES})
  else()
    set(archs 75-real 80-real 86-real 89-real 90)
    if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.8)
      list(APPEND archs 100-real 120-real)
    endif()
  endif()
  string(REGEX MATCH "^[0-9]+" major "${CMAKE_CUDA_COMPILER_VERSION}")
  if(NOT major MATCHES "^(11|13)$")
    message(WARNING "embd: libembd-cuda${major}.so is not a plugin libembd looks for "
                    "(libembd-cuda13.so, libembd-cuda11.so: src/backend/cuda/loader.c)")
  endif()
  file(GLOB sources CONFIGURE_DEPENDS ${EMBD_CUDA_DIR}/*.cu)
  add_library(${target} MODULE ${sources})
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME embd-cuda${major} PREFIX lib
    CUDA_ARCHITECTURES "${archs}" CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
    CUDA_RUNTIME_LIBRARY Static CUDA_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden)
  target_include_directories(${target} PRIVATE ${EMBD_CUDA_ROOT}/include ${EMBD_CUDA_ROOT}/src)
  # The project's C warning flags are not for nvcc: warnings as errors, nvcc's own way.
  set_property(TARGET ${target} PROPERTY COMPILE_OPTIONS "")
  set_property(TARGET ${target} PROPERTY LINK_OPTIONS "")
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings
    -Xcompiler=-Wall,-Wextra,-Werror,-fvisibility=hidden --expt-relaxed-constexpr -lineinfo>)
  target_link_libraries(${target} PRIVATE CUDA::cublasLt CUDA::cublas CUDA::cudart_static)
  message(STATUS "embd: CUDA ${CMAKE_CUDA_COMPILER_VERSION} plugin "
                 "libembd-cuda${major}.so for ${archs}")
endfunction()
