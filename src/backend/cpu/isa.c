/* isa.c — see isa.h. */
#include "backend/cpu/isa.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#define EMBD_X86 1
#else
#define EMBD_X86 0
#endif

static embd_cpu_features features;
static pthread_once_t features_once = PTHREAD_ONCE_INIT;

#if EMBD_X86
/* XCR0, the register state the OS saves; only when OSXSAVE says XGETBV may
 * run (else 0). */
static uint64_t read_xcr0(int osxsave) {
    if (!osxsave) return 0;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static void features_read(void) {
    embd_cpu_features *f = &features;
    snprintf(f->model, sizeof f->model, "unknown");
#if EMBD_X86
    unsigned a, b, c, d;
    const unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 1) return;
    __cpuid(1, a, b, c, d);
    const int base_family = (int)((a >> 8) & 15), ext_family = (int)((a >> 20) & 255);
    const int base_model = (int)((a >> 4) & 15), ext_model = (int)((a >> 16) & 15);
    f->family = base_family == 15 ? base_family + ext_family : base_family;
    f->model_id =
        base_family == 6 || base_family == 15 ? (ext_model << 4) | base_model : base_model;
    f->stepping = (int)(a & 15);
    f->fma = (c >> 12) & 1;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    const uint64_t xcr0 = read_xcr0(osxsave);
    f->os_ymm = avx && (xcr0 & 0x6) == 0x6;
    f->os_zmm = f->os_ymm && (xcr0 & 0xE0) == 0xE0;
    f->os_amx = (xcr0 & 0x60000) == 0x60000;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f->avx2 = (b >> 5) & 1;
        f->avx512f = (b >> 16) & 1;
        f->avx512dq = (b >> 17) & 1;
        f->avx512bw = (b >> 30) & 1;
        f->avx512vl = (b >> 31) & 1;
        f->avx512_vnni = (c >> 11) & 1;
        f->amx_bf16 = (d >> 22) & 1;
        f->amx_int8 = (d >> 25) & 1;
        const unsigned sub = a;
        if (sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            f->avx_vnni = (a >> 4) & 1;
            f->avx512_bf16 = (a >> 5) & 1;
        }
    }
    /* the brand string: leaves 0x80000002-4, 16 bytes each */
    if ((unsigned int)__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        char s[49];
        for (unsigned i = 0; i < 3; i++) {
            unsigned r[4];
            __cpuid(0x80000002u + i, r[0], r[1], r[2], r[3]);
            memcpy(s + 16 * i, r, 16);
        }
        s[48] = '\0';
        const char *p = s;
        while (*p == ' ')
            p++;
        size_t len = strlen(p);
        while (len && p[len - 1] == ' ')
            len--;
        if (len) snprintf(f->model, sizeof f->model, "%.*s", (int)len, p);
    }
#endif
}

const embd_cpu_features *embd_cpu_features_get(void) {
    pthread_once(&features_once, features_read);
    return &features;
}

static bool can_run(enum embd_cpu_isa isa, char *why, size_t n) {
    const embd_cpu_features *f = embd_cpu_features_get();
    switch (isa) {
    case EMBD_CPU_ISA_BASELINE:
        return true;
    case EMBD_CPU_ISA_AVX2:
        if (!EMBD_X86) {
            snprintf(why, n, "not an x86-64 CPU");
            return false;
        }
        if (!f->avx2 || !f->fma) {
            snprintf(why, n, "the CPU lacks %s", !f->avx2 ? "AVX2" : "FMA");
            return false;
        }
        if (!f->os_ymm) {
            snprintf(why, n, "the OS does not save the AVX (ymm) registers");
            return false;
        }
        return true;
    case EMBD_CPU_ISA_AVX512:
        if (!can_run(EMBD_CPU_ISA_AVX2, why, n)) return false;
        if (!f->avx512f || !f->avx512bw || !f->avx512vl || !f->avx512dq) {
            snprintf(why, n, "the CPU lacks AVX-512 %s",
                     !f->avx512f    ? "F"
                     : !f->avx512bw ? "BW"
                     : !f->avx512vl ? "VL"
                                    : "DQ");
            return false;
        }
        if (!f->os_zmm) {
            snprintf(why, n, "the OS does not save the AVX-512 (zmm and opmask) registers");
            return false;
        }
        return true;
    }
    snprintf(why, n, "unknown kernel set");
    return false;
}

