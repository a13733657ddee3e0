/* fuzz_request.c — the server's request bodies (src/server/request.c):
 * srv_parse for every endpoint (OpenAI /v1/embeddings, TEI /embed,
 * /search, TEI /rerank, Cohere/Jina /v1/rerank, TEI /tokenize and /decode), with the vocabulary
 * size of the real model when
 * $EMBD_TEST_MODELS/all-MiniLM-L6-v2 (or $EMBD_FUZZ_MODEL) loads (token
 * counts of texts are the engine's: tests/engine/test_embed_opts.c).
 *
 * Input: byte 0 picks the endpoint (% 3; with bit 4 set, a rerank: bit 5
 * picks /v1/rerank over /rerank; with bit 7 set, /tokenize, or /decode with
 * bit 5), in bit 2 --auto-truncate and in bit 6 a
 * model that declares no prompts (else "query" and "passage"); the rest is
 * the body. Checks: a refusal has a 4xx/5xx status and a message; an
 * accepted request respects every limit (inputs, characters, token ids in
 * range, token lists no longer than max_tokens, k, candidates, top_n,
 * dimensions 1..D and none for a search or a rerank, a prompt the model
 * declares and only with texts), its texts are non-empty UTF-8 (a "\u0000"
 * inside them included). With the model, an accepted /tokenize text is
 * tokenized whole as the server does it (offsets inside the text, on
 * character boundaries) and an accepted /decode list decodes (its ids are
 * all tokens). */
#include "fuzz.h"
#include "server/request.h"
#include "util/text.h"

#include <string.h>

static embd_model *model;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char dir[4096] = "";
    const char *env = getenv("EMBD_FUZZ_MODEL"), *models = getenv("EMBD_TEST_MODELS");
    const char *home = getenv("HOME");
    if (env && env[0])
        snprintf(dir, sizeof dir, "%s", env);
    else if (models && models[0])
        snprintf(dir, sizeof dir, "%s/all-MiniLM-L6-v2", models);
    else if (home)
        snprintf(dir, sizeof dir, "%s/.cache/embd/models/all-MiniLM-L6-v2", home);
    if (dir[0] && embd_model_load(dir, embd_model_default_params(), &model) != EMBD_OK)
        model = NULL; /* parse only */
    return 0;
}

static size_t utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* A /tokenize text as the server tokenizes it: whole (no truncation), each
 * token's range inside the text, starting and ending on characters. */
static void check_tokenize(const struct srv_input *in, bool special) {
    size_t cap = in->len + 8, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    size_t *starts = malloc(cap * sizeof *starts), *stops = malloc(cap * sizeof *stops);
    uint8_t *sp = malloc(cap);
    enum embd_status st = EMBD_ERR_NOMEM;
    if (ids && starts && stops && sp)
        st = embd_tokenize_offsets(model, in->text, in->len, special, false, ids, starts, stops, sp,
                                   cap, &n);
    FUZZ_CHECK(st == EMBD_OK || st == EMBD_ERR_BUFFER_TOO_SMALL || st == EMBD_ERR_NOMEM);
    for (size_t j = 0; st == EMBD_OK && j < n; j++) {
        FUZZ_CHECK(embd_model_token(model, ids[j]) != NULL);
        if (sp[j]) continue;
        FUZZ_CHECK(starts[j] <= stops[j] && stops[j] <= in->len);
        FUZZ_CHECK(starts[j] == in->len || ((unsigned char)in->text[starts[j]] & 0xC0) != 0x80);
        FUZZ_CHECK(stops[j] == in->len || ((unsigned char)in->text[stops[j]] & 0xC0) != 0x80);
    }
    free(ids);
    free(starts);
    free(stops);
    free(sp);
}

