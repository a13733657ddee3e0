/* bench_backend.c — tokens/s of the CPU backend (not a test; it only prints).
 *
 *   bench_backend [MODEL_DIR|-] [THREADS]
 *
 * runs with 1 thread, then with THREADS (default 2). "-" forces the random model.
 * With MODEL_DIR (or $EMBD_TEST_MODELS/all-MiniLM-L6-v2 when it exists) the
 * real model is loaded; otherwise a random model of all-MiniLM-L6-v2's shape
 * (L=6, H=384, NH=12, I=1536), which costs the same. Token ids are random:
 * the cost does not depend on them. Workloads: short queries, a Debian-like
 * spread of description lengths, 256- and 512-token documents; batches of up
 * to 16384 tokens as the engine packs them. */
#include "backend/backend.h"
#include "model/model.h"
#include "rand_model.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define BUDGET 16384

/* CPU seconds used by the whole process (all threads). */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Embeds sequences of the given lengths in packed batches of at most BUDGET
 * tokens, `reps` times; prints and returns tokens per second (wall clock) of
 * the fastest rep, and also tokens per CPU-second, which is steadier on a
 * busy machine. */
static double bench(const char *what, const struct embd_backend_ops *ops, embd_backend *be,
                    const struct embd_model *m, const int *lens, int n, int reps) {
    int32_t *ids = malloc(BUDGET * sizeof(int32_t));
    int32_t *starts = malloc((size_t)(n + 1) * sizeof(int32_t));
    float *out = malloc((size_t)n * m->hp.H * sizeof(float));
    long total = 0;
    for (int s = 0; s < n; s++)
        total += lens[s];
    for (int t = 0; t < BUDGET; t++)
        ids[t] = rm_int(1000, m->hp.V - 1);
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = embd_now(), c0 = cpu_seconds();
        for (int s = 0; s < n;) {
            int k = 0, T = 0;
            starts[0] = 0;
            while (s + k < n && T + lens[s + k] <= BUDGET) {
                T += lens[s + k];
                starts[++k] = T;
            }
            embd_batch b = {.n_seq = k, .n_tok = T, .ids = ids, .seq_start = starts};
            if (ops->embed(be, out + (size_t)s * m->hp.H, &b, true) != EMBD_OK) {
                fprintf(stderr, "embed: %s\n", embd_last_error());
                exit(1);
            }
            s += k;
        }
        double dt = embd_now() - t0, dc = cpu_seconds() - c0;
        if (dt < best) best = dt;
        if (dc < best_cpu) best_cpu = dc;
    }
    printf("  %-24s %9.0f tokens/s  %9.0f tokens/CPU-s  (%ld tokens)\n", what, (double)total / best,
           (double)total / best_cpu, total);
    free(ids);
    free(starts);
    free(out);
    return (double)total / best;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char path[4096] = "";
    if (argc > 1) {
        snprintf(path, sizeof path, "%s", argv[1]);
    } else if (getenv("EMBD_TEST_MODELS")) {
        snprintf(path, sizeof path, "%s/all-MiniLM-L6-v2", getenv("EMBD_TEST_MODELS"));
        struct stat sb;
        if (stat(path, &sb) != 0) path[0] = '\0';
    }
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    embd_model *loaded = NULL;
    rand_model rm;
    const struct embd_model *m;
    if (path[0] && strcmp(path, "-") != 0) {
        if (embd_model_load(path, embd_model_default_params(), &loaded) != EMBD_OK) {
            fprintf(stderr, "load %s: %s\n", path, embd_last_error());
            return 1;
        }
        m = loaded;
        printf("model %s\n", path);
    } else {
        if (rand_model_make(&rm, 30522, 384, 12, 1536, 6, 512, EMBD_POOL_MEAN, true, 1) != 0)
            return 1;
        m = &rm.model;
        printf("model: random, all-MiniLM-L6-v2 shape\n");
    }

    /* workloads */
    enum { NQ = 256, ND = 64, NL = 4, NX = 2 };
    static int q[NQ], d[ND], l[NL], x[NX];
    rm_seed(42);
    for (int i = 0; i < NQ; i++)
        q[i] = rm_int(5, 12);
    for (int i = 0; i < ND; i++) {
        /* log-normal around 70 tokens, like Debian descriptions, cut at 256 */
        double u1 = (rm_uniform() + 1.0) / 2.0 + 1e-12, u2 = (rm_uniform() + 1.0) / 2.0;
        double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        int len = (int)(70.0 * exp(0.6 * z));
        d[i] = len < 4 ? 4 : len > 256 ? 256 : len;
    }
    for (int i = 0; i < NL; i++)
        l[i] = 256;
    for (int i = 0; i < NX; i++)
        x[i] = 512;

    int tlist[2] = {1, threads > 0 ? threads : 2};
    for (int ti = 0; ti < 2; ti++) {
        embd_backend_params p = {
            .n_threads = tlist[ti], .dtype = EMBD_DTYPE_FP32, .max_batch_tokens = BUDGET};
        embd_backend *be = NULL;
        if (embd_backend_cpu_ops.init(&be, m, &p) != EMBD_OK) {
            fprintf(stderr, "init: %s\n", embd_last_error());
            return 1;
        }
        printf("cpu backend, %d thread(s):\n", tlist[ti]);
        bench("queries 5-12 tok", &embd_backend_cpu_ops, be, m, q, NQ, 2);
        bench("docs ~70 tok (<= 256)", &embd_backend_cpu_ops, be, m, d, ND, 2);
        bench("docs 256 tok", &embd_backend_cpu_ops, be, m, l, NL, 2);
        bench("docs 512 tok", &embd_backend_cpu_ops, be, m, x, NX, 2);
        embd_backend_cpu_ops.free(be);
    }
    if (loaded)
        embd_model_free(loaded);
    else
        rand_model_free(&rm);
    return 0;
}
