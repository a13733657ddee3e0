/* request.h — parsing and validating the bodies of the server's endpoints,
 * with no HTTP and no engine: a body in, a request or an error (HTTP status,
 * message, parameter) out. Kept apart from the daemon so that it can be
 * tested and fuzzed on its own.
 *
 * Inputs (OpenAI `input`, TEI `inputs`): a string, an array of strings, an
 * array of token ids (one tokenized input) or an array of such arrays. Token
 * ids are the model's own vocabulary ids, as `embd tokenize` prints them
 * ([CLS] and [SEP] included: nothing is added).
 *
 * Reranking (TEI `texts`, Cohere/Jina `documents`): a query and an array of
 * documents, each a string (or, for Cohere/Jina, an object {"text": str});
 * every document is a pair with the query and counts as one input.
 *
 * Embedding options: `dimensions` (OpenAI's field, also taken by TEI's shape:
 * Matryoshka truncation to the first N components, 1..the model's D) and
 * `prompt_name` (TEI's field, also taken by the OpenAI shape and /search:
 * one of the prompts the model declares, prepended to every text; not with
 * token-id inputs, which are embedded as given). /search refuses
 * `dimensions`: its store holds full vectors.
 *
 * Sentence similarity (TEI's POST /similarity, and the TEI shape with
 * "inputs": {"source_sentence": str, "sentences": [str, ...]}, which
 * huggingface_hub's sentence_similarity posts): the source sentence and the
 * sentences become the inputs, in that order (1 + n within max_inputs).
 *
 * Tokenization (TEI's POST /tokenize and POST /decode): /tokenize takes
 * `inputs` (a string or an array of strings, each non-empty, within the
 * inputs and characters limits), `add_special_tokens` (default true) and
 * `prompt_name`; /decode takes `ids` (an array of token ids, or an array of
 * such arrays: each non-empty, each id in [0, vocab), no max_tokens) and
 * `skip_special_tokens` (default true). */
#ifndef EMBD_SERVER_REQUEST_H
#define EMBD_SERVER_REQUEST_H

#include "embd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum srv_api {
    SRV_API_OPENAI,     /* POST /v1/embeddings */
    SRV_API_TEI,        /* POST /embed (and POST /, where huggingface_hub posts) */
    SRV_API_SEARCH,     /* POST /search */
    SRV_API_TEI_RERANK, /* POST /rerank (TEI) */
    SRV_API_RERANK,     /* POST /v1/rerank (Cohere, Jina) */
    SRV_API_TOKENIZE,   /* POST /tokenize (TEI) */
    SRV_API_DECODE,     /* POST /decode (TEI) */
    SRV_API_SIMILARITY, /* POST /similarity (TEI) */
};

struct srv_limits {
    size_t max_inputs;          /* inputs per request (413 above) */
    size_t max_input_chars;     /* Unicode characters per text input (413 above) */
    size_t max_tokens;          /* tokens per input, [CLS]/[SEP] included */
    bool auto_truncate;         /* truncate long inputs unless the request says otherwise */
    int vocab;                  /* token ids must be in [0, vocab) */
    size_t max_k;               /* hits per search, and candidates reranked per search */
    size_t dim;                 /* the model's dimension D: `dimensions` must be in [1, D] */
    const char *const *prompts; /* (n_prompts) the prompt names the model declares
                                   (embd_model_prompt_name), for `prompt_name` */
    size_t n_prompts;
};

struct srv_input {
    const char *text; /* a text (points into the parsed body), or NULL for token ids */
    size_t len;       /* bytes of text */
    int32_t *ids;     /* token ids (owned by the request), or NULL */
    size_t n_ids;
};

struct srv_request {
    enum srv_api api;
    struct srv_input *inputs; /* (n) */
    size_t n;
    bool tokens;       /* the inputs are token ids (all of them) */
    bool similarity;   /* TEI sentence similarity: inputs[0] is the source sentence, each
                          other input is scored by its cosine with it */
    bool base64;       /* OpenAI encoding_format "base64" */
    int normalize;     /* TEI normalize: 1, 0; -1 = not given (OpenAI: the model's default) */
    bool truncate;     /* cut inputs longer than max_tokens instead of refusing them */
    char *model;       /* OpenAI `model`, or NULL (owned) */
    size_t dimensions; /* `dimensions` (Matryoshka), 1..limits->dim; 0 = not given (all D) */
    int prompt;        /* `prompt_name`: its index in limits->prompts; -1 = not given */
    const char *query; /* search and rerank (points into the parsed body) */
    size_t query_len;
    size_t k;
    bool rerank;              /* search: rerank the store's top `candidates` hits */
    bool exact;               /* search: score every record (PostgreSQL: no HNSW index) */
    size_t candidates;        /* search: hits reranked (>= k); 0 without rerank */
    bool raw_scores;          /* TEI rerank: the logits, without the model's activation */
    bool return_text;         /* TEI return_text, Cohere/Jina return_documents */
    size_t top_n;             /* Cohere/Jina top_n: results answered (1..n); 0 = all */
    bool add_special_tokens;  /* /tokenize: [CLS]/[SEP] added (TEI's default: true) */
    bool skip_special_tokens; /* /decode: special tokens left out (TEI's default: true) */
    void *json;               /* the parsed body (Jansson), which text inputs point into */
};

struct srv_error {
    int status;        /* HTTP status: 400, 413, ... */
    char message[512]; /* one sentence for the client */
    const char *param; /* the offending field ("input"), or NULL */
};

/* Makes Jansson allocate through util.h (so that allocation failures are
 * injected in tests and reported as "out of memory", 503, not as bad JSON).
 * Process-wide and idempotent; srv_parse calls it, srv_run calls it before
 * any connection thread starts. */
void srv_json_init(void);

/* Parses and checks a body (len bytes, not NUL-terminated) for `api`. On
 * success fills *req (free with srv_request_free) and returns 0; else fills
 * *err and returns -1 (req needs no freeing). Checks: valid UTF-8, valid
 * JSON object, field types, non-empty inputs, input count, characters per
 * input, token id range and token input length (when !truncate); for a
 * rerank, a non-empty query and documents (the texts of `inputs`), their
 * count (pairs) and characters, top_n in 1..n; for a search, k and
 * candidates (k..max_k) in range; for /tokenize, texts only (no token
 * ids), for /decode, token-id lists of any length. Texts
 * keep their length (a "\u0000" is a character). Token counts of texts and
 * their 413 come from the engine's one tokenization (embd_embed_ex). */
int srv_parse(enum srv_api api, const char *body, size_t len, const struct srv_limits *limits,
              struct srv_request *req, struct srv_error *err);
void srv_request_free(struct srv_request *req);

#endif
