/* cpu.c — the fast CPU backend ("cpu"): the same encoder as the reference
 * (ref.c), its matrix products through a packed AVX2+FMA GEMM of this file
 * (pk_gemm: the weights packed once at init) where the CPU has AVX2 and the
 * sizes are multiples of 16, else through OpenBLAS; the rest in loops over
 * the context's thread pool (util/pool.h).
 *
 * Threading: one pool only. OpenBLAS is set to one thread and every GEMM is
 * split by this file across the pool's threads (by rows of the activations,
 * or by output columns when the batch is small), so BLAS threads and the
 * pool's never fight for the cores. The epilogue of each GEMM (bias, GELU,
 * residual + LayerNorm) runs in the same pool run right after it, while the
 * rows are still in cache (the packed GEMM adds the bias and GELU in
 * registers); after a split by columns it needs a second run.
 *
 * Attention runs per (sequence, head) task, dynamically scheduled. With the
 * packed GEMM: K^T of the head is packed into thread scratch (HS, len16), the
 * scores are one pk_gemm, the softmax scales them, and the context another
 * pk_gemm against V in place. Otherwise sequences of 32 tokens or more use two
 * OpenBLAS calls, and shorter ones loops: K transposed into (HS, len) so that
 * the scores for a query are HS axpy passes over len, and the context an axpy
 * over HS per key.
 *
 * Shape letters as in backend/backend.h; `len` is one sequence's length. */
#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/cpu_math.h"
#include "backend/cpu/isa.h"
#include "backend/cpu/lowp.h"
#include "model/model.h"
#include "util/pool.h"
#include "util/util.h"

#include <cblas.h>
#undef I /* <complex.h>, pulled in by cblas.h, defines I; here I is the FFN size */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EMBD_HAVE_PACKED 1
#else
#define EMBD_HAVE_PACKED 0
#endif

/* Hot loops are compiled three times, for the baseline x86-64 the library is
 * built for, for AVX2+FMA and for AVX-512 (F/BW/VL/DQ, 512-bit vectors), and
 * the backend picks one at init (isa.h: cpuid, the OS's XGETBV state, and
 * EMBD_CPU_ISA): each such function is written once as an always-inline body
 * and wrapped by DEFINE_DISPATCHED. (GCC's target_clones("arch=haswell")
 * would test for an Intel Haswell by name and miss AMD CPUs with the same
 * ISA.) */
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
/* GCC vectorises the plain loops 16 wide only when told to prefer 512-bit
 * vectors; Clang has no such target attribute (it would ignore the whole
 * attribute) and takes the width from the types and intrinsics. */
#if defined(__clang__)
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#else
#define TARGET_AVX512                                                                              \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")))
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
#define EMBD_HAVE_DISPATCH 1
#define DEFINE_DISPATCHED(name, params, args)                                                      \
    TARGET_AVX512 static void name##_avx512 params {                                               \
        name##_body args;                                                                          \
    }                                                                                              \
    TARGET_AVX2 static void name##_avx2 params {                                                   \
        name##_body args;                                                                          \
    }                                                                                              \
    static void name##_base params {                                                               \
        name##_body args;                                                                          \
    }                                                                                              \
    static void name params {                                                                      \
        if (cpu_isa == EMBD_CPU_ISA_AVX512)                                                        \
            name##_avx512 args;                                                                    \
        else if (cpu_isa == EMBD_CPU_ISA_AVX2)                                                     \
            name##_avx2 args;                                                                      \
        else                                                                                       \
            name##_base args;                                                                      \
    }
#else
#define EMBD_HAVE_DISPATCH 0
#define DEFINE_DISPATCHED(name, params, args)                                                      \
    static void name params {                                                                      \
        name##_body args;                                                                          \
    }
#endif
#define BODY static inline __attribute__((always_inline)) void

/* The kernel set the dispatched loops run; set by cpu_init (the same on
 * every call unless EMBD_CPU_ISA or a test changes it between inits). The
 * matrix products follow the backend's own choice (embd_backend.isa). */
static enum embd_cpu_isa cpu_isa;
static int cpu_force_baseline;

bool embd_backend_cpu_force_baseline(bool on) {
    cpu_force_baseline = on;
    return EMBD_HAVE_DISPATCH && embd_cpu_isa_best() >= EMBD_CPU_ISA_AVX2;
}

/* The kernel set a backend initialised now runs, and why (isa.h); false with
 * the reason for a bad EMBD_CPU_ISA. Without dispatch (not x86-64, or a
 * build for AVX2 and up) the loops are the build's own, but the packed GEMM
 * still follows the CPU. */
static bool cpu_choose_isa(enum embd_cpu_isa *isa, char *why, size_t n) {
    if (!embd_cpu_isa_choose(isa, why, n)) return false;
    if (cpu_force_baseline) {
        *isa = EMBD_CPU_ISA_BASELINE;
        snprintf(why, n, "forced by a test");
    }
    return true;
}

struct embd_backend {
    const struct embd_model *model;
    int nt;                /* threads: per-thread scratch is sized for these */
    embd_pool *pool;       /* the threads (the context's, or own_pool) */
    embd_pool *own_pool;   /* created here when the caller gave none; else NULL */
    enum embd_cpu_isa isa; /* the kernel set of the packed GEMM (see cpu_choose_isa) */
    int lowp_kernels;      /* bf16 / int8: enum embd_lowp_kernels (lowp.h) */
    /* the weights in the kernels' forms, shared by the model's contexts of
     * the same form (struct cpu_weights); the pointers below are into it */
    struct cpu_weights *cw;
    const float *wqkv; /* (L, 3H, H) Q, K, V weights stacked per layer */
    const float *bqkv; /* (L, 3H) */
    /* the packed path (H and I multiples of 16): per layer the four weights
     * in panel layout (see pack_panels) */
    const float *pk_qkv, *pk_o, *pk_i, *pk_f; /* layer 0's; layer l is + l * pk_layer */
    size_t pk_layer;
    int pk_maxk; /* max(H, I): the longest K of a packed GEMM */
    /* --dtype bf16 or int8 (lowp.h): per layer Q|K|V, O, FFN in, FFN out,
     * (L * 4) packed weights, and per-thread scratch; else NULL */
    enum embd_dtype dtype; /* EMBD_DTYPE_FP32, _BF16 or _INT8 */
    embd_lowp_weight *const *lowp;
    void *lowp_mem, *lowp_scratch; /* lowp_scratch: lowp_mem 64-byte aligned */
    size_t lowp_stride;            /* bytes of lowp_scratch per thread */
    float *abuf;        /* (nt, PK_MC * max(H, I)) packed activation blocks, per thread */
    size_t abuf_stride; /* floats per thread (4x for the baseline's replicated panels) */
    /* token scratch, for up to cap_tok tokens; one allocation at `tok_mem` */
    void *tok_mem;
    int cap_tok;
    float *x;     /* (T, H) hidden state */
    float *ctx;   /* (T, H) attention context */
    float *tmp;   /* (T, H) dense outputs before the residual */
    float *big;   /* (T, max(3H, I)) Q|K|V, later the FFN activations */
    int32_t *pos; /* (T) position of each token within its sequence */
    /* attention scratch, per thread, for sequences up to cap_len tokens */
    float *att; /* (nt, att_stride): K^T (HS, len16) then scores (len, len16) */
    int cap_len;
    size_t att_stride;
};

/* The packed GEMM's tile: 6 rows x 16 columns, blocks of 48 rows (see pk_gemm). */
#define PK_MR 6
#define PK_NR 16
#define PK_MR512 12 /* the AVX-512 tile's rows: 12 x 32 */
#define PK_MC 48

/* Rounds a float count up to a multiple of 16 (64 bytes). */
static size_t round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

/* Releases the scratch buffers (not the packed weights); safe to repeat. */
static void cpu_release_scratch(embd_backend *be) {
    embd_free(be->tok_mem);
    embd_free(be->att);
    be->tok_mem = NULL;
    be->att = NULL;
    be->x = be->ctx = be->tmp = be->big = NULL;
    be->pos = NULL;
    be->cap_tok = 0;
    be->cap_len = 0;
    be->att_stride = 0;
}

/* Makes sure the scratch holds T tokens and sequences of max_len tokens,
 * growing (never shrinking) it. On failure the old scratch is kept intact
 * where it was large enough and EMBD_ERR_NOMEM is returned. */
static enum embd_status cpu_reserve(embd_backend *be, int T, int max_len) {
    const embd_hparams *hp = &be->model->hp;
    const size_t H = (size_t)hp->H, HS = H / (size_t)hp->NH;
    if (T > be->cap_tok) {
        size_t wide = 3 * H > (size_t)hp->I ? 3 * H : (size_t)hp->I;
        size_t nx = round16((size_t)T * H), nbig = round16((size_t)T * wide);
        size_t npos = round16((size_t)T);
        /* K^T of the whole batch, only for the packed attention (head size a
         * multiple of 16; see attention()) */
        size_t total = 3 * nx + nbig + npos + 16; /* + 16 for the 64-byte alignment */
        void *mem = embd_malloc2(total, sizeof(float));
        if (!mem)
            return embd_error(EMBD_ERR_NOMEM,
                              "cpu backend: out of memory for %d tokens of "
                              "scratch",
                              T);
        embd_free(be->tok_mem);
        be->tok_mem = mem;
        float *p = (float *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
        be->x = p;
        be->ctx = p + nx;
        be->tmp = p + 2 * nx;
        be->big = p + 3 * nx;
        be->pos = (int32_t *)(p + 3 * nx + nbig);
        be->cap_tok = T;
    }
    if (max_len > be->cap_len) {
        /* K^T (HS, len16), then scores (len, len16) for the loops and BLAS,
         * or for the packed path V (len, HS), scores (12, len16) and 12 sums;
         * len16 = len rounded up to 16 */
        const size_t l16 = round16((size_t)max_len);
        const size_t sc = round16((size_t)max_len * l16);
        const size_t sc_pk = round16((size_t)max_len * HS) + round16(PK_MR512 * l16) + 16;
        size_t stride = round16(HS * l16) + (sc > sc_pk ? sc : sc_pk);
        float *att = embd_malloc2((size_t)be->nt * stride, sizeof(float));
        if (!att)
            return embd_error(EMBD_ERR_NOMEM,
                              "cpu backend: out of memory for attention "
                              "scratch (%d tokens)",
                              max_len);
        embd_free(be->att);
        be->att = att;
        be->att_stride = stride;
        be->cap_len = max_len;
    }
    return EMBD_OK;
}

/* y (C) = LayerNorm of x (C) with gamma g, beta b; y may equal x. */
static inline void layernorm_row(float *y, const float *x, const float *g, const float *b, int C,
                                 float eps) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; c++)
        sum += x[c];
    const float mean = sum / (float)C;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; c++)
        var += (x[c] - mean) * (x[c] - mean);
    const float rstd = 1.0f / sqrtf(var / (float)C + eps);
