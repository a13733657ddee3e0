/* tokenizer_load.c — reads a Hugging Face tokenizer.json into an embd_tokenizer:
 * the BertNormalizer options, the WordPiece vocabulary (two hash tables), the
 * added tokens and the post-processor's special ids. */
#include "tokenizer/tokenizer_internal.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Ids above this are refused as corrupt (the largest real vocabularies hold
 * about 250,000 tokens). */
#define TOK_MAX_ID (1 << 24)

static uint64_t tok_hash(const char *s, size_t len) {
    return embd_hash64(0x746f6b656e697a65ull, s, len);
}

int32_t tok_table_find(const struct embd_tokenizer *tok, const struct tok_table *t, const char *s,
                       size_t len) {
    if (len > t->max_len) return -1;
    uint64_t h = tok_hash(s, len);
    for (uint32_t i = (uint32_t)h & t->mask;; i = (i + 1) & t->mask) {
        const struct tok_slot *sl = &t->slots[i];
        if (sl->id < 0) return -1;
        if (sl->hash == h && sl->len == len && memcmp(tok->pool + sl->off, s, len) == 0)
            return sl->id;
    }
}

/* Inserts a key (already in the pool at `off`). Returns 0, or 1 if the key is
 * already present (with `replace`, it then takes the new id and 0 is
 * returned). The table must have a free slot. */
int tok_table_insert(const struct embd_tokenizer *tok, struct tok_table *t, uint32_t off,
                     uint32_t len, int32_t id, int replace) {
    const char *s = tok->pool + off;
    uint64_t h = tok_hash(s, len);
    uint32_t i = (uint32_t)h & t->mask;
    for (;; i = (i + 1) & t->mask) {
        struct tok_slot *sl = &t->slots[i];
        if (sl->id < 0) break;
        if (sl->hash == h && sl->len == len && memcmp(tok->pool + sl->off, s, len) == 0) {
            if (!replace) return 1;
            sl->id = id;
            return 0;
        }
    }
    t->slots[i] = (struct tok_slot){.hash = h, .off = off, .len = len, .id = id};
    if (len > t->max_len) t->max_len = len;
    return 0;
}

enum embd_status tok_table_init(struct tok_table *t, size_t n) {
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    t->slots = embd_malloc2(cap, sizeof(*t->slots));
    if (!t->slots) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < cap; i++)
        t->slots[i].id = -1;
    t->mask = (uint32_t)(cap - 1);
    t->max_len = 0;
    return EMBD_OK;
}

/* Reads an integer id from a JSON number: it must be integral and in
 * [0, TOK_MAX_ID). Returns 0 on success. */
static int json_id(const cJSON *v, int32_t *id) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d < TOK_MAX_ID) || d != floor(d)) return -1;
    *id = (int32_t)d;
    return 0;
}

/* A boolean field; missing or null gives `def`; anything else is an error (-1). */
static int json_bool(const cJSON *obj, const char *name, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v)) return def;
    if (!cJSON_IsBool(v)) return -1;
    return cJSON_IsTrue(v) ? 1 : 0;
}

static const char *json_type(const cJSON *obj) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

int tok_json_bool(const struct cJSON *obj, const char *name, int def) {
    return json_bool(obj, name, def);
}

const char *tok_json_type(const struct cJSON *obj) {
    return json_type(obj);
}

static enum embd_status load_normalizer(embd_tokenizer *tok, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return EMBD_OK;
    const char *type = json_type(n);
    if (!type) return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: normalizer has no type");
    if (strcmp(type, "BertNormalizer") != 0)
        return embd_error(EMBD_ERR_UNSUPPORTED, "tokenizer.json: unsupported normalizer type '%s'",
                          type);
    tok->clean_text = json_bool(n, "clean_text", 1);
    tok->handle_chinese = json_bool(n, "handle_chinese_chars", 1);
    tok->lowercase = json_bool(n, "lowercase", 1);
    /* strip_accents: null (or missing) follows lowercase */
    tok->strip_accents = json_bool(n, "strip_accents", tok->lowercase);
    if (tok->clean_text < 0 || tok->handle_chinese < 0 || tok->lowercase < 0 ||
        tok->strip_accents < 0)
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "tokenizer.json: BertNormalizer option is not a boolean");
    return EMBD_OK;
}

