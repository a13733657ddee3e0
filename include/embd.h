/*
 * embd.h — the public API of libembd, a text-embedding engine for BERT-family
 * sentence-embedding models (all-MiniLM-L6-v2, bge-small-en-v1.5, ...).
 *
 * Usage:
 *
 *     embd_model *model = NULL;
 *     if (embd_model_load("models/all-MiniLM-L6-v2", embd_model_default_params(), &model))
 *         fprintf(stderr, "embd: %s\n", embd_last_error());
 *     embd_ctx *ctx = NULL;
 *     embd_ctx_new(model, embd_ctx_default_params(), &ctx);
 *     const char *texts[2] = {"a cat sat on the mat", "fast text embeddings"};
 *     float out[2 * 384];   // (n, embd_model_dim(model))
 *     if (embd_embed(ctx, texts, NULL, 2, out) != EMBD_OK)
 *         fprintf(stderr, "embd: %s\n", embd_last_error());
 *     embd_ctx_free(ctx);
 *     embd_model_free(model);
 *
 * Conventions:
 * - Every function that can fail returns an `enum embd_status`; on failure a
 *   one-line message for the calling thread is kept in embd_last_error().
 *   The library never exits or aborts on bad input.
 * - A model is read-only after loading and may be shared by many contexts and
 *   threads. A context is used by one thread at a time.
 * - Shapes in comments: n = number of texts, D = embedding dimension.
 */
#ifndef EMBD_H
#define EMBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMBD_VERSION "0.1.0"

#if defined(__GNUC__)
#define EMBD_API __attribute__((visibility("default")))
#else
#define EMBD_API
#endif

/* Status codes. EMBD_OK is 0; everything else is an error. */
enum embd_status {
    EMBD_OK = 0,
    EMBD_ERR_INVALID_ARG,      /* a NULL handle, a bad size or option */
    EMBD_ERR_IO,               /* a file could not be opened, read or mapped */
    EMBD_ERR_MODEL_FORMAT,     /* a model file is malformed, truncated or inconsistent */
    EMBD_ERR_UNSUPPORTED,      /* a valid model or option that embd does not support */
    EMBD_ERR_NOMEM,            /* an allocation failed */
    EMBD_ERR_BUFFER_TOO_SMALL, /* the caller's buffer is too small; the needed size is returned */
    EMBD_ERR_BACKEND,          /* the compute backend failed */
    EMBD_ERR_INTERNAL,         /* a bug in embd */
    EMBD_ERR_BUSY,             /* a shared engine's queue stayed full for the whole timeout */
    EMBD_ERR_CANCELLED,        /* the caller cancelled a queued request (embd_sched_embed_ex) */
    EMBD_ERR_TIMEOUT,          /* a queued request's deadline passed (embd_sched_embed_ex) */
    EMBD_ERR_TOO_LONG,         /* an input has more tokens than the model takes and the call
                                  asked not to truncate; embd_embed_info says which */
};

/* A short constant description of a status ("ok", "invalid argument", ...). */
EMBD_API const char *embd_status_str(enum embd_status status);

/* The message of the last error on this thread ("" if none). Valid until the
 * next embd call on the same thread. */
EMBD_API const char *embd_last_error(void);

/* ------------------------------------------------------------------------ */
/* Models                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct embd_model embd_model;

struct embd_model_params {
    int max_seq_length; /* 0: the model's own (sentence_bert_config.json, else config.json);
                           otherwise tokens per input after truncation, [CLS]/[SEP] included,
                           at most max_position_embeddings. Default 0. */
};

EMBD_API struct embd_model_params embd_model_default_params(void);

/* Loads a Hugging Face model directory: config.json, model.safetensors,
 * tokenizer.json and, when present, tokenizer_config.json, modules.json,
 * 1_Pooling/config.json and sentence_bert_config.json. The weights are
 * mapped read-only. Returns EMBD_OK, EMBD_ERR_INVALID_ARG, EMBD_ERR_IO,
 * EMBD_ERR_MODEL_FORMAT, EMBD_ERR_UNSUPPORTED or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_model_load(const char *dir, struct embd_model_params params,
                                          embd_model **out);
EMBD_API void embd_model_free(embd_model *model);

/* Embedding dimension D (hidden size). */
EMBD_API int embd_model_dim(const embd_model *model);
/* Tokens per input after truncation, [CLS] and [SEP] included. */
EMBD_API int embd_model_max_tokens(const embd_model *model);
/* Vocabulary size; valid token ids are 0 .. vocab-1. */
EMBD_API int embd_model_vocab_size(const embd_model *model);
/* "cls" or "mean". */
EMBD_API const char *embd_model_pooling(const embd_model *model);
/* Whether the model ends in an L2 normalisation (sentence-transformers Normalize). */
EMBD_API bool embd_model_normalizes(const embd_model *model);
/* Whether the model is a cross-encoder (reranker; BertForSequenceClassification
 * with one label, e.g. cross-encoder/ms-marco-MiniLM-L-6-v2): it scores
 * (query, document) pairs with embd_rerank, and embd_embed refuses it. */
EMBD_API bool embd_model_is_reranker(const embd_model *model);
/* The prompt the model declares under `name` in
 * config_sentence_transformers.json ("prompts": {"query": "query: ", ...}),
 * or NULL when it declares none of that name. Valid as long as the model. */
EMBD_API const char *embd_model_prompt(const embd_model *model, const char *name);
/* The i-th prompt name (0 <= i < embd_model_prompt_count), or NULL. */
EMBD_API const char *embd_model_prompt_name(const embd_model *model, int i);
EMBD_API int embd_model_prompt_count(const embd_model *model);
/* config_sentence_transformers.json's default_prompt_name, or NULL. */
EMBD_API const char *embd_model_default_prompt_name(const embd_model *model);
/* A 64-bit fingerprint of the weights, the tokenizer and the configuration. */
EMBD_API uint64_t embd_model_fingerprint(const embd_model *model);