enum embd_cpu_isa embd_cpu_isa_best(void) {
    char why[128];
    if (can_run(EMBD_CPU_ISA_AVX512, why, sizeof why)) return EMBD_CPU_ISA_AVX512;
    if (can_run(EMBD_CPU_ISA_AVX2, why, sizeof why)) return EMBD_CPU_ISA_AVX2;
    return EMBD_CPU_ISA_BASELINE;
}

const char *embd_cpu_isa_name(enum embd_cpu_isa isa) {
    switch (isa) {
    case EMBD_CPU_ISA_BASELINE:
        return "baseline";
    case EMBD_CPU_ISA_AVX2:
        return "avx2";
    case EMBD_CPU_ISA_AVX512:
        return "avx512";
    }
    return "?";
}

bool embd_cpu_isa_choose(enum embd_cpu_isa *isa, char *why, size_t n) {
    const char *env = getenv("EMBD_CPU_ISA");
    char lack[128];
    if (env && *env) {
        enum embd_cpu_isa want;
        if (!strcmp(env, "avx512"))
            want = EMBD_CPU_ISA_AVX512;
        else if (!strcmp(env, "avx2"))
            want = EMBD_CPU_ISA_AVX2;
        else if (!strcmp(env, "baseline"))
            want = EMBD_CPU_ISA_BASELINE;
        else {
            snprintf(why, n, "EMBD_CPU_ISA=%.40s is not one of avx512, avx2, baseline", env);
            return false;
        }
        if (!can_run(want, lack, sizeof lack)) {
            snprintf(why, n, "EMBD_CPU_ISA=%s, but %s", env, lack);
            return false;
        }
        *isa = want;
        snprintf(why, n, "forced by EMBD_CPU_ISA");
        return true;
    }
    *isa = embd_cpu_isa_best();
    if (*isa == EMBD_CPU_ISA_AVX512)
        snprintf(why, n, "the CPU has AVX-512 F/BW/VL/DQ and the OS saves the zmm registers");
    else if (*isa == EMBD_CPU_ISA_AVX2) {
        can_run(EMBD_CPU_ISA_AVX512, lack, sizeof lack);
        snprintf(why, n, "AVX2+FMA; not AVX-512: %s", lack);
    } else {
        can_run(EMBD_CPU_ISA_AVX2, lack, sizeof lack);
        snprintf(why, n, "not AVX2: %s", lack);
    }
    return true;
}

/* AMX: whether the process may use the tiles, asked of Linux once. */
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static bool amx_ok;
static char amx_why[96];

static void amx_ask(void) {
    const embd_cpu_features *f = embd_cpu_features_get();
    if (!f->amx_bf16 && !f->amx_int8) {
        snprintf(amx_why, sizeof amx_why, "the CPU lacks AMX");
        return;
    }
    if (!f->os_amx) {
        snprintf(amx_why, sizeof amx_why, "the OS does not save the AMX tile state");
        return;
    }
#if EMBD_X86 && defined(__linux__) && defined(SYS_arch_prctl)
    /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA (Linux 5.16 and later) */
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
        snprintf(amx_why, sizeof amx_why, "Linux refused the process the AMX tile state");
        return;
    }
    amx_ok = true;
#else
    snprintf(amx_why, sizeof amx_why, "AMX is used on Linux only");
#endif
}

bool embd_cpu_amx_ready(char *why, size_t n) {
    pthread_once(&amx_once, amx_ask);
    if (!amx_ok && why) snprintf(why, n, "%s", amx_why);
    return amx_ok;
}

