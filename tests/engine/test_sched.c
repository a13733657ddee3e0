/* test_sched.c — the shared engine: 8 threads x many calls through one
 * scheduler get the vectors a single-threaded run gives each text, in their
 * own order; a full queue with timeout 0 or a short timeout returns
 * EMBD_ERR_BUSY and never loses or mixes up work; freeing drains the queue.
 * Requests that meet in the queue are run ordered by length (short texts of
 * different callers share a forward pass). A queued request that its caller
 * cancels or whose deadline passes returns EMBD_ERR_CANCELLED or
 * EMBD_ERR_TIMEOUT and is never run; under random cancellations and tiny
 * deadlines nothing deadlocks and every completed call is exact.
 * scripts/test --only tsan runs it under ThreadSanitizer. */
#include "engine/engine.h"
#include "engine/metrics.h"
#include "model/tiny_model.h"
#include "test.h"
#include "util/util.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_POOL 24
#define N_THREADS 8
#define N_CALLS 40

static const char *pool[N_POOL];
static char pool_buf[N_POOL][64];
static float *ref; /* (N_POOL, D) */
static int D;
static embd_sched *sched;

/* With n_multi > 0 the tests' schedulers drive all of multi[] (as
 * embd_sched_new_multi does one context per GPU; CPU contexts stand in). */
static embd_ctx *multi[3];
static int n_multi;

static enum embd_status sched_make(embd_ctx *ctx, struct embd_sched_params p, embd_sched **out) {
    if (n_multi) return embd_sched_new_multi(multi, n_multi, p, out);
    return embd_sched_new(ctx, p, out);
}
static atomic_int busy_seen, wrong, failed;
static int timeout_ms;

/* The stress run with cancellations: each caller's flag, raised at random by
 * a canceller thread. */
static int cancel_flag[N_THREADS];
static atomic_int stress_ok, stress_cancelled, stress_timeout, stress_busy, stress_untouched_bad;
static atomic_int stress_running;

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

/* One call from its own thread, for the tests that hold the worker. */
struct bg_call {
    const char *const *texts;
    size_t n;
    float *out;
    struct embd_sched_call call;
    enum embd_status st;
    pthread_t th;
};

static void *bg_main(void *arg) {
    struct bg_call *b = arg;
    b->st = embd_sched_embed_ex(sched, b->texts, NULL, b->n, b->out, &b->call);
    return NULL;
}

static void bg_start(struct bg_call *b) {
    CHECK(pthread_create(&b->th, NULL, bg_main, b) == 0);
}

/* Waits (up to 10 s) until k requests are queued. */
static bool wait_queued(size_t k) {
    for (int i = 0; i < 10000; i++) {
        if (embd_sched_queued_requests(sched) == k) return true;
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
    }
    return false;
}

/* Waits (up to 10 s) until embd_sched_queue_depth says (requests, inputs). */
static bool wait_depth(size_t requests, size_t inputs) {
    size_t r = 0, k = 0;
    for (int i = 0; i < 10000; i++) {
        embd_sched_queue_depth(sched, &r, &k);
        if (r == requests && k == inputs) return true;
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
    }
    fprintf(stderr, "queue depth %zu requests, %zu inputs; want %zu, %zu\n", r, k, requests,
            inputs);
    return false;
}

static bool untouched(const float *out, size_t n) {
    for (size_t i = 0; i < n * (size_t)D; i++)
        if (out[i] != -7.0f) return false;
    return true;
}

static void fill_sentinel(float *out, size_t n) {
    for (size_t i = 0; i < n * (size_t)D; i++)
        out[i] = -7.0f;
}

/* Random cancellations and tiny deadlines: every call ends (no deadlock);
 * an OK call is exact; a timed out call was never run, so its out is
 * untouched; a cancelled one has exact rows where it ran, untouched ones
 * elsewhere. */
