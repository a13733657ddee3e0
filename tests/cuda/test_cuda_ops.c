/* test_cuda_ops.c — every CUDA op against a CPU reference on fresh random
 * inputs, in fp32, fp16 and bf16 (bf16 on compute capability >= 8.0). The
 * inputs are rounded on the host to the type the device stores them in, so
 * the reference sees the same numbers and the tolerance covers only what the
 * device adds: rounding of the output to that type and fp32 accumulation
 * order. NaN fails; guard bytes around the outputs catch overruns. Skips (77)
 * without a GPU. */
#include "backend/cpu/ref.h"
#include "cuda_test.h"

#include <time.h>

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (float)((double)((rng * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rand_buf(size_t n, float amp) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = amp * frand();
    return p;
}

/* Tolerances (atol, rtol) per type for values of unit scale. fp32: the device
 * sums in a different order (and uses __expf in attention), ~1e-6 relative;
 * 1e-4 leaves room for K up to a few thousand. fp16 outputs are rounded to an
 * 11-bit significand (relative error <= 2^-11 = 4.9e-4): 2e-3. bf16 to 8 bits
 * (2^-8 = 3.9e-3): 1.6e-2. */
static void tol_for(enum embd_dtype dt, double *atol, double *rtol) {
    if (dt == EMBD_DTYPE_FP16)
        *atol = 2e-3, *rtol = 2e-3;
    else if (dt == EMBD_DTYPE_BF16)
        *atol = 1.6e-2, *rtol = 1.6e-2;
    else
        *atol = 1e-4, *rtol = 1e-4;
}

static void test_linear(const struct embd_cuda_plugin *p, enum embd_dtype dt, int R, int K, int O,
                        bool gelu) {
    float *x = rand_buf((size_t)R * K, 1.0f), *W = rand_buf((size_t)O * K, sqrtf(3.0f / K));
    float *b = rand_buf((size_t)O, 0.5f);
    round_all(dt, x, (size_t)R * K);
    round_all(dt, W, (size_t)O * K);
    round_all(dt, b, (size_t)O);
    float *want = malloc((size_t)R * O * sizeof(float)), *got = guarded_alloc((size_t)R * O);
    embd_ref_linear(want, x, W, b, R, K, O);
    if (gelu) embd_ref_gelu(want, (size_t)R * O);
    enum embd_status st = p->test->linear(0, dt, got, x, W, b, R, K, O, gelu);
    CHECK_MSG(st == EMBD_OK, "linear %s: %s", dt_name(dt), embd_last_error());
    if (st == EMBD_OK) {
        double atol, rtol;
        tol_for(dt, &atol, &rtol);
        double w = worst_ratio(got, want, (size_t)R * O, atol, rtol);
        CHECK_MSG(w <= 1.0, "linear%s %s %dx%dx%d: worst error %.2f x tolerance",
                  gelu ? "+gelu" : "", dt_name(dt), R, K, O, w);
        CHECK_MSG(guards_ok(got, (size_t)R * O), "linear %s: output overrun", dt_name(dt));
    }
    free(x), free(W), free(b), free(want), guarded_free(got);
}

static void test_add_ln(const struct embd_cuda_plugin *p, enum embd_dtype dt, int R, int H) {
    float *x = rand_buf((size_t)R * H, 2.0f), *add = rand_buf((size_t)R * H, 1.0f);
    float *g = rand_buf((size_t)H, 0.2f), *b = rand_buf((size_t)H, 0.2f);
    for (int i = 0; i < H; i++)
        g[i] += 1.0f;
    round_all(dt, add, (size_t)R * H); /* the sublayer output arrives in dt */
    float *want = malloc((size_t)R * H * sizeof(float)), *got = guarded_alloc((size_t)R * H);
    for (size_t i = 0; i < (size_t)R * H; i++)
        want[i] = x[i] + add[i];
    embd_ref_layernorm(want, want, g, b, R, H, 1e-12f);
    enum embd_status st = p->test->add_layernorm(0, dt, got, x, add, g, b, R, H, 1e-12f);
    CHECK_MSG(st == EMBD_OK, "add_layernorm %s: %s", dt_name(dt), embd_last_error());
    if (st == EMBD_OK) {
        /* fp32 in, fp32 out (the residual stream): only summation order differs */
        double w = worst_ratio(got, want, (size_t)R * H, 1e-4, 1e-4);
        CHECK_MSG(w <= 1.0, "add_layernorm %s R=%d H=%d: worst error %.2f x tolerance", dt_name(dt),
                  R, H, w);
        CHECK_MSG(guards_ok(got, (size_t)R * H), "add_layernorm: output overrun");
    }
    free(x), free(add), free(g), free(b), free(want), guarded_free(got);
}

/* Reference attention in double over qkv (T, 3H) into out (T, H). */
static void ref_attention(float *out, const float *qkv, const int *ss, int n, int H, int NH) {
    const int HS = H / NH;
    const double scale = 1.0 / sqrt((double)HS);
    double *sc = malloc(512 * sizeof(double));
    for (int s = 0; s < n; s++) {
        int t0 = ss[s], len = ss[s + 1] - t0;
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < len; i++) {
                const float *q = qkv + (size_t)(t0 + i) * 3 * H + h * HS;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j < len; j++) {
                    const float *k = qkv + (size_t)(t0 + j) * 3 * H + H + h * HS;
                    double d = 0.0;
                    for (int c = 0; c < HS; c++)
                        d += (double)q[c] * k[c];
                    sc[j] = d * scale;
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j < len; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int c = 0; c < HS; c++) {
                    double acc = 0.0;
                    for (int j = 0; j < len; j++)
                        acc += sc[j] * qkv[(size_t)(t0 + j) * 3 * H + 2 * H + h * HS + c];
                    out[(size_t)(t0 + i) * H + h * HS + c] = (float)(acc / sum);
                }
            }
    }
    free(sc);
}

