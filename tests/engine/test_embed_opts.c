/* test_embed_opts — the engine's per-call options and token counts
 * (embd_embed_ex, embd_embed_tokens_ex, embd_sched_embed_opts) on the real
 * all-MiniLM-L6-v2 ($EMBD_TEST_MODELS; skipped without it):
 * - normalize -1 / 0 / 1, each cached under its own key;
 * - truncate false: EMBD_ERR_TOO_LONG naming the input and its full count,
 *   from a fresh tokenization and from the cache; an exact fit passes;
 * - a per-call prefix equals the prefix written into the text;
 * - token counts from the one tokenization (and from the cache);
 * - a NUL inside a text is a character: the vector of "a \0 b" is that of
 *   "a  b" (the BERT normalizer drops it), not that of "a ";
 * - the scheduler runs requests with different options apart and gives
 *   each its own counts and refusal index, in its own order. */
#include "embd.h"
#include "engine/engine.h"
#include "test.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int D, MAX;

static double norm(const float *v) {
    double s = 0;
    for (int i = 0; i < D; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

static double cosine(const float *a, const float *b) {
    double ab = 0;
    for (int i = 0; i < D; i++)
        ab += (double)a[i] * b[i];
    return ab / (norm(a) * norm(b));
}

/* "a a a ... a": n words of one token each (n + 2 tokens with [CLS] [SEP]). */
static char *words(int n) {
    char *s = malloc((size_t)n * 2 + 1);
    for (int i = 0; i < n; i++)
        memcpy(s + 2 * i, "a ", 2);
    s[n ? 2 * n - 1 : 0] = '\0';
    return s;
}

static void test_normalize(embd_ctx *ctx) {
    const char *t[1] = {"a sentence to embed three ways"};
    float v[3][384];
    struct embd_embed_opts o = embd_embed_default_opts();
    for (int k = 0; k < 3; k++) {
        o.normalize = k - 1;
        CHECK_EQ_INT(embd_embed_ex(ctx, t, NULL, 1, v[k], &o, NULL), EMBD_OK);
    }
    CHECK_MSG(fabs(norm(v[0]) - 1) < 1e-5, "normalize -1 (the model's): norm %g", norm(v[0]));
    CHECK_MSG(fabs(norm(v[1]) - 1) > 1e-2, "normalize 0: norm %g", norm(v[1]));
    CHECK_MSG(fabs(norm(v[2]) - 1) < 1e-5, "normalize 1: norm %g", norm(v[2]));
    CHECK(cosine(v[0], v[1]) > 0.99999);
    /* the cache keeps them apart: asking again gives each its own */
    o.normalize = 0;
    float again[384];
    CHECK_EQ_INT(embd_embed_ex(ctx, t, NULL, 1, again, &o, NULL), EMBD_OK);
    CHECK(memcmp(again, v[1], sizeof again) == 0);
    o.normalize = 2;
    CHECK_EQ_INT(embd_embed_ex(ctx, t, NULL, 1, again, &o, NULL), EMBD_ERR_INVALID_ARG);
}

static void test_truncate(embd_ctx *ctx) {
    char *fit = words(MAX - 2), *over = words(MAX - 1), *longer = words(3 * MAX);
    const char *t[3] = {"short", over, fit};
    float *out = calloc(3 * (size_t)D, sizeof *out);
    size_t nt[3] = {0, 0, 0};
    struct embd_embed_info info = {.n_tokens = nt};
    struct embd_embed_opts o = embd_embed_default_opts();
    o.truncate = false;
    CHECK_EQ_INT(embd_embed_ex(ctx, t, NULL, 3, out, &o, &info), EMBD_ERR_TOO_LONG);
    CHECK_EQ_INT(info.bad_input, 1);
    CHECK_EQ_INT(info.bad_tokens, MAX + 1);
    CHECK(strstr(embd_last_error(), "input 1 has") != NULL);
    /* an exact fit is not too long */
    t[1] = "also short";
    CHECK_EQ_INT(embd_embed_ex(ctx, t, NULL, 3, out, &o, &info), EMBD_OK);
    CHECK_EQ_INT(nt[2], MAX);
    CHECK_EQ_INT(info.total_tokens, nt[0] + nt[1] + nt[2]);
    /* truncated by default, counted as embedded; then refused from the cache */
    t[1] = longer;
    CHECK_EQ_INT(embd_embed_ex(ctx, t, NULL, 3, out, NULL, &info), EMBD_OK);
    CHECK_EQ_INT(nt[1], MAX);
    struct embd_ctx_stats before, after;
    embd_ctx_get_stats(ctx, &before);
    CHECK_EQ_INT(embd_embed_ex(ctx, t, NULL, 3, out, &o, &info), EMBD_ERR_TOO_LONG);
    embd_ctx_get_stats(ctx, &after);
    CHECK_EQ_INT(info.bad_input, 1);
    CHECK_EQ_INT(info.bad_tokens, 3 * MAX + 2);
    CHECK_EQ_INT(after.cache_hits - before.cache_hits, 3); /* all three answered by the cache */
    free(fit);
    free(over);
    free(longer);
    free(out);
}

static void test_prefix_and_nul(embd_ctx *ctx) {
    const char *t[4] = {"what is a violin", "query: what is a violin", "NUL? no: \0 after",
                        "NUL? no: "};
    size_t lens[4] = {strlen(t[0]), strlen(t[1]), 16, strlen(t[3])};
    float v[4][384];
    size_t nt[4];
    struct embd_embed_info info = {.n_tokens = nt};
    struct embd_embed_opts o = embd_embed_default_opts();
    o.prefix = "query: ";
    CHECK_EQ_INT(embd_embed_ex(ctx, t, lens, 1, v[0], &o, &info), EMBD_OK);
    size_t with_prefix = nt[0];
    CHECK_EQ_INT(embd_embed_ex(ctx, t, lens, 4, v[0], NULL, &info), EMBD_OK);
    float pref[384];
    CHECK_EQ_INT(embd_embed_ex(ctx, t, lens, 1, pref, &o, NULL), EMBD_OK);
    CHECK(memcmp(pref, v[1], sizeof pref) == 0);
    CHECK_EQ_INT(with_prefix, nt[1]);
    CHECK(with_prefix > nt[0]);
    /* a NUL is a character: 8 tokens, as Hugging Face tokenizers gives */
    CHECK_EQ_INT(nt[2], 8);
    CHECK_MSG(cosine(v[2], v[3]) < 0.99, "the NUL cut the text: cosine %g to its head",
              cosine(v[2], v[3]));
    const char *without[1] = {"NUL? no:  after"};
    float w[384];
    CHECK_EQ_INT(embd_embed_ex(ctx, without, NULL, 1, w, NULL, NULL), EMBD_OK);
    CHECK_MSG(cosine(v[2], w) > 0.999999, "cosine %g to the text without its NUL", cosine(v[2], w));
    /* token ids: the call's prefix is refused, the count is the ids' */
    int32_t ids[3] = {101, 1037, 102};
    size_t ss[2] = {0, 3};
    CHECK_EQ_INT(embd_embed_tokens_ex(ctx, ids, ss, 1, w, &o, &info), EMBD_ERR_INVALID_ARG);
    CHECK_EQ_INT(embd_embed_tokens_ex(ctx, ids, ss, 1, w, NULL, &info), EMBD_OK);
    CHECK_EQ_INT(info.total_tokens, 3);
    CHECK_EQ_INT(nt[0], 3);
}

struct caller {
    embd_sched *sched;
    const char *const *texts;
    size_t n;
    struct embd_embed_opts opts;
    float *out;
    size_t nt[4];
    struct embd_embed_info info;
    enum embd_status st;
};

static void *caller_main(void *arg) {
    struct caller *c = arg;
    c->info.n_tokens = c->nt;
    c->st = embd_sched_embed_opts(c->sched, c->texts, NULL, c->n, c->out, NULL, &c->opts, &c->info);
    return NULL;
}

static void test_sched(embd_ctx *ctx, const char *too_long) {
    embd_sched *s = NULL;
    CHECK_EQ_INT(embd_sched_new(ctx, embd_sched_default_params(), &s), EMBD_OK);
    if (!s) return;
    const char *ta[3] = {"the longest of these three texts, by some way", "tiny", "medium text"};
    const char *tb[3] = {"the longest of these three texts, by some way", too_long, "x"};
    struct caller c[3] = {
        {.sched = s, .texts = ta, .n = 3, .opts = embd_embed_default_opts()},
        {.sched = s, .texts = ta, .n = 3, .opts = embd_embed_default_opts()},
        {.sched = s, .texts = tb, .n = 3, .opts = embd_embed_default_opts()},
    };
    c[1].opts.normalize = 0;
    c[2].opts.truncate = false;
    for (int k = 0; k < 3; k++)
        c[k].out = calloc(3 * (size_t)D, sizeof(float));
    embd_sched_hold(s, true); /* all three meet in the queue */
    pthread_t th[3];
    for (int k = 0; k < 3; k++)
        pthread_create(&th[k], NULL, caller_main, &c[k]);
    for (int tries = 0; tries < 1000 && embd_sched_queued_requests(s) < 3; tries++) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    CHECK_EQ_INT(embd_sched_queued_requests(s), 3);
    embd_sched_hold(s, false);
    for (int k = 0; k < 3; k++)
        pthread_join(th[k], NULL);
    CHECK_EQ_INT(c[0].st, EMBD_OK);
    CHECK_EQ_INT(c[1].st, EMBD_OK);
    CHECK_EQ_INT(c[2].st, EMBD_ERR_TOO_LONG);
    CHECK_EQ_INT(c[2].info.bad_input, 1); /* its own index, whatever order ran */
    CHECK(c[2].info.bad_tokens > (size_t)MAX);
    /* each its own vectors and counts, in its own order */
    for (int i = 0; i < 3; i++) {
        float alone[384];
        size_t nt = 0;
        struct embd_embed_info info = {.n_tokens = &nt};
        CHECK_EQ_INT(embd_sched_embed_opts(s, &ta[i], NULL, 1, alone, NULL, NULL, &info), EMBD_OK);
        CHECK(cosine(alone, c[0].out + i * D) > 0.999999);
        CHECK(fabs(norm(c[0].out + i * D) - 1) < 1e-5);
        CHECK(fabs(norm(c[1].out + i * D) - 1) > 1e-2);
        CHECK(cosine(c[0].out + i * D, c[1].out + i * D) > 0.999999);
        CHECK_EQ_INT(c[0].nt[i], nt);
        CHECK_EQ_INT(c[1].nt[i], nt);
    }
    CHECK_EQ_INT(c[0].info.total_tokens, c[0].nt[0] + c[0].nt[1] + c[0].nt[2]);
    for (int k = 0; k < 3; k++)
        free(c[k].out);
    embd_sched_free(s);
}

int main(void) {
    const char *models = getenv("EMBD_TEST_MODELS");
    if (!models || !models[0]) TEST_SKIP("EMBD_TEST_MODELS is not set");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/all-MiniLM-L6-v2", models);
    embd_model *m = NULL;
    if (embd_model_load(dir, embd_model_default_params(), &m) != EMBD_OK)
        TEST_SKIP("cannot load %s: %s", dir, embd_last_error());
    D = embd_model_dim(m);
    MAX = embd_model_max_tokens(m);
    CHECK_EQ_INT(D, 384);
    struct embd_ctx_params cp = embd_ctx_default_params();
    cp.device = EMBD_DEVICE_CPU;
    embd_ctx *ctx = NULL;
    CHECK_EQ_INT(embd_ctx_new(m, cp, &ctx), EMBD_OK);
    if (ctx) {
        test_normalize(ctx);
        test_truncate(ctx);
        test_prefix_and_nul(ctx);
        char *too_long = words(MAX + 10);
        test_sched(ctx, too_long);
        free(too_long);
        embd_ctx_free(ctx);
    }
    /* without a cache too */
    cp.cache_bytes = 0;
    ctx = NULL;
    CHECK_EQ_INT(embd_ctx_new(m, cp, &ctx), EMBD_OK);
    if (ctx) {
        test_normalize(ctx);
        test_prefix_and_nul(ctx);
        embd_ctx_free(ctx);
    }
    embd_model_free(m);
    return test_summary("engine_embed_opts");
}
