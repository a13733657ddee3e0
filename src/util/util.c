/* util.c — errors, assertions, files, hashing (allocation is in alloc.c,
 * text and the clock in text.c). */
#define _POSIX_C_SOURCE 200809L
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#define ERR_CAP 512

static _Thread_local char last_error[ERR_CAP];

enum embd_status embd_error(enum embd_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

enum embd_status embd_error_prefix(enum embd_status status, const char *fmt, ...) {
    char prefix[ERR_CAP], old[ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    /* Longer messages are cut at ERR_CAP - 1 bytes. */
    if (snprintf(last_error, sizeof last_error, "%s: %s", prefix, old) < 0) last_error[0] = '\0';
    return status;
}

void embd_clear_error(void) {
    last_error[0] = '\0';
}

const char *embd_last_error(void) {
    return last_error;
}

const char *embd_status_str(enum embd_status status) {
    switch (status) {
    case EMBD_OK:
        return "ok";
    case EMBD_ERR_INVALID_ARG:
        return "invalid argument";
    case EMBD_ERR_IO:
        return "input/output error";
    case EMBD_ERR_MODEL_FORMAT:
        return "malformed model file";
    case EMBD_ERR_UNSUPPORTED:
        return "unsupported";
    case EMBD_ERR_NOMEM:
        return "out of memory";
    case EMBD_ERR_BUFFER_TOO_SMALL:
        return "buffer too small";
    case EMBD_ERR_BACKEND:
        return "backend failure";
    case EMBD_ERR_INTERNAL:
        return "internal error";
    case EMBD_ERR_BUSY:
        return "busy";
    case EMBD_ERR_CANCELLED:
        return "cancelled";
    case EMBD_ERR_TIMEOUT:
        return "timed out";
    case EMBD_ERR_TOO_LONG:
        return "input too long";
    }
    return "unknown status";
}

_Noreturn void embd_assert_fail(const char *file, int line, const char *cond) {
    fprintf(stderr, "embd: internal error: assertion failed at %s:%d: %s\n", file, line, cond);
    abort();
}

enum embd_status embd_read_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return embd_error(EMBD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return embd_error(EMBD_ERR_IO, "%s is not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return embd_error(EMBD_ERR_IO, "%s is too large (%lld bytes, limit %zu)", path,
                          (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = embd_malloc(n + 1);
    if (!buf) {
        fclose(f);
        return embd_error(EMBD_ERR_NOMEM, "out of memory reading %s", path);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        embd_free(buf);
        return embd_error(EMBD_ERR_IO, "cannot read %s", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return EMBD_OK;
}

char *embd_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = embd_malloc(a + (size_t)slash + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

uint64_t embd_hash64(uint64_t seed, const void *data, size_t len) {
    return XXH3_64bits_withSeed(data, len, seed);
}
