/* config.c — config.json (Hugging Face BERT) and the sentence-transformers
 * files (modules.json, the Pooling config, sentence_bert_config.json) and
 * tokenizer_config.json: parsed and validated into embd_hparams. */
#include "model/loader.h"
#include "util/util.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* A file-provided string made safe for a message (uses a local buffer `pr_`). */
#define PR(str) embd_printable(pr_, sizeof pr_, (str))

#define MAX_EXACT_INT 9007199254740992.0 /* 2^53: larger doubles are not exact integers */

bool embd_json_uint(const cJSON *item, uint64_t lo, uint64_t hi, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0 || v > MAX_EXACT_INT || floor(v) != v) return false;
    uint64_t u = (uint64_t)v;
    if (u < lo || u > hi) return false;
    *out = u;
    return true;
}

const char *embd_printable(char *buf, size_t cap, const char *s) {
    size_t n = 0;
    if (!cap) return buf;
    for (; s[n] && n + 1 < cap; n++)
        buf[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    if (s[n]) { /* cut short: drop a last UTF-8 sequence that lost bytes */
        size_t k = n;
        while (k > 0 && ((unsigned char)buf[k - 1] & 0xc0) == 0x80)
            k--;
        if (k > 0) {
            unsigned char lead = (unsigned char)buf[k - 1];
            size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
            if (n - (k - 1) < need) n = k - 1;
        }
    }
    buf[n] = '\0';
    return buf;
}

/* A short description of a JSON value for messages: the number, a quoted
 * prefix of a string, or the JSON type. */
static const char *describe(const cJSON *item, char *buf, size_t cap) {
    if (cJSON_IsNumber(item))
        snprintf(buf, cap, "%.17g", item->valuedouble);
    else if (cJSON_IsString(item)) {
        char tmp[48];
        snprintf(buf, cap, "the string \"%s\"", embd_printable(tmp, sizeof tmp, item->valuestring));
    } else if (cJSON_IsBool(item))
        snprintf(buf, cap, "%s", cJSON_IsTrue(item) ? "true" : "false");
    else if (cJSON_IsNull(item))
        snprintf(buf, cap, "null");
    else if (cJSON_IsArray(item))
        snprintf(buf, cap, "an array");
    else if (cJSON_IsObject(item))
        snprintf(buf, cap, "an object");
    else
        snprintf(buf, cap, "an invalid value");
    return buf;
}

enum embd_status embd_json_parse(cJSON **out, const char *json, size_t len, const char *name) {
    *out = NULL;
    if (!embd_utf8_valid(json, len))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: not valid UTF-8", name);
    const char *nul = memchr(json, '\0', len);
    if (nul)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: contains a NUL byte at offset %zu", name,
                          (size_t)(nul - json));
    /* cJSON would cut a string at an escaped NUL; no valid file needs one. */
    for (size_t i = 0; i + 1 < len; i++) {
        if (json[i] != '\\') continue;
        if (json[i + 1] == 'u' && i + 6 <= len && memcmp(json + i + 2, "0000", 4) == 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "%s: contains an escaped NUL (\\u0000) at offset %zu", name, i);
        i++; /* skip the escaped character */
    }
    EMBD_ASSERT(json[len] == '\0');
    const char *end = NULL;
    /* len + 1 takes in the terminating NUL, which require_null_terminated
     * wants to see right after the value (and any whitespace). */
    cJSON *root = cJSON_ParseWithLengthOpts(json, len + 1, &end, 1);
    if (!root) {
        size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: not valid JSON (error near byte %zu)", name,
                          at);
    }
    *out = root;
    return EMBD_OK;
}

/* Reads the integer at `key` of `obj` into *out. Absent (or null) keys take
 * `def` when `def >= 0`, and are an error otherwise. */
static enum embd_status get_int(const cJSON *obj, const char *key, const char *name, int lo, int hi,
                                int def, int *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item || cJSON_IsNull(item)) {
        if (def >= 0) {
            *out = def;
            return EMBD_OK;
        }
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: missing key %s", name, key);
    }
    uint64_t v;
    if (!embd_json_uint(item, (uint64_t)lo, (uint64_t)hi, &v)) {
        char buf[64];
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: %s must be an integer in [%d, %d], found %s",
                          name, key, lo, hi, describe(item, buf, sizeof buf));
    }
    *out = (int)v;
    return EMBD_OK;
}

