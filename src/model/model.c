/* model.c — embd_model_load and the model accessors: reads a Hugging Face /
 * sentence-transformers model directory into hparams, fp32 weight pointers
 * (into the mapped safetensors file, or into one owned fp32 copy for
 * half-precision and misaligned tensors) and a tokenizer. */
#include "model/loader.h"
#include "util/util.h"

#include <limits.h>
#include <math.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SMALL_JSON (16u << 20)      /* config files */
#define MAX_TOKENIZER_JSON (256u << 20) /* tokenizer.json */

struct embd_model_params embd_model_default_params(void) {
    struct embd_model_params p = {.max_seq_length = 0};
    return p;
}

/* Reads dir/rel into *buf (NUL-terminated). A missing file is EMBD_OK with
 * *buf NULL when `optional`; every other failure is an error naming the path. */
static enum embd_status read_json_file(const char *dir, const char *rel, bool optional,
                                       size_t max_bytes, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    char *path = embd_path_join(dir, rel);
    if (!path) return embd_error(EMBD_ERR_NOMEM, "out of memory");
    struct stat sb;
    enum embd_status s = EMBD_OK;
    if (optional && stat(path, &sb) != 0 && errno == ENOENT) goto done;
    s = embd_read_file(path, max_bytes, buf, len);
done:
    embd_free(path);
    return s;
}

/* One weight the loader must find: where its pointer goes, its name
 * (without the optional "bert." prefix) and its expected shape. */
typedef struct {
    const float **dst;
    char name[96];
    int ndim;
    uint64_t shape[2];
    const embd_st_tensor *t;
} weight_req;

/* Finds `name` in the file, trying the architecture's prefix ("bert.",
 * "roberta.", "mpnet.") and, for LayerNorm parameters, the old gamma/beta
 * names. */
static const embd_st_tensor *find_weight(const embd_safetensors *st, const char *prefix,
                                         const char *name) {
    char alt[160];
    const embd_st_tensor *t = embd_st_find(st, name);
    if (t) return t;
    snprintf(alt, sizeof alt, "%s%s", prefix, name);
    if ((t = embd_st_find(st, alt))) return t;
    size_t n = strlen(name);
    const char *old = NULL;
    size_t cut = 0;
    if (n > 17 && strcmp(name + n - 17, ".LayerNorm.weight") == 0)
        old = "gamma", cut = 6; /* "weight" */
    else if (n > 15 && strcmp(name + n - 15, ".LayerNorm.bias") == 0)
        old = "beta", cut = 4; /* "bias" */
    if (!old) return NULL;
    snprintf(alt, sizeof alt, "%.*s%s", (int)(n - cut), name, old);
    if ((t = embd_st_find(st, alt))) return t;
    snprintf(alt, sizeof alt, "%s%.*s%s", prefix, (int)(n - cut), name, old);
    return embd_st_find(st, alt);
}

/* The tensor names of one encoder family (%d: the layer). */
typedef struct {
    const char *prefix; /* of the base model inside a task model's checkpoint */
    const char *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b, *ln1_g, *ln1_b;
    const char *pool_w, *pool_b, *cls_w, *cls_b; /* a cross-encoder's head */
} arch_names;

#define BERT_ATT "encoder.layer.%d.attention."
/* BERT's and RoBERTa's attention tensors (q_w .. ln1_b) */
#define BERT_ATT_NAMES                                                                             \
    BERT_ATT "self.query.weight", BERT_ATT "self.query.bias", BERT_ATT "self.key.weight",          \
        BERT_ATT "self.key.bias", BERT_ATT "self.value.weight", BERT_ATT "self.value.bias",        \
        BERT_ATT "output.dense.weight", BERT_ATT "output.dense.bias",                              \
        BERT_ATT "output.LayerNorm.weight", BERT_ATT "output.LayerNorm.bias"
static const arch_names bert_names = {
    "bert.",
    BERT_ATT_NAMES,
    "pooler.dense.weight",
    "pooler.dense.bias",
    "classifier.weight",
    "classifier.bias",
};
/* RobertaClassificationHead: dense, tanh, out_proj on the <s> state — the
 * same arithmetic as BERT's pooler and classifier */
