/* test_store.c — the embedded vector store on random vectors (no model):
 * add, reopen, count, exact top-k against brute force, ties, replacement,
 * model mismatch, torn tails at every byte, a corrupt middle record, bad
 * meta.json, limits, the writer lock, and allocation-failure injection. */
#include "store/store.h"
#include "../test.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define D 32
#define FP 0x0123456789abcdefull

static char root[256];
static int dir_seq;

static uint64_t rng = 88172645463325252ull;

static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void rand_vec(float *v) {
    for (int d = 0; d < D; d++)
        v[d] = frand();
}

static void new_dir(char *buf, size_t cap) {
    snprintf(buf, cap, "%s/s%d", root, dir_seq++);
}

static void file_path(char *buf, size_t cap, const char *dir, const char *name) {
    snprintf(buf, cap, "%s/%s", dir, name);
}

static long file_size(const char *dir, const char *name) {
    char p[1024];
    file_path(p, sizeof p, dir, name);
    struct stat st;
    return stat(p, &st) ? -1 : (long)st.st_size;
}

static void rm_store(const char *dir) {
    const char *names[] = {"meta.json", "records.log", "meta.json.tmp", "junk.txt"};
    char p[1024];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        file_path(p, sizeof p, dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static struct embd_store_params params(bool create, bool writable) {
    struct embd_store_params p = {
        .dim = D, .fingerprint = FP, .normalized = true, .create = create, .writable = writable};
    return p;
}

/* Adds records id "<prefix><i>", text "text of <prefix><i>" with vecs (n, D). */
static enum embd_status add_n(embd_store *s, const char *prefix, size_t first, size_t n,
                              const float *vecs, size_t *replaced) {
    enum embd_status st = EMBD_ERR_NOMEM;
    char **ids = calloc(n, sizeof *ids), **texts = calloc(n, sizeof *texts);
    size_t *il = calloc(n, sizeof *il), *tl = calloc(n, sizeof *tl);
    for (size_t i = 0; i < n; i++) {
        ids[i] = malloc(64);
        texts[i] = malloc(96);
        il[i] = (size_t)snprintf(ids[i], 64, "%s%zu", prefix, first + i);
        tl[i] = (size_t)snprintf(texts[i], 96, "text of %s%zu", prefix, first + i);
    }
    st = embd_store_add(s, (const char *const *)ids, il, (const char *const *)texts, tl, vecs, n,
                        replaced);
    for (size_t i = 0; i < n; i++)
        free(ids[i]), free(texts[i]);
    free(ids), free(texts), free(il), free(tl);
    return st;
}

static bool hit_is(const struct embd_store_hit *h, const char *id) {
    return h->id_len == strlen(id) && !memcmp(h->id, id, h->id_len);
}

/* Top-k equals brute force: the k-th best scores agree within float
 * rounding (sgemv and a double loop sum in different orders: 1e-5 is far
 * above the error of a 32-term sum of values in [-1, 1]), every hit's
 * reported score equals its brute-force score, and the text matches the id. */
static void check_topk(embd_store *s, const float *all, const char *prefix, size_t n,
                       const uint8_t *dead, const float *q, size_t k) {
    double *bf = calloc(n, sizeof *bf);
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        double acc = 0;
        for (int d = 0; d < D; d++)
            acc += (double)all[i * D + d] * q[d];
        bf[i] = dead && dead[i] ? -INFINITY : acc;
        live += !(dead && dead[i]);
    }
    struct embd_store_hit *hits = calloc(k ? k : 1, sizeof *hits);
    size_t nh = 0;
    CHECK_EQ_INT(embd_store_search(s, q, k, hits, &nh), EMBD_OK);
    CHECK_EQ_INT(nh, k < live ? k : live);
    /* sort brute force descending (selection, small n) */
    size_t *order = calloc(n, sizeof *order);
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = 0; i < nh; i++) {
        size_t best = i;
        for (size_t j = i + 1; j < n; j++)
            if (bf[order[j]] > bf[order[best]]) best = j;
        size_t t = order[i];
        order[i] = order[best];
        order[best] = t;
    }
    for (size_t r = 0; r < nh; r++) {
        CHECK_MSG(fabs(hits[r].score - bf[order[r]]) < 1e-5, "rank %zu: %g vs %g", r,
                  (double)hits[r].score, bf[order[r]]);
        if (r) CHECK(hits[r].score <= hits[r - 1].score);
        char id[64], text[96];
        snprintf(id, sizeof id, "%.*s", (int)hits[r].id_len, hits[r].id);
        size_t idx = (size_t)strtoul(id + strlen(prefix), NULL, 10);
        CHECK(idx < n);
        if (idx < n) CHECK(fabs(hits[r].score - bf[idx]) < 1e-5);
        snprintf(text, sizeof text, "text of %s", id);
        CHECK(hits[r].text_len == strlen(text) && !memcmp(hits[r].text, text, hits[r].text_len));
    }
    free(order);
    free(hits);
    free(bf);
}

