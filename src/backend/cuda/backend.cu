/* backend.cu — the CUDA backend ("cuda"), built into libembd-cuda.so and
 * loaded by libembd with dlopen (see plugin.h).
 *
 * Forward pass (same semantics as the CPU reference, backend/cpu/ref.c):
 *   x, xh (T, H) = LayerNorm(word + pos + type)          k_embed_ln
 *   per layer:
 *     qkv (T, 3H) = xh Wqkv^T + bqkv                      cuBLASLt, bias epilogue
 *     ctx (T, H)  = attention(qkv) per sequence, head     k_attention (flash style)
 *     tmp (T, H)  = ctx Wo^T + bo                         cuBLASLt, bias epilogue
 *     x, xh       = LayerNorm(x + tmp)                    k_add_ln (fp32 math)
 *     ffn (T, I)  = GELU(xh Wi^T + bi)                    cuBLASLt + k_gelu (exact erf)
 *     tmp (T, H)  = ffn Wf^T + bf                         cuBLASLt, bias epilogue
 *     x, xh       = LayerNorm(x + tmp)                    k_add_ln
 *   out (n, H) = pool(x), L2-normalised                   k_pool
 * x is the fp32 residual stream; xh, qkv, ctx, tmp and ffn are in the
 * weights' type (fp16 by default, bf16 or fp32); matmuls accumulate in fp32.
 * Embedding tables and LayerNorm parameters stay fp32. One stream; ids in and
 * vectors out go through pinned host buffers. */
#include "backend/cuda/timing.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/plugin.h"
#include "backend/cuda/search.cuh"

extern "C" {
#include "model/model.h"
}

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct embd_cuda_host host;

#define WORKSPACE_BYTES ((size_t)32 << 20)
#define RESERVE_BYTES ((size_t)256 << 20) /* left free for the driver and other users */

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

struct embd_backend {
    const struct embd_model *m;
    int dev;
    enum embd_dtype dt; /* FP16, BF16 or FP32 */
    size_t es;          /* bytes per element of dt */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *ws; /* cuBLASLt workspace (WORKSPACE_BYTES) */
    bool dead;
    char dead_why[256];
    /* weights: one device allocation */
    char *wmem;
    size_t wbytes;
    const float *word, *pos, *type, *emb_g, *emb_b; /* fp32 */
    const float *att_bias; /* fp32 (NH, 2P - 1), MPNet's relative bias; NULL for the others */
    struct layer {
        const void *wqkv, *bqkv;        /* (3H, H), (3H) in dt */
        const void *wo, *bo;            /* (H, H), (H) */
        const void *wi, *bi;            /* (I, H), (I) */
        const void *wf, *bf;            /* (H, I), (H) */
        const float *g1, *b1, *g2, *b2; /* (H) fp32 */
    } * layers;
    /* scratch for `cap` tokens: one device allocation, one pinned host block */
    int cap;     /* tokens the scratch fits now (0: none) */
    int cap_max; /* the most tokens the memory budget allows */
    char *smem;  /* device scratch */
    size_t sbytes;
    float *x;             /* (cap, H) fp32 residual stream */
    void *xh;             /* (cap, H) dt */
    void *qkv;            /* (cap, 3H) dt */
    void *ctx;            /* (cap, H) dt */
    void *tmp;            /* (cap, H) dt */
    void *ffn;            /* (cap, I) dt */
    float *dout;          /* (cap, H) fp32 pooled vectors (n <= cap) */
    bool timing;          /* EMBD_CUDA_TIMING (timing.cuh) */
    struct tm_pass tpass; /* its events */
    int *dints;           /* (ints_len(cap)) ids | pos | seq_start | pad | tiles, as hints */
    int *hints;           /* pinned (ints_len(cap)), same layout */
    float *hout;          /* pinned (cap, H) */
    size_t peak, now;
    unsigned long long oom_retries;
};

static enum embd_status ck_cuda(embd_backend *be, cudaError_t err, const char *what,
                                const char *file, int line) {
    if (err == cudaSuccess) return EMBD_OK;
    if (be && embd_cuda_sticky(err)) {
        be->dead = true;
        snprintf(be->dead_why, sizeof be->dead_why, "%s (%s at %s:%d)", cudaGetErrorString(err),
                 what, file, line);
    } else if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it */
    }
    return host.error(EMBD_ERR_BACKEND, "cuda: %s: %s (%s:%d)", what, cudaGetErrorString(err), file,
                      line);
}

static enum embd_status ck_blas(cublasStatus_t s, const char *what, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return EMBD_OK;
    return host.error(EMBD_ERR_BACKEND, "cublasLt: %s: status %d (%s:%d)", what, (int)s, file,
                      line);
}

/* Every CUDA call is checked; the failing call and its file:line are recorded. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        enum embd_status s_ = ck_cuda(be, (call), #call, __FILE__, __LINE__);                      \
        if (s_ != EMBD_OK) return s_;                                                              \
    } while (0)
#define CKB(call)                                                                                  \
    do {                                                                                           \
        enum embd_status s_ = ck_blas((call), #call, __FILE__, __LINE__);                          \
        if (s_ != EMBD_OK) return s_;                                                              \
    } while (0)
/* After every kernel launch. */
#define CKL(name)                                                                                  \
    do {                                                                                           \
        enum embd_status s_ = ck_cuda(be, cudaGetLastError(), name " launch", __FILE__, __LINE__); \
        if (s_ != EMBD_OK) return s_;                                                              \
    } while (0)

/* Test hook: fail the device allocation after this many more succeed. */
static long fail_after = -1;

static cudaError_t dev_alloc(void **p, size_t n) {
    if (fail_after == 0) {
        fail_after = -1;
        *p = NULL;
        return cudaErrorMemoryAllocation;
    }
    if (fail_after > 0) fail_after--;
    return cudaMalloc(p, n);
}

static cudaError_t host_alloc(void **p, size_t n) {
    if (fail_after == 0) {
        fail_after = -1;
        *p = NULL;
        return cudaErrorMemoryAllocation;
    }
    if (fail_after > 0) fail_after--;
    return cudaMallocHost(p, n);
}

static void test_fail_alloc_after(long n) {
    fail_after = n;
}

/* Test hook: a sticky error in the embed call after this many more. */
static long sticky_after = -1;

static void test_sticky_after(long n) {
    sticky_after = n;
}