static const arch_names roberta_names = {
    "roberta.",
    BERT_ATT_NAMES,
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
};
static const arch_names mpnet_names = {
    "mpnet.",
    BERT_ATT "attn.q.weight",
    BERT_ATT "attn.q.bias",
    BERT_ATT "attn.k.weight",
    BERT_ATT "attn.k.bias",
    BERT_ATT "attn.v.weight",
    BERT_ATT "attn.v.bias",
    BERT_ATT "attn.o.weight",
    BERT_ATT "attn.o.bias",
    BERT_ATT "LayerNorm.weight",
    BERT_ATT "LayerNorm.bias",
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
};
#undef BERT_ATT_NAMES
#undef BERT_ATT

static const arch_names *names_of(enum embd_arch a) {
    return a == EMBD_ARCH_ROBERTA ? &roberta_names
           : a == EMBD_ARCH_MPNET ? &mpnet_names
                                  : &bert_names;
}

/* Formats a shape as "[d0, d1, ...]" into buf (truncated to cap). */
static void shape_str(char *buf, size_t cap, int ndim, const uint64_t *shape) {
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%llu", i ? ", " : "",
                               (unsigned long long)shape[i]);
    if (at < cap) snprintf(buf + at, cap - at, "]");
}

/* Appends a required weight; `fmt` is its name, with %d for the layer when
 * it has one. */
static void add_req(weight_req *r, size_t *n, const float **dst, int ndim, uint64_t d0, uint64_t d1,
                    const char *fmt, int layer) {
    weight_req *q = &r[(*n)++];
    q->dst = dst;
    snprintf(q->name, sizeof q->name, fmt, layer);
    q->ndim = ndim;
    q->shape[0] = d0;
    q->shape[1] = d1;
    q->t = NULL;
}

/* MPNet's bucket of the relative position d = key - query, as Hugging Face's
 * MPNetEncoder.relative_position_bucket computes it (bidirectional,
 * max_distance 128): half the buckets for keys before the query, half after;
 * in each, exact distances below a quarter of the buckets, then
 * logarithmic, in fp32 as torch computes them. */
static int mpnet_bucket(int d, int buckets) {
    const int half = buckets / 2, exact = half / 2;
    int ret = 0, n = -d;
    if (n < 0) ret += half, n = -n;
    if (n < exact) return ret + n;
    const float lg = logf((float)n / (float)exact) / (float)log(128.0 / exact);
    int large = exact + (int)(lg * (float)(half - exact));
    return ret + (large < half - 1 ? large : half - 1);
}

/* MPNet: a zero token-type row (the model has none) and att_bias (see
 * model.h) from the bias table (buckets, NH). */
static enum embd_status derive_mpnet(embd_model *m, const float *rel) {
    embd_hparams *hp = &m->hp;
    const size_t H = (size_t)hp->H, NH = (size_t)hp->NH, D = 2 * (size_t)hp->P - 1;
    if (!(m->derived = embd_calloc(H + NH * D, sizeof(float))))
        return embd_error(EMBD_ERR_NOMEM, "out of memory for the attention bias");
    m->w.type_emb = m->derived;
    float *bias = m->derived + H;
    for (size_t k = 0; k < D; k++) {
        const int b = mpnet_bucket((int)k - (hp->P - 1), hp->rel_buckets);
        for (size_t h = 0; h < NH; h++)
            bias[h * D + k] = rel[(size_t)b * NH + h];
    }
    m->w.att_bias = bias;
    return EMBD_OK;
}

/* Points m->w at the tensors of `st` (which must stay mapped as long as the
 * model lives), converting half-precision and misaligned fp32 tensors into
 * one owned allocation. Errors: EMBD_ERR_MODEL_FORMAT (missing tensor, wrong
 * shape), EMBD_ERR_UNSUPPORTED (dtype), EMBD_ERR_NOMEM. */
