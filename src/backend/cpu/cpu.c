/* cpu.c — the fast CPU backend ("cpu"): the same encoder as the reference
 * (ref.c) with matrix products through OpenBLAS and the rest in OpenMP loops.
 *
 * Threading: one pool only. OpenBLAS is set to one thread and every GEMM is
 * split by this file across OpenMP threads (by rows of the activations, or by
 * output columns when the batch is small), so BLAS and OpenMP threads never
 * fight for the cores. The epilogue of each GEMM (bias, GELU, residual +
 * LayerNorm) runs in the same parallel region right after it, while the rows
 * are still in cache.
 *
 * Attention runs per (sequence, head) task, dynamically scheduled: K of the
 * head is transposed into thread scratch (HS, len) so that scores for a query
 * are HS axpy passes over len, and the context is an axpy over HS per key.
 *
 * Shape letters as in backend/backend.h; `len` is one sequence's length. */
#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/cpu_math.h"
#include "model/model.h"
#include "util/util.h"

#include <cblas.h>
#undef I /* <complex.h>, pulled in by cblas.h, defines I; here I is the FFN size */
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Hot loops are compiled twice, for the baseline x86-64 the library is built
 * for and for AVX2+FMA, and the backend picks one at init from what the CPU
 * has: each such function is written once as an always-inline body and
 * wrapped by DEFINE_DISPATCHED. (GCC's target_clones("arch=haswell") would
 * test for an Intel Haswell by name and miss AMD CPUs with the same ISA.) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
#define EMBD_HAVE_DISPATCH 1
#define DEFINE_DISPATCHED(name, params, args)                                                      \
    __attribute__((target("avx2,fma"))) static void name##_avx2 params {                           \
        name##_body args;                                                                          \
    }                                                                                              \
    static void name##_base params {                                                               \
        name##_body args;                                                                          \
    }                                                                                              \
    static void name params {                                                                      \
        if (cpu_has_avx2)                                                                          \
            name##_avx2 args;                                                                      \
        else                                                                                       \
            name##_base args;                                                                      \
    }
#else
#define EMBD_HAVE_DISPATCH 0
#define DEFINE_DISPATCHED(name, params, args)                                                      \
    static void name params {                                                                      \
        name##_body args;                                                                          \
    }
#endif
#define BODY static inline __attribute__((always_inline)) void

/* Whether the AVX2+FMA versions run; set by cpu_init (the same on every call
 * unless a test forces the baseline). */
static int cpu_has_avx2;
static int cpu_force_baseline;

/* Whether this CPU can run the AVX2+FMA versions. */
static int cpu_supports_avx2(void) {
#if EMBD_HAVE_DISPATCH
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

bool embd_backend_cpu_force_baseline(bool on) {
    cpu_force_baseline = on;
    return cpu_supports_avx2();
}

struct embd_backend {
    const struct embd_model *model;
    int nt;      /* threads */
    float *wqkv; /* (L, 3H, H) Q, K, V weights stacked per layer */
    float *bqkv; /* (L, 3H) */
    /* token scratch, for up to cap_tok tokens; one allocation at `tok_mem` */
    void *tok_mem;
    int cap_tok;
    float *x;     /* (T, H) hidden state */
    float *ctx;   /* (T, H) attention context */
    float *tmp;   /* (T, H) dense outputs before the residual */
    float *big;   /* (T, max(3H, I)) Q|K|V, later the FFN activations */
    int32_t *pos; /* (T) position of each token within its sequence */
    /* attention scratch, per thread, for sequences up to cap_len tokens */
    float *att; /* (nt, att_stride): K^T (HS, len) then scores (len, len) */
    int cap_len;
    size_t att_stride;
};

/* Rounds a float count up to a multiple of 16 (64 bytes). */
static size_t round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

/* Releases the scratch buffers (not the packed weights); safe to repeat. */
static void cpu_release_scratch(embd_backend *be) {
    embd_free(be->tok_mem);
    embd_free(be->att);
    be->tok_mem = NULL;
    be->att = NULL;
    be->x = be->ctx = be->tmp = be->big = NULL;
    be->pos = NULL;
    be->cap_tok = 0;
    be->cap_len = 0;
    be->att_stride = 0;
}

/* Makes sure the scratch holds T tokens and sequences of max_len tokens,
 * growing (never shrinking) it. On failure the old scratch is kept intact
 * where it was large enough and EMBD_ERR_NOMEM is returned. */
static enum embd_status cpu_reserve(embd_backend *be, int T, int max_len) {
    const embd_hparams *hp = &be->model->hp;
    const size_t H = (size_t)hp->H, HS = H / (size_t)hp->NH;
    if (T > be->cap_tok) {
        size_t wide = 3 * H > (size_t)hp->I ? 3 * H : (size_t)hp->I;
        size_t nx = round16((size_t)T * H), nbig = round16((size_t)T * wide);
        size_t npos = round16((size_t)T);
        size_t total = 3 * nx + nbig + npos + 16; /* + 16 for the 64-byte alignment */
        void *mem = embd_malloc2(total, sizeof(float));
        if (!mem)
            return embd_error(EMBD_ERR_NOMEM,
                              "cpu backend: out of memory for %d tokens of "
                              "scratch",
                              T);
        embd_free(be->tok_mem);
        be->tok_mem = mem;
        float *p = (float *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
        be->x = p;
        be->ctx = p + nx;
        be->tmp = p + 2 * nx;
        be->big = p + 3 * nx;
        be->pos = (int32_t *)(p + 3 * nx + nbig);
        be->cap_tok = T;
    }
    if (max_len > be->cap_len) {
        size_t stride = round16(HS * (size_t)max_len) + round16((size_t)max_len * max_len);
        float *att = embd_malloc2((size_t)be->nt * stride, sizeof(float));
        if (!att)
            return embd_error(EMBD_ERR_NOMEM,
                              "cpu backend: out of memory for attention "
                              "scratch (%d tokens)",
                              max_len);
        embd_free(be->att);
        be->att = att;
        be->att_stride = stride;
        be->cap_len = max_len;
    }
    return EMBD_OK;
}

/* y (C) = LayerNorm of x (C) with gamma g, beta b; y may equal x. */
static inline void layernorm_row(float *y, const float *x, const float *g, const float *b, int C,
                                 float eps) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; c++)
        sum += x[c];
    const float mean = sum / (float)C;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; c++)
        var += (x[c] - mean) * (x[c] - mean);
    const float rstd = 1.0f / sqrtf(var / (float)C + eps);