static enum embd_status load_pretokenizer(embd_tokenizer *tok, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return EMBD_OK;
    const char *type = json_type(p);
    if (!type)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: pre_tokenizer has no type");
    if (strcmp(type, "BertPreTokenizer") != 0)
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "tokenizer.json: unsupported pre_tokenizer type '%s'", type);
    tok->bert_pretok = 1;
    return EMBD_OK;
}

/* Appends a string (and a NUL) to the pool; returns its offset. The pool was
 * sized beforehand. */
static uint32_t pool_add(embd_tokenizer *tok, const char *s, size_t len) {
    uint32_t off = (uint32_t)tok->pool_len;
    memcpy(tok->pool + off, s, len);
    tok->pool[off + len] = 0;
    tok->pool_len += len + 1;
    return off;
}

static enum embd_status load_model(embd_tokenizer *tok, const cJSON *m, const cJSON *added,
                                   int32_t **id_off_out, int *max_id_out) {
    enum embd_status st;
    int32_t *id_off = NULL;
    if (!cJSON_IsObject(m))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: missing \"model\" object");
    const char *type = json_type(m);
    if (!type) return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: model has no type");
    if (strcmp(type, "WordPiece") != 0)
        return embd_error(EMBD_ERR_UNSUPPORTED, "tokenizer.json: unsupported model type '%s'",
                          type);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    if (!cJSON_IsObject(vocab) || !vocab->child)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: model.vocab missing or empty");
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(m, "unk_token");
    if (!cJSON_IsString(unk))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: model.unk_token missing");
    const cJSON *pfx = cJSON_GetObjectItemCaseSensitive(m, "continuing_subword_prefix");
    const char *prefix = "##";
    if (pfx && !cJSON_IsNull(pfx)) {
        if (!cJSON_IsString(pfx))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: continuing_subword_prefix is not a string");
        prefix = pfx->valuestring;
    }
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(m, "max_input_chars_per_word");
    tok->max_chars = 100;
    if (mc && !cJSON_IsNull(mc)) {
        if (!cJSON_IsNumber(mc) || !(mc->valuedouble >= 0 && mc->valuedouble <= 1e9))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: bad max_input_chars_per_word");
        tok->max_chars = (int)mc->valuedouble;
    }

    /* sizes first: number of tokens, pool bytes, largest id */
    size_t n = 0, bytes = strlen(prefix) + 1;
    int max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id;
        if (json_id(e, &id) != 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: vocab entry '%.40s' has a bad id (need an "
                              "integer in [0, %d))",
                              e->string ? e->string : "", TOK_MAX_ID);
        if (id > max_id) max_id = id;
        bytes += strlen(e->string) + 1;
        n++;
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        const cJSON *idv = cJSON_GetObjectItemCaseSensitive(a, "id");
        int32_t id;
        if (!cJSON_IsString(c) || !c->valuestring[0] || json_id(idv, &id) != 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: added token without a content string or a valid id");
        if (id > max_id) max_id = id;
        bytes += strlen(c->valuestring) + 1;
        if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(a, "normalized")))
            bytes += 513; /* room for its normalized form (load_added) */
    }
    if (bytes >= UINT32_MAX)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: vocabulary too large");
    tok->pool = embd_malloc(bytes);
    id_off = embd_malloc2((size_t)max_id + 1, sizeof(*id_off));
    if (!tok->pool || !id_off) {
        st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    for (int i = 0; i <= max_id; i++)
        id_off[i] = -1;
    tok->prefix = tok->pool + pool_add(tok, prefix, strlen(prefix));
    size_t plen = strlen(prefix);
    if ((st = tok_table_init(&tok->full, n)) != EMBD_OK) goto fail;
    if ((st = tok_table_init(&tok->cont, n)) != EMBD_OK) goto fail;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = (int32_t)e->valuedouble;
        size_t len = strlen(e->string);
        if (id_off[id] >= 0) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT,
                            "tokenizer.json: vocab id %d is used twice ('%.40s' and '%.40s')",
                            (int)id, tok->pool + id_off[id], e->string);
            goto fail;
        }
        uint32_t off = pool_add(tok, e->string, len);
        id_off[id] = (int32_t)off;
        if (tok_table_insert(tok, &tok->full, off, (uint32_t)len, id, 0) != 0) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: vocab token '%.40s' repeats",
                            e->string);
            goto fail;
        }
        if (plen && len >= plen && memcmp(e->string, prefix, plen) == 0)
            tok_table_insert(tok, &tok->cont, off + (uint32_t)plen, (uint32_t)(len - plen), id, 0);
    }
    tok->unk_id = tok_table_find(tok, &tok->full, unk->valuestring, strlen(unk->valuestring));
    if (tok->unk_id < 0) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: unk_token '%.40s' not in vocab",
                        unk->valuestring);
        goto fail;
    }
    *id_off_out = id_off;
    *max_id_out = max_id;
    return EMBD_OK;
