/* tokenizer_internal.h — the tokenizer's data, shared by tokenizer_load.c and
 * tokenizer_encode.c, and the per-code-point helpers the tests probe. */
#ifndef EMBD_TOKENIZER_INTERNAL_H
#define EMBD_TOKENIZER_INTERNAL_H

#include "tokenizer/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* One slot of an open-addressing hash table from token bytes to id.
 * An empty slot has id == -1. Keys live in the tokenizer's string pool. */
struct tok_slot {
    uint64_t hash;
    uint32_t off; /* offset of the key in pool */
    uint32_t len; /* key length in bytes */
    int32_t id;
};

struct tok_table {
    struct tok_slot *slots; /* (mask + 1) */
    uint32_t mask;
    uint32_t max_len; /* longest key in bytes */
};

/* An added token: matched in the raw text (normalized = false), or where the
 * normalizer's output spells it (normalized = true; WordPiece tokenizers). */
struct tok_added {
    uint32_t off, len; /* content in pool */
    int32_t id;
    uint8_t special;        /* "special": true (skip_special_tokens drops it when decoding) */
    uint8_t lstrip, rstrip; /* its offsets take in the whitespace before / after it */
    uint8_t normalized;     /* matched in the normalized text */
    uint32_t noff, nlen;    /* normalized: its content normalized (in pool), as matched */
};

/* The decoder of tokenizer.json (decoding only; never changes the ids).
 * TOK_DEC_CHAIN: the SentencePiece decoders (tokenizer_unigram.c). */
enum { TOK_DEC_NONE = 0, TOK_DEC_WORDPIECE, TOK_DEC_UNSUPPORTED, TOK_DEC_CHAIN };

/* The Unigram model with its normalizers, pre-tokenizers and decoders
 * (tokenizer_unigram.c). */
struct tok_uni;

/* ASCII classes after BertNormalizer + BertPreTokenizer. */
enum { TOK_ASCII_DROP = 0, TOK_ASCII_SPACE = 1, TOK_ASCII_PUNCT = 2, TOK_ASCII_WORD = 3 };

/* Flags of an id (embd_tokenizer.id_flags). */
#define TOK_ID_SPECIAL                                                                             \
    1 /* skip_special_tokens drops it: a special added token, or                                   \
         a token spelled as one */

struct embd_tokenizer {
    /* normalizer (BertNormalizer; all 0 when the normalizer is null) */
    int clean_text, handle_chinese, strip_accents, lowercase;
    int bert_pretok; /* BertPreTokenizer present (else each segment is one word) */

    /* WordPiece */
    char *pool; /* every token string, back to back, NUL after each */
    size_t pool_len;
    struct tok_table full; /* every vocab token */
    struct tok_table cont; /* tokens that start with the prefix, keyed without it */
    int32_t unk_id;
    int max_chars; /* max_input_chars_per_word */
    char *prefix;  /* continuing_subword_prefix */

    /* added tokens, matched leftmost-longest in the raw text */
    struct tok_added *added; /* (n_added) */
    int n_added;
    uint8_t added_first[256]; /* 1 where some added token starts with that byte
                                 (or, normalized = true, may start: see load_added) */

    /* post-processor: ids before and after the sequence */
    int32_t pre_ids[8], post_ids[8];
    int n_pre, n_post;
    /* RobertaProcessing's trim_offsets and add_prefix_space (offsets only) */
    uint8_t trim_offsets, trim_prefix_space;
    /* ... and the pair template: special ids (seq -1) and the places of
     * sequences A (seq 0) and B (seq 1), each with its type id, in order */
    struct tok_pair_item {
        int32_t id;
        int8_t seq;
        uint8_t type;
    } pair[16];
    int n_pair;

    uint8_t ascii_class[128];
    uint8_t ascii_lower[128];

    int vocab_size;
    uint64_t fingerprint;

    /* decoding: each id's string (the added token's content, else the vocab
     * token's), as an offset in pool or UINT32_MAX where the id has none;
     * its TOK_ID_* flags; the decoder */
    uint32_t *id_str;  /* (vocab_size) */
    uint8_t *id_flags; /* (vocab_size) */
    size_t max_token_len;
    int dec_kind;      /* TOK_DEC_* */
    int dec_cleanup;   /* WordPiece: clean_up_tokenization on each token */
    char *dec_prefix;  /* WordPiece: the continuing-subword prefix ("##") */
    char dec_type[64]; /* TOK_DEC_UNSUPPORTED: the type, for the message */

    /* the SentencePiece Unigram model, or NULL for WordPiece (everything
     * above that is WordPiece's or BERT's is then unused) */
    struct tok_uni *uni;
};

/* Helpers of tokenizer_load.c that tokenizer_unigram.c shares. */
struct cJSON;
enum embd_status tok_table_init(struct tok_table *t, size_t n);
/* Inserts a key already in the pool; with `replace`, a key already present
 * takes the new id (returns 0), else returns 1 and keeps the old one. */