#pragma omp simd
    for (int c = 0; c < C; c++)
        y[c] = (x[c] - mean) * rstd * g[c] + b[c];
}

enum epilogue {
    EPI_BIAS,          /* out += b */
    EPI_BIAS_GELU,     /* out = gelu(out + b) */
    EPI_BIAS_RESID_LN, /* x = LayerNorm(x + out + b) (out is clobbered) */
};

/* Applies an epilogue to rows [r0, r1) of out (T, N). */
BODY epilogue_rows_body(float *out, const float *bias, enum epilogue epi, float *x, const float *g,
                        const float *beta, float eps, int r0, int r1, int N) {
    for (int r = r0; r < r1; r++) {
        float *o = out + (size_t)r * N;
        switch (epi) {
        case EPI_BIAS:
#pragma omp simd
            for (int c = 0; c < N; c++)
                o[c] += bias[c];
            break;
        case EPI_BIAS_GELU:
#pragma omp simd
            for (int c = 0; c < N; c++)
                o[c] = embd_fast_gelu(o[c] + bias[c]);
            break;
        case EPI_BIAS_RESID_LN: {
            float *xr = x + (size_t)r * N;
#pragma omp simd
            for (int c = 0; c < N; c++)
                o[c] += bias[c] + xr[c];
            layernorm_row(xr, o, g, beta, N, eps);
            break;
        }
        }
    }
}

DEFINE_DISPATCHED(epilogue_rows,
                  (float *out, const float *bias, enum epilogue epi, float *x, const float *g,
                   const float *beta, float eps, int r0, int r1, int N),
                  (out, bias, epi, x, g, beta, eps, r0, r1, N))

/* out (T, N) = in (T, K) W^T, W (N, K), then the epilogue; all threads. The
 * GEMM is split by rows when there are enough of them (each thread then runs
 * its own rows' epilogue at once), else by columns of W (small batches are
 * bound by reading W, which this way is read once) followed by a barrier. */
