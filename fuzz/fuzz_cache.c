/* fuzz_cache.c — the embedding cache's disk tier (src/engine/cache.c) on
 * fuzzed LMDB contents: a meta record and vector values written straight
 * into the LMDB environment, intact or corrupted, then read through
 * embd_cache_open / embd_cache_get.
 *
 * Input: byte 0 = flags, byte 1 picks D (1..16), byte 2 the memory budget.
 *   flags & 1: the meta record is fuzzed bytes (u8 length + bytes).
 *   flags & 2: no meta record at all.
 * Then values, each: flags u8, D float32, and for a corrupted one (flags &
 * 3 != 0) a position u16 and an xor byte (flags 1: one byte flipped, 2: cut
 * to a fuzzed length, 3: fuzzed bytes of a fuzzed length).
 * Checks: a hit is exactly an intact value's vector, bit for bit; a corrupt
 * value is a miss; a foreign meta record rebuilds an empty cache; after a
 * put, every key hits with the vector put, also after a reopen. LMDB's own
 * pages are not fuzzed here (LMDB trusts its file; see SECURITY.md). */
#include "engine/cache.h"
#include "fuzz.h"
#include "util/util.h"

#include <lmdb.h>
#include <string.h>
#include <xxhash.h>

/* Token words stored with the vectors (cache.h); the tests store 7 | truncated. */
static uint32_t g_tok[4096] = {[0 ... 4095] = 7u | EMBD_CACHE_TRUNCATED};
static uint32_t g_tok_out[4096];

#define MAX_VALUES 64
#define MAP_BYTES (1u << 20)

struct value_header { /* as in src/engine/cache.c */
    uint32_t magic;
    uint16_t version;
    uint16_t header_size;
    uint32_t dim;
    uint32_t tokens;
    uint64_t checksum;
};

