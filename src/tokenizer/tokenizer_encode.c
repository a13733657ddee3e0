/* tokenizer_encode.c — text to ids: added-token split, BertNormalizer,
 * BertPreTokenizer, WordPiece, template and truncation, in one streaming pass
 * that stops as soon as the truncated sequence is complete.
 *
 * The text is read left to right. Each character is normalized on its own (an
 * ASCII table for the common case), then fed to the pre-tokenizer, which
 * collects the current word; a finished word goes through WordPiece and its
 * pieces are written straight into the caller's buffer. Only NFD's canonical
 * reordering looks across characters; it is done on the word buffer.
 *
 * Offsets (embd_tokenizer_encode_offsets) follow the same pass with a second
 * copy of the main loop (encode_text_track), so that the plain one does no
 * extra work: each byte of the word carries the range of the raw character
 * it came from, as the alignments of `tokenizers`' NormalizedString do, and
 * a piece spans from its first byte's start to its last byte's stop. */
#include "tokenizer/tokenizer_internal.h"
#include "util/util.h"

#include <string.h>
#include <utf8proc.h>

/* A code point of a run of non-starters (ccc > 0) that NFD reorders, kept
 * while offsets are tracked: `tokenizers` aligns NFD's output by position
 * (see run_resolve). */
struct run_ent {
    size_t s, e;   /* the range of the raw character it came from */
    uint8_t ccc;   /* canonical combining class (> 0) */
    uint8_t first; /* the first code point of its character's decomposition */
    uint8_t kept;  /* not Mn: stays in the word (strip_accents drops Mn) */
};

/* A U+FFFD that utf8_repair wrote at `at` in its copy; after it, a position
 * of the copy minus `delta` is the position in the caller's text. */
struct rep_site {
    size_t at, delta;
};

/* The state of one encode call (the tokenizer itself is read-only). */
struct enc {
    const embd_tokenizer *tok;
    int32_t *ids; /* (cap) the caller's buffer: pre ids, pieces, post ids */
    size_t cap;
    size_t off;    /* where the pieces start in ids (after the pre ids) */
    size_t n;      /* pieces of the sequence so far */
    size_t limit;  /* most pieces kept (max_tokens minus the special tokens) */
    int done;      /* the sequence is complete (or failed): stop reading */
    int truncated; /* pieces past the limit were seen and dropped */
    enum embd_status st;
    char *word; /* (wcap) bytes of the current word, up to max_chars chars */
    size_t wlen, wcap;
    size_t wchars; /* chars in the current word (counted past what is stored) */
    size_t run;    /* where the run of kept combining marks (NFD reordering) begins, or NO_RUN */

    /* offsets (encode_text_track only; all 0 otherwise) */
    int track;
    size_t *starts, *stops; /* (cap) the caller's arrays, as ids; either may be NULL */
    uint8_t *special;       /* (cap) or NULL */
    uint8_t *typed;         /* (cap) or NULL: 1 for an added token matched in the text */
    size_t cs, ce;          /* the raw character being read: its range in the caller's text */
    size_t lcs, lce;        /* the last raw character whose first code point was a starter */
    size_t *was, *wae;      /* (wcap) for each byte of the word: its character's range */
    size_t wfirst, wlast;   /* the word's first character's start, last character's stop */
    struct run_ent *rent;   /* (rcap) the pending run of non-starters, in text order */
    size_t rn, rcap, rkept;
    size_t rpre_s, rpre_e;        /* lcs, lce when the run began */
    const struct rep_site *sites; /* (nsites) where the text was repaired */
    size_t nsites, site_i, delta;
};

#define NO_RUN ((size_t)-1)

static void emit(struct enc *e, int32_t id) {
    size_t at = e->off + e->n;
    if (e->n < e->limit && at < e->cap) e->ids[at] = id;
    e->n++;
}

/* emit, with the piece's range in the caller's text (offsets only). */
static void emit_at(struct enc *e, int32_t id, size_t start, size_t stop) {
    size_t at = e->off + e->n;
    if (e->n < e->limit && at < e->cap) {
        e->ids[at] = id;
        if (e->starts) e->starts[at] = start;
        if (e->stops) e->stops[at] = stop;
        if (e->special) e->special[at] = 0;
        if (e->typed) e->typed[at] = 0;
    }
    e->n++;
}

/* After a word or an added token: stop once a piece past the limit has
 * been seen (so that a text of exactly `limit` pieces is told apart from a
 * longer one at the cost of at most one more word). */
static void check_limit(struct enc *e) {
    if (e->n > e->limit) {
        e->n = e->limit;
        e->truncated = 1;
        e->done = 1;
    }
}

/* The functions of the per-word path take `track` (offsets) as a constant
 * and are inlined into one copy for each value, so that the plain path does
 * not test it. */
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* WordPiece on one word: greedy longest match from the left, continuation
 * pieces looked up without the prefix in tok->cont. If some position matches
 * nothing, the whole word is [UNK]. */
