/* resolve.c — embd_model_resolve: a model as users name it (a directory, or
 * ORG/NAME as on the Hugging Face hub) to the directory that holds it. Names
 * are looked up in the Hugging Face cache layout that huggingface_hub,
 * sentence-transformers and fastembed write:
 *
 *     ROOT/models--ORG--NAME/refs/main          the commit hash of "main"
 *     ROOT/models--ORG--NAME/snapshots/HASH/    the files (links into blobs/)
 */
#include "util/hub.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_ROOTS 3

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_hex40(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))) return false;
    return n == 40;
}

/* The snapshot of repo folder `repo` (ROOT/models--ORG--NAME) for revision
 * `rev`: a commit hash names its snapshot folder, a branch or tag the commit
 * in refs/REV. For "main" without refs/main (a cache copied by hand), the
 * most recently modified snapshot. A new string (embd_free it), or NULL when
 * there is none (or on an allocation failure, which *oom says). */
static char *pick_snapshot(const char *repo, const char *rev, bool *oom) {
    char *snaps = embd_path_join(repo, "snapshots"), *refs = embd_path_join(repo, "refs");
    char *refp = NULL, *out = NULL, *ref = NULL;
    size_t len = 0;
    if (!snaps || !refs || !(refp = embd_path_join(refs, rev))) goto oom;
    if (is_hex40(rev)) {
        if (!(out = embd_path_join(snaps, rev))) goto oom;
        if (is_dir(out)) goto done;
        embd_free(out);
        out = NULL;
    }
    if (embd_read_file(refp, 256, &ref, &len) == EMBD_OK) {
        while (len && (ref[len - 1] == '\n' || ref[len - 1] == '\r' || ref[len - 1] == ' '))
            ref[--len] = '\0';
        if (len && !strchr(ref, '/') && strcmp(ref, "..") && strcmp(ref, ".")) {
            if (!(out = embd_path_join(snaps, ref))) goto oom;
            if (is_dir(out)) goto done;
            embd_free(out);
            out = NULL;
        }
    }
    if (strcmp(rev, "main") != 0) goto done;
    DIR *d = opendir(snaps);
    if (!d) goto done;
    double best = -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = embd_path_join(snaps, e->d_name);
        if (!p) {
            closedir(d);
            goto oom;
        }
        struct stat st;
        double t = stat(p, &st) == 0 && S_ISDIR(st.st_mode)
                       ? (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec
                       : -2;
        if (t > best) {
            best = t;
            embd_free(out);
            out = p;
        } else {
            embd_free(p);
        }
    }
    closedir(d);
    goto done;
oom:
    *oom = true;
    embd_free(out);
    out = NULL;
done:
    embd_free(ref);
    embd_free(snaps);
    embd_free(refs);
    embd_free(refp);
    return out;
}

/* Copies path into buf (cap bytes) and the size it needs, NUL included,
 * into *needed. */
static enum embd_status give(const char *path, char *buf, size_t cap, size_t *needed) {
    size_t n = strlen(path) + 1;
    if (needed) *needed = n;
    if (!buf || cap < n) {
        /* as snprintf: the start of the path, NUL-terminated, when there is room */
        if (buf && cap) {
            memcpy(buf, path, cap - 1);
            buf[cap - 1] = '\0';
        }
        return embd_error(EMBD_ERR_BUFFER_TOO_SMALL, "model path needs %zu bytes, buffer has %zu",
                          n, buf ? cap : 0);
    }
    memcpy(buf, path, n);
    return EMBD_OK;
}

enum embd_status embd_model_resolve(const char *name, const char *cache_dir, char *buf, size_t cap,
                                    size_t *needed) {
    if (needed) *needed = 0;
    if (!name || !*name)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_model_resolve: no model name");
    struct stat st;
    int r = stat(name, &st);
    if (r == 0 && S_ISDIR(st.st_mode)) return give(name, buf, cap, needed);
    int err = r == 0 ? ENOTDIR : errno;
    size_t nl;
    const char *rev;
    if (!embd_hub_name_split(name, &nl, &rev))
        return embd_error(EMBD_ERR_IO, "model %s: %s", name, strerror(err));
    if (!rev) rev = "main";

    bool oom = false;
    enum embd_status s;
    char *roots[MAX_ROOTS] = {0}, *repo_dir = NULL, *found = NULL;
    struct embd_buf looked = {0};
    int n_roots = 0;
    /* models--ORG--NAME */
    if (!(repo_dir = embd_malloc(nl + 16))) goto oom;
    memcpy(repo_dir, "models--", 8);
    char *w = repo_dir + 8;
    for (const char *p = name; p < name + nl; p++) {
        if (*p == '/') {
            *w++ = '-';
            *w++ = '-';
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';

    roots[n_roots] = embd_hub_cache_dir(&oom);
    if (oom) goto oom;
    if (roots[n_roots]) n_roots++;
    if (cache_dir && *cache_dir) {
        if (!(roots[n_roots++] = embd_strdup(cache_dir))) goto oom;
        /* cache_dir/ORG/NAME as a plain directory, too (no revision there) */
        if (!(roots[n_roots] = embd_malloc(strlen(cache_dir) + nl + 2))) goto oom;
        snprintf(roots[n_roots], strlen(cache_dir) + nl + 2, "%s/%.*s", cache_dir, (int)nl, name);
        n_roots++;
    }
    for (int i = 0; i < n_roots && !found; i++) {
        bool plain = cache_dir && *cache_dir && i == n_roots - 1;
        if (plain && name[nl] == '@') continue;
        if (plain) {
            if (is_dir(roots[i])) {
                if (!(found = embd_strdup(roots[i]))) goto oom;
            } else {
                embd_buf_printf(&looked, "%s%s", looked.len ? ", " : "", roots[i]);
            }
            continue;
        }
        char *repo = embd_path_join(roots[i], repo_dir);
        if (!repo) goto oom;
        if (is_dir(repo)) found = pick_snapshot(repo, rev, &oom);
        if (!found)
            embd_buf_printf(&looked, "%s%s/snapshots/ (revision %s)", looked.len ? ", " : "", repo,
                            rev);
        embd_free(repo);
        if (oom) goto oom;
    }
    if (looked.oom) goto oom;
    if (found) {
        s = give(found, buf, cap, needed);
    } else {
        s = embd_error(EMBD_ERR_IO,
                       "model %s: not a directory and not in the Hugging Face cache (looked in "
                       "%s; HF_HUB_CACHE or HF_HOME choose the cache); download it with `embd "
                       "pull %s` (or huggingface_hub) or give the model's directory",
                       name, looked.p ? looked.p : "no cache: HOME is not set", name);
    }
    goto done;
oom:
    s = embd_error(EMBD_ERR_NOMEM, "out of memory");
done:
    for (int i = 0; i < n_roots; i++)
        embd_free(roots[i]);
    embd_free(repo_dir);
    embd_free(found);
    embd_buf_free(&looked);
    return s;
}
