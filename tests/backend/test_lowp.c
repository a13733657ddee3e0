/* test_lowp.c — the bf16 and int8 GEMMs of backend/cpu/lowp.h.
 *
 * Each kind is checked two ways on random inputs of the models' shapes:
 *   - against a double-precision product of the SAME quantised inputs (W and
 *     the activations rounded to bf16, or quantised (int8 weights, u8 activations) the way lowp.h
 *     says), where the only error left is the kernel's fp32 arithmetic, so
 *     the tolerance is tight (and any slip in the layouts, the rounding, the
 *     zero point or the scales shows);
 *   - against the fp32 product, where the error is the quantisation's, with
 *     bounds from what bf16 and int8 can do.
 * Also: exact values that pin the rounding (bf16 ties to even, int8 round
 * half to even and the scales), row and column ranges, NULL bias, GELU,
 * guard values around the output, rows computed in different blocks bit
 * for bit equal, rows of zeros (int8 scale 0), NaN rows, bad sizes and
 * failed allocations.
 *
 * Skips (77) when the CPU has neither AVX512_BF16 nor AVX512_VNNI; runs the
 * kind it has when it has one. Shapes: T rows, K inputs, N outputs. */
#include "backend/cpu/isa.h"
#include "backend/cpu/lowp.h"
#include "rand_model.h"
#include "test.h"
#include "util/util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a byte of output outside the asked rows and columns holds before and
 * after the call (a NaN, so that a stray read of it would show too). */
#define GUARD_BITS 0x7fc0dead
/* Rows and columns of guard around each output, and the input's row padding. */
#define GUARD_ROWS 2
#define GUARD_COLS 16
#define LDA_PAD 4 /* lda = K + 4: rows not 64-byte aligned, and read in place */

/* The kernels every pack in this file asks for: the 512-bit ones, AMX
 * tiles, or AVX-VNNI's 256-bit int8 ones (main runs each variant the CPU
 * has). */
static enum embd_lowp_kernels g_kernels = EMBD_LOWP_AVX512;

static embd_lowp_weight *lowp_pack(enum embd_lowp_kind kind, const float *W, int N, int K) {
    embd_lowp_weight *w = embd_lowp_pack(kind, W, N, K, g_kernels);
    /* AMX takes K in whole tile rows; other K run the 512-bit kernels */
    if (w)
        CHECK(embd_lowp_kernels_of(w) == (g_kernels == EMBD_LOWP_AMX && K % EMBD_LOWP_AMX_K(kind)
                                              ? EMBD_LOWP_AVX512
                                              : g_kernels));
    return w;
}

static const char *kind_name(enum embd_lowp_kind kind) {
    return kind == EMBD_LOWP_BF16 ? "bf16" : "int8";
}

/* Standard normal (Box-Muller on rand_model.h's generator). */
static float gauss(void) {
    double u = 0.5 * ((double)rm_uniform() + 1.0), v = 0.5 * ((double)rm_uniform() + 1.0);
    if (u < 1e-300) u = 1e-300;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* bf16 by round to nearest, ties to even, written independently of lowp.c:
 * 8 significant bits through frexp / nearbyint. (Normal numbers only; the
 * inputs here have no denormals.) */
static float ref_bf16(float x) {
    if (x == 0.0f || !isfinite(x)) return x;
    int e;
    const double m = frexp((double)x, &e); /* x = m 2^e, 0.5 <= |m| < 1 */
    return (float)ldexp(nearbyint(ldexp(m, 8)), e - 8);
}

/* Symmetric int8 of a vector as lowp.h specifies: scale = max |v| / 127,
 * q = round(v * (127 / max |v|)) (fp32 arithmetic, nearest even); scale 0
 * and q 0 for a zero vector; scale NaN and q 0 for one with a NaN or an
 * infinity. Returns the scale. */
static float ref_int8(int8_t *q, const float *v, int n) {
    float amax = 0.0f;
    int finite = 1;
    for (int i = 0; i < n; i++) {
        finite &= isfinite(v[i]) != 0;
        amax = fmaxf(amax, fabsf(v[i]));
    }
    if (!finite) {
        memset(q, 0, (size_t)n);
        return NAN;
    }
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++) {
        float r = nearbyintf(v[i] * inv);
        q[i] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
    }
    return amax / 127.0f;
}

/* Asymmetric u8 of an activation row as lowp.h specifies: lo, hi its min
 * and max, scale = (hi - lo) / 255, q = round((v - lo) * (255 / (hi - lo)))
 * in [0, 255] (fp32 arithmetic, nearest even); scale 0, q 0 and min lo for a
 * constant row; scale and min NaN for one with a NaN or an infinity. Returns
 * the scale, the min in *lo_out. */