static ALWAYS_INLINE void wordpiece(struct enc *e, const char *w, size_t len, const int track) {
    const embd_tokenizer *tok = e->tok;
    size_t n0 = e->n, start = 0;
    while (start < len) {
        const struct tok_table *t = (start && tok->prefix[0]) ? &tok->cont : &tok->full;
        size_t end = len;
        if (end - start > t->max_len) {
            end = start + t->max_len;
            while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80)
                end--;
        }
        int32_t id = -1;
        while (end > start) {
            id = tok_table_find(tok, t, w + start, end - start);
            if (id >= 0) break;
            do {
                end--;
            } while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80);
        }
        if (id < 0) {
            e->n = n0;
            if (track)
                emit_at(e, tok->unk_id, e->wfirst, e->wlast);
            else
                emit(e, tok->unk_id);
            return;
        }
        if (track)
            emit_at(e, id, e->was[start], e->wae[end - 1]);
        else
            emit(e, id);
        start = end;
    }
}

static void run_resolve(struct enc *e);

static ALWAYS_INLINE void finish_word_impl(struct enc *e, const int track) {
    if (track && e->rn) run_resolve(e);
    e->run = NO_RUN;
    if (e->wchars == 0) return;
    if (e->wchars > (size_t)e->tok->max_chars) {
        if (track)
            emit_at(e, e->tok->unk_id, e->wfirst, e->wlast);
        else
            emit(e, e->tok->unk_id);
    } else {
        wordpiece(e, e->word, e->wlen, track);
    }
    e->wlen = e->wchars = 0;
    check_limit(e);
}

/* The current word is complete: its pieces go out. */
static void finish_plain(struct enc *e) {
    finish_word_impl(e, 0);
}

static void finish_track(struct enc *e) {
    finish_word_impl(e, 1);
}

/* For the paths both main loops share (track a constant). */
#define FINISH_WORD(e, track) ((track) ? finish_track(e) : finish_plain(e))

/* Makes room for `more` bytes in the word buffer. Returns 0, or -1 (and sets
 * e->st, e->done) when out of memory. */
static int word_reserve(struct enc *e, size_t more) {
    if (e->wlen + more <= e->wcap) return 0;
    size_t cap = e->wcap ? e->wcap * 2 : 256;
    while (cap < e->wlen + more)
        cap *= 2;
    char *w = embd_realloc(e->word, cap);
    if (w) e->word = w;
    if (w && e->track) {
        size_t *a = embd_realloc(e->was, cap * sizeof *a);
        if (a) e->was = a;
        size_t *b = a ? embd_realloc(e->wae, cap * sizeof *b) : NULL;
        if (b) e->wae = b;
        if (!b) w = NULL;
    }
    if (!w) {
        e->st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        e->done = 1;
        return -1;
    }
    e->wcap = cap;
    return 0;
}

/* The canonical combining class NFD sorts marks by, as tokenizers' tables
 * have it: utf8proc's, except 0 for the marks of later Unicode versions that
 * those older tables do not know (tok_nf_keep: U+1DFA, U+1ABF, ...), which
 * tokenizers leaves where they are. */
static int ccc_of(uint32_t cp) {
    const int c = utf8proc_get_property((utf8proc_int32_t)cp)->combining_class;
    return c && tok_nf_keep(cp, 0) ? 0 : c;
}

/* Appends one (normalized) code point to the current word. `ccc` is its
 * canonical combining class when strip_accents' NFD is on (else 0): marks with
 * ccc > 0 are kept sorted by ccc (stably) within their run, as NFD does. */
static ALWAYS_INLINE void word_add_impl(struct enc *e, uint32_t cp, int ccc, const int track) {
    e->wchars++;
    if (track) {
        if (e->wchars == 1) e->wfirst = e->cs;
        e->wlast = e->ce;
    }
    if (e->wchars > (size_t)e->tok->max_chars) return; /* [UNK] anyway: stop storing */
    if (word_reserve(e, 4) != 0) return;
    char buf[4];
    size_t k = tok_utf8_put(buf, cp);
    if (ccc == 0) {
        e->run = NO_RUN;
        memcpy(e->word + e->wlen, buf, k);
        if (track)
            for (size_t j = 0; j < k; j++)
                e->was[e->wlen + j] = e->cs, e->wae[e->wlen + j] = e->ce;
        e->wlen += k;
        return;
    }
    if (e->run == NO_RUN) e->run = e->wlen;
    size_t at = e->wlen;
    while (at > e->run) { /* back over the marks with a higher ccc (stable order) */
        size_t b = at - 1, l;
        while (b > e->run && ((unsigned char)e->word[b] & 0xC0) == 0x80)
            b--;
        if (ccc_of(tok_utf8_get((const unsigned char *)e->word + b, &l)) <= ccc) break;
        at = b;
    }
    memmove(e->word + at + k, e->word + at, e->wlen - at);
    memcpy(e->word + at, buf, k);
    if (track) { /* provisional: run_resolve sets the run's ranges */
        memmove(e->was + at + k, e->was + at, (e->wlen - at) * sizeof *e->was);
        memmove(e->wae + at + k, e->wae + at, (e->wlen - at) * sizeof *e->wae);
        for (size_t j = 0; j < k; j++)
            e->was[at + j] = e->cs, e->wae[at + j] = e->ce;
    }
    e->wlen += k;
}

static __attribute__((noinline)) void word_add_plain(struct enc *e, uint32_t cp, int ccc) {
    word_add_impl(e, cp, ccc, 0);
}

static void word_add_track(struct enc *e, uint32_t cp, int ccc) {
    word_add_impl(e, cp, ccc, 1);
}

#define WORD_ADD(e, cp, ccc, track)                                                                \
    ((track) ? word_add_track(e, cp, ccc) : word_add_plain(e, cp, ccc))