static void linear(embd_backend *be, float *out, const float *in, const float *W, int T, int K,
                   int N, const float *bias, enum epilogue epi, float *x, const float *g,
                   const float *beta) {
    const float eps = be->model->hp.ln_eps;
    const int nt = be->nt;
    const int by_rows = T >= 16 * nt;
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        if (by_rows) {
            int r0 = (int)((int64_t)T * tid / nth), r1 = (int)((int64_t)T * (tid + 1) / nth);
            if (r1 > r0) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, N, K, 1.0f,
                            in + (size_t)r0 * K, K, W, K, 0.0f, out + (size_t)r0 * N, N);
                epilogue_rows(out, bias, epi, x, g, beta, eps, r0, r1, N);
            }
        } else {
            /* column chunks in multiples of 16 */
            int nb = (N + 15) / 16;
            int c0 = 16 * (int)((int64_t)nb * tid / nth);
            int c1 = 16 * (int)((int64_t)nb * (tid + 1) / nth);
            if (c1 > N) c1 = N;
            if (c1 > c0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, c1 - c0, K, 1.0f, in, K,
                            W + (size_t)c0 * K, K, 0.0f, out + c0, N);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int r = 0; r < T; r++)
                epilogue_rows(out, bias, epi, x, g, beta, eps, r, r + 1, N);
        }
    }
}

/* ctx rows of one sequence, head h: softmax(Q K^T / sqrt(HS)) V, with qkv
 * (len, 3H) the sequence's Q|K|V rows and ctx (len, H) its context rows.
 * kt is (HS, len) scratch and sc (len) scratch. */
BODY attend_head_body(float *ctx, const float *qkv, float *kt, float *sc, int len, int H, int HS,
                      int h) {
    const size_t ld = 3 * (size_t)H;
    const float scale = 1.0f / sqrtf((float)HS);
    const float *K = qkv + H + (size_t)h * HS, *V = qkv + 2 * (size_t)H + (size_t)h * HS;
    for (int j = 0; j < len; j++)
        for (int d = 0; d < HS; d++)
            kt[(size_t)d * len + j] = K[(size_t)j * ld + d];
    for (int i = 0; i < len; i++) {
        const float *q = qkv + (size_t)i * ld + (size_t)h * HS;
        for (int j = 0; j < len; j++)
            sc[j] = 0.0f;
        for (int d = 0; d < HS; d++) {
            const float qd = q[d] * scale;
            const float *k = kt + (size_t)d * len;
#pragma omp simd
            for (int j = 0; j < len; j++)
                sc[j] += qd * k[j];
        }
        float max = sc[0];
        for (int j = 1; j < len; j++)
            max = sc[j] > max ? sc[j] : max;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < len; j++) {
            sc[j] = embd_fast_expf(sc[j] - max);
            sum += sc[j];
        }
        const float inv = 1.0f / sum;
        float *o = ctx + (size_t)i * H + (size_t)h * HS;
        for (int d = 0; d < HS; d++)
            o[d] = 0.0f;
        for (int j = 0; j < len; j++) {
            const float p = sc[j] * inv;
            const float *v = V + (size_t)j * ld;
#pragma omp simd
            for (int d = 0; d < HS; d++)
                o[d] += p * v[d];
        }
    }
}

DEFINE_DISPATCHED(attend_head,
                  (float *ctx, const float *qkv, float *kt, float *sc, int len, int H, int HS,
                   int h),
                  (ctx, qkv, kt, sc, len, H, HS, h))

/* Each row of s (R, C) = softmax of the row; rows are C floats apart. */
BODY softmax_rows_body(float *s, int R, int C) {
    for (int r = 0; r < R; r++) {
        float *row = s + (size_t)r * C;
        float max = row[0];
        for (int j = 1; j < C; j++)
            max = row[j] > max ? row[j] : max;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < C; j++) {
            row[j] = embd_fast_expf(row[j] - max);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j < C; j++)
            row[j] *= inv;
    }
}

DEFINE_DISPATCHED(softmax_rows, (float *s, int R, int C), (s, R, C))

/* Sequences at least this long run their attention as two GEMMs per head;
 * shorter ones use attend_head's loops, cheaper than a BLAS call's set-up. */
#define ATT_GEMM_MIN 32

/* As attend_head, through BLAS: S (len, len) = Q K^T / sqrt(HS), softmax by
 * rows, ctx = S V. s is (len, len) scratch. */
static void attend_head_gemm(float *ctx, const float *qkv, float *s, int len, int H, int HS,
                             int h) {
    const int ld = 3 * H;
    const float *Q = qkv + (size_t)h * HS, *K = Q + H, *V = Q + 2 * (size_t)H;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, len, len, HS, 1.0f / sqrtf((float)HS), Q,
                ld, K, ld, 0.0f, s, len);
    softmax_rows(s, len, len);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, HS, len, 1.0f, s, len, V, ld, 0.0f,
                ctx + (size_t)h * HS, H);
}

