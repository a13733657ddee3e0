/* pull.c — `embd pull ORG/NAME`: the files a sentence-transformers model
 * needs, downloaded from the Hugging Face hub into the Hugging Face cache in
 * the layout huggingface_hub writes, so that embd, sentence-transformers and
 * huggingface_hub each read what the others fetched:
 *
 *     CACHE/models--ORG--NAME/blobs/ETAG             one file per content
 *     CACHE/models--ORG--NAME/snapshots/SHA/FILE  -> ../../blobs/ETAG
 *     CACHE/models--ORG--NAME/refs/REV               SHA, for a branch or tag
 *     CACHE/.locks/models--ORG--NAME/ETAG.lock       flock while ETAG is written
 *
 * The protocol is huggingface_hub's: GET ENDPOINT/api/models/REPO/revision/REV
 * names the commit and its files; for each wanted file HEAD
 * ENDPOINT/REPO/resolve/SHA/FILE gives its ETag (X-Linked-Etag: the sha256
 * of an LFS file; else ETag: the git blob id) and size (X-Linked-Size, else
 * Content-Length), then GET fetches it (following an LFS file's redirect)
 * into blobs/ETAG.incomplete, resumed with a Range request when a partial
 * one is there (also when the connection drops during the pull). A blob is
 * renamed into place only after its size and, for an LFS file, its sha256
 * are checked, and the snapshot's links are made only once every file is
 * there: a pull that is killed or fails leaves at most .incomplete files,
 * which nothing reads but the next pull. */
#include "cli.h"
#include "util/hub.h"
#include "util/text.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PULL_PATH 4096
#define PULL_MAX_FILES 256
#define PULL_API_MAX (16u << 20)  /* the largest API answer read */
#define PULL_JSON_MAX (64u << 20) /* modules.json, the shard index */
#define PULL_ATTEMPTS 5           /* GETs of one file before giving up */
#define PULL_LARGE (1u << 20)     /* files from this size show progress */

/* The files of a model folder (the repository's root, or a folder of
 * modules.json) that embd, sentence-transformers or transformers read. The
 * weights are model.safetensors, or its index and the shards it names. */
static const char *const folder_files[] = {
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "model.safetensors",
    "model.safetensors.index.json",
};

struct pull_file {
    char name[512];        /* path in the repository, e.g. 1_Pooling/config.json */
    char etag[130];        /* the blob's name */
    char local[PULL_PATH]; /* where its bytes are, once obtained */
    long long size;
    bool linked; /* already in the snapshot */
};

struct pull {
    CURL *curl;
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *headers;
    const char *repo, *rev;
    char endpoint[1024]; /* without a trailing '/' */
    char origin[1024];   /* scheme://host[:port] of the endpoint */
    bool https;
    char *token;
    char repo_dir[PULL_PATH];  /* CACHE/models--ORG--NAME */
    char locks_dir[PULL_PATH]; /* CACHE/.locks/models--ORG--NAME */
    char sha[72];
    cJSON *info; /* the API's answer */
    struct pull_file files[PULL_MAX_FILES];
    int n_files;
    bool quiet, tty;
    long long bytes_fetched;
    int n_fetched;
};

/* One HTTP exchange: the last response's headers, and its body into a file
 * (a blob being written) or into memory (an API answer, an error page). */
struct resp {
    long status;
    char location[2048], repo_commit[128], linked_etag[256], etag[256];
    char linked_size[32], content_length[32], content_range[128];
    char error_code[64], error_message[256];
    struct embd_buf *mem;
    size_t mem_max;
    bool mem_abort; /* past mem_max: fail (an API answer), else drop (an error page) */
    bool too_big;
    int fd;           /* the .incomplete file, or -1 */
    long long at;     /* the file offset of the next byte */
    long long limit;  /* the size the file must reach */
    bool started;     /* the body's first bytes came */
    bool overflow;    /* more bytes than limit */
    bool bad_range;   /* a 206 for another range than asked */
    int write_errno;  /* a failed write */
    struct pull *p;   /* for progress */
    const char *name; /* the file, for progress */
    double t0, shown; /* start time, last progress line */
    long long got;    /* bytes received in this pull */
};

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* A relative path of parts of [A-Za-z0-9._-], none empty, none starting
 * with '.', at most max_parts of them: safe to join to a folder. */
static bool is_safe_path(const char *s, int max_parts) {
    int parts = 0;
    bool start = true;
    if (!*s || strlen(s) >= 400) return false;
    for (const char *p = s; *p; p++) {
        if (*p == '/') {
            if (start) return false;
            start = true;
            continue;
        }
        if (!is_name_char(*p) || (start && *p == '.')) return false;
        if (start && ++parts > max_parts) return false;
        start = false;
    }
    return !start;
}

static bool is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

/* snprintf into a path buffer; false (after printing the error) when it
 * does not fit. */
static bool pathf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool pathf(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        cli_err("pull: path too long: %.200s...", buf);
        return false;
    }
    return true;
}

/* Creates the folder `path` and those above it. Returns 0, or 1 after
 * printing the error. */
static int mkdirs(const char *path) {
    char buf[PULL_PATH];
    if (!pathf(buf, sizeof buf, "%s", path)) return 1;
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        const char c = *p;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            cli_err("pull: cannot create %s: %s", buf, strerror(errno));
            return 1;
        }
        if (!c) break;
        *p = c;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        cli_err("pull: %s is not a folder", path);
        return 1;
    }
    return 0;
}

/* Makes the folder holding `path` durable after a rename into it. */
static void sync_parent(const char *path) {
    char dir[PULL_PATH];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* The Hugging Face cache folder (embd_hub_cache_dir) into buf. Returns 0, or
 * 1 after printing the error. */
static int hub_cache(char *buf, size_t cap) {
    bool oom = false;
    char *dir = embd_hub_cache_dir(&oom);
    int rc = 1;
    if (dir)
        rc = !pathf(buf, cap, "%s", dir);
    else if (oom)
        cli_err("pull: out of memory");
    else
        cli_err("pull: no Hugging Face cache: set HF_HUB_CACHE (or HF_HOME, or HOME), or give "
                "--cache-dir");
    free(dir);
    return rc;
}

/* Reads the first line of a small file into a new string without the
 * surrounding white space, or NULL. */
static char *read_line_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = buf;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    size_t len = strcspn(s, "\r\n");
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    return len ? strndup(s, len) : NULL;
}