static float ref_u8(uint8_t *q, float *lo_out, const float *v, int n) {
    float lo = INFINITY, hi = -INFINITY;
    int finite = 1;
    for (int i = 0; i < n; i++) {
        finite &= isfinite(v[i]) != 0;
        lo = fminf(lo, v[i]);
        hi = fmaxf(hi, v[i]);
    }
    const float range = hi - lo;
    if (!finite || !isfinite(range)) {
        for (int i = 0; i < n; i++)
            q[i] = 0;
        *lo_out = NAN;
        return NAN;
    }
    const float inv = range > 0.0f ? 255.0f / range : 0.0f;
    for (int i = 0; i < n; i++) {
        float r = nearbyintf((v[i] - lo) * inv);
        q[i] = (uint8_t)(r > 255.0f ? 255.0f : r < 0.0f ? 0.0f : r);
    }
    *lo_out = lo;
    return range / 255.0f;
}

static double gelu_d(double x) {
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

/* One problem: inputs and, per kind, the reference products. */
typedef struct {
    int T, K, N;
    size_t lda;
    float *x;    /* (T, lda) activations */
    float *W;    /* (N, K) */
    float *bias; /* (N) */
    double *p32; /* (T, N) x W^T in double, from the fp32 inputs */
    double *pq;  /* (T, N) the same from the quantised inputs (the kind's) */
    double *mag; /* (T, N) the kind's error scale: bf16 sum of |products|, int8 the
                    sum of |its two terms| */
    enum embd_lowp_kind kind;
    int outliers; /* x has outlier channels (see problem_make) */
    embd_lowp_weight *w;
} problem;

/* Fills the references of p for its kind (x, W, bias set). */
static void problem_refs(problem *p) {
    const int T = p->T, K = p->K, N = p->N;
    float *xq = malloc((size_t)T * K * sizeof(float)), *wq = malloc((size_t)N * K * sizeof(float));
    float *rs = malloc((size_t)T * sizeof(float)), *cs = malloc((size_t)N * sizeof(float));
    float *rmin = malloc((size_t)(T > 0 ? T : 1) * sizeof(float));
    double *wsum = malloc((size_t)N * sizeof(double));
    int8_t *q8 = malloc((size_t)(K > 0 ? K : 1));
    uint8_t *u8 = malloc((size_t)(K > 0 ? K : 1));
    /* the quantised inputs as floats (int8: the integers), and the scales */
    for (int t = 0; t < T; t++) {
        const float *xr = p->x + (size_t)t * p->lda;
        if (p->kind == EMBD_LOWP_BF16) {
            for (int k = 0; k < K; k++)
                xq[(size_t)t * K + k] = ref_bf16(xr[k]);
        } else {
            rs[t] = ref_u8(u8, &rmin[t], xr, K);
            for (int k = 0; k < K; k++)
                xq[(size_t)t * K + k] = u8[k];
        }
    }
    for (int n = 0; n < N; n++) {
        const float *wr = p->W + (size_t)n * K;
        if (p->kind == EMBD_LOWP_BF16) {
            for (int k = 0; k < K; k++)
                wq[(size_t)n * K + k] = ref_bf16(wr[k]);
        } else {
            cs[n] = ref_int8(q8, wr, K);
            wsum[n] = 0;
            for (int k = 0; k < K; k++) {
                wq[(size_t)n * K + k] = q8[k];
                wsum[n] += q8[k];
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            const float *xr = p->x + (size_t)t * p->lda, *wr = p->W + (size_t)n * K;
            const float *a = xq + (size_t)t * K, *b = wq + (size_t)n * K;
            double s32 = 0, sq = 0, sabs = 0;
            for (int k = 0; k < K; k++) {
                s32 += (double)xr[k] * wr[k];
                sq += (double)a[k] * b[k]; /* exact: bf16 x bf16 or u8 x int8 */
                sabs += fabs((double)a[k] * b[k]);
            }
            const size_t o = (size_t)t * N + n;
            p->p32[o] = s32;
            if (p->kind == EMBD_LOWP_BF16) {
                p->pq[o] = sq;
                p->mag[o] = sabs;
            } else {
                /* x is about min + q scale: the zero point's term */
                const double t1 = sq * (double)cs[n] * (double)rs[t];
                const double t2 = (double)rmin[t] * wsum[n] * (double)cs[n];
                p->pq[o] = t1 + t2;
                p->mag[o] = fabs(t1) + fabs(t2);
            }
        }
    free(xq);
    free(wq);
    free(rs);
    free(cs);
    free(rmin);
    free(wsum);
    free(q8);
    free(u8);
}

/* A problem of the given shape for kind: x standard normal (with a few
 * channels 8 times larger when outliers, as LayerNorm outputs of BERT
 * models have), W normal with std 1/sqrt(K), bias normal with std 0.1. */
static problem problem_make(enum embd_lowp_kind kind, int T, int K, int N, uint64_t seed,
                            int outliers) {
    problem p = {.T = T, .K = K, .N = N, .lda = (size_t)K + LDA_PAD, .kind = kind};
    p.outliers = outliers;
    rm_seed(seed);
    p.x = malloc((T ? (size_t)T : 1) * p.lda * sizeof(float));
    p.W = malloc((size_t)N * K * sizeof(float));
    p.bias = malloc((size_t)N * sizeof(float));
    p.p32 = malloc((T ? (size_t)T : 1) * N * sizeof(double));
    p.pq = malloc((T ? (size_t)T : 1) * N * sizeof(double));
    p.mag = malloc((T ? (size_t)T : 1) * N * sizeof(double));
    for (size_t i = 0; i < (size_t)T * p.lda; i++)
        p.x[i] = gauss();
    if (outliers)
        for (int t = 0; t < T; t++)
            for (int k = 7; k < K; k += 97)
                p.x[(size_t)t * p.lda + k] *= 8.0f;
    const float ws = 1.0f / sqrtf((float)K);
    for (size_t i = 0; i < (size_t)N * K; i++)
        p.W[i] = ws * gauss();
    for (int n = 0; n < N; n++)
        p.bias[n] = 0.1f * gauss();
    problem_refs(&p);
    p.w = lowp_pack(kind, p.W, N, K);
    return p;
}

static void problem_free(problem *p) {
    embd_lowp_free(p->w);
    free(p->x);
    free(p->W);
    free(p->bias);
    free(p->p32);
    free(p->pq);
    free(p->mag);
}

/* An output buffer of T rows, ldc = N + 2 * GUARD_COLS, with GUARD_ROWS rows
 * above and below; everything set to GUARD_BITS. out() is its (0, 0). */
typedef struct {
    float *mem;
    size_t ldc, n;
} outbuf;

static outbuf outbuf_make(int T, int N) {
    outbuf o;
    o.ldc = (size_t)N + 2 * GUARD_COLS;
    o.n = (size_t)(T + 2 * GUARD_ROWS) * o.ldc;
    o.mem = malloc(o.n * sizeof(float));
    const uint32_t g = GUARD_BITS;
    for (size_t i = 0; i < o.n; i++)
        memcpy(o.mem + i, &g, sizeof g);
    return o;
}

static float *outbuf_at(outbuf *o, int r, int c) {
    return o->mem + (size_t)(r + GUARD_ROWS) * o->ldc + GUARD_COLS + c;
}

static int is_guard(const float *f) {
    uint32_t u;
    memcpy(&u, f, sizeof u);
    return u == GUARD_BITS;
}

/* 64-byte aligned scratch of exactly embd_lowp_scratch_bytes (a multiple of
 * 64), so that AddressSanitizer sees a write past it. */
static void *scratch_make(const embd_lowp_weight *w) {
    const size_t n = embd_lowp_scratch_bytes(w);
    CHECK(n % 64 == 0 && n > 0);
    return aligned_alloc(64, n);
}

/* Worst errors seen, per kind, for the report at the end. */
static double worst_q[3], worst_rel32[3], worst_cos[3] = {0, 2, 2};

/* Runs rows [r0, r1) x columns [c0, c1) of p's product with or without bias
 * and GELU, and checks every output inside against the quantised reference
 * (tight) and every row's slice against the fp32 product (the
 * quantisation's bounds), and that nothing outside was written. */
static void run_case(problem *p, int r0, int r1, int c0, int c1, int use_bias, int gelu) {
    const int T = p->T, N = p->N;
    const int kind = p->kind;
    outbuf o = outbuf_make(T, N);
    void *scratch = scratch_make(p->w);
    const float *bias = use_bias ? p->bias : NULL;
    embd_lowp_gemm(p->w, outbuf_at(&o, 0, 0), o.ldc, p->x, p->lda, r0, r1, c0, c1, bias, gelu,
                   scratch);
    int bad_q = 0, bad_guard = 0, bad_rows = 0;
    for (int r = -GUARD_ROWS; r < T + GUARD_ROWS; r++)
        for (int c = -GUARD_COLS; c < N + GUARD_COLS; c++) {
            const float *v = outbuf_at(&o, r, c);
            const int inside = r >= r0 && r < r1 && c >= c0 && c < c1;
            if (!inside) {
                bad_guard += !is_guard(v);
                continue;
            }
            const size_t i = (size_t)r * N + c;
            const double b = bias ? bias[c] : 0.0, pre = p->pq[i] + b;
            /* bf16: the kernel sums K exact products in fp32 (VDPBF16PS), one
             * rounding of at most 2^-24 of the partial sum per step; over
             * random signs that comes to about 3e-8 of the sum of |products|
             * (mag), and 2e-6 x mag leaves 60 times that while a truncating
             * or wrongly paired conversion errs by 1e-4 of it and more.
             * int8: the integer sum is exact; converting it, the two scales'
             * product, the zero point's term (the scaled weight sum and its
             * product with the min), the fused add and the bias add are
             * fp32 roundings, 2^-24 each of a term (mag) or the result.
             * GELU: its slope is at most 1.13 and embd_fast_gelu's own
             * error is about 2e-7 x |x| plus a few ulps. */
            double tol = kind == EMBD_LOWP_BF16 ? 2e-6 * p->mag[i] + 1e-6 * fabs(b) + 1e-30
                                                : 4e-7 * (p->mag[i] + fabs(pre)) + 1e-30;
            double want = pre;
            if (gelu) {
                want = gelu_d(pre);
                tol = 1.2 * tol + 1e-6 * (fabs(pre) + 1e-6);
            }
            const double err = fabs((double)*v - want);
            if (!(err <= tol)) {
                if (bad_q++ < 5)
                    fprintf(stderr, "  %s (%d,%d) K=%d: got %.9g want %.9g (err %.3g tol %.3g)\n",
                            kind_name(kind), r, c, p->K, (double)*v, want, err, tol);
            } else if (p->mag[i] > 0) {
                const double e = err / (p->mag[i] + fabs(b));
                if (e > worst_q[kind]) worst_q[kind] = e;
            }
        }
    /* against fp32, per row over the columns asked, on the product before the
     * bias and GELU: relative L2 error and cosine. Expected: bf16 about 3e-3
     * (each input's rounding is up to 2^-9 relative, uniform, so about 2^-9
     * / sqrt(3) rms each, two of them per product); int8 about 1.3e-2 for
     * normal inputs (steps of max/127 with max about 3.5 std for K in the
     * hundreds: 0.028 std / sqrt(12) relative error rms per factor; 0.013
     * seen) and more with outlier channels, which widen the activations'
     * step (8 std channels: about 0.03 seen). Bounds: bf16 1e-2 (cosine
     * 0.99995); int8 2.5e-2 (cosine 0.9997), with outliers 6e-2 (cosine
     * 0.998); the end-to-end floors are 0.999 and 0.99. */
    if (!gelu && !use_bias)
        for (int r = r0; r < r1; r++) {
            double e2 = 0, r2 = 0, o2 = 0, dot = 0;
            for (int c = c0; c < c1; c++) {
                const double got = *outbuf_at(&o, r, c), ref = p->p32[(size_t)r * N + c];
                e2 += (got - ref) * (got - ref);
                r2 += ref * ref;
                o2 += got * got;
                dot += got * ref;
            }
            const double rel = sqrt(e2 / r2), cosv = dot / sqrt(r2 * o2);
            const double lim = kind == EMBD_LOWP_BF16 ? 1e-2 : p->outliers ? 6e-2 : 2.5e-2;
            if (!(rel <= lim)) {
                if (bad_rows++ < 3)
                    fprintf(stderr, "  %s row %d K=%d N=%d: relative error to fp32 %.3g > %.3g\n",
                            kind_name(kind), r, p->K, N, rel, lim);
            }
            if (rel > worst_rel32[kind]) worst_rel32[kind] = rel;
            if (cosv < worst_cos[kind]) worst_cos[kind] = cosv;
        }
    CHECK_MSG(bad_q == 0, "%s T=%d K=%d N=%d rows [%d,%d) cols [%d,%d) bias %d gelu %d: %d wrong",
              kind_name(kind), T, p->K, N, r0, r1, c0, c1, use_bias, gelu, bad_q);
    CHECK_MSG(bad_guard == 0, "%s T=%d K=%d N=%d rows [%d,%d) cols [%d,%d): %d writes outside",
              kind_name(kind), T, p->K, N, r0, r1, c0, c1, bad_guard);
    CHECK_MSG(bad_rows == 0, "%s T=%d K=%d N=%d: %d rows too far from fp32", kind_name(kind), T,
              p->K, N, bad_rows);
    free(scratch);
    free(o.mem);
}

/* The models' (K, N) pairs: MiniLM / bge-small (H 384, I 1536), bge-base /
 * mpnet (H 768, I 3072); QKV stacked (3H) and single. */
static const int shapes[][2] = {{384, 1152}, {384, 384}, {384, 1536}, {1536, 384},
                                {768, 2304}, {768, 768}, {768, 3072}, {3072, 768}};

static void test_shapes(enum embd_lowp_kind kind) {
    /* every model shape, 49 rows (a full block and one row), all of it, with
     * and without bias and GELU */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        problem p = problem_make(kind, 49, shapes[s][0], shapes[s][1], 100 + s, 0);
        CHECK(p.w != NULL);
        if (!p.w) continue;
        run_case(&p, 0, p.T, 0, p.N, 0, 0);
        run_case(&p, 0, p.T, 0, p.N, 1, 0);
        run_case(&p, 0, p.T, 0, p.N, 1, 1);
        problem_free(&p);
    }
    /* odd row counts (a partial tile, a partial block, several blocks), row
     * and column sub-ranges: an odd panel count at either edge, one panel,
     * a range starting inside; NULL bias with GELU */
    const int rows[] = {1, 5, 47, 49, 100};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        problem p = problem_make(kind, rows[i], 384, 1152, 200 + i, 0);
        CHECK(p.w != NULL);
        if (!p.w) continue;
        const int T = p.T;
        run_case(&p, 0, T, 0, p.N, 0, 0);
        run_case(&p, 0, T, 16, 64, 1, 0);     /* 3 panels: a pair and a single */
        run_case(&p, 0, T, 1104, 1152, 1, 1); /* the last 3 panels */
        run_case(&p, 0, T, 32, 48, 0, 1);     /* one panel, no bias, GELU */
        run_case(&p, T / 3, T - T / 4, 48, 1136, 1, 0);
        problem_free(&p);
    }
    /* outlier channels (int8's hard case) and K not a multiple of 16 or 32
     * (the conversion's masked tails) */
    const int odd[][3] = {{49, 384, 384}, {13, 36, 48},  {20, 388, 32},
                          {5, 4, 16},     {7, 1544, 64}, {17, 64, 48}};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        problem p = problem_make(kind, odd[i][0], odd[i][1], odd[i][2], 300 + i, i == 0);
        CHECK(p.w != NULL);
        if (!p.w) continue;
        run_case(&p, 0, p.T, 0, p.N, 0, 0);
        run_case(&p, 1, p.T, 0, p.N, 1, 1);
        problem_free(&p);
    }
}

