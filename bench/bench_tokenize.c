/* bench_tokenize — embd's tokenizer throughput on one thread.
 *
 * Reads FILE, texts separated by NUL bytes (bench/suite.py writes it), loads
 * the model, tokenizes every text once untimed (warm-up), then REPS times
 * timed, one embd_tokenize call per text on the calling thread (the
 * tokenizer does not use threads). Prints one JSON line: texts, tokens (per
 * pass, after truncation, [CLS]/[SEP] included), reps, seconds (all timed
 * passes), texts_per_s, tokens_per_s.
 *
 * usage: bench_tokenize MODEL_DIR FILE [REPS]   (REPS default 3)
 * Built by bench/run with the C compiler against build/release/libembd.so. */
#include "embd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The whole of `path` in a malloc'ed buffer; *len its size. NULL on error. */
static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto fail;
    buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) goto fail;
    buf[size] = '\0';
    *len = (size_t)size;
    fclose(f);
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

/* Tokenizes each of the n texts at starts[i] (NUL-terminated); returns the
 * total id count, or -1 on error. */
static long long tokenize_all(const embd_model *model, char **starts, size_t n, int32_t *ids,
                              size_t cap) {
    long long total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t n_ids = 0;
        enum embd_status st = embd_tokenize(model, starts[i], strlen(starts[i]), ids, cap, &n_ids);
        if (st != EMBD_OK) {
            fprintf(stderr, "embd: tokenize: %s\n", embd_last_error());
            return -1;
        }
        total += (long long)n_ids;
    }
    return total;
}

int main(int argc, char **argv) {
    size_t len = 0, n = 0, cap;
    char *buf = NULL, **starts = NULL;
    int32_t *ids = NULL;
    embd_model *model = NULL;
    int reps = argc > 3 ? atoi(argv[3]) : 3, rc = 1;
    long long tokens = 0;
    double t0, secs;

    if (argc < 3 || reps < 1) {
        fprintf(stderr, "usage: bench_tokenize MODEL_DIR FILE [REPS]\n");
        return 2;
    }
    buf = read_all(argv[2], &len);
    if (!buf) {
        fprintf(stderr, "embd: cannot read %s\n", argv[2]);
        return 1;
    }
    starts = malloc((len + 1) * sizeof *starts);
    if (!starts) goto done;
    for (size_t i = 0; i < len; i++)
        if (i == 0 || buf[i - 1] == '\0') starts[n++] = buf + i;
    if (embd_model_load(argv[1], embd_model_default_params(), &model) != EMBD_OK) {
        fprintf(stderr, "embd: %s\n", embd_last_error());
        goto done;
    }
    cap = (size_t)embd_model_max_tokens(model);
    ids = malloc(cap * sizeof *ids);
    if (!ids || tokenize_all(model, starts, n, ids, cap) < 0) goto done;
    t0 = now_s();
    for (int r = 0; r < reps; r++) {
        tokens = tokenize_all(model, starts, n, ids, cap);
        if (tokens < 0) goto done;
    }
    secs = now_s() - t0;
    printf("{\"texts\": %zu, \"tokens\": %lld, \"reps\": %d, \"seconds\": %.6f, "
           "\"texts_per_s\": %.1f, \"tokens_per_s\": %.1f}\n",
           n, tokens, reps, secs, (double)n * reps / secs, (double)tokens * reps / secs);
    rc = 0;
done:
    embd_model_free(model);
    free(ids);
    free(starts);
    free(buf);
    return rc;
}
