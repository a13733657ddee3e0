/* test_model_load.c — embd_model_load on a tiny valid model: shapes, pooling,
 * normalisation, the max_tokens rules, F16 / BF16 / misaligned F32 storage,
 * "bert." prefixes, position_ids, old LayerNorm names, a Transformer
 * sub-folder, the fingerprint, embd_tokenize, and allocation-failure injection. */
#include "model/loader.h"
#include "test.h"
#include "tiny_model.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *root;
static int case_no;

/* A fresh model directory holding the tiny model from `f`. */
static char *fresh_dir(const tiny_cfg *cfg, const tt_file *f) {
    char name[32];
    snprintf(name, sizeof name, "m%d", case_no++);
    char *dir = path_cat(root, name);
    CHECK(tiny_write_dir(dir, cfg, f) == 0);
    return dir;
}

static void put(const char *dir, const char *rel, const char *text) {
    char *p = path_cat(dir, rel);
    CHECK(write_text(p, text) == 0);
    free(p);
}

static void del(const char *dir, const char *rel) {
    char *p = path_cat(dir, rel);
    CHECK(remove(p) == 0);
    free(p);
}

static embd_model *load_ok(const char *dir, int max_seq) {
    struct embd_model_params p = embd_model_default_params();
    p.max_seq_length = max_seq;
    embd_model *m = NULL;
    enum embd_status s = embd_model_load(dir, p, &m);
    CHECK_MSG(s == EMBD_OK && m, "load %s: %s: %s", dir, embd_status_str(s), embd_last_error());
    return s == EMBD_OK ? m : NULL;
}

/* Whether every weight equals the fp32 values the file was built from. */
static bool weights_match(const embd_model *m, const tt_file *f, const char *prefix) {
    const embd_hparams *hp = &m->hp;
    char name[160];
#define CMPW(ptr, ...)                                                                             \
    do {                                                                                           \
        char base_[128];                                                                           \
        snprintf(base_, sizeof base_, __VA_ARGS__);                                                \
        snprintf(name, sizeof name, "%s%s", prefix, base_);                                        \
        int i_ = tt_find(f, name);                                                                 \
        if (i_ < 0 || !(ptr) || memcmp((ptr), f->values[i_], f->counts[i_] * sizeof(float))) {     \
            fprintf(stderr, "weight %s differs\n", name);                                          \
            return false;                                                                          \
        }                                                                                          \
    } while (0)
    CMPW(m->w.word_emb, "embeddings.word_embeddings.weight");
    CMPW(m->w.pos_emb, "embeddings.position_embeddings.weight");
    CMPW(m->w.type_emb, "embeddings.token_type_embeddings.weight");
    CMPW(m->w.emb_ln_g, "embeddings.LayerNorm.weight");
    CMPW(m->w.emb_ln_b, "embeddings.LayerNorm.bias");
    for (int l = 0; l < hp->L; l++) {
        const embd_layer_weights *w = &m->w.layers[l];
        CMPW(w->q_w, "encoder.layer.%d.attention.self.query.weight", l);
        CMPW(w->q_b, "encoder.layer.%d.attention.self.query.bias", l);
        CMPW(w->k_w, "encoder.layer.%d.attention.self.key.weight", l);
        CMPW(w->k_b, "encoder.layer.%d.attention.self.key.bias", l);
        CMPW(w->v_w, "encoder.layer.%d.attention.self.value.weight", l);
        CMPW(w->v_b, "encoder.layer.%d.attention.self.value.bias", l);
        CMPW(w->o_w, "encoder.layer.%d.attention.output.dense.weight", l);
        CMPW(w->o_b, "encoder.layer.%d.attention.output.dense.bias", l);
        CMPW(w->ln1_g, "encoder.layer.%d.attention.output.LayerNorm.weight", l);
        CMPW(w->ln1_b, "encoder.layer.%d.attention.output.LayerNorm.bias", l);
        CMPW(w->i_w, "encoder.layer.%d.intermediate.dense.weight", l);
        CMPW(w->i_b, "encoder.layer.%d.intermediate.dense.bias", l);
        CMPW(w->f_w, "encoder.layer.%d.output.dense.weight", l);
        CMPW(w->f_b, "encoder.layer.%d.output.dense.bias", l);
        CMPW(w->ln2_g, "encoder.layer.%d.output.LayerNorm.weight", l);
        CMPW(w->ln2_b, "encoder.layer.%d.output.LayerNorm.bias", l);
    }
#undef CMPW
    return true;
}

