/* lowp.c — the reduced-precision GEMMs of lowp.h: bf16 (AVX512_BF16) and
 * int8 (AVX512_VNNI), out = in W^T + bias (then GELU), for x86-64 CPUs with
 * AVX-512; int8 on AVX2 CPUs with AVX-VNNI (256-bit, the same bits; see
 * vnni_gemm); and both on AMX tiles (see amx_gemm). The library is built for baseline x86-64, so
 * every kernel here carries its own target attribute; callers check embd_cpu_can_bf16 /
 * embd_cpu_can_int8 (isa.h) before they call. Elsewhere embd_lowp_pack
 * returns NULL.
 *
 * The design is that of cpu.c's packed fp32 GEMM (pk_gemm), with groups of k
 * in place of single k:
 *
 *   W is packed once into panels of 16 columns. One 32-bit cell holds one
 *   column's group of g consecutive k (g = 2 bf16, or 4 int8), and one zmm
 *   holds the 16 columns' cells of one group:
 *     bf16: (N/16, K/2, 16) cells of 2 bf16   [p][kg][j] = W[16p + j][2kg .. 2kg+1]
 *     int8: (N/16, K/4, 16) cells of 4 int8   [p][kg][j] = q(W[16p + j][4kg .. 4kg+3])
 *   int8 also keeps per column its scale (max |w| / 127) and the sum of its
 *   int8 weights times that scale (for the activations' zero point).
 *
 *   The activations are converted per block of EMBD_LOWP_MC rows into the
 *   caller's scratch: bf16 pairs, or per row asymmetric u8 (the row's min to
 *   its max in 255 steps: a row's values are rarely symmetric about zero,
 *   GELU's outputs least of all, and on the real model this halves the
 *   error of symmetric int8) with the row's scale and min; laid out as micro-panels of LOWP_MR
 * rows, (K/g, LOWP_MR) cells each, so that the tile reads one cell per row per group and broadcasts
 * it.
 *
 *   A register tile of up to 12 rows x 32 columns (two panels; 24
 *   accumulators of the 32 zmm) runs the whole of K: per group, two panel
 *   loads and per row one broadcast and two VDPBF16PS or VPDPBUSD. The
 *   panels (K = 384: 24 KiB bf16, 12 KiB int8) stay in L1 across the
 *   block's micro-panels, the block in L2. An odd panel at the column edge
 *   gets a 16-column tile, a block's last rows a tile of fewer rows (one
 *   specialisation per row count, so a single query computes one row).
 *
 *   The accumulators go through a small staging buffer to one epilogue
 *   shared by every tile shape: bias (int8: the scales and the zero point's
 *   term first), GELU, store. Each output is one chain over k in order and one
 *   epilogue, so a row's results do not depend on which tile, block or
 *   thread computed it (lowp.h's determinism).
 *
 * Shapes: T rows of activations, K inputs, N outputs (columns); g as above. */
#include "backend/cpu/lowp.h"
#include "backend/cpu/isa.h"
#include "backend/cpu/cpu_math.h"
#include "util/util.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LOWP_X86 1
#else
#define LOWP_X86 0
#endif

#define LOWP_NR 16 /* columns per panel (one zmm of fp32 or int32) */
#define LOWP_MR 12 /* rows per tile (and per micro-panel) */

/* A block is a whole number of micro-panels. */
_Static_assert(EMBD_LOWP_MC % LOWP_MR == 0, "EMBD_LOWP_MC must be a multiple of LOWP_MR");

struct embd_lowp_weight {
    enum embd_lowp_kind kind;
    enum embd_lowp_kernels kernels; /* the family that runs it (AMX only where K fits) */
    int N, K;
    int kg;          /* groups of k: K / 2 (bf16) or K / 4 (int8) */
    size_t bytes;    /* of mem */
    void *mem;       /* the one allocation; the fields below point into it */
    uint32_t *cells; /* (N/16, kg, 16) panels, 64-byte aligned (see the top) */
    float *scale;    /* int8: (N) per column, max |w| / 127; NULL for bf16 */
    float *wsum;     /* int8: (N) the sum of the column's int8 weights x its scale */
};

/* Round-to-nearest-even fp32 -> bf16, as VCVTNE2PS2BF16 rounds (which also
 * flushes denormals to zero; here they are kept: weights are packed once,
 * and no model has denormal weights that matter). NaN stays a quiet NaN. */
static uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* Packs W (N, K) as bf16 cells: panel p, group kg, column j holds W[16p + j]
 * at k = 2kg (low half) and 2kg + 1 (high half). */
static void pack_bf16(embd_lowp_weight *w, const float *W) {
    const int N = w->N, K = w->K, kg = w->kg;
    for (int n = 0; n < N; n++) {
        const float *row = W + (size_t)n * K;
        uint32_t *d = w->cells + (size_t)(n / LOWP_NR) * kg * LOWP_NR + n % LOWP_NR;
        for (int g = 0; g < kg; g++)
            d[(size_t)g * LOWP_NR] =
                (uint32_t)bf16_round(row[2 * g]) | (uint32_t)bf16_round(row[2 * g + 1]) << 16;
    }
}

