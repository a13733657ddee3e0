/* log.h — the library's event log: levels, one line per event on stderr,
 * plain text or JSON lines (EMBD_LOG_LEVEL, EMBD_LOG_FORMAT, or
 * embd_log_configure). */
#ifndef EMBD_LOG_H
#define EMBD_LOG_H

#include "embd.h"

/* Whether an event at `level` would be written (cheap; use it to skip
 * formatting work for debug events). */
bool embd_log_enabled(enum embd_log_level level);

/* Writes one event: `event` is a short machine-readable name ("cache",
 * "fallback", ...), the rest a printf-style message on one line (newlines
 * are replaced by spaces). Thread-safe; never fails visibly. */
void embd_log(enum embd_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
