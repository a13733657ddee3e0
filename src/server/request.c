/* request.c — the server's request bodies: JSON parsing (Jansson, whose
 * strings carry their length, so a "\u0000" is a character like any other)
 * and every check that needs no engine; see request.h. */
#include "server/request.h"

#include "util/util.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 4, 5))) static int fail(struct srv_error *err, int status,
                                                      const char *param, const char *fmt, ...) {
    err->status = status;
    err->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* Jansson allocates through util.h, so that tests can fail its allocations
 * too, and a failed one is told apart from bad JSON (json_oom). */
static _Thread_local bool json_oom;

static void *json_malloc(size_t size) {
    void *p = embd_malloc(size);
    if (!p) json_oom = true;
    return p;
}

static void json_free(void *p) {
    embd_free(p);
}

static void json_hooks(void) {
    json_set_alloc_funcs(json_malloc, json_free);
}

static pthread_once_t json_once = PTHREAD_ONCE_INIT;

void srv_json_init(void) {
    pthread_once(&json_once, json_hooks);
}

/* Unicode characters in valid UTF-8. */
static size_t utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* A JSON number that is an integer in [lo, hi]. */
static bool json_int(const json_t *v, double lo, double hi, long long *out) {
    if (!json_is_number(v)) return false;
    double d = json_number_value(v);
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi) return false;
    *out = (long long)d;
    return true;
}

/* One token input from a JSON array of integers, of at most max_tokens ids
 * (cut to them with truncate, else 413). */
static int parse_ids(const json_t *arr, size_t index, bool nested, const struct srv_limits *lim,
                     size_t max_tokens, bool truncate, struct srv_input *in, const char *param,
                     struct srv_error *err) {
    size_t n = json_array_size(arr);
    if (n == 0 && nested)
        return fail(err, 400, param, "\"%s\"[%zu] is an empty token list", param, index);
    if (n == 0) return fail(err, 400, param, "\"%s\" is empty", param);
    if (n > max_tokens && !truncate)
        return fail(err, 413, param,
                    "input %zu has %zu tokens; the model takes at most %zu (send truncate: true, "
                    "or start the server with --auto-truncate)",
                    index, n, max_tokens);
    size_t keep = n > max_tokens ? max_tokens : n;
    in->ids = embd_malloc2(keep, sizeof *in->ids);
    if (!in->ids) return fail(err, 503, NULL, "out of memory");
    in->n_ids = keep;
    size_t j;
    const json_t *t;
    json_array_foreach(arr, j, t) {
        long long id;
        if (!json_is_number(t))
            return fail(err, 400, param, "%s: token lists must hold only integers", param);
        if (!json_int(t, 0, (double)lim->vocab - 1, &id))
            return fail(err, 400, param,
                        "input %zu: token id %.17g is not an integer in [0, %d) (the model's "
                        "vocabulary)%s",
                        index, json_number_value(t), lim->vocab,
                        strcmp(param, "ids") ? ""
                                             : "; embd refuses an id that is not a token, where "
                                               "Hugging Face's decode skips it");
        if (j < keep) in->ids[j] = (int32_t)id;
    }
    return 0;
}

