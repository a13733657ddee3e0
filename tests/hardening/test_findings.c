/* test_findings.c — one regression test per fuzzer finding (the inputs
 * are also kept in fuzz/crashes/ and replayed by fuzz_replay_*):
 *
 *  1. fuzz_config: layer_norm_eps 1e-92 is a positive double but 0 as the
 *     fp32 the model uses, so a constant row normalised to NaN; now
 *     refused (values below FLT_MIN), the smallest normal float accepted. */
#include "model/loader.h"
#include "test.h"
#include "util/util.h"

#include <string.h>

static enum embd_status config_with_eps(const char *eps, float *out) {
    char json[512];
    snprintf(json, sizeof json,
             "{\"vocab_size\": 32, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
             "\"num_attention_heads\": 2, \"intermediate_size\": 16, "
             "\"max_position_embeddings\": 16, \"hidden_act\": \"gelu\", \"model_type\": \"bert\", "
             "\"layer_norm_eps\": %s}",
             eps);
    embd_hparams hp;
    memset(&hp, 0, sizeof hp);
    enum embd_status st = embd_config_parse(&hp, json, strlen(json), "config.json");
    *out = hp.ln_eps;
    return st;
}

static void test_ln_eps_underflow(void) {
    float eps = -1;
    CHECK(config_with_eps("1e-92", &eps) == EMBD_ERR_MODEL_FORMAT);
    CHECK(strstr(embd_last_error(), "layer_norm_eps") != NULL);
    CHECK(config_with_eps("1e-45", &eps) == EMBD_ERR_MODEL_FORMAT); /* a subnormal float */
    CHECK(config_with_eps("1.1754944e-38", &eps) == EMBD_OK);
    CHECK(eps > 0);
    CHECK(config_with_eps("1e-12", &eps) == EMBD_OK);
    CHECK(eps == 1e-12f);
}

int main(void) {
    test_ln_eps_underflow();
    return test_summary("hardening_findings");
}
