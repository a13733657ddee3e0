/* engine.c — contexts: device choice, tokenization, packing texts into
 * token-budget batches (no padding), running the backend, stats. */
#include "backend/backend.h"
#include "backend/cpu/isa.h"
#include "backend/cuda/plugin.h"
#include "engine/cache.h"
#include "engine/engine.h"
#include "engine/metrics.h"
#include "model/model.h"
#include "util/log.h"
#include "util/pool.h"
#include "util/util.h"

#include <cblas.h>
#include <math.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Tokens per forward pass when the caller leaves it to embd (0): on the CPU
 * a budget that keeps the scratch small (about 45 MB for all-MiniLM-L6-v2,
 * against 180 MB at 16384) at no measurable cost in speed (BENCHMARKS.md);
 * on a GPU a larger one, to fill the device. */
#define CPU_MAX_BATCH_TOKENS 4096
#define GPU_MAX_BATCH_TOKENS 16384
#define DEFAULT_CACHE_BYTES ((size_t)64 << 20)

struct embd_ctx {
    embd_model *model;
    const struct embd_backend_ops *ops;
    embd_backend *be;
    struct embd_ctx_params params;
    char *prefix; /* owned copy of params.prefix, or NULL */
    size_t prefix_len;
    int n_threads;
    embd_pool *pool; /* n_threads: the CPU backend's, and tokenization's */
    struct embd_ctx_stats stats;
    /* GPU: the CPU backend that takes over a batch the GPU fails (made on the
     * first failure); the backend and dtype chosen at creation (fixed: ops
     * turns into the CPU's when the GPU dies, these do not). */
    embd_backend *cpu_be;
    uint64_t cpu_fallbacks;
    const struct embd_backend_ops *start_ops;
    enum embd_dtype dtype;              /* FP32 on the CPU, the GPU's FP16 or BF16 */
    enum embd_fallback auto_cpu_reason; /* device auto chose the CPU: why (NONE: it did
                                           not); counted once metrics exist */
    /* Why the context runs on the CPU (an enum embd_fallback): set at creation,
     * or once to GPU_DEAD by the thread that embeds. fallback_msg is written
     * before it and never after, so other threads read both without a lock. */
    _Atomic int fallback;
    char fallback_msg[1280];
    int batch_tokens; /* tokens per forward pass (the budget in use) */
    /* runtime (set up by ctx_runtime_init) */
    embd_metrics metrics;
    bool metrics_ok;
    embd_metrics *m;         /* where it counts: its own metrics, or params.metrics_of's */
    embd_cache *cache;       /* NULL: no cache */
    unsigned char *key_head; /* everything but the text that a cache key covers */
    size_t key_head_len;
};

struct embd_ctx_params embd_ctx_default_params(void) {
    struct embd_ctx_params p = {
        .device = EMBD_DEVICE_AUTO,
        .device_index = 0,
        .dtype = EMBD_DTYPE_AUTO,
        .n_threads = 0,
        .max_batch_tokens = 0,
        .normalize = true,
        .prefix = NULL,
        .cache_bytes = DEFAULT_CACHE_BYTES,
        .cache_dir = NULL,
        .cache_map_bytes = 0,
    };
    return p;
}

/* Appends n bytes to the key head being built in buf (cap bytes). */
static size_t head_put(unsigned char *buf, size_t len, size_t cap, const void *p, size_t n) {
    EMBD_ASSERT(len + n <= cap);
    memcpy(buf + len, p, n);
    return len + n;
}

/* Sets up what the engine keeps around the backend: metrics, and the
 * embedding cache with the context's part of the key head: the model's
 * fingerprint, the backend and its precision and the truncation length
 * (each call adds its normalisation and prefix: call_key_head). Runs after
 * the backend is chosen. On failure the caller frees the context. */
static enum embd_status ctx_runtime_init(embd_ctx *ctx) {
    if (embd_metrics_init(&ctx->metrics) != 0)
        return embd_error(EMBD_ERR_NOMEM, "cannot create the metrics registry");
    ctx->metrics_ok = true;
    ctx->m = ctx->params.metrics_of ? ctx->params.metrics_of->m : &ctx->metrics;
    if (ctx->auto_cpu_reason) embd_metrics_fallback(ctx->m, ctx->auto_cpu_reason);
    const char *cache_dir = ctx->params.cache_dir;
    ctx->params.cache_dir = NULL; /* the caller's string; the cache keeps a copy */
    if (ctx->params.cache_bytes == 0 && !(cache_dir && cache_dir[0])) return EMBD_OK;

    static const char magic[] = "embd-cache-key 2";
    const char *be_name = ctx->ops->name;
    size_t cap = sizeof magic + 8 + 2 * 4 + strlen(be_name) + 1;
    ctx->key_head = embd_malloc(cap);
    if (!ctx->key_head) return embd_error(EMBD_ERR_NOMEM, "out of memory creating the cache");
    uint64_t fp = embd_model_fingerprint(ctx->model);
    int32_t fields[2] = {ctx->model->hp.max_tokens, (int32_t)ctx->params.dtype};
    size_t len = 0;
    len = head_put(ctx->key_head, len, cap, magic, sizeof magic);
    len = head_put(ctx->key_head, len, cap, &fp, sizeof fp);
    len = head_put(ctx->key_head, len, cap, fields, sizeof fields);
    len = head_put(ctx->key_head, len, cap, be_name, strlen(be_name) + 1);
    ctx->key_head_len = len;

    struct embd_cache_params cp = {
        .dim = ctx->model->hp.H,
        .mem_bytes = ctx->params.cache_bytes,
        .dir = cache_dir,
        .map_bytes = ctx->params.cache_map_bytes,
    };
    return embd_cache_open(&cp, ctx->m, &ctx->cache);
}

/* The token budget per forward pass: the caller's, else the backend's default
 * (never less than one input of the model's longest). */
static int batch_budget(const embd_ctx *ctx, bool gpu) {
    int t = ctx->params.max_batch_tokens;
    if (t == 0) t = gpu ? GPU_MAX_BATCH_TOKENS : CPU_MAX_BATCH_TOKENS;
    return t < ctx->model->hp.max_tokens ? ctx->model->hp.max_tokens : t;
}