static bool in_map(const embd_model *m, const float *p) {
    const char *b = m->map, *q = (const char *)p;
    return b && q >= b && q < b + m->map_len;
}

static size_t total_floats(const tiny_cfg *c) {
    size_t H = (size_t)c->H, I = (size_t)c->I;
    return (size_t)(c->V + c->P + c->TV) * H + 2 * H +
           (size_t)c->L * (4 * H * H + 4 * H + 2 * H + I * H + I + H * I + H + 2 * H);
}

static void test_basic(const tiny_cfg *cfg) {
    tt_file f = tt_build(cfg, "F32", "", false, 7);
    char *dir = fresh_dir(cfg, &f);
    embd_model *m = load_ok(dir, 0);
    if (m) {
        CHECK_EQ_INT(embd_model_dim(m), 8);
        CHECK_EQ_INT(embd_model_vocab_size(m), 32);
        CHECK_EQ_INT(embd_model_max_tokens(m), 16); /* no sbert / tokenizer config: P */
        CHECK(strcmp(embd_model_pooling(m), "mean") == 0);
        CHECK(embd_model_normalizes(m));
        CHECK_EQ_INT(m->hp.L, 2);
        CHECK_EQ_INT(m->hp.NH, 2);
        CHECK_EQ_INT(m->hp.I, 16);
        CHECK_EQ_INT(m->hp.P, 16);
        CHECK_EQ_INT(m->hp.TV, 2);
        CHECK(m->hp.ln_eps == 1e-12f);
        CHECK(weights_match(m, &f, ""));
        CHECK(in_map(m, m->w.word_emb) && in_map(m, m->w.layers[1].ln2_b));
        CHECK(m->owned == NULL && m->owned_len == 0);
        CHECK(strcmp(m->dir, dir) == 0);

        /* embd_tokenize: [CLS] a b ##s [SEP]; the buffer-too-small rule. */
        int32_t ids[32];
        size_t n = 0;
        CHECK_EQ_INT(embd_tokenize(m, "a bs", 4, ids, 32, &n), EMBD_OK);
        CHECK_EQ_INT(n, 5);
        if (n == 5) {
            CHECK(ids[0] == 2 && ids[1] == 5 && ids[2] == 6 && ids[3] == 31 && ids[4] == 3);
        }
        CHECK_EQ_INT(embd_tokenize(m, "a bs", 4, ids, 2, &n), EMBD_ERR_BUFFER_TOO_SMALL);
        CHECK_EQ_INT(n, 5);
        CHECK_EQ_INT(embd_tokenize(m, "", 0, ids, 32, &n), EMBD_OK);
        CHECK_EQ_INT(n, 2);
        CHECK_EQ_INT(embd_tokenize(m, NULL, 3, ids, 32, &n), EMBD_ERR_INVALID_ARG);
        CHECK_EQ_INT(embd_tokenize(NULL, "a", 1, ids, 32, &n), EMBD_ERR_INVALID_ARG);
        /* 20 letters truncate to P = 16 tokens. */
        CHECK_EQ_INT(embd_tokenize(m, "a b c d e f g h i j k l m n o p q r s t", 39, ids, 32, &n),
                     EMBD_OK);
        CHECK_EQ_INT(n, 16);
        CHECK(n == 16 && ids[15] == 3 && ids[14] == 5 + 13);
    }

    /* Fingerprint: stable across loads, changes with the weights and the options. */
    embd_model *m2 = load_ok(dir, 0);
    embd_model *m3 = load_ok(dir, 8);
    if (m && m2 && m3) {
        CHECK(embd_model_fingerprint(m) == embd_model_fingerprint(m2));
        CHECK(embd_model_fingerprint(m) != embd_model_fingerprint(m3));
        CHECK(embd_model_fingerprint(m) != 0);
    }
    tt_file g = tt_build(cfg, "F32", "", false, 8);
    char *dir2 = fresh_dir(cfg, &g);
    embd_model *m4 = load_ok(dir2, 0);
    if (m && m4) CHECK(embd_model_fingerprint(m) != embd_model_fingerprint(m4));
    embd_model_free(m);
    embd_model_free(m2);
    embd_model_free(m3);
    embd_model_free(m4);
    embd_model_free(NULL);
    CHECK_EQ_INT(embd_model_dim(NULL), 0);
    tt_free(&g);
    tt_free(&f);
    free(dir);
    free(dir2);
}

