/* sched.c — a shared engine: many threads submit texts to one context
 * through a bounded queue; one worker thread takes the pending requests from
 * the front (up to max_batch_texts texts), orders all their texts by length
 * so that similar lengths share forward passes, embeds them in one embd_embed
 * call (which packs them into token-budget batches), and scatters each row
 * back to its caller, in the caller's order. Token requests run one call
 * each. A submit on a full queue waits up to the caller's timeout and then
 * returns EMBD_ERR_BUSY. A caller may give a deadline and a cancel flag: a
 * request still queued when either fires is removed (by its caller, or by
 * the worker when it takes it) and returns EMBD_ERR_TIMEOUT or
 * EMBD_ERR_CANCELLED; one already running is waited for, so that its out is
 * never written after the call returned. */
#include "engine/engine.h"
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How often a caller with a cancel flag looks at it while it waits. */
#define CANCEL_POLL_NS 2000000L
#define SCHED_IDLE_TRIM_SEC 2 /* idle seconds before the scratch is released */

enum req_state { REQ_QUEUED, REQ_RUNNING, REQ_DONE };

struct sched_req {
    const char *const *texts; /* (n) */
    const size_t *lens;       /* (n) or NULL */
    const int32_t *ids;       /* token inputs instead of texts: ids (T) or NULL */
    const size_t *seq_start;  /* (n+1) with ids */
    size_t n;
    float *out; /* (n, D) */
    struct embd_embed_opts opts;
    struct embd_embed_info *info; /* the caller's, or NULL */
    bool grouped, in_group;       /* run_list's marks (worker only) */
    const int *cancel;            /* the caller's flag, or NULL */
    bool has_deadline;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    enum req_state state;     /* under the scheduler's mutex */
    enum embd_status st;
    char err[256];
    double enqueued; /* embd_now() when queued */
    struct sched_req *next;
};

struct embd_sched {
    embd_ctx *ctx;
    int dim;
    int max_tokens;         /* the model's, for messages */
    size_t capacity;        /* texts queued at most (a larger request waits for an empty queue) */
    size_t max_batch_texts; /* texts per embd_embed call */
    pthread_mutex_t mu;
    pthread_cond_t work;  /* the worker waits for requests */
    pthread_cond_t space; /* submitters wait for room */
    pthread_cond_t done;  /* submitters wait for their results */
    struct sched_req *head, *tail;
    size_t queued; /* texts in the queue */
    bool stop;
    bool ran_since_trim; /* work ran since the scratch was last released */
    bool hold;           /* embd_sched_hold: the worker takes nothing */
    pthread_t worker;
    int init; /* how many of mu, work, space, done, worker were made */
};

struct embd_sched_params embd_sched_default_params(void) {
    struct embd_sched_params p = {.queue_texts = 4096, .max_batch_texts = 1024};
    return p;
}

