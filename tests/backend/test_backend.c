/* test_backend.c — the CPU backends on random in-memory models: the fast
 * backend ("cpu") against the reference ("ref"), batch invariance, guard
 * bytes, batch checking, allocation-fault injection, and known answers for
 * the reference's own ops. */
#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/cpu_math.h"
#include "backend/cpu/isa.h"
#include "backend/cpu/ref.h"
#include "model/model.h"
#include "rand_model.h"
#include "test.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 16
static const uint32_t CANARY = 0x7FC0DEADu; /* a NaN pattern no backend writes */

static int all_finite(const float *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}

/* an output buffer (n, H) followed by GUARD canary floats */
static float *out_alloc(int n, int H) {
    float *o = malloc(((size_t)n * H + GUARD) * sizeof(float));
    if (!o) return NULL;
    for (size_t i = 0; i < (size_t)n * H; i++)
        o[i] = NAN;
    for (int i = 0; i < GUARD; i++)
        memcpy(&o[(size_t)n * H + i], &CANARY, sizeof(CANARY));
    return o;
}

static int guard_intact(const float *o, int n, int H) {
    for (int i = 0; i < GUARD; i++)
        if (memcmp(&o[(size_t)n * H + i], &CANARY, sizeof(CANARY)) != 0) return 0;
    return 1;
}

/* A packed batch with owned arrays. */
typedef struct {
    embd_batch b;
    int32_t *ids, *starts;
} test_batch;

static void batch_make(test_batch *tb, const int *lens, int n, int V) {
    tb->starts = malloc((size_t)(n + 1) * sizeof(int32_t));
    tb->starts[0] = 0;
    for (int s = 0; s < n; s++)
        tb->starts[s + 1] = tb->starts[s] + lens[s];
    tb->ids = malloc((size_t)tb->starts[n] * sizeof(int32_t));
    for (int t = 0; t < tb->starts[n]; t++)
        tb->ids[t] = rm_int(0, V - 1);
    tb->b.n_seq = n;
    tb->b.n_tok = tb->starts[n];
    tb->b.ids = tb->ids;
    tb->b.seq_start = tb->starts;
    tb->b.type_ids = NULL;
}

static void batch_free(test_batch *tb) {
    free(tb->ids);
    free(tb->starts);
}

/* Runs backend `ops` on the batch; returns (n, H) floats (malloc'd) or NULL,
 * checking the guard bytes on the way. */
static float *run(const struct embd_backend_ops *ops, const struct embd_model *m,
                  const embd_batch *b, bool normalize, int n_threads, int max_batch_tokens) {
    embd_backend_params p = {
        .n_threads = n_threads, .dtype = EMBD_DTYPE_FP32, .max_batch_tokens = max_batch_tokens};
    embd_backend *be = NULL;
    enum embd_status st = ops->init(&be, m, &p);
    CHECK_MSG(st == EMBD_OK, "%s init: %s", ops->name, embd_last_error());
    if (st != EMBD_OK) return NULL;
    float *out = out_alloc(b->n_seq, m->hp.H);
    st = ops->embed(be, out, b, normalize);
    CHECK_MSG(st == EMBD_OK, "%s embed: %s", ops->name, embd_last_error());
    CHECK_MSG(guard_intact(out, b->n_seq, m->hp.H), "%s wrote past the output", ops->name);
    ops->free(be);
    if (st != EMBD_OK) {
        free(out);
        return NULL;
    }
    return out;
}

/* (a) cpu against ref, and (b) each sequence alone against its place in the
 * batch, for one model and one batch.
 *
 * Tolerances: both compute in fp32 but sum in different orders (BLAS blocks
 * and FMA vs a plain left-to-right loop) and the fast backend uses polynomial
 * exp/erf (errors ~1e-7); through a few layers these differences grow to about
 * 1e-6 relative, so cosine >= 0.99999 and |diff| <= 1e-4 * (1 + |ref|) leave
 * ample room while any real bug (a wrong position, a missed bias, attention
 * leaking across sequences) moves the result by far more. */
