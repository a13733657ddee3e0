/* sched.c — a shared engine: many threads submit texts to one context
 * through a bounded queue, and one worker thread shares the context fairly
 * between the requests in it.
 *
 * The worker runs in rounds. A round takes a piece of every active request
 * in turn (round robin from where the last round stopped): each request's
 * share of the round's token budget, and at least one input, estimated from
 * byte lengths (texts) or counted (token ids). With several requests active
 * the budget is what the backend runs in about SCHED_ROUND_MS, so that a
 * short query that arrives behind thousands of another client's texts waits
 * for one short round, not for all of them; a request alone gets full
 * batches. The texts of a round whose requests ask for the same options are
 * embedded in one call, ordered by length so that similar lengths share
 * forward passes, and each row and token count goes back to its caller, in
 * the caller's order.
 *
 * A submit on a full queue (queue_texts texts not yet run) waits up to the
 * caller's timeout and then returns EMBD_ERR_BUSY; a request larger than the
 * queue waits for it to empty. A caller may give a deadline and a cancel
 * flag: a request not yet started when either fires is removed and returns
 * EMBD_ERR_TIMEOUT or EMBD_ERR_CANCELLED with out untouched; a started
 * request whose flag is raised stops at the next round (its pieces not yet
 * run are dropped) and returns EMBD_ERR_CANCELLED: out then holds some rows,
 * and is never written after the call returned. embd_sched_submit queues a
 * request and returns at once; its callback runs on the worker thread. */
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
/* A round's length in time when several requests share the engine: short
 * enough that a query's wait stays small, long enough that batches stay
 * efficient (never less than one input of the model's longest). */
#define SCHED_ROUND_MS 40.0
/* A request alone gets longer rounds (fewer, larger batches), still short
 * enough that one arriving behind it does not wait long for the next. */
#define SCHED_ALONE_MS 250.0

enum req_state { REQ_QUEUED, REQ_RUNNING, REQ_DONE };

struct sched_req {
    const char *const *texts; /* (n) */
    const size_t *lens;       /* (n) or NULL */
    const int32_t *ids;       /* token inputs instead of texts: ids (T) or NULL */
    const size_t *seq_start;  /* (n+1) with ids */
    size_t n;
    float *out; /* (n, D), or (n) scores of a rerank */
    struct embd_embed_opts opts;
    /* a rerank: the texts are documents scored against one query */
    bool rerank;
    const char *query;
    size_t query_len;
    struct embd_rerank_opts ropts;
    struct embd_embed_info *info; /* the caller's, or NULL */
    size_t *ntok;                 /* (n) token counts: info->n_tokens, or NULL */
    const int *cancel;            /* the caller's flag, or NULL */
    bool has_deadline;
    struct timespec deadline;   /* CLOCK_MONOTONIC */
    embd_sched_done_fn done_fn; /* asynchronous: called when done; the request is owned */
    void *user;
    bool room_forever;             /* asynchronous, waiting for room: no limit */
    struct timespec room_deadline; /* ... else until then (CLOCK_MONOTONIC) */
    /* under the scheduler's mutex */
    enum req_state state;
    size_t next;     /* inputs handed to rounds so far */
    size_t finished; /* inputs embedded so far */
    size_t running;  /* its pieces in rounds now (several workers may run pieces of it) */
    bool ending;     /* failed or given up while pieces ran: ends when the last returns */
    size_t total_tokens;
    enum embd_status st;
    char err[256];
    double enqueued; /* embd_now() when queued */
    struct sched_req *prev, *nxt;
};

/* A run of inputs [start, start + count) of one request in a round. */
struct piece {
    struct sched_req *r;
    size_t start, count;
    bool grouped;
    enum embd_status st;
    size_t tokens; /* tokens run for it (its request's total gets them when settled) */
    char err[256]; /* the message when st is not EMBD_OK */
};

/* One worker thread and the context it runs its rounds on: one per device
 * (embd_sched_new_multi), each taking rounds from the one queue when it is
 * free, so that the least busy device gets the next round. */
struct sched_worker {
    embd_sched *s;
    embd_ctx *ctx;
    int idx;
    bool express; /* runs short requests only (embd_sched_params.express) */
    bool busy;    /* running a round now */
    pthread_t th;
    bool ran_since_trim;          /* work ran since the scratch was last released */
    double tok_per_sec;           /* the backend's rate, measured (0: not yet) */
    double rate_tokens, rate_sec; /* its decaying sums: large rounds weigh more */
};

