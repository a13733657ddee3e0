/* tokenize.c — `embd tokenize`: the ids the model sees for each input
 * ([CLS] ... [SEP], after truncation), one JSONL line per input. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static const struct cli_opt tokenize_opts[] = {
    {"input", 'i', true, "FILE", "-", "input file, - for stdin"},
    {"output", 'o', true, "FILE", "-", "output file, - for stdout"},
    {"input-format", 0, true, "FMT", "auto",
     "auto, lines or jsonl (auto: jsonl if the first line starts with '{')"},
    {"text-field", 0, true, "NAME", "text", "the JSONL field holding the text"},
};

int cmd_tokenize(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(
        &a, "tokenize", tokenize_opts, (int)(sizeof tokenize_opts / sizeof tokenize_opts[0]), argc,
        argv, "embd tokenize -m DIR [-i FILE|-] [-o FILE|-] [options]",
        "Writes the token ids of each input, as the model sees them ([CLS] ... [SEP],\n"
        "truncated to the model's max length): one {\"index\":i,\"ids\":[...]} per line.");
    if (rc) {
        cli_args_free(&a);
        return rc < 0 ? 0 : rc;
    }
    embd_model *model = NULL;
    struct cli_reader in = {0};
    bool in_open = false;
    FILE *out = stdout;
    int32_t *ids = NULL;
    enum cli_input_format fmt;
    if (cli_parse_input_format(cli_get(&a, "input-format"), &fmt)) {
        cli_err("tokenize: --input-format must be auto, lines or jsonl, not \"%s\"",
                cli_get(&a, "input-format"));
        rc = 2;
        goto done;
    }
    if ((rc = cli_open_model(&a, &model))) goto done;
    rc = 1;
    if (cli_reader_open(&in, cli_get(&a, "input"), fmt, cli_get(&a, "text-field"))) goto done;
    in_open = true;
    const char *opath = cli_get(&a, "output");
    if (strcmp(opath, "-")) {
        out = fopen(opath, "wb");
        if (!out) {
            cli_err("cannot open output %s", opath);
            out = stdout;
            goto done;
        }
    }
    size_t cap = (size_t)embd_model_max_tokens(model);
    ids = malloc(cap * sizeof *ids);
    if (!ids) {
        cli_err("out of memory");
        goto done;
    }
    size_t index = 0;
    int r;
    while ((r = cli_reader_next(&in)) == 1) {
        size_t n = 0;
        if (embd_tokenize(model, in.text, in.text_len, ids, cap, &n) != EMBD_OK) {
            cli_err("input %zu: %s", index, embd_last_error());
            goto done;
        }
        fprintf(out, "{\"index\":%zu,\"ids\":[", index);
        for (size_t i = 0; i < n; i++)
            fprintf(out, i ? ",%d" : "%d", ids[i]);
        if (fputs("]}\n", out) < 0) {
            cli_err("cannot write output");
            goto done;
        }
        index++;
    }
    if (r < 0) goto done;
    if (fflush(out) != 0) {
        cli_err("cannot write output");
        goto done;
    }
    rc = 0;
done:
    if (out != stdout && fclose(out) != 0 && rc == 0) {
        cli_err("cannot write output");
        rc = 1;
    }
    free(ids);
    if (in_open) cli_reader_close(&in);
    embd_model_free(model);
    cli_args_free(&a);
    return rc;
}
