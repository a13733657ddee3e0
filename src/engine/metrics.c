/* metrics.c — the metrics registry and its Prometheus text rendering. */
#include "engine/metrics.h"
#include "embd.h"
#include "util/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name, *help;
} counter_info[EMBD_C_COUNT] = {
    [EMBD_C_REQUESTS] = {"embd_requests_total", "Embedding calls."},
    [EMBD_C_INPUTS] = {"embd_inputs_total", "Inputs asked for, cache hits included."},
    [EMBD_C_TOKENS] = {"embd_tokens_total", "Tokens run through the model."},
    [EMBD_C_BATCHES] = {"embd_batches_total", "Forward passes."},
    [EMBD_C_CACHE_HITS_MEM] = {NULL, NULL}, /* rendered as embd_cache_hits_total{tier} */
    [EMBD_C_CACHE_HITS_DISK] = {NULL, NULL},
    [EMBD_C_CACHE_MISSES] = {"embd_cache_misses_total", "Embedding cache misses."},
    [EMBD_C_CACHE_EVICTIONS] = {"embd_cache_evictions_total",
                                "Vectors evicted from the in-memory cache."},
    [EMBD_C_CACHE_ERRORS] = {"embd_cache_errors_total",
                             "Disk cache reads or writes that failed or were rejected."},
};

static const struct {
    const char *name, *help;
} gauge_info[EMBD_G_COUNT] = {
    [EMBD_G_CACHE_MEM_BYTES] = {"embd_cache_memory_bytes", "Bytes held by the in-memory cache."},
    [EMBD_G_CACHE_MEM_ENTRIES] = {"embd_cache_memory_entries",
                                  "Vectors held by the in-memory cache."},
    [EMBD_G_DEVICE_MEM_BYTES] = {"embd_device_memory_bytes",
                                 "GPU memory held by the context now (0 on the CPU)."},
    [EMBD_G_DEVICE_MEM_PEAK] = {"embd_device_memory_peak_bytes",
                                "The most GPU memory the context has held (0 on the CPU)."},
    [EMBD_G_GPU_UTILIZATION] =
        {"embd_gpu_utilization_ratio",
         "GPU utilisation over the last sample period, 0..1 (NaN: unknown)."},
};