__global__ void k_trap(void) {
    __trap();
}

static size_t dtype_size(enum embd_dtype dt) {
    return dt == EMBD_DTYPE_FP32 ? 4 : 2;
}

static cudaDataType_t dtype_cuda(enum embd_dtype dt) {
    return dt == EMBD_DTYPE_FP16 ? CUDA_R_16F : dt == EMBD_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static const char *dtype_name(enum embd_dtype dt) {
    return dt == EMBD_DTYPE_FP16 ? "fp16" : dt == EMBD_DTYPE_BF16 ? "bf16" : "fp32";
}

static size_t align256(size_t n) {
    return (n + 255) & ~(size_t)255;
}

static unsigned grid_for(size_t n) {
    size_t g = (n + 255) / 256;
    return (unsigned)(g > 65535 ? 65535 : g ? g : 1);
}

/* ------------------------------------------------------------------------ */
/* Matrix products                                                          */
/* ------------------------------------------------------------------------ */

struct lt_env {
    cublasLtHandle_t lt;
    cudaStream_t stream;
    void *ws;
    size_t ws_bytes;
};

/* y (R, O) = x (R, K) W^T + b, row-major, all in dt, fp32 accumulation.
 * cuBLASLt is column-major: y^T (O, R) = W (O, K) x^T, i.e. A = W seen as
 * (K, O) col-major, transposed; B = x seen as (K, R) col-major. The bias goes
 * in the epilogue when cuBLASLt offers an algorithm for it, else in k_bias. */
static enum embd_status lt_linear(embd_backend *be, const struct lt_env *env, enum embd_dtype dt,
                                  void *y, const void *x, const void *W, const void *b, int R,
                                  int K, int O) {
    const cudaDataType_t ty = dtype_cuda(dt);
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    const float alpha = 1.0f, beta = 0.0f;
    const cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    bool bias_in_epilogue = b != NULL;
    enum embd_status st = EMBD_OK;
    cublasStatus_t cs;
#define LT(call)                                                                                   \
    do {                                                                                           \
        cs = (call);                                                                               \
        if (cs != CUBLAS_STATUS_SUCCESS) {                                                         \
            st = ck_blas(cs, #call, __FILE__, __LINE__);                                           \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
    LT(cublasLtMatrixLayoutCreate(&la, ty, (uint64_t)K, (uint64_t)O, (int64_t)K));
    LT(cublasLtMatrixLayoutCreate(&lb, ty, (uint64_t)K, (uint64_t)R, (int64_t)K));
    LT(cublasLtMatrixLayoutCreate(&lc, ty, (uint64_t)O, (uint64_t)R, (int64_t)O));
    LT(cublasLtMatmulPreferenceCreate(&pref));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                            &env->ws_bytes, sizeof env->ws_bytes));
    if (bias_in_epilogue) {
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b));
        cs = cublasLtMatmulAlgoGetHeuristic(env->lt, op, la, lb, lc, lc, pref, 1, &res, &nres);
        if (cs != CUBLAS_STATUS_SUCCESS || nres < 1) {
            bias_in_epilogue = false;
            epi = CUBLASLT_EPILOGUE_DEFAULT;
            LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        }
    }
    if (!bias_in_epilogue) {
        LT(cublasLtMatmulAlgoGetHeuristic(env->lt, op, la, lb, lc, lc, pref, 1, &res, &nres));
        if (nres < 1) {
            st = host.error(EMBD_ERR_BACKEND, "cublasLt: no algorithm for a %s %dx%dx%d product",
                            dtype_name(dt), R, K, O);
            goto done;
        }
    }
    LT(cublasLtMatmul(env->lt, op, &alpha, W, la, x, lb, &beta, y, lc, y, lc, &res.algo, env->ws,
                      env->ws_bytes, env->stream));
    if (b && !bias_in_epilogue) {
        const size_t n = (size_t)R * O;
        if (dt == EMBD_DTYPE_FP16)
            k_bias<__half>
                <<<grid_for(n), 256, 0, env->stream>>>((__half *)y, (const __half *)b, n, O);
        else if (dt == EMBD_DTYPE_BF16)
            k_bias<__nv_bfloat16><<<grid_for(n), 256, 0, env->stream>>>(
                (__nv_bfloat16 *)y, (const __nv_bfloat16 *)b, n, O);
        else
            k_bias<float><<<grid_for(n), 256, 0, env->stream>>>((float *)y, (const float *)b, n, O);
        st = ck_cuda(be, cudaGetLastError(), "k_bias launch", __FILE__, __LINE__);
    }
#undef LT
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Typed launches                                                           */
/* ------------------------------------------------------------------------ */

template <typename T>
static enum embd_status launch_gelu(embd_backend *be, cudaStream_t s, void *x, size_t n) {
    k_gelu<T><<<grid_for(n), 256, 0, s>>>((T *)x, n);
    CKL("k_gelu");
    return EMBD_OK;
}

template <typename T>
static enum embd_status launch_add_ln(embd_backend *be, cudaStream_t s, float *x, const void *add,
                                      const float *g, const float *b, void *xo, int R, int H,
                                      float eps) {
    k_add_ln<T><<<R, LN_THREADS, H * sizeof(float), s>>>(x, (const T *)add, g, b, (T *)xo, H, eps);
    CKL("k_add_ln");
    return EMBD_OK;
}

template <typename T>
static enum embd_status launch_attention(embd_backend *be, cudaStream_t s, const void *qkv,
                                         void *out, const int *seq_start, const int2 *tiles,
                                         int ntiles, int H, int NH) {
    const int HS = H / NH;
    dim3 grid((unsigned)ntiles, (unsigned)NH);
    k_attention<T><<<grid, ATT_WARPS * 32, 0, s>>>((const T *)qkv, (T *)out, seq_start, tiles, H,
                                                   HS, 1.0f / sqrtf((float)HS), be->att_bias,
                                                   be->m ? be->m->hp.P : 0);
    CKL("k_attention");
    return EMBD_OK;
}

/* Dispatch on dt: F(args) instantiated for float, __half or __nv_bfloat16. */
#define BY_DTYPE(dt, F, ...)                                                                       \
    ((dt) == EMBD_DTYPE_FP16   ? F<__half>(__VA_ARGS__)                                            \
     : (dt) == EMBD_DTYPE_BF16 ? F<__nv_bfloat16>(__VA_ARGS__)                                     \
                               : F<float>(__VA_ARGS__))

/* Fills the tile list for sequences seq_start (n+1): {sequence, first query}
 * for every ATT_Q queries. Returns the count (<= T). */
static int make_tiles(int *tiles, const int *seq_start, int n) {
    int k = 0;
    for (int s = 0; s < n; s++)
        for (int q0 = 0; q0 < seq_start[s + 1] - seq_start[s]; q0 += ATT_Q) {
            tiles[2 * k] = s;
            tiles[2 * k + 1] = q0;
            k++;
        }
    return k;
}

/* ------------------------------------------------------------------------ */
/* Weights                                                                  */
/* ------------------------------------------------------------------------ */

/* Copies n host floats to dst (device) as dt, through stage (device, >= n floats). */
static enum embd_status upload_as(embd_backend *be, enum embd_dtype dt, void *dst, const float *src,
                                  size_t n, float *stage) {
    if (dt == EMBD_DTYPE_FP32) {
        CK(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice));
        return EMBD_OK;
    }
    CK(cudaMemcpy(stage, src, n * sizeof(float), cudaMemcpyHostToDevice));
    if (dt == EMBD_DTYPE_FP16)
        k_convert<__half, float><<<grid_for(n), 256>>>((__half *)dst, stage, n);
    else
        k_convert<__nv_bfloat16, float><<<grid_for(n), 256>>>((__nv_bfloat16 *)dst, stage, n);
    CKL("k_convert");
    CK(cudaDeviceSynchronize()); /* stage is reused by the next upload */
    return EMBD_OK;
}