static embd_backend_params cpu_backend_params(const embd_ctx *ctx) {
    embd_backend_params bp = {
        .n_threads = ctx->n_threads,
        .pool = ctx->pool,
        .device_index = ctx->params.device_index,
        .dtype = EMBD_DTYPE_FP32, /* the CPU path of ctx_pick_backend sets bf16 or int8 */
        .max_batch_tokens = batch_budget(ctx, false),
    };
    return bp;
}

/* Whether a GPU is in the way of device auto (so that running on the CPU
 * deserves a warning) rather than absent (normal: info). */
static bool auto_cpu_gpu_seen(enum embd_fallback r) {
    return r == EMBD_FALLBACK_COMPUTE_CAPABILITY || r == EMBD_FALLBACK_GPU_MEMORY ||
           r == EMBD_FALLBACK_GPU_INIT;
}

/* Chooses and starts the backend. auto: the GPU when the CUDA plugin loads
 * and device_index is usable (driver, compute capability >= 7.5, free
 * memory), else the CPU with one log line naming the reason (info when there
 * is no GPU at all, a warning when one is there but unusable), kept as the
 * context's fallback and counted in the metrics with that reason. cuda: the
 * GPU or EMBD_ERR_UNSUPPORTED with the reason. */
static enum embd_status ctx_pick_backend(embd_ctx *ctx) {
    const struct embd_ctx_params *p = &ctx->params;
    enum embd_status st;
    ctx->ops = ctx->start_ops = &embd_backend_cpu_ops;
    ctx->dtype = EMBD_DTYPE_FP32;
    /* int8 is a CPU mode: device auto goes straight to the CPU */
    if (p->device == EMBD_DEVICE_CUDA && p->dtype == EMBD_DTYPE_INT8)
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "dtype int8 runs on the CPU only (use --device cpu or auto)");
    if (p->device != EMBD_DEVICE_CPU && p->dtype != EMBD_DTYPE_INT8) {
        char why[1280];
        const char *ls =
            p->gpu_memory_limit ? p->gpu_memory_limit : getenv("EMBD_GPU_MEMORY_LIMIT");
        struct embd_gpu_limit lim;
        if (embd_gpu_limit_parse(ls, &lim, why, sizeof why) != 0)
            return embd_error(EMBD_ERR_INVALID_ARG, "%s%s",
                              p->gpu_memory_limit ? "" : "EMBD_GPU_MEMORY_LIMIT: ", why);
        enum embd_fallback r =
            embd_cuda_check(ctx->model, p->device_index, p->dtype, &lim, why, sizeof why);
        if (r == EMBD_FALLBACK_NONE) {
            const struct embd_cuda_plugin *cu = embd_cuda_load(NULL, 0);
            embd_backend_params gp = cpu_backend_params(ctx);
            gp.dtype = p->dtype == EMBD_DTYPE_AUTO ? EMBD_DTYPE_FP16 : p->dtype;
            gp.max_batch_tokens = batch_budget(ctx, true);
            gp.gpu_mem_limit_bytes = lim.bytes;
            gp.gpu_mem_limit_fraction = lim.fraction;
            st = cu->ops->init(&ctx->be, ctx->model, &gp);
            if (st == EMBD_OK) {
                ctx->ops = ctx->start_ops = cu->ops;
                ctx->dtype = gp.dtype;
                ctx->batch_tokens = gp.max_batch_tokens;
                return EMBD_OK;
            }
            if (p->device == EMBD_DEVICE_CUDA) return st;
            snprintf(why, sizeof why, "%s", embd_last_error());
            r = EMBD_FALLBACK_GPU_INIT;
        }
        if (p->device == EMBD_DEVICE_CUDA)
            return embd_error(EMBD_ERR_UNSUPPORTED, "device cuda:%d is not usable: %s",
                              p->device_index, why);
        embd_log(auto_cpu_gpu_seen(r) ? EMBD_LOG_WARN : EMBD_LOG_INFO, "device",
                 "device auto: running on the CPU: %s", why);
        snprintf(ctx->fallback_msg, sizeof ctx->fallback_msg, "%s", why);
        ctx->fallback = r;
        ctx->auto_cpu_reason = r;
    }
    if (p->dtype == EMBD_DTYPE_FP16)
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "dtype fp16: the CPU backend computes in fp32, bf16 or int8; use "
                          "--dtype fp32 or auto");
    embd_backend_params bp = cpu_backend_params(ctx);
    if (p->dtype == EMBD_DTYPE_BF16 || p->dtype == EMBD_DTYPE_INT8) {
        /* opt-in reduced precision on the CPU; the backend refuses it where
         * the CPU lacks the instructions */
        bp.dtype = p->dtype;
        ctx->dtype = p->dtype;
    }
    ctx->batch_tokens = bp.max_batch_tokens;
    return ctx->ops->init(&ctx->be, ctx->model, &bp);
}

/* Runs one batch on the context's backend. When the GPU fails it (a sticky
 * error, or no memory even for the smallest batch), the CPU runs that batch,
 * with a log line; after a sticky error the CPU runs everything that follows
 * and the context's fallback is EMBD_FALLBACK_GPU_DEAD. */
static enum embd_status ctx_embed_batch(embd_ctx *ctx, float *out, const embd_batch *b,
                                        bool normalize) {
    enum embd_status st = ctx->ops->embed(ctx->be, out, b, normalize);
    if (st != EMBD_ERR_BACKEND || ctx->ops == &embd_backend_cpu_ops) return st;
    char why[512];
    snprintf(why, sizeof why, "%s", embd_last_error());
    if (!ctx->cpu_be) {
        embd_backend_params bp = cpu_backend_params(ctx);
        enum embd_status s2 = embd_backend_cpu_ops.init(&ctx->cpu_be, ctx->model, &bp);
        if (s2 != EMBD_OK) return embd_error(st, "%s (and the CPU fallback failed)", why);
    }
    ctx->cpu_fallbacks++;
    if (ctx->ops->is_dead && ctx->ops->is_dead(ctx->be)) {
        embd_log(EMBD_LOG_WARN, "fallback", "the GPU failed for good (%s); the CPU runs the rest",
                 why);
        embd_metrics_fallback(ctx->m, EMBD_FALLBACK_GPU_DEAD);
        ctx->ops->free(ctx->be);
        ctx->be = ctx->cpu_be;
        ctx->cpu_be = NULL;
        ctx->ops = &embd_backend_cpu_ops;
        snprintf(ctx->fallback_msg, sizeof ctx->fallback_msg, "%s", why);
        ctx->fallback = EMBD_FALLBACK_GPU_DEAD; /* after the message, which readers then read */
    } else {
        embd_log(EMBD_LOG_WARN, "fallback", "a batch of %d tokens runs on the CPU: %s", b->n_tok,
                 why);
        embd_metrics_fallback(ctx->m, EMBD_FALLBACK_GPU_OOM);
    }
    return embd_backend_cpu_ops.embed(ctx->cpu_be ? ctx->cpu_be : ctx->be, out, b, normalize);
}