static void check_pair(const char *what, const struct embd_model *m, const test_batch *tb,
                       bool normalize, int n_threads) {
    const int H = m->hp.H, n = tb->b.n_seq;
    float *ref = run(&embd_backend_ref_ops, m, &tb->b, normalize, 1, tb->b.n_tok);
    /* a small max_batch_tokens so that the fast backend must grow its scratch */
    float *cpu = run(&embd_backend_cpu_ops, m, &tb->b, normalize, n_threads, 3);
    if (!ref || !cpu) goto done;
    CHECK_MSG(all_finite(ref, (size_t)n * H), "%s: ref output not finite", what);
    CHECK_MSG(all_finite(cpu, (size_t)n * H), "%s: cpu output not finite", what);
    double worst_cos = 1.0, worst_diff = 0.0;
    int bad = 0;
    for (int s = 0; s < n; s++) {
        double c = test_cosine(cpu + (size_t)s * H, ref + (size_t)s * H, H);
        if (!(c >= 0.99999)) bad++;
        if (!(c >= worst_cos)) worst_cos = c;
        for (int i = 0; i < H; i++) {
            float r = ref[(size_t)s * H + i], f = cpu[(size_t)s * H + i];
            double d = fabs((double)r - f) / (1.0 + fabs(r));
            if (!(d <= worst_diff)) worst_diff = d;
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of %d sequences with cosine < 0.99999 (worst %.9f)", what, bad, n,
              worst_cos);
    CHECK_MSG(worst_diff <= 1e-4, "%s: max relative diff %.3g", what, worst_diff);
    if (normalize && m->hp.normalize) {
        for (int s = 0; s < n; s++) {
            double nn = test_cosine(cpu + (size_t)s * H, cpu + (size_t)s * H, H); /* finite check */
            double norm = 0;
            for (int i = 0; i < H; i++)
                norm += (double)cpu[(size_t)s * H + i] * cpu[(size_t)s * H + i];
            CHECK_MSG(fabs(sqrt(norm) - 1.0) < 1e-5 && nn == nn, "%s: seq %d norm %.7f", what, s,
                      sqrt(norm));
        }
    }
    printf("%-34s n=%-3d T=%-5d worst cosine %.9f, max rel diff %.2g\n", what, n, tb->b.n_tok,
           worst_cos, worst_diff);

    /* (b): a few sequences alone */
    for (int k = 0; k < 3 && k < n; k++) {
        int s = k == 0 ? 0 : k == 1 ? n - 1 : n / 2;
        int len = tb->starts[s + 1] - tb->starts[s];
        int32_t st2[2] = {0, len};
        embd_batch one = {
            .n_seq = 1, .n_tok = len, .ids = tb->ids + tb->starts[s], .seq_start = st2};
        float *alone = run(&embd_backend_cpu_ops, m, &one, normalize, n_threads, len);
        if (!alone) continue;
        double c = test_cosine(alone, cpu + (size_t)s * H, H);
        CHECK_MSG(c >= 0.999999, "%s: seq %d alone vs in batch: cosine %.9f", what, s, c);
        if (m->hp.H <= 64) { /* the reference too, where it is cheap */
            float *ralone = run(&embd_backend_ref_ops, m, &one, normalize, 1, len);
            if (ralone) {
                c = test_cosine(ralone, ref + (size_t)s * H, H);
                CHECK_MSG(c >= 0.999999, "%s: ref seq %d alone vs in batch: cosine %.9f", what, s,
                          c);
            }
            free(ralone);
        }
        free(alone);
    }
done:
    free(ref);
    free(cpu);
}

static void test_cpu_vs_ref_small(void) {
    const enum embd_pooling pools[2] = {EMBD_POOL_CLS, EMBD_POOL_MEAN};
    for (int combo = 0; combo < 8; combo++) {
        const int pi = combo & 1, norm = (combo >> 1) & 1, bias = combo >> 2;
        {
            rand_model rm;
            /* 2 heads of 16 (the packed attention where AVX2 runs) or 4 of 8
             * (the loops for head sizes that are not a multiple of 16); with
             * and without MPNet's relative attention bias */
            const int NH = norm ? 2 : 4;
            CHECK(rand_model_make(&rm, 100, 32, NH, 64, 2, 64, pools[pi], norm,
                                  1000 + pi * 2 + norm) == 0);
            if (bias) CHECK(rand_model_add_bias(&rm) == 0);
            for (int trial = 0; trial < 3; trial++) {
                int lens[40], n = rm_int(1, 40);
                for (int s = 0; s < n; s++)
                    lens[s] = rm_int(1, 64);
                if (trial == 0) lens[0] = 64, lens[n - 1] = 1;
                test_batch tb;
                batch_make(&tb, lens, n, 100);
                char what[96];
                snprintf(what, sizeof what, "H32/%d %s norm=%d%s trial %d", NH, pi ? "mean" : "cls",
                         norm, bias ? " rel-bias" : "", trial);
                check_pair(what, &rm.model, &tb, true, 1 + trial % 2);
                /* the model normalises but the caller says no */
                if (norm && trial == 0) {
                    snprintf(what, sizeof what, "H32 %s normalize=false", pi ? "mean" : "cls");
                    check_pair(what, &rm.model, &tb, false, 2);
                }
                batch_free(&tb);
            }
            rand_model_free(&rm);
        }
    }
}

/* The RoBERTa family's positions (XLM-R, MPNet): a token equal to
 * pad_token_id (a literal "<pad>" in a text) reads the padding row, the one
 * before position 0, and does not advance the count, as Hugging Face numbers
 * them; BERT counts every token. The fast and reference backends agree on
 * batches full of such tokens, reading the padding row inside the table (a
 * sequence of one pad, pads at the ends and in a row). The vectors against
 * sentence-transformers: e2e_fidelity (texts with "<pad>"). */
static void test_pad_positions(void) {
    embd_hparams hp;
    memset(&hp, 0, sizeof hp);
    const int32_t ids[7] = {0, 1, 1, 5, 1, 7, 2};
    int32_t pos[7];
    embd_positions(&hp, ids, 7, pos);
    for (int t = 0; t < 7; t++)
        CHECK(pos[t] == t);
    hp.pos_offset = 2; /* pad_token_id 1 */
    embd_positions(&hp, ids, 7, pos);
    static const int32_t want[7] = {0, -1, -1, 1, -1, 2, 3};
    for (int t = 0; t < 7; t++)
        CHECK_MSG(pos[t] == want[t], "token %d: position %d, want %d", t, pos[t], want[t]);

    const int H = 32, P = 64;
    rand_model rm;
    CHECK(rand_model_make(&rm, 100, H, 2, 64, 2, P, EMBD_POOL_MEAN, true, 77) == 0);
    float *table = malloc((size_t)(P + 2) * H * sizeof(float));
    CHECK(table != NULL);
    if (!table) {
        rand_model_free(&rm);
        return;
    }
    for (int i = 0; i < (P + 2) * H; i++)
        table[i] = 0.5f * rm_uniform();
    rm.model.w.pos_emb = table + 2 * H;
    rm.model.hp.pos_offset = 2;
    const int lens[6] = {1, 2, 5, 17, 64, 33};
    test_batch tb;
    batch_make(&tb, lens, 6, 100);
    for (int t = 0; t < tb.b.n_tok; t++)
        if (t % 3 == 0 || t >= tb.b.n_tok - 3) tb.ids[t] = 1;
    check_pair("pad_token_id positions", &rm.model, &tb, true, 2);
    batch_free(&tb);
    free(table);
    rand_model_free(&rm);
}

/* An all-MiniLM-like shape (two layers instead of six, to keep the reference
 * quick), with a 512-token sequence next to short ones. */
static void test_cpu_vs_ref_minilm(void) {
    const enum embd_pooling pools[2] = {EMBD_POOL_MEAN, EMBD_POOL_CLS};
    for (int pi = 0; pi < 3; pi++) {
        rand_model rm;
        CHECK(rand_model_make(&rm, 1000, 384, 12, 1536, 2, 512, pools[pi & 1], pi != 1, 77 + pi) ==
              0);
        if (pi == 2) CHECK(rand_model_add_bias(&rm) == 0); /* as MPNet */
        int lens[5] = {512, 5, 1, 37, 130};
        test_batch tb;
        batch_make(&tb, pi != 1 ? lens : lens + 1, pi != 1 ? 5 : 4, 1000);
        static const char *const what[3] = {"H384 mean norm", "H384 cls no-norm",
                                            "H384 mean norm rel-bias"};
        check_pair(what[pi], &rm.model, &tb, true, 2);
        batch_free(&tb);
        rand_model_free(&rm);
    }
}

/* (d) the batch check */
static void test_batch_check(void) {
    rand_model rm;
    CHECK(rand_model_make(&rm, 50, 8, 2, 16, 1, 10, EMBD_POOL_MEAN, true, 5) == 0);
    const struct embd_model *m = &rm.model;
    int32_t ids[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int32_t st[4] = {0, 3, 5, 12};
    embd_batch b = {.n_seq = 3, .n_tok = 12, .ids = ids, .seq_start = st};
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_OK);

    ids[7] = 50; /* == V */
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    CHECK_MSG(strstr(embd_last_error(), "token 7") != NULL, "message: %s", embd_last_error());
    ids[7] = -1;
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    ids[7] = 8;

    st[1] = 0; /* empty first sequence */
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    CHECK_MSG(strstr(embd_last_error(), "sequence 0") != NULL, "message: %s", embd_last_error());
    st[1] = 6; /* non-monotone: 6 > 5 */
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    CHECK_MSG(strstr(embd_last_error(), "sequence 1") != NULL, "message: %s", embd_last_error());
    st[1] = 3;

    st[2] = 1; /* third sequence 11 > P = 10 tokens, second negative */
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    st[2] = 2; /* lengths 3, -1 */
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    int32_t st_long[3] = {0, 1, 12}; /* 11 > P */
    embd_batch bl = {.n_seq = 2, .n_tok = 12, .ids = ids, .seq_start = st_long};
    CHECK_EQ_INT(embd_batch_check(&bl, m), EMBD_ERR_INVALID_ARG);
    CHECK_MSG(strstr(embd_last_error(), "sequence 1") != NULL, "message: %s", embd_last_error());
    st[2] = 5;

    b.n_tok = 11; /* seq_start[n] != T */
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    b.n_tok = 12;
    st[0] = 1;
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    st[0] = 0;
    b.n_seq = 0;
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    b.n_seq = 3;
    b.ids = NULL;
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_ERR_INVALID_ARG);
    b.ids = ids;
    CHECK_EQ_INT(embd_batch_check(NULL, m), EMBD_ERR_INVALID_ARG);
    CHECK_EQ_INT(embd_batch_check(&b, m), EMBD_OK);

    /* both backends refuse a bad batch through embed, and write nothing */
    const struct embd_backend_ops *ops[2] = {&embd_backend_ref_ops, &embd_backend_cpu_ops};
    for (int k = 0; k < 2; k++) {
        embd_backend_params p = {.n_threads = 2, .dtype = EMBD_DTYPE_FP32, .max_batch_tokens = 12};
        embd_backend *be = NULL;
        CHECK_EQ_INT(ops[k]->init(&be, m, &p), EMBD_OK);
        if (!be) continue;
        float *out = out_alloc(3, 8);
        ids[11] = 1000;
        CHECK_EQ_INT(ops[k]->embed(be, out, &b, true), EMBD_ERR_INVALID_ARG);
        ids[11] = 12;
        CHECK(guard_intact(out, 3, 8));
        CHECK_EQ_INT(ops[k]->embed(be, out, &b, true), EMBD_OK);
        CHECK(all_finite(out, 3 * 8));
        CHECK(guard_intact(out, 3, 8));
        free(out);
        ops[k]->free(be);
    }
    rand_model_free(&rm);
}

