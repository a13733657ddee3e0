/* test_tok_malformed — tokenizer.json files that are broken or unsupported get
 * a clear status and message, never a crash or a leak (run it under ASan);
 * a small valid file encodes as expected; allocation failures at every point
 * of load and encode are reported and leak nothing. */
#include "tokenizer/tokenizer.h"
#include "util/util.h"
#include "../test.h"

#include <string.h>

#define VOCAB                                                                                      \
    "\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,\"[SEP]\":3,\"hello\":4,\"world\":5,\"un\":6,"            \
    "\"##aff\":7,\"##able\":8,\",\":9,\"!\":10,\"a\":11"

#define HEAD                                                                                       \
    "{\"added_tokens\":[{\"id\":3,\"content\":\"[SEP]\",\"special\":true,\"normalized\":false}],"
#define NORM                                                                                       \
    "\"normalizer\":{\"type\":\"BertNormalizer\",\"lowercase\":true,\"strip_accents\":null},"
#define PRE "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
#define POST                                                                                       \
    "\"post_processor\":{\"type\":\"BertProcessing\",\"sep\":[\"[SEP]\",3],\"cls\":[\"[CLS]\",2]}" \
    ","
#define MODEL(v) "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"vocab\":{" v "}}}"

static const char *valid = HEAD NORM PRE POST MODEL(VOCAB);

static enum embd_status load(const char *json, size_t len) {
    embd_tokenizer *tok = NULL;
    enum embd_status st = embd_tokenizer_load(&tok, json, len);
    if (st == EMBD_OK) {
        CHECK(tok != NULL);
    } else {
        CHECK(tok == NULL);
        CHECK_MSG(strlen(embd_last_error()) > 0, "no message");
    }
    embd_tokenizer_free(tok);
    return st;
}