/* The token huggingface_hub would send: HF_TOKEN (or the older
 * HUGGING_FACE_HUB_TOKEN), else the file HF_TOKEN_PATH, else
 * HF_HOME/token (what `huggingface-cli login` writes). A new string or NULL. */
static char *hub_token(void) {
    const char *v;
    char path[PULL_PATH];
    if ((v = getenv("HF_TOKEN")) && *v) return strdup(v);
    if ((v = getenv("HUGGING_FACE_HUB_TOKEN")) && *v) return strdup(v);
    if ((v = getenv("HF_TOKEN_PATH")) && *v) return read_line_file(v);
    if ((v = getenv("HF_HOME")) && *v)
        snprintf(path, sizeof path, "%s/token", v);
    else if ((v = getenv("XDG_CACHE_HOME")) && *v)
        snprintf(path, sizeof path, "%s/huggingface/token", v);
    else if ((v = getenv("HOME")) && *v)
        snprintf(path, sizeof path, "%s/.cache/huggingface/token", v);
    else
        return NULL;
    return read_line_file(path);
}

/* ------------------------------------------------------------------------ */
/* HTTP                                                                     */
/* ------------------------------------------------------------------------ */

static void keep(char *dst, size_t cap, const char *v, size_t n) {
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
    struct resp *r = ud;
    const size_t len = size * n;
    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) { /* a new response (after a redirect) */
        r->status = 0;
        r->location[0] = r->repo_commit[0] = r->linked_etag[0] = r->etag[0] = '\0';
        r->linked_size[0] = r->content_length[0] = r->content_range[0] = '\0';
        r->error_code[0] = r->error_message[0] = '\0';
        const char *sp = memchr(buf, ' ', len);
        if (sp && (size_t)(sp - buf) + 4 <= len) {
            long st = 0;
            for (int i = 1; i <= 3 && sp[i] >= '0' && sp[i] <= '9'; i++)
                st = st * 10 + (sp[i] - '0');
            r->status = st;
        }
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    const size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    static const struct {
        const char *name;
        size_t off, cap;
    } fields[] = {
#define F(name, field) {name, offsetof(struct resp, field), sizeof(((struct resp *)0)->field)}
        F("Location", location),
        F("X-Repo-Commit", repo_commit),
        F("X-Linked-Etag", linked_etag),
        F("ETag", etag),
        F("X-Linked-Size", linked_size),
        F("Content-Length", content_length),
        F("Content-Range", content_range),
        F("X-Error-Code", error_code),
        F("X-Error-Message", error_message),
#undef F
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (strlen(fields[i].name) == nl && !strncasecmp(buf, fields[i].name, nl))
            keep((char *)r + fields[i].off, fields[i].cap, v, vl);
    return len;
}

static void progress(struct resp *r, bool final) {
    struct pull *p = r->p;
    if (!p || p->quiet || r->limit < PULL_LARGE) return;
    const double t = embd_now();
    if (!final && (!p->tty || t - r->shown < 0.2)) return;
    r->shown = t;
    const double el = t - r->t0, mb = 1e6;
    const double rate = el > 0 ? (double)r->got / mb / el : 0;
    if (p->tty)
        fprintf(stderr, "\r%s: %.1f / %.1f MB, %.1f MB/s   ", r->name, (double)r->at / mb,
                (double)r->limit / mb, rate);
    if (final && p->tty) fputc('\n', stderr);
    if (final && !p->tty)
        fprintf(stderr, "%s: %.1f MB in %.1f s, %.1f MB/s\n", r->name, (double)r->got / mb, el,
                rate);
    fflush(stderr);
}

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
    struct resp *r = ud;
    const size_t len = size * n;
    if (r->fd < 0 || (r->status != 200 && r->status != 206)) {
        if (!r->mem) return len;
        if (r->mem->len + len > r->mem_max) {
            r->too_big = true;
            return r->mem_abort ? 0 : len;
        }
        embd_buf_put(r->mem, data, len);
        return len;
    }
    if (!r->started) {
        r->started = true;
        if (r->status == 206) {
            long long start = -1;
            if (sscanf(r->content_range, "bytes %lld-", &start) != 1 || start != r->at) {
                r->bad_range = true;
                return 0;
            }
        } else if (r->at) { /* 200: the whole file, from its start */
            if (ftruncate(r->fd, 0) != 0) {
                r->write_errno = errno;
                return 0;
            }
            r->at = 0;
        }
    }
    if (r->at + (long long)len > r->limit) {
        r->overflow = true;
        return 0;
    }
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(r->fd, data + done, len - done, (off_t)r->at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            r->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        done += (size_t)w;
        r->at += w;
        r->got += w;
    }
    progress(r, false);
    return len;
}

/* One request to url: HEAD (head) or GET, following redirects (follow),
 * from byte `from` of the file (0: all of it). Fills *r; returns curl's code. */
static CURLcode perform(struct pull *p, const char *url, bool head, bool follow, long long from,
                        struct resp *r) {
    CURL *c = p->curl;
    curl_easy_reset(c);
    p->errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, p->errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "embd/" EMBD_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, p->headers);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    /* No step down from https to http on a redirect. */
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, p->https ? "https" : "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    /* A transfer slower than 1 KB/s for a minute has stalled. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    if (p->token) {
        /* Bearer auth that curl sends to the endpoint's host only, never to
         * the host a redirect names (a CDN). */
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, p->token);
    }
    if (head) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    char range[48];
    if (from > 0) {
        snprintf(range, sizeof range, "%lld-", from);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    return curl_easy_perform(c);
}

static bool is_network_error(CURLcode rc) {
    return rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY ||
           rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT ||
           rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
           rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING;
}

/* A failed transfer (not an HTTP status): prints one line and returns 1. */
static int net_fail(struct pull *p, CURLcode rc, const char *what) {
    const char *why = p->errbuf[0] ? p->errbuf : curl_easy_strerror(rc);
    if (is_network_error(rc))
        cli_err("pull: %s: cannot reach %s: %s (no network? HF_ENDPOINT names the hub to use)",
                what, p->endpoint, why);
    else
        cli_err("pull: %s: %s", what, why);
    return 1;
}

/* An HTTP error answer to a request for `file` (NULL: the repository):
 * prints one line naming the repository, revision and file, and returns 1. */