/* The inputs of an OpenAI or TEI request. */
static int parse_inputs(const json_t *v, const char *param, const struct srv_limits *lim,
                        struct srv_request *req, struct srv_error *err) {
    if (!v) return fail(err, 400, param, "missing field \"%s\"", param);
    if (json_is_string(v)) {
        req->inputs = embd_calloc(1, sizeof *req->inputs);
        if (!req->inputs) return fail(err, 503, NULL, "out of memory");
        req->n = 1;
        req->inputs[0].text = json_string_value(v);
        req->inputs[0].len = json_string_length(v);
    } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (n == 0) return fail(err, 400, param, "\"%s\" is an empty array", param);
        const json_t *first = json_array_get(v, 0);
        bool texts = json_is_string(first), ids = json_is_number(first),
             lists = json_is_array(first);
        if (!texts && !ids && !lists)
            return fail(err, 400, param,
                        "\"%s\" must be a string, an array of strings, an array of token ids or "
                        "an array of token id arrays",
                        param);
        size_t n_inputs = ids ? 1 : n;
        if (n_inputs > lim->max_inputs)
            return fail(err, 413, param,
                        "%zu inputs in one request; the limit is %zu (--max-inputs)", n_inputs,
                        lim->max_inputs);
        req->inputs = embd_calloc(n_inputs, sizeof *req->inputs);
        if (!req->inputs) return fail(err, 503, NULL, "out of memory");
        req->n = n_inputs;
        req->tokens = !texts;
        if (ids)
            return parse_ids(v, 0, false, lim, lim->max_tokens, req->truncate, &req->inputs[0],
                             param, err);
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            if (texts) {
                if (!json_is_string(e))
                    return fail(err, 400, param,
                                "\"%s\"[%zu] is not a string (an array of inputs must not mix "
                                "types)",
                                param, i);
                req->inputs[i].text = json_string_value(e);
                req->inputs[i].len = json_string_length(e);
            } else {
                if (!json_is_array(e))
                    return fail(err, 400, param,
                                "\"%s\"[%zu] is not an array of token ids (an array of inputs "
                                "must not mix types)",
                                param, i);
                if (parse_ids(e, i, true, lim, lim->max_tokens, req->truncate, &req->inputs[i],
                              param, err))
                    return -1;
            }
        }
    } else {
        return fail(err, 400, param,
                    "\"%s\" must be a string, an array of strings, an array of token ids or an "
                    "array of token id arrays",
                    param);
    }
    if (!req->tokens)
        for (size_t i = 0; i < req->n; i++) {
            const struct srv_input *in = &req->inputs[i];
            if (in->len == 0) return fail(err, 400, param, "input %zu is an empty string", i);
            size_t chars = utf8_chars(in->text, in->len);
            if (chars > lim->max_input_chars)
                return fail(err, 413, param,
                            "input %zu has %zu characters; the limit is %zu (--max-input-chars)", i,
                            chars, lim->max_input_chars);
        }
    return 0;
}

/* An optional boolean field: 1, 0, or dflt when absent or null. */
static int opt_bool(const json_t *obj, const char *name, int dflt, int *out,
                    struct srv_error *err) {
    const json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) return fail(err, 400, name, "\"%s\" must be true or false", name);
    *out = json_is_true(v);
    return 0;
}

/* Whether v is the string `s` exactly (a NUL inside v makes it differ). */
static bool json_str_is(const json_t *v, const char *s, bool nocase) {
    const size_t n = strlen(s);
    return json_string_length(v) == n &&
           (nocase ? strcasecmp(json_string_value(v), s) : strcmp(json_string_value(v), s)) == 0;
}

/* TEI's truncation_direction: "right" (any case) or absent; "left" is
 * refused (embd truncates on the right, as sentence-transformers does). */
static int check_direction(const json_t *root, struct srv_error *err) {
    const json_t *dir = json_object_get(root, "truncation_direction");
    if (!dir || json_is_null(dir)) return 0;
    if (!json_is_string(dir) ||
        (!json_str_is(dir, "right", true) && !json_str_is(dir, "left", true)))
        return fail(err, 400, "truncation_direction",
                    "\"truncation_direction\" must be \"right\" or \"left\"");
    if (json_str_is(dir, "left", true))
        return fail(err, 400, "truncation_direction",
                    "truncation_direction \"left\" is not supported: embd truncates on the "
                    "right, as sentence-transformers does");
    return 0;
}

/* The longest prefix of s (len bytes of valid UTF-8) of at most max bytes
 * that ends on a character boundary. */