/* Packs W (N, K) as int8 cells, per column (row of W) symmetric: scale =
 * max |w| / 127, q = round(w * 127 / max |w|), byte e of a cell is k =
 * 4kg + e. A column of zeros gets scale 0 and q 0; one with a NaN or an
 * infinity scale NaN (its outputs are NaN). */
static void pack_int8(embd_lowp_weight *w, const float *W) {
    const int N = w->N, K = w->K, kg = w->kg;
    for (int n = 0; n < N; n++) {
        const float *row = W + (size_t)n * K;
        float amax = 0.0f;
        int finite = 1;
        for (int k = 0; k < K; k++) {
            const float a = fabsf(row[k]);
            finite &= a <= 3.4028234663852886e38f; /* false for NaN and inf */
            amax = a > amax ? a : amax;
        }
        const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
        w->scale[n] = finite ? amax / 127.0f : NAN;
        uint32_t *d = w->cells + (size_t)(n / LOWP_NR) * kg * LOWP_NR + n % LOWP_NR;
        int32_t sum = 0;
        for (int g = 0; g < kg; g++) {
            uint32_t cell = 0;
            for (int e = 0; e < 4; e++) {
                float q = nearbyintf(row[4 * g + e] * inv);
                q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
                sum += (int32_t)q;
                cell |= (uint32_t)(uint8_t)(int8_t)q << (8 * e);
            }
            d[(size_t)g * LOWP_NR] = cell;
        }
        w->wsum[n] = (float)sum * w->scale[n];
    }
}

/* Whether the AMX kernels of kind may run here (the CPU's AMX-BF16 or
 * AMX-INT8, and the process's grant of the tile state). */
static int amx_can(enum embd_lowp_kind kind) {
    const embd_cpu_features *f = embd_cpu_features_get();
    return (kind == EMBD_LOWP_BF16 ? f->amx_bf16 : f->amx_int8) && embd_cpu_amx_ready(NULL, 0);
}

embd_lowp_weight *embd_lowp_pack(enum embd_lowp_kind kind, const float *W, int N, int K,
                                 enum embd_lowp_kernels kernels) {
    if (!LOWP_X86 || !W || N <= 0 || K <= 0 || N % LOWP_NR || K % 4 ||
        (kind != EMBD_LOWP_BF16 && kind != EMBD_LOWP_INT8) ||
        (kernels != EMBD_LOWP_VNNI256 && kernels != EMBD_LOWP_AVX512 && kernels != EMBD_LOWP_AMX) ||
        (kind == EMBD_LOWP_BF16 && kernels == EMBD_LOWP_VNNI256) ||
        (kernels == EMBD_LOWP_AMX && !amx_can(kind))) /* else a SIGILL */
        return NULL;
    embd_lowp_weight *w = embd_calloc(1, sizeof *w);
    if (!w) return NULL;
    w->kind = kind;
    /* the tiles take K in whole tile rows; the 512-bit kernels any K */
    w->kernels = kernels == EMBD_LOWP_AMX && K % EMBD_LOWP_AMX_K(kind) ? EMBD_LOWP_AVX512 : kernels;
    w->N = N;
    w->K = K;
    w->kg = kind == EMBD_LOWP_BF16 ? K / 2 : K / 4;
    /* cells (N * kg 32-bit words) at a 64-byte boundary, then the int8
     * scales and scaled sums; overflow-free for N, K < 2^31 on 64-bit size_t */
    const size_t cells = (size_t)N * (size_t)w->kg * sizeof(uint32_t);
    const size_t extra = kind == EMBD_LOWP_INT8 ? (size_t)N * 2 * sizeof(float) : 0;
    w->bytes = cells + extra + 63;
    w->mem = embd_malloc(w->bytes);
    if (!w->mem) {
        embd_free(w);
        return NULL;
    }
    w->cells = (uint32_t *)(((uintptr_t)w->mem + 63) & ~(uintptr_t)63);
    if (kind == EMBD_LOWP_INT8) {
        w->scale = (float *)((char *)w->cells + cells);
        w->wsum = w->scale + N;
        pack_int8(w, W);
    } else {
        pack_bf16(w, W);
    }
    return w;
}

void embd_lowp_free(embd_lowp_weight *w) {
    if (!w) return;
    embd_free(w->mem);
    embd_free(w);
}

enum embd_lowp_kernels embd_lowp_kernels_of(const embd_lowp_weight *w) {
    return w->kernels;
}

size_t embd_lowp_bytes(const embd_lowp_weight *w) {
    return w ? sizeof *w + w->bytes : 0;
}

/* The block's micro-panels (EMBD_LOWP_MC / LOWP_MR of (kg, LOWP_MR) cells),
 * then EMBD_LOWP_MC row scales and EMBD_LOWP_MC row minima (int8), rounded up
 * to 64 bytes. */
size_t embd_lowp_scratch_bytes(const embd_lowp_weight *w) {
    const size_t cells = (size_t)EMBD_LOWP_MC * w->kg * sizeof(uint32_t);
    return (cells + 2 * EMBD_LOWP_MC * sizeof(float) + 63) & ~(size_t)63;
}