static void test_basic(void) {
    char dir[512];
    new_dir(dir, sizeof dir);
    const size_t n = 700;
    float *vecs = malloc(n * D * sizeof *vecs), q[D];
    for (size_t i = 0; i < n; i++)
        rand_vec(vecs + i * D);

    embd_store *s = NULL;
    struct embd_store_open_info info;
    struct embd_store_params p = params(true, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, &info), EMBD_OK);
    CHECK(info.created && info.dropped_bytes == 0);
    CHECK_EQ_INT(embd_store_count(s), 0);
    rand_vec(q);
    size_t nh = 5;
    struct embd_store_hit hits[10];
    CHECK_EQ_INT(embd_store_search(s, q, 10, hits, &nh), EMBD_OK);
    CHECK_EQ_INT(nh, 0);
    size_t rep = 99;
    CHECK_EQ_INT(add_n(s, "doc-", 0, 300, vecs, &rep), EMBD_OK);
    CHECK_EQ_INT(rep, 0);
    CHECK_EQ_INT(add_n(s, "doc-", 300, n - 300, vecs + 300 * D, &rep), EMBD_OK);
    CHECK_EQ_INT(embd_store_flush(s), EMBD_OK);
    CHECK_EQ_INT(embd_store_count(s), n);
    for (int t = 0; t < 5; t++) {
        rand_vec(q);
        check_topk(s, vecs, "doc-", n, NULL, q, 10);
    }
    check_topk(s, vecs, "doc-", n, NULL, q, 1);
    check_topk(s, vecs, "doc-", n, NULL, q, n + 5); /* k > count: everything, sorted */
    embd_store_close(s);

    /* Reopen read-only and writable: same count and results; nothing is created. */
    for (int w = 0; w < 2; w++) {
        p = params(false, w == 1);
        s = NULL;
        CHECK_EQ_INT(embd_store_open(dir, &p, &s, &info), EMBD_OK);
        CHECK(!info.created && info.dropped_bytes == 0);
        CHECK_EQ_INT(embd_store_count(s), n);
        CHECK(embd_store_normalized(s));
        CHECK_EQ_INT(embd_store_dim(s), D);
        check_topk(s, vecs, "doc-", n, NULL, q, 10);
        if (!w) {
            CHECK_EQ_INT(add_n(s, "x", 0, 1, vecs, NULL), EMBD_ERR_INVALID_ARG); /* read-only */
        }
        embd_store_close(s);
    }

    /* Replacement: doc-3 gets a new vector; count stays; the old one is gone. */
    p = params(false, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_OK);
    float nv[2 * D];
    rand_vec(nv);
    rand_vec(nv + D); /* doc-5 twice in one batch: the later one wins */
    const char *rids[3] = {"doc-3", "doc-5", "doc-5"};
    size_t rl[3] = {5, 5, 5};
    const char *rt[3] = {"text of doc-3", "text of doc-5", "text of doc-5"};
    size_t rtl[3] = {13, 13, 13};
    float three[3 * D];
    memcpy(three, nv, D * sizeof(float));
    memcpy(three + D, vecs + 5 * D, D * sizeof(float));
    memcpy(three + 2 * D, nv + D, D * sizeof(float));
    CHECK_EQ_INT(embd_store_add(s, rids, rl, rt, rtl, three, 3, &rep), EMBD_OK);
    CHECK_EQ_INT(rep, 3);
    CHECK_EQ_INT(embd_store_count(s), n);
    memcpy(vecs + 3 * D, nv, D * sizeof(float));
    memcpy(vecs + 5 * D, nv + D, D * sizeof(float));
    for (int round = 0; round < 2; round++) {
        const float *got = NULL;
        CHECK_EQ_INT(embd_store_get(s, "doc-3", 5, &got), EMBD_OK);
        CHECK(got && !memcmp(got, nv, D * sizeof(float)));
        CHECK_EQ_INT(embd_store_get(s, "doc-5", 5, &got), EMBD_OK);
        CHECK(got && !memcmp(got, nv + D, D * sizeof(float)));
        CHECK_EQ_INT(embd_store_get(s, "nope", 4, &got), EMBD_ERR_INVALID_ARG);
        CHECK_EQ_INT(embd_store_count(s), n);
        check_topk(s, vecs, "doc-", n, NULL, nv, 5);
        check_topk(s, vecs, "doc-", n, NULL, q, n); /* every id exactly once */
        struct embd_store_hit all[1000];
        CHECK_EQ_INT(embd_store_search(s, q, 1000, all, &nh), EMBD_OK);
        CHECK_EQ_INT(nh, n);
        int seen3 = 0;
        for (size_t i = 0; i < nh; i++)
            seen3 += hit_is(&all[i], "doc-3");
        CHECK_EQ_INT(seen3, 1);
        embd_store_close(s);
        p = params(false, false);
        CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_OK); /* again, from disk */
    }
    embd_store_close(s);

    /* Model mismatch: both fingerprints and dims named. */
    p = params(false, true);
    p.fingerprint = 0xfeedfacecafebeefull;
    s = NULL;
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_ERR_INVALID_ARG);
    CHECK(s == NULL);
    CHECK(strstr(embd_last_error(), "0123456789abcdef") &&
          strstr(embd_last_error(), "feedfacecafebeef"));
    p = params(true, true);
    p.dim = D + 1;
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_ERR_INVALID_ARG);
    CHECK(strstr(embd_last_error(), "dim 32") && strstr(embd_last_error(), "dim 33"));

    /* One writer at a time. */
    embd_store *s2 = NULL;
    p = params(false, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_OK);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s2, NULL), EMBD_ERR_IO);
    CHECK(strstr(embd_last_error(), "another process") != NULL);
    p = params(false, false);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s2, NULL), EMBD_OK); /* readers are welcome */
    embd_store_close(s2);

    /* Limits and bad input. */
    const char *bid[1] = {""};
    size_t bil[1] = {0}, btl[1] = {1};
    const char *btx[1] = {"t"};
    CHECK_EQ_INT(embd_store_add(s, bid, bil, btx, btl, vecs, 1, NULL), EMBD_ERR_INVALID_ARG);
    char *longid = malloc(EMBD_STORE_MAX_ID + 1);
    memset(longid, 'a', EMBD_STORE_MAX_ID + 1);
    bid[0] = longid;
    bil[0] = EMBD_STORE_MAX_ID + 1;
    CHECK_EQ_INT(embd_store_add(s, bid, bil, btx, btl, vecs, 1, NULL), EMBD_ERR_INVALID_ARG);
    bil[0] = EMBD_STORE_MAX_ID; /* the limit itself is fine */
    CHECK_EQ_INT(embd_store_add(s, bid, bil, btx, btl, vecs, 1, NULL), EMBD_OK);
    free(longid);
    bid[0] = "ok";
    bil[0] = 2;
    btl[0] = EMBD_STORE_MAX_TEXT + 1;
    CHECK_EQ_INT(embd_store_add(s, bid, bil, btx, btl, vecs, 1, NULL), EMBD_ERR_INVALID_ARG);
    btl[0] = 1;
    float bad[D];
    memcpy(bad, vecs, sizeof bad);
    bad[7] = NAN;
    CHECK_EQ_INT(embd_store_add(s, bid, bil, btx, btl, bad, 1, NULL), EMBD_ERR_INVALID_ARG);
    CHECK_EQ_INT(embd_store_search(s, bad, 3, hits, &nh), EMBD_ERR_INVALID_ARG);
    bad[7] = INFINITY;
    CHECK_EQ_INT(embd_store_add(s, bid, bil, btx, btl, bad, 1, NULL), EMBD_ERR_INVALID_ARG);
    CHECK_EQ_INT(embd_store_count(s), n + 1);
    embd_store_close(s);
    rm_store(dir);
    free(vecs);
}

