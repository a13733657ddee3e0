/* store.c — the embedded vector store: meta.json + append-only records.log,
 * held in memory as one (n, D) matrix and searched exactly with cblas_sgemv,
 * or with cuBLAS on a GPU (params.gpu): the matrix is uploaded by the first
 * search and appended to by later ones (a replaced id is a new slot, the old
 * one is skipped on the host, so device rows never change). Only the scores
 * come from the GPU; the top-k is picked here, the same way for both.
 * See store.h for the file format and the crash-safety rules.
 *
 * Shapes: n = slots (records read or appended, live or replaced), D = dim,
 * k = hits asked for. */
#include "store/store.h"
#include "backend/cuda/plugin.h"
#include "util/log.h"
#include "util/util.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define REC_MAGIC 0x52444d45u /* bytes "EMDR" */
#define REC_HDR 16u           /* magic u32, payload length u32, hash u64 */
#define HASH_SEED 0
#define MAP_EMPTY UINT32_MAX
#define META_MAX (64u << 10)
#define DIM_MAX 65536
#define SCAN_CHUNK (64u << 10)

struct embd_store {
    char *path;     /* the store directory */
    char *log_path; /* PATH/records.log */
    int fd;         /* records.log, or -1 when read-only and the log does not exist */
    bool writable;
    bool normalized;
    int D;
    uint64_t end; /* file offset just past the last good record */

    /* slots, each of capacity `cap` */
    size_t n, cap;
    float *vecs;        /* (cap, D) */
    uint64_t *rec_off;  /* (cap) file offset of the record's header */
    uint64_t *id_off;   /* (cap) offset of the id in `ids` */
    uint32_t *id_len;   /* (cap) */
    uint32_t *text_len; /* (cap) */
    uint8_t *dead;      /* (cap) 1 when a later record replaced this one */
    size_t live;

    char *ids; /* every slot's id, back to back */
    size_t ids_len, ids_cap;

    uint32_t *map; /* (map_cap) open addressing, id -> live slot; MAP_EMPTY if free */
    size_t map_cap;

    /* scratch */
    float *scores; /* (scores_cap) */
    size_t scores_cap;
    uint32_t *heap; /* (heap_cap) */
    size_t heap_cap;
    char *hit_buf; /* texts of the last search's hits */
    size_t hit_cap;
    unsigned char *buf; /* records being written, or one record being read */
    size_t buf_cap;

    /* GPU scoring (params.gpu), set up by the first search */
    bool gpu;                          /* still asked for and not failed */
    int gpu_index;                     /* CUDA device */
    const struct embd_cuda_plugin *cu; /* loaded plugin, once set up */
    struct embd_cuda_index *gix;       /* slots [0, rows) on the device */
    char gpu_why[512];                 /* why the GPU is not used ("" if it is) */
};

/* ---- little-endian fields ---------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* Copies D floats to little-endian bytes and back. */
static void put_f32s(unsigned char *p, const float *v, size_t D) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, v, D * sizeof(float));
#else
    for (size_t i = 0; i < D; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        put_u32(p + 4 * i, u);
    }
#endif
}

/* Whether the D little-endian floats at p are all finite (the exponent bits
 * of NaN and infinity are all ones). */
static bool f32s_finite(const unsigned char *p, size_t D) {
    for (size_t i = 0; i < D; i++)
        if ((get_u32(p + 4 * i) & 0x7f800000u) == 0x7f800000u) return false;
    return true;
}

static void get_f32s(float *v, const unsigned char *p, size_t D) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(v, p, D * sizeof(float));
#else
    for (size_t i = 0; i < D; i++) {
        uint32_t u = get_u32(p + 4 * i);
        memcpy(&v[i], &u, 4);
    }
#endif
}

/* ---- small file helpers ------------------------------------------------- */

/* Reads exactly len bytes at off. Returns 0, or -1 with errno (0 at EOF). */
static int pread_full(int fd, void *dst, size_t len, uint64_t off) {
    unsigned char *p = dst;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = 0;
            return -1;
        }
        p += r, len -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