static void *stress_caller(void *arg) {
    const int t = (int)(uintptr_t)arg;
    unsigned seed = (unsigned)t * 2246822519u + 7;
    float out[5 * 64];
    for (int c = 0; c < 4 * N_CALLS; c++) {
        const char *texts[5];
        int idx[5];
        seed = seed * 1103515245u + 12345u;
        int n = 1 + (int)((seed >> 8) % 5);
        for (int i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            idx[i] = (int)((seed >> 8) % N_POOL);
            texts[i] = pool[idx[i]];
        }
        seed = seed * 1103515245u + 12345u;
        struct embd_sched_call call = {
            .queue_timeout_ms = (int)((seed >> 8) % 3) - 1, /* -1, 0 or 1 */
            .deadline_ms = (int)((seed >> 12) % 4),         /* none, or 1..3 ms */
            .cancel = &cancel_flag[t],
        };
        __atomic_store_n(&cancel_flag[t], 0, __ATOMIC_RELEASE);
        fill_sentinel(out, (size_t)n);
        enum embd_status st = embd_sched_embed_ex(sched, texts, NULL, (size_t)n, out, &call);
        if (st == EMBD_OK) {
            atomic_fetch_add(&stress_ok, 1);
            for (int i = 0; i < n; i++)
                if (!close_to(out + i * D, ref + idx[i] * D)) atomic_fetch_add(&wrong, 1);
            continue;
        }
        if (st == EMBD_ERR_CANCELLED) {
            /* cancelled while it ran: the rows that ran are exact, the rest untouched */
            atomic_fetch_add(&stress_cancelled, 1);
            for (int i = 0; i < n; i++)
                if (!untouched(out + i * D, 1) && !close_to(out + i * D, ref + idx[i] * D))
                    atomic_fetch_add(&stress_untouched_bad, 1);
            continue;
        }
        if (st == EMBD_ERR_TIMEOUT)
            atomic_fetch_add(&stress_timeout, 1);
        else if (st == EMBD_ERR_BUSY)
            atomic_fetch_add(&stress_busy, 1);
        else
            atomic_fetch_add(&failed, 1);
        if (!untouched(out, (size_t)n)) atomic_fetch_add(&stress_untouched_bad, 1);
    }
    return NULL;
}

