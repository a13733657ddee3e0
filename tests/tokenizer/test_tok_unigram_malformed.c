/* test_tok_unigram_malformed — the SentencePiece side of the tokenizer
 * (tokenizer_unigram.c): a small Unigram tokenizer encodes and decodes as
 * expected (unknown characters fused, byte fallback, no unk_id); broken or
 * unsupported Unigram models, normalizers, pre-tokenizers and decoders get
 * a clear status and message; a precompiled_charsmap that is not base64,
 * too short, with a bad trie size, replacement strings that are not UTF-8,
 * a trie whose reachable reads leave the array or whose leaves point
 * outside the strings is refused, and thousands of random corruptions of
 * the real nmt_nfkc charsmap (tests/fixtures/unigram, from $EMBD_SRC) load
 * or fail cleanly and, when they load, encode adversarial text without a
 * crash (run it under ASan); allocation failures at every point of load,
 * encode and decode are reported and leak nothing. */
#include "tokenizer/tokenizer.h"
#include "util/util.h"
#include "../test.h"

#include <stdlib.h>
#include <string.h>

#define VOCAB                                                                                      \
    "[[\"<unk>\",0],[\"<s>\",0],[\"</s>\",0],[\"\xe2\x96\x81\",-2],"                               \
    "[\"\xe2\x96\x81hello\",-3],[\"\xe2\x96\x81world\",-3.5],[\"h\",-5],[\"e\",-5],[\"l\",-5],"    \
    "[\"o\",-5],[\"\xe2\x96\x81he\",-4],[\"llo\",-4],[\"<0x78>\",-6],[\"<0x79>\",-6],"             \
    "[\"<0x7A>\",-6],[\"<mask>\",0]]"
#define ADDED                                                                                      \
    "\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"    \
    "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"                        \
    "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false},"                       \
    "{\"id\":15,\"content\":\"<mask>\",\"special\":true,\"normalized\":false,\"lstrip\":true}],"
#define PRE "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\"},"
#define POST                                                                                       \
    "\"post_processor\":{\"type\":\"RobertaProcessing\",\"sep\":[\"</"                             \
    "s>\",2],\"cls\":[\"<s>\",1]},"
