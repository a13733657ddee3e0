/* cache.c — the embedding cache: an LRU in memory bounded by bytes, and an
 * LMDB environment on disk holding a meta record and one value per key:
 *
 *   value = header (24 bytes: magic "EMBV", version, header size, D,
 *           reserved, XXH3-64 of the vector seeded by the key) + float32 (D)
 *
 * A value whose header, size or checksum is wrong is a miss (and is
 * overwritten by the next store); a store that LMDB refuses to open, or
 * whose meta record is missing or foreign, is deleted and rebuilt. */
#include "engine/cache.h"
#include "util/log.h"
#include "util/util.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VALUE_MAGIC 0x56424d45u /* "EMBV" little-endian */
#define VALUE_VERSION 2         /* 2: the token word in the header */

struct value_header {
    uint32_t magic;
    uint16_t version;
    uint16_t header_size;
    uint32_t dim;
    uint32_t tokens;   /* the token word (cache.h) */
    uint64_t checksum; /* XXH3 of the vector, seeded by the key and the token word */
};
_Static_assert(sizeof(struct value_header) == 24, "value header layout");

struct lru_ent {
    embd_cache_key key;
    struct lru_ent *hnext;       /* hash chain */
    struct lru_ent *prev, *next; /* recency list; head = most recent */
    uint32_t tokens;             /* the token word (cache.h) */
    float vec[];                 /* (D) */
};

struct embd_cache {
    int dim;
    size_t vec_bytes; /* D * 4 */
    size_t ent_bytes; /* bytes charged per memory entry */
    embd_metrics *metrics;
    pthread_mutex_t mu;

    /* memory tier */
    size_t mem_cap, mem_bytes, mem_entries;
    struct lru_ent **table; /* (table_size) chains */
    size_t table_size;      /* power of two */
    struct lru_ent *head, *tail;

    /* disk tier */
    char *dir;
    MDB_env *env;
    MDB_dbi dbi; /* "vectors" */
    size_t map_bytes;
    bool disk_full, warned_err;
    int rebuilt;

    uint64_t hits, misses, evictions;
};

static void count(embd_cache *c, enum embd_counter k, uint64_t v) {
    if (c->metrics && v) embd_metrics_add(c->metrics, k, v);
}

static void publish_gauges(embd_cache *c) {
    if (!c->metrics) return;
    embd_metrics_set(c->metrics, EMBD_G_CACHE_MEM_BYTES, (double)c->mem_bytes);
    embd_metrics_set(c->metrics, EMBD_G_CACHE_MEM_ENTRIES, (double)c->mem_entries);
}

void embd_cache_key_make(embd_cache_key *key, const void *head, size_t head_len, const char *text,
                         size_t len) {
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    XXH3_128bits_update(&st, head, head_len);
    XXH3_128bits_update(&st, text, len);
    XXH128_hash_t h = XXH3_128bits_digest(&st);
    key->lo = h.low64;
    key->hi = h.high64;
}

/* ---- memory tier (callers hold c->mu) ---------------------------------- */

static size_t slot_of(const embd_cache *c, const embd_cache_key *k) {
    return (size_t)(k->lo ^ (k->hi >> 7)) & (c->table_size - 1);
}

static struct lru_ent *mem_find(embd_cache *c, const embd_cache_key *k) {
    if (!c->table) return NULL;
    for (struct lru_ent *e = c->table[slot_of(c, k)]; e; e = e->hnext)
        if (e->key.lo == k->lo && e->key.hi == k->hi) return e;
    return NULL;
}

