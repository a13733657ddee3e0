/* tokenizer.h — tokenization with exact Hugging Face `tokenizers` parity,
 * read from a tokenizer.json: BERT's WordPiece (tokenizer_encode.c) and
 * SentencePiece's Unigram, as XLM-RoBERTa, multilingual-e5,
 * paraphrase-multilingual and bge-m3 have it (tokenizer_unigram.c). */
#ifndef EMBD_TOKENIZER_H
#define EMBD_TOKENIZER_H

#include "embd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct embd_tokenizer embd_tokenizer;

/* Parses the contents of a tokenizer.json (`len` bytes, need not be
 * NUL-terminated). Supported: model WordPiece with normalizer BertNormalizer
 * (or null) and pre_tokenizer BertPreTokenizer (or null); model Unigram
 * (unk_id, byte_fallback; scores read as tokenizers' serde_json reads them)
 * with normalizers Precompiled (the precompiled_charsmap, checked), NFC, NFD,
 * NFKC, NFKD, Lowercase, Strip, Prepend, Replace (a string, or a regex that
 * is one character repeated: " {2,}", "x+") and Sequence, and pre-tokenizers
 * Metaspace (prepend_scheme or add_prefix_space, split), WhitespaceSplit and
 * Sequence; post_processor TemplateProcessing, BertProcessing or
 * RobertaProcessing; added_tokens (not normalized, not single_word; lstrip /
 * rstrip). Anything else: EMBD_ERR_UNSUPPORTED naming it. Malformed JSON or
 * inconsistent fields: EMBD_ERR_MODEL_FORMAT. */
enum embd_status embd_tokenizer_load(embd_tokenizer **out, const char *json, size_t len);
void embd_tokenizer_free(embd_tokenizer *tok);

/* Encodes one text: the post-processor's template around its pieces ([CLS]
 * pieces [SEP], <s> pieces </s>), truncated so the total is at most
 * max_tokens (>= 2; the special tokens are kept, the pieces cut from the end,
 * as `tokenizers` does with truncation max_length = max_tokens). Invalid UTF-8
 * is read as U+FFFD per maximal subpart (Python's decode("utf-8", "replace")).
 * The text's length is `len` bytes: a NUL is a character like any other
 * (the BERT normalizer drops it). Writes at most `cap` ids, sets *n to the
 * count after truncation and, when `truncated` is not NULL, whether pieces
 * were cut; returns EMBD_ERR_BUFFER_TOO_SMALL when *n > cap. Thread-safe on
 * a shared tokenizer. */
enum embd_status embd_tokenizer_encode(const embd_tokenizer *tok, const char *text, size_t len,
                                       int max_tokens, int32_t *ids, size_t cap, size_t *n,
                                       bool *truncated);

/* Like embd_tokenizer_encode, and also the offsets of each id as Hugging Face
 * `tokenizers` gives them (Encoding::get_offsets): [starts[i], stops[i]) is the
 * byte range of the caller's text the token came from, after the normalizer's
 * alignments (a lowercased or accent-stripped character maps to its original
 * bytes; a word-level [UNK] spans the word; an added token matched in the text
 * spans its match, and the whitespace its lstrip / rstrip take in), and
 * special[i] is 1 for a token the post-processor added ([CLS], [SEP]; range
 * 0..0), else 0. Where the text is not valid UTF-8, an invalid sequence read as
 * U+FFFD spans its own bytes (the maximal subpart it replaces), so ranges refer
 * to the text as given. add_special false: no post-processor tokens, and at
 * most max_tokens pieces (as `tokenizers` truncates with
 * add_special_tokens=False). Any of starts, stops and special may be NULL;
 * max_tokens INT_MAX does not truncate in practice. Tracks the offsets only
 * here: embd_tokenizer_encode stays as it is. Same returns as
 * embd_tokenizer_encode. A Unigram tokenizer's offsets follow tokenizers'
 * alignments through every normalizer (Precompiled grapheme by grapheme;
 * NFC / NFD / NFKC / NFKD with their reordering and composition; Lowercase,
 * Strip, Prepend, Replace) and the Metaspace and WhitespaceSplit
 * pre-tokenizers (a ▁ takes the span of the space it stands for, a
 * prepended one the first character's; byte-fallback pieces the whole
 * run's). RobertaProcessing's trim_offsets moves offsets off a token's
 * whitespace, in bytes, as the Rust crate does. */
