/* tokenizer_unigram.c — the SentencePiece side of tokenizer.json, with exact
 * Hugging Face `tokenizers` parity: the Unigram model (Viterbi over a byte
 * trie of the pieces, unknown characters fused into one unk, byte fallback),
 * the normalizers these models use (Precompiled: SentencePiece's
 * precompiled_charsmap, a double-array trie and a table of replacement
 * strings; NFC / NFD / NFKC / NFKD (utf8proc's decompositions, embd's own
 * ordering and composition, as tokenizers' tables have them); Lowercase;
 * Strip; Prepend; Replace, with
 * a string or a run regex such as " {2,}"; Sequence), the pre-tokenizers
 * (Metaspace, WhitespaceSplit, Sequence) and, for decoding, the decoders
 * (Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence).
 *
 * Encoding one text: the added tokens are found in the raw text (leftmost
 * longest, their lstrip / rstrip taking in the whitespace around them); each
 * stretch of text between them goes through the normalizers (one pass per
 * normalizer over the stretch), the pre-tokenizers (recursively, each piece
 * into the next) and the model, whose ids go straight into the caller's
 * buffer; the work stops as soon as the truncated sequence is complete.
 * The WordPiece path (tokenizer_encode.c) is not touched: encode_pieces
 * hands a Unigram tokenizer over here once per text.
 *
 * Offsets (embd_tokenizer_encode_offsets) ride along only when asked: each
 * normalizer records what it did character by character, as tokenizers'
 * NormalizedString::transform is told, and the spans of the caller's text
 * follow (struct span, struct chg). */
#include "tokenizer/tokenizer_internal.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ------------------------------------------------------------------ */
/* Data */

/* A node of the byte trie of the pieces; the children of a node are
 * nodes[child .. child + nchild), sorted by label. */
struct uni_node {
    uint32_t child;
    int32_t id; /* the piece that ends here, or -1 */
    uint16_t nchild;
    uint8_t label;
};

/* SentencePiece's precompiled_charsmap: a Darts double array whose leaves
 * point into a block of NUL-terminated replacement strings. */
struct charsmap {
    uint32_t *array; /* (n) */
    size_t n;
    char *norm; /* (norm_len) the replacement strings */
    size_t norm_len;
    uint8_t ascii_child[128]; /* 1 where the trie has a key starting with that byte */
};

enum {
    NS_PRECOMPILED,
    NS_NFC,
    NS_NFD,
    NS_NFKC,
    NS_NFKD,
    NS_LOWERCASE,
    NS_STRIP,
    NS_PREPEND,
    NS_REPLACE,     /* a string pattern */
    NS_REPLACE_RUN, /* a regex: one character repeated at least run_min times */
};

struct norm_step {
    int kind;
    int left, right;     /* Strip */
    char *pat, *content; /* Replace (pattern, content), Prepend (content) */
    size_t plen, clen;
    uint32_t run_cp; /* NS_REPLACE_RUN: the character ... */
    size_t run_min;  /* ... and the least repeat count that matches */
    struct charsmap cm;
};

enum { PT_WHITESPACE_SPLIT, PT_METASPACE };
enum { PREPEND_NEVER, PREPEND_ALWAYS, PREPEND_FIRST };

#define UNI_MAX_PRE 8

struct pre_step {
    int kind;
    char rep[8]; /* Metaspace: the replacement character, UTF-8, and its length */
    size_t rlen;
    int prepend; /* PREPEND_* */
    int split;
};

/* Decoders (embd_tokenizer_decode) */
enum { DC_METASPACE, DC_BYTE_FALLBACK, DC_FUSE, DC_STRIP, DC_REPLACE };

struct dec_step {
    int kind;
    char rep[8]; /* Metaspace: the replacement character */
    size_t rlen;
    int prepend;         /* Metaspace: PREPEND_* */
    char *pat, *content; /* Replace: string pattern, content; Strip: content */
    size_t plen, clen;
    int start, stop; /* Strip */
};

#define UNI_MAX_DEC 8

struct tok_uni {
    double *score; /* (n_vocab) the pieces' scores */
    int n_vocab;
    double min_score;
    int32_t unk_id; /* -1 when the model has none */
    int byte_fallback;
    int32_t byte_id[256]; /* the id of "<0xNN>", or -1 */

    struct uni_node *nodes; /* (n_nodes) nodes[0] is the root */
    uint32_t n_nodes;
    uint32_t root[256]; /* the root's child for each byte, 0 when none */

    struct norm_step *norm; /* (n_norm) */
    int n_norm;
    struct pre_step pre[UNI_MAX_PRE];
    int n_pre;

    struct dec_step dec[UNI_MAX_DEC];
    int n_dec;

    uint64_t norm_hash; /* of the normalizer and pre-tokenizer JSON, for the fingerprint */
    int chunkable;      /* long stretches may be encoded in chunks (uni_segment) */
};

static int chunkable(const struct tok_uni *u);

/* Offsets (embd_tokenizer_encode_offsets) follow tokenizers' alignments:
 * each byte of a text in the pipeline carries the span of the caller's text
 * it stands for (every byte of a character the same span, as a
 * NormalizedString keeps them), and each normalizer tells, character by
 * character of its output, what tokenizers' NormalizedString::transform is
 * told (struct chg); chg_apply turns that into the output's spans. A token's
 * offsets are the first byte's start and the last byte's end. */
struct span {
    size_t s, e;
};

struct spanbuf {
    struct span *p;
    size_t len, cap;
};

/* One character of a normalizer's output, `len` bytes, with tokenizers'
 * change: 0 replaces the next input character (and takes its span), 1 is
 * inserted (and takes the span of the input byte before it), -k replaces
 * the next input character and removes the k after it. len 0: removes
 * -change input characters, with no output (transform_range's initial
 * offset, a Replace's match). */
struct chg {
    uint32_t len;
    int32_t change;
};

struct chgbuf {
    struct chg *p;
    size_t len, cap;
};

/* Offsets through the normalizers: the spans of the text given (in) and
 * of each pass's output, back and forth; `zero` is what an inserted
 * character at the very start takes (the span 0..0 of the stretch between
 * added tokens). */
struct ntrack {
    struct chgbuf chg;
    struct spanbuf sp[2];
    const struct span *in;
    struct span zero;
    const struct span *out; /* run_normalizers: the result's spans */
};

/* ------------------------------------------------------------------ */
/* Small helpers (UTF-8 in tokenizer_internal.h) */

static size_t utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* A growable byte buffer. */
struct ubuf {
    char *p;
    size_t len, cap;
};