/* EMBD_CPU_AMX: 0 when "0" (the AMX kernels off), 1 when unset, empty or
 * "1", -1 for anything else (refused: a typo must not silently change the
 * kernels). */
static int amx_env(void) {
    const char *e = getenv("EMBD_CPU_AMX");
    if (!e || !*e || !strcmp(e, "1")) return 1;
    return !strcmp(e, "0") ? 0 : -1;
}

bool embd_cpu_amx_runs(bool int8, enum embd_cpu_isa isa, char *why, size_t n) {
    const embd_cpu_features *f = embd_cpu_features_get();
    char lack[96];
    if (!(int8 ? f->amx_int8 : f->amx_bf16))
        snprintf(why, n, "the CPU lacks AMX-%s", int8 ? "INT8" : "BF16");
    else if (amx_env() == 0)
        snprintf(why, n, "AMX off (EMBD_CPU_AMX=0)");
    else if (amx_env() < 0)
        snprintf(why, n, "EMBD_CPU_AMX=%.40s is not 0 or 1", getenv("EMBD_CPU_AMX"));
    else if (!embd_cpu_amx_ready(lack, sizeof lack))
        snprintf(why, n, "%s", lack);
    else if (isa != EMBD_CPU_ISA_AVX512)
        snprintf(why, n, "AMX runs beside the avx512 kernel set only");
    else
        return true;
    return false;
}

bool embd_cpu_lowp_kernels(bool int8, enum embd_cpu_isa isa, int *kernels, char *why, size_t n) {
    const embd_cpu_features *f = embd_cpu_features_get();
    if (kernels) *kernels = 0;
    /* AMX beside the avx512 set, where the CPU has the kind's tiles */
    if (amx_env() < 0) {
        snprintf(why, n, "EMBD_CPU_AMX=%.40s is not 0 or 1", getenv("EMBD_CPU_AMX"));
        return false;
    }
    char amx_no[128];
    const bool amx = embd_cpu_amx_runs(int8, isa, amx_no, sizeof amx_no);
    if (!int8) {
        if (!f->avx512_bf16) {
            snprintf(why, n, "the CPU lacks AVX512_BF16");
            return false;
        }
        if (isa != EMBD_CPU_ISA_AVX512) {
            snprintf(why, n, "bf16 runs on the avx512 kernel set, and %s was chosen",
                     embd_cpu_isa_name(isa));
            return false;
        }
        if (kernels) *kernels = amx ? 2 : 1;
        return true;
    }
    if (isa == EMBD_CPU_ISA_AVX512 && f->avx512_vnni) {
        if (kernels) *kernels = amx ? 2 : 1;
        return true;
    }
    /* the kernel set is runnable, so the OS saves the ymm registers */
    if (isa >= EMBD_CPU_ISA_AVX2 && f->avx_vnni) return true; /* *kernels 0: 256-bit */
    if (isa == EMBD_CPU_ISA_BASELINE)
        snprintf(why, n, "int8 runs on the avx512 or avx2 kernel set, and baseline was chosen");
    else if (isa == EMBD_CPU_ISA_AVX2 && f->avx512_vnni)
        snprintf(why, n,
                 "int8 on the avx2 kernel set needs AVX-VNNI, which the CPU lacks (it "
                 "has AVX512_VNNI, for the avx512 set)");
    else
        snprintf(why, n, "the CPU lacks AVX512_VNNI and AVX-VNNI");
    return false;
}

bool embd_cpu_can_bf16(char *why, size_t n) {
    enum embd_cpu_isa isa;
    return embd_cpu_isa_choose(&isa, why, n) && embd_cpu_lowp_kernels(false, isa, NULL, why, n);
}

bool embd_cpu_can_int8(char *why, size_t n) {
    enum embd_cpu_isa isa;
    return embd_cpu_isa_choose(&isa, why, n) && embd_cpu_lowp_kernels(true, isa, NULL, why, n);
}
