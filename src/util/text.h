/* text.h — text helpers shared by libembd, the server and the CLI: UTF-8
 * validation, JSON strings and numbers, a growing string builder, base64,
 * the monotonic clock.
 *
 * The embd binary links its own copy of this unit (CMakeLists.txt: the
 * embd_util archive), so it holds no state of its own: nothing here may read
 * or write libembd's error message or log settings (util.c, log.c). */
#ifndef EMBD_TEXT_H
#define EMBD_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s[0..len) is valid UTF-8: no overlong forms, no surrogates,
 * nothing above U+10FFFF. A NUL byte is valid (U+0000). */
bool embd_utf8_valid(const char *s, size_t len);

/* The length of the unit that starts s[0..len) (len >= 1): a valid UTF-8
 * sequence (*valid true; 1 to 4 bytes), else its maximal invalid subpart
 * (*valid false): the longest start of a valid sequence there, at least one
 * byte, which Python's bytes.decode("utf-8", "replace"), Rust's
 * String::from_utf8_lossy and so Hugging Face tokenizers each replace by
 * one U+FFFD ("\xe6\x97" cut short: one; "\xc0\xaf": two). */
size_t embd_utf8_unit(const char *s, size_t len, bool *valid);

/* Monotonic seconds (CLOCK_MONOTONIC), for durations. */
double embd_now(void);

/* An output sink: receives n bytes (not NUL-terminated). */
typedef void (*embd_put_fn)(void *ctx, const char *bytes, size_t n);

/* Writes s[0..len) as a JSON string, quotes included, through put: " and \
 * backslash-escaped, \n \r \t as such, the other control characters and DEL
 * as \u00XX (a NUL is a character: \u0000), valid UTF-8 sequences as they
 * are, and each byte that does not belong to one as \ufffd. The output is
 * valid JSON whatever the bytes. */
void embd_json_string(embd_put_fn put, void *ctx, const char *s, size_t len);

/* Room for any text embd_json_float writes, its NUL included. */
#define EMBD_JSON_FLOAT_MAX 32

/* Writes x as a JSON number into out, NUL-terminated: "%.9g" (reads back as
 * the same float), or null for NaN and +-inf, which JSON has no number for.
 * Returns the length. */
size_t embd_json_float(char out[EMBD_JSON_FLOAT_MAX], float x);

/* A growing string. Start it zeroed ({0}); after any write p is
 * NUL-terminated at len. A failed allocation sets oom and turns every later
 * write into a no-op, so a caller checks oom once, at the end. Allocates
 * through embd_realloc (fault injection in tests). */
struct embd_buf {
    char *p; /* the text, or NULL before the first write */
    size_t len, cap;
    bool oom;
};

/* Makes room for `more` bytes and the NUL after them (so that a large reply
 * is allocated once); sets oom on failure. */
void embd_buf_reserve(struct embd_buf *b, size_t more);
void embd_buf_put(struct embd_buf *b, const char *s, size_t n);
void embd_buf_str(struct embd_buf *b, const char *s);
void embd_buf_printf(struct embd_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* embd_json_string into b. */
void embd_buf_json_string(struct embd_buf *b, const char *s, size_t len);
/* embd_json_float into b. */
void embd_buf_json_float(struct embd_buf *b, float x);
/* A JSON array of v[0..n), each as embd_json_float: "[0.5,null,-1]". */
void embd_buf_json_floats(struct embd_buf *b, const float *v, size_t n);
/* data[0..n) in base64 (RFC 4648: + and /, = padding), without quotes. */
void embd_buf_base64(struct embd_buf *b, const void *data, size_t n);
/* Empties b (len 0, oom cleared), keeping its memory. */
void embd_buf_reset(struct embd_buf *b);
/* Frees b's memory and zeroes it. */
void embd_buf_free(struct embd_buf *b);
/* An embd_put_fn that appends to the embd_buf ctx (for embd_json_string). */
void embd_buf_put_fn(void *ctx, const char *bytes, size_t n);

#endif