/* Exact ties (integer-valued vectors: every sum is exact) rank by lower slot. */
static void test_ties(void) {
    char dir[512];
    new_dir(dir, sizeof dir);
    const size_t n = 50;
    float vecs[50 * D], q[D];
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < D; d++)
            vecs[i * D + d] = (float)((i * 7 + (size_t)d * 3) % 5) - 2.0f;
    for (int d = 0; d < D; d++)
        q[d] = 1.0f;
    for (int d = 0; d < D; d++)
        vecs[40 * D + d] = vecs[17 * D + d] = vecs[5 * D + d] = 3.0f; /* the best, tied */
    embd_store *s = NULL;
    struct embd_store_params p = params(true, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_OK);
    CHECK_EQ_INT(add_n(s, "t", 0, n, vecs, NULL), EMBD_OK);
    struct embd_store_hit hits[4];
    size_t nh = 0;
    CHECK_EQ_INT(embd_store_search(s, q, 4, hits, &nh), EMBD_OK);
    CHECK_EQ_INT(nh, 4);
    CHECK(hit_is(&hits[0], "t5") && hit_is(&hits[1], "t17") && hit_is(&hits[2], "t40"));
    CHECK(hits[0].score == 96.0f && hits[2].score == 96.0f && hits[3].score < 96.0f);
    embd_store_close(s);
    rm_store(dir);
}