static enum embd_status bind_weights(embd_model *m, const embd_safetensors *st, const char *file) {
    const embd_hparams *hp = &m->hp;
    uint64_t H = (uint64_t)hp->H, I = (uint64_t)hp->I;
    const arch_names *an = names_of(hp->arch);
    const bool mpnet = hp->arch == EMBD_ARCH_MPNET;
    size_t n_req = 5 + 16 * (size_t)hp->L + (hp->n_labels ? 4 : 0), n = 0;
    enum embd_status s = EMBD_OK;
    weight_req *req = embd_calloc(n_req, sizeof *req);
    m->w.layers = embd_calloc((size_t)hp->L, sizeof *m->w.layers);
    if (!req || !m->w.layers) {
        s = embd_error(EMBD_ERR_NOMEM, "out of memory for the weight table");
        goto fail;
    }
    embd_weights *w = &m->w;
    const float *rel_bias = NULL;
    add_req(req, &n, &w->word_emb, 2, (uint64_t)hp->V, H, "embeddings.word_embeddings.weight", 0);
    add_req(req, &n, &w->pos_emb, 2, (uint64_t)(hp->P + hp->pos_offset), H,
            "embeddings.position_embeddings.weight", 0);
    if (mpnet) /* no token types; in their place the relative attention bias */
        add_req(req, &n, &rel_bias, 2, (uint64_t)hp->rel_buckets, (uint64_t)hp->NH,
                "encoder.relative_attention_bias.weight", 0);
    else
        add_req(req, &n, &w->type_emb, 2, (uint64_t)hp->TV, H,
                "embeddings.token_type_embeddings.weight", 0);
    add_req(req, &n, &w->emb_ln_g, 1, H, 0, "embeddings.LayerNorm.weight", 0);
    add_req(req, &n, &w->emb_ln_b, 1, H, 0, "embeddings.LayerNorm.bias", 0);
    for (int l = 0; l < hp->L; l++) {
        embd_layer_weights *lw = &w->layers[l];
        add_req(req, &n, &lw->q_w, 2, H, H, an->q_w, l);
        add_req(req, &n, &lw->q_b, 1, H, 0, an->q_b, l);
        add_req(req, &n, &lw->k_w, 2, H, H, an->k_w, l);
        add_req(req, &n, &lw->k_b, 1, H, 0, an->k_b, l);
        add_req(req, &n, &lw->v_w, 2, H, H, an->v_w, l);
        add_req(req, &n, &lw->v_b, 1, H, 0, an->v_b, l);
        add_req(req, &n, &lw->o_w, 2, H, H, an->o_w, l);
        add_req(req, &n, &lw->o_b, 1, H, 0, an->o_b, l);
        add_req(req, &n, &lw->ln1_g, 1, H, 0, an->ln1_g, l);
        add_req(req, &n, &lw->ln1_b, 1, H, 0, an->ln1_b, l);
        add_req(req, &n, &lw->i_w, 2, I, H, "encoder.layer.%d.intermediate.dense.weight", l);
        add_req(req, &n, &lw->i_b, 1, I, 0, "encoder.layer.%d.intermediate.dense.bias", l);
        add_req(req, &n, &lw->f_w, 2, H, I, "encoder.layer.%d.output.dense.weight", l);
        add_req(req, &n, &lw->f_b, 1, H, 0, "encoder.layer.%d.output.dense.bias", l);
        add_req(req, &n, &lw->ln2_g, 1, H, 0, "encoder.layer.%d.output.LayerNorm.weight", l);
        add_req(req, &n, &lw->ln2_b, 1, H, 0, "encoder.layer.%d.output.LayerNorm.bias", l);
    }
    if (hp->n_labels) {
        const uint64_t C = (uint64_t)hp->n_labels;
        add_req(req, &n, &w->pool_w, 2, H, H, an->pool_w, 0);
        add_req(req, &n, &w->pool_b, 1, H, 0, an->pool_b, 0);
        add_req(req, &n, &w->cls_w, 2, C, H, an->cls_w, 0);
        add_req(req, &n, &w->cls_b, 1, C, 0, an->cls_b, 0);
    }
    EMBD_ASSERT(n == n_req);