struct embd_sched {
    embd_ctx *ctx; /* the first worker's: the model, the metrics of the queue */
    int dim;
    int max_tokens;         /* the model's (for messages and the smallest round) */
    int batch_tokens;       /* the context's tokens per forward pass */
    size_t capacity;        /* inputs not yet run, at most (a larger request waits for none) */
    size_t max_batch_texts; /* inputs per round */
    pthread_mutex_t mu;
    pthread_cond_t work;                     /* the worker waits for requests */
    pthread_cond_t space;                    /* submitters wait for room */
    pthread_cond_t done;                     /* submitters wait for their results */
    struct sched_req *head, *tail;           /* the active requests, in arrival order */
    struct sched_req *turn;                  /* where the next round starts (NULL: the head) */
    struct sched_req *wait_head, *wait_tail; /* asynchronous requests waiting for room */
    size_t queued;                           /* inputs not yet handed to a round */
    size_t active;                           /* requests in the list */
    size_t blocked, blocked_inputs;          /* synchronous callers waiting for room */
    bool stop;
    bool hold;                    /* embd_sched_hold: the workers take nothing */
    double last_ok;               /* embd_now() when a round last embedded something; 0: never */
    struct sched_worker *workers; /* (n_workers): the devices', then the express one */
    int n_workers;
    int n_devices;                /* workers that take any request */
    struct sched_worker *express; /* or NULL */
    int started;                  /* worker threads running */
    int init;                     /* how many of mu, work, space, done were made */
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

static bool cancelled(const struct sched_req *r) {
    return r->cancel && __atomic_load_n(r->cancel, __ATOMIC_ACQUIRE);
}

/* EMBD_ERR_CANCELLED or EMBD_ERR_TIMEOUT when the caller of a request not
 * yet started gave up, else EMBD_OK. */
static enum embd_status given_up(const struct sched_req *r, struct timespec now) {
    if (cancelled(r)) return EMBD_ERR_CANCELLED;
    if (r->has_deadline && !ts_before(now, r->deadline)) return EMBD_ERR_TIMEOUT;
    return EMBD_OK;
}

static void set_error(struct sched_req *r, enum embd_status st, const char *msg) {
    r->st = st;
    snprintf(r->err, sizeof r->err, "%s", msg);
}

static void set_given_up(struct sched_req *r, enum embd_status st) {
    set_error(r, st,
              st == EMBD_ERR_CANCELLED
                  ? (r->finished ? "the request was cancelled while it ran; the rest was dropped"
                                 : "the request was cancelled before it ran")
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

/* ---- the active list (under the mutex) ---------------------------------- */

static void list_push(embd_sched *s, struct sched_req *r) {
    r->nxt = NULL;
    r->prev = s->tail;
    if (s->tail)
        s->tail->nxt = r;
    else
        s->head = r;
    s->tail = r;
    s->active++;
    s->queued += r->n;
}

static void list_remove(embd_sched *s, struct sched_req *r) {
    if (s->turn == r) s->turn = r->nxt;
    if (r->prev)
        r->prev->nxt = r->nxt;
    else
        s->head = r->nxt;
    if (r->nxt)
        r->nxt->prev = r->prev;
    else
        s->tail = r->prev;
    r->prev = r->nxt = NULL;
    s->active--;
    s->queued -= r->n - r->next;
    pthread_cond_broadcast(&s->space);
}

/* Ends request r (removed from the list). A synchronous caller is woken; an
 * asynchronous one is put on *fire, to be called outside the mutex. */
static void finish(embd_sched *s, struct sched_req *r, struct sched_req **fire) {
    list_remove(s, r);
    if (r->st == EMBD_OK && r->info) r->info->total_tokens = r->total_tokens;
    r->state = REQ_DONE;
    if (r->done_fn) {
        r->nxt = *fire;
        *fire = r;
    }
}

/* Ends request r, which failed or was given up (r->st and r->err set): at
 * once when none of its pieces is in a round, else no more of its inputs go
 * to rounds and it ends when its last running piece is settled (the caller's
 * buffers are written until then). */
static void end_request(embd_sched *s, struct sched_req *r, struct sched_req **fire) {
    if (!r->running) {
        finish(s, r, fire);
        return;
    }
    r->ending = true;
    s->queued -= r->n - r->next;
    r->next = r->n;
    pthread_cond_broadcast(&s->space);
}

/* Calls the callbacks of the finished asynchronous requests (without the
 * mutex) and frees them. */
static void fire_all(struct sched_req *fire) {
    while (fire) {
        struct sched_req *r = fire;
        fire = r->nxt;
        if (r->st != EMBD_OK) embd_error(r->st, "%s", r->err); /* for the callback to read */
        r->done_fn(r->user, r->st);
        embd_free(r);
    }
}

/* ---- running a round (worker, without the mutex) ------------------------- */

struct text_row {
    const char *text;
    size_t len;
    struct piece *p;
    size_t i; /* the input's index in its request */
};

static int text_row_cmp(const void *a, const void *b) {
    const struct text_row *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    if (x->p != y->p) return x->p < y->p ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static size_t text_len(const struct sched_req *r, size_t i) {
    return r->lens ? r->lens[i] : strlen(r->texts[i]);
}

/* Floats per row of r's output: D, the Matryoshka dimensions, or 1 (a score). */
static size_t row_width(const embd_sched *s, const struct sched_req *r) {
    if (r->rerank) return 1;
    return r->opts.dimensions > 0 ? (size_t)r->opts.dimensions : (size_t)s->dim;
}

/* Runs one piece alone (token ids, or texts after a shared call failed);
 * records its status and the error of its request. */
static void run_piece(embd_sched *s, embd_ctx *ctx, struct piece *p) {
    struct sched_req *r = p->r;
    const size_t D = row_width(s, r);
    struct embd_embed_info info = {.n_tokens = r->ntok ? r->ntok + p->start : NULL};
    if (r->ids) {
        size_t *ss = embd_malloc2(p->count + 1, sizeof *ss); /* rebased to the piece */
        if (!ss) {
            p->st = embd_error(EMBD_ERR_NOMEM, "out of memory running a request");
        } else {
            for (size_t k = 0; k <= p->count; k++)
                ss[k] = r->seq_start[p->start + k] - r->seq_start[p->start];
            p->st = embd_embed_tokens_ex(ctx, r->ids + r->seq_start[p->start], ss, p->count,
                                         r->out + p->start * D, &r->opts, &info);
            embd_free(ss);
        }
    } else if (r->rerank) {
        const char **qs = embd_malloc2(p->count, sizeof *qs);
        size_t *qlens = embd_malloc2(p->count, sizeof *qlens);
        if (!qs || !qlens) {
            p->st = embd_error(EMBD_ERR_NOMEM, "out of memory running a request");
        } else {
            for (size_t k = 0; k < p->count; k++) {
                qs[k] = r->query;
                qlens[k] = r->query_len;
            }
            const size_t *lens = r->lens ? r->lens + p->start : NULL;
            p->st = embd_rerank(ctx, qs, qlens, r->texts + p->start, lens, p->count,
                                r->out + p->start, &r->ropts, &info);
        }
        embd_free(qs);
        embd_free(qlens);
    } else {
        const size_t *lens = r->lens ? r->lens + p->start : NULL;
        p->st = embd_embed_ex(ctx, r->texts + p->start, lens, p->count, r->out + p->start * D,
                              &r->opts, &info);
    }
    if (p->st == EMBD_OK) {
        p->tokens += info.total_tokens;
        return;
    }
    snprintf(p->err, sizeof p->err, "%s", embd_last_error());
    if (p->st == EMBD_ERR_TOO_LONG) {
        const size_t bad = p->start + info.bad_input;
        snprintf(p->err, sizeof p->err, "%s %zu has %zu tokens; the model takes at most %d",
                 r->rerank ? "pair" : "input", bad, info.bad_tokens, s->max_tokens);
        if (r->info) {
            r->info->bad_input = bad;
            r->info->bad_tokens = info.bad_tokens;
        }
    }
}

/* Whether two requests' options give the same vectors (or scores) and
 * refusals, so that their texts may share one embedding (or rerank) call. */
static bool same_opts(const struct sched_req *ra, const struct sched_req *rb) {
    if (ra->rerank != rb->rerank) return false;
    if (ra->rerank)
        return ra->ropts.raw_scores == rb->ropts.raw_scores &&
               ra->ropts.truncate == rb->ropts.truncate;
    const struct embd_embed_opts *a = &ra->opts, *b = &rb->opts;
    if (a->normalize != b->normalize || a->truncate != b->truncate ||
        a->dimensions != b->dimensions)
        return false;
    if (!a->prefix || !b->prefix) return a->prefix == b->prefix;
    return strcmp(a->prefix, b->prefix) == 0;
}

/* Embeds the text pieces whose options are those of `first` in one call,
 * ordered by byte length, and scatters the rows and token counts back; when
 * that fails and there are several pieces (or memory for it is short), each
 * piece runs alone, so that one bad text fails only its own request. */
static void run_group(embd_sched *s, embd_ctx *ctx, struct piece *pieces, size_t np,
                      struct piece *first) {
    const bool rerank = first->r->rerank;
    const size_t D = row_width(s, first->r);
    const struct embd_embed_opts opts = first->r->opts;
    size_t total = 0;
    for (size_t k = 0; k < np; k++) {
        struct piece *p = &pieces[k];
        if (p->r->ids || p->grouped || !same_opts(p->r, first->r)) continue;
        p->grouped = true;
        total += p->count;
    }
    struct text_row *rows = embd_malloc2(total, sizeof *rows); /* (total) sorted by length */
    const char **texts = embd_malloc2(total, sizeof *texts);   /* (total) sorted by length */
    size_t *lens = embd_malloc2(total, sizeof *lens);          /* (total) sorted by length */
    size_t *ntok = embd_malloc2(total, sizeof *ntok);          /* (total) sorted by length */
    float *out = embd_malloc2(total * D, sizeof *out);         /* (total, D) sorted by length */
    const char **qs = rerank ? embd_malloc2(total, sizeof *qs) : NULL;  /* (total) queries */
    size_t *qlens = rerank ? embd_malloc2(total, sizeof *qlens) : NULL; /* (total) */
    struct embd_embed_info info = {.n_tokens = ntok};
    enum embd_status st = EMBD_ERR_NOMEM;
    if (rows && texts && lens && ntok && out && (!rerank || (qs && qlens))) {
        size_t j = 0;
        bool sorted = true;
        for (size_t k = 0; k < np; k++) {
            struct piece *p = &pieces[k];
            if (!p->grouped || p->r->ids || !same_opts(p->r, first->r) || p->st != EMBD_OK)
                continue;
            for (size_t i = p->start; i < p->start + p->count; i++, j++) {
                rows[j] = (struct text_row){p->r->texts[i], text_len(p->r, i), p, i};
                if (j && rows[j].len < rows[j - 1].len) sorted = false;
            }
        }
        EMBD_ASSERT(j == total);
        if (!sorted) qsort(rows, total, sizeof *rows, text_row_cmp);
        for (j = 0; j < total; j++) {
            texts[j] = rows[j].text;
            lens[j] = rows[j].len;
            if (rerank) {
                qs[j] = rows[j].p->r->query;
                qlens[j] = rows[j].p->r->query_len;
            }
        }
        st = rerank ? embd_rerank(ctx, qs, qlens, texts, lens, total, out, &first->r->ropts, &info)
                    : embd_embed_ex(ctx, texts, lens, total, out, &opts, &info);
    }
    if (st == EMBD_OK) {
        for (size_t j = 0; j < total; j++) {
            struct sched_req *r = rows[j].p->r;
            memcpy(r->out + rows[j].i * D, out + j * D, D * sizeof *out);
            if (r->ntok) r->ntok[rows[j].i] = ntok[j];
            rows[j].p->tokens += ntok[j];
        }
    } else {
        for (size_t k = 0; k < np; k++) {
            struct piece *p = &pieces[k];
            if (p->grouped && !p->r->ids && same_opts(p->r, first->r) && p->st == EMBD_OK)
                run_piece(s, ctx, p);
        }
    }
    embd_free(rows);
    embd_free(texts);
    embd_free(lens);
    embd_free(ntok);
    embd_free(out);
    embd_free(qs);
    embd_free(qlens);
}

/* Runs a round's pieces: token pieces one by one, text pieces in groups of
 * equal options. */
static void run_round(embd_sched *s, embd_ctx *ctx, struct piece *pieces, size_t np) {
    for (size_t k = 0; k < np; k++) {
        pieces[k].grouped = false;
        pieces[k].st = EMBD_OK;
        pieces[k].tokens = 0;
        pieces[k].err[0] = '\0';
    }
    for (size_t k = 0; k < np; k++)
        if (pieces[k].r->ids) run_piece(s, ctx, &pieces[k]);
    for (size_t k = 0; k < np; k++)
        if (!pieces[k].r->ids && !pieces[k].grouped) run_group(s, ctx, pieces, np, &pieces[k]);
}

/* ---- building a round (worker, under the mutex) --------------------------- */

/* Tokens of input i of r: counted for token ids, estimated for a text
 * (about four bytes a token for English, plus [CLS] and [SEP]), at most
 * the model's longest. */
static size_t est_tokens(const embd_sched *s, const struct sched_req *r, size_t i) {
    size_t t = r->ids ? r->seq_start[i + 1] - r->seq_start[i] : text_len(r, i) / 4 + 2;
    if (r->rerank) t += r->query_len / 4 + 1;
    return t < (size_t)s->max_tokens ? t : (size_t)s->max_tokens;
}

/* The round's token budget: what the backend runs in about SCHED_ALONE_MS
 * for a request alone, SCHED_ROUND_MS for several, within one full batch
 * (a GPU's full batch runs in well under either). */
static size_t round_budget(const embd_sched *s, const struct sched_worker *w) {
    size_t full = (size_t)s->batch_tokens;
    if (w->tok_per_sec <= 0) return full;
    const double ms = s->active <= 1 ? SCHED_ALONE_MS : SCHED_ROUND_MS;
    size_t t = (size_t)(w->tok_per_sec * ms / 1000.0);
    /* Never below a quarter of a full batch, nor two inputs of the model's
     * longest: smaller batches cost more in thread synchronisation than they
     * save in waiting, most of all on cores shared with other work (where a
     * budget from the measured rate alone would shrink as the rate falls). */
    size_t floor = full / 4 > 2 * (size_t)s->max_tokens ? full / 4 : 2 * (size_t)s->max_tokens;
    if (t < floor) t = floor;
    return t < full ? t : full;
}

/* Estimated tokens of r's inputs not yet handed to a round, counting up to
 * `cap` at most (the caller only asks whether it is small). */
static size_t est_remaining(const embd_sched *s, const struct sched_req *r, size_t cap) {
    size_t t = 0;
    for (size_t i = r->next; i < r->n && t <= cap; i++)
        t += est_tokens(s, r, i);
    return t;
}

/* Inputs an express round takes at most, and its token budget. */
#define EXPRESS_MAX_INPUTS 8

/* Whether r is short enough for the express worker: not started, at most
 * EXPRESS_MAX_INPUTS inputs and one of the model's longest in all. */
static bool express_fits(const embd_sched *s, const struct sched_req *r) {
    return r->state == REQ_QUEUED && r->next == 0 && !r->ending && r->n <= EXPRESS_MAX_INPUTS &&
           est_remaining(s, r, (size_t)s->max_tokens) <= (size_t)s->max_tokens;
}

/* Whether a device worker is running a round. */
static bool device_busy(const embd_sched *s) {
    for (int i = 0; i < s->n_devices; i++)
        if (s->workers[i].busy) return true;
    return false;
}

/* Whether the device workers leave r to the express worker: it is idle and
 * a device is busy (an idle device runs a query faster, with all its
 * threads). */
static bool left_to_express(const embd_sched *s, const struct sched_req *r) {
    return s->express && !s->express->busy && express_fits(s, r) && device_busy(s);
}

/* Whether worker w has something to take. */
static bool work_for(const embd_sched *s, const struct sched_worker *w) {
    if (!s->queued) return false;
    for (const struct sched_req *r = s->head; r; r = r->nxt) {
        if (r->next >= r->n) continue;
        if (w->express ? express_fits(s, r) && device_busy(s) : !left_to_express(s, r)) return true;
    }
    return false;
}

/* Hands inputs [r->next, r->next + take) of r to the round as a piece. */
static void take_piece(embd_sched *s, struct sched_req *r, size_t take, struct piece *pieces,
                       size_t *np, double now_s) {
    if (r->state == REQ_QUEUED) {
        r->state = REQ_RUNNING;
        embd_metrics_observe(embd_ctx_metrics(s->ctx), EMBD_H_QUEUE_SEC, now_s - r->enqueued);
    }
    pieces[(*np)++] = (struct piece){.r = r, .start = r->next, .count = take};
    r->next += take;
    r->running++;
    s->queued -= take;
}

static bool may_take(const embd_sched *s, const struct sched_worker *w);

/* A device worker's budget when other devices are idle: its share of what
 * is queued, so that they take the rest at once instead of it waiting for
 * this one (a request of a few hundred short texts otherwise runs on one
 * device while the others idle), but never below one input of the model's
 * longest. Else the budget as it is. */
static size_t device_share(const embd_sched *s, const struct sched_worker *w, size_t budget) {
    if (s->n_devices < 2 || w->express) return budget;
    size_t idle = 1; /* w */
    for (int i = 0; i < s->n_devices; i++)
        idle += &s->workers[i] != w && !s->workers[i].busy && may_take(s, &s->workers[i]);
    if (idle < 2) return budget;
    size_t queued = 0;
    for (const struct sched_req *r = s->head; r && queued <= budget * idle; r = r->nxt)
        if (r->next < r->n && !r->ending && !left_to_express(s, r))
            queued += est_remaining(s, r, budget * idle - queued);
    size_t share = (queued + idle - 1) / idle;
    if (share < (size_t)s->max_tokens) share = (size_t)s->max_tokens;
    return share < budget ? share : budget;
}

/* Drops the requests whose callers gave up (not started: cancel or
 * deadline; started: cancel), then fills a round (at most cap pieces):
 * first every request whose rest is short (a query: at most one input of
 * the model's longest), whole, so that it never waits for its turn behind
 * large ones, within half the round; then a piece of every other request in
 * turn, each its share of what is left. Returns the number of pieces. */
static size_t take_round(embd_sched *s, const struct sched_worker *w, struct piece *pieces,
                         size_t cap, struct sched_req **fire) {
    const struct timespec now = mono_now();
    const double now_s = embd_now();
    for (struct sched_req *r = s->head, *nx; r; r = nx) {
        nx = r->nxt;
        if (r->ending) continue;
        enum embd_status gu = r->state == REQ_QUEUED
                                  ? given_up(r, now)
                                  : (cancelled(r) ? EMBD_ERR_CANCELLED : EMBD_OK);
        if (gu == EMBD_OK) continue;
        set_given_up(r, gu);
        end_request(s, r, fire);
    }
    if (!s->head) return 0;
    size_t budget = device_share(s, w, round_budget(s, w));
    const size_t short_max = (size_t)s->max_tokens;
    size_t np = 0, tokens = 0, inputs = 0;
    if (s->active > 1)
        for (struct sched_req *r = s->head; r && np < cap; r = r->nxt) {
            if (r->next >= r->n || r->n - r->next > s->max_batch_texts - inputs) continue;
            if (left_to_express(s, r)) continue;
            const size_t rest = est_remaining(s, r, short_max);
            if (rest > short_max || (np && tokens + rest > budget / 2)) continue;
            inputs += r->n - r->next;
            tokens += rest;
            take_piece(s, r, r->n - r->next, pieces, &np, now_s);
        }
    size_t others = 0;
    for (struct sched_req *r = s->head; r; r = r->nxt)
        others += r->next < r->n && !left_to_express(s, r);
    const size_t left = budget > tokens ? budget - tokens : 0;
    const size_t share = others && left / others ? left / others : 1;
    struct sched_req *r = s->turn ? s->turn : s->head, *after = NULL;
    for (size_t visited = 0; visited < s->active && np < cap; visited++) {
        if (r->next < r->n && !left_to_express(s, r) &&
            (np == 0 || (tokens < budget && inputs < s->max_batch_texts))) {
            size_t take = 0, t = 0;
            while (r->next + take < r->n && inputs + take < s->max_batch_texts) {
                size_t e = est_tokens(s, r, r->next + take);
                if (take && (t + e > share || tokens + t + e > budget)) break;
                t += e;
                take++;
            }
            take_piece(s, r, take, pieces, &np, now_s);
            tokens += t;
            inputs += take;
            after = r->nxt ? r->nxt : s->head;
        }
        r = r->nxt ? r->nxt : s->head;
    }
    if (after) s->turn = after; /* the next round starts after the last request served */
    pthread_cond_broadcast(&s->space);
    return np;
}

/* The express worker's round: the short requests queued, whole, oldest
 * first, within one input of the model's longest in all (and, after
 * dropping the requests given up, as take_round). */
static size_t take_express(embd_sched *s, struct piece *pieces, size_t cap,
                           struct sched_req **fire) {
    const struct timespec now = mono_now();
    const double now_s = embd_now();
    size_t np = 0, tokens = 0, inputs = 0;
    for (struct sched_req *r = s->head, *nx; r && np < cap; r = nx) {
        nx = r->nxt;
        if (!express_fits(s, r) || !device_busy(s)) continue;
        enum embd_status gu = given_up(r, now);
        if (gu != EMBD_OK) {
            set_given_up(r, gu);
            end_request(s, r, fire);
            continue;
        }
        const size_t t = est_remaining(s, r, (size_t)s->max_tokens);
        if (np && (tokens + t > (size_t)s->max_tokens || inputs + r->n > EXPRESS_MAX_INPUTS)) break;
        tokens += t;
        inputs += r->n;
        take_piece(s, r, r->n, pieces, &np, now_s);
    }
    pthread_cond_broadcast(&s->space);
    return np;
}

/* After a round: records each piece's outcome and ends the requests that
 * are complete or failed. */
static void settle_round(embd_sched *s, struct piece *pieces, size_t np, struct sched_req **fire) {
    for (size_t k = 0; k < np; k++) {
        struct sched_req *r = pieces[k].r;
        r->running--;
        r->total_tokens += pieces[k].tokens;
        if (pieces[k].st != EMBD_OK && !r->ending) {
            r->st = pieces[k].st;
            snprintf(r->err, sizeof r->err, "%s", pieces[k].err);
            end_request(s, r, fire);
            continue;
        }
        if (pieces[k].st == EMBD_OK) {
            r->finished += pieces[k].count;
            s->last_ok = embd_now();
        }
        if (r->ending) {
            if (!r->running) finish(s, r, fire);
        } else if (r->finished == r->n && !r->running) {
            r->st = EMBD_OK;
            finish(s, r, fire);
        }
    }
}

/* Queues req (under the mutex). */
static void enqueue(embd_sched *s, struct sched_req *req) {
    req->state = REQ_QUEUED;
    req->enqueued = embd_now();
    list_push(s, req);
    if (s->n_workers > 1) /* the worker it is for may not be the one signal wakes */
        pthread_cond_broadcast(&s->work);
    else
        pthread_cond_signal(&s->work);
}

/* Asynchronous requests waiting for room (under the mutex): those whose
 * caller gave up, or whose wait for room ran out (EMBD_ERR_BUSY), end (onto
 * *fire); then, in arrival order, each is queued as soon as there is room. */
static void admit_waiting(embd_sched *s, struct sched_req **fire) {
    const struct timespec now = mono_now();
    for (struct sched_req **pp = &s->wait_head, *r; (r = *pp);) {
        enum embd_status gu = given_up(r, now);
        if (gu == EMBD_OK && !r->room_forever && !ts_before(now, r->room_deadline)) {
            gu = EMBD_ERR_BUSY;
            set_error(r, gu, "the queue stayed full for the whole queue timeout; try later");
        } else if (gu != EMBD_OK) {
            set_given_up(r, gu);
        }
        if (gu == EMBD_OK) {
            pp = &r->nxt;
            continue;
        }
        *pp = r->nxt;
        r->state = REQ_DONE;
        r->nxt = *fire;
        *fire = r;
    }
    s->wait_tail = NULL;
    for (struct sched_req *r = s->wait_head; r; r = r->nxt)
        s->wait_tail = r;
    while (s->wait_head && (s->queued == 0 || s->queued + s->wait_head->n <= s->capacity)) {
        struct sched_req *r = s->wait_head;
        s->wait_head = r->nxt;
        if (!s->wait_head) s->wait_tail = NULL;
        enqueue(s, r);
    }
}

/* Whether worker w may take a round: its device works, or none does and it
 * is the first worker (which then runs everything on its context's CPU
 * fallback). A device whose GPU died (EMBD_FALLBACK_GPU_DEAD) leaves its
 * work to the others. */
static bool may_take(const embd_sched *s, const struct sched_worker *w) {
    if (s->n_devices == 1 || w->express) return true;
    if (embd_ctx_fallback(w->ctx, NULL) != EMBD_FALLBACK_GPU_DEAD) return true;
    for (int i = 0; i < s->n_devices; i++)
        if (embd_ctx_fallback(s->workers[i].ctx, NULL) != EMBD_FALLBACK_GPU_DEAD) return false;
    return w->idx == 0;
}

static void *worker_main(void *arg) {
    struct sched_worker *w = arg;
    embd_sched *s = w->s;
    size_t cap = 64;
    struct piece *pieces = embd_malloc2(cap, sizeof *pieces);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        struct sched_req *fire = NULL;
        admit_waiting(s, &fire);
        if (fire) {
            pthread_mutex_unlock(&s->mu);
            fire_all(fire);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        bool idle = !s->head || s->hold || !work_for(s, w);
        while ((idle || !may_take(s, w)) && !s->stop) {
            if (s->wait_head || (!idle && !may_take(s, w))) {
                /* look at the waiting requests (or the devices) again soon */
                struct timespec tick;
                clock_gettime(CLOCK_REALTIME, &tick);
                tick = ts_add_ns(tick, 20000000L);
                pthread_cond_timedwait(&s->work, &s->mu, &tick);
                break;
            }
            if (!w->ran_since_trim) {
                pthread_cond_wait(&s->work, &s->mu);
                idle = !s->head || s->hold || !work_for(s, w);
                continue;
            }
            /* Idle after work: once nothing has come for SCHED_IDLE_TRIM_SEC,
             * release the backend's scratch (sized for the largest batch
             * seen), so that a burst leaves no lasting memory behind. The
             * worker is the only user of its context, so this is safe. */
            struct timespec limit;
            clock_gettime(CLOCK_REALTIME, &limit);
            limit.tv_sec += SCHED_IDLE_TRIM_SEC;
            if (pthread_cond_timedwait(&s->work, &s->mu, &limit) == ETIMEDOUT &&
                (!s->head || s->hold || !work_for(s, w)) && !s->stop) {
                embd_ctx_trim(w->ctx);
                w->ran_since_trim = false;
            }
            idle = !s->head || s->hold || !work_for(s, w);
        }
        if (!s->head && s->wait_head) continue; /* admitted at the top */
        if (!s->head) {
            if (s->stop) break; /* stopping and drained */
            continue;
        }
        if (!work_for(s, w) || !may_take(s, w)) {
            /* the rest runs on other workers (stopping: wait for them to
             * drain), or this worker's device died: woken when a round ends */
            struct timespec tick;
            clock_gettime(CLOCK_REALTIME, &tick);
            tick = ts_add_ns(tick, 20000000L);
            pthread_cond_timedwait(&s->work, &s->mu, &tick);
            continue;
        }
        if (s->hold && !s->stop) continue;
        if (cap < s->active) { /* a piece per active request at most */
            struct piece *p = embd_realloc(pieces, s->active * sizeof *p);
            if (p) {
                pieces = p;
                cap = s->active;
            }
        }
        size_t np = !pieces      ? 0
                    : w->express ? take_express(s, pieces, cap, &fire)
                                 : take_round(s, w, pieces, cap, &fire);
        w->busy = np > 0;
        if (!pieces) { /* no memory for even the first round: fail what is queued */
            for (struct sched_req *r = s->head, *nx; r; r = nx) {
                nx = r->nxt;
                if (r->ending) continue;
                set_error(r, EMBD_ERR_NOMEM, "out of memory in the scheduler");
                end_request(s, r, &fire);
            }
        }
        pthread_cond_broadcast(&s->done);                /* requests given up may have ended */
        if (s->queued) pthread_cond_broadcast(&s->work); /* more for another worker */
        pthread_mutex_unlock(&s->mu);
        fire_all(fire);
        fire = NULL;
        if (np) {
            struct embd_ctx_stats a, b;
            embd_ctx_get_stats(w->ctx, &a);
            run_round(s, w->ctx, pieces, np);
            embd_ctx_get_stats(w->ctx, &b);
            const double sec = b.forward_sec - a.forward_sec;
            if (sec > 0 && b.tokens > a.tokens) { /* the backend's rate, weighted by work */
                w->rate_tokens = 0.8 * w->rate_tokens + (double)(b.tokens - a.tokens);
                w->rate_sec = 0.8 * w->rate_sec + sec;
                w->tok_per_sec = w->rate_tokens / w->rate_sec;
            }
        }
        pthread_mutex_lock(&s->mu);
        w->busy = false;
        w->ran_since_trim = w->ran_since_trim || np > 0;
        settle_round(s, pieces, np, &fire);
        if (fire) {
            pthread_mutex_unlock(&s->mu);
            fire_all(fire);
            pthread_mutex_lock(&s->mu);
        }
        pthread_cond_broadcast(&s->done);
        pthread_cond_broadcast(&s->work); /* a worker may wait for the end of this round */
    }
    pthread_mutex_unlock(&s->mu);
    embd_free(pieces);
    return NULL;
}

static void sched_destroy(embd_sched *s) {
    if (s->init > 3) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->work);
        pthread_cond_broadcast(&s->space);
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < s->started; i++)
            pthread_join(s->workers[i].th, NULL);
    }
    if (s->init > 3) pthread_cond_destroy(&s->done);
    if (s->init > 2) pthread_cond_destroy(&s->space);
    if (s->init > 1) pthread_cond_destroy(&s->work);
    if (s->init > 0) pthread_mutex_destroy(&s->mu);
    embd_free(s->workers);
    embd_free(s);
}

enum embd_status embd_sched_new(embd_ctx *ctx, struct embd_sched_params params, embd_sched **out) {
    return embd_sched_new_multi(&ctx, 1, params, out);
}

enum embd_status embd_sched_new_multi(embd_ctx *const *ctxs, int n_ctx,
                                      struct embd_sched_params params, embd_sched **out) {
    if (!out) return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_new: out is NULL");
    *out = NULL;
    if (!ctxs || n_ctx < 1 || n_ctx > EMBD_SCHED_MAX_CTX)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_new_multi: %d contexts (1 to %d)",
                          n_ctx, EMBD_SCHED_MAX_CTX);
    for (int i = 0; i < n_ctx; i++) {
        if (!ctxs[i]) return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_new: ctx is NULL");
        if (embd_ctx_model(ctxs[i]) != embd_ctx_model(ctxs[0]))
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "embd_sched_new_multi: the contexts run different models");
        for (int j = 0; j < i; j++)
            if (ctxs[j] == ctxs[i])
                return embd_error(EMBD_ERR_INVALID_ARG,
                                  "embd_sched_new_multi: context %d given twice", i);
    }
    if (params.queue_texts == 0) params.queue_texts = 4096;
    if (params.max_batch_texts == 0) params.max_batch_texts = 1024;
    if (params.express) {
        if (embd_ctx_model(params.express) != embd_ctx_model(ctxs[0]))
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "embd_sched_new: the express context runs another model");
        for (int i = 0; i < n_ctx; i++)
            if (ctxs[i] == params.express)
                return embd_error(EMBD_ERR_INVALID_ARG,
                                  "embd_sched_new: the express context is also a device's");
    }
    const int n_workers = n_ctx + (params.express != NULL);
    embd_sched *s = embd_calloc(1, sizeof *s);
    if (!s || !(s->workers = embd_calloc((size_t)n_workers, sizeof *s->workers))) {
        embd_free(s);
        return embd_error(EMBD_ERR_NOMEM, "out of memory creating a scheduler");
    }
    s->n_workers = n_workers;
    s->n_devices = n_ctx;
    s->ctx = ctxs[0];
    s->dim = embd_ctx_dim(s->ctx);
    s->max_tokens = embd_ctx_max_tokens(s->ctx);
    /* rounds are sized for the smallest device's batch */
    s->batch_tokens = embd_ctx_max_batch_tokens(s->ctx);
    for (int i = 0; i < n_ctx; i++) {
        const int bt = embd_ctx_max_batch_tokens(ctxs[i]);
        if (bt < s->batch_tokens) s->batch_tokens = bt;
        s->workers[i] = (struct sched_worker){.s = s, .ctx = ctxs[i], .idx = i};
    }
    if (params.express) {
        s->workers[n_ctx] =
            (struct sched_worker){.s = s, .ctx = params.express, .idx = n_ctx, .express = true};
        s->express = &s->workers[n_ctx];
    }
    if (s->batch_tokens < s->max_tokens) s->batch_tokens = s->max_tokens;
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
    for (; s->started < n_workers; s->started++)
        if (pthread_create(&s->workers[s->started].th, NULL, worker_main, &s->workers[s->started]))
            goto fail;
    pthread_condattr_destroy(&ca);
    *out = s;
    return EMBD_OK;