#pragma omp simd
    for (int c = 0; c < C; c++)
        y[c] = (x[c] - mean) * rstd * g[c] + b[c];
}

enum epilogue {
    EPI_NONE,          /* nothing (embd_cpu_gemm without a bias) */
    EPI_BIAS,          /* out += b */
    EPI_BIAS_GELU,     /* out = gelu(out + b) */
    EPI_BIAS_RESID_LN, /* x = LayerNorm(x + out + b) (out is clobbered) */
    EPI_RESID_LN,      /* x = LayerNorm(x + out), the bias already in out */
};

/* Applies an epilogue to rows [r0, r1) of out (T, N). */
BODY epilogue_rows_body(float *out, const float *bias, enum epilogue epi, float *x, const float *g,
                        const float *beta, float eps, int r0, int r1, int N) {
    for (int r = r0; r < r1; r++) {
        float *o = out + (size_t)r * N;
        switch (epi) {
        case EPI_NONE:
            break;
        case EPI_BIAS:
#pragma omp simd
            for (int c = 0; c < N; c++)
                o[c] += bias[c];
            break;
        case EPI_BIAS_GELU:
#pragma omp simd
            for (int c = 0; c < N; c++)
                o[c] = embd_fast_gelu(o[c] + bias[c]);
            break;
        case EPI_BIAS_RESID_LN: {
            float *xr = x + (size_t)r * N;
#pragma omp simd
            for (int c = 0; c < N; c++)
                o[c] += bias[c] + xr[c];
            layernorm_row(xr, o, g, beta, N, eps);
            break;
        }
        case EPI_RESID_LN: {
            float *xr = x + (size_t)r * N;
#pragma omp simd
            for (int c = 0; c < N; c++)
                o[c] += xr[c];
            layernorm_row(xr, o, g, beta, N, eps);
            break;
        }
        }
    }
}

DEFINE_DISPATCHED(epilogue_rows,
                  (float *out, const float *bias, enum epilogue epi, float *x, const float *g,
                   const float *beta, float eps, int r0, int r1, int N),
                  (out, bias, epi, x, g, beta, eps, r0, r1, N))

/* The packed GEMM (x86-64 with AVX2+FMA): out = in W^T + b for weights
 * packed once at init. On these shapes (K 384 or 1536, N a few hundred)
 * OpenBLAS reaches 55-65% of a core's FMA peak: it packs W again on every
 * call, then makes a pass over C for beta = 0, and the epilogue another. Here
 * W is packed at init into panels of 16 columns, (K, 16) each; the
 * activations are packed per block of PK_MC rows into micro-panels of 6 rows,
 * (K, 6) each; and a 6x16 register tile (12 accumulators) runs the whole of K,
 * the panel in L1 and the block in L2, adding the bias (and GELU) to the tile
 * before it is stored. Each output is one fp32 FMA chain over k in order. */

/* Packs the N rows (K floats each) of a weight into N / 16 panels of (K, 16):
 * row n, column k goes to dst[((n / 16) * K + k) * 16 + n % 16]. The rows
 * come from consecutive matrices of rows_each rows each (Q, K and V). */
static void pack_panels(float *dst, const float *const src[], int rows_each, int N, int K) {
    for (int n = 0; n < N; n++) {
        const float *w = src[n / rows_each] + (size_t)(n % rows_each) * K;
        float *d = dst + (size_t)(n / PK_NR) * K * PK_NR + n % PK_NR;
        for (int k = 0; k < K; k++)
            d[(size_t)k * PK_NR] = w[k];
    }
}

