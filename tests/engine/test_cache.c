/* test_cache.c — the embedding cache on a tiny generated model: hits are
 * bit-identical to what was computed, the key covers the prefix, the
 * normalisation and the model, the LRU evicts by bytes, a corrupted value
 * and a corrupted or foreign LMDB store are detected and rebuilt, a full
 * disk map keeps serving, equal texts in one call share one vector, and
 * failed allocations anywhere in the cache paths leak nothing and never
 * change a result. */
#include "engine/cache.h"
#include "model/tiny_model.h"
#include "test.h"
#include "util/util.h"

#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Token words stored with the vectors (cache.h); the tests store 7 | truncated. */
static uint32_t g_tok[4096] = {[0 ... 4095] = 7u | EMBD_CACHE_TRUNCATED};
static uint32_t g_tok_out[4096];

static char *root;

static const char *const texts[] = {"a cat", "the dogs", "", "zzz zz z", "a cat sat", "bb"};
#define N_TEXTS 6

static embd_model *tiny_model(const char *name, uint32_t seed) {
    tiny_cfg cfg = tiny_default_cfg();
    tt_file f = tt_build(&cfg, "F32", "", false, seed);
    char *dir = path_cat(root, name);
    CHECK(tiny_write_dir(dir, &cfg, &f) == 0);
    tt_free(&f);
    embd_model *m = NULL;
    enum embd_status s = embd_model_load(dir, embd_model_default_params(), &m);
    CHECK_MSG(s == EMBD_OK, "load: %s", embd_last_error());
    free(dir);
    return m;
}

static struct embd_ctx_params params(size_t cache_bytes, const char *dir) {
    struct embd_ctx_params p = embd_ctx_default_params();
    p.device = EMBD_DEVICE_CPU;
    p.n_threads = 1;
    p.cache_bytes = cache_bytes;
    p.cache_dir = dir;
    return p;
}

/* Embeds `texts` with a fresh context; returns the stats after the call. */
static struct embd_ctx_stats embed_with(embd_model *m, struct embd_ctx_params p, float *out) {
    struct embd_ctx_stats st = {0};
    embd_ctx *ctx = NULL;
    enum embd_status s = embd_ctx_new(m, p, &ctx);
    CHECK_MSG(s == EMBD_OK, "ctx: %s", embd_last_error());
    if (!ctx) return st;
    s = embd_embed(ctx, texts, NULL, N_TEXTS, out);
    CHECK_MSG(s == EMBD_OK, "embed: %s", embd_last_error());
    embd_ctx_get_stats(ctx, &st);
    embd_ctx_free(ctx);
    return st;
}

static void test_memory_hits(embd_model *m, const float *ref, int D) {
    float *a = calloc((size_t)N_TEXTS * D, sizeof *a);
    embd_ctx *ctx = NULL;
    CHECK(embd_ctx_new(m, params(1 << 20, NULL), &ctx) == EMBD_OK);
    CHECK(embd_embed(ctx, texts, NULL, N_TEXTS, a) == EMBD_OK);
    CHECK(memcmp(a, ref, (size_t)N_TEXTS * D * sizeof *a) == 0);
    memset(a, 0, (size_t)N_TEXTS * D * sizeof *a);
    CHECK(embd_embed(ctx, texts, NULL, N_TEXTS, a) == EMBD_OK);
    CHECK(memcmp(a, ref, (size_t)N_TEXTS * D * sizeof *a) == 0);
    /* Explicit lengths: "a cat sat" cut to 5 bytes is "a cat", a hit. */
    const char *t2[2] = {"a cat sat", "bb"};
    size_t l2[2] = {5, 2};
    CHECK(embd_embed(ctx, t2, l2, 2, a) == EMBD_OK);
    CHECK(memcmp(a, ref, (size_t)D * sizeof *a) == 0);
    CHECK(memcmp(a + D, ref + 5 * D, (size_t)D * sizeof *a) == 0);
    struct embd_ctx_stats st;
    embd_ctx_get_stats(ctx, &st);
    CHECK_EQ_INT(st.cache_misses, N_TEXTS);
    CHECK_EQ_INT(st.cache_hits, N_TEXTS + 2);
    CHECK_EQ_INT(st.inputs, N_TEXTS); /* only the first call reached the model */

    /* Equal texts within one call are computed once and share the vector. */
    const char *dup[4] = {"q q", "r", "q q", "q q"};
    CHECK(embd_embed(ctx, dup, NULL, 4, a) == EMBD_OK);
    CHECK(memcmp(a, a + 2 * D, (size_t)D * sizeof *a) == 0);
    CHECK(memcmp(a, a + 3 * D, (size_t)D * sizeof *a) == 0);
    struct embd_ctx_stats st2;
    embd_ctx_get_stats(ctx, &st2);
    CHECK_EQ_INT(st2.inputs - st.inputs, 2);
    embd_ctx_free(ctx);
    free(a);
}

