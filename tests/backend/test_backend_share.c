/* test_backend_share.c — contexts of one model share its packed weights.
 *
 * (1) embd_model_share's registry on a loaded model: one make per key while
 *     held, a make again after the last release, a failed make kept out, and
 *     eight threads asking for one key at once getting one object.
 * (2) The CPU backend: two backends of one model (fp32, 1 and 2 threads) hold
 *     one packed copy ("cpu fp32 panels", the key cpu.c gives the packed
 *     form; the test asks the registry for it), give the same vectors, and
 *     the second keeps working after the first is freed; after both, the copy
 *     is gone. The same for bf16 where the CPU has it.
 * Uses the real all-MiniLM-L6-v2 under $EMBD_TEST_MODELS (skipped without). */
#include "backend/backend.h"
#include "model/loader.h"
#include "model/model.h"
#include "test.h"
#include "util/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static atomic_int made, destroyed;

static void *count_make(const struct embd_model *m, void *arg, enum embd_status *st) {
    (void)m;
    atomic_fetch_add(&made, 1);
    if (arg) { /* asked to fail */
        *st = embd_error(EMBD_ERR_NOMEM, "test: make failed");
        return NULL;
    }
    *st = EMBD_OK;
    return malloc(16);
}

static void count_destroy(void *p) {
    atomic_fetch_add(&destroyed, 1);
    free(p);
}

struct racer {
    const struct embd_model *m;
    void *got;
};

static void *race(void *arg) {
    struct racer *r = arg;
    enum embd_status st;
    r->got = embd_model_share(r->m, "race", count_make, count_destroy, NULL, &st);
    return NULL;
}