#if EMBD_HAVE_PACKED
/* r[0..7] = the 8 x 8 block held in r, transposed (row i becomes column i). */
TARGET_AVX2 static inline __attribute__((always_inline)) void transpose8_regs(__m256 r[8]) {
    __m256 u[8];
    /* pairs of rows interleaved, then groups of four, then the 128-bit halves */
    for (int i = 0; i < 8; i += 2) {
        u[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        u[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(u[i], u[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        u[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
        u[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
    }
    for (int i = 0; i < 8; i++)
        r[i] = u[i];
}

/* d (8, 8), rows ldd apart = s (8, 8), rows lds apart, transposed. */
TARGET_AVX2 static void transpose8(float *d, size_t ldd, const float *s, size_t lds) {
    __m256 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(s + (size_t)i * lds);
    transpose8_regs(r);
    for (int i = 0; i < 8; i++)
        _mm256_storeu_ps(d + (size_t)i * ldd, r[i]);
}

/* Packs rows [r0, r0 + mc) of in (T, K), rows lda floats apart, into
 * micro-panels of (K, 6), the rows past mc in the last one zero. K is a
 * multiple of 8 (H and I are multiples of 16 on the packed path): 8 columns
 * of the 6 rows (and 2 of zeros) are transposed in registers and stored 6
 * floats apart, in order, each store's last 2 lanes overwritten by the next;
 * the last store of a micro-panel writes 2 floats past it, so dst needs 2
 * floats of room after the block (see cpu_init's abuf). */
TARGET_AVX2 static void pack_rows(float *dst, const float *in, size_t lda, int r0, int mc, int K) {
    for (int i = 0; i < mc; i += PK_MR) {
        float *d = dst + (size_t)i * K;
        const int mr = mc - i < PK_MR ? mc - i : PK_MR;
        const float *a = in + (size_t)(r0 + i) * lda;
        for (int k = 0; k < K; k += 8) {
            __m256 r[8];
            for (int j = 0; j < 8; j++)
                r[j] = j < mr ? _mm256_loadu_ps(a + (size_t)j * lda + k) : _mm256_setzero_ps();
            transpose8_regs(r);
            for (int j = 0; j < 8; j++)
                _mm256_storeu_ps(d + (size_t)(k + j) * PK_MR, r[j]);
        }
    }
}

/* pack_rows for the baseline kernel set: the same micro-panels, each value
 * stored 4 times (a (K, 6, 4) panel), so that pk_tile_base multiplies by it
 * straight from memory instead of broadcasting it into a register. */
static void pack_rows_base(float *dst, const float *in, size_t lda, int r0, int mc, int K) {
    for (int i = 0; i < mc; i += PK_MR) {
        float *d = dst + (size_t)i * K * 4;
        const int mr = mc - i < PK_MR ? mc - i : PK_MR;
        const float *a = in + (size_t)(r0 + i) * lda;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < PK_MR; j++) {
                const float v = j < mr ? a[(size_t)j * lda + k] : 0.0f;
                float *o = d + ((size_t)k * PK_MR + j) * 4;
                o[0] = o[1] = o[2] = o[3] = v;
            }
    }
}

/* c (mr, 16), rows ldc apart = A (6, K) times b (K, 16), rows ldb floats
 * apart, plus bias (16; NULL: none), then GELU if asked. Row r of A, column
 * k is ar[r][k * ks]: a packed micro-panel (ar[r] = a + r, ks = 6) or rows
 * of a matrix in place (ks = 1). Rows past mr are computed (the callers
 * point them at row 0), not stored. */
TARGET_AVX2 static inline __attribute__((always_inline)) void
pk_tile_body(const float *const ar[PK_MR], size_t ks, const float *b, size_t ldb, int K, float *c,
             size_t ldc, int mr, const float *bias, int gelu) {
    const float *a0 = ar[0], *a1 = ar[1], *a2 = ar[2], *a3 = ar[3], *a4 = ar[4], *a5 = ar[5];
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_loadu_ps(b + (size_t)k * ldb);
        const __m256 b1 = _mm256_loadu_ps(b + (size_t)k * ldb + 8);
        const size_t o = (size_t)k * ks;
        __m256 x = _mm256_broadcast_ss(a0 + o);
        c00 = _mm256_fmadd_ps(x, b0, c00);
        c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + o);
        c10 = _mm256_fmadd_ps(x, b0, c10);
        c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + o);
        c20 = _mm256_fmadd_ps(x, b0, c20);
        c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + o);
        c30 = _mm256_fmadd_ps(x, b0, c30);
        c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a4 + o);
        c40 = _mm256_fmadd_ps(x, b0, c40);
        c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a5 + o);
        c50 = _mm256_fmadd_ps(x, b0, c50);
        c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    __m256 acc[PK_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (bias) {
        const __m256 bb0 = _mm256_loadu_ps(bias), bb1 = _mm256_loadu_ps(bias + 8);
        for (int r = 0; r < PK_MR; r++) {
            acc[r][0] = _mm256_add_ps(acc[r][0], bb0);
            acc[r][1] = _mm256_add_ps(acc[r][1], bb1);
        }
    }
    if (!gelu) {
        /* straight from the registers: a staging copy costs as much as a
         * short K's loop (attention's K is the head size) */
        for (int r = 0; r < mr; r++) {
            _mm256_storeu_ps(c + (size_t)r * ldc, acc[r][0]);
            _mm256_storeu_ps(c + (size_t)r * ldc + 8, acc[r][1]);
        }
        return;
    }
    float t[PK_MR][PK_NR] __attribute__((aligned(32)));
    for (int r = 0; r < PK_MR; r++) {
        _mm256_store_ps(t[r], acc[r][0]);
        _mm256_store_ps(t[r] + 8, acc[r][1]);
    }
    for (int r = 0; r < mr; r++) {
        float *cr = c + (size_t)r * ldc;
#pragma omp simd
        for (int j = 0; j < PK_NR; j++)
            cr[j] = embd_fast_gelu(t[r][j]);
    }
}

/* The tile on a packed micro-panel a (K, 6). */
TARGET_AVX2 static void pk_tile(const float *a, const float *b, size_t ldb, int K, float *c,
                                size_t ldc, int mr, const float *bias, int gelu) {
    const float *const ar[PK_MR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5};
    pk_tile_body(ar, PK_MR, b, ldb, K, c, ldc, mr, bias, gelu);
}

/* The tile for the baseline x86-64 kernel set (SSE2, no FMA), on B packed
 * as for pk_tile and A as pack_rows_base lays it out: each output is a sum over k in order
 * (multiply, then add) whatever the row's place in the batch, so a text's
 * vector does not depend on what it is batched with, nor on the threads
 * (OpenBLAS's kernels, which this set used before, compute a row by its
 * place in the call: its Haswell kernels differ by row mod 12). SSE2
 * (every x86-64 CPU has it), eight columns at a time: the 6 x 2
 * accumulators, two of B and one product fit the 16 xmm registers. */
static void pk_tile_base(const float *a, const float *b, size_t ldb, int K, float *c, size_t ldc,
                         int mr, const float *bias, int gelu) {
    for (int h = 0; h < PK_NR; h += 8) {
        __m128 acc[PK_MR][2];
        for (int r = 0; r < PK_MR; r++)
            acc[r][0] = acc[r][1] = _mm_setzero_ps();
        for (int k = 0; k < K; k++) {
            const float *bk = b + (size_t)k * ldb + h, *ak = a + (size_t)k * PK_MR * 4;
            const __m128 b0 = _mm_loadu_ps(bk), b1 = _mm_loadu_ps(bk + 4);
#pragma GCC unroll 6
            for (int r = 0; r < PK_MR; r++) {
                const __m128 x = _mm_load_ps(ak + 4 * r); /* a[k][r], 4 times */
                acc[r][0] = _mm_add_ps(acc[r][0], _mm_mul_ps(b0, x));
                acc[r][1] = _mm_add_ps(acc[r][1], _mm_mul_ps(b1, x));
            }
        }
        for (int r = 0; r < mr; r++) {
            float t[8], *cr = c + (size_t)r * ldc + h;
            _mm_storeu_ps(t, acc[r][0]);
            _mm_storeu_ps(t + 4, acc[r][1]);
            for (int j = 0; j < 8; j++) {
                const float v = bias ? t[j] + bias[h + j] : t[j];
                cr[j] = gelu ? embd_fast_gelu(v) : v;
            }
        }
    }
}

/* c (mr, 16) = rows [0, mr) of a (lda floats apart, read in place: no
 * packing) times b (K, 16), rows ldb apart; no bias. For attention, whose
 * short K (the head size, or the sequence length) makes packing cost as
 * much as the tile. */
TARGET_AVX2 static void pk_tile_rows(const float *a, size_t lda, const float *b, size_t ldb, int K,
                                     float *c, size_t ldc, int mr) {
    const float *ar[PK_MR];
    for (int r = 0; r < PK_MR; r++)
        ar[r] = a + (size_t)(r < mr ? r : 0) * lda;
    pk_tile_body(ar, 1, b, ldb, K, c, ldc, mr, NULL, 0);
}

/* The AVX-512 tiles: MR (12 or 6) rows x NV (2 or 1) panels of 16 columns,
 * the two panels at b0 and b1 (rows ldb floats apart), 24 zmm accumulators
 * at most. Rows as in pk_tile_body (rows past mr computed, not stored). Each
 * output is the same fp32 FMA chain over k in order as in the AVX2 tile,
 * then the same bias and GELU, so the products are the AVX2 ones bit for
 * bit; only fewer instructions issue per FMA (on CPUs with two 512-bit FMA
 * units, twice the FMAs per cycle). */
TARGET_AVX512 static inline __attribute__((always_inline)) void
pk512_body(const float *const ar[PK_MR512], size_t ks, const float *b0, const float *b1, size_t ldb,
           int K, float *c, size_t ldc, int mr, const float *bias, int gelu, const int MR,
           const int NV) {
    __m512 acc[PK_MR512][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
    }
#pragma GCC unroll 2
    for (int k = 0; k < K; k++) {
        const __m512 w0 = _mm512_loadu_ps(b0 + (size_t)k * ldb);
        const __m512 w1 = NV > 1 ? _mm512_loadu_ps(b1 + (size_t)k * ldb) : w0;
        const size_t o = (size_t)k * ks;
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            const __m512 x = _mm512_set1_ps(ar[r][o]);
            acc[r][0] = _mm512_fmadd_ps(x, w0, acc[r][0]);
            if (NV > 1) acc[r][1] = _mm512_fmadd_ps(x, w1, acc[r][1]);
        }
    }
    if (bias) {
        const __m512 bb0 = _mm512_loadu_ps(bias);
        const __m512 bb1 = NV > 1 ? _mm512_loadu_ps(bias + PK_NR) : bb0;
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            acc[r][0] = _mm512_add_ps(acc[r][0], bb0);
            if (NV > 1) acc[r][1] = _mm512_add_ps(acc[r][1], bb1);
        }
    }
    if (!gelu) {
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            if (r >= mr) break;
            _mm512_storeu_ps(c + (size_t)r * ldc, acc[r][0]);
            if (NV > 1) _mm512_storeu_ps(c + (size_t)r * ldc + PK_NR, acc[r][1]);
        }
        return;
    }
    float t[PK_MR512][2 * PK_NR] __attribute__((aligned(64)));
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        _mm512_store_ps(t[r], acc[r][0]);
        if (NV > 1) _mm512_store_ps(t[r] + PK_NR, acc[r][1]);
    }
    for (int r = 0; r < mr; r++) {
        float *cr = c + (size_t)r * ldc;
#pragma omp simd
        for (int j = 0; j < NV * PK_NR; j++)
            cr[j] = embd_fast_gelu(t[r][j]);
    }
}

/* The AVX-512 tile on packed micro-panels: rows 0-5 from the micro-panel at
 * a (K, 6), rows 6-11 (MR 12) from the next one; nv panels. */
#define PK512_PACKED(MR, NV)                                                                       \
    TARGET_AVX512 static void pk512_packed_##MR##_##NV(                                            \
        const float *a, const float *b0, const float *b1, size_t ldb, int K, float *c, size_t ldc, \
        int mr, const float *bias, int gelu) {                                                     \
        const float *a2 = a + (size_t)PK_MR * K;                                                   \
        const float *const ar[PK_MR512] = {a,  a + 1,  a + 2,  a + 3,  a + 4,  a + 5,              \
                                           a2, a2 + 1, a2 + 2, a2 + 3, a2 + 4, a2 + 5};            \
        pk512_body(ar, PK_MR, b0, b1, ldb, K, c, ldc, mr, bias, gelu, MR, NV);                     \
    }
PK512_PACKED(12, 2)
PK512_PACKED(12, 1)
PK512_PACKED(6, 2)
PK512_PACKED(6, 1)

/* The AVX-512 tile on rows of a matrix in place (a, rows lda apart; rows
 * past mr read row 0), no bias: see pk_tile_rows. */
#define PK512_ROWS(MR, NV)                                                                         \
    TARGET_AVX512 static void pk512_rows_##MR##_##NV(const float *a, size_t lda, const float *b0,  \
                                                     const float *b1, size_t ldb, int K, float *c, \
                                                     size_t ldc, int mr) {                         \
        const float *ar[PK_MR512];                                                                 \
        for (int r = 0; r < PK_MR512; r++)                                                         \
            ar[r] = a + (size_t)(r < mr ? r : 0) * lda;                                            \
        pk512_body(ar, 1, b0, b1, ldb, K, c, ldc, mr, NULL, 0, MR, NV);                            \
    }
PK512_ROWS(12, 2)
PK512_ROWS(12, 1)
PK512_ROWS(6, 2)
PK512_ROWS(6, 1)

/* Rows the tile of a kernel set covers: 12 for AVX-512, 6 for AVX2. */
static int pk_rows_per_tile(enum embd_cpu_isa isa) {
    return isa == EMBD_CPU_ISA_AVX512 ? PK_MR512 : PK_MR;
}

/* c (mr, 16 np) = rows [0, mr) of a (in place, rows lda apart; mr at most
 * pk_rows_per_tile) times the np panels of 16 columns of b, panel p at
 * b + p * pstride with rows ldb apart; no bias. */
static void pk_rows_panels(enum embd_cpu_isa isa, const float *a, size_t lda, const float *b,
                           size_t pstride, size_t ldb, int K, float *c, size_t ldc, int mr,
                           int np) {
    if (isa == EMBD_CPU_ISA_AVX512) {
        for (int p = 0; p < np; p += 2) {
            const float *b0 = b + (size_t)p * pstride, *b1 = b0 + pstride;
            float *cp = c + (size_t)p * PK_NR;
            if (p + 1 < np) {
                if (mr > PK_MR)
                    pk512_rows_12_2(a, lda, b0, b1, ldb, K, cp, ldc, mr);
                else
                    pk512_rows_6_2(a, lda, b0, b1, ldb, K, cp, ldc, mr);
            } else if (mr > PK_MR)
                pk512_rows_12_1(a, lda, b0, b0, ldb, K, cp, ldc, mr);
            else
                pk512_rows_6_1(a, lda, b0, b0, ldb, K, cp, ldc, mr);
        }
        return;
    }
    for (int p = 0; p < np; p++)
        pk_tile_rows(a, lda, b + (size_t)p * pstride, ldb, K, c + (size_t)p * PK_NR, ldc, mr);
}

