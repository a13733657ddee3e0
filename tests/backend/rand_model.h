/* rand_model.h — a BERT-shaped model with random weights built in memory, for
 * backend tests and benchmarks (no files). Weights use plain malloc, not
 * embd_malloc, so that fault injection only counts the backend's own
 * allocations. */
#ifndef EMBD_TEST_RAND_MODEL_H
#define EMBD_TEST_RAND_MODEL_H

#include "model/model.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* xorshift64*: deterministic, the same on every platform */
static uint64_t rm_state = 0x9E3779B97F4A7C15ull;

static inline void rm_seed(uint64_t s) {
    rm_state = s ? s : 0x9E3779B97F4A7C15ull;
}

static inline uint64_t rm_next(void) {
    rm_state ^= rm_state >> 12;
    rm_state ^= rm_state << 25;
    rm_state ^= rm_state >> 27;
    return rm_state * 2685821657736338717ull;
}

/* uniform in [-1, 1) */
static inline float rm_uniform(void) {
    return (float)((double)(rm_next() >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

/* uniform integer in [lo, hi] */
static inline int rm_int(int lo, int hi) {
    return lo + (int)(rm_next() % (uint64_t)(hi - lo + 1));
}

typedef struct {
    struct embd_model model;
    float *storage;
    size_t used, cap;
    float *bias; /* rand_model_add_bias's table, or NULL */
} rand_model;

static inline float *rm_take(rand_model *rm, size_t n, float amp, float center) {
    float *p = rm->storage + rm->used;
    rm->used += n;
    for (size_t i = 0; i < n; i++)
        p[i] = center + amp * rm_uniform();
    return p;
}

/* Fills rm with a model of the given shape. Linear weights are uniform with
 * standard deviation 1/sqrt(fan_in) (so activations keep unit scale and the
 * attention scores are neither flat nor one-hot), embeddings of scale 1,
 * LayerNorm gammas around 1, small biases. Returns 0, or -1 if out of memory. */
static inline int rand_model_make(rand_model *rm, int V, int H, int NH, int I, int L, int P,
                                  enum embd_pooling pooling, bool normalize, uint64_t seed) {
    memset(rm, 0, sizeof(*rm));
    rm_seed(seed);
    embd_hparams *hp = &rm->model.hp;
    hp->V = V, hp->H = H, hp->L = L, hp->NH = NH, hp->I = I, hp->P = P, hp->TV = 2;
    hp->ln_eps = 1e-12f;
    hp->pooling = pooling;
    hp->normalize = normalize;
    hp->max_tokens = P;
    size_t h = (size_t)H, in = (size_t)I;
    size_t per_layer = 4 * h * h + 4 * h + 4 * h + in * h + in + h * in + h;
    rm->cap = (size_t)V * h + (size_t)P * h + 2 * h + 2 * h + (size_t)L * per_layer;
    rm->storage = malloc(rm->cap * sizeof(float));
    rm->model.w.layers = calloc(L ? (size_t)L : 1, sizeof(embd_layer_weights));
    if (!rm->storage || !rm->model.w.layers) return -1;
    embd_weights *w = &rm->model.w;
    const float a_h = sqrtf(3.0f / (float)H), a_i = sqrtf(3.0f / (float)I);
    w->word_emb = rm_take(rm, (size_t)V * h, 1.0f, 0.0f);
    w->pos_emb = rm_take(rm, (size_t)P * h, 0.5f, 0.0f);
    w->type_emb = rm_take(rm, 2 * h, 0.2f, 0.0f);
    w->emb_ln_g = rm_take(rm, h, 0.1f, 1.0f);
    w->emb_ln_b = rm_take(rm, h, 0.1f, 0.0f);
    for (int l = 0; l < L; l++) {
        embd_layer_weights *lw = &w->layers[l];
        lw->q_w = rm_take(rm, h * h, 2.0f * a_h, 0.0f);
        lw->k_w = rm_take(rm, h * h, 2.0f * a_h, 0.0f);
        lw->v_w = rm_take(rm, h * h, a_h, 0.0f);
        lw->o_w = rm_take(rm, h * h, a_h, 0.0f);
        lw->q_b = rm_take(rm, h, 0.1f, 0.0f);
        lw->k_b = rm_take(rm, h, 0.1f, 0.0f);
        lw->v_b = rm_take(rm, h, 0.1f, 0.0f);
        lw->o_b = rm_take(rm, h, 0.1f, 0.0f);
        lw->ln1_g = rm_take(rm, h, 0.1f, 1.0f);
        lw->ln1_b = rm_take(rm, h, 0.1f, 0.0f);
        lw->ln2_g = rm_take(rm, h, 0.1f, 1.0f);
        lw->ln2_b = rm_take(rm, h, 0.1f, 0.0f);
        lw->i_w = rm_take(rm, in * h, a_h, 0.0f);
        lw->i_b = rm_take(rm, in, 0.1f, 0.0f);
        lw->f_w = rm_take(rm, h * in, a_i, 0.0f);
        lw->f_b = rm_take(rm, h, 0.1f, 0.0f);
    }
    return rm->used == rm->cap ? 0 : -1;
}

/* Gives the model an MPNet-style relative attention bias (model.h,
 * att_bias): for each head a table over key - query distances, uniform in
 * [-2, 2) so that it changes which keys the softmax favours. Returns 0, or
 * -1 if out of memory. */
static inline int rand_model_add_bias(rand_model *rm) {
    const embd_hparams *hp = &rm->model.hp;
    const size_t n = (size_t)hp->NH * (2 * (size_t)hp->P - 1);
    if (!(rm->bias = malloc(n * sizeof(float)))) return -1;
    for (size_t i = 0; i < n; i++)
        rm->bias[i] = 2.0f * rm_uniform();
    rm->model.w.att_bias = rm->bias;
    return 0;
}

static inline void rand_model_free(rand_model *rm) {
    free(rm->bias);
    free(rm->storage);
    free(rm->model.w.layers);
    memset(rm, 0, sizeof(*rm));
}

#endif