/* Bit-identical rows whatever the split: the whole product once, then the
 * same in blocks of rows at other offsets, in single rows, and in column
 * ranges that pair the panels differently. */
static void test_determinism(enum embd_lowp_kind kind) {
    problem p = problem_make(kind, 100, 384, 1536, 400, 0);
    CHECK(p.w != NULL);
    if (!p.w) return;
    const int T = p.T, N = p.N;
    void *scratch = scratch_make(p.w);
    for (int gelu = 0; gelu < 2; gelu++) {
        outbuf a = outbuf_make(T, N), b = outbuf_make(T, N);
        embd_lowp_gemm(p.w, outbuf_at(&a, 0, 0), a.ldc, p.x, p.lda, 0, T, 0, N, p.bias, gelu,
                       scratch);
        /* rows in blocks of 7 starting at 3 (and [0, 3)); the columns as
         * [0, 16) then pairs from 16: every panel in the other position of
         * its pair */
        const int starts[] = {0, 3, 10, 17, 24, 31, 38, 45, 52, 59, 66, 73, 80, 87, 94, 100};
        for (size_t i = 0; i + 1 < sizeof starts / sizeof starts[0]; i++) {
            embd_lowp_gemm(p.w, outbuf_at(&b, 0, 0), b.ldc, p.x, p.lda, starts[i], starts[i + 1], 0,
                           16, p.bias, gelu, scratch);
            embd_lowp_gemm(p.w, outbuf_at(&b, 0, 0), b.ldc, p.x, p.lda, starts[i], starts[i + 1],
                           16, N, p.bias, gelu, scratch);
        }
        CHECK_MSG(memcmp(a.mem, b.mem, a.n * sizeof(float)) == 0,
                  "%s gelu %d: rows in other blocks and columns in other pairs differ",
                  kind_name(kind), gelu);
        /* each row alone, the panels one at a time */
        int diff = 0;
        for (int r = 0; r < T; r += 11) {
            for (int c = 0; c < N; c += 16)
                embd_lowp_gemm(p.w, outbuf_at(&b, 0, 0), b.ldc, p.x, p.lda, r, r + 1, c, c + 16,
                               p.bias, gelu, scratch);
            diff += memcmp(outbuf_at(&a, r, 0), outbuf_at(&b, r, 0), N * sizeof(float)) != 0;
        }
        CHECK_MSG(diff == 0, "%s gelu %d: %d rows differ when computed alone", kind_name(kind),
                  gelu, diff);
        free(a.mem);
        free(b.mem);
    }
    /* a row's result does not depend on the other rows: change them all */
    outbuf a = outbuf_make(T, N), b = outbuf_make(T, N);
    embd_lowp_gemm(p.w, outbuf_at(&a, 0, 0), a.ldc, p.x, p.lda, 0, T, 0, N, p.bias, 0, scratch);
    for (int t = 0; t < T; t++)
        if (t != 50)
            for (int k = 0; k < p.K; k++)
                p.x[(size_t)t * p.lda + k] *= -3.0f;
    embd_lowp_gemm(p.w, outbuf_at(&b, 0, 0), b.ldc, p.x, p.lda, 0, T, 0, N, p.bias, 0, scratch);
    CHECK_MSG(memcmp(outbuf_at(&a, 50, 0), outbuf_at(&b, 50, 0), N * sizeof(float)) == 0,
              "%s: a row changed with the others", kind_name(kind));
    free(a.mem);
    free(b.mem);
    free(scratch);
    problem_free(&p);
}