/* The string at `key`, or NULL when absent or null; *bad is set when the key
 * holds something other than a string or null. */
static const char *get_str(const cJSON *obj, const char *key, bool *bad) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *bad = false;
    if (!item || cJSON_IsNull(item)) return NULL;
    if (!cJSON_IsString(item) || !item->valuestring) {
        *bad = true;
        return NULL;
    }
    return item->valuestring;
}

/* A cross-encoder's labels and activation: num_labels (or the size of
 * id2label, as transformers counts them; 2 when neither is given) and the
 * activation sentence-transformers applies to its scores: config.json's
 * sentence_transformers.activation_fn (s-t 4+) or
 * sbert_ce_default_activation_function (older), else sigmoid for one label
 * and none for several, as CrossEncoder does. */
static enum embd_status classifier_parse(const cJSON *root, const char *name, embd_hparams *h) {
    enum embd_status st;
    const cJSON *id2label = cJSON_GetObjectItemCaseSensitive(root, "id2label");
    int labels = 2;
    if (cJSON_IsObject(id2label)) labels = cJSON_GetArraySize(id2label);
    if ((st = get_int(root, "num_labels", name, 1, 1 << 16, labels, &labels))) return st;
    if (labels < 1 || labels > 1 << 16)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: %d labels", name, labels);
    h->n_labels = labels;
    h->sigmoid = labels == 1;
    const cJSON *stc = cJSON_GetObjectItemCaseSensitive(root, "sentence_transformers");
    const cJSON *fn =
        cJSON_IsObject(stc) ? cJSON_GetObjectItemCaseSensitive(stc, "activation_fn") : NULL;
    if (!fn) fn = cJSON_GetObjectItemCaseSensitive(root, "sbert_ce_default_activation_function");
    if (!fn || cJSON_IsNull(fn)) return EMBD_OK;
    if (!cJSON_IsString(fn))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "%s: the activation function is not a string",
                          name);
    const char *f = fn->valuestring, *dot = strrchr(f, '.');
    const char *cls = dot ? dot + 1 : f;
    if (strcmp(cls, "Sigmoid") == 0) {
        h->sigmoid = true;
    } else if (strcmp(cls, "Identity") == 0) {
        h->sigmoid = false;
    } else {
        char pr_[96];
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "%s: activation function \"%s\" is not supported (Sigmoid, Identity)",
                          name, embd_printable(pr_, sizeof pr_, f));
    }
    return EMBD_OK;
}

/* The encoder families embd runs: config.json's model_type and the prefix of
 * their architectures' class names. */
static const struct arch_family {
    const char *model_type, *prefix;
    enum embd_arch arch;
} families[] = {
    {"bert", "Bert", EMBD_ARCH_BERT},
    {"xlm-roberta", "XLMRoberta", EMBD_ARCH_ROBERTA},
    {"roberta", "Roberta", EMBD_ARCH_ROBERTA},
    {"mpnet", "MPNet", EMBD_ARCH_MPNET},
};