/* max_tokens: the caller, else sentence_bert_config.json, else
 * tokenizer_config.json model_max_length (sentinels ignored), else P. */
static void test_max_tokens(const tiny_cfg *cfg) {
    tt_file f = tt_build(cfg, "F32", "", false, 7);
    char *dir = fresh_dir(cfg, &f);
    embd_model *m;
    struct embd_model_params p = embd_model_default_params();
    CHECK_EQ_INT(p.max_seq_length, 0);

    put(dir, "tokenizer_config.json", "{\"model_max_length\": 1000000000000000019884624838656}");
    if ((m = load_ok(dir, 0))) CHECK_EQ_INT(embd_model_max_tokens(m), 16);
    embd_model_free(m);
    put(dir, "tokenizer_config.json", "{\"model_max_length\": 12, \"do_lower_case\": true}");
    if ((m = load_ok(dir, 0))) CHECK_EQ_INT(embd_model_max_tokens(m), 12);
    embd_model_free(m);
    put(dir, "sentence_bert_config.json", "{\"max_seq_length\": 10, \"do_lower_case\": false}");
    if ((m = load_ok(dir, 0))) CHECK_EQ_INT(embd_model_max_tokens(m), 10);
    embd_model_free(m);
    if ((m = load_ok(dir, 5))) {
        CHECK_EQ_INT(embd_model_max_tokens(m), 5);
        int32_t ids[8];
        size_t n;
        CHECK_EQ_INT(embd_tokenize(m, "a b c d e", 9, ids, 8, &n), EMBD_OK);
        CHECK(n == 5 && ids[0] == 2 && ids[3] == 7 && ids[4] == 3);
    }
    embd_model_free(m);
    if ((m = load_ok(dir, 16))) CHECK_EQ_INT(embd_model_max_tokens(m), 16);
    embd_model_free(m);
    put(dir, "sentence_bert_config.json", "{\"max_seq_length\": 512}");
    if ((m = load_ok(dir, 0))) CHECK_EQ_INT(embd_model_max_tokens(m), 16); /* clamped to P */
    embd_model_free(m);

    int bad[] = {1, 17, -1, 1 << 30};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p.max_seq_length = bad[i];
        m = (embd_model *)1;
        CHECK_EQ_INT(embd_model_load(dir, p, &m), EMBD_ERR_INVALID_ARG);
        CHECK(m == NULL);
        CHECK(strstr(embd_last_error(), "max_seq_length") != NULL);
    }
    p.max_seq_length = 0;
    CHECK_EQ_INT(embd_model_load(NULL, p, &m), EMBD_ERR_INVALID_ARG);
    CHECK_EQ_INT(embd_model_load(dir, p, NULL), EMBD_ERR_INVALID_ARG);
    tt_free(&f);
    free(dir);
}