static void test_attention(const struct embd_cuda_plugin *p, enum embd_dtype dt, int H, int NH) {
    /* lengths around the tile sizes (32 queries, 64 keys) and the extremes 1 and 512 */
    static const int lens[] = {1,   2,   31,  32,  33,  63,  64,  65,
                               100, 127, 128, 129, 255, 256, 511, 512};
    const int n = (int)(sizeof lens / sizeof lens[0]);
    int ss[sizeof lens / sizeof lens[0] + 1];
    ss[0] = 0;
    for (int i = 0; i < n; i++)
        ss[i + 1] = ss[i] + lens[i];
    const int T = ss[n];
    /* q and k of scale 2: scores of a few units, softmax neither flat nor one-hot */
    float *qkv = rand_buf((size_t)T * 3 * H, 2.0f);
    round_all(dt, qkv, (size_t)T * 3 * H);
    float *want = malloc((size_t)T * H * sizeof(float)), *got = guarded_alloc((size_t)T * H);
    ref_attention(want, qkv, ss, n, H, NH);
    enum embd_status st = p->test->attention(0, dt, got, qkv, ss, n, H, NH);
    CHECK_MSG(st == EMBD_OK, "attention %s: %s", dt_name(dt), embd_last_error());
    if (st == EMBD_OK) {
        double atol, rtol;
        tol_for(dt, &atol, &rtol);
        double w = worst_ratio(got, want, (size_t)T * H, atol, rtol);
        CHECK_MSG(w <= 1.0, "attention %s H=%d NH=%d (head size %d): worst error %.2f x tolerance",
                  dt_name(dt), H, NH, H / NH, w);
        CHECK_MSG(guards_ok(got, (size_t)T * H), "attention: output overrun");
    }
    free(qkv), free(want), guarded_free(got);
}

static void test_pool(const struct embd_cuda_plugin *p, bool mean, bool norm) {
    static const int lens[] = {1, 2, 7, 100, 512};
    const int n = 5, H = 384;
    int ss[6] = {0};
    for (int i = 0; i < n; i++)
        ss[i + 1] = ss[i] + lens[i];
    float *x = rand_buf((size_t)ss[n] * H, 1.0f);
    float *want = calloc((size_t)n * H, sizeof(float)), *got = guarded_alloc((size_t)n * H);
    for (int s = 0; s < n; s++) {
        double nn = 0.0;
        for (int c = 0; c < H; c++) {
            double v = 0.0;
            if (mean) {
                for (int t = ss[s]; t < ss[s + 1]; t++)
                    v += x[(size_t)t * H + c];
                v /= lens[s];
            } else {
                v = x[(size_t)ss[s] * H + c];
            }
            want[(size_t)s * H + c] = (float)v;
            nn += v * v;
        }
        if (norm)
            for (int c = 0; c < H; c++)
                want[(size_t)s * H + c] /= (float)fmax(sqrt(nn), 1e-12);
    }
    enum embd_status st = p->test->pool(0, got, x, ss, n, H, mean, norm);
    CHECK_MSG(st == EMBD_OK, "pool: %s", embd_last_error());
    if (st == EMBD_OK) {
        /* fp32 sums of at most 512 values: 1e-5 */
        double w = worst_ratio(got, want, (size_t)n * H, 1e-5, 1e-5);
        CHECK_MSG(w <= 1.0, "pool mean=%d norm=%d: worst error %.2f x tolerance", mean, norm, w);
        CHECK_MSG(guards_ok(got, (size_t)n * H), "pool: output overrun");
    }
    free(x), free(want), guarded_free(got);
}

int main(void) {
    const struct embd_cuda_plugin *p = cuda_test_plugin(EMBD_DTYPE_FP16);
    rng ^= (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull; /* fresh inputs each run */
    printf("seed %llu\n", (unsigned long long)rng);
    enum embd_dtype dts[3] = {EMBD_DTYPE_FP32, EMBD_DTYPE_FP16, EMBD_DTYPE_BF16};
    const int ndt = cuda_test_cc(p) >= 80 ? 3 : 2;
    for (int i = 0; i < ndt; i++) {
        enum embd_dtype dt = dts[i];
        test_linear(p, dt, 1, 384, 384, false);
        test_linear(p, dt, 77, 384, 1152, false);
        test_linear(p, dt, 300, 384, 1536, true);
        test_linear(p, dt, 129, 1536, 384, false);
        test_linear(p, dt, 64, 768, 3072, true);
        test_add_ln(p, dt, 1, 384);
        test_add_ln(p, dt, 200, 768);
        test_add_ln(p, dt, 3, 1000);
        test_attention(p, dt, 384, 12); /* head size 32 */
        test_attention(p, dt, 256, 4);  /* head size 64 */
        test_attention(p, dt, 768, 12); /* head size 64, bge-base */
    }
    test_pool(p, false, false);
    test_pool(p, false, true);
    test_pool(p, true, false);
    test_pool(p, true, true);
    return test_summary("test_cuda_ops");
}
