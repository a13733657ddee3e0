/* test_model_corrupt.c — a tiny valid model, broken one way at a time: every
 * load must fail with the right status and a message that names the problem;
 * truncation at every offset and random header byte flips must never crash
 * (ASan/UBSan/LSan builds check that nothing is read out of bounds or leaked). */
#include "model/loader.h"
#include "test.h"
#include "tiny_model.h"
#include "util/util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *root;
static char *dir; /* the model directory under test */
static tiny_cfg cfg;

static void put(const char *rel, const char *text) {
    char *p = path_cat(dir, rel);
    CHECK(write_text(p, text) == 0);
    free(p);
}

static void put_bytes(const char *rel, const void *b, size_t n) {
    char *p = path_cat(dir, rel);
    CHECK(write_bytes(p, b, n) == 0);
    free(p);
}

static void del(const char *rel) {
    char *p = path_cat(dir, rel);
    CHECK(remove(p) == 0);
    free(p);
}

/* Restores the valid tiny model in `dir`. */
static void reset(void) {
    rm_rf(dir);
    tt_file f = tt_build(&cfg, "F32", "", true, 3);
    CHECK(tiny_write_dir(dir, &cfg, &f) == 0);
    tt_free(&f);
}

/* Loads `dir` and checks the status and that the message holds every one of
 * the given substrings. Returns the status. */
static enum embd_status expect_(int line, enum embd_status want, const char *const *subs) {
    embd_model *m = (embd_model *)&m; /* must come back NULL */
    embd_clear_error();
    enum embd_status s = embd_model_load(dir, embd_model_default_params(), &m);
    const char *msg = embd_last_error();
    if (s != want) {
        test_failed_++;
        fprintf(stderr, "FAIL line %d: status %s, expected %s (%s)\n", line, embd_status_str(s),
                embd_status_str(want), msg);
    } else {
        test_passed_++;
    }
    for (const char *const *p = subs; *p; p++) {
        if (!strstr(msg, *p)) {
            test_failed_++;
            fprintf(stderr, "FAIL line %d: message \"%s\" lacks \"%s\"\n", line, msg, *p);
        }
    }
    if (s == EMBD_OK)
        embd_model_free(m);
    else
        CHECK(m == NULL);
    return s;
}
#define EXPECT(want, ...) expect_(__LINE__, want, (const char *const[]){__VA_ARGS__, NULL})

/* Writes model.safetensors from f after it was edited. */
static void put_st(const tt_file *f, size_t misalign) {
    size_t len;
    uint8_t *img = tt_image(f, misalign, &len);
    put_bytes("model.safetensors", img, len);
    free(img);
}

/* Writes model.safetensors as [N][header text][data of f]. */
static void put_st_header(uint64_t n, const char *hdr, size_t hlen, const tt_file *f) {
    size_t len = 8 + hlen + (f ? f->data_len : 0);
    uint8_t *img = malloc(len);
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)(n >> (8 * i));
    memcpy(img + 8, hdr, hlen);
    if (f) memcpy(img + 8 + hlen, f->data, f->data_len);
    put_bytes("model.safetensors", img, len);
    free(img);
}