/* Pooling and normalisation from the sentence-transformers files. */
static void test_modules(const tiny_cfg *cfg) {
    tt_file f = tt_build(cfg, "F32", "", false, 7);
    char *dir = fresh_dir(cfg, &f);
    embd_model *m;
    put(dir, "1_Pooling/config.json",
        "{\"word_embedding_dimension\":8,\"pooling_mode_cls_token\":true,"
        "\"pooling_mode_mean_tokens\":false,\"pooling_mode_max_tokens\":false}");
    if ((m = load_ok(dir, 0))) {
        CHECK(strcmp(embd_model_pooling(m), "cls") == 0);
        CHECK(embd_model_normalizes(m));
    }
    embd_model_free(m);
    put(dir, "modules.json",
        "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":\"sentence_transformers.models."
        "Transformer\"},{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":"
        "\"sentence_transformers.models.Pooling\"}]");
    if ((m = load_ok(dir, 0))) {
        CHECK(strcmp(embd_model_pooling(m), "cls") == 0);
        CHECK(!embd_model_normalizes(m));
    }
    embd_model_free(m);
    del(dir, "modules.json"); /* a plain Hugging Face model: mean, no normalisation */
    if ((m = load_ok(dir, 0))) {
        CHECK(strcmp(embd_model_pooling(m), "mean") == 0);
        CHECK(!embd_model_normalizes(m));
    }
    embd_model_free(m);
    tt_free(&f);
    free(dir);

    /* The Transformer in a sub-folder (older sentence-transformers layout). */
    char *d2 = path_cat(root, "subfolder");
    char *t = path_cat(d2, "0_Transformer");
    mkdir(d2, 0700);
    tt_file g = tt_build(cfg, "F32", "", false, 9);
    CHECK(tiny_write_dir(t, cfg, &g) == 0);
    char *src = path_cat(t, "1_Pooling"), *dst = path_cat(d2, "1_Pooling");
    CHECK(rename(src, dst) == 0);
    put(t, "sentence_bert_config.json", "{\"max_seq_length\": 9}");
    put(d2, "modules.json",
        "[{\"idx\":0,\"name\":\"0\",\"path\":\"0_Transformer\",\"type\":\"sentence_transformers."
        "models.Transformer\"},{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":"
        "\"sentence_transformers.models.Pooling\"}]");
    if ((m = load_ok(d2, 0))) {
        CHECK_EQ_INT(embd_model_max_tokens(m), 9);
        CHECK(weights_match(m, &g, ""));
    }
    embd_model_free(m);
    tt_free(&g);
    free(src);
    free(dst);
    free(t);
    free(d2);
}

/* F16 / BF16 / misaligned F32 are converted into one owned buffer and equal
 * the F32 values exactly (the values are representable in all three). */
static void test_storage(const tiny_cfg *cfg) {
    const char *dtypes[] = {"F16", "BF16"};
    for (int k = 0; k < 2; k++) {
        tt_file f = tt_build(cfg, dtypes[k], "", false, 7);
        char *dir = fresh_dir(cfg, &f);
        embd_model *m = load_ok(dir, 0);
        if (m) {
            CHECK_MSG(weights_match(m, &f, ""), "%s", dtypes[k]);
            CHECK_EQ_INT(m->owned_len, total_floats(cfg));
            CHECK(!in_map(m, m->w.word_emb));
        }
        embd_model_free(m);
        tt_free(&f);
        free(dir);
    }
    /* misaligned fp32: the data section starts at an odd offset */
    tt_file f = tt_build(cfg, "F32", "", false, 7);
    char *dir = fresh_dir(cfg, &f);
    size_t len;
    uint8_t *img = tt_image(&f, 1, &len);
    char *p = path_cat(dir, "model.safetensors");
    CHECK(write_bytes(p, img, len) == 0);
    embd_model *m = load_ok(dir, 0);
    if (m) {
        CHECK(weights_match(m, &f, ""));
        CHECK_EQ_INT(m->owned_len, total_floats(cfg));
    }
    embd_model_free(m);
    /* mixed: one tensor in F16 among F32 ones */
    tt_file h = tt_build(cfg, "F16", "", false, 7);
    int wi = tt_find(&f, "encoder.layer.1.intermediate.dense.weight");
    CHECK(wi >= 0);
    /* rebuild the F32 image with that tensor's bytes in F16 at the end */
    tt_file mix = tt_build(cfg, "F32", "", false, 7);
    size_t cnt = mix.counts[wi];
    uint8_t *data = malloc(mix.data_len + cnt * 2);
    memcpy(data, mix.data, mix.data_len);
    unsigned long long b0, b1;
    CHECK(sscanf(h.e[wi].offsets, "[%llu,%llu]", &b0, &b1) == 2);
    memcpy(data + mix.data_len, h.data + b0, cnt * 2);
    strcpy(mix.e[wi].dtype, "F16");
    snprintf(mix.e[wi].offsets, sizeof mix.e[wi].offsets, "[%zu,%zu]", mix.data_len,
             mix.data_len + cnt * 2);
    free(mix.data);
    mix.data = data;
    mix.data_len += cnt * 2;
    free(img);
    img = tt_image(&mix, 0, &len);
    CHECK(write_bytes(p, img, len) == 0);
    if ((m = load_ok(dir, 0))) {
        CHECK(weights_match(m, &mix, ""));
        CHECK_EQ_INT(m->owned_len, cnt);
        CHECK(in_map(m, m->w.word_emb) && !in_map(m, m->w.layers[1].i_w));
    }
    embd_model_free(m);
    free(img);
    free(p);
    tt_free(&mix);
    tt_free(&h);
    tt_free(&f);
    free(dir);
}

