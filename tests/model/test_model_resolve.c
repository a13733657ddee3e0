/* test_model_resolve — embd_model_resolve on a Hugging Face cache built in a
 * temporary folder: ORG/NAME follows refs/main; ORG/NAME@REV a branch or tag
 * (refs/REV) or a commit (snapshots/HASH); a revision that is not there, or
 * not a revision, is an error naming it; a folder always wins over a name;
 * cache_dir and its plain ORG/NAME folder. */
#include "embd.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static void put(const char *rel, const char *text) {
    test_put_file(root, rel, text);
}

/* resolves name; returns the path after root ("" on error) */
static const char *resolve(const char *name, const char *cache_dir, enum embd_status *st) {
    static char buf[1024];
    size_t need = 0;
    *st = embd_model_resolve(name, cache_dir, buf, sizeof buf, &need);
    if (*st != EMBD_OK) return "";
    size_t n = strlen(root);
    return strncmp(buf, root, n) == 0 ? buf + n : buf;
}

#define C1 "1111111111111111111111111111111111111111"
#define C2 "2222222222222222222222222222222222222222"
#define C3 "3333333333333333333333333333333333333333"

int main(void) {
    snprintf(root, sizeof root, "/tmp/embd-resolve-%d", (int)getpid());
    mkdir(root, 0755);
    char hub[512];
    snprintf(hub, sizeof hub, "%s/hub", root);
    setenv("HF_HUB_CACHE", hub, 1);
    const char *m = "hub/models--org--m";
    char rel[256];
    snprintf(rel, sizeof rel, "%s/refs/main", m);
    put(rel, C1 "\n");
    snprintf(rel, sizeof rel, "%s/refs/v2", m);
    put(rel, C2);
    snprintf(rel, sizeof rel, "%s/refs/refs/pr/7", m); /* as huggingface_hub stores it */
    put(rel, C3);
    const char *hashes[3] = {C1, C2, C3};
    for (int i = 0; i < 3; i++) {
        snprintf(rel, sizeof rel, "%s/snapshots/%s/config.json", m, hashes[i]);
        put(rel, "{}");
    }
    enum embd_status st;
    const char *got = resolve("org/m", NULL, &st);
    CHECK_MSG(st == EMBD_OK && strstr(got, "/snapshots/" C1), "org/m: %s", got);
    got = resolve("org/m@main", NULL, &st);
    CHECK_MSG(st == EMBD_OK && strstr(got, "/snapshots/" C1), "org/m@main: %s", got);
    got = resolve("org/m@v2", NULL, &st);
    CHECK_MSG(st == EMBD_OK && strstr(got, "/snapshots/" C2), "org/m@v2: %s", got);
    got = resolve("org/m@refs/pr/7", NULL, &st);
    CHECK_MSG(st == EMBD_OK && strstr(got, "/snapshots/" C3), "org/m@refs/pr/7: %s", got);
    got = resolve("org/m@" C3, NULL, &st);
    CHECK_MSG(st == EMBD_OK && strstr(got, "/snapshots/" C3), "org/m@C3: %s", got);
    /* not in the cache: the error names the revision and embd pull */
    resolve("org/m@v9", NULL, &st);
    CHECK(st == EMBD_ERR_IO && strstr(embd_last_error(), "revision v9") &&
          strstr(embd_last_error(), "embd pull org/m@v9"));
    resolve("org/m@"
            "4444444444444444444444444444444444444444",
            NULL, &st);
    CHECK(st == EMBD_ERR_IO);
    /* not revisions: never joined to a path */
    const char *bad[] = {"org/m@",        "org/m@../../etc", "org/m@/abs", "org/m@a//b",
                         "org/m@.hidden", "org/m@a b",       "../m",       "org/m/x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resolve(bad[i], NULL, &st);
        CHECK_MSG(st == EMBD_ERR_IO, "%s resolved", bad[i]);
    }
    /* without refs/main: the newest snapshot for main, nothing for a branch */
    snprintf(rel, sizeof rel, "%s/refs/main", m);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    unlink(path);
    got = resolve("org/m", NULL, &st);
    CHECK_MSG(st == EMBD_OK && strstr(got, "/snapshots/"), "org/m without refs/main: %s", got);
    resolve("org/m@v3", NULL, &st);
    CHECK(st == EMBD_ERR_IO);
    /* cache_dir: its hub layout, and a plain ORG/NAME folder (not with @REV) */
    char cache[512];
    snprintf(cache, sizeof cache, "%s/other", root);
    put("other/org/plain/config.json", "{}");
    got = resolve("org/plain", cache, &st);
    CHECK_MSG(st == EMBD_OK && strcmp(got, "/other/org/plain") == 0, "plain: %s", got);
    resolve("org/plain@v2", cache, &st);
    CHECK(st == EMBD_ERR_IO);
    /* a folder wins over a name */
    CHECK(chdir(root) == 0);
    put("org/m/config.json", "{}");
    got = resolve("org/m", NULL, &st);
    CHECK_MSG(st == EMBD_OK && strcmp(got, "org/m") == 0, "folder: %s", got);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
    return test_summary("test_model_resolve");
}