/* Tokenizes one text exactly as Hugging Face `tokenizers` does for this model
 * ([CLS] ... [SEP], truncated to embd_model_max_tokens). `len` is the text's
 * length in bytes. Invalid UTF-8 sequences are read as U+FFFD (like Python's
 * bytes.decode("utf-8", "replace")). Writes at most `cap` ids and sets
 * *n_ids to the full count; returns EMBD_ERR_BUFFER_TOO_SMALL if that is more
 * than `cap`. Thread-safe. */
EMBD_API enum embd_status embd_tokenize(const embd_model *model, const char *text, size_t len,
                                        int32_t *ids, size_t cap, size_t *n_ids);

/* Tokenizes a pair (a query and a document) as a cross-encoder sees it:
 * the tokenizer's pair template ([CLS] a [SEP] b [SEP] for BERT) with each
 * id's token type in types (0, then 1), cut to embd_model_max_tokens with
 * Hugging Face's longest_first truncation. Writes at most `cap` ids and
 * types and sets *n_ids to the count; EMBD_ERR_BUFFER_TOO_SMALL if that is
 * more than cap; EMBD_ERR_UNSUPPORTED when the tokenizer has no pair
 * template. Thread-safe. */
EMBD_API enum embd_status embd_tokenize_pair(const embd_model *model, const char *a, size_t alen,
                                             const char *b, size_t blen, int32_t *ids,
                                             int32_t *types, size_t cap, size_t *n_ids);

/* Counts the ids embd_tokenize would give without truncation ([CLS] and
 * [SEP] included), so that a caller can refuse, rather than truncate, a text
 * longer than embd_model_max_tokens. Thread-safe. Returns EMBD_OK,
 * EMBD_ERR_INVALID_ARG or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_count_tokens(const embd_model *model, const char *text, size_t len,
                                            size_t *n_tokens);

/* For a server's POST /tokenize: tokenizes one text as embd_tokenize does
 * and gives each id's offsets as Hugging Face `tokenizers` does
 * (Encoding::get_offsets): [starts[i], stops[i]) is the byte range of `text`
 * the token came from. The normalizer's changes map back to the original bytes: a lowercased,
 * accent-stripped or decomposed character gives its own bytes (accents dropped
 * by strip_accents, control characters and NULs dropped by clean_text belong to
 * no token, but lie inside a word's range when inside the word), a CJK
 * character its own; pieces of one character (Hangul jamo) share its range; an
 * [UNK] for a word (too long, or no piece fits) spans the word; an added token
 * matched in the text ("[SEP]" typed in it) spans its match, with the
 * whitespace around it that its lstrip / rstrip take in. A special token the
 * template adds ([CLS], [SEP]) gets 0..0 and special[i] = 1 (0 for every other
 * token, a typed "[SEP]" too). Invalid UTF-8 is read as U+FFFD per maximal
 * invalid subpart, as embd_tokenize does, and the offsets still refer to `text`
 * as given: such a U+FFFD spans the 1 to 3 bytes it replaces (clean_text drops
 * it, so it lies inside a word or between tokens); stops never exceed len and a
 * range never starts or ends inside a valid character. add_special_tokens
 * false: no [CLS]/[SEP], as `tokenizers`' add_special_tokens=False (truncation
 * then keeps embd_model_max_tokens pieces). truncate false: no truncation at
 * all (as TEI's /tokenize). ids, starts, stops and special hold cap entries
 * each; starts, stops and special may each be NULL. *n_ids gets the full count;
 * EMBD_ERR_BUFFER_TOO_SMALL when it is more than cap (with truncate, cap =
 * embd_model_max_tokens is always enough; without, call again with *n_ids).
 * SentencePiece (Unigram) tokenizers too, through every normalizer embd loads
 * (the precompiled charsmap, NFC/NFD/NFKC/NFKD, Replace, Strip, Lowercase,
 * Prepend) and Metaspace: a "▁" added before a word spans the word's first
 * character, one that stands for a space spans the space; an unknown piece
 * (<unk>, consecutive unknown characters fused) spans its characters.
 * Thread-safe. Returns EMBD_OK, EMBD_ERR_INVALID_ARG, EMBD_ERR_BUFFER_TOO_SMALL
 * or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_tokenize_offsets(const embd_model *model, const char *text,
                                                size_t len, bool add_special_tokens, bool truncate,
                                                int32_t *ids, size_t *starts, size_t *stops,
                                                uint8_t *special, size_t cap, size_t *n_ids);

/* The string of token `id` as the tokenizer spells it ("[CLS]", "hello",
 * "##ing"; Hugging Face's Encoding.tokens), or NULL for an id that is not a
 * token. Valid as long as the model. */
EMBD_API const char *embd_model_token(const embd_model *model, int32_t id);

/* True for an id that Hugging Face's Encoding.tokens shows as the text it
 * stands for rather than as its vocabulary string: the unknown token of a
 * SentencePiece (Unigram) tokenizer, which stands for characters the
 * vocabulary lacks ("🧿" where embd_model_token says "<unk>"). Its text is
 * the token's range from embd_tokenize_offsets (tokenizers shows it after
 * its normalizer: the same characters unless the normalizer changed them).
 * False for everything else, WordPiece's [UNK] included (tokenizers shows
 * "[UNK]"), and for a NULL model. */
EMBD_API bool embd_model_token_shows_text(const embd_model *model, int32_t id);