static void list_unlink(embd_cache *c, struct lru_ent *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_front(embd_cache *c, struct lru_ent *e) {
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static void mem_evict_tail(embd_cache *c) {
    struct lru_ent *e = c->tail;
    list_unlink(c, e);
    struct lru_ent **pp = &c->table[slot_of(c, &e->key)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    embd_free(e);
    c->mem_bytes -= c->ent_bytes;
    c->mem_entries--;
    c->evictions++;
    count(c, EMBD_C_CACHE_EVICTIONS, 1);
}

/* Doubles the hash table; on an allocation failure keeps the old one (the
 * chains just get longer). */
static void mem_grow(embd_cache *c) {
    size_t size = c->table_size ? c->table_size * 2 : 1024;
    struct lru_ent **t = embd_calloc(size, sizeof *t);
    if (!t) return;
    for (size_t i = 0; i < c->table_size; i++) {
        struct lru_ent *e = c->table[i];
        while (e) {
            struct lru_ent *next = e->hnext;
            size_t s = (size_t)(e->key.lo ^ (e->key.hi >> 7)) & (size - 1);
            e->hnext = t[s];
            t[s] = e;
            e = next;
        }
    }
    embd_free(c->table);
    c->table = t;
    c->table_size = size;
}

static void mem_insert(embd_cache *c, const embd_cache_key *k, const float *vec, uint32_t tokens) {
    if (c->ent_bytes > c->mem_cap) return;
    struct lru_ent *e = mem_find(c, k);
    if (e) {
        memcpy(e->vec, vec, c->vec_bytes);
        e->tokens = tokens;
        list_unlink(c, e);
        list_push_front(c, e);
        return;
    }
    while (c->tail && c->mem_bytes + c->ent_bytes > c->mem_cap)
        mem_evict_tail(c);
    if (c->mem_entries >= c->table_size) mem_grow(c);
    if (!c->table) return;
    e = embd_malloc(sizeof *e + c->vec_bytes);
    if (!e) return; /* best effort: not cached */
    e->key = *k;
    e->tokens = tokens;
    memcpy(e->vec, vec, c->vec_bytes);
    size_t s = slot_of(c, k);
    e->hnext = c->table[s];
    c->table[s] = e;
    list_push_front(c, e);
    c->mem_bytes += c->ent_bytes;
    c->mem_entries++;
}

/* ---- disk tier ---------------------------------------------------------- */

static const char meta_key[] = "format";

static void meta_value(char *buf, size_t cap) {
    snprintf(buf, cap, "%s %d", EMBD_CACHE_FORMAT, EMBD_CACHE_FORMAT_VERSION);
}

/* mkdir -p. Returns 0 or -1 with errno set. */
static int make_dirs(const char *path) {
    char tmp[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
    struct stat sb;
    if (stat(tmp, &sb) != 0) return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

enum open_result { OPEN_OK, OPEN_BAD, OPEN_FAIL };

/* Opens the environment and checks (or writes) the meta record. OPEN_BAD: a
 * foreign or corrupted store (why says what); OPEN_FAIL: an error that a
 * rebuild would not cure (the message is set). */
static enum open_result disk_open(embd_cache *c, char *why, size_t why_cap) {
    MDB_txn *txn = NULL;
    MDB_dbi meta, main_dbi;
    int rc = mdb_env_create(&c->env);
    if (rc) goto fail;
    if ((rc = mdb_env_set_maxdbs(c->env, 4)) || (rc = mdb_env_set_mapsize(c->env, c->map_bytes)))
        goto fail;
    rc = mdb_env_open(c->env, c->dir, MDB_NOTLS | MDB_NOMETASYNC, 0644);
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED || rc == MDB_PANIC ||
        rc == MDB_PAGE_NOTFOUND || rc == MDB_INCOMPATIBLE)
        goto bad;
    if (rc) goto fail;
    int dead = 0;
    mdb_reader_check(c->env, &dead); /* readers left by killed processes */

    if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn))) goto classify;
    rc = mdb_dbi_open(txn, "meta", 0, &meta);
    char want[64];
    meta_value(want, sizeof want);
    MDB_val k = {sizeof meta_key - 1, (void *)meta_key}, v;
    if (rc == MDB_NOTFOUND) {
        /* No meta: a fresh store if the main database is empty, else foreign. */
        MDB_stat ms;
        if ((rc = mdb_dbi_open(txn, NULL, 0, &main_dbi)) || (rc = mdb_stat(txn, main_dbi, &ms)))
            goto classify;
        if (ms.ms_entries != 0) {
            snprintf(why, why_cap, "not an embd cache (no meta record)");
            goto bad;
        }
        if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &meta))) goto classify;
        v.mv_size = strlen(want);
        v.mv_data = want;
        if ((rc = mdb_put(txn, meta, &k, &v, 0))) goto classify;
    } else if (rc == 0) {
        rc = mdb_get(txn, meta, &k, &v);
        if (rc == MDB_NOTFOUND ||
            (rc == 0 && (v.mv_size != strlen(want) || memcmp(v.mv_data, want, v.mv_size) != 0))) {
            snprintf(why, why_cap, "foreign or incompatible meta record");
            goto bad;
        }
        if (rc) goto classify;
    } else {
        goto classify;
    }
    if ((rc = mdb_dbi_open(txn, "vectors", MDB_CREATE, &c->dbi))) goto classify;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc) goto classify;
    return OPEN_OK;

classify:
    if (rc == MDB_INCOMPATIBLE || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
        rc == MDB_PANIC || rc == MDB_INVALID || rc == MDB_BAD_VALSIZE)
        goto bad;
fail:
    if (txn) mdb_txn_abort(txn);
    if (c->env) mdb_env_close(c->env);
    c->env = NULL;
    embd_error(rc == ENOMEM ? EMBD_ERR_NOMEM : EMBD_ERR_IO, "cache %s: %s", c->dir,
               mdb_strerror(rc));
    return OPEN_FAIL;