/* Loads a broken file and checks the status and that the message holds `needle`. */
static void expect(const char *name, const char *json, enum embd_status want, const char *needle) {
    enum embd_status st = load(json, strlen(json));
    CHECK_MSG(st == want, "%s: got %s (%s)", name, embd_status_str(st), embd_last_error());
    if (st != EMBD_OK && needle)
        CHECK_MSG(strstr(embd_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", name,
                  embd_last_error(), needle);
}

static void test_valid(void) {
    embd_tokenizer *tok = NULL;
    CHECK_EQ_INT(embd_tokenizer_load(&tok, valid, strlen(valid)), EMBD_OK);
    if (!tok) return;
    int32_t ids[16];
    size_t n = 0;
    const char *t = "Hello, unaffable WORLD![SEP] xyz";
    CHECK_EQ_INT(embd_tokenizer_encode(tok, t, strlen(t), 16, ids, 16, &n, NULL), EMBD_OK);
    int32_t want[] = {2, 4, 9, 6, 7, 8, 5, 10, 3, 1, 3};
    CHECK_EQ_INT(n, sizeof(want) / sizeof(want[0]));
    CHECK(n == 11 && memcmp(ids, want, sizeof(want)) == 0);
    /* truncation keeps [CLS] and [SEP] */
    CHECK_EQ_INT(embd_tokenizer_encode(tok, t, strlen(t), 4, ids, 16, &n, NULL), EMBD_OK);
    CHECK(n == 4 && ids[0] == 2 && ids[1] == 4 && ids[2] == 9 && ids[3] == 3);
    CHECK_EQ_INT(embd_tokenizer_encode(tok, t, strlen(t), 2, ids, 16, &n, NULL), EMBD_OK);
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 3);
    /* whether pieces were cut: 9 pieces fit exactly in 11, not in 10 */
    bool cut = true;
    CHECK_EQ_INT(embd_tokenizer_encode(tok, t, strlen(t), 11, ids, 16, &n, &cut), EMBD_OK);
    CHECK(n == 11 && !cut);
    CHECK_EQ_INT(embd_tokenizer_encode(tok, t, strlen(t), 10, ids, 16, &n, &cut), EMBD_OK);
    CHECK(n == 10 && cut && ids[9] == 3);
    CHECK_EQ_INT(embd_tokenizer_encode(tok, "", 0, 2, ids, 16, &n, &cut), EMBD_OK);
    CHECK(n == 2 && !cut);
    CHECK_EQ_INT(embd_tokenizer_encode(tok, "hello", 5, 2, ids, 16, &n, &cut), EMBD_OK);
    CHECK(n == 2 && cut);
    /* a NUL is a character (dropped by clean_text, joining nothing), not the end of the text */
    CHECK_EQ_INT(embd_tokenizer_encode(tok, "hello \0 world", 13, 16, ids, 16, &n, NULL), EMBD_OK);
    CHECK(n == 4 && ids[1] == 4 && ids[2] == 5);
    CHECK_EQ_INT(embd_tokenizer_encode(tok, t, strlen(t), 1, ids, 16, &n, NULL),
                 EMBD_ERR_INVALID_ARG);
    /* a small buffer gets the needed size */
    CHECK_EQ_INT(embd_tokenizer_encode(tok, t, strlen(t), 16, ids, 3, &n, NULL),
                 EMBD_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ_INT(n, 11);
    CHECK(ids[0] == 2 && ids[1] == 4 && ids[2] == 9);
    CHECK_EQ_INT(embd_tokenizer_encode(tok, "", 0, 16, ids, 16, &n, NULL), EMBD_OK);
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 3);
    CHECK_EQ_INT(embd_tokenizer_encode(tok, NULL, 0, 16, ids, 16, &n, NULL), EMBD_OK);
    CHECK_EQ_INT(embd_tokenizer_encode(NULL, "a", 1, 16, ids, 16, &n, NULL), EMBD_ERR_INVALID_ARG);
    /* invalid UTF-8 is read as U+FFFD, which clean_text drops */
    CHECK_EQ_INT(embd_tokenizer_encode(tok, "hel\xfflo", 6, 16, ids, 16, &n, NULL), EMBD_OK);
    CHECK(n == 3 && ids[1] == 4);
    CHECK_EQ_INT(embd_tokenizer_vocab_size(tok), 12);
    CHECK_EQ_INT(embd_tokenizer_token_id(tok, "##able"), 8);
    CHECK_EQ_INT(embd_tokenizer_token_id(tok, "[SEP]"), 3);
    CHECK_EQ_INT(embd_tokenizer_token_id(tok, "nope"), -1);
    CHECK(embd_tokenizer_fingerprint(tok) != 0);

    /* a changed option changes the fingerprint */
    const char *other = HEAD "\"normalizer\":{\"type\":\"BertNormalizer\",\"lowercase\":false,"
                             "\"strip_accents\":null}," PRE POST MODEL(VOCAB);
    embd_tokenizer *tok2 = NULL;
    CHECK_EQ_INT(embd_tokenizer_load(&tok2, other, strlen(other)), EMBD_OK);
    if (tok2) CHECK(embd_tokenizer_fingerprint(tok2) != embd_tokenizer_fingerprint(tok));
    embd_tokenizer_free(tok2);
    embd_tokenizer_free(tok);
}

