/* cpu_math.h — scalar math written so that the compiler can vectorise loops
 * that call it (no libm calls, no branches): exp and exact-form GELU for the
 * fast CPU backend. Accuracy is stated on each; tests/backend checks both
 * against libm over a wide range. */
#ifndef EMBD_BACKEND_CPU_MATH_H
#define EMBD_BACKEND_CPU_MATH_H

#include <stdint.h>
#include <string.h>

/* e^x for x in [-87, 88] (inputs outside are clamped, so very negative x gives
 * about 1.6e-38, not 0). Relative error about 2 ulp: Cephes' range reduction
 * x = n ln2 + r with ln2 split in two, a degree-6 polynomial for e^r, and 2^n
 * built from the exponent bits. */
static inline float embd_fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float fn = x * 1.44269504088896341f;
    /* round to nearest without libm: truncation of fn +/- 0.5 */
    int32_t n = (int32_t)(fn + (fn >= 0.0f ? 0.5f : -0.5f));
    float nf = (float)n;
    float r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

/* erf(x), absolute error about 2e-7 everywhere: a Taylor series for |x| < 0.8
 * (where the other form loses digits to cancellation), else Abramowitz &
 * Stegun 7.1.26: 1 - t (a1 + t (a2 + ...)) e^{-x^2}, t = 1 / (1 + p |x|).
 * Both are computed and one is selected, so loops still vectorise. */
static inline float embd_fast_erff(float x) {
    float ax = x < 0.0f ? -x : x;
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
    y = ax < 0.8f ? s : y;
    return x < 0.0f ? -y : y;
}

/* GELU in its exact (erf) form: 0.5 x (1 + erf(x / sqrt 2)). */
static inline float embd_fast_gelu(float x) {
    return 0.5f * x * (1.0f + embd_fast_erff(x * 0.70710678118654752f));
}

#endif