/* (e) fail the Nth allocation during init and embed, for N = 0, 1, ... until
 * the whole thing succeeds: every failure must be a clean EMBD_ERR_NOMEM
 * (leaks are caught by the sanitizer build's LeakSanitizer), and the final
 * result must equal an unfailed run. Also: a failed scratch growth leaves the
 * backend usable, and trim then embed works. */
static void test_faults(void) {
    rand_model rm;
    CHECK(rand_model_make(&rm, 60, 16, 2, 32, 2, 32, EMBD_POOL_MEAN, true, 9) == 0);
    int lens[4] = {7, 32, 1, 12};
    test_batch tb;
    batch_make(&tb, lens, 4, 60);
    const struct embd_backend_ops *ops[2] = {&embd_backend_ref_ops, &embd_backend_cpu_ops};
    for (int k = 0; k < 2; k++) {
        float *want = run(ops[k], &rm.model, &tb.b, true, 2, 8);
        if (!want) continue;
        int done = 0, nomem = 0;
        for (long N = 0; N < 100 && !done; N++) {
            embd_backend_params p = {
                .n_threads = 2, .dtype = EMBD_DTYPE_FP32, .max_batch_tokens = 8};
            embd_backend *be = NULL;
            float *out = out_alloc(4, 16);
            embd_fault_alloc_after(N);
            enum embd_status st = ops[k]->init(&be, &rm.model, &p);
            if (st == EMBD_OK) st = ops[k]->embed(be, out, &tb.b, true);
            embd_fault_alloc_after(-1);
            if (st == EMBD_OK) {
                done = 1;
                CHECK_MSG(memcmp(out, want, 4 * 16 * sizeof(float)) == 0,
                          "%s: result after faults differs", ops[k]->name);
            } else {
                nomem++;
                CHECK_MSG(st == EMBD_ERR_NOMEM, "%s N=%ld: status %d (%s)", ops[k]->name, N,
                          (int)st, embd_last_error());
                if (!be) CHECK(be == NULL);
                /* after a failed embed the backend still works */
                if (be) {
                    CHECK_EQ_INT(ops[k]->embed(be, out, &tb.b, true), EMBD_OK);
                    CHECK(memcmp(out, want, 4 * 16 * sizeof(float)) == 0);
                }
            }
            CHECK(guard_intact(out, 4, 16));
            if (be) ops[k]->free(be);
            free(out);
        }
        CHECK_MSG(done, "%s never succeeded under fault injection", ops[k]->name);
        CHECK_MSG(nomem >= 2, "%s: only %d injected failures", ops[k]->name, nomem);
        printf("faults %-4s: %d injected failures, then success\n", ops[k]->name, nomem);

        /* trim, then embed again */
        embd_backend_params p = {.n_threads = 2, .dtype = EMBD_DTYPE_FP32, .max_batch_tokens = 64};
        embd_backend *be = NULL;
        CHECK_EQ_INT(ops[k]->init(&be, &rm.model, &p), EMBD_OK);
        if (be) {
            float *out = out_alloc(4, 16);
            if (ops[k]->trim) ops[k]->trim(be);
            if (ops[k]->trim) ops[k]->trim(be); /* twice is fine */
            CHECK_EQ_INT(ops[k]->embed(be, out, &tb.b, true), EMBD_OK);
            CHECK(memcmp(out, want, 4 * 16 * sizeof(float)) == 0);
            CHECK(guard_intact(out, 4, 16));
            free(out);
            ops[k]->free(be);
        }
        free(want);
    }
    batch_free(&tb);
    rand_model_free(&rm);
}