bad:
    if (!why[0]) snprintf(why, why_cap, "%s", mdb_strerror(rc));
    if (txn) mdb_txn_abort(txn);
    if (c->env) mdb_env_close(c->env);
    c->env = NULL;
    return OPEN_BAD;
}

static void remove_store_files(const char *dir) {
    static const char *const names[] = {"data.mdb", "lock.mdb"};
    for (int i = 0; i < 2; i++) {
        char *p = embd_path_join(dir, names[i]);
        if (p) unlink(p);
        embd_free(p);
    }
}

enum embd_status embd_cache_open(const struct embd_cache_params *p, embd_metrics *metrics,
                                 embd_cache **out) {
    if (!out || !p || p->dim <= 0)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_cache_open: bad arguments");
    *out = NULL;
    enum embd_status st = EMBD_OK;
    bool mu_ok = false;
    embd_cache *c = embd_calloc(1, sizeof *c);
    if (!c) goto nomem;
    c->dim = p->dim;
    c->vec_bytes = (size_t)p->dim * sizeof(float);
    c->ent_bytes = sizeof(struct lru_ent) + c->vec_bytes;
    c->mem_cap = p->mem_bytes;
    c->metrics = metrics;
    c->map_bytes = p->map_bytes ? p->map_bytes : EMBD_CACHE_DEFAULT_MAP_BYTES;
    /* LMDB needs a few pages of its own before any entry fits; a map past
     * the address space cannot be made (a sparse map costs nothing more) */
    if (c->map_bytes < EMBD_CACHE_MIN_MAP_BYTES) c->map_bytes = EMBD_CACHE_MIN_MAP_BYTES;
    if (c->map_bytes > EMBD_CACHE_MAX_MAP_BYTES) c->map_bytes = EMBD_CACHE_MAX_MAP_BYTES;
    if (pthread_mutex_init(&c->mu, NULL)) goto nomem;
    mu_ok = true;
    if (p->dir && p->dir[0]) {
        c->dir = embd_strdup(p->dir);
        if (!c->dir) goto nomem;
        if (make_dirs(c->dir) != 0) {
            st = embd_error(EMBD_ERR_IO, "cache directory %s: %s", c->dir, strerror(errno));
            goto fail;
        }
        for (int attempt = 0;; attempt++) {
            char why[160] = "";
            enum open_result r = disk_open(c, why, sizeof why);
            if (r == OPEN_OK) break;
            if (r == OPEN_FAIL) {
                st = EMBD_ERR_IO;
                goto fail;
            }
            if (attempt == 1) {
                st =
                    embd_error(EMBD_ERR_IO, "cache %s: still bad after a rebuild: %s", c->dir, why);
                goto fail;
            }
            embd_log(EMBD_LOG_WARN, "cache", "%s: %s; rebuilding an empty cache", c->dir, why);
            remove_store_files(c->dir);
            c->rebuilt++;
        }
    }
    *out = c;
    return EMBD_OK;

nomem:
    st = embd_error(EMBD_ERR_NOMEM, "out of memory opening the embedding cache");
fail:
    if (c) {
        if (mu_ok) pthread_mutex_destroy(&c->mu);
        embd_free(c->dir);
        embd_free(c);
    }
    return st;
}

void embd_cache_close(embd_cache *c) {
    if (!c) return;
    for (struct lru_ent *e = c->head, *next; e; e = next) {
        next = e->next;
        embd_free(e);
    }
    embd_free(c->table);
    if (c->env) mdb_env_close(c->env);
    pthread_mutex_destroy(&c->mu);
    embd_free(c->dir);
    embd_free(c);
}

static void disk_warn(embd_cache *c, const char *what, int rc) {
    count(c, EMBD_C_CACHE_ERRORS, 1);
    if (c->warned_err) return;
    c->warned_err = true;
    embd_log(EMBD_LOG_WARN, "cache", "%s: %s: %s (treated as misses from now on where it fails)",
             c->dir, what, mdb_strerror(rc));
}

static uint64_t value_checksum(const embd_cache_key *k, const float *vec, size_t bytes,
                               uint32_t tokens) {
    return XXH3_64bits_withSeed(vec, bytes, k->lo ^ k->hi ^ tokens);
}

/* Copies a stored value into vec and *tokens if it is sound. */
static bool value_ok(const embd_cache *c, const embd_cache_key *k, const MDB_val *v, float *vec,
                     uint32_t *tokens) {
    struct value_header h;
    if (v->mv_size != sizeof h + c->vec_bytes) return false;
    memcpy(&h, v->mv_data, sizeof h);
    if (h.magic != VALUE_MAGIC || h.version != VALUE_VERSION || h.header_size != sizeof h ||
        h.dim != (uint32_t)c->dim)
        return false;
    memcpy(vec, (const char *)v->mv_data + sizeof h, c->vec_bytes);
    *tokens = h.tokens;
    return value_checksum(k, vec, c->vec_bytes, h.tokens) == h.checksum;
}

