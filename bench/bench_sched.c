/* bench_sched — what the shared scheduler's fair rounds cost in throughput,
 * with no HTTP in the way: the same N documents embedded (a) by one
 * embd_embed call on the context and (b) as C requests of N/C documents
 * submitted at once to a scheduler on the same context (embd_sched_submit),
 * timed from the first submit to the last callback. Runs alternate; prints
 * one line per run and the medians.
 *
 * usage: bench_sched MODEL_DIR CORPUS.jsonl [N 2048] [C 32] [RUNS 3] [THREADS 0]
 * The corpus is JSONL with a "text" field (scripts/corpus-debian); texts are
 * read with a minimal scan for "text": "...", unescaping \n, \" and \\ only
 * (enough for timing). Built with the tests (tests/engine/CMakeLists.txt). */
#include "embd.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The "text" field of a JSONL line, roughly unescaped, malloc'ed. */
static char *text_of(const char *line) {
    const char *p = strstr(line, "\"text\":");
    if (!p) return NULL;
    p += 7;
    while (*p == ' ')
        p++;
    if (*p++ != '"') return NULL;
    char *out = malloc(strlen(p) + 1), *o = out;
    while (*p && *p != '"') {
        if (*p == '\\' && p[1]) {
            p++;
            *o++ = *p == 'n' ? '\n' : *p;
        } else {
            *o++ = *p;
        }
        p++;
    }
    *o = '\0';
    return out;
}

static atomic_int pending;

static void on_done(void *user, enum embd_status st) {
    if (st != EMBD_OK) fprintf(stderr, "bench_sched: a request failed: %s\n", embd_last_error());
    (void)user;
    atomic_fetch_sub(&pending, 1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_sched MODEL_DIR CORPUS.jsonl [N] [C] [RUNS] [THREADS]\n");
        return 2;
    }
    size_t n = argc > 3 ? (size_t)atol(argv[3]) : 2048, c = argc > 4 ? (size_t)atol(argv[4]) : 32;
    int runs = argc > 5 ? atoi(argv[5]) : 3, threads = argc > 6 ? atoi(argv[6]) : 0;
    if (n == 0 || c == 0 || c > n || runs < 1) return 2;
    FILE *f = fopen(argv[2], "r");
    if (!f) return perror(argv[2]), 1;
    char **texts = calloc(n, sizeof *texts), *line = NULL;
    size_t cap = 0, k = 0;
    while (k < n && getline(&line, &cap, f) > 0)
        if ((texts[k] = text_of(line))) k++;
    fclose(f);
    free(line);
    if (k < n) return fprintf(stderr, "bench_sched: only %zu texts\n", k), 1;

    embd_model *m = NULL;
    if (embd_model_load(argv[1], embd_model_default_params(), &m) != EMBD_OK)
        return fprintf(stderr, "bench_sched: %s\n", embd_last_error()), 1;
    struct embd_ctx_params cp = embd_ctx_default_params();
    cp.device = EMBD_DEVICE_CPU;
    cp.cache_bytes = 0;
    cp.n_threads = threads;
    embd_ctx *ctx = NULL;
    if (embd_ctx_new(m, cp, &ctx) != EMBD_OK)
        return fprintf(stderr, "bench_sched: %s\n", embd_last_error()), 1;
    const size_t D = (size_t)embd_model_dim(m);
    float *out = malloc(n * D * sizeof *out);
    double *one = calloc((size_t)runs, sizeof *one), *sched = calloc((size_t)runs, sizeof *sched);
    embd_embed(ctx, (const char *const *)texts, NULL, 16, out); /* warm-up */
    for (int r = 0; r < runs; r++) {
        double t0 = now_s();
        if (embd_embed(ctx, (const char *const *)texts, NULL, n, out) != EMBD_OK) return 1;
        one[r] = (double)n / (now_s() - t0);

        embd_sched *s = NULL;
        struct embd_sched_params sp = embd_sched_default_params();
        sp.queue_texts = n;
        if (embd_sched_new(ctx, sp, &s) != EMBD_OK) return 1;
        atomic_store(&pending, (int)c);
        t0 = now_s();
        for (size_t i = 0; i < c; i++) {
            size_t a = i * n / c, b = (i + 1) * n / c;
            if (embd_sched_submit(s, (const char *const *)texts + a, NULL, b - a, out + a * D, NULL,
                                  NULL, NULL, on_done, NULL) != EMBD_OK)
                return fprintf(stderr, "bench_sched: %s\n", embd_last_error()), 1;
        }
        while (atomic_load(&pending) > 0) {
            struct timespec ms = {0, 1000000L};
            nanosleep(&ms, NULL);
        }
        sched[r] = (double)n / (now_s() - t0);
        embd_sched_free(s);
        printf("run %d: one call %.1f docs/s, %zu requests through the scheduler %.1f docs/s\n",
               r + 1, one[r], c, sched[r]);
        fflush(stdout);
    }
    qsort(one, (size_t)runs, sizeof *one, cmp_double);
    qsort(sched, (size_t)runs, sizeof *sched, cmp_double);
    printf("median: one call %.1f docs/s, scheduler %.1f docs/s (%+.1f%%)\n", one[runs / 2],
           sched[runs / 2], 100.0 * (sched[runs / 2] / one[runs / 2] - 1));
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(out);
    free(one);
    free(sched);
    embd_ctx_free(ctx);
    embd_model_free(m);
    return 0;
}