static int ubuf_reserve(struct ubuf *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *p = embd_realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Appends (room must have been reserved). */
static inline void ubuf_put(struct ubuf *b, const char *s, size_t n) {
    if (!n) return; /* b->p may still be NULL */
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static char *dup_bytes(const char *s, size_t n) {
    char *d = embd_malloc(n + 1);
    if (d) {
        if (n) memcpy(d, s, n); /* s may be NULL for an empty text */
        d[n] = 0;
    }
    return d;
}

/* ---- offsets: spans and changes ---- */

static int spanbuf_reserve(struct spanbuf *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    struct span *p = embd_realloc(b->p, cap * sizeof *p);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Records one output character (nothing when c is NULL: no offsets). */
static int chg_put(struct chgbuf *c, size_t len, int32_t change) {
    if (!c) return 0;
    if (c->len == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct chg *p = embd_realloc(c->p, cap * sizeof *p);
        if (!p) return -1;
        c->p = p;
        c->cap = cap;
    }
    c->p[c->len++] = (struct chg){(uint32_t)len, change};
    return 0;
}

static size_t count_chars(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i += utf8_len((unsigned char)s[i]))
        k++;
    return k;
}

/* Each character of s[0..n) as output: the first with change `first`, the
 * others with `rest`. */
static int chg_chars(struct chgbuf *c, const char *s, size_t n, int32_t first, int32_t rest) {
    if (!c) return 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len((unsigned char)s[i]);
        if (chg_put(c, l, i ? rest : first) != 0) return -1;
        i += l;
    }
    return 0;
}

/* Precompiled's replacement of old (ob bytes) by new (nb bytes), as
 * tokenizers records it: the new characters replace the old ones one for
 * one; extra new ones are inserted (the last of them); missing ones are
 * removed by the last character recorded so far, an earlier one's when the
 * replacement is empty, none at the very start. */
static int chg_replace(struct chgbuf *c, const char *old, size_t ob, const char *nw, size_t nb) {
    if (!c) return 0;
    const size_t oc = count_chars(old, ob), nc = count_chars(nw, nb);
    if (chg_chars(c, nw, nb, 0, 0) != 0) return -1;
    if (nc > oc)
        for (size_t k = 0; k < nc - oc; k++)
            c->p[c->len - 1 - k].change = 1;
    else if (nc < oc && c->len)
        c->p[c->len - 1].change -= (int32_t)(oc - nc);
    return 0;
}

/* The spans of a normalizer's output from those of its input (in, n bytes,
 * spans al) and its changes, as NormalizedString::transform aligns them; an
 * inserted character at the very start takes `zero`. Appends to o. */
static int chg_apply(const char *in, size_t n, const struct span *al, const struct chgbuf *c,
                     struct span zero, struct spanbuf *o) {
    size_t off = 0;
    for (size_t k = 0; k < c->len; k++) {
        const struct chg r = c->p[k];
        int32_t remove = r.len ? (r.change < 0 ? -r.change : 0) : -r.change;
        if (r.len) {
            struct span a = zero;
            if (r.change > 0) {
                if (off) a = al[off - 1];
            } else if (off < n) {
                a = al[off];
                off += utf8_len((unsigned char)in[off]);
            } else if (n) {
                a = al[n - 1];
            }
            if (spanbuf_reserve(o, r.len) != 0) return -1;
            for (uint32_t j = 0; j < r.len; j++)
                o->p[o->len++] = a;
        }
        for (; remove > 0 && off < n; remove--)
            off += utf8_len((unsigned char)in[off]);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The precompiled charsmap */

static inline int da_has_leaf(uint32_t u) {
    return (u >> 8) & 1;
}
static inline uint32_t da_value(uint32_t u) {
    return u & 0x7FFFFFFFu;
}
static inline uint32_t da_label(uint32_t u) {
    return u & 0x800000FFu;
}
static inline size_t da_offset(uint32_t u) {
    return ((size_t)(u >> 10)) << ((u & (1u << 9)) >> 6);
}

/* Standard base64 with padding, as the base64 crate's STANDARD engine reads
 * it. Returns the byte count or -1. */
static long base64_decode(const char *s, size_t n, unsigned char *out) {
    if (n % 4) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            char c = s[i + j];
            v[j] = c >= 'A' && c <= 'Z'   ? c - 'A'
                   : c >= 'a' && c <= 'z' ? c - 'a' + 26
                   : c >= '0' && c <= '9' ? c - '0' + 52
                   : c == '+'             ? 62
                   : c == '/'             ? 63
                   : c == '='             ? -2
                                          : -1;
            if (v[j] == -1) return -1;
            if (v[j] == -2) {
                if (i + 4 != n || j < 2) return -1;
                pad++;
                v[j] = 0;
            } else if (pad) {
                return -1; /* data after padding */
            }
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[k++] = (unsigned char)(w >> 16);
        if (pad < 2) out[k++] = (unsigned char)(w >> 8);
        if (pad < 1) out[k++] = (unsigned char)w;
        /* canonical: the bits under the padding are zero */
        if ((pad == 1 && (w & 0xFF)) || (pad == 2 && (w & 0xFFFF))) return -1;
    }
    return (long)k;
}

/* The first (shortest) key of the trie that is a prefix of k[0..len), as
 * spm_precompiled's transform: the index of its replacement, or -1. The
 * search stops at a NUL byte. Bounds are checked (and were validated when
 * the charsmap was read). */
static long cm_first(const struct charsmap *cm, const unsigned char *k, size_t len) {
    const uint32_t *a = cm->array;
    size_t pos = da_offset(a[0]);
    for (size_t i = 0; i < len; i++) {
        unsigned c = k[i];
        if (!c) break;
        pos ^= c;
        if (pos >= cm->n) return -1;
        uint32_t u = a[pos];
        if (da_label(u) != c) return -1;
        pos ^= da_offset(u);
        if (da_has_leaf(u)) return pos < cm->n ? (long)da_value(a[pos]) : -1;
    }
    return -1;
}

/* The replacement string at index v: up to the next NUL. */
static const char *cm_string(const struct charsmap *cm, size_t v, size_t *len) {
    const char *s = cm->norm + v;
    const char *z = v < cm->norm_len ? memchr(s, 0, cm->norm_len - v) : NULL;
    *len = z ? (size_t)(z - s) : cm->norm_len - v;
    return s;
}

/* Reads and checks a charsmap: [u32 trie bytes][trie][replacement strings].
 * Every node reachable from the root is visited: each read a search can
 * make must lie in the array, and each leaf must point at the start of a
 * UTF-8 character of the strings (valid UTF-8 as a whole), so that no input
 * can make a search leave the data. */
static enum embd_status charsmap_load(struct charsmap *cm, const char *b64) {
    size_t n64 = strlen(b64);
    unsigned char *raw = embd_malloc(n64 / 4 * 3 + 3);
    uint8_t *seen = NULL;
    size_t *stack = NULL;
    enum embd_status st = EMBD_OK;
    if (!raw) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    long nraw = base64_decode(b64, n64, raw);
    if (nraw < 0) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT,
                        "tokenizer.json: Precompiled precompiled_charsmap is not base64");
        goto done;
    }
    if (nraw < 4) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT,
                        "tokenizer.json: Precompiled precompiled_charsmap is too short");
        goto done;
    }
    uint32_t tbytes =
        (uint32_t)raw[0] | (uint32_t)raw[1] << 8 | (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 24;
    if (tbytes % 4 || tbytes < 4 || (size_t)tbytes > (size_t)nraw - 4) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT,
                        "tokenizer.json: Precompiled precompiled_charsmap has a bad trie size "
                        "(%u bytes in %ld)",
                        tbytes, nraw);
        goto done;
    }
    cm->n = tbytes / 4;
    cm->array = embd_malloc2(cm->n, sizeof *cm->array);
    cm->norm_len = (size_t)nraw - 4 - tbytes;
    cm->norm = embd_malloc(cm->norm_len + 1);
    seen = embd_calloc(cm->n, 1);
    stack = embd_malloc2(cm->n, sizeof *stack);
    if (!cm->array || !cm->norm || !seen || !stack) {
        st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        goto done;
    }
    for (size_t i = 0; i < cm->n; i++) {
        const unsigned char *q = raw + 4 + 4 * i;
        cm->array[i] =
            (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
    }
    memcpy(cm->norm, raw + 4 + tbytes, cm->norm_len);
    cm->norm[cm->norm_len] = 0;
    if (!embd_utf8_valid(cm->norm, cm->norm_len)) {
        st = embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: Precompiled precompiled_charsmap "
                                               "replacement strings are not valid UTF-8");
        goto done;
    }
    size_t root = da_offset(cm->array[0]), sp = 0;
    if (root >= cm->n) goto bad;
    stack[sp++] = root;
    seen[root] = 1;
    while (sp) {
        size_t p = stack[--sp];
        for (unsigned c = 1; c < 256; c++) {
            size_t q = p ^ c;
            if (q >= cm->n) goto bad;
            uint32_t u = cm->array[q];
            if (da_label(u) != c) continue;
            size_t ch = q ^ da_offset(u);
            if (ch >= cm->n) goto bad;
            if (p == root && c < 128) cm->ascii_child[c] = 1;
            if (da_has_leaf(u)) {
                size_t v = da_value(cm->array[ch]);
                if (v > cm->norm_len ||
                    (v < cm->norm_len && ((unsigned char)cm->norm[v] & 0xC0) == 0x80))
                    goto bad;
            }
            if (!seen[ch]) {
                seen[ch] = 1;
                stack[sp++] = ch;
            }
        }
    }
    goto done;
bad:
    st = embd_error(EMBD_ERR_MODEL_FORMAT,
                    "tokenizer.json: Precompiled precompiled_charsmap: malformed trie");
done:
    embd_free(raw);
    embd_free(seen);
    embd_free(stack);
    return st;
}

/* ------------------------------------------------------------------ */
/* Loading: the normalizers */

static enum embd_status norm_add(struct tok_uni *u, const cJSON *n);

static enum embd_status norm_step_new(struct tok_uni *u, struct norm_step **out) {
    struct norm_step *s = embd_realloc(u->norm, (size_t)(u->n_norm + 1) * sizeof *s);
    if (!s) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    u->norm = s;
    *out = &s[u->n_norm++];
    memset(*out, 0, sizeof **out);
    return EMBD_OK;
}

/* A regex pattern of Replace: only one character (literal or escaped)
 * followed by +, {n,} or {n} with n >= 1 ... is understood ({n} alone is
 * not: it matches runs in pieces). Returns 0 and fills the step, or -1. */
static int parse_run_regex(const char *re, struct norm_step *s) {
    const unsigned char *p = (const unsigned char *)re;
    uint32_t cp;
    size_t l;
    if (!*p) return -1;
    if (*p == '\\') {
        p++;
        if (!*p || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
            return -1; /* \s, \d, \1 ...: a class or reference, not a literal */
        cp = tok_utf8_get(p, &l);
    } else {
        if (strchr(".[](){}|^$*+?", *p)) return -1;
        if (!embd_utf8_valid((const char *)p, strlen((const char *)p))) return -1;
        cp = tok_utf8_get(p, &l);
    }
    p += l;
    if (p[0] == '+' && !p[1]) {
        s->run_min = 1;
    } else if (p[0] == '{') {
        char *end;
        unsigned long v = strtoul((const char *)p + 1, &end, 10);
        if (end == (const char *)p + 1 || strcmp(end, ",}") != 0 || v < 1 || v > 1000000) return -1;
        s->run_min = v;
    } else {
        return -1;
    }
    s->run_cp = cp;
    return 0;
}

static enum embd_status norm_add(struct tok_uni *u, const cJSON *n) {
    enum embd_status st;
    const char *type = tok_json_type(n);
    if (!type) return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: normalizer has no type");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: normalizer Sequence without a normalizers array");
        for (const cJSON *e = list->child; e; e = e->next)
            if ((st = norm_add(u, e))) return st;
        return EMBD_OK;
    }
    static const struct {
        const char *name;
        int kind;
    } simple[] = {{"NFC", NS_NFC},
                  {"NFD", NS_NFD},
                  {"NFKC", NS_NFKC},
                  {"NFKD", NS_NFKD},
                  {"Lowercase", NS_LOWERCASE}};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        if (strcmp(type, simple[i].name) != 0) continue;
        struct norm_step *s = NULL;
        if ((st = norm_step_new(u, &s))) return st;
        s->kind = simple[i].kind;
        return EMBD_OK;
    }
    struct norm_step *s = NULL;
    if (strcmp(type, "Precompiled") == 0) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(n, "precompiled_charsmap");
        if (!cJSON_IsString(m))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: Precompiled without a precompiled_charsmap string");
        if ((st = norm_step_new(u, &s))) return st;
        s->kind = NS_PRECOMPILED;
        return charsmap_load(&s->cm, m->valuestring);
    }
    if (strcmp(type, "Strip") == 0) {
        int l = tok_json_bool(n, "strip_left", 0), r = tok_json_bool(n, "strip_right", 0);
        if (l < 0 || r < 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: Strip normalizer option is not a boolean");
        if ((st = norm_step_new(u, &s))) return st;
        s->kind = NS_STRIP;
        s->left = l;
        s->right = r;
        return EMBD_OK;
    }
    if (strcmp(type, "Prepend") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "prepend");
        if (!cJSON_IsString(p))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: Prepend normalizer without a prepend string");
        if ((st = norm_step_new(u, &s))) return st;
        s->kind = NS_PREPEND;
        s->clen = strlen(p->valuestring);
        if (!(s->content = dup_bytes(p->valuestring, s->clen)))
            return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        return EMBD_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(n, "content");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        if (!cJSON_IsString(c) || !(cJSON_IsString(ps) || cJSON_IsString(pr)))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: Replace normalizer needs a String or Regex pattern "
                              "and a content string");
        if ((st = norm_step_new(u, &s))) return st;
        s->clen = strlen(c->valuestring);
        if (!(s->content = dup_bytes(c->valuestring, s->clen)))
            return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        if (ps) {
            s->kind = NS_REPLACE;
            s->plen = strlen(ps->valuestring);
            if (!s->plen)
                return embd_error(EMBD_ERR_UNSUPPORTED,
                                  "tokenizer.json: Replace normalizer with an empty pattern");
            if (!(s->pat = dup_bytes(ps->valuestring, s->plen)))
                return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
            return EMBD_OK;
        }
        s->kind = NS_REPLACE_RUN;
        if (strchr(s->content, '$') || parse_run_regex(pr->valuestring, s) != 0)
            return embd_error(EMBD_ERR_UNSUPPORTED,
                              "tokenizer.json: Replace normalizer with regex '%.60s' is not "
                              "supported (only a character repeated: ' {2,}', 'x+')",
                              pr->valuestring);
        return EMBD_OK;
    }
    return embd_error(EMBD_ERR_UNSUPPORTED,
                      "tokenizer.json: unsupported normalizer type '%s' for a Unigram model", type);
}

/* ------------------------------------------------------------------ */
/* Loading: the pre-tokenizers */