enum embd_status embd_config_parse(embd_hparams *hp, const char *json, size_t len,
                                   const char *name) {
    bool classifier = false;
    char pr_[96];
    cJSON *root = NULL;
    enum embd_status st = embd_json_parse(&root, json, len, name);
    if (st) return st;
    bool bad;
    const char *s;
    if (!cJSON_IsObject(root)) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: not a JSON object", name);
        goto fail;
    }

    s = get_str(root, "model_type", &bad);
    if (bad) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: model_type is not a string", name);
        goto fail;
    }
    const struct arch_family *fam = NULL;
    if (s) {
        for (size_t i = 0; i < sizeof families / sizeof families[0] && !fam; i++)
            if (strcmp(s, families[i].model_type) == 0) fam = &families[i];
        if (!fam) {
            st = embd_error(EMBD_ERR_UNSUPPORTED,
                            "%s: model_type \"%s\" is not supported (bert, xlm-roberta, roberta, "
                            "mpnet)",
                            name, PR(s));
            goto fail;
        }
    }
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (arch && !cJSON_IsNull(arch)) {
        if (!cJSON_IsArray(arch)) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: architectures is not an array", name);
            goto fail;
        }
        const cJSON *a;
        cJSON_ArrayForEach(a, arch) {
            if (!cJSON_IsString(a)) {
                st =
                    embd_error(EMBD_ERR_MODEL_FORMAT, "%s: architectures holds a non-string", name);
                goto fail;
            }
            const struct arch_family *f = NULL;
            bool cls = false;
            for (size_t i = 0; i < sizeof families / sizeof families[0] && !f; i++) {
                const size_t n = strlen(families[i].prefix);
                const char *rest = a->valuestring + n;
                if (strncmp(a->valuestring, families[i].prefix, n) != 0) continue;
                if (strcmp(rest, "ForSequenceClassification") == 0)
                    f = &families[i], cls = true;
                else if (!strcmp(rest, "Model") || !strcmp(rest, "ForMaskedLM") ||
                         (families[i].arch == EMBD_ARCH_BERT && !strcmp(rest, "ForPreTraining")))
                    f = &families[i];
            }
            if (!f || (fam && f != fam)) {
                st = embd_error(EMBD_ERR_UNSUPPORTED,
                                "%s: architecture \"%s\" is not supported%s (BertModel, "
                                "XLMRobertaModel, RobertaModel, MPNetModel, their ForMaskedLM "
                                "and ForSequenceClassification, BertForPreTraining)",
                                name, PR(a->valuestring), f ? " with this model_type" : "");
                goto fail;
            }
            fam = f;
            classifier = classifier || cls;
        }
    }
    if (!fam) fam = &families[0]; /* neither says: BERT, as before */

    s = get_str(root, "hidden_act", &bad);
    if (bad || !s) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: hidden_act is %s", name,
                        bad ? "not a string" : "missing");
        goto fail;
    }
    if (strcmp(s, "gelu") != 0) {
        st = embd_error(EMBD_ERR_UNSUPPORTED,
                        "%s: hidden_act \"%s\" is not supported (only \"gelu\", exact erf)", name,
                        PR(s));
        goto fail;
    }
    s = get_str(root, "position_embedding_type", &bad);
    if (bad) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: position_embedding_type is not a string", name);
        goto fail;
    }
    if (s && strcmp(s, "absolute") != 0) {
        st = embd_error(EMBD_ERR_UNSUPPORTED,
                        "%s: position_embedding_type \"%s\" is not supported (only "
                        "\"absolute\")",
                        name, PR(s));
        goto fail;
    }

    embd_hparams h = *hp;
    if ((st = get_int(root, "hidden_size", name, 1, 65536, -1, &h.H)) ||
        (st = get_int(root, "num_hidden_layers", name, 1, 1024, -1, &h.L)) ||
        (st = get_int(root, "num_attention_heads", name, 1, 65536, -1, &h.NH)) ||
        (st = get_int(root, "intermediate_size", name, 1, 1 << 20, -1, &h.I)) ||
        (st = get_int(root, "max_position_embeddings", name, 2, 1 << 20, -1, &h.P)) ||
        (st = get_int(root, "vocab_size", name, 1, 10000000, -1, &h.V)) ||
        (st = get_int(root, "type_vocab_size", name, 1, 1024, fam->arch == EMBD_ARCH_MPNET ? 0 : 2,
                      &h.TV)))
        goto fail;
    h.arch = fam->arch;
    h.pos_offset = 0;
    h.rel_buckets = 0;
    if (fam->arch != EMBD_ARCH_BERT) {
        /* RoBERTa-style positions start past the padding index */
        int pad = 1;
        if ((st = get_int(root, "pad_token_id", name, 0, 1 << 20, 1, &pad))) goto fail;
        h.pos_offset = pad + 1;
        if (h.P - h.pos_offset < 2) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT,
                            "%s: max_position_embeddings (%d) leaves fewer than 2 positions past "
                            "pad_token_id (%d)",
                            name, h.P, pad);
            goto fail;
        }
        h.P -= h.pos_offset;
    }
    if (fam->arch == EMBD_ARCH_MPNET) {
        if (h.TV != 0) {
            st = embd_error(EMBD_ERR_UNSUPPORTED, "%s: an MPNet model with token types", name);
            goto fail;
        }
        h.TV = 1; /* no token type embedding: the loader supplies a zero row */
        if ((st = get_int(root, "relative_attention_num_buckets", name, 2, 1024, 32,
                          &h.rel_buckets)))
            goto fail;
        if (h.rel_buckets % 4 != 0) {
            st = embd_error(EMBD_ERR_UNSUPPORTED,
                            "%s: relative_attention_num_buckets %d is not a multiple of 4", name,
                            h.rel_buckets);
            goto fail;
        }
    }
    if (h.H % h.NH != 0) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT,
                        "%s: num_attention_heads (%d) does not divide hidden_size (%d)", name, h.NH,
                        h.H);
        goto fail;
    }
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_eps");
    h.ln_eps = 1e-12f;
    if (eps && !cJSON_IsNull(eps)) {
        /* Below FLT_MIN the fp32 epsilon is subnormal or 0, and a constant row
         * would normalise to NaN. */
        if (!cJSON_IsNumber(eps) || !isfinite(eps->valuedouble) || eps->valuedouble < FLT_MIN ||
            eps->valuedouble > 1) {
            char buf[64];
            st = embd_error(EMBD_ERR_MODEL_FORMAT,
                            "%s: layer_norm_eps must be a number in [1.2e-38, 1], found %s", name,
                            describe(eps, buf, sizeof buf));
            goto fail;
        }
        h.ln_eps = (float)eps->valuedouble;
    }
    h.n_labels = 0;
    h.sigmoid = false;
    if (classifier && (st = classifier_parse(root, name, &h))) goto fail;
    *hp = h;
    st = EMBD_OK;