/* Turns ids back into text exactly as Hugging Face's
 * tokenizer.decode(ids, skip_special_tokens) does with the model's
 * tokenizer.json decoder (for the servers' POST /decode). WordPiece: a piece
 * starting with the prefix ("##") joins the previous one, any other piece
 * but the first gets a space before it, and with "cleanup" each piece goes
 * through clean_up_tokenization (" ." -> ".", " 's" -> "'s", ...);
 * SentencePiece (Unigram) models: the Metaspace, ByteFallback, Fuse, Strip,
 * Replace and Sequence decoders; no decoder: the tokens joined by spaces.
 * skip_special_tokens drops the added tokens marked special ([CLS], [SEP],
 * [PAD], [MASK] and [UNK] too). Writes at most cap bytes into buf,
 * NUL-terminated when cap > 0; *len gets the text's full length without the
 * NUL. Returns EMBD_OK; EMBD_ERR_BUFFER_TOO_SMALL when len + 1 > cap (cap 0
 * sizes it);
 * EMBD_ERR_INVALID_ARG for a NULL argument or an id that is not a token
 * (the message names its position; `tokenizers` would skip it);
 * EMBD_ERR_UNSUPPORTED for another decoder (the message names it);
 * EMBD_ERR_NOMEM. Thread-safe. */
EMBD_API enum embd_status embd_detokenize(const embd_model *model, const int32_t *ids, size_t n,
                                          bool skip_special_tokens, char *buf, size_t cap,
                                          size_t *len);

/* ------------------------------------------------------------------------ */
/* Contexts                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct embd_ctx embd_ctx;

enum embd_device {
    EMBD_DEVICE_AUTO = 0, /* the GPU if one is usable, else the CPU */
    EMBD_DEVICE_CPU,
    EMBD_DEVICE_CUDA,
};

enum embd_dtype {
    EMBD_DTYPE_AUTO = 0, /* fp32 on the CPU, fp16 on the GPU */
    EMBD_DTYPE_FP32,
    EMBD_DTYPE_FP16, /* the GPU only */
    EMBD_DTYPE_BF16, /* the GPU (compute capability 8.0+), or the CPU with AVX512_BF16 */
    EMBD_DTYPE_INT8, /* the CPU only, with AVX512_VNNI: int8 weights per output channel,
                        activations quantised per token at run time */
};

struct embd_ctx_params {
    enum embd_device device; /* default EMBD_DEVICE_AUTO */
    int device_index;        /* CUDA device ordinal; default 0 */
    enum embd_dtype dtype;   /* default EMBD_DTYPE_AUTO */
    int n_threads;           /* CPU threads; 0 = every CPU the process may run on (its
                                affinity mask). The context starts n_threads - 1 threads
                                of its own, the calling thread being the last; between
                                two pieces of work they spin $EMBD_CPU_SPIN_US
                                microseconds (default 25), then sleep. Default 0 */
    int max_batch_tokens;    /* tokens per forward pass (packed, no padding); 0 = auto: 4096
                                on the CPU, 16384 on a GPU. Default 0 */
    bool normalize;          /* L2-normalise when the model does; false = never. Default true */
    const char *prefix;      /* prepended to every text before tokenizing
                                ("query: ", "passage: "); copied. Default NULL */
    size_t cache_bytes;      /* in-memory embedding cache (LRU) budget in bytes; 0 = off.
                                Default 64 MiB */
    const char *cache_dir;   /* on-disk embedding cache (LMDB, shared by processes, kept
                                across restarts) in this directory, made if missing; copied.
                                NULL = none. Default NULL */
    size_t cache_map_bytes;  /* the disk cache's maximum size (a sparse map); 0 = 4 GiB;
                                taken as 64 KiB to 16 TiB. When full, it keeps serving and
                                stops adding. Default 0 */
    embd_ctx *metrics_of;    /* NULL (default), or another context whose metrics this one
                                counts into (embd_metrics_render of that one shows both):
                                a helper context behind the same scheduler, such as
                                embd_sched_params.express. It must outlive this one */
    const char *gpu_memory_limit; /* the most device memory the context may hold: bytes with
                                     K, M or G ("6G") or a fraction of the device's memory
                                     ("0.5"); batches shrink to fit and a model that cannot
                                     fit is refused (device cuda) or runs on the CPU (auto).
                                     NULL = $EMBD_GPU_MEMORY_LIMIT; "" or "0" = none; a
                                     malformed value is EMBD_ERR_INVALID_ARG, on any device
                                     (the variable's only where a GPU is tried). Default
                                     NULL */
};

EMBD_API struct embd_ctx_params embd_ctx_default_params(void);

/* Creates a context on `model`, which must outlive it. Returns EMBD_OK,
 * EMBD_ERR_INVALID_ARG, EMBD_ERR_UNSUPPORTED (e.g. CUDA asked for but not
 * usable; the message says why), EMBD_ERR_BACKEND or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_ctx_new(embd_model *model, struct embd_ctx_params params,
                                       embd_ctx **out);
EMBD_API void embd_ctx_free(embd_ctx *ctx);

/* The backend in use now: "cpu" or "cuda" ("cpu" once the GPU died; see
 * embd_ctx_fallback); "none" for a NULL ctx. Thread-safe. */
EMBD_API const char *embd_ctx_backend(const embd_ctx *ctx);
/* Tokens per forward pass in use (max_batch_tokens, or what auto chose). */
EMBD_API int embd_ctx_max_batch_tokens(const embd_ctx *ctx);

/* "auto", "fp32", "fp16" or "bf16"; "unknown" for a value out of range.
 * Constant storage. */
EMBD_API const char *embd_dtype_str(enum embd_dtype dtype);

/* The precision the context computes in now: EMBD_DTYPE_FP32 on the CPU
 * (also after the GPU died), EMBD_DTYPE_FP16 or EMBD_DTYPE_BF16 on a GPU;
 * never EMBD_DTYPE_AUTO, except for a NULL ctx. Thread-safe. */
EMBD_API enum embd_dtype embd_ctx_dtype(const embd_ctx *ctx);

/* Why work runs on the CPU rather than a GPU. Each reason has a stable label
 * (embd_fallback_str, in the comment) that is also the `reason` label of the
 * embd_fallbacks_total metric, and comes with a human message. */