static void test_malformed(void) {
    expect("empty", "", EMBD_ERR_MODEL_FORMAT, "JSON");
    expect("not json", "hello", EMBD_ERR_MODEL_FORMAT, "JSON");
    expect("array", "[1,2]", EMBD_ERR_MODEL_FORMAT, "JSON");
    expect("truncated",
           "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":", EMBD_ERR_MODEL_FORMAT, "JSON");
    expect("not utf-8", "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"\xff\"}}",
           EMBD_ERR_MODEL_FORMAT, "UTF-8");
    expect("no model", "{}", EMBD_ERR_MODEL_FORMAT, "model");
    expect("model not object", "{\"model\":3}", EMBD_ERR_MODEL_FORMAT, "model");
    expect("model no type", "{\"model\":{\"vocab\":{\"a\":0}}}", EMBD_ERR_MODEL_FORMAT, "type");
    expect("bpe", "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", EMBD_ERR_UNSUPPORTED,
           "BPE");
    expect("unigram", "{\"model\":{\"type\":\"Unigram\"}}", EMBD_ERR_MODEL_FORMAT, "Unigram vocab");
    expect("bpe", "{\"model\":{\"type\":\"BPE\"}}", EMBD_ERR_UNSUPPORTED, "BPE");
    expect("no vocab", "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\"}}",
           EMBD_ERR_MODEL_FORMAT, "vocab");
    expect("vocab array",
           "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"vocab\":[1]}}",
           EMBD_ERR_MODEL_FORMAT, "vocab");
    expect("empty vocab", "{" MODEL(""), EMBD_ERR_MODEL_FORMAT, "vocab");
    expect("id string", "{" MODEL("\"[UNK]\":\"0\""), EMBD_ERR_MODEL_FORMAT, "bad id");
    expect("id float", "{" MODEL("\"[UNK]\":0.5"), EMBD_ERR_MODEL_FORMAT, "bad id");
    expect("id negative", "{" MODEL("\"[UNK]\":-1"), EMBD_ERR_MODEL_FORMAT, "bad id");
    expect("id huge", "{" MODEL("\"[UNK]\":4294967296"), EMBD_ERR_MODEL_FORMAT, "bad id");
    expect("id 1e300", "{" MODEL("\"[UNK]\":1e300"), EMBD_ERR_MODEL_FORMAT, "bad id");
    expect("id null", "{" MODEL("\"[UNK]\":null"), EMBD_ERR_MODEL_FORMAT, "bad id");
    expect("duplicate id", "{" MODEL("\"[UNK]\":0,\"a\":1,\"b\":1"), EMBD_ERR_MODEL_FORMAT,
           "twice");
    expect("duplicate token", "{" MODEL("\"[UNK]\":0,\"a\":1,\"a\":2"), EMBD_ERR_MODEL_FORMAT,
           "repeats");
    expect("no unk in vocab", "{" MODEL("\"a\":0"), EMBD_ERR_MODEL_FORMAT, "unk_token");
    expect("unk not string",
           "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":5,\"vocab\":{\"a\":0}}}",
           EMBD_ERR_MODEL_FORMAT, "unk_token");
    expect("bad prefix",
           "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"a\",\"continuing_subword_prefix\":1,"
           "\"vocab\":{\"a\":0}}}",
           EMBD_ERR_MODEL_FORMAT, "prefix");
    expect("bad max chars",
           "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"a\",\"max_input_chars_per_word\":-4,"
           "\"vocab\":{\"a\":0}}}",
           EMBD_ERR_MODEL_FORMAT, "max_input_chars_per_word");
    expect("normalizer type", "{\"normalizer\":{\"type\":\"NFKC\"}," MODEL("\"[UNK]\":0"),
           EMBD_ERR_UNSUPPORTED, "NFKC");
    expect("normalizer seq",
           "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[]}," MODEL("\"[UNK]\":0"),
           EMBD_ERR_UNSUPPORTED, "Sequence");
    expect("normalizer no type", "{\"normalizer\":{}," MODEL("\"[UNK]\":0"), EMBD_ERR_MODEL_FORMAT,
           "normalizer");
    expect(
        "normalizer option",
        "{\"normalizer\":{\"type\":\"BertNormalizer\",\"lowercase\":\"yes\"}," MODEL("\"[UNK]\":0"),
        EMBD_ERR_MODEL_FORMAT, "boolean");
    expect("pretok type", "{\"pre_tokenizer\":{\"type\":\"Metaspace\"}," MODEL("\"[UNK]\":0"),
           EMBD_ERR_UNSUPPORTED, "Metaspace");
    expect("post type", "{\"post_processor\":{\"type\":\"ByteLevel\"}," MODEL("\"[UNK]\":0"),
           EMBD_ERR_UNSUPPORTED, "ByteLevel");
    expect("roberta without ids",
           "{\"post_processor\":{\"type\":\"RobertaProcessing\"}," MODEL("\"[UNK]\":0"),
           EMBD_ERR_MODEL_FORMAT, "RobertaProcessing");
    expect("bert post bad",
           "{\"post_processor\":{\"type\":\"BertProcessing\",\"sep\":3}," MODEL("\"[UNK]\":0"),
           EMBD_ERR_MODEL_FORMAT, "BertProcessing");
    expect("post id unknown",
           "{\"post_processor\":{\"type\":\"BertProcessing\",\"sep\":[\"x\",7],\"cls\":[\"y\",0]}"
           "," MODEL("\"[UNK]\":0"),
           EMBD_ERR_MODEL_FORMAT, "post_processor");
    expect("template no single",
           "{\"post_processor\":{\"type\":\"TemplateProcessing\"}," MODEL("\"[UNK]\":0"),
           EMBD_ERR_MODEL_FORMAT, "single");
    expect(
        "template missing special",
        "{\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{"
        "\"id\":"
        "\"[CLS]\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{}}," MODEL("\"[UNK]\":0"),
        EMBD_ERR_MODEL_FORMAT, "[CLS]");
    expect("template B",
           "{\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"Sequence\":{\"id\":"
           "\"B\"}}],\"special_tokens\":{}}," MODEL("\"[UNK]\":0"),
           EMBD_ERR_UNSUPPORTED, "sequence A");
    expect("added not array", "{\"added_tokens\":{}," MODEL("\"[UNK]\":0"), EMBD_ERR_MODEL_FORMAT,
           "added_tokens");
    expect("added no content", "{\"added_tokens\":[{\"id\":0}]," MODEL("\"[UNK]\":0"),
           EMBD_ERR_MODEL_FORMAT, "added token");
    expect("added empty content",
           "{\"added_tokens\":[{\"id\":0,\"content\":\"\"}]," MODEL("\"[UNK]\":0"),
           EMBD_ERR_MODEL_FORMAT, "added token");
    expect("added bad id",
           "{\"added_tokens\":[{\"id\":-3,\"content\":\"x\"}]," MODEL("\"[UNK]\":0"),
           EMBD_ERR_MODEL_FORMAT, "added token");
    expect(
        "added flag",
        "{\"added_tokens\":[{\"id\":0,\"content\":\"x\",\"lstrip\":3,\"normalized\":false}]," MODEL(
            "\"[UNK]\":0"),
        EMBD_ERR_MODEL_FORMAT, "non-boolean");
    expect("added single word",
           "{\"added_tokens\":[{\"id\":0,\"content\":\"x\",\"single_word\":true,\"normalized\":"
           "false}]," MODEL("\"[UNK]\":0"),
           EMBD_ERR_UNSUPPORTED, "single_word");
    /* normalized = true: matched as the normalizer spells it (here lowercased);
     * a content too long for that is refused, one that normalizes to nothing
     * is never matched */
    expect("added normalized",
           "{\"added_tokens\":[{\"id\":0,\"content\":\"X\",\"normalized\":true}]," MODEL(
               "\"[UNK]\":0"),
           EMBD_OK, "");
    expect("added normalized to nothing",
           "{\"added_tokens\":[{\"id\":0,\"content\":\"\\u0001\",\"normalized\":true}]," MODEL(
               "\"[UNK]\":0"),
           EMBD_OK, "");
    {
        char big[1200], json[1600];
        memset(big, 'y', 600);
        big[600] = 0;
        snprintf(json, sizeof json,
                 "{\"added_tokens\":[{\"id\":0,\"content\":\"%s\",\"normalized\":true}]," MODEL(
                     "\"[UNK]\":0"),
                 big);
        expect("added normalized too long", json, EMBD_ERR_UNSUPPORTED, "too long");
    }
    /* accepted oddities: a null normalizer, pre_tokenizer and post_processor */
    expect(
        "minimal",
        "{\"normalizer\":null,\"pre_tokenizer\":null,\"post_processor\":null," MODEL("\"[UNK]\":0"),
        EMBD_OK, NULL);
    /* a NUL byte in the middle of the buffer */
    const char nul[] = "{\"model\":\0{}}";
    CHECK_EQ_INT(load(nul, sizeof(nul) - 1), EMBD_ERR_MODEL_FORMAT);
    /* every prefix of a valid file fails cleanly */
    size_t len = strlen(valid);
    for (size_t i = 0; i < len; i++) {
        enum embd_status st = load(valid, i);
        CHECK_MSG(st == EMBD_ERR_MODEL_FORMAT || st == EMBD_ERR_UNSUPPORTED, "prefix %zu: %s", i,
                  embd_status_str(st));
    }
}

/* Fail the k-th allocation for k = 0, 1, ... until load and encode succeed. */
static void test_alloc_faults(void) {
    int done = 0;
    for (long k = 0; k < 1000 && !done; k++) {
        embd_tokenizer *tok = NULL;
        embd_fault_alloc_after(k);
        enum embd_status st = embd_tokenizer_load(&tok, valid, strlen(valid));
        if (st == EMBD_OK) {
            int32_t ids[16];
            size_t n;
            const char *t = "h\xc3\xa9llo\xff world";
            st = embd_tokenizer_encode(tok, t, strlen(t), 16, ids, 16, &n, NULL);
            if (st == EMBD_OK) done = 1;
        }
        embd_fault_alloc_after(-1);
        CHECK_MSG(st == EMBD_OK || st == EMBD_ERR_NOMEM, "k=%ld: %s", k, embd_status_str(st));
        embd_tokenizer_free(tok);
    }
    CHECK(done);
}

int main(void) {
    test_valid();
    test_malformed();
    test_alloc_faults();
    return test_summary("test_tok_malformed");
}