fail:
    cJSON_Delete(root);
    return st;
}

enum embd_status embd_pooling_parse(embd_hparams *hp, const char *json, size_t len,
                                    const char *name) {
    /* The modes sentence-transformers knows; only the first two are run. */
    static const char *const modes[] = {
        "pooling_mode_cls_token",           "pooling_mode_mean_tokens",
        "pooling_mode_max_tokens",          "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken",
    };
    cJSON *root = NULL;
    enum embd_status st = embd_json_parse(&root, json, len, name);
    if (st) return st;
    if (!cJSON_IsObject(root)) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: not a JSON object", name);
        goto fail;
    }
    const cJSON *dim = cJSON_GetObjectItemCaseSensitive(root, "word_embedding_dimension");
    if (dim && !cJSON_IsNull(dim)) {
        uint64_t d;
        if (!embd_json_uint(dim, 1, 1u << 20, &d) || d != (uint64_t)hp->H) {
            char buf[64];
            st = embd_error(EMBD_ERR_MODEL_FORMAT,
                            "%s: word_embedding_dimension is %s, expected hidden_size %d", name,
                            describe(dim, buf, sizeof buf), hp->H);
            goto fail;
        }
    }
    int n_on = 0, on = -1;
    for (int i = 0; i < (int)(sizeof modes / sizeof modes[0]); i++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, modes[i]);
        if (!item || cJSON_IsNull(item)) continue;
        if (!cJSON_IsBool(item)) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: %s is not true or false", name, modes[i]);
            goto fail;
        }
        if (cJSON_IsTrue(item)) {
            n_on++;
            on = i;
        }
    }
    if (n_on == 0) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: no pooling mode is set", name);
        goto fail;
    }
    if (n_on > 1) {
        st = embd_error(EMBD_ERR_UNSUPPORTED,
                        "%s: several pooling modes at once (concatenated) are not supported", name);
        goto fail;
    }
    if (on >= 2) {
        st = embd_error(EMBD_ERR_UNSUPPORTED,
                        "%s: %s is not supported (only cls_token or mean_tokens)", name, modes[on]);
        goto fail;
    }
    hp->pooling = on == 0 ? EMBD_POOL_CLS : EMBD_POOL_MEAN;
    st = EMBD_OK;
fail:
    cJSON_Delete(root);
    return st;
}

void embd_modules_free(embd_st_modules *mods) {
    embd_free(mods->transformer_path);
    embd_free(mods->pooling_path);
    mods->transformer_path = mods->pooling_path = NULL;
}

/* Whether a module path stays inside the model directory: relative, and
 * without ".." components. */
static bool safe_rel_path(const char *p) {
    if (p[0] == '/') return false;
    for (const char *c = p; *c;) {
        size_t n = strcspn(c, "/\\");
        if (n == 2 && c[0] == '.' && c[1] == '.') return false;
        c += n;
        if (*c) c++;
    }
    return true;
}