/* Writes a store of 3 records and returns the log's bytes and record offsets. */
static unsigned char *three_records(const char *dir, float *vecs, long off[4]) {
    embd_store *s = NULL;
    struct embd_store_params p = params(true, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_OK);
    off[0] = 0;
    for (int i = 0; i < 3; i++) {
        rand_vec(vecs + i * D);
        CHECK_EQ_INT(add_n(s, "r", (size_t)i, 1, vecs + i * D, NULL), EMBD_OK);
        off[i + 1] = file_size(dir, "records.log");
    }
    CHECK_EQ_INT(embd_store_flush(s), EMBD_OK);
    embd_store_close(s);
    unsigned char *bytes = malloc((size_t)off[3]);
    char path[1024];
    file_path(path, sizeof path, dir, "records.log");
    FILE *f = fopen(path, "rb");
    CHECK(f && fread(bytes, 1, (size_t)off[3], f) == (size_t)off[3]);
    if (f) fclose(f);
    return bytes;
}

static void write_log(const char *dir, const unsigned char *bytes, size_t len) {
    char path[1024];
    file_path(path, sizeof path, dir, "records.log");
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(bytes, 1, len, f) == len);
    if (f) fclose(f);
}

static void test_torn_tail(void) {
    char dir[512];
    new_dir(dir, sizeof dir);
    float vecs[4 * D];
    long off[4];
    unsigned char *bytes = three_records(dir, vecs, off);
    int bad_counts = 0, bad_sizes = 0, bad_append = 0;
    /* Cut the log at every byte inside the last record. */
    for (long cut = off[2]; cut < off[3]; cut++) {
        write_log(dir, bytes, (size_t)cut);
        embd_store *s = NULL;
        struct embd_store_open_info info;
        struct embd_store_params p = params(false, false);
        /* read-only: the tail is ignored, the file is left alone */
        if (embd_store_open(dir, &p, &s, &info) != EMBD_OK || embd_store_count(s) != 2 ||
            info.dropped_bytes != (uint64_t)(cut - off[2]) || file_size(dir, "records.log") != cut)
            bad_counts++;
        embd_store_close(s);
        s = NULL;
        p = params(false, true);
        if (embd_store_open(dir, &p, &s, &info) != EMBD_OK || embd_store_count(s) != 2 ||
            info.dropped_bytes != (uint64_t)(cut - off[2]))
            bad_counts++;
        if (file_size(dir, "records.log") != off[2]) bad_sizes++; /* truncated away */
        if (s && add_n(s, "r", 2, 1, vecs + 2 * D, NULL) != EMBD_OK) bad_append++;
        embd_store_close(s);
        s = NULL;
        if (embd_store_open(dir, &p, &s, &info) != EMBD_OK || embd_store_count(s) != 3 ||
            info.dropped_bytes != 0)
            bad_append++;
        if (s) check_topk(s, vecs, "r", 3, NULL, vecs + D, 3);
        embd_store_close(s);
    }
    CHECK_EQ_INT(bad_counts, 0);
    CHECK_EQ_INT(bad_sizes, 0);
    CHECK_EQ_INT(bad_append, 0);

    /* A corrupt last record (flipped byte in its vector) is a tail too. */
    unsigned char *copy = malloc((size_t)off[3]);
    memcpy(copy, bytes, (size_t)off[3]);
    copy[off[3] - 3] ^= 0x40;
    write_log(dir, copy, (size_t)off[3]);
    embd_store *s = NULL;
    struct embd_store_open_info info;
    struct embd_store_params p = params(false, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, &info), EMBD_OK);
    CHECK_EQ_INT(embd_store_count(s), 2);
    CHECK_EQ_INT(info.dropped_bytes, off[3] - off[2]);
    embd_store_close(s);

    /* Corruption in the middle, followed by a good record, is an error. */
    const long where[] = {off[1] + 20, off[1] + 40, off[1], off[1] + 5, off[0] + 30};
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        memcpy(copy, bytes, (size_t)off[3]);
        copy[where[w]] ^= 0x01;
        write_log(dir, copy, (size_t)off[3]);
        s = NULL;
        for (int wr = 0; wr < 2; wr++) {
            p = params(false, wr == 1);
            CHECK_EQ_INT(embd_store_open(dir, &p, &s, &info), EMBD_ERR_IO);
            CHECK(s == NULL);
            CHECK(strstr(embd_last_error(), "corrupt record") != NULL);
        }
        CHECK_EQ_INT(file_size(dir, "records.log"), off[3]); /* nothing dropped */
    }
    /* A length field pointing past the end in the middle: also an error. */
    memcpy(copy, bytes, (size_t)off[3]);
    copy[off[1] + 6] = 0x7f;
    write_log(dir, copy, (size_t)off[3]);
    p = params(false, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, &info), EMBD_ERR_IO);
    free(copy);
    free(bytes);
    rm_store(dir);
}