static void mdb_ok(int rc, const char *what) {
    if (rc) {
        fprintf(stderr, "embd: fuzz: %s: %s\n", what, mdb_strerror(rc));
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in in = {data, size};
    uint8_t flags = fuzz_u8(&in);
    int D = 1 + fuzz_u8(&in) % 16;
    size_t mem_bytes = (size_t)fuzz_u8(&in) * 64;
    const char *dir = fuzz_temp_dir();
    fuzz_unlink(dir, "data.mdb");
    fuzz_unlink(dir, "lock.mdb");

    static embd_cache_key keys[MAX_VALUES];
    static float vecs[MAX_VALUES][16];
    static int intact[MAX_VALUES];
    size_t n = 0;

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, vdb;
    mdb_ok(mdb_env_create(&env), "env");
    mdb_ok(mdb_env_set_maxdbs(env, 4), "maxdbs");
    mdb_ok(mdb_env_set_mapsize(env, MAP_BYTES), "mapsize");
    mdb_ok(mdb_env_open(env, dir, MDB_NOSYNC, 0644), "open");
    mdb_ok(mdb_txn_begin(env, NULL, 0, &txn), "begin");
    bool meta_good = !(flags & 3);
    if (!(flags & 2)) {
        mdb_ok(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), "dbi meta");
        char want[64];
        snprintf(want, sizeof want, "%s %d", EMBD_CACHE_FORMAT, EMBD_CACHE_FORMAT_VERSION);
        MDB_val k = {6, "format"}, v = {strlen(want), want};
        if (flags & 1) {
            size_t got;
            v.mv_data = (void *)fuzz_bytes(&in, fuzz_u8(&in), &got);
            v.mv_size = got;
            meta_good = got == strlen(want) && memcmp(v.mv_data, want, got) == 0;
        }
        mdb_ok(mdb_put(txn, meta, &k, &v, 0), "put meta");
    }
    mdb_ok(mdb_dbi_open(txn, "vectors", MDB_CREATE, &vdb), "dbi vectors");
    while (in.left && n < MAX_VALUES) {
        uint8_t vf = fuzz_u8(&in);
        size_t got;
        const uint8_t *b = fuzz_bytes(&in, 4 * (size_t)D, &got);
        memset(vecs[n], 0, sizeof vecs[n]);
        memcpy(vecs[n], b, got);
        char head[16];
        snprintf(head, sizeof head, "fuzz %zu", n);
        embd_cache_key_make(&keys[n], head, strlen(head), "text", 4);
        uint8_t val[24 + 64 + 256];
        struct value_header h = {0x56424d45u, 2, 24, (uint32_t)D, 7, 0};
        h.checksum = XXH3_64bits_withSeed(vecs[n], 4 * (size_t)D, keys[n].lo ^ keys[n].hi ^ 7u);
        memcpy(val, &h, sizeof h);
        memcpy(val + 24, vecs[n], 4 * (size_t)D);
        size_t vlen = 24 + 4 * (size_t)D;
        intact[n] = (vf & 3) == 0;
        if ((vf & 3) == 1) {
            size_t pos = fuzz_u16(&in) % vlen;
            val[pos] ^= (uint8_t)(fuzz_u8(&in) | 1);
        } else if ((vf & 3) == 2) {
            size_t cut = fuzz_u16(&in) % vlen; /* shorter, never equal */
            vlen = cut;
        } else if ((vf & 3) == 3) {
            vlen = fuzz_u16(&in) % sizeof val;
            b = fuzz_bytes(&in, vlen, &got);
            memset(val, 0, vlen);
            memcpy(val, b, got);
            /* fuzzed bytes could spell an intact value: treat exactly that as intact */
            intact[n] = vlen == 24 + 4 * (size_t)D && memcmp(val, &h, 24) == 0;
            if (intact[n]) memcpy(vecs[n], val + 24, 4 * (size_t)D);
            if (intact[n]) {
                h.checksum =
                    XXH3_64bits_withSeed(vecs[n], 4 * (size_t)D, keys[n].lo ^ keys[n].hi ^ 7u);
                intact[n] = memcmp(val, &h, 24) == 0;
            }
        }
        MDB_val k = {sizeof keys[n], &keys[n]}, v = {vlen, val};
        if (mdb_put(txn, vdb, &k, &v, 0)) break; /* map full: enough values */
        n++;
    }
    mdb_ok(mdb_txn_commit(txn), "commit");
    mdb_env_close(env);

    struct embd_cache_params p = {
        .dim = D, .mem_bytes = mem_bytes, .dir = dir, .map_bytes = MAP_BYTES};
    embd_cache *c = NULL;
    enum embd_status st = embd_cache_open(&p, NULL, &c);
    FUZZ_CHECK(st == EMBD_OK);
    struct embd_cache_info info;
    embd_cache_get_info(c, &info);
    FUZZ_CHECK(info.disk);
    /* A missing meta record is foreign too: the main table lists "vectors". */
    FUZZ_CHECK(info.rebuilt == (meta_good ? 0 : 1));
    static unsigned char hit[MAX_VALUES];
    static float packed[MAX_VALUES * 16]; /* (n, D) */
    size_t hits = embd_cache_get(c, keys, n, packed, g_tok_out, hit);
    size_t h_count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!hit[i]) {
            FUZZ_CHECK(!intact[i] || info.rebuilt);
            continue;
        }
        h_count++;
        FUZZ_CHECK(intact[i] && !info.rebuilt);
        FUZZ_CHECK(memcmp(packed + i * (size_t)D, vecs[i], 4 * (size_t)D) == 0);
    }
    FUZZ_CHECK(hits == h_count);

    /* Put every vector (intact now) and read them back, also after a reopen. */
    for (size_t i = 0; i < n; i++)
        memcpy(packed + i * (size_t)D, vecs[i], 4 * (size_t)D);
    embd_cache_put(c, keys, n, packed, g_tok);
    embd_cache_close(c);
    c = NULL;
    FUZZ_CHECK(embd_cache_open(&p, NULL, &c) == EMBD_OK);
    memset(packed, 0xff, sizeof packed);
    FUZZ_CHECK(embd_cache_get(c, keys, n, packed, g_tok_out, hit) == n);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(memcmp(packed + i * (size_t)D, vecs[i], 4 * (size_t)D) == 0);
    embd_cache_close(c);
    return 0;
}