void embd_ctx_trim(embd_ctx *ctx) {
    if (ctx && ctx->be && ctx->ops->trim) ctx->ops->trim(ctx->be);
}

void embd_ctx_gpu_stats(const embd_ctx *ctx, struct embd_ctx_gpu_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!ctx) return;
    out->cpu_fallbacks = ctx->cpu_fallbacks;
    out->dead = ctx->fallback == EMBD_FALLBACK_GPU_DEAD;
    if (!ctx->ops->mem_stats) return; /* the CPU */
    struct embd_backend_mem_stats ms;
    ctx->ops->mem_stats(ctx->be, &ms);
    out->weight_bytes = ms.weights;
    out->scratch_bytes = ms.scratch;
    out->peak_bytes = ms.peak;
    out->batch_tokens = ms.token_capacity;
    out->oom_retries = ms.oom_retries;
}

enum embd_status embd_ctx_new(embd_model *model, struct embd_ctx_params params, embd_ctx **out) {
    if (!out) return embd_error(EMBD_ERR_INVALID_ARG, "embd_ctx_new: out is NULL");
    *out = NULL;
    if (!model) return embd_error(EMBD_ERR_INVALID_ARG, "embd_ctx_new: model is NULL");
    if (params.n_threads < 0 || params.n_threads > 4096)
        return embd_error(EMBD_ERR_INVALID_ARG, "threads must be between 0 and 4096, not %d",
                          params.n_threads);
    if ((int)params.device < EMBD_DEVICE_AUTO || (int)params.device > EMBD_DEVICE_CUDA)
        return embd_error(EMBD_ERR_INVALID_ARG, "device %d is not an enum embd_device value",
                          (int)params.device);
    if ((int)params.dtype < EMBD_DTYPE_AUTO || (int)params.dtype > EMBD_DTYPE_INT8)
        return embd_error(EMBD_ERR_INVALID_ARG, "dtype %d is not an enum embd_dtype value",
                          (int)params.dtype);
    if (params.gpu_memory_limit) { /* checked on every device, not only where a GPU is tried */
        struct embd_gpu_limit lim;
        char why[400];
        if (embd_gpu_limit_parse(params.gpu_memory_limit, &lim, why, sizeof why) != 0)
            return embd_error(EMBD_ERR_INVALID_ARG, "%s", why);
    }
    if (params.max_batch_tokens != 0 &&
        (params.max_batch_tokens < model->hp.max_tokens || params.max_batch_tokens > (1 << 26)))
        return embd_error(EMBD_ERR_INVALID_ARG,
                          "max batch tokens must be between the model's max input length (%d) "
                          "and %d, not %d",
                          model->hp.max_tokens, 1 << 26, params.max_batch_tokens);

    enum embd_status st = EMBD_ERR_NOMEM;
    embd_ctx *ctx = embd_calloc(1, sizeof *ctx);
    if (!ctx) goto nomem;
    ctx->model = model;
    ctx->params = params;
    ctx->n_threads = params.n_threads ? params.n_threads : embd_pool_cpus();
    if (!(ctx->pool = embd_pool_new(ctx->n_threads, -1))) {
        st = embd_error_prefix(EMBD_ERR_NOMEM, "creating a context: ");
        goto fail;
    }
    if (params.prefix && params.prefix[0]) {
        ctx->prefix = embd_strdup(params.prefix);
        if (!ctx->prefix) goto nomem;
        ctx->prefix_len = strlen(ctx->prefix);
    }
    ctx->params.prefix = ctx->prefix;

    st = ctx_pick_backend(ctx);
    if (st != EMBD_OK) goto fail;
    if ((st = ctx_runtime_init(ctx)) != EMBD_OK) {
        embd_ctx_free(ctx);
        return st;
    }
    *out = ctx;
    return EMBD_OK;

nomem:
    st = embd_error(EMBD_ERR_NOMEM, "out of memory creating a context");
fail:
    if (ctx) {
        embd_pool_free(ctx->pool);
        embd_free(ctx->prefix);
        embd_free(ctx);
    }
    return st;
}

void embd_ctx_free(embd_ctx *ctx) {
    if (!ctx) return;
    embd_cache_close(ctx->cache);
    embd_free(ctx->key_head);
    if (ctx->metrics_ok) embd_metrics_destroy(&ctx->metrics);
    if (ctx->be) ctx->ops->free(ctx->be);
    if (ctx->cpu_be) embd_backend_cpu_ops.free(ctx->cpu_be);
    embd_pool_free(ctx->pool);
    embd_free(ctx->prefix);
    embd_free(ctx);
}

/* Whether the context runs on a GPU now (the backend it started on has
 * device memory, and has not died). Thread-safe. */
static bool ctx_on_gpu(const embd_ctx *ctx) {
    return ctx->start_ops->mem_stats && ctx->fallback != EMBD_FALLBACK_GPU_DEAD;
}

const char *embd_ctx_backend(const embd_ctx *ctx) {
    if (!ctx) return "none";
    return ctx->fallback == EMBD_FALLBACK_GPU_DEAD ? embd_backend_cpu_ops.name
                                                   : ctx->start_ops->name;
}

enum embd_dtype embd_ctx_dtype(const embd_ctx *ctx) {
    if (!ctx) return EMBD_DTYPE_AUTO;
    return ctx->fallback == EMBD_FALLBACK_GPU_DEAD ? EMBD_DTYPE_FP32 : ctx->dtype;
}

enum embd_fallback embd_ctx_fallback(const embd_ctx *ctx, const char **msg) {
    enum embd_fallback r = ctx ? (enum embd_fallback)ctx->fallback : EMBD_FALLBACK_NONE;
    if (msg) *msg = r != EMBD_FALLBACK_NONE ? ctx->fallback_msg : "";
    return r;
}

