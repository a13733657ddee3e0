/* fuzz.h — what every fuzz target in fuzz/ shares.
 *
 * Each target defines LLVMFuzzerTestOneInput (and optionally
 * LLVMFuzzerInitialize). Built two ways:
 *   - with clang -fsanitize=fuzzer,address,undefined (scripts/fuzz), a
 *     libFuzzer binary that searches for new inputs;
 *   - with the normal compiler, linked to replay.c, a ctest that runs every
 *     file of the seed corpus and of the crash reproducers once (so the
 *     sanitizer build replays them on every change).
 *
 * FUZZ_CHECK(cond) aborts on a broken invariant: a finding, not a skip. */
#ifndef EMBD_FUZZ_H
#define EMBD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "embd: fuzz: invariant broken at %s:%d: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A private temporary directory for this process (made once, removed at
 * exit), under $TMPDIR, /dev/shm or /tmp. Exits with a message on failure. */
const char *fuzz_temp_dir(void);

/* Writes len bytes to dir/name (replacing it). Aborts on failure. */
void fuzz_write(const char *dir, const char *name, const void *buf, size_t len);

/* Removes dir/name if present. */
void fuzz_unlink(const char *dir, const char *name);

/* A little-endian reader over the fuzz input: takes bytes off the front,
 * returning zeros once the input is used up. */
typedef struct {
    const uint8_t *p;
    size_t left;
} fuzz_in;

uint8_t fuzz_u8(fuzz_in *in);
uint16_t fuzz_u16(fuzz_in *in);
uint32_t fuzz_u32(fuzz_in *in);
/* Up to n bytes (fewer at the end of the input); sets *got. */
const uint8_t *fuzz_bytes(fuzz_in *in, size_t n, size_t *got);

#endif