    /* Pass 1: find and check every tensor; count the floats to convert. */
    size_t n_owned = 0;
    for (size_t i = 0; i < n; i++) {
        weight_req *q = &req[i];
        const embd_st_tensor *t = q->t = find_weight(st, an->prefix, q->name);
        if (!t) {
            s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: missing tensor %s", file, q->name);
            goto fail;
        }
        if (t->dtype != EMBD_ST_F32 && t->dtype != EMBD_ST_F16 && t->dtype != EMBD_ST_BF16) {
            s = embd_error(EMBD_ERR_UNSUPPORTED,
                           "%s: tensor %s has dtype %s; supported: F32, F16, BF16", file, t->name,
                           t->dtype_name);
            goto fail;
        }
        if (t->ndim != q->ndim || t->shape[0] != q->shape[0] ||
            (q->ndim == 2 && t->shape[1] != q->shape[1])) {
            char found[160], want[64];
            shape_str(found, sizeof found, t->ndim, t->shape);
            shape_str(want, sizeof want, q->ndim, q->shape);
            s = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: tensor %s has shape %s, expected %s", file,
                           t->name, found, want);
            goto fail;
        }
        const uint8_t *p = t->data + t->begin;
        if (t->dtype != EMBD_ST_F32 || ((uintptr_t)p & 3u) != 0)
            n_owned += (size_t)(q->shape[0] * (q->ndim == 2 ? q->shape[1] : 1));
    }

    /* Pass 2: point at the mapping or convert into the owned buffer. */
    if (n_owned) {
        if (!(m->owned = embd_malloc2(n_owned, sizeof(float)))) {
            s = embd_error(EMBD_ERR_NOMEM, "out of memory for %zu converted weights", n_owned);
            goto fail;
        }
        m->owned_len = n_owned;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const embd_st_tensor *t = req[i].t;
        const uint8_t *p = t->data + t->begin;
        if (t->dtype == EMBD_ST_F32 && ((uintptr_t)p & 3u) == 0) {
            *req[i].dst = (const float *)(const void *)p;
            continue;
        }
        size_t count = (size_t)(req[i].shape[0] * (req[i].ndim == 2 ? req[i].shape[1] : 1));
        float *out = m->owned + at;
        if (t->dtype == EMBD_ST_F32) {
            memcpy(out, p, count * sizeof(float));
        } else {
            for (size_t k = 0; k < count; k++) {
                uint16_t h;
                memcpy(&h, p + 2 * k, 2);
                out[k] = t->dtype == EMBD_ST_F16 ? embd_f16_to_f32(h) : embd_bf16_to_f32(h);
            }
        }
        *req[i].dst = out;
        at += count;
    }
    EMBD_ASSERT(at == n_owned);
    /* Hugging Face numbers RoBERTa's and MPNet's positions from
     * pad_token_id + 1: position 0 of a sequence reads that row. */
    w->pos_emb += (size_t)hp->pos_offset * H;
    if (mpnet && (s = derive_mpnet(m, rel_bias))) goto fail;
fail:
    embd_free(req);
    return s;
}

/* Mixes the hyper-parameters into a hash, field by field (no padding bytes). */
static uint64_t hash_hparams(const embd_hparams *hp) {
    int64_t f[14] = {hp->V,          hp->H,          hp->L,  hp->NH,
                     hp->I,          hp->P,          hp->TV, (int64_t)hp->pooling,
                     hp->normalize,  hp->max_tokens, 0,      (int64_t)hp->arch,
                     hp->pos_offset, hp->rel_buckets};
    memcpy(&f[10], &hp->ln_eps, sizeof hp->ln_eps);
    return embd_hash64(0x656d6264u, f, sizeof f);
}

/* Applies modules.json (already parsed; NULL when the file is absent) to
 * hp: pooling from the Pooling module's config, normalize from a Normalize
 * module. Without modules.json: mean pooling, no normalisation, as
 * sentence-transformers does for a plain Hugging Face model. */