#if LOWP_X86

/* GCC vectorises the GELU loop 16 wide only when told to prefer 512-bit
 * vectors; Clang has no such target attribute (and uses the intrinsics as
 * written either way). */
#if defined(__clang__)
#define LOWP_TARGET                                                                                \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,avx2,fma")))
#else
#define LOWP_TARGET                                                                                \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,avx2,fma,"     \
                          "prefer-vector-width=512")))
#endif
#define LOWP_INLINE static inline __attribute__((always_inline))

/* The mask of the first n lanes (none for n <= 0, all for n >= 16). */
static inline __mmask16 lanes(int n) {
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* Converts rows [m0, m0 + mc) of in (T, K), rows lda floats apart, to bf16
 * (round to nearest even, denormals to zero: VCVTNE2PS2BF16) in dst's
 * micro-panels: row i, pair g (k = 2g, 2g + 1) at dst[(i / 12) * kg * 12 +
 * g * 12 + i % 12]. Rows past mc in the last micro-panel are not written
 * (the tiles for the last rows do not read them). rowmajor (the AMX
 * tiles): row i at dst[i * kg + g] instead. */
LOWP_TARGET static void act_bf16(uint32_t *dst, const float *in, size_t lda, int m0, int mc, int K,
                                 int rowmajor) {
    const int kg = K / 2;
    for (int i = 0; i < mc; i++) {
        const float *x = in + (size_t)(m0 + i) * lda;
        uint32_t *d = rowmajor ? dst + (size_t)i * kg
                               : dst + (size_t)(i / LOWP_MR) * kg * LOWP_MR + i % LOWP_MR;
        for (int k = 0; k < K; k += 32) {
            /* 32 floats (fewer at the end: K is a multiple of 4) to 16 pairs */
            const int n = K - k < 32 ? K - k : 32;
            const __m512 lo = _mm512_maskz_loadu_ps(lanes(n), x + k);
            const __m512 hi = _mm512_maskz_loadu_ps(lanes(n - 16), x + k + 16);
            const __m512i pairs = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
            if (rowmajor) {
                _mm512_mask_storeu_epi32(d + k / 2, lanes(n / 2), pairs);
                continue;
            }
            uint32_t t[16] __attribute__((aligned(64)));
            _mm512_store_si512(t, pairs);
            for (int j = 0; j < n / 2; j++)
                d[(size_t)(k / 2 + j) * LOWP_MR] = t[j];
        }
    }
}

/* A row's u8 quantisation from its min lo and max hi and whether it held a
 * NaN or an infinity (bad): stores the row's scale and minimum for the
 * epilogue (NaN for a bad row, or one whose range overflows fp32) and returns
 * the factor that takes x - lo to [0, 255] (0 for a constant or bad row).
 * The one rule of act_int8 and act_int8_avx2, so that both give the same u8. */
static inline float row_quant(float hi, float lo, int bad, float *rscale, float *rmin) {
    const float range = hi - lo; /* >= 0; inf when it overflows */
    const int ok = !bad && range <= 3.4028234663852886e38f;
    *rscale = ok ? range / 255.0f : NAN;
    *rmin = ok ? lo : NAN;
    return ok && range > 0.0f ? 255.0f / range : 0.0f;
}

/* Quantises rows [m0, m0 + mc) of in (T, K) per row, asymmetric: with lo
 * and hi the row's min and max, scale = (hi - lo) / 255 and q = round((x -
 * lo) * (255 / (hi - lo))) in [0, 255] (nearest even, the default MXCSR
 * rounding; fp32 arithmetic), so x is about lo + q * scale; stored as u8 in
 * dst's micro-panels like act_bf16 with quads of k (k = 4g .. 4g + 3, byte e
 * is k = 4g + e); the scales to rscale[0, mc), the minima to rmin[0, mc). A
 * row whose values are all equal (zeros included) gets scale 0, q 0 and its
 * value as min (its outputs are exact up to the weights' rounding); one with
 * a NaN or an infinity, or whose range overflows fp32, scale and min NaN.
 * rowmajor: row i's quads at dst[i * kg + g], as act_bf16. */
LOWP_TARGET static void act_int8(uint32_t *dst, float *rscale, float *rmin, const float *in,
                                 size_t lda, int m0, int mc, int K, int rowmajor) {
    const int kg = K / 4;
    const __m512 fmax = _mm512_set1_ps(3.4028234663852886e38f);
    for (int i = 0; i < mc; i++) {
        const float *x = in + (size_t)(m0 + i) * lda;
        uint32_t *d = rowmajor ? dst + (size_t)i * kg
                               : dst + (size_t)(i / LOWP_MR) * kg * LOWP_MR + i % LOWP_MR;
        __m512 vmax = _mm512_set1_ps(-INFINITY), vmin = _mm512_set1_ps(INFINITY);
        __mmask16 bad = 0; /* lanes that saw a NaN or an infinity */
        for (int k = 0; k < K; k += 16) {
            const __mmask16 m = lanes(K - k);
            const __m512 a = _mm512_maskz_loadu_ps(m, x + k);
            const __m512 aa = _mm512_abs_ps(a);
            bad |= _mm512_mask_cmp_ps_mask(m, aa, fmax, _CMP_NLE_UQ);
            vmax = _mm512_mask_max_ps(vmax, m, vmax, a);
            vmin = _mm512_mask_min_ps(vmin, m, vmin, a);
        }
        const float hi = _mm512_reduce_max_ps(vmax), lo = _mm512_reduce_min_ps(vmin);
        const float inv = row_quant(hi, lo, bad != 0, &rscale[i], &rmin[i]);
        const __m512 vinv = _mm512_set1_ps(inv), vlo = _mm512_set1_ps(lo);
        const __m512i zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
        for (int k = 0; k < K; k += 16) {
            const int n = K - k < 16 ? K - k : 16;
            const __m512 a = _mm512_maskz_loadu_ps(lanes(n), x + k);
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(a, vlo), vinv));
            q = _mm512_max_epi32(_mm512_min_epi32(q, top), zero);
            if (rowmajor) {
                _mm_mask_storeu_epi32(d + k / 4, (__mmask8)lanes(n / 4), _mm512_cvtepi32_epi8(q));
                continue;
            }
            uint32_t t[4] __attribute__((aligned(16)));
            _mm_store_si128((__m128i *)t, _mm512_cvtepi32_epi8(q)); /* 16 u8 = 4 quads */
            for (int j = 0; j < n / 4; j++)
                d[(size_t)(k / 4 + j) * LOWP_MR] = t[j];
        }
    }
}

