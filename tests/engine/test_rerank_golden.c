/* test_rerank_golden [NAME] — cross-encoder reranking against
 * sentence-transformers' CrossEncoder (tests/fixtures/golden/NAME, default
 * ce-minilm-l6-random: the ms-marco-MiniLM-L-6-v2 architecture with seeded
 * random weights, made by scripts/make-random-model ce-minilm-l6 --seed 0
 * into $EMBD_TEST_MODELS/ce-minilm-l6-random; ce-mminilm-l12-random: an
 * XLM-RoBERTa cross-encoder; skipped without the model). Pairs marked
 * "st_ids_differ" (transformers 5 tokenizes them otherwise than
 * tokenizer.json; see scripts/gen-golden) hold tokenizers' ids, which are
 * checked, and no golden score, which is not:
 * - every pair's ids and token type ids equal what CrossEncoder fed the model
 *   (the pair template and longest_first truncation at 512);
 * - scores (sigmoid) and raw logits within 1e-4 of CrossEncoder's, and every
 *   pair of scores that CrossEncoder tells apart by more than 2e-4 in the
 *   same order;
 * - a pair alone scores as in the batch (ctest runs it again with each
 *   EMBD_CPU_ISA kernel set);
 * - through the scheduler from several threads at once (different queries
 *   sharing rounds), the same scores;
 * - truncate off: EMBD_ERR_TOO_LONG naming the first pair over the limit;
 *   embedding with a cross-encoder, and reranking with an embedder, refused. */
#include "embd.h"
#include "model/model.h"
#include "test.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAXPAIRS = 1024 };

struct pair {
    char *query, *doc;
    size_t qlen, dlen;
    int32_t *ids, *types;
    int n_ids;
    bool no_gold; /* "st_ids_differ": the scores are not golden */
};

static struct pair pairs[MAXPAIRS];
static int n_pairs, n_sched;

static char *dup_str(const cJSON *s, size_t *len) {
    if (!cJSON_IsString(s)) return NULL;
    *len = strlen(s->valuestring);
    return strdup(s->valuestring);
}

static int32_t *int_array(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) v[i++] = (int32_t)x->valueint;
    return v;
}

/* Reads pairs.jsonl and ids.jsonl of the fixture; returns the count or -1. */
static int read_fixture(const char *dir) {
    char path[4096 + 32], *pb = NULL, *ib = NULL;
    size_t pl, il;
    snprintf(path, sizeof path, "%s/pairs.jsonl", dir);
    if (embd_read_file(path, 1 << 26, &pb, &pl) != EMBD_OK) return -1;
    snprintf(path, sizeof path, "%s/ids.jsonl", dir);
    if (embd_read_file(path, 1 << 26, &ib, &il) != EMBD_OK) return -1;
    char *p = pb, *q = ib;
    int n = 0;
    while (*p && *q && n < MAXPAIRS) {
        char *pn = strchr(p, '\n'), *qn = strchr(q, '\n');
        if (pn) *pn = '\0';
        if (qn) *qn = '\0';
        cJSON *a = cJSON_Parse(p), *b = cJSON_Parse(q);
        struct pair *x = &pairs[n];
        x->query = dup_str(cJSON_GetObjectItem(a, "query"), &x->qlen);
        x->doc = dup_str(cJSON_GetObjectItem(a, "doc"), &x->dlen);
        int nt;
        x->ids = int_array(cJSON_GetObjectItem(b, "ids"), &x->n_ids);
        x->types = int_array(cJSON_GetObjectItem(b, "type_ids"), &nt);
        x->no_gold = cJSON_IsTrue(cJSON_GetObjectItem(b, "st_ids_differ"));
        CHECK_MSG(x->query && x->doc && nt == x->n_ids, "fixture line %d is malformed", n);
        cJSON_Delete(a);
        cJSON_Delete(b);
        n++;
        if (!pn || !qn) break;
        p = pn + 1;
        q = qn + 1;
    }
    embd_free(pb);
    embd_free(ib);
    return n;
}

