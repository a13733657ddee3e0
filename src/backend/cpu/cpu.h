/* cpu.h — internals of the fast CPU backend that tests reach. */
#ifndef EMBD_BACKEND_CPU_CPU_H
#define EMBD_BACKEND_CPU_CPU_H

#include <stdbool.h>

/* Test hook: with `on`, backends initialised afterwards run the baseline
 * x86-64 loops even on a CPU with AVX2+FMA (the GEMMs are OpenBLAS's own
 * choice either way). Returns whether the AVX2+FMA loops are compiled in and
 * supported by this CPU. */
bool embd_backend_cpu_force_baseline(bool on);

#endif