/* acc += a . b per 32-bit lane: bf16 pairs (VDPBF16PS, fp32 sums), or u8
 * quads of a times s8 quads of b (VPDPBUSD, int32 sums, kept in a __m512's
 * bits). */
LOWP_TARGET LOWP_INLINE __m512 lowp_dot(int int8, __m512 acc, __m512i a, __m512i b) {
    if (int8) return _mm512_castsi512_ps(_mm512_dpbusd_epi32(_mm512_castps_si512(acc), a, b));
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

/* t (mr, 16 * np), rows 32 apart = the micro-panel a (kg, 12) times the
 * panels b0 and b1 (kg, 16) (np = 2; np = 1: b0 alone), as fp32 (bf16) or
 * int32 (int8) sums over all of k. mr and np are constants in each copy, so
 * that the accumulators (mr x np zmm) stay in registers. */
LOWP_TARGET LOWP_INLINE void tile_body(int int8, int mr, int np, float *t, const uint32_t *a,
                                       const uint32_t *b0, const uint32_t *b1, int kg) {
    __m512 acc[LOWP_MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int g = 0; g < kg; g++) {
        const __m512i w0 = _mm512_load_si512(b0 + (size_t)g * LOWP_NR);
        const __m512i w1 = np == 2 ? _mm512_load_si512(b1 + (size_t)g * LOWP_NR) : w0;
        const uint32_t *ag = a + (size_t)g * LOWP_MR;
#pragma GCC unroll 12
        for (int r = 0; r < mr; r++) {
            const __m512i x = _mm512_set1_epi32((int)ag[r]);
            acc[r][0] = lowp_dot(int8, acc[r][0], x, w0);
            if (np == 2) acc[r][1] = lowp_dot(int8, acc[r][1], x, w1);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++) {
        _mm512_store_ps(t + r * 2 * LOWP_NR, acc[r][0]);
        if (np == 2) _mm512_store_ps(t + r * 2 * LOWP_NR + LOWP_NR, acc[r][1]);
    }
}

/* One copy of tile_body per row count (1 to 12), for np panels. */
#define LOWP_TILE_CASE(m)                                                                          \
    case m:                                                                                        \
        tile_body(int8, m, np, t, a, b0, b1, kg);                                                  \
        break;
#define LOWP_DEFINE_TILE(name, int8_, np_)                                                         \
    LOWP_TARGET static void name(int mr, float *t, const uint32_t *a, const uint32_t *b0,          \
                                 const uint32_t *b1, int kg) {                                     \
        const int int8 = int8_, np = np_;                                                          \
        switch (mr) {                                                                              \
            LOWP_TILE_CASE(1)                                                                      \
            LOWP_TILE_CASE(2)                                                                      \
            LOWP_TILE_CASE(3)                                                                      \
            LOWP_TILE_CASE(4)                                                                      \
            LOWP_TILE_CASE(5)                                                                      \
            LOWP_TILE_CASE(6)                                                                      \
            LOWP_TILE_CASE(7)                                                                      \
            LOWP_TILE_CASE(8)                                                                      \
            LOWP_TILE_CASE(9)                                                                      \
            LOWP_TILE_CASE(10)                                                                     \
            LOWP_TILE_CASE(11)                                                                     \
            LOWP_TILE_CASE(12)                                                                     \
        }                                                                                          \
    }
LOWP_DEFINE_TILE(tile_bf16_1, 0, 1)
LOWP_DEFINE_TILE(tile_bf16_2, 0, 2)
LOWP_DEFINE_TILE(tile_int8_1, 1, 1)
LOWP_DEFINE_TILE(tile_int8_2, 1, 2)

/* c (mr, 16 * np), rows ldc apart = the tile's sums in t (rows 32 apart)
 * made into outputs, then GELU if asked. bf16: sum + bias. int8: sum as fp32
 * times (column scale x row scale), plus row min x the column's scaled
 * weight sum, plus bias. bias, cscale and wsum point at the tile's first
 * column, rscale and rmin at its first row; bias may be NULL. The one
 * epilogue of every tile shape (see the top). */
LOWP_TARGET static void epilogue(int int8, float *c, size_t ldc, float *t, int mr, int np,
                                 const float *bias, const float *cscale, const float *wsum,
                                 const float *rscale, const float *rmin, int gelu) {
    for (int r = 0; r < mr; r++) {
        for (int h = 0; h < np; h++) {
            float *tv = t + r * 2 * LOWP_NR + h * LOWP_NR;
            __m512 v = _mm512_load_ps(tv);
            if (int8) {
                const __m512 sc =
                    _mm512_mul_ps(_mm512_loadu_ps(cscale + h * LOWP_NR), _mm512_set1_ps(rscale[r]));
                const __m512 zp =
                    _mm512_mul_ps(_mm512_loadu_ps(wsum + h * LOWP_NR), _mm512_set1_ps(rmin[r]));
                v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_castps_si512(v)), sc, zp);
            }
            if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + h * LOWP_NR));
            float *cr = c + (size_t)r * ldc + h * LOWP_NR;
            if (!gelu) {
                _mm512_storeu_ps(cr, v);
                continue;
            }
            _mm512_store_ps(tv, v);
#pragma omp simd
            for (int j = 0; j < LOWP_NR; j++)
                cr[j] = embd_fast_gelu_as(tv[j]);
        }
    }
}