static enum embd_status read_pooling(const char *dir, const embd_st_modules *mods,
                                     embd_hparams *hp) {
    char *buf = NULL, *rel = NULL;
    size_t len;
    enum embd_status s = EMBD_OK;
    hp->pooling = EMBD_POOL_MEAN;
    hp->normalize = false;
    if (!mods) return EMBD_OK;
    hp->normalize = mods->normalize;
    if (!(rel = embd_path_join(mods->pooling_path, "config.json"))) {
        s = embd_error(EMBD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((s = read_json_file(dir, rel, false, MAX_SMALL_JSON, &buf, &len))) goto fail;
    s = embd_pooling_parse(hp, buf, len, rel);
fail:
    embd_free(buf);
    embd_free(rel);
    return s;
}

/* Reads tdir/config.json into hp (dimensions, eps). */
static enum embd_status read_config(const char *tdir, embd_hparams *hp) {
    char *buf = NULL;
    size_t len;
    enum embd_status s = read_json_file(tdir, "config.json", false, MAX_SMALL_JSON, &buf, &len);
    if (!s) s = embd_config_parse(hp, buf, len, "config.json");
    embd_free(buf);
    return s;
}

/* Sets hp->max_tokens from the caller, sentence_bert_config.json or
 * tokenizer_config.json (in that order), clamped to P; *lower to
 * sentence_bert_config.json's do_lower_case. */
static enum embd_status read_max_tokens(const char *tdir, int requested, embd_hparams *hp,
                                        bool *lower) {
    char *buf = NULL;
    size_t len;
    int sbert = 0, tok_max = 0;
    enum embd_status s;
    if ((s = read_json_file(tdir, "sentence_bert_config.json", true, MAX_SMALL_JSON, &buf, &len)))
        goto fail;
    if (buf && (s = embd_sbert_config_parse(&sbert, lower, buf, len, "sentence_bert_config.json")))
        goto fail;
    embd_free(buf);
    buf = NULL;
    if (requested > 0) {
        if (requested < 2 || requested > hp->P)
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "max_seq_length %d is outside [2, %d] (max_position_embeddings)",
                              requested, hp->P);
        hp->max_tokens = requested;
        return EMBD_OK;
    }
    if (!sbert) {
        if ((s = read_json_file(tdir, "tokenizer_config.json", true, MAX_SMALL_JSON, &buf, &len)))
            goto fail;
        if (buf &&
            (s = embd_tokenizer_config_parse(&tok_max, hp->P, buf, len, "tokenizer_config.json")))
            goto fail;
    }
    hp->max_tokens = sbert ? sbert : tok_max ? tok_max : hp->P;
    if (hp->max_tokens > hp->P) hp->max_tokens = hp->P;
fail:
    embd_free(buf);
    return s;
}

/* Loads tdir/tokenizer.json into m->tok; its ids must fit the model's
 * vocabulary (word_embeddings rows). */
static enum embd_status read_tokenizer(const char *tdir, embd_model *m) {
    char *buf = NULL;
    size_t len;
    enum embd_status s =
        read_json_file(tdir, "tokenizer.json", false, MAX_TOKENIZER_JSON, &buf, &len);
    if (s) return s;
    if (!embd_utf8_valid(buf, len)) {
        embd_free(buf);
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: not valid UTF-8");
    }
    s = embd_tokenizer_load(&m->tok, buf, len);
    embd_free(buf);
    if (s) return embd_error_prefix(s, "tokenizer.json");
    int tv = embd_tokenizer_vocab_size(m->tok);
    if (tv > m->hp.V)
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "tokenizer.json: %d token ids, but config.json vocab_size is %d", tv,
                          m->hp.V);
    return EMBD_OK;
}

/* Frees everything a (possibly half-built) model holds. NULL is a no-op. */
/* One shared object (embd_model_share). */
struct model_share {
    char key[48];
    void *obj;
    void (*destroy)(void *);
    int holds;
    struct model_share *next;
};

struct embd_model_shares {
    pthread_mutex_t lock;
    struct model_share *list;
};

static struct embd_model_shares *shares_new(void) {
    struct embd_model_shares *r = embd_calloc(1, sizeof *r);
    if (r && pthread_mutex_init(&r->lock, NULL) != 0) {
        embd_free(r);
        return NULL;
    }
    return r;
}

/* Frees the registry; objects still held (contexts not freed before their
 * model, against embd.h) are destroyed with it. */
static void shares_free(struct embd_model_shares *r) {
    if (!r) return;
    for (struct model_share *e = r->list, *n; e; e = n) {
        n = e->next;
        e->destroy(e->obj);
        embd_free(e);
    }
    pthread_mutex_destroy(&r->lock);
    embd_free(r);
}

void *embd_model_share(const struct embd_model *m, const char *key, embd_share_make make,
                       void (*destroy)(void *), void *arg, enum embd_status *st) {
    struct embd_model_shares *r = m->shares;
    *st = EMBD_OK;
    if (!r) return make(m, arg, st);
    pthread_mutex_lock(&r->lock);
    for (struct model_share *e = r->list; e; e = e->next)
        if (!strcmp(e->key, key)) {
            e->holds++;
            pthread_mutex_unlock(&r->lock);
            return e->obj;
        }
    /* made under the lock: a second context of the same key waits for it
     * rather than making a copy of its own */
    struct model_share *e = embd_calloc(1, sizeof *e);
    void *obj = NULL;
    if (!e) {
        *st = embd_error(EMBD_ERR_NOMEM, "out of memory");
    } else if ((obj = make(m, arg, st))) {
        snprintf(e->key, sizeof e->key, "%s", key);
        e->obj = obj;
        e->destroy = destroy;
        e->holds = 1;
        e->next = r->list;
        r->list = e;
    } else {
        embd_free(e);
    }
    pthread_mutex_unlock(&r->lock);
    return obj;
}

