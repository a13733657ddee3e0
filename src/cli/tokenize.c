/* tokenize.c — `embd tokenize`: the ids the model sees for each input
 * ([CLS] ... [SEP], after truncation), one JSONL line per input. */
#include "cli.h"
#include "util/text.h"

#include <stdlib.h>
#include <string.h>

static const struct cli_opt tokenize_opts[] = {
    CLI_OPT_INPUT,
    CLI_OPT_OUTPUT,
    CLI_OPT_INPUT_FORMAT,
    CLI_OPT_TEXT_FIELD,
};

static const char tokenize_usage[] = "embd tokenize -m DIR [-i FILE|-] [-o FILE|-] [options]";
static const char tokenize_about[] =
    "Writes the token ids of each input, as the model sees them ([CLS] ... [SEP],\n"
    "truncated to the model's max length): one {\"index\":i,\"ids\":[...]} per line.\n"
    "A NUL in a text (a NUL byte in a plain line, \\u0000 in JSONL) is a character:\n"
    "the BERT normalizer drops it, as Hugging Face tokenizers does.";

int cmd_tokenize(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(&a, "tokenize", tokenize_opts, CLI_N_OPTS(tokenize_opts), argc, argv,
                       tokenize_usage, tokenize_about);
    if (rc) return rc < 0 ? 0 : rc;
    embd_model *model = NULL;
    struct cli_reader in = {0};
    bool in_open = false;
    FILE *out = NULL;
    bool out_owned = false;
    int32_t *ids = NULL;
    struct embd_buf line = {0};
    struct cli_input input;
    if ((rc = cli_input_opts(&a, &input))) goto done;
    if ((rc = cli_open_model(&a, &model))) goto done;
    rc = 1;
    if (cli_reader_open(&in, cli_get(&a, "input"), &input)) goto done;
    in_open = true;
    if (!(out = cli_open_file(cli_get(&a, "output"), true, &out_owned))) goto done;
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
        embd_buf_printf(&line, "{\"index\":%zu,\"ids\":[", index);
        for (size_t i = 0; i < n; i++)
            embd_buf_printf(&line, i ? ",%d" : "%d", ids[i]);
        embd_buf_put(&line, "]}\n", 3);
        if (cli_write_buf(out, &line)) goto done;
        index++;
    }
    if (r < 0) goto done;
    if (fflush(out) != 0) {
        cli_err("cannot write output");
        goto done;
    }
    rc = 0;
done:
    if (out_owned && fclose(out) != 0 && rc == 0) {
        cli_err("cannot write output");
        rc = 1;
    }
    embd_buf_free(&line);
    free(ids);
    if (in_open) cli_reader_close(&in);
    embd_model_free(model);
    cli_args_free(&a);
    return rc;
}
