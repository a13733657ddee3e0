/* search.c — `embd search`: embeds a query (or one query per stdin line) and
 * prints the store's exact top-k by inner product as JSON lines. */
#include "cli.h"
#include "server/request.h"
#include "store/vstore.h"

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

static void file_put(void *f, const char *s, size_t n) {
    fwrite(s, 1, n, f);
}

/* Writes s[0..len) as a JSON string (srv_json_string: always valid JSON). */
static void json_string(FILE *f, const char *s, size_t len) {
    srv_json_string(file_put, f, s, len);
}

/* Prints the hits of one query; query_index < 0 omits the "query" field. */
static int print_hits(const struct embd_store_hit *hits, size_t n, long query_index) {
    for (size_t r = 0; r < n; r++) {
        if (query_index >= 0)
            printf("{\"query\":%ld,\"rank\":%zu,\"id\":", query_index, r + 1);
        else
            printf("{\"rank\":%zu,\"id\":", r + 1);
        json_string(stdout, hits[r].id, hits[r].id_len);
        printf(",\"score\":%.9g,\"text\":", (double)hits[r].score);
        json_string(stdout, hits[r].text, hits[r].text_len);
        if (fputs("}\n", stdout) < 0) return 1;
    }
    return ferror(stdout) ? 1 : 0;
}

int cmd_search(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(
        &a, "search", search_opts, (int)(sizeof search_opts / sizeof search_opts[0]), argc, argv,
        "embd search -m DIR --store PATH|URL --query TEXT|- [-k 10] [--prefix STR] [--exact]",
        "Embeds a query with the model that built the store and prints the k most\n"
        "similar documents, one JSON line per hit (the embedded store scores every\n"
        "record; PostgreSQL uses its HNSW index unless --exact):\n"
        "{\"rank\":r,\"id\":...,\"score\":s,\"text\":...} with rank from 1 and score the\n"
        "inner product (the cosine for a normalising model). --query - reads one\n"
        "query per stdin line and adds \"query\":i (from 0) to each hit. Note: -q is\n"
        "--quiet, as in every command; the query is --query (or EMBD_QUERY).\n"
        "The embedded store is scored on the GPU the model runs on (--device auto\n"
        "that found one, or cuda[:N]; exact fp32 scores, ranked as on the CPU), else\n"
        "with BLAS on the CPU; a GPU failure logs a warning and the CPU takes over.");
    if (rc) {
        cli_args_free(&a);
        return rc < 0 ? 0 : rc;
    }
    embd_model *model = NULL;
    embd_ctx *ctx = NULL;
    embd_vstore *store = NULL;
    struct embd_store_hit *hits = NULL;
    float *qv = NULL;
    char *qs[QUERY_CHUNK] = {0};
    size_t ql[QUERY_CHUNK];
    size_t nq = 0;
    char *line = NULL;
    size_t line_cap = 0;
    struct embd_ctx_params cp;
    long k = 10;
    const char *path = cli_get(&a, "store"), *query = cli_get(&a, "query");

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
    if ((rc = cli_open_model(&a, &model))) goto done;
    rc = 1;
    if (embd_ctx_new(model, cp, &ctx) != EMBD_OK) {
        cli_err("%s", embd_last_error());
        goto done;
    }
    const int D = embd_model_dim(model);
    size_t count = 0;
    if (cli_open_store_for_search(model, ctx, &cp, path, &store, &count)) goto done;
    const bool exact = cli_flag(&a, "exact");
    size_t kk = (size_t)k < count ? (size_t)k : count;
    hits = calloc(kk ? kk : 1, sizeof *hits);
    qv = malloc((size_t)QUERY_CHUNK * (size_t)D * sizeof *qv);
    if (!hits || !qv) {
        cli_err("out of memory");
        goto done;
    }

    const bool many = !strcmp(query, "-");
    long first = 0; /* index of qs[0] among all queries */
    bool eof = false;
    while (!eof) {
        nq = 0;
        if (!many) {
            qs[0] = strdup(query);
            if (!qs[0]) {
                cli_err("out of memory");
                goto done;
            }
            ql[0] = strlen(query);
            nq = 1;
            eof = true;
        } else {
            while (nq < QUERY_CHUNK) {
                errno = 0;
                ssize_t got = getline(&line, &line_cap, stdin);
                if (got < 0) {
                    if (ferror(stdin)) {
                        cli_err("error reading queries: %s", strerror(errno));
                        goto done;
                    }
                    eof = true;
                    break;
                }
                size_t len = (size_t)got;
                if (len && line[len - 1] == '\n') len--;
                if (len && line[len - 1] == '\r') len--;
                qs[nq] = malloc(len + 1);
                if (!qs[nq]) {
                    cli_err("out of memory");
                    goto done;
                }
                memcpy(qs[nq], line, len);
                qs[nq][len] = '\0';
                ql[nq++] = len;
            }
        }
        if (nq == 0) break;
        if (embd_embed(ctx, (const char *const *)qs, ql, nq, qv) != EMBD_OK) {
            cli_err("query %ld: %s", first, embd_last_error());
            goto done;
        }
        for (size_t i = 0; i < nq; i++) {
            size_t nh = 0;
            if (embd_vstore_search(store, qv + i * (size_t)D, kk, exact, hits, &nh) != EMBD_OK) {
                cli_err("%s", embd_last_error());
                goto done;
            }
            if (print_hits(hits, nh, many ? first + (long)i : -1)) {
                cli_err("cannot write output: %s", strerror(errno));
                goto done;
            }
            free(qs[i]);
            qs[i] = NULL;
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
        free(qs[i]);
    free(line);
    free(qv);
    free(hits);
    embd_vstore_close(store);
    embd_ctx_free(ctx);
    embd_model_free(model);
    cli_args_free(&a);
    return rc;
}