/* prepend_scheme (or the older add_prefix_space) of a Metaspace. */
static int read_prepend(const cJSON *p, int *out) {
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
    if (ps && !cJSON_IsNull(ps)) {
        if (!cJSON_IsString(ps)) return -1;
        if (strcmp(ps->valuestring, "always") == 0)
            *out = PREPEND_ALWAYS;
        else if (strcmp(ps->valuestring, "first") == 0)
            *out = PREPEND_FIRST;
        else if (strcmp(ps->valuestring, "never") == 0)
            *out = PREPEND_NEVER;
        else
            return -1;
        return 0;
    }
    int a = tok_json_bool(p, "add_prefix_space", 1);
    if (a < 0) return -1;
    *out = a ? PREPEND_ALWAYS : PREPEND_NEVER;
    return 0;
}

/* The replacement character of a Metaspace (one character). */
static int read_replacement(const cJSON *p, char rep[8], size_t *rlen) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "replacement");
    if (!r) {
        memcpy(rep, "\xe2\x96\x81", 3);
        *rlen = 3;
        return 0;
    }
    if (!cJSON_IsString(r) || !r->valuestring[0]) return -1;
    size_t l = strlen(r->valuestring);
    if (l != utf8_len((unsigned char)r->valuestring[0]) || l > 4) return -1;
    memcpy(rep, r->valuestring, l);
    *rlen = l;
    return 0;
}

static enum embd_status pre_add(struct tok_uni *u, const cJSON *p) {
    enum embd_status st;
    const char *type = tok_json_type(p);
    if (!type)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: pre_tokenizer has no type");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            return embd_error(
                EMBD_ERR_MODEL_FORMAT,
                "tokenizer.json: pre_tokenizer Sequence without a pretokenizers array");
        for (const cJSON *e = list->child; e; e = e->next)
            if ((st = pre_add(u, e))) return st;
        return EMBD_OK;
    }
    if (u->n_pre >= UNI_MAX_PRE)
        return embd_error(EMBD_ERR_UNSUPPORTED, "tokenizer.json: more than %d pre-tokenizers",
                          UNI_MAX_PRE);
    struct pre_step *s = &u->pre[u->n_pre];
    memset(s, 0, sizeof *s);
    if (strcmp(type, "WhitespaceSplit") == 0) {
        s->kind = PT_WHITESPACE_SPLIT;
        u->n_pre++;
        return EMBD_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        s->kind = PT_METASPACE;
        s->split = tok_json_bool(p, "split", 1);
        if (read_replacement(p, s->rep, &s->rlen) != 0 || read_prepend(p, &s->prepend) != 0 ||
            s->split < 0)
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: Metaspace pre-tokenizer with a bad replacement, "
                              "prepend_scheme, add_prefix_space or split");
        /* "first" looks at where the piece starts in the original text;
         * after another pre-tokenizer that needs the alignments */
        if (s->prepend == PREPEND_FIRST && u->n_pre > 0)
            return embd_error(EMBD_ERR_UNSUPPORTED,
                              "tokenizer.json: Metaspace with prepend_scheme 'first' after "
                              "another pre-tokenizer");
        u->n_pre++;
        return EMBD_OK;
    }
    return embd_error(EMBD_ERR_UNSUPPORTED,
                      "tokenizer.json: unsupported pre_tokenizer type '%s' for a Unigram model",
                      type);
}

/* ------------------------------------------------------------------ */
/* Loading: the scores as tokenizers reads them */

/* serde_json's f64 from its significand and decimal exponent, as it parses
 * numbers without its float_roundtrip feature (tokenizers' build): the u64
 * to f64, then one multiplication or division by a power of ten. This is
 * not always the closest double (an ulp off for about a quarter of the
 * scores of a real vocabulary), and the Viterbi ties follow it. */
static double serde_f64_from_parts(const double pow10[309], int positive, uint64_t significand,
                                   int32_t exponent) {
    double f = (double)significand;
    for (;;) {
        uint32_t a = exponent < 0 ? (uint32_t)(-(int64_t)exponent) : (uint32_t)exponent;
        if (a < 309) {
            if (exponent >= 0)
                f *= pow10[a];
            else
                f /= pow10[a];
            break;
        }
        if (f == 0.0) break;
        if (exponent >= 0) return positive ? INFINITY : -INFINITY;
        f /= 1e308;
        exponent += 308;
    }
    return positive ? f : -f;
}

#define SERDE_OVERFLOW(a, b)                                                                       \
    ((a) >= UINT64_MAX / 10 && ((a) > UINT64_MAX / 10 || (b) > UINT64_MAX % 10))

/* A JSON number's text as serde_json reads it into an f64 (the text was
 * checked by cJSON). Returns the end of the number. */
