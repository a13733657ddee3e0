/* test_metrics_log.c — the metrics registry rendered in Prometheus text
 * format (every line well-formed, counters and histograms consistent with
 * what was embedded, truncation returns the needed size, rendering while
 * another thread embeds), and the event log in text and JSON lines, its
 * levels, EMBD_LOG_LEVEL / EMBD_LOG_FORMAT and bad settings. */
#include "util/log.h"
#include "engine/metrics.h"
#include "model/tiny_model.h"
#include "test.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *root;

/* Whether one line of the exposition format is well-formed:
 * "# HELP name text", "# TYPE name counter|gauge|histogram" or
 * "name{label="value",...} number". */
static bool line_ok(const char *l) {
    if (!strncmp(l, "# HELP ", 7)) return isalpha((unsigned char)l[7]) && strchr(l + 7, ' ');
    if (!strncmp(l, "# TYPE ", 7)) {
        const char *t = strrchr(l, ' ');
        return t && (!strcmp(t, " counter") || !strcmp(t, " gauge") || !strcmp(t, " histogram"));
    }
    const char *p = l;
    if (!isalpha((unsigned char)*p) && *p != '_') return false;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
        p++;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            while (isalnum((unsigned char)*p) || *p == '_')
                p++;
            if (p[0] != '=' || p[1] != '"') return false;
            p += 2;
            while (*p && *p != '"')
                p += *p == '\\' ? 2 : 1;
            if (*p++ != '"') return false;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return false;
        }
        p++;
    }
    if (*p++ != ' ') return false;
    char *end;
    strtod(p, &end);
    return end != p && *end == '\0';
}

/* The value of the sample line starting with `prefix` + " ", or -1. */
static double sample(const char *text, const char *prefix) {
    size_t n = strlen(prefix);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        if (!strncmp(l, prefix, n) && l[n] == ' ') return strtod(l + n + 1, NULL);
    return -1;
}

static void check_format(const char *text) {
    char *copy = strdup(text);
    int lines = 0;
    for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        CHECK_MSG(line_ok(l), "bad line: %s", l);
        lines++;
    }
    CHECK(lines > 40);
    CHECK(text[strlen(text) - 1] == '\n');
    free(copy);
}

struct render_arg {
    embd_ctx *ctx;
    atomic_int stop;
    atomic_int renders;
};

static void *render_loop(void *p) {
    struct render_arg *a = p;
    char buf[16384];
    while (!atomic_load(&a->stop)) {
        size_t n = embd_metrics_render(a->ctx, buf, sizeof buf);
        if (n >= sizeof buf || !line_ok("x 1")) break;
        atomic_fetch_add(&a->renders, 1);
    }
    return NULL;
}

/* The count of fallbacks whose reason starts with auto_cpu_ (device auto
 * ran on the CPU), and how many such reasons there are. */
static int auto_cpu_fallbacks(embd_ctx *ctx, int *n_reasons, char *reason, size_t cap) {
    char text[16384];
    embd_metrics_render(ctx, text, sizeof text);
    static const char key[] = "embd_fallbacks_total{reason=\"auto_cpu_";
    int total = 0;
    *n_reasons = 0;
    for (const char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
        const char *r = p + strlen("embd_fallbacks_total{reason=\""), *q = strchr(r, '"');
        if (!q) break;
        snprintf(reason, cap, "%.*s", (int)(q - r), r);
        total += atoi(q + 3); /* after "} " */
        (*n_reasons)++;
    }
    return total;
}

/* Device auto that ends up on the CPU counts one fallback with its reason:
 * device index 99 exists nowhere (no driver here, no such device on a GPU
 * machine); index 0 falls back only without a usable GPU. */
