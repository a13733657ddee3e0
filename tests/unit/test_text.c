/* Unit tests of src/util/text.c: JSON strings (escapes, U+0000, invalid
 * UTF-8), JSON numbers (null for NaN and inf), the string builder (growth,
 * allocation failure), base64, and the JSON log line built on them. */
#include "test.h"
#include "util/log.h"
#include "util/text.h"
#include "util/util.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* s[0..len) as a JSON string, in a static buffer. */
static const char *json_of(const char *s, size_t len) {
    static struct embd_buf b;
    embd_buf_reset(&b);
    embd_buf_json_string(&b, s, len);
    return b.oom ? "(oom)" : b.p;
}

/* Whether `json` parses (Jansson, strict) to the string want[0..want_len). */
static bool parses_to(const char *json, const char *want, size_t want_len) {
    json_error_t err;
    json_t *v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    bool ok = json_is_string(v) && json_string_length(v) == want_len &&
              !memcmp(json_string_value(v), want, want_len);
    json_decref(v);
    return ok;
}

static void test_json_string(void) {
    CHECK(!strcmp(json_of("", 0), "\"\""));
    CHECK(!strcmp(json_of("plain text", 10), "\"plain text\""));
    CHECK(!strcmp(json_of("q\"b\\", 4), "\"q\\\"b\\\\\""));
    CHECK(!strcmp(json_of("a\nb\rc\td", 7), "\"a\\nb\\rc\\td\""));
    /* A NUL is a character: written as \u0000, and what follows it is kept. */
    CHECK(!strcmp(json_of("NUL\0after", 9), "\"NUL\\u0000after\""));
    CHECK(parses_to(json_of("NUL\0after", 9), "NUL\0after", 9));
    CHECK(!strcmp(json_of("\x01\x1f\x7f", 3), "\"\\u0001\\u001f\\u007f\""));
    /* Valid UTF-8 as it is, 2 to 4 bytes. */
    CHECK(!strcmp(json_of("caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80", 14),
                  "\"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80\""));
    /* Each maximal invalid subpart is one U+FFFD, as Python's
     * bytes.decode("utf-8", "replace") and Rust's from_utf8_lossy: a
     * sequence cut short is one, a byte that cannot start or continue one is
     * one each; a valid sequence next to a stray continuation byte is kept. */
    CHECK(!strcmp(json_of("\xff", 1), "\"\\ufffd\""));
    CHECK(!strcmp(json_of("a\xc3", 2), "\"a\\ufffd\""));       /* cut at the end */
    CHECK(!strcmp(json_of("\xe6\x97", 2), "\"\\ufffd\""));     /* cut at the end */
    CHECK(!strcmp(json_of("\xf0\x9f\x98", 3), "\"\\ufffd\"")); /* cut at the end */
    CHECK(!strcmp(json_of("\xf0\x9f\x98(\xe6\x97)", 7), "\"\\ufffd(\\ufffd)\"")); /* cut short */
    CHECK(!strcmp(json_of("\xe0\x80\x80", 3), "\"\\ufffd\\ufffd\\ufffd\""));      /* overlong */
    CHECK(!strcmp(json_of("\xed\x9f", 2), "\"\\ufffd\""));                   /* cut at the end */
    CHECK(!strcmp(json_of("\xc3\xa9\xa9", 3), "\"\xc3\xa9\\ufffd\""));       /* é, stray byte */
    CHECK(!strcmp(json_of("\xc0\xaf", 2), "\"\\ufffd\\ufffd\""));            /* overlong */
    CHECK(!strcmp(json_of("\xed\xa0\x80", 3), "\"\\ufffd\\ufffd\\ufffd\"")); /* surrogate */
    CHECK(!strcmp(json_of("\xf4\x90\x80\x80", 4), "\"\\ufffd\\ufffd\\ufffd\\ufffd\""));
    CHECK(!strcmp(json_of("\xc3(", 2), "\"\\ufffd(\""));
    /* Every byte value, alone and after a lead byte: always valid JSON. */
    for (int c = 0; c < 256; c++) {
        const char two[2] = {(char)c, (char)0xe6};
        for (size_t n = 1; n <= 2; n++) {
            json_error_t err;
            json_t *v = json_loads(json_of(two, n), JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
            CHECK_MSG(json_is_string(v), "byte %02x (of %zu): %s", c, n, err.text);
            json_decref(v);
        }
    }
}

static void test_json_float(void) {
    char t[EMBD_JSON_FLOAT_MAX];
    CHECK(embd_json_float(t, 0.5f) == 3 && !strcmp(t, "0.5"));
    CHECK(embd_json_float(t, -0.0f) == 2 && !strcmp(t, "-0"));
    CHECK(embd_json_float(t, NAN) == 4 && !strcmp(t, "null"));
    CHECK(embd_json_float(t, -NAN) == 4 && !strcmp(t, "null"));
    CHECK(embd_json_float(t, INFINITY) == 4 && !strcmp(t, "null"));
    CHECK(embd_json_float(t, -INFINITY) == 4 && !strcmp(t, "null"));
    /* Nine significant digits read back as the same float. */
    const float xs[] = {0.1f, -FLT_MAX, FLT_MIN, FLT_TRUE_MIN, 1.0f / 3.0f, 123456789.0f};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        size_t n = embd_json_float(t, xs[i]);
        CHECK_MSG(n == strlen(t) && strtof(t, NULL) == xs[i], "%s", t);
    }
    struct embd_buf b = {0};
    const float v[] = {1.0f, NAN, -2.5f, INFINITY};
    embd_buf_json_floats(&b, v, 4);
    CHECK(!b.oom && !strcmp(b.p, "[1,null,-2.5,null]"));
    embd_buf_reset(&b);
    embd_buf_json_floats(&b, v, 0);
    CHECK(!strcmp(b.p, "[]"));
    embd_buf_free(&b);
}