static const char *serde_number(const double pow10[309], const char *p, double *out) {
    int positive = 1;
    if (*p == '-') {
        positive = 0;
        p++;
    }
    uint64_t sig = 0;
    int32_t exp = 0;
    int is_float = 0;
    if (*p == '0') {
        p++;
    } else {
        while (*p >= '0' && *p <= '9') {
            uint64_t d = (uint64_t)(*p - '0');
            if (SERDE_OVERFLOW(sig, d)) { /* more digits only scale it */
                is_float = 1;
                while (*p >= '0' && *p <= '9') {
                    exp++;
                    p++;
                }
                break;
            }
            sig = sig * 10 + d;
            p++;
        }
    }
    if (*p == '.') {
        is_float = 1;
        p++;
        while (*p >= '0' && *p <= '9') {
            uint64_t d = (uint64_t)(*p - '0');
            if (SERDE_OVERFLOW(sig, d)) { /* the rest is dropped */
                while (*p >= '0' && *p <= '9')
                    p++;
                break;
            }
            sig = sig * 10 + d;
            exp--;
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        is_float = 1;
        p++;
        int pe = 1;
        if (*p == '+' || *p == '-') pe = *p++ == '+';
        int64_t e = 0;
        int over = 0;
        while (*p >= '0' && *p <= '9') {
            if (!over) e = e * 10 + (*p - '0');
            if (e > INT32_MAX) over = 1;
            p++;
        }
        if (over) {
            *out = sig && pe ? (positive ? INFINITY : -INFINITY) : (positive ? 0.0 : -0.0);
            return p;
        }
        int64_t fe = pe ? (int64_t)exp + e : (int64_t)exp - e;
        exp = fe > INT32_MAX ? INT32_MAX : fe < INT32_MIN ? INT32_MIN : (int32_t)fe;
    }
    if (!is_float) { /* an integer: u64 or i64, then as f64 */
        if (positive || sig == 0)
            *out = (double)sig;
        else
            *out =
                sig <= (uint64_t)INT64_MAX + 1 ? (double)(-(int64_t)(sig - 1) - 1) : -(double)sig;
        return p;
    }
    *out = serde_f64_from_parts(pow10, positive, sig, exp);
    return p;
}

/* A minimal walk over JSON text that cJSON has already checked. */
static const char *jw_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *jw_string_end(const char *p) { /* p at the opening quote */
    for (p++; *p && *p != '"'; p++)
        if (*p == '\\' && p[1]) p++;
    return *p ? p + 1 : p;
}

static const char *jw_skip(const char *p) { /* any value */
    p = jw_ws(p);
    if (*p == '"') return jw_string_end(p);
    if (*p != '{' && *p != '[') {
        while (*p && !strchr(",]} \t\n\r", *p))
            p++;
        return p;
    }
    size_t depth = 0;
    for (; *p; p++) {
        if (*p == '"') {
            p = jw_string_end(p) - 1;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (--depth == 0) return p + 1;
        }
    }
    return p;
}

/* Whether the JSON string at p (a key) is `want` (plain keys only: one with
 * an escape never matches, nor do cJSON's lookups see it differently for
 * the keys looked up here). */
static int jw_key_is(const char *p, const char *want) {
    size_t l = strlen(want);
    return p[0] == '"' && strncmp(p + 1, want, l) == 0 && p[1 + l] == '"';
}

/* The value of member `key` of the object at p, or NULL. */
static const char *jw_member(const char *p, const char *key) {
    p = jw_ws(p);
    if (*p != '{') return NULL;
    p = jw_ws(p + 1);
    while (*p == '"') {
        int hit = jw_key_is(p, key);
        p = jw_ws(jw_string_end(p));
        if (*p != ':') return NULL;
        p = jw_ws(p + 1);
        if (hit) return p;
        p = jw_ws(jw_skip(p));
        if (*p != ',') return NULL;
        p = jw_ws(p + 1);
    }
    return NULL;
}

/* The scores of model.vocab as tokenizers parses them. Returns 0, or -1
 * when the text does not have the expected shape (then cJSON's values are
 * kept). */
static int serde_scores(const char *json, double *score, size_t n) {
    double pow10[309]; /* serde_json's table: the correctly rounded powers */
    for (int i = 0; i < 309; i++) {
        char b[8];
        snprintf(b, sizeof b, "1e%d", i);
        pow10[i] = strtod(b, NULL);
    }
    const char *p = jw_member(json, "model");
    p = p ? jw_member(p, "vocab") : NULL;
    if (!p || *p != '[') return -1;
    p = jw_ws(p + 1);
    for (size_t i = 0; i < n; i++) {
        if (*p != '[') return -1;
        p = jw_ws(p + 1);
        if (*p != '"') return -1;
        p = jw_ws(jw_string_end(p));
        if (*p != ',') return -1;
        p = jw_ws(p + 1);
        if (*p != '-' && !(*p >= '0' && *p <= '9')) return -1;
        p = jw_ws(serde_number(pow10, p, &score[i]));
        if (*p != ']') return -1;
        p = jw_ws(p + 1);
        if (*p == ',') p = jw_ws(p + 1);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Loading: the model */

struct key_ref {
    uint32_t off, len;
};

/* Sorts the keys with a merge sort (qsort's comparator would need a global,
 * and the loader may run on several threads). */
static void sort_keys(const char *pool, struct key_ref *k, struct key_ref *tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    sort_keys(pool, k, tmp, h);
    sort_keys(pool, k + h, tmp, n - h);
    size_t i = 0, j = h, o = 0;
    while (i < h && j < n) {
        const struct key_ref *x = &k[i], *y = &k[j];
        size_t l = x->len < y->len ? x->len : y->len;
        int c = memcmp(pool + x->off, pool + y->off, l);
        if (!c) c = x->len < y->len ? -1 : x->len > y->len;
        tmp[o++] = c <= 0 ? k[i++] : k[j++];
    }
    while (i < h)
        tmp[o++] = k[i++];
    while (j < n)
        tmp[o++] = k[j++];
    memcpy(k, tmp, n * sizeof *k);
}

/* The trie of the pieces, from the keys sorted: nodes are made in
 * breadth-first order, each holding the range of keys under it. */
static enum embd_status build_trie(embd_tokenizer *tok, struct tok_uni *u, struct key_ref *k,
                                   size_t n) {
    struct key_ref *tmp = embd_malloc2(n ? n : 1, sizeof *tmp);
    if (!tmp) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    sort_keys(tok->pool, k, tmp, n);
    embd_free(tmp);
    /* node count: the distinct non-empty prefixes, plus the root */
    size_t count = 1;
    for (size_t i = 0; i < n; i++) {
        size_t lcp = 0;
        if (i) {
            const char *a = tok->pool + k[i - 1].off, *b = tok->pool + k[i].off;
            size_t m = k[i - 1].len < k[i].len ? k[i - 1].len : k[i].len;
            while (lcp < m && a[lcp] == b[lcp])
                lcp++;
        }
        count += k[i].len - lcp;
    }
    if (count >= UINT32_MAX / 2)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: vocabulary too large");
    u->nodes = embd_calloc(count, sizeof *u->nodes);
    uint32_t *lo = embd_malloc2(count, sizeof *lo), *hi = embd_malloc2(count, sizeof *hi);
    uint32_t *depth = embd_malloc2(count, sizeof *depth);
    if (!u->nodes || !lo || !hi || !depth) {
        embd_free(lo);
        embd_free(hi);
        embd_free(depth);
        return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    }
    u->nodes[0].id = -1;
    lo[0] = 0;
    hi[0] = (uint32_t)n;
    depth[0] = 0;
    uint32_t made = 1;
    for (uint32_t v = 0; v < made; v++) {
        uint32_t a = lo[v], b = hi[v], d = depth[v];
        /* keys that end here (sorted first) */
        while (a < b && k[a].len == d) {
            if (d) u->nodes[v].id = tok_table_find(tok, &tok->full, tok->pool + k[a].off, d);
            a++;
        }
        u->nodes[v].child = made;
        while (a < b) {
            unsigned char c = (unsigned char)tok->pool[k[a].off + d];
            uint32_t e = a + 1;
            while (e < b && (unsigned char)tok->pool[k[e].off + d] == c)
                e++;
            if (made >= count) { /* cannot happen: count is exact */
                embd_free(lo);
                embd_free(hi);
                embd_free(depth);
                return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer: trie build failed");
            }
            struct uni_node *ch = &u->nodes[made];
            ch->label = c;
            ch->id = -1;
            lo[made] = a;
            hi[made] = e;
            depth[made] = d + 1;
            made++;
            u->nodes[v].nchild++;
            a = e;
        }
    }
    u->n_nodes = made;
    for (uint32_t i = 0; i < u->nodes[0].nchild; i++) {
        const struct uni_node *ch = &u->nodes[u->nodes[0].child + i];
        u->root[ch->label] = u->nodes[0].child + i;
    }
    embd_free(lo);
    embd_free(hi);
    embd_free(depth);
    return EMBD_OK;
}

enum embd_status tok_uni_load(embd_tokenizer *tok, const char *json, size_t json_len,
                              const cJSON *root, const cJSON *added, int32_t **id_off_out,
                              int *max_id_out) {
    enum embd_status st;
    int32_t *id_off = NULL;
    struct key_ref *keys = NULL;
    struct tok_uni *u = embd_calloc(1, sizeof *u);
    if (!u) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    tok->uni = u;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    if (!cJSON_IsArray(vocab) || !vocab->child)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: Unigram vocab missing or empty");
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(m, "unk_id");
    u->byte_fallback = tok_json_bool(m, "byte_fallback", 0);
    if (u->byte_fallback < 0)
        return embd_error(EMBD_ERR_MODEL_FORMAT,
                          "tokenizer.json: Unigram byte_fallback is not a boolean");
    /* sizes: pieces, pool bytes (with the added tokens) */
    size_t n = 0, bytes = 1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        const cJSON *piece = cJSON_GetArrayItem(e, 0), *score = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || !cJSON_IsString(piece) ||
            !cJSON_IsNumber(score) || !isfinite(score->valuedouble))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: Unigram vocab entry %zu is not [piece, score]", n);
        bytes += strlen(piece->valuestring) + 1;
        n++;
    }
    if (n >= (1u << 24))
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: Unigram vocab too large");
    int max_id = (int)n - 1;
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        const cJSON *idv = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (!cJSON_IsString(c) || !c->valuestring[0] || !cJSON_IsNumber(idv) ||
            !(idv->valuedouble >= 0 && idv->valuedouble < (1 << 24)) ||
            idv->valuedouble != floor(idv->valuedouble))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: added token without a content string or a valid id");
        if ((int)idv->valuedouble > max_id) max_id = (int)idv->valuedouble;
        bytes += strlen(c->valuestring) + 1;
    }
    if (bytes >= UINT32_MAX)
        return embd_error(EMBD_ERR_MODEL_FORMAT, "tokenizer.json: vocabulary too large");
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsNumber(unk) || !(unk->valuedouble >= 0 && unk->valuedouble < (double)n) ||
            unk->valuedouble != floor(unk->valuedouble))
            return embd_error(EMBD_ERR_MODEL_FORMAT,
                              "tokenizer.json: Unigram unk_id is not a vocab index");
        u->unk_id = (int32_t)unk->valuedouble;
    } else {
        u->unk_id = -1;
    }
    tok->pool = embd_malloc(bytes);
    id_off = embd_malloc2((size_t)max_id + 1, sizeof *id_off);
    u->score = embd_malloc2(n, sizeof *u->score);
    keys = embd_malloc2(n, sizeof *keys);
    if (!tok->pool || !id_off || !u->score || !keys) {
        st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    for (int i = 0; i <= max_id; i++)
        id_off[i] = -1;
    tok->prefix = tok->pool + tok->pool_len; /* "" (no WordPiece prefix) */
    tok->pool[tok->pool_len++] = 0;
    if ((st = tok_table_init(&tok->full, n)) != EMBD_OK) goto fail;
    if ((st = tok_table_init(&tok->cont, 1)) != EMBD_OK) goto fail;
    u->n_vocab = (int)n;
    u->min_score = INFINITY;
    size_t i = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, i++) {
        const char *piece = e->child->valuestring;
        double sc = e->child->next->valuedouble;
        size_t len = strlen(piece);
        uint32_t off = (uint32_t)tok->pool_len;
        memcpy(tok->pool + off, piece, len + 1);
        tok->pool_len += len + 1;
        id_off[i] = (int32_t)off;
        u->score[i] = sc;
        if (sc < u->min_score) u->min_score = sc;
        /* a piece that repeats: the last one is its id, as tokenizers' map */
        tok_table_insert(tok, &tok->full, off, (uint32_t)len, (int32_t)i, 1);
        keys[i] = (struct key_ref){off, (uint32_t)len};
    }
    /* the scores as tokenizers has them (cJSON's strtod rounds correctly,
     * serde_json does not always) */
    char *text = embd_malloc(json_len + 1); /* NUL-terminated for the walk */
    if (!text) {
        st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    memcpy(text, json, json_len);
    text[json_len] = 0;
    int walked = serde_scores(text, u->score, n);
    embd_free(text);
    if (walked == 0) {
        u->min_score = INFINITY;
        for (i = 0; i < n; i++) {
            if (!isfinite(u->score[i])) {
                st = embd_error(EMBD_ERR_MODEL_FORMAT,
                                "tokenizer.json: Unigram score %zu is out of range", i);
                goto fail;
            }
            if (u->score[i] < u->min_score) u->min_score = u->score[i];
        }
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        u->byte_id[b] = tok_table_find(tok, &tok->full, name, 6);
    }
    if ((st = build_trie(tok, u, keys, n)) != EMBD_OK) goto fail;
    embd_free(keys);
    keys = NULL;
    tok->unk_id = u->unk_id;
    tok->max_chars = 0;

    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (norm && !cJSON_IsNull(norm) && (st = norm_add(u, norm)) != EMBD_OK) goto fail;
    if (pre && !cJSON_IsNull(pre) && (st = pre_add(u, pre)) != EMBD_OK) goto fail;
    u->chunkable = chunkable(u);
    /* the fingerprint covers the normalizer and pre-tokenizer as written */
    char *js = cJSON_PrintUnformatted(norm ? norm : root);
    char *jp = cJSON_PrintUnformatted(pre ? pre : root);
    if (!js || !jp) {
        cJSON_free(js);
        cJSON_free(jp);
        st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    u->norm_hash = embd_hash64(embd_hash64(7, js, strlen(js)), jp, strlen(jp));
    cJSON_free(js);
    cJSON_free(jp);
    *id_off_out = id_off;
    *max_id_out = max_id;
    return EMBD_OK;
fail:
    embd_free(keys);
    embd_free(id_off);
    return st;
}

int32_t tok_uni_unk_id(const struct tok_uni *u) {
    return u ? u->unk_id : -1;
}

int tok_uni_lowercases(const struct tok_uni *u) {
    for (int i = 0; u && i < u->n_norm; i++)
        if (u->norm[i].kind == NS_LOWERCASE) return 1;
    return 0;
}

void tok_uni_free(struct tok_uni *u) {
    if (!u) return;
    for (int i = 0; i < u->n_norm; i++) {
        embd_free(u->norm[i].pat);
        embd_free(u->norm[i].content);
        embd_free(u->norm[i].cm.array);
        embd_free(u->norm[i].cm.norm);
    }
    for (int i = 0; i < u->n_dec; i++) {
        embd_free(u->dec[i].pat);
        embd_free(u->dec[i].content);
    }
    embd_free(u->norm);
    embd_free(u->nodes);
    embd_free(u->score);
    embd_free(u);
}

uint64_t tok_uni_fingerprint(const embd_tokenizer *tok, uint64_t h) {
    const struct tok_uni *u = tok->uni;
    int32_t opts[] = {u->n_vocab, u->unk_id, u->byte_fallback};
    h = embd_hash64(h, opts, sizeof opts);
    h = embd_hash64(h, u->score, (size_t)u->n_vocab * sizeof *u->score);
    return embd_hash64(h, &u->norm_hash, sizeof u->norm_hash);
}

/* ------------------------------------------------------------------ */
/* Encoding */

struct uenc {
    const embd_tokenizer *tok;
    const struct tok_uni *u;
    int32_t *ids;
    size_t cap, off, n, limit;
    int done, truncated;
    enum embd_status st;
    struct ubuf nb[2];           /* the normalizers, back and forth */
    struct ubuf pb[UNI_MAX_PRE]; /* each pre-tokenizer's rewritten text */
    double *score;               /* (vcap) Viterbi: best score ending at each byte */
    int32_t *from, *vid;         /* (vcap) where that best piece starts, its id */
    size_t vcap;
    uint32_t *path; /* (vcap) the best path's ends, backwards */

    /* offsets (tok_uni_encode with o): where they go; the caller's
     * position of each byte position of the text (NULL: the same); the
     * text, which the positions count from */
    int track;
    size_t *starts, *stops;
    const size_t *pos;
    const char *text0;
    struct ntrack nt;
    struct spanbuf sp0;              /* a chunk's own spans */
    struct spanbuf psp[UNI_MAX_PRE]; /* each Metaspace's output's spans */
    const struct span *piece_sp;     /* the spans of the piece the model runs on */
};

static void uemit(struct uenc *e, int32_t id) {
    size_t at = e->off + e->n;
    if (e->n < e->limit && at < e->cap) e->ids[at] = id;
    e->n++;
}

/* uemit with the offsets: the token is the caller's [start, stop), its
 * value (for RobertaProcessing's trim_offsets) v[0..vl). */
static void uemit_off(struct uenc *e, int32_t id, size_t start, size_t stop, const char *v,
                      size_t vl) {
    size_t at = e->off + e->n;
    if (e->n < e->limit && at < e->cap) {
        tok_trim_offsets(e->tok, v, vl, e->n == 0, &start, &stop);
        if (e->starts) e->starts[at] = start;
        if (e->stops) e->stops[at] = stop;
    }
    uemit(e, id);
}

/* A piece the model found: s[a..b) of the text it ran on. */
static void upiece(struct uenc *e, int32_t id, const char *s, size_t a, size_t b) {
    if (!e->track) {
        uemit(e, id);
        return;
    }
    uemit_off(e, id, e->piece_sp[a].s, e->piece_sp[b - 1].e, s + a, b - a);
}

static void ucheck_limit(struct uenc *e) {
    if (e->n > e->limit) {
        e->n = e->limit;
        e->truncated = 1;
        e->done = 1;
    }
}

static void unomem(struct uenc *e) {
    e->st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    e->done = 1;
}

/* The pieces of one string of fused unknown characters (or a piece whose
 * id is the unk id), p[a..b): its id if it is a piece, else its bytes'
 * <0xNN> when the model falls back to bytes and has them all (each with the
 * whole string's offsets), else unk. */
static void emit_unk_run(struct uenc *e, const char *p, size_t a, size_t b) {
    const struct tok_uni *u = e->u;
    const char *s = p + a;
    const size_t len = b - a;
    int32_t id = tok_table_find(e->tok, &e->tok->full, s, len);
    if (id >= 0) {
        upiece(e, id, p, a, b);
        return;
    }
    if (u->byte_fallback) {
        size_t i = 0;
        while (i < len && u->byte_id[(unsigned char)s[i]] >= 0)
            i++;
        if (i == len) {
            for (i = 0; i < len; i++) {
                const int32_t bid = u->byte_id[(unsigned char)s[i]];
                if (e->track) /* "<0xNN>" has no whitespace to trim */
                    uemit_off(e, bid, e->piece_sp[a].s, e->piece_sp[b - 1].e, NULL, 0);
                else
                    uemit(e, bid);
            }
            return;
        }
    }
    upiece(e, u->unk_id, p, a, b);
}

static int viterbi_reserve(struct uenc *e, size_t n) {
    if (n + 1 <= e->vcap) return 0;
    size_t cap = e->vcap ? e->vcap : 256;
    while (cap < n + 1)
        cap *= 2;
    double *s = embd_realloc(e->score, cap * sizeof *s);
    if (s) e->score = s;
    int32_t *f = s ? embd_realloc(e->from, cap * sizeof *f) : NULL;
    if (f) e->from = f;
    int32_t *v = f ? embd_realloc(e->vid, cap * sizeof *v) : NULL;
    if (v) e->vid = v;
    uint32_t *p = v ? embd_realloc(e->path, cap * sizeof *p) : NULL;
    if (p) e->path = p;
    if (!p) return -1;
    e->vcap = cap;
    return 0;
}

/* The Unigram model on one piece, as tokenizers' encode_optimized: for each
 * character start in order, every piece of the trie starting there relaxes
 * the best path to its end (a later candidate wins only when strictly
 * better); a character that no one-character piece covers gets the unk
 * candidate (min score - 10). The best path is read back; consecutive unk
 * nodes are fused into one string. */
static void uni_piece(struct uenc *e, const char *s, size_t n) {
    const struct tok_uni *u = e->u;
    const unsigned char *b = (const unsigned char *)s;
    if (n > INT32_MAX - 1) {
        e->st = embd_error(EMBD_ERR_INVALID_ARG, "tokenizer: a word of %zu bytes is too long", n);
        e->done = 1;
        return;
    }
    if (viterbi_reserve(e, n) != 0) {
        unomem(e);
        return;
    }
    double *score = e->score;
    int32_t *from = e->from, *vid = e->vid;
    for (size_t i = 0; i <= n; i++) {
        score[i] = 0.0;
        from[i] = -1;
    }
    const double unk_score = u->min_score - 10.0;
    const struct uni_node *nodes = u->nodes;
    size_t pos = 0;
    while (pos < n) {
        const double base = score[pos];
        const size_t mblen = utf8_len(b[pos]);
        int single = 0;
        uint32_t v = u->root[b[pos]];
        size_t j = pos + 1;
        while (v) {
            const struct uni_node *nd = &nodes[v];
            if (nd->id >= 0) {
                const double cand = u->score[nd->id] + base;
                if (from[j] < 0 || cand > score[j]) {
                    score[j] = cand;
                    from[j] = (int32_t)pos;
                    vid[j] = nd->id;
                }
                if (j - pos == mblen) single = 1;
            }
            if (j >= n || !nd->nchild) break;
            /* the child labelled b[j] */
            const unsigned char c = b[j];
            uint32_t lo = nd->child, hi = nd->child + nd->nchild, next = 0;
            if (nd->nchild <= 8) {
                for (uint32_t k = lo; k < hi; k++)
                    if (nodes[k].label == c) {
                        next = k;
                        break;
                    }
            } else {
                while (lo < hi) {
                    uint32_t mid = (lo + hi) / 2;
                    if (nodes[mid].label < c)
                        lo = mid + 1;
                    else
                        hi = mid;
                }
                if (lo < nd->child + nd->nchild && nodes[lo].label == c) next = lo;
            }
            v = next;
            j++;
        }
        if (!single) {
            if (u->unk_id < 0) {
                e->st = embd_error(EMBD_ERR_INVALID_ARG,
                                   "tokenizer: the text has a character that no piece covers and "
                                   "the Unigram model has no unk_id");
                e->done = 1;
                return;
            }
            const size_t k = pos + mblen;
            const double cand = unk_score + base;
            if (from[k] < 0 || cand > score[k]) {
                score[k] = cand;
                from[k] = (int32_t)pos;
                vid[k] = u->unk_id;
            }
        }
        pos += mblen;
    }
    /* back from the end */
    size_t np = 0;
    for (size_t end = n; end > 0; end = (size_t)from[end])
        e->path[np++] = (uint32_t)end;
    size_t start = 0;
    while (np) {
        size_t end = e->path[--np];
        int32_t id = vid[end];
        if (id != u->unk_id || u->unk_id < 0) {
            upiece(e, id, s, start, end);
            start = end;
            continue;
        }
        while (np && vid[e->path[np - 1]] == u->unk_id) /* fuse the unk run */
            end = e->path[--np];
        emit_unk_run(e, s, start, end);
        start = end;
    }
}

/* The pre-tokenizers from `level` on, then the model, on one piece (with
 * offsets, sp its spans). `at_zero`: the piece starts the caller's text
 * (Metaspace "first"). */
static void pretok(struct uenc *e, int level, const char *s, size_t n, const struct span *sp,
                   int at_zero) {
    const struct tok_uni *u = e->u;
    if (e->done || !n) return;
    if (level == u->n_pre) {
        e->piece_sp = sp;
        uni_piece(e, s, n);
        ucheck_limit(e);
        return;
    }
    const struct pre_step *ps = &u->pre[level];
    const unsigned char *b = (const unsigned char *)s;
    if (ps->kind == PT_WHITESPACE_SPLIT) {
        size_t i = 0;
        while (i < n && !e->done) {
            size_t l;
            while (i < n && tok_is_whitespace(tok_utf8_get(b + i, &l)))
                i += l;
            size_t a = i;
            while (i < n && !tok_is_whitespace(tok_utf8_get(b + i, &l)))
                i += l;
            if (i > a) pretok(e, level + 1, s + a, i - a, sp ? sp + a : NULL, at_zero && a == 0);
        }
        return;
    }
    /* Metaspace: ' ' becomes the replacement, which is prepended when asked
     * and the piece does not start with it; then a new piece begins at each
     * replacement (MergedWithNext). Spans: a replacement takes the space's,
     * the prepended one the first character's. */
    struct ubuf *o = &e->pb[level];
    struct spanbuf *osp = sp ? &e->psp[level] : NULL;
    o->len = 0;
    if (osp) osp->len = 0;
    if (ubuf_reserve(o, n * ps->rlen + ps->rlen) != 0 ||
        (osp && spanbuf_reserve(osp, n * ps->rlen + ps->rlen) != 0)) {
        unomem(e);
        return;
    }
    const size_t rl = ps->rlen;
    const int starts = b[0] == ' ' || (n >= rl && memcmp(s, ps->rep, rl) == 0);
    if (!starts && (ps->prepend == PREPEND_ALWAYS || (ps->prepend == PREPEND_FIRST && at_zero))) {
        ubuf_put(o, ps->rep, rl);
        for (size_t j = 0; osp && j < rl; j++)
            osp->p[osp->len++] = sp[0];
    }
    for (size_t i = 0; i < n; i++) {
        if (b[i] == ' ') {
            ubuf_put(o, ps->rep, rl);
            for (size_t j = 0; osp && j < rl; j++)
                osp->p[osp->len++] = sp[i];
        } else {
            o->p[o->len++] = (char)b[i];
            if (osp) osp->p[osp->len++] = sp[i];
        }
    }
    const struct span *tsp = osp ? osp->p : NULL;
    if (!ps->split) {
        pretok(e, level + 1, o->p, o->len, tsp, at_zero);
        return;
    }
    const char *t = o->p;
    const size_t tl = o->len;
    size_t a = 0;
    for (size_t i = 1; i + rl <= tl && !e->done; i++) {
        if (t[i] == ps->rep[0] && memcmp(t + i, ps->rep, rl) == 0) {
            pretok(e, level + 1, t + a, i - a, tsp ? tsp + a : NULL, at_zero && a == 0);
            a = i;
            i += rl - 1;
        }
    }
    if (!e->done) pretok(e, level + 1, t + a, tl - a, tsp ? tsp + a : NULL, at_zero && a == 0);
}

/* ---- the normalizers, each one pass from `in` to `o` ---- */

/* The end of the extended grapheme cluster that starts at s[0] (utf8proc's
 * rules, which are Unicode's). */
static size_t grapheme_end(const unsigned char *s, size_t n) {
    size_t l;
    utf8proc_int32_t state = 0;
    uint32_t c1 = tok_utf8_get(s, &l);
    size_t j = l;
    while (j < n) {
        uint32_t c2 = tok_utf8_get(s + j, &l);
        if (utf8proc_grapheme_break_stateful((utf8proc_int32_t)c1, (utf8proc_int32_t)c2, &state))
            break;
        c1 = c2;
        j += l;
    }
    return j;
}

/* Precompiled, as tokenizers runs it: each grapheme under 6 bytes whose
 * first (shortest) trie prefix matches is replaced whole by that prefix's
 * string; otherwise each character is replaced by its own match, if any.
 * With c, the changes too (here and in each normalizer below). */
static int norm_precompiled(const struct charsmap *cm, const char *in, size_t n, struct ubuf *o,
                            struct chgbuf *c) {
    const unsigned char *b = (const unsigned char *)in;
    size_t i = 0;
    while (i < n) {
        /* an ASCII character that starts no key, before ASCII (or the end):
         * a grapheme alone (CR LF aside, which comes to the same), unchanged */
        if (b[i] < 0x80 && !cm->ascii_child[b[i]] && (i + 1 == n || b[i + 1] < 0x80)) {
            if (ubuf_reserve(o, 1) != 0 || chg_put(c, 1, 0) != 0) return -1;
            o->p[o->len++] = (char)b[i++];
            continue;
        }
        const size_t g = grapheme_end(b + i, n - i);
        if (g < 6) {
            long v = cm_first(cm, b + i, g);
            if (v >= 0) {
                size_t rl;
                const char *r = cm_string(cm, (size_t)v, &rl);
                if (ubuf_reserve(o, rl) != 0 || chg_replace(c, in + i, g, r, rl) != 0) return -1;
                ubuf_put(o, r, rl);
                i += g;
                continue;
            }
        }
        const size_t end = i + g;
        while (i < end) {
            size_t l = utf8_len(b[i]);
            long v = cm_first(cm, b + i, l);
            size_t rl = l;
            const char *r = in + i;
            if (v >= 0) r = cm_string(cm, (size_t)v, &rl);
            if (ubuf_reserve(o, rl) != 0 ||
                (v >= 0 ? chg_replace(c, in + i, l, r, rl) : chg_put(c, l, 0)) != 0)
                return -1;
            ubuf_put(o, r, rl);
            i += l;
        }
    }
    return 0;
}

/* NFC / NFD / NFKC / NFKD as tokenizers runs them (unicode-normalization-
 * alignments, with older tables than utf8proc's): each character decomposed
 * (utf8proc, canonically or for compatibility), its first code point
 * replacing it and the others inserted (the changes); canonical ordering
 * sorts each run of non-starters stably by combining class, their changes
 * with them; composition (NFC, NFKC) folds a code point into the last
 * starter when nothing blocks it, the composite's change the sum of both
 * less one. What tokenizers' tables do not decompose (tok_nf_keep) stays
 * as it is, closing the text normalized before it, and is not made by
 * composition either (U+11935 U+11930 stay two). ASCII not followed by
 * other text is itself. */
struct nf_ent {
    uint32_t cp;
    int32_t change;
    uint8_t ccc;
};

struct nf_buf {
    struct nf_ent *e;
    size_t n, cap;
};

/* The composite of a and b, or 0 when they do not compose (for tokenizers). */
static uint32_t nf_compose(uint32_t a, uint32_t b) {
    if (b < 0x300) return 0; /* no second of a canonical pair is below the combining marks */
    utf8proc_int32_t buf[2] = {(utf8proc_int32_t)a, (utf8proc_int32_t)b};
    if (utf8proc_normalize_utf32(buf, 2, UTF8PROC_STABLE | UTF8PROC_COMPOSE) != 1) return 0;
    const uint32_t r = (uint32_t)buf[0];
    return tok_nf_keep(r, 0) ? 0 : r;
}

/* Orders, composes and writes out what f holds; empties it. */
static int nf_flush(struct nf_buf *f, int compose, struct ubuf *o, struct chgbuf *c) {
    struct nf_ent *e = f->e;
    size_t m = f->n;
    f->n = 0;
    for (size_t i = 1; i < m; i++) { /* canonical ordering (stable) */
        const struct nf_ent x = e[i];
        if (!x.ccc) continue;
        size_t j = i;
        while (j > 0 && e[j - 1].ccc > x.ccc) {
            e[j] = e[j - 1];
            j--;
        }
        e[j] = x;
    }
    if (compose) { /* canonical composition onto the last starter */
        size_t w = 0, starter = SIZE_MAX;
        for (size_t i = 0; i < m; i++) {
            const struct nf_ent x = e[i];
            if (starter != SIZE_MAX) {
                const uint8_t last = e[w - 1].ccc;
                const uint32_t r = (w == starter + 1 || (last && last < x.ccc))
                                       ? nf_compose(e[starter].cp, x.cp)
                                       : 0;
                if (r) {
                    e[starter].cp = r;
                    e[starter].change += x.change - 1;
                    continue;
                }
            }
            if (!x.ccc) starter = w;
            e[w++] = x;
        }
        m = w;
    }
    if (ubuf_reserve(o, 4 * m) != 0) return -1;
    for (size_t i = 0; i < m; i++) {
        const size_t l = tok_utf8_put(o->p + o->len, e[i].cp);
        o->len += l;
        if (chg_put(c, l, e[i].change) != 0) return -1;
    }
    return 0;
}

static int norm_unicode(int kind, const char *in, size_t n, struct ubuf *o, struct chgbuf *c) {
    const int compat = kind == NS_NFKC || kind == NS_NFKD;
    const int compose = kind == NS_NFC || kind == NS_NFKC;
    const utf8proc_option_t opt =
        UTF8PROC_DECOMPOSE | UTF8PROC_STABLE | (compat ? UTF8PROC_COMPAT : 0);
    const unsigned char *b = (const unsigned char *)in;
    struct nf_buf f = {0};
    int r = 0;
    for (size_t i = 0; i < n && !r;) {
        if (b[i] < 0x80 && (i + 1 == n || b[i + 1] < 0x80)) {
            if (f.n && nf_flush(&f, compose, o, c) != 0)
                r = -1;
            else if (ubuf_reserve(o, 1) != 0 || chg_put(c, 1, 0) != 0)
                r = -1;
            else
                o->p[o->len++] = (char)b[i++];
            continue;
        }
        size_t l;
        const uint32_t cp = tok_utf8_get(b + i, &l);
        i += l;
        utf8proc_int32_t d[32];
        utf8proc_ssize_t k = 1;
        const int keep = tok_nf_keep(cp, compat);
        if (keep) {
            d[0] = (utf8proc_int32_t)cp;
            if (f.n && nf_flush(&f, compose, o, c) != 0) {
                r = -1;
                break;
            }
        } else {
            int bound = 0;
            k = utf8proc_decompose_char((utf8proc_int32_t)cp, d, 32, opt, &bound);
            if (k < 1 || k > 32) { /* cannot be: no decomposition is that long */
                d[0] = (utf8proc_int32_t)cp;
                k = 1;
            }
        }
        if (f.n + (size_t)k > f.cap) {
            size_t cap = f.cap ? f.cap * 2 : 64;
            while (cap < f.n + (size_t)k)
                cap *= 2;
            struct nf_ent *g = embd_realloc(f.e, cap * sizeof *g);
            if (!g) {
                r = -1;
                break;
            }
            f.e = g;
            f.cap = cap;
        }
        for (utf8proc_ssize_t j = 0; j < k; j++) {
            const uint32_t u = (uint32_t)d[j];
            f.e[f.n++] = (struct nf_ent){
                .cp = u,
                .change = j ? 1 : 0,
                .ccc = keep ? 0
                            : (uint8_t)utf8proc_get_property((utf8proc_int32_t)u)->combining_class};
        }
        if (keep && nf_flush(&f, 0, o, c) != 0) r = -1; /* alone: composes with nothing */
    }
    if (!r && f.n && nf_flush(&f, compose, o, c) != 0) r = -1;
    embd_free(f.e);
    return r;
}

/* Each character lowercased; a character that becomes several: the first
 * replaces it, the others are inserted. */
static int norm_lowercase(const char *in, size_t n, struct ubuf *o, struct chgbuf *c) {
    const unsigned char *b = (const unsigned char *)in;
    if (ubuf_reserve(o, n + n / 2 + 8) != 0) return -1;
    for (size_t i = 0; i < n;) {
        if (b[i] < 0x80) {
            o->p[o->len++] = (char)(b[i] >= 'A' && b[i] <= 'Z' ? b[i] + 32 : b[i]);
            i++;
            if (chg_put(c, 1, 0) != 0) return -1;
            continue;
        }
        size_t l;
        uint32_t lo[3];
        int k = tok_lower(tok_utf8_get(b + i, &l), lo);
        if (ubuf_reserve(o, 12) != 0) return -1;
        for (int j = 0; j < k; j++) {
            size_t w = tok_utf8_put(o->p + o->len, lo[j]);
            o->len += w;
            if (chg_put(c, w, j ? 1 : 0) != 0) return -1;
        }
        i += l;
    }
    return 0;
}

/* The whitespace at the ends removed (the kept characters keep their
 * spans). */
static int norm_strip(const struct norm_step *s, const char *in, size_t n, struct ubuf *o,
                      struct chgbuf *c) {
    const unsigned char *b = (const unsigned char *)in;
    size_t a = 0, z = n, l;
    if (s->left)
        while (a < z && tok_is_whitespace(tok_utf8_get(b + a, &l)))
            a += l;
    if (s->right)
        while (z > a) {
            size_t p = z - 1;
            while (p > a && (b[p] & 0xC0) == 0x80)
                p--;
            if (!tok_is_whitespace(tok_utf8_get(b + p, &l))) break;
            z = p;
        }
    if (ubuf_reserve(o, z - a) != 0) return -1;
    ubuf_put(o, in + a, z - a);
    if (c && a && chg_put(c, 0, -(int32_t)count_chars(in, a)) != 0) return -1;
    return chg_chars(c, in + a, z - a, 0, 0);
}

/* Replace with a string pattern: every non-overlapping match, left to
 * right (the match removed, the content inserted: it takes the span of the
 * match's last character). */
static int norm_replace(const struct norm_step *s, const char *in, size_t n, struct ubuf *o,
                        struct chgbuf *c) {
    size_t i = 0;
    while (i < n) {
        const char *m = NULL;
        if (n - i >= s->plen) {
            const char *p = in + i;
            while ((p = memchr(p, s->pat[0], (size_t)(in + n - p))) != NULL) {
                if ((size_t)(in + n - p) < s->plen) {
                    p = NULL;
                    break;
                }
                if (memcmp(p, s->pat, s->plen) == 0) break;
                p++;
            }
            m = p;
        }
        size_t upto = m ? (size_t)(m - in) : n;
        if (ubuf_reserve(o, upto - i + (m ? s->clen : 0)) != 0 ||
            chg_chars(c, in + i, upto - i, 0, 0) != 0)
            return -1;
        ubuf_put(o, in + i, upto - i);
        if (!m) break;
        ubuf_put(o, s->content, s->clen);
        if (c && (chg_put(c, 0, -(int32_t)count_chars(s->pat, s->plen)) != 0 ||
                  chg_chars(c, s->content, s->clen, 1, 1) != 0))
            return -1;
        i = upto + s->plen;
    }
    return 0;
}

/* Replace with a run regex ("x{n,}", "x+"): each maximal run of the
 * character at least run_min long becomes the content (spans as
 * norm_replace). */
static int norm_replace_run(const struct norm_step *s, const char *in, size_t n, struct ubuf *o,
                            struct chgbuf *c) {
    char c8[4];
    const size_t cl = tok_utf8_put(c8, s->run_cp);
    size_t i = 0;
    while (i < n) {
        const char *p = in + i;
        while ((p = memchr(p, c8[0], (size_t)(in + n - p))) != NULL &&
               !((size_t)(in + n - p) >= cl && memcmp(p, c8, cl) == 0))
            p++;
        size_t upto = p ? (size_t)(p - in) : n;
        if (ubuf_reserve(o, upto - i) != 0 || chg_chars(c, in + i, upto - i, 0, 0) != 0) return -1;
        ubuf_put(o, in + i, upto - i);
        if (!p) break;
        size_t k = 0, j = upto;
        while (j + cl <= n && memcmp(in + j, c8, cl) == 0) {
            j += cl;
            k++;
        }
        if (k >= s->run_min) {
            if (ubuf_reserve(o, s->clen) != 0 ||
                (c &&
                 (chg_put(c, 0, -(int32_t)k) != 0 || chg_chars(c, s->content, s->clen, 1, 1) != 0)))
                return -1;
            ubuf_put(o, s->content, s->clen);
        } else {
            if (ubuf_reserve(o, j - upto) != 0 || chg_chars(c, in + upto, j - upto, 0, 0) != 0)
                return -1;
            ubuf_put(o, in + upto, j - upto);
        }
        i = j;
    }
    return 0;
}

/* The normalizers on [s, s+n), back and forth between nb[0] and nb[1];
 * *out gets the result (s itself when there are none). With t, the spans
 * too (t->out). 0, or -1 when out of memory. */
static int run_normalizers(const struct tok_uni *u, struct ubuf nb[2], const char *s, size_t n,
                           int first, int last, const char **out, size_t *out_len,
                           struct ntrack *t) {
    const char *cur = s;
    size_t len = n;
    int w = 0;
    struct chgbuf *c = t ? &t->chg : NULL;
    if (t) t->out = t->in;
    for (int k = 0; k < u->n_norm && len; k++) {
        const struct norm_step *ns = &u->norm[k];
        struct ubuf *o = &nb[w];
        o->len = 0;
        if (c) c->len = 0;
        int r = 0;
        switch (ns->kind) {
        case NS_PRECOMPILED:
            r = norm_precompiled(&ns->cm, cur, len, o, c);
            break;
        case NS_NFC:
        case NS_NFD:
        case NS_NFKC:
        case NS_NFKD:
            r = norm_unicode(ns->kind, cur, len, o, c);
            break;
        case NS_LOWERCASE:
            r = norm_lowercase(cur, len, o, c);
            break;
        case NS_STRIP: {
            struct norm_step st = *ns; /* a chunk: only the text's own ends */
            st.left &= first;
            st.right &= last;
            r = norm_strip(&st, cur, len, o, c);
            break;
        }
        case NS_PREPEND:
            /* the content replaces the first character, which follows it
             * inserted: all of them take its span */
            r = ubuf_reserve(o, len + ns->clen);
            if (!r) {
                if (first) ubuf_put(o, ns->content, ns->clen);
                ubuf_put(o, cur, len);
            }
            if (!r && c) {
                const size_t l0 = utf8_len((unsigned char)cur[0]);
                if (first)
                    r = chg_chars(c, ns->content, ns->clen, 0, 1) || chg_put(c, l0, 1) ||
                        chg_chars(c, cur + l0, len - l0, 0, 0);
                else
                    r = chg_chars(c, cur, len, 0, 0);
            }
            break;
        case NS_REPLACE:
            r = norm_replace(ns, cur, len, o, c);
            break;
        default:
            r = norm_replace_run(ns, cur, len, o, c);
            break;
        }
        if (r) return -1;
        if (t) {
            struct spanbuf *sp = &t->sp[w];
            sp->len = 0;
            if (chg_apply(cur, len, t->out, c, t->zero, sp) != 0) return -1;
            if (sp->len != o->len) return -1; /* cannot be: the changes cover the output */
            t->out = sp->p;
        }
        cur = o->p;
        len = o->len;
        w ^= 1;
    }
    *out = cur;
    *out_len = len;
    return 0;
}

/* One stretch of text between added tokens (or a chunk of it): normalizers,
 * pre-tokenizers, model. */
static void uni_chunk(struct uenc *e, const char *s, size_t n, int at_zero, int first, int last) {
    const char *cur;
    size_t len;
    if (e->track) { /* the chunk's spans: each character's own, in the caller's text */
        struct spanbuf *sp = &e->sp0;
        sp->len = 0;
        if (spanbuf_reserve(sp, n) != 0) {
            unomem(e);
            return;
        }
        const size_t at = (size_t)(s - e->text0);
        for (size_t i = 0; i < n;) {
            const size_t l = utf8_len((unsigned char)s[i]);
            const struct span c = {e->pos ? e->pos[at + i] : at + i,
                                   e->pos ? e->pos[at + i + l] : at + i + l};
            for (size_t j = 0; j < l && i < n; j++, i++)
                sp->p[sp->len++] = c;
        }
        e->nt.in = sp->p;
    }
    if (run_normalizers(e->u, e->nb, s, n, first, last, &cur, &len, e->track ? &e->nt : NULL) !=
        0) {
        unomem(e);
        return;
    }
    pretok(e, 0, cur, len, e->track ? e->nt.out : NULL, at_zero);
}

static int ascii_alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
}