static void test_auto_fallback(embd_model *m) {
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = EMBD_DEVICE_AUTO;
    p.device_index = 99;
    p.n_threads = 1;
    embd_ctx *ctx = NULL;
    CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);
    if (!ctx) return;
    CHECK(!strcmp(embd_ctx_backend(ctx), "cpu"));
    int n_reasons = 0;
    char reason[64] = "";
    CHECK_EQ_INT(auto_cpu_fallbacks(ctx, &n_reasons, reason, sizeof reason), 1);
    CHECK_EQ_INT(n_reasons, 1);
    CHECK_MSG(!strcmp(reason, "auto_cpu_no_driver") || !strcmp(reason, "auto_cpu_no_device") ||
                  !strcmp(reason, "auto_cpu_no_plugin"),
              "reason %s", reason);
    /* the metric's label is the context's typed reason */
    CHECK_MSG(!strcmp(reason, embd_fallback_str(embd_ctx_fallback(ctx, NULL))), "reason %s",
              reason);
    const char *texts[1] = {"a b"};
    float out[64];
    CHECK(embd_embed(ctx, texts, NULL, 1, out) == EMBD_OK);
    CHECK_EQ_INT(auto_cpu_fallbacks(ctx, &n_reasons, reason, sizeof reason), 1); /* once */
    embd_ctx_free(ctx);

    p.device_index = 0;
    CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);
    if (!ctx) return;
    bool on_cpu = !strcmp(embd_ctx_backend(ctx), "cpu");
    CHECK_EQ_INT(auto_cpu_fallbacks(ctx, &n_reasons, reason, sizeof reason), on_cpu ? 1 : 0);
    printf("device auto -> %s%s%s\n", embd_ctx_backend(ctx), on_cpu ? ", fallback reason " : "",
           on_cpu ? reason : "");
    embd_ctx_free(ctx);
}

/* A tiny model written under root/name, or NULL (a failed check). */
static embd_model *tiny(const char *name, uint32_t seed) {
    char *dir = path_cat(root, name);
    embd_model *m = tiny_model_load(dir, seed);
    free(dir);
    CHECK(m != NULL);
    return m;
}

/* One CPU thread: what these tests count does not depend on the machine. */
static struct embd_ctx_params one_thread(void) {
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = EMBD_DEVICE_CPU;
    p.n_threads = 1;
    return p;
}

static void test_metrics(void) {
    embd_model *m = tiny("m", 3);
    if (!m) return;
    struct embd_ctx_params p = one_thread();
    embd_ctx *ctx = NULL;
    CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);
    if (!ctx) return;

    struct render_arg ra = {.ctx = ctx};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, render_loop, &ra) == 0);
    const char *texts[3] = {"a b c", "dog", "a b c"};
    float out[3 * 64];
    CHECK(embd_embed(ctx, texts, NULL, 3, out) == EMBD_OK);
    CHECK(embd_embed(ctx, texts, NULL, 3, out) == EMBD_OK);
    int32_t ids[3] = {2, 5, 3};
    size_t ss[2] = {0, 3};
    CHECK(embd_embed_tokens(ctx, ids, ss, 1, out) == EMBD_OK);
    while (atomic_load(&ra.renders) < 3)
        sched_yield();
    atomic_store(&ra.stop, 1);
    pthread_join(th, NULL);
    CHECK(ra.renders > 0);

    size_t need = embd_metrics_render(ctx, NULL, 0);
    char *text = malloc(need + 1);
    CHECK_EQ_INT(embd_metrics_render(ctx, text, need + 1), need);
    CHECK_EQ_INT(strlen(text), need);
    check_format(text);
    CHECK(sample(text, "embd_requests_total") == 3);
    CHECK(sample(text, "embd_inputs_total") == 7);
    CHECK(sample(text, "embd_cache_misses_total") == 3);
    CHECK(sample(text, "embd_cache_hits_total{tier=\"memory\"}") == 3);
    CHECK(sample(text, "embd_cache_hits_total{tier=\"disk\"}") == 0);
    CHECK(sample(text, "embd_cache_memory_entries") == 2);
    if (!strcmp(embd_ctx_backend(ctx), "cpu")) {
        CHECK(sample(text, "embd_device_memory_bytes") == 0);
        CHECK(strstr(text, "\nembd_gpu_utilization_ratio NaN\n") != NULL);
    }
    CHECK(sample(text, "embd_batches_total") == 2);
    CHECK(sample(text, "embd_batch_inputs_count") == 2);
    CHECK(sample(text, "embd_batch_inputs_sum") == 3); /* 2 distinct texts + 1 token input */
    CHECK(sample(text, "embd_batch_inputs_bucket{le=\"1\"}") == 1);
    CHECK(sample(text, "embd_batch_inputs_bucket{le=\"2\"}") == 2);
    CHECK(sample(text, "embd_batch_inputs_bucket{le=\"+Inf\"}") == 2);
    CHECK(sample(text, "embd_tokenize_seconds_count") == 1);
    CHECK(sample(text, "embd_inference_seconds_count") == 2);
    struct embd_ctx_stats st;
    embd_ctx_get_stats(ctx, &st);
    CHECK(sample(text, "embd_tokens_total") == (double)st.tokens);
    CHECK(sample(text, "embd_batch_tokens_sum") == (double)st.tokens);
    CHECK(strstr(text, "embd_info{version=\"" EMBD_VERSION "\",backend=\"") != NULL);

    /* Truncation: the full size comes back and the buffer is terminated. */
    char small[64];
    memset(small, 'x', sizeof small);
    CHECK_EQ_INT(embd_metrics_render(ctx, small, sizeof small), need);
    CHECK(small[63] == '\0' && !strncmp(small, text, 63));
    CHECK_EQ_INT(embd_metrics_render(NULL, small, sizeof small), 0);
    CHECK(small[0] == '\0');
    CHECK(strstr(text, "embd_fallbacks_total{") == NULL); /* device cpu was asked for */
    free(text);
    embd_ctx_free(ctx);
    test_auto_fallback(m);
    embd_model_free(m);

    /* Fallback reasons are typed; each renders under its label, and only the
     * reasons that happened have a sample. */
    embd_metrics reg;
    CHECK(embd_metrics_init(&reg) == 0);
    embd_metrics_fallback(&reg, EMBD_FALLBACK_GPU_OOM);
    embd_metrics_fallback(&reg, EMBD_FALLBACK_GPU_OOM);
    embd_metrics_fallback(&reg, EMBD_FALLBACK_GPU_DEAD);
    for (int r = EMBD_FALLBACK_NO_PLUGIN; r < EMBD_FALLBACK_GPU_DEAD; r++)
        embd_metrics_fallback(&reg, (enum embd_fallback)r);
    char buf[16384];
    size_t n = embd_metrics_format(&reg, "cpu", buf, sizeof buf);
    CHECK(n < sizeof buf);
    check_format(buf);
    CHECK(sample(buf, "embd_fallbacks_total{reason=\"cuda_oom\"}") == 2);
    CHECK(sample(buf, "embd_fallbacks_total{reason=\"cuda_dead\"}") == 1);
    CHECK(sample(buf, "embd_fallbacks_total{reason=\"auto_cpu_no_plugin\"}") == 1);
    CHECK(sample(buf, "embd_fallbacks_total{reason=\"auto_cpu_cuda_init\"}") == 1);
    int series = 0;
    for (const char *q = strstr(buf, "\nembd_fallbacks_total{"); q;
         q = strstr(q + 1, "\nembd_fallbacks_total{"))
        series++;
    CHECK_EQ_INT(series, EMBD_FALLBACK_COUNT - 1); /* every reason but none */
    CHECK(strstr(buf, "reason=\"none\"") == NULL);
    embd_metrics_destroy(&reg);
}

