/* index.c — `embd index`: texts in (plain lines or JSONL with an id), embedded
 * in chunks and appended to a vector store (embedded directory or PostgreSQL
 * URL), each chunk made durable (fsync / commit) before the next one starts. */
#include "cli.h"
#include "store/vstore.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(CLI_INDEX_CHUNK_TEXTS == 1024,
               "embd index --help names the chunk size: mend it too");

static const struct cli_opt index_opts[] = {
    {"store", 0, true, "PATH|URL", NULL,
     "store directory (created when missing or empty) or postgresql:// URL"},
    {"input", 'i', true, "FILE", "-", "input file, - for stdin"},
    {"input-format", 0, true, "FMT", "auto",
     "auto, lines or jsonl (auto: jsonl if the first line starts with '{')"},
    {"id-field", 0, true, "NAME", "id", "the JSONL field holding the id (string or integer)"},
    {"text-field", 0, true, "NAME", "text", "the JSONL field holding the text"},
    {"max-batch-tokens", 0, true, "N", "0",
     "tokens per forward pass; 0 = auto: 4096 on the CPU, 16384 on a GPU"},
};

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

static bool blank(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t') return false;
    return true;
}

static char *dup_bytes(const char *s, size_t len) {
    char *d = malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* Turns one input line into an (id, text) pair appended to the chunk.
 * Returns 0, or 1 after printing an error naming the line. */
static int take_line(struct chunk *c, enum cli_input_format fmt, const char *line, size_t len,
                     size_t line_no, const char *id_field, const char *text_field) {
    char idbuf[32];
    const char *id = NULL, *text = NULL;
    size_t id_len = 0, text_len = 0;
    cJSON *obj = NULL;
    int rc = 1;
    if (fmt == CLI_INPUT_LINES) {
        id_len = (size_t)snprintf(idbuf, sizeof idbuf, "%zu", line_no);
        id = idbuf;
        text = line;
        text_len = len;
    } else {
        obj = cJSON_ParseWithLength(line, len);
        if (!cJSON_IsObject(obj)) {
            cli_err("input line %zu: not a JSON object (use --input-format lines for plain text)",
                    line_no);
            goto done;
        }
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, id_field);
        if (cJSON_IsString(f)) {
            id = f->valuestring;
            id_len = strlen(id);
        } else if (cJSON_IsNumber(f) && f->valuedouble == floor(f->valuedouble) &&
                   fabs(f->valuedouble) < 9007199254740992.0) {
            id_len = (size_t)snprintf(idbuf, sizeof idbuf, "%lld", (long long)f->valuedouble);
            id = idbuf;
        } else {
            cli_err("input line %zu: %s field \"%s\" (a string or an integer; see --id-field)",
                    line_no, f ? "bad" : "no", id_field);
            goto done;
        }
        f = cJSON_GetObjectItemCaseSensitive(obj, text_field);
        if (!cJSON_IsString(f)) {
            cli_err("input line %zu: no string field \"%s\" (see --text-field)", line_no,
                    text_field);
            goto done;
        }
        text = f->valuestring;
        text_len = strlen(text);
    }
    if (id_len < 1 || id_len > EMBD_STORE_MAX_ID) {
        cli_err("input line %zu: the id must be 1 to %u bytes, not %zu", line_no, EMBD_STORE_MAX_ID,
                id_len);
        goto done;
    }
    if (text_len > EMBD_STORE_MAX_TEXT) {
        cli_err("input line %zu: text of %zu bytes (the store's limit is %u)", line_no, text_len,
                EMBD_STORE_MAX_TEXT);
        goto done;
    }
    c->ids[c->n] = dup_bytes(id, id_len);
    c->texts[c->n] = dup_bytes(text, text_len);
    if (!c->ids[c->n] || !c->texts[c->n]) {
        free(c->ids[c->n]);
        free(c->texts[c->n]);
        c->ids[c->n] = c->texts[c->n] = NULL;
        cli_err("out of memory reading input line %zu", line_no);
        goto done;
    }
    c->id_lens[c->n] = id_len;
    c->text_lens[c->n] = text_len;
    c->n++;
    c->bytes += text_len;
    rc = 0;
done:
    cJSON_Delete(obj);
    return rc;
}

