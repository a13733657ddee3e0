/* test_cuda_search.c — the embedded store scored on the GPU (params.gpu)
 * against the same store scored on the CPU, on 100,000 random unit vectors
 * of dim 384 and 50 queries: the same top-10 (ids equal except near ties,
 * scores within 1e-4), rows appended after the upload are found, a replaced
 * id's new vector is used and its old one is not, k > n and k = 0, the
 * plugin's multi-query scoring (Sgemm) against double-precision dot
 * products, and injected device-allocation failures that fall back to the
 * CPU with the same hits. Skips (77) without a GPU.
 *
 * Tolerances: both sides sum 384 fp32 products of unit vectors in different
 * orders (cuBLAS vs OpenBLAS), an error of a few 1e-7; 1e-4 is far above
 * that and far below the gap between distinct random scores that matters.
 * Two ids may swap ranks only when their scores are within 1e-5 (a tie at
 * fp32 resolution). */
#include "cuda_test.h"
#include "store/store.h"
#include "store/store_fixture.h"

#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#define N 100000
#define DIM 384
#define NQ 50
#define K 10
#define NEW 1000
#define BATCH 10000
#define FP 0x5eed5eed5eed5eedull

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static void rand_unit(float *v, size_t n) {
    fx_rand_unit(&rng, v, n, DIM);
}

static struct embd_store_params params(bool writable, bool gpu) {
    struct embd_store_params p = {.dim = DIM,
                                  .fingerprint = FP,
                                  .normalized = true,
                                  .create = writable,
                                  .writable = writable,
                                  .gpu = gpu,
                                  .gpu_index = 0};
    return p;
}

/* A copy of one search's hits (the store's pointers die at its next call). */
struct hits {
    size_t n;
    char id[K][32];
    float score[K];
};

static void search(embd_store *s, const float *q, size_t k, struct hits *out) {
    struct embd_store_hit h[K];
    memset(out, 0, sizeof *out);
    enum embd_status st = embd_store_search(s, q, k, h, &out->n);
    CHECK_MSG(st == EMBD_OK, "search: %s", embd_last_error());
    for (size_t r = 0; r < out->n; r++) {
        snprintf(out->id[r], sizeof out->id[r], "%.*s", (int)h[r].id_len, h[r].id);
        out->score[r] = h[r].score;
    }
}

/* Whether GPU hits g match CPU hits c (see the header comment). */
static bool same_hits(const struct hits *g, const struct hits *c, const char *what, int qi) {
    if (g->n != c->n) {
        fprintf(stderr, "%s, query %d: %zu hits on the GPU, %zu on the CPU\n", what, qi, g->n,
                c->n);
        return false;
    }
    for (size_t r = 0; r < g->n; r++) {
        const double diff = fabs((double)g->score[r] - c->score[r]);
        const bool same_id = !strcmp(g->id[r], c->id[r]);
        if (!(diff <= 1e-4) || (!same_id && !(diff <= 1e-5))) {
            fprintf(stderr, "%s, query %d, rank %zu: GPU %s %.7f, CPU %s %.7f\n", what, qi, r + 1,
                    g->id[r], (double)g->score[r], c->id[r], (double)c->score[r]);
            return false;
        }
    }
    return true;
}

/* Every query on the GPU store against the CPU store opened now on dir. */
static void compare_all(embd_store *gs, const char *dir, const float *qs, int nq,
                        const char *what) {
    struct embd_store_params cp = params(false, false);
    embd_store *cs = NULL;
    enum embd_status st = embd_store_open(dir, &cp, &cs, NULL);
    CHECK_MSG(st == EMBD_OK, "%s: open for the CPU: %s", what, embd_last_error());
    if (st != EMBD_OK) return;
    int bad = 0;
    for (int i = 0; i < nq; i++) {
        struct hits g, c;
        search(gs, qs + (size_t)i * DIM, K, &g);
        search(cs, qs + (size_t)i * DIM, K, &c);
        if (!same_hits(&g, &c, what, i)) bad++;
    }
    CHECK_MSG(bad == 0, "%s: %d of %d queries differ", what, bad, nq);
    const char *why = NULL;
    const char *dev = embd_store_search_device(gs, &why);
    CHECK_MSG(!strcmp(dev, "cuda"), "%s: scored on %s (%s)", what, dev, why);
    embd_store_close(cs);
}

