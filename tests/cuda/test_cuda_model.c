/* test_cuda_model.c — the whole CUDA forward pass against the CPU:
 * 1. random-weight models (head sizes 32 and 64, CLS and mean pooling) on
 *    the GPU in fp32/fp16/bf16 against the fp32 reference backend;
 * 2. a batch equals its sequences run one by one;
 * 3. a device allocation failure injected at every allocation point in turn:
 *    init and embed either succeed with the right vectors or fail cleanly,
 *    and no device memory leaks;
 * 4. the real all-MiniLM-L6-v2 on the golden ids: fp16 and bf16 reach cosine
 *    >= 0.999 for every text and a mean >= 0.9999 against the CPU fp32 result
 *    (skipped without the model).
 * Skips (77) without a GPU. */
#include "backend/rand_model.h"
#include "cuda_test.h"
#include "golden_ids.h"
#include "model/model.h"
#include "util/util.h"

#include <sys/stat.h>

/* Runs ops on (ids, ss, n) in one batch into out (n, H). */
static enum embd_status run(const struct embd_backend_ops *ops, const struct embd_model *m,
                            enum embd_dtype dt, const int32_t *ids, const int32_t *ss, int n,
                            float *out) {
    embd_backend_params bp = {
        .n_threads = 2, .device_index = 0, .dtype = dt, .max_batch_tokens = 1 << 16};
    embd_backend *be = NULL;
    enum embd_status st = ops->init(&be, m, &bp);
    if (st != EMBD_OK) return st;
    embd_batch b = {.n_seq = n, .n_tok = ss[n], .ids = ids, .seq_start = ss};
    st = ops->embed(be, out, &b, true);
    ops->free(be);
    return st;
}

/* Per-sequence cosines of got against want: worst and mean. */
static void compare(const float *got, const float *want, int n, int H, double *worst,
                    double *mean) {
    *worst = 1.0;
    *mean = 0.0;
    for (int s = 0; s < n; s++) {
        double c = test_cosine(got + (size_t)s * H, want + (size_t)s * H, H);
        if (!(c >= *worst)) *worst = isnan(c) ? -2.0 : c;
        *mean += isnan(c) ? -2.0 : c;
    }
    *mean /= n;
}

static void random_ids(int32_t *ids, int32_t *ss, int n, const int *lens, int V) {
    ss[0] = 0;
    for (int s = 0; s < n; s++) {
        ss[s + 1] = ss[s] + lens[s];
        for (int t = ss[s]; t < ss[s + 1]; t++)
            ids[t] = rm_int(0, V - 1);
    }
}

static void test_random_model(const struct embd_cuda_plugin *p, int H, int NH,
                              enum embd_pooling pool, int ndt) {
    rand_model rm;
    CHECK(rand_model_make(&rm, 1000, H, NH, 4 * H, 2, 512, pool, true, 7) == 0);
    static const int lens[] = {1, 2, 5, 31, 33, 64, 65, 100, 200, 512};
    const int n = 10, T = 1013;
    int32_t ids[1013], ss[11];
    random_ids(ids, ss, n, lens, 1000);
    const int D = H;
    float *want = malloc((size_t)n * D * 4), *got = guarded_alloc((size_t)n * D);
    float *one = malloc((size_t)D * 4);
    CHECK(run(&embd_backend_ref_ops, &rm.model, EMBD_DTYPE_FP32, ids, ss, n, want) == EMBD_OK);
    (void)T;
    enum embd_dtype dts[3] = {EMBD_DTYPE_FP32, EMBD_DTYPE_FP16, EMBD_DTYPE_BF16};
    /* Random weights in two layers keep errors small: fp32 differs only in sum
     * order (cosine 1 - 1e-9); fp16 rounds every activation to 11 bits
     * (cosine >= 0.9995); bf16 to 8 bits (>= 0.995). */
    const double min_cos[3] = {0.99999, 0.9995, 0.995};
    for (int i = 0; i < ndt; i++) {
        enum embd_status st = run(p->ops, &rm.model, dts[i], ids, ss, n, got);
        CHECK_MSG(st == EMBD_OK, "%s: %s", dt_name(dts[i]), embd_last_error());
        if (st != EMBD_OK) continue;
        CHECK_MSG(guards_ok(got, (size_t)n * D), "output overrun");
        double worst, mean;
        compare(got, want, n, D, &worst, &mean);
        printf("random H=%d NH=%d %s %s: worst cosine %.7f mean %.7f\n", H, NH,
               pool == EMBD_POOL_CLS ? "cls" : "mean", dt_name(dts[i]), worst, mean);
        CHECK_MSG(worst >= min_cos[i], "%s worst cosine %.7f < %.4f", dt_name(dts[i]), worst,
                  min_cos[i]);
        /* batched == single (same kernels; only the matmul algorithm may differ) */
        double bw = 1.0;
        for (int s = 0; s < n; s++) {
            int32_t s1[2] = {0, lens[s]};
            st = run(p->ops, &rm.model, dts[i], ids + ss[s], s1, 1, one);
            CHECK_MSG(st == EMBD_OK, "single %d: %s", s, embd_last_error());
            if (st != EMBD_OK) break;
            double c = test_cosine(one, got + (size_t)s * D, D);
            if (!(c >= bw)) bw = isnan(c) ? -2 : c;
        }
        /* cuBLASLt may pick another kernel (another summation order) for
         * another row count; the outputs then differ by a rounding of dt
         * here and there: 1e-6 in fp32, 1e-5 in fp16, 1e-4 in bf16. */
        const double same_cos[3] = {0.999999, 0.99999, 0.9999};
        CHECK_MSG(bw >= same_cos[i], "%s: batched vs single worst cosine %.8f", dt_name(dts[i]),
                  bw);
    }
    free(want), guarded_free(got), free(one);
    rand_model_free(&rm);
}

