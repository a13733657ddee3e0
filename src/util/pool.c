/* pool.c — a context's team of CPU threads (pool.h).
 *
 * One run: the caller stores the work and the count of workers still to
 * finish (pending), then bumps the generation (gen). Each worker waits for gen
 * to change (spinning for spin_ns, then asleep on a futex), runs its part,
 * and decrements pending; the caller runs tid 0 and then waits the same way
 * for pending to reach 0. Sleepers are counted so that a run whose workers
 * are all still spinning makes no system call; the count and the word it
 * guards are each written then the other read, in sequentially consistent
 * order, so that either the waker sees the sleeper or the sleeper sees the
 * new value (and the futex call, which compares the word again, returns). */
#include "util/pool.h"

#include "util/log.h"
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct worker {
    embd_pool *p;
    int tid;
};

struct embd_pool {
    int n;              /* threads in a run, the caller's included */
    int started;        /* workers started */
    pthread_t *th;      /* (n - 1) */
    struct worker *w;   /* (n - 1) */
    pthread_mutex_t mu; /* one run at a time */
    embd_pool_fn fn;    /* the current run's work */
    void *arg;
    _Atomic uint32_t gen;     /* bumped to start a run, or to stop */
    _Atomic uint32_t pending; /* workers still in the current run */
    atomic_int sleepers;      /* workers asleep (or going to sleep) on gen */
    atomic_int caller_asleep; /* the caller asleep (or going to sleep) on pending */
    atomic_bool stop;
    long spin_ns;
    unsigned fork_gen; /* fork_count when the workers started */
};

/* Bumped in the child after each fork(): the pools created before it have no
 * workers there. */
static atomic_uint fork_count;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void after_fork_child(void) {
    atomic_fetch_add(&fork_count, 1);
}

static void fork_hook(void) {
    pthread_atfork(NULL, NULL, after_fork_child);
}

static void futex_wait(_Atomic uint32_t *w, uint32_t val) {
    /* returns at once if *w != val; EINTR and spurious wakes: the callers loop */
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w, int n) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Spins while (*w == val) == eq, for at most spin_ns; whether that ended. */
static bool spin_while(_Atomic uint32_t *w, uint32_t val, bool eq, long spin_ns) {
    if ((atomic_load_explicit(w, memory_order_acquire) == val) != eq) return true;
    if (spin_ns <= 0) return false;
    const long end = now_ns() + spin_ns;
    for (unsigned i = 1;; i++) {
        cpu_relax();
        if ((atomic_load_explicit(w, memory_order_acquire) == val) != eq) return true;
        if ((i & 31) == 0 && now_ns() >= end) return false;
    }
}

/* Waits until *w != val: spins, then sleeps, counted in *asleep so that the
 * writer of *w knows to wake it. Every way out is an acquiring load that saw
 * the new value (what was written before it is visible). */
static void wait_change(_Atomic uint32_t *w, uint32_t val, long spin_ns, atomic_int *asleep) {
    if (spin_while(w, val, true, spin_ns)) return;
    for (;;) {
        atomic_fetch_add(asleep, 1);
        if (atomic_load(w) != val) {
            atomic_fetch_sub(asleep, 1);
            break;
        }
        futex_wait(w, val);
        atomic_fetch_sub(asleep, 1);
        if (atomic_load_explicit(w, memory_order_acquire) != val) break;
    }
}

/* Waits until *w == 0: spins, then sleeps with *asleep set so that the thread
 * that makes it 0 wakes this one. */
static void wait_zero(_Atomic uint32_t *w, long spin_ns, atomic_int *asleep) {
    if (!spin_while(w, 0, false, spin_ns)) {
        for (;;) {
            atomic_store(asleep, 1);
            const uint32_t v = atomic_load(w);
            if (v == 0) break;
            futex_wait(w, v);
        }
        atomic_store(asleep, 0);
    }
}