static void test_key_covers_options(embd_model *m, embd_model *m2, int D) {
    char *dir = path_cat(root, "keys");
    float *a = calloc((size_t)N_TEXTS * D, sizeof *a);
    float *b = calloc((size_t)N_TEXTS * D, sizeof *b);
    struct embd_ctx_stats st = embed_with(m, params(0, dir), a);
    CHECK_EQ_INT(st.cache_misses, N_TEXTS);
    st = embed_with(m, params(0, dir), b); /* disk only: a new context, same options */
    CHECK_EQ_INT(st.cache_hits, N_TEXTS);
    CHECK(memcmp(a, b, (size_t)N_TEXTS * D * sizeof *a) == 0);

    struct embd_ctx_params p = params(0, dir);
    p.prefix = "query: ";
    st = embed_with(m, p, b);
    CHECK_EQ_INT(st.cache_hits, 0);
    p = params(0, dir);
    p.normalize = false;
    st = embed_with(m, p, b);
    CHECK_EQ_INT(st.cache_hits, 0);
    st = embed_with(m2, params(0, dir), b);
    CHECK_EQ_INT(st.cache_hits, 0);
    CHECK(memcmp(a, b, (size_t)N_TEXTS * D * sizeof *a) != 0);
    p = params(0, dir);
    p.prefix = "query: ";
    st = embed_with(m, p, b); /* now stored */
    CHECK_EQ_INT(st.cache_hits, N_TEXTS);

    /* The same weights truncated to fewer tokens: another key. */
    char *mdir = path_cat(root, "m1");
    struct embd_model_params mp = embd_model_default_params();
    mp.max_seq_length = 4;
    embd_model *short_m = NULL;
    CHECK(embd_model_load(mdir, mp, &short_m) == EMBD_OK);
    if (short_m) {
        st = embed_with(short_m, params(0, dir), b);
        CHECK_EQ_INT(st.cache_hits, 0);
        embd_model_free(short_m);
    }
    free(mdir);

    /* The key itself. */
    embd_cache_key k1, k2, k3;
    embd_cache_key_make(&k1, "head", 4, "text", 4);
    embd_cache_key_make(&k2, "head", 4, "text", 4);
    embd_cache_key_make(&k3, "head", 4, "texT", 4);
    CHECK(k1.lo == k2.lo && k1.hi == k2.hi);
    CHECK(k1.lo != k3.lo || k1.hi != k3.hi);
    free(a);
    free(b);
    free(dir);
}

static embd_cache_key key_of(int i) {
    embd_cache_key k;
    embd_cache_key_make(&k, "t", 1, (const char *)&i, sizeof i);
    return k;
}

