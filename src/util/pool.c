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
#include <stdio.h>
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

/* The first line of file path into buf; false if it cannot be read. */
static bool read_line(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "re");
    if (!f) return false;
    const bool ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    return ok;
}

/* CPUs (rounded up) of a quota of `quota` per `period`; 0 when there is no
 * quota (v2 "max", v1 -1) or it cannot be read. */
static int quota_cpus(long long quota, long long period) {
    if (quota <= 0 || period <= 0) return 0;
    const long long n = (quota + period - 1) / period;
    return n > 4096 ? 4096 : (int)n;
}

/* The smallest quota of dir and its parents down to root (dir starts with
 * root), read by `read` from each: 0 if none has one. */
static int quota_up(char *dir, size_t root_len, int (*read)(const char *dir)) {
    int best = 0;
    for (;;) {
        const int n = read(dir);
        if (n > 0 && (best == 0 || n < best)) best = n;
        if (strlen(dir) <= root_len) break;
        char *slash = strrchr(dir + root_len, '/');
        if (!slash) break;
        *slash = '\0';
    }
    return best;
}

static int read_v2(const char *dir) {
    char path[4200], line[128];
    snprintf(path, sizeof path, "%s/cpu.max", dir);
    if (!read_line(path, line, sizeof line)) return 0;
    long long quota = 0, period = 0;
    if (!strncmp(line, "max", 3) || sscanf(line, "%lld %lld", &quota, &period) != 2) return 0;
    return quota_cpus(quota, period);
}

static int read_v1(const char *dir) {
    char path[4200], line[64];
    long long quota = 0, period = 0;
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    if (!read_line(path, line, sizeof line) || sscanf(line, "%lld", &quota) != 1) return 0;
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    if (!read_line(path, line, sizeof line) || sscanf(line, "%lld", &period) != 1) return 0;
    return quota_cpus(quota, period);
}

/* The quota in dir = base + path and its parents down to base; where that
 * folder is not there (a cgroup namespace shows "/" as the path, or a
 * container mounts its own cgroup as the root), base itself. */
static int quota_at(const char *base, const char *path, int (*read)(const char *dir)) {
    char dir[4096];
    const size_t root_len = strlen(base), path_len = strcmp(path, "/") ? strlen(path) : 0;
    if (root_len + path_len + 1 > sizeof dir) return 0;
    memcpy(dir, base, root_len);
    memcpy(dir + root_len, path, path_len);
    dir[root_len + path_len] = '\0';
    if (access(dir, F_OK) != 0) dir[root_len] = '\0';
    return quota_up(dir, root_len, read);
}

int embd_pool_cgroup_cpus(const char *proc_cgroup, const char *root) {
    FILE *f = fopen(proc_cgroup, "re");
    if (!f) return 0;
    char line[4096];
    int best = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        /* hierarchy-ID:controllers:path */
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = '\0';
        const char *ctrls = c1 + 1, *path = c2 + 1;
        char base[4096];
        int n = 0;
        if (!strcmp(line, "0") && !*ctrls) { /* v2 */
            snprintf(base, sizeof base, "%s", root);
            n = quota_at(base, path, read_v2);
            if (!n) { /* a hybrid host: v2 under "unified" */
                snprintf(base, sizeof base, "%s/unified", root);
                if (access(base, F_OK) == 0) n = quota_at(base, path, read_v2);
            }
        } else { /* v1: the hierarchy whose controllers include cpu */
            bool cpu = false;
            for (char *save = NULL, *t = strtok_r((char *)ctrls, ",", &save); t;
                 t = strtok_r(NULL, ",", &save))
                cpu = cpu || !strcmp(t, "cpu");
            if (!cpu) continue;
            static const char *const mounts[] = {"cpu,cpuacct", "cpu", "cpuacct,cpu"};
            for (size_t i = 0; i < sizeof mounts / sizeof *mounts && !n; i++) {
                snprintf(base, sizeof base, "%s/%s", root, mounts[i]);
                if (access(base, F_OK) == 0) n = quota_at(base, path, read_v1);
            }
        }
        if (n > 0 && (best == 0 || n < best)) best = n;
    }
    fclose(f);
    return best;
}

int embd_pool_affinity_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    const long on = sysconf(_SC_NPROCESSORS_ONLN);
    return on > 0 ? (int)on : 1;
}

int embd_pool_cpus(void) {
    const int n = embd_pool_affinity_cpus();
    const int quota = embd_pool_cgroup_cpus("/proc/self/cgroup", "/sys/fs/cgroup");
    return quota > 0 && quota < n ? quota : n;
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
    if (!p || pthread_mutex_init(&p->mu, NULL) != 0) {
        embd_free(p);
        embd_error(EMBD_ERR_NOMEM, "out of memory creating a thread pool");
        return NULL;
    }
    p->n = n_threads;
    p->spin_ns = 1000L * spin_us;
    p->fork_gen = atomic_load(&fork_count);
    if (n_threads == 1) return p;
    p->th = embd_calloc((size_t)n_threads - 1, sizeof *p->th);
    p->w = embd_calloc((size_t)n_threads - 1, sizeof *p->w);
    if (!p->th || !p->w) {
        embd_pool_free(p);
        embd_error(EMBD_ERR_NOMEM, "out of memory creating a thread pool");
        return NULL;
    }
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
        const int started = p->started;
        embd_pool_free(p); /* joins the ones started */
        embd_error(EMBD_ERR_NOMEM, "cannot start %d CPU threads (started %d): %s", n_threads - 1,
                   started, strerror(err));
        return NULL;
    }
    return p;
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
