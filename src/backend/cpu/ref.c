/* ref.c — the CPU reference backend ("ref"): the BERT encoder in plain fp32
 * loops, one thread, no BLAS. It is the yardstick the fast backends are tested
 * against, so it favours being obviously right over being fast.
 *
 * Shape letters as in backend/backend.h; `len` is one sequence's length. */
#include "backend/cpu/ref.h"

#include "backend/backend.h"
#include "model/model.h"
#include "util/util.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

struct embd_backend {
    const struct embd_model *model;
};

void embd_ref_layernorm(float *out, const float *in, const float *g, const float *b, int R, int C,
                        float eps) {
    for (int r = 0; r < R; r++) {
        const float *x = in + (size_t)r * C;
        float *y = out + (size_t)r * C;
        double mean = 0.0;
        for (int c = 0; c < C; c++)
            mean += x[c];
        mean /= C;
        double var = 0.0;
        for (int c = 0; c < C; c++)
            var += (x[c] - mean) * (x[c] - mean);
        var /= C;
        float rstd = (float)(1.0 / sqrt(var + eps));
        for (int c = 0; c < C; c++)
            y[c] = (float)(x[c] - mean) * rstd * g[c] + b[c];
    }
}

void embd_ref_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void embd_ref_softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++)
        x[i] /= sum;
}

void embd_ref_linear(float *out, const float *in, const float *W, const float *b, int R, int K,
                     int O) {
    for (int r = 0; r < R; r++) {
        const float *x = in + (size_t)r * K;
        for (int o = 0; o < O; o++) {
            const float *w = W + (size_t)o * K;
            float acc = b ? b[o] : 0.0f;
            for (int k = 0; k < K; k++)
                acc += x[k] * w[k];
            out[(size_t)r * O + o] = acc;
        }
    }
}

/* ctx (len, H) = multi-head self-attention of one sequence: for each head,
 * softmax(Q K^T / sqrt(HS) + B) V, B the relative bias when the model has
 * one (MPNet; see model.h, att_bias, P positions) and 0 otherwise. q, k, v
 * are (len, H); scores is (len) scratch. */
static void ref_attention(float *ctx, const float *q, const float *k, const float *v, float *scores,
                          int len, int H, int NH, const float *att_bias, int P) {
    const int HS = H / NH;
    const float scale = 1.0f / sqrtf((float)HS);
    for (int h = 0; h < NH; h++) {
        const float *bh = att_bias ? att_bias + (size_t)h * (2 * (size_t)P - 1) : NULL;
        for (int i = 0; i < len; i++) {
            const float *qi = q + (size_t)i * H + h * HS;
            for (int j = 0; j < len; j++) {
                const float *kj = k + (size_t)j * H + h * HS;
                float dot = 0.0f;
                for (int d = 0; d < HS; d++)
                    dot += qi[d] * kj[d];
                scores[j] = dot * scale;
                if (bh) scores[j] += bh[j - i + P - 1];
            }
            embd_ref_softmax(scores, len);
            float *out = ctx + (size_t)i * H + h * HS;
            for (int d = 0; d < HS; d++) {
                float acc = 0.0f;
                for (int j = 0; j < len; j++)
                    acc += scores[j] * v[(size_t)j * H + h * HS + d];
                out[d] = acc;
            }
        }
    }
}

/* out (n, H) = the pooled (CLS or mean) and, if asked, L2-normalised hidden
 * states x (T, H) of each sequence. A zero vector stays zero (norm floor 1e-12). */
static void ref_pool(float *out, const float *x, const int32_t *seq_start, int n, int H,
                     enum embd_pooling pooling, bool normalize) {
    for (int s = 0; s < n; s++) {
        const int t0 = seq_start[s], len = seq_start[s + 1] - t0;
        float *o = out + (size_t)s * H;
        if (pooling == EMBD_POOL_CLS) {
            memcpy(o, x + (size_t)t0 * H, (size_t)H * sizeof(float));
        } else {
            for (int c = 0; c < H; c++) {
                float acc = 0.0f;
                for (int t = 0; t < len; t++)
                    acc += x[(size_t)(t0 + t) * H + c];
                o[c] = acc / (float)len;
            }
        }
        if (normalize) {
            float ss = 0.0f;
            for (int c = 0; c < H; c++)
                ss += o[c] * o[c];
            float norm = fmaxf(sqrtf(ss), 1e-12f);
            for (int c = 0; c < H; c++)
                o[c] /= norm;
        }
    }
}

static enum embd_status ref_init(embd_backend **out, const struct embd_model *model,
                                 const embd_backend_params *params) {
    (void)params;
    *out = NULL;
    if (!model) return embd_error(EMBD_ERR_INVALID_ARG, "ref backend: NULL model");
    const embd_hparams *hp = &model->hp;
    if (hp->H < 1 || hp->NH < 1 || hp->H % hp->NH || hp->I < 1 || hp->L < 0 || hp->P < 1 ||
        hp->V < 1 || hp->TV < 1)
        return embd_error(EMBD_ERR_INVALID_ARG, "ref backend: bad model dimensions");
    embd_backend *be = embd_calloc(1, sizeof(*be));
    if (!be) return embd_error(EMBD_ERR_NOMEM, "ref backend: out of memory");
    be->model = model;
    *out = be;
    return EMBD_OK;
}

