/* engine.h — what the engine's own files (sched.c) need from a context. */
#ifndef EMBD_ENGINE_H
#define EMBD_ENGINE_H

#include "embd.h"
#include "engine/metrics.h"

/* Embedding dimension D of the context's model. */
int embd_ctx_dim(const embd_ctx *ctx);
/* Tokens per input of the context's model ([CLS]/[SEP] included). */
int embd_ctx_max_tokens(const embd_ctx *ctx);
/* The context's metrics registry (thread-safe). */
embd_metrics *embd_ctx_metrics(embd_ctx *ctx);

/* For tests of the scheduler: while held, its worker takes nothing from the
 * queue (so that several requests meet there); embd_sched_queued_requests
 * counts the requests waiting now. */
void embd_sched_hold(embd_sched *s, bool hold);
size_t embd_sched_queued_requests(embd_sched *s);

#endif