/* The attention of every (sequence, head) pair of the batch into be->ctx. */
static void attention(embd_backend *be, const embd_batch *batch) {
    const embd_hparams *hp = &be->model->hp;
    const int H = hp->H, NH = hp->NH, HS = H / NH;
    const int tasks = batch->n_seq * NH;
    const size_t kt_len = round16((size_t)HS * be->cap_len);
#pragma omp parallel for schedule(dynamic, 1) num_threads(be->nt)
    for (int task = 0; task < tasks; task++) {
        const int s = task / NH, h = task % NH;
        const int t0 = batch->seq_start[s], len = batch->seq_start[s + 1] - t0;
        float *scratch = be->att + (size_t)omp_get_thread_num() * be->att_stride;
        if (len >= ATT_GEMM_MIN)
            attend_head_gemm(be->ctx + (size_t)t0 * H, be->big + (size_t)t0 * 3 * H,
                             scratch + kt_len, len, H, HS, h);
        else
            attend_head(be->ctx + (size_t)t0 * H, be->big + (size_t)t0 * 3 * H, scratch,
                        scratch + kt_len, len, H, HS, h);
    }
}

/* x (T, H) = LayerNorm(word[id] + pos[position] + type[0]) for every token. */
static void embed_tokens(embd_backend *be, const embd_batch *batch) {
    const struct embd_model *m = be->model;
    const int H = m->hp.H, T = batch->n_tok;
    for (int s = 0; s < batch->n_seq; s++)
        for (int t = batch->seq_start[s]; t < batch->seq_start[s + 1]; t++)
            be->pos[t] = t - batch->seq_start[s];
#pragma omp parallel for schedule(static) num_threads(be->nt)
    for (int t = 0; t < T; t++) {
        const float *we = m->w.word_emb + (size_t)batch->ids[t] * H;
        const float *pe = m->w.pos_emb + (size_t)be->pos[t] * H;
        const float *te = m->w.type_emb;
        float *xr = be->x + (size_t)t * H;
#pragma omp simd
        for (int c = 0; c < H; c++)
            xr[c] = we[c] + pe[c] + te[c];
        layernorm_row(xr, xr, m->w.emb_ln_g, m->w.emb_ln_b, H, m->hp.ln_eps);
    }
}

/* out (n, H) = pooled (CLS or mean) hidden states, L2-normalised if asked. */
static void pool(embd_backend *be, float *out, const embd_batch *batch, bool normalize) {
    const embd_hparams *hp = &be->model->hp;
    const int H = hp->H;
#pragma omp parallel for schedule(static) num_threads(be->nt)
    for (int s = 0; s < batch->n_seq; s++) {
        const int t0 = batch->seq_start[s], len = batch->seq_start[s + 1] - t0;
        float *o = out + (size_t)s * H;
        memcpy(o, be->x + (size_t)t0 * H, (size_t)H * sizeof(float));
        if (hp->pooling == EMBD_POOL_MEAN) {
            for (int t = 1; t < len; t++) {
                const float *xr = be->x + (size_t)(t0 + t) * H;
#pragma omp simd
                for (int c = 0; c < H; c++)
                    o[c] += xr[c];
            }
            const float inv = 1.0f / (float)len;
#pragma omp simd
            for (int c = 0; c < H; c++)
                o[c] *= inv;
        }
        if (normalize) {
            float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
            for (int c = 0; c < H; c++)
                ss += o[c] * o[c];
            const float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
#pragma omp simd
            for (int c = 0; c < H; c++)
                o[c] *= inv;
        }
    }
}

/* Frees the backend: packed weights and scratch. NULL is a no-op. */
static void cpu_free(embd_backend *be) {
    if (!be) return;
    cpu_release_scratch(be);
    embd_free(be->wqkv);
    embd_free(be->bqkv);
    embd_free(be);
}

/* Packs Q/K/V of every layer into one (3H, H) weight and (3H) bias each, and
 * allocates scratch for params->max_batch_tokens tokens (at least 1). */
