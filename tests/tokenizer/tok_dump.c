/* tok_dump — prints embd's token ids for lines of input, for the Python tests
 * that compare them with Hugging Face `tokenizers`.
 *
 *   tok_dump TOKENIZER_JSON MAX_TOKENS < input
 *       Each input line is one text, either a JSON string literal ("...", any
 *       escapes, \u0000 included) or "b64:" followed by the base64 of raw bytes
 *       (for invalid UTF-8). Prints one line of space-separated ids per text.
 *   tok_dump --codepoints
 *       Prints, for every code point but surrogates, the per-character rules:
 *       "cp clean pretok chinese lower strip" (hex), the format of the
 *       reference that test_tok_codepoints.py builds with tokenizers.
 *   tok_dump --bench TOKENIZER_JSON MAX_TOKENS REPEAT < input
 *       Encodes all texts REPEAT times and prints texts/s and tokens/s.
 *   tok_dump --offsets TOKENIZER_JSON MAX_TOKENS [--no-special] < input
 *       Like the first form, each id as "id:start:stop:special" (the byte
 *       offsets of embd_tokenizer_encode_offsets); --no-special: without the
 *       post-processor's tokens (add_special_tokens=False).
 *   tok_dump --pair TOKENIZER_JSON MAX_TOKENS < input
 *       Input lines two by two (each as in the first form) are a pair (a, b):
 *       prints embd_tokenizer_encode_pair's ids as "id:type", truncated
 *       longest_first to MAX_TOKENS, or "!" and the status number.
 *   tok_dump --normalize TOKENIZER_JSON < input
 *       Each input line (as in the first form, valid UTF-8) through the
 *       normalizers of a Unigram tokenizer: the result as a JSON string.
 *   tok_dump --decode TOKENIZER_JSON [--keep-special] < input
 *       Each input line holds space-separated ids; prints the text
 *       embd_tokenizer_decode gives (skip_special_tokens true, false with
 *       --keep-special) as a JSON string, or "!" and the status number.
 * Exit status 0, or 1 on any error (message on stderr). */
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"
#include "util/text.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

/* Decodes a JSON string literal in place-independent fashion into out (which
 * has room for len bytes). Returns the byte count or -1. */
static long json_string(const char *s, size_t len, char *out) {
    if (len < 2 || s[0] != '"' || s[len - 1] != '"') return -1;
    size_t k = 0;
    for (size_t i = 1; i + 1 < len; i++) {
        char c = s[i];
        if (c != '\\') {
            out[k++] = c;
            continue;
        }
        if (++i + 1 >= len) return -1;
        switch (s[i]) {
        case '"':
            out[k++] = '"';
            break;
        case '\\':
            out[k++] = '\\';
            break;
        case '/':
            out[k++] = '/';
            break;
        case 'b':
            out[k++] = '\b';
            break;
        case 'f':
            out[k++] = '\f';
            break;
        case 'n':
            out[k++] = '\n';
            break;
        case 'r':
            out[k++] = '\r';
            break;
        case 't':
            out[k++] = '\t';
            break;
        case 'u': {
            uint32_t v, lo;
            if (i + 5 > len - 1 || hex4(s + i + 1, &v)) return -1;
            i += 4;
            if (v >= 0xD800 && v <= 0xDBFF && i + 7 <= len - 1 && s[i + 1] == '\\' &&
                s[i + 2] == 'u' && !hex4(s + i + 3, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
            k += put_utf8(out + k, v);
            break;
        }
        default:
            return -1;
        }
    }
    return (long)k;
}

static long base64(const char *s, size_t len, char *out) {
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int d = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '+'             ? 62
                : c == '/'             ? 63
                : c == '='             ? -2
                                       : -1;
        if (d == -2) break;
        if (d < 0) return -1;
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (char)((acc >> bits) & 0xFF);
        }
    }
    return (long)k;
}

static void print_codepoints(void) {
    for (uint32_t c = 0; c < 0x110000; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        char cl = (c == 0 || c == 0xFFFD || tok_is_control(c)) ? 'D'
                  : (tok_is_whitespace(c) && c != ' ')         ? 'S'
                                                               : 'K';
        char pc = tok_is_whitespace(c) ? 'W' : tok_is_punct(c) ? 'P' : 'N';
        printf("%x %c %c %c ", c, cl, pc, tok_is_chinese(c) ? 'C' : '-');
        uint32_t lo[3];
        int nl = tok_lower(c, lo);
        for (int i = 0; i < nl; i++)
            printf(i ? ",%x" : "%x", lo[i]);
        /* the same decomposition as the encoder's strip_accents */
        utf8proc_int32_t d[8];
        int last = 0;
        utf8proc_ssize_t nd = 1;
        d[0] = (utf8proc_int32_t)c;
        if (c != 0x11938) nd = utf8proc_decompose_char(d[0], d, 8, UTF8PROC_DECOMPOSE, &last);
        int k = 0;
        printf(" ");
        for (utf8proc_ssize_t i = 0; i < nd; i++)
            if (!tok_is_nonspacing((uint32_t)d[i])) printf(k++ ? ",%x" : "%x", d[i]);
        if (!k) printf("-");
        printf("\n");
    }
}

