/* embed.c — `embd embed`: texts in (lines or JSONL), vectors out (JSONL or
 * .npy), streamed in chunks so memory stays bounded, in input order. */
#include "cli.h"
#include "util/text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK_BYTES (8u << 20)
#define NPY_HEADER 128 /* fixed header size so the shape can be rewritten in place */

static const struct cli_opt embed_opts[] = {
    CLI_OPT_INPUT,
    CLI_OPT_OUTPUT,
    CLI_OPT_INPUT_FORMAT,
    CLI_OPT_TEXT_FIELD,
    {"format", 0, true, "FMT", "jsonl", "jsonl or npy (float32, shape (n, dim))"},
    {"prefix", 0, true, "STR", NULL, "prepended to every text, e.g. \"query: \""},
    {"prompt-name", 0, true, "NAME", NULL,
     "prepend the model's prompt of that name (config_sentence_transformers.json), e.g. "
     "query; not with --prefix"},
    {"dimensions", 0, true, "N", "0",
     "Matryoshka: keep the first N components (normalised again); 0 = all"},
    {"no-normalize", 0, false, NULL, NULL, "skip the model's L2 normalisation"},
    CLI_OPT_MAX_BATCH_TOKENS,
    CLI_OPT_PULL,
    {"cache", 0, true, "MODE", "mem",
     "embedding cache: off, mem (in memory, this run) or a directory (on disk, LMDB: shared "
     "by processes, kept across runs, so an interrupted run resumes where it stopped)"},
    {"cache-mem", 0, true, "MIB", "64", "in-memory cache budget in MiB"},
    {"cache-map-size", 0, true, "MIB", "4096", "the largest the disk cache may grow, in MiB"},
    {"chunk", 0, true, "N", "1024",
     "texts read and embedded per step (bounds memory; the disk cache commits per step)"},
};

static const char embed_usage[] =
    "embd embed -m DIR [-i FILE|-] [-o FILE|-] [--format jsonl|npy] [options]";
static const char embed_about[] =
    "Embeds texts, one per input line (plain text or JSONL objects), and writes\n"
    "one vector per input in input order: JSONL {\"index\":i,\"embedding\":[...]}\n"
    "or a float32 .npy of shape (n, dim). A NUL in a text (a NUL byte in a plain\n"
    "line, \\u0000 in JSONL) is a character like any other. JSONL writes a value\n"
    "that is not a finite number (NaN or infinity, from a broken model) as null,\n"
    "as embd serve does; .npy keeps it as it is. Shows progress on a terminal and a\n"
    "summary (docs/s, tokens/s) at the end.";

struct out_sink {
    FILE *f;
    const char *path; /* the output file (NULL: stdout) */
    bool close, npy, seekable;
    int dim;
    size_t rows;
    float *held; /* npy to a pipe: all rows kept until the end */
    size_t held_cap;
    struct embd_buf line; /* JSONL: the line being written */
};

static void npy_header(char *h, size_t rows, int dim) {
    memset(h, ' ', NPY_HEADER);
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    unsigned hl = NPY_HEADER - 10;
    h[8] = (char)(hl & 0xff);
    h[9] = (char)(hl >> 8);
    char dict[NPY_HEADER];
    int n = snprintf(dict, sizeof dict,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %d), }", rows, dim);
    memcpy(h + 10, dict, (size_t)n);
    h[NPY_HEADER - 1] = '\n';
}

static int sink_open(struct out_sink *s, const char *path, bool npy, int dim) {
    memset(s, 0, sizeof *s);
    s->npy = npy;
    s->dim = dim;
    s->f = cli_open_file(path, true, &s->close);
    if (!s->f) return 1;
    s->path = s->close ? path : NULL;
    if (npy) {
        s->seekable = fseek(s->f, 0, SEEK_CUR) == 0 && s->close;
        if (s->seekable) {
            /* a header numpy refuses ("\x93NUMPY" comes last), so that a
             * file cut short (a crash, a full disk) never reads as a valid
             * array of fewer rows */
            char h[NPY_HEADER];
            npy_header(h, 0, dim);
            memcpy(h, "\x93UNFINISHED", 11);
            if (fwrite(h, 1, NPY_HEADER, s->f) != NPY_HEADER) {
                cli_err("cannot write output: %s", strerror(errno));
                return 1;
            }
        }
    }
    return 0;
}