static enum embd_status cpu_init(embd_backend **out, const struct embd_model *model,
                                 const embd_backend_params *params) {
    enum embd_status st;
    if (!out) return embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: NULL out");
    *out = NULL;
    if (!model || !params) return embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: NULL argument");
    const embd_hparams *hp = &model->hp;
    if (hp->H < 1 || hp->NH < 1 || hp->H % hp->NH || hp->I < 1 || hp->L < 0 || hp->P < 1 ||
        hp->V < 1 || hp->TV < 1)
        return embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: bad model dimensions");
    if (params->dtype != EMBD_DTYPE_FP32 && params->dtype != EMBD_DTYPE_AUTO)
        return embd_error(EMBD_ERR_UNSUPPORTED, "cpu backend: only fp32 is supported");
    embd_backend *be = embd_calloc(1, sizeof(*be));
    if (!be) return embd_error(EMBD_ERR_NOMEM, "cpu backend: out of memory");
    be->model = model;
    cpu_has_avx2 = cpu_supports_avx2() && !cpu_force_baseline;
    be->nt = params->n_threads >= 1 ? params->n_threads : omp_get_num_procs();
    /* every GEMM is split across OpenMP threads here; BLAS itself stays serial */
    openblas_set_num_threads(1);

    const size_t H = (size_t)hp->H, L = (size_t)hp->L;
    be->wqkv = embd_malloc2(L * 3 * H * H + 1, sizeof(float));
    be->bqkv = embd_malloc2(L * 3 * H + 1, sizeof(float));
    if (!be->wqkv || !be->bqkv) {
        st = embd_error(EMBD_ERR_NOMEM, "cpu backend: out of memory packing Q/K/V");
        goto fail;
    }
    for (size_t l = 0; l < L; l++) {
        const embd_layer_weights *lw = &model->w.layers[l];
        float *w = be->wqkv + l * 3 * H * H, *b = be->bqkv + l * 3 * H;
        memcpy(w, lw->q_w, H * H * sizeof(float));
        memcpy(w + H * H, lw->k_w, H * H * sizeof(float));
        memcpy(w + 2 * H * H, lw->v_w, H * H * sizeof(float));
        memcpy(b, lw->q_b, H * sizeof(float));
        memcpy(b + H, lw->k_b, H * sizeof(float));
        memcpy(b + 2 * H, lw->v_b, H * sizeof(float));
    }
    int T = params->max_batch_tokens >= 1 ? params->max_batch_tokens : 1;
    st = cpu_reserve(be, T, T < hp->P ? T : hp->P);
    if (st != EMBD_OK) goto fail;
    *out = be;
    return EMBD_OK;
fail:
    cpu_free(be);
    return st;
}

/* Runs the encoder and pooling over the batch; grows the scratch first if the
 * batch is bigger than any before (EMBD_ERR_NOMEM if that fails, leaving the
 * backend usable). */
static enum embd_status cpu_embed(embd_backend *be, float *out, const embd_batch *batch,
                                  bool normalize) {
    if (!be || !out) return embd_error(EMBD_ERR_INVALID_ARG, "cpu backend: NULL argument");
    const struct embd_model *m = be->model;
    enum embd_status st = embd_batch_check(batch, m);
    if (st != EMBD_OK) return st;
    const embd_hparams *hp = &m->hp;
    const int T = batch->n_tok, H = hp->H, I = hp->I;
    int max_len = 0;
    for (int s = 0; s < batch->n_seq; s++) {
        int len = batch->seq_start[s + 1] - batch->seq_start[s];
        max_len = len > max_len ? len : max_len;
    }
    st = cpu_reserve(be, T, max_len);
    if (st != EMBD_OK) return st;
    openblas_set_num_threads(1);

    embed_tokens(be, batch);
    for (int l = 0; l < hp->L; l++) {
        const embd_layer_weights *lw = &m->w.layers[l];
        const float *wqkv = be->wqkv + (size_t)l * 3 * H * H;
        const float *bqkv = be->bqkv + (size_t)l * 3 * H;
        /* big (T, 3H) = x Wqkv^T + bqkv */
        linear(be, be->big, be->x, wqkv, T, H, 3 * H, bqkv, EPI_BIAS, NULL, NULL, NULL);
        attention(be, batch);
        /* x = LN1(x + ctx Wo^T + bo) */
        linear(be, be->tmp, be->ctx, lw->o_w, T, H, H, lw->o_b, EPI_BIAS_RESID_LN, be->x, lw->ln1_g,
               lw->ln1_b);
        /* big (T, I) = gelu(x Wi^T + bi) */
        linear(be, be->big, be->x, lw->i_w, T, H, I, lw->i_b, EPI_BIAS_GELU, NULL, NULL, NULL);
        /* x = LN2(x + big Wf^T + bf) */
        linear(be, be->tmp, be->big, lw->f_w, T, I, H, lw->f_b, EPI_BIAS_RESID_LN, be->x, lw->ln2_g,
               lw->ln2_b);
    }
    pool(be, out, batch, normalize && hp->normalize);
    return EMBD_OK;
}

/* Releases the scratch; the next embed allocates it again. */
static void cpu_trim(embd_backend *be) {
    if (be) cpu_release_scratch(be);
}

const struct embd_backend_ops embd_backend_cpu_ops = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .embed = cpu_embed,
    .trim = cpu_trim,
};