/* Rows [r0, r1) and 16-column panels [p0, p1) of out = in B + bias, then
 * GELU if asked: in (T, K) with rows lda apart, out's rows ldc apart; panel p
 * of B is (K, 16) at b + p * pstride, its rows ldb apart (packed weights:
 * pstride K * 16, ldb 16). bias may be NULL; abuf holds PK_MC * K floats
 * (4 times as many for the baseline kernel set). */
static void pk_gemm(enum embd_cpu_isa isa, float *out, size_t ldc, const float *in, size_t lda,
                    const float *b, size_t pstride, size_t ldb, int r0, int r1, int p0, int p1,
                    int K, const float *bias, int gelu, float *abuf) {
    for (int m0 = r0; m0 < r1; m0 += PK_MC) {
        const int mc = r1 - m0 < PK_MC ? r1 - m0 : PK_MC;
        if (isa >= EMBD_CPU_ISA_AVX2)
            pack_rows(abuf, in, lda, m0, mc, K);
        else
            pack_rows_base(abuf, in, lda, m0, mc, K);
        if (isa == EMBD_CPU_ISA_AVX512) {
            for (int p = p0; p < p1; p += 2) {
                const float *b0 = b + p * pstride, *b1 = b0 + pstride;
                const float *bp = bias ? bias + p * PK_NR : NULL;
                const int two = p + 1 < p1;
                for (int i = 0; i < mc; i += PK_MR512) {
                    const int mr = mc - i < PK_MR512 ? mc - i : PK_MR512;
                    const float *a = abuf + (size_t)i * K;
                    float *c = out + (size_t)(m0 + i) * ldc + p * PK_NR;
                    /* rows 6-11 exist (zero past mc) only when mr > 6 */
                    if (mr > PK_MR) {
                        if (two)
                            pk512_packed_12_2(a, b0, b1, ldb, K, c, ldc, mr, bp, gelu);
                        else
                            pk512_packed_12_1(a, b0, b0, ldb, K, c, ldc, mr, bp, gelu);
                    } else if (two)
                        pk512_packed_6_2(a, b0, b1, ldb, K, c, ldc, mr, bp, gelu);
                    else
                        pk512_packed_6_1(a, b0, b0, ldb, K, c, ldc, mr, bp, gelu);
                }
            }
            continue;
        }
        void (*tile)(const float *, const float *, size_t, int, float *, size_t, int, const float *,
                     int) = isa >= EMBD_CPU_ISA_AVX2 ? pk_tile : pk_tile_base;
        for (int p = p0; p < p1; p++)
            for (int i = 0; i < mc; i += PK_MR)
                tile(abuf + (size_t)i * K * (isa >= EMBD_CPU_ISA_AVX2 ? 1 : 4), b + p * pstride,
                     ldb, K, out + (size_t)(m0 + i) * ldc + p * PK_NR, ldc,
                     mc - i < PK_MR ? mc - i : PK_MR, bias ? bias + p * PK_NR : NULL, gelu);
    }
}

#endif

/* A weight of a linear layer in the forms the backend may hold: w (N, K) as
 * loaded, wp packed for pk_gemm, wl packed in bf16 or int8 (lowp.h); the
 * last two may be NULL. */
typedef struct {
    const float *w, *wp;
    const embd_lowp_weight *wl;
} lin_w;

/* Rows [r0, r1) and columns [c0, c1) (multiples of 16) of out (T, N) = in
 * (T, K) W^T + bias, GELU if asked, through the packed GEMM (Wp) or the
 * reduced-precision one (Wl). */
static void gemm_part(embd_backend *be, float *out, const float *in, lin_w W, int K, int N, int r0,
                      int r1, int c0, int c1, const float *bias, int gelu, int tid) {
    if (W.wl) {
        embd_lowp_gemm(W.wl, out, (size_t)N, in, (size_t)K, r0, r1, c0, c1, bias, gelu,
                       (char *)be->lowp_scratch + (size_t)tid * be->lowp_stride);
        return;
    }
#if EMBD_HAVE_PACKED
    float *abuf = be->abuf + (size_t)tid * be->abuf_stride;
    pk_gemm(be->isa, out, (size_t)N, in, (size_t)K, W.wp, (size_t)K * PK_NR, PK_NR, r0, r1,
            c0 / PK_NR, c1 / PK_NR, K, bias, gelu, abuf);
#else
    (void)be, (void)out, (void)in, (void)K, (void)N, (void)r0, (void)r1, (void)c0, (void)c1;
    (void)bias, (void)gelu, (void)tid;
#endif
}

/* One linear layer's work, shared by the threads of a run. */
struct lin_job {
    embd_backend *be;
    float *out;
    const float *in;
    lin_w W;
    int T, K, N;
    const float *bias;
    enum epilogue epi;
    float *x;
    const float *g, *beta;
    float eps;
    bool by_rows; /* split by rows, else by columns of W */
    atomic_int next;
};

/* The packed GEMM (wp or wl), by blocks of PK_MC rows handed out one at a
 * time (each block's residual + LayerNorm at once: the rows are in cache),
 * or by pairs of panels (32 columns) for the AVX-512 tiles. */
static void lin_packed(void *a, int tid, int nth) {
    struct lin_job *j = a;
    const int gelu = j->epi == EPI_BIAS_GELU, ln = j->epi == EPI_BIAS_RESID_LN;
    if (j->by_rows) {
        /* one block at a time: on a machine whose cores are shared, a thread
         * that gets less of its core takes fewer blocks instead of holding
         * the others at the end */
        const int nb = (j->T + PK_MC - 1) / PK_MC;
        for (int bi; (bi = embd_pool_next(&j->next, 1)) < nb;) {
            const int m0 = bi * PK_MC, m1 = j->T - m0 < PK_MC ? j->T : m0 + PK_MC;
            gemm_part(j->be, j->out, j->in, j->W, j->K, j->N, m0, m1, 0, j->N, j->bias, gelu, tid);
            if (ln)
                epilogue_rows(j->out, NULL, EPI_RESID_LN, j->x, j->g, j->beta, j->eps, m0, m1,
                              j->N);
        }
        return;
    }
    const int np = j->N / PK_NR;
    const int pg = j->be->isa == EMBD_CPU_ISA_AVX512 || j->W.wl ? 2 : 1;
    int g0, g1;
    embd_pool_share((np + pg - 1) / pg, tid, nth, &g0, &g1);
    const int p0 = pg * g0, p1 = pg * g1 < np ? pg * g1 : np;
    if (p1 > p0)
        gemm_part(j->be, j->out, j->in, j->W, j->K, j->N, 0, j->T, p0 * PK_NR, p1 * PK_NR, j->bias,
                  gelu, tid);
}

/* OpenBLAS on one thread's rows (then their epilogue), or on its columns. */
static void lin_blas(void *a, int tid, int nth) {
    struct lin_job *j = a;
    const int T = j->T, K = j->K, N = j->N;
    if (j->by_rows) {
        int r0, r1;
        embd_pool_share(T, tid, nth, &r0, &r1);
        if (r1 > r0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, N, K, 1.0f,
                        j->in + (size_t)r0 * K, K, j->W.w, K, 0.0f, j->out + (size_t)r0 * N, N);
            epilogue_rows(j->out, j->bias, j->epi, j->x, j->g, j->beta, j->eps, r0, r1, N);
        }
        return;
    }
    /* column chunks in multiples of 16 */
    int b0, b1;
    embd_pool_share((N + 15) / 16, tid, nth, &b0, &b1);
    const int c0 = 16 * b0, c1 = 16 * b1 < N ? 16 * b1 : N;
    if (c1 > c0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, c1 - c0, K, 1.0f, j->in, K,
                    j->W.w + (size_t)c0 * K, K, 0.0f, j->out + c0, N);
}

/* The epilogue of a GEMM split by columns, by rows (after all columns). */
static void lin_epilogue(void *a, int tid, int nth) {
    struct lin_job *j = a;
    int r0, r1;
    embd_pool_share(j->T, tid, nth, &r0, &r1);
    /* the packed GEMM added the bias (and GELU) itself */
    const bool packed = j->W.wp || j->W.wl;
    if (r1 > r0)
        epilogue_rows(j->out, packed ? NULL : j->bias, packed ? EPI_RESID_LN : j->epi, j->x, j->g,
                      j->beta, j->eps, r0, r1, j->N);
}

/* out (T, N) = in (T, K) W^T, W (N, K), then the epilogue; all threads. With
 * W packed (wp, see pk_gemm; or wl, lowp.h) the packed GEMM runs, else
 * OpenBLAS. The GEMM is split by rows when there are enough of them (each
 * thread then runs its own rows' epilogue at once), else by columns of W
 * (small batches are bound by reading W, which this way is read once)
 * followed by a second run for the epilogue. */
static void linear(embd_backend *be, float *out, const float *in, lin_w W, int T, int K, int N,
                   const float *bias, enum epilogue epi, float *x, const float *g,
                   const float *beta) {
    const int nth = embd_pool_threads(be->pool);
    struct lin_job j = {
        .be = be,
        .out = out,
        .in = in,
        .W = W,
        .T = T,
        .K = K,
        .N = N,
        .bias = bias,
        .epi = epi,
        .x = x,
        .g = g,
        .beta = beta,
        .eps = be->model ? be->model->hp.ln_eps : 0.0f, /* no model: embd_cpu_gemm */
    };
    atomic_init(&j.next, 0);
    if (W.wp || W.wl) {
        /* by rows when each thread gets several blocks (else the split by
         * columns keeps every thread busy) */
        j.by_rows = T >= 4 * PK_MC * nth;
        embd_pool_run(be->pool, lin_packed, &j);
        if (!j.by_rows && epi == EPI_BIAS_RESID_LN) embd_pool_run(be->pool, lin_epilogue, &j);
        return;
    }
    j.by_rows = T >= 16 * nth; /* when each thread gets 16 rows or more */
    embd_pool_run(be->pool, lin_blas, &j);
    if (!j.by_rows && epi != EPI_NONE) embd_pool_run(be->pool, lin_epilogue, &j);
}

/* row[j] = e^(scale (row[j] - m)) for j < cols, m the max of row[0..len);
 * returns the sum of row[0..len). cols >= len: the columns past len are
 * computed too (a loop without a scalar tail) and left out of the sum. The
 * softmax of every attention path. */