static void *worker_main(void *a) {
    const struct worker *wk = a;
    embd_pool *p = wk->p;
    uint32_t seen = 0;
    for (;;) {
        wait_change(&p->gen, seen, p->spin_ns, &p->sleepers);
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        p->fn(p->arg, wk->tid, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_seq_cst) == 1 &&
            atomic_load(&p->caller_asleep))
            futex_wake(&p->pending, 1);
    }
}

int embd_pool_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int spin_us_env = POOL_SPIN_US_DEFAULT;
static pthread_once_t spin_once = PTHREAD_ONCE_INIT;

static void spin_us_read(void) {
    const char *s = getenv("EMBD_CPU_SPIN_US");
    if (!s || !*s) return;
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (*end || errno || v < 0 || v > POOL_SPIN_US_MAX)
        embd_log(EMBD_LOG_WARN, "config",
                 "EMBD_CPU_SPIN_US=%s is not a number of microseconds from 0 to %d; using %d", s,
                 POOL_SPIN_US_MAX, POOL_SPIN_US_DEFAULT);
    else
        spin_us_env = (int)v;
}

int embd_pool_spin_us(void) {
    pthread_once(&spin_once, spin_us_read);
    return spin_us_env;
}

static void pool_stop(embd_pool *p) {
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen, INT_MAX);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->th[i], NULL);
    p->started = 0;
}

embd_pool *embd_pool_new(int n_threads, int spin_us) {
    if (n_threads < 1) n_threads = 1;
    if (spin_us < 0) spin_us = embd_pool_spin_us();
    if (spin_us > POOL_SPIN_US_MAX) spin_us = POOL_SPIN_US_MAX;
    pthread_once(&fork_once, fork_hook);
    embd_pool *p = embd_calloc(1, sizeof *p);
    if (!p) {
        embd_error(EMBD_ERR_NOMEM, "out of memory creating a thread pool");
        return NULL;
    }
    p->n = n_threads;
    p->spin_ns = 1000L * spin_us;
    p->fork_gen = atomic_load(&fork_count);
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        embd_free(p);
        embd_error(EMBD_ERR_NOMEM, "cannot create a thread pool's lock");
        return NULL;
    }
    if (n_threads == 1) return p;
    p->th = embd_calloc((size_t)n_threads - 1, sizeof *p->th);
    p->w = embd_calloc((size_t)n_threads - 1, sizeof *p->w);
    if (!p->th || !p->w) goto fail;
    /* the workers block every signal: they belong to the threads that call */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    for (; p->started < n_threads - 1; p->started++) {
        p->w[p->started] = (struct worker){.p = p, .tid = p->started + 1};
        err = pthread_create(&p->th[p->started], NULL, worker_main, &p->w[p->started]);
        if (err) break;
        pthread_setname_np(p->th[p->started], "embd-cpu");
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        embd_error(EMBD_ERR_NOMEM, "cannot start %d CPU threads (started %d): %s", n_threads - 1,
                   p->started, strerror(err));
        pool_stop(p);
        pthread_mutex_destroy(&p->mu);
        embd_free(p->th);
        embd_free(p->w);
        embd_free(p);
        return NULL;
    }
    return p;
fail:
    pthread_mutex_destroy(&p->mu);
    embd_free(p->th);
    embd_free(p->w);
    embd_free(p);
    embd_error(EMBD_ERR_NOMEM, "out of memory creating a thread pool");
    return NULL;
}

void embd_pool_free(embd_pool *p) {
    if (!p) return;
    if (atomic_load(&fork_count) == p->fork_gen) pool_stop(p);
    pthread_mutex_destroy(&p->mu);
    embd_free(p->th);
    embd_free(p->w);
    embd_free(p);
}

int embd_pool_threads(const embd_pool *p) {
    if (!p || atomic_load_explicit(&fork_count, memory_order_relaxed) != p->fork_gen) return 1;
    return p->n;
}

void embd_pool_run(embd_pool *p, embd_pool_fn fn, void *arg) {
    if (embd_pool_threads(p) == 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* publishes fn, arg and pending */
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen, INT_MAX);
    fn(arg, 0, p->n);
    wait_zero(&p->pending, p->spin_ns, &p->caller_asleep);
    pthread_mutex_unlock(&p->mu);
}
