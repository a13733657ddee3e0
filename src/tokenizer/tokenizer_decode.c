/* tokenizer_decode.c — ids back to text, as Hugging Face `tokenizers`'
 * Tokenizer::decode does: each id's string, the special tokens dropped on
 * request, then the decoder of tokenizer.json (WordPiece, or none). */
#include "tokenizer/tokenizer_internal.h"
#include "util/util.h"

#include <string.h>

const char *embd_tokenizer_id_to_token(const embd_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->vocab_size || tok->id_str[id] == UINT32_MAX) return NULL;
    return tok->pool + tok->id_str[id];
}

/* The output: bytes past cap are counted, not written. */
struct out {
    char *buf;
    size_t cap, len;
};

static void put(struct out *o, const char *s, size_t n) {
    if (o->len < o->cap) {
        size_t room = o->cap - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
}

/* Rust's str::replace(from, to) in place, for a `to` no longer than `from`:
 * every non-overlapping match, left to right. Returns the new length. */
static size_t replace_all(char *s, size_t n, const char *from, const char *to) {
    const size_t fl = strlen(from), tl = strlen(to);
    size_t r = 0, w = 0;
    while (r < n) {
        if (r + fl <= n && memcmp(s + r, from, fl) == 0) {
            memmove(s + w, to, tl);
            w += tl;
            r += fl;
        } else {
            s[w++] = s[r++];
        }
    }
    return w;
}

/* tokenizers' decoders::wordpiece::cleanup, in its order. */
static size_t cleanup(char *s, size_t n) {
    static const char *const rules[][2] = {
        {" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},
        {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},   {" do not", " don't"},
        {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        n = replace_all(s, n, rules[i][0], rules[i][1]);
    return n;
}

enum embd_status embd_tokenizer_decode(const embd_tokenizer *tok, const int32_t *ids, size_t n,
                                       bool skip_special, char *buf, size_t cap, size_t *len) {
    if (len) *len = 0;
    if (!tok || !len || (!ids && n) || (!buf && cap))
        return embd_error(EMBD_ERR_INVALID_ARG, "decode: NULL argument");
    if (cap) buf[0] = 0;
    for (size_t i = 0; i < n; i++)
        if (!embd_tokenizer_id_to_token(tok, ids[i]))
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "decode: id %lld at position %zu is not a token (ids are 0 .. %d)",
                              (long long)ids[i], i, tok->vocab_size - 1);
    if (tok->dec_kind == TOK_DEC_CHAIN)
        return tok_uni_decode(tok, ids, n, skip_special, buf, cap, len);
    if (tok->dec_kind == TOK_DEC_UNSUPPORTED)
        return embd_error(
            EMBD_ERR_UNSUPPORTED,
            "decode: tokenizer.json decoder '%s' is not supported (only WordPiece, and for "
            "Unigram models Metaspace, ByteFallback, Fuse, Strip, Replace with a "
            "string and Sequence)",
            tok->dec_type);
    const int wp = tok->dec_kind == TOK_DEC_WORDPIECE;
    const char *prefix = wp ? tok->dec_prefix : "";
    const size_t plen = strlen(prefix);
    /* a piece with its space, for cleanup */
    char small[256], *scratch = small;
    if (wp && tok->dec_cleanup && tok->max_token_len + 1 > sizeof small) {
        scratch = embd_malloc(tok->max_token_len + 1);
        if (!scratch) return embd_error(EMBD_ERR_NOMEM, "decode: out of memory");
    }
    struct out o = {buf, cap ? cap - 1 : 0, 0};
    size_t k = 0; /* pieces so far */
    for (size_t i = 0; i < n; i++) {
        if (skip_special && (tok->id_flags[ids[i]] & TOK_ID_SPECIAL)) continue;
        const char *t = tok->pool + tok->id_str[ids[i]];
        size_t tl = strlen(t);
        if (!wp) {
            if (k) put(&o, " ", 1);
            put(&o, t, tl);
            k++;
            continue;
        }
        int space = 0;
        if (k) {
            if (strncmp(t, prefix, plen) == 0) {
                t += plen;
                tl -= plen;
            } else {
                space = 1;
            }
        }
        k++;
        if (!tok->dec_cleanup) {
            if (space) put(&o, " ", 1);
            put(&o, t, tl);
            continue;
        }
        size_t m = 0;
        if (space) scratch[m++] = ' ';
        memcpy(scratch + m, t, tl);
        put(&o, scratch, cleanup(scratch, m + tl));
    }
    if (scratch != small) embd_free(scratch);
    if (cap) buf[o.len < cap ? o.len : cap - 1] = 0;
    *len = o.len;
    if (o.len + 1 > cap)
        return embd_error(EMBD_ERR_BUFFER_TOO_SMALL, "decode: %zu bytes do not fit in %zu",
                          o.len + 1, cap);
    return EMBD_OK;
}
