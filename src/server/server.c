/* server.c — the HTTP daemon of `embd serve` (see server.h): routing,
 * authentication, limits, responses in each API's own shape, metrics and a
 * graceful shutdown. Bodies are parsed and checked in request.c; embedding
 * goes through the shared scheduler, so requests from every connection are
 * batched together. */
#include "server/server.h"

#include "store/vstore.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Replies are built with util's string builder (embd_buf): JSON strings
 * always valid, non-finite numbers as null. */

/* base64 of n bytes as a JSON string (OpenAI encoding_format "base64"). */
static void buf_base64_string(struct embd_buf *b, const void *d, size_t n) {
    embd_buf_put(b, "\"", 1);
    embd_buf_base64(b, d, n);
    embd_buf_put(b, "\"", 1);
}

/* ---------------------------------------------------------------------- */
/* Server state and metrics                                                */
/* ---------------------------------------------------------------------- */

enum route {
    R_OPENAI,
    R_TEI,
    R_SEARCH,
    R_RERANK,     /* TEI */
    R_RERANK_V1,  /* Cohere, Jina */
    R_TOKENIZE,   /* TEI */
    R_DECODE,     /* TEI */
    R_SIMILARITY, /* TEI */
    R_HEALTH,
    R_INFO,
    R_METRICS,
    R_MODELS,
    R_OTHER,
    R_COUNT,
};
static const char *const route_names[R_COUNT] = {
    "/v1/embeddings", "/embed",  "/search", "/rerank",  "/v1/rerank", "/tokenize", "/decode",
    "/similarity",    "/health", "/info",   "/metrics", "/v1/models", "other"};
static const int tracked_codes[] = {200, 400, 401, 404, 405, 413, 415, 429, 500, 501, 503};
#define N_CODES ((int)(sizeof tracked_codes / sizeof tracked_codes[0]))

/* A model the server runs, its context and scheduler, and its health. */
struct engine {
    embd_model *model;
    embd_ctx *ctx;
    embd_sched *sched;
    bool rerank; /* a cross-encoder: it scores pairs and does not embed */
    const char *name, *dir, *dtype;
    int max_batch_tokens;
    size_t max_tokens;     /* per input (per pair for a reranker) */
    int32_t health_ids[2]; /* an embedder's health check: [CLS] [SEP] */
    size_t health_n;
    double health_at; /* when the last forward-pass check ran */
    bool health_ok;
    char health_err[256];
};

struct server {
    const struct srv_config *cfg;
    struct engine main_e;  /* the model (-m) */
    struct engine extra_e; /* the reranker beside it (cfg->reranker) */
    struct engine *emb;    /* the embedder: &main_e, or NULL when the model is a reranker */
    struct engine *rr;     /* the reranker: &main_e, &extra_e, or NULL */
    embd_vstore *store;
    pthread_mutex_t store_mu; /* a store handle is used by one thread at a time */
    int dim;
    pthread_mutex_t health_mu; /* the engines' health fields */
    atomic_int in_flight;      /* requests between their first callback and completion */
    atomic_int active;         /* embedding, rerank and search requests being answered */
    atomic_bool draining;      /* shutting down: new requests get 503 */
    atomic_bool unready;       /* SIGTERM's drain window: /health 503, the rest served */
    atomic_bool health_asked;  /* /health has been asked (someone would see it turn 503) */
    atomic_bool cancel_all;    /* shutdown's deadline passed: all work is cancelled */
    atomic_ullong completed;   /* requests completed (for the idle trim) */
    atomic_ullong responses[R_COUNT][N_CODES + 1];
    atomic_ullong rejected_busy;
    atomic_ullong rejected_memory; /* 503: the reply memory budget was spent */
    pthread_mutex_t conn_mu;       /* the connection slots */
    struct slot *slots;            /* (n_slots) */
    size_t n_slots, per_client;
    double header_timeout, idle_timeout, body_timeout;
    atomic_ullong rejected_conns; /* connections refused with 503 (over capacity, per client) */
    atomic_ullong closed_slow;    /* connections closed for headers or a body not in on time */
    atomic_size_t reply_bytes;    /* reply memory in flight (vectors and reply text) */
    size_t max_reply_bytes;
    atomic_ullong cancelled; /* requests dropped from the queue: their client hung up */
    pthread_mutex_t watch_mu;
    struct watch *watched; /* requests waiting for the engine */
    pthread_t watchdog;
    atomic_bool watchdog_stop;
    atomic_ullong latency_us_sum[R_COUNT], latency_count[R_COUNT];
    time_t started; /* when serving began (the models' "created") */
};

/* An open connection (MHD_OPTION_NOTIFY_CONNECTION's socket context): its
 * client's address, for the per-client limit, and when its request headers
 * must be in. A fixed table, so that accepting a connection allocates
 * nothing. */
struct slot {
    bool used;
    int fd;
    unsigned char addr[16]; /* the client's IPv4 or IPv6 address */
    unsigned char addr_len;
    double deadline; /* 0: none; else the connection is closed if still reading headers then */
};

/* A request waiting for the engine, watched for its client hanging up. */
struct watch {
    int fd;     /* the connection's socket */
    int cancel; /* raised (embd_sched_cancel) when the client is gone */
    struct watch *prev, *next;
};

enum phase {
    PH_BODY, /* receiving the body, or answering without the engine */
    PH_WAIT, /* submitted: suspended until the scheduler's done callback */
    PH_DONE, /* the engine is done (st->es): the next call answers */
};

struct conn {
    struct server *s;
    struct MHD_Connection *c;
    enum phase phase;
    enum route route;
    bool active;     /* counted in server.active (until completed) */
    bool admitted;   /* its headers came before the shutdown began: it is served */
    size_t reserved; /* bytes taken from the reply memory budget */
    struct srv_request req;
    bool have_req;
    struct srv_input query; /* search: the query as an input */
    int stage;              /* search: 0 embedding the query, 1 reranking the hits */
    float *vecs;            /* (n, D) */
    float *scores;          /* (n) rerank scores */
    struct cand *cands;     /* (n_cands) search hits to rerank */
    size_t n_cands;
    char *cand_mem;                /* their ids and texts */
    struct embd_rerank_opts ropts; /* must outlive the submit */
    const char **texts;            /* (n) */
    size_t *lens;                  /* (n) */
    int32_t *ids;                  /* (T) token inputs, back to back */
    size_t *ss;                    /* (n + 1) */
    struct embd_embed_opts opts;   /* must outlive the submit */
    struct embd_embed_info info;
    struct watch w;
    enum embd_status es;
    char why[512];
    char *body;
    size_t len, cap;
    bool close;     /* answer with "Connection: close" (the body was not read) */
    size_t dropped; /* body bytes read and dropped (over the limit, or out of memory); the
                     * connection is closed past twice the limit */
    bool too_large;
    bool oom; /* the body could not be stored: answered 503 */
    double start;
};

/* A search hit kept for reranking (the store's own are valid only until
 * its next call). */
struct cand {
    const char *id, *text; /* in conn.cand_mem */
    size_t id_len, text_len;
    float score; /* the store's (inner product) */
};

/* The state of a request whose own could not be allocated: it is answered
 * 503 "out of memory" (never written to; shared by such requests). */
static struct conn oom_conn;

static void count_response(struct server *s, enum route r, int code, double start) {
    int k = N_CODES;
    for (int i = 0; i < N_CODES; i++)
        if (tracked_codes[i] == code) k = i;
    atomic_fetch_add(&s->responses[r][k], 1);
    atomic_fetch_add(&s->latency_us_sum[r], (unsigned long long)((embd_now() - start) * 1e6));
    atomic_fetch_add(&s->latency_count[r], 1);
}

/* ---------------------------------------------------------------------- */
/* Responses                                                               */
/* ---------------------------------------------------------------------- */

/* Queues b (taken: freed here or by libmicrohttpd) as the response. */
static enum MHD_Result queue_buf(struct MHD_Connection *c, int code, struct embd_buf *b,
                                 const char *type, const char *extra_header,
                                 const char *extra_value, bool close) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(b->len, b->p ? b->p : (void *)"", MHD_RESPMEM_MUST_FREE);
    if (!r) { /* libmicrohttpd's own allocation: the connection is closed */
        embd_free(b->p);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (extra_header) MHD_add_response_header(r, extra_header, extra_value);
    if (close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, r);
    MHD_destroy_response(r);
    return ret;
}

/* 503 "out of memory" in the endpoint's own shape, from static memory (it
 * allocates nothing of ours, so it cannot fail for want of memory itself). */