fail:
    if (ca_ok) pthread_condattr_destroy(&ca);
    sched_destroy(s);
    return embd_error(EMBD_ERR_NOMEM, "cannot start the scheduler's worker threads");
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

double embd_sched_last_ok_age(embd_sched *s) {
    if (!s) return -1;
    pthread_mutex_lock(&s->mu);
    double t = s->last_ok;
    pthread_mutex_unlock(&s->mu);
    return t > 0 ? embd_now() - t : -1;
}

void embd_sched_queue_depth(embd_sched *s, size_t *requests, size_t *inputs) {
    size_t r = 0, k = 0;
    if (s) {
        pthread_mutex_lock(&s->mu);
        r = s->active + s->blocked;
        k = s->queued + s->blocked_inputs;
        for (const struct sched_req *w = s->wait_head; w; w = w->nxt)
            r++, k += w->n;
        pthread_mutex_unlock(&s->mu);
    }
    if (requests) *requests = r;
    if (inputs) *inputs = k;
}

size_t embd_sched_queued_requests(embd_sched *s) {
    pthread_mutex_lock(&s->mu);
    size_t k = s->active;
    pthread_mutex_unlock(&s->mu);
    return k;
}

/* Prepares req's timing from call; NULL: wait for room forever. */
static const struct embd_sched_call *
call_setup(struct sched_req *req, const struct embd_sched_call *call, struct timespec start) {
    static const struct embd_sched_call defaults = {.queue_timeout_ms = -1};
    if (!call) call = &defaults;
    req->cancel = call->cancel;
    req->has_deadline = call->deadline_ms > 0;
    if (req->has_deadline)
        req->deadline = ts_add_ns(start, (long long)call->deadline_ms * 1000000LL);
    return call;
}