/* A record whose checksum is intact but whose vector holds NaN (a crafted
 * file: embd_store_add refuses such vectors) makes open fail, naming it. */
static void test_nonfinite_record(void) {
    char dir[512];
    new_dir(dir, sizeof dir);
    float vecs[4 * D];
    long off[4];
    unsigned char *bytes = three_records(dir, vecs, off);
    const unsigned char bad[2][4] = {{0x00, 0x00, 0xc0, 0x7f}, {0x00, 0x00, 0x80, 0xff}};
    for (int k = 0; k < 2; k++) { /* NaN, then -infinity, in the middle record's vector */
        unsigned char *copy = malloc((size_t)off[3]);
        memcpy(copy, bytes, (size_t)off[3]);
        memcpy(copy + off[2] - 4, bad[k], 4); /* its last float */
        const size_t plen = (size_t)(off[2] - off[1]) - 16;
        uint64_t h = embd_hash64(0, copy + off[1] + 16, plen);
        for (int b = 0; b < 8; b++)
            copy[off[1] + 8 + b] = (unsigned char)(h >> (8 * b));
        write_log(dir, copy, (size_t)off[3]);
        for (int wr = 0; wr < 2; wr++) {
            embd_store *s = NULL;
            struct embd_store_open_info info;
            struct embd_store_params p = params(false, wr == 1);
            CHECK_EQ_INT(embd_store_open(dir, &p, &s, &info), EMBD_ERR_IO);
            CHECK(s == NULL);
            CHECK_MSG(strstr(embd_last_error(), "non-finite") != NULL, "error: %s",
                      embd_last_error());
        }
        CHECK_EQ_INT(file_size(dir, "records.log"), off[3]); /* nothing dropped */
        free(copy);
    }
    /* the untouched log still opens */
    write_log(dir, bytes, (size_t)off[3]);
    embd_store *s = NULL;
    struct embd_store_params p = params(false, false);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_OK);
    CHECK_EQ_INT(embd_store_count(s), 3);
    embd_store_close(s);
    free(bytes);
    rm_store(dir);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[1024];
    file_path(path, sizeof path, dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_bad_meta(void) {
    char dir[512];
    new_dir(dir, sizeof dir);
    embd_store *s = NULL;
    struct embd_store_params p = params(false, false);
    /* missing store, read-only or without create: no store there (embd.h's
     * EMBD_ERR_INVALID_ARG) */
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_ERR_INVALID_ARG);
    p = params(false, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_ERR_INVALID_ARG);
    CHECK(mkdir(dir, 0777) == 0);
    const char *metas[] = {
        "not json at all",
        "{\"format\": \"faiss\", \"version\": 1, \"dim\": 32, \"model_fingerprint\": "
        "\"0123456789abcdef\", \"normalized\": true}",
        "{\"format\": \"embd-store\", \"version\": 2, \"dim\": 32, \"model_fingerprint\": "
        "\"0123456789abcdef\", \"normalized\": true}",
        "{\"format\": \"embd-store\", \"version\": 1, \"dim\": \"32\", \"model_fingerprint\": "
        "\"0123456789abcdef\", \"normalized\": true}",
        "{\"format\": \"embd-store\", \"version\": 1, \"dim\": 32, \"model_fingerprint\": "
        "\"0123456789abcdeg\", \"normalized\": true}",
        "{\"format\": \"embd-store\", \"version\": 1, \"dim\": 32, \"model_fingerprint\": "
        "\"0123456789abcdef\"}",
        "[1, 2]",
        "",
    };
    const char *expect[] = {"not valid JSON", "not an embd store", "version 2", "corrupt",
                            "corrupt",        "corrupt",           "not valid", "not valid"};
    for (size_t i = 0; i < sizeof metas / sizeof metas[0]; i++) {
        write_text(dir, "meta.json", metas[i]);
        p = params(true, true);
        s = NULL;
        CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_ERR_IO);
        CHECK(s == NULL);
        CHECK_MSG(strstr(embd_last_error(), expect[i]) != NULL, "meta %zu: %s", i,
                  embd_last_error());
    }
    /* A directory with other files and no meta.json is not taken over. */
    char path[1024];
    file_path(path, sizeof path, dir, "meta.json");
    unlink(path);
    write_text(dir, "junk.txt", "hello");
    p = params(true, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_ERR_IO);
    CHECK(strstr(embd_last_error(), "not an embd store") != NULL);
    CHECK_EQ_INT(file_size(dir, "meta.json"), -1);
    file_path(path, sizeof path, dir, "junk.txt");
    unlink(path);
    /* An empty directory is fine (a leftover meta.json.tmp too). */
    write_text(dir, "meta.json.tmp", "{");
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_OK);
    CHECK_EQ_INT(file_size(dir, "meta.json.tmp"), -1);
    embd_store_close(s);
    /* records.log without meta.json: refused. */
    file_path(path, sizeof path, dir, "meta.json");
    unlink(path);
    CHECK_EQ_INT(embd_store_open(dir, &p, &s, NULL), EMBD_ERR_IO);
    /* Missing parents are created. */
    char nested[1024];
    snprintf(nested, sizeof nested, "%s/a/b", dir);
    s = NULL;
    CHECK_EQ_INT(embd_store_open(nested, &p, &s, NULL), EMBD_OK);
    embd_store_close(s);
    rm_store(nested);
    snprintf(nested, sizeof nested, "%s/a", dir);
    CHECK(rmdir(nested) == 0);
    /* A path that is a file. */
    file_path(path, sizeof path, dir, "records.log");
    CHECK_EQ_INT(embd_store_open(path, &p, &s, NULL), EMBD_ERR_IO);
    rm_store(dir);
}

