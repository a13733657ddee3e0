/* cpu.h — internals of the fast CPU backend that tests, benchmarks and
 * `embd doctor` reach. */
#ifndef EMBD_BACKEND_CPU_CPU_H
#define EMBD_BACKEND_CPU_CPU_H

#include <stdbool.h>

/* Test hook: with `on`, backends initialised afterwards run the baseline
 * x86-64 loops even on a CPU with AVX2+FMA (the GEMMs are OpenBLAS's own
 * choice either way). Returns whether the AVX2+FMA loops are compiled in and
 * supported by this CPU. */
bool embd_backend_cpu_force_baseline(bool on);

/* One of the backend's matrix products on its own, for benchmarks and
 * tests: out (T, N) = in (T, K) W^T + bias through the packed GEMM of the
 * kernel set the backend would pick now (EMBD_CPU_ISA included), W packed
 * once by _new, on n_threads threads of its own (< 1: every CPU it may run on); OpenBLAS when
 * the kernel set is the baseline or N or K is not a multiple of 16. */
typedef struct embd_cpu_gemm embd_cpu_gemm;

/* NULL on out of memory, bad sizes or a bad EMBD_CPU_ISA (embd_last_error
 * says which). W is copied. */
embd_cpu_gemm *embd_cpu_gemm_new(const float *W, int N, int K, int n_threads);

/* in (T, K) and out (T, N), row-major; bias (N) may be NULL. T >= 1. */
void embd_cpu_gemm_run(embd_cpu_gemm *g, float *out, const float *in, int T, const float *bias);

/* "avx512", "avx2" or "baseline" (then OpenBLAS runs). */
const char *embd_cpu_gemm_isa(const embd_cpu_gemm *g);

void embd_cpu_gemm_free(embd_cpu_gemm *g);

#endif