/* "bert." prefixes, a stored position_ids tensor, extra tensors, the old
 * LayerNorm gamma/beta names. */
static void test_names(const tiny_cfg *cfg) {
    tt_file f = tt_build(cfg, "BF16", "bert.", true, 11);
    char *dir = fresh_dir(cfg, &f);
    embd_model *m = load_ok(dir, 0);
    if (m) CHECK(weights_match(m, &f, "bert."));
    embd_model_free(m);
    tt_free(&f);
    free(dir);

    tt_file g = tt_build(cfg, "F32", "", true, 12);
    for (size_t i = 0; i < g.n; i++) {
        char *s = strstr(g.e[i].name, "LayerNorm.weight");
        if (s) strcpy(s, "LayerNorm.gamma");
        s = strstr(g.e[i].name, "LayerNorm.bias");
        if (s) strcpy(s, "LayerNorm.beta");
    }
    /* extras that are ignored: a pooler, an MLM head bias, an empty tensor */
    float extra[64] = {0};
    tt_add_raw(&g, "pooler.dense.weight", "F32", "[8,8]", extra, sizeof extra);
    tt_add_raw(&g, "cls.predictions.bias", "F64", "[4]", extra, 32);
    tt_add_raw(&g, "empty", "F32", "[0,8]", NULL, 0);
    tt_add_raw(&g, "weird", "Q4_K", "[3]", extra, 5);
    dir = fresh_dir(cfg, &g);
    m = load_ok(dir, 0);
    if (m) {
        CHECK(memcmp(m->w.emb_ln_g, g.values[tt_find(&g, "embeddings.LayerNorm.gamma")],
                     8 * sizeof(float)) == 0);
        CHECK(memcmp(m->w.layers[1].ln2_b,
                     g.values[tt_find(&g, "encoder.layer.1.output.LayerNorm.beta")],
                     8 * sizeof(float)) == 0);
    }
    embd_model_free(m);
    tt_free(&g);
    free(dir);
}