fail:
    embd_free(id_off);
    return st;
}

static enum embd_status load_added(embd_tokenizer *tok, const cJSON *added, int32_t *id_off) {
    if (!added || cJSON_IsNull(added)) return EMBD_OK;
    if (!cJSON_IsArray(added))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: added_tokens is not an array");
    int n = cJSON_GetArraySize(added);
    if (n == 0) return EMBD_OK;
    tok->added = embd_calloc((size_t)n, sizeof(*tok->added));
    if (!tok->added) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    for (const cJSON *a = added->child; a; a = a->next) {
        const char *c = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(a, "id")->valuedouble;
        int single = json_bool(a, "single_word", 0), norm = json_bool(a, "normalized", 1);
        int lstrip = json_bool(a, "lstrip", 0), rstrip = json_bool(a, "rstrip", 0);
        int special = json_bool(a, "special", 0);
        if (single < 0 || norm < 0 || lstrip < 0 || rstrip < 0 || special < 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: added token '%.40s' has a non-boolean flag", c);
        /* lstrip / rstrip only move whitespace from the neighbouring text into
         * the token's span; whitespace yields no ids, so they change nothing
         * but the offsets (encode_text_track). */
        if (single)
            return embd_error(EMBD_ERR_UNSUPPORTED,
                              "tokenizer.json: added token '%.40s' with single_word", c);
        size_t len = strlen(c);
        uint32_t noff = 0;
        size_t nlen = 0;
        if (norm) { /* matched as the normalizer spells it, as tokenizers does */
            char buf[512];
            nlen = tok_bert_normalize(tok, c, len, buf, sizeof buf);
            if (nlen == (size_t)-1)
                return embd_error(EMBD_ERR_UNSUPPORTED,
                                  "tokenizer.json: added token '%.40s' (normalized = true) is too "
                                  "long",
                                  c);
            if (nlen) noff = pool_add(tok, buf, nlen);
        }
        uint32_t off = pool_add(tok, c, len);
        if (id_off[id] < 0) id_off[id] = (int32_t)off;
        tok->added[tok->n_added++] = (struct tok_added){.off = off,
                                                        .len = (uint32_t)len,
                                                        .id = id,
                                                        .special = special != 0,
                                                        .lstrip = lstrip != 0,
                                                        .rstrip = rstrip != 0,
                                                        .normalized = norm != 0,
                                                        .noff = noff,
                                                        .nlen = (uint32_t)nlen};
        if (norm && !nlen) continue; /* normalizes to nothing: never matched */
        const unsigned char c0 = (unsigned char)(norm ? tok->pool[noff] : c[0]);
        tok->added_first[c0] = 1;
        if (norm) {
            /* Raw characters that may normalize to its first one: an ASCII
             * letter's capital, and (lowercasing, accents stripped) any
             * non-ASCII character when it starts with a letter or is not
             * ASCII itself. */
            if (c0 >= 'a' && c0 <= 'z') tok->added_first[c0 - 'a' + 'A'] = 1;
            if (c0 >= 0x80 || (c0 >= 'a' && c0 <= 'z'))
                for (int b = 0xC0; b < 0x100; b++)
                    tok->added_first[b] = 1;
        }
    }
    return EMBD_OK;
}

/* Looks up the ids of special token `name` in TemplateProcessing's
 * special_tokens map and appends them to ids[*n] (capacity 8). */
static enum embd_status template_special(const cJSON *specials, const char *name, int32_t *ids,
                                         int *n) {
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(specials, name);
    const cJSON *arr = sp ? cJSON_GetObjectItemCaseSensitive(sp, "ids") : NULL;
    if (!cJSON_IsArray(arr))
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "tokenizer.json: post_processor special token '%.40s' has no ids", name);
    for (const cJSON *v = arr->child; v; v = v->next) {
        int32_t id;
        if (json_id(v, &id) != 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: post_processor special token '%.40s' has a bad id",
                              name);
        if (*n >= 8)
            return embd_error(EMBD_ERR_UNSUPPORTED,
                              "tokenizer.json: post_processor adds more than 8 special tokens");
        ids[(*n)++] = id;
    }
    return EMBD_OK;
}

