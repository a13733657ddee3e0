/* server.h — `embd serve`: an HTTP server (libmicrohttpd, event-driven: a
 * small epoll thread pool, requests suspended while the engine works) on top
 * of shared engines (embd_sched). Endpoints:
 *   POST /v1/embeddings  OpenAI embeddings (errors {"error":{message,type,param,code}})
 *   POST /embed, POST /  text-embeddings-inference embed (errors {"error","error_type"});
 *                        huggingface_hub's InferenceClient posts to the server's URL itself
 *   POST /rerank         TEI rerank {"query","texts"} -> [{"index","score"}] best first
 *   POST /v1/rerank      Cohere/Jina rerank {"query","documents","top_n"} ->
 *                        {"results":[{"index","relevance_score"}],"model","usage"} (OpenAI errors)
 *   POST /search         {"query","k"[,"rerank","candidates"]} -> {"hits":[{rank,id,score,text}]}
 *                        with a store
 *   POST /tokenize       TEI {"inputs","add_special_tokens","prompt_name"} ->
 *                        [[{"id","text","special","start","stop"}]] (byte offsets)
 *   POST /decode         TEI {"ids","skip_special_tokens"} -> ["text",...]
 *                        (both on the HTTP threads, with the model's tokenizer: no engine)
 *   GET  /health         200 when a real forward pass works (each model's), else 503 (no key)
 *   GET  /info           model, dimension, prompts, limits, device, reranker, version
 *   GET  /v1/models      the served models (OpenAI)
 *   GET  /metrics        Prometheus text: the engines' metrics and the server's
 * The model may be an embedder or a cross-encoder (reranker): a reranker
 * answers the rerank endpoints, and the embedding endpoints answer 400. A
 * reranker beside an embedder (srv_config.reranker) gets its own context and
 * scheduler. */
#ifndef EMBD_SERVER_H
#define EMBD_SERVER_H

#include "embd.h"
#include "server/request.h"

struct embd_vstore;

/* A cross-encoder served beside the embedding model, with its own context,
 * used only through its own scheduler. */
struct srv_reranker {
    embd_model *model; /* embd_model_is_reranker */
    embd_ctx *ctx;
    embd_sched *sched;
    const char *name;     /* served name (Cohere `model`, /info, /v1/models) */
    const char *dir;      /* for /info */
    const char *dtype;    /* for /info */
    int max_batch_tokens; /* for /info */
};

struct srv_config {
    const char *host;
    int port;              /* 0: any free port (printed at startup) */
    const char *api_key;   /* NULL: no authentication ("" is refused) */
    size_t max_body_bytes; /* 413 above */
    size_t max_concurrent; /* requests being answered at once (429 above) */
    int queue_timeout_ms;  /* wait for room in the engine's queue, then 429 */
    int shutdown_timeout_s;
    /* After SIGTERM, seconds during which /health answers 503 (a load
     * balancer's check takes the server out) while requests, on new
     * connections too, are still served, each answer closing its
     * connection; then the shutdown proper. Part of shutdown_timeout_s;
     * only once /health has been asked; 0: none. */
    double drain_s;
    /* Connections (0: the default in brackets). Over max_connections [1024]
     * or max_client_connections per client address [128; SIZE_MAX: no
     * limit], a new connection is answered 503 with Retry-After and closed.
     * A request's headers must be in within header_timeout_s [10] of the
     * connection opening or the request line arriving, and its body within
     * body_timeout_s [60] of the headers; a kept-alive connection may idle
     * idle_timeout_s [15]. http_threads [2] serve every connection (epoll; a
     * request waiting for the engine holds none). */
    size_t max_connections;
    size_t max_client_connections;
    int header_timeout_s;
    int body_timeout_s;
    int idle_timeout_s;
    int http_threads;
    /* Memory of the replies in flight (their vectors and text), counted when
     * a request is admitted [128 MiB]; over it, 503 with Retry-After. */
    size_t max_reply_bytes;
    struct srv_limits limits;
    const char *model_name; /* served model name (OpenAI `model`, /info) */
    const char *model_dir;
    bool normalize; /* OpenAI answers: L2-normalise (the model's default) */
    /* The prompt applied to the texts of a request that names none (its
     * "prompt_name" replaces it), for /info: the context's prefix (--prefix,
     * or the text of --default-prompt-name's prompt), and that name; NULL:
     * none. limits.prompts lists the names a request may give. */
    const char *prefix;
    const char *default_prompt_name;
    const char *dtype;    /* for /info */
    int max_batch_tokens; /* for /info */
    /* A reranker beside the model (which must then be an embedder), for
     * /rerank, /v1/rerank and /search's rerank; NULL: none (a model that is
     * itself a reranker answers the rerank endpoints). */
    const struct srv_reranker *reranker;
    /* The contexts behind the scheduler, one per device (--device cuda:all),
     * and their names ("cuda:0", ...): /metrics labels each context's
     * samples with device="NAME" and /info lists them. n_devices <= 1: the
     * one context srv_run gets, unlabelled. */
    embd_ctx *const *devices;
    const char *const *device_names;
    int n_devices;
    /* Optional (tests): called once the server answers, with the port it
     * listens on; how long a passing /health check is reused (0: 1 s). */
    void (*on_listen)(void *arg, int port);
    void *on_listen_arg;
    double health_interval_s;
};

/* Blocks SIGINT and SIGTERM in the calling thread (threads created after
 * inherit the mask; srv_run takes them with sigtimedwait) and ignores
 * SIGPIPE (a client that hangs up must not kill the server). Call it before
 * any thread (engine, CPU pool, HTTP) starts. */
void srv_prepare_signals(void);

/* What srv_run returns besides 0 (every request finished) and 1 (could
 * not start). */
enum {
    SRV_RUN_CANCELLED = 3, /* requests were cancelled at the shutdown deadline; all stopped */
    SRV_RUN_ABANDONED = 4, /* as 3, but handlers still wait for the engine (a round
                              running): the caller must exit the process at once
                              (_exit), without freeing the engine */
};

/* Serves until SIGINT or SIGTERM (which the caller must have blocked in
 * every thread before creating any: srv_prepare_signals); after SIGTERM,
 * drains for drain_s (see srv_config; a second signal cuts it short); then
 * stops accepting and lets the requests in flight finish until
 * shutdown_timeout_s after the signal: returns 0 when they did. At that deadline the
 * remaining ones are cancelled (queued work is dropped, a running request
 * stops at its next round, their clients get 503) and it returns
 * SRV_RUN_CANCELLED, or SRV_RUN_ABANDONED when they have not stopped within
 * half a second more. Returns 1 after printing why when it cannot start
 * (e.g. the port is taken). Each request
 * passes its own options (normalisation, truncation, dimensions) to the
 * engine; the context's prefix (the server's default prompt) applies to
 * every text embedded, except those of a request that names a prompt of the
 * model's ("prompt_name"), whose text replaces it. ctx must be used only
 * through sched. store may be NULL (no /search); it needs a model that
 * embeds. */
int srv_run(const struct srv_config *cfg, embd_model *model, embd_ctx *ctx, embd_sched *sched,
            struct embd_vstore *store);

#endif