static void put_stdout(void *ctx, const char *bytes, size_t n) {
    fwrite(bytes, 1, n, (FILE *)ctx);
}

/* --decode: lines of ids to decoded text. */
static int decode_lines(const char *path, bool skip) {
    char *json = NULL, *line = NULL;
    size_t json_len, line_cap = 0, ids_cap = 0, buf_cap = 0;
    int32_t *ids = NULL;
    char *buf = NULL;
    embd_tokenizer *tok = NULL;
    int rc = 1;
    if (embd_read_file(path, (size_t)1 << 30, &json, &json_len) != EMBD_OK ||
        embd_tokenizer_load(&tok, json, json_len) != EMBD_OK) {
        fprintf(stderr, "tok_dump: %s\n", embd_last_error());
        goto done;
    }
    while (getline(&line, &line_cap, stdin) >= 0) {
        size_t n = 0;
        char *p = line, *end;
        for (;;) {
            long long v = strtoll(p, &end, 10);
            if (end == p) break;
            if (n == ids_cap) {
                ids_cap = ids_cap ? ids_cap * 2 : 1024;
                ids = realloc(ids, ids_cap * sizeof *ids);
            }
            ids[n++] = (int32_t)v;
            p = end;
        }
        size_t len = 0;
        enum embd_status st = embd_tokenizer_decode(tok, ids, n, skip, buf, buf_cap, &len);
        if (st == EMBD_ERR_BUFFER_TOO_SMALL) {
            buf_cap = len + 1;
            buf = realloc(buf, buf_cap);
            st = embd_tokenizer_decode(tok, ids, n, skip, buf, buf_cap, &len);
        }
        if (st != EMBD_OK) {
            printf("!%d %s\n", (int)st, embd_last_error());
            continue;
        }
        embd_json_string(put_stdout, stdout, buf, len);
        printf("\n");
    }
    rc = 0;
done:
    free(ids);
    free(buf);
    free(line);
    embd_free(json);
    embd_tokenizer_free(tok);
    return rc;
}