#define DEC                                                                                        \
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{"         \
    "\"String\":\"\xe2\x96\x81\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":"       \
    "\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
#define MODEL(fb)                                                                                  \
    "\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"byte_fallback\":" fb ",\"vocab\":" VOCAB "}}"

static const char *valid = "{" ADDED PRE POST DEC MODEL("false");
static const char *valid_fb = "{" ADDED PRE POST DEC MODEL("true");

static enum embd_status load(const char *json, size_t len, embd_tokenizer **out) {
    embd_tokenizer *tok = NULL;
    enum embd_status st = embd_tokenizer_load(&tok, json, len);
    if (st == EMBD_OK) {
        CHECK(tok != NULL);
    } else {
        CHECK(tok == NULL);
        CHECK_MSG(strlen(embd_last_error()) > 0, "no message");
    }
    if (out)
        *out = tok;
    else
        embd_tokenizer_free(tok);
    return st;
}

static void expect(const char *name, const char *json, enum embd_status want, const char *needle) {
    enum embd_status st = load(json, strlen(json), NULL);
    CHECK_MSG(st == want, "%s: got %s (%s)", name, embd_status_str(st), embd_last_error());
    if (st != EMBD_OK && needle)
        CHECK_MSG(strstr(embd_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", name,
                  embd_last_error(), needle);
}

/* Encodes `text` and compares with want[0..nwant). */
static void expect_ids(embd_tokenizer *tok, const char *text, size_t len, const int32_t *want,
                       size_t nwant) {
    int32_t ids[64];
    size_t n = 0;
    enum embd_status st = embd_tokenizer_encode(tok, text, len, 64, ids, 64, &n, NULL);
    CHECK_MSG(st == EMBD_OK, "'%s': %s", text, embd_last_error());
    int same = n == nwant && memcmp(ids, want, n * sizeof *ids) == 0;
    CHECK_MSG(same, "'%s': %zu ids, want %zu", text, n, nwant);
    if (!same) {
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", (int)ids[i]);
        fprintf(stderr, "\n");
    }
}

static void expect_decode(embd_tokenizer *tok, const int32_t *ids, size_t n, bool skip,
                          const char *want) {
    char buf[256];
    size_t len = 0;
    enum embd_status st = embd_tokenizer_decode(tok, ids, n, skip, buf, sizeof buf, &len);
    CHECK_MSG(st == EMBD_OK && strcmp(buf, want) == 0, "decode: got '%s' (%s), want '%s'", buf,
              embd_status_str(st), want);
}

static void test_valid(void) {
    embd_tokenizer *tok = NULL, *fb = NULL;
    CHECK_EQ_INT(load(valid, strlen(valid), &tok), EMBD_OK);
    CHECK_EQ_INT(load(valid_fb, strlen(valid_fb), &fb), EMBD_OK);
    if (!tok || !fb) {
        embd_tokenizer_free(tok);
        embd_tokenizer_free(fb);
        return;
    }
    /* <s> ▁hello ▁world </s> */
    expect_ids(tok, "hello world", 11, (const int32_t[]){1, 4, 5, 2}, 4);
    /* unknown characters: one unk for the run; with byte fallback their bytes */
    expect_ids(tok, "xyz hello", 9, (const int32_t[]){1, 3, 0, 4, 2}, 5);
    expect_ids(fb, "xyz hello", 9, (const int32_t[]){1, 3, 12, 13, 14, 4, 2}, 7);
    /* a byte without its piece: the whole run is unk */
    expect_ids(fb, "xqz", 3, (const int32_t[]){1, 3, 0, 2}, 4);
    /* <mask> takes the space before it (lstrip): no ▁ piece */
    expect_ids(tok, "hello <mask>", 12, (const int32_t[]){1, 4, 15, 2}, 4);
    expect_ids(tok, "", 0, (const int32_t[]){1, 2}, 2);
    expect_ids(tok, " ", 1, (const int32_t[]){1, 3, 2}, 3);
    /* invalid UTF-8 is U+FFFD, unknown here */
    expect_ids(tok, "hello \xff", 7, (const int32_t[]){1, 4, 3, 0, 2}, 5);
    /* a pair: <s> A </s> </s> B </s>, all type 0 */
    int32_t ids[16], types[16];
    size_t n = 0;
    CHECK_EQ_INT(
        embd_tokenizer_encode_pair(tok, "hello", 5, "world", 5, 16, true, ids, types, 16, &n, NULL),
        EMBD_OK);
    const int32_t pair[] = {1, 4, 2, 2, 5, 2};
    CHECK(n == 6 && memcmp(ids, pair, sizeof pair) == 0);
    for (size_t i = 0; i < n && i < 16; i++)
        CHECK(types[i] == 0);
    /* offsets: the prepended ▁ takes the first character's span, a space's
     * replacement the space's; the template's tokens 0..0 and special */
    size_t st[8], sp[8];
    uint8_t spec[8];
    CHECK_EQ_INT(embd_tokenizer_encode_offsets(tok, "hello world", 11, 8, true, ids, st, sp, spec,
                                               8, &n, NULL),
                 EMBD_OK);
    CHECK(n == 4 && ids[1] == 4 && ids[2] == 5);
    CHECK(st[1] == 0 && sp[1] == 5 && st[2] == 5 && sp[2] == 11);
    CHECK(spec[0] == 1 && spec[1] == 0 && spec[2] == 0 && spec[3] == 1 && sp[0] == 0 && sp[3] == 0);
    /* decoding: Replace ▁, ByteFallback, Fuse, Strip */
    expect_decode(fb, (const int32_t[]){1, 4, 5, 2}, 4, true, "hello world");
    expect_decode(fb, (const int32_t[]){1, 4, 5, 2}, 4, false, "<s> hello world</s>");
    expect_decode(fb, (const int32_t[]){4, 12, 13, 14}, 4, true, "helloxyz");
    CHECK_EQ_INT(embd_tokenizer_token_id(tok, "\xe2\x96\x81world"), 5);
    CHECK_EQ_INT(embd_tokenizer_vocab_size(tok), 16);
    CHECK(embd_tokenizer_fingerprint(tok) != embd_tokenizer_fingerprint(fb));
    embd_tokenizer_free(tok);
    embd_tokenizer_free(fb);

    /* no unk_id: an unknown character is an error, known text encodes */
    const char *nounk =
        "{" PRE "\"model\":{\"type\":\"Unigram\",\"unk_id\":null,\"vocab\":" VOCAB "}}";
    CHECK_EQ_INT(load(nounk, strlen(nounk), &tok), EMBD_OK);
    if (tok) {
        expect_ids(tok, "hello", 5, (const int32_t[]){4}, 1);
        CHECK_EQ_INT(embd_tokenizer_encode(tok, "q", 1, 8, ids, 8, &n, NULL), EMBD_ERR_INVALID_ARG);
        embd_tokenizer_free(tok);
    }
}

static void test_malformed(void) {
#define U(v) "{\"model\":{\"type\":\"Unigram\"," v "}}"
    expect("no vocab", U("\"unk_id\":0"), EMBD_ERR_MODEL_FORMAT, "vocab");
    expect("empty vocab", U("\"vocab\":[]"), EMBD_ERR_MODEL_FORMAT, "vocab");
    expect("vocab object", U("\"vocab\":{\"a\":1}"), EMBD_ERR_MODEL_FORMAT, "vocab");
    expect("entry not pair", U("\"vocab\":[[\"a\"]]"), EMBD_ERR_MODEL_FORMAT, "[piece, score]");
    expect("entry 3", U("\"vocab\":[[\"a\",1,2]]"), EMBD_ERR_MODEL_FORMAT, "[piece, score]");
    expect("score string", U("\"vocab\":[[\"a\",\"1\"]]"), EMBD_ERR_MODEL_FORMAT, "[piece, score]");
    expect("piece number", U("\"vocab\":[[1,1]]"), EMBD_ERR_MODEL_FORMAT, "[piece, score]");
    expect("score inf", U("\"vocab\":[[\"a\",1e999]]"), EMBD_ERR_MODEL_FORMAT, "score");
    expect("unk_id big", U("\"unk_id\":5,\"vocab\":[[\"a\",0]]"), EMBD_ERR_MODEL_FORMAT, "unk_id");
    expect("unk_id neg", U("\"unk_id\":-1,\"vocab\":[[\"a\",0]]"), EMBD_ERR_MODEL_FORMAT, "unk_id");
    expect("unk_id frac", U("\"unk_id\":0.5,\"vocab\":[[\"a\",0]]"), EMBD_ERR_MODEL_FORMAT,
           "unk_id");
    expect("byte_fallback", U("\"byte_fallback\":1,\"vocab\":[[\"a\",0]]"), EMBD_ERR_MODEL_FORMAT,
           "byte_fallback");
    expect("odd scores",
           U("\"unk_id\":0,\"vocab\":[[\"a\",-0],[\"b\",-1.5E+0],[\"c\",-12345678901234567890123."
             "5e-22],[\"d\",0.000000000000000000000000001]]"),
           EMBD_OK, NULL);
#define N(n)                                                                                       \
    "{\"normalizer\":" n ",\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"a\",0]]}}"
    expect("bert normalizer", N("{\"type\":\"BertNormalizer\"}"), EMBD_ERR_UNSUPPORTED,
           "BertNormalizer");
    expect("normalizer no type", N("{}"), EMBD_ERR_MODEL_FORMAT, "type");
    expect("sequence no list", N("{\"type\":\"Sequence\"}"), EMBD_ERR_MODEL_FORMAT, "Sequence");
    expect("regex",
           N("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"content\":\" \"}"),
           EMBD_ERR_UNSUPPORTED, "regex");
    expect("regex alt",
           N("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"a|b\"},\"content\":\"\"}"),
           EMBD_ERR_UNSUPPORTED, "regex");
    expect("regex group",
           N("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"(a)+\"},\"content\":\"$1\"}"),
           EMBD_ERR_UNSUPPORTED, "regex");
    expect("regex run",
           N("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" {2,}\"},\"content\":\" \"}"), EMBD_OK,
           NULL);
    expect("empty pattern",
           N("{\"type\":\"Replace\",\"pattern\":{\"String\":\"\"},\"content\":\"x\"}"),
           EMBD_ERR_UNSUPPORTED, "empty");
    expect("replace no content", N("{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"}}"),
           EMBD_ERR_MODEL_FORMAT, "Replace");
    expect("strip", N("{\"type\":\"Strip\",\"strip_left\":2}"), EMBD_ERR_MODEL_FORMAT, "Strip");
    expect("prepend", N("{\"type\":\"Prepend\"}"), EMBD_ERR_MODEL_FORMAT, "Prepend");
    expect("precompiled no map", N("{\"type\":\"Precompiled\"}"), EMBD_ERR_MODEL_FORMAT,
           "precompiled_charsmap");
#define PC(b) N("{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"" b "\"}")
    expect("charsmap not base64", PC("!!!!"), EMBD_ERR_MODEL_FORMAT, "base64");
    expect("charsmap bad length", PC("QUJD="), EMBD_ERR_MODEL_FORMAT, "base64");
    expect("charsmap short", PC("AAA="), EMBD_ERR_MODEL_FORMAT, "short");
    /* trie size 8 in 4 bytes */
    expect("charsmap trie size", PC("CAAAAA=="), EMBD_ERR_MODEL_FORMAT, "trie size");
    /* trie size 3 */
    expect("charsmap trie size odd", PC("AwAAAAAAAAA="), EMBD_ERR_MODEL_FORMAT, "trie size");
    /* one unit (root offset 0, no children: every read of a child is past
     * the 1-unit array) */
    expect("charsmap tiny trie", PC("BAAAAAAAAAA="), EMBD_ERR_MODEL_FORMAT, "malformed");
    /* strings not UTF-8: trie size 4, unit 0, then 0xFF */
    expect("charsmap strings", PC("BAAAAAAAAAD/"), EMBD_ERR_MODEL_FORMAT, "UTF-8");
#define P(p)                                                                                       \
    "{\"pre_tokenizer\":" p ",\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"a\",0]]}" \
    "}"
    expect("bert pretok", P("{\"type\":\"BertPreTokenizer\"}"), EMBD_ERR_UNSUPPORTED,
           "BertPreTokenizer");
    expect("bytelevel", P("{\"type\":\"ByteLevel\"}"), EMBD_ERR_UNSUPPORTED, "ByteLevel");
    expect("metaspace rep", P("{\"type\":\"Metaspace\",\"replacement\":\"ab\"}"),
           EMBD_ERR_MODEL_FORMAT, "Metaspace");
    expect("metaspace scheme", P("{\"type\":\"Metaspace\",\"prepend_scheme\":\"sometimes\"}"),
           EMBD_ERR_MODEL_FORMAT, "Metaspace");
    expect("metaspace split", P("{\"type\":\"Metaspace\",\"split\":\"yes\"}"),
           EMBD_ERR_MODEL_FORMAT, "Metaspace");
    expect("first after split",
           P("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"WhitespaceSplit\"},{\"type\":"
             "\"Metaspace\",\"prepend_scheme\":\"first\"}]}"),
           EMBD_ERR_UNSUPPORTED, "first");
    expect("pretok sequence", P("{\"type\":\"Sequence\"}"), EMBD_ERR_MODEL_FORMAT, "Sequence");
    /* an unknown decoder loads; decoding says so */
    const char *dec = "{\"decoder\":{\"type\":\"BPEDecoder\"},\"model\":{\"type\":\"Unigram\","
                      "\"unk_id\":0,\"vocab\":[[\"a\",0]]}}";
    embd_tokenizer *tok = NULL;
    CHECK_EQ_INT(load(dec, strlen(dec), &tok), EMBD_OK);
    if (tok) {
        char buf[16];
        size_t len;
        CHECK_EQ_INT(embd_tokenizer_decode(tok, (const int32_t[]){0}, 1, true, buf, 16, &len),
                     EMBD_ERR_UNSUPPORTED);
        embd_tokenizer_free(tok);
    }
    /* every prefix of a valid file fails cleanly */
    size_t len = strlen(valid);
    for (size_t i = 0; i < len; i++) {
        enum embd_status st = load(valid, i, NULL);
        CHECK_MSG(st == EMBD_ERR_MODEL_FORMAT || st == EMBD_ERR_UNSUPPORTED, "prefix %zu: %s", i,
                  embd_status_str(st));
    }
}

/* base64 (standard, padded) */
static size_t b64_decode(const char *s, size_t n, unsigned char *out) {
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        char c = s[i];
        int d = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '+'             ? 62
                                       : 63;
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (unsigned char)(acc >> bits);
        }
    }
    return k;
}

