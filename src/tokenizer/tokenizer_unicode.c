/* tokenizer_unicode.c — the per-code-point rules of BertNormalizer and
 * BertPreTokenizer, as Hugging Face `tokenizers` applies them (Rust char
 * methods and the unicode_categories crate), from tables generated from
 * tokenizers itself (tokenizer_tables.h); NFD comes from utf8proc.
 * tests/tokenizer compares each of them with `tokenizers` over all of Unicode. */
#include "tokenizer/tokenizer_internal.h"

#include "tokenizer/tokenizer_tables.h"

#include <stddef.h>

/* Rust char::is_whitespace: the Unicode White_Space property. */
int tok_is_whitespace(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
        return 1;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

/* Binary search in sorted inclusive ranges. */
static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) {
            hi = mid;
        } else if (cp > r[mid][1]) {
            lo = mid + 1;
        } else {
            return 1;
        }
    }
    return 0;
}

#define IN_TABLE(t, cp) in_ranges(t, sizeof(t) / sizeof(t[0]), cp)

/* BertNormalizer is_control (Cc, Cf, Co, ... in tokenizers' Unicode version;
 * tab, LF and CR are whitespace instead). Also true for U+0000 and U+FFFD,
 * which clean_text drops as well. */
int tok_is_control(uint32_t cp) {
    if (cp < 0x80) return (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7F;
    return IN_TABLE(tok_control_ranges, cp);
}

/* BertPreTokenizer is_bert_punc: ASCII punctuation or P* (tokenizers' version). */
int tok_is_punct(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
               (cp >= 123 && cp <= 126);
    return IN_TABLE(tok_punct_ranges, cp);
}

/* BertNormalizer is_chinese_char: the CJK ideograph blocks it lists. */
int tok_is_chinese(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Category Mn as tokenizers sees it (dropped by strip_accents after NFD). */
int tok_is_nonspacing(uint32_t cp) {
    return cp >= 0x300 && IN_TABLE(tok_mn_ranges, cp);
}

/* Code points that utf8proc decomposes under NFD (canonical) or NFKD
 * (compat) and tokenizers' older normalization tables leave alone. */
int tok_nf_keep(uint32_t cp, int compat) {
    if (cp < 0x7FD) return 0;
    return compat ? IN_TABLE(tok_nfkd_keep_ranges, cp) : IN_TABLE(tok_nfd_keep_ranges, cp);
}

/* Rust char::to_lowercase: one code point, except U+0130, whose lowercase is
 * two (i + combining dot above). */
int tok_lower(uint32_t cp, uint32_t out[3]) {
    out[0] = cp;
    if (cp < 0x80) {
        if (cp >= 'A' && cp <= 'Z') out[0] = cp + 32;
        return 1;
    }
    if (cp == 0x130) {
        out[0] = 'i';
        out[1] = 0x307;
        return 2;
    }
    size_t lo = 0, hi = sizeof(tok_lower_map) / sizeof(tok_lower_map[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < tok_lower_map[mid][0]) {
            hi = mid;
        } else if (cp > tok_lower_map[mid][0]) {
            lo = mid + 1;
        } else {
            out[0] = tok_lower_map[mid][1];
            break;
        }
    }
    return 1;
}