/* Offsets: one code point of NFD's output with ccc > 0 joins the pending run. */
static void run_push(struct enc *e, int ccc, int first, int kept) {
    if (e->rn == e->rcap) {
        size_t cap = e->rcap ? e->rcap * 2 : 16;
        struct run_ent *r = embd_realloc(e->rent, cap * sizeof *r);
        if (!r) {
            e->st = embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
            e->done = 1;
            return;
        }
        e->rent = r;
        e->rcap = cap;
    }
    if (e->rn == 0) e->rpre_s = e->lcs, e->rpre_e = e->lce;
    e->rent[e->rn++] = (struct run_ent){.s = e->cs,
                                        .e = e->ce,
                                        .ccc = (uint8_t)ccc,
                                        .first = (uint8_t)first,
                                        .kept = (uint8_t)kept};
    e->rkept += (size_t)kept;
}

/* Offsets: the run of non-starters ends (a starter, or the word ends). NFD
 * sorted it stably by ccc; `tokenizers` then aligns its output by position:
 * walking the sorted run, the first code point of a character takes the
 * range of the next raw character of the run in text order, any other code
 * point the range the previous one took (before the run: the last starter's
 * character). Mn are dropped afterwards. The kept code points, which
 * word_add sorted the same way, get those ranges. */
static void run_resolve(struct enc *e) {
    const size_t m = e->rn, nk = e->rkept;
    e->rn = e->rkept = 0;
    if (!nk) return;
    uint8_t present[256] = {0};
    for (size_t i = 0; i < m; i++)
        present[e->rent[i].ccc] = 1;
    const int store = e->wchars <= (size_t)e->tok->max_chars && e->run != NO_RUN;
    size_t z = 0, s = e->rpre_s, t = e->rpre_e, b = e->run, k = 0;
    for (int c = 1; c < 256; c++) {
        if (!present[c]) continue;
        for (size_t i = 0; i < m; i++) {
            const struct run_ent *r = &e->rent[i];
            if (r->ccc != c) continue;
            if (r->first) {
                while (!e->rent[z].first)
                    z++;
                s = e->rent[z].s;
                t = e->rent[z].e;
                z++;
            }
            if (!r->kept) continue;
            if (k++ == 0 && e->wchars == nk) e->wfirst = s;
            e->wlast = t;
            if (store && b < e->wlen) {
                size_t l;
                tok_utf8_get((const unsigned char *)e->word + b, &l);
                for (size_t j = 0; j < l && b < e->wlen; j++, b++)
                    e->was[b] = s, e->wae[b] = t;
            }
        }
    }
}

/* The pre-tokenizer: whitespace ends the word, punctuation is a word alone. */
static ALWAYS_INLINE void pretok_cp(struct enc *e, uint32_t cp, int ccc, const int track) {
    if (e->tok->bert_pretok) {
        if (tok_is_whitespace(cp)) {
            FINISH_WORD(e, track);
            return;
        }
        if (tok_is_punct(cp)) {
            FINISH_WORD(e, track);
            if (e->done) return;
            WORD_ADD(e, cp, 0, track);
            FINISH_WORD(e, track);
            return;
        }
    }
    WORD_ADD(e, cp, ccc, track);
}

static ALWAYS_INLINE void lower_cp(struct enc *e, uint32_t cp, int ccc, const int track) {
    if (!e->tok->lowercase) {
        pretok_cp(e, cp, ccc, track);
        return;
    }
    uint32_t lo[3];
    int n = tok_lower(cp, lo);
    for (int i = 0; i < n && !e->done; i++)
        pretok_cp(e, lo[i], ccc, track);
}

/* strip_accents: NFD, then drop Mn. */
static ALWAYS_INLINE void strip_cp(struct enc *e, uint32_t cp, const int track) {
    if (!e->tok->strip_accents) {
        lower_cp(e, cp, 0, track);
        return;
    }
    utf8proc_int32_t d[8];
    int last = 0;
    utf8proc_ssize_t nd = 1;
    d[0] = (utf8proc_int32_t)cp;
    /* a decomposition newer than the normalization tables of tokenizers
     * (U+11938's, since Unicode 13) is not made */
    if (!tok_nf_keep(cp, 0)) nd = utf8proc_decompose_char(d[0], d, 8, UTF8PROC_DECOMPOSE, &last);
    if (nd < 1 || nd > 8) { /* defensive: cannot happen for a valid code point */
        nd = 1;
        d[0] = (utf8proc_int32_t)cp;
    }
    for (utf8proc_ssize_t i = 0; i < nd && !e->done; i++) {
        uint32_t c = (uint32_t)d[i];
        int ccc = c < 0x300 ? 0 : ccc_of(c);
        if (track) {
            if (ccc == 0) {
                if (e->rn) run_resolve(e);
                e->lcs = e->cs, e->lce = e->ce;
            } else {
                run_push(e, ccc, i == 0, !tok_is_nonspacing(c));
                if (e->done) break;
            }
        }
        if (tok_is_nonspacing(c)) {
            if (ccc == 0) e->run = NO_RUN; /* a starter: ends the reordering run */
            continue;
        }
        lower_cp(e, c, ccc, track);
    }
}

