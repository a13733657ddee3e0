/* log.c — one line per event on stderr, as text ("embd: warn: cache: ...")
 * or JSON ({"ts":...,"level":"warn","event":"cache","msg":"..."}). The level
 * and format come from embd_log_configure, else EMBD_LOG_LEVEL and
 * EMBD_LOG_FORMAT, else warn and text. */
#include "util/log.h"
#include "util/text.h"
#include "util/util.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static atomic_int log_level = EMBD_LOG_WARN;
static atomic_int log_json = 0;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static atomic_int configured = 0; /* set by embd_log_configure: the environment is not read */

static int parse_level(const char *s, enum embd_log_level *out) {
    for (int i = 0; i < 4; i++)
        if (!strcasecmp(s, level_names[i])) {
            *out = (enum embd_log_level)i;
            return 0;
        }
    if (!strcasecmp(s, "warning")) {
        *out = EMBD_LOG_WARN;
        return 0;
    }
    return -1;
}

static int parse_format(const char *s, int *json) {
    if (!strcasecmp(s, "text")) {
        *json = 0;
        return 0;
    }
    if (!strcasecmp(s, "json")) {
        *json = 1;
        return 0;
    }
    return -1;
}

/* Reads the environment once; bad values are ignored (the CLI validates them). */
static void read_env(void) {
    if (atomic_load(&configured)) return;
    const char *l = getenv("EMBD_LOG_LEVEL");
    const char *f = getenv("EMBD_LOG_FORMAT");
    enum embd_log_level lv;
    int js;
    if (l && *l && parse_level(l, &lv) == 0) atomic_store(&log_level, (int)lv);
    if (f && *f && parse_format(f, &js) == 0) atomic_store(&log_json, js);
}

enum embd_status embd_log_configure(const char *level, const char *format) {
    pthread_once(&env_once, read_env);
    enum embd_log_level lv = EMBD_LOG_WARN;
    int js = 0;
    if (level && parse_level(level, &lv))
        return embd_error(EMBD_ERR_INVALID_ARG,
                          "log level must be error, warn, info or debug, not \"%s\"", level);
    if (format && parse_format(format, &js))
        return embd_error(EMBD_ERR_INVALID_ARG, "log format must be text or json, not \"%s\"",
                          format);
    atomic_store(&configured, 1);
    if (level) atomic_store(&log_level, (int)lv);
    if (format) atomic_store(&log_json, js);
    return EMBD_OK;
}

bool embd_log_enabled(enum embd_log_level level) {
    pthread_once(&env_once, read_env);
    return (int)level <= atomic_load(&log_level);
}

#define MSG_MAX 1024  /* a message's bytes, NUL included (longer ones are cut) */
#define EVENT_MAX 64  /* an event name's bytes (longer ones are cut) */
#define HEADER_MAX 96 /* {"ts":"...","level":"...","event": */
/* Room for a JSON line of any message: every byte escaped (\u00XX) at worst. */
#define LOG_LINE_MAX (HEADER_MAX + 6 * (EVENT_MAX + MSG_MAX) + 32)

/* A line being written into a fixed buffer (JSON or text). */
struct line {
    char p[LOG_LINE_MAX];
    size_t len;
};

static void line_put(void *ctx, const char *s, size_t n) {
    struct line *l = ctx;
    if (n > sizeof l->p - l->len) n = sizeof l->p - l->len; /* never: LOG_LINE_MAX fits all */
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

void embd_log(enum embd_log_level level, const char *event, const char *fmt, ...) {
    if (!embd_log_enabled(level)) return;
    char msg[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';

    struct line line;
    const char *lv = level_names[level < 0 || level > EMBD_LOG_DEBUG ? 0 : level];
    if (atomic_load(&log_json)) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        const int n = snprintf(line.p, HEADER_MAX,
                               "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
                               "\"event\":",
                               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                               tm.tm_sec, ts.tv_nsec / 1000000, lv);
        line.len = n < 0 ? 0 : n < HEADER_MAX ? (size_t)n : HEADER_MAX - 1;
        embd_json_string(line_put, &line, event ? event : "",
                         event ? strnlen(event, EVENT_MAX) : 0);
        line_put(&line, ",\"msg\":", 7);
        embd_json_string(line_put, &line, msg, strlen(msg));
        line_put(&line, "}\n", 2);
    } else {
        const int n = snprintf(line.p, sizeof line.p, "embd: %s: %s%s%s\n", lv, event ? event : "",
                               event ? ": " : "", msg);
        line.len = n < 0 ? 0 : (size_t)n;
        if (line.len >= sizeof line.p) {
            line.len = sizeof line.p - 1;
            line.p[line.len - 1] = '\n';
        }
    }
    /* One write per line, so that lines from several threads do not interleave. */
    fwrite(line.p, 1, line.len, stderr);
}