int tok_table_insert(const struct embd_tokenizer *tok, struct tok_table *t, uint32_t off,
                     uint32_t len, int32_t id, int replace);
int tok_json_bool(const struct cJSON *obj, const char *name, int def);
const char *tok_json_type(const struct cJSON *obj);

/* tokenizer_unigram.c. tok_uni_load reads the Unigram model's vocabulary
 * (into tok->pool, tok->full and id_off, as load_model does for WordPiece,
 * with room for the added tokens), the normalizer and the pre-tokenizer;
 * tok_uni_encode is encode_pieces for it (valid UTF-8 in); the decoder is
 * read by tok_uni_load_decoder and run by tok_uni_decode. */
enum embd_status tok_uni_load(embd_tokenizer *tok, const char *json, size_t json_len,
                              const struct cJSON *root, const struct cJSON *added, int32_t **id_off,
                              int *max_id);
void tok_uni_free(struct tok_uni *u);
/* Whether the Unigram normalizer chain lowercases (holds Lowercase). */
int tok_uni_lowercases(const struct tok_uni *u);
/* The Unigram model's unk_id, -1 when it has none. */
int32_t tok_uni_unk_id(const struct tok_uni *u);
/* Offsets from tok_uni_encode: starts / stops written beside the ids (either
 * may be NULL); pos[k] is the caller's byte position of byte position k of
 * the text given (len + 1 of them; NULL: the same, the text is the caller's). */
struct tok_uni_offs {
    size_t *starts, *stops;
    const size_t *pos;
};
enum embd_status tok_uni_encode(const embd_tokenizer *tok, const char *text, size_t len,
                                size_t limit, int32_t *ids, size_t cap, size_t off, size_t *n,
                                int *truncated, const struct tok_uni_offs *o);
/* RobertaProcessing's trim_offsets on one token of the text (tokenizers'
 * process_offsets): its value v[0..vl) (the piece as matched) decides how
 * many characters of whitespace (or 'Ġ') the [*start, *stop) loses at each
 * end; `first`: the first token of the text. Nothing when the post-processor
 * does not trim. */
void tok_trim_offsets(const embd_tokenizer *tok, const char *v, size_t vl, int first, size_t *start,
                      size_t *stop);
uint64_t tok_uni_fingerprint(const embd_tokenizer *tok, uint64_t h);
/* The normalizers alone on valid UTF-8 (for tests: tok_dump --normalize);
 * *out is embd_malloc'ed. */
enum embd_status tok_uni_normalize(const embd_tokenizer *tok, const char *text, size_t len,
                                   char **out, size_t *out_len);
enum embd_status tok_uni_load_decoder(embd_tokenizer *tok, const struct cJSON *d);
enum embd_status tok_uni_decode(const embd_tokenizer *tok, const int32_t *ids, size_t n,
                                bool skip_special, char *buf, size_t cap, size_t *len);

/* Looks up [s, s+len) in a table; returns the id or -1. */
int32_t tok_table_find(const struct embd_tokenizer *tok, const struct tok_table *t, const char *s,
                       size_t len);

/* Per-code-point rules (exported for tests/tokenizer, which compare them with
 * `tokenizers` over all of Unicode). */
int tok_is_whitespace(uint32_t cp);          /* Rust char::is_whitespace */
int tok_is_control(uint32_t cp);             /* BertNormalizer is_control (tab, LF, CR excluded) */
int tok_is_punct(uint32_t cp);               /* BertPreTokenizer is_bert_punc */
int tok_is_chinese(uint32_t cp);             /* BertNormalizer is_chinese_char */
int tok_is_nonspacing(uint32_t cp);          /* category Mn as tokenizers sees it */
int tok_lower(uint32_t cp, uint32_t out[3]); /* Rust char::to_lowercase; returns count */
int tok_nf_keep(uint32_t cp, int compat);    /* left alone by tokenizers' NFD / NFKD */

/* The BertNormalizer of `tok` applied to the valid UTF-8 s (len bytes), into
 * out (cap bytes); returns the bytes written, or (size_t)-1 when cap is too
 * small. For the normalized forms of added tokens (tokenizer_encode.c). */
size_t tok_bert_normalize(const embd_tokenizer *tok, const char *s, size_t len, char *out,
                          size_t cap);

/* UTF-8 of one code point (< 0x110000) into out (4 bytes of room); returns
 * the bytes written. */
static inline size_t tok_utf8_put(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One code point of valid UTF-8 at s; *len gets its byte count. */
static inline uint32_t tok_utf8_get(const unsigned char *s, size_t *len) {
    unsigned c = s[0];
    if (c < 0x80) {
        *len = 1;
        return c;
    }
    if (c < 0xE0) {
        *len = 2;
        return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
    }
    if (c < 0xF0) {
        *len = 3;
        return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
    }
    *len = 4;
    return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
}

#endif