static enum embd_status upload_weights(embd_backend *be) {
    const embd_hparams *hp = &be->m->hp;
    const embd_weights *w = &be->m->w;
    const size_t H = (size_t)hp->H, I = (size_t)hp->I, es = be->es;
    /* sizes, in order of carving */
    const size_t n_bias = w->att_bias ? (size_t)hp->NH * (2 * (size_t)hp->P - 1) : 0;
    const size_t emb = align256((size_t)hp->V * H * 4) + align256((size_t)hp->P * H * 4) +
                       align256((size_t)hp->TV * H * 4) + 2 * align256(H * 4) +
                       align256(n_bias * 4);
    const size_t per_layer = align256(3 * H * H * es) + align256(3 * H * es) +
                             align256(H * H * es) + align256(H * es) + align256(I * H * es) +
                             align256(I * es) + align256(H * I * es) + align256(H * es) +
                             4 * align256(H * 4);
    size_t stage_n = 3 * H * H > I * H ? 3 * H * H : I * H;
    if (stage_n < n_bias) stage_n = n_bias;
    be->wbytes = emb + (size_t)hp->L * per_layer;
    void *p = NULL;
    CK(dev_alloc(&p, be->wbytes));
    be->wmem = (char *)p;
    be->now += be->wbytes;
    float *stage = NULL;
    float *hbuf = NULL; /* host (3H, H) fp32 concatenation of q, k, v */
    enum embd_status st = EMBD_OK;
    char *cur = be->wmem;
    auto take = [&](size_t bytes) {
        char *r = cur;
        cur += align256(bytes);
        return (void *)r;
    };
    if ((st = ck_cuda(be, dev_alloc((void **)&stage, stage_n * 4), "cudaMalloc(stage)", __FILE__,
                      __LINE__)) != EMBD_OK)
        return st;
    hbuf = (float *)host.malloc(3 * H * (H > I ? H : I) * sizeof(float));
    if (!hbuf) {
        st = host.error(EMBD_ERR_NOMEM, "cuda backend: out of memory staging weights");
        goto done;
    }
#define UP(dt, dst, src, n)                                                                        \
    do {                                                                                           \
        if ((st = upload_as(be, (dt), (dst), (src), (n), stage)) != EMBD_OK) goto done;            \
    } while (0)
    {
        void *d;
        d = take((size_t)hp->V * H * 4), be->word = (const float *)d;
        UP(EMBD_DTYPE_FP32, d, w->word_emb, (size_t)hp->V * H);
        /* the RoBERTa family also reads the padding row, the one before
         * position 0 (embd_positions: -1, sent as 0 with the others + 1) */
        const int prow = hp->pos_offset > 0;
        d = take((size_t)(hp->P + prow) * H * 4), be->pos = (const float *)d;
        UP(EMBD_DTYPE_FP32, d, w->pos_emb - (size_t)prow * H, (size_t)(hp->P + prow) * H);
        d = take((size_t)hp->TV * H * 4), be->type = (const float *)d;
        UP(EMBD_DTYPE_FP32, d, w->type_emb, (size_t)hp->TV * H);
        d = take(H * 4), be->emb_g = (const float *)d;
        UP(EMBD_DTYPE_FP32, d, w->emb_ln_g, H);
        d = take(H * 4), be->emb_b = (const float *)d;
        UP(EMBD_DTYPE_FP32, d, w->emb_ln_b, H);
        if (n_bias) {
            d = take(n_bias * 4), be->att_bias = (const float *)d;
            UP(EMBD_DTYPE_FP32, d, w->att_bias, n_bias);
        }
        for (int l = 0; l < hp->L; l++) {
            const embd_layer_weights *lw = &w->layers[l];
            struct embd_backend::layer *ly = &be->layers[l];
            memcpy(hbuf, lw->q_w, H * H * 4);
            memcpy(hbuf + H * H, lw->k_w, H * H * 4);
            memcpy(hbuf + 2 * H * H, lw->v_w, H * H * 4);
            d = take(3 * H * H * es), ly->wqkv = d;
            UP(be->dt, d, hbuf, 3 * H * H);
            memcpy(hbuf, lw->q_b, H * 4);
            memcpy(hbuf + H, lw->k_b, H * 4);
            memcpy(hbuf + 2 * H, lw->v_b, H * 4);
            d = take(3 * H * es), ly->bqkv = d;
            UP(be->dt, d, hbuf, 3 * H);
            d = take(H * H * es), ly->wo = d;
            UP(be->dt, d, lw->o_w, H * H);
            d = take(H * es), ly->bo = d;
            UP(be->dt, d, lw->o_b, H);
            d = take(I * H * es), ly->wi = d;
            UP(be->dt, d, lw->i_w, I * H);
            d = take(I * es), ly->bi = d;
            UP(be->dt, d, lw->i_b, I);
            d = take(H * I * es), ly->wf = d;
            UP(be->dt, d, lw->f_w, H * I);
            d = take(H * es), ly->bf = d;
            UP(be->dt, d, lw->f_b, H);
            d = take(H * 4), ly->g1 = (const float *)d;
            UP(EMBD_DTYPE_FP32, d, lw->ln1_g, H);
            d = take(H * 4), ly->b1 = (const float *)d;
            UP(EMBD_DTYPE_FP32, d, lw->ln1_b, H);
            d = take(H * 4), ly->g2 = (const float *)d;
            UP(EMBD_DTYPE_FP32, d, lw->ln2_g, H);
            d = take(H * 4), ly->b2 = (const float *)d;
            UP(EMBD_DTYPE_FP32, d, lw->ln2_b, H);
        }
    }
#undef UP
    if ((size_t)(cur - be->wmem) != be->wbytes)
        st = host.error(EMBD_ERR_INTERNAL, "cuda backend: weight layout mismatch");
done:
    host.free(hbuf);
    if (stage) cudaFree(stage);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Scratch                                                                  */
/* ------------------------------------------------------------------------ */

/* The int block for cap tokens: ids (C) | pos (C) | seq_start (C + 1) | pad |
 * tiles (2C, int2-aligned at tiles_off(C)). */
static size_t tiles_off(size_t C) {
    return (3 * C + 2) & ~(size_t)1;
}

static size_t ints_len(size_t C) {
    return tiles_off(C) + 2 * C;
}

static size_t bytes_per_token(const embd_backend *be) {
    const size_t H = (size_t)be->m->hp.H, I = (size_t)be->m->hp.I, es = be->es;
    return 4 * H /* x */ + es * (H + 3 * H + H + H + I) /* xh qkv ctx tmp ffn */ + 4 * H /* out */ +
           5 * 4 /* ints */;
}

static void free_scratch(embd_backend *be) {
    if (be->smem) cudaFree(be->smem);
    if (be->hints) cudaFreeHost(be->hints);
    if (be->hout) cudaFreeHost(be->hout);
    be->now -= be->sbytes;
    be->smem = NULL;
    be->hints = NULL;
    be->hout = NULL;
    be->sbytes = 0;
    be->cap = 0;
}

static cudaError_t alloc_scratch(embd_backend *be, int cap) {
    const size_t H = (size_t)be->m->hp.H, I = (size_t)be->m->hp.I, es = be->es, C = (size_t)cap;
    const size_t sz[] = {C * H * 4,  C * H * es, 3 * C * H * es, C * H * es,
                         C * H * es, C * I * es, C * H * 4,      ints_len(C) * 4};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++)
        total += align256(sz[i]);
    void *p = NULL;
    cudaError_t e = dev_alloc(&p, total);
    if (e != cudaSuccess) return e;
    be->smem = (char *)p;
    be->sbytes = total;
    be->now += total;
    if (be->now > be->peak) be->peak = be->now;
    char *cur = be->smem;
    void **dst[] = {(void **)&be->x, &be->xh,  &be->qkv,           &be->ctx,
                    &be->tmp,        &be->ffn, (void **)&be->dout, (void **)&be->dints};
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        *dst[i] = cur;
        cur += align256(sz[i]);
    }
    if ((e = host_alloc(&p, ints_len(C) * 4)) != cudaSuccess) return e;
    be->hints = (int *)p;
    if ((e = host_alloc(&p, C * H * 4)) != cudaSuccess) return e;
    be->hout = (float *)p;
    be->cap = cap;
    return cudaSuccess;
}

