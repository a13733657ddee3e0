/* rerank.c — cross-encoder scores: each (query, document) pair is encoded
 * with the tokenizer's pair template (token types 0 and 1), run through the
 * encoder like any packed batch, and the [CLS] state goes through the
 * classification head of BertForSequenceClassification:
 *
 *     score = cls_w . tanh(pool_w h_cls + pool_b) + cls_b   (then sigmoid, unless raw)
 *
 * The head is a few thousand multiply-adds per pair, done here in fp32 on
 * the host whatever the backend, so that every backend (the CPU ones, the
 * CUDA plugin) runs a cross-encoder with no code of its own beyond token
 * types. */
#include "engine/engine.h"
#include "model/model.h"
#include "util/util.h"

#include <math.h>
#include <string.h>

/* Pairs per round of tokenize + forward: bounds the memory of a large call
 * (ids and states of this many pairs) while keeping batches full. */
#define RERANK_CHUNK 512

struct embd_rerank_opts embd_rerank_default_opts(void) {
    struct embd_rerank_opts o = {.raw_scores = false, .truncate = true};
    return o;
}

/* The score of one [CLS] state h (H): the pooler, then the classifier's
 * first output, in double so that the sum's order costs nothing. */
static float head_score(const embd_model *m, const float *h, float *pooled, bool raw) {
    const int H = m->hp.H;
    const embd_weights *w = &m->w;
    for (int o = 0; o < H; o++) {
        const float *row = w->pool_w + (size_t)o * H;
        double acc = w->pool_b[o];
        for (int c = 0; c < H; c++)
            acc += (double)row[c] * h[c];
        pooled[o] = (float)tanh(acc);
    }
    double s = w->cls_b[0];
    for (int c = 0; c < H; c++)
        s += (double)w->cls_w[c] * pooled[c];
    if (!raw && m->hp.sigmoid) s = 1.0 / (1.0 + exp(-s));
    return (float)s;
}

static size_t text_len(const char *const *texts, const size_t *lens, size_t i) {
    return lens ? lens[i] : strlen(texts[i]);
}

/* Tokenizes pairs [i0, i1) into ids/types (each pair in its own max_tokens
 * slot, then packed) and seq_start; on EMBD_ERR_TOO_LONG, info names the
 * pair. */
static enum embd_status tokenize_pairs(const embd_model *m, const char *const *queries,
                                       const size_t *qlens, const char *const *docs,
                                       const size_t *dlens, size_t i0, size_t i1, bool truncate,
                                       int32_t *ids, int32_t *types, int32_t *seq_start,
                                       struct embd_embed_info *info) {
    const size_t cap = (size_t)m->hp.max_tokens;
    seq_start[0] = 0;
    for (size_t i = i0; i < i1; i++) {
        const size_t k = i - i0;
        size_t got = 0;
        enum embd_status st = embd_tokenizer_encode_pair(
            m->tok, queries[i], text_len(queries, qlens, i), docs[i], text_len(docs, dlens, i),
            m->hp.max_tokens, truncate, ids + seq_start[k], types + seq_start[k], cap, &got, NULL);
        if (st == EMBD_ERR_TOO_LONG) {
            if (info) {
                info->bad_input = i;
                info->bad_tokens = got;
            }
            return embd_error(st, "pair %zu has %zu tokens; the model takes at most %d", i, got,
                              m->hp.max_tokens);
        }
        if (st != EMBD_OK) return embd_error(st, "pair %zu: %s", i, embd_last_error());
        seq_start[k + 1] = seq_start[k] + (int32_t)got;
        if (info && info->n_tokens) info->n_tokens[i] = got;
        if (info) info->total_tokens += got;
    }
    return EMBD_OK;
}

enum embd_status embd_rerank(embd_ctx *ctx, const char *const *queries, const size_t *qlens,
                             const char *const *docs, const size_t *dlens, size_t n, float *scores,
                             const struct embd_rerank_opts *opts, struct embd_embed_info *info) {
    if (info) {
        info->total_tokens = 0;
        info->bad_input = info->bad_tokens = 0;
    }
    if (!ctx || (n && (!queries || !docs || !scores)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_rerank: NULL argument");
    const embd_model *m = embd_ctx_model(ctx);
    if (!embd_model_is_reranker(m))
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "%s is not a cross-encoder (reranker): it embeds texts, it does not "
                          "score pairs",
                          m->dir);
    if (m->hp.n_labels != 1)
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "%s has %d labels; a reranker gives one score (num_labels 1)", m->dir,
                          m->hp.n_labels);
    const struct embd_rerank_opts d = embd_rerank_default_opts();
    if (!opts) opts = &d;
    for (size_t i = 0; i < n; i++)
        if (!queries[i] || !docs[i])
            return embd_error(EMBD_ERR_INVALID_ARG, "embd_rerank: pair %zu has a NULL text", i);
    if (n == 0) return EMBD_OK;
    embd_metrics *mx = embd_ctx_metrics(ctx);
    embd_metrics_add(mx, EMBD_C_REQUESTS, 1);
    embd_metrics_add(mx, EMBD_C_INPUTS, n);

    const size_t H = (size_t)m->hp.H, cap = (size_t)m->hp.max_tokens;
    const size_t chunk = n < RERANK_CHUNK ? n : RERANK_CHUNK;
    int32_t *ids = embd_malloc2(chunk * cap, sizeof *ids);
    int32_t *types = embd_malloc2(chunk * cap, sizeof *types);
    int32_t *seq_start = embd_malloc2(chunk + 1, sizeof *seq_start);
    float *states = embd_malloc2(chunk * H, sizeof *states);
    float *pooled = embd_malloc2(H, sizeof *pooled);
    enum embd_status st = EMBD_OK;
    if (!ids || !types || !seq_start || !states || !pooled) {
        st = embd_error(EMBD_ERR_NOMEM, "out of memory reranking %zu pairs", n);
        goto done;
    }
    /* Without truncation every pair is checked before any runs (a call of
     * one chunk is, by the loop below). */
    if (!opts->truncate && n > chunk)
        for (size_t i0 = 0; i0 < n && st == EMBD_OK; i0 += chunk) {
            const size_t i1 = i0 + chunk < n ? i0 + chunk : n;
            st = tokenize_pairs(m, queries, qlens, docs, dlens, i0, i1, false, ids, types,
                                seq_start, info);
        }
    if (info) info->total_tokens = 0;
    for (size_t i0 = 0; i0 < n && st == EMBD_OK; i0 += chunk) {
        const size_t i1 = i0 + chunk < n ? i0 + chunk : n;
        const double t0 = embd_now();
        st = tokenize_pairs(m, queries, qlens, docs, dlens, i0, i1, opts->truncate, ids, types,
                            seq_start, info);
        embd_metrics_observe(mx, EMBD_H_TOKENIZE_SEC, embd_now() - t0);
        if (st != EMBD_OK) break;
        st = embd_ctx_run_tokens(ctx, ids, types, seq_start, i1 - i0, false, states);
        if (st != EMBD_OK) break;
        for (size_t i = i0; i < i1; i++)
            scores[i] = head_score(m, states + (i - i0) * H, pooled, opts->raw_scores);
    }
done:
    embd_free(ids);
    embd_free(types);
    embd_free(seq_start);
    embd_free(states);
    embd_free(pooled);
    return st;
}
