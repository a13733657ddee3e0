/* rerank.c — `embd rerank`: scores every input document against one query
 * with a cross-encoder and prints them best first as JSON lines. */
#include "cli.h"
#include "util/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RERANK_CHUNK 256 /* documents per call (the progress line's step) */

static const struct cli_opt rerank_opts[] = {
    {"query", 0, true, "TEXT", NULL,
     "the query the documents are scored against (also EMBD_QUERY)"},
    CLI_OPT_INPUT,
    CLI_OPT_INPUT_FORMAT,
    CLI_OPT_TEXT_FIELD,
    {"top-n", 0, true, "N", "0", "print only the N best documents; 0 = all"},
    {"raw-scores", 0, false, NULL, NULL,
     "print the classifier's logits, without the model's activation (sigmoid)"},
    {"no-truncate", 0, false, NULL, NULL,
     "fail on a query-document pair over the model's token limit instead of cutting it"},
    {"return-text", 0, false, NULL, NULL, "add each document's text to its line"},
};

static const char rerank_usage[] =
    "embd rerank -m DIR --query TEXT [-i FILE|-] [--input-format auto|lines|jsonl]\n"
    "                   [--text-field text] [--top-n N] [--raw-scores] [--no-truncate]\n"
    "                   [--return-text]";
static const char rerank_about[] =
    "Scores each input document against the query with a cross-encoder (a\n"
    "BertForSequenceClassification model with one label, such as\n"
    "cross-encoder/ms-marco-MiniLM-L-6-v2) and prints one JSON line per document,\n"
    "best first (equal scores in input order): {\"index\":i,\"score\":s} with i the\n"
    "document's place in the input, from 0, and s the model's score (after the\n"
    "sigmoid its config names, as sentence-transformers' CrossEncoder.predict;\n"
    "--raw-scores: the logit). Each pair is [CLS] query [SEP] document [SEP],\n"
    "cut as Hugging Face's longest_first when over the model's limit. Input: one\n"
    "document per line, or JSONL with the text in --text-field. All documents are\n"
    "held in memory (they are ranked together). Note: -q is --quiet; the query is\n"
    "--query (or EMBD_QUERY).";

struct ranked {
    float score;
    size_t index;
};

static int ranked_cmp(const void *a, const void *b) {
    const struct ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

int cmd_rerank(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(&a, "rerank", rerank_opts, CLI_N_OPTS(rerank_opts), argc, argv, rerank_usage,
                       rerank_about);
    if (rc) return rc < 0 ? 0 : rc;
    const char *query = cli_get(&a, "query");
    struct cli_engine eng = {0};
    struct cli_reader in = {0};
    bool in_open = false;
    struct cli_input fmt;
    struct embd_ctx_params cp;
    struct embd_buf out = {0};
    char **docs = NULL;
    size_t *lens = NULL, n = 0, cap = 0;
    float *scores = NULL;
    struct ranked *order = NULL;
    long top = 0;

    if (!query) {
        cli_err("rerank: no query: give --query TEXT or EMBD_QUERY (-q is --quiet)");
        rc = 2;
        goto done;
    }
    if ((rc = cli_get_int(&a, "top-n", 0, 1L << 30, &top))) goto done;
    if ((rc = cli_input_opts(&a, &fmt))) goto done;
    if ((rc = cli_ctx_params(&a, &cp))) goto done;
    cp.cache_bytes = 0;
    if ((rc = cli_engine_open(&a, cp, &eng))) goto done;
    rc = 1;
    if (!embd_model_is_reranker(eng.model)) {
        cli_err("rerank: %s is not a cross-encoder (BertForSequenceClassification); embd rerank "
                "needs a reranker such as cross-encoder/ms-marco-MiniLM-L-6-v2",
                cli_get(&a, "model"));
        goto done;
    }
    if (cli_reader_open(&in, cli_get(&a, "input"), &fmt)) goto done;
    in_open = true;
    int r;
    while ((r = cli_reader_next(&in)) == 1) {
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 1024;
            char **d = realloc(docs, nc * sizeof *d);
            if (d) docs = d;
            size_t *l = d ? realloc(lens, nc * sizeof *l) : NULL;
            if (!d || !l) {
                cli_err("out of memory reading document %zu", n);
                goto done;
            }
            lens = l;
            cap = nc;
        }
        docs[n] = in.text;
        lens[n++] = in.text_len;
        in.text = NULL; /* taken */
    }
    if (r < 0) goto done;
    scores = malloc((n ? n : 1) * sizeof *scores);
    order = malloc((n ? n : 1) * sizeof *order);
    const char **qs = malloc(RERANK_CHUNK * sizeof *qs);
    size_t *qls = malloc(RERANK_CHUNK * sizeof *qls);
    if (!scores || !order || !qs || !qls) {
        free(qs);
        free(qls);
        cli_err("out of memory");
        goto done;
    }
    for (size_t i = 0; i < RERANK_CHUNK; i++) {
        qs[i] = query;
        qls[i] = strlen(query);
    }
    struct embd_rerank_opts ro = embd_rerank_default_opts();
    ro.raw_scores = cli_flag(&a, "raw-scores");
    ro.truncate = !cli_flag(&a, "no-truncate");
    struct cli_progress prog;
    cli_progress_init(&prog, cli_flag(&a, "quiet"));
    enum embd_status st = EMBD_OK;
    struct embd_embed_info info = {0};
    for (size_t i = 0; i < n && st == EMBD_OK; i += RERANK_CHUNK) {
        const size_t k = n - i < RERANK_CHUNK ? n - i : RERANK_CHUNK;
        st = embd_rerank(eng.ctx, qs, qls, (const char *const *)docs + i, lens + i, k, scores + i,
                         &ro, &info);
        if (st == EMBD_ERR_TOO_LONG)
            cli_err("document %zu: the pair has %zu tokens; the model takes at most %d (drop "
                    "--no-truncate to cut it)",
                    i + info.bad_input, info.bad_tokens, embd_model_max_tokens(eng.model));
        else if (st != EMBD_OK)
            cli_err("%s", embd_last_error());
        cli_progress_update(&prog, i + k, -1, -1, i + k == n);
    }
    free(qs);
    free(qls);
    if (st != EMBD_OK) goto done;
    for (size_t i = 0; i < n; i++)
        order[i] = (struct ranked){scores[i], i};
    qsort(order, n, sizeof *order, ranked_cmp);
    const size_t shown = top > 0 && (size_t)top < n ? (size_t)top : n;
    const bool with_text = cli_flag(&a, "return-text");
    for (size_t j = 0; j < shown; j++) {
        embd_buf_printf(&out, "{\"index\":%zu,\"score\":", order[j].index);
        embd_buf_json_float(&out, order[j].score);
        if (with_text) {
            embd_buf_str(&out, ",\"text\":");
            embd_buf_json_string(&out, docs[order[j].index], lens[order[j].index]);
        }
        embd_buf_str(&out, "}\n");
        if (out.len >= 1 << 16 && cli_write_buf(stdout, &out)) goto done;
    }
    if (cli_write_buf(stdout, &out)) goto done;
    if (fflush(stdout)) {
        cli_err("cannot write output: %s", strerror(errno));
        goto done;
    }
    rc = 0;

done:
    for (size_t i = 0; i < n; i++)
        free(docs[i]);
    free(docs);
    free(lens);
    free(scores);
    free(order);
    embd_buf_free(&out);
    if (in_open) cli_reader_close(&in);
    cli_engine_close(&eng);
    cli_args_free(&a);
    return rc;
}
