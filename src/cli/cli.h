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
/* The number of entries of an option table. */
#define CLI_N_OPTS(opts) ((int)(sizeof(opts) / sizeof((opts)[0])))

/* `embd index` commits its input in chunks of at most this many documents
 * (or CLI_INDEX_CHUNK_BYTES of text), each durable before the next is read. */
#define CLI_INDEX_CHUNK_TEXTS 1024
#define CLI_INDEX_CHUNK_BYTES (8u << 20)

/* Options several commands share, for their option tables. */
#define CLI_OPT_INPUT                                                                              \
    { "input", 'i', true, "FILE", "-", "input file, - for stdin" }
#define CLI_OPT_OUTPUT                                                                             \
    { "output", 'o', true, "FILE", "-", "output file, - for stdout" }
#define CLI_OPT_INPUT_FORMAT                                                                       \
    {                                                                                              \
        "input-format", 0, true, "FMT", "auto",                                                    \
            "auto, lines or jsonl (auto: jsonl if the first line starts with '{')"                 \
    }
#define CLI_OPT_TEXT_FIELD                                                                         \
    { "text-field", 0, true, "NAME", "text", "the JSONL field holding the text" }
#define CLI_OPT_MAX_BATCH_TOKENS                                                                   \
    {                                                                                              \
        "max-batch-tokens", 0, true, "N", "0",                                                     \
            "tokens per forward pass, at least the model's max input length (256 for "             \
            "all-MiniLM-L6-v2); 0 = auto: 4096 on the CPU, 16384 on a GPU"                         \
    }

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
 * --help (the caller exits 0); on those, a is already freed (cli_args_free
 * on it is a no-op). `usage` is the synopsis line; `about` a paragraph. */
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

/* Two options that exclude each other (--api-key and --api-key-file,
 * --prefix and --prompt-name), their values in *vx and *vy: when both are
 * set, the one from the stronger place wins (a flag beats the environment,
 * which beats --config) and the other is set to NULL; set in the same place,
 * prints a usage error naming both and returns 2. Else 0. */
int cli_one_of(const struct cli_args *a, const char *x, const char *y, const char **vx,
               const char **vy);

/* Parses an integer option into *out within [lo, hi]; prints a usage error and returns 2 if bad. */
int cli_get_int(const struct cli_args *a, const char *name, long lo, long hi, long *out);
/* Sets *out to the index in choices[0..n) of option `name`'s value; prints a
 * usage error ("--name must be a, b or c, not ...") and returns 2 if it is
 * none of them. */
int cli_get_choice(const struct cli_args *a, const char *name, const char *const *choices, int n,
                   int *out);

/* Prints "embd: <message>" on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Loads the model named by the common options. Returns 0, 1 (runtime
 * error, printed) or 2 (usage error, printed). A hub name (ORG/NAME) not
 * in the cache is an error that says how to pull it; nothing is downloaded
 * here (see cli_pull_missing). */
int cli_open_model(const struct cli_args *a, embd_model **model);
/* The model a command embeds with and its context. */
struct cli_engine {
    embd_model *model;
    embd_ctx *ctx; /* the (first) context */
    bool multi_ok; /* set by the caller: --device may name several GPUs */
    int n_ctx;     /* several GPUs: a context each, */
    embd_ctx *ctxs[EMBD_SCHED_MAX_CTX];
    embd_sched *sched; /* behind one scheduler (NULL with one context) */
};
/* Loads the model and creates a context on it with params p; when --device
 * names several GPUs (cuda:all, cuda:N,M; only with e->multi_ok), a context
 * per GPU and a scheduler over them. Returns 0, 1 or 2 (error printed);
 * cli_engine_close frees what it opened either way. */
int cli_engine_open(const struct cli_args *a, struct embd_ctx_params p, struct cli_engine *e);
void cli_engine_close(struct cli_engine *e);
/* The text of the model's prompt named by option `opt` (e.g. "prompt-name";
 * not given: *prefix = NULL). Returns 0, or 2 after a usage error naming
 * the option, where it came from and the prompts the model declares. */
int cli_prompt_prefix(const struct cli_args *a, const char *opt, const embd_model *model,
                      const char **prefix);
/* The GPUs --device names when it names several (cuda:all: every device
 * embd_gpu_monitor finds; cuda:N,M,...): their ordinals in idx (at most
 * cap), *n their count; *n = 0 for a single device. Returns 0, or 2 after a
 * usage error (a malformed list, a device twice, cuda:all with none). */