static void test_lru(void) {
    enum { D = 4 };
    struct embd_cache_params cp = {.dim = D, .mem_bytes = 1 << 20};
    embd_cache *c = NULL;
    CHECK(embd_cache_open(&cp, NULL, &c) == EMBD_OK);
    float v[D] = {1, 2, 3, 4}, out[5 * D];
    embd_cache_key k0 = key_of(0);
    embd_cache_put(c, &k0, 1, v, g_tok);
    struct embd_cache_info info;
    embd_cache_get_info(c, &info);
    size_t ent = info.mem_bytes; /* bytes charged per entry */
    CHECK(ent >= D * sizeof(float));
    embd_cache_close(c);

    embd_metrics met;
    CHECK(embd_metrics_init(&met) == 0);
    cp.mem_bytes = 3 * ent + ent / 2; /* room for 3 */
    CHECK(embd_cache_open(&cp, &met, &c) == EMBD_OK);
    embd_cache_key k[5];
    for (int i = 0; i < 5; i++)
        k[i] = key_of(i);
    for (int i = 0; i < 3; i++) {
        v[0] = (float)i;
        embd_cache_put(c, &k[i], 1, v, g_tok);
    }
    unsigned char hit[5];
    CHECK_EQ_INT(embd_cache_get(c, &k[0], 1, out, g_tok_out, hit),
                 1); /* 0 is now the most recent */
    v[0] = 3;
    embd_cache_put(c, &k[3], 1, v, g_tok); /* evicts 1, the least recent */
    embd_cache_get_info(c, &info);
    CHECK_EQ_INT(info.evictions, 1);
    CHECK_EQ_INT(info.mem_entries, 3);
    CHECK(info.mem_bytes <= cp.mem_bytes);
    CHECK_EQ_INT(embd_cache_get(c, k, 4, out, g_tok_out, hit), 3);
    CHECK(hit[0] && !hit[1] && hit[2] && hit[3]);
    CHECK(out[0] == 0 && out[2 * D] == 2 && out[3 * D] == 3);
    CHECK_EQ_INT(embd_metrics_counter(&met, EMBD_C_CACHE_EVICTIONS), 1);
    CHECK_EQ_INT(embd_metrics_counter(&met, EMBD_C_CACHE_MISSES), 1);
    embd_cache_close(c);

    /* A budget smaller than one entry caches nothing. */
    cp.mem_bytes = ent - 1;
    CHECK(embd_cache_open(&cp, NULL, &c) == EMBD_OK);
    embd_cache_put(c, &k[0], 1, v, g_tok);
    CHECK_EQ_INT(embd_cache_get(c, k, 1, out, g_tok_out, hit), 0);
    embd_cache_close(c);
    embd_metrics_destroy(&met);
}