static int pwrite_full(int fd, const void *src, size_t len, uint64_t off) {
    const unsigned char *p = src;
    while (len) {
        ssize_t r = pwrite(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        p += r, len -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

/* fsyncs a directory so that a new or renamed entry in it is durable. */
static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* Grows *buf to hold at least `need` bytes (doubling). Returns 0 or -1. */
static int grow_bytes(void **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c = c > SIZE_MAX / 2 ? need : c * 2;
    void *p = embd_realloc(*buf, c);
    if (!p) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

/* ---- meta.json ---------------------------------------------------------- */

/* Writes meta.json atomically: meta.json.tmp, fsync, rename, fsync the dir. */
static enum embd_status write_meta(const char *dir, const struct embd_store_params *p) {
    enum embd_status st = EMBD_ERR_NOMEM;
    char *tmp = embd_path_join(dir, "meta.json.tmp");
    char *meta = embd_path_join(dir, "meta.json");
    int fd = -1;
    if (!tmp || !meta) {
        st = embd_error(EMBD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    char text[256];
    int len =
        snprintf(text, sizeof text,
                 "{\"format\": \"embd-store\", \"version\": 1, \"dim\": %d, "
                 "\"model_fingerprint\": \"%016llx\", \"normalized\": %s}\n",
                 p->dim, (unsigned long long)p->fingerprint, p->normalized ? "true" : "false");
    EMBD_ASSERT(len > 0 && (size_t)len < sizeof text);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || pwrite_full(fd, text, (size_t)len, 0) || fsync(fd)) {
        st = embd_error(EMBD_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, meta) || fsync_dir(dir)) {
        st = embd_error(EMBD_ERR_IO, "cannot create %s: %s", meta, strerror(errno));
        goto fail;
    }
    st = EMBD_OK;
fail:
    if (fd >= 0) close(fd);
    if (st != EMBD_OK && tmp) unlink(tmp);
    embd_free(tmp);
    embd_free(meta);
    return st;
}

/* Reads and checks meta.json against p: format, version, dim, fingerprint. */
static enum embd_status read_meta(const char *dir, const char *meta_path,
                                  const struct embd_store_params *p, bool *normalized) {
    char *text = NULL;
    size_t len = 0;
    enum embd_status st = embd_read_file(meta_path, META_MAX, &text, &len);
    if (st != EMBD_OK) return embd_error_prefix(st, "store %s", dir);
    cJSON *root = cJSON_ParseWithLength(text, len);
    embd_free(text);
    st = EMBD_ERR_IO;
    if (!cJSON_IsObject(root)) {
        embd_error(st, "store %s: meta.json is not valid JSON (corrupt store?)", dir);
        goto fail;
    }
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *dim = cJSON_GetObjectItemCaseSensitive(root, "dim");
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(root, "model_fingerprint");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalized");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, "embd-store")) {
        embd_error(st, "store %s: meta.json is not an embd store's (format %s%s%s)", dir,
                   cJSON_IsString(format) ? "\"" : "",
                   cJSON_IsString(format) ? format->valuestring : "missing",
                   cJSON_IsString(format) ? "\"" : "");
        goto fail;
    }
    if (!cJSON_IsNumber(version) || version->valuedouble != 1) {
        char v[32];
        snprintf(v, sizeof v, "%g", cJSON_IsNumber(version) ? version->valuedouble : 0.0);
        embd_error(st, "store %s: unsupported store version %s (this embd reads version 1)", dir,
                   cJSON_IsNumber(version) ? v : "(missing)");
        goto fail;
    }
    char *endp = NULL;
    unsigned long long fpv = 0;
    if (cJSON_IsString(fp) && strlen(fp->valuestring) == 16 &&
        strspn(fp->valuestring, "0123456789abcdefABCDEF") == 16)
        fpv = strtoull(fp->valuestring, &endp, 16);
    if (!cJSON_IsNumber(dim) || dim->valuedouble < 1 || dim->valuedouble > DIM_MAX ||
        dim->valuedouble != (double)(int)dim->valuedouble || !endp || !cJSON_IsBool(norm)) {
        embd_error(st,
                   "store %s: meta.json is corrupt (needs integer \"dim\", 16-hex "
                   "\"model_fingerprint\" and boolean \"normalized\")",
                   dir);
        goto fail;
    }
    int D = (int)dim->valuedouble;
    if (D != p->dim || (uint64_t)fpv != p->fingerprint) {
        st = embd_error(EMBD_ERR_INVALID_ARG,
                        "store %s was built with model fingerprint %016llx (dim %d); this model "
                        "is %016llx (dim %d)",
                        dir, fpv, D, (unsigned long long)p->fingerprint, p->dim);
        goto fail;
    }
    *normalized = cJSON_IsTrue(norm);
    st = EMBD_OK;
fail:
    cJSON_Delete(root);
    return st;
}

/* Creates a directory and any missing parents (like mkdir -p). Returns 0,
 * or -1 with errno. An existing directory is fine. */
static int mkdir_p(const char *path) {
    size_t len = strlen(path);
    char *p = embd_strndup(path, len);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    int rc = 0;
    for (size_t i = 1; i <= len && rc == 0; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) && errno != EEXIST) rc = -1;
        p[i] = c;
    }
    int e = errno;
    embd_free(p);
    errno = e;
    return rc;
}

/* Whether a directory holds nothing but (maybe) a leftover meta.json.tmp. */
static int dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int empty = 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            !strcmp(e->d_name, "meta.json.tmp"))
            continue;
        empty = 0;
        break;
    }
    closedir(d);
    return empty;
}

