/* test_fault_serving.c — allocation failure injection for serving (issue 8):
 * the server (srv_run) runs in this process on an ephemeral loopback port
 * with the real all-MiniLM-L6-v2 model (no embedding cache, so that every
 * request runs the engine), a small embedded store for /search, and for
 * each endpoint and input form the test arms embd_fault_alloc_after(N) for
 * N = 0, 1, 2, ... before one request sent over a plain socket, disarms it
 * after the reply, and checks that the reply is a complete HTTP response
 * that is either the unfaulted reply (200, the same body) or a 5xx with a
 * JSON error in the endpoint's own shape naming memory; N rises until the
 * request completes without reaching the fault. After each endpoint the
 * server must still answer a normal request correctly. Two more servers:
 * one with the default reuse of a passing /health check, to check that a
 * check failed for want of memory is not reused, and one with a prefix
 * (its token-count buffer). LeakSanitizer (the sanitizer build) checks
 * that no failure path leaks.
 *
 * The countdown is global: the scheduler's worker and the engine take it
 * as well as the connection's thread, so the fault lands wherever the Nth
 * allocation happens (a slow background allocation may shift it); only the
 * properties above are asserted, which hold whoever gets it.
 * libmicrohttpd's own allocations are not injected (see SECURITY.md). */
#include "model/tiny_model.h"
#include "server/server.h"
#include "store/vstore.h"
#include "test.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_N 2000 /* far above any request's allocation count (checked) */

/* ---- the server in a thread ---------------------------------------------- */

struct srv_thread {
    pthread_t thread;
    const struct srv_config *cfg;
    embd_model *model;
    embd_ctx *ctx;
    embd_sched *sched;
    embd_vstore *store;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int port; /* set by on_listen */
    bool ended;
    int rc;
};

static void on_listen(void *arg, int port) {
    struct srv_thread *t = arg;
    pthread_mutex_lock(&t->mu);
    t->port = port;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

static void *srv_main(void *arg) {
    struct srv_thread *t = arg;
    int rc = srv_run(t->cfg, t->model, t->ctx, t->sched, t->store);
    pthread_mutex_lock(&t->mu);
    t->ended = true;
    t->rc = rc;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Starts srv_run(cfg) in a thread; returns the port, or 0 when it did not
 * start. */
static int start_server(struct srv_thread *t, struct srv_config *cfg) {
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->cfg = cfg;
    t->port = 0;
    t->ended = false;
    cfg->on_listen = on_listen;
    cfg->on_listen_arg = t;
    if (pthread_create(&t->thread, NULL, srv_main, t) != 0) return 0;
    pthread_mutex_lock(&t->mu);
    while (!t->port && !t->ended)
        pthread_cond_wait(&t->cond, &t->mu);
    const int port = t->port;
    pthread_mutex_unlock(&t->mu);
    CHECK_MSG(port > 0, "the server did not start (rc %d)", t->rc);
    return port;
}

/* Stops it as SIGTERM does `embd serve`; it must exit 0. */
static void stop_server(struct srv_thread *t) {
    pthread_kill(t->thread, SIGTERM);
    pthread_join(t->thread, NULL);
    CHECK_EQ_INT(t->rc, 0);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
}

/* ---- a plain HTTP client --------------------------------------------------- */

struct reply {
    int status;         /* 0: no complete response */
    char *content_type; /* (malloc) */
    char *body;         /* (malloc), NUL-terminated */
    size_t body_len;
};

static void reply_free(struct reply *r) {
    free(r->content_type);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* A header's value (malloc) from the header block, or NULL. */
static char *header(const char *head, size_t head_len, const char *name) {
    size_t nl = strlen(name);
    const char *p = head, *end = head + head_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < eol && *v == ' ')
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            return strndup(v, (size_t)(ve - v));
        }
        p = eol + 1;
    }
    return NULL;
}

/* Sends one request (Connection: close) and reads the reply to EOF; a
 * reply is complete when it has a status line, headers, and exactly
 * Content-Length bytes of body. No reply within 60 s is a hang (status 0). */