/* Runs fn with stderr sent to a file; returns what it wrote (free it). */
static char *capture_stderr(void (*fn)(void)) {
    char *path = path_cat(root, "stderr.txt");
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w+");
    if (!f) return NULL;
    dup2(fileno(f), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char *text = calloc(1, (size_t)len + 1);
    if (fread(text, 1, (size_t)len, f) != (size_t)len) text[0] = '\0';
    fclose(f);
    free(path);
    return text;
}

static void emit_events(void) {
    embd_log(EMBD_LOG_ERROR, "cache", "one %d", 1);
    embd_log(EMBD_LOG_WARN, "fallback", "two \"quoted\"\nnext\tline \\");
    embd_log(EMBD_LOG_INFO, "cache", "three");
    embd_log(EMBD_LOG_DEBUG, "cache", "four");
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_log(void) {
    /* The environment, read on first use. */
    setenv("EMBD_LOG_LEVEL", "info", 1);
    setenv("EMBD_LOG_FORMAT", "json", 1);
    CHECK(embd_log_enabled(EMBD_LOG_INFO));
    CHECK(!embd_log_enabled(EMBD_LOG_DEBUG));
    char *t = capture_stderr(emit_events);
    CHECK(t && count_lines(t) == 3);
    int n = 0;
    for (char *save = NULL, *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(l);
        CHECK_MSG(j != NULL, "not JSON: %s", l);
        if (!j) continue;
        const char *want_level[] = {"error", "warn", "info"};
        const char *want_event[] = {"cache", "fallback", "cache"};
        cJSON *lv = cJSON_GetObjectItem(j, "level"), *ev = cJSON_GetObjectItem(j, "event");
        cJSON *msg = cJSON_GetObjectItem(j, "msg"), *ts = cJSON_GetObjectItem(j, "ts");
        CHECK(cJSON_IsString(lv) && !strcmp(lv->valuestring, want_level[n]));
        CHECK(cJSON_IsString(ev) && !strcmp(ev->valuestring, want_event[n]));
        CHECK(cJSON_IsString(ts) && strlen(ts->valuestring) == 24);
        CHECK(cJSON_IsString(msg));
        if (n == 1 && cJSON_IsString(msg))
            CHECK(!strcmp(msg->valuestring, "two \"quoted\" next\tline \\"));
        cJSON_Delete(j);
        n++;
    }
    free(t);

    /* Configured explicitly: text lines. */
    CHECK(embd_log_configure("debug", "text") == EMBD_OK);
    t = capture_stderr(emit_events);
    CHECK(t && !strcmp(t, "embd: error: cache: one 1\n"
                          "embd: warn: fallback: two \"quoted\" next\tline \\\n"
                          "embd: info: cache: three\n"
                          "embd: debug: cache: four\n"));
    free(t);
    CHECK(embd_log_configure("error", NULL) == EMBD_OK);
    t = capture_stderr(emit_events);
    CHECK(t && count_lines(t) == 1);
    free(t);
    CHECK(embd_log_configure("loud", NULL) == EMBD_ERR_INVALID_ARG);
    CHECK(strstr(embd_last_error(), "loud") != NULL);
    CHECK(embd_log_configure(NULL, "xml") == EMBD_ERR_INVALID_ARG);
    CHECK(embd_log_configure("WARN", "JSON") == EMBD_OK);
    CHECK(embd_log_enabled(EMBD_LOG_WARN) && !embd_log_enabled(EMBD_LOG_INFO));
    embd_log_configure("warn", "text");
}

/* Three contexts as one server's devices: each family's HELP once, every
 * sample once per context with its device label first, the values each
 * context's own; one context renders as embd_metrics_render does. */
static void test_metrics_devices(void) {
    embd_model *m = tiny("md", 5);
    if (!m) return;
    struct embd_ctx_params p = one_thread();
    embd_ctx *ctx[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        CHECK(embd_ctx_new(m, p, &ctx[i]) == EMBD_OK);
    if (!ctx[0] || !ctx[1] || !ctx[2]) goto done;
    const char *texts[5] = {"a b c", "dog", "a cat", "b", "c d"};
    float out[5 * 64];
    for (int i = 0; i < 3; i++) /* context i embeds i + 1 calls of 2 texts */
        for (int k = 0; k <= i; k++)
            CHECK(embd_embed(ctx[i], texts + k, NULL, 2, out) == EMBD_OK);
    const char *labels[3] = {"cuda:0", "cuda:1", "cpu"};
    size_t need = embd_metrics_render_devices(ctx, labels, 3, NULL, 0);
    char *text = malloc(need + 4096);
    size_t got = embd_metrics_render_devices(ctx, labels, 3, text, need + 4096);
    CHECK(got > 0 && got <= need + 4096);
    check_format(text);
    CHECK(sample(text, "embd_requests_total{device=\"cuda:0\"}") == 1);
    CHECK(sample(text, "embd_requests_total{device=\"cuda:1\"}") == 2);
    CHECK(sample(text, "embd_requests_total{device=\"cpu\"}") == 3);
    CHECK(sample(text, "embd_requests_total") == -1); /* no unlabelled sample left */
    CHECK(strstr(text, "embd_info{device=\"cuda:1\",version=") != NULL);
    /* histograms: the device label first, then le */
    CHECK(strstr(text, "_bucket{device=\"cpu\",le=\"+Inf\"}") != NULL);
    /* every HELP line once */
    int dup = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, "# HELP ", 7)) continue;
        size_t n = strcspn(l, "\n");
        for (const char *q = strchr(l, '\n'); q && q[1]; q = strchr(q + 1, '\n'))
            dup += !strncmp(q + 1, l, n) && q[1 + n] == '\n';
    }
    CHECK_EQ_INT(dup, 0);
    /* one context: embd_metrics_render's exposition */
    size_t one = embd_metrics_render_devices(ctx, labels, 1, NULL, 0);
    CHECK(one == embd_metrics_render(ctx[0], NULL, 0));
    /* a buffer too small: the full length, cut and terminated */
    char small[64];
    CHECK(embd_metrics_render_devices(ctx, labels, 3, small, sizeof small) >= need - 64);
    CHECK(strlen(small) == sizeof small - 1);
    CHECK(embd_metrics_render_devices(ctx, labels, 0, small, sizeof small) == 0 && !small[0]);
    free(text);
done:
    for (int i = 0; i < 3; i++)
        embd_ctx_free(ctx[i]);
    embd_model_free(m);
}

int main(void) {
    root = make_temp_dir();
    if (!root) TEST_SKIP("no temporary directory");
    test_log();
    test_metrics();
    test_metrics_devices();
    rm_rf(root);
    free(root);
    return test_summary("engine_metrics_log");
}