void embd_sched_cancel(int *flag) {
    if (flag) __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

static struct timespec mono_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static struct timespec ts_add_ns(struct timespec t, long long ns) {
    t.tv_sec += (time_t)(ns / 1000000000LL);
    t.tv_nsec += (long)(ns % 1000000000LL);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static bool ts_before(struct timespec a, struct timespec b) {
    return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

/* EMBD_ERR_CANCELLED or EMBD_ERR_TIMEOUT when the caller of r gave up, else
 * EMBD_OK. */
static enum embd_status given_up(const struct sched_req *r, struct timespec now) {
    if (r->cancel && __atomic_load_n(r->cancel, __ATOMIC_ACQUIRE)) return EMBD_ERR_CANCELLED;
    if (r->has_deadline && !ts_before(now, r->deadline)) return EMBD_ERR_TIMEOUT;
    return EMBD_OK;
}

static void set_given_up(struct sched_req *r, enum embd_status st) {
    r->st = st;
    snprintf(r->err, sizeof r->err, "%s",
             st == EMBD_ERR_CANCELLED ? "the request was cancelled before it ran"
                                      : "the request's deadline passed before it ran");
}

/* Waits on cond until it is signalled or until the earliest of `limit` (when
 * has_limit), r's deadline and, when r has a cancel flag, the next poll. */
static void wait_for(embd_sched *s, pthread_cond_t *cond, const struct sched_req *r, bool has_limit,
                     struct timespec limit) {
    if (r->has_deadline && (!has_limit || ts_before(r->deadline, limit))) {
        limit = r->deadline;
        has_limit = true;
    }
    if (r->cancel) {
        struct timespec poll = ts_add_ns(mono_now(), CANCEL_POLL_NS);
        if (!has_limit || ts_before(poll, limit)) limit = poll;
        has_limit = true;
    }
    if (has_limit)
        pthread_cond_timedwait(cond, &s->mu, &limit);
    else
        pthread_cond_wait(cond, &s->mu);
}

struct text_row {
    const char *text;
    size_t len;
    size_t k; /* position among all the texts taken, in queue order */
};

static int text_row_cmp(const void *a, const void *b) {
    const struct text_row *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->k < y->k ? -1 : x->k > y->k;
}

static void run_one(embd_sched *s, struct sched_req *r) {
    if (r->ids)
        r->st = embd_embed_tokens_ex(s->ctx, r->ids, r->seq_start, r->n, r->out, &r->opts, r->info);
    else
        r->st = embd_embed_ex(s->ctx, r->texts, r->lens, r->n, r->out, &r->opts, r->info);
    if (r->st != EMBD_OK) snprintf(r->err, sizeof r->err, "%s", embd_last_error());
}

/* Whether two requests' options give the same vectors and refusals, so
 * that their texts may share one embedding call. */
static bool same_opts(const struct embd_embed_opts *a, const struct embd_embed_opts *b) {
    if (a->normalize != b->normalize || a->truncate != b->truncate) return false;
    if (!a->prefix || !b->prefix) return a->prefix == b->prefix;
    return strcmp(a->prefix, b->prefix) == 0;
}

/* Embeds the text requests of list whose options are those of `first`
 * together, ordered by byte length, and scatters the rows and token counts
 * back; when that fails and there are several requests (or memory for it is
 * short), each request runs alone, so that one bad text fails only its own
 * caller. Marks each request it answers `grouped` and records its status. */
static void run_group(embd_sched *s, struct sched_req *list, const struct sched_req *first) {
    const size_t D = (size_t)s->dim;
    const struct embd_embed_opts opts = first->opts;
    size_t total = 0, n_req = 0;
    struct sched_req *only = NULL;
    for (struct sched_req *r = list; r; r = r->next) {
        if (r->ids || r->grouped || !same_opts(&r->opts, &opts)) continue;
        r->grouped = true;
        r->in_group = true;
        total += r->n;
        n_req++;
        only = r;
    }

    struct text_row *rows = embd_malloc2(total, sizeof *rows); /* (total) sorted by length */
    float **dst = embd_malloc2(total, sizeof *dst);            /* (total) by queue order */
    const char **texts = embd_malloc2(total, sizeof *texts);   /* (total) sorted by length */
    size_t *lens = embd_malloc2(total, sizeof *lens);          /* (total) sorted by length */
    size_t *ntok = embd_malloc2(total, sizeof *ntok);          /* (total) sorted by length */
    float *out = embd_malloc2(total * D, sizeof *out);         /* (total, D) sorted by length */
    struct embd_embed_info info = {.n_tokens = ntok};
    enum embd_status st = EMBD_ERR_NOMEM;
    if (rows && dst && texts && lens && ntok && out) {
        size_t k = 0;
        bool sorted = true;
        for (struct sched_req *r = list; r; r = r->next) {
            if (!r->in_group) continue;
            for (size_t i = 0; i < r->n; i++, k++) {
                rows[k].text = r->texts[i];
                rows[k].len = r->lens ? r->lens[i] : strlen(r->texts[i]);
                rows[k].k = k;
                dst[k] = r->out + i * D;
                if (k && rows[k].len < rows[k - 1].len) sorted = false;
            }
        }
        if (!sorted) qsort(rows, total, sizeof *rows, text_row_cmp);
        for (size_t j = 0; j < total; j++) {
            texts[j] = rows[j].text;
            lens[j] = rows[j].len;
        }
        st = embd_embed_ex(s->ctx, texts, lens, total, out, &opts, &info);
    }
    if (st == EMBD_OK) {
        size_t *ntok_q = (size_t *)texts; /* (total) counts in queue order, over texts */
        for (size_t j = 0; j < total; j++) {
            memcpy(dst[rows[j].k], out + j * D, D * sizeof *out);
            ntok_q[rows[j].k] = ntok[j];
        }
        size_t k = 0;
        for (struct sched_req *r = list; r; r = r->next) {
            if (!r->in_group) continue;
            r->st = EMBD_OK;
            if (r->info) r->info->total_tokens = 0;
            for (size_t i = 0; i < r->n; i++, k++) {
                if (!r->info) continue;
                if (r->info->n_tokens) r->info->n_tokens[i] = ntok_q[k];
                r->info->total_tokens += ntok_q[k];
            }
        }
    } else if (n_req == 1 && st != EMBD_ERR_NOMEM) {
        only->st = st;
        snprintf(only->err, sizeof only->err, "%s", embd_last_error());
        if (only->info && st == EMBD_ERR_TOO_LONG) { /* a sorted row: its place in the request */
            only->info->bad_input = rows[info.bad_input].k;
            only->info->bad_tokens = info.bad_tokens;
            snprintf(only->err, sizeof only->err,
                     "input %zu has %zu tokens; the model takes at most %d", rows[info.bad_input].k,
                     info.bad_tokens, s->max_tokens);
        }
    } else {
        for (struct sched_req *r = list; r; r = r->next)
            if (r->in_group) run_one(s, r);
    }
    for (struct sched_req *r = list; r; r = r->next)
        r->in_group = false;
    embd_free(rows);
    embd_free(dst);
    embd_free(texts);
    embd_free(lens);
    embd_free(ntok);
    embd_free(out);
}

/* Runs every request of list: token requests one by one, text requests
 * in groups of equal options (run_group). Records each status. */
static void run_list(embd_sched *s, struct sched_req *list) {
    for (struct sched_req *r = list; r; r = r->next) {
        r->grouped = r->in_group = false;
        if (r->ids) run_one(s, r);
    }
    for (struct sched_req *r = list; r; r = r->next)
        if (!r->ids && !r->grouped) run_group(s, list, r);
}

static void *worker_main(void *arg) {
    embd_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while ((!s->head || s->hold) && !s->stop) {
            if (!s->ran_since_trim) {
                pthread_cond_wait(&s->work, &s->mu);
                continue;
            }
            /* Idle after work: once nothing has come for SCHED_IDLE_TRIM_SEC,
             * release the backend's scratch (sized for the largest batch
             * seen), so that a burst leaves no lasting memory behind. The
             * worker is the only user of the context, so this is safe. */
            struct timespec limit;
            clock_gettime(CLOCK_REALTIME, &limit);
            limit.tv_sec += SCHED_IDLE_TRIM_SEC;
            if (pthread_cond_timedwait(&s->work, &s->mu, &limit) == ETIMEDOUT &&
                (!s->head || s->hold) && !s->stop) {
                embd_ctx_trim(s->ctx);
                s->ran_since_trim = false;
            }
        }
        if (!s->head) break; /* stopping and drained */
        /* Take requests from the front, at least one, up to max_batch_texts;
         * requests whose callers gave up are answered without running. */
        struct sched_req *list = NULL, *last = NULL;
        size_t total = 0;
        bool dropped = false;
        const struct timespec now = mono_now();
        const double now_s = embd_now();
        while (s->head) {
            struct sched_req *r = s->head;
            enum embd_status gu = given_up(r, now);
            if (gu == EMBD_OK && list && total + r->n > s->max_batch_texts) break;
            s->head = r->next;
            s->queued -= r->n;
            r->next = NULL;
            if (gu != EMBD_OK) {
                set_given_up(r, gu);
                r->state = REQ_DONE; /* r belongs to its caller again */
                dropped = true;
                continue;
            }
            r->state = REQ_RUNNING;
            embd_metrics_observe(embd_ctx_metrics(s->ctx), EMBD_H_QUEUE_SEC, now_s - r->enqueued);
            if (last)
                last->next = r;
            else
                list = r;
            last = r;
            total += r->n;
        }
        if (!s->head) s->tail = NULL;
        pthread_cond_broadcast(&s->space);
        if (dropped) pthread_cond_broadcast(&s->done);
        if (!list) continue;
        pthread_mutex_unlock(&s->mu);

        run_list(s, list);

        pthread_mutex_lock(&s->mu);
        s->ran_since_trim = true;
        for (struct sched_req *r = list, *next; r; r = next) {
            next = r->next; /* r belongs to its caller once it is done */
            r->state = REQ_DONE;
        }
        pthread_cond_broadcast(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void sched_destroy(embd_sched *s) {
    if (s->init > 4) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->work);
        pthread_cond_broadcast(&s->space);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->worker, NULL);
    }
    if (s->init > 3) pthread_cond_destroy(&s->done);
    if (s->init > 2) pthread_cond_destroy(&s->space);
    if (s->init > 1) pthread_cond_destroy(&s->work);
    if (s->init > 0) pthread_mutex_destroy(&s->mu);
    embd_free(s);
}

enum embd_status embd_sched_new(embd_ctx *ctx, struct embd_sched_params params, embd_sched **out) {
    if (!out) return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_new: out is NULL");
    *out = NULL;
    if (!ctx) return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_new: ctx is NULL");
    if (params.queue_texts == 0) params.queue_texts = 4096;
    if (params.max_batch_texts == 0) params.max_batch_texts = 1024;
    embd_sched *s = embd_calloc(1, sizeof *s);
    if (!s) return embd_error(EMBD_ERR_NOMEM, "out of memory creating a scheduler");
    s->ctx = ctx;
    s->dim = embd_ctx_dim(ctx);
    s->max_tokens = embd_ctx_max_tokens(ctx);
    s->capacity = params.queue_texts;
    s->max_batch_texts = params.max_batch_texts;
    pthread_condattr_t ca;
    bool ca_ok = pthread_condattr_init(&ca) == 0;
    if (ca_ok) pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (!ca_ok || pthread_mutex_init(&s->mu, NULL)) goto fail;
    s->init = 1;
    if (pthread_cond_init(&s->work, NULL)) goto fail;
    s->init = 2;
    if (pthread_cond_init(&s->space, &ca)) goto fail;
    s->init = 3;
    if (pthread_cond_init(&s->done, &ca)) goto fail;
    s->init = 4;
    if (pthread_create(&s->worker, NULL, worker_main, s)) goto fail;
    s->init = 5;
    pthread_condattr_destroy(&ca);
    *out = s;
    return EMBD_OK;
fail:
    if (ca_ok) pthread_condattr_destroy(&ca);
    sched_destroy(s);
    return embd_error(EMBD_ERR_NOMEM, "cannot start the scheduler's worker thread");
}

void embd_sched_free(embd_sched *s) {
    if (s) sched_destroy(s);
}

void embd_sched_hold(embd_sched *s, bool hold) {
    pthread_mutex_lock(&s->mu);
    s->hold = hold;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->mu);
}

size_t embd_sched_queued_requests(embd_sched *s) {
    size_t k = 0;
    pthread_mutex_lock(&s->mu);
    for (const struct sched_req *r = s->head; r; r = r->next)
        k++;
    pthread_mutex_unlock(&s->mu);
    return k;
}

/* Removes the queued request req from the queue (under the mutex). */
static void unqueue(embd_sched *s, struct sched_req *req) {
    struct sched_req *prev = NULL;
    for (struct sched_req *r = s->head; r; prev = r, r = r->next) {
        if (r != req) continue;
        if (prev)
            prev->next = r->next;
        else
            s->head = r->next;
        if (s->tail == r) s->tail = prev;
        s->queued -= r->n;
        pthread_cond_broadcast(&s->space);
        return;
    }
    EMBD_ASSERT(!"a queued request is not in the queue");
}

/* Queues req (n > 0) and waits for its result. */
static enum embd_status submit(embd_sched *s, struct sched_req *req,
                               const struct embd_sched_call *call) {
    static const struct embd_sched_call defaults = {.queue_timeout_ms = -1};
    if (!call) call = &defaults;
    const size_t n = req->n;
    const struct timespec start = mono_now();
    const int qt = call->queue_timeout_ms;
    const struct timespec room_limit = ts_add_ns(start, qt > 0 ? (long long)qt * 1000000LL : 0);
    req->cancel = call->cancel;
    req->has_deadline = call->deadline_ms > 0;
    if (req->has_deadline)
        req->deadline = ts_add_ns(start, (long long)call->deadline_ms * 1000000LL);

    pthread_mutex_lock(&s->mu);
    /* Wait for room; a request larger than the queue waits for it to empty. */
    enum embd_status st = EMBD_OK;
    while (!s->stop) {
        const struct timespec now = mono_now();
        if ((st = given_up(req, now)) != EMBD_OK) break;
        if (s->queued == 0 || s->queued + n <= s->capacity) break;
        if (qt == 0 || (qt > 0 && !ts_before(now, room_limit))) {
            size_t q = s->queued;
            pthread_mutex_unlock(&s->mu);
            return embd_error(EMBD_ERR_BUSY, "the queue is full (%zu of %zu texts); try later", q,
                              s->capacity);
        }
        wait_for(s, &s->space, req, qt > 0, room_limit);
    }
    if (st != EMBD_OK) {
        pthread_mutex_unlock(&s->mu);
        set_given_up(req, st);
        return embd_error(st, "%s", req->err);
    }
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        return embd_error(EMBD_ERR_INVALID_ARG, "the scheduler is shutting down");
    }
    req->state = REQ_QUEUED;
    req->next = NULL;
    if (s->tail)
        s->tail->next = req;
    else
        s->head = req;
    s->tail = req;
    s->queued += n;
    req->enqueued = embd_now();
    pthread_cond_signal(&s->work);
    while (req->state != REQ_DONE) {
        if (req->state == REQ_RUNNING) { /* wait for it, whatever happens to the caller */
            pthread_cond_wait(&s->done, &s->mu);
            continue;
        }
        if ((st = given_up(req, mono_now())) != EMBD_OK) {
            unqueue(s, req);
            set_given_up(req, st);
            break;
        }
        wait_for(s, &s->done, req, false, start);
    }
    pthread_mutex_unlock(&s->mu);
    if (req->st != EMBD_OK) return embd_error(req->st, "%s", req->err);
    return EMBD_OK;
}

