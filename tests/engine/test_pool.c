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
 *   (the workers are the parent's), and the parent's pool still works;
 * - the cgroup CPU quota that caps the default thread count, read from
 *   cgroup v2 and v1 trees written here (the smallest of the cgroup and its
 *   parents, rounded up; none, unreadable or malformed: no cap).
 * Also built under ThreadSanitizer (scripts/test's tsan stage). */
#include "util/pool.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static char tmp_root[64];

static void put(const char *rel, const char *text) {
    test_put_file(tmp_root, rel, text);
}

/* The quota read for /proc/self/cgroup's `lines` in the tree `case_dir`. */
static int quota(const char *case_dir, const char *lines) {
    char rel[128], proc[512], root[512];
    snprintf(rel, sizeof rel, "%s/proc-cgroup", case_dir);
    put(rel, lines);
    snprintf(proc, sizeof proc, "%s/%s", tmp_root, rel);
    snprintf(root, sizeof root, "%s/%s/fs", tmp_root, case_dir);
    mkdir(root, 0700);
    return embd_pool_cgroup_cpus(proc, root);
}

static void test_cgroup(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/embd-pool-XXXXXX");
    if (!mkdtemp(tmp_root)) {
        CHECK(!"mkdtemp");
        return;
    }
    /* v2: the smallest of the cgroup and its parents, rounded up */
    put("v2/fs/a/b/cpu.max", "max 100000\n");
    put("v2/fs/a/cpu.max", "250000 100000\n");
    CHECK_EQ_INT(quota("v2", "0::/a/b\n"), 3);
    put("v2/fs/a/b/cpu.max", "50000 100000\n");
    CHECK_EQ_INT(quota("v2", "0::/a/b\n"), 1);
    /* one cpu.max at the mount's root: a namespace's "/" (the container's
     * own cgroup mounted as the root), a path this mount does not show
     * (the mount's root then), none, malformed */
    static const struct {
        const char *name, *cpu_max, *proc;
        int want;
    } roots[] = {
        {"v2ns", "200000 100000\n", "0::/\n", 2},
        {"v2hidden", "100000 100000\n", "0::/kubepods/pod1/abc\n", 1},
        {"v2none", "max 100000\n", "0::/\n", 0},
        {"v2bad", "lots\n", "0::/\n", 0},
        {"v2zero", "100000 0\n", "0::/\n", 0},
    };
    for (size_t i = 0; i < sizeof roots / sizeof *roots; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "%s/fs/cpu.max", roots[i].name);
        put(rel, roots[i].cpu_max);
        CHECK_MSG(quota(roots[i].name, roots[i].proc) == roots[i].want, "%s", roots[i].name);
    }
    CHECK_EQ_INT(quota("v2empty", "0::/\n"), 0);
    CHECK_EQ_INT(embd_pool_cgroup_cpus("/nonexistent/cgroup", "/nonexistent"), 0);
    /* v1: the hierarchy holding the cpu controller, under its usual mounts */
    put("v1/fs/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n");
    put("v1/fs/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
    put("v1/fs/cpu,cpuacct/docker/cpu.cfs_quota_us", "-1\n");
    put("v1/fs/cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n");
    CHECK_EQ_INT(quota("v1", "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"), 1);
    put("v1cpu/fs/cpu/k/cpu.cfs_quota_us", "300000\n");
    put("v1cpu/fs/cpu/k/cpu.cfs_period_us", "100000\n");
    CHECK_EQ_INT(quota("v1cpu", "2:cpuacct:/\n1:cpu:/k\n"), 3);
    put("v1none/fs/cpu/cpu.cfs_quota_us", "-1\n");
    put("v1none/fs/cpu/cpu.cfs_period_us", "100000\n");
    CHECK_EQ_INT(quota("v1none", "1:cpu:/\n"), 0);
    /* hybrid: v1 without a quota, v2 (under "unified") with one */
    put("hybrid/fs/cpu/cpu.cfs_quota_us", "-1\n");
    put("hybrid/fs/cpu/cpu.cfs_period_us", "100000\n");
    put("hybrid/fs/unified/cpu.max", "150000 100000\n");
    CHECK_EQ_INT(quota("hybrid", "1:cpu:/\n0::/\n"), 2);
    /* a cpuacct-only hierarchy is not the cpu controller */
    put("v1acct/fs/cpuacct/x/cpu.cfs_quota_us", "100000\n");
    put("v1acct/fs/cpuacct/x/cpu.cfs_period_us", "100000\n");
    CHECK_EQ_INT(quota("v1acct", "2:cpuacct:/x\n"), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    CHECK(system(cmd) == 0);
    /* this machine: a count within what the affinity mask allows */
    CHECK(embd_pool_cpus() >= 1 && embd_pool_cpus() <= embd_pool_affinity_cpus());
}

int main(void) {
    test_cgroup();
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
