/* Batch invariance on real weights: each golden text embedded alone equals
 * the same text inside one big batch and inside random batch partitions
 * (cosine >= 0.999999: only the GEMM blocking differs). Also the C API's
 * argument checks and embd_embed_tokens == embd_embed. */
#include "embd.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Reads texts.jsonl ({"text": ...} per line) into a NULL-terminated array. */
static char **read_texts(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char **texts = NULL;
    size_t cap = 0;
    *n = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) > 0) {
        cJSON *o = cJSON_ParseWithLength(line, (size_t)got);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
        if (cJSON_IsString(t)) {
            if (*n + 1 >= cap) {
                cap = cap ? cap * 2 : 64;
                texts = realloc(texts, cap * sizeof *texts);
            }
            texts[(*n)++] = strdup(t->valuestring);
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return texts;
}

int main(void) {
    const char *models = getenv("EMBD_TEST_MODELS"), *src = getenv("EMBD_SRC");
    if (!models || !src) TEST_SKIP("EMBD_TEST_MODELS or EMBD_SRC not set");
    char dir[4096], fx[4096];
    snprintf(dir, sizeof dir, "%s/all-MiniLM-L6-v2", models);
    snprintf(fx, sizeof fx, "%s/tests/fixtures/golden/all-MiniLM-L6-v2/texts.jsonl", src);
    size_t n = 0;
    char **texts = read_texts(fx, &n);
    if (!texts || n == 0) TEST_SKIP("no golden texts at %s", fx);

    embd_model *m = NULL;
    if (embd_model_load(dir, embd_model_default_params(), &m) != EMBD_OK)
        TEST_SKIP("cannot load %s: %s", dir, embd_last_error());
    const int D = embd_model_dim(m);
    struct embd_ctx_params p = embd_ctx_default_params();
    p.n_threads = 2;
    p.cache_bytes = 0; /* compare the model's batches, not cache hits */
    embd_ctx *ctx = NULL;
    CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);

    float *all = calloc(n * (size_t)D, sizeof *all);
    float *one = calloc((size_t)D + 4, sizeof *one);
    float *part = calloc(n * (size_t)D, sizeof *part);
    CHECK(embd_embed(ctx, (const char *const *)texts, NULL, n, all) == EMBD_OK);

    /* Alone, with guard values after the output: every third text (a third of
     * each kind of text; all of them would triple the run time under ASan). */
    double worst = 1;
    size_t alone = 0;
    for (size_t i = 0; i < n; i += 3, alone++) {
        for (int g = 0; g < 4; g++)
            one[D + g] = 12345.0f;
        CHECK(embd_embed(ctx, (const char *const *)&texts[i], NULL, 1, one) == EMBD_OK);
        for (int g = 0; g < 4; g++)
            CHECK(one[D + g] == 12345.0f);
        double c = test_cosine(one, all + i * (size_t)D, D);
        if (!(c >= worst)) worst = c;
    }
    printf("alone vs batched: min cosine %.9f over %zu texts\n", worst, alone);
    CHECK_MSG(worst >= 0.999999, "min cosine %.9f", worst);

    /* Random partitions into calls of 1..40 texts. */
    srand(7);
    for (size_t i = 0; i < n;) {
        size_t k = 1 + (size_t)(rand() % 40);
        if (i + k > n) k = n - i;
        CHECK(embd_embed(ctx, (const char *const *)&texts[i], NULL, k, part + i * (size_t)D) ==
              EMBD_OK);
        i += k;
    }
    worst = 1;
    for (size_t i = 0; i < n; i++) {
        double c = test_cosine(part + i * (size_t)D, all + i * (size_t)D, D);
        if (!(c >= worst)) worst = c;
    }
    CHECK_MSG(worst >= 0.999999, "partitions: min cosine %.9f", worst);

    /* embd_embed_tokens on the tokenizer's ids equals embd_embed. */
    int32_t ids[2 * 512];
    size_t a = 0, b = 0;
    CHECK(embd_tokenize(m, texts[0], strlen(texts[0]), ids, 512, &a) == EMBD_OK);
    CHECK(embd_tokenize(m, texts[1], strlen(texts[1]), ids + a, 512, &b) == EMBD_OK);
    size_t ss[3] = {0, a, a + b};
    float two[2 * 1024];
    CHECK(embd_embed_tokens(ctx, ids, ss, 2, two) == EMBD_OK);
    CHECK(test_cosine(two, all, D) >= 0.999999);
    CHECK(test_cosine(two + D, all + D, D) >= 0.999999);

    /* Bad arguments get a status and a message, never a crash. */
    int32_t bad_ids[3] = {101, 999999, 102};
    size_t bss[2] = {0, 3};
    CHECK(embd_embed_tokens(ctx, bad_ids, bss, 1, two) == EMBD_ERR_INVALID_ARG);
    CHECK(strlen(embd_last_error()) > 0);
    size_t empty_ss[2] = {0, 0};
    CHECK(embd_embed_tokens(ctx, ids, empty_ss, 1, two) == EMBD_ERR_INVALID_ARG);
    CHECK(embd_embed(ctx, NULL, NULL, 1, two) == EMBD_ERR_INVALID_ARG);
    CHECK(embd_embed(NULL, (const char *const *)texts, NULL, 1, two) == EMBD_ERR_INVALID_ARG);
    CHECK(embd_embed(ctx, (const char *const *)texts, NULL, 0, two) == EMBD_OK);
    struct embd_ctx_params bp = embd_ctx_default_params();
    bp.device = EMBD_DEVICE_CUDA;
    embd_ctx *bad = NULL;
    CHECK(embd_ctx_new(m, bp, &bad) != EMBD_OK && bad == NULL);
    bp = embd_ctx_default_params();
    bp.n_threads = -1;
    CHECK(embd_ctx_new(m, bp, &bad) == EMBD_ERR_INVALID_ARG);
    /* values outside their enums, and a malformed GPU memory limit even
     * where no GPU is tried: refused, not run as something else */
    bp = embd_ctx_default_params();
    bp.device = (enum embd_device)7;
    CHECK(embd_ctx_new(m, bp, &bad) == EMBD_ERR_INVALID_ARG && bad == NULL);
    bp = embd_ctx_default_params();
    bp.dtype = (enum embd_dtype) - 1;
    CHECK(embd_ctx_new(m, bp, &bad) == EMBD_ERR_INVALID_ARG && bad == NULL);
    bp = embd_ctx_default_params();
    bp.device = EMBD_DEVICE_CPU;
    bp.gpu_memory_limit = "garbage";
    CHECK(embd_ctx_new(m, bp, &bad) == EMBD_ERR_INVALID_ARG && bad == NULL);
    bp.gpu_memory_limit = "2G"; /* a good one is fine on the CPU */
    CHECK(embd_ctx_new(m, bp, &bad) == EMBD_OK);
    embd_ctx_free(bad);
    bad = NULL;
    /* token inputs longer than the model takes: EMBD_ERR_TOO_LONG (never cut) */
    const size_t long_n = (size_t)embd_model_max_tokens(m) + 1;
    int32_t *long_ids = calloc(long_n, sizeof *long_ids);
    size_t lss[2] = {0, long_n};
    for (size_t i = 0; i < long_n; i++)
        long_ids[i] = 1996;
    CHECK(embd_embed_tokens(ctx, long_ids, lss, 1, two) == EMBD_ERR_TOO_LONG);
    free(long_ids);
    /* a model path into a small buffer: NUL-terminated, as snprintf */
    char small[8];
    size_t need = 0;
    memset(small, 'Z', sizeof small);
    CHECK(embd_model_resolve(dir, NULL, small, sizeof small, &need) == EMBD_ERR_BUFFER_TOO_SMALL);
    CHECK(need == strlen(dir) + 1 && small[sizeof small - 1] == '\0' &&
          !strncmp(small, dir, sizeof small - 1));

    struct embd_ctx_stats st;
    embd_ctx_get_stats(ctx, &st);
    CHECK(st.inputs >= 2 * n && st.tokens > 0 && st.batches > 0);

    embd_ctx_free(ctx);
    embd_model_free(m);
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(all);
    free(one);
    free(part);
    return test_summary("e2e_batch");
}
