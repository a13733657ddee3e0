/* embed.c — `embd embed`: texts in (lines or JSONL), vectors out (JSONL or
 * .npy), streamed in chunks so memory stays bounded, in input order. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK_BYTES (8u << 20)
#define NPY_HEADER 128 /* fixed header size so the shape can be rewritten in place */

static const struct cli_opt embed_opts[] = {
    {"input", 'i', true, "FILE", "-", "input file, - for stdin"},
    {"output", 'o', true, "FILE", "-", "output file, - for stdout"},
    {"input-format", 0, true, "FMT", "auto",
     "auto, lines or jsonl (auto: jsonl if the first line starts with '{')"},
    {"text-field", 0, true, "NAME", "text", "the JSONL field holding the text"},
    {"format", 0, true, "FMT", "jsonl", "jsonl or npy (float32, shape (n, dim))"},
    {"prefix", 0, true, "STR", NULL, "prepended to every text, e.g. \"query: \""},
    {"no-normalize", 0, false, NULL, NULL, "skip the model's L2 normalisation"},
    {"max-batch-tokens", 0, true, "N", "16384", "tokens per forward pass"},
    {"cache", 0, true, "MODE", "mem",
     "embedding cache: off, mem (in memory, this run) or a directory (on disk, LMDB: shared "
     "by processes, kept across runs, so an interrupted run resumes where it stopped)"},
    {"cache-mem", 0, true, "MIB", "64", "in-memory cache budget in MiB"},
    {"cache-map-size", 0, true, "MIB", "4096", "the largest the disk cache may grow, in MiB"},
    {"chunk", 0, true, "N", "1024",
     "texts read and embedded per step (bounds memory; the disk cache commits per step)"},
};