static void *canceller(void *arg) {
    (void)arg;
    unsigned seed = 12345;
    while (atomic_load(&stress_running)) {
        seed = seed * 1103515245u + 12345u;
        embd_sched_cancel(&cancel_flag[(seed >> 8) % N_THREADS]);
        struct timespec pause = {0, (long)((seed >> 16) % 1000) * 1000L}; /* < 1 ms */
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/* Reads a cumulative bucket (or the count, le == NULL) of a histogram from
 * the rendered metrics; -1 when missing. */
static long long metric_value(const char *text, const char *name, const char *le) {
    char key[128];
    if (le)
        snprintf(key, sizeof key, "%s_bucket{le=\"%s\"} ", name, le);
    else
        snprintf(key, sizeof key, "%s_count ", name);
    const char *p = strstr(text, key);
    return p ? atoll(p + strlen(key)) : -1;
}

/* Five callers meet in the queue: one with three long texts, four with one
 * short text each. The worker runs the four short texts together in one
 * forward pass, first (short requests never wait for their turn behind
 * large ones), then the long texts (with a budget of one long text per pass,
 * one each), and every caller gets its own rows in its order. */
static void test_grouping(embd_model *m) {
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = EMBD_DEVICE_CPU;
    p.n_threads = 1;
    p.cache_bytes = 0;
    p.max_batch_tokens = embd_model_max_tokens(m);
    embd_ctx *ctx = NULL;
    CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);
    if (!ctx) return;
    const char *long_text = "a b c d e f g h i j k l m n o p q r s t";
    const char *short_text[4] = {"a", "b", "c", "d"};
    size_t nl = 0, ns = 0;
    CHECK(embd_count_tokens(m, long_text, strlen(long_text), &nl) == EMBD_OK);
    CHECK(embd_count_tokens(m, "a", 1, &ns) == EMBD_OK);
    const size_t max_tok = (size_t)embd_model_max_tokens(m);
    /* The premise: a long text (truncated to max_tok) fills more than half a
     * pass, so a short text cannot follow it, while four short ones fit. */
    CHECK_MSG(nl >= max_tok && 4 * ns <= max_tok, "long %zu, short %zu, max %zu", nl, ns, max_tok);
    float ref_long[64], ref_short[4][64];
    CHECK(embd_embed(ctx, &long_text, NULL, 1, ref_long) == EMBD_OK);
    for (int i = 0; i < 4; i++)
        CHECK(embd_embed(ctx, &short_text[i], NULL, 1, ref_short[i]) == EMBD_OK);

    CHECK(embd_sched_new(ctx, embd_sched_default_params(), &sched) == EMBD_OK);
    if (!sched) {
        embd_ctx_free(ctx);
        return;
    }
    char before[16384], after[16384];
    embd_metrics_render(ctx, before, sizeof before);
    embd_sched_hold(sched, true);
    struct bg_call b[5];
    const char *longs[3] = {long_text, long_text, long_text};
    float out_long[3 * 64], out[4][64];
    b[0] = (struct bg_call){.texts = longs, .n = 3, .out = out_long};
    b[0].call.queue_timeout_ms = -1;
    bg_start(&b[0]);
    CHECK(wait_queued(1));
    for (int i = 0; i < 4; i++) {
        b[i + 1] = (struct bg_call){.texts = &short_text[i], .n = 1, .out = out[i]};
        b[i + 1].call.queue_timeout_ms = -1;
        bg_start(&b[i + 1]);
    }
    CHECK(wait_queued(5));
    embd_sched_hold(sched, false);
    for (int i = 0; i < 5; i++) {
        pthread_join(b[i].th, NULL);
        CHECK_EQ_INT(b[i].st, EMBD_OK);
    }
    for (int i = 0; i < 3; i++)
        CHECK(close_to(out_long + i * D, ref_long));
    for (int i = 0; i < 4; i++)
        CHECK(close_to(out[i], ref_short[i]));
    embd_metrics_render(ctx, after, sizeof after);
    long long passes = metric_value(after, "embd_batch_inputs", NULL) -
                       metric_value(before, "embd_batch_inputs", NULL);
    long long small = metric_value(after, "embd_batch_inputs", "2") -
                      metric_value(before, "embd_batch_inputs", "2");
    long long up_to_4 = metric_value(after, "embd_batch_inputs", "4") -
                        metric_value(before, "embd_batch_inputs", "4");
    /* One pass with the four short texts, three passes with one long text each. */
    CHECK_EQ_INT((int)passes, 4);
    CHECK_EQ_INT((int)small, 3);
    CHECK_EQ_INT((int)up_to_4, 4);
    embd_sched_free(sched);
    sched = NULL;
    embd_ctx_free(ctx);
}

/* A held worker: a queued request that is cancelled, or whose deadline
 * passes, returns its status, leaves out untouched and leaves the queue. */
static void test_cancel_timeout(embd_ctx *ctx) {
    CHECK(sched_make(ctx, embd_sched_default_params(), &sched) == EMBD_OK);
    if (!sched) return;
    CHECK(!strcmp(embd_status_str(EMBD_ERR_CANCELLED), "cancelled"));
    CHECK(!strcmp(embd_status_str(EMBD_ERR_TIMEOUT), "timed out"));
    float out_a[3 * 64], out_b[3 * 64], out_c[3 * 64];
    int flag = 0;
    embd_sched_hold(sched, true);
    struct bg_call a = {.texts = pool, .n = 3, .out = out_a};
    a.call = (struct embd_sched_call){.queue_timeout_ms = -1, .cancel = &flag};
    struct bg_call b = {.texts = pool + 3, .n = 3, .out = out_b};
    b.call = (struct embd_sched_call){.queue_timeout_ms = -1, .deadline_ms = 30};
    struct bg_call c = {.texts = pool + 6, .n = 3, .out = out_c};
    c.call = (struct embd_sched_call){.queue_timeout_ms = -1};
    fill_sentinel(out_a, 3);
    fill_sentinel(out_b, 3);
    bg_start(&a);
    CHECK(wait_queued(1));
    bg_start(&c);
    CHECK(wait_queued(2));
    CHECK(wait_depth(2, 6)); /* the queue metric: two requests of three inputs, held */
    embd_sched_queue_depth(sched, NULL, NULL);
    embd_sched_queue_depth(NULL, NULL, NULL);
    double t0 = embd_now();
    bg_start(&b); /* times out in the queue (or, on a slow machine, before it is queued) */
    pthread_join(b.th, NULL);
    CHECK_EQ_INT(b.st, EMBD_ERR_TIMEOUT);
    CHECK(embd_now() - t0 >= 0.029);
    CHECK(untouched(out_b, 3));
    CHECK(wait_queued(2));
    embd_sched_cancel(&flag);
    pthread_join(a.th, NULL);
    CHECK_EQ_INT(a.st, EMBD_ERR_CANCELLED);
    CHECK(untouched(out_a, 3));
    CHECK(wait_queued(1)); /* only c is left */
    embd_sched_hold(sched, false);
    pthread_join(c.th, NULL);
    CHECK_EQ_INT(c.st, EMBD_OK);
    for (int i = 0; i < 3; i++)
        CHECK(close_to(out_c + i * D, ref + (6 + i) * D));

    /* Cancelled before the call: nothing is queued. A deadline on a full
     * queue: EMBD_ERR_TIMEOUT; its queue timeout first: EMBD_ERR_BUSY. */
    CHECK(embd_sched_embed_ex(sched, pool, NULL, 2, out_a,
                              &(struct embd_sched_call){.queue_timeout_ms = -1, .cancel = &flag}) ==
          EMBD_ERR_CANCELLED);
    embd_sched_free(sched);
    struct embd_sched_params sp = {.queue_texts = 2, .max_batch_texts = 2};
    CHECK(sched_make(ctx, sp, &sched) == EMBD_OK);
    if (!sched) return;
    embd_sched_hold(sched, true);
    struct bg_call d = {.texts = pool, .n = 2, .out = out_c};
    d.call.queue_timeout_ms = -1;
    bg_start(&d);
    CHECK(wait_queued(1)); /* the queue is full now */
    CHECK(embd_sched_embed_ex(sched, pool, NULL, 1, out_a,
                              &(struct embd_sched_call){.queue_timeout_ms = -1,
                                                        .deadline_ms = 5}) == EMBD_ERR_TIMEOUT);
    CHECK(embd_sched_embed_ex(sched, pool, NULL, 1, out_a,
                              &(struct embd_sched_call){.queue_timeout_ms = 5,
                                                        .deadline_ms = 1000}) == EMBD_ERR_BUSY);
    flag = 0;
    struct bg_call e = {.texts = pool, .n = 1, .out = out_b};
    e.call = (struct embd_sched_call){.queue_timeout_ms = -1, .cancel = &flag};
    bg_start(&e);            /* waits for room */
    CHECK(wait_depth(2, 3)); /* a caller waiting for room counts too */
    embd_sched_cancel(&flag);
    pthread_join(e.th, NULL);
    CHECK_EQ_INT(e.st, EMBD_ERR_CANCELLED);
    CHECK(wait_depth(1, 2));
    embd_sched_hold(sched, false);
    pthread_join(d.th, NULL);
    CHECK_EQ_INT(d.st, EMBD_OK);
    CHECK(wait_depth(0, 0));
    embd_sched_free(sched);
    sched = NULL;
}

static void test_stress(embd_ctx *ctx) {
    struct embd_sched_params sp = {.queue_texts = 8, .max_batch_texts = 6};
    CHECK(sched_make(ctx, sp, &sched) == EMBD_OK);
    if (!sched) return;
    atomic_store(&wrong, 0);
    atomic_store(&failed, 0);
    atomic_store(&stress_ok, 0);
    atomic_store(&stress_cancelled, 0);
    atomic_store(&stress_timeout, 0);
    atomic_store(&stress_busy, 0);
    atomic_store(&stress_untouched_bad, 0);
    atomic_store(&stress_running, 1);
    pthread_t th[N_THREADS], cth;
    CHECK(pthread_create(&cth, NULL, canceller, NULL) == 0);
    for (int t = 0; t < N_THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, stress_caller, (void *)(uintptr_t)t) == 0);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    atomic_store(&stress_running, 0);
    pthread_join(cth, NULL);
    embd_sched_free(sched);
    sched = NULL;
    int ok = atomic_load(&stress_ok), can = atomic_load(&stress_cancelled),
        tmo = atomic_load(&stress_timeout), busy = atomic_load(&stress_busy);
    printf("stress: %d ok, %d cancelled, %d timed out, %d busy of %d calls\n", ok, can, tmo, busy,
           N_THREADS * 4 * N_CALLS);
    CHECK_EQ_INT(ok + can + tmo + busy, N_THREADS * 4 * N_CALLS);
    CHECK(ok > 0);
    CHECK_EQ_INT(atomic_load(&wrong), 0);
    CHECK_EQ_INT(atomic_load(&failed), 0);
    CHECK_EQ_INT(atomic_load(&stress_untouched_bad), 0);
}

