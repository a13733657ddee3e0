/* fuzz_config.c — the model's JSON configuration parsers on arbitrary text:
 * config.json, 1_Pooling/config.json, modules.json,
 * sentence_bert_config.json and tokenizer_config.json (every parser gets
 * the same input). A config that parses must hold values the engine can
 * run: positive shapes, NH dividing H. */
#include "fuzz.h"
#include "model/loader.h"
#include "util/util.h"

#include <string.h>

/* Whether a path has a ".." component (either separator). */
static int has_dotdot(const char *p) {
    size_t len = strlen(p);
    for (size_t i = 0; i + 1 < len; i++)
        if (p[i] == '.' && p[i + 1] == '.' && (i == 0 || p[i - 1] == '/' || p[i - 1] == '\\') &&
            (i + 2 == len || p[i + 2] == '/' || p[i + 2] == '\\'))
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The parsers take the text as embd_read_file gives it: NUL-terminated. */
    char *json = malloc(size + 1);
    if (!json) return 0;
    memcpy(json, data, size);
    json[size] = '\0';

    embd_hparams hp;
    memset(&hp, 0, sizeof hp);
    enum embd_status st = embd_config_parse(&hp, json, size, "config.json");
    if (st == EMBD_OK) {
        FUZZ_CHECK(hp.V > 0 && hp.H > 0 && hp.L > 0 && hp.NH > 0 && hp.I > 0 && hp.P > 0);
        FUZZ_CHECK(hp.TV >= 0);
        FUZZ_CHECK(hp.H % hp.NH == 0);
        FUZZ_CHECK(hp.ln_eps > 0);
    } else {
        FUZZ_CHECK(st == EMBD_ERR_MODEL_FORMAT || st == EMBD_ERR_UNSUPPORTED ||
                   st == EMBD_ERR_NOMEM);
        FUZZ_CHECK(embd_last_error()[0] != '\0');
    }

    /* The pooling config is checked against H; use the parsed H, else 384. */
    if (st != EMBD_OK) hp.H = 384;
    st = embd_pooling_parse(&hp, json, size, "1_Pooling/config.json");
    FUZZ_CHECK(st == EMBD_OK || st == EMBD_ERR_MODEL_FORMAT || st == EMBD_ERR_UNSUPPORTED ||
               st == EMBD_ERR_NOMEM);

    embd_st_modules mods;
    memset(&mods, 0, sizeof mods);
    st = embd_modules_parse(&mods, json, size, "modules.json");
    if (st == EMBD_OK) {
        FUZZ_CHECK(mods.transformer_path && mods.has_pooling && mods.pooling_path);
        /* paths stay inside the model directory */
        FUZZ_CHECK(mods.transformer_path[0] != '/' && mods.pooling_path[0] != '/');
        FUZZ_CHECK(!has_dotdot(mods.transformer_path) && !has_dotdot(mods.pooling_path));
    } else {
        FUZZ_CHECK(mods.transformer_path == NULL && mods.pooling_path == NULL);
    }
    embd_modules_free(&mods);

    int max_len = -1;
    st = embd_sbert_config_parse(&max_len, NULL, json, size, "sentence_bert_config.json");
    if (st == EMBD_OK) FUZZ_CHECK(max_len >= 0);

    max_len = -1;
    st = embd_tokenizer_config_parse(&max_len, 512, json, size, "tokenizer_config.json");
    if (st == EMBD_OK) FUZZ_CHECK(max_len == 0 || (max_len >= 2 && max_len <= 512));
    free(json);
    return 0;
}