const char *embd_dtype_str(enum embd_dtype dtype) {
    static const char *const names[] = {
        [EMBD_DTYPE_AUTO] = "auto", [EMBD_DTYPE_FP32] = "fp32", [EMBD_DTYPE_FP16] = "fp16",
        [EMBD_DTYPE_BF16] = "bf16", [EMBD_DTYPE_INT8] = "int8",
    };
    return (unsigned)dtype < sizeof names / sizeof names[0] ? names[dtype] : "unknown";
}

void embd_ctx_get_stats(const embd_ctx *ctx, struct embd_ctx_stats *stats) {
    if (!stats) return;
    if (!ctx) {
        memset(stats, 0, sizeof *stats);
        return;
    }
    *stats = ctx->stats;
    if (ctx->cache) {
        struct embd_cache_info ci;
        embd_cache_get_info(ctx->cache, &ci);
        stats->cache_hits = ci.hits;
        stats->cache_misses = ci.misses;
        stats->cache_evictions = ci.evictions;
    }
}

int embd_ctx_dim(const embd_ctx *ctx) {
    return ctx->model->hp.H;
}

const embd_model *embd_ctx_model(const embd_ctx *ctx) {
    return ctx->model;
}

int embd_ctx_max_tokens(const embd_ctx *ctx) {
    return ctx->model->hp.max_tokens;
}

embd_metrics *embd_ctx_metrics(embd_ctx *ctx) {
    return ctx->m;
}

size_t embd_metrics_render(embd_ctx *ctx, char *buf, size_t cap) {
    if (!ctx || !ctx->metrics_ok) {
        if (cap) buf[0] = '\0';
        return 0;
    }
    /* NVML is thread-safe; the context's own numbers come from run_batches */
    if (ctx_on_gpu(ctx)) {
        struct embd_gpu_info gi;
        if (embd_gpu_monitor(ctx->params.device_index, &gi) == 0 && gi.utilization >= 0)
            embd_metrics_set(ctx->m, EMBD_G_GPU_UTILIZATION, gi.utilization / 100.0);
    }
    return embd_metrics_format(ctx->m, embd_ctx_backend(ctx), buf, cap);
}

size_t embd_metrics_render_devices(embd_ctx *const *ctxs, const char *const *labels, int n,
                                   char *buf, size_t cap) {
    if (n == 1 && ctxs) return embd_metrics_render(ctxs[0], buf, cap);
    if (cap) buf[0] = '\0';
    if (n < 1 || !ctxs || !labels) return 0;
    char **texts = embd_calloc((size_t)n, sizeof *texts);
    size_t *lens = embd_calloc((size_t)n, sizeof *lens);
    size_t len = 0;
    bool ok = texts && lens;
    for (int i = 0; ok && i < n; i++) {
        /* room for counters that grow between the two calls */
        size_t need = embd_metrics_render(ctxs[i], NULL, 0) + 1024;
        texts[i] = embd_malloc(need);
        ok = texts[i] != NULL;
        if (ok) {
            lens[i] = embd_metrics_render(ctxs[i], texts[i], need);
            if (lens[i] >= need) lens[i] = need - 1;
        }
    }
    if (ok) len = embd_metrics_merge_devices((const char *const *)texts, lens, labels, n, buf, cap);
    for (int i = 0; texts && i < n; i++)
        embd_free(texts[i]);
    embd_free(texts);
    embd_free(lens);
    return len;
}

/* ---------------------------------------------------------------------- */
/* One call: options, tokenization, cache, batches                         */
/* ---------------------------------------------------------------------- */

struct embd_embed_opts embd_embed_default_opts(void) {
    struct embd_embed_opts o = {.normalize = -1, .truncate = true, .prefix = NULL, .dimensions = 0};
    return o;
}

/* A call's options resolved against the context. */
struct call {
    const char *prefix; /* NULL: none */
    size_t prefix_len;
    bool l2;       /* the vectors are L2-normalised */
    bool truncate; /* long inputs are cut, else refused */
    int dims;      /* components kept (Matryoshka), or 0 for all */
};

static enum embd_status call_resolve(const embd_ctx *ctx, const struct embd_embed_opts *o,
                                     struct call *c) {
    const struct embd_embed_opts d = embd_embed_default_opts();
    if (!o) o = &d;
    if (o->normalize < -1 || o->normalize > 1)
        return embd_error(EMBD_ERR_INVALID_ARG, "normalize must be -1, 0 or 1, not %d",
                          o->normalize);
    c->l2 = o->normalize == 1 ||
            (o->normalize == -1 && ctx->params.normalize && embd_model_normalizes(ctx->model));
    c->truncate = o->truncate;
    const int D = ctx->model->hp.H;
    if (o->dimensions < 0 || o->dimensions > D)
        return embd_error(EMBD_ERR_INVALID_ARG,
                          "dimensions must be between 1 and the model's %d, not %d", D,
                          o->dimensions);
    c->dims = o->dimensions == D ? 0 : o->dimensions;
    c->prefix = o->prefix ? o->prefix : ctx->prefix;
    c->prefix_len = c->prefix ? strlen(c->prefix) : 0;
    if (!c->prefix_len) c->prefix = NULL;
    return EMBD_OK;
}

/* L2-normalises n rows of out (n, D) in place (a zero row stays zero). */
static void l2_rows(float *out, size_t n, size_t D) {
    for (size_t i = 0; i < n; i++) {
        float *o = out + i * D;
        double ss = 0.0;
        for (size_t c = 0; c < D; c++)
            ss += (double)o[c] * o[c];
        const float inv = ss > 0.0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (size_t c = 0; c < D; c++)
            o[c] *= inv;
    }
}

/* Matryoshka: the first `dims` components of each row of full (n, D) into
 * out (n, dims), L2-normalised again when the call's vectors are. */
static void keep_dims(float *out, const float *full, size_t n, size_t D, size_t dims, bool l2) {
    for (size_t i = 0; i < n; i++)
        memmove(out + i * dims, full + i * D, dims * sizeof *out);
    if (l2) l2_rows(out, n, dims);
}

static enum embd_status run_batches(embd_ctx *ctx, const struct call *c, const int32_t *ids,
                                    const int32_t *seq_start, size_t n, float *out) {
    return embd_ctx_run_tokens(ctx, ids, NULL, seq_start, n, c->l2, out);
}