/* TemplateProcessing's "pair" template: special tokens and sequences A and B
 * once each, every entry with its type_id. A missing template leaves the
 * tokenizer without pair encoding (embd_tokenizer_encode_pair refuses). */
static enum embd_status load_pair_template(embd_tokenizer *tok, const cJSON *pair,
                                           const cJSON *specials) {
    if (!pair || cJSON_IsNull(pair)) return EMBD_OK;
    if (!cJSON_IsArray(pair))
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "tokenizer.json: TemplateProcessing 'pair' is not an array");
    int seen[2] = {0, 0};
    for (const cJSON *e = pair->child; e; e = e->next) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(s ? s : q, "id");
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(s ? s : q, "type_id");
        if (!cJSON_IsString(id) ||
            (ty && (!cJSON_IsNumber(ty) || ty->valuedouble < 0 || ty->valuedouble > 255)))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: bad TemplateProcessing 'pair' entry");
        const uint8_t type = ty ? (uint8_t)ty->valueint : 0;
        if (q) {
            const int which = strcmp(id->valuestring, "A") == 0   ? 0
                              : strcmp(id->valuestring, "B") == 0 ? 1
                                                                  : -1;
            if (which < 0 || seen[which] || tok->n_pair >= 16)
                return embd_error(EMBD_ERR_UNSUPPORTED,
                                  "tokenizer.json: TemplateProcessing 'pair' must hold sequences "
                                  "A and B once each");
            seen[which] = 1;
            tok->pair[tok->n_pair++] = (struct tok_pair_item){0, (int8_t)which, type};
            continue;
        }
        int32_t ids[8];
        int n = 0;
        enum embd_status st = template_special(specials, id->valuestring, ids, &n);
        if (st) return st;
        for (int i = 0; i < n; i++) {
            if (tok->n_pair >= 16)
                return embd_error(EMBD_ERR_UNSUPPORTED,
                                  "tokenizer.json: TemplateProcessing 'pair' is too long");
            tok->pair[tok->n_pair++] = (struct tok_pair_item){ids[i], -1, type};
        }
    }
    if (!seen[0] || !seen[1])
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "tokenizer.json: TemplateProcessing 'pair' lacks sequence A or B");
    return EMBD_OK;
}

