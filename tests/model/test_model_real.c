/* test_model_real.c — loads the real sentence-transformers/all-MiniLM-L6-v2
 * from $EMBD_TEST_MODELS/all-MiniLM-L6-v2 (skipped when absent) and checks
 * its settings, a few weights (read with Python's safetensors) and the
 * fingerprint's stability; also loads it with a smaller max_seq_length. */
#include "model/loader.h"
#include "test.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int main(void) {
    const char *models = getenv("EMBD_TEST_MODELS");
    if (!models || !models[0]) TEST_SKIP("EMBD_TEST_MODELS is not set");
    char *dir = embd_path_join(models, "all-MiniLM-L6-v2");
    char *st_path = embd_path_join(dir, "model.safetensors");
    struct stat sb;
    if (stat(st_path, &sb) != 0) {
        embd_free(dir);
        embd_free(st_path);
        TEST_SKIP("no all-MiniLM-L6-v2 under EMBD_TEST_MODELS");
    }
    embd_free(st_path);

    embd_model *m = NULL;
    double t0 = embd_now();
    enum embd_status s = embd_model_load(dir, embd_model_default_params(), &m);
    double dt = embd_now() - t0;
    CHECK_MSG(s == EMBD_OK, "%s: %s", embd_status_str(s), embd_last_error());
    if (s == EMBD_OK) {
        printf("loaded %s in %.1f ms\n", dir, dt * 1e3);
        CHECK_EQ_INT(embd_model_dim(m), 384);
        CHECK_EQ_INT(embd_model_max_tokens(m), 256); /* sentence_bert_config.json */
        CHECK_EQ_INT(embd_model_vocab_size(m), 30522);
        CHECK(strcmp(embd_model_pooling(m), "mean") == 0);
        CHECK(embd_model_normalizes(m));
        CHECK_EQ_INT(m->hp.L, 6);
        CHECK_EQ_INT(m->hp.NH, 12);
        CHECK_EQ_INT(m->hp.I, 1536);
        CHECK_EQ_INT(m->hp.P, 512);
        CHECK_EQ_INT(m->hp.TV, 2);
        CHECK(m->hp.ln_eps == 1e-12f);
        CHECK(m->owned == NULL); /* fp32, aligned: read in place */
        /* reference values from Python safetensors */
        CHECK(m->w.word_emb[101 * 384 + 0] == -0.01761939749121666f);
        CHECK(m->w.word_emb[101 * 384 + 2] == 0.047105543315410614f);
        CHECK(m->w.layers[5].ln2_b[383] == 0.06612399220466614f);
        CHECK(m->w.layers[2].i_w[1535 * 384 + 381] == 0.10645971447229385f);
        int32_t ids[16];
        size_t n = 0;
        s = embd_tokenize(m, "Hello, world!", 13, ids, 16, &n);
        CHECK_MSG(s == EMBD_OK, "%s", embd_last_error());
        CHECK_EQ_INT(n, 6);
        if (n == 6) {
            CHECK(ids[0] == 101 && ids[1] == 7592 && ids[2] == 1010 && ids[3] == 2088 &&
                  ids[4] == 999 && ids[5] == 102);
        }
    }
    embd_model *m2 = NULL;
    struct embd_model_params p = embd_model_default_params();
    p.max_seq_length = 128;
    s = embd_model_load(dir, p, &m2);
    CHECK_MSG(s == EMBD_OK, "%s", embd_last_error());
    if (m && m2) {
        CHECK_EQ_INT(embd_model_max_tokens(m2), 128);
        CHECK(embd_model_fingerprint(m) != embd_model_fingerprint(m2));
    }
    embd_model_free(m2);
    m2 = NULL;
    s = embd_model_load(dir, embd_model_default_params(), &m2);
    if (m && m2) CHECK(embd_model_fingerprint(m) == embd_model_fingerprint(m2));
    embd_model_free(m2);
    embd_model_free(m);
    embd_free(dir);
    return test_summary("test_model_real");
}
