/* ref.h — the single ops of the CPU reference backend, exposed so that tests
 * can check each against hand-computed values. Plain fp32 loops, one thread.
 * Shape letters as in backend/backend.h; R = rows, C = columns. */
#ifndef EMBD_BACKEND_CPU_REF_H
#define EMBD_BACKEND_CPU_REF_H

#include <stddef.h>

/* out (R, C) = LayerNorm over each row of in (R, C) with gamma g (C), beta b (C):
 * (x - mean) / sqrt(var + eps) * g + b, var the biased variance (as PyTorch).
 * out may equal in. */
void embd_ref_layernorm(float *out, const float *in, const float *g, const float *b, int R, int C,
                        float eps);

/* x (n) = exact GELU of x, in place: 0.5 x (1 + erf(x / sqrt(2))). */
void embd_ref_gelu(float *x, size_t n);

/* x (n) = softmax of x, in place, computed with the maximum subtracted first so
 * large inputs do not overflow. n >= 1. */
void embd_ref_softmax(float *x, int n);

/* out (R, O) = in (R, K) W^T + b, with W (O, K) as PyTorch stores a Linear;
 * b may be NULL. out must not overlap in. */
void embd_ref_linear(float *out, const float *in, const float *W, const float *b, int R, int K,
                     int O);

#endif
