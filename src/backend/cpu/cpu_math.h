/* cpu_math.h — scalar math written so that the compiler can vectorise loops
 * that call it (no libm calls, no branches): exp and exact-form GELU for the
 * fast CPU backend. Accuracy is stated on each; tests/backend checks both
 * against libm over a wide range. */
#ifndef EMBD_BACKEND_CPU_MATH_H
#define EMBD_BACKEND_CPU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* e^x. Relative error about 2 ulp for x in [-87, 88]: Cephes' range
 * reduction x = n ln2 + r with ln2 split in two, a degree-6 polynomial for
 * e^r, and 2^n built from the exponent bits. Below -87 the result is 0 (for
 * x >= -1e9, far beyond anything a softmax or erf here produces); above 88
 * it is about 2^127 times e^r (finite, not inf). Branch-free, so loops that
 * call it vectorise (clamping x itself with a comparison defeats GCC's
 * vectoriser, so only the integer exponent is clamped). */
static inline float embd_fast_expf(float x) {
    /* n = round(x / ln2) by adding and subtracting 1.5 * 2^23 */
    const float nf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    const float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    int32_t n = (int32_t)nf;
    const int32_t keep = -(int32_t)(n >= -126); /* all ones, or 0 to flush to 0 */
    n = n < -126 ? -126 : n;
    n = n > 127 ? 127 : n;
    union {
        int32_t i;
        float f;
    } scale = {.i = ((n + 127) << 23) & keep};
    return p * scale.f;
}

/* erf(x), absolute error about 2e-7 everywhere: a Taylor series for |x| < 0.8
 * (where the other form loses digits to cancellation), else Abramowitz &
 * Stegun 7.1.26: 1 - t (a1 + t (a2 + ...)) e^{-x^2}, t = 1 / (1 + p |x|).
 * Both are computed and one is selected, so loops still vectorise. */
static inline float embd_fast_erff(float x) {
    const float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = 1.061405429f;
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    y = 1.0f - y * t * embd_fast_expf(-ax * ax);
    /* 2/sqrt(pi) (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320 + x^13/9360
     *             - x^15/75600 + x^17/685440) */
    float z = ax * ax;
    float s = 1.0f / 685440.0f;
    s = s * z - 1.0f / 75600.0f;
    s = s * z + 1.0f / 9360.0f;
    s = s * z - 1.0f / 1320.0f;
    s = s * z + 1.0f / 216.0f;
    s = s * z - 1.0f / 42.0f;
    s = s * z + 1.0f / 10.0f;
    s = s * z - 1.0f / 3.0f;
    s = s * z + 1.0f;
    s = s * ax * 1.1283791670955126f;
    /* select by bit mask: a float ?: here would stop vectorisation */
    union {
        float f;
        int32_t i;
    } taylor = {.f = s}, tail = {.f = y}, pick;
    const int32_t m = -(int32_t)(ax < 0.8f);
    pick.i = (taylor.i & m) | (tail.i & ~m);
    return copysignf(pick.f, x);
}

/* GELU in its exact (erf) form: 0.5 x (1 + erf(x / sqrt 2)). */
static inline float embd_fast_gelu(float x) {
    return 0.5f * x * (1.0f + embd_fast_erff(x * 0.70710678118654752f));
}

/* The same GELU with erf from Abramowitz & Stegun 7.1.26 alone (absolute
 * error about 1.5e-7 everywhere, so the GELU's about 1e-7 x |x|): without
 * the Taylor branch that keeps embd_fast_erff's relative accuracy near 0,
 * which the GELU does not need (its value there is about x / 2 whatever
 * erf's relative error). About 40% fewer operations: the reduced-precision
 * GEMMs' epilogue (lowp.c), where the matrix product on AMX tiles is fast
 * enough for the GELU to be the larger cost. */
static inline float embd_fast_gelu_as(float x) {
    const float az = fabsf(x * 0.70710678118654752f);
    const float t = 1.0f / (1.0f + 0.3275911f * az);
    float y = 1.061405429f;
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    const float erf_abs = 1.0f - y * t * embd_fast_expf(-az * az);
    return 0.5f * x * (1.0f + copysignf(erf_abs, x));
}

#endif