static int http_fail(struct pull *p, const struct resp *r, const char *file) {
    char what[800], extra[300] = "";
    if (file)
        snprintf(what, sizeof what, "%s of %s (revision %s)", file, p->repo, p->rev);
    else
        snprintf(what, sizeof what, "%s (revision %s)", p->repo, p->rev);
    if (r->error_message[0]) snprintf(extra, sizeof extra, " [%s]", r->error_message);
    switch (r->status) {
    case 401:
        cli_err("pull: %s: 401 Unauthorized from %s%s: %s", what, p->endpoint, extra,
                p->token ? "the token sent (HF_TOKEN, or the saved login) was refused; check "
                           "that it is valid and may read this repository"
                         : "the repository is private or gated (or does not exist); set "
                           "HF_TOKEN to a token that may read it");
        break;
    case 403:
        cli_err("pull: %s: 403 Forbidden from %s%s: access is restricted (a gated model: "
                "accept its conditions on the hub with the account HF_TOKEN belongs to)",
                what, p->endpoint, extra);
        break;
    case 404:
        if (!strcmp(r->error_code, "RevisionNotFound"))
            cli_err("pull: %s: 404 from %s: no revision %s in %s%s", what, p->endpoint, p->rev,
                    p->repo, extra);
        else if (file || !strcmp(r->error_code, "EntryNotFound"))
            cli_err("pull: %s: 404 from %s: file not found%s", what, p->endpoint, extra);
        else
            cli_err("pull: %s: 404 from %s: repository not found (or no revision %s)%s", what,
                    p->endpoint, p->rev, extra);
        break;
    case 429:
        cli_err("pull: %s: 429 Too Many Requests from %s%s: try again later", what, p->endpoint,
                extra);
        break;
    default:
        cli_err("pull: %s: HTTP %ld from %s%s", what, r->status, p->endpoint, extra);
        break;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* The revision and its files                                               */
/* ------------------------------------------------------------------------ */

/* GET ENDPOINT/api/models/REPO/revision/REV: the commit (p->sha) and the
 * file list (p->info's "siblings"). Returns 0, or 1 after printing. */
static int api_revision(struct pull *p) {
    char url[PULL_PATH];
    char *rev = curl_easy_escape(p->curl, p->rev, 0);
    if (!rev) {
        cli_err("out of memory");
        return 1;
    }
    bool ok = pathf(url, sizeof url, "%s/api/models/%s/revision/%s", p->endpoint, p->repo, rev);
    curl_free(rev);
    if (!ok) return 1;
    struct embd_buf body = {0};
    struct resp r = {.fd = -1, .mem = &body, .mem_max = PULL_API_MAX, .mem_abort = true};
    int rc = 1;
    char what[600];
    snprintf(what, sizeof what, "%s (revision %s)", p->repo, p->rev);
    CURLcode c = perform(p, url, false, true, 0, &r);
    if (r.too_big) {
        cli_err("pull: %s: the API's answer is larger than %u MiB", what, PULL_API_MAX >> 20);
        goto done;
    }
    if (c != CURLE_OK) {
        rc = net_fail(p, c, what);
        goto done;
    }
    if (r.status != 200) {
        rc = http_fail(p, &r, NULL);
        goto done;
    }
    if (body.oom) {
        cli_err("out of memory");
        goto done;
    }
    p->info = body.p ? cJSON_ParseWithLength(body.p, body.len) : NULL;
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(p->info, "sha");
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(p->info, "siblings");
    if (!cJSON_IsObject(p->info) || !cJSON_IsString(sha) || !cJSON_IsArray(sib)) {
        cli_err("pull: %s: %s did not answer %s with a JSON object holding \"sha\" and "
                "\"siblings\"",
                what, p->endpoint, url);
        goto done;
    }
    if (!is_hex(sha->valuestring, 40) && !is_hex(sha->valuestring, 64)) {
        cli_err("pull: %s: the API names commit \"%.80s\", not a git hash", what, sha->valuestring);
        goto done;
    }
    snprintf(p->sha, sizeof p->sha, "%s", sha->valuestring);
    rc = 0;
done:
    embd_buf_free(&body);
    return rc;
}

/* Whether the revision holds a file called `name`. */
static bool has_file(const struct pull *p, const char *name) {
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(p->info, "siblings");
    const cJSON *s;
    cJSON_ArrayForEach(s, sib) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(s, "rfilename");
        if (cJSON_IsString(f) && !strcmp(f->valuestring, name)) return true;
    }
    return false;
}

/* Adds `name` to the files to obtain (once). Returns its index, or -1 after
 * printing the error. */
static int add_file(struct pull *p, const char *name) {
    for (int i = 0; i < p->n_files; i++)
        if (!strcmp(p->files[i].name, name)) return i;
    if (p->n_files == PULL_MAX_FILES || strlen(name) >= sizeof p->files[0].name) {
        cli_err("pull: %s: too many files, or a name too long (%.100s)", p->repo, name);
        return -1;
    }
    struct pull_file *f = &p->files[p->n_files];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    return p->n_files++;
}

/* Reads a file of at most PULL_JSON_MAX bytes as JSON. NULL after printing. */
static cJSON *read_json(const struct pull_file *f) {
    FILE *fp = fopen(f->local, "rb");
    if (!fp) {
        cli_err("pull: cannot read %s: %s", f->local, strerror(errno));
        return NULL;
    }
    struct embd_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0 && b.len <= PULL_JSON_MAX)
        embd_buf_put(&b, chunk, n);
    fclose(fp);
    cJSON *j = NULL;
    if (b.oom)
        cli_err("out of memory");
    else if (b.len > PULL_JSON_MAX)
        cli_err("pull: %s is larger than %u MiB", f->name, PULL_JSON_MAX >> 20);
    else if (!(j = b.p ? cJSON_ParseWithLength(b.p, b.len) : NULL))
        cli_err("pull: %s is not JSON", f->name);
    embd_buf_free(&b);
    return j;
}

/* ------------------------------------------------------------------------ */
/* Blobs                                                                    */
/* ------------------------------------------------------------------------ */

/* The sha256 of the file at fd, in lowercase hex. Returns 0, or 1 after
 * printing the error. */
static int sha256_file(int fd, const char *name, char hex[65]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int rc = 1;
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        cli_err("pull: sha256: cannot set up OpenSSL's digest");
        goto done;
    }
    static unsigned char buf[1 << 20];
    for (off_t at = 0;;) {
        ssize_t n = pread(fd, buf, sizeof buf, at);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            cli_err("pull: reading %s back: %s", name, strerror(errno));
            goto done;
        }
        if (n == 0) break;
        if (!EVP_DigestUpdate(ctx, buf, (size_t)n)) goto done;
        at += n;
    }
    if (!EVP_DigestFinal_ex(ctx, md, &md_len) || md_len != 32) goto done;
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    rc = 0;
done:
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* An ETag header as huggingface_hub normalises it: without W/ and quotes.
 * False when it cannot name a file. */
