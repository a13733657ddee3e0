/* tiny_model.c — see tiny_model.h. */
#include "tiny_model.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

tiny_cfg tiny_default_cfg(void) {
    tiny_cfg c = {.V = 32, .H = 8, .L = 2, .NH = 2, .I = 16, .P = 16, .TV = 2};
    return c;
}

static uint32_t rng_next(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* A value exact in fp32, fp16 and bf16: 0, or +-(1 + m/128) * 2^e, e in [-6, 1]. */
static float tiny_value(uint32_t *s) {
    uint32_t r = rng_next(s);
    if (r % 17 == 0) return 0.0f;
    uint32_t m = (r >> 5) & 127u, e = (r >> 12) % 8u, sign = (r >> 20) & 1u;
    uint32_t bits = sign << 31 | (127u + e - 6u) << 23 | m << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint16_t to_f16(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    uint32_t sign = b >> 31, exp = (b >> 23) & 0xffu, man = b & 0x7fffffu;
    if (exp == 0) return (uint16_t)(sign << 15); /* only zeros are generated */
    return (uint16_t)(sign << 15 | (exp - 112u) << 10 | man >> 13);
}

static uint16_t to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return (uint16_t)(b >> 16);
}

typedef struct {
    char name[128];
    int ndim;
    int d0, d1;
} spec;

static size_t model_specs(const tiny_cfg *c, spec *out) {
    size_t n = 0;
#define ADD(nd, a, b, ...)                                                                         \
    do {                                                                                           \
        snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                                    \
        out[n].ndim = nd;                                                                          \
        out[n].d0 = a;                                                                             \
        out[n].d1 = b;                                                                             \
        n++;                                                                                       \
    } while (0)
    ADD(2, c->V, c->H, "embeddings.word_embeddings.weight");
    ADD(2, c->P, c->H, "embeddings.position_embeddings.weight");
    ADD(2, c->TV, c->H, "embeddings.token_type_embeddings.weight");
    ADD(1, c->H, 0, "embeddings.LayerNorm.weight");
    ADD(1, c->H, 0, "embeddings.LayerNorm.bias");
    for (int l = 0; l < c->L; l++) {
        const char *qkv[3] = {"query", "key", "value"};
        for (int k = 0; k < 3; k++) {
            ADD(2, c->H, c->H, "encoder.layer.%d.attention.self.%s.weight", l, qkv[k]);
            ADD(1, c->H, 0, "encoder.layer.%d.attention.self.%s.bias", l, qkv[k]);
        }
        ADD(2, c->H, c->H, "encoder.layer.%d.attention.output.dense.weight", l);
        ADD(1, c->H, 0, "encoder.layer.%d.attention.output.dense.bias", l);
        ADD(1, c->H, 0, "encoder.layer.%d.attention.output.LayerNorm.weight", l);
        ADD(1, c->H, 0, "encoder.layer.%d.attention.output.LayerNorm.bias", l);
        ADD(2, c->I, c->H, "encoder.layer.%d.intermediate.dense.weight", l);
        ADD(1, c->I, 0, "encoder.layer.%d.intermediate.dense.bias", l);
        ADD(2, c->H, c->I, "encoder.layer.%d.output.dense.weight", l);
        ADD(1, c->H, 0, "encoder.layer.%d.output.dense.bias", l);
        ADD(1, c->H, 0, "encoder.layer.%d.output.LayerNorm.weight", l);
        ADD(1, c->H, 0, "encoder.layer.%d.output.LayerNorm.bias", l);
    }
#undef ADD
    return n;
}

tt_file tt_build(const tiny_cfg *cfg, const char *dtype, const char *prefix, bool position_ids,
                 uint32_t seed) {
    tt_file f = {0};
    spec *sp = calloc(5 + 16 * (size_t)cfg->L, sizeof *sp);
    size_t ns = model_specs(cfg, sp);
    size_t n = ns + (position_ids ? 1 : 0);
    size_t esize = strcmp(dtype, "F32") == 0 ? 4 : 2;
    f.e = calloc(n, sizeof *f.e);
    f.values = calloc(n, sizeof *f.values);
    f.counts = calloc(n, sizeof *f.counts);
    size_t total = position_ids ? (size_t)cfg->P * 8 : 0;
    for (size_t i = 0; i < ns; i++)
        total += (size_t)sp[i].d0 * (size_t)(sp[i].ndim == 2 ? sp[i].d1 : 1) * esize;
    f.data = calloc(total ? total : 1, 1);
    uint32_t s = seed ? seed : 1;
    size_t at = 0;
    if (position_ids) { /* I64 [1, P] first, as transformers writes it */
        tt_entry *e = &f.e[f.n];
        snprintf(e->name, sizeof e->name, "%sembeddings.position_ids", prefix);
        strcpy(e->dtype, "I64");
        snprintf(e->shape, sizeof e->shape, "[1,%d]", cfg->P);
        snprintf(e->offsets, sizeof e->offsets, "[%zu,%zu]", at, at + (size_t)cfg->P * 8);
        for (int p = 0; p < cfg->P; p++) {
            int64_t v = p;
            memcpy(f.data + at + (size_t)p * 8, &v, 8);
        }
        at += (size_t)cfg->P * 8;
        f.n++;
    }
    for (size_t i = 0; i < ns; i++) {
        tt_entry *e = &f.e[f.n];
        size_t cnt = (size_t)sp[i].d0 * (size_t)(sp[i].ndim == 2 ? sp[i].d1 : 1);
        snprintf(e->name, sizeof e->name, "%s%s", prefix, sp[i].name);
        snprintf(e->dtype, sizeof e->dtype, "%s", dtype);
        if (sp[i].ndim == 2)
            snprintf(e->shape, sizeof e->shape, "[%d,%d]", sp[i].d0, sp[i].d1);
        else
            snprintf(e->shape, sizeof e->shape, "[%d]", sp[i].d0);
        snprintf(e->offsets, sizeof e->offsets, "[%zu,%zu]", at, at + cnt * esize);
        f.values[f.n] = malloc(cnt * sizeof(float));
        f.counts[f.n] = cnt;
        for (size_t k = 0; k < cnt; k++) {
            float v = tiny_value(&s);
            f.values[f.n][k] = v;
            if (esize == 4) {
                memcpy(f.data + at + 4 * k, &v, 4);
            } else {
                uint16_t h = strcmp(dtype, "F16") == 0 ? to_f16(v) : to_bf16(v);
                memcpy(f.data + at + 2 * k, &h, 2);
            }
        }
        at += cnt * esize;
        f.n++;
    }
    f.data_len = total;
    free(sp);
    return f;
}

void tt_free(tt_file *f) {
    for (size_t i = 0; i < f->n; i++)
        free(f->values[i]);
    free(f->values);
    free(f->counts);
    free(f->e);
    free(f->data);
    memset(f, 0, sizeof *f);
}

void tt_add_raw(tt_file *f, const char *name, const char *dtype, const char *shape,
                const void *bytes, size_t nbytes) {
    f->e = realloc(f->e, (f->n + 1) * sizeof *f->e);
    f->values = realloc(f->values, (f->n + 1) * sizeof *f->values);
    f->counts = realloc(f->counts, (f->n + 1) * sizeof *f->counts);
    f->data = realloc(f->data, f->data_len + nbytes + 1);
    tt_entry *e = &f->e[f->n];
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->dtype, sizeof e->dtype, "%s", dtype);
    snprintf(e->shape, sizeof e->shape, "%s", shape);
    snprintf(e->offsets, sizeof e->offsets, "[%zu,%zu]", f->data_len, f->data_len + nbytes);
    if (nbytes) memcpy(f->data + f->data_len, bytes, nbytes);
    f->data_len += nbytes;
    f->values[f->n] = NULL;
    f->counts[f->n] = 0;
    f->n++;
}