/* ---- in-memory index ---------------------------------------------------- */

/* The map position holding `id`, or the free position where it would go. */
static size_t map_find(const embd_store *s, const char *id, size_t len, uint64_t h) {
    size_t mask = s->map_cap - 1, i = (size_t)h & mask;
    for (;;) {
        uint32_t slot = s->map[i];
        if (slot == MAP_EMPTY) return i;
        if (s->id_len[slot] == len && !memcmp(s->ids + s->id_off[slot], id, len)) return i;
        i = (i + 1) & mask;
    }
}

/* Rebuilds the map with `cap` positions (a power of two). */
static int map_resize(embd_store *s, size_t cap) {
    uint32_t *m = embd_malloc2(cap, sizeof *m);
    if (!m) return -1;
    for (size_t i = 0; i < cap; i++)
        m[i] = MAP_EMPTY;
    uint32_t *old = s->map;
    s->map = m;
    s->map_cap = cap;
    for (size_t slot = 0; slot < s->n; slot++) {
        if (s->dead[slot]) continue;
        const char *id = s->ids + s->id_off[slot];
        uint64_t h = embd_hash64(HASH_SEED, id, s->id_len[slot]);
        s->map[map_find(s, id, s->id_len[slot], h)] = (uint32_t)slot;
    }
    embd_free(old);
    return 0;
}

static int grow_array(void **p, size_t elem, size_t cap) {
    if (elem && cap > SIZE_MAX / elem) return -1;
    void *q = embd_realloc(*p, cap * elem);
    if (!q) return -1;
    *p = q;
    return 0;
}

/* Makes room for `extra` more slots holding `id_bytes` more id bytes, so
 * that applying them cannot fail. The store's contents are unchanged. */
static enum embd_status reserve(embd_store *s, size_t extra, size_t id_bytes) {
    size_t need = s->n + extra;
    if (need > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < need)
            cap *= 2;
        if (cap > EMBD_STORE_MAX_RECORDS) cap = EMBD_STORE_MAX_RECORDS;
        if ((size_t)s->D > SIZE_MAX / sizeof(float) ||
            grow_array((void **)&s->vecs, (size_t)s->D * sizeof(float), cap) ||
            grow_array((void **)&s->rec_off, sizeof *s->rec_off, cap) ||
            grow_array((void **)&s->id_off, sizeof *s->id_off, cap) ||
            grow_array((void **)&s->id_len, sizeof *s->id_len, cap) ||
            grow_array((void **)&s->text_len, sizeof *s->text_len, cap) ||
            grow_array((void **)&s->dead, sizeof *s->dead, cap))
            return embd_error(EMBD_ERR_NOMEM, "out of memory growing the store to %zu records",
                              cap);
        s->cap = cap;
    }
    if (grow_bytes((void **)&s->ids, &s->ids_cap, s->ids_len + id_bytes))
        return embd_error(EMBD_ERR_NOMEM, "out of memory for store ids");
    size_t want = s->map_cap ? s->map_cap : 1024;
    while (want < 2 * (s->live + extra))
        want *= 2;
    if (want != s->map_cap && map_resize(s, want))
        return embd_error(EMBD_ERR_NOMEM, "out of memory for the store's id map");
    return EMBD_OK;
}

/* Adds one record as the next slot; room must have been reserved. Returns
 * whether it replaced a live record with the same id. */
static bool apply(embd_store *s, const char *id, size_t id_len, size_t text_len,
                  const unsigned char *vec_le, const float *vec, uint64_t rec_off) {
    size_t slot = s->n;
    EMBD_ASSERT(slot < s->cap && s->ids_len + id_len <= s->ids_cap);
    const size_t D = (size_t)s->D;
    if (vec)
        memcpy(s->vecs + slot * D, vec, D * sizeof(float));
    else
        get_f32s(s->vecs + slot * D, vec_le, D);
    memcpy(s->ids + s->ids_len, id, id_len);
    s->id_off[slot] = s->ids_len;
    s->id_len[slot] = (uint32_t)id_len;
    s->text_len[slot] = (uint32_t)text_len;
    s->rec_off[slot] = rec_off;
    s->dead[slot] = 0;
    s->n++;
    uint64_t h = embd_hash64(HASH_SEED, id, id_len);
    size_t pos = map_find(s, s->ids + s->ids_len, id_len, h);
    s->ids_len += id_len;
    bool replaced = s->map[pos] != MAP_EMPTY;
    if (replaced)
        s->dead[s->map[pos]] = 1;
    else
        s->live++;
    s->map[pos] = (uint32_t)slot;
    return replaced;
}

/* ---- reading records.log ------------------------------------------------ */

static size_t max_payload(size_t D) {
    return 8 + EMBD_STORE_MAX_ID + EMBD_STORE_MAX_TEXT + 4 * D;
}

