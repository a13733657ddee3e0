/* model.h — a loaded model: hyper-parameters, fp32 weights, tokenizer.
 * Shape letters as in backend/backend.h. Linear weights are stored as in
 * PyTorch: (out_features, in_features), row-major; y = x W^T + b. */
#ifndef EMBD_MODEL_H
#define EMBD_MODEL_H

#include "embd.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum embd_pooling { EMBD_POOL_CLS, EMBD_POOL_MEAN };

/* The encoder families. They share the post-LayerNorm transformer; they
 * differ in tensor names, where positions start and MPNet's relative
 * position bias. */
enum embd_arch {
    EMBD_ARCH_BERT,    /* BertModel */
    EMBD_ARCH_ROBERTA, /* XLMRobertaModel, RobertaModel */
    EMBD_ARCH_MPNET,   /* MPNetModel */
};

typedef struct {
    int V;        /* vocab_size */
    int H;        /* hidden_size */
    int L;        /* num_hidden_layers */
    int NH;       /* num_attention_heads (H % NH == 0) */
    int I;        /* intermediate_size */
    int P;        /* usable positions: max_position_embeddings - pos_offset */
    int TV;       /* type_vocab_size (>= 1) */
    float ln_eps; /* layer_norm_eps */
    enum embd_pooling pooling;
    bool normalize; /* the model ends in a Normalize module */
    int max_tokens; /* effective truncation length, [CLS]/[SEP] included, <= P */
    int n_labels;   /* 0: an embedding model; >= 1: a cross-encoder
                       (BertForSequenceClassification) with that many outputs */
    bool sigmoid;   /* a cross-encoder's default activation of its scores (else none) */
    enum embd_arch arch;
    int pos_offset;  /* rows of position_embeddings before position 0 (RoBERTa, MPNet:
                        pad_token_id + 1, as Hugging Face numbers positions); pos_emb
                        already points past them */
    int rel_buckets; /* MPNet: relative_attention_num_buckets; else 0 */
} embd_hparams;

/* pos[t], for the n tokens ids[0..n) of one sequence: the row of the position
 * table (as w.pos_emb points to it) token t reads. BERT numbers positions 0, 1,
 * 2, ...; the RoBERTa family (pos_offset > 0: XLM-R, RoBERTa, MPNet) numbers
 * them from the ids, as Hugging Face's create_position_ids_from_input_ids
 * does: a token equal to pad_token_id (a literal "<pad>" in the text) reads
 * the padding row, -1 here (the row before position 0), and does not advance
 * the count for the tokens after it. */
static inline void embd_positions(const embd_hparams *hp, const int32_t *ids, int n, int32_t *pos) {
    const int32_t pad = hp->pos_offset > 0 ? hp->pos_offset - 1 : -1;
    int32_t k = 0;
    for (int t = 0; t < n; t++)
        pos[t] = ids[t] == pad ? -1 : k++;
}

typedef struct {
    const float *q_w, *k_w, *v_w; /* (H, H) */
    const float *q_b, *k_b, *v_b; /* (H) */
    const float *o_w;             /* (H, H) attention output dense */
    const float *o_b;             /* (H) */
    const float *ln1_g, *ln1_b;   /* (H) attention.output.LayerNorm */
    const float *i_w;             /* (I, H) intermediate.dense */
    const float *i_b;             /* (I) */
    const float *f_w;             /* (H, I) output.dense */
    const float *f_b;             /* (H) */
    const float *ln2_g, *ln2_b;   /* (H) output.LayerNorm */
} embd_layer_weights;

typedef struct {
    const float *word_emb;            /* (V, H) */
    const float *pos_emb;             /* (P, H) */
    const float *type_emb;            /* (TV, H); row 0, or the batch's type ids */
    const float *emb_ln_g, *emb_ln_b; /* (H) */
    embd_layer_weights *layers;       /* [L] */
    /* a cross-encoder's head: tanh(pool_w cls + pool_b), then cls_w . + cls_b */
    const float *pool_w, *pool_b; /* (H, H), (H) bert.pooler.dense */
    const float *cls_w, *cls_b;   /* (n_labels, H), (n_labels) classifier */
    /* MPNet: the attention bias of every layer, by head and key - query
     * distance: att_bias[h * (2P - 1) + (j - i) + P - 1] is added to head h's
     * score of query i for key j (before the softmax). NULL for the others. */
    const float *att_bias; /* (NH, 2P - 1) */
} embd_weights;

struct embd_model {
    embd_hparams hp;
    embd_weights w;
    embd_tokenizer *tok;
    char *dir;            /* the model directory as given */
    uint64_t fingerprint; /* weights + config + tokenizer */
    /* config_sentence_transformers.json: prompts by name, and the default */
    char **prompt_names, **prompt_texts; /* (n_prompts) */
    int n_prompts;
    char *default_prompt; /* a name among them, or NULL */
    /* storage (owned by the loader) */
    void *map; /* mmap of model.safetensors */
    size_t map_len;
    struct embd_st_shard *shards; /* or the shards of a sharded checkpoint */
    size_t n_shards;
    float *owned;     /* fp32 copies of tensors that were not fp32 (or misaligned) */
    size_t owned_len; /* floats in `owned` */
    float *derived;   /* tensors the loader makes: MPNet's zero type row and att_bias */
    /* what contexts of this model share (embd_model_share); NULL for a model
     * not made by embd_model_load (a test's), whose contexts share nothing */
    struct embd_model_shares *shares;
};

/* Makes the object embd_model_share shares (NULL with *st set on failure). */
typedef void *(*embd_share_make)(const struct embd_model *m, void *arg, enum embd_status *st);

/* Data derived from the weights that every context of the model can use (the
 * CPU backend's packed matrices), made once and held by all: the object the
 * model keeps under `key` (at most 47 characters), counted as held once
 * more, else make(m, arg)'s, kept under key. NULL with *st set (make's
 * status) when make fails. A model without a registry (shares NULL) makes a
 * private object each time. Thread-safe: a second caller for the same key
 * waits for the first's make. Release with embd_model_unshare. */
void *embd_model_share(const struct embd_model *m, const char *key, embd_share_make make,
                       void (*destroy)(void *), void *arg, enum embd_status *st);

/* Drops one hold on obj (from embd_model_share with this destroy); the last
 * frees it with destroy. NULL is a no-op. */
void embd_model_unshare(const struct embd_model *m, void *obj, void (*destroy)(void *));

/* Drops from this process's resident memory the whole pages of the weight w
 * (n floats) when it is read from the mapping of model.safetensors (read
 * only, backed by the file: a page read again later, say by another backend,
 * comes back from the file unchanged). Weights converted at load (fp16/bf16
 * files) live in memory of their own and stay. For a backend that runs from
 * its own copy of a weight (the CPU backend's packed matrices), so that the
 * model's matrices are not resident twice. */
void embd_model_drop_weight_pages(const struct embd_model *m, const float *w, size_t n);

#endif