int tt_find(const tt_file *f, const char *name) {
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0) return (int)i;
    return -1;
}

char *tt_header(const tt_file *f) {
    size_t cap = 64 + f->n * (sizeof(tt_entry) + 64);
    char *h = malloc(cap);
    size_t at = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < f->n; i++)
        at += (size_t)snprintf(h + at, cap - at,
                               ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":%s}",
                               f->e[i].name, f->e[i].dtype, f->e[i].shape, f->e[i].offsets);
    snprintf(h + at, cap - at, "}");
    return h;
}

uint8_t *tt_image(const tt_file *f, size_t misalign, size_t *len) {
    char *h = tt_header(f);
    size_t hl = strlen(h);
    size_t padded = (hl + 7) / 8 * 8 + misalign;
    *len = 8 + padded + f->data_len;
    uint8_t *img = malloc(*len);
    uint64_t n = padded;
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)(n >> (8 * i));
    memcpy(img + 8, h, hl);
    memset(img + 8 + hl, ' ', padded - hl);
    memcpy(img + 8 + padded, f->data, f->data_len);
    free(h);
    return img;
}

int write_bytes(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = len ? fwrite(buf, 1, len, fp) : 0;
    int bad = fclose(fp) != 0 || w != len;
    return bad ? -1 : 0;
}

int write_text(const char *path, const char *text) {
    return write_bytes(path, text, strlen(text));
}