static enum embd_status load_post(embd_tokenizer *tok, const cJSON *p) {
    enum embd_status st;
    if (!p || cJSON_IsNull(p)) return EMBD_OK;
    const char *type = json_type(p);
    if (!type)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: post_processor has no type");
    if (strcmp(type, "BertProcessing") == 0) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(p, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(p, "sep");
        if (cJSON_GetArraySize(cls) != 2 || cJSON_GetArraySize(sep) != 2 ||
            json_id(cJSON_GetArrayItem(cls, 1), &tok->pre_ids[0]) != 0 ||
            json_id(cJSON_GetArrayItem(sep, 1), &tok->post_ids[0]) != 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: BertProcessing needs cls and sep as [token, id]");
        tok->n_pre = tok->n_post = 1;
        const struct tok_pair_item bert[5] = {{tok->pre_ids[0], -1, 0},
                                              {0, 0, 0},
                                              {tok->post_ids[0], -1, 0},
                                              {0, 1, 1},
                                              {tok->post_ids[0], -1, 1}};
        memcpy(tok->pair, bert, sizeof bert);
        tok->n_pair = 5;
        return EMBD_OK;
    }
    if (strcmp(type, "RobertaProcessing") == 0) {
        /* <s> A </s>, and <s> A </s> </s> B </s> for a pair, every type id 0
         * (trim_offsets and add_prefix_space only move offsets) */
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(p, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(p, "sep");
        if (cJSON_GetArraySize(cls) != 2 || cJSON_GetArraySize(sep) != 2 ||
            json_id(cJSON_GetArrayItem(cls, 1), &tok->pre_ids[0]) != 0 ||
            json_id(cJSON_GetArrayItem(sep, 1), &tok->post_ids[0]) != 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: RobertaProcessing needs cls and sep as [token, id]");
        tok->n_pre = tok->n_post = 1;
        tok->trim_offsets = (uint8_t)tok_json_bool(p, "trim_offsets", 1);
        tok->trim_prefix_space = (uint8_t)tok_json_bool(p, "add_prefix_space", 1);
        const int32_t c = tok->pre_ids[0], e = tok->post_ids[0];
        const struct tok_pair_item roberta[6] = {{c, -1, 0}, {0, 0, 0}, {e, -1, 0},
                                                 {e, -1, 0}, {0, 1, 0}, {e, -1, 0}};
        memcpy(tok->pair, roberta, sizeof roberta);
        tok->n_pair = 6;
        return EMBD_OK;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "tokenizer.json: unsupported post_processor type '%s'", type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    if (!cJSON_IsArray(single))
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "tokenizer.json: TemplateProcessing without a 'single' template");
    int seen_seq = 0;
    for (const cJSON *e = single->child; e; e = e->next) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(s ? s : q, "id");
        if (!cJSON_IsString(id))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: bad TemplateProcessing 'single' entry");
        if (q) {
            if (seen_seq || strcmp(id->valuestring, "A") != 0)
                return embd_error(EMBD_ERR_UNSUPPORTED,
                                  "tokenizer.json: TemplateProcessing 'single' must hold sequence "
                                  "A once");
            seen_seq = 1;
        } else if (seen_seq) {
            if ((st = template_special(specials, id->valuestring, tok->post_ids, &tok->n_post)))
                return st;
        } else {
            if ((st = template_special(specials, id->valuestring, tok->pre_ids, &tok->n_pre)))
                return st;
        }
    }
    if (!seen_seq)
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "tokenizer.json: TemplateProcessing 'single' has no sequence");
    return load_pair_template(tok, cJSON_GetObjectItemCaseSensitive(p, "pair"), specials);
}

/* The decoder (for embd_tokenizer_decode only): WordPiece or none. Any other
 * type, or a WordPiece decoder with bad fields, loads (ids do not depend on
 * it) and makes decoding refuse with EMBD_ERR_UNSUPPORTED. */
static enum embd_status load_decoder(embd_tokenizer *tok, const cJSON *d) {
    tok->dec_kind = TOK_DEC_NONE;
    if (!d || cJSON_IsNull(d)) return EMBD_OK;
    const char *type = json_type(d);
    snprintf(tok->dec_type, sizeof tok->dec_type, "%s", type ? type : "(none)");
    tok->dec_kind = TOK_DEC_UNSUPPORTED;
    if (type && strcmp(type, "WordPiece") != 0) return tok_uni_load_decoder(tok, d);
    if (!type) return EMBD_OK;
    const cJSON *pfx = cJSON_GetObjectItemCaseSensitive(d, "prefix");
    int cleanup = json_bool(d, "cleanup", 1);
    if ((pfx && !cJSON_IsString(pfx)) || cleanup < 0) {
        snprintf(tok->dec_type, sizeof tok->dec_type, "WordPiece (with a bad prefix or cleanup)");
        return EMBD_OK;
    }
    const char *prefix = pfx ? pfx->valuestring : "##";
    size_t plen = strlen(prefix);
    tok->dec_prefix = embd_malloc(plen + 1);
    if (!tok->dec_prefix) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(tok->dec_prefix, prefix, plen + 1);
    tok->dec_cleanup = cleanup;
    tok->dec_kind = TOK_DEC_WORDPIECE;
    return EMBD_OK;
}

/* Each id's string for decoding (an added token's content first, as
 * `tokenizers` looks it up), whether it is an added token's, and whether
 * skip_special_tokens drops it: the special added tokens, and any token
 * spelled as one of them. */
static enum embd_status init_decoding(embd_tokenizer *tok, const int32_t *id_off, int max_id) {
    size_t n = (size_t)max_id + 1;
    tok->id_str = embd_malloc2(n, sizeof(*tok->id_str));
    tok->id_flags = embd_calloc(n, 1);
    if (!tok->id_str || !tok->id_flags)
        return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++)
        tok->id_str[i] = id_off[i] < 0 ? UINT32_MAX : (uint32_t)id_off[i];
    for (int i = 0; i < tok->n_added; i++)
        tok->id_str[tok->added[i].id] = tok->added[i].off;
    for (int i = 0; i < tok->n_added; i++) {
        const struct tok_added *a = &tok->added[i];
        if (!a->special) continue;
        const char *s = tok->pool + a->off;
        tok->id_flags[a->id] |= TOK_ID_SPECIAL;
        int32_t v = tok_table_find(tok, &tok->full, s, a->len);
        if (v >= 0 && tok->id_str[v] == (uint32_t)id_off[v]) tok->id_flags[v] |= TOK_ID_SPECIAL;
        for (int j = 0; j < tok->n_added; j++)
            if (tok->added[j].len == a->len &&
                memcmp(tok->pool + tok->added[j].off, s, a->len) == 0)
                tok->id_flags[tok->added[j].id] |= TOK_ID_SPECIAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (tok->id_str[i] == UINT32_MAX) continue;
        size_t l = strlen(tok->pool + tok->id_str[i]);
        if (l > tok->max_token_len) tok->max_token_len = l;
    }
    return EMBD_OK;
}