/* Every device allocation failing in turn. */
static void test_fault_injection(const struct embd_cuda_plugin *p) {
    rand_model rm;
    CHECK(rand_model_make(&rm, 500, 128, 4, 512, 2, 512, EMBD_POOL_MEAN, true, 11) == 0);
    static const int lens[] = {3, 40, 512, 7};
    int32_t ids[562], ss[5];
    random_ids(ids, ss, 4, lens, 500);
    float want[4 * 128], got[4 * 128];
    CHECK(run(p->ops, &rm.model, EMBD_DTYPE_FP16, ids, ss, 4, want) == EMBD_OK);
    struct embd_gpu_info g0, g1;
    CHECK(embd_gpu_monitor(0, &g0) == 0);
    int clean = 0;
    for (long k = 0; k < 16; k++) {
        p->test->fail_alloc_after(k);
        enum embd_status st = run(p->ops, &rm.model, EMBD_DTYPE_FP16, ids, ss, 4, got);
        p->test->fail_alloc_after(-1);
        if (st == EMBD_OK) {
            double worst, mean;
            compare(got, want, 4, 128, &worst, &mean);
            CHECK_MSG(worst >= 0.99999, "fail at allocation %ld: wrong vectors (%.6f)", k, worst);
            clean++;
        } else {
            CHECK_MSG(embd_last_error()[0] != '\0', "fail at allocation %ld: no message", k);
            printf("allocation %ld failed: %s\n", k, embd_last_error());
        }
    }
    CHECK_MSG(clean > 0, "no run survived the fault injection");
    CHECK(embd_gpu_monitor(0, &g1) == 0);
    /* other processes may use the GPU: allow 8 MiB of noise */
    CHECK_MSG(g1.free_bytes + ((size_t)8 << 20) >= g0.free_bytes,
              "device memory leaked: %zu MiB free before, %zu after", g0.free_bytes >> 20,
              g1.free_bytes >> 20);
    rand_model_free(&rm);
}

static void test_golden(const struct embd_cuda_plugin *p, int ndt) {
    const char *models = getenv("EMBD_TEST_MODELS"), *src = getenv("EMBD_SRC");
    char dir[4096], ids_path[4096];
    struct stat sb;
    if (!models || !src) {
        printf("golden: skipped (EMBD_TEST_MODELS or EMBD_SRC not set)\n");
        return;
    }
    snprintf(dir, sizeof dir, "%s/all-MiniLM-L6-v2", models);
    snprintf(ids_path, sizeof ids_path, "%s/tests/fixtures/golden/all-MiniLM-L6-v2/ids.jsonl", src);
    if (stat(dir, &sb) != 0 || stat(ids_path, &sb) != 0) {
        printf("golden: skipped (%s or the fixtures missing)\n", dir);
        return;
    }
    embd_model *m = NULL;
    CHECK_MSG(embd_model_load(dir, embd_model_default_params(), &m) == EMBD_OK, "load: %s",
              embd_last_error());
    if (!m) return;
    enum { MAXSEQ = 1024, MAXTOK = 1 << 17 };
    int32_t *ids = malloc(MAXTOK * 4), *ss = malloc((MAXSEQ + 1) * 4);
    int n = golden_read_ids(ids_path, ids, ss, MAXSEQ, MAXTOK);
    CHECK(n > 0);
    const int D = m->hp.H;
    float *want = malloc((size_t)n * D * 4), *got = malloc((size_t)n * D * 4);
    CHECK(n > 0 && run(&embd_backend_cpu_ops, m, EMBD_DTYPE_FP32, ids, ss, n, want) == EMBD_OK);
    enum embd_dtype dts[2] = {EMBD_DTYPE_FP16, EMBD_DTYPE_BF16};
    for (int i = 0; i < ndt && n > 0; i++) {
        enum embd_status st = run(p->ops, m, dts[i], ids, ss, n, got);
        CHECK_MSG(st == EMBD_OK, "golden %s: %s", dt_name(dts[i]), embd_last_error());
        if (st != EMBD_OK) continue;
        double worst, mean;
        compare(got, want, n, D, &worst, &mean);
        printf("all-MiniLM-L6-v2 %s vs CPU fp32: %d texts, worst cosine %.7f, mean %.8f\n",
               dt_name(dts[i]), n, worst, mean);
        CHECK_MSG(worst >= 0.999 && mean >= 0.9999, "%s: worst %.7f mean %.8f", dt_name(dts[i]),
                  worst, mean);
    }
    free(ids), free(ss), free(want), free(got);
    embd_model_free(m);
}

int main(void) {
    const struct embd_cuda_plugin *p = cuda_test_plugin(EMBD_DTYPE_FP16);
    const bool bf16 = cuda_test_cc(p) >= 80;
    test_random_model(p, 384, 12, EMBD_POOL_MEAN, bf16 ? 3 : 2); /* head size 32 */
    test_random_model(p, 256, 4, EMBD_POOL_CLS, bf16 ? 3 : 2);   /* head size 64 */
    test_fault_injection(p);
    test_golden(p, bf16 ? 2 : 1);
    return test_summary("test_cuda_model");
}