/* Makes the scratch fit `want` tokens (<= cap_max). An allocation failure
 * halves the size and retries, down to one input of the model's maximum
 * length; below that the batch cannot run here (EMBD_ERR_BACKEND). */
static enum embd_status ensure_scratch(embd_backend *be, int want) {
    if (be->cap >= want) return EMBD_OK;
    free_scratch(be);
    const int floor = be->m->hp.max_tokens;
    int c = want;
    for (;;) {
        cudaError_t e = alloc_scratch(be, c);
        if (e == cudaSuccess) return EMBD_OK;
        free_scratch(be);
        if (e != cudaErrorMemoryAllocation)
            return ck_cuda(be, e, "allocating scratch", __FILE__, __LINE__);
        (void)cudaGetLastError();
        be->oom_retries++;
        if (c <= floor)
            return host.error(EMBD_ERR_BACKEND,
                              "cuda: out of GPU memory even for %d tokens (one input)", c);
        c = c / 2 < floor ? floor : c / 2;
        be->cap_max = c; /* remember: do not try bigger again */
    }
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                  */
/* ------------------------------------------------------------------------ */

/* One forward pass over n sequences, T tokens (T <= be->cap): ids (T),
 * seq_start (n+1) rebased to 0. Writes out (n, H). */
template <typename T>
static enum embd_status forward(embd_backend *be, float *out, const int32_t *ids,
                                const int32_t *types, const int32_t *seq_start, int n, int Tn,
                                bool normalize) {
    const embd_hparams *hp = &be->m->hp;
    const int H = hp->H, I = hp->I, C = be->cap;
    const cudaStream_t s = be->stream;
    const struct lt_env env = {be->lt, s, be->ws, WORKSPACE_BYTES};
    enum embd_status st;
    /* host ints: ids (C) | pos and type (C) | seq_start (C + 1) | pad | tiles (2C);
     * a token's position in its low EMBD_POS_BITS bits, its type id above */
    int *hids = be->hints, *hpos = be->hints + C, *hss = be->hints + 2 * C;
    int *htiles = be->hints + tiles_off((size_t)C);
    /* EMBD_CUDA_TIMING: host timers and an event after each operation */
    struct tm_pass *tp = be->timing ? &be->tpass : NULL;
    const double t0 = tp ? tm_now_ms() : 0;
    double len2 = 0; /* sum of squared sequence lengths: attention's work */
    memcpy(hids, ids, (size_t)Tn * sizeof(int));
    const int prow = hp->pos_offset > 0; /* the padding row is row 0 on the device */
    for (int i = 0; i < n; i++) {
        const int len = seq_start[i + 1] - seq_start[i];
        hss[i] = seq_start[i];
        len2 += (double)len * len;
        embd_positions(hp, ids + seq_start[i], len, hpos + seq_start[i]);
        for (int t = seq_start[i]; t < seq_start[i + 1]; t++)
            hpos[t] = (hpos[t] + prow) | (types ? types[t] << EMBD_POS_BITS : 0);
    }
    hss[n] = seq_start[n];
    const int ntiles = make_tiles(htiles, hss, n);
    const int *dids = be->dints, *dpos = be->dints + C, *dss = be->dints + 2 * C;
    const int2 *dtiles = (const int2 *)(be->dints + tiles_off((size_t)C));
    double t1 = 0;
    if (tp) {
        tp->t_pack = tm_now_ms() - t0;
        t1 = tm_now_ms();
        if (!tm_begin(tp, hp->L, s)) tp = NULL;
    }
    /* after each operation: its phase, and its useful FLOPs or bytes moved */
    const double Td = Tn, es = (double)be->es, gemm = 2.0 * Td * H;
#define MARK(k, flop, bytes)                                                                       \
    do {                                                                                           \
        if (tp) tm_mark(tp, s, k, flop, bytes);                                                    \
    } while (0)
    CK(cudaMemcpyAsync(be->dints, be->hints, ints_len((size_t)C) * sizeof(int),
                       cudaMemcpyHostToDevice, s));
    MARK(TM_H2D, 0, (double)ints_len((size_t)C) * sizeof(int));

    k_embed_ln<T><<<Tn, LN_THREADS, H * sizeof(float), s>>>(be->x, (T *)be->xh, dids, dpos,
                                                            be->word, be->pos, be->type, be->emb_g,
                                                            be->emb_b, H, hp->ln_eps);
    CKL("k_embed_ln");
    MARK(TM_EMBED_LN, 0, Td * H * (16.0 + es));
    for (int l = 0; l < hp->L; l++) {
        const struct embd_backend::layer *ly = &be->layers[l];
        if ((st = lt_linear(be, &env, be->dt, be->qkv, be->xh, ly->wqkv, ly->bqkv, Tn, H, 3 * H)))
            return st;
        MARK(TM_QKV, gemm * 3 * H, 0);
        if ((st = launch_attention<T>(be, s, be->qkv, be->ctx, dss, dtiles, ntiles, H, hp->NH)))
            return st;
        MARK(TM_ATTN, 4.0 * len2 * H, 0);
        if ((st = lt_linear(be, &env, be->dt, be->tmp, be->ctx, ly->wo, ly->bo, Tn, H, H)))
            return st;
        MARK(TM_O, gemm * H, 0);
        if ((st = launch_add_ln<T>(be, s, be->x, be->tmp, ly->g1, ly->b1, be->xh, Tn, H,
                                   hp->ln_eps)))
            return st;
        MARK(TM_ADD_LN1, 0, Td * H * (8.0 + 2.0 * es));
        if ((st = lt_linear(be, &env, be->dt, be->ffn, be->xh, ly->wi, ly->bi, Tn, H, I)))
            return st;
        MARK(TM_FFN_IN, gemm * I, 0);
        if ((st = launch_gelu<T>(be, s, be->ffn, (size_t)Tn * I))) return st;
        MARK(TM_GELU, 0, Td * I * 2.0 * es);
        if ((st = lt_linear(be, &env, be->dt, be->tmp, be->ffn, ly->wf, ly->bf, Tn, I, H)))
            return st;
        MARK(TM_FFN_OUT, gemm * I, 0);
        if ((st = launch_add_ln<T>(be, s, be->x, be->tmp, ly->g2, ly->b2, be->xh, Tn, H,
                                   hp->ln_eps)))
            return st;
        MARK(TM_ADD_LN2, 0, Td * H * (8.0 + 2.0 * es));
    }
    k_pool<<<n, POOL_THREADS, 0, s>>>(be->dout, be->x, dss, H, hp->pooling == EMBD_POOL_MEAN,
                                      normalize && hp->normalize);
    CKL("k_pool");
    MARK(TM_POOL, 0, Td * H * 4.0 + (double)n * H * 4.0);
    CK(cudaMemcpyAsync(be->hout, be->dout, (size_t)n * H * sizeof(float), cudaMemcpyDeviceToHost,
                       s));
    MARK(TM_D2H, 0, (double)n * H * 4.0);
#undef MARK
    double t2 = 0;
    if (tp) {
        tp->t_enqueue = tm_now_ms() - t1;
        t2 = tm_now_ms();
    }
    CK(cudaStreamSynchronize(s));
    const double t3 = tp ? tm_now_ms() : 0;
    memcpy(out, be->hout, (size_t)n * H * sizeof(float));
    if (tp) tm_end(tp, s, n, Tn, t3 - t2, tm_now_ms() - t3);
    return EMBD_OK;
}

static enum embd_status gpu_embed(embd_backend *be, float *out, const embd_batch *batch,
                                  bool normalize) {
    if (!be || !out || !batch)
        return host.error(EMBD_ERR_INVALID_ARG, "cuda backend: NULL argument");
    if (be->dead)
        return host.error(EMBD_ERR_BACKEND, "cuda backend is dead after %s", be->dead_why);
    enum embd_status st = host.batch_check(batch, be->m);
    if (st != EMBD_OK) return st;
    const int H = be->m->hp.H;
    CK(cudaSetDevice(be->dev));
    /* A failed call leaves its error behind for cudaGetLastError, which the
     * launch checks read: clear anything stale (a sticky error returns). */
    CK(cudaGetLastError());
    if (sticky_after == 0) { /* test hook: the context dies here, as on a faulting GPU */
        sticky_after = -1;
        k_trap<<<1, 1, 0, be->stream>>>();
        CK(cudaStreamSynchronize(be->stream));
    } else if (sticky_after > 0) {
        sticky_after--;
    }
    int want = batch->n_tok < be->cap_max ? batch->n_tok : be->cap_max;
    if (want < 4096 && be->cap_max >= 4096) want = 4096; /* avoid regrowing for small batches */
    if ((st = ensure_scratch(be, want)) != EMBD_OK) return st;
    /* Sub-batches of whole sequences that fit the scratch. */
    int i = 0;
    const int n = batch->n_seq;
    while (i < n) {
        int j = i + 1;
        while (j < n && batch->seq_start[j + 1] - batch->seq_start[i] <= be->cap)
            j++;
        const int32_t *ss = batch->seq_start + i;
        /* rebase seq_start to 0 when this sub-batch does not start the batch */
        int32_t *rebased = NULL;
        if (ss[0] != 0) {
            rebased = (int32_t *)host.malloc((size_t)(j - i + 1) * sizeof(int32_t));
            if (!rebased) return host.error(EMBD_ERR_NOMEM, "cuda backend: out of memory");
            for (int k = 0; k <= j - i; k++)
                rebased[k] = ss[k] - ss[0];
            ss = rebased;
        }
        st = BY_DTYPE(be->dt, forward, be, out + (size_t)i * H, batch->ids + batch->seq_start[i],
                      batch->type_ids ? batch->type_ids + batch->seq_start[i] : NULL, ss, j - i,
                      ss[j - i], normalize);
        host.free(rebased);
        if (st != EMBD_OK) return st;
        i = j;
    }
    return EMBD_OK;
}

/* ------------------------------------------------------------------------ */
/* Init, free, trim                                                         */
/* ------------------------------------------------------------------------ */

static void gpu_free(embd_backend *be) {
    if (!be) return;
    if (be->dead) { /* the context is gone; freeing would only report errors */
        free(be->tpass.ev);
        host.free(be->layers);
        host.free(be);
        return;
    }
    cudaSetDevice(be->dev);
    if (be->stream) cudaStreamSynchronize(be->stream);
    tm_free(&be->tpass);
    free_scratch(be);
    if (be->wmem) cudaFree(be->wmem);
    if (be->ws) cudaFree(be->ws);
    if (be->lt) cublasLtDestroy(be->lt);
    if (be->stream) cudaStreamDestroy(be->stream);
    host.free(be->layers);
    host.free(be);
    (void)cudaGetLastError(); /* leave no stale error behind */
}

static void gpu_trim(embd_backend *be) {
    if (!be || be->dead) return;
    cudaSetDevice(be->dev);
    if (be->stream) cudaStreamSynchronize(be->stream);
    free_scratch(be);
    (void)cudaGetLastError();
}

static enum embd_status init_inner(embd_backend *be, const embd_backend_params *params) {
    const embd_hparams *hp = &be->m->hp;
    int count = 0;
    CK(cudaGetDeviceCount(&count));
    if (be->dev < 0 || be->dev >= count)
        return host.error(EMBD_ERR_UNSUPPORTED, "cuda: no device %d (%d found)", be->dev, count);
    CK(cudaSetDevice(be->dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, be->dev));
    const int cc = prop.major * 10 + prop.minor;
    if (cc < 75)
        return host.error(EMBD_ERR_UNSUPPORTED,
                          "cuda: %s has compute capability %d.%d; embd needs 7.5 or newer",
                          prop.name, prop.major, prop.minor);
    if (be->dt == EMBD_DTYPE_BF16 && cc < 80)
        return host.error(EMBD_ERR_UNSUPPORTED,
                          "cuda: bf16 needs compute capability 8.0 or newer (%s has %d.%d)",
                          prop.name, prop.major, prop.minor);
    CK(cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking));
    CKB(cublasLtCreate(&be->lt));
    CK(dev_alloc(&be->ws, WORKSPACE_BYTES));
    be->now += WORKSPACE_BYTES;
    enum embd_status st = upload_weights(be);
    if (st != EMBD_OK) return st;
    if (be->now > be->peak) be->peak = be->now;
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    size_t avail = free_b > RESERVE_BYTES ? free_b - RESERVE_BYTES : 0;
    /* the memory limit (--gpu-memory-limit, $EMBD_GPU_MEMORY_LIMIT), resolved by libembd */
    const size_t limit = params->gpu_mem_limit_bytes
                             ? params->gpu_mem_limit_bytes
                             : (size_t)(params->gpu_mem_limit_fraction * (double)total_b);
    if (limit > 0) {
        const size_t room = (size_t)limit > be->now ? (size_t)limit - be->now : 0;
        if (room < avail) avail = room;
    }
    size_t cap = avail / bytes_per_token(be);
    if (cap > (size_t)params->max_batch_tokens) cap = (size_t)params->max_batch_tokens;
    if (cap < (size_t)hp->max_tokens && limit > 0 &&
        limit - (limit > be->now ? be->now : limit) <= avail)
        return host.error(EMBD_ERR_NOMEM,
                          "cuda: the GPU memory limit (%zu MiB) leaves no room on %s for one "
                          "input of %d tokens after the weights (%zu MiB)",
                          limit >> 20, prop.name, hp->max_tokens, be->now >> 20);
    if (cap < (size_t)hp->max_tokens)
        return host.error(EMBD_ERR_NOMEM,
                          "cuda: %zu MiB free on %s after the weights; not enough for one input "
                          "of %d tokens",
                          free_b >> 20, prop.name, hp->max_tokens);
    be->cap_max = (int)cap;
    return EMBD_OK;
}