/* A parsed record (pointers into s->buf). */
struct rec {
    uint32_t plen;
    const char *id;
    uint32_t id_len;
    uint32_t text_len;
    const unsigned char *vec; /* (D) little-endian */
};

/* Reads the record at `off` of a log of `size` bytes into s->buf. Sets *good
 * to whether it is complete and intact; IO and memory errors are returned. */
static enum embd_status read_record(embd_store *s, uint64_t off, uint64_t size, struct rec *r,
                                    bool *good) {
    *good = false;
    const size_t D = (size_t)s->D;
    unsigned char hdr[REC_HDR];
    if (size - off < REC_HDR) return EMBD_OK;
    if (pread_full(s->fd, hdr, REC_HDR, off))
        return embd_error(EMBD_ERR_IO, "cannot read %s: %s", s->log_path,
                          errno ? strerror(errno) : "file shrank");
    uint32_t plen = get_u32(hdr + 4);
    if (get_u32(hdr) != REC_MAGIC || plen < 8 + 1 + 4 * D || plen > max_payload(D) ||
        plen > size - off - REC_HDR)
        return EMBD_OK;
    if (grow_bytes((void **)&s->buf, &s->buf_cap, plen))
        return embd_error(EMBD_ERR_NOMEM, "out of memory reading %s", s->log_path);
    if (pread_full(s->fd, s->buf, plen, off + REC_HDR))
        return embd_error(EMBD_ERR_IO, "cannot read %s: %s", s->log_path,
                          errno ? strerror(errno) : "file shrank");
    if (embd_hash64(HASH_SEED, s->buf, plen) != get_u64(hdr + 8)) return EMBD_OK;
    const unsigned char *p = s->buf;
    uint32_t idl = get_u32(p);
    if (idl < 1 || idl > EMBD_STORE_MAX_ID || (uint64_t)8 + idl + 4 * D > plen) return EMBD_OK;
    uint32_t tl = get_u32(p + 4 + idl);
    if (tl > EMBD_STORE_MAX_TEXT || (uint64_t)8 + idl + tl + 4 * D != plen) return EMBD_OK;
    r->plen = plen;
    r->id = (const char *)p + 4;
    r->id_len = idl;
    r->text_len = tl;
    r->vec = p + 8 + idl + tl;
    *good = true;
    return EMBD_OK;
}

/* Whether an intact record starts anywhere in (from, size): a sign that the
 * bad record at `from - 1` is in the middle of the log, not a torn tail. */
static enum embd_status good_record_after(embd_store *s, uint64_t from, uint64_t size,
                                          bool *found) {
    *found = false;
    unsigned char chunk[SCAN_CHUNK];
    unsigned char magic[4];
    put_u32(magic, REC_MAGIC);
    uint64_t off = from;
    while (off + REC_HDR <= size) {
        size_t len = (size_t)(size - off < SCAN_CHUNK ? size - off : SCAN_CHUNK);
        if (pread_full(s->fd, chunk, len, off))
            return embd_error(EMBD_ERR_IO, "cannot read %s: %s", s->log_path,
                              errno ? strerror(errno) : "file shrank");
        for (size_t i = 0; i + 4 <= len; i++) {
            if (memcmp(chunk + i, magic, 4)) continue;
            struct rec r;
            bool good;
            enum embd_status st = read_record(s, off + i, size, &r, &good);
            if (st != EMBD_OK) return st;
            if (good) {
                *found = true;
                return EMBD_OK;
            }
        }
        if (len < SCAN_CHUNK) break;
        off += len - 3; /* a magic may straddle chunks */
    }
    return EMBD_OK;
}

/* Loads every record of the log; sets s->end and *dropped (torn tail bytes). */
static enum embd_status load_log(embd_store *s, uint64_t *dropped) {
    *dropped = 0;
    s->end = 0;
    if (s->fd < 0) return EMBD_OK;
    struct stat stt;
    if (fstat(s->fd, &stt))
        return embd_error(EMBD_ERR_IO, "cannot stat %s: %s", s->log_path, strerror(errno));
    const uint64_t size = (uint64_t)stt.st_size;
    uint64_t off = 0;
    while (off < size) {
        struct rec r;
        bool good;
        enum embd_status st = read_record(s, off, size, &r, &good);
        if (st != EMBD_OK) return st;
        if (!good) break;
        if (s->n >= EMBD_STORE_MAX_RECORDS)
            return embd_error(EMBD_ERR_IO, "%s: more than %u records", s->log_path,
                              EMBD_STORE_MAX_RECORDS);
        /* embd_store_add refuses non-finite vectors, so one here was not
         * written by embd (its checksum is intact): refuse the file rather
         * than let it score NaN for every query */
        if (!f32s_finite(r.vec, s->D))
            return embd_error(EMBD_ERR_IO,
                              "%s: the record at byte %llu (id %.*s) has a non-finite vector "
                              "value (NaN or infinity); this file was not written by embd",
                              s->log_path, (unsigned long long)off,
                              (int)(r.id_len > 64 ? 64 : r.id_len), r.id);
        if ((st = reserve(s, 1, r.id_len)) != EMBD_OK) return st;
        apply(s, r.id, r.id_len, r.text_len, r.vec, NULL, off);
        off += REC_HDR + r.plen;
    }
    if (off < size) {
        bool later;
        enum embd_status st = good_record_after(s, off + 1, size, &later);
        if (st != EMBD_OK) return st;
        if (later)
            return embd_error(EMBD_ERR_IO,
                              "%s: corrupt record at byte %llu followed by intact records; "
                              "refusing to drop data (restore the store from a copy)",
                              s->log_path, (unsigned long long)off);
        *dropped = size - off;
    }
    s->end = off;
    return EMBD_OK;
}