static int sink_write(struct out_sink *s, const float *vecs, size_t n, size_t first_index) {
    const size_t D = (size_t)s->dim;
    if (s->npy && s->seekable) {
        if (fwrite(vecs, sizeof(float) * D, n, s->f) != n) goto io;
    } else if (s->npy) {
        if (s->rows + n > s->held_cap) {
            size_t cap = s->held_cap ? s->held_cap * 2 : 4096;
            while (cap < s->rows + n)
                cap *= 2;
            float *h = realloc(s->held, cap * D * sizeof(float));
            if (!h) {
                cli_err("out of memory holding %zu vectors for .npy on a pipe (write to a file)",
                        s->rows + n);
                return 1;
            }
            s->held = h;
            s->held_cap = cap;
        }
        memcpy(s->held + s->rows * D, vecs, n * D * sizeof(float));
    } else {
        for (size_t i = 0; i < n; i++) {
            embd_buf_printf(&s->line, "{\"index\":%zu,\"embedding\":", first_index + i);
            embd_buf_json_floats(&s->line, vecs + i * D, D); /* NaN, inf: null */
            embd_buf_put(&s->line, "}\n", 2);
            if (cli_write_buf(s->f, &s->line)) return 1;
        }
    }
    s->rows += n;
    return 0;
io:
    cli_err("cannot write output: %s", strerror(errno));
    return 1;
}

static int sink_close(struct out_sink *s, bool ok) {
    int rc = 0;
    if (ok && s->npy) {
        char h[NPY_HEADER];
        npy_header(h, s->rows, s->dim);
        if (s->seekable) {
            if (fseek(s->f, 0, SEEK_SET) != 0 || fwrite(h, 1, NPY_HEADER, s->f) != NPY_HEADER)
                rc = 1;
        } else {
            if (fwrite(h, 1, NPY_HEADER, s->f) != NPY_HEADER ||
                (s->rows &&
                 fwrite(s->held, sizeof(float) * (size_t)s->dim, s->rows, s->f) != s->rows))
                rc = 1;
        }
    }
    if (fflush(s->f) != 0) rc = 1;
    if (s->close && fclose(s->f) != 0) rc = 1;
    if (rc) cli_err("cannot write output: %s", strerror(errno));
    /* an unfinished .npy file holds no array: removed (JSONL keeps the
     * lines written, each with its index) */
    if ((rc || !ok) && s->npy && s->seekable && s->path && unlink(s->path) == 0)
        cli_err("removed the unfinished %s", s->path);
    free(s->held);
    embd_buf_free(&s->line);
    return rc;
}