/* (f) known answers: the reference's ops on hand-computed values, and a whole
 * model with no layers (embeddings + LayerNorm + pooling + normalisation). */
static void test_known_answers(void) {
    /* GELU(x) = 0.5 x (1 + erf(x / sqrt 2)) */
    float g[5] = {0.0f, 1.0f, -1.0f, 3.0f, -3.0f};
    const double g_want[5] = {0.0, 0.8413447460685429, -0.15865525393145707, 2.9959502011,
                              -0.0040497988};
    embd_ref_gelu(g, 5);
    for (int i = 0; i < 5; i++)
        CHECK_MSG(fabs(g[i] - g_want[i]) < 2e-7, "gelu %d: %.9f vs %.9f", i, g[i], g_want[i]);

    float s[3] = {1, 2, 3};
    embd_ref_softmax(s, 3);
    const double s_want[3] = {0.09003057317038046, 0.24472847105479767, 0.6652409557748219};
    for (int i = 0; i < 3; i++)
        CHECK(fabs(s[i] - s_want[i]) < 1e-7);
    float big[3] = {1000.0f, 1000.0f, -1000.0f}; /* overflows without the max subtraction */
    embd_ref_softmax(big, 3);
    CHECK(fabsf(big[0] - 0.5f) < 1e-7f && fabsf(big[1] - 0.5f) < 1e-7f && big[2] == 0.0f);

    /* LayerNorm of (1, 2, 3, 4): mean 2.5, variance 1.25 */
    float x[4] = {1, 2, 3, 4}, y[4];
    const float one[4] = {1, 1, 1, 1}, zero[4] = {0, 0, 0, 0};
    embd_ref_layernorm(y, x, one, zero, 1, 4, 0.0f);
    const double ln_want[4] = {-1.3416407864998738, -0.4472135954999579, 0.4472135954999579,
                               1.3416407864998738};
    for (int i = 0; i < 4; i++)
        CHECK(fabs(y[i] - ln_want[i]) < 1e-6);

    /* linear: (1 2) W^T + b with W = ((1 0) (0 1) (1 1)), b = (0 0 10) */
    const float lin_in[2] = {1, 2}, W[6] = {1, 0, 0, 1, 1, 1}, bias[3] = {0, 0, 10};
    float lin_out[3];
    embd_ref_linear(lin_out, lin_in, W, bias, 1, 2, 3);
    CHECK(lin_out[0] == 1 && lin_out[1] == 2 && lin_out[2] == 13);

    /* A model with L = 0, H = 4. Sequence ids (2, 1):
     *   token 0 = word[2] + pos[0] + type[0] = (4, 0, 0, 0): mean 1, var 3
     *             -> (3, -1, -1, -1) / sqrt 3
     *   token 1 = word[1] + pos[1] + type[0] = (1,2,3,4) + (1,1,1,1) = (2,3,4,5)
     *             -> (-3, -1, 1, 3) / sqrt 5
     * then gamma (2, 1, 1, 1) and beta (0, 0, 0, 1). A second sequence (1)
     * alone is token (1, 2, 3, 4) at position 0 -> (-3, -1, 1, 3) / sqrt 5 too. */
    const float word[12] = {9, 9, 9, 9, 1, 2, 3, 4, 4, 0, 0, 0};
    const float posw[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    const float type[8] = {0, 0, 0, 0, 7, 7, 7, 7}; /* row 1 must not be used */
    const float gam[4] = {2, 1, 1, 1}, bet[4] = {0, 0, 0, 1};
    struct embd_model m;
    memset(&m, 0, sizeof m);
    m.hp = (embd_hparams){
        .V = 3, .H = 4, .L = 0, .NH = 2, .I = 8, .P = 2, .TV = 2, .ln_eps = 0.0f, .max_tokens = 2};
    m.w.word_emb = word, m.w.pos_emb = posw, m.w.type_emb = type;
    m.w.emb_ln_g = gam, m.w.emb_ln_b = bet;
    const double r3 = sqrt(3.0), r5 = sqrt(5.0);
    const double t0[4] = {2 * 3 / r3, -1 / r3, -1 / r3, -1 / r3 + 1};
    const double t1[4] = {2 * -3 / r5, -1 / r5, 1 / r5, 3 / r5 + 1};
    int32_t ids[3] = {2, 1, 1}, st[3] = {0, 2, 3};
    embd_batch b = {.n_seq = 2, .n_tok = 3, .ids = ids, .seq_start = st};
    const struct embd_backend_ops *ops[2] = {&embd_backend_ref_ops, &embd_backend_cpu_ops};
    for (int k = 0; k < 2; k++) {
        for (int pool = 0; pool < 2; pool++) {
            for (int norm = 0; norm < 2; norm++) {
                m.hp.pooling = pool ? EMBD_POOL_MEAN : EMBD_POOL_CLS;
                m.hp.normalize = norm;
                float *out = run(ops[k], &m, &b, true, 2, 3);
                if (!out) continue;
                double want[2][4];
                for (int i = 0; i < 4; i++) {
                    want[0][i] = pool ? (t0[i] + t1[i]) / 2 : t0[i];
                    want[1][i] = t1[i];
                }
                for (int s2 = 0; s2 < 2 && norm; s2++) {
                    double nn = 0;
                    for (int i = 0; i < 4; i++)
                        nn += want[s2][i] * want[s2][i];
                    for (int i = 0; i < 4; i++)
                        want[s2][i] /= sqrt(nn);
                }
                for (int s2 = 0; s2 < 2; s2++)
                    for (int i = 0; i < 4; i++)
                        CHECK_MSG(fabs(out[s2 * 4 + i] - want[s2][i]) < 2e-6,
                                  "%s L=0 pool=%d norm=%d seq %d [%d]: %.7f vs %.7f", ops[k]->name,
                                  pool, norm, s2, i, out[s2 * 4 + i], want[s2][i]);
                free(out);
            }
        }
    }
}

/* The fast backend's polynomial exp, erf and GELU against libm. */
static void test_fast_math(void) {
    double worst_exp = 0, worst_erf = 0, worst_gelu = 0, worst_gelu_as = 0;
    for (int i = 0; i <= 200000; i++) {
        float x = -87.0f + 175.0f * (float)i / 200000.0f;
        double e = exp((double)x), fe = embd_fast_expf(x);
        double rel = fabs(fe - e) / e;
        if (!(rel <= worst_exp)) worst_exp = rel;
        float u = -8.0f + 16.0f * (float)i / 200000.0f;
        double ed = fabs(embd_fast_erff(u) - erf((double)u));
        if (!(ed <= worst_erf)) worst_erf = ed;
        double gx = 0.5 * u * (1.0 + erf(u / sqrt(2.0)));
        double gd = fabs(embd_fast_gelu(u) - gx) / (1.0 + fabs(u));
        if (!(gd <= worst_gelu)) worst_gelu = gd;
        gd = fabs(embd_fast_gelu_as(u) - gx) / (1.0 + fabs(u));
        if (!(gd <= worst_gelu_as)) worst_gelu_as = gd;
    }
    printf("fast math: exp max rel err %.3g, erf max abs err %.3g, gelu max err %.3g\n", worst_exp,
           worst_erf, worst_gelu);
    CHECK_MSG(worst_exp < 4e-7, "exp rel err %.3g", worst_exp);
    CHECK_MSG(worst_erf < 3e-7, "erf abs err %.3g", worst_erf);
    CHECK_MSG(worst_gelu < 3e-7, "gelu err %.3g", worst_gelu);
    printf("fast math: gelu (A&S erf alone, the reduced precisions' epilogue) max err %.3g\n",
           worst_gelu_as);
    CHECK_MSG(worst_gelu_as < 3e-7, "gelu_as err %.3g", worst_gelu_as);
    CHECK(embd_fast_expf(0.0f) == 1.0f);
    CHECK(embd_fast_expf(-1000.0f) >= 0.0f && embd_fast_expf(-1000.0f) < 1e-37f);
    CHECK(isfinite(embd_fast_expf(1000.0f)));
}

/* init refuses a bad model */
static void test_bad_init(void) {
    rand_model rm;
    CHECK(rand_model_make(&rm, 10, 8, 2, 16, 1, 8, EMBD_POOL_MEAN, true, 3) == 0);
    rm.model.hp.NH = 3; /* 8 % 3 != 0 */
    const struct embd_backend_ops *ops[2] = {&embd_backend_ref_ops, &embd_backend_cpu_ops};
    for (int k = 0; k < 2; k++) {
        embd_backend_params p = {.n_threads = 1, .dtype = EMBD_DTYPE_FP32, .max_batch_tokens = 8};
        embd_backend *be = (embd_backend *)&p;
        CHECK_EQ_INT(ops[k]->init(&be, &rm.model, &p), EMBD_ERR_INVALID_ARG);
        CHECK(be == NULL);
    }
    rand_model_free(&rm);
}

/* One packed GEMM (embd_cpu_gemm) against a double-precision product, on
 * shapes that reach every tile: rows past a tile and a block, an odd number
 * of 16-column panels (the AVX-512 tile's 16-wide edge), few rows (the split
 * by columns) and many (by rows); with and without a bias. Returns the
 * outputs of the last shape in *last (T * N floats, the caller frees) so
 * that kernel sets can be compared bit for bit. */
static void test_gemm_shapes(const char *isa, float **last, size_t *last_n) {
    static const int shapes[][3] = {
        {1, 16, 16},     {5, 48, 32},      {13, 80, 384}, {47, 384, 48},
        {49, 1152, 384}, {300, 384, 1536}, {7, 24, 40}}; /* T, N, K; the last not a multiple of 16
                                                          */
    const int ns = (int)(sizeof shapes / sizeof shapes[0]);
    for (int si = 0; si < ns; si++) {
        const int T = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        float *W = malloc((size_t)N * K * sizeof(float)),
              *in = malloc((size_t)T * K * sizeof(float));
        float *bias = malloc((size_t)N * sizeof(float)), *out = out_alloc(T, N);
        for (size_t i = 0; i < (size_t)N * K; i++)
            W[i] = 0.5f * rm_uniform();
        for (size_t i = 0; i < (size_t)T * K; i++)
            in[i] = rm_uniform();
        for (int i = 0; i < N; i++)
            bias[i] = rm_uniform();
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            embd_cpu_gemm *g = embd_cpu_gemm_new(W, N, K, 2);
            CHECK(g != NULL);
            if (!g) break;
            const int packed = N % 16 == 0 && K % 16 == 0;
            CHECK(!strcmp(embd_cpu_gemm_isa(g), packed ? isa : "baseline"));
            embd_cpu_gemm_run(g, out, in, T, with_bias ? bias : NULL);
            double worst = 0;
            for (int t = 0; t < T; t++)
                for (int n = 0; n < N; n++) {
                    double ref = with_bias ? bias[n] : 0.0, mag = fabs(ref);
                    for (int k = 0; k < K; k++) {
                        ref += (double)in[(size_t)t * K + k] * W[(size_t)n * K + k];
                        mag += fabs((double)in[(size_t)t * K + k] * W[(size_t)n * K + k]);
                    }
                    double err = fabs(out[(size_t)t * N + n] - ref) / (mag + 1e-30);
                    worst = err > worst ? err : worst;
                }
            CHECK(guard_intact(out, T, N));
            /* fp32 sums of K products: at most about K rounding units of
             * the sum of their magnitudes */
            CHECK_MSG(worst <= (double)K * 6e-8,
                      "gemm %s T=%d N=%d K=%d: error %.3g of the magnitude", isa, T, N, K, worst);
            embd_cpu_gemm_free(g);
        }
        if (si == ns - 2) {
            *last_n = (size_t)T * N;
            *last = malloc(*last_n * sizeof(float));
            memcpy(*last, out, *last_n * sizeof(float));
        }
        free(W);
        free(in);
        free(bias);
        free(out);
    }
}