/* A reader's store (opened read-only) takes in the records a writer has
 * appended since: the whole records after s->end (one still being written
 * is left for the next call). Called before each count and search, so a
 * long-lived reader (embd serve --store DIR) serves what was indexed after
 * it opened the store. */
static enum embd_status refresh(embd_store *s) {
    if (s->writable || s->fd < 0) return EMBD_OK;
    struct stat stt;
    if (fstat(s->fd, &stt))
        return embd_error(EMBD_ERR_IO, "cannot stat %s: %s", s->log_path, strerror(errno));
    const uint64_t size = (uint64_t)stt.st_size;
    uint64_t off = s->end;
    while (off < size) {
        struct rec r;
        bool good;
        enum embd_status st = read_record(s, off, size, &r, &good);
        if (st != EMBD_OK) return st;
        if (!good || s->n >= EMBD_STORE_MAX_RECORDS || !f32s_finite(r.vec, s->D)) break;
        if ((st = reserve(s, 1, r.id_len)) != EMBD_OK) return st;
        apply(s, r.id, r.id_len, r.text_len, r.vec, NULL, off);
        off += REC_HDR + r.plen;
    }
    s->end = off;
    return EMBD_OK;
}

/* ---- public functions --------------------------------------------------- */

enum embd_status embd_store_open(const char *path, const struct embd_store_params *p,
                                 embd_store **out, struct embd_store_open_info *info) {
    if (info) memset(info, 0, sizeof *info);
    if (!out) return embd_error(EMBD_ERR_INVALID_ARG, "embd_store_open: out is NULL");
    *out = NULL;
    if (!path || !*path || !p || p->dim < 1 || p->dim > DIM_MAX)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_store_open: bad path or parameters");
    enum embd_status st = EMBD_ERR_NOMEM;
    char *meta_path = NULL;
    bool created = false;
    uint64_t dropped = 0;
    embd_store *s = embd_calloc(1, sizeof *s);
    if (!s) return embd_error(EMBD_ERR_NOMEM, "out of memory opening store %s", path);
    s->fd = -1;
    s->D = p->dim;
    s->writable = p->writable;
    s->gpu = p->gpu;
    s->gpu_index = p->gpu_index;
    s->path = embd_strdup(path);
    s->log_path = embd_path_join(path, "records.log");
    meta_path = embd_path_join(path, "meta.json");
    if (!s->path || !s->log_path || !meta_path) {
        st = embd_error(EMBD_ERR_NOMEM, "out of memory opening store %s", path);
        goto fail;
    }

    struct stat sb;
    if (stat(path, &sb)) {
        if (errno != ENOENT || !p->create) {
            /* no store there (opening to read): the caller's mistake, not an IO error */
            st = embd_error(errno == ENOENT ? EMBD_ERR_INVALID_ARG : EMBD_ERR_IO, "store %s: %s%s",
                            path, strerror(errno),
                            errno == ENOENT ? " (build it with embd index)" : "");
            goto fail;
        }
        if (mkdir_p(path)) {
            st = embd_error(errno == ENOMEM ? EMBD_ERR_NOMEM : EMBD_ERR_IO,
                            "cannot create store %s: %s", path, strerror(errno));
            goto fail;
        }
    } else if (!S_ISDIR(sb.st_mode)) {
        st = embd_error(EMBD_ERR_IO, "store %s is not a directory", path);
        goto fail;
    }

    if (access(meta_path, F_OK) == 0) {
        st = read_meta(path, meta_path, p, &s->normalized);
        if (st != EMBD_OK) goto fail;
    } else {
        int empty = dir_is_empty(path);
        if (empty < 0) {
            st = embd_error(EMBD_ERR_IO, "store %s: %s", path, strerror(errno));
            goto fail;
        }
        if (!empty || !p->create || !p->writable) {
            /* an empty directory holds no store (the caller's mistake); one
             * with other files is not a store to take over */
            st = embd_error(empty ? EMBD_ERR_INVALID_ARG : EMBD_ERR_IO,
                            empty ? "store %s is empty (build it with embd index)"
                                  : "store %s has no meta.json: not an embd store (embd creates "
                                    "stores only in a missing or empty directory)",
                            path);
            goto fail;
        }
        s->normalized = p->normalized;
        if ((st = write_meta(path, p)) != EMBD_OK) goto fail;
        created = true;
    }

    if (p->writable) {
        s->fd = open(s->log_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (s->fd < 0) {
            st = embd_error(EMBD_ERR_IO, "cannot open %s: %s", s->log_path, strerror(errno));
            goto fail;
        }
        if (flock(s->fd, LOCK_EX | LOCK_NB)) {
            st = embd_error(EMBD_ERR_IO, "store %s is being written by another process (%s)", path,
                            strerror(errno));
            goto fail;
        }
        if (created && fsync_dir(path)) {
            st = embd_error(EMBD_ERR_IO, "cannot sync store %s: %s", path, strerror(errno));
            goto fail;
        }
    } else {
        /* a writer makes records.log when it makes meta.json: a store
         * without it has lost its records (not an empty store) */
        s->fd = open(s->log_path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) {
            st = embd_error(EMBD_ERR_IO, "cannot open %s: %s%s", s->log_path, strerror(errno),
                            errno == ENOENT ? " (the store's records are gone: rebuild it with "
                                              "embd index, or restore it from a copy)"
                                            : "");
            goto fail;
        }
    }

    if ((st = reserve(s, 0, 0)) != EMBD_OK) goto fail; /* the map exists even when empty */
    if ((st = load_log(s, &dropped)) != EMBD_OK) goto fail;
    if (dropped && p->writable) {
        if (ftruncate(s->fd, (off_t)s->end) || fsync(s->fd)) {
            st = embd_error(EMBD_ERR_IO, "cannot truncate the torn tail of %s: %s", s->log_path,
                            strerror(errno));
            goto fail;
        }
    }
    if (info) {
        info->created = created;
        info->dropped_bytes = dropped;
    }
    embd_free(meta_path);
    *out = s;
    return EMBD_OK;

fail:
    embd_free(meta_path);
    embd_store_close(s);
    return st;
}

void embd_store_close(embd_store *s) {
    if (!s) return;
    if (s->gix) s->cu->search->free(s->gix);
    if (s->fd >= 0) close(s->fd);
    embd_free(s->path);
    embd_free(s->log_path);
    embd_free(s->vecs);
    embd_free(s->rec_off);
    embd_free(s->id_off);
    embd_free(s->id_len);
    embd_free(s->text_len);
    embd_free(s->dead);
    embd_free(s->ids);
    embd_free(s->map);
    embd_free(s->scores);
    embd_free(s->heap);
    embd_free(s->hit_buf);
    embd_free(s->buf);
    embd_free(s);
}

enum embd_status embd_store_add(embd_store *s, const char *const *ids, const size_t *id_lens,
                                const char *const *texts, const size_t *text_lens,
                                const float *vecs, size_t n, size_t *n_replaced) {
    if (n_replaced) *n_replaced = 0;
    if (!s || (n && (!ids || !id_lens || !texts || !text_lens || !vecs)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_store_add: NULL argument");
    if (!s->writable)
        return embd_error(EMBD_ERR_INVALID_ARG, "store %s is open read-only", s->path);
    if (n == 0) return EMBD_OK;
    if (n > EMBD_STORE_MAX_RECORDS - s->n)
        return embd_error(EMBD_ERR_INVALID_ARG, "store %s is full (%u records at most)", s->path,
                          EMBD_STORE_MAX_RECORDS);
    const size_t D = (size_t)s->D;
    size_t total = 0, id_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (id_lens[i] < 1 || id_lens[i] > EMBD_STORE_MAX_ID)
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "record %zu: id length %zu (must be 1 to %u bytes)", i, id_lens[i],
                              EMBD_STORE_MAX_ID);
        if (!ids[i] || (text_lens[i] && !texts[i]))
            return embd_error(EMBD_ERR_INVALID_ARG, "record %zu: its %s is NULL", i,
                              ids[i] ? "text" : "id");
        if (text_lens[i] > EMBD_STORE_MAX_TEXT)
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "record %zu (id %.*s): text of %zu bytes (limit %u)", i,
                              (int)id_lens[i], ids[i], text_lens[i], EMBD_STORE_MAX_TEXT);
        for (size_t d = 0; d < D; d++)
            if (!isfinite(vecs[i * D + d]))
                return embd_error(EMBD_ERR_INVALID_ARG,
                                  "record %zu (id %.*s): vector has a non-finite value", i,
                                  (int)id_lens[i], ids[i]);
        total += REC_HDR + 8 + id_lens[i] + text_lens[i] + 4 * D;
        id_bytes += id_lens[i];
    }
    enum embd_status st = reserve(s, n, id_bytes);
    if (st != EMBD_OK) return st;
    if (grow_bytes((void **)&s->buf, &s->buf_cap, total))
        return embd_error(EMBD_ERR_NOMEM, "out of memory writing %zu records", n);

    /* Serialise the batch; records land at s->end + their offset in buf. */
    unsigned char *w = s->buf;
    for (size_t i = 0; i < n; i++) {
        unsigned char *payload = w + REC_HDR, *q = payload;
        put_u32(q, (uint32_t)id_lens[i]);
        memcpy(q + 4, ids[i], id_lens[i]);
        q += 4 + id_lens[i];
        put_u32(q, (uint32_t)text_lens[i]);
        if (text_lens[i]) memcpy(q + 4, texts[i], text_lens[i]);
        q += 4 + text_lens[i];
        put_f32s(q, vecs + i * D, D);
        q += 4 * D;
        uint32_t plen = (uint32_t)(q - payload);
        put_u32(w, REC_MAGIC);
        put_u32(w + 4, plen);
        put_u64(w + 8, embd_hash64(HASH_SEED, payload, plen));
        w = q;
    }
    EMBD_ASSERT((size_t)(w - s->buf) == total);
    if (pwrite_full(s->fd, s->buf, total, s->end)) {
        int e = errno;
        if (ftruncate(s->fd, (off_t)s->end)) { /* defensive: leave no partial batch */
        }
        return embd_error(EMBD_ERR_IO, "cannot append to %s: %s", s->log_path, strerror(e));
    }

    size_t replaced = 0;
    uint64_t off = s->end;
    for (size_t i = 0; i < n; i++) {
        replaced += apply(s, ids[i], id_lens[i], text_lens[i], NULL, vecs + i * D, off);
        off += REC_HDR + 8 + id_lens[i] + text_lens[i] + 4 * D;
    }
    s->end = off;
    if (n_replaced) *n_replaced = replaced;
    return EMBD_OK;
}

