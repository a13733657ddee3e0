/* plugin.h — the interface between libembd and the CUDA plugin
 * (libembd-cuda13.so and libembd-cuda11.so, built from the .cu files here with
 * CUDA 13 and CUDA 11.8, and loaded with dlopen).
 *
 * The plugin exports one C function, EMBD_CUDA_ENTRY, that returns a constant
 * table: the backend operations plus device probes and test hooks. libembd
 * hands the plugin the few of its own functions the plugin needs (errors,
 * allocation, batch checks), since libembd's symbols are hidden. */
#ifndef EMBD_CUDA_PLUGIN_H
#define EMBD_CUDA_PLUGIN_H

#include "backend/backend.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2: the search table; 3: is_dead, mem_stats on the ops table; 4: pci_bus_id,
 * the memory limit in embd_backend_params */
#define EMBD_CUDA_ABI 4
#define EMBD_CUDA_ENTRY "embd_cuda_plugin_get"

/* What libembd lends the plugin. */
struct embd_cuda_host {
    enum embd_status (*error)(enum embd_status status, const char *fmt, ...);
    void *(*malloc)(size_t size);
    void (*free)(void *ptr);
    enum embd_status (*batch_check)(const embd_batch *batch, const struct embd_model *model);
};

struct embd_cuda_device_info {
    char name[256];
    int major, minor; /* compute capability */
    size_t total_mem; /* bytes */
    size_t free_mem;  /* bytes, at the time of the probe */
    int multiprocessors;
    char pci_bus_id[32]; /* "0000:3b:00.0", as NVML names the device; "" unknown */
};

/* Test hooks: each runs one device op on host fp32 data (uploaded, converted
 * to `dt` where the real forward pass uses dt, run, converted back). */
struct embd_cuda_testops {
    /* out (R, O) = x (R, K) W^T + b, W (O, K), b (O); exact-erf GELU if gelu. */
    enum embd_status (*linear)(int dev, enum embd_dtype dt, float *out, const float *x,
                               const float *W, const float *b, int R, int K, int O, bool gelu);
    /* out (R, H) = LayerNorm(x + add) with gains g (H), biases b (H). */
    enum embd_status (*add_layernorm)(int dev, enum embd_dtype dt, float *out, const float *x,
                                      const float *add, const float *g, const float *b, int R,
                                      int H, float eps);
    /* out (T, H) = attention over qkv (T, 3H) = [q | k | v] per token, packed
     * sequences given by seq_start (n+1), NH heads. */
    enum embd_status (*attention)(int dev, enum embd_dtype dt, float *out, const float *qkv,
                                  const int *seq_start, int n, int H, int NH);
    /* out (n, H) = CLS (mean = false) or mean pooling of x (T, H), then L2. */
    enum embd_status (*pool)(int dev, float *out, const float *x, const int *seq_start, int n,
                             int H, bool mean, bool normalize);
    /* Fails the device allocation after `n` more succeed (-1 disarms). */
    void (*fail_alloc_after)(long n);
    /* After `n` more embed calls succeed, the next one runs a kernel that
     * traps: a real sticky error (the device's context is lost for the
     * process), as a faulting GPU gives. -1 disarms. */
    void (*sticky_after)(long n);
};

/* Exact inner-product scoring for the embedded store (search.cu): the
 * store's vectors (n, D) are kept on one device in fp32, as on the host, so
 * a score differs from the CPU's only by summation order (~1e-7). Only the
 * scores, the O(n D) part, run on the GPU; the store picks the top-k on the
 * host with its own code, so both paths rank alike given the same scores.
 * Every function returns 0, or -1 with a one-line reason in why (cap bytes);
 * an index that failed may be freed and nothing else. */
struct embd_cuda_index;

