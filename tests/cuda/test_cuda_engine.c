/* test_cuda_engine.c — the engine on a GPU with the real all-MiniLM-L6-v2
 * (skips, 77, without a GPU or the model):
 * 1. batch invariance: in fp16 and bf16, each text alone equals it inside a
 *    batch of all of them (cosine >= 0.9999) and the CPU's fp32 vector
 *    (>= 0.999);
 * 2. gpu_memory_limit: with a limit of the weights + 48 MiB the peak device
 *    memory stays under it, the batch shrinks below the unlimited one and
 *    the vectors are right; a limit below the weights is refused (device
 *    cuda, naming the limit) and sends device auto to the CPU with the
 *    reason cuda_gpu_memory;
 * 3. a sticky GPU error (a trapping kernel, the plugin's test hook) in the
 *    fourth forward pass: the call still succeeds, every vector is right
 *    (the CPU ran the rest), the context reports cuda_dead, the fallback is
 *    counted in its GPU stats and its metrics. Last: the device's context
 *    is lost for this process. */
#include "cuda_test.h"
#include "embd.h"

#include <sys/stat.h>

enum { N_TEXTS = 96 };

/* Texts of 1 to about 200 words, made from a fixed list. */
static char *texts[N_TEXTS];

static void make_texts(void) {
    static const char *const words[] = {
        "package", "library", "kernel",  "network", "embedding", "python", "server", "database",
        "the",     "a",       "of",      "driver",  "Debian",    "GPU",    "fast",   "search",
        "vector",  "tool",    "utility", "files",   "manager",   "daemon", "sound",  "image"};
    const int nw = (int)(sizeof words / sizeof words[0]);
    unsigned r = 12345;
    for (int i = 0; i < N_TEXTS; i++) {
        int len = 1 + (i * 37) % 200;
        size_t cap = (size_t)len * 12 + 1, at = 0;
        texts[i] = malloc(cap);
        for (int w = 0; w < len; w++) {
            r = r * 1103515245u + 12345u;
            at += (size_t)snprintf(texts[i] + at, cap - at, "%s%s", w ? " " : "",
                                   words[(r >> 16) % (unsigned)nw]);
        }
    }
}

static embd_ctx *new_ctx(embd_model *m, enum embd_device dev, enum embd_dtype dt, int budget,
                         const char *limit, enum embd_status *st) {
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = dev;
    p.dtype = dt;
    p.max_batch_tokens = budget;
    p.cache_bytes = 0; /* every call computes */
    p.gpu_memory_limit = limit;
    embd_ctx *ctx = NULL;
    *st = embd_ctx_new(m, p, &ctx);
    return *st == EMBD_OK ? ctx : NULL;
}

static double worst_vs(const float *got, const float *want, int n, int H) {
    double w = 1.0;
    for (int i = 0; i < n; i++) {
        double c = test_cosine(got + (size_t)i * H, want + (size_t)i * H, H);
        if (!(c >= w)) w = isnan(c) ? -2.0 : c;
    }
    return w;
}

