/* bench_store — vector store performance on random unit vectors (no model).
 *
 * Embedded store: appends N vectors (batches of 10,000, one flush each),
 * reopens it read-only (the open loads/maps every record), then times Q
 * exact top-k searches one query at a time: p50 / p99 / mean latency.
 * PostgreSQL (--pg URL, an empty database): inserts --pg-n vectors through
 * the store interface (COPY binary into a temp table + upsert, one
 * transaction per batch of 10,000): rows/s; then the HNSW index build
 * (embd_vstore_finish) and the search latency with the index and exact.
 *
 * --gpu: the same store reopened with params.gpu (CUDA device 0): the first
 * search (which uploads the vectors) and then the same latencies with the
 * scores from cuBLAS (top-k on the host, as on the CPU). Without a usable
 * GPU it says why and skips that part (exit 0).
 *
 * usage: bench_store [--n 100000] [--dim 384] [--queries 1000] [--k 10] [--gpu]
 *                    [--pg URL] [--pg-n 100000] [--pg-queries 200] [--seed 1]
 * Built as tests/store's bench_store target (not run by ctest). */
#include "../tests/store/store_fixture.h"
#include "store/vstore.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH 10000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* the random source and unit vectors of the store tests */
static uint64_t rng_state;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *lat, size_t q) {
    qsort(lat, q, sizeof *lat, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < q; i++)
        sum += lat[i];
    size_t i50 = q / 2, i99 = (size_t)ceil(0.99 * (double)q) - 1;
    printf("%s: %zu queries, p50 %.3f ms, p99 %.3f ms, mean %.3f ms\n", what, q, lat[i50] * 1e3,
           lat[i99] * 1e3, sum / (double)q * 1e3);
}

/* Loads n random vectors into s in batches; returns the seconds taken, or -1. */
static double load(embd_vstore *s, size_t n, int D) {
    float *v = malloc((size_t)BATCH * (size_t)D * sizeof *v); /* (BATCH, D) */
    char(*idb)[24] = malloc((size_t)BATCH * sizeof *idb);
    const char **ids = malloc(BATCH * sizeof *ids), **texts = malloc(BATCH * sizeof *texts);
    size_t *il = malloc(BATCH * sizeof *il), *tl = malloc(BATCH * sizeof *tl);
    double el = -1, gen = 0;
    if (!v || !idb || !ids || !texts || !il || !tl) goto done;
    double t0 = now_s();
    for (size_t done_n = 0; done_n < n;) {
        size_t b = n - done_n < BATCH ? n - done_n : BATCH;
        double g0 = now_s();
        fx_rand_unit(&rng_state, v, b, D);
        for (size_t i = 0; i < b; i++) {
            il[i] = (size_t)snprintf(idb[i], sizeof idb[i], "v%zu", done_n + i);
            ids[i] = texts[i] = idb[i];
            tl[i] = il[i];
        }
        gen += now_s() - g0;
        if (embd_vstore_add(s, ids, il, texts, tl, v, b, NULL) != EMBD_OK ||
            embd_vstore_flush(s) != EMBD_OK) {
            fprintf(stderr, "bench_store: %s\n", embd_last_error());
            goto done;
        }
        done_n += b;
    }
    el = now_s() - t0 - gen; /* without generating the vectors */
done:
    free(v);
    free(idb);
    free(ids);
    free(texts);
    free(il);
    free(tl);
    return el;
}

static int search_lat(embd_vstore *s, const char *what, size_t q, size_t k, bool exact, int D) {
    float *qv = malloc(q * (size_t)D * sizeof *qv); /* (q, D) */
    double *lat = malloc(q * sizeof *lat);
    struct embd_store_hit *hits = malloc(k * sizeof *hits);
    int rc = 1;
    if (!qv || !lat || !hits) goto done;
    fx_rand_unit(&rng_state, qv, q, D);
    size_t nh;
    if (embd_vstore_search(s, qv, k, exact, hits, &nh) != EMBD_OK) goto err; /* warm-up */
    for (size_t i = 0; i < q; i++) {
        double t0 = now_s();
        if (embd_vstore_search(s, qv + i * (size_t)D, k, exact, hits, &nh) != EMBD_OK) goto err;
        lat[i] = now_s() - t0;
        if (nh != k) {
            fprintf(stderr, "bench_store: %s: %zu hits, wanted %zu\n", what, nh, k);
            goto done;
        }
    }
    report(what, lat, q);
    rc = 0;
    goto done;
err:
    fprintf(stderr, "bench_store: %s\n", embd_last_error());
done:
    free(qv);
    free(lat);
    free(hits);
    return rc;
}

/* The embedded store at path reopened with GPU scoring (device 0): the first
 * search, which uploads the vectors, then q searches. Returns 0 (also when
 * no GPU is usable: it says why) or 1. */