static bool norm_etag(const char *in, char *out, size_t cap) {
    if (!strncmp(in, "W/", 2)) in += 2;
    size_t n = strlen(in);
    if (n >= 2 && in[0] == '"' && in[n - 1] == '"') {
        in++;
        n -= 2;
    }
    if (n == 0 || n >= cap || in[0] == '.') return false;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char(in[i])) return false;
    memcpy(out, in, n);
    out[n] = '\0';
    return true;
}

static bool is_regular(const char *path, long long *size) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return false;
    if (size) *size = (long long)st.st_size;
    return true;
}

/* HEAD ENDPOINT/REPO/resolve/SHA/FILE: f's etag and size. Redirects on the
 * endpoint's host (a renamed repository) are followed, as huggingface_hub
 * does; the redirect of an LFS file to its storage (another host) is not:
 * its headers describe the file. Returns 0 or 1. */
static int file_meta(struct pull *p, struct pull_file *f, const char *url0) {
    char url[PULL_PATH];
    struct resp r;
    snprintf(url, sizeof url, "%s", url0);
    for (int hops = 0;; hops++) {
        r = (struct resp){.fd = -1};
        CURLcode c = perform(p, url, true, false, 0, &r);
        if (c != CURLE_OK) {
            char what[800];
            snprintf(what, sizeof what, "%s of %s", f->name, p->repo);
            return net_fail(p, c, what);
        }
        const size_t ol = strlen(p->origin);
        const bool same_host = r.location[0] == '/' ||
                               (!strncasecmp(r.location, p->origin, ol) && r.location[ol] == '/');
        if (r.status >= 300 && r.status < 400 && same_host && hops < 5) {
            if (!pathf(url, sizeof url, "%s%s", r.location[0] == '/' ? p->origin : "", r.location))
                return 1;
            continue;
        }
        break;
    }
    if (r.status < 200 || r.status >= 400) return http_fail(p, &r, f->name);
    if (r.repo_commit[0] && strcmp(r.repo_commit, p->sha)) {
        cli_err("pull: %s of %s: the hub answered for commit %s, not %s", f->name, p->repo,
                r.repo_commit, p->sha);
        return 1;
    }
    const char *etag = r.linked_etag[0] ? r.linked_etag : r.etag;
    if (!norm_etag(etag, f->etag, sizeof f->etag)) {
        cli_err("pull: %s of %s: %s ETag \"%.100s\" from %s (X-Linked-Etag or ETag names the "
                "blob)",
                f->name, p->repo, etag[0] ? "unusable" : "no", etag, p->endpoint);
        return 1;
    }
    const char *size = r.linked_size[0]                            ? r.linked_size
                       : (r.status >= 300 || !r.content_length[0]) ? NULL
                                                                   : r.content_length;
    char *end = NULL;
    f->size = size ? strtoll(size, &end, 10) : -1;
    if (!size || *end || f->size < 0) {
        cli_err("pull: %s of %s: no size from %s (X-Linked-Size or Content-Length)", f->name,
                p->repo, p->endpoint);
        return 1;
    }
    return 0;
}

/* GETs url into the open .incomplete file fd (holding `at` bytes already)
 * until it holds f->size bytes, resuming with a Range request after a
 * dropped connection, PULL_ATTEMPTS times at most. Returns 0, or 1 after
 * printing (and, for bytes that cannot be the file, after emptying fd). */
static int fetch(struct pull *p, const struct pull_file *f, const char *url, int fd, long long at) {
    const double t0 = embd_now();
    long long got = 0;
    for (int attempt = 1;; attempt++) {
        if (at == f->size) break;
        struct embd_buf errbody = {0};
        struct resp r = {.fd = fd,
                         .at = at,
                         .limit = f->size,
                         .mem = &errbody,
                         .mem_max = 4096,
                         .p = p,
                         .name = f->name,
                         .t0 = t0,
                         .got = got};
        const long long before = at;
        CURLcode c = perform(p, url, false, true, at, &r);
        embd_buf_free(&errbody);
        at = r.at;
        got = r.got;
        if (r.write_errno) {
            cli_err("pull: writing %s (%s): %s", f->name, f->etag, strerror(r.write_errno));
            return 1;
        }
        if (r.overflow) {
            cli_err("pull: %s of %s: the server sent more than the %lld bytes it announced; "
                    "not saved",
                    f->name, p->repo, f->size);
            (void)ftruncate(fd, 0);
            return 1;
        }
        bool retry = false;
        if (r.bad_range || (c == CURLE_OK && r.status == 416)) {
            /* The server does not continue where the file stops: start over. */
            if (ftruncate(fd, 0) != 0) {
                cli_err("pull: truncating %s: %s", f->name, strerror(errno));
                return 1;
            }
            at = 0;
            retry = true;
        } else if (c == CURLE_OK && r.status != 200 && r.status != 206) {
            if (r.status < 500 && r.status != 429) return http_fail(p, &r, f->name);
            retry = true;
        } else if (c == CURLE_OK || c == CURLE_PARTIAL_FILE || is_network_error(c) ||
                   c == CURLE_HTTP2 || c == CURLE_HTTP2_STREAM) {
            retry = at < f->size; /* a body shorter than the file: resume */
        } else {
            char what[800];
            snprintf(what, sizeof what, "%s of %s", f->name, p->repo);
            return net_fail(p, c, what);
        }
        if (!retry) break;
        const char *why = c != CURLE_OK ? (p->errbuf[0] ? p->errbuf : curl_easy_strerror(c))
                          : r.status != 200 && r.status != 206 ? "a server error"
                                                               : "the body ended early";
        if (attempt == PULL_ATTEMPTS) {
            char st[32] = "";
            if (r.status) snprintf(st, sizeof st, ", HTTP %ld", r.status);
            cli_err("pull: %s of %s: download interrupted at %lld of %lld bytes after %d "
                    "attempts (%s%s); run embd pull again to resume it",
                    f->name, p->repo, at, f->size, attempt, why, st);
            return 1;
        }
        if (!p->quiet)
            fprintf(stderr, "%s: interrupted at %lld of %lld bytes (%s); resuming\n", f->name, at,
                    f->size, why);
        if (at == before) { /* no progress: back off 1, 2, 4 s */
            struct timespec ts = {.tv_sec = 1L << (attempt - 1 < 2 ? attempt - 1 : 2)};
            nanosleep(&ts, NULL);
        }
    }
    struct resp done = {.p = p, .name = f->name, .t0 = t0, .at = at, .limit = f->size, .got = got};
    progress(&done, true);
    p->bytes_fetched += got;
    return 0;
}