static enum MHD_Result send_oom(struct server *s, struct MHD_Connection *c, enum route r,
                                bool openai, double start) {
    static const char oom_openai[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                     "\"server_error\",\"param\":null,\"code\":\"unavailable\"}}";
    static const char oom_tei[] = "{\"error\":\"out of memory\",\"error_type\":\"Backend\"}";
    count_response(s, r, 503, start);
    const char *body = openai ? oom_openai : oom_tei;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(c, 503, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Sends b (taken) with `code` and counts the response; a buffer that ran
 * out of memory while being written is dropped for send_oom's 503. */
static enum MHD_Result send_buf_x(struct server *s, struct MHD_Connection *c, enum route r,
                                  bool openai, int code, struct embd_buf *b, const char *type,
                                  const char *extra_header, const char *extra_value, double start,
                                  bool close) {
    if (b->oom) {
        embd_free(b->p);
        return send_oom(s, c, r, openai, start);
    }
    count_response(s, r, code, start);
    /* In the drain window, each answer closes its connection, so that a
     * kept-alive client reconnects, to another replica once the balancer
     * has taken this one out. */
    close = close || atomic_load(&s->unready);
    return queue_buf(c, code, b, type, extra_header, extra_value, close);
}

static enum MHD_Result send_buf(struct server *s, struct MHD_Connection *c, enum route r,
                                bool openai, int code, struct embd_buf *b, const char *type,
                                const char *extra_header, const char *extra_value, double start) {
    return send_buf_x(s, c, r, openai, code, b, type, extra_header, extra_value, start, false);
}

static const char *openai_type(int code) {
    switch (code) {
    case 401:
        return "invalid_request_error";
    case 429:
        return "rate_limit_error";
    case 500:
    case 503:
        return "server_error";
    default:
        return "invalid_request_error";
    }
}

static const char *openai_code(int code) {
    switch (code) {
    case 401:
        return "invalid_api_key";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 413:
        return "too_large";
    case 415:
        return "unsupported_media_type";
    case 501:
        return "not_implemented";
    case 429:
        return "rate_limit_exceeded";
    case 503:
        return "unavailable";
    default:
        return NULL;
    }
}

static const char *tei_type(int code) {
    switch (code) {
    case 429:
        return "Overloaded";
    case 500:
        return "Backend";
    case 503:
        return "Unhealthy";
    default:
        return "Validation";
    }
}

/* An error in the endpoint's own shape: OpenAI for /v1/..., TEI elsewhere;
 * close: the connection is closed after it (its body was not read). */
static enum MHD_Result send_error_x(struct server *s, struct MHD_Connection *c, enum route r,
                                    bool openai, int code, const char *param, const char *msg,
                                    double start, bool close) {
    struct embd_buf b = {0};
    if (openai) {
        embd_buf_str(&b, "{\"error\":{\"message\":");
        embd_buf_json_string(&b, msg, strlen(msg));
        embd_buf_printf(&b, ",\"type\":\"%s\",\"param\":", openai_type(code));
        if (param)
            embd_buf_json_string(&b, param, strlen(param));
        else
            embd_buf_str(&b, "null");
        const char *oc = openai_code(code);
        if (oc)
            embd_buf_printf(&b, ",\"code\":\"%s\"}}", oc);
        else
            embd_buf_str(&b, ",\"code\":null}}");
    } else {
        embd_buf_str(&b, "{\"error\":");
        embd_buf_json_string(&b, msg, strlen(msg));
        embd_buf_printf(&b, ",\"error_type\":\"%s\"}", tei_type(code));
    }
    const char *hdr = NULL, *val = NULL;
    if (code == 429 || code == 503) { /* overloaded, over a budget, shutting down */
        hdr = "Retry-After";
        val = "1";
    } else if (code == 401) {
        hdr = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        val = "Bearer";
    } else if (code == 405) {
        hdr = MHD_HTTP_HEADER_ALLOW;
        val =
            r == R_HEALTH || r == R_INFO || r == R_METRICS || r == R_MODELS ? "GET, HEAD" : "POST";
    }
    return send_buf_x(s, c, r, openai, code, &b, "application/json", hdr, val, start, close);
}

static enum MHD_Result send_error(struct server *s, struct MHD_Connection *c, enum route r,
                                  bool openai, int code, const char *param, const char *msg,
                                  double start) {
    return send_error_x(s, c, r, openai, code, param, msg, start, false);
}

/* ---------------------------------------------------------------------- */
/* Endpoints                                                               */
/* ---------------------------------------------------------------------- */

/* Maps an engine status to an HTTP status. */
static int http_status_of(enum embd_status st) {
    switch (st) {
    case EMBD_ERR_BUSY:
        return 429;
    case EMBD_ERR_CANCELLED: /* the client is gone; the answer goes nowhere */
        return 400;
    case EMBD_ERR_TIMEOUT:
        return 503;
    case EMBD_ERR_INVALID_ARG:
        return 400;
    case EMBD_ERR_TOO_LONG:
        return 413;
    case EMBD_ERR_NOMEM:
        return 503;
    default:
        return 500;
    }
}

static void close_slow(struct server *s);

/* The watchdog: every 50 ms, polls the sockets of the requests waiting for
 * the engine and cancels those whose client has hung up (peer closed, reset),
 * so that abandoned work leaves the queue instead of delaying everyone; every
 * 200 ms, closes the connections whose headers are late (close_slow). */
static void *watchdog_main(void *arg) {
    struct server *s = arg;
    struct pollfd *fds = NULL;
    size_t cap = 0;
    unsigned ticks = 0;
    while (!atomic_load(&s->watchdog_stop)) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&s->watch_mu);
        size_t n = 0;
        for (struct watch *w = s->watched; w; w = w->next)
            n++;
        if (n > cap) {
            struct pollfd *p = embd_realloc(fds, n * sizeof *p); /* on failure: poll fewer */
            if (p) {
                fds = p;
                cap = n;
            }
        }
        size_t k = 0;
        for (struct watch *w = s->watched; w && k < cap; w = w->next, k++)
            fds[k] = (struct pollfd){.fd = w->fd, .events = POLLRDHUP};
        if (k > 0 && poll(fds, (nfds_t)k, 0) > 0) {
            k = 0;
            for (struct watch *w = s->watched; w && k < cap; w = w->next, k++)
                if (fds[k].revents & (POLLRDHUP | POLLHUP | POLLERR)) embd_sched_cancel(&w->cancel);
        }
        pthread_mutex_unlock(&s->watch_mu);
        if (++ticks % 4 == 0) close_slow(s);
    }
    embd_free(fds);
    return NULL;
}

static void watch_add(struct server *s, struct watch *w, struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    w->fd = ci ? ci->connect_fd : -1;
    w->cancel = 0;
    w->prev = w->next = NULL;
    if (w->fd < 0) {
        if (atomic_load(&s->cancel_all)) w->cancel = 1;
        return;
    }
    pthread_mutex_lock(&s->watch_mu);
    if (atomic_load(&s->cancel_all)) w->cancel = 1;
    w->next = s->watched;
    if (s->watched) s->watched->prev = w;
    s->watched = w;
    pthread_mutex_unlock(&s->watch_mu);
}

/* Cancels every request waiting for the engine, and those that start
 * waiting from now on (shutdown's deadline). */
static void cancel_all(struct server *s) {
    pthread_mutex_lock(&s->watch_mu);
    atomic_store(&s->cancel_all, true);
    for (struct watch *w = s->watched; w; w = w->next)
        embd_sched_cancel(&w->cancel);
    pthread_mutex_unlock(&s->watch_mu);
}

static void watch_remove(struct server *s, struct watch *w) {
    if (w->fd < 0) return;
    pthread_mutex_lock(&s->watch_mu);
    if (w->prev)
        w->prev->next = w->next;
    else
        s->watched = w->next;
    if (w->next) w->next->prev = w->prev;
    pthread_mutex_unlock(&s->watch_mu);
}

/* Called by the scheduler's worker when a request submitted through
 * wait_begin is done: records its status and resumes its connection, whose
 * handler then answers (finish_embed, finish_search, finish_rerank). Must
 * not block. */
static void on_embedded(void *user, enum embd_status es) {
    struct conn *st = user;
    /* Counted here: a connection whose client is gone may never be answered. */
    if (es == EMBD_ERR_CANCELLED) atomic_fetch_add(&st->s->cancelled, 1);
    if (es != EMBD_OK) {
        const char *e = embd_last_error();
        snprintf(st->why, sizeof st->why, "%s", e && *e ? e : embd_status_str(es));
    }
    watch_remove(st->s, &st->w);
    st->es = es;
    st->phase = PH_DONE;
    MHD_resume_connection(st->c);
}

/* The first half of every submission to a scheduler: the connection is
 * watched for its client hanging up and suspended (before the submit: the
 * done callback, on_embedded, may come before the submit returns); *call
 * gets the queue timeout and the cancel flag. */
static void wait_begin(struct server *s, struct MHD_Connection *c, struct conn *st,
                       struct embd_sched_call *call) {
    st->s = s;
    st->c = c;
    st->phase = PH_WAIT;
    watch_add(s, &st->w, c);
    *call = (struct embd_sched_call){.queue_timeout_ms = s->cfg->queue_timeout_ms,
                                     .cancel = &st->w.cancel};
    MHD_suspend_connection(c);
}

/* The second half: a submission refused at once (es not EMBD_OK: the done
 * callback will not come) resumes the connection, with st->why saying why.
 * Returns es. */
static enum embd_status wait_submitted(struct server *s, struct MHD_Connection *c, struct conn *st,
                                       enum embd_status es) {
    if (es != EMBD_OK) {
        const char *e = embd_last_error();
        snprintf(st->why, sizeof st->why, "%s", e && *e ? e : embd_status_str(es));
        watch_remove(s, &st->w);
        st->phase = PH_BODY;
        MHD_resume_connection(c);
    }
    return es;
}

/* Submits the inputs of req (kept in st until the answer) to the embedder's
 * scheduler, embedding into out (n, D) with opts; the connection is
 * suspended until on_embedded resumes it. Returns EMBD_OK, or the status of
 * a request refused at once (the connection is not suspended then; st->why
 * says why). */
static enum embd_status submit_inputs(struct server *s, struct MHD_Connection *c, struct conn *st,
                                      const struct srv_request *req, float *out,
                                      const struct embd_embed_opts *opts,
                                      struct embd_embed_info *info) {
    const size_t n = req->n;
    if (req->tokens) {
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += req->inputs[i].n_ids;
        st->ids = embd_malloc2(total ? total : 1, sizeof *st->ids); /* (T) */
        st->ss = embd_malloc2(n + 1, sizeof *st->ss);               /* (n + 1) */
        if (!st->ids || !st->ss) goto oom;
        st->ss[0] = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(st->ids + st->ss[i], req->inputs[i].ids, req->inputs[i].n_ids * sizeof *st->ids);
            st->ss[i + 1] = st->ss[i] + req->inputs[i].n_ids;
        }
    } else {
        st->texts = embd_malloc2(n, sizeof *st->texts); /* (n) */
        st->lens = embd_malloc2(n, sizeof *st->lens);   /* (n) */
        if (!st->texts || !st->lens) goto oom;
        for (size_t i = 0; i < n; i++) {
            st->texts[i] = req->inputs[i].text;
            st->lens[i] = req->inputs[i].len;
        }
    }
    struct embd_sched_call call;
    wait_begin(s, c, st, &call);
    embd_sched *sched = s->emb->sched;
    return wait_submitted(s, c, st,
                          req->tokens
                              ? embd_sched_submit_tokens(sched, st->ids, st->ss, n, out, &call,
                                                         opts, info, on_embedded, st)
                              : embd_sched_submit(sched, (const char *const *)st->texts, st->lens,
                                                  n, out, &call, opts, info, on_embedded, st));
oom:
    snprintf(st->why, sizeof st->why, "out of memory");
    return EMBD_ERR_NOMEM;
}

/* Submits n documents (st->texts, st->lens, kept until the answer) to the
 * reranker's scheduler, scored against query into st->scores (n) with
 * st->ropts; as submit_inputs. */
static enum embd_status submit_rerank(struct server *s, struct MHD_Connection *c, struct conn *st,
                                      const char *query, size_t query_len, size_t n) {
    struct embd_sched_call call;
    st->info = (struct embd_embed_info){0};
    wait_begin(s, c, st, &call);
    return wait_submitted(s, c, st,
                          embd_sched_submit_rerank(s->rr->sched, query, query_len,
                                                   (const char *const *)st->texts, st->lens, n,
                                                   st->scores, &call, &st->ropts, &st->info,
                                                   on_embedded, st));
}

/* Takes bytes from the reply memory budget (--max-reply-memory): false when
 * it does not have them. */
static bool reserve_reply(struct server *s, struct conn *st, size_t bytes) {
    size_t cur = atomic_load(&s->reply_bytes);
    do {
        if (cur + bytes > s->max_reply_bytes && cur > 0) return false;
    } while (!atomic_compare_exchange_weak(&s->reply_bytes, &cur, cur + bytes));
    st->reserved += bytes;
    return true;
}

/* The answer to a request whose embedding failed or was refused. */
static enum MHD_Result embed_failed(struct server *s, struct MHD_Connection *c, enum route r,
                                    bool openai, struct conn *st, enum embd_status es) {
    const struct embd_embed_info *info = &st->info;
    if (es == EMBD_ERR_BUSY) atomic_fetch_add(&s->rejected_busy, 1);
    if (es == EMBD_ERR_CANCELLED && atomic_load(&s->cancel_all))
        return send_error(s, c, r, openai, 503, NULL,
                          "the server is shutting down (--shutdown-timeout passed)", st->start);
    const bool pairs = r == R_RERANK || r == R_RERANK_V1;
    if (es == EMBD_ERR_TOO_LONG && pairs)
        snprintf(st->why, sizeof st->why,
                 "document %zu and the query have %zu tokens together; the reranker takes at "
                 "most %zu (send truncate: true, or start the server with --auto-truncate)",
                 info->bad_input, info->bad_tokens, s->rr->max_tokens);
    else if (es == EMBD_ERR_TOO_LONG)
        snprintf(st->why, sizeof st->why,
                 "input %zu has %zu tokens; the model takes at most %zu (send truncate: "
                 "true, or start the server with --auto-truncate)",
                 info->bad_input, info->bad_tokens, s->cfg->limits.max_tokens);
    const char *param = NULL;
    if (es == EMBD_ERR_TOO_LONG && r != R_SEARCH)
        param = r == R_RERANK_V1 ? "documents"
                : r == R_RERANK  ? "texts"
                : openai         ? "input"
                                 : "inputs";
    return send_error(s, c, r, openai, http_status_of(es), param, st->why, st->start);
}

/* 503 with Retry-After: the reply memory budget is spent. */
static enum MHD_Result send_over_budget(struct server *s, struct MHD_Connection *c, enum route r,
                                        bool openai, struct conn *st) {
    atomic_fetch_add(&s->rejected_memory, 1);
    char msg[200];
    snprintf(msg, sizeof msg,
             "the replies in flight hold the server's reply memory (%zu MiB, "
             "--max-reply-memory); retry shortly",
             s->max_reply_bytes >> 20);
    return send_error_x(s, c, r, openai, 503, NULL, msg, st->start, false);
}

/* The text of the prompt a request names ("prompt_name"), which replaces
 * the server's default (the context's prefix: --prefix or
 * --default-prompt-name); NULL when it names none (the default applies). */
static const char *request_prompt(const struct server *s, const struct srv_request *req) {
    const struct srv_limits *lim = &s->cfg->limits;
    if (req->prompt < 0 || (size_t)req->prompt >= lim->n_prompts || !s->emb) return NULL;
    return embd_model_prompt(s->emb->model, lim->prompts[req->prompt]);
}

/* POST /v1/embeddings and /embed, first half: parses, takes the reply's
 * memory from the budget and submits the inputs (the connection waits,
 * suspended, for finish_embed). */
static enum MHD_Result start_embed(struct server *s, struct MHD_Connection *c, enum route r,
                                   struct conn *st) {
    const bool openai = r == R_OPENAI;
    struct srv_request *req = &st->req;
    struct srv_error err;
    if (!s->emb) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "the model \"%.200s\" is a cross-encoder (reranker): it scores query-document "
                 "pairs and gives no embeddings; use POST /rerank or POST /v1/rerank",
                 s->cfg->model_name);
        return send_error(s, c, r, openai, 400, NULL, msg, st->start);
    }
    const enum srv_api api = openai              ? SRV_API_OPENAI
                             : r == R_SIMILARITY ? SRV_API_SIMILARITY
                                                 : SRV_API_TEI;
    if (srv_parse(api, st->body, st->len, &s->cfg->limits, req, &err))
        return send_error(s, c, r, openai, err.status, err.param, err.message, st->start);
    st->have_req = true;
    /* The vectors (n, D), D being the request's "dimensions" when it gives
     * them, and the reply text built from them (a float as at most 16
     * characters, base64 at 6 per float). */
    const size_t D = req->dimensions ? req->dimensions : (size_t)s->dim;
    if (!reserve_reply(s, st, req->n * D * (sizeof(float) + (req->base64 ? 6 : 16)) + 4096))
        return send_over_budget(s, c, r, openai, st);
    st->vecs = embd_malloc2(req->n, D * sizeof *st->vecs); /* (n, D) */
    if (!st->vecs) return send_oom(s, c, r, openai, st->start);
    /* The engine normalises, truncates or refuses, keeps the first D
     * components (normalised again), prepends the prompt, and counts the
     * tokens of its one tokenization (the usage). */
    st->opts = embd_embed_default_opts();
    st->opts.normalize = openai ? s->cfg->normalize : req->normalize == 1;
    st->opts.truncate = req->truncate;
    st->opts.dimensions = (int)req->dimensions;
    st->opts.prefix = request_prompt(s, req);
    enum embd_status es = submit_inputs(s, c, st, req, st->vecs, &st->opts, &st->info);
    if (es != EMBD_OK) return embed_failed(s, c, r, openai, st, es);
    return MHD_YES;
}