static inline __attribute__((always_inline)) float exp_row(float *row, int len, int cols,
                                                           float scale) {
    float max = row[0];
#pragma omp simd reduction(max : max)
    for (int j = 1; j < len; j++)
        max = row[j] > max ? row[j] : max;
#pragma omp simd
    for (int j = 0; j < cols; j++)
        row[j] = embd_fast_expf((row[j] - max) * scale);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < len; j++)
        sum += row[j];
    return sum;
}

/* ctx rows of one sequence, head h: softmax(Q K^T / sqrt(HS) + B) V, with
 * qkv (len, 3H) the sequence's Q|K|V rows and ctx (len, H) its context rows;
 * for the first nq queries only (nq = len: all; 1: the CLS row). kt is
 * (HS, len) scratch and sc (len) scratch. bh: NULL (B = 0) or the head's
 * relative bias, B[i][j] = bh[j - i] (see head_bias). */
BODY attend_head_body(float *ctx, const float *qkv, float *kt, float *sc, int len, int nq, int H,
                      int HS, int h, const float *bh) {
    const size_t ld = 3 * (size_t)H;
    const float scale = 1.0f / sqrtf((float)HS);
    const float *K = qkv + H + (size_t)h * HS, *V = qkv + 2 * (size_t)H + (size_t)h * HS;
    for (int j = 0; j < len; j++)
        for (int d = 0; d < HS; d++)
            kt[(size_t)d * len + j] = K[(size_t)j * ld + d];
    for (int i = 0; i < nq; i++) {
        const float *q = qkv + (size_t)i * ld + (size_t)h * HS;
        for (int j = 0; j < len; j++)
            sc[j] = 0.0f;
        for (int d = 0; d < HS; d++) {
            const float qd = q[d] * scale;
            const float *k = kt + (size_t)d * len;
#pragma omp simd
            for (int j = 0; j < len; j++)
                sc[j] += qd * k[j];
        }
        if (bh) {
            const float *b = bh - i;
#pragma omp simd
            for (int j = 0; j < len; j++)
                sc[j] += b[j];
        }
        const float inv = 1.0f / exp_row(sc, len, len, 1.0f);
        float *o = ctx + (size_t)i * H + (size_t)h * HS;
        for (int d = 0; d < HS; d++)
            o[d] = 0.0f;
        for (int j = 0; j < len; j++) {
            const float p = sc[j] * inv;
            const float *v = V + (size_t)j * ld;
#pragma omp simd
            for (int d = 0; d < HS; d++)
                o[d] += p * v[d];
        }
    }
}

DEFINE_DISPATCHED(attend_head,
                  (float *ctx, const float *qkv, float *kt, float *sc, int len, int nq, int H,
                   int HS, int h, const float *bh),
                  (ctx, qkv, kt, sc, len, nq, H, HS, h, bh))

/* Rows r0.. of scores s (R rows ld apart, C columns) += the relative bias:
 * s[r][j] += bh[j - (r0 + r)]. */
static void add_bias_rows(float *s, int R, int C, size_t ld, const float *bh, int r0) {
    for (int r = 0; r < R; r++) {
        float *row = s + (size_t)r * ld;
        const float *b = bh - (r0 + r);
#pragma omp simd
        for (int j = 0; j < C; j++)
            row[j] += b[j];
    }
}

/* Head h's row of the model's relative attention bias, positioned so that
 * [j - i] is query i's bias for key j; NULL for a model without one. */
static inline const float *head_bias(const embd_hparams *hp, const float *att_bias, int h) {
    if (!att_bias) return NULL;
    return att_bias + (size_t)h * (2 * (size_t)hp->P - 1) + (size_t)(hp->P - 1);
}

/* Each row of s (R, C), rows ld floats apart, = softmax(scale * row). */
BODY softmax_rows_body(float *s, int R, int C, int ld, float scale) {
    for (int r = 0; r < R; r++) {
        float *row = s + (size_t)r * ld;
        const float inv = 1.0f / exp_row(row, C, C, scale);
#pragma omp simd
        for (int j = 0; j < C; j++)
            row[j] *= inv;
    }
}

DEFINE_DISPATCHED(softmax_rows, (float *s, int R, int C, int ld, float scale), (s, R, C, ld, scale))

/* Sequences at least this long run their attention as two GEMMs per head;
 * shorter ones use attend_head's loops, cheaper than a BLAS call's set-up. */
#define ATT_GEMM_MIN 32

/* As attend_head, through BLAS: S (len, len) = Q K^T / sqrt(HS) + B, softmax
 * by rows, ctx = S V. s is (len, len) scratch. */
static void attend_head_gemm(float *ctx, const float *qkv, float *s, int len, int H, int HS, int h,
                             const float *bh) {
    const int ld = 3 * H;
    const float *Q = qkv + (size_t)h * HS, *K = Q + H, *V = Q + 2 * (size_t)H;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, len, len, HS, 1.0f / sqrtf((float)HS), Q,
                ld, K, ld, 0.0f, s, len);
    if (bh) add_bias_rows(s, len, len, (size_t)len, bh, 0);
    softmax_rows(s, len, len, len, 1.0f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, HS, len, 1.0f, s, len, V, ld, 0.0f,
                ctx + (size_t)h * HS, H);
}

#if EMBD_HAVE_PACKED
/* Each of the R rows of s (len columns, rows ld apart) = e^(scale (s - max
 * of the row)), and sums[r] = 1 / the row's sum. The columns from len to
 * len rounded up to 8 are computed too (so the loop has no scalar tail) and
 * left unnormalised; the callers ignore them, and what is there must be
 * finite. The rows themselves are not divided by their sums: the callers
 * scale the (much shorter) products instead. */
BODY softmax_unnorm_body(float *s, int R, int len, size_t ld, float scale, float *sums) {
    const int c8 = (len + 7) & ~7;
    for (int r = 0; r < R; r++)
        sums[r] = 1.0f / exp_row(s + (size_t)r * ld, len, c8, scale);
}

DEFINE_DISPATCHED(softmax_unnorm, (float *s, int R, int len, size_t ld, float scale, float *sums),
                  (s, R, len, ld, scale, sums))

/* As attend_head, through the tile, for a head size that is a multiple of
 * 16. In scratch (see cpu_reserve): the head's K^T (HS, len16), columns past
 * len zero, and V (len, HS), both copied so that the tile reads them from
 * L1 (in qkv their rows are 3H floats apart, a stride that maps them onto a
 * few cache sets) and 64-byte aligned; then per block of 6 queries, read in
 * place: scores (6, len16) = Q K^T, their softmax, ctx = scores V, scaled by
 * the rows' sums. */
static void attend_head_pk(enum embd_cpu_isa isa, float *ctx, const float *qkv, float *scratch,
                           int len, int H, int HS, int h, const float *bh) {
    const size_t ld = 3 * (size_t)H, l16 = round16((size_t)len);
    const float *Q = qkv + (size_t)h * HS, *K = Q + H, *V = Q + 2 * (size_t)H;
    float *kt = scratch, *v = kt + round16((size_t)HS * l16);
    float *s = v + round16((size_t)len * HS), *sums = s + round16(PK_MR512 * l16);
    int j = 0;
    for (; j + 8 <= len; j += 8)
        for (int d = 0; d < HS; d += 8)
            transpose8(kt + (size_t)d * l16 + j, l16, K + (size_t)j * ld + d, ld);
    for (int d = 0; d < HS; d++) {
        float *row = kt + (size_t)d * l16;
        for (int jj = j; jj < len; jj++)
            row[jj] = K[(size_t)jj * ld + d];
        for (size_t jj = (size_t)len; jj < l16; jj++)
            row[jj] = 0.0f;
    }
    for (int t = 0; t < len; t++)
        memcpy(v + (size_t)t * HS, V + (size_t)t * ld, (size_t)HS * sizeof(float));
    const float scale = 1.0f / sqrtf((float)HS);
    const int mrt = pk_rows_per_tile(isa);
    for (int i = 0; i < len; i += mrt) {
        const int mr = len - i < mrt ? len - i : mrt;
        pk_rows_panels(isa, Q + (size_t)i * ld, ld, kt, PK_NR, l16, HS, s, l16, mr,
                       (int)(l16 / PK_NR));
        if (bh) {
            /* the bias is added to the scaled scores: scale first */
            for (int r = 0; r < mr; r++) {
                float *row = s + (size_t)r * l16;
#pragma omp simd
                for (int c = 0; c < len; c++)
                    row[c] *= scale;
            }
            add_bias_rows(s, mr, len, l16, bh, i);
        }
        softmax_unnorm(s, mr, len, l16, bh ? 1.0f : scale, sums);
        float *o = ctx + (size_t)i * H + (size_t)h * HS;
        pk_rows_panels(isa, s, l16, v, PK_NR, (size_t)HS, len, o, (size_t)H, mr, HS / PK_NR);
        for (int r = 0; r < mr; r++) {
            float *orow = o + (size_t)r * H;
            const float f = sums[r];
#pragma omp simd
            for (int d = 0; d < HS; d++)
                orow[d] *= f;
        }
    }
}
#endif

/* A batch's (sequence, head) tasks, handed out one at a time. */
struct seq_job {
    embd_backend *be;
    const embd_batch *batch;
    bool first_only; /* attention: each sequence's first query only, into row s of ctx */
    atomic_int next;
};

/* The attention of the (sequence, head) tasks this thread takes: into
 * be->ctx (T, H), or with first_only (CLS pooling's last layer) each
 * sequence's first query into row s of be->ctx (n, H). */
