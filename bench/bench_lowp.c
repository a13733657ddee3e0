/* bench_lowp.c — GFLOP/s of the bf16 and int8 GEMMs (backend/cpu/lowp.h)
 * against OpenBLAS's fp32 cblas_sgemm and the CPU backend's own packed fp32
 * GEMM (embd_cpu_gemm, cpu.h) on the same shapes (not a test; it only
 * prints).
 *
 *   bench_lowp [THREADS]      (default 2)
 *
 * Shapes: the encoder's matrix products at T = 2048 tokens (a packed batch)
 * and T = 64 (a few short queries), (K, N) = (384, 1152) QKV, (384, 384)
 * attention output, (384, 1536) FFN up, (1536, 384) FFN down: all-MiniLM-L6
 * and bge-small. out = in W^T + bias for bf16 and int8, split over the
 * threads like the CPU backend's linear(): by blocks of EMBD_LOWP_MC rows
 * handed out dynamically when there are at least 4 per thread, else by
 * pairs of 16-column panels. OpenBLAS runs as the CPU backend runs it: one
 * thread of its own, called by each OpenMP thread on an equal share of the
 * rows (its own threads would fight the OpenMP pool, which spins for a while
 * after each region), without the bias, which it cannot fuse;
 * embd_cpu_gemm with the bias but never GELU, on THREADS threads. FLOPs
 * are 2 T K N; each figure is the median of 5 timings, each timing repeats
 * the product for at least 50 ms. The CPU model and the load average are
 * printed: on a shared machine, a load above the thread count means the
 * numbers are low. */
#include "backend/cpu/cpu.h"
#include "backend/cpu/isa.h"
#include "backend/cpu/lowp.h"
#include "util/util.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPS 5
#define MIN_SECONDS 0.05

/* The CPU's "model name" from /proc/cpuinfo (or isa.h's brand string). */
static void cpu_model(char *buf, size_t n) {
    snprintf(buf, n, "%s", embd_cpu_features_get()->model);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(buf, n, "%.*s", (int)strcspn(v, "\n"), v);
        break;
    }
    fclose(f);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The product the timings repeat: a kind of GEMM on one shape. */
typedef struct {
    int T, K, N, nt;
    const float *x, *W, *bias;
    float *out;
    embd_lowp_weight *w; /* NULL: fp32, by OpenBLAS or (with g) embd_cpu_gemm */
    embd_cpu_gemm *g;
    void *scratch; /* nt blocks of sstride bytes */
    size_t sstride;
    int gelu;
} job;

/* One product on all threads (see the top for the split). */
static void run(const job *j) {
    if (j->g) {
        embd_cpu_gemm_run(j->g, j->out, j->x, j->T, j->bias);
        return;
    }
    const int T = j->T, N = j->N, K = j->K;
    if (!j->w) {
#pragma omp parallel num_threads(j->nt)
        {
            const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            const int r0 = (int)((int64_t)T * tid / nth), r1 = (int)((int64_t)T * (tid + 1) / nth);
            if (r1 > r0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, N, K, 1.0f,
                            j->x + (size_t)r0 * K, K, j->W, K, 0.0f, j->out + (size_t)r0 * N, N);
        }
        return;
    }
#pragma omp parallel num_threads(j->nt)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        void *scratch = (char *)j->scratch + (size_t)tid * j->sstride;
        if (T >= 4 * EMBD_LOWP_MC * nth) {
            const int nb = (T + EMBD_LOWP_MC - 1) / EMBD_LOWP_MC;
#pragma omp for schedule(dynamic, 1) nowait
            for (int b = 0; b < nb; b++) {
                const int m0 = b * EMBD_LOWP_MC, m1 = T - m0 < EMBD_LOWP_MC ? T : m0 + EMBD_LOWP_MC;
                embd_lowp_gemm(j->w, j->out, (size_t)N, j->x, (size_t)j->K, m0, m1, 0, N, j->bias,
                               j->gelu, scratch);
            }
        } else {
            /* pairs of panels (32 columns), so that tiles stay 32 wide */
            const int pairs = (N + 31) / 32;
            const int p0 = (int)((int64_t)pairs * tid / nth),
                      p1 = (int)((int64_t)pairs * (tid + 1) / nth);
            const int c0 = 32 * p0, c1 = 32 * p1 < N ? 32 * p1 : N;
            if (c1 > c0)
                embd_lowp_gemm(j->w, j->out, (size_t)N, j->x, (size_t)j->K, 0, T, c0, c1, j->bias,
                               j->gelu, scratch);
        }
    }
}