enum embd_status embd_store_flush(embd_store *s) {
    if (!s) return embd_error(EMBD_ERR_INVALID_ARG, "embd_store_flush: NULL store");
    if (s->writable && s->fd >= 0 && fsync(s->fd))
        return embd_error(EMBD_ERR_IO, "cannot sync %s: %s", s->log_path, strerror(errno));
    return EMBD_OK;
}

size_t embd_store_count(embd_store *s) {
    if (!s) return 0;
    refresh(s); /* on an error, what was read before */
    return s->live;
}

int embd_store_dim(const embd_store *s) {
    return s ? s->D : 0;
}

bool embd_store_normalized(const embd_store *s) {
    return s && s->normalized;
}

/* Whether slot a ranks before slot b: higher score, then lower slot. */
static bool better(const float *scores, uint32_t a, uint32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
}

/* Restores the heap (worst hit at the root) below position i. */
static void sift_down(uint32_t *heap, size_t size, size_t i, const float *scores) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, worst = i;
        if (l < size && better(scores, heap[worst], heap[l])) worst = l;
        if (r < size && better(scores, heap[worst], heap[r])) worst = r;
        if (worst == i) return;
        uint32_t t = heap[i];
        heap[i] = heap[worst];
        heap[worst] = t;
        i = worst;
    }
}