/* The asynchronous submit and fairness: a long request (many rounds) is
 * queued first; a short one queued after it finishes long before it (it gets
 * a piece of the very next round); a long request cancelled while it runs
 * stops with EMBD_ERR_CANCELLED, rows that ran exact, the rest untouched;
 * every callback runs exactly once; a full queue refuses at once. */
struct async_rec {
    atomic_int calls;
    enum embd_status st;
    double at;
};

static void on_done(void *user, enum embd_status st) {
    struct async_rec *r = user;
    r->st = st;
    r->at = embd_now();
    atomic_fetch_add(&r->calls, 1);
}

static bool wait_calls(struct async_rec *r) {
    for (int i = 0; i < 20000 && atomic_load(&r->calls) == 0; i++) {
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
    }
    return atomic_load(&r->calls) == 1;
}

static void test_async_fair(embd_model *m) {
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = EMBD_DEVICE_CPU;
    p.n_threads = 1;
    p.cache_bytes = 0;
    p.max_batch_tokens = embd_model_max_tokens(m); /* many small rounds */
    embd_ctx *ctx = NULL;
    CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);
    if (!ctx) return;
    struct embd_sched_params sp = {.queue_texts = 100000, .max_batch_texts = 1024};
    CHECK(embd_sched_new(ctx, sp, &sched) == EMBD_OK);
    if (!sched) {
        embd_ctx_free(ctx);
        return;
    }
    enum { NL = 3000 };
    const char **lt = malloc(NL * sizeof *lt);
    float *lo = malloc((size_t)NL * D * sizeof *lo);
    for (int i = 0; i < NL; i++)
        lt[i] = pool[i % N_POOL];
    float qo[64];
    const char *q[1] = {pool[3]};
    struct async_rec rl = {0}, rq = {0};
    size_t ntok[1];
    struct embd_embed_info qi = {.n_tokens = ntok};
    CHECK_EQ_INT(embd_sched_submit(sched, lt, NULL, NL, lo, NULL, NULL, NULL, on_done, &rl),
                 EMBD_OK);
    struct timespec ms = {0, 2000000L};
    nanosleep(&ms, NULL);
    CHECK_EQ_INT(embd_sched_submit(sched, q, NULL, 1, qo, NULL, NULL, &qi, on_done, &rq), EMBD_OK);
    CHECK(wait_calls(&rq) && wait_calls(&rl));
    CHECK_EQ_INT(rq.st, EMBD_OK);
    CHECK_EQ_INT(rl.st, EMBD_OK);
    CHECK_MSG(rq.at < rl.at, "the short request ended %.3f s after the long one", rq.at - rl.at);
    CHECK(close_to(qo, ref + 3 * D));
    CHECK(qi.total_tokens == ntok[0] && ntok[0] >= 2);
    bool exact = true;
    for (int i = 0; i < NL; i++)
        exact = exact && close_to(lo + (size_t)i * D, ref + (i % N_POOL) * D);
    CHECK(exact);

    /* Cancelled while it runs: stops at a round, some rows ran. */
    int flag = 0;
    struct async_rec rc = {0};
    fill_sentinel(lo, NL);
    struct embd_sched_call call = {.cancel = &flag};
    CHECK_EQ_INT(embd_sched_submit(sched, lt, NULL, NL, lo, &call, NULL, NULL, on_done, &rc),
                 EMBD_OK);
    nanosleep(&ms, NULL);
    embd_sched_cancel(&flag);
    CHECK(wait_calls(&rc));
    CHECK_EQ_INT(rc.st, EMBD_ERR_CANCELLED);
    int ran = 0, bad = 0;
    for (int i = 0; i < NL; i++) {
        if (untouched(lo + (size_t)i * D, 1)) continue;
        ran++;
        if (!close_to(lo + (size_t)i * D, ref + (i % N_POOL) * D)) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_MSG(ran < NL, "a cancelled request ran all its %d texts", ran);

    /* A full queue refuses at once; bad arguments are refused without a call. */
    embd_sched_free(sched);
    struct embd_sched_params tiny = {.queue_texts = 2, .max_batch_texts = 2};
    CHECK(embd_sched_new(ctx, tiny, &sched) == EMBD_OK);
    struct async_rec r1 = {0}, r2 = {0};
    embd_sched_hold(sched, true);
    CHECK_EQ_INT(embd_sched_submit(sched, lt, NULL, 2, lo, NULL, NULL, NULL, on_done, &r1),
                 EMBD_OK);
    const struct embd_sched_call no_wait = {.queue_timeout_ms = 0};
    CHECK_EQ_INT(
        embd_sched_submit(sched, lt, NULL, 1, lo + 2 * D, &no_wait, NULL, NULL, on_done, &r2),
        EMBD_ERR_BUSY);
    /* With a queue timeout it waits for room: in time (r3), or not (r4, BUSY
     * through its callback); cancelled while it waits (r5). */
    struct async_rec r3 = {0}, r4 = {0}, r5 = {0};
    float o3[64], o4[64], o5[64];
    int flag5 = 0;
    const struct embd_sched_call wait_long = {.queue_timeout_ms = 10000};
    const struct embd_sched_call wait_short = {.queue_timeout_ms = 30};
    const struct embd_sched_call wait_cancel = {.queue_timeout_ms = -1, .cancel = &flag5};
    CHECK_EQ_INT(
        embd_sched_submit(sched, &pool[7], NULL, 1, o3, &wait_long, NULL, NULL, on_done, &r3),
        EMBD_OK);
    CHECK_EQ_INT(
        embd_sched_submit(sched, &pool[8], NULL, 1, o4, &wait_short, NULL, NULL, on_done, &r4),
        EMBD_OK);
    CHECK_EQ_INT(
        embd_sched_submit(sched, &pool[9], NULL, 1, o5, &wait_cancel, NULL, NULL, on_done, &r5),
        EMBD_OK);
    embd_sched_cancel(&flag5);
    CHECK(wait_calls(&r4) && wait_calls(&r5));
    CHECK_EQ_INT(r4.st, EMBD_ERR_BUSY);
    CHECK_EQ_INT(r5.st, EMBD_ERR_CANCELLED);
    CHECK_EQ_INT(atomic_load(&r3.calls), 0); /* still waiting for room: the worker is held */
    CHECK_EQ_INT(embd_sched_submit(sched, lt, NULL, 1, lo, NULL, NULL, NULL, NULL, NULL),
                 EMBD_ERR_INVALID_ARG);
    CHECK_EQ_INT(embd_sched_submit(sched, lt, NULL, 0, lo, NULL, NULL, NULL, on_done, &r2),
                 EMBD_ERR_INVALID_ARG);
    embd_sched_hold(sched, false);
    CHECK(wait_calls(&r1));
    CHECK_EQ_INT(r1.st, EMBD_OK);
    CHECK(wait_calls(&r3));
    CHECK_EQ_INT(r3.st, EMBD_OK);
    CHECK(close_to(o3, ref + 7 * D));
    CHECK_EQ_INT(atomic_load(&r2.calls), 0);
    /* Token ids, asynchronously, cut into pieces at sequence bounds. */
    int32_t ids[6];
    size_t n_ids = 0;
    CHECK(embd_tokenize(m, pool[5], strlen(pool[5]), ids, 6, &n_ids) == EMBD_OK);
    size_t ss[2] = {0, n_ids};
    struct async_rec rt = {0};
    CHECK_EQ_INT(embd_sched_submit_tokens(sched, ids, ss, 1, lo, NULL, NULL, NULL, on_done, &rt),
                 EMBD_OK);
    CHECK(wait_calls(&rt));
    CHECK_EQ_INT(rt.st, EMBD_OK);
    CHECK(close_to(lo, ref + 5 * D));
    embd_sched_free(sched);
    sched = NULL;
    free(lt);
    free(lo);
    embd_ctx_free(ctx);
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
    p.n_threads = 2;   /* the context's thread pool runs too (under TSan in scripts/test) */
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

    test_cancel_timeout(ctx);
    test_stress(ctx);
    test_grouping(m);
    test_async_fair(m);

    /* Several contexts behind one scheduler (one per device; three CPU
     * contexts stand in for GPUs): every row right and in order, cancels and
     * deadlines as with one, the work spread over all of them. */
    multi[0] = ctx;
    for (int i = 1; i < 3; i++)
        CHECK(embd_ctx_new(m, p, &multi[i]) == EMBD_OK);
    if (multi[1] && multi[2]) {
        struct embd_ctx_stats before[3], after[3];
        for (int i = 0; i < 3; i++)
            embd_ctx_get_stats(multi[i], &before[i]);
        n_multi = 3;
        CHECK(sched_make(ctx, embd_sched_default_params(), &sched) == EMBD_OK);
        timeout_ms = -1;
        atomic_store(&wrong, 0);
        atomic_store(&failed, 0);
        run_threads();
        CHECK_EQ_INT(atomic_load(&wrong), 0);
        CHECK_EQ_INT(atomic_load(&failed), 0);
        float many[40 * 64];
        const char *texts[40];
        for (int i = 0; i < 40; i++)
            texts[i] = pool[i % N_POOL];
        CHECK(embd_sched_embed(sched, texts, NULL, 40, many, -1) == EMBD_OK);
        for (int i = 0; i < 40; i++)
            CHECK(close_to(many + i * D, ref + (i % N_POOL) * D));
        embd_sched_free(sched);
        sched = NULL;
        int used = 0;
        for (int i = 0; i < 3; i++) {
            embd_ctx_get_stats(multi[i], &after[i]);
            used += after[i].inputs > before[i].inputs;
            printf("context %d: %llu inputs\n", i,
                   (unsigned long long)(after[i].inputs - before[i].inputs));
        }
        CHECK_MSG(used >= 2, "only %d of 3 contexts ran rounds", used);
        test_cancel_timeout(ctx);
        test_stress(ctx);
        n_multi = 0;
        /* An express context beside one device: short requests (the callers'
         * 1-3 texts) run there, the rest on the device; all rows right. */
        struct embd_sched_params ep = embd_sched_default_params();
        ep.express = multi[1];
        for (int i = 0; i < 2; i++)
            embd_ctx_get_stats(multi[i], &before[i]);
        CHECK(embd_sched_new(ctx, ep, &sched) == EMBD_OK);
        if (sched) {
            /* the express worker takes a short request only when it arrives
             * while the device runs a round: on a loaded machine (CI's
             * sanitizer stage) one burst may find the device idle each
             * time, so up to five bursts, each checked, until it has */
            for (int burst = 0; burst < 5; burst++) {
                atomic_store(&wrong, 0);
                atomic_store(&failed, 0);
                run_threads();
                CHECK_EQ_INT(atomic_load(&wrong), 0);
                CHECK_EQ_INT(atomic_load(&failed), 0);
                CHECK(embd_sched_embed(sched, texts, NULL, 40, many, -1) == EMBD_OK);
                for (int i = 0; i < 40; i++)
                    CHECK(close_to(many + i * D, ref + (i % N_POOL) * D));
                embd_ctx_get_stats(multi[1], &after[1]);
                if (after[1].inputs > before[1].inputs) break;
            }
            embd_sched_free(sched);
            sched = NULL;
            for (int i = 0; i < 2; i++)
                embd_ctx_get_stats(multi[i], &after[i]);
            printf("express: device %llu inputs, express %llu\n",
                   (unsigned long long)(after[0].inputs - before[0].inputs),
                   (unsigned long long)(after[1].inputs - before[1].inputs));
            CHECK(after[1].inputs > before[1].inputs);
            CHECK(after[0].inputs >= before[0].inputs + 40); /* the 40 texts are not short */
        }
        n_multi = 1;
        multi[0] = ctx;
        ep.express = ctx; /* the device's own context: refused */
        CHECK(embd_sched_new(ctx, ep, &sched) == EMBD_ERR_INVALID_ARG);
        n_multi = 0;
        /* refused: none, too many, one twice, another model's */
        embd_ctx *twice[2] = {ctx, ctx};
        CHECK(embd_sched_new_multi(twice, 2, sp, &sched) == EMBD_ERR_INVALID_ARG);
        CHECK(embd_sched_new_multi(multi, 0, sp, &sched) == EMBD_ERR_INVALID_ARG);
        CHECK(embd_sched_new_multi(NULL, 1, sp, &sched) == EMBD_ERR_INVALID_ARG);
        CHECK(embd_sched_new_multi(multi, EMBD_SCHED_MAX_CTX + 1, sp, &sched) ==
              EMBD_ERR_INVALID_ARG);
        embd_model *m2 = NULL;
        embd_ctx *other = NULL;
        CHECK(embd_model_load(dir, embd_model_default_params(), &m2) == EMBD_OK);
        if (m2 && embd_ctx_new(m2, p, &other) == EMBD_OK) {
            embd_ctx *mixed[2] = {ctx, other};
            CHECK(embd_sched_new_multi(mixed, 2, sp, &sched) == EMBD_ERR_INVALID_ARG);
            embd_ctx_free(other);
        }
        embd_model_free(m2);
    }
    for (int i = 1; i < 3; i++)
        embd_ctx_free(multi[i]);

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
