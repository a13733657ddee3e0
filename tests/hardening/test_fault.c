/* test_fault.c — allocation failure injection (embd_fault_alloc_after):
 * fail the Nth allocation for N = 0, 1, ... until the operation completes
 * without reaching the fault, for
 *   - creating a context and embedding (tiny model, memory cache on),
 *   - the embedding cache: open, put and get on a disk cache,
 *   - the embedded store: open for writing, append, reopen and search.
 * Every failure must be a clean error (a status and a message, or for the
 * best-effort cache a miss), the handle must stay usable, and nothing
 * stored before must be lost. LeakSanitizer (the sanitizer build) checks
 * that no failure path leaks. Model loading under faults is in
 * tests/model/test_model_load.c. */
#include "engine/cache.h"
#include "model/tiny_model.h"
#include "store/store.h"
#include "test.h"
#include "util/util.h"

#include <math.h>
#include <string.h>

/* Token words stored with the vectors (cache.h); the tests store 7 | truncated. */
static uint32_t g_tok[4096] = {[0 ... 4095] = 7u | EMBD_CACHE_TRUNCATED};
static uint32_t g_tok_out[4096];

#define MAX_N 200000 /* far above any operation's allocation count */

static char *root;

/* Arms the fault at n; returns whether the fault was reached by the time
 * disarm() is called. */
static void arm(long n) {
    embd_fault_alloc_after(n);
}
static bool reached(long n) {
    return embd_fault_alloc_after(-1) > n;
}

/* ---- embedding ------------------------------------------------------------ */

static void test_embed(void) {
    tiny_cfg cfg = tiny_default_cfg();
    tt_file f = tt_build(&cfg, "F32", "", false, 11);
    char *dir = path_cat(root, "model");
    CHECK(tiny_write_dir(dir, &cfg, &f) == 0);
    tt_free(&f);
    embd_model *m = NULL;
    CHECK(embd_model_load(dir, embd_model_default_params(), &m) == EMBD_OK);
    free(dir);
    if (!m) return;
    const int D = embd_model_dim(m);
    const char *texts[] = {"abc de", "", "zzz yy xx", "hello world hello", "s s s"};
    const size_t n = sizeof texts / sizeof texts[0];
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = EMBD_DEVICE_CPU;
    p.n_threads = 1;
    p.cache_bytes = 1 << 20;

    float *ref = calloc(n * (size_t)D, sizeof *ref), *out = calloc(n * (size_t)D, sizeof *out);
    embd_ctx *ctx = NULL;
    CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);
    if (ctx) CHECK(embd_embed(ctx, texts, NULL, n, ref) == EMBD_OK);
    embd_ctx_free(ctx);
    if (!ref || !out) goto out;

    /* Context creation (with a disk cache, so that its open is covered). */
    char *cdir = path_cat(root, "ctx-cache");
    p.cache_dir = cdir;
    long done_at = -1;
    int nomem = 0;
    for (long k = 0; k < MAX_N; k++) {
        ctx = NULL;
        arm(k);
        enum embd_status st = embd_ctx_new(m, p, &ctx);
        bool hit = reached(k);
        if (st != EMBD_OK) {
            CHECK(ctx == NULL);
            CHECK_MSG(st == EMBD_ERR_NOMEM, "ctx_new at %ld: %s", k, embd_last_error());
            CHECK(embd_last_error()[0] != '\0');
            nomem++;
        } else {
            embd_ctx_free(ctx);
        }
        if (!hit) {
            CHECK(st == EMBD_OK);
            done_at = k;
            break;
        }
    }
    p.cache_dir = NULL;
    free(cdir);
    printf("embd_ctx_new: completes with %ld allocations; %d injected failures were NOMEM\n",
           done_at, nomem);
    CHECK(done_at > 0 && nomem > 0);

    /* Embedding, on a fresh context each time (an empty memory cache, so
     * that every call computes): a failed call leaves the context usable. */
    done_at = -1;
    nomem = 0;
    int bad_after = 0;
    for (long k = 0; k < MAX_N; k++) {
        ctx = NULL;
        CHECK(embd_ctx_new(m, p, &ctx) == EMBD_OK);
        if (!ctx) break;
        arm(k);
        enum embd_status st = embd_embed(ctx, texts, NULL, n, out);
        bool hit = reached(k);
        if (st != EMBD_OK) {
            CHECK_MSG(st == EMBD_ERR_NOMEM, "embed at %ld: %s", k, embd_last_error());
            CHECK(embd_last_error()[0] != '\0');
            nomem++;
        } else {
            for (size_t i = 0; i < n * (size_t)D; i++)
                if (!(fabsf(out[i] - ref[i]) <= 1e-6f)) bad_after++;
        }
        /* the next call, without faults, is right (from the cache or not) */
        memset(out, 0, n * (size_t)D * sizeof *out);
        CHECK(embd_embed(ctx, texts, NULL, n, out) == EMBD_OK);
        for (size_t i = 0; i < n * (size_t)D; i++)
            if (!(fabsf(out[i] - ref[i]) <= 1e-6f)) bad_after++;
        embd_ctx_free(ctx);
        if (!hit) {
            CHECK(st == EMBD_OK);
            done_at = k;
            break;
        }
    }
    printf("embd_embed: completes with %ld allocations; %d injected failures were NOMEM\n", done_at,
           nomem);
    CHECK(done_at > 0 && nomem > 0);
    CHECK_EQ_INT(bad_after, 0);