/* The kernel sets: each that the CPU has runs the GEMM shapes; the packed
 * GEMM of AVX-512 must give the AVX2 one's outputs bit for bit (the same FMA
 * chain per output). Those the CPU lacks are named as skipped. (The whole
 * backend against the reference runs once per set as its own CTest test:
 * test_backend ISA.) */
static void test_isas(void) {
    static const char *const isas[] = {"avx512", "avx2", "baseline"};
    float *outs[3] = {NULL, NULL, NULL};
    size_t n_out[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        setenv("EMBD_CPU_ISA", isas[i], 1);
        enum embd_cpu_isa isa;
        char why[160];
        if (!embd_cpu_isa_choose(&isa, why, sizeof why)) {
            printf("kernel set %s: SKIPPED (%s)\n", isas[i], why);
            continue;
        }
        printf("kernel set %s: runs (%s)\n", isas[i], embd_cpu_features_get()->model);
        rm_seed(4242);
        test_gemm_shapes(isas[i], &outs[i], &n_out[i]);
    }
    unsetenv("EMBD_CPU_ISA");
    if (outs[0] && outs[1]) {
        CHECK(n_out[0] == n_out[1]);
        CHECK(memcmp(outs[0], outs[1], n_out[0] * sizeof(float)) == 0);
        printf("packed GEMM: avx512 and avx2 outputs identical\n");
    }
    for (int i = 0; i < 3; i++)
        free(outs[i]);
}

