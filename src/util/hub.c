/* hub.c — hub names and the cache folder (see hub.h). */
#include "util/hub.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

bool embd_hub_repo_id_ok(const char *s, size_t n) {
    size_t slashes = 0, part = 0;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        if (c == '/') {
            if (part == 0) return false;
            slashes++;
            part = 0;
            continue;
        }
        if (!name_char(c) || (part == 0 && (c == '.' || c == '-'))) return false;
        if (c == '.' && i + 1 < n && s[i + 1] == '.') return false;
        part++;
    }
    return part > 0 && slashes <= 1;
}

bool embd_hub_revision_ok(const char *s) {
    const size_t n = strlen(s);
    if (!n || n > 200 || s[0] == '/' || s[n - 1] == '/') return false;
    for (const char *p = s; *p; p++) {
        if (!name_char(*p) && *p != '/') return false;
        if (*p == '/' && p[1] == '/') return false;
        if ((p == s || p[-1] == '/') && *p == '.') return false;
    }
    return true;
}

bool embd_hub_name_split(const char *name, size_t *repo_len, const char **rev) {
    const char *at = strchr(name, '@');
    const size_t n = at ? (size_t)(at - name) : strlen(name);
    *repo_len = n;
    *rev = at ? at + 1 : NULL;
    return embd_hub_repo_id_ok(name, n) && (!at || embd_hub_revision_ok(at + 1));
}

/* dir + "/" + sub (sub may be ""), a new string. Not embd_path_join: the
 * CLI links this file alone from the archive, without util.c (see
 * CMakeLists.txt, embd_util). */
static char *join(const char *dir, const char *sub) {
    const size_t n = strlen(dir) + strlen(sub) + 2;
    char *out = embd_malloc(n);
    if (out) snprintf(out, n, "%s%s%s", dir, *sub ? "/" : "", sub);
    return out;
}

char *embd_hub_cache_dir(bool *oom) {
    const char *v;
    char *out;
    if ((v = getenv("HF_HUB_CACHE")) && *v)
        out = join(v, "");
    else if ((v = getenv("HUGGINGFACE_HUB_CACHE")) && *v)
        out = join(v, "");
    else if ((v = getenv("HF_HOME")) && *v)
        out = join(v, "hub");
    else if ((v = getenv("XDG_CACHE_HOME")) && *v)
        out = join(v, "huggingface/hub");
    else if ((v = getenv("HOME")) && *v)
        out = join(v, ".cache/huggingface/hub");
    else
        return NULL;
    if (!out) *oom = true;
    return out;
}
