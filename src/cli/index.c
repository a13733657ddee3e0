/* index.c — `embd index`: texts in (plain lines or JSONL with an id), embedded
 * in chunks and appended to a vector store (embedded directory or PostgreSQL
 * URL), each chunk made durable (fsync / commit) before the next one starts. */
#include "cli.h"
#include "store/vstore.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(CLI_INDEX_CHUNK_TEXTS == 1024,
               "embd index --help names the chunk size: mend it too");

static const struct cli_opt index_opts[] = {
    {"store", 0, true, "PATH|URL", NULL,
     "store directory (created when missing or empty) or postgresql:// URL"},
    CLI_OPT_INPUT,
    CLI_OPT_INPUT_FORMAT,
    {"id-field", 0, true, "NAME", "id", "the JSONL field holding the id (string or integer)"},
    CLI_OPT_TEXT_FIELD,
    CLI_OPT_MAX_BATCH_TOKENS,
};

static const char index_usage[] =
    "embd index -m DIR --store PATH|URL [-i FILE|-] [--input-format auto|lines|jsonl] "
    "[options]";
static const char index_about[] =
    "Embeds documents and appends them to a vector store: a directory (created\n"
    "when missing), or PostgreSQL + pgvector given a postgresql:// URL (the\n"
    "extension, tables and, after loading, an HNSW index are created as needed). JSONL input "
    "gives each document an id (--id-field,\n"
    "a string or an integer) and a text (--text-field); plain lines get their\n"
    "line numbers as ids (\"1\", \"2\", ...). Blank lines are skipped. A document\n"
    "whose id is already in the store replaces it. Each chunk of ~1024 documents\n"
    "is synced to disk before the next, so an interrupted run keeps what it\n"
    "finished. A store built with another model is refused. Search the store\n"
    "with embd search. A NUL in a text (a NUL byte in a plain line, \\u0000 in\n"
    "JSONL) is a character: the store keeps it, and search writes it back.";

/* One chunk of documents: ids and texts owned (malloc), vectors (n, D). */
struct chunk {
    char *ids[CLI_INDEX_CHUNK_TEXTS];
    size_t id_lens[CLI_INDEX_CHUNK_TEXTS];
    char *texts[CLI_INDEX_CHUNK_TEXTS];
    size_t text_lens[CLI_INDEX_CHUNK_TEXTS];
    size_t n, bytes;
};

static void chunk_clear(struct chunk *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->ids[i]);
        free(c->texts[i]);
        c->ids[i] = c->texts[i] = NULL;
    }
    c->n = c->bytes = 0;
}

/* Moves the reader's current (id, text) into the chunk. Returns 0, or 1
 * after printing an error naming the line. */
static int take_input(struct chunk *c, struct cli_reader *in) {
    if (in->id_len < 1 || in->id_len > EMBD_STORE_MAX_ID) {
        cli_err("input line %zu: the id must be 1 to %u bytes, not %zu", in->line_no,
                EMBD_STORE_MAX_ID, in->id_len);
        return 1;
    }
    if (in->text_len > EMBD_STORE_MAX_TEXT) {
        cli_err("input line %zu: text of %zu bytes (the store's limit is %u)", in->line_no,
                in->text_len, EMBD_STORE_MAX_TEXT);
        return 1;
    }
    c->ids[c->n] = in->id;
    c->id_lens[c->n] = in->id_len;
    c->texts[c->n] = in->text;
    c->text_lens[c->n] = in->text_len;
    in->id = in->text = NULL; /* taken */
    c->bytes += c->text_lens[c->n++];
    return 0;
}

int cmd_index(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(&a, "index", index_opts, CLI_N_OPTS(index_opts), argc, argv, index_usage,
                       index_about);
    if (rc) return rc < 0 ? 0 : rc;
    embd_vstore *store = NULL;
    struct cli_engine eng = {0};
    struct cli_reader in = {0};
    bool in_open = false;
    struct chunk *c = NULL;
    float *vecs = NULL;
    struct embd_ctx_params cp;
    struct cli_input input;
    long mbt = 0;
    const char *path = cli_get(&a, "store");

    if (!path || !*path) {
        cli_err("index: no store: give --store PATH (or EMBD_STORE)");
        rc = 2;
        goto done;
    }
    if ((rc = cli_input_opts(&a, &input))) goto done;
    input.skip_blank = true;
    if ((rc = cli_ctx_params(&a, &cp))) goto done;
    if ((rc = cli_get_int(&a, "max-batch-tokens", 0, 1L << 26, &mbt))) goto done;
    cp.max_batch_tokens = (int)mbt;
    cp.normalize = true;
    if ((rc = cli_engine_open(&a, cp, &eng))) goto done;
    rc = 1;
    const int D = embd_model_dim(eng.model);
    size_t before = 0, after = 0;
    if (cli_open_store(eng.model, path, true, &store, &before)) goto done;

    if (cli_reader_open(&in, cli_get(&a, "input"), &input)) goto done;
    in_open = true;
    c = calloc(1, sizeof *c);
    vecs = malloc((size_t)CLI_INDEX_CHUNK_TEXTS * (size_t)D * sizeof *vecs);
    if (!c || !vecs) {
        cli_err("out of memory");
        goto done;
    }
    const bool quiet = cli_flag(&a, "quiet");
    struct cli_progress prog;
    cli_progress_init(&prog, quiet);
    size_t total = 0;
    int r = 1;
    while (r == 1) {
        while (c->n < CLI_INDEX_CHUNK_TEXTS && c->bytes < CLI_INDEX_CHUNK_BYTES &&
               (r = cli_reader_next(&in)) == 1) {
            if (take_input(c, &in)) {
                r = -1;
                break;
            }
        }
        if (r < 0) {
            if (total) cli_err("(the %zu documents before it were indexed)", total);
            goto done;
        }
        if (c->n == 0) break;
        if (embd_embed(eng.ctx, (const char *const *)c->texts, c->text_lens, c->n, vecs) !=
            EMBD_OK) {
            cli_err("documents %zu..%zu: %s", total + 1, total + c->n, embd_last_error());
            goto done;
        }
        if (embd_vstore_add(store, (const char *const *)c->ids, c->id_lens,
                            (const char *const *)c->texts, c->text_lens, vecs, c->n,
                            NULL) != EMBD_OK ||
            embd_vstore_flush(store) != EMBD_OK) {
            cli_err("%s", embd_last_error());
            goto done;
        }
        total += c->n;
        chunk_clear(c);
        cli_progress_update(&prog, total, in.consumed, in.size, false);
    }
    cli_progress_update(&prog, total, in.consumed, in.size, true);
    if (embd_vstore_finish(store) != EMBD_OK || embd_vstore_count(store, &after) != EMBD_OK) {
        cli_err("%s", embd_last_error());
        goto done;
    }
    if (!quiet) {
        double el = cli_elapsed(&prog);
        size_t added = after - before;
        fprintf(stderr,
                "embd: indexed %zu documents (%zu added, %zu replaced) in %.2f s: %.1f docs/s "
                "[%s]; store %s holds %zu records (%zu before)\n",
                total, added, total - added, el, el > 0 ? (double)total / el : 0.0,
                embd_ctx_backend(eng.ctx), embd_vstore_is_pg(path) ? "(postgresql)" : path, after,
                before);
    }
    rc = 0;

done:
    if (c) chunk_clear(c);
    free(c);
    free(vecs);
    if (in_open) cli_reader_close(&in);
    embd_vstore_close(store);
    cli_engine_close(&eng);
    cli_args_free(&a);
    return rc;
}