/* Fails the Nth allocation, raising N until open + add + search (and a
 * reopen that reads the log) all succeed: no crash, no leak (ASan), and a
 * failed add leaves the store as it was. */
static void test_faults(void) {
    const size_t n = 300;
    float *vecs = malloc(n * D * sizeof *vecs), q[D];
    for (size_t i = 0; i < n; i++)
        rand_vec(vecs + i * D);
    rand_vec(q);
    int done = 0, bad_state = 0, fails = 0;
    for (long N = 0; N < 10000 && !done; N++) {
        char dir[512];
        new_dir(dir, sizeof dir);
        struct embd_store_params p = params(true, true);
        embd_store *s = NULL;
        struct embd_store_hit hits[10];
        size_t nh = 0;
        embd_fault_alloc_after(N);
        enum embd_status st = embd_store_open(dir, &p, &s, NULL);
        if (st == EMBD_OK) {
            st = add_n(s, "f", 0, n / 2, vecs, NULL);
            if (st != EMBD_OK && embd_store_count(s) != 0) bad_state++;
        }
        if (st == EMBD_OK) {
            st = add_n(s, "f", n / 2, n - n / 2, vecs + (n / 2) * D, NULL);
            if (st != EMBD_OK && embd_store_count(s) != n / 2) bad_state++;
        }
        if (st == EMBD_OK) st = embd_store_search(s, q, 10, hits, &nh);
        embd_store_close(s);
        s = NULL;
        if (st == EMBD_OK) {
            p = params(false, false);
            st = embd_store_open(dir, &p, &s, NULL);
            if (st == EMBD_OK) st = embd_store_search(s, q, 10, hits, &nh);
            if (st == EMBD_OK && (embd_store_count(s) != n || nh != 10)) bad_state++;
            embd_store_close(s);
        }
        embd_fault_alloc_after(-1);
        if (st == EMBD_OK) {
            done = 1;
        } else {
            fails++;
            if (st != EMBD_ERR_NOMEM) {
                bad_state++;
                fprintf(stderr, "N=%ld: unexpected status %d: %s\n", N, st, embd_last_error());
            }
        }
        /* Whatever failed, the store on disk is still a valid store. */
        p = params(false, false);
        s = NULL;
        if (file_size(dir, "meta.json") >= 0) {
            if (embd_store_open(dir, &p, &s, NULL) != EMBD_OK) bad_state++;
            embd_store_close(s);
        }
        rm_store(dir);
    }
    CHECK(done);
    CHECK(fails > 5);
    CHECK_EQ_INT(bad_state, 0);
    free(vecs);
}