int cmd_index(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(
        &a, "index", index_opts, (int)(sizeof index_opts / sizeof index_opts[0]), argc, argv,
        "embd index -m DIR --store PATH|URL [-i FILE|-] [--input-format auto|lines|jsonl] "
        "[options]",
        "Embeds documents and appends them to a vector store: a directory (created\n"
        "when missing), or PostgreSQL + pgvector given a postgresql:// URL (the\n"
        "extension, tables and, after loading, an HNSW index are created as needed). JSONL input "
        "gives each document an id (--id-field,\n"
        "a string or an integer) and a text (--text-field); plain lines get their\n"
        "line numbers as ids (\"1\", \"2\", ...). Blank lines are skipped. A document\n"
        "whose id is already in the store replaces it. Each chunk of ~1024 documents\n"
        "is synced to disk before the next, so an interrupted run keeps what it\n"
        "finished. A store built with another model is refused. Search the store\n"
        "with embd search.");
    if (rc) {
        cli_args_free(&a);
        return rc < 0 ? 0 : rc;
    }
    embd_model *model = NULL;
    embd_ctx *ctx = NULL;
    embd_vstore *store = NULL;
    struct cli_reader in = {0};
    bool in_open = false;
    struct chunk *c = NULL;
    float *vecs = NULL;
    struct embd_ctx_params cp;
    enum cli_input_format fmt;
    long mbt = 0;
    const char *path = cli_get(&a, "store");

    if (!path || !*path) {
        cli_err("index: no store: give --store PATH (or EMBD_STORE)");
        rc = 2;
        goto done;
    }
    if (cli_parse_input_format(cli_get(&a, "input-format"), &fmt)) {
        cli_err("index: --input-format must be auto, lines or jsonl, not \"%s\"",
                cli_get(&a, "input-format"));
        rc = 2;
        goto done;
    }
    if ((rc = cli_ctx_params(&a, &cp))) goto done;
    if ((rc = cli_get_int(&a, "max-batch-tokens", 0, 1L << 26, &mbt))) goto done;
    cp.max_batch_tokens = (int)mbt;
    cp.normalize = true;
    if ((rc = cli_open_model(&a, &model))) goto done;
    rc = 1;
    if (embd_ctx_new(model, cp, &ctx) != EMBD_OK) {
        cli_err("%s", embd_last_error());
        goto done;
    }
    const int D = embd_model_dim(model);
    size_t before = 0, after = 0;
    if (cli_open_store(model, path, true, &store, &before)) goto done;

    if (cli_reader_open(&in, cli_get(&a, "input"), CLI_INPUT_LINES, NULL)) goto done;
    in_open = true;
    c = calloc(1, sizeof *c);
    vecs = malloc((size_t)CLI_INDEX_CHUNK_TEXTS * (size_t)D * sizeof *vecs);
    if (!c || !vecs) {
        cli_err("out of memory");
        goto done;
    }
    const bool quiet = cli_flag(&a, "quiet");
    const char *id_field = cli_get(&a, "id-field"), *text_field = cli_get(&a, "text-field");
    struct cli_progress prog;
    cli_progress_init(&prog, quiet);
    size_t total = 0;
    int r = 1;
    while (r == 1) {
        while (c->n < CLI_INDEX_CHUNK_TEXTS && c->bytes < CLI_INDEX_CHUNK_BYTES &&
               (r = cli_reader_next(&in)) == 1) {
            if (blank(in.text, in.text_len)) continue;
            if (fmt == CLI_INPUT_AUTO) {
                size_t i = 0;
                while (in.text[i] == ' ' || in.text[i] == '\t')
                    i++;
                fmt = in.text[i] == '{' ? CLI_INPUT_JSONL : CLI_INPUT_LINES;
            }
            if (take_line(c, fmt, in.text, in.text_len, in.line_no, id_field, text_field)) {
                r = -1;
                break;
            }
        }
        if (r < 0) {
            if (total) cli_err("(the %zu documents before it were indexed)", total);
            goto done;
        }
        if (c->n == 0) break;
        if (embd_embed(ctx, (const char *const *)c->texts, c->text_lens, c->n, vecs) != EMBD_OK) {
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
                embd_ctx_backend(ctx), embd_vstore_is_pg(path) ? "(postgresql)" : path, after,
                before);
    }
    rc = 0;

done:
    if (c) chunk_clear(c);
    free(c);
    free(vecs);
    if (in_open) cli_reader_close(&in);
    embd_vstore_close(store);
    embd_ctx_free(ctx);
    embd_model_free(model);
    cli_args_free(&a);
    return rc;
}