enum embd_status embd_sched_embed_opts(embd_sched *s, const char *const *texts, const size_t *lens,
                                       size_t n, float *out, const struct embd_sched_call *call,
                                       const struct embd_embed_opts *opts,
                                       struct embd_embed_info *info) {
    if (info) info->total_tokens = info->bad_input = info->bad_tokens = 0;
    if (!s || (n && (!texts || !out)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed: NULL argument");
    if (n == 0) return EMBD_OK;
    for (size_t i = 0; i < n; i++) /* checked here: one NULL must not fail other callers */
        if (!texts[i])
            return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed: text %zu is NULL", i);
    struct sched_req req = {.texts = texts,
                            .lens = lens,
                            .n = n,
                            .out = out,
                            .opts = opts ? *opts : embd_embed_default_opts(),
                            .info = info};
    return submit(s, &req, call);
}

enum embd_status embd_sched_embed_ex(embd_sched *s, const char *const *texts, const size_t *lens,
                                     size_t n, float *out, const struct embd_sched_call *call) {
    return embd_sched_embed_opts(s, texts, lens, n, out, call, NULL, NULL);
}

enum embd_status embd_sched_embed(embd_sched *s, const char *const *texts, const size_t *lens,
                                  size_t n, float *out, int timeout_ms) {
    struct embd_sched_call call = {.queue_timeout_ms = timeout_ms};
    return embd_sched_embed_ex(s, texts, lens, n, out, &call);
}

enum embd_status embd_sched_embed_tokens_opts(embd_sched *s, const int32_t *ids,
                                              const size_t *seq_start, size_t n, float *out,
                                              const struct embd_sched_call *call,
                                              const struct embd_embed_opts *opts,
                                              struct embd_embed_info *info) {
    if (info) info->total_tokens = info->bad_input = info->bad_tokens = 0;
    if (!s || (n && (!ids || !seq_start || !out)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed_tokens: NULL argument");
    if (n == 0) return EMBD_OK;
    struct sched_req req = {.ids = ids,
                            .seq_start = seq_start,
                            .n = n,
                            .out = out,
                            .opts = opts ? *opts : embd_embed_default_opts(),
                            .info = info};
    return submit(s, &req, call);
}

enum embd_status embd_sched_embed_tokens_ex(embd_sched *s, const int32_t *ids,
                                            const size_t *seq_start, size_t n, float *out,
                                            const struct embd_sched_call *call) {
    return embd_sched_embed_tokens_opts(s, ids, seq_start, n, out, call, NULL, NULL);
}

enum embd_status embd_sched_embed_tokens(embd_sched *s, const int32_t *ids, const size_t *seq_start,
                                         size_t n, float *out, int timeout_ms) {
    struct embd_sched_call call = {.queue_timeout_ms = timeout_ms};
    return embd_sched_embed_tokens_ex(s, ids, seq_start, n, out, &call);
}