/* A bad EMBD_CPU_ISA is refused with the reason, not ignored. */
static void test_isa_env(void) {
    rand_model rm;
    CHECK(rand_model_make(&rm, 10, 16, 2, 32, 1, 8, EMBD_POOL_MEAN, true, 3) == 0);
    embd_backend_params p = {.n_threads = 1, .dtype = EMBD_DTYPE_FP32, .max_batch_tokens = 8};
    embd_backend *be = NULL;
    setenv("EMBD_CPU_ISA", "avx9000", 1);
    CHECK_EQ_INT(embd_backend_cpu_ops.init(&be, &rm.model, &p), EMBD_ERR_UNSUPPORTED);
    CHECK(be == NULL);
    CHECK(strstr(embd_last_error(), "EMBD_CPU_ISA=avx9000") != NULL);
    unsetenv("EMBD_CPU_ISA");
    rand_model_free(&rm);
}

int main(int argc, char **argv) {
    /* test_backend ISA: the fast backend's checks with one kernel set only
     * (CTest runs one per set; skipped where the CPU lacks it) */
    if (argc > 1) {
        setenv("EMBD_CPU_ISA", argv[1], 1);
        enum embd_cpu_isa isa;
        char why[160];
        if (!embd_cpu_isa_choose(&isa, why, sizeof why)) TEST_SKIP("%s", why);
        printf("kernel set %s (%s) on %s\n", argv[1], why, embd_cpu_features_get()->model);
        float *last = NULL;
        size_t n = 0;
        test_gemm_shapes(argv[1], &last, &n);
        free(last);
        test_cpu_vs_ref_small();
        test_cpu_vs_ref_minilm();
        test_pad_positions();
        return test_summary("test_backend (one kernel set)");
    }
    test_known_answers();
    test_fast_math();
    test_batch_check();
    test_bad_init();
    test_isa_env();
    test_faults();
    test_isas();
    test_cpu_vs_ref_small();
    test_cpu_vs_ref_minilm();
    test_pad_positions();
    /* the baseline loops with the packed GEMM's choice left to the CPU (a
     * test hook older than EMBD_CPU_ISA) */
    if (embd_backend_cpu_force_baseline(true)) {
        printf("again with the baseline x86-64 loops:\n");
        test_cpu_vs_ref_small();
    }
    embd_backend_cpu_force_baseline(false);
    return test_summary("test_backend");
}