/* Rewrites the stored value of key k with fn applied to a copy. */
static void tamper(const char *dir, const embd_cache_key *k,
                   void (*fn)(unsigned char *, size_t *)) {
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    CHECK(mdb_env_create(&env) == 0);
    mdb_env_set_maxdbs(env, 4);
    CHECK(mdb_env_open(env, dir, 0, 0644) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, "vectors", 0, &dbi) == 0);
    MDB_val key = {sizeof *k, (void *)k}, val;
    CHECK(mdb_get(txn, dbi, &key, &val) == 0);
    unsigned char buf[4096];
    size_t len = val.mv_size;
    memcpy(buf, val.mv_data, len);
    fn(buf, &len);
    val.mv_data = buf;
    val.mv_size = len;
    CHECK(mdb_put(txn, dbi, &key, &val, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
}

static void flip_vector_bit(unsigned char *b, size_t *len) {
    b[*len - 1] ^= 0x40;
}
static void bad_magic(unsigned char *b, size_t *len) {
    b[0] = 'X';
}
static void bad_dim(unsigned char *b, size_t *len) {
    b[8] = 5;
}
static void truncated(unsigned char *b, size_t *len) {
    *len -= 4;
}

static void test_corrupt_value(void) {
    enum { D = 4 };
    char *dir = path_cat(root, "values");
    struct embd_cache_params cp = {.dim = D, .mem_bytes = 0, .dir = dir};
    void (*fns[])(unsigned char *, size_t *) = {flip_vector_bit, bad_magic, bad_dim, truncated};
    for (int f = 0; f < 4; f++) {
        embd_cache *c = NULL;
        CHECK(embd_cache_open(&cp, NULL, &c) == EMBD_OK);
        if (!c) return;
        embd_cache_key k = key_of(100 + f);
        float v[D] = {0.5f, -1, 2, (float)f}, out[D];
        unsigned char hit;
        embd_cache_put(c, &k, 1, v, g_tok);
        CHECK_EQ_INT(embd_cache_get(c, &k, 1, out, g_tok_out, &hit), 1);
        embd_cache_close(c);
        tamper(dir, &k, fns[f]);
        CHECK(embd_cache_open(&cp, NULL, &c) == EMBD_OK);
        CHECK_MSG(embd_cache_get(c, &k, 1, out, g_tok_out, &hit) == 0, "tampering %d was trusted",
                  f);
        embd_cache_put(c, &k, 1, v, g_tok); /* overwritten */
        CHECK_EQ_INT(embd_cache_get(c, &k, 1, out, g_tok_out, &hit), 1);
        CHECK(memcmp(out, v, sizeof v) == 0);
        CHECK(g_tok_out[0] == g_tok[0]); /* the token word comes back from disk */
        embd_cache_close(c);
    }
    free(dir);
}

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

/* Opens a cache on dir, expecting `rebuilt` rebuilds, and checks it works. */
static void open_expect(const char *dir, int rebuilt, const char *what) {
    enum { D = 4 };
    struct embd_cache_params cp = {.dim = D, .dir = dir};
    embd_cache *c = NULL;
    enum embd_status s = embd_cache_open(&cp, NULL, &c);
    CHECK_MSG(s == EMBD_OK, "%s: %s", what, embd_last_error());
    if (!c) return;
    struct embd_cache_info info;
    embd_cache_get_info(c, &info);
    CHECK_MSG(info.rebuilt == rebuilt, "%s: rebuilt %d times, expected %d", what, info.rebuilt,
              rebuilt);
    CHECK(info.disk);
    embd_cache_key k = key_of(7);
    float v[D] = {1, 2, 3, 4}, out[D];
    unsigned char hit;
    embd_cache_put(c, &k, 1, v, g_tok);
    CHECK_EQ_INT(embd_cache_get(c, &k, 1, out, g_tok_out, &hit), 1);
    embd_cache_close(c);
}

static void test_foreign_store(void) {
    char *dir = path_cat(root, "foreign");
    mkdir(dir, 0755);
    char *data = path_cat(dir, "data.mdb");

    /* Garbage where data.mdb should be. */
    unsigned char junk[65536];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 2654435761u >> 13);
    CHECK(write_file(data, junk, sizeof junk) == 0);
    open_expect(dir, 1, "garbage file");
    open_expect(dir, 0, "after the rebuild");

    /* A valid LMDB store that someone else wrote: plain keys, no meta. */
    rm_rf(dir);
    mkdir(dir, 0755);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_open(env, dir, 0, 0644) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, NULL, 0, &dbi) == 0);
    MDB_val k = {5, "hello"}, v = {5, "world"};
    CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
    open_expect(dir, 1, "foreign LMDB");

    /* Our layout with a meta record of another version. */
    CHECK(mdb_env_create(&env) == 0);
    mdb_env_set_maxdbs(env, 4);
    CHECK(mdb_env_open(env, dir, 0, 0644) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, "meta", 0, &dbi) == 0);
    MDB_val mk = {6, "format"}, mv = {22, "embd-embedding-cache 9"};
    CHECK(mdb_put(txn, dbi, &mk, &mv, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
    open_expect(dir, 1, "other format version");

    /* The path is a file, not a directory: an error, nothing deleted. */
    struct embd_cache_params cp = {.dim = 4, .dir = data};
    embd_cache *c = NULL;
    CHECK(embd_cache_open(&cp, NULL, &c) == EMBD_ERR_IO && !c);
    free(data);
    free(dir);
}

/* A map asked for smaller than LMDB can start in, or larger than the
 * address space: taken as the nearest size that works (not an IO error). */
static void test_map_clamped(void) {
    const size_t sizes[] = {1, 4096, SIZE_MAX};
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "clamp%d", i);
        char *dir = path_cat(root, name);
        struct embd_cache_params cp = {.dim = 4, .dir = dir, .map_bytes = sizes[i]};
        embd_cache *c = NULL;
        CHECK_MSG(embd_cache_open(&cp, NULL, &c) == EMBD_OK, "map_bytes %zu: %s", sizes[i],
                  embd_last_error());
        embd_cache_close(c);
        free(dir);
    }
}