static enum embd_status gpu_init(embd_backend **out, const struct embd_model *model,
                                 const embd_backend_params *params) {
    *out = NULL;
    if (!model || !params) return host.error(EMBD_ERR_INVALID_ARG, "cuda backend: NULL argument");
    const embd_hparams *hp = &model->hp;
    if (hp->H < 1 || hp->NH < 1 || hp->H % hp->NH || hp->I < 1 || hp->L < 0 || hp->P < 1 ||
        hp->V < 1 || hp->TV < 1)
        return host.error(EMBD_ERR_INVALID_ARG, "cuda backend: bad model dimensions");
    if (hp->H / hp->NH > ATT_HS_MAX || hp->H > 8192)
        return host.error(EMBD_ERR_UNSUPPORTED,
                          "cuda backend: head size %d (at most %d) or hidden size %d (at most "
                          "8192) not supported",
                          hp->H / hp->NH, ATT_HS_MAX, hp->H);
    embd_backend *be = (embd_backend *)host.malloc(sizeof *be);
    if (!be) return host.error(EMBD_ERR_NOMEM, "cuda backend: out of memory");
    memset(be, 0, sizeof *be);
    be->m = model;
    be->dev = params->device_index;
    be->dt = params->dtype == EMBD_DTYPE_AUTO ? EMBD_DTYPE_FP16 : params->dtype;
    be->timing = tm_enabled();
    be->es = dtype_size(be->dt);
    be->layers = (struct embd_backend::layer *)host.malloc((size_t)(hp->L ? hp->L : 1) *
                                                           sizeof(struct embd_backend::layer));
    if (!be->layers) {
        host.free(be);
        return host.error(EMBD_ERR_NOMEM, "cuda backend: out of memory");
    }
    enum embd_status st = init_inner(be, params);
    if (st != EMBD_OK) {
        gpu_free(be);
        return st;
    }
    *out = be;
    return EMBD_OK;
}