enum embd_status embd_tokenizer_encode_offsets(const embd_tokenizer *tok, const char *text,
                                               size_t len, int max_tokens, bool add_special,
                                               int32_t *ids, size_t *starts, size_t *stops,
                                               uint8_t *special, size_t cap, size_t *n,
                                               bool *truncated);

/* Encodes a pair (a query and a document, for a cross-encoder) as the
 * post-processor's pair template says ([CLS] a [SEP] b [SEP] for BERT), each
 * id with its type id in types (0 for a and its tokens, 1 for b, as the
 * template gives). When the pair has more than max_tokens ids, truncate cuts
 * it as `tokenizers` does with strategy longest_first (the shorter side kept
 * whole when the longer can give up enough, else both cut to half of what is
 * left); without truncate it returns EMBD_ERR_TOO_LONG and *n the full count.
 * EMBD_ERR_UNSUPPORTED when the tokenizer has no pair template. Writes at
 * most cap ids and types; EMBD_ERR_BUFFER_TOO_SMALL when *n > cap. */
enum embd_status embd_tokenizer_encode_pair(const embd_tokenizer *tok, const char *a, size_t alen,
                                            const char *b, size_t blen, int max_tokens,
                                            bool truncate, int32_t *ids, int32_t *types, size_t cap,
                                            size_t *n, bool *truncated);

/* Number of ids (the largest id + 1, added tokens included). */
int embd_tokenizer_vocab_size(const embd_tokenizer *tok);

/* Whether the tokenizer's normalizer lowercases every text (BertNormalizer's
 * lowercase, or a Lowercase step of a SentencePiece chain). */
bool embd_tokenizer_lowercases(const embd_tokenizer *tok);

/* Whether Hugging Face's Encoding.tokens shows token `id` as the text it
 * stands for: a Unigram model's unknown token (embd_model_token_shows_text). */
bool embd_tokenizer_token_shows_text(const embd_tokenizer *tok, int32_t id);

/* The id of a token string (vocabulary or added token), or -1. */
int32_t embd_tokenizer_token_id(const embd_tokenizer *tok, const char *token);

/* The string of token `id` (the added token's content, else the vocabulary
 * token: "[CLS]", "hello", "##ing"), or NULL for an id out of range or
 * without one. Valid as long as the tokenizer. */
const char *embd_tokenizer_id_to_token(const embd_tokenizer *tok, int32_t id);

/* Decodes ids to text as Hugging Face's Tokenizer.decode(ids,
 * skip_special_tokens) does with the tokenizer.json's decoder: each id's
 * string (skip_special dropping the added tokens marked special, and any
 * token spelled as one), then the decoder: WordPiece (the prefix removed from
 * a continuing piece, a space before any other piece but the first, and with
 * cleanup the clean_up_tokenization replacements on each piece), or none
 * (the strings joined by spaces), or for a Unigram tokenizer the
 * SentencePiece decoders (Metaspace, ByteFallback, Fuse, Strip, Replace with a
 * string, Sequence). Writes at most cap bytes, NUL-terminated
 * when cap > 0; *len gets the full length without the NUL, and
 * EMBD_ERR_BUFFER_TOO_SMALL is returned when len + 1 > cap (cap 0 sizes it).
 * An id that is not a token: EMBD_ERR_INVALID_ARG naming its position. A
 * decoder other than those: EMBD_ERR_UNSUPPORTED naming it. */
enum embd_status embd_tokenizer_decode(const embd_tokenizer *tok, const int32_t *ids, size_t n,
                                       bool skip_special, char *buf, size_t cap, size_t *len);

/* A hash of everything that decides the ids (for the model fingerprint). */
uint64_t embd_tokenizer_fingerprint(const embd_tokenizer *tok);

#endif
