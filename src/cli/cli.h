/* cli.h — shared pieces of the `embd` subcommands: options from flags,
 * EMBD_* environment variables and a JSON config file (flags beat the
 * environment beats the file beats defaults), input readers, messages. */
#ifndef EMBD_CLI_H
#define EMBD_CLI_H

#include "embd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CLI_MAX_OPTS 48

/* `embd index` commits its input in chunks of at most this many documents
 * (or CLI_INDEX_CHUNK_BYTES of text), each durable before the next is read. */
#define CLI_INDEX_CHUNK_TEXTS 1024
#define CLI_INDEX_CHUNK_BYTES (8u << 20)

struct cli_opt {
    const char *name;    /* long name without dashes, e.g. "max-batch-tokens" */
    char short_name;     /* 'm', or 0 */
    bool has_arg;        /* false: a boolean flag */
    const char *metavar; /* e.g. "DIR" */
    const char *def;     /* default value, or NULL */
    const char *help;
};

struct cli_args {
    const char *cmd;
    const struct cli_opt *opts[CLI_MAX_OPTS];
    int n_opts;
    const char *values[CLI_MAX_OPTS]; /* resolved value, or NULL */
    char *owned[CLI_MAX_OPTS];        /* values copied from the config file */
};

/* Options every subcommand takes (model, device, dtype, threads, quiet, config, help). */
extern const struct cli_opt cli_common_opts[];
extern const int cli_n_common_opts;

/* Parses argv (after the subcommand) against the common options plus `opts`.
 * Returns 0 on success, 2 after printing a usage error, -1 after printing
 * --help (the caller exits 0). `usage` is the synopsis line; `about` a paragraph. */
int cli_parse(struct cli_args *a, const char *cmd, const struct cli_opt *opts, int n_opts, int argc,
              char **argv, const char *usage, const char *about);
void cli_args_free(struct cli_args *a);

const char *cli_get(const struct cli_args *a, const char *name);
bool cli_flag(const struct cli_args *a, const char *name);

/* Whether option `name` was given (flag, environment or config file), not defaulted. */
bool cli_is_set(const struct cli_args *a, const char *name);
/* Where option `name` came from, for messages: " (from EMBD_NAME)", " (from
 * --config FILE)", or "" for a flag or the default. Writes and returns buf. */
const char *cli_source(const struct cli_args *a, const char *name, char *buf, size_t cap);

/* Parses an integer option into *out within [lo, hi]; prints a usage error and returns 2 if bad. */
int cli_get_int(const struct cli_args *a, const char *name, long lo, long hi, long *out);

/* Prints "embd: <message>" on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Loads the model and creates a context from the common options. Returns 0,
 * 1 (runtime error, printed) or 2 (usage error, printed). */
int cli_open_model(const struct cli_args *a, embd_model **model);
int cli_ctx_params(const struct cli_args *a, struct embd_ctx_params *p);
/* Sets the cache fields of *p from --cache, --cache-mem and --cache-map-size
 * (refusing a size given on the command line that the mode does not use).
 * Returns 0 or 2 (usage error, printed). */
int cli_cache_params(const struct cli_args *a, struct embd_ctx_params *p);

/* Opens the vector store at `path` (a directory or a postgresql:// URL) for
 * `model`: writable and created when missing for indexing, read-only for
 * search; warns about a dropped torn tail and sets *count to the records held.
 * Returns 0, or 1 after printing the error. */
struct embd_vstore;
int cli_open_store(const embd_model *model, const char *path, bool writable,
                   struct embd_vstore **store, size_t *count);
/* As cli_open_store, read-only, for searching: an embedded store is scored
 * on the GPU the context runs on (embd_ctx_backend "cuda", device
 * cp->device_index), else on the CPU. */
int cli_open_store_for_search(const embd_model *model, const embd_ctx *ctx,
                              const struct embd_ctx_params *cp, const char *path,
                              struct embd_vstore **store, size_t *count);

/* Input: plain lines or JSONL objects with a text field. */
enum cli_input_format { CLI_INPUT_AUTO, CLI_INPUT_LINES, CLI_INPUT_JSONL };

struct cli_reader {
    FILE *f;
    bool close;
    enum cli_input_format format;
    const char *text_field;
    char *line;
    size_t line_cap;
    size_t line_no;
    char *text; /* the current text (owned) */
    size_t text_len;
    long long size;     /* input size in bytes if a regular file, else -1 */
    long long consumed; /* bytes read so far */
};

/* Opens "-" (stdin) or a path. Returns 0 or 1 (error printed). */
int cli_reader_open(struct cli_reader *r, const char *path, enum cli_input_format format,
                    const char *text_field);
/* Reads the next input into r->text / r->text_len. Returns 1 on an input,
 * 0 at the end, -1 on an error (printed, with the line number). */
int cli_reader_next(struct cli_reader *r);
void cli_reader_close(struct cli_reader *r);
int cli_parse_input_format(const char *s, enum cli_input_format *out);

/* Progress on stderr when it is a terminal: done items, rate, and percentage
 * and ETA when the total input size is known. */
struct cli_progress {
    bool enabled;
    double start, last;
};
void cli_progress_init(struct cli_progress *p, bool quiet);
void cli_progress_update(struct cli_progress *p, size_t done, long long bytes_done,
                         long long bytes_total, bool final);
/* Seconds since cli_progress_init. */
double cli_elapsed(const struct cli_progress *p);

/* Subcommands. */
int cmd_embed(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