enum embd_status embd_ctx_run_tokens(embd_ctx *ctx, const int32_t *ids, const int32_t *types,
                                     const int32_t *seq_start, size_t n, bool l2, float *out) {
    const int D = ctx->model->hp.H;
    const size_t budget = (size_t)ctx->batch_tokens;
    /* The backends normalise for models that end in Normalize; a call that
     * asks for it on another model is normalised here. */
    const bool model_l2 = embd_model_normalizes(ctx->model);
    size_t i = 0;
    while (i < n) {
        size_t j = i + 1;
        while (j < n && (size_t)(seq_start[j + 1] - seq_start[i]) <= budget)
            j++;
        /* seq_start rebased to the batch: the backend wants seq_start[0] == 0. */
        int32_t *ss = embd_malloc2(j - i + 1, sizeof *ss);
        if (!ss) return embd_error(EMBD_ERR_NOMEM, "out of memory packing a batch");
        for (size_t k = i; k <= j; k++)
            ss[k - i] = seq_start[k] - seq_start[i];
        embd_batch b = {
            .n_seq = (int)(j - i),
            .n_tok = ss[j - i],
            .ids = ids + seq_start[i],
            .seq_start = ss,
            .type_ids = types ? types + seq_start[i] : NULL,
        };
        double t0 = embd_now();
        enum embd_status st = ctx_embed_batch(ctx, out + i * (size_t)D, &b, l2 && model_l2);
        double dt = embd_now() - t0;
        ctx->stats.forward_sec += dt;
        embd_free(ss);
        if (st != EMBD_OK) return st;
        if (l2 && !model_l2) l2_rows(out + i * (size_t)D, j - i, (size_t)D);
        embd_metrics_observe(ctx->m, EMBD_H_INFERENCE_SEC, dt);
        embd_metrics_observe(ctx->m, EMBD_H_BATCH_INPUTS, (double)b.n_seq);
        embd_metrics_observe(ctx->m, EMBD_H_BATCH_TOKENS, (double)b.n_tok);
        embd_metrics_add(ctx->m, EMBD_C_BATCHES, 1);
        embd_metrics_add(ctx->m, EMBD_C_TOKENS, (uint64_t)b.n_tok);
        if (ctx->ops->mem_stats) { /* a GPU */
            struct embd_ctx_gpu_stats gs;
            embd_ctx_gpu_stats(ctx, &gs);
            embd_metrics_set(ctx->m, EMBD_G_DEVICE_MEM_BYTES,
                             (double)(gs.weight_bytes + gs.scratch_bytes));
            embd_metrics_set(ctx->m, EMBD_G_DEVICE_MEM_PEAK, (double)gs.peak_bytes);
        }
        ctx->stats.batches++;
        ctx->stats.tokens += (uint64_t)b.n_tok;
        ctx->stats.inputs += (uint64_t)b.n_seq;
        i = j;
    }
    return EMBD_OK;
}

/* The call's prefix and text joined into *joined (embd_free it), or the text
 * itself when there is no prefix (*joined NULL). Sets *t and *tlen. */
static enum embd_status with_prefix(const struct call *c, const char *text, size_t len,
                                    char **joined, const char **t, size_t *tlen) {
    *joined = NULL;
    *t = text;
    *tlen = len;
    if (!c->prefix) return EMBD_OK;
    *joined = embd_malloc(c->prefix_len + len + 1);
    if (!*joined) return embd_error(EMBD_ERR_NOMEM, "out of memory adding the prefix");
    memcpy(*joined, c->prefix, c->prefix_len);
    if (len) memcpy(*joined + c->prefix_len, text, len);
    *t = *joined;
    *tlen = c->prefix_len + len;
    return EMBD_OK;
}

/* Tokenizes one text (with the call's prefix) into ids (cap max_tokens);
 * *word is the token word (cache.h): the count, and whether it was cut. */
static enum embd_status tokenize_one(const embd_ctx *ctx, const struct call *c, const char *text,
                                     size_t len, int32_t *ids, uint32_t *word) {
    const embd_model *m = ctx->model;
    const int max_tokens = m->hp.max_tokens;
    char *joined;
    const char *t;
    size_t tlen, got = 0;
    bool cut = false;
    enum embd_status st = with_prefix(c, text, len, &joined, &t, &tlen);
    if (st == EMBD_OK)
        st =
            embd_tokenizer_encode(m->tok, t, tlen, max_tokens, ids, (size_t)max_tokens, &got, &cut);
    embd_free(joined);
    *word = (uint32_t)got | (cut ? EMBD_CACHE_TRUNCATED : 0);
    return st;
}

/* The typed refusal of input i (too long, truncation off), with its full
 * token count (counted again: this is the error path). */
static enum embd_status refuse_long(const embd_ctx *ctx, const struct call *c, const char *text,
                                    size_t len, size_t i, struct embd_embed_info *info) {
    char *joined;
    const char *t;
    size_t tlen, full = 0;
    if (with_prefix(c, text, len, &joined, &t, &tlen) == EMBD_OK)
        embd_count_tokens(ctx->model, t, tlen, &full);
    embd_free(joined);
    if (info) {
        info->bad_input = i;
        info->bad_tokens = full;
    }
    return embd_error(EMBD_ERR_TOO_LONG, "input %zu has %zu tokens; the model takes at most %d", i,
                      full, ctx->model->hp.max_tokens);
}

/* The texts of one call being tokenized by the context's threads. */
struct tok_job {
    const embd_ctx *ctx;
    const struct call *c;
    const char *const *texts;
    const size_t *lens;
    size_t n;
    int32_t *ids;    /* (n, max_tokens) */
    uint32_t *words; /* (n) */
    atomic_int next;
    atomic_bool failed; /* the first failure's thread writes first_err and err_msg */
    enum embd_status first_err;
    char err_msg[512];
};

/* Tokenizes the texts this thread takes, 16 at a time. */
static void tokenize_part(void *a, int tid, int nth) {
    (void)tid, (void)nth;
    struct tok_job *j = a;
    const size_t max_tokens = (size_t)j->ctx->model->hp.max_tokens;
    for (;;) {
        const size_t b = (size_t)embd_pool_next(&j->next, 16);
        if (b >= j->n) break;
        const size_t e = b + 16 < j->n ? b + 16 : j->n;
        for (size_t i = b; i < e; i++) {
            const size_t len = j->lens ? j->lens[i] : strlen(j->texts[i]);
            enum embd_status s =
                tokenize_one(j->ctx, j->c, j->texts[i], len, j->ids + i * max_tokens, &j->words[i]);
            if (s != EMBD_OK) {
                if (!atomic_exchange(&j->failed, true)) {
                    j->first_err = s;
                    snprintf(j->err_msg, sizeof j->err_msg, "text %zu: %s", i, embd_last_error());
                }
                j->words[i] = 0;
            }
        }
    }
}