/* The median GFLOP/s of j over REPS timings. */
static double gflops(const job *j) {
    run(j); /* warm the caches and the thread pools */
    const double flop = 2.0 * j->T * j->K * j->N;
    double rate[REPS];
    for (int r = 0; r < REPS; r++) {
        int n = 0;
        const double t0 = embd_now();
        double dt;
        do {
            run(j);
            n++;
            dt = embd_now() - t0;
        } while (dt < MIN_SECONDS);
        rate[r] = flop * n / dt * 1e-9;
    }
    qsort(rate, REPS, sizeof rate[0], cmp_double);
    return rate[REPS / 2];
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const int nt = argc > 1 ? atoi(argv[1]) : 2;
    if (nt < 1) {
        fprintf(stderr, "usage: bench_lowp [THREADS]\n");
        return 2;
    }
    char model[256], why[128];
    cpu_model(model, sizeof model);
    const int can_bf16 = embd_cpu_can_bf16(why, sizeof why);
    const int can_int8 = embd_cpu_can_int8(why, sizeof why);
    /* the int8 kernels of the kernel set EMBD_CPU_ISA (or the CPU) picks:
     * EMBD_CPU_ISA=avx2 times AVX-VNNI's on an AVX-512 CPU that has it */
    enum embd_cpu_isa isa = EMBD_CPU_ISA_BASELINE;
    int k16 = EMBD_LOWP_AVX512, k8 = EMBD_LOWP_AVX512; /* the families the rule picks */
    if (embd_cpu_isa_choose(&isa, why, sizeof why)) {
        if (can_bf16) embd_cpu_lowp_kernels(false, isa, &k16, why, sizeof why);
        if (can_int8) embd_cpu_lowp_kernels(true, isa, &k8, why, sizeof why);
    }
    static const char *const fam[3] = {"AVX-VNNI 256-bit", "512-bit", "AMX tiles"};
    double load[3] = {0};
    if (getloadavg(load, 3) < 0) load[0] = -1;
    printf("CPU: %s\nthreads: %d; load average %.2f (before)\n", model, nt, load[0]);
    printf("kernels: bf16 %s, int8 %s (EMBD_CPU_AMX=0: no AMX; EMBD_CPU_ISA=avx2: 256-bit "
           "int8)\n",
           can_bf16 ? fam[k16] : "none", can_int8 ? fam[k8] : "none");
    if (!can_bf16 && !can_int8) {
        printf("neither AVX512_BF16 nor AVX512_VNNI: nothing to measure\n");
        return 0;
    }
    openblas_set_num_threads(1);
    const int Ts[] = {2048, 64};
    const int shapes[][2] = {{384, 1152}, {384, 384}, {384, 1536}, {1536, 384}};
    printf("%6s %5s %5s %4s  %10s %10s %10s %10s  %6s %6s\n", "T", "K", "N", "gelu", "fp32 BLAS",
           "fp32 embd", "bf16", "int8", "bf16x", "int8x");
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int T = Ts[ti], K = shapes[s][0], N = shapes[s][1];
            float *x = malloc((size_t)T * K * sizeof(float));
            float *W = malloc((size_t)N * K * sizeof(float));
            float *bias = malloc((size_t)N * sizeof(float));
            float *out = malloc((size_t)T * N * sizeof(float));
            uint64_t st = 0x9E3779B97F4A7C15ull + s;
            for (size_t i = 0; i < (size_t)T * K; i++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                x[i] = (float)((double)(st >> 40) / 16777216.0 * 2.0 - 1.0);
            }
            for (size_t i = 0; i < (size_t)N * K; i++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                W[i] = (float)((double)(st >> 40) / 16777216.0 * 2.0 - 1.0) / sqrtf((float)K);
            }
            for (int n = 0; n < N; n++)
                bias[n] = 0.01f * (float)(n % 7);
            /* the FFN's up projection with its GELU, as the encoder runs it */
            const int gelu = N == 4 * K;
            job j = {.T = T, .K = K, .N = N, .nt = nt, .x = x, .W = W, .bias = bias, .out = out};
            const double f32 = gflops(&j);
            double own = NAN;
            j.g = embd_cpu_gemm_new(W, N, K, nt);
            if (j.g) {
                own = gflops(&j);
                embd_cpu_gemm_free(j.g);
                j.g = NULL;
            }
            double r[2] = {NAN, NAN};
            for (int kind = EMBD_LOWP_BF16; kind <= EMBD_LOWP_INT8; kind++) {
                if (!(kind == EMBD_LOWP_BF16 ? can_bf16 : can_int8)) continue;
                j.w = embd_lowp_pack(kind, W, N, K,
                                     (enum embd_lowp_kernels)(kind == EMBD_LOWP_BF16 ? k16 : k8));
                if (!j.w) {
                    fprintf(stderr, "bench_lowp: pack failed\n");
                    return 1;
                }
                j.sstride = embd_lowp_scratch_bytes(j.w);
                j.scratch = aligned_alloc(64, (size_t)nt * j.sstride);
                j.gelu = gelu;
                r[kind - 1] = gflops(&j);
                free(j.scratch);
                embd_lowp_free(j.w);
                j.w = NULL;
                j.gelu = 0;
            }
            printf("%6d %5d %5d %4s  %10.1f %10.1f %10.1f %10.1f  %6.2f %6.2f\n", T, K, N,
                   gelu ? "yes" : "no", f32, own, r[0], r[1], r[0] / f32, r[1] / f32);
            free(x);
            free(W);
            free(bias);
            free(out);
        }
    if (getloadavg(load, 3) < 0) load[0] = -1;
    printf("GFLOP/s, median of %d; bf16 and int8 with the bias (and GELU where marked), fp32 "
           "embd with the bias, fp32 BLAS without; bf16x and int8x: to fp32 BLAS; load average "
           "%.2f (after)\n",
           REPS, load[0]);
    return 0;
}
