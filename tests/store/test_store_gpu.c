/* test_store_gpu.c — an embedded store asked to score on the GPU (params.gpu)
 * where no GPU can be used (ctest makes the CUDA plugin missing with
 * EMBD_CUDA_PLUGIN; on a machine without a driver that alone is enough):
 * searches give exactly the CPU store's hits, before and after an append,
 * the store logs one warning naming the reason (not one per search), and
 * embd_store_search_device says "cpu" and why. Runs everywhere. */
#include "../test.h"
#include "store/store.h"
#include "store_fixture.h"

#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define D 48
#define N 3000
#define NQ 20
#define K 10
#define FP 0x00c0ffee00c0ffeeull

static uint64_t rng = 0x243F6A8885A308D3ull;

/* Searches both stores with every query; returns how many gave identical
 * hits (ids, texts and bit-equal scores). */
static int compare(embd_store *a, embd_store *b, const float *qs) {
    int same = 0;
    for (int q = 0; q < NQ; q++) {
        struct embd_store_hit ha[K], hb[K];
        size_t na = 0, nb = 0;
        CHECK(embd_store_search(a, qs + (size_t)q * D, K, ha, &na) == EMBD_OK);
        char ids[K][24];
        float sc[K];
        for (size_t r = 0; r < na; r++) {
            snprintf(ids[r], sizeof ids[r], "%.*s", (int)ha[r].id_len, ha[r].id);
            sc[r] = ha[r].score;
        }
        CHECK(embd_store_search(b, qs + (size_t)q * D, K, hb, &nb) == EMBD_OK);
        bool eq = na == K && nb == K;
        for (size_t r = 0; eq && r < nb; r++)
            eq = strlen(ids[r]) == hb[r].id_len && !memcmp(ids[r], hb[r].id, hb[r].id_len) &&
                 !memcmp(&sc[r], &hb[r].score, sizeof sc[r]);
        same += eq;
    }
    return same;
}

int main(void) {
    char root[] = "/tmp/embd-store-gpu-XXXXXX";
    if (!mkdtemp(root)) TEST_SKIP("cannot make a temporary directory");
    char dir[128], logf[128];
    snprintf(dir, sizeof dir, "%s/store", root);
    snprintf(logf, sizeof logf, "%s/stderr.txt", root);

    float *vecs = malloc((size_t)(N + 100) * D * sizeof(float));
    float *qs = malloc((size_t)NQ * D * sizeof(float));
    if (!vecs || !qs) TEST_SKIP("out of memory");
    for (size_t i = 0; i < (size_t)(N + 100) * D; i++)
        vecs[i] = fx_frand(&rng);
    for (size_t i = 0; i < (size_t)NQ * D; i++)
        qs[i] = fx_frand(&rng);

    struct embd_store_params gp = {.dim = D,
                                   .fingerprint = FP,
                                   .normalized = false,
                                   .create = true,
                                   .writable = true,
                                   .gpu = true,
                                   .gpu_index = 0};
    embd_store *gs = NULL;
    CHECK(embd_store_open(dir, &gp, &gs, NULL) == EMBD_OK);
    if (!gs) return test_summary("store_gpu_fallback");
    CHECK(fx_add_n(gs, "d", 0, N, vecs) == EMBD_OK);
    CHECK(embd_store_flush(gs) == EMBD_OK);
    const char *why = NULL;
    CHECK(!strcmp(embd_store_search_device(gs, &why), "cuda")); /* asked, not yet tried */
    CHECK(why && !*why);

    /* The searches, with stderr in a file. */
    fflush(stderr);
    int saved = dup(2), fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);

    struct embd_store_params cp = gp;
    cp.create = cp.writable = cp.gpu = false;
    embd_store *cs = NULL;
    CHECK(embd_store_open(dir, &cp, &cs, NULL) == EMBD_OK);
    int same1 = cs ? compare(gs, cs, qs) : 0;
    embd_store_close(cs);
    cs = NULL;
    /* An append after the fallback is searched too (on the CPU). */
    CHECK(fx_add_n(gs, "d", N, 100, vecs + (size_t)N * D) == EMBD_OK);
    CHECK(embd_store_flush(gs) == EMBD_OK);
    CHECK(embd_store_open(dir, &cp, &cs, NULL) == EMBD_OK);
    int same2 = cs ? compare(gs, cs, qs) : 0;
    embd_store_close(cs);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);

    CHECK_MSG(same1 == NQ, "%d of %d queries equal the CPU store's", same1, NQ);
    CHECK_MSG(same2 == NQ, "after an append: %d of %d queries equal the CPU store's", same2, NQ);
    const char *dev = embd_store_search_device(gs, &why);
    CHECK_MSG(!strcmp(dev, "cpu") && why && (strstr(why, "plugin") || strstr(why, "driver")),
              "device %s, why \"%s\"", dev, why ? why : "(null)");

    /* Exactly one warning, naming the store, the device and the reason. */
    char text[8192] = "";
    FILE *f = fopen(logf, "r");
    size_t len = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[len] = '\0';
    char copy[sizeof text];
    memcpy(copy, text, len + 1);
    int lines = 0, warn = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        warn += strstr(line, "warn") && strstr(line, "no GPU search on cuda:0") &&
                strstr(line, dir) && (strstr(line, "plugin") || strstr(line, "driver"));
    }
    CHECK_MSG(lines == 1 && warn == 1, "stderr had %d lines, %d the fallback warning", lines, warn);
    if (lines != 1 || warn != 1)
        fprintf(stderr, "stderr was: %s\n", copy);
    else
        printf("the warning: %s", copy);

    embd_store_close(gs);
    free(vecs);
    free(qs);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return test_summary("store_gpu_fallback");
}