/* Second half: the answer, once the engine is done. */
static enum MHD_Result finish_embed(struct server *s, struct MHD_Connection *c, enum route r,
                                    struct conn *st) {
    const bool openai = r == R_OPENAI;
    const struct srv_request *req = &st->req;
    const size_t D = req->dimensions ? req->dimensions : (size_t)s->dim; /* per vector */
    if (st->es != EMBD_OK) return embed_failed(s, c, r, openai, st, st->es);
    const size_t n_tokens = st->info.total_tokens;
    const float *vecs = st->vecs;

    struct embd_buf b = {0};
    embd_buf_reserve(&b, req->n * D * (req->base64 ? 6 : 14) + 256);
    if (req->similarity) { /* each sentence's cosine with the source sentence */
        embd_buf_put(&b, "[", 1);
        for (size_t i = 1; i < req->n && !b.oom; i++) {
            double ab = 0, aa = 0, bb = 0;
            for (size_t d = 0; d < D; d++) {
                const double x = vecs[d], y = vecs[i * D + d];
                ab += x * y;
                aa += x * x;
                bb += y * y;
            }
            if (i > 1) embd_buf_put(&b, ",", 1);
            embd_buf_json_float(&b, aa > 0 && bb > 0 ? (float)(ab / sqrt(aa * bb)) : 0.0f);
        }
        embd_buf_put(&b, "]", 1);
    } else if (openai) {
        embd_buf_str(&b, "{\"object\":\"list\",\"data\":[");
        for (size_t i = 0; i < req->n && !b.oom; i++) {
            embd_buf_printf(
                &b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", i ? "," : "", i);
            if (req->base64) {
                buf_base64_string(&b, (const unsigned char *)(vecs + i * D), D * sizeof *vecs);
            } else {
                embd_buf_put(&b, "[", 1);
                for (size_t d = 0; d < D; d++) {
                    if (d) embd_buf_put(&b, ",", 1);
                    embd_buf_json_float(&b, vecs[i * D + d]);
                }
                embd_buf_put(&b, "]", 1);
            }
            embd_buf_put(&b, "}", 1);
        }
        embd_buf_str(&b, "],\"model\":");
        const char *name = s->cfg->model_name;
        embd_buf_json_string(&b, name, strlen(name));
        embd_buf_printf(&b, ",\"usage\":{\"prompt_tokens\":%zu,\"total_tokens\":%zu}}", n_tokens,
                        n_tokens);
    } else {
        embd_buf_put(&b, "[", 1);
        for (size_t i = 0; i < req->n && !b.oom; i++) {
            embd_buf_str(&b, i ? ",[" : "[");
            for (size_t d = 0; d < D; d++) {
                if (d) embd_buf_put(&b, ",", 1);
                embd_buf_json_float(&b, vecs[i * D + d]);
            }
            embd_buf_put(&b, "]", 1);
        }
        embd_buf_put(&b, "]", 1);
    }
    embd_free(st->vecs); /* the reply is all that is kept */
    st->vecs = NULL;
    char tokens_hdr[32];
    snprintf(tokens_hdr, sizeof tokens_hdr, "%zu", n_tokens);
    return send_buf(s, c, r, openai, 200, &b, "application/json", "x-embd-tokens", tokens_hdr,
                    st->start);
}

/* POST /search, first half: the query is submitted to the embedder. */
static enum MHD_Result start_search(struct server *s, struct MHD_Connection *c, struct conn *st) {
    if (!s->store)
        return send_error(s, c, R_SEARCH, false, 404, NULL,
                          "no store: start the server with --store PATH|URL to enable /search",
                          st->start);
    struct srv_error err;
    if (srv_parse(SRV_API_SEARCH, st->body, st->len, &s->cfg->limits, &st->req, &err))
        return send_error(s, c, R_SEARCH, false, err.status, err.param, err.message, st->start);
    st->have_req = true;
    if (st->req.rerank && !s->rr)
        return send_error(s, c, R_SEARCH, false, 400, "rerank",
                          "\"rerank\": true needs a reranker: start the server with --reranker "
                          "DIR (a cross-encoder)",
                          st->start);
    const size_t D = (size_t)s->dim;
    st->vecs = embd_malloc2(D, sizeof *st->vecs); /* (D) */
    if (!st->vecs) return send_oom(s, c, R_SEARCH, false, st->start);
    st->query = (struct srv_input){.text = st->req.query, .len = st->req.query_len};
    const struct srv_request one = {.inputs = &st->query, .n = 1};
    st->opts = embd_embed_default_opts(); /* the model's normalisation, all D components */
    st->opts.prefix = request_prompt(s, &st->req);
    enum embd_status es = submit_inputs(s, c, st, &one, st->vecs, &st->opts, &st->info);
    if (es != EMBD_OK) return embed_failed(s, c, R_SEARCH, false, st, es);
    return MHD_YES;
}

/* Hits (or documents) ranked by score. */
struct ranked {
    float score;
    size_t index;
};

/* Best first; equal scores in input order (as `embd rerank`); NaN last. */
static int ranked_cmp(const void *a, const void *b) {
    const struct ranked *x = a, *y = b;
    const bool xn = isnan(x->score), yn = isnan(y->score);
    if (xn != yn) return xn ? 1 : -1;
    if (!xn && x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* scores (n) ranked best first (embd_free it), or NULL when out of memory. */
static struct ranked *rank_scores(const float *scores, size_t n) {
    struct ranked *o = embd_malloc2(n ? n : 1, sizeof *o); /* (n) */
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++)
        o[i] = (struct ranked){scores[i], i};
    qsort(o, n, sizeof *o, ranked_cmp);
    return o;
}

/* Keeps the store's hits (whose memory is the store's until its next call)
 * as st->cands; false when out of memory. */
static bool keep_hits(struct conn *st, const struct embd_store_hit *hits, size_t n) {
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += hits[i].id_len + hits[i].text_len;
    st->cands = embd_malloc2(n ? n : 1, sizeof *st->cands); /* (n) */
    st->cand_mem = embd_malloc(bytes ? bytes : 1);
    if (!st->cands || !st->cand_mem) return false;
    char *p = st->cand_mem;
    for (size_t i = 0; i < n; i++) {
        if (hits[i].id_len) memcpy(p, hits[i].id, hits[i].id_len);
        st->cands[i].id = p;
        st->cands[i].id_len = hits[i].id_len;
        p += hits[i].id_len;
        if (hits[i].text_len) memcpy(p, hits[i].text, hits[i].text_len);
        st->cands[i].text = p;
        st->cands[i].text_len = hits[i].text_len;
        p += hits[i].text_len;
        st->cands[i].score = hits[i].score;
    }
    st->n_cands = n;
    return true;
}

/* The answer of a reranked search: the top k candidates by the reranker's
 * score ("score"), with the store's ("retrieval_score") and rank. */
static enum MHD_Result answer_reranked(struct server *s, struct MHD_Connection *c,
                                       struct conn *st) {
    const size_t n = st->n_cands, k = st->req.k < n ? st->req.k : n;
    struct ranked *order = rank_scores(st->scores, n);
    if (!order) return send_oom(s, c, R_SEARCH, false, st->start);
    struct embd_buf b = {0};
    embd_buf_str(&b, "{\"hits\":[");
    for (size_t j = 0; j < k; j++) {
        const struct cand *h = &st->cands[order[j].index];
        embd_buf_printf(&b, "%s{\"rank\":%zu,\"id\":", j ? "," : "", j + 1);
        embd_buf_json_string(&b, h->id, h->id_len);
        embd_buf_str(&b, ",\"score\":");
        embd_buf_json_float(&b, order[j].score);
        embd_buf_str(&b, ",\"retrieval_score\":");
        embd_buf_json_float(&b, h->score);
        embd_buf_printf(&b, ",\"retrieval_rank\":%zu,\"text\":", order[j].index + 1);
        embd_buf_json_string(&b, h->text, h->text_len);
        embd_buf_put(&b, "}", 1);
    }
    embd_buf_str(&b, "],\"reranker\":");
    embd_buf_json_string(&b, s->rr->name, strlen(s->rr->name));
    embd_buf_printf(&b, ",\"candidates\":%zu}", n);
    embd_free(order);
    return send_buf(s, c, R_SEARCH, false, 200, &b, "application/json", NULL, NULL, st->start);
}

/* Second half: the store is searched with the query's vector; with rerank,
 * its top candidates go to the reranker (a third half, answer_reranked,
 * answers). */
static enum MHD_Result finish_search(struct server *s, struct MHD_Connection *c, struct conn *st) {
    if (st->es != EMBD_OK) return embed_failed(s, c, R_SEARCH, false, st, st->es);
    if (st->stage == 1) return answer_reranked(s, c, st);
    const struct srv_request *req = &st->req;
    const size_t want = req->rerank ? req->candidates : req->k;
    struct embd_store_hit *hits = embd_malloc2(want, sizeof *hits); /* (want) */
    if (!hits) return send_oom(s, c, R_SEARCH, false, st->start);
    char msg[512];
    struct embd_buf b = {0};
    bool kept = true;
    pthread_mutex_lock(&s->store_mu);
    size_t n_hits = 0;
    enum embd_status es = embd_vstore_search(s->store, st->vecs, want, req->exact, hits, &n_hits);
    if (es == EMBD_OK && req->rerank) {
        kept = keep_hits(st, hits, n_hits);
    } else if (es == EMBD_OK) {
        embd_buf_str(&b, "{\"hits\":[");
        for (size_t i = 0; i < n_hits; i++) {
            embd_buf_printf(&b, "%s{\"rank\":%zu,\"id\":", i ? "," : "", i + 1);
            embd_buf_json_string(&b, hits[i].id, hits[i].id_len);
            embd_buf_str(&b, ",\"score\":");
            embd_buf_json_float(&b, hits[i].score);
            embd_buf_str(&b, ",\"text\":");
            embd_buf_json_string(&b, hits[i].text, hits[i].text_len);
            embd_buf_put(&b, "}", 1);
        }
        embd_buf_str(&b, "]}");
    }
    if (es != EMBD_OK) snprintf(msg, sizeof msg, "store: %s", embd_last_error());
    pthread_mutex_unlock(&s->store_mu);
    embd_free(hits);
    if (es != EMBD_OK) {
        embd_free(b.p);
        return send_error(s, c, R_SEARCH, false, es == EMBD_ERR_NOMEM ? 503 : 500, NULL, msg,
                          st->start);
    }
    if (!req->rerank)
        return send_buf(s, c, R_SEARCH, false, 200, &b, "application/json", NULL, NULL, st->start);
    if (!kept) return send_oom(s, c, R_SEARCH, false, st->start);
    st->stage = 1;
    if (n_hits == 0) return answer_reranked(s, c, st);
    /* The candidates, cut as they must be to fit the reranker beside the query. */
    embd_free(st->texts); /* the query's, embedded */
    embd_free(st->lens);
    st->texts = embd_malloc2(n_hits, sizeof *st->texts);   /* (n) */
    st->lens = embd_malloc2(n_hits, sizeof *st->lens);     /* (n) */
    st->scores = embd_malloc2(n_hits, sizeof *st->scores); /* (n) */
    if (!st->texts || !st->lens || !st->scores) return send_oom(s, c, R_SEARCH, false, st->start);
    for (size_t i = 0; i < n_hits; i++) {
        st->texts[i] = st->cands[i].text;
        st->lens[i] = st->cands[i].text_len;
    }
    st->ropts = embd_rerank_default_opts(); /* the model's activation, truncated */
    es = submit_rerank(s, c, st, req->query, req->query_len, n_hits);
    if (es != EMBD_OK) return embed_failed(s, c, R_SEARCH, false, st, es);
    return MHD_YES;
}

/* POST /rerank and /v1/rerank, first half: parses, takes the reply's memory
 * from the budget and submits the pairs to the reranker (the connection
 * waits, suspended, for finish_rerank). */
static enum MHD_Result start_rerank(struct server *s, struct MHD_Connection *c, enum route r,
                                    struct conn *st) {
    const bool openai = r == R_RERANK_V1;
    struct srv_request *req = &st->req;
    struct srv_error err;
    if (!s->rr) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "no reranker: the model \"%.200s\" embeds; start the server with --reranker "
                 "DIR (a cross-encoder) beside it, or serve a cross-encoder with -m",
                 s->cfg->model_name);
        return send_error(s, c, r, openai, 404, NULL, msg, st->start);
    }
    if (srv_parse(openai ? SRV_API_RERANK : SRV_API_TEI_RERANK, st->body, st->len, &s->cfg->limits,
                  req, &err))
        return send_error(s, c, r, openai, err.status, err.param, err.message, st->start);
    st->have_req = true;
    const size_t n = req->n;
    /* The scores, the order and the reply text (a result as at most 64
     * characters, a text as at most 6 per byte escaped). */
    size_t text_bytes = 0;
    for (size_t i = 0; req->return_text && i < n; i++)
        text_bytes += req->inputs[i].len;
    if (!reserve_reply(s, st,
                       n * (sizeof(float) + sizeof(struct ranked) + 64) + 6 * text_bytes + 4096))
        return send_over_budget(s, c, r, openai, st);
    st->scores = embd_malloc2(n, sizeof *st->scores); /* (n) */
    st->texts = embd_malloc2(n, sizeof *st->texts);   /* (n) */
    st->lens = embd_malloc2(n, sizeof *st->lens);     /* (n) */
    if (!st->scores || !st->texts || !st->lens) return send_oom(s, c, r, openai, st->start);
    for (size_t i = 0; i < n; i++) {
        st->texts[i] = req->inputs[i].text;
        st->lens[i] = req->inputs[i].len;
    }
    /* The engine applies the activation (or not), truncates or refuses, and
     * counts the tokens of each pair (the usage). */
    st->ropts = embd_rerank_default_opts();
    st->ropts.raw_scores = req->raw_scores;
    st->ropts.truncate = req->truncate;
    enum embd_status es = submit_rerank(s, c, st, req->query, req->query_len, n);
    if (es != EMBD_OK) return embed_failed(s, c, r, openai, st, es);
    return MHD_YES;
}

