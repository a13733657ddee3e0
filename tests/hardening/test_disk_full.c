/* test_disk_full.c — failed writes (disk full) through the embd CLI: `embd
 * index` and `embd embed --cache DIR` run in a child whose file size limit
 * (RLIMIT_FSIZE, SIGXFSZ ignored) makes a write past it fail with EFBIG,
 * as on a full disk. Checks: the store's error is one clear line and the
 * reopened store holds every record committed before, with no torn tail;
 * the disk cache warns, the embedding still succeeds, and a rerun finds
 * every vector cached before (nothing rebuilt or lost). Tiny model; needs
 * EMBD_BIN (set by CTest). */
#include "cli/cli.h"
#include "model/tiny_model.h"
#include "store/store.h"
#include "test.h"
#include "util/util.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *root, *model_dir, *err_path;
static const char *bin;

/* Runs bin with args (NULL-terminated) with a file size limit (0 = none);
 * stderr goes to err_path. Returns the exit status (128 + signal). */
static int run(long long fsize, const char *const *args) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int dn = open("/dev/null", O_WRONLY);
        if (fd < 0 || dn < 0) _exit(120);
        dup2(fd, 2);
        dup2(dn, 1);
        if (fsize > 0) {
            struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
            signal(SIGXFSZ, SIG_IGN);
            if (setrlimit(RLIMIT_FSIZE, &rl)) _exit(121);
        }
        char *argv[32];
        int n = 0;
        argv[n++] = (char *)bin;
        for (; args[n - 1] && n < 31; n++)
            argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(bin, argv);
        _exit(122);
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

static char *read_err(void) {
    char *text = NULL;
    size_t len = 0;
    if (embd_read_file(err_path, 1 << 20, &text, &len) != EMBD_OK) return strdup("");
    char *copy = strdup(text);
    embd_free(text);
    return copy;
}

static long long file_size(const char *dir, const char *name) {
    char *p = path_cat(dir, name);
    struct stat sb;
    long long r = stat(p, &sb) == 0 ? (long long)sb.st_size : -1;
    free(p);
    return r;
}

/* A word of letters a..z (the tiny vocabulary) that differs for each i. */
static void word(char *buf, size_t cap, const char *tag, int i) {
    snprintf(buf, cap, "%s %c%c%c words about things", tag, 'a' + i % 26, 'a' + (i / 26) % 26,
             'a' + (i / 676) % 26);
}

/* Writes n JSONL documents with ids TAG<i>. */
static char *write_docs(const char *tag, int n) {
    char name[32];
    snprintf(name, sizeof name, "%s.jsonl", tag);
    char *path = path_cat(root, name);
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < n; i++) {
        char w[96];
        word(w, sizeof w, tag, i);
        fprintf(f, "{\"id\": \"%s%d\", \"text\": \"%s\"}\n", tag, i, w);
    }
    if (f) fclose(f);
    return path;
}

/* Whether the store holds ids TAG0 .. TAG<n-1>; returns how many. */
static int count_ids(embd_store *s, const char *tag, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "%s%d", tag, i);
        const float *v;
        if (embd_store_get(s, id, strlen(id), &v) == EMBD_OK) k++;
    }
    return k;
}

/* b spans three of embd index's chunks, so that a limit can fall after the
 * first. */
#define NB (3 * CLI_INDEX_CHUNK_TEXTS)