/* The plugin's scoring directly, nq = 1 (Sgemv) and nq = 7 (Sgemm), against
 * double-precision dot products. */
static void test_searchops(const struct embd_cuda_plugin *p, const float *vecs, size_t n,
                           const float *qs) {
    const struct embd_cuda_searchops *so = p->search;
    char why[512];
    struct embd_cuda_index *ix = NULL;
    CHECK_MSG(so->create(&ix, 0, DIM, n / 2, why, sizeof why) == 0, "create: %s", why);
    if (!ix) return;
    /* two appends, the second growing the device matrix */
    CHECK_MSG(so->append(ix, vecs, n / 2, why, sizeof why) == 0, "append: %s", why);
    CHECK_MSG(so->append(ix, vecs + n / 2 * DIM, n - n / 2, why, sizeof why) == 0, "append: %s",
              why);
    CHECK_EQ_INT(so->rows(ix), n);
    for (size_t nq = 1; nq <= 7; nq += 6) {
        float *sc = guarded_alloc(nq * n);
        CHECK_MSG(so->score(ix, sc, qs, nq, why, sizeof why) == 0, "score nq %zu: %s", nq, why);
        double worst = 0;
        for (size_t j = 0; j < nq; j++)
            for (size_t i = 0; i < n; i++) {
                double want = 0;
                for (int d = 0; d < DIM; d++)
                    want += (double)qs[j * DIM + (size_t)d] * vecs[i * DIM + (size_t)d];
                double e = fabs(sc[j * n + i] - want);
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
            }
        CHECK_MSG(worst <= 1e-5, "score nq %zu: worst error %g", nq, worst);
        CHECK_MSG(guards_ok(sc, nq * n), "score nq %zu wrote outside its output", nq);
        guarded_free(sc);
    }
    so->free(ix);
}

