/* metrics.h — the engine's metrics registry: counters, gauges and
 * histograms with fixed buckets, guarded by one mutex, rendered in the
 * Prometheus text exposition format. */
#ifndef EMBD_METRICS_H
#define EMBD_METRICS_H

#include "embd.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum embd_counter {
    EMBD_C_REQUESTS, /* embd_embed / embd_embed_tokens calls */
    EMBD_C_INPUTS,   /* inputs asked for (cache hits included) */
    EMBD_C_TOKENS,   /* tokens run through the model */
    EMBD_C_BATCHES,  /* forward passes */
    EMBD_C_CACHE_HITS_MEM,
    EMBD_C_CACHE_HITS_DISK,
    EMBD_C_CACHE_MISSES,
    EMBD_C_CACHE_EVICTIONS,
    EMBD_C_CACHE_ERRORS, /* disk cache reads/writes that failed (treated as misses) */
    EMBD_C_COUNT
};

enum embd_gauge {
    EMBD_G_CACHE_MEM_BYTES,   /* bytes held by the in-memory cache */
    EMBD_G_CACHE_MEM_ENTRIES, /* vectors held by the in-memory cache */
    EMBD_G_DEVICE_MEM_BYTES,  /* GPU memory the context holds now (weights + scratch) */
    EMBD_G_DEVICE_MEM_PEAK,   /* the most GPU memory the context held */
    EMBD_G_GPU_UTILIZATION,   /* the GPU's utilisation, 0..1; NaN when unknown */
    EMBD_G_COUNT
};

enum embd_histogram {
    EMBD_H_BATCH_INPUTS,  /* inputs per forward pass */
    EMBD_H_BATCH_TOKENS,  /* tokens per forward pass */
    EMBD_H_TOKENIZE_SEC,  /* tokenization time per request */
    EMBD_H_INFERENCE_SEC, /* backend time per forward pass */
    EMBD_H_QUEUE_SEC,     /* time a request waited in the shared engine's queue */
    EMBD_H_COUNT
};

#define EMBD_METRICS_MAX_BUCKETS 16

typedef struct embd_metrics {
    pthread_mutex_t mu;
    uint64_t counters[EMBD_C_COUNT];
    double gauges[EMBD_G_COUNT];
    struct {
        uint64_t buckets[EMBD_METRICS_MAX_BUCKETS]; /* per bucket, not cumulative */
        uint64_t count;                             /* observations (the +Inf bucket) */
        double sum;
    } hist[EMBD_H_COUNT];
    uint64_t fallbacks[EMBD_FALLBACK_COUNT]; /* by reason (NONE stays 0) */
} embd_metrics;

/* Returns 0, or -1 if the mutex could not be made. */
int embd_metrics_init(embd_metrics *m);
void embd_metrics_destroy(embd_metrics *m);

void embd_metrics_add(embd_metrics *m, enum embd_counter c, uint64_t v);
void embd_metrics_set(embd_metrics *m, enum embd_gauge g, double v);
void embd_metrics_observe(embd_metrics *m, enum embd_histogram h, double v);
/* Counts a fallback (any reason but EMBD_FALLBACK_NONE), rendered as
 * embd_fallbacks_total{reason="<embd_fallback_str(reason)>"}. */
void embd_metrics_fallback(embd_metrics *m, enum embd_fallback reason);

uint64_t embd_metrics_counter(embd_metrics *m, enum embd_counter c);

/* Renders every metric in Prometheus text format into buf (cap bytes, NUL
 * terminated when cap > 0). `backend` labels the embd_info metric. Returns
 * the full length (without the NUL), as snprintf does. */
size_t embd_metrics_format(embd_metrics *m, const char *backend, char *buf, size_t cap);

/* Merges the renderings texts[i] (lens[i] bytes) of n contexts into one
 * exposition: each family's HELP and TYPE once, then its samples from every
 * rendering with device="labels[i]" first among their labels. Returns the
 * full length as snprintf does; buf is NUL-terminated when cap > 0. */
size_t embd_metrics_merge_devices(const char *const *texts, const size_t *lens,
                                  const char *const *labels, int n, char *buf, size_t cap);

#endif