/* A reader opened before a writer appends takes the new and replaced
 * records in at its next count or search (embd serve --store DIR stays
 * current); a record half-written is left for later; a store whose
 * records.log is gone is an error, not an empty store. */
static void test_reader_follows(void) {
    char dir[512];
    new_dir(dir, sizeof dir);
    const size_t n = 40;
    float *vecs = malloc(n * D * sizeof *vecs), q[D];
    for (size_t i = 0; i < n; i++)
        rand_vec(vecs + i * D);
    embd_store *w = NULL, *r = NULL;
    struct embd_store_params pw = params(true, true), pr = params(false, false);
    CHECK_EQ_INT(embd_store_open(dir, &pw, &w, NULL), EMBD_OK);
    CHECK_EQ_INT(add_n(w, "doc-", 0, 20, vecs, NULL), EMBD_OK);
    CHECK_EQ_INT(embd_store_flush(w), EMBD_OK);
    CHECK_EQ_INT(embd_store_open(dir, &pr, &r, NULL), EMBD_OK);
    CHECK_EQ_INT(embd_store_count(r), 20);
    /* the writer adds 20 more, then replaces doc-0 with doc-25's vector */
    CHECK_EQ_INT(add_n(w, "doc-", 20, 20, vecs + 20 * D, NULL), EMBD_OK);
    CHECK_EQ_INT(embd_store_count(r), 40);
    rand_vec(q);
    check_topk(r, vecs, "doc-", n, NULL, q, 10);
    const char *id = "doc-0", *text = "text of doc-0";
    size_t il = 5, tl = 13;
    CHECK_EQ_INT(embd_store_add(w, &id, &il, &text, &tl, vecs + 25 * D, 1, NULL), EMBD_OK);
    struct embd_store_hit hits[2];
    size_t nh = 0;
    CHECK_EQ_INT(embd_store_search(r, vecs + 25 * D, 2, hits, &nh), EMBD_OK);
    CHECK_EQ_INT(nh, 2);
    CHECK(nh == 2 && ((hit_is(&hits[0], "doc-0") && hit_is(&hits[1], "doc-25")) ||
                      (hit_is(&hits[0], "doc-25") && hit_is(&hits[1], "doc-0"))));
    CHECK_EQ_INT(embd_store_count(r), 40); /* a replacement, not a new record */
    /* half a record at the end (a writer mid-append): left for later */
    char log[600];
    file_path(log, sizeof log, dir, "records.log");
    const long before = file_size(dir, "records.log");
    int fd = open(log, O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, "\x45\x4d\x42\x44\x00", 5) == 5);
    close(fd);
    CHECK_EQ_INT(embd_store_count(r), 40);
    CHECK_EQ_INT(embd_store_search(r, q, 2, hits, &nh), EMBD_OK);
    CHECK(truncate(log, before) == 0);
    embd_store_close(r);
    embd_store_close(w);
    /* records.log gone, meta.json there: refused, naming it */
    CHECK(unlink(log) == 0);
    r = NULL;
    CHECK_EQ_INT(embd_store_open(dir, &pr, &r, NULL), EMBD_ERR_IO);
    CHECK(strstr(embd_last_error(), "records.log") != NULL);
    rm_store(dir);
    free(vecs);
}