static void sift_up(uint32_t *heap, size_t i, const float *scores) {
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!better(scores, heap[parent], heap[i])) return;
        uint32_t t = heap[i];
        heap[i] = heap[parent];
        heap[parent] = t;
        i = parent;
    }
}

/* Turns GPU scoring off for good after a failure: one warning, the reason
 * kept for embd_store_search_device, the device index freed. */
static void gpu_off(embd_store *s, const char *why) {
    snprintf(s->gpu_why, sizeof s->gpu_why, "%s", why);
    embd_log(EMBD_LOG_WARN, "store",
             "store %s: no GPU search on cuda:%d (%s); searching on the CPU", s->path, s->gpu_index,
             why);
    if (s->gix) s->cu->search->free(s->gix);
    s->gix = NULL;
    s->gpu = false;
}

/* scores (n) = vecs (n, D) . query (D) on the GPU: the first call loads the
 * plugin and uploads every slot, later calls upload the slots added since.
 * Returns 0, or -1 after gpu_off (the caller scores on the CPU). */
static int gpu_score(embd_store *s, const float *query) {
    char why[512];
    if (!s->gix) {
        if (embd_cuda_usable(NULL, s->gpu_index, EMBD_DTYPE_FP32, why, sizeof why) != 0) goto off;
        s->cu = embd_cuda_load(why, sizeof why);
        if (!s->cu) goto off;
        if (!s->cu->search) { /* defensive: the ABI check makes this impossible */
            snprintf(why, sizeof why, "the CUDA plugin has no search functions");
            goto off;
        }
        if (s->cu->search->create(&s->gix, s->gpu_index, s->D, s->n, why, sizeof why)) goto off;
    }
    const struct embd_cuda_searchops *so = s->cu->search;
    const size_t have = so->rows(s->gix);
    if (have > s->n) { /* defensive: slots are never removed */
        snprintf(why, sizeof why, "the device holds %zu rows, the store %zu", have, s->n);
        goto off;
    }
    if (have < s->n &&
        so->append(s->gix, s->vecs + have * (size_t)s->D, s->n - have, why, sizeof why))
        goto off;
    if (so->score(s->gix, s->scores, query, 1, why, sizeof why)) goto off;
    return 0;
off:
    gpu_off(s, why);
    return -1;
}