static void test_safetensors(void) {
    reset();
    EXPECT(EMBD_OK, "");

    /* the file */
    put_bytes("model.safetensors", "", 0);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors", "empty");
    put_bytes("model.safetensors", "\x10\0\0", 3);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors", "too short");
    del("model.safetensors");
    EXPECT(EMBD_ERR_IO, "model.safetensors", dir);
    char *sub = path_cat(dir, "model.safetensors");
    CHECK(mkdir(sub, 0700) == 0);
    EXPECT(EMBD_ERR_IO, "model.safetensors");
    rm_rf(sub);
    free(sub);

    tt_file f = tt_build(&cfg, "F32", "", true, 3);
    char *hdr = tt_header(&f);
    size_t hl = strlen(hdr);

    /* the header length */
    put_st_header(hl + f.data_len + 1, hdr, hl, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors", "header length", "past the end");
    put_st_header(1ull << 63, hdr, hl, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "header length 9223372036854775808", "past the end");
    put_st_header(UINT64_MAX, hdr, hl, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "past the end");
    put_st_header(0, hdr, hl, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "header is empty");
    put_st_header(hl - 1, hdr, hl, &f); /* cuts the closing brace */
    EXPECT(EMBD_ERR_MODEL_FORMAT, "not valid JSON");

    /* the header text */
    const char *bad_json = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], ";
    put_st_header(strlen(bad_json), bad_json, strlen(bad_json), &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors", "not valid JSON");
    put_st_header(8, "{}} xxxx", 8, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "not valid JSON");
    put_st_header(6, "{\"\xff\": 1}", 6, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors", "UTF-8");
    put_st_header(4, "{\0 }", 4, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "NUL");
    put_st_header(6, "[1, 2]", 6, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors", "not a JSON object");
    put_st_header(4, "\"x\" ", 4, &f);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "not a JSON object");
    put_st_header(2, "{}", 2, &f); /* valid, holds nothing */
    EXPECT(EMBD_ERR_MODEL_FORMAT, "missing tensor embeddings.word_embeddings.weight");
    free(hdr);
    tt_free(&f);

    /* single entries, edited; `i` is the word embeddings, `j` the last tensor */
    const char *wname = "embeddings.word_embeddings.weight";
    const char *lname = "encoder.layer.1.output.LayerNorm.bias";
    tt_file g;
#define EDIT(stmt, ...)                                                                            \
    do {                                                                                           \
        g = tt_build(&cfg, "F32", "", true, 3);                                                    \
        int i = tt_find(&g, wname), j = tt_find(&g, lname);                                        \
        (void)i;                                                                                   \
        (void)j;                                                                                   \
        stmt;                                                                                      \
        put_st(&g, 0);                                                                             \
        __VA_ARGS__;                                                                               \
        tt_free(&g);                                                                               \
    } while (0)

    /* offsets */
    EDIT(snprintf(g.e[j].offsets, sizeof g.e[j].offsets, "[%zu,%zu]", g.data_len - 32,
                  g.data_len + 4 - 32 + 32),
         EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors", lname, "past the data section"));
    EDIT(snprintf(g.e[j].offsets, sizeof g.e[j].offsets, "[%zu,%zu]", g.data_len, g.data_len - 32),
         EXPECT(EMBD_ERR_MODEL_FORMAT, lname, "before begin"));
    EDIT(strcpy(g.e[j].offsets, "[0,32]"), /* over position_ids */
         EXPECT(EMBD_ERR_MODEL_FORMAT, "overlap", lname, "embeddings.position_ids"));
    EDIT(strcpy(g.e[j].offsets, "[1e300,1e301]"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, lname, "data_offsets"));
    EDIT(strcpy(g.e[j].offsets, "[-32,0]"), EXPECT(EMBD_ERR_MODEL_FORMAT, lname, "data_offsets"));
    EDIT(strcpy(g.e[j].offsets, "[0]"), EXPECT(EMBD_ERR_MODEL_FORMAT, lname, "data_offsets"));
    EDIT(strcpy(g.e[j].offsets, "[0,32,64]"), EXPECT(EMBD_ERR_MODEL_FORMAT, lname, "data_offsets"));
    EDIT(strcpy(g.e[j].offsets, "[\"0\",\"32\"]"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, lname, "data_offsets"));
    EDIT(strcpy(g.e[j].offsets, "{}"), EXPECT(EMBD_ERR_MODEL_FORMAT, lname, "data_offsets"));

    /* shapes */
    EDIT(strcpy(g.e[i].shape, "[16,16]"), /* same byte size, wrong shape */
         EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors: tensor " /* */,
                "embeddings.word_embeddings.weight has shape [16, 16], expected [32, 8]"));
    EDIT(strcpy(g.e[i].shape, "[256]"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "shape [256], expected [32, 8]"));
    EDIT(strcpy(g.e[i].shape, "[32,9]"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "need 1152 bytes", "hold 1024"));
    EDIT(strcpy(g.e[i].shape, "[32,-8]"), EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "shape"));
    EDIT(strcpy(g.e[i].shape, "[32,8.5]"), EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "shape"));
    EDIT(strcpy(g.e[i].shape, "[1e300,8]"), EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "shape"));
    EDIT(strcpy(g.e[i].shape, "[\"32\",8]"), EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "shape"));
    EDIT(strcpy(g.e[i].shape, "[4294967296,4294967296,16]"), /* 2^68 elements */
         EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "overflows"));
    EDIT(strcpy(g.e[i].shape, "[2147483648,2147483648]"), /* 2^62 elements, 2^64 bytes */
         EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "overflows"));
    EDIT(strcpy(g.e[i].shape, "[1,1,1,1,1,1,1,1,32,8]"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "dimensions"));
    EDIT(strcpy(g.e[i].shape, "8"), EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "shape"));

    /* dtypes */
    EDIT(strcpy(g.e[i].dtype, "I32"),
         EXPECT(EMBD_ERR_UNSUPPORTED, "model.safetensors", wname, "dtype I32"));
    EDIT(strcpy(g.e[i].dtype, "Q4_0"), EXPECT(EMBD_ERR_UNSUPPORTED, wname, "dtype Q4_0"));
    EDIT(strcpy(g.e[i].dtype, "F16"), /* half the bytes the offsets hold */
         EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "need 512 bytes"));
    EDIT(strcpy(g.e[i].dtype, "F32\\u0000"), EXPECT(EMBD_ERR_MODEL_FORMAT, "\\u0000"));
    EDIT(strcpy(g.e[i].dtype, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, wname, "dtype"));

    /* names */
    EDIT(strcpy(g.e[j].name, "encoder.layer.1.output.LayerNorm.bias_x"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors: missing tensor", lname));
    EDIT(strcpy(g.e[j].name, "encoder.layer.1.output.LayerNorm.weight"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, "listed twice", "encoder.layer.1.output.LayerNorm.weight"));
    EDIT(strcpy(g.e[j].name, "a\\nb\\u0007c");
         strcpy(g.e[j].offsets, "[0,32]"), EXPECT(EMBD_ERR_MODEL_FORMAT, "a?b?c", "overlap"));
    CHECK(!strchr(embd_last_error(), '\n'));
    EDIT(strcpy(g.e[j].name, "__metadata__"), /* a second __metadata__: skipped */
         EXPECT(EMBD_ERR_MODEL_FORMAT, "missing tensor", lname));
    EDIT(strcpy(g.e[j].name, "encoder.layer.1.output.LayerNorm.bias\\u0000x"),
         EXPECT(EMBD_ERR_MODEL_FORMAT, "\\u0000"));
#undef EDIT

    /* a header length past the 100 MiB limit, in a sparse file so that the
     * length is within the file */
    char *p = path_cat(dir, "model.safetensors");
    int fd = open(p, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0);
    if (fd >= 0) {
        uint8_t n8[8] = {0, 0, 0, 8, 0, 0, 0, 0}; /* 128 MiB */
        CHECK(write(fd, n8, 8) == 8);
        CHECK(ftruncate(fd, (off_t)8 + (128 << 20) + 16) == 0);
        close(fd);
        EXPECT(EMBD_ERR_MODEL_FORMAT, "header length 134217728 is over the limit");
    }
    free(p);
}

/* Truncation at every offset of the first KB and at points in the data:
 * always an error, never a crash. */
static void test_truncation(void) {
    reset();
    tt_file f = tt_build(&cfg, "F32", "", true, 3);
    size_t len;
    uint8_t *img = tt_image(&f, 0, &len);
    CHECK(len > 1100);
    int errors = 0, total = 0;
    for (size_t cut = 0; cut < len; cut += cut < 1024 ? 1 : (len - cut) / 3 + 1) {
        put_bytes("model.safetensors", img, cut);
        embd_model *m = NULL;
        enum embd_status s = embd_model_load(dir, embd_model_default_params(), &m);
        total++;
        if (s == EMBD_ERR_MODEL_FORMAT && !m && embd_last_error()[0])
            errors++;
        else
            fprintf(stderr, "truncated at %zu: %s\n", cut, embd_status_str(s));
        if (m) embd_model_free(m);
    }
    size_t tail[] = {len - 1, len - 3, len - 4, len - 31};
    for (size_t k = 0; k < 4; k++) {
        put_bytes("model.safetensors", img, tail[k]);
        embd_model *m = NULL;
        total++;
        if (embd_model_load(dir, embd_model_default_params(), &m) == EMBD_ERR_MODEL_FORMAT)
            errors++;
        if (m) embd_model_free(m);
    }
    CHECK_EQ_INT(errors, total);
    printf("truncation: %d cuts, all errors\n", total);
    free(img);
    tt_free(&f);
}

/* Random byte flips in the length and header: never a crash; a load that
 * succeeds must hold a consistent model. */
static void test_flips(void) {
    reset();
    tt_file f = tt_build(&cfg, "F16", "", true, 3);
    size_t len;
    uint8_t *img = tt_image(&f, 0, &len);
    size_t hend = 8;
    for (int i = 0; i < 8; i++)
        hend += (size_t)img[i] << (8 * i);
    uint8_t *mut = malloc(len);
    uint32_t r = 12345;
    int ok = 0, err = 0;
    int iters = getenv("EMBD_TEST_QUICK") ? 300 : 3000;
    for (int it = 0; it < iters; it++) {
        memcpy(mut, img, len);
        int flips = 1 + it % 4;
        for (int k = 0; k < flips; k++) {
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            size_t at = r % hend;
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            /* half the time a random byte, else a digit/quote/bracket */
            static const char pick[] = "0123456789\"[]{},:-e. ";
            mut[at] = (it & 1) ? (uint8_t)(r >> 8) : (uint8_t)pick[(r >> 8) % (sizeof pick - 1)];
        }
        put_bytes("model.safetensors", mut, len);
        embd_model *m = NULL;
        enum embd_status s = embd_model_load(dir, embd_model_default_params(), &m);
        if (s == EMBD_OK) {
            ok++;
            CHECK(m && embd_model_dim(m) == 8 && m->w.layers[1].ln2_b);
            embd_model_free(m);
        } else {
            err++;
            CHECK(!m && embd_last_error()[0]);
        }
    }
    printf("byte flips: %d loads, %d still valid, %d errors\n", iters, ok, err);
    free(mut);
    free(img);
    tt_free(&f);
}

static void test_config(void) {
    reset();
    char *c;
#define CFG(extra, ...)                                                                            \
    do {                                                                                           \
        c = tiny_config_json(&cfg, extra);                                                         \
        put("config.json", c);                                                                     \
        free(c);                                                                                   \
        EXPECT(__VA_ARGS__);                                                                       \
    } while (0)
    /* duplicate keys: cJSON reads the first, so replacements go first */
    static const char *const keys[] = {
        "hidden_size",       "num_hidden_layers",       "num_attention_heads",
        "intermediate_size", "max_position_embeddings", "vocab_size",
        "type_vocab_size"};
    static const char *const vals[] = {
        "1e300", "9223372036854775808", "-8", "8.5", "\"8\"", "true", "[8]", "0",
        "1e400", "18446744073709551616"};
    char buf[256];
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
            snprintf(buf, sizeof buf, "\"%s\":%s", keys[k], vals[v]);
            char *t = tiny_config_json(&cfg, "");
            /* put the bad key first so that it wins over the valid one */
            size_t n = strlen(t) + strlen(buf) + 4;
            char *u = malloc(n);
            snprintf(u, n, "{%s,%s", buf, t + 1);
            put("config.json", u);
            if (strcmp(vals[v], "1e400") == 0) {
                /* cJSON reads 1e400 as inf; either way an error naming the key */
                embd_model *m = NULL;
                CHECK(embd_model_load(dir, embd_model_default_params(), &m) != EMBD_OK);
                CHECK(!m);
            } else {
                EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", keys[k]);
            }
            free(u);
            free(t);
        }
    }
    /* upper bounds */
    static const char *const too_big[] = {
        "\"hidden_size\":65537",         "\"num_hidden_layers\":1025",
        "\"vocab_size\":10000001",       "\"max_position_embeddings\":1048577",
        "\"intermediate_size\":1048577", "\"num_attention_heads\":65537",
    };
    for (size_t k = 0; k < sizeof too_big / sizeof too_big[0]; k++) {
        char *t = tiny_config_json(&cfg, "");
        size_t n = strlen(t) + strlen(too_big[k]) + 4;
        char *u = malloc(n);
        snprintf(u, n, "{%s,%s", too_big[k], t + 1);
        put("config.json", u);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(strchr(too_big[k] + 1, '"') - too_big[k] - 1),
                 too_big[k] + 1);
        EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", key, "must be an integer in [");
        free(u);
        free(t);
    }
    CFG("\"zzz\":0", EMBD_OK, "");
    c = tiny_config_json(&cfg, "");
    char *q = strstr(c, "\"num_attention_heads\":2");
    q[22] = '3';
    put("config.json", c);
    free(c);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json",
           "num_attention_heads (3) does not divide "
           "hidden_size (8)");
    c = tiny_config_json(&cfg, "");
    q = strstr(c, "\"gelu\"");
    memcpy(q, "\"relu\"", 6);
    put("config.json", c);
    free(c);
    EXPECT(EMBD_ERR_UNSUPPORTED, "config.json", "hidden_act \"relu\"");
    put("config.json", "{\"hidden_act\":\"gelu_new\"}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "gelu_new");
    put("config.json", "{\"hidden_act\":\"gelu\",\"position_embedding_type\":\"relative_key\"}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "config.json", "relative_key");
    put("config.json", "{\"model_type\":\"deberta-v2\",\"hidden_act\":\"gelu\"}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "config.json", "deberta-v2");
    /* a family's architectures only with its own model_type */
    put("config.json", "{\"model_type\":\"xlm-roberta\",\"architectures\":[\"BertModel\"]}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "config.json", "BertModel", "with this model_type");
    put("config.json", "{\"architectures\":[\"MPNetForTokenClassification\"]}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "MPNetForTokenClassification");
    put("config.json", "{\"architectures\":[\"ModernBertModel\"]}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "ModernBertModel");
    /* RoBERTa's positions start past pad_token_id: 514 rows hold 512 */
    put("config.json", "{\"model_type\":\"xlm-roberta\",\"hidden_act\":\"gelu\","
                       "\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                       "\"intermediate_size\":16,\"max_position_embeddings\":3,"
                       "\"pad_token_id\":1,\"vocab_size\":32}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", "fewer than 2 positions past pad_token_id");
    put("config.json", "{\"model_type\":\"mpnet\",\"hidden_act\":\"gelu\","
                       "\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                       "\"intermediate_size\":16,\"max_position_embeddings\":18,"
                       "\"relative_attention_num_buckets\":30,\"vocab_size\":32}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "config.json", "relative_attention_num_buckets 30");
    put("config.json", "{\"architectures\":[\"BertForTokenClassification\"]}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "BertForTokenClassification");
    put("config.json", "{\"hidden_act\":\"gelu\"}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", "missing key hidden_size");
    CFG("\"layer_norm_eps\":-1", EMBD_OK, ""); /* the first of two keys wins: 1e-12 */
    c = tiny_config_json(&cfg, "");
    q = strstr(c, "1e-12");
    memcpy(q, "-1e-1", 5);
    put("config.json", c);
    free(c);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", "layer_norm_eps");
    put("config.json", "{\"hidden_act\": \"g\xc3\x28lu\"}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", "UTF-8");
    put("config.json", "\xff\xfe{\0}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", "UTF-8");
    put("config.json", "{\"hidden_act\": 1");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", "not valid JSON");
    put("config.json", "[]");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", "not a JSON object");
    put("config.json", "");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "config.json", "not valid JSON");
    /* defaults: no type_vocab_size (2), no layer_norm_eps, no architectures */
    put("config.json", "{\"hidden_act\":\"gelu\",\"hidden_size\":8,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":2,\"intermediate_size\":16,"
                       "\"max_position_embeddings\":16,\"vocab_size\":32}");
    EXPECT(EMBD_OK, "");
    /* a cross-encoder: its head's tensors must be there; its activation known */
#define CE(extra, ...)                                                                             \
    do {                                                                                           \
        c = tiny_config_json(&cfg, extra);                                                         \
        char *ce = malloc(strlen(c) + 64);                                                         \
        sprintf(ce, "{\"architectures\":[\"BertForSequenceClassification\"]%s",                    \
                strstr(c, "],") + 1);                                                              \
        put("config.json", ce);                                                                    \
        free(ce);                                                                                  \
        free(c);                                                                                   \
        EXPECT(__VA_ARGS__);                                                                       \
    } while (0)
    CE("\"num_labels\":1", EMBD_ERR_MODEL_FORMAT, "model.safetensors",
       "missing tensor pooler.dense.weight");
    CE("\"num_labels\":0", EMBD_ERR_MODEL_FORMAT, "config.json", "num_labels");
    CE("\"sentence_transformers\":{\"activation_fn\":\"torch.nn.modules.activation.Tanh\"}",
       EMBD_ERR_UNSUPPORTED, "config.json", "Tanh");
    CE("\"sbert_ce_default_activation_function\":7", EMBD_ERR_MODEL_FORMAT, "config.json",
       "activation function");
#undef CE
    /* the config disagrees with the weights: the message names the tensor */
    CFG("\"zzz\":0", EMBD_OK, "");
    cfg.I = 20;
    c = tiny_config_json(&cfg, "");
    cfg.I = 16;
    put("config.json", c);
    free(c);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "model.safetensors",
           "encoder.layer.0.intermediate.dense.weight has shape [16, 8], expected [20, 8]");
    /* a tokenizer with more ids than the model's vocabulary */
    cfg.V = 16;
    c = tiny_config_json(&cfg, "");
    cfg.V = 32;
    put("config.json", c);
    free(c);
    EXPECT(EMBD_ERR_MODEL_FORMAT, "tokenizer.json", "vocab_size is 16");
    del("config.json");
    EXPECT(EMBD_ERR_IO, "config.json", dir);
#undef CFG
}

static void test_st_files(void) {
    reset();
    put("modules.json",
        "[{\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
        "{\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"},"
        "{\"path\":\"2_Dense\",\"type\":\"sentence_transformers.models.Dense\"},"
        "{\"path\":\"3_Normalize\",\"type\":"
        "\"sentence_transformers.models.Normalize\"}]");
    EXPECT(EMBD_ERR_UNSUPPORTED, "modules.json", "sentence_transformers.models.Dense");
    put("modules.json", "[{\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"}]");
    EXPECT(EMBD_ERR_UNSUPPORTED, "modules.json", "no Pooling");
    put("modules.json",
        "[{\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
        "{\"path\":\"../../etc\",\"type\":\"sentence_transformers.models.Pooling\"}]");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "modules.json", "outside the model directory");
    put("modules.json", "[{\"path\":\"\"}]");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "modules.json", "type");
    put("modules.json", "{}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "modules.json", "not a JSON array");
    put("modules.json", "[{\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
                        "{\"path\":\"nope\",\"type\":\"sentence_transformers.models.Pooling\"}]");
    EXPECT(EMBD_ERR_IO, "nope/config.json");

    reset();
    put("1_Pooling/config.json", "{\"word_embedding_dimension\":8,\"pooling_mode_cls_token\":false,"
                                 "\"pooling_mode_mean_tokens\":false,"
                                 "\"pooling_mode_max_tokens\":true}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "1_Pooling/config.json", "pooling_mode_max_tokens");
    put("1_Pooling/config.json", "{\"pooling_mode_mean_sqrt_len_tokens\":true}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "pooling_mode_mean_sqrt_len_tokens");
    put("1_Pooling/config.json", "{\"pooling_mode_weightedmean_tokens\":true}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "pooling_mode_weightedmean_tokens");
    put("1_Pooling/config.json", "{\"pooling_mode_lasttoken\":true}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "pooling_mode_lasttoken");
    put("1_Pooling/config.json", "{\"pooling_mode_cls_token\":true,"
                                 "\"pooling_mode_mean_tokens\":true}");
    EXPECT(EMBD_ERR_UNSUPPORTED, "1_Pooling/config.json", "several pooling modes");
    put("1_Pooling/config.json", "{\"pooling_mode_cls_token\":false}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "1_Pooling/config.json", "no pooling mode");
    put("1_Pooling/config.json", "{\"pooling_mode_cls_token\":1}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "pooling_mode_cls_token");
    put("1_Pooling/config.json", "{\"word_embedding_dimension\":384,"
                                 "\"pooling_mode_mean_tokens\":true}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "word_embedding_dimension", "384");
    del("1_Pooling/config.json");
    EXPECT(EMBD_ERR_IO, "1_Pooling/config.json");

    reset();
    put("sentence_bert_config.json", "{\"max_seq_length\":\"256\"}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "sentence_bert_config.json", "max_seq_length");
    put("sentence_bert_config.json", "{\"max_seq_length\":1}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "sentence_bert_config.json", "max_seq_length");
    put("sentence_bert_config.json", "{\"max_seq_length\":1e300}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "sentence_bert_config.json", "max_seq_length");
    put("sentence_bert_config.json", "{\"max_seq_length\":null}");
    EXPECT(EMBD_OK, "");
    put("sentence_bert_config.json", "\xc0\x80");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "sentence_bert_config.json", "UTF-8");
    /* do_lower_case: fine with a lowercasing tokenizer, refused with a cased one */
    put("sentence_bert_config.json", "{\"max_seq_length\":8,\"do_lower_case\":true}");
    EXPECT(EMBD_OK, "");
    put("sentence_bert_config.json", "{\"do_lower_case\":\"yes\"}");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "sentence_bert_config.json", "do_lower_case");
    {
        const char *at = strstr(tiny_tokenizer_json, "\"lowercase\":true");
        const size_t head = (size_t)(at - tiny_tokenizer_json), n = strlen(tiny_tokenizer_json);
        char *cased = malloc(n + 2);
        memcpy(cased, tiny_tokenizer_json, head);
        strcpy(cased + head, "\"lowercase\":false");
        strcat(cased, at + strlen("\"lowercase\":true"));
        put("tokenizer.json", cased);
        put("sentence_bert_config.json", "{\"do_lower_case\":true}");
        EXPECT(EMBD_ERR_UNSUPPORTED, "do_lower_case", "keeps case");
        put("sentence_bert_config.json", "{\"do_lower_case\":false}");
        EXPECT(EMBD_OK, "");
        put("tokenizer.json", tiny_tokenizer_json);
        free(cased);
    }
    del("sentence_bert_config.json");
    put("tokenizer_config.json", "{\"model_max_length\":\"x\"}"); /* ignored */
    EXPECT(EMBD_OK, "");
    put("tokenizer_config.json", "nope");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "tokenizer_config.json");

    reset();
    del("tokenizer.json");
    EXPECT(EMBD_ERR_IO, "tokenizer.json", dir);
    put("tokenizer.json", "{\"model\": ");
    EXPECT(EMBD_ERR_MODEL_FORMAT, "tokenizer.json");
    put("tokenizer.json", "{\"model\": \"\xed\xa0\x80\"}"); /* a UTF-8 surrogate */
    EXPECT(EMBD_ERR_MODEL_FORMAT, "tokenizer.json", "UTF-8");

    /* the directory itself */
    char *saved = dir;
    dir = path_cat(root, "does-not-exist");
    EXPECT(EMBD_ERR_IO, "does-not-exist");
    free(dir);
    dir = saved;
}

/* Messages quote file contents through embd_printable: no control
 * characters, no UTF-8 sequence cut in half. */
static void test_printable(void) {
    char b[8];
    CHECK(strcmp(embd_printable(b, sizeof b, "ab\ncd"), "ab?cd") == 0);
    CHECK(strcmp(embd_printable(b, sizeof b, "abcdefghij"), "abcdefg") == 0);
    CHECK(strcmp(embd_printable(b, sizeof b, "abcdef\xc3\xa9"), "abcdef") == 0);        /* é cut */
    CHECK(strcmp(embd_printable(b, sizeof b, "abcde\xc3\xa9z"), "abcde\xc3\xa9") == 0); /* é kept */
    CHECK(strcmp(embd_printable(b, sizeof b, "ab\xe2\x82\xac\xe2\x82\xac"), "ab\xe2\x82\xac") == 0);
    CHECK(strcmp(embd_printable(b, sizeof b, ""), "") == 0);
}

int main(void) {
    root = make_temp_dir();
    if (!root) {
        fprintf(stderr, "cannot make a temp dir\n");
        return 1;
    }
    cfg = tiny_default_cfg();
    dir = path_cat(root, "model");
    test_printable();
    test_safetensors();
    test_config();
    test_st_files();
    test_truncation();
    test_flips();
    rm_rf(root);
    free(dir);
    free(root);
    return test_summary("test_model_corrupt");
}