static size_t utf8_cut(const char *s, size_t len, size_t max) {
    if (len <= max) return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* `dimensions` (OpenAI's field; also TEI's shape here): absent or null for
 * all D components, else an integer from 1 to the model's D. */
static int parse_dimensions(const json_t *root, const struct srv_limits *lim,
                            struct srv_request *req, struct srv_error *err) {
    const json_t *v = json_object_get(root, "dimensions");
    if (!v || json_is_null(v)) return 0;
    const double hi = lim->dim ? (double)lim->dim : 1e9;
    long long d;
    if (json_int(v, 1, hi, &d)) {
        req->dimensions = (size_t)d;
        return 0;
    }
    const double x = json_is_number(v) ? json_number_value(v) : 0;
    if (isfinite(x) && x == floor(x) && x > hi)
        return fail(err, 400, "dimensions",
                    "\"dimensions\" %.17g is more than the model's %zu dimensions (send 1 to "
                    "%zu, or leave it out for all of them)",
                    json_number_value(v), lim->dim, lim->dim);
    return fail(err, 400, "dimensions",
                "\"dimensions\" must be an integer from 1 to %zu (the model's dimension)",
                lim->dim);
}

/* `prompt_name` (TEI's field; also the OpenAI shape's and /search's here):
 * absent or null for the server's default, else one of the prompts the model
 * declares (limits->prompts), as req->prompt. */
static int parse_prompt(const json_t *root, const struct srv_limits *lim, struct srv_request *req,
                        struct srv_error *err) {
    const json_t *v = json_object_get(root, "prompt_name");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v))
        return fail(err, 400, "prompt_name", "\"prompt_name\" must be a string");
    for (size_t i = 0; i < lim->n_prompts; i++)
        if (lim->prompts[i] && json_str_is(v, lim->prompts[i], false)) {
            req->prompt = (int)i;
            return 0;
        }
    const char *name = json_string_value(v);
    const size_t shown = utf8_cut(name, json_string_length(v), 100);
    if (lim->n_prompts == 0)
        return fail(err, 400, "prompt_name",
                    "unknown prompt_name \"%.*s\": the model declares no prompts (its "
                    "config_sentence_transformers.json has none); leave \"prompt_name\" out",
                    (int)shown, name);
    char names[300];
    size_t at = 0;
    for (size_t i = 0; i < lim->n_prompts && at < sizeof names; i++) {
        const char *p = lim->prompts[i] ? lim->prompts[i] : "";
        int w = snprintf(names + at, sizeof names - at, "%s\"%.*s\"", i ? ", " : "",
                         (int)utf8_cut(p, strlen(p), 60), p);
        at += w > 0 ? (size_t)w : 0;
    }
    if (at >= sizeof names) /* cut short: say so */
        memcpy(names + sizeof names - 6, ", ...", 6);
    return fail(err, 400, "prompt_name", "unknown prompt_name \"%.*s\": the model declares %s",
                (int)shown, name, names);
}

/* A prompt is prepended to texts: token-id inputs, embedded as given, take
 * none. */
static int check_prompt_texts(const struct srv_request *req, struct srv_error *err) {
    if (req->prompt >= 0 && req->tokens)
        return fail(err, 400, "prompt_name",
                    "\"prompt_name\" applies to text inputs; token-id inputs are embedded as "
                    "given (tokenize the prompt with the text instead)");
    return 0;
}

static int parse_openai(const json_t *root, const struct srv_limits *lim, struct srv_request *req,
                        struct srv_error *err) {
    const json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model)) return fail(err, 400, "model", "\"model\" must be a string");
        req->model = embd_strndup(json_string_value(model), json_string_length(model));
        if (!req->model) return fail(err, 503, NULL, "out of memory");
    }
    const json_t *fmt = json_object_get(root, "encoding_format");
    if (fmt && !json_is_null(fmt)) {
        if (!json_is_string(fmt) ||
            (!json_str_is(fmt, "float", false) && !json_str_is(fmt, "base64", false)))
            return fail(err, 400, "encoding_format",
                        "\"encoding_format\" must be \"float\" or \"base64\"");
        req->base64 = json_str_is(fmt, "base64", false);
    }
    if (parse_dimensions(root, lim, req, err) || parse_prompt(root, lim, req, err)) return -1;
    const json_t *user = json_object_get(root, "user");
    if (user && !json_is_null(user) && !json_is_string(user))
        return fail(err, 400, "user", "\"user\" must be a string");
    req->normalize = -1;
    req->truncate = lim->auto_truncate;
    if (parse_inputs(json_object_get(root, "input"), "input", lim, req, err)) return -1;
    return check_prompt_texts(req, err);
}

static const char similarity_shape[] =
    "\"inputs\" must be {\"source_sentence\": a string, \"sentences\": an array of strings}";