/* Rows of zeros give the bias (int8: scale 0, not 0/0); a row with a NaN
 * gives NaN (its outputs) and leaves the other rows alone. */
static void test_special_rows(enum embd_lowp_kind kind) {
    problem p = problem_make(kind, 30, 384, 384, 500, 0);
    CHECK(p.w != NULL);
    if (!p.w) return;
    const int T = p.T, N = p.N;
    for (int t = 0; t < T; t += 3)
        memset(p.x + (size_t)t * p.lda, 0, p.K * sizeof(float));
    p.x[(size_t)4 * p.lda + 100] = NAN;
    problem_refs(&p); /* row 4's references are NaN; the others as usual */
    void *scratch = scratch_make(p.w);
    outbuf o = outbuf_make(T, N);
    embd_lowp_gemm(p.w, outbuf_at(&o, 0, 0), o.ldc, p.x, p.lda, 0, T, 0, N, p.bias, 0, scratch);
    int bad_zero = 0, bad_nan = 0, bad_other = 0;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            const float v = *outbuf_at(&o, t, n);
            if (t % 3 == 0)
                bad_zero += v != p.bias[n]; /* exactly: 0 x scale + bias */
            else if (t == 4)
                bad_nan += !isnan(v);
            else
                bad_other += !(fabs(v - (p.pq[(size_t)t * N + n] + p.bias[n])) <=
                               1e-5 * (p.mag[(size_t)t * N + n] + 1.0));
        }
    CHECK_MSG(bad_zero == 0, "%s: %d outputs of zero rows are not the bias", kind_name(kind),
              bad_zero);
    CHECK_MSG(bad_nan == 0, "%s: %d outputs of the NaN row are not NaN", kind_name(kind), bad_nan);
    CHECK_MSG(bad_other == 0, "%s: %d outputs of other rows wrong", kind_name(kind), bad_other);
    /* GELU of a zero row without bias: exactly 0 */
    embd_lowp_gemm(p.w, outbuf_at(&o, 0, 0), o.ldc, p.x, p.lda, 0, 1, 0, N, NULL, 1, scratch);
    int nonzero = 0;
    for (int n = 0; n < N; n++)
        nonzero += *outbuf_at(&o, 0, n) != 0.0f;
    CHECK_EQ_INT(nonzero, 0);
    free(o.mem);
    free(scratch);
    problem_free(&p);
}