/* Queues req (n > 0) and waits for its result. */
static enum embd_status submit(embd_sched *s, struct sched_req *req,
                               const struct embd_sched_call *call) {
    const size_t n = req->n;
    const struct timespec start = mono_now();
    call = call_setup(req, call, start);
    const int qt = call->queue_timeout_ms;
    const struct timespec room_limit = ts_add_ns(start, qt > 0 ? (long long)qt * 1000000LL : 0);

    pthread_mutex_lock(&s->mu);
    /* Wait for room; a request larger than the queue waits for it to empty. */
    enum embd_status st = EMBD_OK;
    bool blocked = false; /* counted in embd_sched_queue_depth while it waits */
    while (!s->stop) {
        const struct timespec now = mono_now();
        if ((st = given_up(req, now)) != EMBD_OK) break;
        if (s->queued == 0 || s->queued + n <= s->capacity) break;
        if (qt == 0 || (qt > 0 && !ts_before(now, room_limit))) {
            size_t q = s->queued;
            if (blocked) s->blocked--, s->blocked_inputs -= n;
            pthread_mutex_unlock(&s->mu);
            return embd_error(EMBD_ERR_BUSY, "the queue is full (%zu of %zu texts); try later", q,
                              s->capacity);
        }
        if (!blocked) s->blocked++, s->blocked_inputs += n, blocked = true;
        wait_for(s, &s->space, req, qt > 0, room_limit);
    }
    if (blocked) s->blocked--, s->blocked_inputs -= n;
    if (st != EMBD_OK) {
        pthread_mutex_unlock(&s->mu);
        set_given_up(req, st);
        return embd_error(st, "%s", req->err);
    }
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        return embd_error(EMBD_ERR_INVALID_ARG, "the scheduler is shutting down");
    }
    enqueue(s, req);
    while (req->state != REQ_DONE) {
        if (req->state == REQ_QUEUED && (st = given_up(req, mono_now())) != EMBD_OK) {
            set_given_up(req, st); /* not started: out untouched */
            struct sched_req *none = NULL;
            finish(s, req, &none);
            break;
        }
        /* Started: the worker notices a raised flag at the next round. */
        wait_for(s, &s->done, req, false, start);
    }
    pthread_mutex_unlock(&s->mu);
    if (req->st != EMBD_OK) return embd_error(req->st, "%s", req->err);
    return EMBD_OK;
}

