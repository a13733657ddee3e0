/* test_pool — the CPU thread pool (src/util/pool.c) that runs the CPU
 * backend and the engine's tokenization:
 * - every thread of the team runs each run exactly once, with its own tid
 *   and the team's size, for pools of 1 to 8 threads (more than the cores);
 * - what the workers wrote is visible to the caller when the run returns;
 * - a loop handed out dynamically covers each item exactly once;
 * - runs back to back with the threads spinning, and with every thread
 *   asleep between runs (spin 0, and pauses longer than the spin);
 * - several threads calling one pool at once are served one run at a time;
 * - a NULL pool runs on the caller; a forked child runs on its caller alone
 *   (the workers are the parent's), and the parent's pool still works.
 * Also built under ThreadSanitizer (scripts/test's tsan stage). */
#include "util/pool.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_T 8
#define ITEMS 10007

struct job {
    atomic_int seen[MAX_T]; /* runs each tid took part in */
    atomic_int bad_nth;
    int want_nth;
    atomic_int next;
    int hits[ITEMS]; /* item i taken by exactly one thread: plain writes */
    long part[MAX_T];
};

static void count_fn(void *a, int tid, int nth) {
    struct job *j = a;
    if (nth != j->want_nth || tid < 0 || tid >= nth)
        atomic_fetch_add(&j->bad_nth, 1);
    else
        atomic_fetch_add(&j->seen[tid], 1);
    /* plain writes to this thread's slot: the caller reads them after run */
    j->part[tid] = 1000L * tid + nth;
}

static void dyn_fn(void *a, int tid, int nth) {
    (void)tid, (void)nth;
    struct job *j = a;
    for (int b; (b = embd_pool_next(&j->next, 7)) < ITEMS;)
        for (int i = b; i < b + 7 && i < ITEMS; i++)
            j->hits[i]++;
}

static void check_runs(embd_pool *p, int n, int runs, int pause_us) {
    struct job *j = calloc(1, sizeof *j);
    j->want_nth = n;
    for (int r = 0; r < runs; r++) {
        memset(j->part, 0, sizeof j->part);
        embd_pool_run(p, count_fn, j);
        for (int t = 0; t < n; t++)
            CHECK_MSG(j->part[t] == 1000L * t + n, "n %d run %d tid %d wrote %ld", n, r, t,
                      j->part[t]);
        if (pause_us) usleep((useconds_t)pause_us);
    }
    CHECK_EQ_INT(atomic_load(&j->bad_nth), 0);
    for (int t = 0; t < n; t++)
        CHECK_MSG(atomic_load(&j->seen[t]) == runs, "n %d tid %d ran %d of %d runs", n, t,
                  atomic_load(&j->seen[t]), runs);
    for (int r = 0; r < 20; r++) {
        memset(j->hits, 0, sizeof j->hits);
        atomic_store(&j->next, 0);
        embd_pool_run(p, dyn_fn, j);
        int wrong = 0;
        for (int i = 0; i < ITEMS; i++)
            wrong += j->hits[i] != 1;
        CHECK_MSG(wrong == 0, "n %d: %d items not taken exactly once", n, wrong);
    }
    free(j);
}

struct caller {
    embd_pool *p;
    int n, runs;
    atomic_int *bad;
};

static void *caller_main(void *a) {
    struct caller *c = a;
    struct job *j = calloc(1, sizeof *j);
    j->want_nth = c->n;
    for (int r = 0; r < c->runs; r++) {
        embd_pool_run(c->p, count_fn, j);
        atomic_store(&j->next, 0);
        memset(j->hits, 0, sizeof j->hits);
        embd_pool_run(c->p, dyn_fn, j);
        for (int i = 0; i < ITEMS; i++)
            if (j->hits[i] != 1) {
                atomic_fetch_add(c->bad, 1);
                break;
            }
    }
    for (int t = 0; t < c->n; t++)
        if (atomic_load(&j->seen[t]) != c->runs) atomic_fetch_add(c->bad, 1);
    if (atomic_load(&j->bad_nth)) atomic_fetch_add(c->bad, 1);
    free(j);
    return NULL;
}

int main(void) {
    /* NULL: the caller alone */
    {
        struct job *j = calloc(1, sizeof *j);
        j->want_nth = 1;
        CHECK_EQ_INT(embd_pool_threads(NULL), 1);
        embd_pool_run(NULL, count_fn, j);
        CHECK_EQ_INT(atomic_load(&j->seen[0]), 1);
        free(j);
    }
    CHECK(embd_pool_cpus() >= 1);
    CHECK(embd_pool_spin_us() >= 0);

    for (int n = 1; n <= MAX_T; n++) {
        embd_pool *p = embd_pool_new(n, -1);
        CHECK(p != NULL);
        if (!p) continue;
        CHECK_EQ_INT(embd_pool_threads(p), n);
        check_runs(p, n, 2000, 0);
        check_runs(p, n, 20, 2000); /* 2 ms between runs: the workers sleep */
        embd_pool_free(p);
    }
    /* spin 0: every wait sleeps at once */
    for (int n = 2; n <= 4; n++) {
        embd_pool *p = embd_pool_new(n, 0);
        CHECK(p != NULL);
        if (!p) continue;
        check_runs(p, n, 500, 0);
        embd_pool_free(p);
    }

    /* four threads calling one pool at once */
    {
        embd_pool *p = embd_pool_new(3, -1);
        CHECK(p != NULL);
        atomic_int bad = 0;
        struct caller c = {.p = p, .n = 3, .runs = 300, .bad = &bad};
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            CHECK(pthread_create(&th[i], NULL, caller_main, &c) == 0);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        CHECK_EQ_INT(atomic_load(&bad), 0);
        embd_pool_free(p);
    }

    /* a pool created and freed many times (threads started and joined) */
    for (int i = 0; i < 200; i++) {
        embd_pool *p = embd_pool_new(1 + i % 4, i % 2 ? 0 : -1);
        if (i % 3) check_runs(p, 1 + i % 4, 3, 0);
        embd_pool_free(p);
    }

    /* fork: the child runs on its caller alone; the parent's pool goes on */
    {
        embd_pool *p = embd_pool_new(4, -1);
        check_runs(p, 4, 10, 0);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            struct job *j = calloc(1, sizeof *j);
            j->want_nth = 1;
            int ok = embd_pool_threads(p) == 1;
            embd_pool_run(p, count_fn, j);
            ok = ok && atomic_load(&j->seen[0]) == 1 && atomic_load(&j->bad_nth) == 0;
            embd_pool_free(p);
            _exit(ok ? 0 : 1);
        }
        int status = -1;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
        check_runs(p, 4, 10, 0);
        embd_pool_free(p);
    }
    return test_summary("engine_pool");
}
