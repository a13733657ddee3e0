/* cuda_test.h — helpers for the CUDA tests: load the plugin and find a usable
 * device or skip (exit 77), round host floats the way the device stores them,
 * guard bytes around outputs. */
#ifndef EMBD_CUDA_TEST_H
#define EMBD_CUDA_TEST_H

#include "backend/cuda/plugin.h"
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The plugin, with device 0 usable for dt, or exit 77 saying why. */
static inline const struct embd_cuda_plugin *cuda_test_plugin(enum embd_dtype dt) {
    char why[512];
    const struct embd_cuda_plugin *p = embd_cuda_load(why, sizeof why);
    if (!p) TEST_SKIP("no CUDA plugin: %s", why);
    if (embd_cuda_usable(NULL, 0, dt, why, sizeof why) != 0) TEST_SKIP("no usable GPU: %s", why);
    printf("GPU: %s\n", why);
    return p;
}

/* Compute capability of device 0 as 10 * major + minor (0 if unknown). */
static inline int cuda_test_cc(const struct embd_cuda_plugin *p) {
    struct embd_cuda_device_info d;
    char why[256];
    if (p->device_info(0, &d, why, sizeof why) != 0) return 0;
    return d.major * 10 + d.minor;
}

/* x rounded to the nearest fp16 (ties to even; subnormals on a 2^-24 grid). */
static inline float round_fp16(float x) {
    if (x == 0.0f || !isfinite(x)) return x;
    float a = fabsf(x);
    if (a >= 65520.0f) return x > 0 ? INFINITY : -INFINITY;
    int e;
    frexpf(a, &e);                  /* a = m 2^e, m in [0.5, 1) */
    if (e < -13) e = -13;           /* below 2^-14: the subnormal grid */
    float q = ldexpf(1.0f, e - 11); /* 11 significant bits */
    float r = nearbyintf(a / q) * q;
    return x < 0 ? -r : r;
}

/* x rounded to the nearest bf16 (ties to even). */
static inline float round_bf16(float x) {
    if (!isfinite(x)) return x;
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static inline float round_dt(enum embd_dtype dt, float x) {
    return dt == EMBD_DTYPE_FP16 ? round_fp16(x) : dt == EMBD_DTYPE_BF16 ? round_bf16(x) : x;
}

static inline void round_all(enum embd_dtype dt, float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = round_dt(dt, x[i]);
}

static inline const char *dt_name(enum embd_dtype dt) {
    return dt == EMBD_DTYPE_FP16 ? "fp16" : dt == EMBD_DTYPE_BF16 ? "bf16" : "fp32";
}

/* Guard bytes: n floats with GUARD floats of a sentinel on each side. */
enum { GUARD = 64 };
static const float guard_value = -12345.678f;

static inline float *guarded_alloc(size_t n) {
    float *p = malloc((n + 2 * GUARD) * sizeof(float));
    if (!p) return NULL;
    for (size_t i = 0; i < n + 2 * GUARD; i++)
        p[i] = guard_value;
    return p + GUARD;
}

static inline int guards_ok(const float *p, size_t n) {
    for (size_t i = 0; i < GUARD; i++)
        if (p[-(long)GUARD + (long)i] != guard_value || p[n + i] != guard_value) return 0;
    return 1;
}

static inline void guarded_free(float *p) {
    if (p) free(p - GUARD);
}

/* Worst |got - want| / (atol + rtol |want|) over n values; NaN counts as
 * infinitely bad. <= 1 passes. */
static inline double worst_ratio(const float *got, const float *want, size_t n, double atol,
                                 double rtol) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)got[i] - want[i]) / (atol + rtol * fabs((double)want[i]));
        if (!(r <= worst)) worst = isnan(r) ? INFINITY : r;
    }
    return worst;
}

#endif