/* ---- int8 on AVX2 CPUs with AVX-VNNI (256-bit VPDPBUSD) ------------------
 * The same packed weights, activations and epilogue arithmetic as above, in
 * ymm registers: a panel's 16 columns are two ymm, and a tile is up to 6
 * rows of one panel (12 accumulators, two weight registers and the
 * broadcast of the 16), so a micro-panel of 12 rows is two tiles. The sums
 * are exact int32 and the epilogue does the same fp32 operations in the same
 * order, so the outputs are the 512-bit kernels' bit for bit. */
#define VNNI_TARGET __attribute__((target("avx2,fma,avxvnni")))
#define VNNI_MR 6

/* act_int8 in AVX2: the same scale, minimum and u8 values (the min and max
 * are exact whatever the order, and the conversion rounds alike). */
VNNI_TARGET static void act_int8_avx2(uint32_t *dst, float *rscale, float *rmin, const float *in,
                                      size_t lda, int m0, int mc, int K) {
    const int kg = K / 4;
    for (int i = 0; i < mc; i++) {
        const float *x = in + (size_t)(m0 + i) * lda;
        uint32_t *d = dst + (size_t)(i / LOWP_MR) * kg * LOWP_MR + i % LOWP_MR;
        float hi = -INFINITY, lo = INFINITY;
        int bad = 0; /* a NaN or an infinity */
        for (int k = 0; k < K; k++) {
            const float a = x[k];
            bad |= !(fabsf(a) <= 3.4028234663852886e38f);
            hi = a > hi ? a : hi;
            lo = a < lo ? a : lo;
        }
        const float inv = row_quant(hi, lo, bad, &rscale[i], &rmin[i]);
        const __m256 vinv = _mm256_set1_ps(inv), vlo = _mm256_set1_ps(lo);
        const __m256i zero = _mm256_setzero_si256(), top = _mm256_set1_epi32(255);
        for (int k = 0; k < K; k += 8) {
            const int n = K - k < 8 ? K - k : 8; /* 8, or 4 at the end */
            const __m256 a =
                n == 8 ? _mm256_loadu_ps(x + k) : _mm256_castps128_ps256(_mm_loadu_ps(x + k));
            __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(a, vlo), vinv));
            q = _mm256_max_epi32(_mm256_min_epi32(q, top), zero);
            const __m128i w16 =
                _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            uint32_t t[4] __attribute__((aligned(16)));
            _mm_store_si128((__m128i *)t, _mm_packus_epi16(w16, w16)); /* 8 u8 = 2 quads */
            for (int j = 0; j < n / 4; j++)
                d[(size_t)(k / 4 + j) * LOWP_MR] = t[j];
        }
    }
}

/* t (mr, 16), rows 16 apart = mr rows of a micro-panel (a points at the
 * first; rows LOWP_MR cells apart per group) times the panel b (kg, 16). */
VNNI_TARGET LOWP_INLINE void vnni_tile_body(int mr, int32_t *t, const uint32_t *a,
                                            const uint32_t *b, int kg) {
    __m256i acc[VNNI_MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (int g = 0; g < kg; g++) {
        const __m256i w0 = _mm256_load_si256((const __m256i *)(b + (size_t)g * LOWP_NR));
        const __m256i w1 = _mm256_load_si256((const __m256i *)(b + (size_t)g * LOWP_NR + 8));
        const uint32_t *ag = a + (size_t)g * LOWP_MR;
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            const __m256i x = _mm256_set1_epi32((int)ag[r]);
            acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], x, w0);
            acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], x, w1);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        _mm256_storeu_si256((__m256i *)(t + r * LOWP_NR), acc[r][0]);
        _mm256_storeu_si256((__m256i *)(t + r * LOWP_NR + 8), acc[r][1]);
    }
}