/* Makes f's blob present and checked: CACHE/.../blobs/ETAG. Downloads it
 * into ETAG.incomplete (resuming a partial one), under the lock
 * huggingface_hub takes too, checks its size and an LFS file's sha256, and
 * renames it into place. Returns 0 or 1. */
static int obtain_blob(struct pull *p, struct pull_file *f, const char *url) {
    char blob[PULL_PATH], part[PULL_PATH], lock[PULL_PATH];
    if (!pathf(blob, sizeof blob, "%s/blobs/%s", p->repo_dir, f->etag) ||
        !pathf(part, sizeof part, "%s.incomplete", blob) ||
        !pathf(lock, sizeof lock, "%s/%s.lock", p->locks_dir, f->etag))
        return 1;
    long long have = -1;
    if (is_regular(blob, &have) && have == f->size) goto ready;
    char dir[PULL_PATH];
    if (!pathf(dir, sizeof dir, "%s/blobs", p->repo_dir) || mkdirs(dir) || mkdirs(p->locks_dir))
        return 1;
    int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0) {
        cli_err("pull: cannot open %s: %s", lock, strerror(errno));
        return 1;
    }
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        if (!p->quiet)
            fprintf(stderr, "%s: waiting for another download of it (%s)\n", f->name, lock);
        while (flock(lfd, LOCK_EX) != 0 && errno == EINTR) {
        }
    }
    int rc = 1, fd = -1;
    if (is_regular(blob, &have) && have == f->size) { /* the other download finished it */
        rc = 0;
        goto unlock;
    }
    fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        cli_err("pull: cannot open %s: %s", part, strerror(errno));
        goto unlock;
    }
    long long at = (long long)st.st_size;
    if (at > f->size) {
        if (ftruncate(fd, 0) != 0) {
            cli_err("pull: truncating %s: %s", part, strerror(errno));
            goto unlock;
        }
        at = 0;
    }
    if (at > 0 && !p->quiet)
        fprintf(stderr, "%s: resuming a partial download at %lld of %lld bytes\n", f->name, at,
                f->size);
    if (fetch(p, f, url, fd, at)) goto unlock;
    if (fstat(fd, &st) != 0 || (long long)st.st_size != f->size) {
        cli_err("pull: %s of %s: %lld bytes downloaded, the hub announced %lld", f->name, p->repo,
                (long long)st.st_size, f->size);
        goto unlock;
    }
    if (is_hex(f->etag, 64)) { /* an LFS file: its etag is its sha256 */
        char hex[65];
        if (sha256_file(fd, part, hex)) goto unlock;
        if (strcasecmp(hex, f->etag)) {
            cli_err("pull: %s of %s: corrupted download: its sha256 is %s, the hub's is %s; "
                    "removed, nothing linked",
                    f->name, p->repo, hex, f->etag);
            unlink(part);
            goto unlock;
        }
    }
    if (fsync(fd) != 0 || rename(part, blob) != 0) {
        cli_err("pull: cannot write %s: %s", blob, strerror(errno));
        goto unlock;
    }
    sync_parent(blob);
    p->n_fetched++;
    rc = 0;
unlock:
    if (fd >= 0) close(fd);
    close(lfd); /* releases the lock */
    if (rc) return rc;
ready:
    snprintf(f->local, sizeof f->local, "%s", blob);
    return 0;
}

/* Makes f's bytes available in f->local: the snapshot's link when an
 * earlier pull (or huggingface_hub) made it, else the blob, fetched if it is
 * not there. Returns 0 or 1. */
static int obtain(struct pull *p, struct pull_file *f) {
    char link[PULL_PATH];
    if (!pathf(link, sizeof link, "%s/snapshots/%s/%s", p->repo_dir, p->sha, f->name)) return 1;
    if (is_regular(link, NULL)) {
        snprintf(f->local, sizeof f->local, "%s", link);
        f->linked = true;
        return 0;
    }
    char url[PULL_PATH], *q = NULL;
    struct embd_buf path = {0};
    /* The file's path, escaped part by part (as huggingface_hub's quote()). */
    for (const char *s = f->name; *s;) {
        size_t n = strcspn(s, "/");
        if (!(q = curl_easy_escape(p->curl, s, (int)n))) break;
        embd_buf_printf(&path, "%s%s", path.len ? "/" : "", q);
        curl_free(q);
        s += n + (s[n] == '/');
    }
    if (!q || path.oom) {
        embd_buf_free(&path);
        cli_err("out of memory");
        return 1;
    }
    bool ok = pathf(url, sizeof url, "%s/%s/resolve/%s/%s", p->endpoint, p->repo, p->sha, path.p);
    embd_buf_free(&path);
    if (!ok || file_meta(p, f, url)) return 1;
    return obtain_blob(p, f, url);
}

/* Points snapshots/SHA/NAME at ../../blobs/ETAG (one ../ more per folder in
 * NAME), replacing another link atomically. Returns 0 or 1. */