/* Reads a float32 .npy of shape (n,) into a new array. */
static float *read_npy1(const char *path, int *n) {
    char *buf = NULL;
    size_t len = 0;
    if (embd_read_file(path, 1 << 26, &buf, &len) != EMBD_OK) return NULL;
    float *out = NULL;
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0 || buf[6] != 1) goto done;
    size_t hl = (size_t)(unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8;
    char *sh = strstr(buf + 10, "'shape': (");
    if (!strstr(buf + 10, "'<f4'") || !sh || sscanf(sh, "'shape': (%d,)", n) != 1) goto done;
    if (10 + hl + (size_t)*n * 4 > len) goto done;
    out = malloc((size_t)*n * 4);
    memcpy(out, buf + 10 + hl, (size_t)*n * 4);
done:
    embd_free(buf);
    return out;
}

static void check_scores(const char *what, const float *got, const float *gold, int n) {
    double worst = 0;
    int bad_order = 0, scored = 0;
    for (int i = 0; i < n; i++) {
        if (pairs[i].no_gold) continue;
        double d = fabs((double)got[i] - gold[i]);
        if (d > worst) worst = d;
        scored++;
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (!pairs[i].no_gold && !pairs[j].no_gold && fabs((double)gold[i] - gold[j]) > 2e-4 &&
                ((gold[i] > gold[j]) != (got[i] > got[j])))
                bad_order++;
    CHECK_MSG(scored >= n * 9 / 10, "%s: only %d of %d pairs have golden scores", what, scored, n);
    CHECK_MSG(worst <= 1e-4, "%s: worst |score - CrossEncoder| %.3g > 1e-4", what, worst);
    CHECK_MSG(bad_order == 0, "%s: %d pairs ranked otherwise than by CrossEncoder", what,
              bad_order);
    printf("%s: %d pairs (%d without a golden score), worst |diff| %.3g, order identical\n", what,
           n, n - scored, worst);
}

struct thread_arg {
    embd_sched *sched;
    int first, step;
    float *out; /* (n_pairs) */
    enum embd_status st;
};

/* Reranks pairs first, first + step, ... one request each (their queries differ). */
static void *rerank_thread(void *p) {
    struct thread_arg *a = p;
    for (int i = a->first; i < n_sched && a->st == EMBD_OK; i += a->step) {
        const char *doc = pairs[i].doc;
        a->st = embd_sched_rerank(a->sched, pairs[i].query, pairs[i].qlen, &doc, &pairs[i].dlen, 1,
                                  a->out + i, NULL, NULL, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *models = getenv("EMBD_TEST_MODELS"), *src = getenv("EMBD_SRC");
    const char *name = argc > 1 ? argv[1] : "ce-minilm-l6-random";
    char dir[2048], fix[2048], path[4096 + 32];
    struct stat sb;
    if (!models || !src) {
        printf("SKIP: EMBD_TEST_MODELS or EMBD_SRC not set\n");
        return 77;
    }
    snprintf(dir, sizeof dir, "%s/%s", models, name);
    snprintf(fix, sizeof fix, "%s/tests/fixtures/golden/%s", src, name);
    if (stat(dir, &sb) != 0 || stat(fix, &sb) != 0) {
        printf("SKIP: %s or %s missing (scripts/make-random-model)\n", dir, fix);
        return 77;
    }
    n_pairs = read_fixture(fix);
    CHECK_MSG(n_pairs > 0, "cannot read %s", fix);
    /* EMBD_TEST_SUBSAMPLE=k (the sanitizer builds): every k-th pair only,
     * the same code paths at a fraction of the time */
    const int every = getenv("EMBD_TEST_SUBSAMPLE") ? atoi(getenv("EMBD_TEST_SUBSAMPLE")) : 1;
    int ns = 0, nl = 0;
    snprintf(path, sizeof path, "%s/scores.npy", fix);
    float *gold = read_npy1(path, &ns);
    snprintf(path, sizeof path, "%s/logits.npy", fix);
    float *gold_raw = read_npy1(path, &nl);
    CHECK_MSG(gold && gold_raw && ns == n_pairs && nl == n_pairs, "scores/logits: %d, %d of %d", ns,
              nl, n_pairs);
    if (!gold || !gold_raw || ns != n_pairs || nl != n_pairs) return test_summary("rerank");
    if (every > 1) {
        int kept = 0;
        for (int i = 0; i < n_pairs; i++) {
            if (i % every) {
                free(pairs[i].query);
                free(pairs[i].doc);
                free(pairs[i].ids);
                free(pairs[i].types);
                continue;
            }
            pairs[kept] = pairs[i];
            gold[kept] = gold[i];
            gold_raw[kept++] = gold_raw[i];
        }
        printf("every %d-th pair: %d of %d\n", every, kept, n_pairs);
        n_pairs = kept;
    }

    embd_model *m = NULL;
    CHECK_MSG(embd_model_load(dir, embd_model_default_params(), &m) == EMBD_OK, "load: %s",
              embd_last_error());
    if (!m) return test_summary("rerank");
    CHECK(embd_model_is_reranker(m));

    /* ids and type ids */
    int id_bad = 0, long_pairs = 0;
    int32_t ids[1024], types[1024];
    for (int i = 0; i < n_pairs; i++) {
        size_t n = 0;
        bool cut = false;
        enum embd_status st = embd_tokenizer_encode_pair(
            m->tok, pairs[i].query, pairs[i].qlen, pairs[i].doc, pairs[i].dlen,
            embd_model_max_tokens(m), true, ids, types, 1024, &n, &cut);
        long_pairs += cut;
        if (st != EMBD_OK || (int)n != pairs[i].n_ids ||
            memcmp(ids, pairs[i].ids, n * sizeof *ids) != 0 ||
            memcmp(types, pairs[i].types, n * sizeof *types) != 0) {
            if (id_bad++ < 5)
                printf("pair %d: %zu ids (status %d), CrossEncoder %d\n", i, n, (int)st,
                       pairs[i].n_ids);
        }
    }
    CHECK_MSG(id_bad == 0, "%d of %d pairs tokenized otherwise than by CrossEncoder", id_bad,
              n_pairs);
    CHECK_MSG(long_pairs >= 5, "only %d pairs were cut: the fixture no longer tests truncation",
              long_pairs);
    printf("pair ids: %d pairs identical (%d cut by longest_first)\n", n_pairs, long_pairs);

    const char **qs = malloc((size_t)n_pairs * sizeof *qs),
               **ds = malloc((size_t)n_pairs * sizeof *ds);
    size_t *ql = malloc((size_t)n_pairs * sizeof *ql), *dl = malloc((size_t)n_pairs * sizeof *dl);
    for (int i = 0; i < n_pairs; i++) {
        qs[i] = pairs[i].query;
        ds[i] = pairs[i].doc;
        ql[i] = pairs[i].qlen;
        dl[i] = pairs[i].dlen;
    }
    float *got = malloc((size_t)n_pairs * sizeof *got),
          *alt = malloc((size_t)n_pairs * sizeof *alt);

    struct embd_ctx_params cp = embd_ctx_default_params();
    cp.device = EMBD_DEVICE_CPU;
    cp.n_threads = 2;
    embd_ctx *ctx = NULL;
    enum embd_status cst = embd_ctx_new(m, cp, &ctx);
    if (cst != EMBD_OK && getenv("EMBD_CPU_ISA")) {
        printf("SKIP: EMBD_CPU_ISA=%s does not run here: %s\n", getenv("EMBD_CPU_ISA"),
               embd_last_error());
        return 77;
    }
    CHECK_MSG(cst == EMBD_OK, "ctx: %s", embd_last_error());
    if (!ctx) return test_summary("rerank");
    struct embd_embed_info info = {0};
    CHECK_MSG(embd_rerank(ctx, qs, ql, ds, dl, (size_t)n_pairs, got, NULL, &info) == EMBD_OK,
              "rerank: %s", embd_last_error());
    check_scores("scores (sigmoid)", got, gold, n_pairs);
    CHECK(info.total_tokens > 0);

    /* With a kernel set forced (the ctest variants), the scores are what is
     * under test: the rest runs once, on the default kernels. */
    const bool all_checks = getenv("EMBD_CPU_ISA") == NULL;
    struct embd_rerank_opts raw = embd_rerank_default_opts();
    raw.raw_scores = true;
    CHECK(!all_checks ||
          embd_rerank(ctx, qs, ql, ds, dl, (size_t)n_pairs, alt, &raw, NULL) == EMBD_OK);
    if (all_checks) check_scores("raw logits", alt, gold_raw, n_pairs);
    if (!all_checks) goto out;

    /* a pair alone scores as in the batch */
    double alone = 0;
    for (int i = 0; i < n_pairs; i += 7) {
        float one;
        CHECK(embd_rerank(ctx, qs + i, ql + i, ds + i, dl + i, 1, &one, NULL, NULL) == EMBD_OK);
        if (fabs(one - got[i]) > alone) alone = fabs(one - got[i]);
    }
    CHECK_MSG(alone <= 1e-6, "a pair alone differs from the batch by %.3g", alone);

    /* truncate off: the first pair over the limit is named */
    struct embd_rerank_opts strict = embd_rerank_default_opts();
    strict.truncate = false;
    int first_long = -1;
    for (int i = 0; i < n_pairs && first_long < 0; i++)
        if (pairs[i].n_ids == embd_model_max_tokens(m)) {
            size_t full = 0;
            enum embd_status st = embd_tokenizer_encode_pair(
                m->tok, qs[i], ql[i], ds[i], dl[i], 1 << 20, true, NULL, NULL, 0, &full, NULL);
            if (st == EMBD_ERR_BUFFER_TOO_SMALL && full > (size_t)embd_model_max_tokens(m))
                first_long = i;
        }
    CHECK(first_long >= 0);
    memset(&info, 0, sizeof info);
    CHECK(embd_rerank(ctx, qs, ql, ds, dl, (size_t)n_pairs, alt, &strict, &info) ==
          EMBD_ERR_TOO_LONG);
    CHECK_MSG((int)info.bad_input == first_long && info.bad_tokens > 512,
              "too long: pair %zu (%zu tokens), expected %d", info.bad_input, info.bad_tokens,
              first_long);

    /* a cross-encoder does not embed */
    float vec[384];
    const char *t = "a text";
    CHECK(embd_embed(ctx, &t, NULL, 1, vec) == EMBD_ERR_UNSUPPORTED);
    CHECK(strstr(embd_last_error(), "cross-encoder") != NULL);

    /* the scheduler: 3 threads, one pair per request, queries differing (the
     * first 60 pairs) */
    n_sched = 60 < n_pairs ? 60 : n_pairs;
    embd_sched *sched = NULL;
    CHECK(embd_sched_new(ctx, embd_sched_default_params(), &sched) == EMBD_OK);
    pthread_t th[3];
    struct thread_arg ta[3];
    for (int k = 0; k < 3; k++) {
        ta[k] = (struct thread_arg){sched, k, 3, alt, EMBD_OK};
        pthread_create(&th[k], NULL, rerank_thread, &ta[k]);
    }
    for (int k = 0; k < 3; k++) {
        pthread_join(th[k], NULL);
        CHECK_MSG(ta[k].st == EMBD_OK, "thread %d: %s", k, embd_status_str(ta[k].st));
    }
    check_scores("scheduler, 3 threads", alt, gold, n_sched);
    embd_sched_free(sched);

    /* an embedder does not rerank */
    snprintf(path, sizeof path, "%s/all-MiniLM-L6-v2", models);
    embd_model *e = NULL;
    if (stat(path, &sb) == 0 && embd_model_load(path, embd_model_default_params(), &e) == EMBD_OK) {
        embd_ctx *ec = NULL;
        CHECK(embd_ctx_new(e, cp, &ec) == EMBD_OK);
        CHECK(embd_rerank(ec, qs, ql, ds, dl, 1, alt, NULL, NULL) == EMBD_ERR_UNSUPPORTED);
        embd_ctx_free(ec);
        embd_model_free(e);
    }

out:
    embd_ctx_free(ctx);
    for (int i = 0; i < n_pairs; i++) {
        free(pairs[i].query);
        free(pairs[i].doc);
        free(pairs[i].ids);
        free(pairs[i].types);
    }
    free(qs);
    free(ds);
    free(ql);
    free(dl);
    free(got);
    free(alt);
    free(gold);
    free(gold_raw);
    embd_model_free(m);
    return test_summary("rerank");
}