static struct reply request(int port, const char *method, const char *path, const char *body) {
    struct reply r = {0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return r;
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) goto out;
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    int hn = body ? snprintf(head, sizeof head,
                             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                             method, path, blen)
                  : snprintf(head, sizeof head,
                             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                             method, path);
    if (send(fd, head, (size_t)hn, MSG_NOSIGNAL) != hn) goto out;
    if (blen && send(fd, body, blen, MSG_NOSIGNAL) != (ssize_t)blen) goto out;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *p = realloc(buf, cap + 1);
            if (!p) goto out;
            buf = p;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n < 0) goto out; /* timeout or reset: incomplete */
        if (n == 0) break;
        len += (size_t)n;
    }
    if (!buf || len < 12 || strncmp(buf, "HTTP/1.1 ", 9)) goto out;
    buf[len] = '\0';
    const char *sep = strstr(buf, "\r\n\r\n");
    if (!sep) goto out;
    size_t head_len = (size_t)(sep - buf) + 2, body_off = head_len + 2;
    char *cl = header(buf, head_len, "Content-Length");
    if (!cl) goto out;
    size_t want = (size_t)strtoull(cl, NULL, 10);
    free(cl);
    if (len - body_off != want) goto out;
    r.content_type = header(buf, head_len, "Content-Type");
    r.body = strndup(buf + body_off, want);
    r.body_len = want;
    r.status = atoi(buf + 9);
out:
    free(buf);
    close(fd);
    return r;
}

/* ---- the cases --------------------------------------------------------------- */

struct fcase {
    const char *name;
    const char *method, *path, *body;
    bool openai;      /* errors in the OpenAI shape */
    bool same_body;   /* a 200 must equal the unfaulted reply byte for byte */
    const char *must; /* a 200 must contain this */
};

/* Whether r is a 5xx JSON error in the endpoint's shape that names memory. */
static bool oom_error(const struct fcase *fc, const struct reply *r) {
    if (r->status < 500 || r->status > 599) return false;
    if (!r->content_type || strncmp(r->content_type, "application/json", 16)) return false;
    cJSON *j = cJSON_Parse(r->body);
    bool ok = false;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (fc->openai) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
        ok = cJSON_IsString(m) && strstr(m->valuestring, "memory") && cJSON_IsString(t);
    } else {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "error_type");
        ok = cJSON_IsString(e) && strstr(e->valuestring, "memory") && cJSON_IsString(t);
    }
    cJSON_Delete(j);
    return ok;
}

/* Whether r is the right unfaulted answer. */
static bool good(const struct fcase *fc, const struct reply *r, const struct reply *ref) {
    if (r->status != 200) return false;
    if (fc->same_body)
        return r->body_len == ref->body_len && !memcmp(r->body, ref->body, r->body_len);
    return strstr(r->body, fc->must) != NULL;
}

static void run_case(int port, const struct fcase *fc) {
    struct reply ref = request(port, fc->method, fc->path, fc->body);
    CHECK_MSG(ref.status == 200, "%s: unfaulted reply %d: %.300s", fc->name, ref.status,
              ref.body ? ref.body : "(none)");
    if (ref.status == 200) CHECK_MSG(strstr(ref.body, fc->must), "%s: %.300s", fc->name, ref.body);
    if (ref.status != 200) {
        reply_free(&ref);
        return;
    }
    long n = 0, faulted = 0, absorbed = 0;
    bool completed = false;
    for (; n < MAX_N && !completed; n++) {
        embd_fault_alloc_after(n);
        struct reply r = request(port, fc->method, fc->path, fc->body);
        long made = embd_fault_alloc_after(-1);
        const bool reached = made > n;
        if (!reached) { /* the request ran to the end without meeting the fault */
            CHECK_MSG(good(fc, &r, &ref), "%s: unfaulted (N %ld, %ld allocations): %d %.300s",
                      fc->name, n, made, r.status, r.body ? r.body : "(no complete reply)");
            completed = true;
        } else if (good(fc, &r, &ref)) {
            absorbed++; /* a failure that was recovered from */
        } else {
            CHECK_MSG(oom_error(fc, &r), "%s: fault at allocation %ld: status %d: %.300s", fc->name,
                      n, r.status, r.body ? r.body : "(no complete reply)");
            faulted++;
        }
        reply_free(&r);
    }
    CHECK_MSG(completed, "%s: no fault-free run below N = %d", fc->name, MAX_N);
    CHECK_MSG(faulted > 0, "%s: no request failed (the faults reach nothing)", fc->name);
    printf("%-22s %4ld allocations; %4ld faulted replies, %3ld recovered\n", fc->name, n - 1,
           faulted, absorbed);
    fflush(stdout);
    /* The server still answers a normal request correctly. */
    struct reply after = request(port, fc->method, fc->path, fc->body);
    CHECK_MSG(good(fc, &after, &ref), "%s: after the faults: %d %.300s", fc->name, after.status,
              after.body ? after.body : "(none)");
    reply_free(&after);
    reply_free(&ref);
}