void embd_model_unshare(const struct embd_model *m, void *obj, void (*destroy)(void *)) {
    if (!obj) return;
    struct embd_model_shares *r = m->shares;
    if (!r) {
        destroy(obj);
        return;
    }
    pthread_mutex_lock(&r->lock);
    for (struct model_share **p = &r->list; *p; p = &(*p)->next) {
        struct model_share *e = *p;
        if (e->obj != obj) continue;
        if (--e->holds == 0) {
            *p = e->next;
            pthread_mutex_unlock(&r->lock);
            e->destroy(e->obj);
            embd_free(e);
            return;
        }
        break;
    }
    pthread_mutex_unlock(&r->lock);
}

void embd_model_free(embd_model *model) {
    if (!model) return;
    shares_free(model->shares);
    if (model->tok) embd_tokenizer_free(model->tok);
    if (model->map) munmap(model->map, model->map_len);
    for (size_t i = 0; i < model->n_shards; i++)
        munmap(model->shards[i].map, model->shards[i].map_len);
    embd_free(model->shards);
    embd_free(model->owned);
    embd_free(model->derived);
    embd_free(model->w.layers);
    embd_free(model->dir);
    for (int i = 0; i < model->n_prompts; i++) {
        embd_free(model->prompt_names[i]);
        embd_free(model->prompt_texts[i]);
    }
    embd_free(model->prompt_names);
    embd_free(model->prompt_texts);
    embd_free(model->default_prompt);
    embd_free(model);
}

/* config_sentence_transformers.json (optional): "prompts" {name: text} and
 * "default_prompt_name", which must name one of them, as
 * sentence-transformers checks. */
static enum embd_status read_prompts(const char *dir, embd_model *m) {
    static const char name[] = "config_sentence_transformers.json";
    char *buf = NULL;
    size_t len;
    cJSON *root = NULL;
    enum embd_status s = read_json_file(dir, name, true, MAX_SMALL_JSON, &buf, &len);
    if (s || !buf) return s;
    if ((s = embd_json_parse(&root, buf, len, name))) goto done;
    s = EMBD_ERR_MODEL_FORMAT;
    if (!cJSON_IsObject(root)) {
        embd_error(s, "%s: not a JSON object", name);
        goto done;
    }
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(root, "prompts");
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(root, "default_prompt_name");
    if (prompts && !cJSON_IsNull(prompts) && !cJSON_IsObject(prompts)) {
        embd_error(s, "%s: prompts is not an object", name);
        goto done;
    }
    const int n = cJSON_IsObject(prompts) ? cJSON_GetArraySize(prompts) : 0;
    m->prompt_names = embd_calloc((size_t)(n ? n : 1), sizeof *m->prompt_names);
    m->prompt_texts = embd_calloc((size_t)(n ? n : 1), sizeof *m->prompt_texts);
    if (!m->prompt_names || !m->prompt_texts) goto nomem;
    for (const cJSON *p = n ? prompts->child : NULL; p; p = p->next) {
        if (!cJSON_IsString(p)) {
            char pr_[96];
            embd_error(s, "%s: prompt \"%s\" is not a string", name,
                       embd_printable(pr_, sizeof pr_, p->string));
            goto done;
        }
        const int i = m->n_prompts;
        if (!(m->prompt_names[i] = embd_strdup(p->string))) goto nomem;
        if (!(m->prompt_texts[i] = embd_strdup(p->valuestring))) {
            embd_free(m->prompt_names[i]);
            goto nomem;
        }
        m->n_prompts++;
    }
    if (def && !cJSON_IsNull(def)) {
        if (!cJSON_IsString(def) || !embd_model_prompt(m, def->valuestring)) {
            embd_error(s, "%s: default_prompt_name is not one of the prompts", name);
            goto done;
        }
        if (!(m->default_prompt = embd_strdup(def->valuestring))) goto nomem;
    }
    s = EMBD_OK;
    goto done;
nomem:
    s = embd_error(EMBD_ERR_NOMEM, "out of memory reading %s", name);
done:
    cJSON_Delete(root);
    embd_free(buf);
    return s;
}

const char *embd_model_prompt(const embd_model *model, const char *name) {
    if (!model || !name) return NULL;
    for (int i = 0; i < model->n_prompts; i++)
        if (strcmp(model->prompt_names[i], name) == 0) return model->prompt_texts[i];
    return NULL;
}