static void attention_part(void *a, int tid, int nth) {
    (void)nth;
    struct seq_job *j = a;
    embd_backend *be = j->be;
    const embd_batch *batch = j->batch;
    const embd_hparams *hp = &be->model->hp;
    const int H = hp->H, NH = hp->NH, HS = H / NH;
    const int tasks = batch->n_seq * NH;
    const size_t kt_len = round16((size_t)HS * round16((size_t)be->cap_len));
    /* the packed attention needs no packed weights, only the tiles */
    const int pk = be->isa >= EMBD_CPU_ISA_AVX2 && HS % PK_NR == 0;
    for (int task; (task = embd_pool_next(&j->next, 1)) < tasks;) {
        const int s = task / NH, h = task % NH;
        const int t0 = batch->seq_start[s], len = batch->seq_start[s + 1] - t0;
        float *scratch = be->att + (size_t)tid * be->att_stride;
        const float *bh = head_bias(hp, be->model->w.att_bias, h);
        if (j->first_only) {
            attend_head(be->ctx + (size_t)s * H, be->big + (size_t)t0 * 3 * H, scratch,
                        scratch + kt_len, len, 1, H, HS, h, bh);
            continue;
        }
#if EMBD_HAVE_PACKED
        if (pk) {
            attend_head_pk(be->isa, be->ctx + (size_t)t0 * H, be->big + (size_t)t0 * 3 * H, scratch,
                           len, H, HS, h, bh);
            continue;
        }
#else
        (void)pk;
#endif
        if (len >= ATT_GEMM_MIN)
            attend_head_gemm(be->ctx + (size_t)t0 * H, be->big + (size_t)t0 * 3 * H,
                             scratch + kt_len, len, H, HS, h, bh);
        else
            attend_head(be->ctx + (size_t)t0 * H, be->big + (size_t)t0 * 3 * H, scratch,
                        scratch + kt_len, len, len, H, HS, h, bh);
    }
}

/* The attention of every (sequence, head) pair of the batch into be->ctx. */
static void attention(embd_backend *be, const embd_batch *batch) {
    struct seq_job j = {.be = be, .batch = batch};
    atomic_init(&j.next, 0);
    embd_pool_run(be->pool, attention_part, &j);
}

/* x = LayerNorm(word[id] + pos[position] + type[type id]) for this
 * thread's share of the tokens. */
static void embed_part(void *a, int tid, int nth) {
    struct seq_job *j = a;
    embd_backend *be = j->be;
    const embd_batch *batch = j->batch;
    const struct embd_model *m = be->model;
    const int H = m->hp.H;
    int t0, t1;
    embd_pool_share(batch->n_tok, tid, nth, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        const float *we = m->w.word_emb + (size_t)batch->ids[t] * H;
        const float *pe = m->w.pos_emb + (ptrdiff_t)be->pos[t] * H; /* -1: the padding row */
        const float *te = m->w.type_emb + (batch->type_ids ? (size_t)batch->type_ids[t] * H : 0);
        float *xr = be->x + (size_t)t * H;
#pragma omp simd
        for (int c = 0; c < H; c++)
            xr[c] = we[c] + pe[c] + te[c];
        layernorm_row(xr, xr, m->w.emb_ln_g, m->w.emb_ln_b, H, m->hp.ln_eps);
    }
}

/* x (T, H) = LayerNorm(word[id] + pos[position] + type[type id]) for every token. */
static void embed_tokens(embd_backend *be, const embd_batch *batch) {
    const struct embd_model *m = be->model;
    for (int s = 0; s < batch->n_seq; s++)
        embd_positions(&m->hp, batch->ids + batch->seq_start[s],
                       batch->seq_start[s + 1] - batch->seq_start[s],
                       be->pos + batch->seq_start[s]);
    struct seq_job j = {.be = be, .batch = batch};
    embd_pool_run(be->pool, embed_part, &j);
}

struct pool_job {
    embd_backend *be;
    float *out;
    const embd_batch *batch;
    bool normalize;
};

/* Pooling (and normalising) this thread's share of the sequences. */
static void pool_part(void *a, int tid, int nth) {
    const struct pool_job *j = a;
    const embd_backend *be = j->be;
    const embd_batch *batch = j->batch;
    float *out = j->out;
    const bool normalize = j->normalize;
    const embd_hparams *hp = &be->model->hp;
    const int H = hp->H;
    int s0, s1;
    embd_pool_share(batch->n_seq, tid, nth, &s0, &s1);
    for (int s = s0; s < s1; s++) {
        const int t0 = batch->seq_start[s], len = batch->seq_start[s + 1] - t0;
        float *o = out + (size_t)s * H;
        memcpy(o, be->x + (size_t)t0 * H, (size_t)H * sizeof(float));
        if (hp->pooling == EMBD_POOL_MEAN) {
            for (int t = 1; t < len; t++) {
                const float *xr = be->x + (size_t)(t0 + t) * H;
#pragma omp simd
                for (int c = 0; c < H; c++)
                    o[c] += xr[c];
            }
            const float inv = 1.0f / (float)len;
#pragma omp simd
            for (int c = 0; c < H; c++)
                o[c] *= inv;
        }
        if (normalize) {
            float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
            for (int c = 0; c < H; c++)
                ss += o[c] * o[c];
            const float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
#pragma omp simd
            for (int c = 0; c < H; c++)
                o[c] *= inv;
        }
    }
}

/* out (n, H) = pooled (CLS or mean) hidden states, L2-normalised if asked. */
static void pool(embd_backend *be, float *out, const embd_batch *batch, bool normalize) {
    struct pool_job j = {.be = be, .out = out, .batch = batch, .normalize = normalize};
    embd_pool_run(be->pool, pool_part, &j);
}

/* dst (3H, H) = the layer's Q, K and V weights stacked. */
static void stack_qkv(float *dst, const embd_layer_weights *lw, size_t H) {
    memcpy(dst, lw->q_w, H * H * sizeof(float));
    memcpy(dst + H * H, lw->k_w, H * H * sizeof(float));
    memcpy(dst + 2 * H * H, lw->v_w, H * H * sizeof(float));
}

/* Drops the pages of the layer's six fp32 weight matrices (once they are
 * packed in another form, the backend no longer reads them). */
static void drop_layer_pages(const struct embd_model *model, const embd_layer_weights *lw, size_t H,
                             size_t I) {
    const float *src[6] = {lw->q_w, lw->k_w, lw->v_w, lw->o_w, lw->i_w, lw->f_w};
    const size_t len[6] = {H * H, H * H, H * H, H * H, I * H, H * I};
    for (int i = 0; i < 6; i++)
        embd_model_drop_weight_pages(model, src[i], len[i]);
}

/* A model's weights in the form the kernels read, one of three: packed in
 * panels (the packed GEMM's fp32), packed in bf16 or int8 (lowp.h), or Q, K
 * and V stacked for BLAS; and every layer's Q, K and V biases stacked. Made
 * once per model and form, and shared by the contexts that run that form
 * (embd_model_share: the server's express lane, replicas, a process's
 * several contexts), so the weights are not resident once per context. */
struct cpu_weights {
    int L;
    float *bqkv;     /* (L, 3H) */
    float *wqkv;     /* (L, 3H, H), the BLAS form; else NULL */
    float *packed;   /* the panels (L * pk_layer floats, 64-byte aligned at pk); else NULL */
    float *pk;       /* packed, aligned */
    size_t pk_layer; /* floats per layer: (3H, H) + (H, H) + (I, H) + (H, I) */
    embd_lowp_weight **lowp; /* (L * 4) bf16 / int8 weights; else NULL */
    size_t lowp_scratch;     /* the most scratch bytes one of them needs */
};

/* What cw_make makes: the form. */
struct cw_form {
    enum embd_dtype dtype; /* fp32: packed or BLAS (stacked); bf16, int8: lowp */
    bool packed;
    int lowp_kernels; /* enum embd_lowp_kernels */
};

static void cw_free(void *p) {
    struct cpu_weights *cw = p;
    if (!cw) return;
    embd_free(cw->bqkv);
    embd_free(cw->wqkv);
    embd_free(cw->packed);
    if (cw->lowp) {
        for (size_t i = 0; i < 4 * (size_t)cw->L; i++)
            embd_lowp_free(cw->lowp[i]);
        embd_free(cw->lowp);
    }
    embd_free(cw);
}

/* Packs every layer's Q|K|V (stacked), O, FFN in and FFN out in bf16 or int8
 * (lowp.h). */
static enum embd_status cw_pack_lowp(struct cpu_weights *cw, const struct embd_model *model,
                                     const struct cw_form *f) {
    const embd_hparams *hp = &model->hp;
    const size_t H = (size_t)hp->H, L = (size_t)hp->L, I = (size_t)hp->I;
    const enum embd_lowp_kind kind = f->dtype == EMBD_DTYPE_BF16 ? EMBD_LOWP_BF16 : EMBD_LOWP_INT8;
    cw->lowp = embd_calloc(4 * L + 1, sizeof(*cw->lowp));
    float *qkv = embd_malloc2(3 * H * H, sizeof(float));
    if (!cw->lowp || !qkv) {
        embd_free(qkv);
        return embd_error(EMBD_ERR_NOMEM, "cpu backend: out of memory packing the weights");
    }
    for (size_t l = 0; l < L; l++) {
        const embd_layer_weights *lw = &model->w.layers[l];
        stack_qkv(qkv, lw, H);
        embd_lowp_weight **w = cw->lowp + 4 * l;
        w[0] =
            embd_lowp_pack(kind, qkv, 3 * (int)H, (int)H, (enum embd_lowp_kernels)f->lowp_kernels);
        w[1] =
            embd_lowp_pack(kind, lw->o_w, (int)H, (int)H, (enum embd_lowp_kernels)f->lowp_kernels);
        w[2] =
            embd_lowp_pack(kind, lw->i_w, (int)I, (int)H, (enum embd_lowp_kernels)f->lowp_kernels);
        w[3] =
            embd_lowp_pack(kind, lw->f_w, (int)H, (int)I, (enum embd_lowp_kernels)f->lowp_kernels);
        for (int i = 0; i < 4; i++) {
            if (!w[i]) {
                embd_free(qkv);
                return embd_error(EMBD_ERR_NOMEM,
                                  "cpu backend: out of memory packing the weights in %s",
                                  embd_dtype_str(f->dtype));
            }
            const size_t b = embd_lowp_scratch_bytes(w[i]);
            cw->lowp_scratch = b > cw->lowp_scratch ? b : cw->lowp_scratch;
        }
        drop_layer_pages(model, lw, H, I);
    }
    embd_free(qkv);
    return EMBD_OK;
}