#define VNNI_TILE_CASE(m)                                                                          \
    case m:                                                                                        \
        vnni_tile_body(m, t, a, b, kg);                                                            \
        break;
VNNI_TARGET static void vnni_tile(int mr, int32_t *t, const uint32_t *a, const uint32_t *b,
                                  int kg) {
    switch (mr) {
        VNNI_TILE_CASE(1)
        VNNI_TILE_CASE(2)
        VNNI_TILE_CASE(3)
        VNNI_TILE_CASE(4)
        VNNI_TILE_CASE(5)
        VNNI_TILE_CASE(6)
    }
}

/* epilogue's int8 arithmetic on one panel of mr rows, in ymm halves. */
VNNI_TARGET static void vnni_epilogue(float *c, size_t ldc, const int32_t *t, int mr,
                                      const float *bias, const float *cscale, const float *wsum,
                                      const float *rscale, const float *rmin, int gelu) {
    float tv[8] __attribute__((aligned(32)));
    for (int r = 0; r < mr; r++) {
        for (int h = 0; h < 2; h++) {
            const __m256 sc =
                _mm256_mul_ps(_mm256_loadu_ps(cscale + 8 * h), _mm256_set1_ps(rscale[r]));
            const __m256 zp = _mm256_mul_ps(_mm256_loadu_ps(wsum + 8 * h), _mm256_set1_ps(rmin[r]));
            const __m256i sum = _mm256_loadu_si256((const __m256i *)(t + r * LOWP_NR + 8 * h));
            __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), sc, zp);
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + 8 * h));
            float *cr = c + (size_t)r * ldc + 8 * h;
            if (!gelu) {
                _mm256_storeu_ps(cr, v);
                continue;
            }
            _mm256_store_ps(tv, v);
#pragma omp simd
            for (int j = 0; j < 8; j++)
                cr[j] = embd_fast_gelu_as(tv[j]);
        }
    }
}

static void vnni_gemm(const embd_lowp_weight *w, float *out, size_t ldc, const float *in,
                      size_t lda, int r0, int r1, int c0, int c1, const float *bias, int gelu,
                      void *scratch) {
    const int kg = w->kg, K = w->K;
    const size_t pstride = (size_t)kg * LOWP_NR, mstride = (size_t)kg * LOWP_MR;
    uint32_t *abuf = scratch;
    float *rscale = (float *)(abuf + (size_t)EMBD_LOWP_MC * kg), *rmin = rscale + EMBD_LOWP_MC;
    int32_t t[VNNI_MR * LOWP_NR] __attribute__((aligned(32)));
    for (int m0 = r0; m0 < r1; m0 += EMBD_LOWP_MC) {
        const int mc = r1 - m0 < EMBD_LOWP_MC ? r1 - m0 : EMBD_LOWP_MC;
        act_int8_avx2(abuf, rscale, rmin, in, lda, m0, mc, K);
        for (int c = c0; c < c1; c += LOWP_NR) {
            const uint32_t *b = w->cells + (size_t)(c / LOWP_NR) * pstride;
            for (int i = 0; i < mc; i += VNNI_MR) {
                const int mr = mc - i < VNNI_MR ? mc - i : VNNI_MR;
                const uint32_t *a = abuf + (size_t)(i / LOWP_MR) * mstride + i % LOWP_MR;
                vnni_tile(mr, t, a, b, kg);
                vnni_epilogue(out + (size_t)(m0 + i) * ldc + c, ldc, t, mr, bias ? bias + c : NULL,
                              w->scale + c, w->wsum + c, rscale + i, rmin + i, gelu);
            }
        }
    }
}

/* ---- AMX: bf16 (TDPBF16PS) and int8 (TDPBUSD) on 16 x 16 tiles ----------
 * A weight panel is already a B tile's layout: 16 rows of k groups (32
 * bf16 or 64 int8 of k), 64 bytes each, one 32-bit cell per column. The
 * activations go row-major into the scratch (a row's cells one after the
 * other: an A tile is 16 rows of 16 cells, rows kg cells apart), the
 * block's rows rounded up to 16 with zero rows. Eight tile registers, all
 * 16 x 64 bytes: C 0-3 for 2 x 2 tiles of 16 rows x 16 columns (32 x 32
 * outputs), A 4-5, B 6-7; at the edges one row tile or one panel. The sums
 * go through the staging buffer to the epilogue of the 512-bit kernels.
 * int8 sums are exact int32, so AMX and VPDPBUSD give the same bits;
 * TDPBF16PS adds its pairs in its own order (deterministic per output). */
#define AMX_TARGET                                                                                 \
    __attribute__((target("amx-tile,amx-bf16,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,"         \
                          "avx512bf16,avx512vnni,avx2,fma")))
