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

/* Whether the CPU and OS can run the low-precision kernels: bf16 needs
 * AVX512_BF16 (with AVX-512 F/BW/VL), int8 AVX512_VNNI (with AVX-512
 * F/BW/VL). When not, writes the missing part to why. */
bool embd_cpu_can_bf16(char *why, size_t n);
bool embd_cpu_can_int8(char *why, size_t n);

#endif