/* Second half: the documents ranked best first (equal scores in input
 * order), in TEI's shape or Cohere's. */
static enum MHD_Result finish_rerank(struct server *s, struct MHD_Connection *c, enum route r,
                                     struct conn *st) {
    const bool openai = r == R_RERANK_V1;
    const struct srv_request *req = &st->req;
    if (st->es != EMBD_OK) return embed_failed(s, c, r, openai, st, st->es);
    const size_t n = req->n, shown = req->top_n ? req->top_n : n;
    struct ranked *order = rank_scores(st->scores, n);
    if (!order) return send_oom(s, c, r, openai, st->start);
    struct embd_buf b = {0};
    embd_buf_str(&b, openai ? "{\"results\":[" : "[");
    for (size_t j = 0; j < shown && !b.oom; j++) {
        const struct srv_input *in = &req->inputs[order[j].index];
        embd_buf_printf(&b, "%s{\"index\":%zu,\"%s\":", j ? "," : "", order[j].index,
                        openai ? "relevance_score" : "score");
        embd_buf_json_float(&b, order[j].score);
        if (req->return_text) {
            embd_buf_str(&b, openai ? ",\"document\":{\"text\":" : ",\"text\":");
            embd_buf_json_string(&b, in->text, in->len);
            if (openai) embd_buf_put(&b, "}", 1);
        }
        embd_buf_put(&b, "}", 1);
    }
    embd_buf_put(&b, "]", 1);
    const size_t n_tokens = st->info.total_tokens;
    if (openai) {
        embd_buf_str(&b, ",\"model\":");
        embd_buf_json_string(&b, s->rr->name, strlen(s->rr->name));
        embd_buf_printf(&b, ",\"usage\":{\"total_tokens\":%zu}}", n_tokens);
    }
    embd_free(order);
    char tokens_hdr[32];
    snprintf(tokens_hdr, sizeof tokens_hdr, "%zu", n_tokens);
    return send_buf(s, c, r, openai, 200, &b, "application/json", "x-embd-tokens", tokens_hdr,
                    st->start);
}

/* ---------------------------------------------------------------------- */
/* Tokenization (TEI's /tokenize and /decode)                              */
/* ---------------------------------------------------------------------- */

/* Answered on the HTTP thread, without the engine (no forward pass): the
 * parser's limits (inputs, characters, body size) bound the work, and the
 * reply text is taken from the reply memory budget as it grows. */

/* Takes what the reply buffer holds beyond what the request has taken
 * already from the reply memory budget; false when it is spent. */
static bool reserve_growth(struct server *s, struct conn *st, const struct embd_buf *b) {
    return b->cap <= st->reserved || reserve_reply(s, st, b->cap - st->reserved);
}

/* The answer to a tokenization whose tokenizer call failed: out of memory
 * is 503, a bad id 400, what the tokenizer does not implement (a Unigram
 * model's offsets, a decoder other than WordPiece's) 501. */
static enum MHD_Result tok_failed(struct server *s, struct MHD_Connection *c, enum route r,
                                  struct conn *st, enum embd_status es, size_t index) {
    if (es == EMBD_ERR_NOMEM) return send_oom(s, c, r, false, st->start);
    char msg[512];
    const char *e = embd_last_error();
    snprintf(msg, sizeof msg, "%s %zu: %s", r == R_DECODE ? "ids" : "input", index,
             e && *e ? e : embd_status_str(es));
    const int code = es == EMBD_ERR_INVALID_ARG ? 400 : es == EMBD_ERR_UNSUPPORTED ? 501 : 500;
    return send_error(s, c, r, false, code, r == R_DECODE ? "ids" : "inputs", msg, st->start);
}

/* Token arrays for one text, grown as needed. */
struct tok_scratch {
    int32_t *ids;
    size_t *starts, *stops;
    uint8_t *special;
    size_t cap;
    char *text; /* the prompt and the input */
    size_t text_cap;
};

static void tok_scratch_free(struct tok_scratch *t) {
    embd_free(t->ids);
    embd_free(t->starts);
    embd_free(t->stops);
    embd_free(t->special);
    embd_free(t->text);
}

static bool tok_scratch_grow(struct tok_scratch *t, size_t n) {
    if (n <= t->cap) return true;
    embd_free(t->ids);
    embd_free(t->starts);
    embd_free(t->stops);
    embd_free(t->special);
    t->ids = embd_malloc2(n, sizeof *t->ids);         /* (n) */
    t->starts = embd_malloc2(n, sizeof *t->starts);   /* (n) */
    t->stops = embd_malloc2(n, sizeof *t->stops);     /* (n) */
    t->special = embd_malloc2(n, sizeof *t->special); /* (n) */
    t->cap = t->ids && t->starts && t->stops && t->special ? n : 0;
    return t->cap != 0;
}

/* Tokenizes text (len bytes) whole, as TEI's /tokenize does (no
 * truncation), into t; *n gets the count. */
static enum embd_status tokenize_all(const embd_model *m, const char *text, size_t len,
                                     bool special, struct tok_scratch *t, size_t *n) {
    if (!tok_scratch_grow(t, len + 8)) return EMBD_ERR_NOMEM;
    for (;;) {
        enum embd_status es = embd_tokenize_offsets(m, text, len, special, false, t->ids, t->starts,
                                                    t->stops, t->special, t->cap, n);
        if (es != EMBD_ERR_BUFFER_TOO_SMALL || *n <= t->cap) return es;
        if (!tok_scratch_grow(t, *n)) return EMBD_ERR_NOMEM;
    }
}

/* POST /tokenize, text-embeddings-inference's shape: one list per input
 * (a single string too) of {"id","text","special","start","stop"}. A token
 * of the text has its [start, stop) byte range in the text tokenized (the
 * prompt and the input) and that range's text; a special token added around
 * it ([CLS], [SEP]) has its own string and null offsets. The text is the
 * input with the prompt the request names, else the server's default
 * prompt (an embedder's), before it, as /embed embeds it; nothing is
 * truncated. Runs the model's tokenizer (a cross-encoder's too), not the
 * engine. */
static enum MHD_Result handle_tokenize(struct server *s, struct MHD_Connection *c,
                                       struct conn *st) {
    struct srv_request *req = &st->req;
    struct srv_error err;
    if (srv_parse(SRV_API_TOKENIZE, st->body, st->len, &s->cfg->limits, req, &err))
        return send_error(s, c, R_TOKENIZE, false, err.status, err.param, err.message, st->start);
    st->have_req = true;
    const embd_model *m = s->main_e.model;
    const struct srv_limits *lim = &s->cfg->limits;
    const char *prompt = NULL;
    if (req->prompt >= 0 && (size_t)req->prompt < lim->n_prompts)
        prompt = embd_model_prompt(m, lim->prompts[req->prompt]);
    else if (s->emb && s->cfg->prefix && *s->cfg->prefix)
        prompt = s->cfg->prefix;
    const size_t plen = prompt ? strlen(prompt) : 0;
    struct tok_scratch t = {0};
    struct embd_buf b = {0};
    embd_buf_put(&b, "[", 1);
    for (size_t i = 0; i < req->n && !b.oom; i++) {
        const char *text = req->inputs[i].text;
        size_t len = req->inputs[i].len;
        if (plen) { /* the prompt, then the input */
            if (plen + len > t.text_cap) {
                embd_free(t.text);
                t.text_cap = plen + len;
                t.text = embd_malloc(t.text_cap);
                if (!t.text) {
                    tok_scratch_free(&t);
                    embd_free(b.p);
                    return send_oom(s, c, R_TOKENIZE, false, st->start);
                }
            }
            memcpy(t.text, prompt, plen);
            memcpy(t.text + plen, text, len);
            text = t.text;
            len += plen;
        }
        size_t n = 0;
        enum embd_status es = tokenize_all(m, text, len, req->add_special_tokens, &t, &n);
        if (es != EMBD_OK) {
            tok_scratch_free(&t);
            embd_free(b.p);
            return tok_failed(s, c, R_TOKENIZE, st, es, i);
        }
        embd_buf_str(&b, i ? ",[" : "[");
        for (size_t j = 0; j < n; j++) {
            embd_buf_printf(&b, "%s{\"id\":%d,\"text\":", j ? "," : "", (int)t.ids[j]);
            if (t.special[j]) {
                const char *tok = embd_model_token(m, t.ids[j]);
                embd_buf_json_string(&b, tok ? tok : "", tok ? strlen(tok) : 0);
                embd_buf_str(&b, ",\"special\":true,\"start\":null,\"stop\":null}");
            } else {
                embd_buf_json_string(&b, text + t.starts[j], t.stops[j] - t.starts[j]);
                embd_buf_printf(&b, ",\"special\":false,\"start\":%zu,\"stop\":%zu}", t.starts[j],
                                t.stops[j]);
            }
        }
        embd_buf_put(&b, "]", 1);
        if (!b.oom && !reserve_growth(s, st, &b)) {
            tok_scratch_free(&t);
            embd_free(b.p);
            return send_over_budget(s, c, R_TOKENIZE, false, st);
        }
    }
    embd_buf_put(&b, "]", 1);
    tok_scratch_free(&t);
    return send_buf(s, c, R_TOKENIZE, false, 200, &b, "application/json", NULL, NULL, st->start);
}

/* POST /decode, text-embeddings-inference's shape: one string per token
 * list (a single list too), as the tokenizer's decoder gives it
 * (embd_detokenize). An id outside the vocabulary is 400 (refused by the
 * parser: Hugging Face's decode would skip it). */
static enum MHD_Result handle_decode(struct server *s, struct MHD_Connection *c, struct conn *st) {
    struct srv_request *req = &st->req;
    struct srv_error err;
    if (srv_parse(SRV_API_DECODE, st->body, st->len, &s->cfg->limits, req, &err))
        return send_error(s, c, R_DECODE, false, err.status, err.param, err.message, st->start);
    st->have_req = true;
    const embd_model *m = s->main_e.model;
    size_t cap = 4096;
    char *text = embd_malloc(cap);
    struct embd_buf b = {0};
    embd_buf_put(&b, "[", 1);
    for (size_t i = 0; i < req->n && text && !b.oom; i++) {
        const struct srv_input *in = &req->inputs[i];
        size_t len = 0;
        enum embd_status es;
        while ((es = embd_detokenize(m, in->ids, in->n_ids, req->skip_special_tokens, text, cap,
                                     &len)) == EMBD_ERR_BUFFER_TOO_SMALL &&
               len + 1 > cap) {
            embd_free(text);
            cap = len + 1;
            text = embd_malloc(cap);
            if (!text) break;
        }
        if (!text) break;
        if (es != EMBD_OK) {
            embd_free(text);
            embd_free(b.p);
            return tok_failed(s, c, R_DECODE, st, es, i);
        }
        if (i) embd_buf_put(&b, ",", 1);
        embd_buf_json_string(&b, text, len);
        if (!b.oom && !reserve_growth(s, st, &b)) {
            embd_free(text);
            embd_free(b.p);
            return send_over_budget(s, c, R_DECODE, false, st);
        }
    }
    if (!text) {
        embd_free(b.p);
        return send_oom(s, c, R_DECODE, false, st->start);
    }
    embd_free(text);
    embd_buf_put(&b, "]", 1);
    return send_buf(s, c, R_DECODE, false, 200, &b, "application/json", NULL, NULL, st->start);
}