/* Exact values: N = 16, K = 4, W[j] = wv[j] at k = j % 4 and 0 elsewhere,
 * one row x; so out[j] = x'[j % 4] * w'[j] with x', w' the quantised
 * values, exact in fp32. */
static void exact_case(enum embd_lowp_kind kind, const float x[4], const float wv[16],
                       const float want[16], const char *what) {
    float W[16 * 4] = {0};
    for (int j = 0; j < 16; j++)
        W[j * 4 + j % 4] = wv[j];
    embd_lowp_weight *w = lowp_pack(kind, W, 16, 4);
    CHECK(w != NULL);
    if (!w) return;
    void *scratch = scratch_make(w);
    float out[16];
    embd_lowp_gemm(w, out, 16, x, 4, 0, 1, 0, 16, NULL, 0, scratch);
    for (int j = 0; j < 16; j++)
        CHECK_MSG(out[j] == want[j], "%s %s: column %d: %.9g, want %.9g", kind_name(kind), what, j,
                  (double)out[j], (double)want[j]);
    free(scratch);
    embd_lowp_free(w);
}

static void test_exact(enum embd_lowp_kind kind) {
    const float e8 = 1.0f / 256.0f, e7 = 1.0f / 128.0f, e6 = 1.0f / 64.0f;
    if (kind == EMBD_LOWP_BF16) {
        /* bf16 keeps 8 significant bits: at 1 the step is 2^-7. 1 + 2^-8 is
         * a tie (to 1, even), 1 + 3 x 2^-8 a tie (to 1 + 2^-6, even), just
         * above a tie goes up, and -x like x. */
        const float x[4] = {1.0f + e8, 1.0f + 3 * e8, -(1.0f + e8 + 1.0f / 65536.0f), 3.0f};
        const float xr[4] = {1.0f, 1.0f + e6, -(1.0f + e7), 3.0f};
        float wv[16], want[16];
        const float ws[4] = {1.0f, 1.0f + e8, 2.0f + 3 * e7, -0.5f - 1.0f / 4096.0f};
        const float wr[4] = {1.0f, 1.0f, 2.0f + 4 * e7, -0.5f}; /* 2 + 3/128: tie to 2 + 4/128 */
        for (int j = 0; j < 16; j++) {
            wv[j] = ws[j / 4];
            want[j] = xr[j % 4] * wr[j / 4];
        }
        exact_case(kind, x, wv, want, "rounding");
    } else {
        /* the row runs from -128 to 127: scale 1, min -128, q = x + 128
         * rounded half to even: -125.5 -> q 2.5 -> 2 (x' -126), -124.5 ->
         * q 3.5 -> 4 (x' -124); every column's max 127 (or 63.5: scale
         * 0.5); the zero point's term restores the min exactly */
        const float x[4] = {-128.0f, 127.0f, -125.5f, -124.5f};
        const float xq[4] = {-128.0f, 127.0f, -126.0f, -124.0f};
        float wv[16], want[16];
        for (int j = 0; j < 16; j++) {
            /* columns 0-7: w 127 (q 127, scale 1); 8-15: w -63.5 (q -127,
             * scale 0.5) */
            wv[j] = j < 8 ? 127.0f : -63.5f;
            want[j] = xq[j % 4] * wv[j];
        }
        exact_case(kind, x, wv, want, "quantisation");
    }
}