/* --normalize: lines of text to their normalized form (Unigram tokenizers). */
static int normalize_lines(const char *path) {
    char *json = NULL, *line = NULL;
    size_t json_len, line_cap = 0;
    embd_tokenizer *tok = NULL;
    int rc = 1;
    if (embd_read_file(path, (size_t)1 << 30, &json, &json_len) != EMBD_OK ||
        embd_tokenizer_load(&tok, json, json_len) != EMBD_OK) {
        fprintf(stderr, "tok_dump: %s\n", embd_last_error());
        goto done;
    }
    ssize_t got;
    while ((got = getline(&line, &line_cap, stdin)) >= 0) {
        size_t l = (size_t)got;
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            l--;
        char *text = malloc(l + 1), *out = NULL;
        long tl = json_string(line, l, text);
        size_t n = 0;
        if (tl < 0 || tok_uni_normalize(tok, text, (size_t)tl, &out, &n) != EMBD_OK) {
            fprintf(stderr, "tok_dump: %s\n", tl < 0 ? "bad input line" : embd_last_error());
            free(text);
            goto done;
        }
        embd_json_string(put_stdout, stdout, out, n);
        printf("\n");
        embd_free(out);
        free(text);
    }
    rc = 0;
done:
    free(line);
    embd_free(json);
    embd_tokenizer_free(tok);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--codepoints") == 0) {
        print_codepoints();
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--normalize") == 0) return normalize_lines(argv[2]);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "--decode") == 0)
        return decode_lines(argv[2], !(argc == 4 && strcmp(argv[3], "--keep-special") == 0));
    int bench = argc == 5 && strcmp(argv[1], "--bench") == 0;
    int pair = argc == 4 && strcmp(argv[1], "--pair") == 0;
    int offs = (argc == 4 || argc == 5) && strcmp(argv[1], "--offsets") == 0;
    bool add_special = !(offs && argc == 5 && strcmp(argv[4], "--no-special") == 0);
    if (!bench && !offs && !pair && argc != 3) {
        fprintf(stderr,
                "usage: tok_dump TOKENIZER_JSON MAX_TOKENS < input\n"
                "       tok_dump --codepoints\n"
                "       tok_dump --bench TOKENIZER_JSON MAX_TOKENS REPEAT < input\n"
                "       tok_dump --offsets TOKENIZER_JSON MAX_TOKENS [--no-special] < input\n"
                "       tok_dump --pair TOKENIZER_JSON MAX_TOKENS < input\n"
                "       tok_dump --decode TOKENIZER_JSON [--keep-special] < input\n");
        return 1;
    }
    const char *path = argv[1 + (bench || offs || pair)];
    int max_tokens = atoi(argv[2 + (bench || offs || pair)]);
    int repeat = bench ? atoi(argv[4]) : 1;
    size_t *starts = embd_malloc2((size_t)max_tokens + 1, sizeof(size_t));
    size_t *stops = embd_malloc2((size_t)max_tokens + 1, sizeof(size_t));
    uint8_t *special = embd_malloc((size_t)max_tokens + 1);
    char *json = NULL, *line = NULL;
    size_t json_len, line_cap = 0;
    embd_tokenizer *tok = NULL;
    int rc = 1;
    char **texts = NULL;
    size_t *lens = NULL, n_texts = 0, texts_cap = 0;
    int32_t *ids = embd_malloc2((size_t)max_tokens + 1, sizeof(int32_t));
    if (embd_read_file(path, (size_t)1 << 30, &json, &json_len) != EMBD_OK ||
        embd_tokenizer_load(&tok, json, json_len) != EMBD_OK) {
        fprintf(stderr, "tok_dump: %s\n", embd_last_error());
        goto done;
    }
    ssize_t got;
    while ((got = getline(&line, &line_cap, stdin)) >= 0) {
        size_t l = (size_t)got;
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            l--;
        char *text = malloc(l + 1);
        long tl = strncmp(line, "b64:", 4) == 0 ? base64(line + 4, l - 4, text)
                                                : json_string(line, l, text);
        if (tl < 0) {
            fprintf(stderr, "tok_dump: bad input line %zu\n", n_texts + 1);
            free(text);
            goto done;
        }
        if (n_texts == texts_cap) {
            texts_cap = texts_cap ? texts_cap * 2 : 1024;
            texts = realloc(texts, texts_cap * sizeof(*texts));
            lens = realloc(lens, texts_cap * sizeof(*lens));
        }
        texts[n_texts] = text;
        lens[n_texts++] = (size_t)tl;
    }
    if (pair) {
        int32_t *types = embd_malloc2((size_t)max_tokens + 1, sizeof(int32_t));
        for (size_t i = 0; i + 1 < n_texts; i += 2) {
            size_t n = 0;
            enum embd_status st = embd_tokenizer_encode_pair(tok, texts[i], lens[i], texts[i + 1],
                                                             lens[i + 1], max_tokens, true, ids,
                                                             types, (size_t)max_tokens, &n, NULL);
            if (st != EMBD_OK) {
                printf("!%d\n", (int)st);
                continue;
            }
            for (size_t j = 0; j < n; j++)
                printf(j ? " %d:%d" : "%d:%d", (int)ids[j], (int)types[j]);
            printf("\n");
        }
        embd_free(types);
        rc = 0;
        goto done;
    }
    double t0 = embd_now();
    size_t total_ids = 0;
    for (int r = 0; r < repeat; r++) {
        for (size_t i = 0; i < n_texts; i++) {
            size_t n;
            enum embd_status st = offs ? embd_tokenizer_encode_offsets(
                                             tok, texts[i], lens[i], max_tokens, add_special, ids,
                                             starts, stops, special, (size_t)max_tokens, &n, NULL)
                                       : embd_tokenizer_encode(tok, texts[i], lens[i], max_tokens,
                                                               ids, (size_t)max_tokens, &n, NULL);
            if (st != EMBD_OK) {
                fprintf(stderr, "tok_dump: text %zu: %s\n", i + 1, embd_last_error());
                goto done;
            }
            total_ids += n;
            if (bench) continue;
            for (size_t j = 0; j < n; j++) {
                if (offs)
                    printf(j ? " %d:%zu:%zu:%d" : "%d:%zu:%zu:%d", (int)ids[j], starts[j], stops[j],
                           (int)special[j]);
                else
                    printf(j ? " %d" : "%d", (int)ids[j]);
            }
            printf("\n");
        }
    }
    if (bench) {
        double dt = embd_now() - t0;
        printf("%zu texts x %d in %.3f s: %.0f texts/s, %.0f tokens/s\n", n_texts, repeat, dt,
               (double)n_texts * repeat / dt, (double)total_ids / dt);
    }
    rc = 0;
done:
    for (size_t i = 0; i < n_texts; i++)
        free(texts[i]);
    free(texts);
    free(lens);
    free(line);
    embd_free(ids);
    embd_free(starts);
    embd_free(stops);
    embd_free(special);
    embd_free(json);
    embd_tokenizer_free(tok);
    return rc;
}