/* A NULL id, or a NULL text with a length, in the arrays: refused, no crash. */
static void test_null_elements(void) {
    char dir[512];
    new_dir(dir, sizeof dir);
    embd_store *w = NULL;
    struct embd_store_params p = params(true, true);
    CHECK_EQ_INT(embd_store_open(dir, &p, &w, NULL), EMBD_OK);
    float v[D];
    rand_vec(v);
    const char *ids[1] = {NULL}, *texts[1] = {"text"};
    size_t il[1] = {3}, tl[1] = {4};
    CHECK_EQ_INT(embd_store_add(w, ids, il, texts, tl, v, 1, NULL), EMBD_ERR_INVALID_ARG);
    ids[0] = "abc";
    texts[0] = NULL;
    CHECK_EQ_INT(embd_store_add(w, ids, il, texts, tl, v, 1, NULL), EMBD_ERR_INVALID_ARG);
    tl[0] = 0; /* no text: fine */
    CHECK_EQ_INT(embd_store_add(w, ids, il, texts, tl, v, 1, NULL), EMBD_OK);
    CHECK_EQ_INT(embd_store_count(w), 1);
    embd_store_close(w);
    rm_store(dir);
}

int main(void) {
    snprintf(root, sizeof root, "%s/embd-store-test-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_basic();
    test_ties();
    test_torn_tail();
    test_nonfinite_record();
    test_bad_meta();
    test_faults();
    test_reader_follows();
    test_null_elements();
    rmdir(root);
    return test_summary("store");
}