/* A real forward pass of one engine ([CLS] [SEP] for an embedder, the
 * pair of two empty texts for a reranker; not cached), under health_mu.
 * A pass is reused for cfg->health_interval_s (default 1 s); a failed check
 * is not, so that a passing failure (out of memory) does not leave the
 * server reported unhealthy. While work flows, a round that succeeded
 * within the interval answers without a pass of its own, so that /health
 * never waits behind that work. */
static bool check_engine(struct server *s, struct engine *e) {
    double t = embd_now();
    double interval = s->cfg->health_interval_s > 0 ? s->cfg->health_interval_s : 1.0;
    double age = embd_sched_last_ok_age(e->sched);
    if (e->health_ok && age >= 0 && age < interval) e->health_at = t;
    if (!e->health_ok || t - e->health_at >= interval) {
        enum embd_status es;
        if (e->rerank) {
            float score = NAN;
            const char *doc = "";
            const size_t doc_len = 0;
            const struct embd_sched_call call = {.queue_timeout_ms = 10000};
            es = embd_sched_rerank(e->sched, "", 0, &doc, &doc_len, 1, &score, &call, NULL, NULL);
            e->health_ok = es == EMBD_OK && isfinite(score);
            if (es != EMBD_OK)
                snprintf(e->health_err, sizeof e->health_err, "the reranker cannot score: %s",
                         embd_last_error());
        } else {
            float *v = embd_malloc2((size_t)s->dim, sizeof *v); /* (D) */
            size_t ss[2] = {0, e->health_n};
            es = v ? embd_sched_embed_tokens(e->sched, e->health_ids, ss, 1, v, 10000)
                   : EMBD_ERR_NOMEM;
            e->health_ok = es == EMBD_OK;
            for (int d = 0; e->health_ok && d < s->dim; d++)
                if (!isfinite(v[d])) e->health_ok = false;
            if (es != EMBD_OK)
                snprintf(e->health_err, sizeof e->health_err, "the model cannot embed: %s",
                         v ? embd_last_error() : "out of memory");
            embd_free(v);
        }
        if (es == EMBD_OK && !e->health_ok)
            snprintf(e->health_err, sizeof e->health_err, "the %s gives non-finite values",
                     e->rerank ? "reranker" : "model");
        e->health_at = embd_now();
    }
    return e->health_ok;
}

/* Whether every engine passes its check (check_engine); why (cap bytes)
 * gets the first failure's reason. */
static bool check_health(struct server *s, char *why, size_t cap) {
    pthread_mutex_lock(&s->health_mu);
    bool ok = check_engine(s, &s->main_e);
    const struct engine *bad = ok ? NULL : &s->main_e;
    if (ok && s->rr == &s->extra_e && !check_engine(s, &s->extra_e)) {
        ok = false;
        bad = &s->extra_e;
    }
    snprintf(why, cap, "%s", bad ? bad->health_err : "");
    pthread_mutex_unlock(&s->health_mu);
    return ok;
}

static enum MHD_Result handle_health(struct server *s, struct MHD_Connection *c, struct conn *st) {
    atomic_store(&s->health_asked, true);
    if (atomic_load(&s->unready))
        return send_error(s, c, R_HEALTH, false, 503, NULL,
                          "draining: the server got SIGTERM and stops soon; it still answers "
                          "requests for --drain-seconds",
                          st->start);
    char why[256];
    if (!check_health(s, why, sizeof why))
        return send_error(s, c, R_HEALTH, false, 503, NULL, why, st->start);
    /* a GPU that died mid-run: the CPU carries its work (200), and says so */
    struct embd_buf b = {0};
    const char *msg = NULL;
    const struct engine *dead = NULL;
    if (embd_ctx_fallback(s->main_e.ctx, &msg) == EMBD_FALLBACK_GPU_DEAD)
        dead = &s->main_e;
    else if (s->rr && embd_ctx_fallback(s->rr->ctx, &msg) == EMBD_FALLBACK_GPU_DEAD)
        dead = s->rr;
    if (dead) {
        embd_buf_str(&b, "{\"status\":\"degraded\",\"device\":\"cpu\",\"reason\":\"cuda_dead\","
                         "\"message\":");
        embd_buf_json_string(&b, msg ? msg : "", msg ? strlen(msg) : 0);
        embd_buf_put(&b, "}", 1);
    } else {
        embd_buf_str(&b, "{\"status\":\"ok\"}");
    }
    return send_buf(s, c, R_HEALTH, false, 200, &b, "application/json", NULL, NULL, st->start);
}

/* The reranker in /info: its name, files, limits and where it runs. */
static void buf_reranker(struct embd_buf *b, const struct engine *e) {
    embd_buf_str(b, "{\"model_id\":");
    embd_buf_json_string(b, e->name, strlen(e->name));
    embd_buf_str(b, ",\"model_dir\":");
    embd_buf_json_string(b, e->dir, strlen(e->dir));
    embd_buf_printf(b,
                    ",\"model_fingerprint\":\"%016llx\",\"model_dtype\":\"%s\","
                    "\"max_input_length\":%zu,\"device\":\"%s\",\"dtype\":\"%s\","
                    "\"max_batch_tokens\":%d}",
                    (unsigned long long)embd_model_fingerprint(e->model), e->dtype, e->max_tokens,
                    embd_ctx_backend(e->ctx), embd_dtype_str(embd_ctx_dtype(e->ctx)),
                    e->max_batch_tokens);
}

/* A string, or null for NULL. */
static void buf_json_string_or_null(struct embd_buf *b, const char *str) {
    if (str)
        embd_buf_json_string(b, str, strlen(str));
    else
        embd_buf_str(b, "null");
}

/* The embedder's prompts in /info: "prompts" (name: text, as
 * config_sentence_transformers.json declares them), "default_prompt_name"
 * (--default-prompt-name: applied to the texts of a request that names no
 * prompt), "default_prompt" (the text applied then: that prompt's, or
 * --prefix) and "model_default_prompt_name" (the file's default_prompt_name,
 * applied only when the server is started with it). */
static void buf_prompts(struct embd_buf *b, const struct server *s) {
    const embd_model *m = s->emb->model;
    embd_buf_str(b, ",\"prompts\":{");
    bool first = true;
    for (int i = 0; i < embd_model_prompt_count(m); i++) {
        const char *name = embd_model_prompt_name(m, i);
        const char *text = name ? embd_model_prompt(m, name) : NULL;
        if (!name || !text) continue;
        if (!first) embd_buf_put(b, ",", 1);
        first = false;
        embd_buf_json_string(b, name, strlen(name));
        embd_buf_put(b, ":", 1);
        embd_buf_json_string(b, text, strlen(text));
    }
    embd_buf_str(b, "},\"default_prompt_name\":");
    buf_json_string_or_null(b, s->cfg->default_prompt_name);
    embd_buf_str(b, ",\"default_prompt\":");
    buf_json_string_or_null(b, s->cfg->prefix && *s->cfg->prefix ? s->cfg->prefix : NULL);
    embd_buf_str(b, ",\"model_default_prompt_name\":");
    buf_json_string_or_null(b, embd_model_default_prompt_name(m));
}

static enum MHD_Result handle_info(struct server *s, struct MHD_Connection *c, struct conn *st) {
    const struct srv_config *cfg = s->cfg;
    const struct engine *m = &s->main_e;
    struct embd_buf b = {0};
    embd_buf_str(&b, "{\"model_id\":");
    embd_buf_json_string(&b, cfg->model_name, strlen(cfg->model_name));
    embd_buf_str(&b, ",\"model_dir\":");
    embd_buf_json_string(&b, cfg->model_dir, strlen(cfg->model_dir));
    embd_buf_printf(&b, ",\"model_fingerprint\":\"%016llx\",\"model_dtype\":\"%s\",",
                    (unsigned long long)embd_model_fingerprint(m->model), cfg->dtype);
    if (m->rerank) /* TEI's ModelType::Reranker */
        embd_buf_str(&b, "\"model_type\":{\"reranker\":{}},");
    else
        embd_buf_printf(&b, "\"model_type\":{\"embedding\":{\"pooling\":\"%s\"}},",
                        embd_model_pooling(m->model));
    embd_buf_printf(&b,
                    "\"dim\":%d,"
                    "\"max_input_length\":%zu,\"normalize\":%s,\"device\":\"%s\","
                    "\"max_client_batch_size\":%zu,\"max_input_chars\":%zu,\"max_body_bytes\":%zu,"
                    "\"max_concurrent_requests\":%zu,\"max_batch_tokens\":%d,\"auto_truncate\":%s,"
                    "\"auth\":%s,\"version\":\"%s\",\"backend\":\"embd\"",
                    s->dim, cfg->limits.max_tokens, cfg->normalize ? "true" : "false",
                    embd_ctx_backend(m->ctx), cfg->limits.max_inputs, cfg->limits.max_input_chars,
                    cfg->max_body_bytes, cfg->max_concurrent, cfg->max_batch_tokens,
                    cfg->limits.auto_truncate ? "true" : "false",
                    cfg->api_key && *cfg->api_key ? "true" : "false", EMBD_VERSION);
    /* the precision in use now, and why the CPU runs (device auto found no GPU, or it died) */
    const char *fb_msg;
    enum embd_fallback fb = embd_ctx_fallback(m->ctx, &fb_msg);
    embd_buf_printf(&b, ",\"dtype\":\"%s\",\"fallback\":", embd_dtype_str(embd_ctx_dtype(m->ctx)));
    if (fb == EMBD_FALLBACK_NONE) {
        embd_buf_str(&b, "null");
    } else {
        embd_buf_printf(&b, "{\"reason\":\"%s\",\"message\":", embd_fallback_str(fb));
        embd_buf_json_string(&b, fb_msg, strlen(fb_msg));
        embd_buf_put(&b, "}", 1);
    }
    /* every device context: where it runs, its fallback and device memory */
    embd_buf_str(&b, ",\"devices\":[");
    const int nd = cfg->n_devices > 0 ? cfg->n_devices : 1;
    for (int i = 0; i < nd; i++) {
        embd_ctx *dc = cfg->n_devices > 0 ? cfg->devices[i] : m->ctx;
        struct embd_ctx_gpu_stats gs;
        embd_ctx_gpu_stats(dc, &gs);
        const char *dmsg;
        enum embd_fallback dfb = embd_ctx_fallback(dc, &dmsg);
        embd_buf_str(&b, i ? ",{\"device\":" : "{\"device\":");
        buf_json_string_or_null(&b, cfg->n_devices > 0 ? cfg->device_names[i] : NULL);
        embd_buf_printf(&b,
                        ",\"backend\":\"%s\",\"dtype\":\"%s\",\"fallback\":%s%s%s,"
                        "\"weight_bytes\":%zu,\"scratch_bytes\":%zu,\"peak_bytes\":%zu,"
                        "\"batch_tokens\":%d,\"cpu_fallbacks\":%llu,\"dead\":%s}",
                        embd_ctx_backend(dc), embd_dtype_str(embd_ctx_dtype(dc)),
                        dfb == EMBD_FALLBACK_NONE ? "null" : "\"",
                        dfb == EMBD_FALLBACK_NONE ? "" : embd_fallback_str(dfb),
                        dfb == EMBD_FALLBACK_NONE ? "" : "\"", gs.weight_bytes, gs.scratch_bytes,
                        gs.peak_bytes, gs.batch_tokens, (unsigned long long)gs.cpu_fallbacks,
                        gs.dead ? "true" : "false");
    }
    embd_buf_put(&b, "]", 1);
    /* which CUDA plugin runs and why (null: no GPU probe looked for one) */
    struct embd_cuda_choice cc;
    embd_buf_str(&b, ",\"cuda_plugin\":");
    if (embd_cuda_plugin_choice(&cc) != 0) {
        embd_buf_str(&b, "null");
    } else {
        embd_buf_str(&b, "{\"plugin\":");
        buf_json_string_or_null(&b, cc.loaded ? cc.plugin : NULL);
        embd_buf_printf(&b, ",\"runtime_version\":%d,\"driver_version\":%d,\"why\":",
                        cc.runtime_version, cc.driver_version);
        embd_buf_json_string(&b, cc.why, strlen(cc.why));
        embd_buf_put(&b, "}", 1);
    }
    if (s->emb) /* the prompts a request may name, and the one applied when it names none */
        buf_prompts(&b, s);
    embd_buf_str(&b, ",\"reranker\":");
    if (s->rr)
        buf_reranker(&b, s->rr);
    else
        embd_buf_str(&b, "null");
    if (s->store) {
        size_t n = 0;
        pthread_mutex_lock(&s->store_mu);
        enum embd_status es = embd_vstore_count(s->store, &n);
        pthread_mutex_unlock(&s->store_mu);
        embd_buf_printf(&b, ",\"store\":{\"kind\":\"%s\",\"count\":", embd_vstore_kind(s->store));
        if (es == EMBD_OK)
            embd_buf_printf(&b, "%zu}", n);
        else
            embd_buf_str(&b, "null}");
    } else {
        embd_buf_str(&b, ",\"store\":null");
    }
    embd_buf_put(&b, "}", 1);
    return send_buf(s, c, R_INFO, false, 200, &b, "application/json", NULL, NULL, st->start);
}