const char *embd_store_search_device(const embd_store *s, const char **why) {
    if (why) *why = s ? s->gpu_why : "";
    return s && s->gpu ? "cuda" : "cpu";
}

enum embd_status embd_store_search(embd_store *s, const float *query, size_t k,
                                   struct embd_store_hit *hits, size_t *n_hits) {
    if (n_hits) *n_hits = 0;
    if (!s || !query || !n_hits || (k && !hits))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_store_search: NULL argument");
    const size_t D = (size_t)s->D;
    for (size_t d = 0; d < D; d++)
        if (!isfinite(query[d]))
            return embd_error(EMBD_ERR_INVALID_ARG, "search query has a non-finite value");
    enum embd_status rst = refresh(s);
    if (rst != EMBD_OK) return rst;
    if (k > s->live) k = s->live;
    if (k == 0) return EMBD_OK;
    if (grow_bytes((void **)&s->scores, &s->scores_cap, s->n * sizeof(float)) ||
        grow_bytes((void **)&s->heap, &s->heap_cap, k * sizeof(uint32_t)))
        return embd_error(EMBD_ERR_NOMEM, "out of memory searching %zu records", s->n);

    /* scores (n) = vecs (n, D) . query (D), on the GPU while it works */
    if (!s->gpu || gpu_score(s, query) != 0)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)s->n, (int)D, 1.0f, s->vecs, (int)D, query, 1,
                    0.0f, s->scores, 1);

    uint32_t *heap = s->heap;
    size_t size = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->dead[i]) continue;
        if (size < k) {
            heap[size] = (uint32_t)i;
            sift_up(heap, size++, s->scores);
        } else if (better(s->scores, (uint32_t)i, heap[0])) {
            heap[0] = (uint32_t)i;
            sift_down(heap, size, 0, s->scores);
        }
    }
    EMBD_ASSERT(size == k);
    /* Pop the worst first into the last place. */
    size_t text_bytes = 0;
    for (size_t j = k; j-- > 0;) {
        uint32_t slot = heap[0];
        heap[0] = heap[--size];
        sift_down(heap, size, 0, s->scores);
        hits[j].slot = slot;
        hits[j].score = s->scores[slot];
        hits[j].id = s->ids + s->id_off[slot];
        hits[j].id_len = s->id_len[slot];
        hits[j].text_len = s->text_len[slot];
        text_bytes += s->text_len[slot];
    }
    if (grow_bytes((void **)&s->hit_buf, &s->hit_cap, text_bytes + 1))
        return embd_error(EMBD_ERR_NOMEM, "out of memory reading hit texts");
    size_t at = 0;
    for (size_t j = 0; j < k; j++) {
        uint32_t slot = hits[j].slot;
        uint64_t off = s->rec_off[slot] + REC_HDR + 4 + s->id_len[slot] + 4;
        if (hits[j].text_len && pread_full(s->fd, s->hit_buf + at, hits[j].text_len, off))
            return embd_error(EMBD_ERR_IO, "cannot read %s: %s", s->log_path,
                              errno ? strerror(errno) : "file shrank");
        hits[j].text = s->hit_buf + at;
        at += hits[j].text_len;
    }
    *n_hits = k;
    return EMBD_OK;
}

enum embd_status embd_store_get(embd_store *s, const char *id, size_t id_len, const float **vec) {
    if (!s || !id || !vec) return embd_error(EMBD_ERR_INVALID_ARG, "embd_store_get: NULL argument");
    *vec = NULL;
    uint64_t h = embd_hash64(HASH_SEED, id, id_len);
    uint32_t slot = s->map[map_find(s, id, id_len, h)];
    if (slot == MAP_EMPTY)
        return embd_error(EMBD_ERR_INVALID_ARG, "no record with id %.*s",
                          (int)(id_len < 200 ? id_len : 200), id);
    *vec = s->vecs + (size_t)slot * (size_t)s->D;
    return EMBD_OK;
}