/* A long stretch goes in chunks of about UNI_CHUNK bytes, cut before a
 * space between two ASCII letters or digits, when the tokenizer is one
 * whose result is then the same (u->chunkable: the space stays a space
 * that starts a piece, nothing reaches across it), so that a truncated
 * encoding of a long text stops early. */
#define UNI_CHUNK 8192

static void uni_segment(struct uenc *e, const char *s, size_t n, int at_zero) {
    if (!e->u->chunkable || n <= 2 * UNI_CHUNK) {
        uni_chunk(e, s, n, at_zero, 1, 1);
        return;
    }
    const unsigned char *b = (const unsigned char *)s;
    size_t a = 0;
    while (a < n && !e->done) {
        size_t cut = n;
        if (n - a > 2 * UNI_CHUNK)
            for (size_t i = a + UNI_CHUNK; i + 1 < n; i++)
                if (b[i] == ' ' && ascii_alnum(b[i - 1]) && ascii_alnum(b[i + 1])) {
                    cut = i;
                    break;
                }
        uni_chunk(e, s + a, cut - a, at_zero && a == 0, a == 0, cut == n);
        a = cut;
    }
}

/* Whether long stretches may go in chunks (uni_segment): the first
 * pre-tokenizer cuts at spaces (WhitespaceSplit, or Metaspace with split),
 * no Metaspace keeps the text whole, and every normalizer leaves a space
 * between two ASCII letters or digits a space that nothing reaches across:
 * Precompiled keeps ' ' and maps no letter or digit to something with a
 * space or to nothing; no Replace touches or makes spaces (a run regex of
 * spaces from two on is fine: the cut space is alone). */