/* One code point of the raw text through the whole normalizer. */
static ALWAYS_INLINE void normalize_impl(struct enc *e, uint32_t cp, const int track) {
    const embd_tokenizer *tok = e->tok;
    if (tok->clean_text) {
        if (cp == 0 || cp == 0xFFFD || tok_is_control(cp)) return;
        if (tok_is_whitespace(cp)) cp = ' ';
    }
    if (tok->handle_chinese && tok_is_chinese(cp)) {
        strip_cp(e, ' ', track);
        if (!e->done) strip_cp(e, cp, track);
        if (!e->done) strip_cp(e, ' ', track);
        return;
    }
    strip_cp(e, cp, track);
}

static __attribute__((noinline)) void normalize_cp(struct enc *e, uint32_t cp) {
    normalize_impl(e, cp, 0);
}

static __attribute__((noinline)) void normalize_track(struct enc *e, uint32_t cp) {
    normalize_impl(e, cp, 1);
}

/* The BertNormalizer's output for one code point into out (at most
 * TOK_NORM_MAX code points); returns their count. The same steps as
 * normalize_impl, strip_cp and lower_cp, collected instead of streamed. */
#define TOK_NORM_MAX 32
static int bert_norm_cp(const embd_tokenizer *tok, uint32_t cp, uint32_t *out) {
    if (tok->clean_text) {
        if (cp == 0 || cp == 0xFFFD || tok_is_control(cp)) return 0;
        if (tok_is_whitespace(cp)) cp = ' ';
    }
    uint32_t in[3] = {cp, 0, 0};
    int n_in = 1, n = 0;
    if (tok->handle_chinese && tok_is_chinese(cp)) in[0] = ' ', in[1] = cp, in[2] = ' ', n_in = 3;
    for (int k = 0; k < n_in; k++) {
        utf8proc_int32_t d[8];
        int last = 0;
        utf8proc_ssize_t nd = 1;
        d[0] = (utf8proc_int32_t)in[k];
        if (tok->strip_accents && !tok_nf_keep(in[k], 0))
            nd = utf8proc_decompose_char(d[0], d, 8, UTF8PROC_DECOMPOSE, &last);
        if (nd < 1 || nd > 8) nd = 1, d[0] = (utf8proc_int32_t)in[k];
        for (utf8proc_ssize_t i = 0; i < nd; i++) {
            uint32_t c = (uint32_t)d[i];
            if (tok->strip_accents && tok_is_nonspacing(c)) continue;
            uint32_t lo[3] = {c, 0, 0};
            int nl = tok->lowercase ? tok_lower(c, lo) : 1;
            for (int j = 0; j < nl && n < TOK_NORM_MAX; j++)
                out[n++] = lo[j];
        }
    }
    return n;
}

size_t tok_bert_normalize(const embd_tokenizer *tok, const char *s, size_t len, char *out,
                          size_t cap) {
    const unsigned char *u = (const unsigned char *)s;
    size_t at = 0;
    for (size_t p = 0, l; p < len; p += l) {
        uint32_t cps[TOK_NORM_MAX];
        const int n = bert_norm_cp(tok, tok_utf8_get(u + p, &l), cps);
        for (int i = 0; i < n; i++) {
            if (cap - at < 4) return (size_t)-1;
            at += tok_utf8_put(out + at, cps[i]);
        }
    }
    return at;
}

/* Whether the raw text at s (avail bytes of valid UTF-8) normalizes to a
 * text that starts with want (wlen bytes); *raw its raw length then. */
static int norm_prefix(const embd_tokenizer *tok, const unsigned char *s, size_t avail,
                       const char *want, size_t wlen, size_t *raw) {
    size_t got = 0, q = 0;
    while (got < wlen) {
        if (q >= avail) return 0;
        size_t l;
        uint32_t cps[TOK_NORM_MAX];
        const int n = bert_norm_cp(tok, tok_utf8_get(s + q, &l), cps);
        q += l;
        for (int i = 0; i < n; i++) {
            char b[4];
            size_t bl = tok_utf8_put(b, cps[i]);
            if (got + bl > wlen || memcmp(want + got, b, bl) != 0) return 0;
            got += bl;
        }
    }
    *raw = q;
    return 1;
}

/* The longest added token at s (leftmost-longest, as tokenizers matches
 * them), or -1. Sets *len to its length in s. Tokens matched in the raw text
 * come first (tokenizers splits on them before normalizing); then those
 * matched where the normalizer spells them. */
static int match_added(const embd_tokenizer *tok, const char *s, size_t avail, size_t *len) {
    int best = -1;
    size_t best_len = 0;
    for (int i = 0; i < tok->n_added; i++) {
        size_t l = tok->added[i].len;
        if (tok->added[i].normalized) continue;
        if (l > best_len && l <= avail && memcmp(tok->pool + tok->added[i].off, s, l) == 0) {
            best = i;
            best_len = l;
        }
    }
    if (best < 0) {
        size_t best_n = 0;
        for (int i = 0; i < tok->n_added; i++) {
            const struct tok_added *a = &tok->added[i];
            size_t raw;
            if (!a->normalized || a->nlen <= best_n) continue;
            if (norm_prefix(tok, (const unsigned char *)s, avail, tok->pool + a->noff, a->nlen,
                            &raw)) {
                best = i;
                best_n = a->nlen;
                best_len = raw;
            }
        }
    }
    *len = best_len;
    return best;
}

/* Copies s into a new buffer with each maximal invalid UTF-8 subpart replaced
 * by U+FFFD, exactly as Python's bytes.decode("utf-8", "replace"). With
 * `sites`, also lists where each U+FFFD went (*sites: embd_free it). */