struct out_sink {
    FILE *f;
    bool close, npy, seekable;
    int dim;
    size_t rows;
    float *held; /* npy to a pipe: all rows kept until the end */
    size_t held_cap;
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
    if (!strcmp(path, "-")) {
        s->f = stdout;
    } else {
        s->f = fopen(path, "wb");
        if (!s->f) {
            cli_err("cannot open output %s: %s", path, strerror(errno));
            return 1;
        }
        s->close = true;
    }
    if (npy) {
        s->seekable = fseek(s->f, 0, SEEK_CUR) == 0 && s->close;
        if (s->seekable) {
            char h[NPY_HEADER];
            npy_header(h, 0, dim);
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
            if (fprintf(s->f, "{\"index\":%zu,\"embedding\":[", first_index + i) < 0) goto io;
            for (size_t d = 0; d < D; d++)
                if (fprintf(s->f, d ? ",%.9g" : "%.9g", (double)vecs[i * D + d]) < 0) goto io;
            if (fputs("]}\n", s->f) < 0) goto io;
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
    free(s->held);
    return rc;
}

/* Whether option `name` was given as a flag (not the environment, a config
 * file or the default). */
static bool given_as_flag(const struct cli_args *a, const char *name) {
    char src[8];
    return cli_is_set(a, name) && !cli_source(a, name, src, sizeof src)[0];
}

int cmd_embed(int argc, char **argv) {
    struct cli_args a;
    int rc =
        cli_parse(&a, "embed", embed_opts, (int)(sizeof embed_opts / sizeof embed_opts[0]), argc,
                  argv, "embd embed -m DIR [-i FILE|-] [-o FILE|-] [--format jsonl|npy] [options]",
                  "Embeds texts, one per input line (plain text or JSONL objects), and writes\n"
                  "one vector per input in input order: JSONL {\"index\":i,\"embedding\":[...]}\n"
                  "or a float32 .npy of shape (n, dim). Shows progress on a terminal and a\n"
                  "summary (docs/s, tokens/s) at the end.");
    if (rc) {
        cli_args_free(&a);
        return rc < 0 ? 0 : rc;
    }
    embd_model *model = NULL;
    embd_ctx *ctx = NULL;
    struct cli_reader in = {0};
    struct out_sink out = {0};
    bool out_open = false, in_open = false;
    char **texts = NULL;
    size_t *lens = NULL;
    float *vecs = NULL;
    struct embd_ctx_params cp;
    enum cli_input_format fmt;
    long mbt = 0;

    const char *format = cli_get(&a, "format");
    if (strcmp(format, "jsonl") && strcmp(format, "npy")) {
        cli_err("embed: --format must be jsonl or npy, not \"%s\"", format);
        rc = 2;
        goto done;
    }
    if (cli_parse_input_format(cli_get(&a, "input-format"), &fmt)) {
        cli_err("embed: --input-format must be auto, lines or jsonl, not \"%s\"",
                cli_get(&a, "input-format"));
        rc = 2;
        goto done;
    }
    if ((rc = cli_ctx_params(&a, &cp))) goto done;
    const char *cache = cli_get(&a, "cache");
    long cache_mib = 0, map_mib = 0;
    if ((rc = cli_get_int(&a, "cache-mem", 0, 1L << 20, &cache_mib))) goto done;
    if ((rc = cli_get_int(&a, "cache-map-size", 1, 1L << 24, &map_mib))) goto done;
    if (!cache[0]) {
        cli_err("embed: --cache must be off, mem or a directory");
        rc = 2;
        goto done;
    }
    /* Both on the command line and one of them unused: say so rather than
     * ignore it (from the environment or a config file they are defaults). */
    const char *unused = NULL;
    if (!strcmp(cache, "off") && given_as_flag(&a, "cache-mem"))
        unused = "--cache-mem applies only to --cache mem or a directory";
    else if ((!strcmp(cache, "off") || !strcmp(cache, "mem")) &&
             given_as_flag(&a, "cache-map-size"))
        unused = "--cache-map-size applies only to a disk cache (--cache DIR)";
    if (unused && given_as_flag(&a, "cache")) {
        cli_err("embed: conflicting options: --cache %s: %s", cache, unused);
        rc = 2;
        goto done;
    }
    cp.cache_bytes = strcmp(cache, "off") ? (size_t)cache_mib << 20 : 0;
    cp.cache_dir = strcmp(cache, "off") && strcmp(cache, "mem") ? cache : NULL;
    cp.cache_map_bytes = (size_t)map_mib << 20;
    long chunk = 0;
    if ((rc = cli_get_int(&a, "chunk", 1, 1L << 20, &chunk))) goto done;
    if ((rc = cli_get_int(&a, "max-batch-tokens", 2, 1L << 26, &mbt))) goto done;
    cp.max_batch_tokens = (int)mbt;
    cp.normalize = !cli_flag(&a, "no-normalize");
    cp.prefix = cli_get(&a, "prefix");
    if ((rc = cli_open_model(&a, &model))) goto done;
    if (embd_ctx_new(model, cp, &ctx) != EMBD_OK) {
        cli_err("%s", embd_last_error());
        rc = 1;
        goto done;
    }
    rc = 1;
    if (cli_reader_open(&in, cli_get(&a, "input"), fmt, cli_get(&a, "text-field"))) goto done;
    in_open = true;
    const int D = embd_model_dim(model);
    if (sink_open(&out, cli_get(&a, "output"), !strcmp(format, "npy"), D)) goto done;
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
        if (embd_embed(ctx, (const char *const *)texts, lens, n, vecs) != EMBD_OK) {
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
        embd_ctx_get_stats(ctx, &st);
        double el = cli_elapsed(&prog);
        char cache_note[96] = "";
        if (strcmp(cache, "off"))
            snprintf(cache_note, sizeof cache_note, "; cache: %llu hits, %llu misses",
                     (unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses);
        fprintf(stderr,
                "embd: embedded %zu texts (%llu tokens) in %.2f s: %.1f docs/s, %.0f tokens/s "
                "[%s]%s\n",
                total, (unsigned long long)st.tokens, el, el > 0 ? (double)total / el : 0.0,
                el > 0 ? (double)st.tokens / el : 0.0, embd_ctx_backend(ctx), cache_note);
    }
    rc = 0;

done:
    if (out_open) sink_close(&out, false);
    if (in_open) cli_reader_close(&in);
    free(texts);
    free(lens);
    free(vecs);
    embd_ctx_free(ctx);
    embd_model_free(model);
    cli_args_free(&a);
    return rc;
}