/* Appends a rendering of engine metrics (text, len bytes) with every
 * metric name's "embd_" prefix made "embd_reranker_": the reranker's own
 * series beside the embedder's. */
static void put_reranker_metrics(struct embd_buf *b, const char *text, size_t len) {
    static const char *const heads[] = {"# HELP embd_", "# TYPE embd_", "embd_"};
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        size_t skip = 0;
        for (size_t h = 0; h < sizeof heads / sizeof heads[0] && !skip; h++) {
            size_t hl = strlen(heads[h]);
            if ((size_t)(next - p) >= hl && !memcmp(p, heads[h], hl)) {
                embd_buf_put(b, heads[h], hl);
                embd_buf_str(b, "reranker_");
                skip = hl;
            }
        }
        embd_buf_put(b, p + skip, (size_t)(next - p) - skip);
        p = next;
    }
}

static enum MHD_Result handle_metrics(struct server *s, struct MHD_Connection *c, struct conn *st) {
    struct embd_buf b = {0};
    const struct srv_config *cfg = s->cfg;
    size_t need;
    if (cfg->n_devices > 1) { /* a context per device: samples labelled device="cuda:N" */
        need =
            embd_metrics_render_devices(cfg->devices, cfg->device_names, cfg->n_devices, NULL, 0);
        embd_buf_reserve(&b, need + 8192);
        if (!b.oom)
            need = embd_metrics_render_devices(cfg->devices, cfg->device_names, cfg->n_devices, b.p,
                                               need + 8192);
    } else {
        need = embd_metrics_render(s->main_e.ctx, NULL, 0);
        embd_buf_reserve(&b, need + 4096);
        if (!b.oom) embd_metrics_render(s->main_e.ctx, b.p, need + 1);
    }
    if (!b.oom) b.len = need;
    if (s->rr == &s->extra_e) { /* the reranker beside: embd_reranker_* */
        size_t rneed = embd_metrics_render(s->extra_e.ctx, NULL, 0);
        char *r = embd_malloc(rneed + 1);
        if (r) {
            size_t got = embd_metrics_render(s->extra_e.ctx, r, rneed + 1);
            put_reranker_metrics(&b, r, got < rneed ? got : rneed);
        } else {
            b.oom = true;
        }
        embd_free(r);
    }
    /* Counted before rendering, so that the answer includes itself. */
    count_response(s, R_METRICS, 200, st->start);
    embd_buf_str(&b, "# HELP embd_http_responses_total HTTP responses by endpoint and status.\n"
                     "# TYPE embd_http_responses_total counter\n");
    for (int r = 0; r < R_COUNT; r++)
        for (int k = 0; k <= N_CODES; k++) {
            unsigned long long v = atomic_load(&s->responses[r][k]);
            if (!v) continue;
            if (k < N_CODES)
                embd_buf_printf(&b, "embd_http_responses_total{path=\"%s\",code=\"%d\"} %llu\n",
                                route_names[r], tracked_codes[k], v);
            else
                embd_buf_printf(&b, "embd_http_responses_total{path=\"%s\",code=\"other\"} %llu\n",
                                route_names[r], v);
        }
    embd_buf_str(&b, "# HELP embd_http_request_seconds Time from a request's first byte to its "
                     "answer.\n# TYPE embd_http_request_seconds summary\n");
    for (int r = 0; r < R_COUNT; r++) {
        unsigned long long n = atomic_load(&s->latency_count[r]);
        if (!n) continue;
        embd_buf_printf(&b, "embd_http_request_seconds_sum{path=\"%s\"} %.6f\n", route_names[r],
                        (double)atomic_load(&s->latency_us_sum[r]) * 1e-6);
        embd_buf_printf(&b, "embd_http_request_seconds_count{path=\"%s\"} %llu\n", route_names[r],
                        n);
    }
    embd_buf_printf(&b,
                    "# HELP embd_http_requests_in_flight Requests being received or answered.\n"
                    "# TYPE embd_http_requests_in_flight gauge\nembd_http_requests_in_flight %d\n"
                    "# HELP embd_http_rejected_busy_total Requests refused with 429 because the "
                    "engine's queue stayed full.\n# TYPE embd_http_rejected_busy_total counter\n"
                    "embd_http_rejected_busy_total %llu\n"
                    "# HELP embd_http_cancelled_total Requests taken off the queue because their "
                    "client hung up.\n# TYPE embd_http_cancelled_total counter\n"
                    "embd_http_cancelled_total %llu\n"
                    "# HELP embd_http_rejected_memory_total Requests refused with 503 because "
                    "the replies in flight held --max-reply-memory.\n"
                    "# TYPE embd_http_rejected_memory_total counter\n"
                    "embd_http_rejected_memory_total %llu\n"
                    "# HELP embd_http_reply_bytes Reply memory in flight (vectors and reply "
                    "text).\n# TYPE embd_http_reply_bytes gauge\nembd_http_reply_bytes %zu\n"
                    "# HELP embd_http_connections_refused_total Connections answered 503 and "
                    "closed at once (--max-connections, --max-connections-per-client).\n"
                    "# TYPE embd_http_connections_refused_total counter\n"
                    "embd_http_connections_refused_total %llu\n"
                    "# HELP embd_http_connections_timed_out_total Connections closed because "
                    "their request headers were not in within --header-timeout, or its body "
                    "within --body-timeout.\n"
                    "# TYPE embd_http_connections_timed_out_total counter\n"
                    "embd_http_connections_timed_out_total %llu\n",
                    atomic_load(&s->in_flight), (unsigned long long)atomic_load(&s->rejected_busy),
                    (unsigned long long)atomic_load(&s->cancelled),
                    (unsigned long long)atomic_load(&s->rejected_memory),
                    (size_t)atomic_load(&s->reply_bytes),
                    (unsigned long long)atomic_load(&s->rejected_conns),
                    (unsigned long long)atomic_load(&s->closed_slow));
    /* the engine's queue (the embedder's and a reranker's beside it, together):
     * the autoscaler's metric (deploy/k8s/hpa-*.yaml) */
    size_t qr = 0, qi = 0, rr = 0, ri = 0;
    embd_sched_queue_depth(s->main_e.sched, &qr, &qi);
    if (s->rr == &s->extra_e) embd_sched_queue_depth(s->extra_e.sched, &rr, &ri);
    embd_buf_printf(&b,
                    "# HELP embd_queue_requests Requests in the engine's queue: waiting for room, "
                    "for a round, or running.\n# TYPE embd_queue_requests gauge\n"
                    "embd_queue_requests %zu\n"
                    "# HELP embd_queue_inputs Inputs (texts, token sequences, pairs) in the "
                    "engine's queue not yet handed to a forward pass.\n"
                    "# TYPE embd_queue_inputs gauge\nembd_queue_inputs %zu\n",
                    qr + rr, qi + ri);
    if (b.oom) { /* answered with send_oom's 503 (counted there) instead */
        atomic_fetch_sub(&s->responses[R_METRICS][0], 1);
        atomic_fetch_sub(&s->latency_count[R_METRICS], 1);
        embd_free(b.p);
        return send_oom(s, c, R_METRICS, false, st->start);
    }
    return queue_buf(c, 200, &b, "text/plain; version=0.0.4; charset=utf-8", NULL, NULL, false);
}

/* ---------------------------------------------------------------------- */
/* Dispatch                                                                */
/* ---------------------------------------------------------------------- */

/* One model in the OpenAI shape. */
static void buf_model(struct embd_buf *b, const struct server *s, const char *name) {
    embd_buf_str(b, "{\"id\":");
    embd_buf_json_string(b, name, strlen(name));
    embd_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"embd\"}",
                    (long long)s->started);
}

/* GET /v1/models (the served models, in a list: the model, and the
 * reranker beside it) and GET /v1/models/ID (one, or 404 in the OpenAI
 * shape), as OpenAI clients call them to list and check models. */
static enum MHD_Result handle_models(struct server *s, struct MHD_Connection *c, const char *url,
                                     struct conn *st) {
    struct embd_buf b = {0};
    const char *main_name = s->cfg->model_name;
    const char *extra = s->rr == &s->extra_e ? s->extra_e.name : NULL;
    const char *id = url + strlen("/v1/models/");
    if (!strcmp(url, "/v1/models")) {
        embd_buf_str(&b, "{\"object\":\"list\",\"data\":[");
        buf_model(&b, s, main_name);
        if (extra) {
            embd_buf_put(&b, ",", 1);
            buf_model(&b, s, extra);
        }
        embd_buf_str(&b, "]}");
    } else if (!strcmp(id, main_name) || (extra && !strcmp(id, extra))) {
        buf_model(&b, s, id);
    } else {
        char msg[500];
        snprintf(msg, sizeof msg,
                 "no model \"%.200s\" here; this server serves \"%.120s\"%s%.120s%s", id, main_name,
                 extra ? " and \"" : "", extra ? extra : "", extra ? "\"" : "");
        return send_error(s, c, R_MODELS, true, 404, "model", msg, st->start);
    }
    return send_buf(s, c, R_MODELS, true, 200, &b, "application/json", NULL, NULL, st->start);
}

static enum route route_of(const char *url) {
    if (!strcmp(url, "/v1/embeddings") || !strcmp(url, "/embeddings")) return R_OPENAI;
    if (!strcmp(url, "/embed") || !strcmp(url, "/")) return R_TEI;
    if (!strcmp(url, "/search")) return R_SEARCH;
    if (!strcmp(url, "/rerank")) return R_RERANK;
    if (!strcmp(url, "/v1/rerank")) return R_RERANK_V1;
    if (!strcmp(url, "/tokenize")) return R_TOKENIZE;
    if (!strcmp(url, "/decode")) return R_DECODE;
    if (!strcmp(url, "/similarity")) return R_SIMILARITY;
    if (!strcmp(url, "/health")) return R_HEALTH;
    if (!strcmp(url, "/info")) return R_INFO;
    if (!strcmp(url, "/metrics")) return R_METRICS;
    if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) return R_MODELS;
    return R_OTHER;
}

/* Constant-time comparison of the Authorization header with "Bearer KEY". */
static bool authorized(const struct server *s, struct MHD_Connection *c) {
    const char *key = s->cfg->api_key;
    if (!key || !*key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    size_t hl = strlen(h), kl = strlen(key);
    unsigned char diff = hl != kl;
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < hl ? h[i] : 0);
    return diff == 0;
}

static bool json_content_type(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct) return true; /* curl -d without -H, and raw clients: accepted as JSON */
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return !strncasecmp(ct, "application/json", n) &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The slot of a connection, or NULL (refused, or not tracked). */
static struct slot *slot_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void slot_deadline(struct server *s, struct slot *sl, double deadline) {
    if (!sl) return;
    pthread_mutex_lock(&s->conn_mu);
    sl->deadline = deadline;
    pthread_mutex_unlock(&s->conn_mu);
}

static enum MHD_Result dispatch(struct server *s, struct MHD_Connection *c, const char *url,
                                const char *method, struct conn *st) {
    enum route r = route_of(url);
    const bool openai = r == R_OPENAI || !strncmp(url, "/v1/", 4);
    const bool post = !strcmp(method, "POST");
    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    slot_deadline(s, slot_of(c), 0); /* the body is in: no deadline while it is served */
    /* a request begun before the shutdown is served; a later one on a
     * kept-alive connection is refused, and the connection closed so that
     * its client reconnects elsewhere */
    if (atomic_load(&s->draining) && !st->admitted)
        return send_error_x(s, c, r, openai, 503, NULL, "the server is shutting down", st->start,
                            true);
    if (st->oom) return send_oom(s, c, r, openai, st->start);
    if (r == R_OTHER) {
        char msg[300];
        snprintf(
            msg, sizeof msg,
            "no such endpoint; embd serves POST /v1/embeddings, POST /embed, POST /similarity, "
            "POST /rerank, POST /v1/rerank, POST /search, POST /tokenize, POST /decode, GET "
            "/v1/models, GET /health, GET /info and GET /metrics");
        return send_error(s, c, r, openai, 404, NULL, msg, st->start);
    }
    if (r != R_HEALTH && !authorized(s, c))
        return send_error(s, c, r, openai, 401, NULL,
                          "missing or wrong API key: send \"Authorization: Bearer KEY\"",
                          st->start);
    if (r == R_HEALTH || r == R_INFO || r == R_METRICS || r == R_MODELS) {
        if (!get) return send_error(s, c, r, openai, 405, NULL, "use GET", st->start);
        if (r == R_HEALTH) return handle_health(s, c, st);
        if (r == R_INFO) return handle_info(s, c, st);
        if (r == R_MODELS) return handle_models(s, c, url, st);
        return handle_metrics(s, c, st);
    }
    if (!post) return send_error(s, c, r, openai, 405, NULL, "use POST", st->start);
    if (st->too_large) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes (--max-body-bytes)",
                 s->cfg->max_body_bytes);
        return send_error(s, c, r, openai, 413, NULL, msg, st->start);
    }
    if (!json_content_type(c))
        return send_error(s, c, r, openai, 415, NULL,
                          "the request body must be JSON (Content-Type: application/json)",
                          st->start);
    /* Held until the request completes (on_completed), engine wait included. */
    int active = atomic_fetch_add(&s->active, 1);
    st->active = true;
    st->route = r;
    if ((size_t)active >= s->cfg->max_concurrent) {
        atomic_fetch_add(&s->rejected_busy, 1);
        char msg[160];
        snprintf(msg, sizeof msg,
                 "too many requests at once (%zu, --max-concurrent-requests); retry shortly",
                 s->cfg->max_concurrent);
        return send_error(s, c, r, openai, 429, NULL, msg, st->start);
    }
    if (r == R_SEARCH) return start_search(s, c, st);
    if (r == R_RERANK || r == R_RERANK_V1) return start_rerank(s, c, r, st);
    if (r == R_TOKENIZE) return handle_tokenize(s, c, st);
    if (r == R_DECODE) return handle_decode(s, c, st);
    return start_embed(s, c, r, st);
}

