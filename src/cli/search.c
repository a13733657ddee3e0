/* search.c — `embd search`: embeds a query (or one query per stdin line) and
 * prints the store's exact top-k by inner product as JSON lines. */
#include "cli.h"
#include "store/vstore.h"
#include "util/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUERY_CHUNK 256

static const struct cli_opt search_opts[] = {
    {"store", 0, true, "PATH|URL", NULL, "store directory or postgresql:// URL (embd index)"},
    {"query", 0, true, "TEXT", NULL,
     "the query (also EMBD_QUERY); - reads one query per line from stdin"},
    {"k", 'k', true, "N", "10", "hits per query"},
    {"prefix", 0, true, "STR", NULL, "prepended to every query, e.g. \"query: \""},
    {"exact", 0, false, NULL, NULL,
     "PostgreSQL: score every row instead of using the HNSW index (embedded: always exact)"},
};

static const char search_usage[] =
    "embd search -m DIR --store PATH|URL --query TEXT|- [-k 10] [--prefix STR] [--exact]";
static const char search_about[] =
    "Embeds a query with the model that built the store and prints the k most\n"
    "similar documents, one JSON line per hit (the embedded store scores every\n"
    "record; PostgreSQL uses its HNSW index unless --exact):\n"
    "{\"rank\":r,\"id\":...,\"score\":s,\"text\":...} with rank from 1 and score the\n"
    "inner product (the cosine for a normalising model). --query - reads one\n"
    "query per stdin line (a NUL byte in it is a character) and adds \"query\":i\n"
    "(from 0) to each hit. Note: -q is --quiet, as in every command; the query\n"
    "is --query (or EMBD_QUERY).\n"
    "The embedded store is scored on the GPU the model runs on (--device auto\n"
    "that found one, or cuda[:N]; exact fp32 scores, ranked as on the CPU), else\n"
    "with BLAS on the CPU; a GPU failure logs a warning and the CPU takes over.";

static int print_hits(struct embd_buf *b, const struct embd_store_hit *hits, size_t n,
                      long query_index);

int cmd_search(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(&a, "search", search_opts, CLI_N_OPTS(search_opts), argc, argv, search_usage,
                       search_about);
    if (rc) return rc < 0 ? 0 : rc;
    const char *path = cli_get(&a, "store"), *query = cli_get(&a, "query");
    struct cli_engine eng = {0};
    embd_vstore *store = NULL;
    struct embd_store_hit *hits = NULL;
    float *qv = NULL;
    const char *qs[QUERY_CHUNK];
    size_t ql[QUERY_CHUNK];
    char *owned[QUERY_CHUNK] = {0}; /* the queries read from stdin */
    struct cli_reader in = {0};
    bool in_open = false;
    struct embd_buf out = {0};
    struct embd_ctx_params cp;
    long k = 10;

    if (!path || !*path) {
        cli_err("search: no store: give --store PATH (or EMBD_STORE)");
        rc = 2;
        goto done;
    }
    if (!query) {
        cli_err("search: no query: give --query TEXT, --query - for stdin, or EMBD_QUERY "
                "(-q is --quiet)");
        rc = 2;
        goto done;
    }
    if ((rc = cli_get_int(&a, "k", 1, 1L << 24, &k))) goto done;
    if ((rc = cli_ctx_params(&a, &cp))) goto done;
    cp.normalize = true;
    cp.prefix = cli_get(&a, "prefix");
    if ((rc = cli_engine_open(&a, cp, &eng))) goto done;
    rc = 1;
    const int D = embd_model_dim(eng.model);
    size_t count = 0;
    if (cli_open_store_for_search(eng.model, eng.ctx, &cp, path, &store, &count)) goto done;
    const bool exact = cli_flag(&a, "exact");
    size_t kk = (size_t)k < count ? (size_t)k : count;
    hits = calloc(kk ? kk : 1, sizeof *hits);
    qv = malloc((size_t)QUERY_CHUNK * (size_t)D * sizeof *qv);
    if (!hits || !qv) {
        cli_err("out of memory");
        goto done;
    }

    const bool many = !strcmp(query, "-");
    if (many) {
        const struct cli_input lines = {.format = CLI_INPUT_LINES};
        if (cli_reader_open(&in, "-", &lines)) goto done;
        in_open = true;
    }
    long first = 0; /* index of qs[0] among all queries */
    int r = 1;      /* cli_reader_next: 0 at the end */
    while (r == 1) {
        size_t nq = 0;
        if (!many) {
            qs[nq] = query;
            ql[nq++] = strlen(query);
            r = 0;
        }
        while (many && nq < QUERY_CHUNK && (r = cli_reader_next(&in)) == 1) {
            qs[nq] = owned[nq] = in.text;
            ql[nq++] = in.text_len;
            in.text = NULL; /* taken */
        }
        if (r < 0) goto done;
        if (nq == 0) break;
        if (embd_embed(eng.ctx, qs, ql, nq, qv) != EMBD_OK) {
            cli_err("query %ld: %s", first, embd_last_error());
            goto done;
        }
        for (size_t i = 0; i < nq; i++) {
            size_t nh = 0;
            if (embd_vstore_search(store, qv + i * (size_t)D, kk, exact, hits, &nh) != EMBD_OK) {
                cli_err("%s", embd_last_error());
                goto done;
            }
            if (print_hits(&out, hits, nh, many ? first + (long)i : -1)) goto done;
            free(owned[i]);
            owned[i] = NULL;
        }
        first += (long)nq;
        if (fflush(stdout)) {
            cli_err("cannot write output: %s", strerror(errno));
            goto done;
        }
    }
    rc = 0;

done:
    for (size_t i = 0; i < QUERY_CHUNK; i++)
        free(owned[i]);
    if (in_open) cli_reader_close(&in);
    embd_buf_free(&out);
    free(qv);
    free(hits);
    embd_vstore_close(store);
    cli_engine_close(&eng);
    cli_args_free(&a);
    return rc;
}

/* Writes the hits of one query to stdout, one JSON line each (a NUL or
 * invalid UTF-8 in a text escaped: always valid JSON); query_index < 0
 * omits the "query" field. Returns 0 or 1 (error printed). */
static int print_hits(struct embd_buf *b, const struct embd_store_hit *hits, size_t n,
                      long query_index) {
    for (size_t r = 0; r < n; r++) {
        if (query_index >= 0) embd_buf_printf(b, "{\"query\":%ld,", query_index);
        embd_buf_printf(b, "%s\"rank\":%zu,\"id\":", query_index >= 0 ? "" : "{", r + 1);
        embd_buf_json_string(b, hits[r].id, hits[r].id_len);
        embd_buf_str(b, ",\"score\":");
        embd_buf_json_float(b, hits[r].score);
        embd_buf_str(b, ",\"text\":");
        embd_buf_json_string(b, hits[r].text, hits[r].text_len);
        embd_buf_str(b, "}\n");
        if (cli_write_buf(stdout, b)) return 1;
    }
    return 0;
}