enum embd_fallback {
    EMBD_FALLBACK_NONE = 0,           /* "none": no fallback */
    EMBD_FALLBACK_NO_PLUGIN,          /* "auto_cpu_no_plugin": no CUDA plugin loads
                                         (missing, incompatible, or needing a newer driver) */
    EMBD_FALLBACK_NO_DRIVER,          /* "auto_cpu_no_driver": no NVIDIA driver */
    EMBD_FALLBACK_NO_DEVICE,          /* "auto_cpu_no_device": no CUDA device, or not the one
                                         device_index names */
    EMBD_FALLBACK_COMPUTE_CAPABILITY, /* "auto_cpu_compute_capability": the device is older
                                         than 7.5 (8.0 for bf16) */
    EMBD_FALLBACK_GPU_MEMORY,         /* "auto_cpu_gpu_memory": too little free device memory
                                         for the model */
    EMBD_FALLBACK_GPU_UNUSABLE,       /* "auto_cpu_gpu_unusable": the device cannot be read */
    EMBD_FALLBACK_GPU_INIT,           /* "auto_cpu_cuda_init": the GPU backend failed to start */
    EMBD_FALLBACK_GPU_DEAD,           /* "cuda_dead": a sticky GPU error (illegal address,
                                         launch failure); the CPU runs everything since */
    EMBD_FALLBACK_GPU_OOM,            /* "cuda_oom": one batch ran on the CPU, the GPU having
                                         no memory even for the smallest batch (an event the
                                         metrics count, never a context's state) */
    EMBD_FALLBACK_COUNT,              /* the number of reasons, not a reason */
};

/* The reason's stable snake_case label (above); "unknown" for a value out of
 * range. Constant storage. */
EMBD_API const char *embd_fallback_str(enum embd_fallback reason);

/* Why the context runs on the CPU: with device auto, the reason no GPU was
 * used (EMBD_FALLBACK_NO_PLUGIN .. EMBD_FALLBACK_GPU_INIT); after a sticky
 * GPU error, EMBD_FALLBACK_GPU_DEAD; otherwise (device cpu, or a healthy
 * GPU) EMBD_FALLBACK_NONE. When msg is not NULL, *msg gets the one-line human
 * message ("" for NONE), valid as long as the context. Thread-safe: may run
 * while another thread embeds with the context. NONE for a NULL ctx. */
EMBD_API enum embd_fallback embd_ctx_fallback(const embd_ctx *ctx, const char **msg);

/* Embeds n texts into out (n, D), in input order. `lens` gives each text's
 * length in bytes (a NUL inside a text is a character like any other), or is
 * NULL for NUL-terminated texts. An empty text is valid (it embeds [CLS]
 * [SEP]). Texts longer than the model takes are truncated. Returns EMBD_OK,
 * EMBD_ERR_INVALID_ARG, EMBD_ERR_NOMEM or EMBD_ERR_BACKEND. */
EMBD_API enum embd_status embd_embed(embd_ctx *ctx, const char *const *texts, const size_t *lens,
                                     size_t n, float *out);

/* Options of one embedding call (embd_embed_ex). Start from
 * embd_embed_default_opts(): the context's own behaviour. */
struct embd_embed_opts {
    int normalize;      /* -1: as the context (its `normalize` and the model's Normalize
                           module); 0: never; 1: always L2-normalise. Default -1 */
    bool truncate;      /* true: inputs longer than embd_model_max_tokens are cut, as
                           sentence-transformers does; false: the call fails with
                           EMBD_ERR_TOO_LONG and embd_embed_info names the input.
                           Default true */
    const char *prefix; /* NULL: the context's prefix; otherwise this one, prepended to
                           every text of the call ("" for none). Default NULL */
    int dimensions;     /* 0: all D components. 1..D: Matryoshka truncation: the first
                           `dimensions` components of each vector, L2-normalised again
                           when the call's vectors are normalised; out is then
                           (n, dimensions). Allowed for every model, as
                           sentence-transformers' truncate_dim (meaningful for models
                           trained for it). Default 0 */
};

EMBD_API struct embd_embed_opts embd_embed_default_opts(void);

/* What one embedding call reports back. Zero it, and point n_tokens at an
 * array of n, or leave it NULL. */
struct embd_embed_info {
    size_t *n_tokens;    /* (n) or NULL: each input's tokens as embedded ([CLS], [SEP]
                            and the prefix included, after truncation); from the one
                            tokenization that the embedding used (or the cache) */
    size_t total_tokens; /* their sum */
    size_t bad_input;    /* on EMBD_ERR_TOO_LONG: the input that is too long */
    size_t bad_tokens;   /* ... and its token count without truncation */
};

/* Like embd_embed, with per-call options (opts NULL: the defaults; out is
 * (n, opts->dimensions) when that is set) and
 * per-input token counts (info may be NULL). Each text is tokenized once;
 * the cache key covers the options that change a vector (normalisation,
 * prefix). Returns what embd_embed returns, and EMBD_ERR_TOO_LONG when
 * !opts->truncate and an input is longer than the model takes (nothing is
 * written to out then). */
EMBD_API enum embd_status embd_embed_ex(embd_ctx *ctx, const char *const *texts, const size_t *lens,
                                        size_t n, float *out, const struct embd_embed_opts *opts,
                                        struct embd_embed_info *info);

/* Embeds n already-tokenized inputs: ids (T) back to back, seq_start (n+1)
 * with seq_start[0] = 0 and seq_start[n] = T. Each input must have between
 * 1 and embd_model_max_tokens ids, each in 0 .. vocab-1; no [CLS]/[SEP] is
 * added. Writes out (n, D). Returns EMBD_OK, EMBD_ERR_INVALID_ARG,
 * EMBD_ERR_TOO_LONG (an input of more than embd_model_max_tokens ids: token
 * inputs are never cut), EMBD_ERR_NOMEM or EMBD_ERR_BACKEND. */
EMBD_API enum embd_status embd_embed_tokens(embd_ctx *ctx, const int32_t *ids,
                                            const size_t *seq_start, size_t n, float *out);

/* Like embd_embed_tokens with per-call options (`normalize` and
 * `dimensions` apply; a prefix is refused: the ids are embedded as given)
 * and token counts. An input longer than the model
 * takes is EMBD_ERR_TOO_LONG (token inputs are never cut), named in info. */