/* embd_share_make for struct cpu_weights: the weights of `model` in the form
 * *arg (struct cw_form); the fp32 pages they came from are dropped when they
 * are packed. */
static void *cw_make(const struct embd_model *model, void *arg, enum embd_status *st) {
    const struct cw_form *f = arg;
    const embd_hparams *hp = &model->hp;
    const size_t H = (size_t)hp->H, L = (size_t)hp->L, I = (size_t)hp->I;
    const bool lowp = f->dtype != EMBD_DTYPE_FP32;
    struct cpu_weights *cw = embd_calloc(1, sizeof *cw);
    if (!cw) {
        *st = embd_error(EMBD_ERR_NOMEM, "cpu backend: out of memory packing the weights");
        return NULL;
    }
    cw->L = hp->L;
    cw->bqkv = embd_malloc2(L * 3 * H + 1, sizeof(float));
    if (lowp) {
        if (!cw->bqkv) goto nomem;
        if ((*st = cw_pack_lowp(cw, model, f)) != EMBD_OK) {
            cw_free(cw);
            return NULL;
        }
    } else if (f->packed) {
        cw->pk_layer = 4 * H * H + 2 * I * H;
        cw->packed = embd_malloc2(L * cw->pk_layer + 16, sizeof(float));
        if (!cw->bqkv || !cw->packed) goto nomem;
        cw->pk = (float *)(((uintptr_t)cw->packed + 63) & ~(uintptr_t)63);
    } else {
        cw->wqkv = embd_malloc2(L * 3 * H * H + 1, sizeof(float));
        if (!cw->bqkv || !cw->wqkv) goto nomem;
    }
    for (size_t l = 0; l < L; l++) {
        const embd_layer_weights *lw = &model->w.layers[l];
        float *b = cw->bqkv + l * 3 * H;
        memcpy(b, lw->q_b, H * sizeof(float));
        memcpy(b + H, lw->k_b, H * sizeof(float));
        memcpy(b + 2 * H, lw->v_b, H * sizeof(float));
        if (f->packed) {
            float *qkv_p = cw->pk + l * cw->pk_layer, *o_p = qkv_p + 3 * H * H, *i_p = o_p + H * H,
                  *f_p = i_p + I * H;
            const float *qkv[3] = {lw->q_w, lw->k_w, lw->v_w};
            pack_panels(qkv_p, qkv, (int)H, 3 * (int)H, (int)H);
            pack_panels(o_p, &lw->o_w, (int)H, (int)H, (int)H);
            pack_panels(i_p, &lw->i_w, (int)I, (int)I, (int)H);
            pack_panels(f_p, &lw->f_w, (int)H, (int)H, (int)I);
            drop_layer_pages(model, lw, H, I);
        } else if (!lowp) {
            stack_qkv(cw->wqkv + l * 3 * H * H, lw, H);
        }
    }
    *st = EMBD_OK;
    return cw;
nomem:
    cw_free(cw);
    *st = embd_error(EMBD_ERR_NOMEM, "cpu backend: out of memory packing the weights");
    return NULL;
}

/* Frees the backend: its scratch and its hold on the packed weights. NULL is
 * a no-op. */
static void cpu_free(embd_backend *be) {
    if (!be) return;
    embd_pool_free(be->own_pool);
    cpu_release_scratch(be);
    embd_model_unshare(be->model, be->cw, cw_free);
    embd_free(be->abuf);
    embd_free(be->lowp_mem);
    embd_free(be);
}

/* Takes the model's weights in this backend's form (made and shared by the
 * first context that runs it, see struct cpu_weights) and allocates scratch
 * for params->max_batch_tokens tokens (at least 1). */
static enum embd_status cpu_init(embd_backend **out, const struct embd_model *model,
                                 const embd_backend_params *params) {
    enum embd_status st;
    if (!out) return embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: NULL out");
    *out = NULL;
    if (!model || !params) return embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: NULL argument");
    const embd_hparams *hp = &model->hp;
    if (hp->H < 1 || hp->NH < 1 || hp->H % hp->NH || hp->I < 1 || hp->L < 0 || hp->P < 1 ||
        hp->V < 1 || hp->TV < 1)
        return embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: bad model dimensions");
    enum embd_dtype dtype = params->dtype == EMBD_DTYPE_AUTO ? EMBD_DTYPE_FP32 : params->dtype;
    if (dtype != EMBD_DTYPE_FP32 && dtype != EMBD_DTYPE_BF16 && dtype != EMBD_DTYPE_INT8)
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "cpu backend: dtype %s is not supported on the CPU (fp32, bf16 or int8)",
                          embd_dtype_str(dtype));
    char why[160];
    if (dtype != EMBD_DTYPE_FP32) {
        if (hp->H % 16 || hp->I % 16)
            return embd_error(EMBD_ERR_UNSUPPORTED,
                              "cpu backend: dtype %s needs the hidden and intermediate sizes to "
                              "be multiples of 16 (this model: %d and %d); use fp32",
                              embd_dtype_str(dtype), hp->H, hp->I);
    }
    embd_backend *be = embd_calloc(1, sizeof(*be));
    if (!be) return embd_error(EMBD_ERR_NOMEM, "cpu backend: out of memory");
    be->model = model;
    be->dtype = dtype;
    if (!cpu_choose_isa(&be->isa, why, sizeof why)) {
        embd_free(be);
        return embd_error(EMBD_ERR_UNSUPPORTED, "cpu backend: %s", why);
    }
    /* bf16: the avx512 set; int8: avx512 + AVX512_VNNI or avx2/avx512 + AVX-VNNI (isa.h) */
    if (dtype != EMBD_DTYPE_FP32 &&
        (!EMBD_HAVE_DISPATCH || !embd_cpu_lowp_kernels(dtype == EMBD_DTYPE_INT8, be->isa,
                                                       &be->lowp_kernels, why, sizeof why))) {
        if (!EMBD_HAVE_DISPATCH) snprintf(why, sizeof why, "this build has no CPU dispatch");
        const bool forced = getenv("EMBD_CPU_ISA") && *getenv("EMBD_CPU_ISA");
        embd_free(be);
        return embd_error(
            EMBD_ERR_UNSUPPORTED, "cpu backend: dtype %s: %s%s", embd_dtype_str(dtype), why,
            forced ? " (EMBD_CPU_ISA); use fp32 or unset EMBD_CPU_ISA" : "; use fp32");
    }
#if EMBD_HAVE_PACKED
    cpu_isa = EMBD_HAVE_DISPATCH ? be->isa : EMBD_CPU_ISA_BASELINE;
#else
    be->isa = EMBD_CPU_ISA_BASELINE;
#endif
    be->nt = params->n_threads >= 1 ? params->n_threads : 1;
    be->pool = params->pool;
    if (!be->pool && be->nt > 1) {
        be->pool = be->own_pool = embd_pool_new(be->nt, -1);
        if (!be->pool) {
            st = embd_error_prefix(EMBD_ERR_NOMEM, "cpu backend: ");
            goto fail;
        }
    }
    if (embd_pool_threads(be->pool) > be->nt) {
        st = embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: a pool of %d threads for %d",
                        embd_pool_threads(be->pool), be->nt);
        goto fail;
    }
    /* every GEMM is split across the pool's threads here; BLAS itself stays serial */
    openblas_set_num_threads(1);

    const size_t H = (size_t)hp->H, I = (size_t)hp->I;
    const bool lowp = dtype != EMBD_DTYPE_FP32;
    /* every x86-64 kernel set (the baseline's tile too); elsewhere OpenBLAS */
    const bool packed = !lowp && EMBD_HAVE_PACKED && H % PK_NR == 0 && I % PK_NR == 0;
    struct cw_form form = {
        .dtype = dtype, .packed = packed, .lowp_kernels = lowp ? be->lowp_kernels : 0};
    char key[48];
    snprintf(key, sizeof key, "cpu %s %s", embd_dtype_str(dtype),
             lowp     ? (form.lowp_kernels == EMBD_LOWP_AMX      ? "amx"
                         : form.lowp_kernels == EMBD_LOWP_AVX512 ? "512-bit"
                                                                 : "256-bit")
             : packed ? "panels"
                      : "stacked");
    be->cw = embd_model_share(model, key, cw_make, cw_free, &form, &st);
    if (!be->cw) goto fail;
    be->bqkv = be->cw->bqkv;
    be->wqkv = be->cw->wqkv;
    be->lowp = be->cw->lowp;
    if (lowp) {
        be->lowp_stride = (be->cw->lowp_scratch + 63) & ~(size_t)63;
        be->lowp_mem = embd_malloc2((size_t)be->nt * be->lowp_stride + 64, 1);
        if (!be->lowp_mem) {
            st = embd_error(EMBD_ERR_NOMEM, "cpu backend: out of memory for the %s scratch",
                            embd_dtype_str(dtype));
            goto fail;
        }
        be->lowp_scratch = (void *)(((uintptr_t)be->lowp_mem + 63) & ~(uintptr_t)63);
    } else if (packed) {
        be->pk_layer = be->cw->pk_layer;
        be->pk_maxk = (int)(H > I ? H : I);
        be->pk_qkv = be->cw->pk;
        be->pk_o = be->pk_qkv + 3 * H * H;
        be->pk_i = be->pk_o + H * H;
        be->pk_f = be->pk_i + I * H;
        /* + 16 floats per thread: pack_rows writes 2 past a block */
        /* the baseline kernel set's panels hold each value 4 times */
        be->abuf_stride = (be->isa >= EMBD_CPU_ISA_AVX2 ? 1 : 4) * PK_MC * (size_t)be->pk_maxk + 16;
        be->abuf = embd_malloc2((size_t)be->nt * be->abuf_stride, sizeof(float));
        if (!be->abuf) {
            st = embd_error(EMBD_ERR_NOMEM, "cpu backend: out of memory for the GEMM scratch");
            goto fail;
        }
    }
    int T = params->max_batch_tokens >= 1 ? params->max_batch_tokens : 1;
    st = cpu_reserve(be, T, T < hp->P ? T : hp->P);
    if (st != EMBD_OK) goto fail;
    *out = be;
    return EMBD_OK;