out:
    free(ref);
    free(out);
    embd_model_free(m);
}

/* ---- the embedding cache ------------------------------------------------- */

#define CD 6  /* D of the cache tests */
#define CN 40 /* vectors per batch */

static void fill(float *v, size_t n, float base) {
    for (size_t i = 0; i < n * CD; i++)
        v[i] = base + (float)i * 0.125f;
}

static void keys_for(embd_cache_key *k, size_t n, const char *tag) {
    for (size_t i = 0; i < n; i++) {
        char t[32];
        snprintf(t, sizeof t, "%s-%zu", tag, i);
        embd_cache_key_make(&k[i], "h", 1, t, strlen(t));
    }
}

static void test_cache(void) {
    char *dir = path_cat(root, "cache");
    struct embd_cache_params p = {.dim = CD, .mem_bytes = 4096, .dir = dir, .map_bytes = 8 << 20};
    static embd_cache_key ka[CN], kb[CN];
    static float va[CN * CD], vb[CN * CD], out[CN * CD];
    static unsigned char hit[CN];
    keys_for(ka, CN, "a");
    keys_for(kb, CN, "b");
    fill(va, CN, 1.0f);
    fill(vb, CN, -7.0f);
    embd_cache *c = NULL;
    CHECK(embd_cache_open(&p, NULL, &c) == EMBD_OK);
    if (!c) goto out;
    embd_cache_put(c, ka, CN, va, g_tok);
    embd_cache_close(c);

    long done_at = -1;
    int open_fail = 0, lost = 0;
    for (long k = 0; k < MAX_N; k++) {
        c = NULL;
        arm(k);
        enum embd_status st = embd_cache_open(&p, NULL, &c);
        if (st == EMBD_OK) {
            embd_cache_put(c, kb, CN, vb, g_tok);
            size_t h = embd_cache_get(c, kb, CN, out, g_tok_out, hit);
            /* a hit is always the vector put */
            for (size_t i = 0; i < CN; i++)
                if (hit[i] && memcmp(out + i * CD, vb + i * CD, sizeof(float) * CD)) lost++;
            (void)h;
            embd_cache_get(c, ka, CN, out, g_tok_out, hit);
            for (size_t i = 0; i < CN; i++)
                if (hit[i] && memcmp(out + i * CD, va + i * CD, sizeof(float) * CD)) lost++;
            embd_cache_close(c);
        } else {
            CHECK(c == NULL);
            CHECK_MSG(st == EMBD_ERR_NOMEM, "cache open at %ld: %s", k, embd_last_error());
            CHECK(embd_last_error()[0] != '\0');
            open_fail++;
        }
        bool was_hit = reached(k);
        /* Without faults: everything put before is there, bit for bit. */
        c = NULL;
        CHECK(embd_cache_open(&p, NULL, &c) == EMBD_OK);
        if (!c) break;
        CHECK(embd_cache_get(c, ka, CN, out, g_tok_out, hit) == CN);
        if (memcmp(out, va, sizeof va)) lost++;
        struct embd_cache_info info;
        embd_cache_get_info(c, &info);
        CHECK_EQ_INT(info.rebuilt, 0);
        embd_cache_close(c);
        if (!was_hit) {
            done_at = k;
            break;
        }
    }
    printf("cache open+put+get: completes with %ld allocations; %d opens failed cleanly\n", done_at,
           open_fail);
    CHECK(done_at > 0 && open_fail > 0);
    CHECK_EQ_INT(lost, 0);
    /* the last, fault-free round stored batch b */
    c = NULL;
    CHECK(embd_cache_open(&p, NULL, &c) == EMBD_OK);
    if (c) {
        CHECK(embd_cache_get(c, kb, CN, out, g_tok_out, hit) == CN);
        CHECK(memcmp(out, vb, sizeof vb) == 0);
        embd_cache_close(c);
    }
out:
    free(dir);
}

