/* test_sched.c — the shared engine: 8 threads x many calls through one
 * scheduler get the vectors a single-threaded run gives each text, in their
 * own order; a full queue with timeout 0 or a short timeout returns
 * EMBD_ERR_BUSY and never loses or mixes up work; freeing drains the queue.
 * Run it under ThreadSanitizer by building with -fsanitize=thread. */
#include "engine/metrics.h"
#include "model/tiny_model.h"
#include "test.h"
#include "util/util.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define N_POOL 24
#define N_THREADS 8
#define N_CALLS 40

static const char *pool[N_POOL];
static char pool_buf[N_POOL][64];
static float *ref; /* (N_POOL, D) */
static int D;
static embd_sched *sched;
static atomic_int busy_seen, wrong, failed;
static int timeout_ms;

/* Each text's vector depends on batch composition only through summation
 * order: tiny differences, far below 1e-5 for this model. */
static bool close_to(const float *a, const float *b) {
    for (int d = 0; d < D; d++)
        if (!(fabsf(a[d] - b[d]) <= 1e-5f)) return false;
    return true;
}

static void *caller(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    float out[5 * 64];
    for (int c = 0; c < N_CALLS; c++) {
        const char *texts[5];
        int idx[5];
        int n = 1 + (int)((seed >> 8) % 5);
        for (int i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            idx[i] = (int)((seed >> 8) % N_POOL);
            texts[i] = pool[idx[i]];
        }
        enum embd_status st = embd_sched_embed(sched, texts, NULL, (size_t)n, out, timeout_ms);
        if (st == EMBD_ERR_BUSY) {
            atomic_fetch_add(&busy_seen, 1);
            continue;
        }
        if (st != EMBD_OK) {
            atomic_fetch_add(&failed, 1);
            continue;
        }
        for (int i = 0; i < n; i++)
            if (!close_to(out + i * D, ref + idx[i] * D)) atomic_fetch_add(&wrong, 1);
    }
    return NULL;
}

static void run_threads(void) {
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, caller, (void *)(uintptr_t)(t + 1)) == 0);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
}

int main(void) {
    char *root = make_temp_dir();
    if (!root) TEST_SKIP("no temporary directory");
    tiny_cfg cfg = tiny_default_cfg();
    tt_file f = tt_build(&cfg, "F32", "", false, 5);
    char *dir = path_cat(root, "m");
    CHECK(tiny_write_dir(dir, &cfg, &f) == 0);
    tt_free(&f);
    embd_model *m = NULL;
    CHECK(embd_model_load(dir, embd_model_default_params(), &m) == EMBD_OK);
    if (!m) return test_summary("engine_sched");
    D = embd_model_dim(m);
    for (int i = 0; i < N_POOL; i++) {
        int len = 1 + i % 9;
        for (int k = 0; k < len; k++)
            pool_buf[i][k] = (k % 3 == 2) ? ' ' : (char)('a' + (i * 7 + k * 3) % 26);
        pool_buf[i][len] = '\0';
        pool[i] = pool_buf[i];
    }
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = EMBD_DEVICE_CPU;
    p.n_threads = 1;
    p.cache_bytes = 0; /* every call reaches the model */
    embd_ctx *ctx = NULL;
    CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);
    if (!ctx) return test_summary("engine_sched");
    ref = calloc((size_t)N_POOL * D, sizeof *ref);
    for (int i = 0; i < N_POOL; i++) /* one at a time: the single-threaded reference */
        CHECK(embd_embed(ctx, &pool[i], NULL, 1, ref + i * D) == EMBD_OK);

    /* Waiting callers: everything completes, every row is right. */
    CHECK(embd_sched_new(ctx, embd_sched_default_params(), &sched) == EMBD_OK);
    timeout_ms = -1;
    run_threads();
    CHECK_EQ_INT(atomic_load(&wrong), 0);
    CHECK_EQ_INT(atomic_load(&failed), 0);
    CHECK_EQ_INT(atomic_load(&busy_seen), 0);
    embd_sched_free(sched);

    /* A tiny queue and no patience: some calls are refused, none is wrong. */
    struct embd_sched_params sp = {.queue_texts = 2, .max_batch_texts = 2};
    CHECK(embd_sched_new(ctx, sp, &sched) == EMBD_OK);
    timeout_ms = 0;
    run_threads();
    CHECK_EQ_INT(atomic_load(&wrong), 0);
    CHECK_EQ_INT(atomic_load(&failed), 0);
    printf("queue of 2, timeout 0: %d of %d calls refused\n", atomic_load(&busy_seen),
           N_THREADS * N_CALLS);
    atomic_store(&busy_seen, 0);
    timeout_ms = 1; /* short timeouts: still no deadlock and nothing wrong */
    run_threads();
    CHECK_EQ_INT(atomic_load(&wrong), 0);
    CHECK_EQ_INT(atomic_load(&failed), 0);
    /* A request larger than the queue runs once the queue is empty. */
    float big[5 * 64];
    CHECK(embd_sched_embed(sched, pool, NULL, 5, big, -1) == EMBD_OK);
    for (int i = 0; i < 5; i++)
        CHECK(close_to(big + i * D, ref + i * D));
    CHECK(embd_sched_embed(sched, NULL, NULL, 1, big, -1) == EMBD_ERR_INVALID_ARG);
    CHECK(embd_sched_embed(sched, pool, NULL, 0, big, -1) == EMBD_OK);
    embd_sched_free(sched);
    embd_sched_free(NULL);
    CHECK(embd_sched_new(NULL, sp, &sched) == EMBD_ERR_INVALID_ARG);

    /* The queue time is measured. */
    char text[16384];
    embd_metrics_render(ctx, text, sizeof text);
    CHECK(strstr(text, "embd_queue_seconds_count ") != NULL);
    CHECK(strstr(text, "embd_queue_seconds_count 0\n") == NULL);

    free(ref);
    embd_ctx_free(ctx);
    embd_model_free(m);
    rm_rf(root);
    free(root);
    free(dir);
    return test_summary("engine_sched");
}