/* TEI's similarity inputs: {"source_sentence": str, "sentences": [str, ...]}
 * as the inputs source, then each sentence. */
static int parse_similarity(const json_t *v, const struct srv_limits *lim, struct srv_request *req,
                            struct srv_error *err) {
    const json_t *src = json_object_get(v, "source_sentence"),
                 *list = json_object_get(v, "sentences");
    if (!json_is_string(src) || !json_is_array(list))
        return fail(err, 400, "inputs", "%s", similarity_shape);
    const size_t n = json_array_size(list);
    if (n == 0) return fail(err, 400, "inputs", "\"sentences\" is an empty array");
    if (n + 1 > lim->max_inputs)
        return fail(err, 413, "inputs",
                    "%zu sentences and the source in one request; the limit is %zu inputs "
                    "(--max-inputs)",
                    n, lim->max_inputs);
    req->inputs = embd_calloc(n + 1, sizeof *req->inputs);
    if (!req->inputs) return fail(err, 503, NULL, "out of memory");
    req->n = n + 1;
    req->similarity = true;
    req->inputs[0] =
        (struct srv_input){.text = json_string_value(src), .len = json_string_length(src)};
    size_t i;
    const json_t *e;
    json_array_foreach(list, i, e) {
        if (!json_is_string(e))
            return fail(err, 400, "inputs", "\"sentences\"[%zu] is not a string", i);
        req->inputs[i + 1] =
            (struct srv_input){.text = json_string_value(e), .len = json_string_length(e)};
    }
    for (size_t k = 0; k < req->n; k++) {
        const struct srv_input *in = &req->inputs[k];
        if (in->len == 0 && k == 0)
            return fail(err, 400, "inputs", "the source sentence is an empty string");
        if (in->len == 0) return fail(err, 400, "inputs", "sentence %zu is an empty string", k - 1);
        size_t chars = utf8_chars(in->text, in->len);
        if (chars > lim->max_input_chars)
            return fail(err, 413, "inputs",
                        "a sentence has %zu characters; the limit is %zu (--max-input-chars)",
                        chars, lim->max_input_chars);
    }
    return 0;
}

static int parse_tei(const json_t *root, const struct srv_limits *lim, struct srv_request *req,
                     struct srv_error *err, bool similarity) {
    int normalize = 1, truncate = 0;
    if (opt_bool(root, "normalize", 1, &normalize, err)) return -1;
    if (opt_bool(root, "truncate", lim->auto_truncate, &truncate, err)) return -1;
    req->normalize = normalize;
    req->truncate = truncate;
    if (check_direction(root, err)) return -1;
    if (parse_dimensions(root, lim, req, err) || parse_prompt(root, lim, req, err)) return -1;
    const json_t *in = json_object_get(root, "inputs");
    if (similarity || json_is_object(in)) {
        if (!json_is_object(in)) return fail(err, 400, "inputs", "%s", similarity_shape);
        if (parse_similarity(in, lim, req, err)) return -1;
    } else if (parse_inputs(in, "inputs", lim, req, err)) {
        return -1;
    }
    return check_prompt_texts(req, err);
}

/* The "query" of a search or a rerank: a non-empty string within the
 * characters limit. */
static int parse_query(const json_t *root, const struct srv_limits *lim, struct srv_request *req,
                       struct srv_error *err) {
    const json_t *q = json_object_get(root, "query");
    if (!q) return fail(err, 400, "query", "missing field \"query\"");
    if (!json_is_string(q)) return fail(err, 400, "query", "\"query\" must be a string");
    req->query = json_string_value(q);
    req->query_len = json_string_length(q);
    if (req->query_len == 0) return fail(err, 400, "query", "\"query\" is an empty string");
    size_t chars = utf8_chars(req->query, req->query_len);
    if (chars > lim->max_input_chars)
        return fail(err, 413, "query",
                    "the query has %zu characters; the limit is %zu (--max-input-chars)", chars,
                    lim->max_input_chars);
    return 0;
}