size_t embd_cache_get(embd_cache *c, const embd_cache_key *keys, size_t n, float *out,
                      uint32_t *tokens, unsigned char *hit) {
    const size_t D = (size_t)c->dim;
    size_t hits_mem = 0, hits_disk = 0, missing = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        struct lru_ent *e = mem_find(c, &keys[i]);
        hit[i] = e != NULL;
        if (e) {
            memcpy(out + i * D, e->vec, c->vec_bytes);
            tokens[i] = e->tokens;
            list_unlink(c, e);
            list_push_front(c, e);
            hits_mem++;
        } else {
            missing++;
        }
    }
    if (c->env && missing) {
        MDB_txn *txn = NULL;
        int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
        if (rc) {
            disk_warn(c, "read", rc);
        } else {
            for (size_t i = 0; i < n; i++) {
                if (hit[i]) continue;
                MDB_val k = {sizeof keys[i], (void *)&keys[i]}, v;
                rc = mdb_get(txn, c->dbi, &k, &v);
                if (rc == MDB_NOTFOUND) continue;
                if (rc) {
                    disk_warn(c, "read", rc);
                    continue;
                }
                if (!value_ok(c, &keys[i], &v, out + i * D, &tokens[i])) {
                    count(c, EMBD_C_CACHE_ERRORS, 1);
                    embd_log(EMBD_LOG_DEBUG, "cache", "%s: a bad value was ignored", c->dir);
                    continue;
                }
                hit[i] = 1;
                hits_disk++;
                mem_insert(c, &keys[i], out + i * D, tokens[i]);
            }
            mdb_txn_abort(txn);
        }
    }
    size_t hits = hits_mem + hits_disk;
    c->hits += hits;
    c->misses += n - hits;
    count(c, EMBD_C_CACHE_HITS_MEM, hits_mem);
    count(c, EMBD_C_CACHE_HITS_DISK, hits_disk);
    count(c, EMBD_C_CACHE_MISSES, n - hits);
    publish_gauges(c);
    pthread_mutex_unlock(&c->mu);
    return hits;
}

void embd_cache_put(embd_cache *c, const embd_cache_key *keys, size_t n, const float *vecs,
                    const uint32_t *tokens) {
    const size_t D = (size_t)c->dim;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++)
        mem_insert(c, &keys[i], vecs + i * D, tokens[i]);
    if (c->env && !c->disk_full && n) {
        MDB_txn *txn = NULL;
        int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
        for (size_t i = 0; !rc && i < n; i++) {
            MDB_val k = {sizeof keys[i], (void *)&keys[i]};
            MDB_val v = {sizeof(struct value_header) + c->vec_bytes, NULL};
            rc = mdb_put(txn, c->dbi, &k, &v, MDB_RESERVE);
            if (rc) break;
            struct value_header h = {
                .magic = VALUE_MAGIC,
                .version = VALUE_VERSION,
                .header_size = sizeof h,
                .dim = (uint32_t)c->dim,
                .tokens = tokens[i],
                .checksum = value_checksum(&keys[i], vecs + i * D, c->vec_bytes, tokens[i]),
            };
            memcpy(v.mv_data, &h, sizeof h);
            memcpy((char *)v.mv_data + sizeof h, vecs + i * D, c->vec_bytes);
        }
        if (!rc) {
            rc = mdb_txn_commit(txn);
        } else if (txn) {
            mdb_txn_abort(txn);
        }
        if (rc == MDB_MAP_FULL) {
            c->disk_full = true;
            embd_log(EMBD_LOG_WARN, "cache",
                     "%s: the disk cache is full (map size %zu MiB); serving what it holds, "
                     "adding no more",
                     c->dir, c->map_bytes >> 20);
        } else if (rc) {
            disk_warn(c, "write", rc);
        }
    }
    publish_gauges(c);
    pthread_mutex_unlock(&c->mu);
}

void embd_cache_get_info(embd_cache *c, struct embd_cache_info *info) {
    memset(info, 0, sizeof *info);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    info->hits = c->hits;
    info->misses = c->misses;
    info->evictions = c->evictions;
    info->mem_bytes = c->mem_bytes;
    info->mem_entries = c->mem_entries;
    info->disk = c->env != NULL;
    info->disk_full = c->disk_full;
    info->rebuilt = c->rebuilt;
    pthread_mutex_unlock(&c->mu);
}