static int chunkable(const struct tok_uni *u) {
    if (u->n_pre == 0) return 0;
    if (u->pre[0].kind == PT_METASPACE && !u->pre[0].split) return 0;
    for (int k = 0; k < u->n_pre; k++)
        if (u->pre[k].kind == PT_METASPACE && !u->pre[k].split) return 0;
    for (int k = 0; k < u->n_norm; k++) {
        const struct norm_step *ns = &u->norm[k];
        if (ns->kind == NS_PRECOMPILED) {
            long v = cm_first(&ns->cm, (const unsigned char *)" ", 1);
            size_t rl;
            if (v >= 0 && (cm_string(&ns->cm, (size_t)v, &rl)[0] != ' ' || rl != 1)) return 0;
            for (unsigned c = 0; c < 128; c++) {
                if (!ascii_alnum((unsigned char)c)) continue;
                unsigned char k1 = (unsigned char)c;
                v = cm_first(&ns->cm, &k1, 1);
                if (v < 0) continue;
                const char *r = cm_string(&ns->cm, (size_t)v, &rl);
                if (!rl || memchr(r, ' ', rl)) return 0;
            }
        } else if (ns->kind == NS_REPLACE) {
            if (memchr(ns->pat, ' ', ns->plen) || memchr(ns->content, ' ', ns->clen)) return 0;
        } else if (ns->kind == NS_REPLACE_RUN) {
            if (ns->run_cp == ' ' && ns->run_min < 2) return 0;
            if (ns->run_cp != ' ' && memchr(ns->content, ' ', ns->clen)) return 0;
        }
    }
    return 1;
}