static enum embd_status utf8_repair(const char *s, size_t len, char **out, size_t *out_len,
                                    struct rep_site **sites, size_t *nsites) {
    const unsigned char *p = (const unsigned char *)s;
    char *o = embd_malloc2(len, 3);
    if (!o) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
    size_t i = 0, k = 0, ns = 0, scap = 0;
    struct rep_site *st = NULL;
    while (i < len) {
        if (p[i] < 0x80) {
            o[k++] = (char)p[i++];
            continue;
        }
        bool ok;
        const size_t j = i + embd_utf8_unit(s + i, len - i, &ok);
        if (ok) {
            memcpy(o + k, s + i, j - i);
            k += j - i;
        } else {
            if (sites) {
                if (ns == scap) {
                    scap = scap ? scap * 2 : 16;
                    struct rep_site *g = embd_realloc(st, scap * sizeof *g);
                    if (!g) {
                        embd_free(st);
                        embd_free(o);
                        return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
                    }
                    st = g;
                }
                st[ns++] = (struct rep_site){.at = k, .delta = k + 3 - j};
            }
            k += tok_utf8_put(o + k, 0xFFFD);
        }
        i = j;
    }
    *out = o;
    *out_len = k;
    if (sites) *sites = st, *nsites = ns;
    return EMBD_OK;
}

/* Offsets: position p of the (repaired) text as a position in the caller's
 * text. Called with positions that never decrease. */
static size_t orig_pos(struct enc *e, size_t p) {
    while (e->site_i < e->nsites && e->sites[e->site_i].at < p)
        e->delta = e->sites[e->site_i++].delta;
    return p - e->delta;
}

/* The main loop over valid UTF-8. */
static ALWAYS_INLINE void encode_text(struct enc *e, const char *s, size_t len) {
    const embd_tokenizer *tok = e->tok;
    const unsigned char *u = (const unsigned char *)s;
    size_t p = 0;
    while (p < len && !e->done) {
        unsigned b = u[p];
        if (tok->added_first[b]) {
            size_t ml;
            int a = match_added(tok, s + p, len - p, &ml);
            if (a >= 0) {
                finish_plain(e);
                if (e->done) break;
                emit(e, tok->added[a].id);
                check_limit(e);
                p += ml;
                continue;
            }
        }
        if (b < 0x80) {
            switch (tok->ascii_class[b]) {
            case TOK_ASCII_DROP:
                break;
            case TOK_ASCII_SPACE:
                finish_plain(e);
                break;
            case TOK_ASCII_PUNCT:
                finish_plain(e);
                if (e->done) break;
                word_add_plain(e, b, 0);
                finish_plain(e);
                break;
            default:
                if (e->wchars < (size_t)tok->max_chars && e->wlen < e->wcap) {
                    e->word[e->wlen++] = (char)tok->ascii_lower[b];
                    e->wchars++;
                    e->run = NO_RUN;
                } else {
                    word_add_plain(e, tok->ascii_lower[b], 0);
                }
                break;
            }
            p++;
            continue;
        }
        size_t l;
        uint32_t cp = tok_utf8_get(u + p, &l);
        normalize_cp(e, cp);
        p += l;
    }
    if (!e->done) finish_plain(e);
}

/* encode_text with offsets: every character's range is known to the word
 * (e->cs, e->ce), ASCII takes the general path, and the runs of
 * non-starters are kept for run_resolve. */
static __attribute__((noinline)) void encode_text_track(struct enc *e, const char *s, size_t len) {
    const embd_tokenizer *tok = e->tok;
    const unsigned char *u = (const unsigned char *)s;
    size_t p = 0, seg = 0; /* seg: where the text after the last added token begins */
    while (p < len && !e->done) {
        unsigned b = u[p];
        if (tok->added_first[b]) {
            size_t ml;
            int a = match_added(tok, s + p, len - p, &ml);
            if (a >= 0) {
                finish_track(e);
                if (e->done) break;
                /* lstrip / rstrip: the whitespace around it joins its span
                 * (not before the previous added token) */
                size_t from = p, to = p + ml, l;
                while (tok->added[a].lstrip && from > seg) {
                    size_t b0 = from - 1;
                    while (b0 > seg && (u[b0] & 0xC0) == 0x80)
                        b0--;
                    if (!tok_is_whitespace(tok_utf8_get(u + b0, &l))) break;
                    from = b0;
                }
                while (tok->added[a].rstrip && to < len &&
                       tok_is_whitespace(tok_utf8_get(u + to, &l)))
                    to += l;
                size_t start = orig_pos(e, p) - (p - from), at = e->off + e->n;
                emit_at(e, tok->added[a].id, start, orig_pos(e, to));
                if (e->typed && at < e->cap && e->n <= e->limit) e->typed[at] = 1; /* written */
                check_limit(e);
                p = seg = to;
                continue;
            }
        }
        e->cs = orig_pos(e, p);
        if (b < 0x80) {
            e->ce = e->cs + 1;
            switch (tok->ascii_class[b]) {
            case TOK_ASCII_DROP:
                break;
            case TOK_ASCII_SPACE:
                finish_track(e);
                break;
            case TOK_ASCII_PUNCT:
                finish_track(e);
                if (e->done) break;
                word_add_track(e, b, 0);
                finish_track(e);
                break;
            default:
                if (e->rn) run_resolve(e);
                if (e->wchars < (size_t)tok->max_chars && e->wlen < e->wcap) {
                    if (e->wchars == 0) e->wfirst = e->cs;
                    e->wlast = e->ce;
                    e->was[e->wlen] = e->cs;
                    e->wae[e->wlen] = e->ce;
                    e->word[e->wlen++] = (char)tok->ascii_lower[b];
                    e->wchars++;
                    e->run = NO_RUN;
                } else {
                    word_add_track(e, tok->ascii_lower[b], 0);
                }
                break;
            }
            if (tok->ascii_class[b] != TOK_ASCII_DROP) e->lcs = e->cs, e->lce = e->ce;
            p++;
            continue;
        }
        size_t l;
        uint32_t cp = tok_utf8_get(u + p, &l);
        e->ce = orig_pos(e, p + l);
        normalize_track(e, cp);
        p += l;
    }
    if (!e->done) finish_track(e);
}

