/* fuzz_tokenizer_json.c — embd_tokenizer_load on arbitrary tokenizer.json
 * text. A tokenizer that loads must then encode a few texts with every id
 * inside its vocabulary and the same fingerprint each time. */
#include "fuzz.h"
#include "tokenizer/tokenizer.h"

#include <string.h>

static const char *const texts[] = {
    "",
    "Hello, world! Don't stop.",
    "caf\xc3\xa9 na\xc3\xafve \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 [MASK] [UNK]",
    /* a word of 120 characters, over max_input_chars_per_word (100) */
    ("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
     "abcdefghijklmnopqrstuvwxyzabcdefghijklmnop"),
    "\xff\xfe bad \xc3 utf-8 \xed\xa0\x80",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    embd_tokenizer *tok = NULL;
    enum embd_status st = embd_tokenizer_load(&tok, (const char *)data, size);
    if (st != EMBD_OK) {
        FUZZ_CHECK(tok == NULL);
        FUZZ_CHECK(st == EMBD_ERR_MODEL_FORMAT || st == EMBD_ERR_UNSUPPORTED ||
                   st == EMBD_ERR_NOMEM);
        FUZZ_CHECK(embd_last_error()[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(tok != NULL);
    int vocab = embd_tokenizer_vocab_size(tok);
    FUZZ_CHECK(vocab > 0);
    uint64_t fp = embd_tokenizer_fingerprint(tok);
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        int32_t ids[64];
        size_t n = 0;
        st = embd_tokenizer_encode(tok, texts[t], strlen(texts[t]), 64, ids, 64, &n, NULL);
        FUZZ_CHECK(st == EMBD_OK);
        FUZZ_CHECK(n <= 64);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab);
    }
    FUZZ_CHECK(embd_tokenizer_fingerprint(tok) == fp);
    embd_tokenizer_free(tok);
    return 0;
}