/* Tokenizes and embeds n texts (arguments checked), no cache; words (n)
 * receives each text's token word. With !c->truncate a text that was cut
 * fails the call (EMBD_ERR_TOO_LONG, the first such, *bad its index) before
 * anything runs. */
static enum embd_status embed_texts(embd_ctx *ctx, const struct call *c, const char *const *texts,
                                    const size_t *lens, size_t n, float *out, uint32_t *words,
                                    struct embd_embed_info *info) {
    const size_t max_tokens = (size_t)ctx->model->hp.max_tokens;
    enum embd_status st = EMBD_OK;
    int32_t *ids = embd_malloc2(n * max_tokens, sizeof *ids);    /* (n * max_tokens) scratch */
    int32_t *seq_start = embd_malloc2(n + 1, sizeof *seq_start); /* (n+1) */
    if (!ids || !seq_start) {
        st = embd_error(EMBD_ERR_NOMEM, "out of memory tokenizing %zu texts", n);
        goto done;
    }

    /* Tokenize in parallel, each text into its own max_tokens slot. */
    double t0 = embd_now();
    struct tok_job tj = {
        .ctx = ctx, .c = c, .texts = texts, .lens = lens, .n = n, .ids = ids, .words = words};
    atomic_init(&tj.next, 0);
    atomic_init(&tj.failed, false);
    if (n >= 32 && n <= INT_MAX / 2) /* the counter is an int */
        embd_pool_run(ctx->pool, tokenize_part, &tj);
    else
        tokenize_part(&tj, 0, 1);
    ctx->stats.tokenize_sec += embd_now() - t0;
    embd_metrics_observe(ctx->m, EMBD_H_TOKENIZE_SEC, embd_now() - t0);
    if (atomic_load(&tj.failed)) {
        st = embd_error(tj.first_err, "%s", tj.err_msg);
        goto done;
    }
    if (!c->truncate)
        for (size_t i = 0; i < n; i++)
            if (words[i] & EMBD_CACHE_TRUNCATED) {
                st = refuse_long(ctx, c, texts[i], lens ? lens[i] : strlen(texts[i]), i, info);
                goto done;
            }

    /* Compact the slots into a packed batch (in place: destination <= source). */
    seq_start[0] = 0;
    for (size_t i = 0; i < n; i++) {
        const int32_t len = (int32_t)(words[i] & ~EMBD_CACHE_TRUNCATED);
        int32_t *dst = ids + seq_start[i];
        const int32_t *src = ids + i * max_tokens;
        if (dst != src) memmove(dst, src, (size_t)len * sizeof *dst);
        seq_start[i + 1] = seq_start[i] + len;
    }
    st = run_batches(ctx, c, ids, seq_start, n, out);

done:
    embd_free(ids);
    embd_free(seq_start);
    return st;
}

/* The cache key head of a call: the context's (model, backend, precision,
 * truncation length) and the call's options that change a vector
 * (normalisation and prefix). *head is embd_free'd by the caller. */
static enum embd_status call_key_head(const embd_ctx *ctx, const struct call *c,
                                      unsigned char **head, size_t *len) {
    const size_t cap = ctx->key_head_len + 1 + 8 + c->prefix_len;
    unsigned char *h = embd_malloc(cap);
    if (!h) return embd_error(EMBD_ERR_NOMEM, "out of memory making cache keys");
    const unsigned char l2 = c->l2;
    const uint64_t plen = c->prefix_len;
    size_t n = head_put(h, 0, cap, ctx->key_head, ctx->key_head_len);
    n = head_put(h, n, cap, &l2, 1);
    n = head_put(h, n, cap, &plen, sizeof plen);
    if (plen) n = head_put(h, n, cap, c->prefix, c->prefix_len);
    *head = h;
    *len = n;
    return EMBD_OK;
}

/* Looks every text up; only the misses go to the tokenizer and the backend,
 * each distinct text once (so that equal texts get one and the same vector),
 * and their vectors and token words are merged back in input order. */
