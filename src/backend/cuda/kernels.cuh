/* kernels.cuh — the device kernels of the CUDA backend. Storage type T is
 * float, __half or __nv_bfloat16; all arithmetic is fp32. Shape letters as in
 * backend/backend.h. */
#ifndef EMBD_CUDA_KERNELS_CUH
#define EMBD_CUDA_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) {
    return x;
}
template <> __device__ __forceinline__ float to_f<__half>(__half x) {
    return __half2float(x);
}
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) {
    return __bfloat162float(x);
}

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) {
    return x;
}
template <> __device__ __forceinline__ __half from_f<__half>(float x) {
    return __float2half_rn(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

enum { LN_THREADS = 256, POOL_THREADS = 256 };

/* Sum of v over the block (every thread gets it). red: 32 floats of shared memory. */
__device__ __forceinline__ float block_sum(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads(); /* red may still be read by an earlier call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    const int nw = (blockDim.x + 31) >> 5;
    float r = 0.0f;
    for (int i = 0; i < nw; i++)
        r += red[i];
    return r;
}

/* LayerNorm of row (H floats in shared memory, each thread owning the columns
 * c = threadIdx.x + k * blockDim.x) into x (fp32) and xo (T). Two passes
 * (mean, then variance) like the CPU reference. */
template <typename T>
__device__ __forceinline__ void ln_row(const float *row, float *red, float s, const float *g,
                                       const float *b, float *x, T *xo, int H, float eps) {
    const float mean = block_sum(s, red) / (float)H;
    float q = 0.0f;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        const float d = row[c] - mean;
        q += d * d;
    }
    const float var = block_sum(q, red) / (float)H;
    const float rstd = rsqrtf(var + eps);
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        const float y = (row[c] - mean) * rstd * g[c] + b[c];
        if (x) x[c] = y;
        xo[c] = from_f<T>(y);
    }
}

/* x (R, H) fp32, in place: x = LayerNorm(x + add); xo (R, H) = x as T.
 * One block per row; dynamic shared memory H floats. */
template <typename T>
__global__ void k_add_ln(float *x, const T *add, const float *g, const float *b, T *xo, int H,
                         float eps) {
    extern __shared__ float row[];
    __shared__ float red[32];
    const size_t r = blockIdx.x;
    float *xr = x + r * H;
    const T *ar = add + r * H;
    float s = 0.0f;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        const float v = xr[c] + to_f<T>(ar[c]);
        row[c] = v;
        s += v;
    }
    ln_row<T>(row, red, s, g, b, xr, xo + r * H, H, eps);
}

/* A token's position (< 2^21, max_position_embeddings being at most 2^20)
 * and its type id (< 2^10) share one int of the pos array. */
#define EMBD_POS_BITS 21

/* x (T, H) = LayerNorm(word[ids] + pos[position] + type[type id]); xo = x as T.
 * One block per token; dynamic shared memory H floats. */
template <typename T>
__global__ void k_embed_ln(float *x, T *xo, const int *ids, const int *pos, const float *word,
                           const float *posemb, const float *type, const float *g, const float *b,
                           int H, float eps) {
    extern __shared__ float row[];
    __shared__ float red[32];
    const size_t t = blockIdx.x;
    const float *we = word + (size_t)ids[t] * H;
    const float *pe = posemb + (size_t)(pos[t] & ((1 << EMBD_POS_BITS) - 1)) * H;
    const float *te = type + (size_t)(pos[t] >> EMBD_POS_BITS) * H;
    float s = 0.0f;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        const float v = we[c] + pe[c] + te[c];
        row[c] = v;
        s += v;
    }
    ln_row<T>(row, red, s, g, b, x + t * H, xo + t * H, H, eps);
}