EMBD_API enum embd_status embd_embed_tokens_ex(embd_ctx *ctx, const int32_t *ids,
                                               const size_t *seq_start, size_t n, float *out,
                                               const struct embd_embed_opts *opts,
                                               struct embd_embed_info *info);

/* Options of one reranking call (embd_rerank). Start from
 * embd_rerank_default_opts(). */
struct embd_rerank_opts {
    bool raw_scores; /* true: the classifier's logit; false: after the activation the
                        model's config names (sentence-transformers' CrossEncoder:
                        sigmoid for one label unless config.json says Identity).
                        Default false */
    bool truncate;   /* true: a pair longer than embd_model_max_tokens is cut as Hugging
                        Face's longest_first does; false: the call fails with
                        EMBD_ERR_TOO_LONG and embd_embed_info names the pair.
                        Default true */
};

EMBD_API struct embd_rerank_opts embd_rerank_default_opts(void);

/* Scores n pairs with a cross-encoder: pair i is queries[i] and docs[i]
 * (qlens, dlens: lengths in bytes, or NULL for NUL-terminated texts),
 * encoded as the tokenizer's pair template says ([CLS] query [SEP] doc
 * [SEP], token types 0 then 1). scores (n) gets one score per pair, in
 * input order (higher is more relevant); info (may be NULL) the tokens of
 * each pair. Returns EMBD_OK, EMBD_ERR_INVALID_ARG, EMBD_ERR_UNSUPPORTED
 * (not a one-label cross-encoder), EMBD_ERR_TOO_LONG, EMBD_ERR_NOMEM or
 * EMBD_ERR_BACKEND. Not cached. */
EMBD_API enum embd_status embd_rerank(embd_ctx *ctx, const char *const *queries,
                                      const size_t *qlens, const char *const *docs,
                                      const size_t *dlens, size_t n, float *scores,
                                      const struct embd_rerank_opts *opts,
                                      struct embd_embed_info *info);

/* Counters since the context was created. */
struct embd_ctx_stats {
    uint64_t inputs;          /* inputs embedded */
    uint64_t tokens;          /* tokens run through the model */
    uint64_t batches;         /* forward passes */
    double tokenize_sec;      /* time spent tokenizing */
    double forward_sec;       /* time spent in the backend */
    uint64_t cache_hits;      /* inputs answered by the embedding cache */
    uint64_t cache_misses;    /* inputs looked up and not found (then computed) */
    uint64_t cache_evictions; /* vectors evicted from the in-memory cache */
};

EMBD_API void embd_ctx_get_stats(const embd_ctx *ctx, struct embd_ctx_stats *stats);

/* ------------------------------------------------------------------------ */
/* Shared engine                                                            */
/* ------------------------------------------------------------------------ */

/* A scheduler shares one context fairly among many threads: each call
 * queues its texts; one worker thread runs rounds that take a piece of every
 * queued request in turn (a short query never waits behind another caller's
 * thousands of texts for more than a short round), embeds the texts of a
 * round together, ordered by length so that similar lengths share forward
 * passes (packed into token-budget batches), and gives each caller its own
 * rows, in order.
 * After 2 s without work it releases the backend's scratch memory (as
 * embd_ctx_trim), so that a burst leaves no lasting memory behind. */
typedef struct embd_sched embd_sched;

struct embd_sched_params {
    size_t queue_texts;     /* texts queued and not yet run, at most; 0 = 4096.
                               Default 4096 */
    size_t max_batch_texts; /* texts the worker takes per round (one embedding call
                               per option set); 0 = 1024. Default 1024 */
    embd_ctx *express;      /* NULL (default), or a second context of the same model
                               for short requests only (a query: its inputs at most
                               one of the model's longest in all, at most 8 of them)
                               that arrive while a device runs a round: its own worker
                               runs them at once, beside that round, instead of after
                               it (an idle device takes them itself). On the CPU, a
                               context with
                               one thread: a query then costs a few ms under load
                               rather than a round. Owned by the caller, as ctx */
};

EMBD_API struct embd_sched_params embd_sched_default_params(void);

/* Starts a scheduler (one worker thread) on ctx, which from now on must be
 * used only through it and must outlive it. Returns EMBD_OK,
 * EMBD_ERR_INVALID_ARG or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_sched_new(embd_ctx *ctx, struct embd_sched_params params,
                                         embd_sched **out);

/* Most contexts one scheduler drives. */
#define EMBD_SCHED_MAX_CTX 64

/* A scheduler over several contexts of the same model, typically one per
 * GPU (each embd_ctx_new with its own device_index): one queue, one worker
 * thread per context, each taking the next round when its device is free
 * (so the least busy device gets it). A request's inputs may run on several
 * devices at once; each caller still gets its rows in order, and the same
 * vectors (up to the devices' precision). A context whose GPU died
 * (embd_ctx_fallback EMBD_FALLBACK_GPU_DEAD) takes no more rounds while
 * another still works; when none does, the first runs everything on its
 * CPU fallback. The contexts must outlive the scheduler and be used by
 * nothing else meanwhile. Errors: EMBD_ERR_INVALID_ARG (no context, more
 * than EMBD_SCHED_MAX_CTX, one given twice, different models), EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_sched_new_multi(embd_ctx *const *ctxs, int n_ctx,
                                               struct embd_sched_params params, embd_sched **out);

/* Waits for the queued work to finish, then stops the worker. */
EMBD_API void embd_sched_free(embd_sched *sched);

/* Like embd_embed, from any thread. When the queue is full, waits for room
 * up to timeout_ms (0: not at all, < 0: forever) and then returns
 * EMBD_ERR_BUSY; once queued, the call returns when its vectors are in out
 * (n, D). A request larger than the queue waits until the queue is empty.
 * Returns EMBD_OK, EMBD_ERR_BUSY, or what embd_embed returns. */
