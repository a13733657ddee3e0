/* safetensors.c — a validating reader of the safetensors format:
 *
 *   [8 bytes: N, little-endian u64] [N bytes: UTF-8 JSON header] [data section]
 *
 * The header maps tensor names to {"dtype", "shape", "data_offsets": [begin,
 * end]} (offsets relative to the data section), plus an optional
 * "__metadata__" object. Nothing in the file is trusted. */
#include "model/loader.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "embd reads safetensors data in place and needs a little-endian host"
#endif

#define MAX_OFFSET 9007199254740992ull /* 2^53: offsets are JSON numbers (doubles) */

/* Element size of a safetensors dtype string, 0 if unknown. */
static size_t dtype_size(const char *s, enum embd_st_dtype *dt) {
    static const struct {
        const char *name;
        size_t size;
    } known[] = {
        {"F64", 8},     {"I64", 8},     {"U64", 8},     {"I32", 4}, {"U32", 4},
        {"I16", 2},     {"U16", 2},     {"I8", 1},      {"U8", 1},  {"BOOL", 1},
        {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
    };
    if (strcmp(s, "F32") == 0) return *dt = EMBD_ST_F32, 4;
    if (strcmp(s, "F16") == 0) return *dt = EMBD_ST_F16, 2;
    if (strcmp(s, "BF16") == 0) return *dt = EMBD_ST_BF16, 2;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(s, known[i].name) == 0) return *dt = EMBD_ST_OTHER_KNOWN, known[i].size;
    *dt = EMBD_ST_UNKNOWN;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const embd_st_tensor *)a)->name, ((const embd_st_tensor *)b)->name);
}

static int cmp_begin(const void *a, const void *b) {
    const embd_st_tensor *x = *(const embd_st_tensor *const *)a;
    const embd_st_tensor *y = *(const embd_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Fills `t` from one header entry. */
static enum embd_status parse_entry(embd_st_tensor *t, const cJSON *e, size_t data_len,
                                    const char *name) {
    char tn[100];
    embd_printable(tn, sizeof tn, e->string);
    if (!cJSON_IsObject(e))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: header entry %s is not an object", name, tn);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !dt->valuestring[0] ||
        strlen(dt->valuestring) >= sizeof t->dtype_name ||
        strspn(dt->valuestring,
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
            strlen(dt->valuestring))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: tensor %s has no valid dtype", name, tn);
    strcpy(t->dtype_name, dt->valuestring);
    size_t esize = dtype_size(t->dtype_name, &t->dtype);

    if (!cJSON_IsArray(sh))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: tensor %s has no shape array", name, tn);
    int nd = cJSON_GetArraySize(sh);
    if (nd > EMBD_ST_MAX_DIMS)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: tensor %s has %d dimensions (max %d)", name,
                          tn, nd, EMBD_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t count = 1;
    bool overflow = false;
    const cJSON *d;
    int i = 0;
    cJSON_ArrayForEach(d, sh) {
        if (!embd_json_uint(d, 0, MAX_OFFSET, &t->shape[i]))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "%s: tensor %s has a shape entry that is not a non-negative "
                              "integer below 2^53",
                              name, tn);
        if (__builtin_mul_overflow(count, t->shape[i], &count)) overflow = true;
        i++;
    }

    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !embd_json_uint(cJSON_GetArrayItem(off, 0), 0, MAX_OFFSET, &t->begin) ||
        !embd_json_uint(cJSON_GetArrayItem(off, 1), 0, MAX_OFFSET, &t->end))
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "%s: tensor %s: data_offsets must be two non-negative integers", name,
                          tn);
    if (t->begin > t->end)
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "%s: tensor %s: data_offsets end %llu is before begin %llu", name, tn,
                          (unsigned long long)t->end, (unsigned long long)t->begin);
    if (t->end > data_len)
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "%s: tensor %s: data_offsets [%llu, %llu] run past the data section "
                          "(%zu bytes)",
                          name, tn, (unsigned long long)t->begin, (unsigned long long)t->end,
                          data_len);
    if (esize) {
        uint64_t bytes;
        if (overflow || __builtin_mul_overflow(count, (uint64_t)esize, &bytes))
            return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: tensor %s: shape size overflows", name,
                              tn);
        if (bytes != t->end - t->begin)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "%s: tensor %s: shape and dtype %s need %llu bytes, data_offsets "
                              "hold %llu",
                              name, tn, t->dtype_name, (unsigned long long)bytes,
                              (unsigned long long)(t->end - t->begin));
    }
    return EMBD_OK;
}

