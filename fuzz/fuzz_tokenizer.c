/* fuzz_tokenizer.c — embd_tokenizer_encode on arbitrary bytes with a real
 * vocabulary: $EMBD_FUZZ_TOKENIZER, else
 * $EMBD_TEST_MODELS/all-MiniLM-L6-v2/tokenizer.json, else
 * ~/.cache/embd/models/all-MiniLM-L6-v2/tokenizer.json (exit 77 when none).
 *
 * A SentencePiece one works too (the fuzz_replay_tokenizer_unigram test
 * runs the seeds with tests/fixtures/unigram/xlmr-nmt-nfkc-8k.json).
 *
 * Input: byte 0 picks max_tokens (2..257, or 512), byte 1 the id buffer
 * capacity (0..255); the rest is the text. Checks: the template's first
 * and last tokens ([CLS] / [SEP], <s> / </s>: those of the empty text)
 * around the text's, ids in range, the count at most max_tokens, a
 * too-small buffer answered with the needed size and the same prefix; the
 * offsets call gives the same ids, each text token a range inside the text
 * (start <= stop <= length), the template's tokens 0..0 and special. */
#include "fuzz.h"
#include "tokenizer/tokenizer.h"
#include "util/util.h"

#include <string.h>

static embd_tokenizer *tok;
static int32_t cls_id, sep_id, vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char path[4096] = "";
    const char *env = getenv("EMBD_FUZZ_TOKENIZER");
    const char *models = getenv("EMBD_TEST_MODELS");
    const char *home = getenv("HOME");
    if (env && env[0])
        snprintf(path, sizeof path, "%s", env);
    else if (models && models[0])
        snprintf(path, sizeof path, "%s/all-MiniLM-L6-v2/tokenizer.json", models);
    else if (home)
        snprintf(path, sizeof path, "%s/.cache/embd/models/all-MiniLM-L6-v2/tokenizer.json", home);
    char *json = NULL;
    size_t len = 0;
    if (!path[0] || embd_read_file(path, 64u << 20, &json, &len) != EMBD_OK) {
        printf("SKIPPED: no tokenizer.json (%s); set EMBD_FUZZ_TOKENIZER\n", path);
        exit(77);
    }
    if (embd_tokenizer_load(&tok, json, len) != EMBD_OK) {
        fprintf(stderr, "embd: fuzz: %s: %s\n", path, embd_last_error());
        exit(1);
    }
    embd_free(json);
    int32_t empty[8];
    size_t ne = 0;
    vocab = embd_tokenizer_vocab_size(tok);
    if (embd_tokenizer_encode(tok, "", 0, 8, empty, 8, &ne, NULL) != EMBD_OK || ne != 2) {
        fprintf(stderr, "embd: fuzz: %s: the empty text is not two template tokens\n", path);
        exit(1);
    }
    cls_id = empty[0];
    sep_id = empty[1];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int max_tokens = data[0] == 255 ? 512 : 2 + data[0];
    size_t small_cap = data[1];
    const char *text = (const char *)data + 2;
    size_t len = size - 2;

    int32_t ids[512];
    size_t n = 0;
    enum embd_status st = embd_tokenizer_encode(tok, text, len, max_tokens, ids, 512, &n, NULL);
    FUZZ_CHECK(st == EMBD_OK);
    FUZZ_CHECK(n >= 2 && n <= (size_t)max_tokens);
    FUZZ_CHECK(ids[0] == cls_id && ids[n - 1] == sep_id);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab);

    /* A smaller buffer: the needed size comes back, the prefix is the same. */
    int32_t part[256];
    size_t m = 0;
    st = embd_tokenizer_encode(tok, text, len, max_tokens, part, small_cap, &m, NULL);
    FUZZ_CHECK(m == n);
    FUZZ_CHECK(st == (small_cap < n ? EMBD_ERR_BUFFER_TOO_SMALL : EMBD_OK));
    size_t k = small_cap < n ? small_cap : n;
    FUZZ_CHECK(memcmp(part, ids, k * sizeof *ids) == 0);

    /* Offsets (/tokenize): the same ids, ranges inside the text. An
     * unsupported normalizer (a Unicode normalization form) refuses. */
    int32_t oids[512];
    size_t starts[512], stops[512];
    uint8_t special[512];
    size_t no = 0;
    st = embd_tokenizer_encode_offsets(tok, text, len, max_tokens, true, oids, starts, stops,
                                       special, 512, &no, NULL);
    if (st == EMBD_ERR_UNSUPPORTED) return 0;
    FUZZ_CHECK(st == EMBD_OK && no == n && memcmp(oids, ids, n * sizeof *ids) == 0);
    for (size_t i = 0; i < n; i++) {
        const int tmpl = i == 0 || i == n - 1;
        FUZZ_CHECK(special[i] == tmpl);
        FUZZ_CHECK(starts[i] <= stops[i] && stops[i] <= len);
        if (tmpl) FUZZ_CHECK(starts[i] == 0 && stops[i] == 0);
    }
    return 0;
}
