/* isa.h — what the CPU (and the OS) can run, and which kernel set the CPU
 * backend picks: cpuid for the instructions, XGETBV for the register state
 * the OS saves (an AVX-512 CPU under an OS or hypervisor that does not save
 * the zmm registers cannot run AVX-512 code), and EMBD_CPU_ISA to force a
 * set for tests and comparisons. */
#ifndef EMBD_BACKEND_CPU_ISA_H
#define EMBD_BACKEND_CPU_ISA_H

#include <stdbool.h>
#include <stddef.h>

/* The CPU backend's kernel sets, in order: each needs what the one before
 * needs. */
enum embd_cpu_isa {
    EMBD_CPU_ISA_BASELINE = 0, /* the x86-64 the library is built for, or not x86 */
    EMBD_CPU_ISA_AVX2,         /* AVX2 + FMA */
    EMBD_CPU_ISA_AVX512,       /* AVX-512 F, BW, VL and DQ, with AVX2 + FMA */
};

typedef struct {
    char model[64]; /* the brand string, or "unknown" */
    int family, model_id, stepping;
    bool avx2, fma, avx512f, avx512bw, avx512vl, avx512dq;
    bool avx512_bf16, avx512_vnni, avx_vnni, amx_bf16, amx_int8;
    bool os_ymm; /* the OS saves the ymm state (XCR0 bits 1-2) */
    bool os_zmm; /* ... and the opmask and zmm state (XCR0 bits 5-7) */
    bool os_amx; /* ... and the AMX tile state (XCR0 bits 17-18) */
} embd_cpu_features;

/* This CPU's features, read once (thread-safe). */
const embd_cpu_features *embd_cpu_features_get(void);

/* The best kernel set this CPU and OS can run. */
enum embd_cpu_isa embd_cpu_isa_best(void);

/* "baseline", "avx2" or "avx512". */
const char *embd_cpu_isa_name(enum embd_cpu_isa isa);

/* The kernel set the CPU backend runs: EMBD_CPU_ISA (avx512, avx2 or
 * baseline) when set, else the best. Writes why (one phrase) to why[n].
 * Returns false, with the reason in why, for an unknown EMBD_CPU_ISA or one
 * this CPU cannot run. */
bool embd_cpu_isa_choose(enum embd_cpu_isa *isa, char *why, size_t n);

/* Whether the process may use the AMX tiles: the CPU has AMX-TILE and the
 * OS saves the tile state (XCR0), and Linux granted the tile data state to
 * the process (arch_prctl ARCH_REQ_XCOMP_PERM, asked once, here; without
 * it the first tile instruction is a SIGILL). False, with the reason in
 * why, otherwise (why may be NULL). Asked only when bf16 or int8 is wanted
 * (or `embd doctor` reports): once granted, the process's signal frames
 * carry the 8 KiB tile state, and Linux refuses a later sigaltstack too
 * small for it (and the grant itself while one exists). */
bool embd_cpu_amx_ready(char *why, size_t n);

/* Whether the AMX kernels of int8 (else bf16) run beside the kernel set
 * isa: the CPU has the kind's tiles, EMBD_CPU_AMX is unset or 1,
 * embd_cpu_amx_ready, and isa is avx512. When not, the reason to why. The
 * one rule for embd_cpu_lowp_kernels, `embd doctor` and the tests. */
bool embd_cpu_amx_runs(bool int8, enum embd_cpu_isa isa, char *why, size_t n);

/* Whether the low-precision kernels run beside the fp32 kernel set isa:
 * bf16 (int8 false) needs the avx512 set and AVX512_BF16; int8 the avx512
 * set and AVX512_VNNI (512-bit kernels), or the avx2 or avx512 set and
 * AVX-VNNI (256-bit kernels). On the avx512 set the AMX tiles take over
 * where the CPU has AMX-BF16 / AMX-INT8 and embd_cpu_amx_ready, unless
 * EMBD_CPU_AMX=0 (another value than 0 or 1 is refused, with the reason). Writes the family to
 * *kernels (lowp.h's enum embd_lowp_kernels; kernels may be NULL); when none can run, the reason to
 * why. The one rule for the CPU backend and `embd doctor`. */
bool embd_cpu_lowp_kernels(bool int8, enum embd_cpu_isa isa, int *kernels, char *why, size_t n);

/* embd_cpu_lowp_kernels with the kernel set embd_cpu_isa_choose picks
 * (EMBD_CPU_ISA, else the best): can --dtype bf16 / int8 run here. */
bool embd_cpu_can_bf16(char *why, size_t n);
bool embd_cpu_can_int8(char *why, size_t n);

#endif