/* Fills the parts of a request common to every entry point. */
static void req_init(struct sched_req *r, size_t n, float *out, const struct embd_embed_opts *opts,
                     struct embd_embed_info *info) {
    r->n = n;
    r->out = out;
    r->opts = opts ? *opts : embd_embed_default_opts();
    r->info = info;
    if (info) {
        info->total_tokens = info->bad_input = info->bad_tokens = 0;
        r->ntok = info->n_tokens;
    }
    r->st = EMBD_OK;
}

static enum embd_status check_texts(const embd_sched *s, const char *const *texts, size_t n,
                                    const float *out) {
    if (!s || (n && (!texts || !out)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed: NULL argument");
    for (size_t i = 0; i < n; i++) /* checked here: one NULL must not fail other callers */
        if (!texts[i])
            return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed: text %zu is NULL", i);
    return EMBD_OK;
}

static enum embd_status check_tokens(const embd_sched *s, const int32_t *ids,
                                     const size_t *seq_start, size_t n, const float *out) {
    if (!s || (n && (!ids || !seq_start || !out)))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed_tokens: NULL argument");
    if (n && seq_start[0] != 0)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_embed_tokens: seq_start[0] must be 0");
    for (size_t i = 0; i < n; i++) /* pieces are cut at sequence bounds */
        if (seq_start[i + 1] < seq_start[i])
            return embd_error(EMBD_ERR_INVALID_ARG, "seq_start must not decrease (input %zu)", i);
    return EMBD_OK;
}

enum embd_status embd_sched_embed_opts(embd_sched *s, const char *const *texts, const size_t *lens,
                                       size_t n, float *out, const struct embd_sched_call *call,
                                       const struct embd_embed_opts *opts,
                                       struct embd_embed_info *info) {
    if (info) info->total_tokens = info->bad_input = info->bad_tokens = 0;
    enum embd_status st = check_texts(s, texts, n, out);
    if (st != EMBD_OK || n == 0) return st;
    struct sched_req req = {.texts = texts, .lens = lens};
    req_init(&req, n, out, opts, info);
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
    enum embd_status st = check_tokens(s, ids, seq_start, n, out);
    if (st != EMBD_OK || n == 0) return st;
    struct sched_req req = {.ids = ids, .seq_start = seq_start};
    req_init(&req, n, out, opts, info);
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

/* Queues an owned copy of req without waiting: EMBD_ERR_BUSY when there is
 * no room now. done is called once, later, unless this fails. */
static enum embd_status submit_async(embd_sched *s, const struct sched_req *proto,
                                     const struct embd_sched_call *call, embd_sched_done_fn done,
                                     void *user) {
    if (!done) return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_submit: no done callback");
    struct sched_req *r = embd_malloc(sizeof *r);
    if (!r) return embd_error(EMBD_ERR_NOMEM, "out of memory queueing a request");
    *r = *proto;
    r->done_fn = done;
    r->user = user;
    call_setup(r, call, mono_now());
    pthread_mutex_lock(&s->mu);
    enum embd_status st = given_up(r, mono_now());
    if (st == EMBD_OK && s->stop)
        st = embd_error(EMBD_ERR_INVALID_ARG, "the scheduler is shutting down");
    else if (st != EMBD_OK)
        st = embd_error(st, st == EMBD_ERR_CANCELLED
                                ? "the request was cancelled before it ran"
                                : "the request's deadline passed before it ran");
    const bool full = s->wait_head || (s->queued && s->queued + r->n > s->capacity);
    const int qt = call ? call->queue_timeout_ms : -1;
    if (st == EMBD_OK && full && qt == 0) {
        st = embd_error(EMBD_ERR_BUSY, "the queue is full (%zu of %zu texts); try later", s->queued,
                        s->capacity);
    } else if (st == EMBD_OK && full) { /* waits for room, in arrival order */
        r->room_forever = qt < 0;
        r->room_deadline = ts_add_ns(mono_now(), (long long)qt * 1000000LL);
        r->state = REQ_QUEUED;
        r->nxt = NULL;
        if (s->wait_tail)
            s->wait_tail->nxt = r;
        else
            s->wait_head = r;
        s->wait_tail = r;
        pthread_cond_signal(&s->work);
    } else if (st == EMBD_OK) {
        enqueue(s, r);
    }
    pthread_mutex_unlock(&s->mu);
    if (st != EMBD_OK) embd_free(r);
    return st;
}

enum embd_status embd_sched_submit(embd_sched *s, const char *const *texts, const size_t *lens,
                                   size_t n, float *out, const struct embd_sched_call *call,
                                   const struct embd_embed_opts *opts, struct embd_embed_info *info,
                                   embd_sched_done_fn done, void *user) {
    if (info) info->total_tokens = info->bad_input = info->bad_tokens = 0;
    enum embd_status st = check_texts(s, texts, n, out);
    if (st != EMBD_OK) return st;
    if (n == 0) return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_submit: no inputs");
    struct sched_req req = {.texts = texts, .lens = lens};
    req_init(&req, n, out, opts, info);
    return submit_async(s, &req, call, done, user);
}

enum embd_status embd_sched_submit_tokens(embd_sched *s, const int32_t *ids,
                                          const size_t *seq_start, size_t n, float *out,
                                          const struct embd_sched_call *call,
                                          const struct embd_embed_opts *opts,
                                          struct embd_embed_info *info, embd_sched_done_fn done,
                                          void *user) {
    if (info) info->total_tokens = info->bad_input = info->bad_tokens = 0;
    enum embd_status st = check_tokens(s, ids, seq_start, n, out);
    if (st != EMBD_OK) return st;
    if (n == 0) return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_submit_tokens: no inputs");
    struct sched_req req = {.ids = ids, .seq_start = seq_start};
    req_init(&req, n, out, opts, info);
    return submit_async(s, &req, call, done, user);
}

/* A rerank request: docs scored against query into scores (n). */
static enum embd_status rerank_req(embd_sched *s, const char *query, size_t query_len,
                                   const char *const *docs, const size_t *lens, size_t n,
                                   float *scores, const struct embd_rerank_opts *opts,
                                   struct embd_embed_info *info, struct sched_req *req) {
    if (info) info->total_tokens = info->bad_input = info->bad_tokens = 0;
    enum embd_status st = check_texts(s, docs, n, scores);
    if (st != EMBD_OK) return st;
    if (!query && query_len)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_rerank: NULL query");
    if (!embd_model_is_reranker(embd_ctx_model(s->ctx)))
        return embd_error(EMBD_ERR_UNSUPPORTED,
                          "the model is not a cross-encoder (reranker): it does not score pairs");
    *req = (struct sched_req){.texts = docs,
                              .lens = lens,
                              .rerank = true,
                              .query = query ? query : "",
                              .query_len = query_len};
    req_init(req, n, scores, NULL, info);
    req->ropts = opts ? *opts : embd_rerank_default_opts();
    return EMBD_OK;
}

enum embd_status embd_sched_rerank(embd_sched *s, const char *query, size_t query_len,
                                   const char *const *docs, const size_t *lens, size_t n,
                                   float *scores, const struct embd_sched_call *call,
                                   const struct embd_rerank_opts *opts,
                                   struct embd_embed_info *info) {
    struct sched_req req;
    enum embd_status st = rerank_req(s, query, query_len, docs, lens, n, scores, opts, info, &req);
    if (st != EMBD_OK || n == 0) return st;
    return submit(s, &req, call);
}

enum embd_status embd_sched_submit_rerank(embd_sched *s, const char *query, size_t query_len,
                                          const char *const *docs, const size_t *lens, size_t n,
                                          float *scores, const struct embd_sched_call *call,
                                          const struct embd_rerank_opts *opts,
                                          struct embd_embed_info *info, embd_sched_done_fn done,
                                          void *user) {
    struct sched_req req;
    enum embd_status st = rerank_req(s, query, query_len, docs, lens, n, scores, opts, info, &req);
    if (st != EMBD_OK) return st;
    if (n == 0) return embd_error(EMBD_ERR_INVALID_ARG, "embd_sched_submit_rerank: no inputs");
    return submit_async(s, &req, call, done, user);
}