enum embd_status embd_modules_parse(embd_st_modules *mods, const char *json, size_t len,
                                    const char *name) {
    static const char prefix[] = "sentence_transformers.models.";
    char pr_[96];
    memset(mods, 0, sizeof *mods);
    cJSON *root = NULL;
    enum embd_status st = embd_json_parse(&root, json, len, name);
    if (st) return st;
    if (!cJSON_IsArray(root)) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: not a JSON array", name);
        goto fail;
    }
    int idx = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, root) {
        bool bad_type, bad_path;
        const char *type = cJSON_IsObject(m) ? get_str(m, "type", &bad_type) : NULL;
        const char *path = cJSON_IsObject(m) ? get_str(m, "path", &bad_path) : NULL;
        if (!cJSON_IsObject(m) || !type || bad_type || bad_path) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT,
                            "%s: module %d is not an object with a string \"type\"", name, idx);
            goto fail;
        }
        if (!path) path = "";
        if (!safe_rel_path(path)) {
            st = embd_error(EMBD_ERR_MODEL_FORMAT,
                            "%s: module %d has path \"%s\" outside the model directory", name, idx,
                            PR(path));
            goto fail;
        }
        const char *kind =
            strncmp(type, prefix, sizeof prefix - 1) == 0 ? type + sizeof prefix - 1 : "";
        if (strcmp(kind, "Transformer") == 0) {
            if (idx != 0) {
                st = embd_error(EMBD_ERR_UNSUPPORTED,
                                "%s: the Transformer module must come first (found at %d)", name,
                                idx);
                goto fail;
            }
            if (!(mods->transformer_path = embd_strdup(path))) goto nomem;
        } else if (strcmp(kind, "Pooling") == 0) {
            if (idx == 0 || mods->has_pooling) {
                st = embd_error(EMBD_ERR_UNSUPPORTED,
                                "%s: a Pooling module must follow the Transformer, once", name);
                goto fail;
            }
            if (!(mods->pooling_path = embd_strdup(path))) goto nomem;
            mods->has_pooling = true;
        } else if (strcmp(kind, "Normalize") == 0) {
            if (!mods->has_pooling) {
                st = embd_error(EMBD_ERR_UNSUPPORTED,
                                "%s: a Normalize module before pooling is not supported", name);
                goto fail;
            }
            mods->normalize = true;
        } else {
            st = embd_error(EMBD_ERR_UNSUPPORTED,
                            "%s: module type \"%s\" is not supported (Transformer, Pooling, "
                            "Normalize)",
                            name, PR(type));
            goto fail;
        }
        idx++;
    }
    if (!mods->transformer_path) {
        st = embd_error(EMBD_ERR_UNSUPPORTED, "%s: no Transformer module", name);
        goto fail;
    }
    if (!mods->has_pooling) {
        st = embd_error(EMBD_ERR_UNSUPPORTED, "%s: no Pooling module", name);
        goto fail;
    }
    cJSON_Delete(root);
    return EMBD_OK;
nomem:
    st = embd_error(EMBD_ERR_NOMEM, "%s: out of memory", name);
fail:
    cJSON_Delete(root);
    embd_modules_free(mods);
    return st;
}

enum embd_status embd_sbert_config_parse(int *out, bool *lower, const char *json, size_t len,
                                         const char *name) {
    *out = 0;
    if (lower) *lower = false;
    cJSON *root = NULL;
    enum embd_status st = embd_json_parse(&root, json, len, name);
    if (st) return st;
    if (!cJSON_IsObject(root)) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: not a JSON object", name);
        goto fail;
    }
    st = get_int(root, "max_seq_length", name, 2, 1 << 30, 0, out);
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(root, "do_lower_case");
    if (!st && dl && !cJSON_IsNull(dl) && !cJSON_IsBool(dl))
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: do_lower_case is not a boolean", name);
    if (!st && lower) *lower = cJSON_IsTrue(dl);
fail:
    cJSON_Delete(root);
    return st;
}

enum embd_status embd_tokenizer_config_parse(int *out, int max_positions, const char *json,
                                             size_t len, const char *name) {
    *out = 0;
    cJSON *root = NULL;
    enum embd_status st = embd_json_parse(&root, json, len, name);
    if (st) return st;
    if (!cJSON_IsObject(root)) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "%s: not a JSON object", name);
        goto fail;
    }
    uint64_t v;
    if (embd_json_uint(cJSON_GetObjectItemCaseSensitive(root, "model_max_length"), 2,
                       (uint64_t)max_positions, &v))
        *out = (int)v;
fail:
    cJSON_Delete(root);
    return st;
}
