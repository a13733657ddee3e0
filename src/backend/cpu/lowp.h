/* lowp.h — reduced-precision matrix products for the CPU backend's opt-in
 * --dtype bf16 and --dtype int8: out = in W^T + bias (then GELU if asked),
 * in and out fp32, W packed once at load.
 *
 *   bf16: W rounded to bf16 (round to nearest even), the activations too,
 *         products summed in fp32 (AVX512_BF16's VDPBF16PS).
 *   int8: W per output channel symmetric int8 (scale = max |w| / 127), the
 *         activations per row (token) asymmetric u8 at run time (the row's
 *         min to max in 255 steps), products summed in int32 (AVX512_VNNI's
 *         VPDPBUSD, or AVX-VNNI's on AVX2 CPUs), then scaled back to fp32
 *         with the zero point's term.
 *
 * Three kernel families run these: 512-bit (AVX512_BF16 / AVX512_VNNI),
 * 256-bit int8 (AVX-VNNI, on AVX2 CPUs) and AMX tiles (AMX-BF16 /
 * AMX-INT8, where the OS lets the process use them). All read the same
 * packed weights. int8 sums are exact int32 in each, so the three give the
 * same bits; AMX's bf16 sums its pairs in another order than VDPBF16PS, so
 * its bf16 outputs differ from the 512-bit kernels' in the last bits (each
 * is deterministic on its own: lowp_gemm's contract below).
 *
 * Callers check embd_cpu_lowp_kernels (isa.h) first; these functions
 * assume the instructions are there. */
#ifndef EMBD_BACKEND_CPU_LOWP_H
#define EMBD_BACKEND_CPU_LOWP_H

#include <stddef.h>

enum embd_lowp_kind {
    EMBD_LOWP_BF16 = 1,
    EMBD_LOWP_INT8 = 2,
};

/* Rows per block the GEMM packs/quantises the activations in (the unit of
 * the per-thread scratch). */
#define EMBD_LOWP_MC 48

/* The kernel family a packed weight runs on (see the top). */
enum embd_lowp_kernels {
    EMBD_LOWP_VNNI256 = 0, /* int8 only: AVX-VNNI's 256-bit VPDPBUSD */
    EMBD_LOWP_AVX512 = 1,  /* VDPBF16PS / 512-bit VPDPBUSD */
    EMBD_LOWP_AMX = 2,     /* TDPBF16PS / TDPBUSD on 16 x 16 tiles */
};

/* The K an AMX weight needs: a whole number of tile rows of k (32 bf16, 64
 * int8); a weight packed for AMX with another K runs the 512-bit kernels. */
#define EMBD_LOWP_AMX_K(kind) ((kind) == EMBD_LOWP_BF16 ? 32 : 64)

typedef struct embd_lowp_weight embd_lowp_weight;

/* Packs W (N, K), row-major fp32, for kind. N a multiple of 16 and K of 4.
 * kernels: the family that runs it (bf16 has no 256-bit kernels: NULL);
 * AMX needs the process's permission (embd_cpu_amx_ready, isa.h: NULL
 * without it). NULL on out of memory or bad sizes, and on a build that is not x86-64
 * with GCC or Clang (no kernels there). The packed layouts are described at
 * the top of lowp.c. */
embd_lowp_weight *embd_lowp_pack(enum embd_lowp_kind kind, const float *W, int N, int K,
                                 enum embd_lowp_kernels kernels);

/* The family that runs w: what it was packed for, or AVX512 where AMX
 * cannot take its K. */
enum embd_lowp_kernels embd_lowp_kernels_of(const embd_lowp_weight *w);

/* Frees a packed weight; NULL is a no-op. */
void embd_lowp_free(embd_lowp_weight *w);

/* The packed weight's size in bytes (for the load's memory report). */
size_t embd_lowp_bytes(const embd_lowp_weight *w);

/* Bytes of per-thread scratch one embd_lowp_gemm call needs (a block of
 * EMBD_LOWP_MC activation rows in the packed format, plus their scales). */
size_t embd_lowp_scratch_bytes(const embd_lowp_weight *w);

/* Rows [r0, r1) and columns [c0, c1) of out = in W^T + bias, then GELU (the
 * erf form, embd_fast_gelu_as of cpu_math.h) if gelu: in (T, K) with rows lda floats apart,
 * out with rows ldc floats apart; c0 and c1 multiples of 16; bias (N) may be
 * NULL; scratch is 64-byte aligned, embd_lowp_scratch_bytes(w) bytes. Each
 * output is written once; nothing outside the rows and columns is touched.
 * Deterministic: a row's result does not depend on r0, r1, c0, c1 or the
 * other rows. A row of zeros gives the bias (int8: scale 0, no NaN); a row
 * with a NaN or an infinity gives NaN or infinities (int8: NaN in all its
 * outputs, as when its range max - min overflows fp32). Threads running at once each pass their own
 * scratch. */
void embd_lowp_gemm(const embd_lowp_weight *w, float *out, size_t ldc, const float *in, size_t lda,
                    int r0, int r1, int c0, int c1, const float *bias, int gelu, void *scratch);

#endif