static bool gpu_is_dead(const embd_backend *be) {
    return be && be->dead;
}

static void gpu_mem_stats(const embd_backend *be, struct embd_backend_mem_stats *o) {
    memset(o, 0, sizeof *o);
    if (!be) return;
    o->weights = be->wbytes;
    o->scratch = be->sbytes;
    o->peak = be->peak;
    o->token_capacity = be->cap;
    o->oom_retries = be->oom_retries;
}

static const struct embd_backend_ops cuda_ops = {
    "cuda", gpu_init, gpu_free, gpu_embed, gpu_trim, gpu_is_dead, gpu_mem_stats,
};

/* ------------------------------------------------------------------------ */
/* Probes                                                                   */
/* ------------------------------------------------------------------------ */

static int probe_driver_version(void) {
    int v = 0;
    if (cudaDriverGetVersion(&v) != cudaSuccess) return 0;
    return v;
}

static int probe_runtime_version(void) {
    int v = 0;
    /* the static runtime of CUDA 11.8 answers only with a driver present:
     * then the version it was built with */
    if (cudaRuntimeGetVersion(&v) != cudaSuccess || v <= 0) {
        (void)cudaGetLastError();
        v = CUDART_VERSION;
    }
    return v;
}

static int probe_device_count(char *why, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, cap, "%s", cudaGetErrorString(e));
        return -1;
    }
    return n;
}