static const double b_inputs[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
static const double b_tokens[] = {16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
static const double b_sec[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                               0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static const struct {
    const char *name, *help;
    const double *bounds;
    int n;
} hist_info[EMBD_H_COUNT] = {
    [EMBD_H_BATCH_INPUTS] = {"embd_batch_inputs", "Inputs per forward pass.", b_inputs,
                             (int)(sizeof b_inputs / sizeof b_inputs[0])},
    [EMBD_H_BATCH_TOKENS] = {"embd_batch_tokens", "Tokens per forward pass.", b_tokens,
                             (int)(sizeof b_tokens / sizeof b_tokens[0])},
    [EMBD_H_TOKENIZE_SEC] = {"embd_tokenize_seconds", "Tokenization time per call.", b_sec,
                             (int)(sizeof b_sec / sizeof b_sec[0])},
    [EMBD_H_INFERENCE_SEC] = {"embd_inference_seconds", "Backend time per forward pass.", b_sec,
                              (int)(sizeof b_sec / sizeof b_sec[0])},
    [EMBD_H_QUEUE_SEC] = {"embd_queue_seconds", "Time a request waited in the shared queue.", b_sec,
                          (int)(sizeof b_sec / sizeof b_sec[0])},
};

_Static_assert(sizeof b_inputs / sizeof b_inputs[0] <= EMBD_METRICS_MAX_BUCKETS, "buckets");
_Static_assert(sizeof b_sec / sizeof b_sec[0] <= EMBD_METRICS_MAX_BUCKETS, "buckets");

int embd_metrics_init(embd_metrics *m) {
    memset(m, 0, sizeof *m);
    m->gauges[EMBD_G_GPU_UTILIZATION] = NAN;
    return pthread_mutex_init(&m->mu, NULL) ? -1 : 0;
}

void embd_metrics_destroy(embd_metrics *m) {
    pthread_mutex_destroy(&m->mu);
}

void embd_metrics_add(embd_metrics *m, enum embd_counter c, uint64_t v) {
    pthread_mutex_lock(&m->mu);
    m->counters[c] += v;
    pthread_mutex_unlock(&m->mu);
}

uint64_t embd_metrics_counter(embd_metrics *m, enum embd_counter c) {
    pthread_mutex_lock(&m->mu);
    uint64_t v = m->counters[c];
    pthread_mutex_unlock(&m->mu);
    return v;
}

void embd_metrics_set(embd_metrics *m, enum embd_gauge g, double v) {
    pthread_mutex_lock(&m->mu);
    m->gauges[g] = v;
    pthread_mutex_unlock(&m->mu);
}

void embd_metrics_observe(embd_metrics *m, enum embd_histogram h, double v) {
    pthread_mutex_lock(&m->mu);
    int b = 0;
    while (b < hist_info[h].n && v > hist_info[h].bounds[b])
        b++;
    if (b < hist_info[h].n) m->hist[h].buckets[b]++;
    m->hist[h].count++;
    m->hist[h].sum += v;
    pthread_mutex_unlock(&m->mu);
}

/* The labels of the fallback reasons: the values of embd_fallbacks_total's
 * `reason` label, which dashboards read; never change one. */
static const char *const fallback_labels[EMBD_FALLBACK_COUNT] = {
    [EMBD_FALLBACK_NONE] = "none",
    [EMBD_FALLBACK_NO_PLUGIN] = "auto_cpu_no_plugin",
    [EMBD_FALLBACK_NO_DRIVER] = "auto_cpu_no_driver",
    [EMBD_FALLBACK_NO_DEVICE] = "auto_cpu_no_device",
    [EMBD_FALLBACK_COMPUTE_CAPABILITY] = "auto_cpu_compute_capability",
    [EMBD_FALLBACK_GPU_MEMORY] = "auto_cpu_gpu_memory",
    [EMBD_FALLBACK_GPU_UNUSABLE] = "auto_cpu_gpu_unusable",
    [EMBD_FALLBACK_GPU_INIT] = "auto_cpu_cuda_init",
    [EMBD_FALLBACK_GPU_DEAD] = "cuda_dead",
    [EMBD_FALLBACK_GPU_OOM] = "cuda_oom",
};

const char *embd_fallback_str(enum embd_fallback reason) {
    if ((unsigned)reason >= EMBD_FALLBACK_COUNT || !fallback_labels[reason]) return "unknown";
    return fallback_labels[reason];
}

void embd_metrics_fallback(embd_metrics *m, enum embd_fallback reason) {
    EMBD_ASSERT((unsigned)reason < EMBD_FALLBACK_COUNT && reason != EMBD_FALLBACK_NONE);
    pthread_mutex_lock(&m->mu);
    m->fallbacks[reason]++;
    pthread_mutex_unlock(&m->mu);
}

struct out {
    char *buf;
    size_t cap, len;
};

static void emit(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct out *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) o->len += (size_t)n;
}

size_t embd_metrics_format(embd_metrics *m, const char *backend, char *buf, size_t cap) {
    struct out o = {buf, cap, 0};
    pthread_mutex_lock(&m->mu);
    emit(&o, "# HELP embd_info The embd version and the backend in use.\n# TYPE embd_info gauge\n");
    emit(&o, "embd_info{version=\"%s\",backend=\"%s\"} 1\n", EMBD_VERSION,
         backend ? backend : "none");
    struct embd_cuda_choice cc; /* which CUDA plugin runs, once one was looked for */
    if (embd_cuda_plugin_choice(&cc) == 0 && cc.loaded)
        emit(&o,
             "# HELP embd_cuda_plugin_info The CUDA plugin loaded, its CUDA runtime and the "
             "driver's CUDA version.\n# TYPE embd_cuda_plugin_info gauge\n"
             "embd_cuda_plugin_info{plugin=\"%s\",runtime=\"%d.%d\",driver=\"%d.%d\"} 1\n",
             cc.plugin, cc.runtime_version / 1000, cc.runtime_version % 1000 / 10,
             cc.driver_version / 1000, cc.driver_version % 1000 / 10);
    for (int c = 0; c < EMBD_C_COUNT; c++) {
        if (c == EMBD_C_CACHE_HITS_MEM) {
            emit(&o, "# HELP embd_cache_hits_total Embedding cache hits by tier.\n"
                     "# TYPE embd_cache_hits_total counter\n");
            emit(&o, "embd_cache_hits_total{tier=\"memory\"} %llu\n",
                 (unsigned long long)m->counters[EMBD_C_CACHE_HITS_MEM]);
            emit(&o, "embd_cache_hits_total{tier=\"disk\"} %llu\n",
                 (unsigned long long)m->counters[EMBD_C_CACHE_HITS_DISK]);
            continue;
        }
        if (!counter_info[c].name) continue;
        emit(&o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counter_info[c].name,
             counter_info[c].help, counter_info[c].name, counter_info[c].name,
             (unsigned long long)m->counters[c]);
    }
    emit(&o, "# HELP embd_fallbacks_total Work moved to another backend, by reason.\n"
             "# TYPE embd_fallbacks_total counter\n");
    for (int r = 0; r < EMBD_FALLBACK_COUNT; r++) /* only the reasons that happened */
        if (m->fallbacks[r])
            emit(&o, "embd_fallbacks_total{reason=\"%s\"} %llu\n",
                 embd_fallback_str((enum embd_fallback)r), (unsigned long long)m->fallbacks[r]);
    for (int g = 0; g < EMBD_G_COUNT; g++) {
        char v[32];
        if (isnan(m->gauges[g]))
            snprintf(v, sizeof v, "NaN");
        else
            snprintf(v, sizeof v, "%.17g", m->gauges[g]);
        emit(&o, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", gauge_info[g].name, gauge_info[g].help,
             gauge_info[g].name, gauge_info[g].name, v);
    }
    for (int h = 0; h < EMBD_H_COUNT; h++) {
        const char *name = hist_info[h].name;
        emit(&o, "# HELP %s %s\n# TYPE %s histogram\n", name, hist_info[h].help, name);
        uint64_t cum = 0;
        for (int b = 0; b < hist_info[h].n; b++) {
            cum += m->hist[h].buckets[b];
            emit(&o, "%s_bucket{le=\"%g\"} %llu\n", name, hist_info[h].bounds[b],
                 (unsigned long long)cum);
        }
        emit(&o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n", name,
             (unsigned long long)m->hist[h].count, name, m->hist[h].sum, name,
             (unsigned long long)m->hist[h].count);
    }
    pthread_mutex_unlock(&m->mu);
    if (cap) buf[o.len < cap ? o.len : cap - 1] = '\0';
    return o.len;
}

/* One metric family in a rendering: "# HELP name ..." and "# TYPE ..." lines
 * (head) and its sample lines (body). */
struct family {
    const char *name; /* points into the text, ends at the first ' ' */
    size_t name_len;
    const char *head, *body, *end;
};

/* Splits text into families; at most cap. Returns the count. */
static int split_families(const char *text, size_t len, struct family *f, int cap) {
    const char *p = text, *end = text + len;
    int n = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if ((size_t)(next - p) > 7 && !memcmp(p, "# HELP ", 7)) {
            if (n > 0) f[n - 1].end = p;
            if (n == cap) return n;
            f[n].name = p + 7;
            f[n].name_len = strcspn(p + 7, " \n");
            f[n].head = p;
            f[n].body = NULL;
            f[n].end = end;
            n++;
        } else if (n > 0 && !f[n - 1].body && *p != '#') {
            f[n - 1].body = p;
        }
        p = next;
    }
    for (int i = 0; i < n; i++)
        if (!f[i].body) f[i].body = f[i].end;
    return n;
}

size_t embd_metrics_merge_devices(const char *const *texts, const size_t *lens,
                                  const char *const *labels, int n, char *buf, size_t cap) {
    enum { MAX_FAM = 128 };
    struct out o = {buf, cap, 0};
    struct family(*fam)[MAX_FAM] = embd_calloc((size_t)n, sizeof *fam);
    int *nf = embd_calloc((size_t)n, sizeof *nf);
    if (!fam || !nf) {
        embd_free(fam);
        embd_free(nf);
        if (cap) buf[0] = '\0';
        return 0;
    }
    for (int i = 0; i < n; i++)
        nf[i] = split_families(texts[i], lens[i], fam[i], MAX_FAM);
    /* every family once, in the order of first appearance */
    for (int i = 0; i < n; i++)
        for (int k = 0; k < nf[i]; k++) {
            const struct family *f = &fam[i][k];
            bool seen = false;
            for (int j = 0; j < i && !seen; j++)
                for (int q = 0; q < nf[j] && !seen; q++)
                    seen = fam[j][q].name_len == f->name_len &&
                           !memcmp(fam[j][q].name, f->name, f->name_len);
            if (seen) continue;
            emit(&o, "%.*s", (int)(f->body - f->head), f->head);
            for (int j = i; j < n; j++)
                for (int q = 0; q < nf[j]; q++) {
                    const struct family *g = &fam[j][q];
                    if (g->name_len != f->name_len || memcmp(g->name, f->name, f->name_len))
                        continue;
                    for (const char *p = g->body; p < g->end;) {
                        const char *eol = memchr(p, '\n', (size_t)(g->end - p));
                        const char *next = eol ? eol + 1 : g->end;
                        size_t at = strcspn(p, "{ \n");
                        if (p[at] == '{')
                            emit(&o, "%.*s{device=\"%s\",%.*s", (int)at, p, labels[j],
                                 (int)(next - p - (ptrdiff_t)at - 1), p + at + 1);
                        else
                            emit(&o, "%.*s{device=\"%s\"}%.*s", (int)at, p, labels[j],
                                 (int)(next - p - (ptrdiff_t)at), p + at);
                        p = next;
                    }
                }
        }
    embd_free(fam);
    embd_free(nf);
    if (cap) buf[o.len < cap ? o.len : cap - 1] = '\0';
    return o.len;
}