enum embd_status tok_uni_normalize(const embd_tokenizer *tok, const char *text, size_t len,
                                   char **out, size_t *out_len) {
    struct ubuf nb[2] = {{0}, {0}};
    const char *cur;
    size_t n;
    enum embd_status st = EMBD_OK;
    *out = NULL;
    if (!tok->uni) return embd_error(EMBD_ERR_UNSUPPORTED, "tokenizer: not a Unigram model");
    if (run_normalizers(tok->uni, nb, text, len, 1, 1, &cur, &n, NULL) != 0 ||
        !(*out = dup_bytes(cur, n)))
        st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    else
        *out_len = n;
    embd_free(nb[0].p);
    embd_free(nb[1].p);
    return st;
}

/* The longest added token at s (leftmost-longest), or -1; *len its length. */
static int match_added(const embd_tokenizer *tok, const char *s, size_t avail, size_t *len) {
    int best = -1;
    size_t best_len = 0;
    for (int i = 0; i < tok->n_added; i++) {
        size_t l = tok->added[i].len;
        if (l > best_len && l <= avail && memcmp(tok->pool + tok->added[i].off, s, l) == 0) {
            best = i;
            best_len = l;
        }
    }
    *len = best_len;
    return best;
}

enum embd_status tok_uni_encode(const embd_tokenizer *tok, const char *text, size_t len,
                                size_t limit, int32_t *ids, size_t cap, size_t off, size_t *n,
                                int *truncated, const struct tok_uni_offs *o) {
    struct uenc e = {.tok = tok,
                     .u = tok->uni,
                     .ids = ids,
                     .cap = cap,
                     .off = off,
                     .limit = limit,
                     .st = EMBD_OK};
    *n = 0;
    *truncated = 0;
    if (o) {
        e.track = 1;
        e.starts = o->starts;
        e.stops = o->stops;
        e.pos = o->pos;
        e.text0 = text;
    }
#define POS(x) (e.pos ? e.pos[x] : (x))
    const unsigned char *b = (const unsigned char *)text;
    ucheck_limit(&e);
    size_t p = 0, seg = 0, l;
    while (p < len && !e.done) {
        if (!tok->added_first[b[p]]) {
            p++;
            continue;
        }
        size_t ml;
        int a = match_added(tok, text + p, len - p, &ml);
        if (a < 0) {
            p++;
            continue;
        }
        /* lstrip / rstrip: the whitespace around the token is its own (not
         * before the end of the previous one) */
        size_t start = p, stop = p + ml;
        if (tok->added[a].lstrip)
            while (start > seg) {
                size_t q = start - 1;
                while (q > seg && (b[q] & 0xC0) == 0x80)
                    q--;
                if (!tok_is_whitespace(tok_utf8_get(b + q, &l))) break;
                start = q;
            }
        if (tok->added[a].rstrip)
            while (stop < len && tok_is_whitespace(tok_utf8_get(b + stop, &l)))
                stop += l;
        e.nt.zero = (struct span){POS(seg), POS(seg)};
        if (seg < start) uni_segment(&e, text + seg, start - seg, seg == 0);
        if (e.done) break;
        if (e.track)
            uemit_off(&e, tok->added[a].id, POS(start), POS(stop), text + start,
                      stop - start); /* its value: the match with its whitespace */
        else
            uemit(&e, tok->added[a].id);
        ucheck_limit(&e);
        seg = stop;
        p += ml;
    }
    e.nt.zero = (struct span){POS(seg), POS(seg)};
    if (!e.done && seg < len) uni_segment(&e, text + seg, len - seg, seg == 0);
#undef POS
    for (int i = 0; i < 2; i++) {
        embd_free(e.nb[i].p);
        embd_free(e.nt.sp[i].p);
    }
    embd_free(e.nt.chg.p);
    embd_free(e.sp0.p);
    for (int i = 0; i < UNI_MAX_PRE; i++) {
        embd_free(e.pb[i].p);
        embd_free(e.psp[i].p);
    }
    embd_free(e.score);
    embd_free(e.from);
    embd_free(e.vid);
    embd_free(e.path);
    *n = e.n;
    *truncated = e.truncated;
    return e.st;
}