char *path_cat(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *tiny_config_json(const tiny_cfg *c, const char *extra) {
    char *s = malloc(1024 + strlen(extra));
    sprintf(s,
            "{\"architectures\":[\"BertModel\"],\"model_type\":\"bert\",\"hidden_act\":\"gelu\","
            "\"hidden_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
            "\"intermediate_size\":%d,\"max_position_embeddings\":%d,\"vocab_size\":%d,"
            "\"type_vocab_size\":%d,\"layer_norm_eps\":1e-12,"
            "\"position_embedding_type\":\"absolute\"%s%s}",
            c->H, c->L, c->NH, c->I, c->P, c->V, c->TV, extra[0] ? "," : "", extra);
    return s;
}

static const char modules_json[] =
    "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":\"sentence_transformers.models."
    "Transformer\"},{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":"
    "\"sentence_transformers.models.Pooling\"},{\"idx\":2,\"name\":\"2\",\"path\":\"2_"
    "Normalize\",\"type\":\"sentence_transformers.models.Normalize\"}]";

int tiny_write_dir(const char *dir, const tiny_cfg *cfg, const tt_file *f) {
    int rc = 0;
    char *p, *cfgjson = tiny_config_json(cfg, ""), pool[256];
    mkdir(dir, 0700);
    p = path_cat(dir, "config.json");
    rc |= write_text(p, cfgjson);
    free(p);
    p = path_cat(dir, "tokenizer.json");
    rc |= write_text(p, tiny_tokenizer_json);
    free(p);
    p = path_cat(dir, "modules.json");
    rc |= write_text(p, modules_json);
    free(p);
    p = path_cat(dir, "1_Pooling");
    mkdir(p, 0700);
    free(p);
    p = path_cat(dir, "1_Pooling/config.json");
    snprintf(pool, sizeof pool,
             "{\"word_embedding_dimension\":%d,\"pooling_mode_cls_token\":false,"
             "\"pooling_mode_mean_tokens\":true,\"pooling_mode_max_tokens\":false,"
             "\"pooling_mode_mean_sqrt_len_tokens\":false}",
             cfg->H);
    rc |= write_text(p, pool);
    free(p);
    size_t len;
    uint8_t *img = tt_image(f, 0, &len);
    p = path_cat(dir, "model.safetensors");
    rc |= write_bytes(p, img, len);
    free(p);
    free(img);
    free(cfgjson);
    return rc;
}

embd_model *tiny_model_load(const char *dir, uint32_t seed) {
    tiny_cfg cfg = tiny_default_cfg();
    tt_file f = tt_build(&cfg, "F32", "", false, seed);
    int rc = tiny_write_dir(dir, &cfg, &f);
    tt_free(&f);
    embd_model *m = NULL;
    if (rc != 0)
        fprintf(stderr, "tiny_model_load: cannot write %s\n", dir);
    else if (embd_model_load(dir, embd_model_default_params(), &m) != EMBD_OK)
        fprintf(stderr, "tiny_model_load: %s\n", embd_last_error());
    return m;
}

char *make_temp_dir(void) {
    /* TMPDIR, else /dev/shm (the tests write thousands of small files; a
     * tmpfs makes them ten times faster), else /tmp. */
    const char *base = getenv("TMPDIR");
    if (!base || !base[0]) base = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/embd-model-test-XXXXXX", base);
    if (!mkdtemp(tmpl)) return NULL;
    return strdup(tmpl);
}

void rm_rf(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
                char *c = path_cat(path, de->d_name);
                rm_rf(c);
                free(c);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

const char tiny_tokenizer_json[] =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[{\"id\":0,\"speci"
    "al\":true,\"content\":\"[PAD]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"no"
    "rmalized\":false},{\"id\":1,\"special\":true,\"content\":\"[UNK]\",\"single_word\":false,\"l"
    "strip\":false,\"rstrip\":false,\"normalized\":false},{\"id\":2,\"special\":true,\"content\""
    ":\"[CLS]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false},{"
    "\"id\":3,\"special\":true,\"content\":\"[SEP]\",\"single_word\":false,\"lstrip\":false,\"rstr"
    "ip\":false,\"normalized\":false},{\"id\":4,\"special\":true,\"content\":\"[MASK]\",\"single_"
    "word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false}],\"normalizer\":{\"ty"
    "pe\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,\"strip_accent"
    "s\":null,\"lowercase\":true},\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},\"post_proc"
    "essor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"[CLS]\",\"typ"
    "e_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"[SEP]\","
    "\"typ"
    "e_id\":0}}],\"pair\":[{\"SpecialToken\":{\"id\":\"[CLS]\",\"type_id\":0}},{\"Sequence\":{"
    "\"id\""
    ":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"[SEP]\",\"type_id\":0}},{\"Sequence\":{"
    "\"id\""
    ":\"B\",\"type_id\":1}},{\"SpecialToken\":{\"id\":\"[SEP]\",\"type_id\":1}}],\"special_tokens\""
    ":{\"[CLS]\":{\"id\":\"[CLS]\",\"ids\":[2],\"tokens\":[\"[CLS]\"]},\"[SEP]\":{\"id\":\"[SEP]\","
    "\"ids"
    "\":[3],\"tokens\":[\"[SEP]\"]}}},\"decoder\":{\"type\":\"WordPiece\",\"prefix\":\"##\","
    "\"cleanup"
    "\":true},\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"continuing_subword_pref"
    "ix\":\"##\",\"max_input_chars_per_word\":100,\"vocab\":{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,\""
    "[SEP]\":3,\"[MASK]\":4,\"a\":5,\"b\":6,\"c\":7,\"d\":8,\"e\":9,\"f\":10,\"g\":11,\"h\":12,"
    "\"i\":13,\"j"
    "\":14,\"k\":15,\"l\":16,\"m\":17,\"n\":18,\"o\":19,\"p\":20,\"q\":21,\"r\":22,\"s\":23,\"t\":"
    "24,\"u\":2"
    "5,\"v\":26,\"w\":27,\"x\":28,\"y\":29,\"z\":30,\"##s\":31}}}";