static int bench_gpu(const char *path, const struct embd_store_params *p0, long n, long k, long q,
                     int D) {
    struct embd_store_params p = *p0;
    p.gpu = true;
    p.gpu_index = 0;
    embd_vstore *s = NULL;
    float *q1 = malloc((size_t)D * sizeof *q1);
    struct embd_store_hit h1;
    size_t nh;
    int rc = 1;
    if (!q1) goto done;
    fx_rand_unit(&rng_state, q1, 1, D);
    if (embd_vstore_open(path, &p, &s, NULL) != EMBD_OK) goto err;
    double t0 = now_s();
    if (embd_vstore_search(s, q1, 1, true, &h1, &nh) != EMBD_OK) goto err;
    double first = now_s() - t0;
    const char *why = NULL;
    if (strcmp(embd_vstore_search_device(s, &why), "cuda")) {
        printf("embedded GPU: skipped: no GPU search: %s\n", why);
        rc = 0;
        goto done;
    }
    printf("embedded GPU (cuda:0): first search, uploading %ld vectors (%.0f MiB fp32): %.3f s\n",
           n, (double)n * D * 4 / 1048576.0, first);
    char what[96];
    snprintf(what, sizeof what, "embedded GPU (cuda:0) exact top-%ld of %ld", k, n);
    rc = search_lat(s, what, (size_t)q, (size_t)k, true, D);
    if (rc == 0 && strcmp(embd_vstore_search_device(s, &why), "cuda")) {
        printf("embedded GPU: fell back to the CPU during the run: %s\n", why);
        rc = 1;
    }
    goto done;
err:
    fprintf(stderr, "bench_store: %s\n", embd_last_error());
done:
    free(q1);
    embd_vstore_close(s);
    return rc;
}

int main(int argc, char **argv) {
    long n = 100000, D = 384, q = 1000, k = 10, pg_n = 100000, pg_q = 200, seed = 1;
    const char *pg = NULL;
    bool gpu = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long *dst = !strcmp(a, "--n")            ? &n
                    : !strcmp(a, "--dim")        ? &D
                    : !strcmp(a, "--queries")    ? &q
                    : !strcmp(a, "--k")          ? &k
                    : !strcmp(a, "--pg-n")       ? &pg_n
                    : !strcmp(a, "--pg-queries") ? &pg_q
                    : !strcmp(a, "--seed")       ? &seed
                                                 : NULL;
        if (!strcmp(a, "--gpu")) {
            gpu = true;
        } else if (!strcmp(a, "--pg") && v) {
            pg = v;
            i++;
        } else if (dst && v) {
            *dst = strtol(v, NULL, 10);
            i++;
        } else {
            fprintf(stderr, "usage: bench_store [--n N] [--dim D] [--queries Q] [--k K] [--gpu] "
                            "[--pg URL] [--pg-n N] [--pg-queries Q] [--seed S]\n");
            return 2;
        }
    }
    if (n < 1 || D < 1 || D > 16000 || q < 1 || k < 1 || k > n || pg_n < k || pg_q < 1) {
        fprintf(stderr, "bench_store: bad sizes\n");
        return 2;
    }
    rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)seed;
    if (!rng_state) rng_state = 1; /* xorshift never leaves 0 */
    struct embd_store_params p = {.dim = (int)D,
                                  .fingerprint = 0x1234567890abcdefull,
                                  .normalized = true,
                                  .create = true,
                                  .writable = true};
    char dir[] = "/tmp/embd-bench-store-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char path[64];
    snprintf(path, sizeof path, "%s/store", dir);
    printf("bench_store: dim %ld, k %ld\n", D, k);

    embd_vstore *s = NULL;
    int rc = 1;
    if (embd_vstore_open(path, &p, &s, NULL) != EMBD_OK) goto err;
    double el = load(s, (size_t)n, (int)D);
    if (el < 0) goto done;
    printf("embedded: inserted %ld vectors in %.2f s (%.0f vectors/s, batches of %d, fsync "
           "each)\n",
           n, el, (double)n / el, BATCH);
    embd_vstore_close(s);
    s = NULL;
    p.create = p.writable = false;
    double t0 = now_s();
    if (embd_vstore_open(path, &p, &s, NULL) != EMBD_OK) goto err;
    printf("embedded: open (read-only) of %ld records: %.3f s\n", n, now_s() - t0);
    char what[96];
    snprintf(what, sizeof what, "embedded exact top-%ld of %ld", k, n);
    if (search_lat(s, what, (size_t)q, (size_t)k, true, (int)D)) goto done;
    embd_vstore_close(s);
    s = NULL;
    if (gpu && bench_gpu(path, &p, n, k, q, (int)D)) goto done;

    if (pg) {
        p.create = p.writable = true;
        if (embd_vstore_open(pg, &p, &s, NULL) != EMBD_OK) goto err;
        el = load(s, (size_t)pg_n, (int)D);
        if (el < 0) goto done;
        printf("postgresql: inserted %ld vectors in %.2f s (%.0f vectors/s; COPY binary + "
               "upsert, batches of %d)\n",
               pg_n, el, (double)pg_n / el, BATCH);
        t0 = now_s();
        if (embd_vstore_finish(s) != EMBD_OK) goto err;
        printf("postgresql: HNSW index (vector_ip_ops, m 16, ef_construction 64) built in "
               "%.2f s\n",
               now_s() - t0);
        snprintf(what, sizeof what, "postgresql HNSW top-%ld of %ld (ef_search 40)", k, pg_n);
        if (search_lat(s, what, (size_t)pg_q, (size_t)k, false, (int)D)) goto done;
        snprintf(what, sizeof what, "postgresql exact top-%ld of %ld (seq scan)", k, pg_n);
        if (search_lat(s, what, (size_t)(pg_q < 20 ? pg_q : 20), (size_t)k, true, (int)D))
            goto done;
    }
    rc = 0;
    goto done;
err:
    fprintf(stderr, "bench_store: %s\n", embd_last_error());
done:
    embd_vstore_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_store: could not remove %s\n", dir);
    return rc;
}
