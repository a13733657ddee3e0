/* pool.h — the team of threads that runs a context's CPU work (the CPU
 * backend's GEMMs, attention and element-wise loops, and the engine's
 * tokenization), in place of OpenMP.
 *
 * Why not OpenMP: libgomp reads how its idle threads wait (spin, then sleep)
 * once, from the environment, when it is loaded; its default spins for
 * hundreds of microseconds after each parallel region, which on a shared
 * machine takes the core that a descheduled sibling, the server's scheduler
 * or its HTTP threads need (BENCHMARKS.md, "OpenMP waiting in the CLI and
 * the server"), and a library cannot change it for its callers. It also
 * keeps one team per calling thread, so a context called from a new thread
 * started a new team. This pool belongs to its context, whichever thread
 * calls it, and its threads spin for a short, fixed time (EMBD_CPU_SPIN_US,
 * default POOL_SPIN_US_DEFAULT) before they sleep on a futex.
 *
 * A pool of n threads is the calling thread (tid 0) and n - 1 workers. One
 * run at a time (embd_pool_run serialises callers). After fork() the child
 * has no workers: its runs go on the calling thread alone (nth 1). */
#ifndef EMBD_UTIL_POOL_H
#define EMBD_UTIL_POOL_H

#include <stdatomic.h>

typedef struct embd_pool embd_pool;

/* The work of one thread in a run: tid in [0, nth), nth the team's size. */
typedef void (*embd_pool_fn)(void *arg, int tid, int nth);

/* A pool of n_threads (>= 1; 1 starts no thread) whose idle threads spin
 * for spin_us microseconds before they sleep (< 0: embd_pool_spin_us()).
 * NULL with the error set (embd_last_error) when threads cannot be started. */
embd_pool *embd_pool_new(int n_threads, int spin_us);

/* Stops and joins the workers. NULL is a no-op. */
void embd_pool_free(embd_pool *p);

/* The number of threads the next run will use: the pool's size, 1 in a
 * forked child (or for a NULL pool). */
int embd_pool_threads(const embd_pool *p);

/* Runs fn(arg, tid, nth) on every thread of the team, the caller as tid 0,
 * and returns when all have returned; what they wrote is then visible to the
 * caller. A NULL pool runs fn(arg, 0, 1). */
void embd_pool_run(embd_pool *p, embd_pool_fn fn, void *arg);

/* The CPUs this process may use, at least 1: those its affinity mask allows
 * (else the online ones), capped by the CPU quota of its cgroup (a
 * container's --cpus, a Kubernetes CPU limit) rounded up. The default
 * number of threads. */
int embd_pool_cpus(void);

/* The CPUs the affinity mask allows (else the online ones), at least 1. */
int embd_pool_affinity_cpus(void);

/* The CPU quota, in whole CPUs rounded up, of the cgroup that
 * proc_cgroup (the format of /proc/self/cgroup) names, read under root
 * (the cgroup mount, /sys/fs/cgroup): cgroup v2's cpu.max, or v1's
 * cpu.cfs_quota_us / cpu.cfs_period_us, the smallest of the cgroup and its
 * parents; 0 when there is none or it cannot be read. */
int embd_pool_cgroup_cpus(const char *proc_cgroup, const char *root);

/* How long an idle thread spins before it sleeps, in microseconds:
 * EMBD_CPU_SPIN_US (0 to POOL_SPIN_US_MAX; read once, a bad value logged and
 * ignored) or the default. */
int embd_pool_spin_us(void);

/* The default spin: about what GOMP_SPINCOUNT=1000 gave, which measured best
 * (BENCHMARKS.md). */
#define POOL_SPIN_US_DEFAULT 25
#define POOL_SPIN_US_MAX 1000000

/* [*b, *e): thread tid's share of [0, n) split evenly in nth parts. */
static inline void embd_pool_share(int n, int tid, int nth, int *b, int *e) {
    *b = (int)((long long)n * tid / nth);
    *e = (int)((long long)n * (tid + 1) / nth);
}

/* The next chunk of a loop handed out dynamically: the start of `chunk`
 * items from the counter (shared by the team, 0 before the run); >= the
 * loop's end when none is left. */
static inline int embd_pool_next(atomic_int *next, int chunk) {
    return atomic_fetch_add_explicit(next, chunk, memory_order_relaxed);
}

#endif