static int probe_device_info(int index, struct embd_cuda_device_info *o, char *why, size_t cap) {
    memset(o, 0, sizeof *o);
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, index);
    if (e == cudaSuccess) e = cudaSetDevice(index);
    size_t fr = 0, tot = 0;
    if (e == cudaSuccess) e = cudaMemGetInfo(&fr, &tot);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, cap, "device %d: %s", index, cudaGetErrorString(e));
        return -1;
    }
    snprintf(o->name, sizeof o->name, "%s", prop.name);
    o->major = prop.major;
    o->minor = prop.minor;
    o->total_mem = tot;
    o->free_mem = fr;
    o->multiprocessors = prop.multiProcessorCount;
    if (cudaDeviceGetPCIBusId(o->pci_bus_id, (int)sizeof o->pci_bus_id, index) != cudaSuccess) {
        (void)cudaGetLastError();
        o->pci_bus_id[0] = '\0';
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Test hooks: single ops on host data                                      */
/* ------------------------------------------------------------------------ */

/* A throwaway environment for one op: stream, cuBLASLt, workspace, buffers. */
enum { TEST_BUFS = 16 };
struct test_env {
    embd_backend be; /* only dev, dead, dead_why are used */
    struct lt_env lt;
    void *bufs[TEST_BUFS];
    int nbufs;
};

/* cudaMalloc of bytes into *out, remembered in t for test_close. (The
 * array once held 8 while add_layernorm took 9 buffers: the ninth pointer
 * overwrote nbufs, and test_close then walked off the stack whenever the
 * pointer's low half read as a large positive int: a segfault in about
 * half the runs of test_cuda_ops on an H100.) */
static enum embd_status test_alloc(struct test_env *t, size_t bytes, void **out) {
    embd_backend *be = &t->be;
    *out = NULL;
    if (t->nbufs == TEST_BUFS)
        return host.error(EMBD_ERR_INTERNAL, "cuda test hooks: more than %d buffers", TEST_BUFS);
    CK(cudaMalloc(out, bytes));
    t->bufs[t->nbufs++] = *out;
    return EMBD_OK;
}

static enum embd_status test_open(struct test_env *t, int dev) {
    memset(t, 0, sizeof *t);
    embd_backend *be = &t->be;
    be->dev = dev;
    CK(cudaSetDevice(dev));
    CK(cudaStreamCreateWithFlags(&t->lt.stream, cudaStreamNonBlocking));
    CKB(cublasLtCreate(&t->lt.lt));
    t->lt.ws_bytes = WORKSPACE_BYTES;
    CK(cudaMalloc(&t->lt.ws, WORKSPACE_BYTES));
    return EMBD_OK;
}

static void test_close(struct test_env *t) {
    if (t->lt.stream) cudaStreamSynchronize(t->lt.stream);
    for (int i = 0; i < t->nbufs; i++)
        cudaFree(t->bufs[i]);
    if (t->lt.ws) cudaFree(t->lt.ws);
    if (t->lt.lt) cublasLtDestroy(t->lt.lt);
    if (t->lt.stream) cudaStreamDestroy(t->lt.stream);
}

/* A device buffer of n elements of dt, filled from src (host fp32) if given. */
static enum embd_status test_buf(struct test_env *t, enum embd_dtype dt, size_t n, const float *src,
                                 void **out) {
    void *p = NULL, *stage = NULL;
    enum embd_status st = test_alloc(t, n * dtype_size(dt) + 16, &p);
    if (st) return st;
    *out = p;
    if (!src) return EMBD_OK;
    st = test_alloc(t, n * 4 + 16, &stage);
    if (st) return st;
    return upload_as(&t->be, dt, p, src, n, (float *)stage);
}

/* Copies n elements of dt from src (device) to dst (host fp32). */
static enum embd_status test_get(struct test_env *t, enum embd_dtype dt, float *dst,
                                 const void *src, size_t n) {
    embd_backend *be = &t->be;
    CK(cudaStreamSynchronize(t->lt.stream));
    void *stage = NULL;
    if (dt != EMBD_DTYPE_FP32) {
        enum embd_status st = test_alloc(t, n * 4 + 16, &stage);
        if (st) return st;
        if (dt == EMBD_DTYPE_FP16)
            k_convert<float, __half><<<grid_for(n), 256>>>((float *)stage, (const __half *)src, n);
        else
            k_convert<float, __nv_bfloat16>
                <<<grid_for(n), 256>>>((float *)stage, (const __nv_bfloat16 *)src, n);
        CKL("k_convert");
        src = stage;
    }
    CK(cudaMemcpy(dst, src, n * 4, cudaMemcpyDeviceToHost));
    return EMBD_OK;
}

static enum embd_status test_linear(int dev, enum embd_dtype dt, float *out, const float *x,
                                    const float *W, const float *b, int R, int K, int O,
                                    bool gelu) {
    struct test_env t;
    embd_backend *be = &t.be;
    void *dx, *dw, *db = NULL, *dy;
    enum embd_status st = test_open(&t, dev);
    if (!st) st = test_buf(&t, dt, (size_t)R * K, x, &dx);
    if (!st) st = test_buf(&t, dt, (size_t)O * K, W, &dw);
    if (!st && b) st = test_buf(&t, dt, (size_t)O, b, &db);
    if (!st) st = test_buf(&t, dt, (size_t)R * O, NULL, &dy);
    if (!st) st = lt_linear(be, &t.lt, dt, dy, dx, dw, db, R, K, O);
    if (!st && gelu) st = BY_DTYPE(dt, launch_gelu, be, t.lt.stream, dy, (size_t)R * O);
    if (!st) st = test_get(&t, dt, out, dy, (size_t)R * O);
    test_close(&t);
    return st;
}

static enum embd_status test_add_layernorm(int dev, enum embd_dtype dt, float *out, const float *x,
                                           const float *add, const float *g, const float *b, int R,
                                           int H, float eps) {
    struct test_env t;
    embd_backend *be = &t.be;
    void *dx, *da, *dg, *db, *dxo;
    enum embd_status st = test_open(&t, dev);
    if (!st) st = test_buf(&t, EMBD_DTYPE_FP32, (size_t)R * H, x, &dx);
    if (!st) st = test_buf(&t, dt, (size_t)R * H, add, &da);
    if (!st) st = test_buf(&t, EMBD_DTYPE_FP32, (size_t)H, g, &dg);
    if (!st) st = test_buf(&t, EMBD_DTYPE_FP32, (size_t)H, b, &db);
    if (!st) st = test_buf(&t, dt, (size_t)R * H, NULL, &dxo);
    if (!st)
        st = BY_DTYPE(dt, launch_add_ln, be, t.lt.stream, (float *)dx, da, (const float *)dg,
                      (const float *)db, dxo, R, H, eps);
    /* the fp32 stream x is the result; xo is the same rounded to dt */
    if (!st) st = test_get(&t, EMBD_DTYPE_FP32, out, dx, (size_t)R * H);
    test_close(&t);
    return st;
}

static enum embd_status test_attention(int dev, enum embd_dtype dt, float *out, const float *qkv,
                                       const int *seq_start, int n, int H, int NH) {
    struct test_env t;
    embd_backend *be = &t.be;
    void *dq, *dout, *dss, *dtiles;
    const int Tn = seq_start[n];
    int *tiles = (int *)host.malloc((size_t)2 * Tn * sizeof(int));
    if (!tiles) return host.error(EMBD_ERR_NOMEM, "out of memory");
    const int ntiles = make_tiles(tiles, seq_start, n);
    enum embd_status st = test_open(&t, dev);
    if (!st) st = test_buf(&t, dt, (size_t)Tn * 3 * H, qkv, &dq);
    if (!st) st = test_buf(&t, dt, (size_t)Tn * H, NULL, &dout);
    if (!st) st = test_buf(&t, EMBD_DTYPE_FP32, (size_t)n + 1, NULL, &dss);
    if (!st) st = test_buf(&t, EMBD_DTYPE_FP32, (size_t)2 * ntiles, NULL, &dtiles);
    if (!st)
        st = ck_cuda(be, cudaMemcpy(dss, seq_start, (size_t)(n + 1) * 4, cudaMemcpyHostToDevice),
                     "cudaMemcpy", __FILE__, __LINE__);
    if (!st)
        st = ck_cuda(be, cudaMemcpy(dtiles, tiles, (size_t)2 * ntiles * 4, cudaMemcpyHostToDevice),
                     "cudaMemcpy", __FILE__, __LINE__);
    if (!st)
        st = BY_DTYPE(dt, launch_attention, be, t.lt.stream, dq, dout, (const int *)dss,
                      (const int2 *)dtiles, ntiles, H, NH);
    if (!st) st = test_get(&t, dt, out, dout, (size_t)Tn * H);
    test_close(&t);
    host.free(tiles);
    return st;
}

static enum embd_status test_pool(int dev, float *out, const float *x, const int *seq_start, int n,
                                  int H, bool mean, bool normalize) {
    struct test_env t;
    embd_backend *be = &t.be;
    void *dx, *dout, *dss;
    const int Tn = seq_start[n];
    enum embd_status st = test_open(&t, dev);
    if (!st) st = test_buf(&t, EMBD_DTYPE_FP32, (size_t)Tn * H, x, &dx);
    if (!st) st = test_buf(&t, EMBD_DTYPE_FP32, (size_t)n * H, NULL, &dout);
    if (!st) st = test_buf(&t, EMBD_DTYPE_FP32, (size_t)n + 1, NULL, &dss);
    if (!st)
        st = ck_cuda(be, cudaMemcpy(dss, seq_start, (size_t)(n + 1) * 4, cudaMemcpyHostToDevice),
                     "cudaMemcpy", __FILE__, __LINE__);
    if (!st) {
        k_pool<<<n, POOL_THREADS, 0, t.lt.stream>>>((float *)dout, (const float *)dx,
                                                    (const int *)dss, H, mean, normalize);
        st = ck_cuda(be, cudaGetLastError(), "k_pool", __FILE__, __LINE__);
    }
    if (!st) st = test_get(&t, EMBD_DTYPE_FP32, out, dout, (size_t)n * H);
    test_close(&t);
    return st;
}

static const struct embd_cuda_testops testops = {
    test_linear, test_add_layernorm,    test_attention,
    test_pool,   test_fail_alloc_after, test_sticky_after,
};

static const struct embd_cuda_plugin plugin = {
    EMBD_CUDA_ABI,     &cuda_ops, probe_driver_version,  probe_runtime_version, probe_device_count,
    probe_device_info, &testops,  &embd_cuda_search_ops,
};

extern "C" __attribute__((visibility("default"))) const struct embd_cuda_plugin *
embd_cuda_plugin_get(int abi, const struct embd_cuda_host *h) {
    if (abi != EMBD_CUDA_ABI || !h || !h->error || !h->malloc || !h->free || !h->batch_check)
        return NULL;
    host = *h;
    embd_cuda_search_bind(h);
    return &plugin;
}
