/* search.cuh — what backend.cu needs from search.cu (the store's GPU scoring,
 * struct embd_cuda_searchops in plugin.h): the table and the host functions. */
#ifndef EMBD_CUDA_SEARCH_CUH
#define EMBD_CUDA_SEARCH_CUH

#include "backend/cuda/plugin.h"

extern const struct embd_cuda_searchops embd_cuda_search_ops;

/* Gives search.cu libembd's allocator (called by the plugin's entry point). */
void embd_cuda_search_bind(const struct embd_cuda_host *h);

#endif