/* The documents of a rerank (TEI "texts", Cohere/Jina "documents") into
 * req->inputs: a non-empty array of non-empty strings or, with objects,
 * of {"text": string} objects too; each is a pair with the query, counted
 * against max_inputs. */
static int parse_documents(const json_t *v, const char *param, bool objects,
                           const struct srv_limits *lim, struct srv_request *req,
                           struct srv_error *err) {
    const char *what = objects ? "strings or {\"text\": string} objects" : "strings";
    if (!v) return fail(err, 400, param, "missing field \"%s\"", param);
    if (!json_is_array(v))
        return fail(err, 400, param, "\"%s\" must be an array of %s", param, what);
    const size_t n = json_array_size(v);
    if (n == 0) return fail(err, 400, param, "\"%s\" is an empty array", param);
    if (n > lim->max_inputs)
        return fail(err, 413, param,
                    "%zu documents in one request; the limit is %zu (--max-inputs: each "
                    "document is a pair with the query)",
                    n, lim->max_inputs);
    req->inputs = embd_calloc(n, sizeof *req->inputs);
    if (!req->inputs) return fail(err, 503, NULL, "out of memory");
    req->n = n;
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        const json_t *t = e;
        if (objects && json_is_object(e)) {
            t = json_object_get(e, "text");
            if (!t || !json_is_string(t))
                return fail(err, 400, param, "\"%s\"[%zu] has no \"text\" string", param, i);
        }
        if (!json_is_string(t))
            return fail(err, 400, param, "\"%s\"[%zu] is not a string (\"%s\" must hold %s)", param,
                        i, param, what);
        struct srv_input *in = &req->inputs[i];
        in->text = json_string_value(t);
        in->len = json_string_length(t);
        if (in->len == 0) return fail(err, 400, param, "\"%s\"[%zu] is an empty string", param, i);
        size_t chars = utf8_chars(in->text, in->len);
        if (chars > lim->max_input_chars)
            return fail(err, 413, param,
                        "\"%s\"[%zu] has %zu characters; the limit is %zu (--max-input-chars)",
                        param, i, chars, lim->max_input_chars);
    }
    return 0;
}

/* POST /rerank, text-embeddings-inference's shape: query, texts,
 * raw_scores, return_text, truncate (default: --auto-truncate, i.e. false,
 * as TEI), truncation_direction. */
static int parse_tei_rerank(const json_t *root, const struct srv_limits *lim,
                            struct srv_request *req, struct srv_error *err) {
    int raw = 0, text = 0, truncate = 0;
    if (parse_query(root, lim, req, err)) return -1;
    if (opt_bool(root, "raw_scores", 0, &raw, err)) return -1;
    if (opt_bool(root, "return_text", 0, &text, err)) return -1;
    if (opt_bool(root, "truncate", lim->auto_truncate, &truncate, err)) return -1;
    if (check_direction(root, err)) return -1;
    req->raw_scores = raw;
    req->return_text = text;
    req->truncate = truncate;
    req->normalize = -1;
    return parse_documents(json_object_get(root, "texts"), "texts", false, lim, req, err);
}

/* POST /v1/rerank, Cohere's and Jina's shape: model, query, documents
 * (strings or {"text"} objects), top_n, return_documents; and embd's
 * truncate (default: --auto-truncate). Other Cohere fields
 * (max_chunks_per_doc, rank_fields) are ignored. */
static int parse_rerank(const json_t *root, const struct srv_limits *lim, struct srv_request *req,
                        struct srv_error *err) {
    const json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model)) return fail(err, 400, "model", "\"model\" must be a string");
        req->model = embd_strndup(json_string_value(model), json_string_length(model));
        if (!req->model) return fail(err, 503, NULL, "out of memory");
    }
    int docs = 0, truncate = 0;
    if (parse_query(root, lim, req, err)) return -1;
    if (opt_bool(root, "return_documents", 0, &docs, err)) return -1;
    if (opt_bool(root, "truncate", lim->auto_truncate, &truncate, err)) return -1;
    req->return_text = docs;
    req->truncate = truncate;
    req->normalize = -1;
    if (parse_documents(json_object_get(root, "documents"), "documents", true, lim, req, err))
        return -1;
    const json_t *top = json_object_get(root, "top_n");
    if (top && !json_is_null(top)) {
        /* more than the documents: all of them, as Cohere answers (LangChain's
         * CohereRerank asks for 3 by default, whatever the list) */
        long long t;
        if (!json_int(top, 1, 9007199254740992.0, &t))
            return fail(err, 400, "top_n", "\"top_n\" must be a positive integer");
        req->top_n = (size_t)t < req->n ? (size_t)t : req->n;
    }
    return 0;
}