struct embd_cuda_searchops {
    /* A new, empty index of D-dimensional rows on device dev, with room for
     * `rows` rows (grown as needed). */
    int (*create)(struct embd_cuda_index **out, int dev, int D, size_t rows, char *why, size_t cap);
    /* Appends n rows vecs (n, D) after the rows it holds. */
    int (*append)(struct embd_cuda_index *ix, const float *vecs, size_t n, char *why, size_t cap);
    /* scores (nq, rows) = queries (nq, D) . rows^T, into host memory
     * (cuBLAS Sgemv for nq = 1, else Sgemm; fp32, no TF32). */
    int (*score)(struct embd_cuda_index *ix, float *scores, const float *queries, size_t nq,
                 char *why, size_t cap);
    size_t (*rows)(const struct embd_cuda_index *ix);
    void (*free)(struct embd_cuda_index *ix); /* NULL is a no-op */
    /* Test hook: fails the index's device allocation after `n` more succeed
     * (-1 disarms). */
    void (*fail_alloc_after)(long n);
};

struct embd_cuda_plugin {
    int abi;                            /* EMBD_CUDA_ABI */
    const struct embd_backend_ops *ops; /* with is_dead and mem_stats */
    /* Versions as CUDA encodes them (12040 = 12.4); 0 when unknown (no driver). */
    int (*driver_version)(void);
    int (*runtime_version)(void);
    /* Number of devices, or -1 with a reason in why (no driver, ...). */
    int (*device_count)(char *why, size_t cap);
    /* 0, or -1 with a reason in why. */
    int (*device_info)(int index, struct embd_cuda_device_info *out, char *why, size_t cap);
    const struct embd_cuda_testops *test;
    const struct embd_cuda_searchops *search; /* ABI 2 */
};

typedef const struct embd_cuda_plugin *(*embd_cuda_entry_fn)(int abi,
                                                             const struct embd_cuda_host *host);

/* --- libembd side (loader.c) --- */

/* Loads a plugin once per process: $EMBD_CUDA_PLUGIN, else the newest of
 * libembd-cuda13.so and libembd-cuda11.so that the driver supports and that
 * loads, looked for in $EMBD_CUDA_PLUGIN_DIR, else next to libembd and then
 * in the loader's search path (embd_cuda_plugin_choice tells which and why).
 * NULL with a reason in why. */
const struct embd_cuda_plugin *embd_cuda_load(char *why, size_t cap);

/* A GPU memory limit (--gpu-memory-limit, $EMBD_GPU_MEMORY_LIMIT): bytes, or
 * a fraction of the device's memory; both 0: none. */
struct embd_gpu_limit {
    size_t bytes;
    double fraction;
};

/* Parses a limit: bytes with an optional K, M or G (powers of 1024: "512M",
 * "2G", "1073741824"), or a fraction of the device's memory written with a
 * point ("0.5", 0 < f <= 1). NULL, "" or "0": no limit. 0, or -1 with the
 * reason in why (cap bytes). */
int embd_gpu_limit_parse(const char *s, struct embd_gpu_limit *out, char *why, size_t cap);

/* Whether device `index` can run `model` (dtype dt; NULL model: any model):
 * driver, plugin, device, compute capability >= 7.5 (8.0 for bf16), free
 * memory for the weights and a batch of the model's maximum length, within
 * `limit` (NULL: none).
 * EMBD_FALLBACK_NONE with the device described in why (cap bytes), or the
 * first reason it cannot (EMBD_FALLBACK_NO_DRIVER ..
 * EMBD_FALLBACK_GPU_UNUSABLE) with the message in why. */
enum embd_fallback embd_cuda_check(const struct embd_model *model, int index, enum embd_dtype dt,
                                   const struct embd_gpu_limit *limit, char *why, size_t cap);

/* embd_cuda_check as 0 (usable) or -1 (not; the reason in why). */
int embd_cuda_usable(const struct embd_model *model, int index, enum embd_dtype dt, char *why,
                     size_t cap);

#ifdef __cplusplus
}
#endif

#endif