/* ---- setup ------------------------------------------------------------------- */

/* A read-only embedded store of three documents in root/store. */
static embd_vstore *make_store(embd_model *m, embd_ctx *ctx, const char *root) {
    static const char *const ids[] = {"a", "b", "c"};
    static const char *const texts[] = {"Debian is a free operating system",
                                        "a fast embedding server written in C",
                                        "allocation failures must give clean errors"};
    const size_t n = 3, D = (size_t)embd_model_dim(m);
    size_t id_lens[3], text_lens[3];
    for (size_t i = 0; i < n; i++) {
        id_lens[i] = strlen(ids[i]);
        text_lens[i] = strlen(texts[i]);
    }
    float *v = calloc(n * D, sizeof *v);
    if (!v || embd_embed(ctx, texts, NULL, n, v) != EMBD_OK) {
        free(v);
        return NULL;
    }
    if (embd_model_normalizes(m))
        for (size_t i = 0; i < n; i++) {
            double ss = 0;
            for (size_t d = 0; d < D; d++)
                ss += (double)v[i * D + d] * v[i * D + d];
            for (size_t d = 0; d < D; d++)
                v[i * D + d] = (float)(v[i * D + d] / sqrt(ss));
        }
    char *path = path_cat(root, "store");
    struct embd_store_params p = {.dim = (int)D,
                                  .fingerprint = embd_model_fingerprint(m),
                                  .normalized = embd_model_normalizes(m),
                                  .create = true,
                                  .writable = true};
    embd_vstore *vs = NULL;
    bool ok = embd_vstore_open(path, &p, &vs, NULL) == EMBD_OK &&
              embd_vstore_add(vs, ids, id_lens, texts, text_lens, v, n, NULL) == EMBD_OK &&
              embd_vstore_flush(vs) == EMBD_OK;
    embd_vstore_close(vs);
    vs = NULL;
    p.create = p.writable = false;
    if (ok && embd_vstore_open(path, &p, &vs, NULL) != EMBD_OK) vs = NULL;
    free(path);
    free(v);
    return vs;
}