static void test_store(const embd_model *m) {
    char *store = path_cat(root, "store");
    char *a = write_docs("a", 200), *b = write_docs("b", NB);
    const char *idx_a[] = {"index", "-q", "-m", model_dir, "--store", store, "-i", a, NULL};
    CHECK_EQ_INT(run(0, idx_a), 0);
    long long s0 = file_size(store, "records.log");
    CHECK(s0 > 0);

    struct embd_store_params p = {.dim = embd_model_dim(m),
                                  .fingerprint = embd_model_fingerprint(m)};
    struct embd_store_open_info info;
    const char *idx_b[] = {"index", "-q", "-m", model_dir, "--store", store, "-i", b, NULL};

    /* No room for even the first chunk of b. */
    int rc = run(s0 + 500, idx_b);
    char *err = read_err();
    CHECK_MSG(rc != 0, "index past the size limit exited 0");
    CHECK_MSG(strstr(err, "embd: ") && strstr(err, "File too large"), "stderr: %s", err);
    free(err);
    CHECK_EQ_INT(file_size(store, "records.log"), s0);
    embd_store *s = NULL;
    CHECK(embd_store_open(store, &p, &s, &info) == EMBD_OK);
    if (s) {
        CHECK_EQ_INT(info.dropped_bytes, 0);
        CHECK_EQ_INT(embd_store_count(s), 200);
        CHECK_EQ_INT(count_ids(s, "a", 200), 200);
        embd_store_close(s);
    }

    /* Room for about one and a half chunks: what was committed stays. */
    long long per_doc = s0 / 200;
    rc = run(s0 + per_doc * (CLI_INDEX_CHUNK_TEXTS * 3 / 2), idx_b);
    err = read_err();
    CHECK_MSG(rc != 0, "index past the size limit exited 0");
    CHECK_MSG(strstr(err, "File too large") != NULL, "stderr: %s", err);
    free(err);
    s = NULL;
    CHECK(embd_store_open(store, &p, &s, &info) == EMBD_OK);
    if (s) {
        int nb = count_ids(s, "b", NB);
        CHECK_EQ_INT(info.dropped_bytes, 0);
        CHECK_EQ_INT(count_ids(s, "a", 200), 200);
        CHECK_MSG(nb > 0 && nb < NB, "%d of b committed", nb);
        CHECK_EQ_INT(count_ids(s, "b", nb), nb); /* the first nb, in order */
        CHECK_EQ_INT(embd_store_count(s), 200 + nb);
        printf("store: a size limit stopped embd index after %d of %d documents\n", nb, NB);
        embd_store_close(s);
    }

    /* Without the limit, the same run completes on top. */
    CHECK_EQ_INT(run(0, idx_b), 0);
    s = NULL;
    CHECK(embd_store_open(store, &p, &s, &info) == EMBD_OK);
    if (s) {
        CHECK_EQ_INT(embd_store_count(s), 200 + NB);
        embd_store_close(s);
    }
    free(a);
    free(b);
    free(store);
}

/* Writes n plain text lines. */
static char *write_lines(const char *tag, int n) {
    char name[32];
    snprintf(name, sizeof name, "%s.txt", tag);
    char *path = path_cat(root, name);
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < n; i++) {
        char w[96];
        word(w, sizeof w, tag, i);
        fprintf(f, "%s\n", w);
    }
    if (f) fclose(f);
    return path;
}

/* (hits, misses) from the summary line "... cache: H hits, M misses ...". */
static int summary(const char *err, long *hits, long *misses) {
    const char *c = strstr(err, "cache: ");
    return c && sscanf(c, "cache: %ld hits, %ld misses", hits, misses) == 2;
}

static void test_cache(void) {
    char *cache = path_cat(root, "cache");
    char *t1 = write_lines("c", 300), *t2 = write_lines("d", 3000);
    const char *emb1[] = {"embed", "-m", model_dir, "--cache",   cache,
                          "-i",    t1,   "-o",      "/dev/null", NULL};
    const char *emb2[] = {"embed", "-m", model_dir, "--cache",   cache,
                          "-i",    t2,   "-o",      "/dev/null", NULL};
    CHECK_EQ_INT(run(0, emb1), 0);
    long long s0 = file_size(cache, "data.mdb");
    CHECK(s0 > 0);

    /* The cache cannot grow: the embedding still succeeds, with a warning. */
    int rc = run(s0, emb2);
    char *err = read_err();
    CHECK_MSG(rc == 0, "embed with a full disk cache exited %d: %s", rc, err);
    CHECK_MSG(strstr(err, "cache") && strstr(err, "File too large"), "stderr: %s", err);
    free(err);

    /* Everything cached before is still there, nothing rebuilt. */
    rc = run(0, emb1);
    err = read_err();
    long hits = -1, misses = -1;
    CHECK_EQ_INT(rc, 0);
    CHECK_MSG(summary(err, &hits, &misses), "no cache summary: %s", err);
    CHECK_EQ_INT(hits, 300);
    CHECK_EQ_INT(misses, 0);
    CHECK_MSG(!strstr(err, "rebuild"), "stderr: %s", err);
    free(err);
    free(t1);
    free(t2);
    free(cache);
}

int main(void) {
    bin = getenv("EMBD_BIN");
    if (!bin || access(bin, X_OK)) TEST_SKIP("EMBD_BIN is not set to the embd binary");
    root = make_temp_dir();
    if (!root) TEST_SKIP("no temporary directory");
    err_path = path_cat(root, "stderr.txt");
    tiny_cfg cfg = tiny_default_cfg();
    tt_file f = tt_build(&cfg, "F32", "", false, 3);
    model_dir = path_cat(root, "model");
    CHECK(tiny_write_dir(model_dir, &cfg, &f) == 0);
    tt_free(&f);
    embd_model *m = NULL;
    CHECK(embd_model_load(model_dir, embd_model_default_params(), &m) == EMBD_OK);
    if (m) {
        test_store(m);
        test_cache();
        embd_model_free(m);
    }
    rm_rf(root);
    free(root);
    free(model_dir);
    free(err_path);
    return test_summary("hardening_disk_full");
}
