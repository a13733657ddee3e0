/* test_fallback_reasons.c — the typed fallback reasons: every value of enum
 * embd_fallback has a unique snake_case label (NONE is "none"; the metric
 * labels dashboards read are unchanged); a context reports its backend,
 * dtype and fallback reason as typed values, and the metrics count that
 * reason under its label once.
 *
 * Runs everywhere. The reason device auto gets is the one embd_cuda_check
 * gives for this machine; without libcuda.so.1 it must be NO_DRIVER. CMake
 * also runs it with a stand-in libcuda.so.1 on LD_LIBRARY_PATH and
 * EMBD_CUDA_PLUGIN naming a missing file, with EMBD_TEST_EXPECT_FALLBACK
 * saying which label to expect then (auto_cpu_no_plugin). */
#include "backend/cuda/plugin.h"
#include "model/tiny_model.h"
#include "test.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static char *root;

/* The value of the sample line starting with `prefix` + " ", or -1. */
static double sample(const char *text, const char *prefix) {
    size_t n = strlen(prefix);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        if (!strncmp(l, prefix, n) && l[n] == ' ') return strtod(l + n + 1, NULL);
    return -1;
}

/* How many embd_fallbacks_total samples the context's metrics have. */
static int fallback_series(embd_ctx *ctx) {
    char text[16384];
    embd_metrics_render(ctx, text, sizeof text);
    int n = 0;
    for (const char *q = strstr(text, "\nembd_fallbacks_total{"); q;
         q = strstr(q + 1, "\nembd_fallbacks_total{"))
        n++;
    return n;
}

/* The count of embd_fallbacks_total{reason="label"} in the context's metrics. */
static double fallback_count(embd_ctx *ctx, const char *label) {
    char text[16384], key[128];
    embd_metrics_render(ctx, text, sizeof text);
    snprintf(key, sizeof key, "embd_fallbacks_total{reason=\"%s\"}", label);
    return sample(text, key);
}

