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

/* The length of the UTF-8 sequence that lead byte c starts (2..4), or 0 if
 * c cannot start one; *min is the smallest code point of that length. */
static size_t utf8_seq_len(unsigned c, unsigned *min) {
    if (c >= 0xC2 && c <= 0xDF) return *min = 0x80, 2;
    if (c >= 0xE0 && c <= 0xEF) return *min = 0x800, 3;
    if (c >= 0xF0 && c <= 0xF4) return *min = 0x10000, 4;
    return 0;
}

/* Whether the n-byte sequence at p (lead byte included, n from
 * utf8_seq_len) is a valid code point of at least min. */
static bool utf8_seq_valid(const unsigned char *p, size_t n, unsigned min) {
    unsigned cp = p[0] & (0x7Fu >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return false;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    return cp >= min && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
}

bool embd_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        unsigned min = 0;
        const size_t n = utf8_seq_len(*p, &min);
        if (!n || (size_t)(end - p) < n || !utf8_seq_valid(p, n, min)) return false;
        p += n;
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
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {
            unsigned min = 0;
            const size_t n = c < 0x80 ? 1 : utf8_seq_len(c, &min);
            if (n == 1 || (n && (size_t)(end - p) >= n && utf8_seq_valid(p, n, min))) {
                p += n;
                continue;
            }
        }
        if (p > run) put(ctx, (const char *)run, (size_t)(p - run));
        char e[8];
        if (c >= 0x80) {
            put(ctx, "\\ufffd", 6);
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
        run = ++p;
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