static size_t b64_encode(const unsigned char *b, size_t n, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) |
                     (i + 2 < n ? b[i + 2] : 0);
        out[k++] = t[w >> 18];
        out[k++] = t[(w >> 12) & 63];
        out[k++] = i + 1 < n ? t[(w >> 6) & 63] : '=';
        out[k++] = i + 2 < n ? t[w & 63] : '=';
    }
    out[k] = 0;
    return k;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* The real nmt_nfkc charsmap, corrupted at random. */
static void test_charsmap_corruption(void) {
    const char *src = getenv("EMBD_SRC");
    char path[4096], *json = NULL;
    size_t jlen = 0;
    if (!src) {
        printf("note: EMBD_SRC not set: the charsmap corruption test is skipped\n");
        return;
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/unigram/xlmr-nmt-nfkc-8k.json", src);
    if (embd_read_file(path, (size_t)1 << 26, &json, &jlen) != EMBD_OK) {
        CHECK_MSG(0, "cannot read %s", path);
        return;
    }
    const char *key = "\"precompiled_charsmap\":\"";
    char *a = strstr(json, key);
    CHECK(a != NULL);
    if (!a) {
        embd_free(json);
        return;
    }
    a += strlen(key);
    char *z = strchr(a, '"');
    size_t n64 = (size_t)(z - a);
    unsigned char *raw = malloc(n64), *mut = malloc(n64);
    char *b64 = malloc(n64 + 8);
    size_t nraw = b64_decode(a, n64, raw);
    const size_t cap = n64 + 512;
    char *doc = malloc(cap);
    static const char *texts[] = {
        "Hello  World \xef\xbc\xa1\xcc\x81 caf\x65\xcc\x81 \xe2\x91\xa0 \xef\xac\x81",
        "\xe4\xb8\xad\xe6\x96\x87 \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 "
        "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd",
        "\xd9\x85\xd9\x8e\xd8\xb1\xd9\x92 \xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d "
        "\x01\x7f\r\n\t",
        "\xef\xbd\xb6\xef\xbe\x9e \xe1\x84\x80\xe1\x85\xa1 \xc2\xbd \xe2\x84\xa2 a\xcc\x81\xcc\x82",
    };
    int loaded = 0, refused = 0;
    for (int trial = 0; trial < 600; trial++) {
        memcpy(mut, raw, nraw);
        size_t m = nraw;
        int kind = trial % 4;
        if (kind == 0) { /* flip a few bytes anywhere */
            int k = 1 + (int)(next_rand() % 4);
            for (int i = 0; i < k; i++)
                mut[next_rand() % m] ^= (unsigned char)(1u << (next_rand() % 8));
        } else if (kind == 1) { /* set a unit of the trie to a random value */
            size_t units = (((size_t)raw[0] | (size_t)raw[1] << 8 | (size_t)raw[2] << 16) / 4);
            size_t u = 1 + next_rand() % units;
            uint32_t v = (uint32_t)next_rand();
            memcpy(mut + 4 * u, &v, 4);
        } else if (kind == 2) { /* cut the blob short */
            m = 4 + next_rand() % (nraw - 4);
        } else { /* change the trie size */
            uint32_t ts = (uint32_t)(next_rand() % (nraw + 64)) & ~3u;
            memcpy(mut, &ts, 4);
        }
        b64_encode(mut, m, b64);
        int w =
            snprintf(doc, cap,
                     "{\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"%s\"},"
                     "\"pre_tokenizer\":{\"type\":\"Metaspace\"},\"model\":{\"type\":"
                     "\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"\xe2\x96\x81\",-1],"
                     "[\"a\",-2],[\"A\",-2],[\" \",-3]]}}",
                     b64);
        embd_tokenizer *tok = NULL;
        enum embd_status st = embd_tokenizer_load(&tok, doc, (size_t)w);
        CHECK_MSG(st == EMBD_OK || st == EMBD_ERR_MODEL_FORMAT, "trial %d: %s", trial,
                  embd_status_str(st));
        if (st != EMBD_OK) {
            refused++;
            continue;
        }
        loaded++;
        for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
            int32_t ids[256];
            size_t n;
            st = embd_tokenizer_encode(tok, texts[t], strlen(texts[t]), 256, ids, 256, &n, NULL);
            CHECK_MSG(st == EMBD_OK, "trial %d text %zu: %s", trial, t, embd_last_error());
        }
        embd_tokenizer_free(tok);
    }
    printf("charsmap corruptions: %d loaded, %d refused\n", loaded, refused);
    CHECK(refused > 0);
    free(raw);
    free(mut);
    free(b64);
    free(doc);
    embd_free(json);
}

/* Fail the k-th allocation for k = 0, 1, ... until load, encode and
 * decode succeed. */
static void test_alloc_faults(void) {
    int done = 0;
    for (long k = 0; k < 2000 && !done; k++) {
        embd_tokenizer *tok = NULL;
        embd_fault_alloc_after(k);
        enum embd_status st = embd_tokenizer_load(&tok, valid_fb, strlen(valid_fb));
        if (st == EMBD_OK) {
            int32_t ids[32];
            size_t n;
            const char *t = "xyz hello  w\xc3\xa9rld\xff <mask>";
            st = embd_tokenizer_encode(tok, t, strlen(t), 32, ids, 32, &n, NULL);
            if (st == EMBD_OK) {
                char buf[128];
                size_t len;
                st = embd_tokenizer_decode(tok, ids, n, false, buf, sizeof buf, &len);
            }
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
    test_charsmap_corruption();
    test_alloc_faults();
    return test_summary("test_tok_unigram_malformed");
}