static void init_ascii(embd_tokenizer *tok) {
    for (uint32_t c = 0; c < 128; c++) {
        uint8_t cls = TOK_ASCII_WORD;
        uint32_t lo = c;
        if (tok->clean_text && (c == 0 || tok_is_control(c))) cls = TOK_ASCII_DROP;
        if (tok->clean_text && tok_is_whitespace(c)) lo = ' ';
        if (tok->lowercase && c >= 'A' && c <= 'Z') lo = c + 32;
        if (cls != TOK_ASCII_DROP && tok->bert_pretok) {
            if (tok_is_whitespace(lo))
                cls = TOK_ASCII_SPACE;
            else if (tok_is_punct(lo))
                cls = TOK_ASCII_PUNCT;
        }
        tok->ascii_class[c] = cls;
        tok->ascii_lower[c] = (uint8_t)lo;
    }
}

static uint64_t compute_fingerprint(const embd_tokenizer *tok, const int32_t *id_off, int max_id) {
    int32_t opts[] = {
        tok->clean_text, tok->handle_chinese, tok->strip_accents, tok->lowercase, tok->bert_pretok,
        tok->unk_id,     tok->max_chars,      tok->n_added,       tok->n_pre,     tok->n_post,
        max_id};
    uint64_t h = embd_hash64(1, opts, sizeof(opts));
    h = embd_hash64(h, tok->prefix, strlen(tok->prefix) + 1);
    h = embd_hash64(h, tok->pre_ids, sizeof(tok->pre_ids[0]) * (size_t)tok->n_pre);
    h = embd_hash64(h, tok->post_ids, sizeof(tok->post_ids[0]) * (size_t)tok->n_post);
    if (tok->uni) h = tok_uni_fingerprint(tok, h);
    for (int i = 0; i <= max_id; i++) {
        if (id_off[i] < 0) continue;
        const char *s = tok->pool + id_off[i];
        h = embd_hash64(h, &i, sizeof(i));
        h = embd_hash64(h, s, strlen(s) + 1);
    }
    for (int i = 0; i < tok->n_added; i++) {
        h = embd_hash64(h, &tok->added[i].id, sizeof(tok->added[i].id));
        h = embd_hash64(h, tok->pool + tok->added[i].off, tok->added[i].len + 1);
    }
    return h;
}