static int link_file(struct pull *p, const struct pull_file *f) {
    char link[PULL_PATH], target[PULL_PATH], tmp[PULL_PATH];
    if (!pathf(link, sizeof link, "%s/snapshots/%s/%s", p->repo_dir, p->sha, f->name)) return 1;
    size_t at = 0;
    for (const char *s = f->name; *s; s++)
        if (*s == '/') at += (size_t)snprintf(target + at, sizeof target - at, "../");
    if (!pathf(target + at, sizeof target - at, "../../blobs/%s", f->etag)) return 1;
    char cur[PULL_PATH];
    ssize_t n = readlink(link, cur, sizeof cur - 1);
    if (n >= 0) {
        cur[n] = '\0';
        if (!strcmp(cur, target)) return 0;
    }
    char dir[PULL_PATH];
    snprintf(dir, sizeof dir, "%s", link);
    *strrchr(dir, '/') = '\0';
    if (mkdirs(dir)) return 1;
    if (!pathf(tmp, sizeof tmp, "%s.embd-tmp-%ld", link, (long)getpid())) return 1;
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, link) != 0) {
        cli_err("pull: cannot link %s -> %s: %s", link, target, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

/* refs/REV holds the commit a branch or tag name stands for. Returns 0 or 1. */
static int write_ref(struct pull *p) {
    char ref[PULL_PATH], tmp[PULL_PATH], dir[PULL_PATH];
    if (!pathf(ref, sizeof ref, "%s/refs/%s", p->repo_dir, p->rev) ||
        !pathf(tmp, sizeof tmp, "%s.embd-tmp-%ld", ref, (long)getpid()))
        return 1;
    snprintf(dir, sizeof dir, "%s", ref);
    *strrchr(dir, '/') = '\0';
    if (mkdirs(dir)) return 1;
    FILE *fp = fopen(tmp, "wb");
    bool ok = fp && fputs(p->sha, fp) >= 0;
    ok = fp && fclose(fp) == 0 && ok;
    if (!ok || rename(tmp, ref) != 0) {
        cli_err("pull: cannot write %s: %s", ref, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

/* The folder of the Transformer module in modules.json into tdir (left
 * alone when it is the root), and every module's folder added to
 * folders[*n_folders..max_folders). Returns 0 or 1. */
static int module_folders(struct pull *p, const cJSON *mods, char folders[][256], int *n_folders,
                          int max_folders, char *tdir, size_t tdir_cap) {
    const cJSON *m;
    if (!cJSON_IsArray(mods)) {
        cli_err("pull: modules.json of %s is not a JSON array", p->repo);
        return 1;
    }
    cJSON_ArrayForEach(m, mods) {
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(m, "path");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(m, "type");
        if (!cJSON_IsString(path) || !path->valuestring[0]) continue;
        if (!is_safe_path(path->valuestring, 4) || strlen(path->valuestring) >= 256) {
            cli_err("pull: modules.json of %s names the folder \"%.100s\", not a plain relative "
                    "path",
                    p->repo, path->valuestring);
            return 1;
        }
        if (cJSON_IsString(type) && strstr(type->valuestring, "Transformer"))
            snprintf(tdir, tdir_cap, "%s", path->valuestring);
        if (*n_folders < max_folders)
            snprintf(folders[(*n_folders)++], 256, "%s", path->valuestring);
    }
    return 0;
}

/* Adds the shards model.safetensors.index.json (file f) names. Returns 0 or 1. */
static int add_shards(struct pull *p, const struct pull_file *f, const char *folder) {
    cJSON *idx = read_json(f);
    if (!idx) return 1;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map"), *w;
    int rc = 1;
    if (!cJSON_IsObject(map)) {
        cli_err("pull: %s of %s has no \"weight_map\" object", f->name, p->repo);
        goto done;
    }
    cJSON_ArrayForEach(w, map) {
        char name[600];
        if (!cJSON_IsString(w) || !is_safe_path(w->valuestring, 1)) {
            cli_err("pull: %s of %s names a shard that is not a plain file name", f->name, p->repo);
            goto done;
        }
        if (!pathf(name, sizeof name, "%s%s%s", folder, *folder ? "/" : "", w->valuestring))
            goto done;
        if (!has_file(p, name)) {
            cli_err("pull: %s of %s names the shard %s, which revision %s does not have", f->name,
                    p->repo, name, p->rev);
            goto done;
        }
        if (add_file(p, name) < 0) goto done;
    }
    rc = 0;
done:
    cJSON_Delete(idx);
    return rc;
}

/* Lists the weights files the revision has that embd does not read, for
 * the message saying it has no safetensors. */
static void other_weights(const struct pull *p, char *out, size_t cap) {
    static const char *const exts[] = {".bin", ".onnx", ".h5", ".msgpack", ".ot", ".pt", ".gguf"};
    const cJSON *s;
    size_t at = 0;
    out[0] = '\0';
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(p->info, "siblings")) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(s, "rfilename");
        if (!cJSON_IsString(f)) continue;
        const char *dot = strrchr(f->valuestring, '.');
        for (size_t i = 0; dot && i < sizeof exts / sizeof exts[0]; i++)
            if (!strcmp(dot, exts[i]) && at + 3 < cap)
                at += (size_t)snprintf(out + at, cap - at, "%s%s", at ? ", " : "", f->valuestring);
    }
    if (at >= cap) snprintf(out + cap - 4, 4, "...");
}

static int pull_run(struct pull *p, const char *cache_dir) {
    char cache[PULL_PATH], folder_name[600];
    if (cache_dir && *cache_dir) {
        if (!pathf(cache, sizeof cache, "%s", cache_dir)) return 1;
    } else if (hub_cache(cache, sizeof cache)) {
        return 1;
    }
    size_t w = (size_t)snprintf(folder_name, sizeof folder_name, "models--");
    for (const char *s = p->repo; *s && w + 3 < sizeof folder_name; s++)
        w += (size_t)snprintf(folder_name + w, sizeof folder_name - w, *s == '/' ? "--" : "%c", *s);
    if (!pathf(p->repo_dir, sizeof p->repo_dir, "%s/%s", cache, folder_name) ||
        !pathf(p->locks_dir, sizeof p->locks_dir, "%s/.locks/%s", cache, folder_name))
        return 1;
    if (api_revision(p)) return 1;

    /* modules.json first: it says in which folders the other files are. */
    char folders[17][256] = {""}, tdir[256] = "";
    int n_folders = 1;
    if (has_file(p, "modules.json")) {
        int i = add_file(p, "modules.json");
        if (i < 0 || obtain(p, &p->files[i])) return 1;
        cJSON *mods = read_json(&p->files[i]);
        if (!mods) return 1;
        int rc = module_folders(p, mods, folders, &n_folders, 17, tdir, sizeof tdir);
        cJSON_Delete(mods);
        if (rc) return 1;
    }
    /* What embd cannot run without, before anything large is fetched. */
    char need[600];
    static const char *const required[] = {"config.json", "tokenizer.json"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        snprintf(need, sizeof need, "%s%s%s", tdir, *tdir ? "/" : "", required[i]);
        if (!has_file(p, need)) {
            cli_err("pull: %s (revision %s) has no %s, which embd needs", p->repo, p->rev, need);
            return 1;
        }
    }
    char st[600], idx[600];
    if (!pathf(st, sizeof st, "%s%smodel.safetensors", tdir, *tdir ? "/" : "") ||
        !pathf(idx, sizeof idx, "%s.index.json", st))
        return 1;
    if (!has_file(p, st) && !has_file(p, idx)) {
        char others[300];
        other_weights(p, others, sizeof others);
        cli_err("pull: %s (revision %s) has no %s (nor a sharded %s): embd reads safetensors "
                "weights%s%s",
                p->repo, p->rev, st, idx, others[0] ? "; it has " : "", others);
        return 1;
    }
    for (int k = 0; k < n_folders; k++)
        for (size_t i = 0; i < sizeof folder_files / sizeof folder_files[0]; i++) {
            char name[600];
            if (!pathf(name, sizeof name, "%s%s%s", folders[k], folders[k][0] ? "/" : "",
                       folder_files[i]))
                return 1;
            if (has_file(p, name) && add_file(p, name) < 0) return 1;
        }
    for (int i = 0; i < p->n_files; i++) {
        struct pull_file *f = &p->files[i];
        if (!f->local[0] && obtain(p, f)) return 1;
        const size_t nl = strlen(f->name), il = strlen("model.safetensors.index.json");
        if (nl >= il && !strcmp(f->name + nl - il, "model.safetensors.index.json")) {
            char folder[600];
            snprintf(folder, sizeof folder, "%.*s", (int)(nl > il ? nl - il - 1 : 0), f->name);
            if (add_shards(p, f, folder)) return 1;
        }
    }
    /* Every file is there and checked: the snapshot, then the ref. */
    for (int i = 0; i < p->n_files; i++)
        if (!p->files[i].linked && link_file(p, &p->files[i])) return 1;
    if (strcmp(p->rev, p->sha) && write_ref(p)) return 1;
    return 0;
}

/* Whether a snapshot folder holds what a model needs at its top: config.json,
 * tokenizer.json and the weights (a model whose modules.json puts them in a
 * sub-folder counts as whole: its files are not looked for here). */
static bool snapshot_whole(const char *dir) {
    static const char *const need[] = {"config.json", "tokenizer.json"};
    char p[PULL_PATH];
    struct stat st;
    snprintf(p, sizeof p, "%s/modules.json", dir);
    const bool modules = stat(p, &st) == 0;
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, need[i]);
        if (stat(p, &st) != 0) return modules;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (stat(p, &st) == 0) return true;
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    return stat(p, &st) == 0 || modules;
}

int cli_pull(const char *repo, const char *revision, const char *cache_dir, bool quiet,
             char *snapshot, size_t cap) {
    const char *v = getenv("HF_HUB_OFFLINE");
    if (v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
              !strcasecmp(v, "on"))) {
        /* as huggingface_hub's snapshot_download offline: the cached
         * snapshot when it is whole, else an error */
        char name[PULL_PATH], dir[PULL_PATH];
        size_t need = 0;
        snprintf(name, sizeof name, "%s%s%s", repo, strcmp(revision, "main") ? "@" : "",
                 strcmp(revision, "main") ? revision : "");
        if (embd_model_resolve(name, cache_dir, dir, sizeof dir, &need) == EMBD_OK &&
            snapshot_whole(dir)) {
            if (!quiet)
                fprintf(stderr, "pull: %s: HF_HUB_OFFLINE is set; the cache holds it\n", repo);
            if (snapshot) snprintf(snapshot, cap, "%s", dir);
            return 0;
        }
        cli_err("pull: %s: HF_HUB_OFFLINE is set, so nothing is downloaded (and the cache does "
                "not hold it whole)",
                repo);
        return 1;
    }
    static struct pull p; /* large (the file table); one pull per process */
    memset(&p, 0, sizeof p);
    p.repo = repo;
    p.rev = revision;
    p.quiet = quiet;
    p.tty = isatty(STDERR_FILENO);
    const char *ep = getenv("HF_ENDPOINT");
    if (!ep || !*ep) ep = "https://huggingface.co";
    if (!pathf(p.endpoint, sizeof p.endpoint, "%s", ep)) return 1;
    for (size_t n = strlen(p.endpoint); n && p.endpoint[n - 1] == '/';)
        p.endpoint[--n] = '\0';
    const char *sep = strstr(p.endpoint, "://");
    if (!sep || (strncasecmp(p.endpoint, "https://", 8) && strncasecmp(p.endpoint, "http://", 7))) {
        cli_err("pull: HF_ENDPOINT=%s is not an http:// or https:// URL", ep);
        return 2;
    }
    p.https = !strncasecmp(p.endpoint, "https://", 8);
    size_t origin_len = (size_t)(sep + 3 - p.endpoint) + strcspn(sep + 3, "/");
    snprintf(p.origin, sizeof p.origin, "%.*s", (int)origin_len, p.endpoint);

    int rc = 1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(p.curl = curl_easy_init())) {
        cli_err("pull: cannot initialise libcurl");
        return 1;
    }
    p.token = hub_token();
    /* The size of a compressed answer is not the file's: ask for none. */
    p.headers = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (!p.headers) {
        cli_err("out of memory");
        goto done;
    }
    rc = pull_run(&p, cache_dir);
    if (rc == 0) {
        char snap[PULL_PATH];
        if (!pathf(snap, sizeof snap, "%s/snapshots/%s", p.repo_dir, p.sha)) {
            rc = 1;
        } else if (snapshot && snprintf(snapshot, cap, "%s", snap) >= (int)cap) {
            cli_err("pull: path too long: %s", snap);
            rc = 1;
        }
        if (!rc && !quiet)
            fprintf(stderr,
                    "%s (revision %s, commit %.12s): %d of %d files downloaded "
                    "(%.1f MB), %d already in the cache; %s\n",
                    repo, revision, p.sha, p.n_fetched, p.n_files, (double)p.bytes_fetched / 1e6,
                    p.n_files - p.n_fetched, snap);
    }
done:
    curl_slist_free_all(p.headers);
    if (p.token) {
        memset(p.token, 0, strlen(p.token));
        free(p.token);
    }
    cJSON_Delete(p.info);
    curl_easy_cleanup(p.curl);
    curl_global_cleanup();
    return rc;
}