/* Answers a connection that is refused as soon as it is accepted: a 503
 * with Retry-After written straight to the new socket (a few hundred bytes
 * into an empty send buffer), then the socket is shut down, so that
 * libmicrohttpd closes it at once. */
static void refuse_connection(int fd, const char *why) {
    char body[300], msg[600];
    int bl = snprintf(body, sizeof body,
                      "{\"error\":\"%s; retry shortly\",\"error_type\":\"Overloaded\"}", why);
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     bl, body);
    if (n > 0 && send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* the client is gone already: nothing to tell it */
    }
    shutdown(fd, SHUT_RDWR);
}

/* MHD_OPTION_NOTIFY_CONNECTION: a connection opens (it takes a slot, or is
 * refused with 503 when the server is at --max-connections or its client at
 * --max-connections-per-client) or closes (its slot is freed). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    struct server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct slot *sl = *socket_context;
        if (!sl) return;
        pthread_mutex_lock(&s->conn_mu);
        sl->used = false;
        pthread_mutex_unlock(&s->conn_mu);
        *socket_context = NULL;
        return;
    }
    *socket_context = NULL;
    const union MHD_ConnectionInfo *fi =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ai =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!fi) return; /* NEVER */
    unsigned char addr[16] = {0}, len = 0;
    const struct sockaddr *sa = ai ? ai->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        len = 4;
    } else if (sa && sa->sa_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        len = 16;
    }
    pthread_mutex_lock(&s->conn_mu);
    size_t same = 0;
    struct slot *free_slot = NULL;
    for (size_t i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->used) {
            if (!free_slot) free_slot = sl;
        } else if (len && sl->addr_len == len && !memcmp(sl->addr, addr, len)) {
            same++;
        }
    }
    const bool over_client = len && same >= s->per_client;
    if (free_slot && !over_client) {
        *free_slot = (struct slot){.used = true,
                                   .fd = fi->connect_fd,
                                   .addr_len = len,
                                   .deadline = embd_now() + s->header_timeout};
        memcpy(free_slot->addr, addr, sizeof addr);
        *socket_context = free_slot;
    }
    pthread_mutex_unlock(&s->conn_mu);
    if (*socket_context) return;
    atomic_fetch_add(&s->rejected_conns, 1);
    char why[160];
    if (over_client)
        snprintf(why, sizeof why,
                 "this client has %zu connections open (--max-connections-per-client)", same);
    else
        snprintf(why, sizeof why, "the server has %zu connections open (--max-connections)",
                 s->n_slots);
    refuse_connection(fi->connect_fd, why);
}

/* MHD_OPTION_URI_LOG_CALLBACK: a request line has arrived; its headers must
 * follow within --header-timeout. Returns the request's initial state
 * (none). */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)uri;
    struct server *s = cls;
    struct slot *sl = slot_of(c);
    if (sl) {
        pthread_mutex_lock(&s->conn_mu);
        double d = embd_now() + s->header_timeout;
        if (!sl->deadline || d < sl->deadline) sl->deadline = d;
        pthread_mutex_unlock(&s->conn_mu);
    }
    return NULL;
}

/* Closes the connections whose headers are late (called by the watchdog):
 * their sockets are shut down, which libmicrohttpd sees as the client
 * leaving. */
static void close_slow(struct server *s) {
    double now = embd_now();
    pthread_mutex_lock(&s->conn_mu);
    for (size_t i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->used && sl->deadline > 0 && now > sl->deadline) {
            shutdown(sl->fd, SHUT_RDWR);
            sl->deadline = 0;
            atomic_fetch_add(&s->closed_slow, 1);
        }
    }
    pthread_mutex_unlock(&s->conn_mu);
}

struct framing {
    int n_length, n_coding; /* Content-Length and Transfer-Encoding headers */
    const char *length, *coding;
    const char *bad_name; /* a header name that is not an RFC 9110 token, or NULL */
};

/* Whether a header name is a token (RFC 9110 section 5.1): no whitespace
 * (as in "Content-Length :", which RFC 9112 section 5.1 says a server must
 * reject: a proxy that reads it as Content-Length and a server that does
 * not frame the message differently, the way requests are smuggled), no
 * separators, no control characters. */
static bool header_name_ok(const char *k) {
    if (!*k) return false;
    for (; *k; k++) {
        const unsigned char ch = (unsigned char)*k;
        if (ch <= 32 || ch >= 127 || strchr("\"(),/:;<=>?@[\\]{}", ch)) return false;
    }
    return true;
}

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value) {
    (void)kind;
    struct framing *f = cls;
    if (!f->bad_name && !header_name_ok(key)) f->bad_name = key;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        f->n_length++;
        f->length = value;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->n_coding++;
        f->coding = value;
    }
    return MHD_YES;
}

/* Whether a Transfer-Encoding value is "chunked" with spaces around it
 * (libmicrohttpd, which decodes the body, takes "chunked" alone, in any
 * case: such a body would be framed by neither). */
static bool spaced_chunked(const char *v) {
    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, "chunked", 7)) return false;
    v += 7;
    while (*v == ' ' || *v == '\t')
        v++;
    return *v == '\0';
}

/* Checks how the request's body is framed (RFC 9112 section 6) before any
 * of it is read: more than one Content-Length, or one with a
 * Transfer-Encoding (the classic request-smuggling pair), is 400; a transfer
 * coding other than chunked is 501; a declared length over max_body_bytes
 * is 413 (so no "100 Continue" is sent and the body is never read), except
 * that a body of at most twice the limit sent without "Expect:
 * 100-continue" is read and dropped before its 413 (*drain set): clients
 * such as Python's http.client send the whole body before they read, and
 * would see a broken pipe instead of the answer. Returns 0 when the request
 * may go on, else the status, with msg (cap bytes) for the client. A negative or non-numeric
 * Content-Length never gets here: libmicrohttpd answers it 400 itself. */
static int check_framing(const struct server *s, struct MHD_Connection *c, char *msg, size_t cap,
                         bool *drain) {
    struct framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
    if (f.bad_name) {
        snprintf(msg, cap,
                 "the header name \"%.60s\" has whitespace or a character a header name "
                 "may not hold",
                 f.bad_name);
        return 400;
    }
    if (f.n_length > 1) {
        snprintf(msg, cap, "more than one Content-Length header");
        return 400;
    }
    if (f.n_coding > 1) {
        snprintf(msg, cap, "more than one Transfer-Encoding header");
        return 400;
    }
    if (f.n_coding && f.n_length) {
        snprintf(msg, cap, "both Transfer-Encoding and Content-Length: send one of them");
        return 400;
    }
    if (f.n_coding && strcasecmp(f.coding, "chunked") && spaced_chunked(f.coding)) {
        snprintf(msg, cap, "Transfer-Encoding \"%.100s\": send \"chunked\" without spaces",
                 f.coding);
        return 400;
    }
    if (f.n_coding && strcasecmp(f.coding, "chunked")) {
        snprintf(msg, cap,
                 "Transfer-Encoding \"%.100s\" is not supported: send the body with "
                 "Content-Length or Transfer-Encoding: chunked",
                 f.coding);
        return 501;
    }
    if (f.n_length) {
        const char *v = f.length;
        while (*v == ' ')
            v++;
        unsigned long long n = 0;
        bool over = false;
        for (; *v >= '0' && *v <= '9'; v++) {
            if (n > (ULLONG_MAX - 9) / 10) over = true;
            n = over ? n : n * 10 + (unsigned)(*v - '0');
        }
        if (!over && n > s->cfg->max_body_bytes && n / 2 <= s->cfg->max_body_bytes &&
            !MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT)) {
            *drain = true; /* read and dropped, then 413 */
            return 0;
        }
        if (over || n > s->cfg->max_body_bytes) {
            snprintf(msg, cap, "the request body is larger than %zu bytes (--max-body-bytes)",
                     s->cfg->max_body_bytes);
            return 413;
        }
    }
    return 0;
}

/* The path of a request target: an absolute-form target
 * ("http://host:port/embed", which RFC 9112 section 3.2.2 says a server
 * must accept, as a proxy may send it) gives its path ("/" when it has
 * none); any other target is the path already. */
static const char *target_path(const char *url) {
    size_t skip = !strncasecmp(url, "http://", 7) ? 7 : !strncasecmp(url, "https://", 8) ? 8 : 0;
    if (!skip) return url;
    const char *p = strchr(url + skip, '/');
    return p ? p : "/";
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    struct server *s = cls;
    url = target_path(url);
    struct conn *st = *con_cls;
    if (st == &oom_conn) { /* drop the body, then answer 503 */
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        enum route r = route_of(url);
        return send_oom(s, c, r, r == R_OPENAI || !strncmp(url, "/v1/", 4), embd_now());
    }
    if (st && st->phase == PH_DONE) { /* resumed by on_embedded: answer */
        st->phase = PH_BODY;
        if (st->route == R_SEARCH) return finish_search(s, c, st);
        if (st->route == R_RERANK || st->route == R_RERANK_V1)
            return finish_rerank(s, c, st->route, st);
        return finish_embed(s, c, st->route, st);
    }
    if (st && st->phase == PH_WAIT) return MHD_YES; /* NEVER: suspended connections get no call */
    if (!st) {
        struct slot *sl = slot_of(c);
        if (!sl) return MHD_NO; /* refused at accept (503 written): close */
        /* the headers are in; the body follows within --body-timeout (a
         * trickled body would hold a connection and the shutdown) */
        slot_deadline(s, sl, embd_now() + s->body_timeout);
        st = embd_calloc(1, sizeof *st);
        if (!st) {
            *con_cls = &oom_conn;
            atomic_fetch_add(&s->in_flight, 1);
            return MHD_YES;
        }
        st->start = embd_now();
        st->admitted = !atomic_load(&s->draining);
        *con_cls = st;
        atomic_fetch_add(&s->in_flight, 1);
        char msg[300];
        int code = check_framing(s, c, msg, sizeof msg, &st->too_large);
        if (code) { /* answered before the body, which is not read: the connection closes */
            enum route r = route_of(url);
            st->close = true;
            return send_error_x(s, c, r, r == R_OPENAI || !strncmp(url, "/v1/", 4), code, NULL, msg,
                                st->start, true);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (st->too_large || st->oom) { /* read and dropped, up to a point */
            st->dropped += n;
            return st->dropped / 2 > s->cfg->max_body_bytes ? MHD_NO : MHD_YES;
        }
        if (st->len + n > s->cfg->max_body_bytes) {
            st->too_large = true;
            embd_free(st->body);
            st->body = NULL;
            st->len = st->cap = 0;
            return MHD_YES;
        }
        if (st->len + n > st->cap) {
            size_t cap = st->cap ? st->cap : 4096;
            while (cap < st->len + n)
                cap *= 2;
            if (cap > s->cfg->max_body_bytes) cap = s->cfg->max_body_bytes;
            char *p = embd_realloc(st->body, cap);
            if (!p) {
                st->oom = true;
                embd_free(st->body);
                st->body = NULL;
                st->len = st->cap = 0;
                return MHD_YES;
            }
            st->body = p;
            st->cap = cap;
        }
        memcpy(st->body + st->len, upload_data, n);
        st->len += n;
        return MHD_YES;
    }
    return dispatch(s, c, url, method, st);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    struct server *s = cls;
    struct conn *st = *con_cls;
    /* Kept alive: idle up to --idle-timeout (libmicrohttpd's), and the next
     * request's headers in by --header-timeout after that at the latest. */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        slot_deadline(s, slot_of(c), embd_now() + s->idle_timeout + s->header_timeout);
    if (!st) return;
    if (st != &oom_conn) {
        if (st->phase == PH_WAIT) { /* NEVER: the engine still writes into it; left */
            *con_cls = NULL;
            return;
        }
        if (st->have_req) srv_request_free(&st->req);
        embd_free(st->vecs);
        embd_free(st->scores);
        embd_free(st->cands);
        embd_free(st->cand_mem);
        embd_free(st->texts);
        embd_free(st->lens);
        embd_free(st->ids);
        embd_free(st->ss);
        if (st->reserved) atomic_fetch_sub(&s->reply_bytes, st->reserved);
        if (st->active) atomic_fetch_sub(&s->active, 1);
        embd_free(st->body);
        embd_free(st);
    }
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
    atomic_fetch_add(&s->completed, 1);
}

static void log_mhd(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* libmicrohttpd reports client misbehaviour (resets, timeouts) here: not
     * our errors, so only with --log-level debug. */
    if (getenv("EMBD_SERVE_DEBUG")) fprintf(stderr, "embd: debug: http: %s\n", msg);
}

/* ---------------------------------------------------------------------- */
/* Startup and shutdown                                                    */
/* ---------------------------------------------------------------------- */

static int open_listener(const struct srv_config *cfg, char *where, size_t cap, int *port_out) {
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(cfg->host, port, &hints, &res);
    if (rc) {
        fprintf(stderr, "embd: serve: cannot resolve --host %s: %s\n", cfg->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0) break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "embd: serve: cannot listen on %s:%d: %s%s\n", cfg->host, cfg->port,
                strerror(err),
                err == EADDRINUSE ? " (another program has that port; pick one with --port)" : "");
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int bound_port = cfg->port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            bound_port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            bound_port = ntohs(in6->sin6_port);
        }
    }
    snprintf(where, cap, ss.ss_family == AF_INET6 ? "http://[%s]:%d" : "http://%s:%d", host,
             bound_port);
    *port_out = bound_port;
    return fd;
}

