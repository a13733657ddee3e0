/* text.c — UTF-8, JSON writing, the string builder, base64 and the clock
 * (see text.h). */
#define _POSIX_C_SOURCE 200809L
#include "util/text.h"

#include "util/util.h" /* the allocators (alloc.c) only */

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

size_t embd_utf8_unit(const char *s, size_t len, bool *valid) {
    const unsigned char *p = (const unsigned char *)s;
    const unsigned b = p[0];
    /* continuation bytes needed, and the range of the first (Unicode's
     * table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF) */
    unsigned need, lo = 0x80, hi = 0xBF;
    if (b < 0x80) {
        *valid = true;
        return 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        *valid = false; /* 80..BF alone, C0, C1, F5..FF */
        return 1;
    }
    size_t n = 1;
    while (n <= need && n < len) {
        const unsigned c = p[n];
        if (n == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
        n++;
    }
    *valid = n == need + 1;
    return n;
}

bool embd_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        bool ok;
        p += embd_utf8_unit((const char *)p, (size_t)(end - p), &ok);
        if (!ok) return false;
    }
    return true;
}

double embd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void embd_json_string(embd_put_fn put, void *ctx, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    const unsigned char *run = p; /* bytes that go out as they are, not yet written */
    put(ctx, "\"", 1);
    while (p < end) {
        const unsigned c = *p;
        size_t n = 1;
        if (c >= 0x80) {
            bool ok;
            n = embd_utf8_unit((const char *)p, (size_t)(end - p), &ok);
            if (ok) {
                p += n;
                continue;
            }
        } else if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {
            p++;
            continue;
        }
        if (p > run) put(ctx, (const char *)run, (size_t)(p - run));
        char e[8];
        if (c >= 0x80) {
            put(ctx, "\\ufffd", 6); /* one per maximal invalid subpart */
        } else if (c == '"' || c == '\\') {
            e[0] = '\\', e[1] = (char)c;
            put(ctx, e, 2);
        } else if (c == '\n') {
            put(ctx, "\\n", 2);
        } else if (c == '\r') {
            put(ctx, "\\r", 2);
        } else if (c == '\t') {
            put(ctx, "\\t", 2);
        } else {
            snprintf(e, sizeof e, "\\u%04x", c);
            put(ctx, e, 6);
        }
        run = p += n;
    }
    if (p > run) put(ctx, (const char *)run, (size_t)(p - run));
    put(ctx, "\"", 1);
}

size_t embd_json_float(char out[EMBD_JSON_FLOAT_MAX], float x) {
    if (!isfinite(x)) {
        memcpy(out, "null", 5);
        return 4;
    }
    /* At most 15 characters ("-1.17549435e-38"). */
    return (size_t)snprintf(out, EMBD_JSON_FLOAT_MAX, "%.9g", (double)x);
}

void embd_buf_reserve(struct embd_buf *b, size_t more) {
    if (b->oom || (b->cap && b->len + more < b->cap)) return;
    if (more > SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = embd_realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

void embd_buf_put(struct embd_buf *b, const char *s, size_t n) {
    embd_buf_reserve(b, n);
    if (b->oom) return;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void embd_buf_str(struct embd_buf *b, const char *s) {
    embd_buf_put(b, s, strlen(s));
}

void embd_buf_printf(struct embd_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true; /* an encoding error: nothing sensible to write */
        return;
    }
    embd_buf_reserve(b, (size_t)n);
    if (b->oom) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void embd_buf_put_fn(void *ctx, const char *bytes, size_t n) {
    embd_buf_put(ctx, bytes, n);
}

void embd_buf_json_string(struct embd_buf *b, const char *s, size_t len) {
    embd_json_string(embd_buf_put_fn, b, s, len);
}

void embd_buf_json_float(struct embd_buf *b, float x) {
    char t[EMBD_JSON_FLOAT_MAX];
    embd_buf_put(b, t, embd_json_float(t, x));
}

void embd_buf_json_floats(struct embd_buf *b, const float *v, size_t n) {
    embd_buf_put(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i) embd_buf_put(b, ",", 1);
        embd_buf_json_float(b, v[i]);
    }
    embd_buf_put(b, "]", 1);
}

void embd_buf_base64(struct embd_buf *b, const void *data, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *d = data;
    if (n > SIZE_MAX / 2) {
        b->oom = true;
        return;
    }
    embd_buf_reserve(b, (n + 2) / 3 * 4);
    if (b->oom) return;
    char *o = b->p + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        const unsigned v = (unsigned)d[i] << 16 | (unsigned)d[i + 1] << 8 | d[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        const unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
}

void embd_buf_reset(struct embd_buf *b) {
    b->len = 0;
    b->oom = false;
    if (b->p) b->p[0] = '\0';
}

void embd_buf_free(struct embd_buf *b) {
    embd_free(b->p);
    memset(b, 0, sizeof *b);
}