int cli_pull_missing(const struct cli_args *a, const char *name) {
    size_t need = 0;
    struct stat st;
    if (!name || !cli_flag(a, "pull") || !cli_is_repo_id(name) || stat(name, &st) == 0) return 0;
    bool partial = false;
    if (embd_model_resolve(name, NULL, NULL, 0, &need) == EMBD_ERR_BUFFER_TOO_SMALL) {
        /* in the cache: whole, or a snapshot another tool left half-filled
         * (an interrupted download, AutoConfig's config.json alone) */
        char *dir = malloc(need);
        if (!dir) return 0;
        partial =
            embd_model_resolve(name, NULL, dir, need, &need) == EMBD_OK && !snapshot_whole(dir);
        free(dir);
        if (!partial) return 0;
    }
    const bool quiet = cli_flag(a, "quiet");
    size_t n;
    const char *rev;
    char repo[PULL_PATH];
    if (!embd_hub_name_split(name, &n, &rev) || n >= sizeof repo) return 0;
    memcpy(repo, name, n);
    repo[n] = '\0';
    if (!quiet)
        fprintf(stderr, "%s is %s the Hugging Face cache: pulling it (--pull)\n", name,
                partial ? "incomplete in" : "not in");
    return cli_pull(repo, rev ? rev : "main", NULL, quiet, NULL, 0) ? 1 : 0;
}

