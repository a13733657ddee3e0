/* fuzz_store.c — the embedded store (src/store/store.c) opened and searched
 * on fuzzed meta.json and records.log files.
 *
 * Input: byte 0 = flags, byte 1 picks D (1..8).
 *   flags & 1: meta.json is raw input (u16 length + bytes), else a valid one.
 *   flags & 2: records.log is the rest of the input verbatim; else it is
 *   built from records, each: flags u8, id length u8, text length u8, id,
 *   text, D float32; record flags 1/2/4 replace the magic / payload length /
 *   hash with fuzzed values (so they are mostly intact and the loader goes
 *   deep), 8 cuts the record short (a torn tail) and ends the log.
 * Checks: a read-only and a writable open agree; search answers min(k, n)
 * hits whose ids are found again; an append after a writable open (which
 * truncates a torn tail) survives a reopen with nothing lost. */
#include "fuzz.h"
#include "store/store.h"
#include "util/util.h"

#include <math.h>
#include <string.h>

#define FP 0x00000000000000aaull
#define MAX_LOG (1u << 20)

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Builds records.log from structured input into buf; returns its length. */
static size_t build_log(fuzz_in *in, int D, uint8_t *buf, size_t cap) {
    size_t len = 0;
    while (in->left) {
        uint8_t rf = fuzz_u8(in);
        size_t idl = fuzz_u8(in), tl = fuzz_u8(in), got;
        size_t plen = 8 + idl + tl + 4 * (size_t)D;
        if (len + 16 + plen > cap) break;
        uint8_t *h = buf + len, *p = h + 16;
        put32(p, (uint32_t)idl);
        const uint8_t *b = fuzz_bytes(in, idl, &got);
        memset(p + 4, 'x', idl);
        memcpy(p + 4, b, got);
        put32(p + 4 + idl, (uint32_t)tl);
        b = fuzz_bytes(in, tl, &got);
        memset(p + 8 + idl, 't', tl);
        memcpy(p + 8 + idl, b, got);
        b = fuzz_bytes(in, 4 * (size_t)D, &got);
        memset(p + 8 + idl + tl, 0, 4 * (size_t)D);
        memcpy(p + 8 + idl + tl, b, got);
        put32(h, rf & 1 ? fuzz_u32(in) : 0x52444d45u);
        put32(h + 4, rf & 2 ? fuzz_u32(in) : (uint32_t)plen);
        uint64_t hash = embd_hash64(0, p, plen);
        if (rf & 4) hash ^= (uint64_t)fuzz_u32(in) | 1;
        put32(h + 8, (uint32_t)hash);
        put32(h + 12, (uint32_t)(hash >> 32));
        if (rf & 8) {
            len += fuzz_u16(in) % (16 + plen);
            break;
        }
        len += 16 + plen;
    }
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t log[MAX_LOG];
    fuzz_in in = {data, size};
    uint8_t flags = fuzz_u8(&in);
    int D = 1 + fuzz_u8(&in) % 8;
    const char *dir = fuzz_temp_dir();

    char meta[256];
    if (flags & 1) {
        size_t got;
        const uint8_t *m = fuzz_bytes(&in, fuzz_u16(&in) % 4096, &got);
        fuzz_write(dir, "meta.json", m, got);
    } else {
        int n = snprintf(meta, sizeof meta,
                         "{\"format\": \"embd-store\", \"version\": 1, \"dim\": %d, "
                         "\"model_fingerprint\": \"%016llx\", \"normalized\": %s}\n",
                         D, (unsigned long long)FP, flags & 4 ? "true" : "false");
        fuzz_write(dir, "meta.json", meta, (size_t)n);
    }
    size_t log_len;
    if (flags & 2) {
        const uint8_t *b = fuzz_bytes(&in, MAX_LOG, &log_len);
        fuzz_write(dir, "records.log", b, log_len);
    } else {
        log_len = build_log(&in, D, log, sizeof log);
        fuzz_write(dir, "records.log", log, log_len);
    }

    struct embd_store_params p = {.dim = D, .fingerprint = FP, .normalized = false};
    embd_store *s = NULL;
    struct embd_store_open_info info;
    enum embd_status st = embd_store_open(dir, &p, &s, &info);
    size_t count = 0;
    if (st != EMBD_OK) {
        FUZZ_CHECK(s == NULL);
        FUZZ_CHECK(st == EMBD_ERR_IO || st == EMBD_ERR_INVALID_ARG || st == EMBD_ERR_NOMEM);
        FUZZ_CHECK(embd_last_error()[0] != '\0');
    } else {
        count = embd_store_count(s);
        FUZZ_CHECK(info.dropped_bytes <= log_len);
        FUZZ_CHECK(count <= log_len / 16);
        float q[8];
        for (int d = 0; d < D; d++)
            q[d] = 1.0f / (float)(d + 1);
        struct embd_store_hit hits[5];
        size_t nh = 0;
        st = embd_store_search(s, q, 5, hits, &nh);
        FUZZ_CHECK(st == EMBD_OK);
        FUZZ_CHECK(nh == (count < 5 ? count : 5));
        char ids[5][4096];
        size_t lens[5];
        for (size_t i = 0; i < nh; i++) {
            FUZZ_CHECK(hits[i].id_len >= 1 && hits[i].id_len <= EMBD_STORE_MAX_ID);
            lens[i] = hits[i].id_len;
            memcpy(ids[i], hits[i].id, lens[i]);
        }
        for (size_t i = 0; i < nh; i++) {
            const float *v = NULL;
            FUZZ_CHECK(embd_store_get(s, ids[i], lens[i], &v) == EMBD_OK && v != NULL);
        }
        embd_store_close(s);
    }

    /* Writable: the same verdict, a torn tail cut, then an append kept. */
    p.writable = true;
    s = NULL;
    enum embd_status st_w = embd_store_open(dir, &p, &s, &info);
    FUZZ_CHECK((st_w == EMBD_OK) == (st == EMBD_OK) || st == EMBD_ERR_NOMEM ||
               st_w == EMBD_ERR_NOMEM);
    if (st_w == EMBD_OK) {
        FUZZ_CHECK(embd_store_count(s) == count);
        const char *id = "fuzz-new";
        size_t idl = strlen(id), tl = 4, replaced = 0;
        const char *text = "text";
        float v[8] = {0.5f, 0.25f, 0.125f, 1, 2, 3, 4, 5};
        FUZZ_CHECK(embd_store_add(s, &id, &idl, &text, &tl, v, 1, &replaced) == EMBD_OK);
        FUZZ_CHECK(embd_store_count(s) == count + 1 - replaced);
        FUZZ_CHECK(embd_store_flush(s) == EMBD_OK);
        embd_store_close(s);
        p.writable = false;
        s = NULL;
        FUZZ_CHECK(embd_store_open(dir, &p, &s, &info) == EMBD_OK);
        FUZZ_CHECK(info.dropped_bytes == 0);
        FUZZ_CHECK(embd_store_count(s) == count + 1 - replaced);
        const float *got = NULL;
        FUZZ_CHECK(embd_store_get(s, id, idl, &got) == EMBD_OK);
        FUZZ_CHECK(memcmp(got, v, (size_t)D * sizeof(float)) == 0);
        embd_store_close(s);
    }
    fuzz_unlink(dir, "meta.json");
    fuzz_unlink(dir, "records.log");
    return 0;
}