fail:
    cpu_free(be);
    return st;
}

/* The rest of the last layer for CLS pooling, with big (T, 3H) its Q|K|V:
 * attention for each sequence's first query only, then the output
 * projection + LN1 and the FFN + LN2 on those n_seq rows, gathered in
 * be->tmp and written back to their places in x (pool reads only them).
 * Scratch: ctx_c in be->ctx, the dense outputs in be->big (after the
 * attention has read it) and be->ctx. */
static void cls_last_layer(embd_backend *be, const embd_batch *batch, const embd_layer_weights *lw,
                           lin_w wo, lin_w wi, lin_w wf) {
    const embd_hparams *hp = &be->model->hp;
    const int H = hp->H, I = hp->I, n = batch->n_seq;
    float *ctx_c = be->ctx, *x_c = be->tmp;
    struct seq_job j = {.be = be, .batch = batch, .first_only = true};
    atomic_init(&j.next, 0);
    embd_pool_run(be->pool, attention_part, &j);
    for (int s = 0; s < n; s++)
        memcpy(x_c + (size_t)s * H, be->x + (size_t)batch->seq_start[s] * H,
               (size_t)H * sizeof(float));
    /* x_c = LN1(x_c + ctx_c Wo^T + bo) */
    linear(be, be->big, ctx_c, wo, n, H, H, lw->o_b, EPI_BIAS_RESID_LN, x_c, lw->ln1_g, lw->ln1_b);
    /* big (n, I) = gelu(x_c Wi^T + bi) */
    linear(be, be->big, x_c, wi, n, H, I, lw->i_b, EPI_BIAS_GELU, NULL, NULL, NULL);
    /* x_c = LN2(x_c + big Wf^T + bf) */
    linear(be, be->ctx, be->big, wf, n, I, H, lw->f_b, EPI_BIAS_RESID_LN, x_c, lw->ln2_g,
           lw->ln2_b);
    for (int s = 0; s < n; s++)
        memcpy(be->x + (size_t)batch->seq_start[s] * H, x_c + (size_t)s * H,
               (size_t)H * sizeof(float));
}

/* Runs the encoder and pooling over the batch; grows the scratch first if the
 * batch is bigger than any before (EMBD_ERR_NOMEM if that fails, leaving the
 * backend usable). */
static enum embd_status cpu_embed(embd_backend *be, float *out, const embd_batch *batch,
                                  bool normalize) {
    if (!be || !out) return embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: NULL argument");
    const struct embd_model *m = be->model;
    enum embd_status st = embd_batch_check(batch, m);
    if (st != EMBD_OK) return st;
    const embd_hparams *hp = &m->hp;
    const int T = batch->n_tok, H = hp->H, I = hp->I;
    int max_len = 0;
    for (int s = 0; s < batch->n_seq; s++) {
        int len = batch->seq_start[s + 1] - batch->seq_start[s];
        max_len = len > max_len ? len : max_len;
    }
    st = cpu_reserve(be, T, max_len);
    if (st != EMBD_OK) return st;
    openblas_set_num_threads(1);

    embed_tokens(be, batch);
    /* CLS pooling reads one row per sequence of the last layer's output, so
     * that layer needs K and V of every token but the rest (attention's
     * query, the output projection, the FFN) only for the first token of
     * each sequence: cls_last_layer. */
    const int cls = hp->pooling == EMBD_POOL_CLS;
    for (int l = 0; l < hp->L; l++) {
        const embd_layer_weights *lw = &m->w.layers[l];
        const float *bqkv = be->bqkv + (size_t)l * 3 * H;
        lin_w wq = {be->wqkv ? be->wqkv + (size_t)l * 3 * H * H : NULL, NULL, NULL};
        lin_w wo = {lw->o_w, NULL, NULL}, wi = {lw->i_w, NULL, NULL}, wf = {lw->f_w, NULL, NULL};
        if (be->pk_qkv) {
            const size_t po = (size_t)l * be->pk_layer;
            wq.wp = be->pk_qkv + po;
            wo.wp = be->pk_o + po;
            wi.wp = be->pk_i + po;
            wf.wp = be->pk_f + po;
        } else if (be->lowp) {
            wq.wl = be->lowp[4 * l];
            wo.wl = be->lowp[4 * l + 1];
            wi.wl = be->lowp[4 * l + 2];
            wf.wl = be->lowp[4 * l + 3];
        }
        /* big (T, 3H) = x Wqkv^T + bqkv */
        linear(be, be->big, be->x, wq, T, H, 3 * H, bqkv, EPI_BIAS, NULL, NULL, NULL);
        if (cls && l == hp->L - 1) {
            cls_last_layer(be, batch, lw, wo, wi, wf);
            break;
        }
        attention(be, batch);
        /* x = LN1(x + ctx Wo^T + bo) */
        linear(be, be->tmp, be->ctx, wo, T, H, H, lw->o_b, EPI_BIAS_RESID_LN, be->x, lw->ln1_g,
               lw->ln1_b);
        /* big (T, I) = gelu(x Wi^T + bi) */
        linear(be, be->big, be->x, wi, T, H, I, lw->i_b, EPI_BIAS_GELU, NULL, NULL, NULL);
        /* x = LN2(x + big Wf^T + bf) */
        linear(be, be->tmp, be->big, wf, T, I, H, lw->f_b, EPI_BIAS_RESID_LN, be->x, lw->ln2_g,
               lw->ln2_b);
    }
    pool(be, out, batch, normalize && hp->normalize);
    return EMBD_OK;
}

/* Releases the scratch; the next embed allocates it again. */
static void cpu_trim(embd_backend *be) {
    if (be) cpu_release_scratch(be);
}

const struct embd_backend_ops embd_backend_cpu_ops = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .embed = cpu_embed,
    .trim = cpu_trim,
    .is_dead = NULL,   /* host code: no sticky device errors */
    .mem_stats = NULL, /* no device memory */
};

/* ------------------------------------------------------------------------ */
/* One matrix product on its own (cpu.h): a backend with no model whose only
 * state is the packed weight and the per-thread activation blocks. */

struct embd_cpu_gemm {
    embd_backend be; /* model NULL: linear() then needs no LayerNorm epsilon */
    float *w;        /* W (N, K) as given */
    float *wp;       /* W packed (see pack_panels), 64-byte aligned, or NULL */
    void *wp_mem;
    int N, K;
};

embd_cpu_gemm *embd_cpu_gemm_new(const float *W, int N, int K, int n_threads) {
    if (!W || N < 1 || K < 1) {
        embd_error(EMBD_ERR_INVALID_ARG, "cpu gemm: bad arguments");
        return NULL;
    }
    embd_cpu_gemm *g = embd_calloc(1, sizeof(*g));
    if (!g) {
        embd_error(EMBD_ERR_NOMEM, "cpu gemm: out of memory");
        return NULL;
    }
    char why[160];
    if (!cpu_choose_isa(&g->be.isa, why, sizeof why)) {
        embd_free(g);
        embd_error(EMBD_ERR_UNSUPPORTED, "cpu gemm: %s", why);
        return NULL;
    }
#if EMBD_HAVE_PACKED
    cpu_isa = EMBD_HAVE_DISPATCH ? g->be.isa : EMBD_CPU_ISA_BASELINE;
#else
    g->be.isa = EMBD_CPU_ISA_BASELINE;
#endif
    g->be.nt = n_threads >= 1 ? n_threads : embd_pool_cpus();
    if (g->be.nt > 1 && !(g->be.pool = g->be.own_pool = embd_pool_new(g->be.nt, -1))) {
        embd_free(g);
        return NULL;
    }
    g->N = N;
    g->K = K;
    g->w = embd_malloc2((size_t)N * K, sizeof(float));
    if (!g->w) goto nomem;
    memcpy(g->w, W, (size_t)N * K * sizeof(float));
    if (EMBD_HAVE_PACKED && g->be.isa >= EMBD_CPU_ISA_AVX2 && N % PK_NR == 0 && K % PK_NR == 0) {
        g->wp_mem = embd_malloc2((size_t)N * K + 16, sizeof(float));
        g->be.pk_maxk = K;
        g->be.abuf_stride = PK_MC * (size_t)K + 16; /* AVX2 and up only here */
        g->be.abuf = embd_malloc2((size_t)g->be.nt * g->be.abuf_stride, sizeof(float));
        if (!g->wp_mem || !g->be.abuf) goto nomem;
        g->wp = (float *)(((uintptr_t)g->wp_mem + 63) & ~(uintptr_t)63);
        const float *src[1] = {W};
        pack_panels(g->wp, src, N, N, K);
    } else {
        g->be.isa = EMBD_CPU_ISA_BASELINE;
    }
    openblas_set_num_threads(1);
    return g;
nomem:
    embd_cpu_gemm_free(g);
    embd_error(EMBD_ERR_NOMEM, "cpu gemm: out of memory for a (%d, %d) weight", N, K);
    return NULL;
}

void embd_cpu_gemm_run(embd_cpu_gemm *g, float *out, const float *in, int T, const float *bias) {
    if (!g || !out || !in || T < 1) return;
    const lin_w w = {g->w, g->wp, NULL};
    linear(&g->be, out, in, w, T, g->K, g->N, bias, bias ? EPI_BIAS : EPI_NONE, NULL, NULL, NULL);
}

const char *embd_cpu_gemm_isa(const embd_cpu_gemm *g) {
    return g ? embd_cpu_isa_name(g->be.isa) : "?";
}

void embd_cpu_gemm_free(embd_cpu_gemm *g) {
    if (!g) return;
    embd_free(g->w);
    embd_free(g->wp_mem);
    embd_free(g->be.abuf);
    embd_pool_free(g->be.own_pool);
    embd_free(g);
}