/* SIGTERM or SIGINT caught by a thread that does not block them: a
 * library's thread started before main() blocked them (OpenBLAS starts
 * its pool when it loads) takes a process-directed signal whenever the main
 * thread is not inside sigtimedwait; without a handler the default action
 * would kill the process. The main loop reads it on its next tick. */
static volatile sig_atomic_t caught_sig;

static void on_stop_signal(int sig) {
    caught_sig = sig;
}

/* The signal caught by a handler since the last call, or 0. */
static int take_caught(void) {
    const int sig = caught_sig;
    caught_sig = 0;
    return sig;
}

/* SIGTERM's drain window (cfg->drain_s, at most until deadline): /health
 * answers 503 so that a load balancer or orchestrator checking it takes the
 * server out, while every other request, on new connections too, is still
 * served. Skipped after SIGINT (a terminal's Ctrl-C), when /health was never
 * asked (no checker would see the 503), and cut short by a second SIGTERM
 * or SIGINT. */
static void drain(struct server *s, int sig, double deadline, const sigset_t *set) {
    double end = embd_now() + s->cfg->drain_s;
    if (end > deadline) end = deadline;
    if (sig != SIGTERM || s->cfg->drain_s <= 0 || !atomic_load(&s->health_asked) ||
        embd_now() >= end)
        return;
    atomic_store(&s->unready, true);
    fprintf(stderr,
            "embd: serve: SIGTERM: draining: /health answers 503; requests are served for %.3g "
            "s more (--drain-seconds)\n",
            end - embd_now());
    fflush(stderr);
    for (double left; (left = end - embd_now()) > 0;) {
        if (left > 0.1) left = 0.1;
        struct timespec tick = {0, (long)(left * 1e9)};
        int again = sigtimedwait(set, NULL, &tick);
        if (again != SIGTERM && again != SIGINT) again = take_caught();
        if (again == SIGTERM || again == SIGINT) {
            fprintf(stderr, "embd: serve: %s again: drain cut short\n",
                    again == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
    }
}

void srv_prepare_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int srv_run(const struct srv_config *cfg, embd_model *model, embd_ctx *ctx, embd_sched *sched,
            embd_vstore *store) {
    srv_json_init();
    struct server *s = embd_calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "embd: serve: out of memory\n");
        return 1;
    }
    s->cfg = cfg;
    s->started = time(NULL);
    s->main_e = (struct engine){.model = model,
                                .ctx = ctx,
                                .sched = sched,
                                .rerank = embd_model_is_reranker(model),
                                .name = cfg->model_name,
                                .dir = cfg->model_dir,
                                .dtype = cfg->dtype,
                                .max_batch_tokens = cfg->max_batch_tokens,
                                .max_tokens = cfg->limits.max_tokens};
    s->emb = s->main_e.rerank ? NULL : &s->main_e;
    s->rr = s->main_e.rerank ? &s->main_e : NULL;
    const struct srv_reranker *rc_cfg = cfg->reranker;
    if (rc_cfg) {
        s->extra_e = (struct engine){.model = rc_cfg->model,
                                     .ctx = rc_cfg->ctx,
                                     .sched = rc_cfg->sched,
                                     .rerank = true,
                                     .name = rc_cfg->name ? rc_cfg->name : "reranker",
                                     .dir = rc_cfg->dir ? rc_cfg->dir : "",
                                     .dtype = rc_cfg->dtype ? rc_cfg->dtype : "auto",
                                     .max_batch_tokens = rc_cfg->max_batch_tokens,
                                     .max_tokens = (size_t)embd_model_max_tokens(rc_cfg->model)};
        s->rr = &s->extra_e;
    }
    s->store = store;
    s->dim = embd_model_dim(model);
    pthread_mutex_init(&s->store_mu, NULL);
    pthread_mutex_init(&s->health_mu, NULL);
    pthread_mutex_init(&s->watch_mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    s->n_slots = cfg->max_connections ? cfg->max_connections : 1024;
    s->per_client = cfg->max_client_connections ? cfg->max_client_connections : 128;
    s->header_timeout = cfg->header_timeout_s > 0 ? cfg->header_timeout_s : 10;
    s->body_timeout = cfg->body_timeout_s > 0 ? cfg->body_timeout_s : 60;
    s->idle_timeout = cfg->idle_timeout_s > 0 ? cfg->idle_timeout_s : 15;
    s->max_reply_bytes = cfg->max_reply_bytes ? cfg->max_reply_bytes : (size_t)128 << 20;
    const unsigned threads = cfg->http_threads > 0 ? (unsigned)cfg->http_threads : 2;
    s->slots = embd_calloc(s->n_slots, sizeof *s->slots);
    /* Large replies in their own mappings, given back to the system when
     * freed (glibc's default threshold grows with each one freed, after which
     * they come from the heap and stay resident). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    int rc = 1;
    bool watchdog = false;
    struct MHD_Daemon *d = NULL;
    if (!s->slots) {
        fprintf(stderr, "embd: serve: out of memory\n");
        goto done;
    }
    size_t n_ids = 0;
    if (cfg->api_key && !*cfg->api_key) { /* never turn authentication off by accident */
        fprintf(stderr, "embd: serve: the API key is empty\n");
        goto done;
    }
    if (rc_cfg && (s->main_e.rerank || !embd_model_is_reranker(rc_cfg->model))) {
        fprintf(stderr, "embd: serve: %s\n",
                s->main_e.rerank ? "the model is a reranker: a second reranker goes beside an "
                                   "embedding model only"
                                 : "the reranker is not a cross-encoder");
        goto done;
    }
    if (store && !s->emb) {
        fprintf(stderr, "embd: serve: the model is a reranker: a store needs an embedding model "
                        "(serve the embedder with --store and --reranker DIR)\n");
        goto done;
    }
    if (s->emb) {
        if (embd_tokenize(model, "", 0, s->main_e.health_ids, 2, &n_ids) != EMBD_OK || n_ids == 0) {
            fprintf(stderr, "embd: serve: cannot tokenize the health check: %s\n",
                    embd_last_error());
            goto done;
        }
        s->main_e.health_n = n_ids;
    }
    /* Fail before listening if the model cannot run. */
    char why[256];
    if (!check_health(s, why, sizeof why)) {
        fprintf(stderr, "embd: serve: %s\n", why);
        goto done;
    }
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        fprintf(stderr, "embd: serve: cannot start a thread\n");
        goto done;
    }
    watchdog = true;
    char where[128];
    int port = 0;
    int fd = open_listener(cfg, where, sizeof where, &port);
    if (fd < 0) goto done;
    /* Event-driven: a few threads (epoll) serve every connection; a request
     * waiting for the engine is suspended, not holding a thread. */
    d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
            MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_THREAD_POOL_SIZE,
        threads, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, s, MHD_OPTION_URI_LOG_CALLBACK, on_request_line, s,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->idle_timeout, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(s->n_slots + 256), MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
        /* RFC 9112: an HTTP/1.1 request without Host, or with a space in
         * its target, is a 400 (well formed with scripts/build-mhd's fix) */
        MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_END);
    if (!d) {
        close(fd);
        fprintf(stderr, "embd: serve: cannot start the HTTP server on %s\n", where);
        goto done;
    }
    char beside[300] = "";
    if (s->rr == &s->extra_e)
        snprintf(beside, sizeof beside, ", reranker %.200s (%s, max %zu tokens)", s->extra_e.name,
                 embd_ctx_backend(s->extra_e.ctx), s->extra_e.max_tokens);
    char what[32];
    if (s->main_e.rerank)
        snprintf(what, sizeof what, "reranker");
    else
        snprintf(what, sizeof what, "dim %d", s->dim);
    fprintf(stderr, "embd: serving %s (%s, %s, max %zu tokens%s%s) on %s\n", cfg->model_name, what,
            embd_ctx_backend(ctx), cfg->limits.max_tokens, beside,
            cfg->api_key && *cfg->api_key ? ", API key required" : "", where);
    fflush(stderr);
    if (cfg->on_listen) cfg->on_listen(cfg->on_listen_arg, port);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    /* Wait for a signal; meanwhile, once the server has been idle for 2 and
     * again for 4 seconds after requests came and went, give the memory
     * they freed back to the system (connection threads free theirs as they
     * exit, and the scheduler releases its scratch after 2 idle seconds), so
     * that resident memory returns to its baseline after a burst. */
    int sig = 0;
    unsigned long long seen = 0;
    int idle_ticks = 0, ticks = 0;
    for (;;) {
        struct timespec tick = {0, 100 * 1000000L};
        sig = sigtimedwait(&set, NULL, &tick);
        if (sig != SIGINT && sig != SIGTERM) sig = take_caught();
        if (sig == SIGINT || sig == SIGTERM) break;
        if (++ticks % 10) continue; /* the idle accounting below runs once a second */
        unsigned long long done_n = atomic_load(&s->completed);
        if (done_n != seen || atomic_load(&s->in_flight) > 0) {
            seen = done_n;
            idle_ticks = 0;
            continue;
        }
        if (++idle_ticks == 2 || idle_ticks == 4) malloc_trim(0);
    }
    /* --shutdown-timeout counts from the signal; the drain window is its
     * first part. */
    double deadline = embd_now() + cfg->shutdown_timeout_s;
    drain(s, sig, deadline, &set);
    atomic_store(&s->draining, true);
    int lfd = MHD_quiesce_daemon(d);
    if (lfd >= 0) close(lfd);
    int pending = atomic_load(&s->in_flight);
    fprintf(stderr, "embd: serve: %s: stopped accepting; finishing %d request%s in flight\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", pending, pending == 1 ? "" : "s");
    while (atomic_load(&s->in_flight) > 0 && embd_now() < deadline) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    pending = atomic_load(&s->in_flight);
    rc = 0;
    if (pending > 0) {
        /* The deadline: cancel the work in flight (queued requests leave the
         * queue, a running one stops at its next round), give the handlers
         * half a second to answer 503, then go without them. */
        fprintf(stderr, "embd: serve: %d request%s still unfinished after %d s; cancelling\n",
                pending, pending == 1 ? "" : "s", cfg->shutdown_timeout_s);
        cancel_all(s);
        double grace = embd_now() + 0.5;
        while (atomic_load(&s->in_flight) > 0 && embd_now() < grace) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        rc = SRV_RUN_CANCELLED;
        if (atomic_load(&s->in_flight) > 0) {
            /* Handlers still wait for the engine: the daemon and the state they
             * use are left as they are, for the caller to exit at once. */
            fprintf(stderr, "embd: serve: exiting without waiting for the engine\n");
            fflush(stderr);
            return SRV_RUN_ABANDONED;
        }
    }
    MHD_stop_daemon(d);
done:
    if (watchdog) {
        atomic_store(&s->watchdog_stop, true);
        pthread_join(s->watchdog, NULL);
    }
    pthread_mutex_destroy(&s->watch_mu);
    pthread_mutex_destroy(&s->conn_mu);
    embd_free(s->slots);
    pthread_mutex_destroy(&s->store_mu);
    pthread_mutex_destroy(&s->health_mu);
    embd_free(s);
    return rc;
}