/* Where encode_pieces_track writes offsets; each may be NULL. */
struct offs_out {
    size_t *starts, *stops;
    uint8_t *special;
    uint8_t *typed; /* (cap) or NULL: which tokens are added tokens matched in the text */
};

/* Encodes the pieces of one text (no special tokens) into ids[off ..],
 * keeping at most `limit`; *n gets the count kept and *truncated whether
 * more were seen. Writes only below cap. */
static enum embd_status encode_pieces(const embd_tokenizer *tok, const char *text, size_t len,
                                      size_t limit, int32_t *ids, size_t cap, size_t off, size_t *n,
                                      int *truncated) {
    char *fixed = NULL;
    if (len && !embd_utf8_valid(text, len)) {
        enum embd_status st = utf8_repair(text, len, &fixed, &len, NULL, NULL);
        if (st != EMBD_OK) return st;
        text = fixed;
    }
    struct enc e = {.tok = tok,
                    .ids = ids,
                    .cap = cap,
                    .off = off,
                    .limit = limit,
                    .st = EMBD_OK,
                    .run = NO_RUN};
    check_limit(&e);
    if (!e.done) encode_text(&e, text, len);
    embd_free(e.word);
    embd_free(fixed);
    *n = e.n;
    *truncated = e.truncated;
    return e.st;
}

/* encode_pieces for a SentencePiece tokenizer (tokenizer_unigram.c); a
 * function of its own, so that the WordPiece one stays as it was. */
static __attribute__((noinline)) enum embd_status
encode_pieces_uni(const embd_tokenizer *tok, const char *text, size_t len, size_t limit,
                  int32_t *ids, size_t cap, size_t off, size_t *n, int *truncated) {
    char *fixed = NULL;
    if (len && !embd_utf8_valid(text, len)) {
        enum embd_status st = utf8_repair(text, len, &fixed, &len, NULL, NULL);
        if (st != EMBD_OK) return st;
        text = fixed;
    }
    enum embd_status st = tok_uni_encode(tok, text, len, limit, ids, cap, off, n, truncated, NULL);
    embd_free(fixed);
    return st;
}

/* Offsets for a SentencePiece tokenizer: the repaired text's positions
 * mapped back to the caller's (each U+FFFD spans the bytes it replaced). */
static __attribute__((noinline)) enum embd_status
encode_pieces_uni_track(const embd_tokenizer *tok, const char *text, size_t len, size_t limit,
                        int32_t *ids, size_t cap, size_t off, size_t *n, int *truncated,
                        const struct offs_out *o) {
    char *fixed = NULL;
    size_t *pos = NULL;
    if (len && !embd_utf8_valid(text, len)) {
        struct rep_site *sites = NULL;
        size_t nsites = 0;
        enum embd_status st = utf8_repair(text, len, &fixed, &len, &sites, &nsites);
        if (st != EMBD_OK) return st;
        pos = embd_malloc2(len + 1, sizeof *pos); /* (len + 1) */
        if (!pos) {
            embd_free(sites);
            embd_free(fixed);
            return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        }
        size_t si = 0, delta = 0;
        for (size_t k = 0; k <= len; k++) {
            while (si < nsites && sites[si].at < k)
                delta = sites[si++].delta;
            pos[k] = k - delta;
        }
        embd_free(sites);
        text = fixed;
    }
    const struct tok_uni_offs uo = {.starts = o->starts, .stops = o->stops, .pos = pos};
    enum embd_status st = tok_uni_encode(tok, text, len, limit, ids, cap, off, n, truncated, &uo);
    embd_free(pos);
    embd_free(fixed);
    if (st == EMBD_OK && o->special)
        for (size_t i = 0; i < *n && off + i < cap; i++)
            o->special[off + i] = 0;
    return st;
}

/* Whether c (a character of a token's value) is what trim_offsets trims:
 * whitespace, or byte-level BPE's space 'Ġ'. */
static int trimmed_char(uint32_t c) {
    return c == 0x120 || tok_is_whitespace(c);
}

