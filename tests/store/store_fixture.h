/* store_fixture.h — what the store tests share: a seeded random source,
 * random unit vectors, and adding numbered records to a store. Header only
 * (static functions), for tests/store and tests/cuda. */
#ifndef EMBD_TESTS_STORE_FIXTURE_H
#define EMBD_TESTS_STORE_FIXTURE_H

#include "store/store.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Uniform in [-1, 1), from the xorshift64* state *rng (never 0). */
static inline float fx_frand(uint64_t *rng) {
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    return (float)((double)((*rng * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 -
                   1.0);
}

/* v (n, dim) = n random unit vectors. */
static inline void fx_rand_unit(uint64_t *rng, float *v, size_t n, int dim) {
    for (size_t i = 0; i < n; i++) {
        double ss = 0;
        for (int d = 0; d < dim; d++) {
            const float x = fx_frand(rng);
            v[i * (size_t)dim + (size_t)d] = x;
            ss += (double)x * x;
        }
        const float inv = (float)(1.0 / sqrt(ss));
        for (int d = 0; d < dim; d++)
            v[i * (size_t)dim + (size_t)d] *= inv;
    }
}

/* Adds n records with ids (and texts) "<prefix><first + i>" and vectors vecs
 * (n, the store's dim) to s. */
static inline enum embd_status fx_add_n(embd_store *s, const char *prefix, size_t first, size_t n,
                                        const float *vecs) {
    char(*idb)[32] = malloc(n * sizeof *idb);
    const char **ids = malloc(n * sizeof *ids);
    size_t *il = malloc(n * sizeof *il);
    enum embd_status st = EMBD_ERR_NOMEM;
    if (idb && ids && il) {
        for (size_t i = 0; i < n; i++) {
            il[i] = (size_t)snprintf(idb[i], sizeof idb[i], "%s%zu", prefix, first + i);
            ids[i] = idb[i];
        }
        st = embd_store_add(s, ids, il, ids, il, vecs, n, NULL);
    }
    free(idb);
    free(ids);
    free(il);
    return st;
}

#endif