/* ------------------------------------------------------------------ */
/* Decoding */

/* One decoder of the chain; returns 0, -1 when it is not supported, -2 when
 * out of memory. */
static int dec_add(struct tok_uni *u, const cJSON *d) {
    const char *type = tok_json_type(d);
    if (!type) return -1;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        if (!cJSON_IsArray(list)) return -1;
        for (const cJSON *e = list->child; e; e = e->next) {
            int r = dec_add(u, e);
            if (r) return r;
        }
        return 0;
    }
    if (u->n_dec >= UNI_MAX_DEC) return -1;
    struct dec_step *s = &u->dec[u->n_dec];
    memset(s, 0, sizeof *s);
    if (strcmp(type, "Metaspace") == 0) {
        s->kind = DC_METASPACE;
        if (read_replacement(d, s->rep, &s->rlen) != 0 || read_prepend(d, &s->prepend) != 0)
            return -1;
    } else if (strcmp(type, "ByteFallback") == 0) {
        s->kind = DC_BYTE_FALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        s->kind = DC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(d, "content");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(d, "start");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(d, "stop");
        if (!cJSON_IsString(c) || !c->valuestring[0] ||
            strlen(c->valuestring) != utf8_len((unsigned char)c->valuestring[0]) ||
            !cJSON_IsNumber(a) || !cJSON_IsNumber(b) || !(a->valuedouble >= 0) ||
            !(b->valuedouble >= 0) || a->valuedouble > 1e9 || b->valuedouble > 1e9)
            return -1;
        s->kind = DC_STRIP;
        s->clen = strlen(c->valuestring);
        if (!(s->content = dup_bytes(c->valuestring, s->clen))) return -2;
        s->start = (int)a->valuedouble;
        s->stop = (int)b->valuedouble;
    } else if (strcmp(type, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(d, "pattern");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(d, "content");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(pat, "String");
        if (!cJSON_IsString(ps) || !ps->valuestring[0] || !cJSON_IsString(c)) return -1;
        s->kind = DC_REPLACE;
        s->plen = strlen(ps->valuestring);
        s->clen = strlen(c->valuestring);
        s->pat = dup_bytes(ps->valuestring, s->plen);
        s->content = dup_bytes(c->valuestring, s->clen);
        if (!s->pat || !s->content) {
            embd_free(s->pat);
            embd_free(s->content);
            s->pat = s->content = NULL;
            return -2;
        }
    } else {
        return -1;
    }
    u->n_dec++;
    return 0;
}

enum embd_status tok_uni_load_decoder(embd_tokenizer *tok, const cJSON *d) {
    tok->dec_kind = TOK_DEC_UNSUPPORTED;
    if (!tok->uni) return EMBD_OK; /* the chain decodes SentencePiece models only */
    int r = dec_add(tok->uni, d);
    if (r == -2) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    if (r == 0) tok->dec_kind = TOK_DEC_CHAIN;
    return EMBD_OK;
}

/* A list of owned strings (the tokens between two decoders). */
struct strv {
    char **s;
    size_t *l;
    size_t n, cap;
};

static int strv_push(struct strv *v, const char *s, size_t l) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        char **a = embd_realloc(v->s, cap * sizeof *a);
        if (!a) return -1;
        v->s = a;
        size_t *b = embd_realloc(v->l, cap * sizeof *b);
        if (!b) return -1;
        v->l = b;
        v->cap = cap;
    }
    char *d = embd_malloc(l + 1);
    if (!d) return -1;
    memcpy(d, s, l);
    d[l] = 0;
    v->s[v->n] = d;
    v->l[v->n++] = l;
    return 0;
}

static void strv_free(struct strv *v) {
    for (size_t i = 0; i < v->n; i++)
        embd_free(v->s[i]);
    embd_free(v->s);
    embd_free(v->l);
    memset(v, 0, sizeof *v);
}

/* "<0xNN>" as ByteFallback reads it (u8::from_str_radix of NN, which takes
 * a leading '+'); the byte, or -1. */
static int byte_token(const char *t, size_t l) {
    if (l != 6 || memcmp(t, "<0x", 3) != 0 || t[5] != '>') return -1;
    int v = 0, k = 3;
    if (t[3] == '+') k = 4;
    for (int i = k; i < 5; i++) {
        char c = t[i];
        int h = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* ByteFallback: a run of byte tokens becomes its text when it is valid
 * UTF-8, else one U+FFFD per byte. */
static int flush_bytes(struct strv *o, const char *b, size_t n) {
    if (!n) return 0;
    if (embd_utf8_valid(b, n)) return strv_push(o, b, n);
    for (size_t i = 0; i < n; i++)
        if (strv_push(o, "\xef\xbf\xbd", 3) != 0) return -1;
    return 0;
}

static int dec_apply(const struct dec_step *d, const struct strv *in, struct strv *o) {
    if (d->kind == DC_FUSE) {
        size_t total = 0;
        for (size_t i = 0; i < in->n; i++)
            total += in->l[i];
        char *j = embd_malloc(total + 1);
        if (!j) return -1;
        size_t k = 0;
        for (size_t i = 0; i < in->n; i++) {
            memcpy(j + k, in->s[i], in->l[i]);
            k += in->l[i];
        }
        int r = strv_push(o, j, k);
        embd_free(j);
        return r;
    }
    if (d->kind == DC_BYTE_FALLBACK) {
        char *b = embd_malloc(in->n + 1);
        size_t nb = 0;
        if (!b) return -1;
        for (size_t i = 0; i < in->n; i++) {
            int v = byte_token(in->s[i], in->l[i]);
            if (v >= 0) {
                b[nb++] = (char)v;
                continue;
            }
            if (flush_bytes(o, b, nb) != 0 || strv_push(o, in->s[i], in->l[i]) != 0) {
                embd_free(b);
                return -1;
            }
            nb = 0;
        }
        int r = flush_bytes(o, b, nb);
        embd_free(b);
        return r;
    }
    for (size_t i = 0; i < in->n; i++) {
        const char *t = in->s[i];
        const size_t l = in->l[i];
        struct ubuf w = {0};
        if (ubuf_reserve(&w, l + 1) != 0) return -1;
        if (d->kind == DC_METASPACE) {
            for (size_t p = 0; p < l;) {
                if (l - p >= d->rlen && memcmp(t + p, d->rep, d->rlen) == 0) {
                    if (!(i == 0 && d->prepend != PREPEND_NEVER)) w.p[w.len++] = ' ';
                    p += d->rlen;
                } else {
                    w.p[w.len++] = t[p++];
                }
            }
        } else if (d->kind == DC_STRIP) {
            /* up to `start` leading and `stop` trailing content characters,
             * counted in characters */
            size_t a = 0, z = l, nch = 0, cut = 0;
            for (size_t p = 0; p < l; p += utf8_len((unsigned char)t[p]))
                nch++;
            for (int k = 0; k < d->start && a < l; k++) {
                if (l - a >= d->clen && memcmp(t + a, d->content, d->clen) == 0) {
                    a += d->clen;
                    cut++;
                } else {
                    break;
                }
            }
            for (size_t k = 0; k < (size_t)d->stop && k < nch - cut; k++) {
                if (z - a >= d->clen && memcmp(t + z - d->clen, d->content, d->clen) == 0)
                    z -= d->clen;
                else
                    break;
            }
            ubuf_put(&w, t + a, z - a);
        } else { /* DC_REPLACE */
            struct norm_step rs = {
                .pat = d->pat, .plen = d->plen, .content = d->content, .clen = d->clen};
            w.len = 0;
            if (norm_replace(&rs, t, l, &w, NULL) != 0) {
                embd_free(w.p);
                return -1;
            }
        }
        int r = strv_push(o, w.p ? w.p : "", w.len);
        embd_free(w.p);
        if (r) return -1;
    }
    return 0;
}

enum embd_status tok_uni_decode(const embd_tokenizer *tok, const int32_t *ids, size_t n,
                                bool skip_special, char *buf, size_t cap, size_t *len) {
    const struct tok_uni *u = tok->uni;
    struct strv a = {0}, b = {0};
    enum embd_status st = EMBD_OK;
    for (size_t i = 0; i < n; i++) {
        if (skip_special && (tok->id_flags[ids[i]] & TOK_ID_SPECIAL)) continue;
        const char *t = tok->pool + tok->id_str[ids[i]];
        if (strv_push(&a, t, strlen(t)) != 0) goto nomem;
    }
    for (int k = 0; k < u->n_dec; k++) {
        if (dec_apply(&u->dec[k], &a, &b) != 0) goto nomem;
        strv_free(&a);
        a = b;
        memset(&b, 0, sizeof b);
    }
    size_t total = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (total < cap) {
            size_t room = cap - 1 - (total < cap - 1 ? total : cap - 1);
            memcpy(buf + total, a.s[i], a.l[i] < room ? a.l[i] : room);
        }
        total += a.l[i];
    }
    if (cap) buf[total < cap ? total : cap - 1] = 0;
    *len = total;
    if (total + 1 > cap)
        st = embd_error(EMBD_ERR_BUFFER_TOO_SMALL, "decode: %zu bytes do not fit in %zu", total + 1,
                        cap);
    strv_free(&a);
    strv_free(&b);
    return st;
nomem:
    strv_free(&a);
    strv_free(&b);
    return embd_error(EMBD_ERR_NOMEM, "decode: out of memory");
}