void tok_trim_offsets(const embd_tokenizer *tok, const char *v, size_t vl, int first, size_t *start,
                      size_t *stop) {
    if (!tok->trim_offsets || !vl) return;
    const unsigned char *b = (const unsigned char *)v;
    size_t lead = 0, trail = 0, i = 0, l;
    while (i < vl && trimmed_char(tok_utf8_get(b + i, &l))) {
        lead++;
        i += l;
    }
    size_t z = vl;
    while (z > 0) { /* the characters from the end (the whole value when all are trimmed) */
        size_t q = z - 1;
        while (q > 0 && (b[q] & 0xC0) == 0x80)
            q--;
        if (!trimmed_char(tok_utf8_get(b + q, &l))) break;
        trail++;
        z = q;
    }
    /* counted in characters and applied to byte offsets, as tokenizers does */
    if (lead) {
        if ((first || *start == 0) && tok->trim_prefix_space && lead == 1) lead = 0;
        *start = *start + lead < *stop ? *start + lead : *stop;
    }
    if (trail && *stop >= trail) *stop = *stop - trail > *start ? *stop - trail : *start;
}

/* encode_pieces with the offsets (a function of its own, so that the plain
 * one stays as lean as it was). */
static __attribute__((noinline)) enum embd_status
encode_pieces_track(const embd_tokenizer *tok, const char *text, size_t len, size_t limit,
                    int32_t *ids, size_t cap, size_t off, size_t *n, int *truncated,
                    const struct offs_out *o) {
    if (tok->uni)
        return encode_pieces_uni_track(tok, text, len, limit, ids, cap, off, n, truncated, o);
    char *fixed = NULL;
    struct rep_site *sites = NULL;
    size_t nsites = 0;
    if (len && !embd_utf8_valid(text, len)) {
        enum embd_status st = utf8_repair(text, len, &fixed, &len, &sites, &nsites);
        if (st != EMBD_OK) return st;
        text = fixed;
    }
    struct enc e = {.tok = tok,
                    .ids = ids,
                    .cap = cap,
                    .off = off,
                    .limit = limit,
                    .st = EMBD_OK,
                    .run = NO_RUN,
                    .track = 1,
                    .starts = o->starts,
                    .stops = o->stops,
                    .special = o->special,
                    .typed = o->typed,
                    .sites = sites,
                    .nsites = nsites};
    check_limit(&e);
    if (!e.done) encode_text_track(&e, text, len);
    embd_free(e.word);
    embd_free(e.was);
    embd_free(e.wae);
    embd_free(e.rent);
    embd_free(sites);
    embd_free(fixed);
    *n = e.n;
    *truncated = e.truncated;
    return e.st;
}

/* One text, with the post-processor's tokens when add_special; with o, the
 * offsets too (the special tokens: 0..0, special 1). */
static enum embd_status encode_one(const embd_tokenizer *tok, const char *text, size_t len,
                                   int max_tokens, bool add_special, int32_t *ids, size_t cap,
                                   size_t *n, bool *truncated, const struct offs_out *o) {
    if (n) *n = 0;
    if (truncated) *truncated = false;
    if (!tok || !n || (!text && len) || (!ids && cap))
        return embd_error(EMBD_ERR_INVALID_ARG, "tokenizer: NULL argument");
    const int n_pre = add_special ? tok->n_pre : 0, n_post = add_special ? tok->n_post : 0;
    int n_special = n_pre + n_post;
    if (max_tokens < n_special)
        return embd_error(EMBD_ERR_INVALID_ARG,
                          "tokenizer: max_tokens %d is less than the %d special tokens", max_tokens,
                          n_special);
    size_t pieces;
    int cut;
    const size_t limit = (size_t)(max_tokens - n_special);
    /* trim_offsets reads an added token's value from the text it matched:
     * which tokens were matched (an [UNK] the model gave has the same id) */
    const bool trim = o && !tok->uni && tok->trim_offsets && o->starts && o->stops;
    struct offs_out ot;
    if (trim) {
        ot = *o;
        if (!(ot.typed = embd_calloc(cap ? cap : 1, 1)))
            return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        o = &ot;
    }
    enum embd_status st =
        o ? encode_pieces_track(tok, text, len, limit, ids, cap, (size_t)n_pre, &pieces, &cut, o)
        : tok->uni
            ? encode_pieces_uni(tok, text, len, limit, ids, cap, (size_t)n_pre, &pieces, &cut)
            : encode_pieces(tok, text, len, limit, ids, cap, (size_t)n_pre, &pieces, &cut);
    if (st == EMBD_OK && trim)
        for (size_t i = 0; i < pieces && (size_t)n_pre + i < cap; i++) {
            /* each token's value: an added token matched in the text has
             * the text it matched, with the whitespace its lstrip / rstrip
             * took in; every other token (an [UNK] the model gave too) its
             * string */
            const size_t at = (size_t)n_pre + i;
            const char *v = embd_tokenizer_id_to_token(tok, ids[at]);
            size_t vl = v ? strlen(v) : 0;
            if (ot.typed[at] && o->stops[at] > o->starts[at]) {
                v = text + o->starts[at];
                vl = o->stops[at] - o->starts[at];
            }
            if (v) tok_trim_offsets(tok, v, vl, i == 0, &o->starts[at], &o->stops[at]);
        }
    if (trim) embd_free(ot.typed);
    if (st != EMBD_OK) return st;
    size_t total = (size_t)n_special + pieces;
    if (truncated) *truncated = cut != 0;
    for (int i = 0; i < n_pre + n_post; i++) {
        size_t at = i < n_pre ? (size_t)i : pieces + (size_t)i;
        if (at >= cap) continue;
        ids[at] = i < n_pre ? tok->pre_ids[i] : tok->post_ids[i - n_pre];
        if (o && o->starts) o->starts[at] = 0;
        if (o && o->stops) o->stops[at] = 0;
        if (o && o->special) o->special[at] = 1;
    }
    *n = total;
    if (total > cap)
        return embd_error(EMBD_ERR_BUFFER_TOO_SMALL, "tokenizer: %zu ids do not fit in %zu", total,
                          cap);
    return EMBD_OK;
}

