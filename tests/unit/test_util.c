/* Unit tests of src/util: UTF-8 validation, error messages, paths, the
 * allocation fault hook and file reading limits. */
#include "test.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    /* UTF-8 validity: the boundaries of each sequence length, overlongs, surrogates. */
    CHECK(embd_utf8_valid("", 0));
    CHECK(embd_utf8_valid("hello", 5));
    CHECK(embd_utf8_valid("\xc3\xa9", 2));          /* é */
    CHECK(embd_utf8_valid("\xe6\x97\xa5", 3));      /* 日 */
    CHECK(embd_utf8_valid("\xf0\x9f\x98\x80", 4));  /* 😀 */
    CHECK(embd_utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    CHECK(!embd_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(!embd_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!embd_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    CHECK(!embd_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!embd_utf8_valid("\xc3", 1));             /* truncated */
    CHECK(!embd_utf8_valid("\xe6\x97", 2));         /* truncated */
    CHECK(!embd_utf8_valid("\x80", 1));             /* lone continuation */
    CHECK(!embd_utf8_valid("\xff", 1));
    CHECK(!embd_utf8_valid("a\xc3(", 3));

    /* Errors return their status and keep a message per thread. */
    CHECK(embd_error(EMBD_ERR_IO, "cannot open %s", "x") == EMBD_ERR_IO);
    CHECK(!strcmp(embd_last_error(), "cannot open x"));
    CHECK(embd_error_prefix(EMBD_ERR_IO, "model %d", 3) == EMBD_ERR_IO);
    CHECK(!strcmp(embd_last_error(), "model 3: cannot open x"));
    for (int s = EMBD_OK; s <= EMBD_ERR_INTERNAL; s++)
        CHECK(strlen(embd_status_str((enum embd_status)s)) > 0);

    char *p = embd_path_join("a/b", "c.json");
    CHECK(p && !strcmp(p, "a/b/c.json"));
    embd_free(p);
    p = embd_path_join("a/b/", "c.json");
    CHECK(p && !strcmp(p, "a/b/c.json"));
    embd_free(p);

    /* The fault hook fails exactly the Nth allocation, then disarms. */
    embd_fault_alloc_after(2);
    void *a = embd_malloc(8), *b = embd_malloc(8), *c = embd_malloc(8), *d = embd_malloc(8);
    CHECK(a && b && !c && d);
    embd_free(a);
    embd_free(b);
    embd_free(d);
    embd_fault_alloc_after(-1);
    CHECK(embd_calloc(SIZE_MAX / 2, 4) == NULL); /* overflow */
    CHECK(embd_malloc2(SIZE_MAX / 2, 4) == NULL);

    /* Files: missing, too large, fine. */
    char *buf = NULL;
    size_t len = 0;
    CHECK(embd_read_file("/nonexistent/file", 100, &buf, &len) == EMBD_ERR_IO && !buf);
    char path[] = "/tmp/embd_unit_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "0123456789", 10) == 10);
    close(fd);
    CHECK(embd_read_file(path, 9, &buf, &len) == EMBD_ERR_IO && !buf); /* over the limit */
    CHECK(strstr(embd_last_error(), "too large") != NULL);
    CHECK(embd_read_file(path, 10, &buf, &len) == EMBD_OK && len == 10 && buf[10] == '\0');
    embd_free(buf);
    unlink(path);
    CHECK(embd_read_file("/tmp", 100, &buf, &len) == EMBD_ERR_IO); /* a directory */
    CHECK(embd_hash64(0, "abc", 3) == embd_hash64(0, "abc", 3));
    CHECK(embd_hash64(0, "abc", 3) != embd_hash64(1, "abc", 3));
    return test_summary("unit_util");
}