/* A /decode list decodes: its ids are all tokens (the parser's range). */
static void check_decode(const struct srv_input *in, bool skip) {
    size_t len = 0;
    enum embd_status st = embd_detokenize(model, in->ids, in->n_ids, skip, NULL, 0, &len);
    if (st == EMBD_ERR_UNSUPPORTED) return; /* a decoder embd does not implement */
    FUZZ_CHECK(st == EMBD_OK || st == EMBD_ERR_BUFFER_TOO_SMALL || st == EMBD_ERR_NOMEM);
    if (st != EMBD_ERR_BUFFER_TOO_SMALL) return;
    char *buf = malloc(len + 1);
    if (!buf) return;
    size_t len2 = 0;
    st = embd_detokenize(model, in->ids, in->n_ids, skip, buf, len + 1, &len2);
    FUZZ_CHECK(st == EMBD_OK || st == EMBD_ERR_NOMEM);
    if (st == EMBD_OK) FUZZ_CHECK(len2 == len && buf[len] == '\0' && embd_utf8_valid(buf, len));
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    enum srv_api api = (enum srv_api)(data[0] % 3);
    if (data[0] & 16) api = data[0] & 32 ? SRV_API_RERANK : SRV_API_TEI_RERANK;
    if (data[0] & 128) api = data[0] & 32 ? SRV_API_DECODE : SRV_API_TOKENIZE;
    static const char *const prompts[] = {"query", "passage"};
    struct srv_limits lim = {
        .max_inputs = 8,
        .max_input_chars = 64,
        .max_tokens = 16,
        .auto_truncate = (data[0] & 4) != 0,
        .vocab = model ? embd_model_vocab_size(model) : 30522,
        .max_k = 20,
        .dim = model ? (size_t)embd_model_dim(model) : 384,
        .prompts = prompts,
        .n_prompts = data[0] & 64 ? 0 : 2,
    };
    /* An exact-size copy of the body, so that ASan sees a read past its end. */
    size_t len = size - 1;
    char *body = malloc(len ? len : 1);
    if (!body) return 0;
    memcpy(body, data + 1, len);

    struct srv_request req;
    struct srv_error err;
    int rc = srv_parse(api, body, len, &lim, &req, &err);
    if (rc) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(err.status >= 400 && err.status < 600);
        FUZZ_CHECK(err.message[0] != '\0');
        FUZZ_CHECK(req.inputs == NULL && req.json == NULL && req.model == NULL);
        free(body);
        return 0;
    }
    FUZZ_CHECK(req.dimensions <= lim.dim);
    FUZZ_CHECK(req.prompt >= -1 && req.prompt < (int)lim.n_prompts);
    if (api != SRV_API_OPENAI && api != SRV_API_TEI) FUZZ_CHECK(req.dimensions == 0);
    if (api == SRV_API_TEI_RERANK || api == SRV_API_RERANK || api == SRV_API_DECODE)
        FUZZ_CHECK(req.prompt == -1);
    if (req.prompt >= 0) FUZZ_CHECK(!req.tokens);
    if (api == SRV_API_SEARCH || api == SRV_API_TEI_RERANK || api == SRV_API_RERANK) {
        FUZZ_CHECK(req.query && req.query_len > 0);
        FUZZ_CHECK(embd_utf8_valid(req.query, req.query_len));
        FUZZ_CHECK(utf8_chars(req.query, req.query_len) <= lim.max_input_chars);
    }
    if (api == SRV_API_SEARCH) {
        FUZZ_CHECK(req.k >= 1 && req.k <= lim.max_k);
        FUZZ_CHECK(req.rerank ? req.candidates >= req.k && req.candidates <= lim.max_k &&
                                    req.candidates <= lim.max_inputs
                              : req.candidates == 0);
        FUZZ_CHECK(req.n == 0 && !req.inputs);
    } else if (api == SRV_API_DECODE) {
        FUZZ_CHECK(req.n >= 1 && req.n <= lim.max_inputs && req.tokens);
        for (size_t i = 0; i < req.n; i++) {
            const struct srv_input *in = &req.inputs[i];
            FUZZ_CHECK(in->ids && !in->text && in->n_ids >= 1); /* any length */
            for (size_t j = 0; j < in->n_ids; j++)
                FUZZ_CHECK(in->ids[j] >= 0 && in->ids[j] < lim.vocab);
            if (model) check_decode(in, req.skip_special_tokens);
        }
    } else if (api == SRV_API_TOKENIZE) {
        FUZZ_CHECK(req.n >= 1 && req.n <= lim.max_inputs && !req.tokens);
        for (size_t i = 0; i < req.n; i++) {
            const struct srv_input *in = &req.inputs[i];
            FUZZ_CHECK(in->text && !in->ids && in->len > 0);
            FUZZ_CHECK(embd_utf8_valid(in->text, in->len));
            FUZZ_CHECK(utf8_chars(in->text, in->len) <= lim.max_input_chars);
            if (model) check_tokenize(in, req.add_special_tokens);
        }
    } else if (api == SRV_API_TEI_RERANK || api == SRV_API_RERANK) {
        FUZZ_CHECK(req.n >= 1 && req.n <= lim.max_inputs && !req.tokens);
        FUZZ_CHECK(req.top_n <= req.n && (api == SRV_API_RERANK || req.top_n == 0));
        for (size_t i = 0; i < req.n; i++) {
            const struct srv_input *in = &req.inputs[i];
            FUZZ_CHECK(in->text && !in->ids && in->len > 0);
            FUZZ_CHECK(embd_utf8_valid(in->text, in->len));
            FUZZ_CHECK(utf8_chars(in->text, in->len) <= lim.max_input_chars);
        }
    } else {
        FUZZ_CHECK(req.n >= 1 && req.n <= lim.max_inputs);
        for (size_t i = 0; i < req.n; i++) {
            const struct srv_input *in = &req.inputs[i];
            if (req.tokens) {
                FUZZ_CHECK(in->ids && !in->text);
                FUZZ_CHECK(in->n_ids >= 1 && in->n_ids <= lim.max_tokens);
                for (size_t j = 0; j < in->n_ids; j++)
                    FUZZ_CHECK(in->ids[j] >= 0 && in->ids[j] < lim.vocab);
            } else {
                FUZZ_CHECK(in->text && !in->ids && in->len > 0);
                FUZZ_CHECK(embd_utf8_valid(in->text, in->len));
                FUZZ_CHECK(utf8_chars(in->text, in->len) <= lim.max_input_chars);
            }
        }
    }
    srv_request_free(&req);
    free(body);
    return 0;
}
