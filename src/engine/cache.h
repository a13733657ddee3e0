/* cache.h — the embedding cache: an in-memory LRU bounded by bytes and an
 * optional LMDB store on disk shared by processes. Keys are XXH3-128 hashes
 * of (context key head, text); values are float32 vectors (D) with a token
 * word (below). A hit returns
 * the bit-identical vector that was stored. The cache is best effort: a
 * failure to store is logged and counted, never an error of the embedding. */
#ifndef EMBD_CACHE_H
#define EMBD_CACHE_H

#include "embd.h"
#include "engine/metrics.h"

#include <stddef.h>
#include <stdint.h>

typedef struct embd_cache embd_cache;

typedef struct {
    uint64_t lo, hi;
} embd_cache_key;

struct embd_cache_params {
    int dim;          /* D, floats per vector */
    size_t mem_bytes; /* in-memory LRU budget; 0 = no memory tier */
    const char *dir;  /* LMDB directory (created if missing), or NULL */
    size_t map_bytes; /* LMDB map size; 0 = 4 GiB (sparse) */
};

#define EMBD_CACHE_DEFAULT_MAP_BYTES ((size_t)4 << 30)
#define EMBD_CACHE_MIN_MAP_BYTES ((size_t)64 << 10) /* smaller asks get this */
#define EMBD_CACHE_MAX_MAP_BYTES ((size_t)1 << 44)  /* 16 TiB; larger asks get this */
#define EMBD_CACHE_FORMAT "embd-embedding-cache"
#define EMBD_CACHE_FORMAT_VERSION 2

/* Opens the cache. A foreign or corrupted LMDB file in `dir` is removed and
 * rebuilt with a warning. Returns EMBD_OK, EMBD_ERR_IO (the directory cannot
 * be made or the store cannot be opened even after a rebuild) or
 * EMBD_ERR_NOMEM. `metrics` (may be NULL) receives hits, misses, evictions. */
enum embd_status embd_cache_open(const struct embd_cache_params *p, embd_metrics *metrics,
                                 embd_cache **out);
void embd_cache_close(embd_cache *c);

/* key = XXH3-128(head || text). */
void embd_cache_key_make(embd_cache_key *key, const void *head, size_t head_len, const char *text,
                         size_t len);

/* Each vector is stored with a token word: the tokens its text was embedded
 * with (low 31 bits) and EMBD_CACHE_TRUNCATED when the text was cut, so that
 * a hit answers a call's token counts and truncation refusals without
 * tokenizing again. */
#define EMBD_CACHE_TRUNCATED 0x80000000u

/* Looks up n keys: for each hit writes out row i (n, D), tokens[i] (n) and
 * sets hit[i] = 1, else hit[i] = 0. Memory first, then disk (a disk hit is
 * copied to memory). Returns the number of hits. */
size_t embd_cache_get(embd_cache *c, const embd_cache_key *keys, size_t n, float *out,
                      uint32_t *tokens, unsigned char *hit);

/* Stores n vectors vecs (n, D) with their token words tokens (n) under keys,
 * in memory and on disk. */
void embd_cache_put(embd_cache *c, const embd_cache_key *keys, size_t n, const float *vecs,
                    const uint32_t *tokens);

struct embd_cache_info {
    uint64_t hits, misses, evictions;
    size_t mem_bytes, mem_entries;
    bool disk;      /* a disk tier is open */
    bool disk_full; /* MDB_MAP_FULL was hit: no more adding */
    int rebuilt;    /* times the disk store was found bad and rebuilt at open */
};

void embd_cache_get_info(embd_cache *c, struct embd_cache_info *info);

#endif