EMBD_API enum embd_status embd_sched_embed(embd_sched *sched, const char *const *texts,
                                           const size_t *lens, size_t n, float *out,
                                           int timeout_ms);

/* Like embd_embed_tokens, from any thread, with the same queueing and
 * timeout as embd_sched_embed. ids and seq_start must stay valid until it
 * returns. Returns what embd_embed_tokens returns, or EMBD_ERR_BUSY. */
EMBD_API enum embd_status embd_sched_embed_tokens(embd_sched *sched, const int32_t *ids,
                                                  const size_t *seq_start, size_t n, float *out,
                                                  int timeout_ms);

/* Options of one scheduler call. Zero-initialised: a full queue returns
 * EMBD_ERR_BUSY at once, no deadline, no cancel flag. A NULL call: wait for
 * room forever, no deadline, no cancel flag. */
struct embd_sched_call {
    int queue_timeout_ms; /* waiting for room in a full queue, as timeout_ms above:
                             0 not at all, < 0 forever; then EMBD_ERR_BUSY */
    int deadline_ms;      /* > 0: the whole call (waiting for room, queued and run)
                             gives up this many ms after it began if its inputs have
                             not started running: EMBD_ERR_TIMEOUT. <= 0: none */
    const int *cancel;    /* NULL, or a flag that any thread may raise with
                             embd_sched_cancel while the call waits: a request not
                             yet running is removed; a running one stops at the next
                             round (its texts not yet run are dropped).
                             EMBD_ERR_CANCELLED either way */
};

/* Like embd_embed_ex through the scheduler: per-call options and token
 * counts, with the queueing, deadline and cancel flag of `call` (see
 * embd_sched_embed_ex). Requests with different options are queued together
 * and run in separate forward passes. Returns what embd_sched_embed_ex and
 * embd_embed_ex return. */
EMBD_API enum embd_status embd_sched_embed_opts(embd_sched *sched, const char *const *texts,
                                                const size_t *lens, size_t n, float *out,
                                                const struct embd_sched_call *call,
                                                const struct embd_embed_opts *opts,
                                                struct embd_embed_info *info);

/* Like embd_sched_embed with a deadline and a cancel flag. A request
 * cancelled or timed out before it started leaves out untouched; one whose
 * deadline passes after it started runs to the end; one cancelled while it
 * runs stops at the next round, and out holds the rows that ran. Either way
 * out is never written after the call returns. Cancellation is noticed
 * within a few milliseconds (or a round). Returns
 * EMBD_OK, EMBD_ERR_BUSY, EMBD_ERR_CANCELLED, EMBD_ERR_TIMEOUT, or what
 * embd_embed returns. call may be NULL (the defaults). */
EMBD_API enum embd_status embd_sched_embed_ex(embd_sched *sched, const char *const *texts,
                                              const size_t *lens, size_t n, float *out,
                                              const struct embd_sched_call *call);

/* Like embd_sched_embed_tokens with a deadline and a cancel flag, as
 * embd_sched_embed_ex. */
EMBD_API enum embd_status embd_sched_embed_tokens_ex(embd_sched *sched, const int32_t *ids,
                                                     const size_t *seq_start, size_t n, float *out,
                                                     const struct embd_sched_call *call);

/* Like embd_embed_tokens_ex through the scheduler, as embd_sched_embed_opts. */
EMBD_API enum embd_status
embd_sched_embed_tokens_opts(embd_sched *sched, const int32_t *ids, const size_t *seq_start,
                             size_t n, float *out, const struct embd_sched_call *call,
                             const struct embd_embed_opts *opts, struct embd_embed_info *info);

/* Called once, from the scheduler's worker thread, when a request queued
 * with embd_sched_submit is done: status is what embd_sched_embed_opts would
 * have returned (embd_last_error() holds its message on that thread). It
 * must not block, nor call the scheduler. */
typedef void (*embd_sched_done_fn)(void *user, enum embd_status status);

/* Queues n (at least 1) texts like embd_sched_embed_opts and returns at
 * once: EMBD_OK when taken (done(user, status) is then called exactly once,
 * after out and info are written, or the request failed, or was cancelled
 * through call->cancel, or found no room in time), or an error, and done is
 * not called: EMBD_ERR_BUSY when the queue has no room now and
 * call->queue_timeout_ms is 0, or EMBD_ERR_INVALID_ARG (n = 0 too: there is
 * nothing to queue, where the blocking calls take n = 0 as a no-op). With a
 * queue timeout (> 0, or < 0 for none; a NULL call waits forever) a request
 * that finds the queue full waits for room, in arrival order, holding no
 * thread, and done gets EMBD_ERR_BUSY if the timeout passes first. texts,
 * lens, out, info and *call->cancel must stay valid until done is called. */
EMBD_API enum embd_status embd_sched_submit(embd_sched *sched, const char *const *texts,
                                            const size_t *lens, size_t n, float *out,
                                            const struct embd_sched_call *call,
                                            const struct embd_embed_opts *opts,
                                            struct embd_embed_info *info, embd_sched_done_fn done,
                                            void *user);

/* Like embd_sched_submit for token ids (as embd_sched_embed_tokens_opts). */
EMBD_API enum embd_status embd_sched_submit_tokens(embd_sched *sched, const int32_t *ids,
                                                   const size_t *seq_start, size_t n, float *out,
                                                   const struct embd_sched_call *call,
                                                   const struct embd_embed_opts *opts,
                                                   struct embd_embed_info *info,
                                                   embd_sched_done_fn done, void *user);

/* Like embd_rerank through the scheduler, for one query (query_len bytes)
 * and n documents: the pairs of requests queued together (whatever their
 * queries) share forward passes, in the same fair rounds as embeddings, and
 * count toward the same queue. scores (n). Returns what embd_sched_embed_opts
 * and embd_rerank return. */
EMBD_API enum embd_status embd_sched_rerank(embd_sched *sched, const char *query, size_t query_len,
                                            const char *const *docs, const size_t *lens, size_t n,
                                            float *scores, const struct embd_sched_call *call,
                                            const struct embd_rerank_opts *opts,
                                            struct embd_embed_info *info);