/* POST /tokenize, text-embeddings-inference's shape: inputs (a string or an
 * array of strings: TEI takes no token ids here), add_special_tokens
 * (default true), prompt_name. */
static int parse_tokenize(const json_t *root, const struct srv_limits *lim, struct srv_request *req,
                          struct srv_error *err) {
    int add = 1;
    if (opt_bool(root, "add_special_tokens", 1, &add, err)) return -1;
    req->add_special_tokens = add;
    req->normalize = -1;
    if (parse_prompt(root, lim, req, err)) return -1;
    const json_t *v = json_object_get(root, "inputs");
    if (v && !json_is_string(v) &&
        !(json_is_array(v) && (json_array_size(v) == 0 || json_is_string(json_array_get(v, 0)))))
        return fail(err, 400, "inputs", "\"inputs\" must be a string or an array of strings");
    return parse_inputs(v, "inputs", lim, req, err);
}

/* POST /decode, text-embeddings-inference's shape: ids (an array of token
 * ids, or an array of such arrays, each counted as an input), and
 * skip_special_tokens (default true). The lists may be of any length (the
 * body's limit bounds them); every id must be in the vocabulary. */
static int parse_decode(const json_t *root, const struct srv_limits *lim, struct srv_request *req,
                        struct srv_error *err) {
    int skip = 1;
    if (opt_bool(root, "skip_special_tokens", 1, &skip, err)) return -1;
    req->skip_special_tokens = skip;
    req->normalize = -1;
    const json_t *v = json_object_get(root, "ids");
    if (!v) return fail(err, 400, "ids", "missing field \"ids\"");
    const char *what = "\"ids\" must be an array of token ids or an array of token id arrays";
    if (!json_is_array(v)) return fail(err, 400, "ids", "%s", what);
    const size_t n = json_array_size(v);
    if (n == 0) return fail(err, 400, "ids", "\"ids\" is an empty array");
    const json_t *first = json_array_get(v, 0);
    const bool lists = json_is_array(first);
    if (!lists && !json_is_number(first)) return fail(err, 400, "ids", "%s", what);
    const size_t n_inputs = lists ? n : 1;
    if (n_inputs > lim->max_inputs)
        return fail(err, 413, "ids",
                    "%zu token lists in one request; the limit is %zu (--max-inputs)", n_inputs,
                    lim->max_inputs);
    req->inputs = embd_calloc(n_inputs, sizeof *req->inputs);
    if (!req->inputs) return fail(err, 503, NULL, "out of memory");
    req->n = n_inputs;
    req->tokens = true;
    if (!lists) return parse_ids(v, 0, false, lim, SIZE_MAX, false, &req->inputs[0], "ids", err);
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_array(e))
            return fail(err, 400, "ids",
                        "\"ids\"[%zu] is not an array of token ids (an array of token lists "
                        "must not mix types)",
                        i);
        if (parse_ids(e, i, true, lim, SIZE_MAX, false, &req->inputs[i], "ids", err)) return -1;
    }
    return 0;
}

/* The candidates a search reranks when its request does not say. */
#define SEARCH_CANDIDATES 50

