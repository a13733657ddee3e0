/* backend.h — the table of operations every compute backend fills (CPU, CUDA).
 *
 * A batch is packed: the ids of all its sequences back to back, no padding.
 * Letters used in shape comments:
 *   n  sequences in the batch        T  tokens in the batch (all sequences)
 *   H  hidden size                   NH attention heads, HS = H / NH
 *   I  intermediate (FFN) size       V  vocabulary size
 *   P  max position embeddings       L  layers
 */
#ifndef EMBD_BACKEND_H
#define EMBD_BACKEND_H

#include "embd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct embd_model;
struct embd_pool;

typedef struct {
    int n_seq;                /* n */
    int n_tok;                /* T */
    const int32_t *ids;       /* (T) token ids, each in [0, V) */
    const int32_t *seq_start; /* (n+1) seq_start[0] = 0, seq_start[n] = T, each length in [1, P] */
    const int32_t *type_ids;  /* (T) token type ids, each in [0, TV), or NULL: all 0 */
} embd_batch;

typedef struct {
    int n_threads; /* CPU threads, >= 1 */
    /* CPU: the threads to run on (the context's, of n_threads; it outlives
     * the backend), or NULL: the backend starts its own */
    struct embd_pool *pool;
    int device_index;      /* GPU ordinal */
    enum embd_dtype dtype; /* EMBD_DTYPE_FP32 on the CPU */
    int max_batch_tokens;  /* the largest T the backend will be given */
    /* GPU: the most device memory the backend may hold, in bytes, or as a
     * fraction of the device's memory; both 0: no limit (see
     * embd_gpu_memory_limit_parse) */
    size_t gpu_mem_limit_bytes;
    double gpu_mem_limit_fraction;
} embd_backend_params;

typedef struct embd_backend embd_backend; /* each backend defines its own */

/* Device-memory and throughput counters of one backend instance. */
struct embd_backend_mem_stats {
    size_t weights;                 /* bytes of weights on the device */
    size_t scratch;                 /* bytes of scratch now allocated */
    size_t peak;                    /* most bytes held at once (weights + scratch + workspace) */
    int token_capacity;             /* tokens per forward pass the scratch now fits */
    unsigned long long oom_retries; /* allocation failures that halved the batch */
};

struct embd_backend_ops {
    const char *name;
    /* Prepares the backend for `model` (which outlives it). */
    enum embd_status (*init)(embd_backend **out, const struct embd_model *model,
                             const embd_backend_params *params);
    void (*free)(embd_backend *be);
    /* Runs the encoder over the packed batch, pools each sequence (the model's
     * CLS or mean pooling) and, if `normalize`, L2-normalises: out (n, H). */
    enum embd_status (*embed)(embd_backend *be, float *out, const embd_batch *batch,
                              bool normalize);
    /* Optional (may be NULL): releases scratch memory until the next embed. */
    void (*trim)(embd_backend *be);
    /* Optional (NULL on the CPU, which cannot die): whether a sticky error
     * (illegal address, launch failure) killed the backend, so that every
     * later embed would fail too. */
    bool (*is_dead)(const embd_backend *be);
    /* Optional (NULL where there is no device memory, as on the CPU): the
     * device-memory counters. Set only for a backend with its own device, so
     * the engine also reads it as "runs on a GPU". */
    void (*mem_stats)(const embd_backend *be, struct embd_backend_mem_stats *out);
};

/* The CPU backend: fast path (BLAS, threads). */
extern const struct embd_backend_ops embd_backend_cpu_ops;
/* The CPU reference: plain loops, fp32, one thread; the yardstick for the others. */
extern const struct embd_backend_ops embd_backend_ref_ops;

/* Checks a batch against the model's limits (ids and type ids in range,
 * lengths in [1, P], seq_start monotone). Returns EMBD_OK or EMBD_ERR_INVALID_ARG with a message.
 */
enum embd_status embd_batch_check(const embd_batch *batch, const struct embd_model *model);

#endif