/* Every fp16 bit pattern against ldexp arithmetic; bf16 against shifting. */
static void test_half(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (int)(h >> 10) & 31, man = (int)(h & 1023);
        double sign = (h & 0x8000u) ? -1.0 : 1.0, want;
        if (e == 31)
            want = man ? NAN : sign * INFINITY;
        else if (e == 0)
            want = sign * ldexp(man, -24);
        else
            want = sign * ldexp(1024 + man, e - 25);
        float got = embd_f16_to_f32((uint16_t)h);
        if (isnan(want) ? !isnan(got) : (got != (float)want || !signbit(got) != !signbit(want)))
            bad++;
        uint32_t bits = h << 16;
        float bf;
        memcpy(&bf, &bits, 4);
        float gb = embd_bf16_to_f32((uint16_t)h);
        if (memcmp(&gb, &bf, 4) != 0) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

/* Fail the Nth allocation for N = 0, 1, ... until the load succeeds; every
 * failure must be a clean error (LeakSanitizer checks that nothing leaks). */
static void test_fault_injection(const tiny_cfg *cfg) {
    tt_file f = tt_build(cfg, "F16", "", true, 7);
    char *dir = fresh_dir(cfg, &f);
    put(dir, "sentence_bert_config.json", "{\"max_seq_length\": 10}");
    put(dir, "tokenizer_config.json", "{\"model_max_length\": 12}");
    struct embd_model_params p = embd_model_default_params();
    int ok_at = -1, nomem = 0, other = 0;
    for (long n = 0; n < 100000; n++) {
        embd_model *m = NULL;
        embd_fault_alloc_after(n);
        enum embd_status s = embd_model_load(dir, p, &m);
        embd_fault_alloc_after(-1);
        if (s == EMBD_OK) {
            CHECK(m != NULL);
            if (m) CHECK(weights_match(m, &f, ""));
            embd_model_free(m);
            ok_at = (int)n;
            break;
        }
        CHECK(m == NULL);
        CHECK(embd_last_error()[0] != '\0');
        if (s == EMBD_ERR_NOMEM)
            nomem++;
        else
            other++;
    }
    printf("fault injection: succeeded after %d failing allocations (%d NOMEM, %d other)\n", ok_at,
           nomem, other);
    CHECK(ok_at > 10);
    CHECK(nomem > 0);
    tt_free(&f);
    free(dir);
}

/* Resident kB of the mapping that holds p (its Rss in /proc/self/smaps,
 * counted from the page tables; statm's per-process counters are synced
 * lazily and can be off by dozens of pages), or -1. */
static long mapping_rss_kb(const void *p) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    long rss = -1;
    bool mine = false;
    const uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        long kb;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) /* a mapping's first line */
            mine = a >= lo && a < hi;
        else if (mine && sscanf(line, "Rss: %ld kB", &kb) == 1) {
            rss = kb;
            break;
        }
    }
    fclose(f);
    return rss;
}

/* embd_model_drop_weight_pages: a weight read from the mapping leaves the
 * process's resident memory and reads back unchanged; a converted (fp16)
 * weight, in memory of its own, is left as it was. */
static void test_drop_pages(const tiny_cfg *base) {
    tiny_cfg cfg = *base;
    cfg.V = 8192; /* word_emb (V, H): 256 KiB, 64 pages of 4 KiB */
    const char *dtypes[] = {"F32", "F16"};
    for (int k = 0; k < 2; k++) {
        tt_file f = tt_build(&cfg, dtypes[k], "", false, 5);
        char *dir = fresh_dir(&cfg, &f);
        embd_model *m = load_ok(dir, 0);
        const size_t n = (size_t)cfg.V * (size_t)cfg.H;
        float *copy = malloc(n * sizeof *copy);
        if (m && copy) {
            memcpy(copy, m->w.word_emb, n * sizeof *copy); /* every page read in */
            const long before = mapping_rss_kb(m->w.word_emb);
            embd_model_drop_weight_pages(m, m->w.word_emb, n);
            const long after = mapping_rss_kb(m->w.word_emb);
            const long pg = sysconf(_SC_PAGESIZE);
            const long want = ((long)(n * sizeof(float)) / pg - 2) * pg / 1024;
            if (k == 0) {
                printf("drop pages: the mapping's resident %ld -> %ld kB\n", before, after);
                CHECK(in_map(m, m->w.word_emb));
                CHECK_MSG(before > 0 && before - after >= want,
                          "resident %ld -> %ld kB, want %ld kB fewer", before, after, want);
            } else {
                CHECK(!in_map(m, m->w.word_emb));
            }
            CHECK_MSG(memcmp(copy, m->w.word_emb, n * sizeof *copy) == 0, "%s: changed", dtypes[k]);
            CHECK(weights_match(m, &f, ""));
        }
        embd_model_drop_weight_pages(m, NULL, 0);
        embd_model_drop_weight_pages(NULL, copy, n);
        free(copy);
        embd_model_free(m);
        tt_free(&f);
        free(dir);
    }
}

int main(void) {
    root = make_temp_dir();
    if (!root) {
        fprintf(stderr, "cannot make a temp dir\n");
        return 1;
    }
    tiny_cfg cfg = tiny_default_cfg();
    test_half();
    test_basic(&cfg);
    test_max_tokens(&cfg);
    test_modules(&cfg);
    test_storage(&cfg);
    test_names(&cfg);
    test_fault_injection(&cfg);
    test_drop_pages(&cfg);
    rm_rf(root);
    free(root);
    return test_summary("test_model_load");
}
