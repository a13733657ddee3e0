/* engine.h — what the engine's own files (sched.c) need from a context. */
#ifndef EMBD_ENGINE_H
#define EMBD_ENGINE_H

#include "embd.h"
#include "engine/metrics.h"

/* Embedding dimension D of the context's model. */
int embd_ctx_dim(const embd_ctx *ctx);
/* Tokens per input of the context's model ([CLS]/[SEP] included). */
int embd_ctx_max_tokens(const embd_ctx *ctx);
/* The model of a context. */
const embd_model *embd_ctx_model(const embd_ctx *ctx);

/* Runs the backend over n packed inputs (ids (T), types (T) or NULL for
 * all 0, seq_start (n+1) from 0; checked by the caller) in batches of at
 * most the context's tokens per pass, writing out (n, D) in input order:
 * each input's pooled state, L2-normalised when l2. Counts batches, tokens
 * and inference time in the stats and metrics. */
enum embd_status embd_ctx_run_tokens(embd_ctx *ctx, const int32_t *ids, const int32_t *types,
                                     const int32_t *seq_start, size_t n, bool l2, float *out);

/* The context's metrics registry (thread-safe). */
embd_metrics *embd_ctx_metrics(embd_ctx *ctx);

/* For tests of the scheduler: while held, its worker takes nothing from the
 * queue (so that several requests meet there); embd_sched_queued_requests
 * counts the requests waiting now. */
void embd_sched_hold(embd_sched *s, bool hold);
size_t embd_sched_queued_requests(embd_sched *s);

#endif