int main(void) {
    cuda_test_plugin(EMBD_DTYPE_FP16);
    const struct embd_cuda_plugin *p = embd_cuda_load(NULL, 0);
    const char *models = getenv("EMBD_TEST_MODELS");
    char dir[4096];
    struct stat sb;
    if (!models) TEST_SKIP("EMBD_TEST_MODELS not set");
    snprintf(dir, sizeof dir, "%s/all-MiniLM-L6-v2", models);
    if (stat(dir, &sb) != 0) TEST_SKIP("%s missing", dir);
    embd_model *m = NULL;
    CHECK(embd_model_load(dir, embd_model_default_params(), &m) == EMBD_OK);
    if (!m) return test_summary("cuda_engine");
    make_texts();
    const int H = embd_model_dim(m);
    float *cpu = malloc(sizeof(float) * N_TEXTS * (size_t)H);
    float *all = malloc(sizeof(float) * N_TEXTS * (size_t)H);
    float *one = malloc(sizeof(float) * (size_t)H);
    enum embd_status st;

    embd_ctx *c = new_ctx(m, EMBD_DEVICE_CPU, EMBD_DTYPE_FP32, 0, NULL, &st);
    CHECK(c && embd_embed(c, (const char *const *)texts, NULL, N_TEXTS, cpu) == EMBD_OK);
    embd_ctx_free(c);

    /* 1. batch invariance */
    const enum embd_dtype dts[] = {EMBD_DTYPE_FP16, EMBD_DTYPE_BF16};
    for (int d = 0; d < 2; d++) {
        if (dts[d] == EMBD_DTYPE_BF16 && cuda_test_cc(p) < 80) continue;
        embd_ctx *g = new_ctx(m, EMBD_DEVICE_CUDA, dts[d], 0, NULL, &st);
        CHECK_MSG(g != NULL, "cuda %s context: %s", dt_name(dts[d]), embd_last_error());
        if (!g) continue;
        CHECK(embd_embed(g, (const char *const *)texts, NULL, N_TEXTS, all) == EMBD_OK);
        double w_batch = 1.0;
        for (int i = 0; i < N_TEXTS; i++) {
            CHECK(embd_embed(g, (const char *const *)&texts[i], NULL, 1, one) == EMBD_OK);
            double cs = test_cosine(one, all + (size_t)i * H, H);
            if (!(cs >= w_batch)) w_batch = cs;
        }
        double w_cpu = worst_vs(all, cpu, N_TEXTS, H);
        printf("%s: alone vs in the batch worst cosine %.7f; vs CPU fp32 %.7f\n", dt_name(dts[d]),
               w_batch, w_cpu);
        CHECK(w_batch >= 0.9999);
        CHECK(w_cpu >= 0.999);
        embd_ctx_free(g);
    }

    /* 2. the memory limit */
    embd_ctx *g = new_ctx(m, EMBD_DEVICE_CUDA, EMBD_DTYPE_FP16, 0, NULL, &st);
    struct embd_ctx_gpu_stats free_run = {0}, lim_run = {0};
    CHECK(g && embd_embed(g, (const char *const *)texts, NULL, N_TEXTS, all) == EMBD_OK);
    embd_ctx_gpu_stats(g, &free_run);
    embd_ctx_free(g);
    char lim[64];
    const size_t limit = free_run.weight_bytes + ((size_t)48 << 20);
    snprintf(lim, sizeof lim, "%zu", limit);
    g = new_ctx(m, EMBD_DEVICE_CUDA, EMBD_DTYPE_FP16, 0, lim, &st);
    CHECK_MSG(g != NULL, "a limit of the weights + 48 MiB: %s", embd_last_error());
    if (g) {
        CHECK(embd_embed(g, (const char *const *)texts, NULL, N_TEXTS, all) == EMBD_OK);
        embd_ctx_gpu_stats(g, &lim_run);
        printf("limit %zu MiB: peak %zu MiB (unlimited: %zu MiB), batch %d tokens (unlimited "
               "%d)\n",
               limit >> 20, lim_run.peak_bytes >> 20, free_run.peak_bytes >> 20,
               lim_run.batch_tokens, free_run.batch_tokens);
        CHECK(lim_run.peak_bytes <= limit);
        CHECK(lim_run.batch_tokens < free_run.batch_tokens);
        CHECK(worst_vs(all, cpu, N_TEXTS, H) >= 0.999);
        embd_ctx_free(g);
    }
    snprintf(lim, sizeof lim, "%zu", free_run.weight_bytes / 2);
    g = new_ctx(m, EMBD_DEVICE_CUDA, EMBD_DTYPE_FP16, 0, lim, &st);
    CHECK_MSG(!g && strstr(embd_last_error(), "GPU memory limit"), "below the weights: %s",
              embd_last_error());
    embd_ctx_free(g);
    g = new_ctx(m, EMBD_DEVICE_AUTO, EMBD_DTYPE_AUTO, 0, lim, &st);
    const char *msg = NULL;
    CHECK(g && embd_ctx_fallback(g, &msg) == EMBD_FALLBACK_GPU_MEMORY);
    embd_ctx_free(g);

    /* 3. a sticky error in the fourth forward pass (small batches: many passes) */
    g = new_ctx(m, EMBD_DEVICE_CUDA, EMBD_DTYPE_FP16, 1024, NULL, &st);
    CHECK(g != NULL);
    if (g) {
        p->test->sticky_after(3);
        memset(all, 0, sizeof(float) * N_TEXTS * (size_t)H);
        st = embd_embed(g, (const char *const *)texts, NULL, N_TEXTS, all);
        CHECK_MSG(st == EMBD_OK, "the call survives the GPU: %s", embd_last_error());
        double w = worst_vs(all, cpu, N_TEXTS, H);
        struct embd_ctx_gpu_stats gs;
        embd_ctx_gpu_stats(g, &gs);
        printf("sticky error: worst cosine %.7f, dead %d, CPU fallbacks %llu, backend %s\n", w,
               gs.dead, (unsigned long long)gs.cpu_fallbacks, embd_ctx_backend(g));
        CHECK(w >= 0.999);
        CHECK(gs.dead && gs.cpu_fallbacks > 0);
        CHECK(embd_ctx_fallback(g, &msg) == EMBD_FALLBACK_GPU_DEAD);
        CHECK(!strcmp(embd_ctx_backend(g), "cpu"));
        char met[65536];
        embd_metrics_render(g, met, sizeof met);
        CHECK(strstr(met, "embd_fallbacks_total{reason=\"cuda_dead\"}") != NULL);
        /* the next call runs on the CPU: exact */
        CHECK(embd_embed(g, (const char *const *)texts, NULL, 4, all) == EMBD_OK);
        CHECK(worst_vs(all, cpu, 4, H) >= 0.99999);
        embd_ctx_free(g);
    }
    for (int i = 0; i < N_TEXTS; i++)
        free(texts[i]);
    free(cpu), free(all), free(one);
    embd_model_free(m);
    return test_summary("cuda_engine");
}