static void test_buf(void) {
    struct embd_buf b = {0};
    embd_buf_put(&b, "", 0);
    CHECK(b.p && b.len == 0 && b.p[0] == '\0'); /* a string after any write */
    embd_buf_str(&b, "ab");
    embd_buf_printf(&b, "%d-%s", 42, "x");
    CHECK(b.len == 6 && !strcmp(b.p, "ab42-x"));
    /* Growth well past the first allocation. */
    for (int i = 0; i < 10000; i++)
        embd_buf_printf(&b, "%04d", i % 10000);
    CHECK(!b.oom && b.len == 6 + 40000 && b.p[b.len] == '\0' &&
          !memcmp(b.p + b.len - 4, "9999", 4));
    embd_buf_reset(&b);
    CHECK(b.len == 0 && b.p[0] == '\0' && !b.oom);
    embd_buf_free(&b);
    CHECK(!b.p && !b.len && !b.cap);

    /* A failed allocation: oom, and every later write a no-op. */
    embd_fault_alloc_after(0);
    embd_buf_str(&b, "lost");
    embd_fault_alloc_after(-1);
    CHECK(b.oom && !b.p);
    embd_buf_str(&b, "also lost");
    embd_buf_json_string(&b, "x", 1);
    embd_buf_base64(&b, "x", 1);
    CHECK(b.oom && !b.p && b.len == 0);
    embd_buf_str(&b, "0123456789");
    embd_buf_reset(&b); /* clears oom: usable again */
    embd_buf_str(&b, "0123456789");
    CHECK(!b.oom && !strcmp(b.p, "0123456789"));
    embd_fault_alloc_after(0); /* the growth fails: the text so far is kept */
    for (int i = 0; i < 100; i++)
        embd_buf_str(&b, "0123456789");
    embd_fault_alloc_after(-1);
    CHECK(b.oom && b.len < 1010 && strlen(b.p) == b.len);
    embd_buf_free(&b);
}

static void test_base64(void) {
    /* RFC 4648, section 10. */
    static const char *const want[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                       "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    struct embd_buf b = {0};
    for (size_t n = 0; n <= 6; n++) {
        embd_buf_reset(&b);
        embd_buf_base64(&b, "foobar", n);
        CHECK_MSG(!b.oom && !strcmp(b.p, want[n]), "%zu: %s", n, b.p);
    }
    const unsigned char bytes[] = {0x00, 0xff, 0xfe, 0x80, 0x3f};
    embd_buf_reset(&b);
    embd_buf_str(&b, "\"");
    embd_buf_base64(&b, bytes, sizeof bytes);
    embd_buf_str(&b, "\"");
    CHECK(!strcmp(b.p, "\"AP/+gD8=\""));
    embd_buf_free(&b);
}

/* The JSON log line of a message that is all escapes (quotes, control
 * characters, a cut UTF-8 sequence) at its longest is whole, valid JSON. */
static void test_log_json(void) {
    char path[] = "/tmp/embd_unit_text_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    CHECK(embd_log_configure("info", "json") == EMBD_OK);
    char msg[1100];
    for (size_t i = 0; i < sizeof msg - 1; i++)
        msg[i] = i % 3 == 0 ? '"' : i % 3 == 1 ? '\x01' : '\xe6';
    msg[sizeof msg - 1] = '\0';
    embd_log(EMBD_LOG_WARN, "text\x02test", "%s", msg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    embd_log_configure("warn", "text");
    char *buf = NULL;
    size_t len = 0;
    CHECK(embd_read_file(path, 1 << 20, &buf, &len) == EMBD_OK);
    close(fd);
    unlink(path);
    json_error_t err;
    json_t *j = buf ? json_loadb(buf, len, 0, &err) : NULL;
    CHECK_MSG(json_is_object(j), "%s: %.200s", j ? "" : err.text, buf ? buf : "");
    const char *ev = json_string_value(json_object_get(j, "event"));
    const char *m = json_string_value(json_object_get(j, "msg"));
    CHECK(ev && !strcmp(ev, "text\x02test"));
    /* cut at 1023 bytes: 341 times '"', \x01, U+FFFD (the lone lead byte) */
    CHECK(m && strlen(m) == 341 * 5 && m[0] == '"' && m[1] == '\x01');
    CHECK(len > 0 && buf[len - 1] == '\n');
    json_decref(j);
    embd_free(buf);
}

int main(void) {
    test_json_string();
    test_json_float();
    test_buf();
    test_base64();
    test_log_json();
    double t0 = embd_now(), t1 = embd_now();
    CHECK(t0 > 0 && t1 >= t0);
    return test_summary("unit_text");
}