static void ref_free(embd_backend *be) {
    embd_free(be);
}

/* The encoder over the packed batch, then pooling. Scratch is allocated per
 * call and freed before returning. */
static enum embd_status ref_embed(embd_backend *be, float *out, const embd_batch *batch,
                                  bool normalize) {
    if (!be || !out) return embd_error(EMBD_ERR_INVALID_ARG, "ref backend: NULL argument");
    const struct embd_model *m = be->model;
    enum embd_status st = embd_batch_check(batch, m);
    if (st != EMBD_OK) return st;
    const embd_hparams *hp = &m->hp;
    const int T = batch->n_tok, n = batch->n_seq, H = hp->H, I = hp->I;
    float *x = NULL, *q = NULL, *k = NULL, *v = NULL, *ctx = NULL, *tmp = NULL, *ffn = NULL;
    float *scores = NULL;
    int32_t *pos = NULL;
    x = embd_malloc2((size_t)T * H, sizeof(float));      /* (T, H) hidden state */
    q = embd_malloc2((size_t)T * H, sizeof(float));      /* (T, H) */
    k = embd_malloc2((size_t)T * H, sizeof(float));      /* (T, H) */
    v = embd_malloc2((size_t)T * H, sizeof(float));      /* (T, H) */
    ctx = embd_malloc2((size_t)T * H, sizeof(float));    /* (T, H) attention context */
    tmp = embd_malloc2((size_t)T * H, sizeof(float));    /* (T, H) dense outputs */
    ffn = embd_malloc2((size_t)T * I, sizeof(float));    /* (T, I) */
    scores = embd_malloc2((size_t)hp->P, sizeof(float)); /* (P) one attention row */
    pos = embd_malloc2((size_t)T, sizeof(int32_t));      /* (T) rows of the position table */
    if (!x || !q || !k || !v || !ctx || !tmp || !ffn || !scores || !pos) {
        st = embd_error(EMBD_ERR_NOMEM, "ref backend: out of memory for %d tokens", T);
        goto done;
    }

    /* embeddings: word + position (restarting in each sequence: embd_positions) + type */
    for (int s = 0; s < n; s++) {
        const int t0 = batch->seq_start[s], len = batch->seq_start[s + 1] - t0;
        embd_positions(hp, batch->ids + t0, len, pos + t0);
        for (int t = t0; t < t0 + len; t++) {
            const float *we = m->w.word_emb + (size_t)batch->ids[t] * H;
            const float *pe = m->w.pos_emb + (ptrdiff_t)pos[t] * H; /* -1: the padding row */
            const float *te =
                m->w.type_emb + (batch->type_ids ? (size_t)batch->type_ids[t] * H : 0);
            for (int c = 0; c < H; c++)
                x[(size_t)t * H + c] = we[c] + pe[c] + te[c];
        }
    }
    embd_ref_layernorm(x, x, m->w.emb_ln_g, m->w.emb_ln_b, T, H, hp->ln_eps);

    for (int l = 0; l < hp->L; l++) {
        const embd_layer_weights *lw = &m->w.layers[l];
        embd_ref_linear(q, x, lw->q_w, lw->q_b, T, H, H);
        embd_ref_linear(k, x, lw->k_w, lw->k_b, T, H, H);
        embd_ref_linear(v, x, lw->v_w, lw->v_b, T, H, H);
        for (int s = 0; s < n; s++) {
            size_t off = (size_t)batch->seq_start[s] * H;
            int len = batch->seq_start[s + 1] - batch->seq_start[s];
            ref_attention(ctx + off, q + off, k + off, v + off, scores, len, H, hp->NH,
                          m->w.att_bias, hp->P);
        }
        embd_ref_linear(tmp, ctx, lw->o_w, lw->o_b, T, H, H);
        for (size_t i = 0; i < (size_t)T * H; i++)
            x[i] += tmp[i];
        embd_ref_layernorm(x, x, lw->ln1_g, lw->ln1_b, T, H, hp->ln_eps);

        embd_ref_linear(ffn, x, lw->i_w, lw->i_b, T, H, I);
        embd_ref_gelu(ffn, (size_t)T * I);
        embd_ref_linear(tmp, ffn, lw->f_w, lw->f_b, T, I, H);
        for (size_t i = 0; i < (size_t)T * H; i++)
            x[i] += tmp[i];
        embd_ref_layernorm(x, x, lw->ln2_g, lw->ln2_b, T, H, hp->ln_eps);
    }

    ref_pool(out, x, batch->seq_start, n, H, hp->pooling, normalize && hp->normalize);
    st = EMBD_OK;
done:
    embd_free(x);
    embd_free(q);
    embd_free(k);
    embd_free(v);
    embd_free(ctx);
    embd_free(tmp);
    embd_free(ffn);
    embd_free(scores);
    embd_free(pos);
    return st;
}

const struct embd_backend_ops embd_backend_ref_ops = {
    .name = "ref",
    .init = ref_init,
    .free = ref_free,
    .embed = ref_embed,
    .trim = NULL,
    .is_dead = NULL,   /* host code: no sticky device errors */
    .mem_stats = NULL, /* no device memory */
};
