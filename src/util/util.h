/* util.h — small helpers shared by every part of libembd: error messages,
 * assertions, allocation (with a fault-injection hook for tests), files;
 * text.h (UTF-8, JSON writing, the string builder, the clock) comes with it.
 *
 * The embd binary (src/cli, src/server) takes only the allocators and
 * text.h from here: the errors (util.c) and the log (log.c) are libembd's
 * state, reached through embd.h (embd_last_error, embd_log_configure); a
 * copy in the binary would shadow them (tests/unit/test_cli_link.py). */
#ifndef EMBD_UTIL_H
#define EMBD_UTIL_H

#include "embd.h"
#include "util/text.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Records a printf-style message as this thread's last error and returns
 * `status`, so that callers can write `return embd_error(EMBD_ERR_IO, ...)`. */
enum embd_status embd_error(enum embd_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to this thread's last error message. Returns status. */
enum embd_status embd_error_prefix(enum embd_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void embd_clear_error(void);

/* Internal invariant: a failure is a bug in embd; prints file and line and aborts.
 * Never use it for anything a caller or a file can get wrong. */
#define EMBD_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) embd_assert_fail(__FILE__, __LINE__, #cond);                                  \
    } while (0)
_Noreturn void embd_assert_fail(const char *file, int line, const char *cond);

/* Allocation. All of libembd allocates through these so that tests can fail
 * the Nth allocation (embd_fault_alloc_after). They return NULL on failure
 * (and on a size overflow in embd_calloc / embd_malloc2). */
void *embd_malloc(size_t size);
void *embd_calloc(size_t n, size_t size);
void *embd_malloc2(size_t n, size_t size); /* n * size with an overflow check */
void *embd_realloc(void *ptr, size_t size);
void embd_free(void *ptr);
char *embd_strdup(const char *s);
char *embd_strndup(const char *s, size_t n);

/* Test hook: make the allocation after `n` more succeed fail (n = 0: the next
 * one); -1 disarms. Returns how many allocations were made since the last call. */
long embd_fault_alloc_after(long n);

/* Reads a whole file into a NUL-terminated buffer (embd_free it). Files over
 * max_bytes are refused. Errors: EMBD_ERR_IO, EMBD_ERR_NOMEM. */
enum embd_status embd_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* Joins a directory and a file name into a new string (embd_free it). */
char *embd_path_join(const char *dir, const char *name);

/* XXH3 64-bit hash, for fingerprints and cache keys. */
uint64_t embd_hash64(uint64_t seed, const void *data, size_t len);

#endif