static enum embd_status embed_cached(embd_ctx *ctx, const struct call *c, const char *const *texts,
                                     const size_t *lens, size_t n, float *out, uint32_t *words,
                                     struct embd_embed_info *info) {
    const size_t D = (size_t)ctx->model->hp.H;
    enum embd_status st = EMBD_OK;
    unsigned char *head = NULL;
    size_t head_len = 0;
    embd_cache_key *keys = embd_malloc2(n, sizeof *keys); /* (n) */
    unsigned char *hit = embd_malloc(n);                  /* (n) */
    const char **miss_texts = NULL;                       /* (m) distinct missing texts */
    size_t *miss_lens = NULL;                             /* (m) */
    embd_cache_key *miss_keys = NULL;                     /* (m) */
    float *miss_out = NULL;                               /* (m, D) */
    uint32_t *miss_words = NULL;                          /* (m) */
    size_t *slot_of = NULL; /* (n) for each missing input, its row in miss_out */
    size_t *table = NULL;   /* (tsize) open addressing over miss rows + 1; 0 = empty */
    if (!keys || !hit) goto nomem;
    if ((st = call_key_head(ctx, c, &head, &head_len)) != EMBD_OK) goto done;
    for (size_t i = 0; i < n; i++)
        embd_cache_key_make(&keys[i], head, head_len, texts[i], lens ? lens[i] : strlen(texts[i]));
    size_t hits = embd_cache_get(ctx->cache, keys, n, out, words, hit);
    if (!c->truncate)
        for (size_t i = 0; i < n; i++)
            if (hit[i] && (words[i] & EMBD_CACHE_TRUNCATED)) {
                st = refuse_long(ctx, c, texts[i], lens ? lens[i] : strlen(texts[i]), i, info);
                goto done;
            }
    size_t m = n - hits;
    if (m == 0) goto done;
    size_t tsize = 16;
    while (tsize < 2 * m)
        tsize *= 2;
    miss_texts = embd_malloc2(m, sizeof *miss_texts);
    miss_lens = embd_malloc2(m, sizeof *miss_lens);
    miss_keys = embd_malloc2(m, sizeof *miss_keys);
    miss_words = embd_malloc2(m, sizeof *miss_words);
    slot_of = embd_malloc2(n, sizeof *slot_of);
    table = embd_calloc(tsize, sizeof *table);
    if (!miss_texts || !miss_lens || !miss_keys || !miss_words || !slot_of || !table) goto nomem;
    size_t u = 0; /* distinct missing texts */
    for (size_t i = 0; i < n; i++) {
        if (hit[i]) continue;
        size_t t = (size_t)keys[i].lo & (tsize - 1);
        while (table[t] && (miss_keys[table[t] - 1].lo != keys[i].lo ||
                            miss_keys[table[t] - 1].hi != keys[i].hi))
            t = (t + 1) & (tsize - 1);
        if (!table[t]) {
            miss_texts[u] = texts[i];
            miss_lens[u] = lens ? lens[i] : strlen(texts[i]);
            miss_keys[u] = keys[i];
            table[t] = ++u;
        }
        slot_of[i] = table[t] - 1;
    }
    miss_out = embd_malloc2(u * D, sizeof *miss_out);
    if (!miss_out) goto nomem;
    st = embed_texts(ctx, c, miss_texts, miss_lens, u, miss_out, miss_words, info);
    if (st == EMBD_ERR_TOO_LONG && info) { /* a row of the misses: name the input */
        for (size_t i = 0; i < n; i++)
            if (!hit[i] && slot_of[i] == info->bad_input) {
                info->bad_input = i;
                break;
            }
    }
    if (st != EMBD_OK) goto done;
    embd_cache_put(ctx->cache, miss_keys, u, miss_out, miss_words);
    for (size_t i = 0; i < n; i++)
        if (!hit[i]) {
            memcpy(out + i * D, miss_out + slot_of[i] * D, D * sizeof *out);
            words[i] = miss_words[slot_of[i]];
        }
    goto done;

nomem:
    st = embd_error(EMBD_ERR_NOMEM, "out of memory looking up %zu texts in the cache", n);
done:
    embd_free(head);
    embd_free(keys);
    embd_free(hit);
    embd_free(miss_texts);
    embd_free(miss_lens);
    embd_free(miss_keys);
    embd_free(miss_out);
    embd_free(miss_words);
    embd_free(slot_of);
    embd_free(table);
    return st;
}

/* A cross-encoder scores pairs; its [CLS] state is no sentence embedding. */
static enum embd_status refuse_reranker(const embd_ctx *ctx) {
    if (!embd_model_is_reranker(ctx->model)) return EMBD_OK;
    return embd_error(EMBD_ERR_UNSUPPORTED,
                      "%s is a cross-encoder (reranker): it scores query-document pairs "
                      "(embd rerank, /rerank) and makes no embeddings",
                      ctx->model->dir);
}

enum embd_status embd_embed_ex(embd_ctx *ctx, const char *const *texts, const size_t *lens,
                               size_t n, float *out, const struct embd_embed_opts *opts,
                               struct embd_embed_info *info) {
    if (info) {
        info->total_tokens = 0;
        info->bad_input = info->bad_tokens = 0;
    }
    if (!ctx || (!texts && n) || (!out && n))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_embed: NULL argument");
    struct call c;
    enum embd_status st = call_resolve(ctx, opts, &c);
    if (st == EMBD_OK) st = refuse_reranker(ctx);
    if (st != EMBD_OK || n == 0) return st;
    if (n > (size_t)INT32_MAX / (size_t)ctx->model->hp.max_tokens)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_embed: too many texts in one call (%zu)", n);
    for (size_t i = 0; i < n; i++)
        if (!texts[i]) return embd_error(EMBD_ERR_INVALID_ARG, "embd_embed: text %zu is NULL", i);
    embd_metrics_add(ctx->m, EMBD_C_REQUESTS, 1);
    embd_metrics_add(ctx->m, EMBD_C_INPUTS, n);
    const size_t D = (size_t)ctx->model->hp.H;
    uint32_t *words = embd_malloc2(n, sizeof *words);               /* (n) token words */
    float *full = c.dims ? embd_malloc2(n * D, sizeof *full) : out; /* (n, D) */
    if (!words || !full) {
        embd_free(words);
        if (full != out) embd_free(full);
        return embd_error(EMBD_ERR_NOMEM, "out of memory embedding %zu texts", n);
    }
    st = ctx->cache ? embed_cached(ctx, &c, texts, lens, n, full, words, info)
                    : embed_texts(ctx, &c, texts, lens, n, full, words, info);
    if (st == EMBD_OK && c.dims) keep_dims(out, full, n, D, (size_t)c.dims, c.l2);
    if (full != out) embd_free(full);
    if (st == EMBD_OK && info) {
        for (size_t i = 0; i < n; i++) {
            const size_t t = words[i] & ~EMBD_CACHE_TRUNCATED;
            if (info->n_tokens) info->n_tokens[i] = t;
            info->total_tokens += t;
        }
    }
    embd_free(words);
    return st;
}

enum embd_status embd_embed(embd_ctx *ctx, const char *const *texts, const size_t *lens, size_t n,
                            float *out) {
    return embd_embed_ex(ctx, texts, lens, n, out, NULL, NULL);
}