/* Bad sizes give NULL; a failed allocation gives NULL and leaks nothing
 * (LeakSanitizer checks that under EMBD_SANITIZE); the sizes reported. */
static void test_pack(enum embd_lowp_kind kind) {
    float W[32 * 8] = {0};
    CHECK(lowp_pack(kind, W, 8, 8) == NULL);  /* N not a multiple of 16 */
    CHECK(lowp_pack(kind, W, 16, 6) == NULL); /* K not a multiple of 4 */
    CHECK(lowp_pack(kind, W, 0, 8) == NULL);
    CHECK(lowp_pack(kind, W, 16, 0) == NULL);
    CHECK(lowp_pack(kind, NULL, 16, 8) == NULL);
    CHECK(lowp_pack((enum embd_lowp_kind)7, W, 16, 8) == NULL);
    CHECK(embd_lowp_pack(EMBD_LOWP_BF16, W, 32, 8, EMBD_LOWP_VNNI256) == NULL); /* none */
    CHECK(embd_lowp_pack(kind, W, 32, 8, (enum embd_lowp_kernels)3) == NULL);
    embd_lowp_free(NULL);
    for (long n = 0; n < 2; n++) {
        embd_fault_alloc_after(n);
        embd_lowp_weight *w = lowp_pack(kind, W, 32, 8);
        CHECK(w == NULL);
        embd_lowp_free(w);
    }
    embd_fault_alloc_after(-1);
    embd_lowp_weight *w = lowp_pack(kind, W, 32, 8);
    CHECK(w != NULL);
    /* bf16: 2 bytes a weight; int8: 1, plus a scale and a scaled sum a column */
    const size_t min = kind == EMBD_LOWP_BF16 ? 32 * 8 * 2 : 32 * 8 + 32 * 8;
    CHECK(embd_lowp_bytes(w) >= min && embd_lowp_bytes(w) < min + 1024);
    CHECK(embd_lowp_scratch_bytes(w) >=
          (size_t)EMBD_LOWP_MC * 8 * (kind == EMBD_LOWP_BF16 ? 2 : 1));
    embd_lowp_free(w);
}