enum embd_status embd_tokenizer_load(embd_tokenizer **out, const char *json, size_t len) {
    enum embd_status st;
    cJSON *root = NULL;
    int32_t *id_off = NULL;
    int max_id = -1;
    embd_tokenizer *tok = NULL;
    if (!out || (!json && len)) return embd_error(EMBD_ERR_INVALID_ARG, "tokenizer: NULL argument");
    *out = NULL;
    if (!embd_utf8_valid(json, len))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: not valid UTF-8");
    root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: not a JSON object");
        goto fail;
    }
    tok = embd_calloc(1, sizeof(*tok));
    if (!tok) {
        st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: added_tokens is not an array");
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = cJSON_IsObject(model) ? json_type(model) : NULL;
    if (mtype && strcmp(mtype, "Unigram") == 0) {
        /* the SentencePiece pipeline: its own normalizers and pre-tokenizers */
        if ((st = tok_uni_load(tok, json, len, root, added, &id_off, &max_id))) goto fail;
    } else {
        if ((st = load_normalizer(tok, cJSON_GetObjectItemCaseSensitive(root, "normalizer"))))
            goto fail;
        if ((st = load_pretokenizer(tok, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"))))
            goto fail;
        if ((st = load_model(tok, model, added, &id_off, &max_id))) goto fail;
    }
    if ((st = load_added(tok, added, id_off))) goto fail;
    if ((st = load_post(tok, cJSON_GetObjectItemCaseSensitive(root, "post_processor")))) goto fail;
    for (int i = 0; i < tok->n_pre + tok->n_post; i++) {
        int32_t id = i < tok->n_pre ? tok->pre_ids[i] : tok->post_ids[i - tok->n_pre];
        if (id > max_id || id_off[id] < 0) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT,
                            "tokenizer.json: post_processor id %d is not a token", (int)id);
            goto fail;
        }
    }
    for (int i = 0; i < tok->n_pair; i++) {
        int32_t id = tok->pair[i].id;
        if (tok->pair[i].seq < 0 && (id > max_id || id_off[id] < 0)) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT,
                            "tokenizer.json: post_processor id %d is not a token", (int)id);
            goto fail;
        }
    }
    init_ascii(tok);
    tok->vocab_size = max_id + 1;
    tok->fingerprint = compute_fingerprint(tok, id_off, max_id);
    if ((st = init_decoding(tok, id_off, max_id))) goto fail;
    if ((st = load_decoder(tok, cJSON_GetObjectItemCaseSensitive(root, "decoder")))) goto fail;
    embd_free(id_off);
    cJSON_Delete(root);
    *out = tok;
    return EMBD_OK;
fail:
    embd_free(id_off);
    cJSON_Delete(root);
    embd_tokenizer_free(tok);
    return st;
}

void embd_tokenizer_free(embd_tokenizer *tok) {
    if (!tok) return;
    embd_free(tok->full.slots);
    embd_free(tok->cont.slots);
    embd_free(tok->added);
    embd_free(tok->pool);
    embd_free(tok->id_str);
    embd_free(tok->id_flags);
    embd_free(tok->dec_prefix);
    tok_uni_free(tok->uni);
    embd_free(tok);
}

bool embd_tokenizer_lowercases(const embd_tokenizer *tok) {
    if (!tok) return false;
    return tok->uni ? tok_uni_lowercases(tok->uni) != 0 : tok->lowercase != 0;
}

bool embd_tokenizer_token_shows_text(const embd_tokenizer *tok, int32_t id) {
    return tok && tok->uni && id >= 0 && id == tok_uni_unk_id(tok->uni);
}

int embd_tokenizer_vocab_size(const embd_tokenizer *tok) {
    return tok ? tok->vocab_size : 0;
}

int32_t embd_tokenizer_token_id(const embd_tokenizer *tok, const char *token) {
    if (!tok || !token) return -1;
    size_t len = strlen(token);
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added[i].len == len && memcmp(tok->pool + tok->added[i].off, token, len) == 0)
            return tok->added[i].id;
    return tok_table_find(tok, &tok->full, token, len);
}

uint64_t embd_tokenizer_fingerprint(const embd_tokenizer *tok) {
    return tok ? tok->fingerprint : 0;
}