static void test_labels(void) {
    CHECK(!strcmp(embd_fallback_str(EMBD_FALLBACK_NONE), "none"));
    for (int r = 0; r < EMBD_FALLBACK_COUNT; r++) {
        const char *l = embd_fallback_str((enum embd_fallback)r);
        CHECK_MSG(l && l[0] && strcmp(l, "unknown") != 0, "reason %d has no label", r);
        if (!l) continue;
        CHECK_MSG(strspn(l, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(l),
                  "reason %d: label %s is not snake_case", r, l);
        for (int q = 0; q < r; q++)
            CHECK_MSG(strcmp(l, embd_fallback_str((enum embd_fallback)q)) != 0,
                      "reasons %d and %d share the label %s", q, r, l);
    }
    CHECK(!strcmp(embd_fallback_str(EMBD_FALLBACK_COUNT), "unknown"));
    CHECK(!strcmp(embd_fallback_str((enum embd_fallback) - 1), "unknown"));
    /* the metric's label values, which dashboards read: never renamed */
    static const struct {
        enum embd_fallback r;
        const char *label;
    } kept[] = {
        {EMBD_FALLBACK_NO_PLUGIN, "auto_cpu_no_plugin"},
        {EMBD_FALLBACK_NO_DRIVER, "auto_cpu_no_driver"},
        {EMBD_FALLBACK_NO_DEVICE, "auto_cpu_no_device"},
        {EMBD_FALLBACK_COMPUTE_CAPABILITY, "auto_cpu_compute_capability"},
        {EMBD_FALLBACK_GPU_MEMORY, "auto_cpu_gpu_memory"},
        {EMBD_FALLBACK_GPU_UNUSABLE, "auto_cpu_gpu_unusable"},
        {EMBD_FALLBACK_GPU_INIT, "auto_cpu_cuda_init"},
        {EMBD_FALLBACK_GPU_DEAD, "cuda_dead"},
        {EMBD_FALLBACK_GPU_OOM, "cuda_oom"},
    };
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        CHECK_MSG(!strcmp(embd_fallback_str(kept[i].r), kept[i].label), "%s became %s",
                  kept[i].label, embd_fallback_str(kept[i].r));

    CHECK(!strcmp(embd_dtype_str(EMBD_DTYPE_AUTO), "auto"));
    CHECK(!strcmp(embd_dtype_str(EMBD_DTYPE_FP32), "fp32"));
    CHECK(!strcmp(embd_dtype_str(EMBD_DTYPE_FP16), "fp16"));
    CHECK(!strcmp(embd_dtype_str(EMBD_DTYPE_BF16), "bf16"));
    CHECK(!strcmp(embd_dtype_str((enum embd_dtype)42), "unknown"));

    const char *msg = "x";
    CHECK(embd_ctx_fallback(NULL, &msg) == EMBD_FALLBACK_NONE && !strcmp(msg, ""));
    CHECK(embd_ctx_fallback(NULL, NULL) == EMBD_FALLBACK_NONE);
    CHECK(embd_ctx_dtype(NULL) == EMBD_DTYPE_AUTO);
    CHECK(!strcmp(embd_ctx_backend(NULL), "none"));
}

static embd_ctx *new_ctx(embd_model *m, enum embd_device dev, int index) {
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = dev;
    p.device_index = index;
    p.n_threads = 1;
    p.cache_bytes = 0;
    embd_ctx *ctx = NULL;
    CHECK_MSG(embd_ctx_new(m, p, &ctx) == EMBD_OK, "%s", embd_last_error());
    return ctx;
}

/* device cpu: no fallback, fp32, nothing counted. */
static void test_cpu(embd_model *m) {
    embd_ctx *ctx = new_ctx(m, EMBD_DEVICE_CPU, 0);
    if (!ctx) return;
    const char *msg = NULL;
    CHECK(embd_ctx_fallback(ctx, &msg) == EMBD_FALLBACK_NONE);
    CHECK(msg && !strcmp(msg, ""));
    CHECK(embd_ctx_dtype(ctx) == EMBD_DTYPE_FP32);
    CHECK(!strcmp(embd_ctx_backend(ctx), "cpu"));
    CHECK_EQ_INT(fallback_series(ctx), 0);
    struct embd_ctx_gpu_stats gs;
    embd_ctx_gpu_stats(ctx, &gs);
    CHECK(!gs.dead && gs.weight_bytes == 0 && gs.cpu_fallbacks == 0);
    embd_ctx_free(ctx);
}

/* device auto with device_index: the reason embd_cuda_check gives (or, set
 * by the caller, `want`), kept by the context with its message and counted
 * once under its label; on the CPU the dtype is fp32. */
static enum embd_fallback test_auto(embd_model *m, int index, const char *want) {
    char why[512];
    enum embd_fallback r = embd_cuda_check(m, index, EMBD_DTYPE_AUTO, NULL, why, sizeof why);
    printf("device auto, cuda:%d: %s: %s\n", index, embd_fallback_str(r), why);
    if (want)
        CHECK_MSG(!strcmp(embd_fallback_str(r), want), "%s, not %s", embd_fallback_str(r), want);
    embd_ctx *ctx = new_ctx(m, EMBD_DEVICE_AUTO, index);
    if (!ctx) return r;
    const char *msg = NULL;
    enum embd_fallback got = embd_ctx_fallback(ctx, &msg);
    CHECK_MSG(got == r, "context: %s, check: %s", embd_fallback_str(got), embd_fallback_str(r));
    if (r == EMBD_FALLBACK_NONE) { /* a usable GPU */
        CHECK(!strcmp(embd_ctx_backend(ctx), "cuda"));
        CHECK(embd_ctx_dtype(ctx) == EMBD_DTYPE_FP16);
        CHECK(msg && !strcmp(msg, ""));
        CHECK_EQ_INT(fallback_series(ctx), 0);
    } else {
        CHECK(!strcmp(embd_ctx_backend(ctx), "cpu"));
        CHECK(embd_ctx_dtype(ctx) == EMBD_DTYPE_FP32);
        CHECK_MSG(msg && !strcmp(msg, why), "message %s, not %s", msg ? msg : "(null)", why);
        const char *texts[1] = {"a b"};
        float out[64];
        CHECK(embd_embed(ctx, texts, NULL, 1, out) == EMBD_OK);
        CHECK(embd_ctx_fallback(ctx, NULL) == r); /* a state, not an event */
        CHECK(fallback_count(ctx, embd_fallback_str(r)) == 1);
        CHECK_EQ_INT(fallback_series(ctx), 1);
    }
    embd_ctx_free(ctx);

    /* device cuda: refused, with the same reason in the message */
    if (r != EMBD_FALLBACK_NONE) {
        struct embd_ctx_params p = embd_ctx_default_params();
        p.device = EMBD_DEVICE_CUDA;
        p.device_index = index;
        ctx = NULL;
        CHECK(embd_ctx_new(m, p, &ctx) == EMBD_ERR_UNSUPPORTED && !ctx);
        CHECK_MSG(strstr(embd_last_error(), why) != NULL, "%s", embd_last_error());
    }
    return r;
}

int main(void) {
    test_labels();
    root = make_temp_dir();
    if (!root) TEST_SKIP("no temporary directory");
    char *dir = path_cat(root, "m");
    embd_model *m = tiny_model_load(dir, 3);
    free(dir);
    CHECK(m != NULL);
    if (m) {
        test_cpu(m);
        const char *want = getenv("EMBD_TEST_EXPECT_FALLBACK");
        void *driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
        if (!want && !driver) want = "auto_cpu_no_driver"; /* this machine has none */
        enum embd_fallback r0 = test_auto(m, 0, want);
        /* no machine has a 100th device: no_device where a driver and the
         * plugin load, else the reason they do not */
        bool no_gpu_stack = r0 == EMBD_FALLBACK_NO_DRIVER || r0 == EMBD_FALLBACK_NO_PLUGIN;
        test_auto(m, 99, no_gpu_stack ? embd_fallback_str(r0) : "auto_cpu_no_device");
        if (driver) dlclose(driver);
        embd_model_free(m);
    }
    rm_rf(root);
    free(root);
    return test_summary("cuda_fallback_reasons");
}