/* ------------------------------------------------------------------------ */
/* embd pull                                                                */
/* ------------------------------------------------------------------------ */

static const struct cli_opt pull_opts[] = {
    {"revision", 0, true, "REV", "main", "branch, tag or commit to download"},
    {"cache-dir", 0, true, "DIR", NULL,
     "the Hugging Face cache to fill (default: HF_HUB_CACHE, else HF_HOME/hub, else "
     "~/.cache/huggingface/hub; where -m ORG/NAME looks)"},
};

static const char pull_usage[] = "embd pull ORG/NAME[@REV] [--revision REV] [--cache-dir DIR]";
static const char pull_about[] =
    "Downloads the files a sentence-transformers model needs (config.json,\n"
    "tokenizer.json and the other tokenizer files, modules.json,\n"
    "sentence_bert_config.json, config_sentence_transformers.json, model.safetensors\n"
    "or its shards, and the same names in the module folders modules.json names,\n"
    "such as 1_Pooling/config.json; not pytorch_model.bin, onnx/ and other\n"
    "formats) from the Hugging Face hub into the Hugging Face cache, in\n"
    "huggingface_hub's layout: `embd ... -m ORG/NAME`, sentence-transformers and\n"
    "huggingface_hub all read it. Prints the snapshot's folder on stdout.\n"
    "\n"
    "HF_ENDPOINT is the hub (default https://huggingface.co); HF_TOKEN (else the\n"
    "token `huggingface-cli login` saved) is sent as a bearer token, for private\n"
    "and gated models; HF_HUB_OFFLINE=1 refuses to download. Files already in the\n"
    "cache are not downloaded again; a partial download (interrupted or killed) is\n"
    "resumed. Sizes, and the sha256 of LFS files (the hub's ETag), are checked\n"
    "before a file is kept; the snapshot is linked only when every file is there.\n"
    "The model may also be given as -m ORG/NAME.";

/* Takes the one argument that is not an option (nor an option's value) out
 * of argv. Returns 0, or 2 after a usage error. */
static int take_name(int argc, char **argv, char **out, int *out_argc, const char **name) {
    *name = NULL;
    *out_argc = 0;
    out[(*out_argc)++] = argv[0];
    for (int k = 1; k < argc; k++) {
        const char *arg = argv[k];
        bool takes_value = false;
        if (arg[0] == '-' && arg[1]) {
            for (int t = 0; t < 2; t++) {
                const struct cli_opt *o = t ? pull_opts : cli_common_opts;
                const int n = t ? CLI_N_OPTS(pull_opts) : cli_n_common_opts;
                for (int i = 0; i < n; i++) {
                    if (arg[1] == '-' ? !strcmp(arg + 2, o[i].name)
                                      : (!arg[2] && arg[1] == o[i].short_name))
                        takes_value = o[i].has_arg;
                }
            }
            out[(*out_argc)++] = argv[k];
            if (takes_value && k + 1 < argc) out[(*out_argc)++] = argv[++k];
            continue;
        }
        if (*name) {
            cli_err("pull: unexpected argument \"%s\" (one model per pull; see embd pull --help)",
                    arg);
            return 2;
        }
        *name = arg;
    }
    out[*out_argc] = NULL;
    return 0;
}

int cmd_pull(int argc, char **argv) {
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) {
        cli_err("out of memory");
        return 1;
    }
    const char *name = NULL;
    int n_args = 0, rc = take_name(argc, argv, args, &n_args, &name);
    struct cli_args a;
    if (rc == 0)
        rc = cli_parse(&a, "pull", pull_opts, CLI_N_OPTS(pull_opts), n_args, args, pull_usage,
                       pull_about);
    free(args);
    if (rc) return rc < 0 ? 0 : rc;
    const char *m = cli_get(&a, "model");
    if (name && m && strcmp(name, m)) {
        cli_err("pull: two models named: %s and -m %s", name, m);
        rc = 2;
        goto done;
    }
    if (!name) name = m;
    const char *rev = cli_get(&a, "revision");
    char repo[PULL_PATH];
    size_t n_repo = 0;
    const char *at_rev = NULL;
    if (name && embd_hub_name_split(name, &n_repo, &at_rev) && at_rev && n_repo < sizeof repo) {
        /* ORG/NAME@REV, as -m takes it */
        if (strcmp(rev, "main") != 0 && strcmp(rev, at_rev) != 0) {
            cli_err("pull: two revisions named: %s and --revision %s", name, rev);
            rc = 2;
            goto done;
        }
        memcpy(repo, name, n_repo);
        repo[n_repo] = '\0';
        name = repo;
        rev = at_rev;
    }
    if (!name || !*name) {
        cli_err("pull: no model: give ORG/NAME (see embd pull --help)");
        rc = 2;
    } else if (!cli_is_repo_id(name)) {
        cli_err("pull: \"%s\" is not a hub model name (ORG/NAME: letters, digits, '.', '_', "
                "'-')",
                name);
        rc = 2;
    } else if (!embd_hub_revision_ok(rev)) {
        cli_err("pull: --revision \"%s\" is not a branch, tag or commit name", rev);
        rc = 2;
    } else {
        char snap[PULL_PATH];
        rc =
            cli_pull(name, rev, cli_get(&a, "cache-dir"), cli_flag(&a, "quiet"), snap, sizeof snap);
        if (rc == 0) printf("%s\n", snap);
    }
done:
    cli_args_free(&a);
    return rc;
}