enum embd_status embd_tokenizer_encode(const embd_tokenizer *tok, const char *text, size_t len,
                                       int max_tokens, int32_t *ids, size_t cap, size_t *n,
                                       bool *truncated) {
    return encode_one(tok, text, len, max_tokens, true, ids, cap, n, truncated, NULL);
}

enum embd_status embd_tokenizer_encode_offsets(const embd_tokenizer *tok, const char *text,
                                               size_t len, int max_tokens, bool add_special,
                                               int32_t *ids, size_t *starts, size_t *stops,
                                               uint8_t *special, size_t cap, size_t *n,
                                               bool *truncated) {
    const struct offs_out o = {.starts = starts, .stops = stops, .special = special};
    return encode_one(tok, text, len, max_tokens, add_special, ids, cap, n, truncated, &o);
}

/* All the pieces of one text into *buf (grown as needed; *bcap its size). */
static enum embd_status all_pieces(const embd_tokenizer *tok, const char *text, size_t len,
                                   int32_t **buf, size_t *bcap, size_t *n) {
    for (;;) {
        int cut;
        enum embd_status st =
            tok->uni ? encode_pieces_uni(tok, text, len, (size_t)-1 / 2, *buf, *bcap, 0, n, &cut)
                     : encode_pieces(tok, text, len, (size_t)-1 / 2, *buf, *bcap, 0, n, &cut);
        if (st != EMBD_OK || *n <= *bcap) return st;
        int32_t *b = embd_realloc(*buf, *n * sizeof **buf);
        if (!b) return embd_error(EMBD_ERR_NOMEM, "tokenizer: out of memory");
        *buf = b;
        *bcap = *n;
    }
}

/* Hugging Face's longest_first: the pair's pieces n[0], n[1] cut to fit
 * `budget` together, the shorter kept whole when the longer can make room,
 * else both halved (the longer keeps the odd one). */
static void longest_first(size_t n[2], size_t budget) {
    if (n[0] + n[1] <= budget) return;
    const int swap = n[0] > n[1];
    size_t a = swap ? n[1] : n[0], b;
    if (a > budget) {
        b = a;
    } else {
        b = a > budget - a ? a : budget - a;
    }
    if (a + b > budget) {
        a = budget / 2;
        b = a + budget % 2;
    }
    const size_t lim0 = swap ? b : a, lim1 = swap ? a : b;
    if (n[0] > lim0) n[0] = lim0;
    if (n[1] > lim1) n[1] = lim1;
}

enum embd_status embd_tokenizer_encode_pair(const embd_tokenizer *tok, const char *a, size_t alen,
                                            const char *b, size_t blen, int max_tokens,
                                            bool truncate, int32_t *ids, int32_t *types, size_t cap,
                                            size_t *n, bool *truncated) {
    if (n) *n = 0;
    if (truncated) *truncated = false;
    if (!tok || !n || (!a && alen) || (!b && blen) || (!ids && cap) || (!types && cap))
        return embd_error(EMBD_ERR_INVALID_ARG, "tokenizer: NULL argument");
    if (!tok->n_pair)
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "tokenizer.json: the post_processor has no pair template");
    const size_t n_special = (size_t)tok->n_pair - 2;
    if (max_tokens < 0 || (size_t)max_tokens < n_special)
        return embd_error(EMBD_ERR_INVALID_ARG,
                          "tokenizer: max_tokens %d is less than the %zu special tokens of a pair",
                          max_tokens, n_special);
    int32_t *seg[2] = {NULL, NULL};
    size_t segcap[2] = {0, 0}, len[2];
    enum embd_status st = all_pieces(tok, a, alen, &seg[0], &segcap[0], &len[0]);
    if (st == EMBD_OK) st = all_pieces(tok, b, blen, &seg[1], &segcap[1], &len[1]);
    if (st != EMBD_OK) goto done;
    const size_t budget = (size_t)max_tokens - n_special, full = len[0] + len[1];
    if (full > budget) {
        if (!truncate) {
            *n = full + n_special; /* the count without truncation */
            st = embd_error(EMBD_ERR_TOO_LONG,
                            "tokenizer: the pair has %zu tokens; the model takes at most %d",
                            full + n_special, max_tokens);
            goto done;
        }
        longest_first(len, budget);
        if (truncated) *truncated = true;
    }
    size_t k = 0;
    for (int i = 0; i < tok->n_pair; i++) {
        const struct tok_pair_item *it = &tok->pair[i];
        if (it->seq < 0) {
            if (k < cap) ids[k] = it->id, types[k] = it->type;
            k++;
            continue;
        }
        for (size_t j = 0; j < len[it->seq]; j++, k++)
            if (k < cap) ids[k] = seg[it->seq][j], types[k] = it->type;
    }
    *n = k;
    if (k > cap)
        st = embd_error(EMBD_ERR_BUFFER_TOO_SMALL, "tokenizer: %zu ids do not fit in %zu", k, cap);
done:
    embd_free(seg[0]);
    embd_free(seg[1]);
    return st;
}