static int parse_search(const json_t *root, const struct srv_limits *lim, struct srv_request *req,
                        struct srv_error *err) {
    if (parse_query(root, lim, req, err)) return -1;
    const json_t *dims = json_object_get(root, "dimensions");
    if (dims && !json_is_null(dims))
        return fail(err, 400, "dimensions",
                    "/search does not take \"dimensions\": the store holds the model's full "
                    "vectors, so the query is embedded with all of them");
    if (parse_prompt(root, lim, req, err)) return -1;
    req->k = 10;
    const json_t *k = json_object_get(root, "k");
    if (k && !json_is_null(k)) {
        long long kk;
        if (!json_int(k, 1, (double)lim->max_k, &kk))
            return fail(err, 400, "k", "\"k\" must be an integer from 1 to %zu", lim->max_k);
        req->k = (size_t)kk;
    }
    int rerank = 0, exact = 0;
    if (opt_bool(root, "rerank", 0, &rerank, err) || opt_bool(root, "exact", 0, &exact, err))
        return -1;
    req->rerank = rerank;
    req->exact = exact;
    const json_t *cand = json_object_get(root, "candidates");
    if (cand && !json_is_null(cand)) {
        long long cc;
        if (!rerank)
            return fail(err, 400, "candidates",
                        "\"candidates\" goes with \"rerank\": true (the hits reranked)");
        if (!json_int(cand, (double)req->k, (double)lim->max_k, &cc))
            return fail(err, 400, "candidates",
                        "\"candidates\" must be an integer from k (%zu) to %zu", req->k,
                        lim->max_k);
        req->candidates = (size_t)cc;
    } else if (rerank) {
        req->candidates = req->k > SEARCH_CANDIDATES ? req->k : SEARCH_CANDIDATES;
        if (req->candidates > lim->max_k) req->candidates = lim->max_k;
    }
    if (req->candidates > lim->max_inputs)
        return fail(err, 413, "candidates",
                    "%zu candidates to rerank; the limit is %zu (--max-inputs: each candidate "
                    "is a pair with the query)",
                    req->candidates, lim->max_inputs);
    req->truncate = true;
    req->normalize = -1;
    return 0;
}

int srv_parse(enum srv_api api, const char *body, size_t len, const struct srv_limits *lim,
              struct srv_request *req, struct srv_error *err) {
    memset(req, 0, sizeof *req);
    memset(err, 0, sizeof *err);
    req->api = api;
    req->prompt = -1;
    if (len == 0) return fail(err, 400, NULL, "the request body is empty; send a JSON object");
    if (!embd_utf8_valid(body, len)) return fail(err, 400, NULL, "the request body is not UTF-8");
    srv_json_init();
    json_oom = false;
    json_error_t jerr;
    json_t *root =
        json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DISABLE_EOF_CHECK, &jerr);
    if (json_oom) { /* an allocation failed somewhere in the parse: trust nothing it made */
        json_decref(root);
        return fail(err, 503, NULL, "out of memory parsing the request body");
    }
    if (!root)
        return fail(err, 400, NULL, "the request body is not valid JSON (at byte %d: %s)",
                    jerr.position, jerr.text);
    req->json = root;
    size_t end = jerr.position > 0 ? (size_t)jerr.position : 0; /* where the value ended */
    while (end < len && strchr(" \t\r\n", body[end]) && body[end])
        end++;
    int rc;
    if (end < len)
        rc = fail(err, 400, NULL, "the request body has data after the JSON value (at byte %zu)",
                  end);
    else if (!json_is_object(root))
        rc = fail(err, 400, NULL, "the request body must be a JSON object");
    else if (api == SRV_API_OPENAI)
        rc = parse_openai(root, lim, req, err);
    else if (api == SRV_API_TEI || api == SRV_API_SIMILARITY)
        rc = parse_tei(root, lim, req, err, api == SRV_API_SIMILARITY);
    else if (api == SRV_API_TEI_RERANK)
        rc = parse_tei_rerank(root, lim, req, err);
    else if (api == SRV_API_RERANK)
        rc = parse_rerank(root, lim, req, err);
    else if (api == SRV_API_TOKENIZE)
        rc = parse_tokenize(root, lim, req, err);
    else if (api == SRV_API_DECODE)
        rc = parse_decode(root, lim, req, err);
    else
        rc = parse_search(root, lim, req, err);
    if (rc) srv_request_free(req);
    return rc;
}

void srv_request_free(struct srv_request *req) {
    if (!req) return;
    for (size_t i = 0; req->inputs && i < req->n; i++)
        embd_free(req->inputs[i].ids);
    embd_free(req->inputs);
    embd_free(req->model);
    json_decref(req->json);
    memset(req, 0, sizeof *req);
}
