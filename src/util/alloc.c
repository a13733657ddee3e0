/* alloc.c — allocation with fault injection (see util.h). Kept apart from
 * util.c so that the embd binary, which links libembd with its internals
 * hidden, takes its own copy (from the embd_util archive) for the server
 * and the CLI, whose allocations then fail the same way in tests that link
 * them with embd_internal. It uses nothing else from libembd. */
#include "util/util.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Fault injection: `fault_countdown` < 0 is disarmed; 0 fails the next allocation. */
static atomic_long fault_countdown = -1;
static atomic_long alloc_count = 0;

long embd_fault_alloc_after(long n) {
    long made = atomic_exchange(&alloc_count, 0);
    atomic_store(&fault_countdown, n);
    return made;
}

static int fault_hit(void) {
    atomic_fetch_add(&alloc_count, 1);
    if (atomic_load_explicit(&fault_countdown, memory_order_relaxed) < 0) return 0;
    return atomic_fetch_sub(&fault_countdown, 1) == 0;
}

void *embd_malloc(size_t size) {
    if (fault_hit()) return NULL;
    return malloc(size ? size : 1);
}

void *embd_calloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) return NULL;
    if (fault_hit()) return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *embd_malloc2(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) return NULL;
    return embd_malloc(n * size);
}

void *embd_realloc(void *ptr, size_t size) {
    if (fault_hit()) return NULL;
    return realloc(ptr, size ? size : 1);
}

void embd_free(void *ptr) {
    free(ptr);
}

char *embd_strndup(const char *s, size_t n) {
    char *d = embd_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *embd_strdup(const char *s) {
    return embd_strndup(s, strlen(s));
}