void embd_st_free(embd_safetensors *st) {
    for (size_t i = 0; i < st->n_tensors; i++)
        embd_free(st->tensors[i].name);
    embd_free(st->tensors);
    if (st->map) munmap(st->map, st->map_len);
    for (size_t i = 0; i < st->n_shards; i++)
        if (st->shards[i].map) munmap(st->shards[i].map, st->shards[i].map_len);
    embd_free(st->shards);
    memset(st, 0, sizeof *st);
}

enum embd_status embd_st_parse(embd_safetensors *st, const void *buf, size_t len,
                               const char *name) {
    memset(st, 0, sizeof *st);
    const uint8_t *b = buf;
    char *hdr = NULL;
    cJSON *root = NULL;
    embd_st_tensor **by_begin = NULL;
    enum embd_status s;

    if (len < 8) {
        s = embd_error(EMBD_ERR_MODEL_FORMAT,
                       "%s: %zu bytes is too short for a safetensors file (no header length)", name,
                       len);
        goto fail;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | b[i];
    if (n > len - 8) {
        s = embd_error(EMBD_ERR_MODEL_FORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes)", name,
                       (unsigned long long)n, len);
        goto fail;
    }
    if (n > EMBD_ST_MAX_HEADER) {
        s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: header length %llu is over the limit of %u",
                       name, (unsigned long long)n, EMBD_ST_MAX_HEADER);
        goto fail;
    }
    if (n < 2) {
        s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: header is empty", name);
        goto fail;
    }
    if (!(hdr = embd_malloc((size_t)n + 1))) {
        s = embd_error(EMBD_ERR_NOMEM, "%s: out of memory for the header", name);
        goto fail;
    }
    memcpy(hdr, b + 8, (size_t)n);
    hdr[n] = '\0';
    char hname[256];
    snprintf(hname, sizeof hname, "%s: header", name);
    if ((s = embd_json_parse(&root, hdr, (size_t)n, hname))) goto fail;
    if (!cJSON_IsObject(root)) {
        s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: header is not a JSON object", name);
        goto fail;
    }
    st->data = b + 8 + n;
    st->data_len = len - 8 - (size_t)n;

    size_t count = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) count++;
    if (!(st->tensors = embd_calloc(count, sizeof *st->tensors))) {
        s = embd_error(EMBD_ERR_NOMEM, "%s: out of memory for %zu tensors", name, count);
        goto fail;
    }
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: __metadata__ is not an object", name);
                goto fail;
            }
            continue;
        }
        embd_st_tensor *t = &st->tensors[st->n_tensors];
        if ((s = parse_entry(t, e, st->data_len, name))) goto fail;
        if (!(t->name = embd_strdup(e->string))) {
            s = embd_error(EMBD_ERR_NOMEM, "%s: out of memory", name);
            goto fail;
        }
        st->n_tensors++;
    }
    cJSON_Delete(root);
    root = NULL;
    embd_free(hdr);
    hdr = NULL;

    for (size_t i = 0; i < st->n_tensors; i++)
        st->tensors[i].data = st->data;
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_name);
    for (size_t i = 1; i < st->n_tensors; i++) {
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            char tn[100];
            s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: tensor %s is listed twice", name,
                           embd_printable(tn, sizeof tn, st->tensors[i].name));
            goto fail;
        }
    }
    if (!(by_begin = embd_calloc(st->n_tensors, sizeof *by_begin))) {
        s = embd_error(EMBD_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    for (size_t i = 0; i < st->n_tensors; i++)
        by_begin[i] = &st->tensors[i];
    qsort(by_begin, st->n_tensors, sizeof *by_begin, cmp_begin);
    /* Empty tensors occupy no bytes and overlap nothing. */
    const embd_st_tensor *prev = NULL;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const embd_st_tensor *t = by_begin[i];
        if (t->begin == t->end) continue;
        if (prev && t->begin < prev->end) {
            char a[100], c[100];
            s = embd_error(EMBD_ERR_MODEL_FORMAT,
                           "%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap", name,
                           embd_printable(a, sizeof a, prev->name), (unsigned long long)prev->begin,
                           (unsigned long long)prev->end, embd_printable(c, sizeof c, t->name),
                           (unsigned long long)t->begin, (unsigned long long)t->end);
            goto fail;
        }
        prev = t;
    }
    embd_free(by_begin);
    return EMBD_OK;
fail:
    embd_free(by_begin);
    cJSON_Delete(root);
    embd_free(hdr);
    embd_st_free(st);
    return s;
}