int main(void) {
    const struct embd_cuda_plugin *p = cuda_test_plugin(EMBD_DTYPE_FP32);
    CHECK(p->search != NULL);
    if (!p->search) return test_summary("test_cuda_search");

    char root[] = "/tmp/embd-cuda-search-XXXXXX";
    if (!mkdtemp(root)) TEST_SKIP("cannot make a temporary directory");
    char dir[128], small[128];
    snprintf(dir, sizeof dir, "%s/big", root);
    snprintf(small, sizeof small, "%s/small", root);

    float *vecs = malloc((size_t)N * DIM * sizeof(float)); /* (N, DIM) */
    float *qs = malloc((size_t)NQ * DIM * sizeof(float));  /* (NQ, DIM) */
    float *extra = malloc((size_t)NEW * DIM * sizeof(float));
    if (!vecs || !qs || !extra) TEST_SKIP("out of host memory");
    rand_unit(vecs, N);
    rand_unit(qs, NQ);
    rand_unit(extra, NEW);

    test_searchops(p, vecs, 3000, qs);

    /* The store, written and searched by one GPU-scored handle. */
    struct embd_store_params wp = params(true, true);
    embd_store *gs = NULL;
    enum embd_status st = embd_store_open(dir, &wp, &gs, NULL);
    CHECK_MSG(st == EMBD_OK, "open: %s", embd_last_error());
    if (st != EMBD_OK) return test_summary("test_cuda_search");
    for (size_t i = 0; i < N && st == EMBD_OK; i += BATCH)
        st = fx_add_n(gs, "v", i, BATCH, vecs + i * DIM);
    CHECK_MSG(st == EMBD_OK, "add: %s", embd_last_error());
    CHECK(embd_store_flush(gs) == EMBD_OK);
    compare_all(gs, dir, qs, NQ, "100000 vectors");

    /* Appended after the upload: NEW rows, the first NQ of them equal to the
     * queries, so each query's best hit is its own new row (score 1). */
    memcpy(extra, qs, (size_t)NQ * DIM * sizeof(float));
    CHECK(fx_add_n(gs, "new", 0, NEW, extra) == EMBD_OK);
    CHECK(embd_store_flush(gs) == EMBD_OK);
    int found = 0;
    for (int i = 0; i < NQ; i++) {
        struct hits g;
        char want[32];
        snprintf(want, sizeof want, "new%d", i);
        search(gs, qs + (size_t)i * DIM, K, &g);
        found += g.n == K && !strcmp(g.id[0], want) && fabsf(g.score[0] - 1.0f) < 1e-4f;
    }
    CHECK_MSG(found == NQ, "appended rows found first for %d of %d queries", found, NQ);
    compare_all(gs, dir, qs, NQ, "after appending");

    /* Re-indexing v17 with a new vector r: r finds v17 (score 1); the old
     * vector no longer does (its slot is dead; r . old is near 0). */
    float r[DIM];
    rand_unit(r, 1);
    CHECK(fx_add_n(gs, "v", 17, 1, r) == EMBD_OK);
    CHECK(embd_store_flush(gs) == EMBD_OK);
    struct hits g;
    search(gs, r, K, &g);
    CHECK_MSG(g.n == K && !strcmp(g.id[0], "v17") && fabsf(g.score[0] - 1.0f) < 1e-4f,
              "the replaced id's new vector: best hit %s %.6f", g.id[0], (double)g.score[0]);
    search(gs, vecs + 17 * DIM, K, &g);
    bool old_seen = false;
    for (size_t i = 0; i < g.n; i++)
        old_seen |= !strcmp(g.id[i], "v17") && g.score[i] > 0.5f;
    CHECK_MSG(!old_seen, "the replaced vector of v17 is still found");
    CHECK_EQ_INT(embd_store_count(gs), N + NEW);
    float qr[2 * DIM];
    memcpy(qr, r, sizeof r);
    memcpy(qr + DIM, vecs + 17 * DIM, sizeof r);
    compare_all(gs, dir, qr, 2, "after replacing");

    /* Injected device-allocation failures: the first (the vectors) or the
     * second (the query buffer); the store falls back to the CPU, says why,
     * and gives exactly the CPU's hits. */
    for (long nth = 0; nth < 2; nth++) {
        struct embd_store_params fp = params(false, true), cp = params(false, false);
        embd_store *fs = NULL, *cs = NULL;
        CHECK(embd_store_open(dir, &fp, &fs, NULL) == EMBD_OK);
        CHECK(embd_store_open(dir, &cp, &cs, NULL) == EMBD_OK);
        if (!fs || !cs) break;
        p->search->fail_alloc_after(nth);
        int same = 0;
        for (int i = 0; i < NQ; i++) {
            struct hits a, b;
            search(fs, qs + (size_t)i * DIM, K, &a);
            search(cs, qs + (size_t)i * DIM, K, &b);
            same += a.n == b.n && !memcmp(a.id, b.id, sizeof a.id) &&
                    !memcmp(a.score, b.score, sizeof a.score);
        }
        p->search->fail_alloc_after(-1);
        const char *why = NULL;
        const char *dev = embd_store_search_device(fs, &why);
        CHECK_MSG(!strcmp(dev, "cpu") && strstr(why, "out of GPU memory"),
                  "failed allocation %ld: device %s, why \"%s\"", nth, dev, why);
        CHECK_MSG(same == NQ, "failed allocation %ld: %d of %d queries equal the CPU's", nth, same,
                  NQ);
        embd_store_close(fs);
        embd_store_close(cs);
    }
    embd_store_close(gs);

    /* k > n and k = 0 on a small GPU-scored store. */
    embd_store *ss = NULL;
    CHECK(embd_store_open(small, &wp, &ss, NULL) == EMBD_OK);
    if (ss) {
        CHECK(fx_add_n(ss, "s", 0, 7, vecs) == EMBD_OK);
        struct embd_store_hit h[K];
        size_t nh = 99;
        CHECK(embd_store_search(ss, qs, K, h, &nh) == EMBD_OK);
        CHECK_EQ_INT(nh, 7);
        for (size_t i = 1; i < nh; i++)
            CHECK(h[i - 1].score >= h[i].score);
        nh = 99;
        CHECK(embd_store_search(ss, qs, 0, h, &nh) == EMBD_OK);
        CHECK_EQ_INT(nh, 0);
        CHECK(!strcmp(embd_store_search_device(ss, NULL), "cuda"));
        embd_store_close(ss);
    }

    free(vecs);
    free(qs);
    free(extra);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return test_summary("test_cuda_search");
}