static void check_registry(const struct embd_model *m) {
    enum embd_status st;
    atomic_store(&made, 0);
    atomic_store(&destroyed, 0);
    void *a = embd_model_share(m, "a", count_make, count_destroy, NULL, &st);
    void *a2 = embd_model_share(m, "a", count_make, count_destroy, NULL, &st);
    void *b = embd_model_share(m, "b", count_make, count_destroy, NULL, &st);
    CHECK(a && a == a2 && b && b != a);
    CHECK_EQ_INT(atomic_load(&made), 2);
    embd_model_unshare(m, a, count_destroy);
    CHECK_EQ_INT(atomic_load(&destroyed), 0); /* still held once */
    embd_model_unshare(m, a2, count_destroy);
    CHECK_EQ_INT(atomic_load(&destroyed), 1);
    void *a3 = embd_model_share(m, "a", count_make, count_destroy, NULL, &st);
    CHECK_EQ_INT(atomic_load(&made), 3); /* made again after the last release */
    embd_model_unshare(m, a3, count_destroy);
    embd_model_unshare(m, b, count_destroy);
    CHECK_EQ_INT(atomic_load(&destroyed), 3);
    embd_model_unshare(m, NULL, count_destroy); /* a no-op */

    /* a failed make returns NULL with its status and is not kept */
    st = EMBD_OK;
    void *f = embd_model_share(m, "f", count_make, count_destroy, (void *)1, &st);
    CHECK(!f && st == EMBD_ERR_NOMEM);
    f = embd_model_share(m, "f", count_make, count_destroy, NULL, &st);
    CHECK(f && st == EMBD_OK);
    CHECK_EQ_INT(atomic_load(&made), 5);
    embd_model_unshare(m, f, count_destroy);

    /* eight threads at once: one make, one object */
    atomic_store(&made, 0);
    atomic_store(&destroyed, 0);
    pthread_t t[8];
    struct racer r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (struct racer){.m = m};
        CHECK(pthread_create(&t[i], NULL, race, &r[i]) == 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_INT(atomic_load(&made), 1);
    for (int i = 0; i < 8; i++) {
        CHECK(r[i].got && r[i].got == r[0].got);
        embd_model_unshare(m, r[i].got, count_destroy);
    }
    CHECK_EQ_INT(atomic_load(&destroyed), 1);
}

/* Whether the registry holds key now (asking makes nothing when it does). */
static bool held(const struct embd_model *m, const char *key) {
    enum embd_status st;
    atomic_store(&made, 0);
    void *p = embd_model_share(m, key, count_make, count_destroy, NULL, &st);
    const bool was = atomic_load(&made) == 0;
    /* held: drops the hold just taken (the backends' remain); else frees the probe */
    embd_model_unshare(m, p, count_destroy);
    return was;
}

static embd_backend *init(const struct embd_model *m, enum embd_dtype dtype, int threads) {
    embd_backend_params p = {.n_threads = threads, .dtype = dtype, .max_batch_tokens = 64};
    embd_backend *be = NULL;
    enum embd_status st = embd_backend_cpu_ops.init(&be, m, &p);
    if (st == EMBD_ERR_UNSUPPORTED) return NULL;
    CHECK_MSG(st == EMBD_OK, "init %s: %s", embd_dtype_str(dtype), embd_last_error());
    return be;
}

static bool embed(embd_backend *be, const embd_batch *b, float *out) {
    enum embd_status st = embd_backend_cpu_ops.embed(be, out, b, true);
    CHECK_MSG(st == EMBD_OK, "embed: %s", embd_last_error());
    return st == EMBD_OK;
}

static void check_backends(const struct embd_model *m, enum embd_dtype dtype, const char *key) {
    /* "hello world" and "the cat sat on the mat" as all-MiniLM-L6-v2 reads them */
    static const int32_t ids[] = {101,  7592, 2088, 102,  101,   1996,
                                  4937, 2938, 2006, 1996, 13523, 102};
    static const int32_t starts[] = {0, 4, 12};
    const embd_batch b = {.n_seq = 2, .n_tok = 12, .ids = ids, .seq_start = starts};
    const int H = m->hp.H;
    float *o1 = calloc(2 * (size_t)H, sizeof(float)), *o2 = calloc(2 * (size_t)H, sizeof(float)),
          *o3 = calloc(2 * (size_t)H, sizeof(float));
    embd_backend *b1 = init(m, dtype, 2);
    if (!b1) {
        printf("%s: not on this CPU, skipped\n", embd_dtype_str(dtype));
        goto done;
    }
    embd_backend *b2 = init(m, dtype, 1);
    if (!b2) {
        embd_backend_cpu_ops.free(b1);
        goto done;
    }
    if (key) CHECK_MSG(held(m, key), "%s: no shared copy under \"%s\"", embd_dtype_str(dtype), key);
    CHECK(embed(b1, &b, o1) && embed(b2, &b, o2));
    embd_backend_cpu_ops.free(b1);
    CHECK(embed(b2, &b, o3)); /* the shared copy outlives the first backend */
    for (int s = 0; s < 2; s++) {
        CHECK_MSG(test_cosine(o1 + s * H, o2 + s * H, H) > 0.999999, "%s: 1 and 2 threads differ",
                  embd_dtype_str(dtype));
        CHECK_MSG(memcmp(o2 + s * H, o3 + s * H, (size_t)H * sizeof(float)) == 0,
                  "%s: the second backend changed after the first was freed",
                  embd_dtype_str(dtype));
    }
    embd_backend_cpu_ops.free(b2);
    if (key) CHECK_MSG(!held(m, key), "%s: the copy outlived its backends", embd_dtype_str(dtype));
    printf("%s: two backends, one copy\n", embd_dtype_str(dtype));
done:
    free(o1);
    free(o2);
    free(o3);
}

int main(void) {
    const char *models = getenv("EMBD_TEST_MODELS");
    if (!models || !models[0]) TEST_SKIP("EMBD_TEST_MODELS is not set");
    char *dir = embd_path_join(models, "all-MiniLM-L6-v2");
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        embd_free(dir);
        TEST_SKIP("no all-MiniLM-L6-v2 under EMBD_TEST_MODELS");
    }
    embd_model *m = NULL;
    enum embd_status s = embd_model_load(dir, embd_model_default_params(), &m);
    embd_free(dir);
    CHECK_MSG(s == EMBD_OK, "%s", embd_last_error());
    if (s != EMBD_OK) return test_summary("test_backend_share");
    check_registry(m);
    /* the packed fp32 form on x86-64 (elsewhere Q/K/V stacked for BLAS) */
#if defined(__x86_64__)
    check_backends(m, EMBD_DTYPE_FP32, "cpu fp32 panels");
#else
    check_backends(m, EMBD_DTYPE_FP32, "cpu fp32 stacked");
#endif
    check_backends(m, EMBD_DTYPE_BF16, NULL);
    check_backends(m, EMBD_DTYPE_INT8, NULL);
    embd_model_free(m);
    return test_summary("test_backend_share");
}