/* x (n) in place: exact-erf GELU, 0.5 x (1 + erf(x / sqrt 2)). */
template <typename T> __global__ void k_gelu(T *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float v = to_f<T>(x[i]);
        x[i] = from_f<T>(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

/* x (n) in place: x += b[i % O] (the bias, for matmuls without a bias epilogue). */
template <typename T> __global__ void k_bias(T *x, const T *b, size_t n, int O) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = from_f<T>(to_f<T>(x[i]) + to_f<T>(b[i % O]));
}

/* dst (n) = src (n) converted. */
template <typename D, typename S> __global__ void k_convert(D *dst, const S *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_f<D>(to_f<S>(src[i]));
}

/* Attention over packed variable-length sequences, flash style: one block per
 * (query tile, head); a tile is ATT_Q queries of one sequence (tiles[i] =
 * {sequence, first query}). K/V tiles of ATT_K keys go through shared memory;
 * softmax is online in fp32 (running max m, running sum l). Each of the
 * ATT_WARPS warps owns ATT_Q / ATT_WARPS queries; lane j scores keys j and
 * j + 32 of the tile and accumulates output dims j and j + 32 (HS <= 64).
 * qkv (T, 3H) = [q | k | v] per token; out (T, H). bias: NULL, or (NH, 2P - 1)
 * added to the scaled scores, bias[h (2P - 1) + key - query + P - 1] (MPNet's
 * relative position bias). */
enum { ATT_Q = 32, ATT_K = 64, ATT_WARPS = 4, ATT_QW = ATT_Q / ATT_WARPS, ATT_HS_MAX = 64 };

template <typename T>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    k_attention(const T *qkv, T *out, const int *seq_start, const int2 *tiles, int H, int HS,
                float scale, const float *bias, int P) {
    __shared__ float sq[ATT_Q][ATT_HS_MAX + 1];
    __shared__ float sk[ATT_K][ATT_HS_MAX + 1];
    __shared__ float sv[ATT_K][ATT_HS_MAX + 1];
    const int2 tile = tiles[blockIdx.x];
    const int h = blockIdx.y;
    const int t0 = seq_start[tile.x], len = seq_start[tile.x + 1] - t0, q0 = tile.y;
    const int nq = min(ATT_Q, len - q0);
    const size_t ld = 3 * (size_t)H;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int nthr = ATT_WARPS * 32;

    for (int i = tid; i < ATT_Q * HS; i += nthr) {
        const int r = i / HS, d = i % HS;
        sq[r][d] = r < nq ? to_f<T>(qkv[(size_t)(t0 + q0 + r) * ld + h * HS + d]) * scale : 0.0f;
    }
    float m[ATT_QW], l[ATT_QW], a0[ATT_QW], a1[ATT_QW];
#pragma unroll
    for (int i = 0; i < ATT_QW; i++) {
        m[i] = -CUDART_INF_F;
        l[i] = 0.0f;
        a0[i] = 0.0f;
        a1[i] = 0.0f;
    }
    for (int k0 = 0; k0 < len; k0 += ATT_K) {
        const int nk = min(ATT_K, len - k0);
        __syncthreads(); /* the previous tile is no longer read (and sq is written) */
        for (int i = tid; i < ATT_K * HS; i += nthr) {
            const int r = i / HS, d = i % HS;
            if (r < nk) {
                const size_t base = (size_t)(t0 + k0 + r) * ld + h * HS + d;
                sk[r][d] = to_f<T>(qkv[base + H]);
                sv[r][d] = to_f<T>(qkv[base + 2 * (size_t)H]);
            } else {
                sk[r][d] = 0.0f;
                sv[r][d] = 0.0f;
            }
        }
        __syncthreads();
#pragma unroll
        for (int qi = 0; qi < ATT_QW; qi++) {
            const int r = warp * ATT_QW + qi;
            if (r < nq) { /* warp-uniform */
                float s0 = 0.0f, s1 = 0.0f;
                for (int d = 0; d < HS; d++) {
                    const float qd = sq[r][d];
                    s0 += qd * sk[lane][d];
                    s1 += qd * sk[lane + 32][d];
                }
                if (bias) {
                    const float *bh = bias + (size_t)h * (2 * P - 1) + (P - 1) + k0 - (q0 + r);
                    if (lane < nk) s0 += bh[lane];
                    if (lane + 32 < nk) s1 += bh[lane + 32];
                }
                s0 = lane < nk ? s0 : -CUDART_INF_F;
                s1 = lane + 32 < nk ? s1 : -CUDART_INF_F;
                float mx = fmaxf(s0, s1);
                for (int o = 16; o > 0; o >>= 1)
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                const float mnew = fmaxf(m[qi], mx); /* finite: nk >= 1 */
                const float p0 = __expf(s0 - mnew), p1 = __expf(s1 - mnew);
                const float corr = __expf(m[qi] - mnew); /* 0 on the first tile */
                float ps = p0 + p1;
                for (int o = 16; o > 0; o >>= 1)
                    ps += __shfl_xor_sync(0xffffffffu, ps, o);
                l[qi] = l[qi] * corr + ps;
                float acc0 = 0.0f, acc1 = 0.0f;
                for (int j = 0; j < nk; j++) {
                    const float pj = __shfl_sync(0xffffffffu, j < 32 ? p0 : p1, j & 31);
                    acc0 += pj * sv[j][lane];
                    if (HS > 32) acc1 += pj * sv[j][lane + 32];
                }
                a0[qi] = a0[qi] * corr + acc0;
                a1[qi] = a1[qi] * corr + acc1;
                m[qi] = mnew;
            }
        }
    }
#pragma unroll
    for (int qi = 0; qi < ATT_QW; qi++) {
        const int r = warp * ATT_QW + qi;
        if (r < nq) {
            T *o = out + (size_t)(t0 + q0 + r) * H + h * HS;
            const float inv = 1.0f / l[qi];
            if (lane < HS) o[lane] = from_f<T>(a0[qi] * inv);
            if (lane + 32 < HS) o[lane + 32] = from_f<T>(a1[qi] * inv);
        }
    }
}

/* out (n, H) = CLS or mean pooling of x (T, H), L2-normalised if norm (norm
 * floor 1e-12 as in the reference). One block per sequence. */
__global__ void k_pool(float *out, const float *x, const int *seq_start, int H, int mean,
                       int norm) {
    __shared__ float red[32];
    const int s = blockIdx.x;
    const int t0 = seq_start[s], len = seq_start[s + 1] - t0;
    float *o = out + (size_t)s * H;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        float v;
        if (mean) {
            v = 0.0f;
            for (int t = 0; t < len; t++)
                v += x[(size_t)(t0 + t) * H + c];
            v /= (float)len;
        } else {
            v = x[(size_t)t0 * H + c];
        }
        o[c] = v;
        ss += v * v;
    }
    if (norm) {
        const float inv = 1.0f / fmaxf(sqrtf(block_sum(ss, red)), 1e-12f);
        for (int c = threadIdx.x; c < H; c += blockDim.x)
            o[c] *= inv;
    }
}

#endif