/* Like embd_sched_submit for a rerank (as embd_sched_rerank); query, docs,
 * lens, scores and info must stay valid until done is called. */
EMBD_API enum embd_status
embd_sched_submit_rerank(embd_sched *sched, const char *query, size_t query_len,
                         const char *const *docs, const size_t *lens, size_t n, float *scores,
                         const struct embd_sched_call *call, const struct embd_rerank_opts *opts,
                         struct embd_embed_info *info, embd_sched_done_fn done, void *user);

/* Seconds since the scheduler last embedded something successfully, or
 * -1 when it has not yet: a health signal that costs no forward pass (a
 * server answers its health check from it while work flows). */
EMBD_API double embd_sched_last_ok_age(embd_sched *sched);

/* The scheduler's queue now: the requests it holds (waiting for room, queued
 * or running) and their inputs (texts, token sequences or pairs) not yet
 * handed to a forward pass, for a load balancer's or an autoscaler's queue
 * metric. Either pointer may be NULL; a NULL sched gives zeros. */
EMBD_API void embd_sched_queue_depth(embd_sched *sched, size_t *requests, size_t *inputs);

/* Raises a cancel flag (an atomic store of 1), from any thread. */
EMBD_API void embd_sched_cancel(int *flag);

/* Renders the context's metrics (requests, inputs, tokens, batch sizes,
 * tokenization and inference time, cache hits/misses/evictions, fallbacks by
 * reason) in the Prometheus text exposition format into buf (cap bytes,
 * NUL-terminated when cap > 0). Returns the full length without the NUL, as
 * snprintf does: call with cap = 0 to size the buffer. Thread-safe: may run
 * while another thread embeds with the context. Returns 0 for a NULL ctx. */
EMBD_API size_t embd_metrics_render(embd_ctx *ctx, char *buf, size_t cap);

/* The metrics of n contexts that work as one (a context per device behind
 * embd_sched_new_multi), in one exposition: each metric's HELP and TYPE
 * once, its samples once per context with device="labels[i]" first among
 * their labels ("cuda:0", "cuda:1", ...). n == 1 renders as
 * embd_metrics_render does, without the label. Returns the full length as
 * embd_metrics_render does (0 for n < 1 or when memory runs out). */
EMBD_API size_t embd_metrics_render_devices(embd_ctx *const *ctxs, const char *const *labels, int n,
                                            char *buf, size_t cap);

/* ------------------------------------------------------------------------ */
/* Logging                                                                  */
/* ------------------------------------------------------------------------ */

/* Library events (fallbacks, cache warnings) go to stderr, one line each:
 * "embd: warn: cache: ..." or, in JSON, {"ts","level","event","msg"}. */
enum embd_log_level {
    EMBD_LOG_ERROR = 0,
    EMBD_LOG_WARN, /* the default */
    EMBD_LOG_INFO,
    EMBD_LOG_DEBUG,
};

/* Sets the level ("error", "warn", "info", "debug") and the format ("text"
 * or "json"); NULL leaves one unchanged. Without a call the library reads
 * EMBD_LOG_LEVEL and EMBD_LOG_FORMAT. Returns EMBD_OK or EMBD_ERR_INVALID_ARG. */
EMBD_API enum embd_status embd_log_configure(const char *level, const char *format);

/* A few lines describing what this machine and build offer: CPU cores, the
 * BLAS library and its configuration, GPU support. Constant storage. */
EMBD_API const char *embd_system_info(void);

/* The CPUs this process may use, at least 1: those its affinity mask allows,
 * capped by its cgroup's CPU quota (a container's --cpus, a Kubernetes CPU
 * limit) rounded up. What n_threads = 0 means. */
EMBD_API int embd_cpu_count(void);

/* ------------------------------------------------------------------------ */
/* GPUs (the CUDA plugins, libembd-cuda13.so / -cuda11.so, loaded on demand) */
/* ------------------------------------------------------------------------ */

/* Writes a few lines about GPU support into buf (cap bytes, NUL-terminated
 * when cap > 0): whether the CUDA plugin loads and why not, driver and
 * runtime versions, every device (name, compute capability, total and free
 * memory, utilisation and temperature where NVML is present) and which
 * backend --device auto would pick, and why. Returns the full length without
 * the NUL, as snprintf does. */
EMBD_API size_t embd_device_report(char *buf, size_t cap);

/* Which CUDA plugin this process runs and why. libembd carries no CUDA
 * code; it picks one of the plugins built beside it, newest first, that the
 * driver's CUDA version allows (libembd-cuda13.so needs 13.0, an R580+
 * driver; libembd-cuda11.so 11.0, R450.80+), going on to the next when one
 * fails to load (a missing cuBLAS library, say). $EMBD_CUDA_PLUGIN names one
 * file instead; $EMBD_CUDA_PLUGIN_DIR is searched instead of libembd's
 * folder; $EMBD_CUDA_DRIVER_VERSION ("12.4") stands in for the driver's. */
struct embd_cuda_choice {
    bool loaded;         /* a plugin is loaded */
    char plugin[64];     /* its file name ("libembd-cuda13.so"); "" when none */
    char path[4096];     /* the path it was loaded from (or EMBD_CUDA_PLUGIN) */
    int runtime_version; /* CUDA runtime it was built with (13000 = 13.0); 0 when none */
    int driver_version;  /* the driver's CUDA version (12040 = 12.4); 0: no driver, unknown */
    char why[1024];      /* why this plugin, or why none loads */
};

/* Fills out with the choice once a GPU probe looked for a plugin (device
 * auto or cuda on a machine with an NVIDIA driver, embd_device_report) and
 * returns 0; -1 with out zeroed when none has. Loads nothing. Thread-safe. */
EMBD_API int embd_cuda_plugin_choice(struct embd_cuda_choice *out);