enum embd_status embd_embed_tokens_ex(embd_ctx *ctx, const int32_t *ids, const size_t *seq_start,
                                      size_t n, float *out, const struct embd_embed_opts *opts,
                                      struct embd_embed_info *info) {
    if (info) {
        info->total_tokens = 0;
        info->bad_input = info->bad_tokens = 0;
    }
    if (!ctx || (n && (!ids || !seq_start || !out)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_embed_tokens: NULL argument");
    struct call c;
    enum embd_status st = call_resolve(ctx, opts, &c);
    if (st == EMBD_OK) st = refuse_reranker(ctx);
    if (st != EMBD_OK || n == 0) return st;
    if (opts && opts->prefix && opts->prefix[0])
        return embd_error(EMBD_ERR_INVALID_ARG,
                          "embd_embed_tokens: a prefix cannot be added to token ids");
    embd_metrics_add(ctx->m, EMBD_C_REQUESTS, 1);
    embd_metrics_add(ctx->m, EMBD_C_INPUTS, n);
    const embd_hparams *hp = &ctx->model->hp;
    if (seq_start[0] != 0)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_embed_tokens: seq_start[0] must be 0");
    for (size_t i = 0; i < n; i++) {
        if (seq_start[i + 1] <= seq_start[i])
            return embd_error(EMBD_ERR_INVALID_ARG, "input %zu has no tokens", i);
        size_t len = seq_start[i + 1] - seq_start[i];
        if (len > (size_t)hp->max_tokens) {
            if (info) {
                info->bad_input = i;
                info->bad_tokens = len;
            }
            return embd_error(EMBD_ERR_TOO_LONG,
                              "input %zu has %zu tokens; the model takes at most %d", i, len,
                              hp->max_tokens);
        }
    }
    if (seq_start[n] > (size_t)INT32_MAX)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_embed_tokens: too many tokens");
    for (size_t t = 0; t < seq_start[n]; t++)
        if (ids[t] < 0 || ids[t] >= hp->V)
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "token id %d at position %zu is out of range [0, %d)", ids[t], t,
                              hp->V);
    int32_t *ss = embd_malloc2(n + 1, sizeof *ss);
    if (!ss) return embd_error(EMBD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i <= n; i++)
        ss[i] = (int32_t)seq_start[i];
    const size_t D = (size_t)hp->H;
    float *full = c.dims ? embd_malloc2(n * D, sizeof *full) : out; /* (n, D) */
    st = full ? run_batches(ctx, &c, ids, ss, n, full)
              : embd_error(EMBD_ERR_NOMEM, "out of memory embedding %zu inputs", n);
    if (st == EMBD_OK && c.dims) keep_dims(out, full, n, D, (size_t)c.dims, c.l2);
    if (full != out) embd_free(full);
    embd_free(ss);
    if (st == EMBD_OK && info) {
        for (size_t i = 0; i < n; i++)
            if (info->n_tokens) info->n_tokens[i] = seq_start[i + 1] - seq_start[i];
        info->total_tokens = seq_start[n];
    }
    return st;
}

enum embd_status embd_embed_tokens(embd_ctx *ctx, const int32_t *ids, const size_t *seq_start,
                                   size_t n, float *out) {
    return embd_embed_tokens_ex(ctx, ids, seq_start, n, out, NULL, NULL);
}

static char system_info[1024];

/* "cpu: ..." lines: the model, the features the kernels use, the kernel set
 * the CPU backend runs and why (isa.h), and the low-precision modes. */
static void system_info_init(void) {
    const embd_cpu_features *f = embd_cpu_features_get();
    enum embd_cpu_isa isa;
    char why[160], bf16_why[160] = "", int8_why[160] = "";
    const bool isa_ok = embd_cpu_isa_choose(&isa, why, sizeof why);
    /* the CPU backend's own rule (isa.h), with the kernel set it would run */
    int k16 = 0, k8 = 0; /* enum embd_lowp_kernels: 0 256-bit, 1 512-bit, 2 AMX */
    const bool bf16 = isa_ok && embd_cpu_lowp_kernels(false, isa, &k16, bf16_why, sizeof bf16_why);
    const bool int8 = isa_ok && embd_cpu_lowp_kernels(true, isa, &k8, int8_why, sizeof int8_why);
    /* why AMX does not run where the CPU has it */
    char amx_why[160] = "";
    if ((f->amx_bf16 || f->amx_int8) && isa_ok &&
        !embd_cpu_amx_runs(!f->amx_bf16, isa, amx_why + 10, sizeof amx_why - 10))
        memcpy(amx_why, "; no AMX: ", 10);
    if (!isa_ok) {
        snprintf(bf16_why, sizeof bf16_why, "no kernel set is usable");
        snprintf(int8_why, sizeof int8_why, "no kernel set is usable");
    }
    const int cpus = embd_pool_cpus();
    char quota_str[32] = "none";
    const int quota = embd_pool_cgroup_cpus("/proc/self/cgroup", "/sys/fs/cgroup");
    if (quota > 0) snprintf(quota_str, sizeof quota_str, "%d", quota);
    snprintf(system_info, sizeof system_info,
             "cpu: %s (family %d model %d), %ld online cores, %d usable by this process "
             "(%d in its affinity mask, cgroup CPU quota %s)\n"
             "cpu features:%s%s%s%s%s%s%s%s%s%s%s%s\n"
             "cpu kernels: %s (%s)\n"
             "cpu low precision: bf16 %s%s%s, int8 %s%s%s%s\n"
             "cpu threads: %d by default (--threads); idle ones spin %d us, then sleep "
             "(EMBD_CPU_SPIN_US)\n"
             "blas: %s\ncuda: plugins (libembd-cuda13.so, libembd-cuda11.so), loaded on demand\n",
             f->model, f->family, f->model_id, sysconf(_SC_NPROCESSORS_ONLN), cpus,
             embd_pool_affinity_cpus(), quota_str, f->avx2 ? " avx2" : "", f->fma ? " fma" : "",
             f->avx512f ? " avx512f" : "", f->avx512bw ? " avx512bw" : "",
             f->avx512vl ? " avx512vl" : "", f->avx512dq ? " avx512dq" : "",
             f->avx512_bf16 ? " avx512_bf16" : "", f->avx512_vnni ? " avx512_vnni" : "",
             f->avx_vnni ? " avx_vnni" : "", f->amx_bf16 ? " amx_bf16" : "",
             f->amx_int8 ? " amx_int8" : "",
             f->os_zmm ? "; OS saves zmm" : "; OS does not save zmm",
             isa_ok ? embd_cpu_isa_name(isa) : "refused", why,
             bf16 ? (k16 == 2 ? "yes (AMX-BF16 tiles)" : "yes (AVX512_BF16)") : "no (",
             bf16 ? "" : bf16_why, bf16 ? "" : ")",
             int8 ? (k8 == 2   ? "yes (AMX-INT8 tiles)"
                     : k8 == 1 ? "yes (AVX512_VNNI)"
                               : "yes (AVX-VNNI, 256-bit)")
                  : "no (",
             int8 ? "" : int8_why, int8 ? "" : ")", amx_why, cpus, embd_pool_spin_us(),
             openblas_get_config());
}

int embd_cpu_count(void) {
    return embd_pool_cpus();
}

const char *embd_system_info(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, system_info_init);
    return system_info;
}

int embd_ctx_max_batch_tokens(const embd_ctx *ctx) {
    return ctx ? ctx->batch_tokens : 0;
}