int cmd_embed(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(&a, "embed", embed_opts, CLI_N_OPTS(embed_opts), argc, argv, embed_usage,
                       embed_about);
    if (rc) return rc < 0 ? 0 : rc;
    struct cli_engine eng = {.multi_ok = true};
    struct cli_reader in = {0};
    struct out_sink out = {0};
    bool out_open = false, in_open = false;
    char **texts = NULL;
    size_t *lens = NULL;
    float *vecs = NULL;
    struct embd_ctx_params cp;
    struct cli_input input;
    long mbt = 0;

    static const char *const formats[] = {"jsonl", "npy"};
    int npy = 0;
    if ((rc = cli_get_choice(&a, "format", formats, 2, &npy))) goto done;
    if ((rc = cli_input_opts(&a, &input))) goto done;
    if ((rc = cli_ctx_params(&a, &cp))) goto done;
    if ((rc = cli_cache_params(&a, &cp))) goto done;
    const char *cache = cli_get(&a, "cache");
    long chunk = 0;
    if ((rc = cli_get_int(&a, "chunk", 1, 1L << 20, &chunk))) goto done;
    if ((rc = cli_get_int(&a, "max-batch-tokens", 0, 1L << 26, &mbt))) goto done;
    cp.max_batch_tokens = (int)mbt;
    cp.normalize = !cli_flag(&a, "no-normalize");
    cp.prefix = cli_get(&a, "prefix");
    long dims = 0;
    if ((rc = cli_get_int(&a, "dimensions", 0, 1L << 20, &dims))) goto done;
    const char *prompt_name = cli_get(&a, "prompt-name");
    if ((rc = cli_one_of(&a, "prompt-name", "prefix", &prompt_name, &cp.prefix))) goto done;
    if ((rc = cli_pull_missing(&a, cli_get(&a, "model"))) || (rc = cli_engine_open(&a, cp, &eng)))
        goto done;
    struct embd_embed_opts eo = embd_embed_default_opts();
    if (prompt_name && (rc = cli_prompt_prefix(&a, "prompt-name", eng.model, &eo.prefix)))
        goto done;
    if (dims > embd_model_dim(eng.model)) {
        cli_err("embed: --dimensions %ld is more than the model's %d", dims,
                embd_model_dim(eng.model));
        rc = 2;
        goto done;
    }
    eo.dimensions = (int)dims;
    rc = 1;
    if (embd_model_is_reranker(eng.model)) {
        cli_err("embed: %s is a cross-encoder: it scores (query, document) pairs and makes no "
                "embeddings (use embd rerank)",
                cli_get(&a, "model"));
        goto done;
    }
    if (cli_reader_open(&in, cli_get(&a, "input"), &input)) goto done;
    in_open = true;
    if ((rc = cli_check_output(cli_get(&a, "output"), &in))) goto done;
    rc = 1;
    const int D = dims ? (int)dims : embd_model_dim(eng.model);
    if (sink_open(&out, cli_get(&a, "output"), npy, D)) goto done;
    out_open = true;

    texts = calloc((size_t)chunk, sizeof *texts);
    lens = calloc((size_t)chunk, sizeof *lens);
    vecs = malloc((size_t)chunk * (size_t)D * sizeof *vecs);
    if (!texts || !lens || !vecs) {
        cli_err("out of memory");
        goto done;
    }
    bool quiet = cli_flag(&a, "quiet");
    struct cli_progress prog;
    cli_progress_init(&prog, quiet);
    size_t total = 0;
    int r = 1;
    while (r == 1) {
        size_t n = 0, bytes = 0;
        while (n < (size_t)chunk && bytes < CHUNK_BYTES && (r = cli_reader_next(&in)) == 1) {
            texts[n] = in.text;
            lens[n] = in.text_len;
            in.text = NULL; /* take ownership */
            bytes += lens[n];
            n++;
        }
        if (r < 0) {
            for (size_t i = 0; i < n; i++)
                free(texts[i]), texts[i] = NULL;
            goto done;
        }
        if (n == 0) break;
        /* several GPUs: the scheduler hands rounds of the chunk to each */
        enum embd_status est =
            eng.sched
                ? embd_sched_embed_opts(eng.sched, (const char *const *)texts, lens, n, vecs, NULL,
                                        &eo, NULL)
                : embd_embed_ex(eng.ctx, (const char *const *)texts, lens, n, vecs, &eo, NULL);
        if (est != EMBD_OK) {
            cli_err("inputs %zu..%zu: %s", total, total + n - 1, embd_last_error());
            for (size_t i = 0; i < n; i++)
                free(texts[i]), texts[i] = NULL;
            goto done;
        }
        for (size_t i = 0; i < n; i++)
            free(texts[i]), texts[i] = NULL;
        if (sink_write(&out, vecs, n, total)) goto done;
        total += n;
        cli_progress_update(&prog, total, in.consumed, in.size, false);
    }
    cli_progress_update(&prog, total, in.consumed, in.size, true);
    out_open = false;
    if (sink_close(&out, true)) goto done;
    if (!quiet) {
        struct embd_ctx_stats st;
        embd_ctx_get_stats(eng.ctx, &st);
        for (int i = 1; i < eng.n_ctx; i++) { /* the other GPUs' work */
            struct embd_ctx_stats o;
            embd_ctx_get_stats(eng.ctxs[i], &o);
            st.tokens += o.tokens;
            st.cache_hits += o.cache_hits;
            st.cache_misses += o.cache_misses;
        }
        double el = cli_elapsed(&prog);
        char cache_note[96] = "";
        if (strcmp(cache, "off"))
            snprintf(cache_note, sizeof cache_note, "; cache: %llu hits, %llu misses",
                     (unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses);
        fprintf(stderr,
                "embd: embedded %zu texts (%llu tokens) in %.2f s: %.1f docs/s, %.0f tokens/s "
                "[%s]%s\n",
                total, (unsigned long long)st.tokens, el, el > 0 ? (double)total / el : 0.0,
                el > 0 ? (double)st.tokens / el : 0.0, embd_ctx_backend(eng.ctx), cache_note);
    }
    rc = 0;

done:
    if (out_open) sink_close(&out, false);
    if (in_open) cli_reader_close(&in);
    free(texts);
    free(lens);
    free(vecs);
    cli_engine_close(&eng);
    cli_args_free(&a);
    return rc;
}