struct embd_gpu_info {
    char name[256];
    size_t total_bytes, free_bytes; /* device memory */
    int utilization;                /* percent over the last sample period; -1 unknown */
    int temperature_c;              /* -1 unknown */
    char pci_bus_id[32];            /* "0000:3b:00.0" (NVML's and nvidia-smi's name for the
                                       device, whatever CUDA_VISIBLE_DEVICES does); "" unknown */
};

/* Reads device `index` now. Returns 0, or -1 when there is no such device. */
EMBD_API int embd_gpu_monitor(int index, struct embd_gpu_info *out);

/* Device memory and fallbacks of a context (all 0 on the CPU). */
struct embd_ctx_gpu_stats {
    size_t weight_bytes;    /* weights held on the device */
    size_t scratch_bytes;   /* activations and buffers held now */
    size_t peak_bytes;      /* most held at once */
    int batch_tokens;       /* tokens per forward pass the scratch now fits */
    uint64_t oom_retries;   /* allocation failures that halved the batch */
    uint64_t cpu_fallbacks; /* batches the CPU ran because the GPU failed */
    bool dead;              /* a sticky GPU error moved the context to the CPU */
};

EMBD_API void embd_ctx_gpu_stats(const embd_ctx *ctx, struct embd_ctx_gpu_stats *out);

/* Releases the backend's scratch memory (device memory on a GPU) until the
 * next embed; the weights stay. */
EMBD_API void embd_ctx_trim(embd_ctx *ctx);

/* ------------------------------------------------------------------------ */
/* Model names (the Python package, `embd -m ORG/NAME`)                     */
/* ------------------------------------------------------------------------ */

/* Resolves a model as users name it to its directory, into buf (cap bytes,
 * NUL-terminated); *needed (may be NULL) gets the size the path needs, NUL
 * included. In order:
 *  1. `name` is an existing directory: itself.
 *  2. `name` is a hub id (ORG/NAME or NAME: letters, digits, '.', '_', '-';
 *     no "..") found in the Hugging Face cache, as huggingface_hub,
 *     sentence-transformers and fastembed write it: the cache is
 *     $HF_HUB_CACHE (or $HUGGINGFACE_HUB_CACHE), else $HF_HOME/hub, else
 *     $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub; the
 *     directory is models--ORG--NAME/snapshots/REV, REV being what
 *     refs/main names, else the newest snapshot.
 *  3. The same layout under cache_dir (NULL: none), then cache_dir/ORG/NAME.
 * embd_model_load takes names too: a `dir` that is not a directory is
 * resolved with cache_dir NULL. Nothing is downloaded. Returns EMBD_OK,
 * EMBD_ERR_INVALID_ARG (no name), EMBD_ERR_IO (not found: the message names
 * every place looked in and how to fetch the model),
 * EMBD_ERR_BUFFER_TOO_SMALL or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_model_resolve(const char *name, const char *cache_dir, char *buf,
                                             size_t cap, size_t *needed);

/* ------------------------------------------------------------------------ */
/* Vector stores (the Python package's embd.Store)                          */
/* ------------------------------------------------------------------------ */

/* A vector store for one model's vectors: the embedded store (a directory)
 * or PostgreSQL + pgvector (a postgresql:// URL), as `embd index` and
 * `embd search` use them. Ids are unique (adding an id again replaces its
 * record); the store records the model's fingerprint and dimension and
 * refuses another model's. Used by one thread at a time. The same type and
 * functions as src/store/vstore.h, whose add/flush/finish/count/close/kind
 * are declared here too. */
typedef struct embd_vstore embd_vstore;

/* One search result; id and text are not NUL-terminated and stay valid
 * until the next call on the store. */
struct embd_search_hit {
    float score; /* inner product with the query (cosine for a normalising model) */
    const char *id;
    size_t id_len;
    const char *text;
    size_t text_len;
};

/* Opens the store at `location` for `model`'s vectors; writable: create it
 * when missing (or an empty directory) and take the writer lock. A torn
 * record at the end of an embedded store (an interrupted write) is dropped
 * with a warning in the log. Returns EMBD_OK, EMBD_ERR_INVALID_ARG (NULL
 * arguments; no store there when read-only; a store of another model),
 * EMBD_ERR_IO (files, locks, the server) or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_vstore_open_model(const char *location, const embd_model *model,
                                                 bool writable, embd_vstore **out);

/* Appends n records: ids[i] (id_lens[i] bytes, 1..4096), texts[i]
 * (text_lens[i] bytes), vecs (n, D), all finite. *n_replaced (may be NULL)
 * gets how many ids were already there. Durable after embd_vstore_flush. */
EMBD_API enum embd_status embd_vstore_add(embd_vstore *s, const char *const *ids,
                                          const size_t *id_lens, const char *const *texts,
                                          const size_t *text_lens, const float *vecs, size_t n,
                                          size_t *n_replaced);
EMBD_API enum embd_status embd_vstore_flush(embd_vstore *s);
/* After a bulk load: builds PostgreSQL's HNSW index (a no-op otherwise). */
EMBD_API enum embd_status embd_vstore_finish(embd_vstore *s);
EMBD_API enum embd_status embd_vstore_count(embd_vstore *s, size_t *n);
EMBD_API void embd_vstore_close(embd_vstore *s); /* NULL is a no-op */
/* "embedded" or "postgresql". */
EMBD_API const char *embd_vstore_kind(const embd_vstore *s);

/* Top-k by inner product with query (D), best first, into hits (k);
 * *n_hits = min(k, records). exact: for PostgreSQL, score every row rather
 * than use the HNSW index (the embedded store is always exact). Returns
 * EMBD_OK, EMBD_ERR_INVALID_ARG (a non-finite query, k 0), EMBD_ERR_IO or
 * EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_vstore_search_hits(embd_vstore *s, const float *query, size_t k,
                                                  bool exact, struct embd_search_hit *hits,
                                                  size_t *n_hits);

#ifdef __cplusplus
}
#endif

#endif /* EMBD_H */
