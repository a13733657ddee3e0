/* sched.c — a shared engine: many threads submit texts to one context
 * through a bounded queue; one worker thread takes every pending request
 * (up to max_batch_texts texts), embeds them together in one embd_embed call
 * (which packs them into token-budget batches), and hands each caller its
 * own rows back in order. A submit on a full queue waits up to the caller's
 * timeout and then returns EMBD_ERR_BUSY. */
#include "engine/engine.h"
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct sched_req {
    const char *const *texts; /* (n) */
    const size_t *lens;       /* (n) or NULL */
    const int32_t *ids;       /* token inputs instead of texts: ids (T) or NULL */
    const size_t *seq_start;  /* (n+1) with ids */
    size_t n;
    float *out; /* (n, D) */
    enum embd_status st;
    char err[256];
    bool done;
    double enqueued; /* embd_now() when queued */
    struct sched_req *next;
};

struct embd_sched {
    embd_ctx *ctx;
    int dim;
    size_t capacity;        /* texts queued at most (a larger request waits for an empty queue) */
    size_t max_batch_texts; /* texts per embd_embed call */
    pthread_mutex_t mu;
    pthread_cond_t work;  /* the worker waits for requests */
    pthread_cond_t space; /* submitters wait for room */
    pthread_cond_t done;  /* submitters wait for their results */
    struct sched_req *head, *tail;
    size_t queued; /* texts in the queue */
    bool stop;
    pthread_t worker;
    int init; /* how many of mu, work, space, done, worker were made */
};

struct embd_sched_params embd_sched_default_params(void) {
    struct embd_sched_params p = {.queue_texts = 4096, .max_batch_texts = 1024};
    return p;
}

/* Embeds the requests of list (total texts) in one call when memory allows,
 * else one call per request; records each status. */
static void run_list(embd_sched *s, struct sched_req *list, size_t total) {
    const size_t D = (size_t)s->dim;
    /* Token requests run one by one; the text requests together. */
    bool any_ids = false;
    for (struct sched_req *r = list; r; r = r->next)
        any_ids |= r->ids != NULL;
    if (any_ids) {
        for (struct sched_req *r = list; r; r = r->next) {
            if (r->ids)
                r->st = embd_embed_tokens(s->ctx, r->ids, r->seq_start, r->n, r->out);
            else
                r->st = embd_embed(s->ctx, r->texts, r->lens, r->n, r->out);
            if (r->st != EMBD_OK) snprintf(r->err, sizeof r->err, "%s", embd_last_error());
        }
        return;
    }
    const char **texts = embd_malloc2(total, sizeof *texts); /* (total) */
    size_t *lens = embd_malloc2(total, sizeof *lens);        /* (total) */
    float *out = embd_malloc2(total * D, sizeof *out);       /* (total, D) */
    if (list->next && texts && lens && out) {
        size_t k = 0;
        for (struct sched_req *r = list; r; r = r->next)
            for (size_t i = 0; i < r->n; i++, k++) {
                texts[k] = r->texts[i];
                lens[k] = r->lens ? r->lens[i] : strlen(r->texts[i]);
            }
        enum embd_status st = embd_embed(s->ctx, texts, lens, total, out);
        k = 0;
        for (struct sched_req *r = list; r; r = r->next) {
            r->st = st;
            if (st == EMBD_OK)
                memcpy(r->out, out + k * D, r->n * D * sizeof *out);
            else
                snprintf(r->err, sizeof r->err, "%s", embd_last_error());
            k += r->n;
        }
    } else {
        for (struct sched_req *r = list; r; r = r->next) {
            r->st = embd_embed(s->ctx, r->texts, r->lens, r->n, r->out);
            if (r->st != EMBD_OK) snprintf(r->err, sizeof r->err, "%s", embd_last_error());
        }
    }
    embd_free(texts);
    embd_free(lens);
    embd_free(out);
}

static void *worker_main(void *arg) {
    embd_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->work, &s->mu);
        if (!s->head) break; /* stopping and drained */
        /* Take requests from the front, at least one, up to max_batch_texts. */
        struct sched_req *list = s->head, *last = s->head;
        size_t total = last->n;
        while (last->next && total + last->next->n <= s->max_batch_texts) {
            last = last->next;
            total += last->n;
        }
        s->head = last->next;
        if (!s->head) s->tail = NULL;
        last->next = NULL;
        s->queued -= total;
        double now = embd_now();
        for (struct sched_req *r = list; r; r = r->next)
            embd_metrics_observe(embd_ctx_metrics(s->ctx), EMBD_H_QUEUE_SEC, now - r->enqueued);
        pthread_cond_broadcast(&s->space);
        pthread_mutex_unlock(&s->mu);

        run_list(s, list, total);

        pthread_mutex_lock(&s->mu);
        for (struct sched_req *r = list, *next; r; r = next) {
            next = r->next; /* r belongs to its caller once done is set */
            r->done = true;
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
    if (pthread_cond_init(&s->done, NULL)) goto fail;
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

/* Queues req (n > 0), waits for its result. */
static enum embd_status submit(embd_sched *s, struct sched_req *req, int timeout_ms) {
    const size_t n = req->n;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s->mu);
    /* Wait for room; a request larger than the queue waits for it to empty. */
    while (!s->stop && s->queued > 0 && s->queued + n > s->capacity) {
        int rc = 0;
        if (timeout_ms == 0)
            rc = ETIMEDOUT;
        else if (timeout_ms < 0)
            pthread_cond_wait(&s->space, &s->mu);
        else
            rc = pthread_cond_timedwait(&s->space, &s->mu, &deadline);
        if (rc == ETIMEDOUT) {
            size_t q = s->queued;
            pthread_mutex_unlock(&s->mu);
            return embd_error(EMBD_ERR_BUSY, "the queue is full (%zu of %zu texts); try later", q,
                              s->capacity);
        }
    }
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        return embd_error(EMBD_ERR_INVALID_ARG, "the scheduler is shutting down");
    }
    if (s->tail)
        s->tail->next = req;
    else
        s->head = req;
    s->tail = req;
    s->queued += n;
    req->enqueued = embd_now();
    pthread_cond_signal(&s->work);
    while (!req->done)
        pthread_cond_wait(&s->done, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (req->st != EMBD_OK) return embd_error(req->st, "%s", req->err);
    return EMBD_OK;
}

enum embd_status embd_sched_embed(embd_sched *s, const char *const *texts, const size_t *lens,
                                  size_t n, float *out, int timeout_ms) {
    if (!s || (n && (!texts || !out)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed: NULL argument");
    if (n == 0) return EMBD_OK;
    struct sched_req req = {.texts = texts, .lens = lens, .n = n, .out = out};
    return submit(s, &req, timeout_ms);
}

enum embd_status embd_sched_embed_tokens(embd_sched *s, const int32_t *ids, const size_t *seq_start,
                                         size_t n, float *out, int timeout_ms) {
    if (!s || (n && (!ids || !seq_start || !out)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed_tokens: NULL argument");
    if (n == 0) return EMBD_OK;
    struct sched_req req = {.ids = ids, .seq_start = seq_start, .n = n, .out = out};
    return submit(s, &req, timeout_ms);
}
