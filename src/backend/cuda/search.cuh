/* search.cuh — what backend.cu needs from search.cu (the store's GPU scoring,
 * struct embd_cuda_searchops in plugin.h): the table, the host functions and
 * the sticky-error test both files use. */
#ifndef EMBD_CUDA_SEARCH_CUH
#define EMBD_CUDA_SEARCH_CUH

#include "backend/cuda/plugin.h"

#include <cuda_runtime.h>

extern const struct embd_cuda_searchops embd_cuda_search_ops;

/* Whether err leaves the CUDA context unusable (every later call fails):
 * illegal address, launch failure and the like. Used by both files. */
bool embd_cuda_sticky(cudaError_t err);

/* Gives search.cu libembd's allocator (called by the plugin's entry point). */
void embd_cuda_search_bind(const struct embd_cuda_host *h);

#endif