int cli_device_list(const struct cli_args *a, int *idx, int cap, int *n);
/* Context params from --device, --dtype and --threads (for several GPUs, the
 * first one's index). Returns 0 or 2. */
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

/* Input: one text per line, plain or a JSONL object with a text field (and,
 * for `embd index`, an id field). Texts are bytes with a length: a NUL in
 * a plain line, or "\u0000" in a JSONL string, is a character like any other. */
enum cli_input_format { CLI_INPUT_AUTO, CLI_INPUT_LINES, CLI_INPUT_JSONL };

struct cli_input {
    enum cli_input_format format; /* AUTO: JSONL if the first line starts with '{' */
    const char *text_field;       /* JSONL: the field holding the text (a string) */
    const char *id_field;         /* JSONL: the field holding the id (a string or an integer),
                                     or NULL for no ids; a plain line's id is its line number */
    bool skip_blank;              /* skip lines of only spaces and tabs */
};

/* Fills *in from the command's --input-format, --text-field and --id-field
 * (those it has; skip_blank false). Returns 0, or 2 after printing a usage error. */
int cli_input_opts(const struct cli_args *a, struct cli_input *in);

struct cli_reader {
    struct cli_input in;
    FILE *f;
    bool close;
    char *line;
    size_t line_cap;
    size_t line_no; /* the current input's line, from 1 */
    /* The current input, NUL-terminated after its length. Owned by the
     * reader, which reuses them; a caller may take one (and set it NULL). */
    char *text;
    size_t text_len;
    char *id; /* with in.id_field only */
    size_t id_len;
    long long size;     /* input size in bytes if a regular file, else -1 */
    long long consumed; /* bytes read so far */
};

/* Opens path for reading ("rb") or, with `write`, writing ("wb"); "-" or
 * NULL is stdin or stdout. Sets *owned when the caller must fclose it.
 * Returns NULL after printing "cannot open input|output PATH: reason". */
FILE *cli_open_file(const char *path, bool write, bool *owned);

/* Opens "-" or NULL (stdin) or a path. Returns 0 or 1 (error printed). */
int cli_reader_open(struct cli_reader *r, const char *path, const struct cli_input *in);
/* 2 after printing a usage error when out_path (not "-") names the file the
 * reader reads (opening it for writing would truncate the input), else 0.
 * Call it before opening the output. */
int cli_check_output(const char *out_path, const struct cli_reader *in);
/* Reads the next input into r->text (and r->id). Returns 1 on an input, 0 at
 * the end, -1 on an error (printed, naming the line). */
int cli_reader_next(struct cli_reader *r);
void cli_reader_close(struct cli_reader *r);

/* Output: writes b to f and empties it. Returns 0, or 1 after printing the
 * error (b ran out of memory, or the write failed). */
struct embd_buf;
int cli_write_buf(FILE *f, struct embd_buf *b);

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

/* Whether name can be a hub model name, ORG/NAME[@REVISION] (util/hub.h),
 * as embd_model_resolve takes it (common.c). */
bool cli_is_repo_id(const char *name);
/* Downloads hub repository `repo` at `revision` (a branch, tag or commit)
 * into the Hugging Face cache (cache_dir, or the one HF_HUB_CACHE / HF_HOME
 * name): the files a sentence-transformers model needs, checked, then
 * linked into snapshots/COMMIT/ (see pull.c). Progress and a summary on
 * stderr unless quiet; the snapshot's folder into snapshot (cap bytes; may
 * be NULL). Returns 0, or 1 (2 for a bad HF_ENDPOINT) after printing one
 * "embd: pull: ..." line. */
int cli_pull(const char *repo, const char *revision, const char *cache_dir, bool quiet,
             char *snapshot, size_t cap);
/* Option --pull of the commands that load models (embed, serve). */
#define CLI_OPT_PULL                                                                               \
    {                                                                                              \
        "pull", 0, false, NULL, NULL,                                                              \
            "when -m ORG/NAME is not in the Hugging Face cache, download it first (as embd "       \
            "pull does); without it nothing is downloaded"                                         \
    }
/* With --pull (cli_flag(a, "pull")), pulls model `name` (main) when it is
 * a hub name (ORG/NAME) that is neither a directory nor in the Hugging Face
 * cache; without it, does nothing (cli_open_model then says how to pull).
 * Returns 0, or 1 after printing the error. */
int cli_pull_missing(const struct cli_args *a, const char *name);

/* Subcommands. */
int cmd_embed(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_rerank(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_pull(int argc, char **argv);

#endif