static void test_map_full(void) {
    enum { D = 256 };
    char *dir = path_cat(root, "full");
    struct embd_cache_params cp = {.dim = D, .dir = dir, .map_bytes = 256 << 10};
    embd_cache *c = NULL;
    CHECK(embd_cache_open(&cp, NULL, &c) == EMBD_OK);
    if (!c) return;
    float v[D] = {0}, out[D];
    for (int i = 0; i < 400; i++) {
        embd_cache_key k = key_of(i);
        v[0] = (float)i;
        embd_cache_put(c, &k, 1, v, g_tok);
    }
    struct embd_cache_info info;
    embd_cache_get_info(c, &info);
    CHECK(info.disk_full);
    embd_cache_key k0 = key_of(0);
    unsigned char hit;
    CHECK_EQ_INT(embd_cache_get(c, &k0, 1, out, g_tok_out, &hit), 1); /* still served */
    CHECK(out[0] == 0);
    embd_cache_close(c);
    free(dir);
}

/* Fails the Nth allocation for every N through context creation with both
 * tiers and two embedding calls; each run either reports NOMEM or gives
 * the reference vectors. */
static void test_faults(embd_model *m, const float *ref, int D) {
    float *a = calloc((size_t)N_TEXTS * D, sizeof *a);
    char *dir = path_cat(root, "faults");
    int finished = 0;
    for (long n = 0; n < 5000 && !finished; n++) {
        rm_rf(dir);
        embd_ctx *ctx = NULL;
        embd_fault_alloc_after(n);
        enum embd_status s = embd_ctx_new(m, params(1 << 20, dir), &ctx);
        bool ok = s == EMBD_OK;
        for (int round = 0; ok && round < 2; round++) {
            memset(a, 0, (size_t)N_TEXTS * D * sizeof *a);
            s = embd_embed(ctx, texts, NULL, N_TEXTS, a);
            if (s == EMBD_OK) {
                CHECK_MSG(memcmp(a, ref, (size_t)N_TEXTS * D * sizeof *a) == 0,
                          "fault %ld round %d: wrong vectors", n, round);
            } else {
                CHECK_MSG(s == EMBD_ERR_NOMEM, "fault %ld: %s", n, embd_status_str(s));
                ok = false;
            }
        }
        long made = embd_fault_alloc_after(-1);
        if (!ctx) CHECK_MSG(s == EMBD_ERR_NOMEM, "fault %ld: %s", n, embd_status_str(s));
        embd_ctx_free(ctx);
        if (made <= n) finished = 1; /* the fault never fired: every path was covered */
    }
    CHECK(finished);
    rm_rf(dir);
    free(dir);
    free(a);
}

int main(void) {
    root = make_temp_dir();
    if (!root) TEST_SKIP("no temporary directory");
    embd_log_configure("error", NULL); /* the rebuild warnings are expected here */
    embd_model *m = tiny_model("m1", 1), *m2 = tiny_model("m2", 2);
    if (!m || !m2) return test_summary("engine_cache");
    const int D = embd_model_dim(m);
    float *ref = calloc((size_t)N_TEXTS * D, sizeof *ref);
    embed_with(m, params(0, NULL), ref); /* no cache */

    test_memory_hits(m, ref, D);
    test_key_covers_options(m, m2, D);
    test_lru();
    test_corrupt_value();
    test_foreign_store();
    test_map_full();
    test_map_clamped();
    test_faults(m, ref, D);

    free(ref);
    embd_model_free(m);
    embd_model_free(m2);
    rm_rf(root);
    free(root);
    return test_summary("engine_cache");
}