#define AMX_ROWS 16 /* rows of a tile (tokens for A and C, k groups for B) */

_Static_assert(EMBD_LOWP_MC % AMX_ROWS == 0, "EMBD_LOWP_MC must be a multiple of 16");

/* The tile configuration (LDTILECFG's 64 bytes, palette 1). */
struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* C tiles (nr row tiles x np panels) over all of k: per step of 16 groups,
 * the A tiles of the row tiles (a0, a1; rows ast bytes apart), the B tiles
 * of the panels (b0, b1), the products. nr and np are constants in each
 * call, so the unused tiles' code folds away. */
AMX_TARGET LOWP_INLINE void amx_tiles(int int8, int nr, int np, const uint32_t *a0,
                                      const uint32_t *a1, size_t ast, const uint32_t *b0,
                                      const uint32_t *b1, int steps) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int s = 0; s < steps; s++) {
        const size_t ao = (size_t)s * AMX_ROWS, bo = (size_t)s * AMX_ROWS * LOWP_NR;
        _tile_loadd(4, a0 + ao, ast);
        if (nr == 2) _tile_loadd(5, a1 + ao, ast);
        _tile_loadd(6, b0 + bo, 64);
        if (np == 2) _tile_loadd(7, b1 + bo, 64);
        if (int8) {
            _tile_dpbusd(0, 4, 6);
            if (np == 2) _tile_dpbusd(1, 4, 7);
            if (nr == 2) _tile_dpbusd(2, 5, 6);
            if (nr == 2 && np == 2) _tile_dpbusd(3, 5, 7);
        } else {
            _tile_dpbf16ps(0, 4, 6);
            if (np == 2) _tile_dpbf16ps(1, 4, 7);
            if (nr == 2) _tile_dpbf16ps(2, 5, 6);
            if (nr == 2 && np == 2) _tile_dpbf16ps(3, 5, 7);
        }
    }
}

/* One copy of amx_tiles per kind, row tiles and panels, indexed
 * [int8][nr - 1][np - 1]. */
#define AMX_TILES_FN(i8, nr, np)                                                                   \
    AMX_TARGET static void amx_tiles_##i8##_##nr##_##np(const uint32_t *a0, const uint32_t *a1,    \
                                                        size_t ast, const uint32_t *b0,            \
                                                        const uint32_t *b1, int steps) {           \
        amx_tiles(i8, nr, np, a0, a1, ast, b0, b1, steps);                                         \
    }
AMX_TILES_FN(0, 1, 1)
AMX_TILES_FN(0, 1, 2)
AMX_TILES_FN(0, 2, 1)
AMX_TILES_FN(0, 2, 2)
AMX_TILES_FN(1, 1, 1)
AMX_TILES_FN(1, 1, 2)
AMX_TILES_FN(1, 2, 1)
AMX_TILES_FN(1, 2, 2)
typedef void (*amx_tiles_fn)(const uint32_t *, const uint32_t *, size_t, const uint32_t *,
                             const uint32_t *, int);
static const amx_tiles_fn amx_fns[2][2][2] = {
    {{amx_tiles_0_1_1, amx_tiles_0_1_2}, {amx_tiles_0_2_1, amx_tiles_0_2_2}},
    {{amx_tiles_1_1_1, amx_tiles_1_1_2}, {amx_tiles_1_2_1, amx_tiles_1_2_2}},
};