const char *embd_model_prompt_name(const embd_model *model, int i) {
    return model && i >= 0 && i < model->n_prompts ? model->prompt_names[i] : NULL;
}

int embd_model_prompt_count(const embd_model *model) {
    return model ? model->n_prompts : 0;
}

const char *embd_model_default_prompt_name(const embd_model *model) {
    return model ? model->default_prompt : NULL;
}

enum embd_status embd_model_load(const char *dir, struct embd_model_params params,
                                 embd_model **out) {
    if (out) *out = NULL;
    if (!dir || !out) return embd_error(EMBD_ERR_INVALID_ARG, "embd_model_load: NULL argument");
    if (params.max_seq_length < 0 || params.max_seq_length == 1)
        return embd_error(EMBD_ERR_INVALID_ARG, "max_seq_length %d is invalid (0 or >= 2)",
                          params.max_seq_length);
    embd_model *m = NULL;
    char *buf = NULL, *tdir = NULL, *st_path = NULL, *named = NULL;
    size_t len;
    embd_st_modules mods = {0};
    bool have_mods = false;
    embd_safetensors st = {0};
    enum embd_status s;
    /* Not a directory: a name (ORG/NAME) for embd_model_resolve. */
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        size_t need = 0;
        s = embd_model_resolve(dir, NULL, NULL, 0, &need);
        if (s != EMBD_ERR_BUFFER_TOO_SMALL) return s;
        if (!(named = embd_malloc(need))) return embd_error(EMBD_ERR_NOMEM, "out of memory");
        if ((s = embd_model_resolve(dir, NULL, named, need, &need))) {
            embd_free(named);
            return s;
        }
        dir = named;
    }
    if (!(m = embd_calloc(1, sizeof *m)) || !(m->dir = embd_strdup(dir)) ||
        !(m->shares = shares_new())) {
        s = embd_error(EMBD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    embd_hparams *hp = &m->hp;
    /* modules.json may put config.json and the weights in a sub-folder. */
    if ((s = read_json_file(dir, "modules.json", true, MAX_SMALL_JSON, &buf, &len))) goto fail;
    if (buf) {
        if ((s = embd_modules_parse(&mods, buf, len, "modules.json"))) goto fail;
        have_mods = true;
    }
    tdir = have_mods && mods.transformer_path[0] ? embd_path_join(dir, mods.transformer_path)
                                                 : embd_strdup(dir);
    if (!tdir) {
        s = embd_error(EMBD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((s = read_config(tdir, hp))) goto fail;
    if ((s = read_pooling(dir, have_mods ? &mods : NULL, hp))) goto fail;
    if (hp->n_labels) { /* a cross-encoder reads the [CLS] state, as is */
        hp->pooling = EMBD_POOL_CLS;
        hp->normalize = false;
    }
    bool lower = false;
    if ((s = read_max_tokens(tdir, params.max_seq_length, hp, &lower))) goto fail;
    if ((s = read_tokenizer(tdir, m))) goto fail;
    /* sentence-transformers lowercases the text itself (Python's str.lower)
     * when do_lower_case is set: the same ids only when the tokenizer
     * lowercases anyway */
    if (lower && !embd_tokenizer_lowercases(m->tok)) {
        s = embd_error(EMBD_ERR_UNSUPPORTED,
                       "sentence_bert_config.json: do_lower_case with a tokenizer that keeps case "
                       "is not supported (sentence-transformers would lowercase the text first)");
        goto fail;
    }
    if ((s = read_prompts(dir, m))) goto fail;

    if (!(st_path = embd_path_join(tdir, "model.safetensors"))) {
        s = embd_error(EMBD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* one file, else the shards a model.safetensors.index.json names */
    const char *wfile = "model.safetensors";
    char *ipath = embd_path_join(tdir, "model.safetensors.index.json");
    struct stat isb;
    bool sharded = ipath && stat(st_path, &isb) != 0 && errno == ENOENT && stat(ipath, &isb) == 0;
    embd_free(ipath);
    if (sharded) {
        wfile = "model.safetensors.index.json";
        if ((s = embd_st_open_index(&st, tdir, wfile))) goto fail;
    } else if ((s = embd_st_open(&st, st_path, wfile))) {
        goto fail;
    }
    if ((s = bind_weights(m, &st, wfile))) goto fail;

    uint64_t h = hash_hparams(hp);
    uint64_t tfp = embd_tokenizer_fingerprint(m->tok);
    h = embd_hash64(h, &tfp, sizeof tfp);
    if (sharded)
        for (size_t i = 0; i < st.n_shards; i++)
            h = embd_hash64(h, st.shards[i].data, st.shards[i].data_len);
    else
        h = embd_hash64(h, st.data, st.data_len);
    m->fingerprint = h;

    /* The model keeps the mappings; the tensor table goes. */
    m->map = st.map;
    m->map_len = st.map_len;
    m->shards = st.shards;
    m->n_shards = st.n_shards;
    st.map = NULL;
    st.shards = NULL;
    st.n_shards = 0;
    embd_st_free(&st);
    embd_modules_free(&mods);
    embd_free(buf);
    embd_free(tdir);
    embd_free(st_path);
    embd_free(named);
    *out = m;
    return EMBD_OK;
fail:
    embd_st_free(&st);
    embd_modules_free(&mods);
    embd_free(buf);
    embd_free(tdir);
    embd_free(st_path);
    embd_free(named);
    embd_model_free(m);
    return s;
}

/* The accessors below are documented in embd.h; a NULL model gives 0, ""
 * or false. */
int embd_model_dim(const embd_model *model) {
    return model ? model->hp.H : 0;
}

int embd_model_max_tokens(const embd_model *model) {
    return model ? model->hp.max_tokens : 0;
}

int embd_model_vocab_size(const embd_model *model) {
    return model ? model->hp.V : 0;
}

const char *embd_model_pooling(const embd_model *model) {
    if (!model) return "";
    return model->hp.pooling == EMBD_POOL_CLS ? "cls" : "mean";
}

bool embd_model_normalizes(const embd_model *model) {
    return model && model->hp.normalize;
}

bool embd_model_is_reranker(const embd_model *model) {
    return model && model->hp.n_labels > 0;
}

void embd_model_drop_weight_pages(const struct embd_model *m, const float *w, size_t n) {
    if (!m || !w) return;
    const uintptr_t a = (uintptr_t)w, b = a + n * sizeof(float);
    bool mapped = m->map && a >= (uintptr_t)m->map && b <= (uintptr_t)m->map + m->map_len;
    for (size_t i = 0; i < m->n_shards && !mapped; i++)
        mapped = a >= (uintptr_t)m->shards[i].map &&
                 b <= (uintptr_t)m->shards[i].map + m->shards[i].map_len;
    if (!mapped) return;
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a1 = (a + pg - 1) & ~(pg - 1), b1 = b & ~(pg - 1);
    if (b1 > a1) (void)madvise((void *)a1, b1 - a1, MADV_DONTNEED);
}

uint64_t embd_model_fingerprint(const embd_model *model) {
    return model ? model->fingerprint : 0;
}

enum embd_status embd_tokenize(const embd_model *model, const char *text, size_t len, int32_t *ids,
                               size_t cap, size_t *n_ids) {
    if (n_ids) *n_ids = 0;
    if (!model || !n_ids || (!text && len) || (!ids && cap))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_tokenize: NULL argument");
    return embd_tokenizer_encode(model->tok, text ? text : "", len, model->hp.max_tokens, ids, cap,
                                 n_ids, NULL);
}

enum embd_status embd_tokenize_pair(const embd_model *model, const char *a, size_t alen,
                                    const char *b, size_t blen, int32_t *ids, int32_t *types,
                                    size_t cap, size_t *n_ids) {
    if (n_ids) *n_ids = 0;
    if (!model || !n_ids || (!a && alen) || (!b && blen) || (cap && (!ids || !types)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_tokenize_pair: NULL argument");
    return embd_tokenizer_encode_pair(model->tok, a ? a : "", alen, b ? b : "", blen,
                                      model->hp.max_tokens, true, ids, types, cap, n_ids, NULL);
}

enum embd_status embd_count_tokens(const embd_model *model, const char *text, size_t len,
                                   size_t *n_tokens) {
    if (n_tokens) *n_tokens = 0;
    if (!model || !n_tokens || (!text && len))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_count_tokens: NULL argument");
    enum embd_status st =
        embd_tokenizer_encode(model->tok, text ? text : "", len, INT_MAX, NULL, 0, n_tokens, NULL);
    return st == EMBD_ERR_BUFFER_TOO_SMALL ? EMBD_OK : st;
}