enum embd_status embd_st_open(embd_safetensors *st, const char *path, const char *name) {
    memset(st, 0, sizeof *st);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return embd_error(EMBD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return embd_error(EMBD_ERR_IO, "%s is not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: the file is empty", name);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return embd_error(EMBD_ERR_IO, "%s is too large to map", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) return embd_error(EMBD_ERR_IO, "cannot map %s: %s", path, strerror(err));
    enum embd_status s = embd_st_parse(st, map, len, name);
    if (s) {
        munmap(map, len);
        return s;
    }
    st->map = map;
    st->map_len = len;
    return EMBD_OK;
}

const embd_st_tensor *embd_st_find(const embd_safetensors *st, const char *name) {
    if (!st->n_tensors) return NULL;
    embd_st_tensor key = {.name = (char *)name};
    return bsearch(&key, st->tensors, st->n_tensors, sizeof key, cmp_name);
}

float embd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13; /* inf, NaN (payload kept) */
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | man << 13; /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        bits = sign; /* signed zero */
    } else {
        /* subnormal: man * 2^-24, normalised into an fp32 normal */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        bits = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ffu) << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float embd_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard's file name as the index gives it: a plain name ending in
 * .safetensors (no folder, no "..": the index must not reach outside). */
static bool shard_name_ok(const char *f) {
    size_t n = strlen(f);
    return n > 12 && n < 256 && !strchr(f, '/') && strcmp(f, "..") != 0 && f[0] != '.' &&
           strcmp(f + n - 12, ".safetensors") == 0;
}

enum embd_status embd_st_open_index(embd_safetensors *st, const char *dir, const char *index_name) {
    memset(st, 0, sizeof *st);
    char *path = embd_path_join(dir, index_name), *buf = NULL, *spath = NULL;
    const char **files = NULL;
    size_t len = 0, n_files = 0, n_map = 0;
    cJSON *root = NULL;
    enum embd_status s;
    if (!path) return embd_error(EMBD_ERR_NOMEM, "out of memory");
    if ((s = embd_read_file(path, 64u << 20, &buf, &len))) goto done;
    if ((s = embd_json_parse(&root, buf, len, index_name))) goto done;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm) || !wm->child) {
        s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: no \"weight_map\" object of tensor names",
                       index_name);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) n_map++;
    if (!(files = embd_calloc(n_map, sizeof *files))) {
        s = embd_error(EMBD_ERR_NOMEM, "out of memory");
        goto done;
    }
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            s = embd_error(EMBD_ERR_MODEL_FORMAT,
                           "%s: tensor %.80s: the file must be a name ending in .safetensors in "
                           "the model's folder, not %.120s",
                           index_name, e->string,
                           cJSON_IsString(e) ? e->valuestring : "a non-string");
            goto done;
        }
        files[n_files++] = e->valuestring;
    }
    qsort(files, n_files, sizeof *files, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n_files; i++)
        if (!u || strcmp(files[u - 1], files[i])) files[u++] = files[i];
    n_files = u;
    if (!(st->shards = embd_calloc(n_files, sizeof *st->shards))) {
        s = embd_error(EMBD_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t f = 0; f < n_files; f++) {
        embd_safetensors one = {0};
        embd_free(spath);
        if (!(spath = embd_path_join(dir, files[f]))) {
            s = embd_error(EMBD_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((s = embd_st_open(&one, spath, files[f]))) goto done;
        /* every tensor the index puts in this file is there */
        cJSON_ArrayForEach(e, wm) {
            if (strcmp(e->valuestring, files[f]) != 0 || embd_st_find(&one, e->string)) continue;
            s = embd_error(EMBD_ERR_MODEL_FORMAT,
                           "%s: tensor %.80s is said to be in %s, which does "
                           "not hold it",
                           index_name, e->string, files[f]);
            embd_st_free(&one);
            goto done;
        }
        embd_st_tensor *grown =
            embd_realloc(st->tensors, (st->n_tensors + one.n_tensors + 1) * sizeof *grown);
        if (!grown) {
            embd_st_free(&one);
            s = embd_error(EMBD_ERR_NOMEM, "out of memory");
            goto done;
        }
        st->tensors = grown;
        memcpy(st->tensors + st->n_tensors, one.tensors, one.n_tensors * sizeof *one.tensors);
        st->n_tensors += one.n_tensors;
        st->shards[st->n_shards++] = (embd_st_shard){one.map, one.map_len, one.data, one.data_len};
        embd_free(one.tensors); /* the names moved */
    }
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_name);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: tensor %.80s is in two of its files",
                           index_name, st->tensors[i].name);
            goto done;
        }
    s = EMBD_OK;
done:
    if (s) embd_st_free(st);
    cJSON_Delete(root);
    embd_free(files);
    embd_free(buf);
    embd_free(spath);
    embd_free(path);
    return s;
}