AMX_TARGET static void amx_gemm(const embd_lowp_weight *w, float *out, size_t ldc, const float *in,
                                size_t lda, int r0, int r1, int c0, int c1, const float *bias,
                                int gelu, void *scratch) {
    const int int8 = w->kind == EMBD_LOWP_INT8, kg = w->kg, K = w->K;
    const int steps = kg / AMX_ROWS;
    const size_t pstride = (size_t)kg * LOWP_NR;      /* cells per panel */
    const size_t ast = (size_t)kg * sizeof(uint32_t); /* bytes per activation row */
    uint32_t *abuf = scratch;
    float *rscale = (float *)(abuf + (size_t)EMBD_LOWP_MC * kg), *rmin = rscale + EMBD_LOWP_MC;
    struct amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = AMX_ROWS;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
    /* the staging buffer: two C tiles side by side, (16, 32) */
    float t[AMX_ROWS * 2 * LOWP_NR] __attribute__((aligned(64)));
    for (int m0 = r0; m0 < r1; m0 += EMBD_LOWP_MC) {
        const int mc = r1 - m0 < EMBD_LOWP_MC ? r1 - m0 : EMBD_LOWP_MC;
        const int mp = (mc + AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS;
        if (int8)
            act_int8(abuf, rscale, rmin, in, lda, m0, mc, K, 1);
        else
            act_bf16(abuf, in, lda, m0, mc, K, 1);
        memset(abuf + (size_t)mc * kg, 0, (size_t)(mp - mc) * ast);
        for (int c = c0; c < c1; c += 2 * LOWP_NR) {
            const int np = c1 - c >= 2 * LOWP_NR ? 2 : 1;
            const uint32_t *b0 = w->cells + (size_t)(c / LOWP_NR) * pstride;
            const uint32_t *b1 = b0 + pstride;
            for (int i = 0; i < mc; i += 2 * AMX_ROWS) {
                const int nr = mc - i > AMX_ROWS ? 2 : 1;
                const uint32_t *a0 = abuf + (size_t)i * kg, *a1 = a0 + (size_t)AMX_ROWS * kg;
                amx_fns[int8][nr - 1][np - 1](a0, a1, ast, b0, b1, steps);
                for (int h = 0; h < nr; h++) {
                    if (h == 0) {
                        _tile_stored(0, t, 2 * LOWP_NR * sizeof(float));
                        if (np == 2) _tile_stored(1, t + LOWP_NR, 2 * LOWP_NR * sizeof(float));
                    } else {
                        _tile_stored(2, t, 2 * LOWP_NR * sizeof(float));
                        if (np == 2) _tile_stored(3, t + LOWP_NR, 2 * LOWP_NR * sizeof(float));
                    }
                    const int row = i + h * AMX_ROWS;
                    const int mr = mc - row < AMX_ROWS ? mc - row : AMX_ROWS;
                    epilogue(int8, out + (size_t)(m0 + row) * ldc + c, ldc, t, mr, np,
                             bias ? bias + c : NULL, int8 ? w->scale + c : NULL,
                             int8 ? w->wsum + c : NULL, rscale + row, rmin + row, gelu);
                }
            }
        }
    }
    _tile_release();
}

void embd_lowp_gemm(const embd_lowp_weight *w, float *out, size_t ldc, const float *in, size_t lda,
                    int r0, int r1, int c0, int c1, const float *bias, int gelu, void *scratch) {
    EMBD_ASSERT(c0 % LOWP_NR == 0 && c1 % LOWP_NR == 0 && c0 >= 0 && c1 <= w->N && r0 >= 0);
    EMBD_ASSERT(((uintptr_t)scratch & 63) == 0);
    if (r1 <= r0 || c1 <= c0) return;
    if (w->kernels == EMBD_LOWP_VNNI256) {
        vnni_gemm(w, out, ldc, in, lda, r0, r1, c0, c1, bias, gelu, scratch);
        return;
    }
    if (w->kernels == EMBD_LOWP_AMX) {
        amx_gemm(w, out, ldc, in, lda, r0, r1, c0, c1, bias, gelu, scratch);
        return;
    }
    const int int8 = w->kind == EMBD_LOWP_INT8, kg = w->kg, K = w->K;
    const size_t pstride = (size_t)kg * LOWP_NR; /* cells per panel */
    const size_t mstride = (size_t)kg * LOWP_MR; /* cells per micro-panel */
    uint32_t *abuf = scratch;
    float *rscale = (float *)(abuf + (size_t)EMBD_LOWP_MC * kg), *rmin = rscale + EMBD_LOWP_MC;
    /* the staging buffer of a tile's sums, (12, 32) */
    float t[LOWP_MR * 2 * LOWP_NR] __attribute__((aligned(64)));
    for (int m0 = r0; m0 < r1; m0 += EMBD_LOWP_MC) {
        const int mc = r1 - m0 < EMBD_LOWP_MC ? r1 - m0 : EMBD_LOWP_MC;
        if (int8)
            act_int8(abuf, rscale, rmin, in, lda, m0, mc, K, 0);
        else
            act_bf16(abuf, in, lda, m0, mc, K, 0);
        /* pairs of panels, the last one alone when their count is odd; the
         * micro-panels of the block inside, so that the pair stays in L1 */
        for (int c = c0; c < c1; c += 2 * LOWP_NR) {
            const int np = c1 - c >= 2 * LOWP_NR ? 2 : 1;
            const uint32_t *b0 = w->cells + (size_t)(c / LOWP_NR) * pstride;
            const uint32_t *b1 = b0 + pstride;
            for (int i = 0; i < mc; i += LOWP_MR) {
                const int mr = mc - i < LOWP_MR ? mc - i : LOWP_MR;
                const uint32_t *a = abuf + (size_t)(i / LOWP_MR) * mstride;
                if (int8) {
                    if (np == 2)
                        tile_int8_2(mr, t, a, b0, b1, kg);
                    else
                        tile_int8_1(mr, t, a, b0, b1, kg);
                } else {
                    if (np == 2)
                        tile_bf16_2(mr, t, a, b0, b1, kg);
                    else
                        tile_bf16_1(mr, t, a, b0, b1, kg);
                }
                epilogue(int8, out + (size_t)(m0 + i) * ldc + c, ldc, t, mr, np,
                         bias ? bias + c : NULL, int8 ? w->scale + c : NULL,
                         int8 ? w->wsum + c : NULL, rscale + i, rmin + i, gelu);
            }
        }
    }
}

#else /* not x86-64 with GCC or Clang: embd_lowp_pack returns NULL */

void embd_lowp_gemm(const embd_lowp_weight *w, float *out, size_t ldc, const float *in, size_t lda,
                    int r0, int r1, int c0, int c1, const float *bias, int gelu, void *scratch) {
    EMBD_ASSERT(!"embd_lowp_gemm without an x86-64 build");
}

#endif