int main(void) {
    const char *models = getenv("EMBD_TEST_MODELS");
    if (!models || !*models) TEST_SKIP("EMBD_TEST_MODELS is not set");
    char *dir = path_cat(models, "all-MiniLM-L6-v2");
    char *cfg_json = path_cat(dir, "config.json");
    struct stat sb;
    if (stat(cfg_json, &sb) != 0) TEST_SKIP("no model at %s", dir);
    free(cfg_json);

    /* as `embd serve` does: SIGTERM blocked in every thread, SIGPIPE ignored */
    srv_prepare_signals();

    embd_model *m = NULL;
    embd_ctx *ctx = NULL;
    embd_sched *sched = NULL;
    embd_vstore *store = NULL;
    char *root = make_temp_dir();
    CHECK(embd_model_load(dir, embd_model_default_params(), &m) == EMBD_OK);
    struct embd_ctx_params cp = embd_ctx_default_params();
    cp.device = EMBD_DEVICE_CPU;
    cp.n_threads = 1;   /* one order of sums: a 200 reply is the same bytes every time */
    cp.cache_bytes = 0; /* every request runs the engine */
    if (m) CHECK(embd_ctx_new(m, cp, &ctx) == EMBD_OK);
    if (ctx) store = make_store(m, ctx, root);
    CHECK(store != NULL);
    if (ctx) CHECK(embd_sched_new(ctx, embd_sched_default_params(), &sched) == EMBD_OK);
    if (!sched || !store) goto out;

    struct srv_config cfg = {
        .host = "127.0.0.1",
        .port = 0,
        .max_body_bytes = 1 << 20,
        .max_concurrent = 16,
        .queue_timeout_ms = 10000,
        .shutdown_timeout_s = 10,
        .limits = {.max_inputs = 64,
                   .max_input_chars = 10000,
                   .max_tokens = (size_t)embd_model_max_tokens(m),
                   .auto_truncate = false,
                   .vocab = embd_model_vocab_size(m),
                   .max_k = 100},
        .model_name = "all-MiniLM-L6-v2",
        .model_dir = dir,
        .normalize = embd_model_normalizes(m),
        .dtype = "fp32",
        .max_batch_tokens = embd_ctx_max_batch_tokens(ctx),
        .health_interval_s = 1e-6, /* every /health runs a forward pass */
    };
    struct srv_thread t = {.model = m, .ctx = ctx, .sched = sched, .store = store};
    int port = start_server(&t, &cfg);

    /* A body of 12 KB (mostly JSON whitespace: cheap to embed), past the
     * server's first body buffer. */
    char big[12 * 1024 + 64];
    int bl = snprintf(big, sizeof big, "{\"input\":\"a padded body\"");
    memset(big + bl, ' ', 12 * 1024);
    snprintf(big + bl + 12 * 1024, sizeof big - (size_t)bl - 12 * 1024, "}");
    const struct fcase cases[] = {
        {"openai string", "POST", "/v1/embeddings",
         "{\"input\":\"fault injection in the server\",\"model\":\"m\"}", true, true,
         "\"embedding\":["},
        {"openai array", "POST", "/v1/embeddings",
         "{\"input\":[\"first text\",\"a second, longer text with more words\"]}", true, true,
         "\"index\":1"},
        {"openai token ids", "POST", "/v1/embeddings",
         "{\"input\":[[101,7592,2088,102],[101,2023,102]]}", true, true, "\"index\":1"},
        {"openai 12 KB body", "POST", "/v1/embeddings", big, true, true, "\"embedding\":["},
        {"openai base64", "POST", "/v1/embeddings",
         "{\"input\":\"base64 please\",\"encoding_format\":\"base64\"}", true, true,
         "\"embedding\":\""},
        {"tei embed", "POST", "/embed", "{\"inputs\":[\"tei one\",\"tei two\"]}", false, true,
         "[["},
        {"search", "POST", "/search", "{\"query\":\"an embedding server\",\"k\":2}", false, true,
         "\"rank\":2"},
        {"health", "GET", "/health", NULL, false, true, "\"ok\""},
        {"info", "GET", "/info", NULL, false, true, "\"dim\":384"},
        {"metrics", "GET", "/metrics", NULL, false, false, "embd_http_responses_total"},
    };
    if (port > 0) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            run_case(port, &cases[i]);
        stop_server(&t);
    }

    /* With the default reuse of a passing /health check (1 s): a check that
     * failed for want of memory is not reused, so the next /health, with
     * memory back, answers 200 at once. */
    cfg.health_interval_s = 0;
    port = start_server(&t, &cfg);
    if (port > 0) {
        bool failed = false;
        for (long n = 1; n < 50 && !failed; n++) {
            usleep(1100 * 1000); /* past the reuse of the last passing check */
            embd_fault_alloc_after(n);
            struct reply r = request(port, "GET", "/health", NULL);
            embd_fault_alloc_after(-1);
            failed = r.status == 503 && strstr(r.body, "cannot embed");
            reply_free(&r);
            if (!failed) continue;
            r = request(port, "GET", "/health", NULL);
            CHECK_MSG(r.status == 200, "/health after a failed check: %d %.300s", r.status,
                      r.body ? r.body : "(none)");
            reply_free(&r);
        }
        CHECK_MSG(failed, "no fault reached the /health forward pass");
        stop_server(&t);
    }

out:
    embd_sched_free(sched);
    embd_vstore_close(store);
    embd_ctx_free(ctx);
    embd_model_free(m);
    rm_rf(root);
    free(root);
    free(dir);
    return test_summary("hardening_fault_serving");
}