/* ---- the embedded store ---------------------------------------------------- */

#define SD 5
#define SN 30

struct batch {
    char ids[SN][32];
    const char *idp[SN], *textp[SN];
    size_t idl[SN], tl[SN];
    float v[SN * SD];
};

static void make_batch(struct batch *b, const char *tag) {
    for (size_t i = 0; i < SN; i++) {
        snprintf(b->ids[i], sizeof b->ids[i], "%s-%zu", tag, i);
        b->idp[i] = b->ids[i];
        b->idl[i] = strlen(b->ids[i]);
        b->textp[i] = "some text of the record";
        b->tl[i] = strlen(b->textp[i]) - i % 5;
        for (size_t d = 0; d < SD; d++)
            b->v[i * SD + d] = (float)((i * 31 + d * 7 + strlen(tag)) % 17) / 17.0f - 0.4f;
    }
}

/* How many of the batch's ids are in the store with their vector. */
static size_t present(embd_store *s, const struct batch *b) {
    size_t k = 0;
    for (size_t i = 0; i < SN; i++) {
        const float *v = NULL;
        if (embd_store_get(s, b->ids[i], b->idl[i], &v) == EMBD_OK &&
            memcmp(v, b->v + i * SD, sizeof(float) * SD) == 0)
            k++;
    }
    return k;
}

static void test_store(void) {
    char *dir = path_cat(root, "store");
    struct embd_store_params p = {
        .dim = SD, .fingerprint = 0x1234, .normalized = false, .create = true, .writable = true};
    static struct batch a, b;
    make_batch(&a, "a");
    embd_store *s = NULL;
    CHECK(embd_store_open(dir, &p, &s, NULL) == EMBD_OK);
    if (!s) goto out;
    CHECK(embd_store_add(s, a.idp, a.idl, a.textp, a.tl, a.v, SN, NULL) == EMBD_OK);
    CHECK(embd_store_flush(s) == EMBD_OK);
    embd_store_close(s);
    p.create = false;

    size_t expect = SN;
    long done_at = -1;
    int failed = 0, lost = 0;
    for (long k = 0; k < MAX_N; k++) {
        char tag[32];
        snprintf(tag, sizeof tag, "b%ld", k);
        make_batch(&b, tag);
        bool added = false;
        s = NULL;
        arm(k);
        enum embd_status st = embd_store_open(dir, &p, &s, NULL);
        if (st == EMBD_OK) {
            st = embd_store_add(s, b.idp, b.idl, b.textp, b.tl, b.v, SN, NULL);
            added = st == EMBD_OK;
            if (st == EMBD_OK) st = embd_store_flush(s);
            if (st == EMBD_OK) {
                float q[SD] = {1, 0.5f, 0.25f, 0, -1};
                struct embd_store_hit hits[4];
                size_t nh = 0;
                st = embd_store_search(s, q, 4, hits, &nh);
                if (st == EMBD_OK) CHECK_EQ_INT(nh, 4);
            }
            embd_store_close(s);
        }
        if (st != EMBD_OK) {
            CHECK_MSG(st == EMBD_ERR_NOMEM, "store at %ld: %s", k, embd_last_error());
            CHECK(embd_last_error()[0] != '\0');
            failed++;
        }
        bool was_hit = reached(k);
        if (added) expect += SN;
        /* Without faults: batch a and every batch that was added are there. */
        struct embd_store_params ro = p;
        ro.writable = false;
        s = NULL;
        struct embd_store_open_info info;
        CHECK(embd_store_open(dir, &ro, &s, &info) == EMBD_OK);
        if (!s) break;
        CHECK_EQ_INT(info.dropped_bytes, 0);
        if (present(s, &a) != SN) lost++;
        CHECK_EQ_INT(present(s, &b), added ? SN : 0);
        CHECK_EQ_INT(embd_store_count(s), expect);
        embd_store_close(s);
        if (!was_hit) {
            CHECK(st == EMBD_OK);
            done_at = k;
            break;
        }
    }
    printf("store open+add+search: completes with %ld allocations; %d failed cleanly; %zu "
           "records at the end\n",
           done_at, failed, expect);
    CHECK(done_at > 0 && failed > 0);
    CHECK_EQ_INT(lost, 0);
out:
    free(dir);
}

int main(void) {
    root = make_temp_dir();
    if (!root) TEST_SKIP("no temporary directory");
    test_embed();
    test_cache();
    test_store();
    rm_rf(root);
    free(root);
    return test_summary("hardening_fault");
}