/* The int8 kernels of AVX-VNNI (256-bit), AVX512_VNNI and AMX-INT8 give
 * the same bits (the same exact int32 sums and the same fp32 epilogue),
 * with and without GELU, on a model's shapes and odd row counts; AMX-BF16
 * is within its rounding of the 512-bit bf16 kernels. Compares the
 * variants in have (indexed by variant, see main) pairwise. */
/* The families of the variants main runs: bf16 512-bit, bf16 AMX, int8
 * 512-bit, int8 AMX, int8 AVX-VNNI. */
static const enum embd_lowp_kernels kern[5] = {EMBD_LOWP_AVX512, EMBD_LOWP_AMX, EMBD_LOWP_AVX512,
                                               EMBD_LOWP_AMX, EMBD_LOWP_VNNI256};

static void test_variants_agree(const int have[5]) {
    const int dims[3][3] = {{37, 384, 1152}, {5, 1536, 384}, {61, 384, 1536}};
    /* pairs of variants: int8 512 vs 256, int8 512 vs AMX, bf16 512 vs AMX */
    static const int pairs[3][2] = {{2, 4}, {2, 3}, {0, 1}};
    static const char *const pname[3] = {"512-bit and AVX-VNNI int8", "512-bit and AMX int8",
                                         "512-bit and AMX bf16"};
    for (int pi = 0; pi < 3; pi++) {
        const int va = pairs[pi][0], vb = pairs[pi][1];
        if (!have[va] || !have[vb]) {
            printf("%s: not compared (the CPU lacks one)\n", pname[pi]);
            continue;
        }
        const enum embd_lowp_kind kind = va == 0 ? EMBD_LOWP_BF16 : EMBD_LOWP_INT8;
        double worst = 0; /* bf16: the largest difference over the row's largest output */
        for (int s = 0; s < 3; s++) {
            const int T = dims[s][0], K = dims[s][1], N = dims[s][2];
            float *x = malloc((size_t)T * K * sizeof(float)), *W = malloc((size_t)N * K * 4);
            float *bias = malloc((size_t)N * 4), *a = malloc((size_t)T * N * 4);
            float *b = malloc((size_t)T * N * 4);
            for (size_t i = 0; i < (size_t)T * K; i++)
                x[i] = gauss();
            for (size_t i = 0; i < (size_t)N * K; i++)
                W[i] = gauss() / sqrtf((float)K);
            for (int n = 0; n < N; n++)
                bias[n] = 0.1f * gauss();
            embd_lowp_weight *ww = embd_lowp_pack(kind, W, N, K, kern[va]);
            embd_lowp_weight *wn = embd_lowp_pack(kind, W, N, K, kern[vb]);
            CHECK(ww && wn);
            void *scratch = ww ? scratch_make(ww) : NULL;
            for (int gelu = 0; ww && wn && scratch && gelu < 2; gelu++) {
                embd_lowp_gemm(ww, a, (size_t)N, x, (size_t)K, 0, T, 0, N, bias, gelu, scratch);
                embd_lowp_gemm(wn, b, (size_t)N, x, (size_t)K, 0, T, 0, N, bias, gelu, scratch);
                if (kind == EMBD_LOWP_INT8) {
                    size_t diff = 0;
                    for (size_t i = 0; i < (size_t)T * N; i++)
                        diff += memcmp(&a[i], &b[i], sizeof(float)) != 0;
                    CHECK_MSG(diff == 0, "int8 %dx%dx%d gelu=%d: %zu of %d outputs differ (%s)", T,
                              K, N, gelu, diff, T * N, pname[pi]);
                    continue;
                }
                for (int r = 0; r < T; r++) {
                    double big = 0, d = 0;
                    for (int n = 0; n < N; n++) {
                        const size_t i = (size_t)r * N + n;
                        big = fmax(big, fabs((double)a[i]));
                        d = fmax(d, fabs((double)a[i] - (double)b[i]));
                    }
                    worst = fmax(worst, big > 0 ? d / big : d);
                }
            }
            free(scratch);
            embd_lowp_free(ww);
            embd_lowp_free(wn);
            free(x);
            free(W);
            free(bias);
            free(a);
            free(b);
        }
        if (kind == EMBD_LOWP_BF16) {
            /* the same bf16 inputs, fp32 sums in another order: a few fp32 ulps of the
             * row's scale (K up to 1536 terms) */
            CHECK_MSG(worst < 1e-5, "bf16: AMX and 512-bit differ by %.3g of the row's scale",
                      worst);
            printf("%s: largest difference %.2g of the row's largest output\n", pname[pi], worst);
        } else {
            printf("%s: the same bits\n", pname[pi]);
        }
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const int best = embd_cpu_isa_best();
    char why[5][160] = {"", "", "", "", ""};
    int k16 = -1, k8 = -1, k8n = -1;
    /* the variants: bf16 512-bit, bf16 AMX, int8 512-bit, int8 AMX, int8 AVX-VNNI
     * (embd_cpu_lowp_kernels picks AMX where it may run; the 512-bit kernels
     * run on the same CPU when asked for) */
    const int bf16 = best >= EMBD_CPU_ISA_AVX512 &&
                     embd_cpu_lowp_kernels(false, EMBD_CPU_ISA_AVX512, &k16, why[0], sizeof why[0]);
    const int int8 = best >= EMBD_CPU_ISA_AVX512 &&
                     embd_cpu_lowp_kernels(true, EMBD_CPU_ISA_AVX512, &k8, why[2], sizeof why[2]) &&
                     k8 >= EMBD_LOWP_AVX512;
    const int int8n = best >= EMBD_CPU_ISA_AVX2 &&
                      embd_cpu_lowp_kernels(true, EMBD_CPU_ISA_AVX2, &k8n, why[4], sizeof why[4]);
    const int can[5] = {bf16, bf16 && k16 == EMBD_LOWP_AMX, int8, int8 && k8 == EMBD_LOWP_AMX,
                        int8n};
    static const char *const names[5] = {"bf16 (AVX512_BF16)", "bf16 (AMX-BF16)",
                                         "int8 (AVX512_VNNI)", "int8 (AMX-INT8)",
                                         "int8 (AVX-VNNI)"};
    if (best < EMBD_CPU_ISA_AVX512) {
        snprintf(why[0], sizeof why[0], "no avx512 kernel set");
        snprintf(why[2], sizeof why[2], "no avx512 kernel set");
    }
    if (best >= EMBD_CPU_ISA_AVX512 && !can[2] && !why[2][0])
        snprintf(why[2], sizeof why[2], "the CPU lacks AVX512_VNNI");
    for (int v = 1; v <= 3; v += 2) {
        if (can[v]) continue;
        if (!can[v - 1])
            snprintf(why[v], sizeof why[v], "%.150s", why[v - 1]);
        else
            embd_cpu_amx_runs(v == 3, EMBD_CPU_ISA_AVX512, why[v], sizeof why[v]);
    }
    if (!can[0] && !can[2] && !can[4])
        TEST_SKIP("bf16: %s; int8: %s; int8 on AVX2: %s", why[0], why[2], why[4]);
    printf("CPU: %s\n", embd_cpu_features_get()->model);
    for (int v = 0; v < 5; v++) {
        if (!can[v]) {
            printf("%s: not run (%s)\n", names[v], why[v][0] ? why[v] : "not here");
            continue;
        }
        const enum embd_lowp_kind kind = v < 2 ? EMBD_LOWP_BF16 : EMBD_LOWP_INT8;
        g_kernels = kern[v];
        worst_q[kind] = worst_rel32[kind] = 0;
        worst_cos[kind] = 2;
        test_pack(kind);
        test_exact(kind);
        test_shapes(kind);
        test_determinism(kind);
        test_special_rows(kind);
        printf("%s: worst error to the quantised reference %.2g of the error scale; to fp32 "
               "relative %.2g, cosine %.6f\n",
               names[v], worst_q[kind], worst_rel32[kind], worst_cos[kind]);
    }
    test_variants_agree(can);
    g_kernels = EMBD_LOWP_AVX512;
    return test_summary("test_lowp");
}
