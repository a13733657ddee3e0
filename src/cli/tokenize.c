/* tokenize.c — `embd tokenize`: the ids the model sees for each input
 * ([CLS] ... [SEP], after truncation), one JSONL line per input; with
 * --offsets also each token's string and byte range in the input. */
#include "cli.h"
#include "util/text.h"

#include <stdlib.h>
#include <string.h>

static const struct cli_opt tokenize_opts[] = {
    CLI_OPT_INPUT,
    CLI_OPT_OUTPUT,
    CLI_OPT_INPUT_FORMAT,
    CLI_OPT_TEXT_FIELD,
    {"offsets", 0, false, NULL, NULL,
     "also \"tokens\" (each id's string) and \"offsets\" ([start,stop] byte ranges)"},
    {"no-special", 0, false, NULL, NULL, "without the special tokens ([CLS], [SEP])"},
};

static const char tokenize_usage[] = "embd tokenize -m DIR [-i FILE|-] [-o FILE|-] [options]";
static const char tokenize_about[] =
    "Writes the token ids of each input, as the model sees them ([CLS] ... [SEP],\n"
    "truncated to the model's max length): one {\"index\":i,\"ids\":[...]} per line.\n"
    "A NUL in a text (a NUL byte in a plain line, \\u0000 in JSONL) is a character:\n"
    "the BERT normalizer drops it, as Hugging Face tokenizers does.\n"
    "--offsets adds \"tokens\":[\"[CLS]\",\"hello\",\"##s\",...] and\n"
    "\"offsets\":[[0,0],[0,5],...]: each token's [start,stop) in bytes of the text's\n"
    "UTF-8 (as the line holds it, or as the JSONL string decodes), as Hugging Face\n"
    "tokenizers' offsets (these count characters in Python): [0,0] for [CLS] and\n"
    "[SEP]; a word's [UNK] spans the word; invalid UTF-8 is read as U+FFFD per\n"
    "invalid sequence and the offsets count the input's own bytes. SentencePiece\n"
    "(Unigram) models too (<s> ... </s>; a \"\u2581\" added before a word spans its\n"
    "first character, one standing for a space the space; \"tokens\" gives an\n"
    "unknown piece by the text it stands for, as tokenizers does).\n"
    "--no-special leaves out [CLS] and [SEP] (add_special_tokens=False; the\n"
    "truncation then keeps the model's max length in word pieces).";

/* The text of a token that Hugging Face's Encoding.tokens shows by the text it
 * stands for (a SentencePiece <unk>: "🧿", not "<unk>"): text[start..stop),
 * unless that is the token's own string typed in the text (an added token
 * matched, with the spaces its lstrip / rstrip took in), which stays as it is
 * (*t, *tl: the token's string on entry). */
static void token_text(const char *text, size_t start, size_t stop, const char **t, size_t *tl) {
    if (stop <= start) return;
    size_t a = start, b = stop;
    while (a < b && text[a] && strchr(" \t\n\r", text[a]))
        a++;
    while (b > a && text[b - 1] && strchr(" \t\n\r", text[b - 1]))
        b--;
    if (*t && b - a == *tl && memcmp(text + a, *t, *tl) == 0) return;
    *t = text + start;
    *tl = stop - start;
}

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
    size_t *starts = NULL, *stops = NULL;
    uint8_t *specials = NULL;
    const bool offsets = cli_flag(&a, "offsets"), special = !cli_flag(&a, "no-special");
    struct embd_buf line = {0};
    struct cli_input input;
    if ((rc = cli_input_opts(&a, &input))) goto done;
    if ((rc = cli_open_model(&a, &model))) goto done;
    rc = 1;
    if (cli_reader_open(&in, cli_get(&a, "input"), &input)) goto done;
    in_open = true;
    if ((rc = cli_check_output(cli_get(&a, "output"), &in))) goto done;
    rc = 1;
    if (!(out = cli_open_file(cli_get(&a, "output"), true, &out_owned))) goto done;
    size_t cap = (size_t)embd_model_max_tokens(model);
    ids = malloc(cap * sizeof *ids);
    starts = malloc(cap * sizeof *starts);
    stops = malloc(cap * sizeof *stops);
    specials = malloc(cap);
    if (!ids || !starts || !stops || !specials) {
        cli_err("out of memory");
        goto done;
    }
    size_t index = 0;
    int r;
    while ((r = cli_reader_next(&in)) == 1) {
        size_t n = 0;
        enum embd_status st =
            offsets || !special ? embd_tokenize_offsets(model, in.text, in.text_len, special, true,
                                                        ids, starts, stops, specials, cap, &n)
                                : embd_tokenize(model, in.text, in.text_len, ids, cap, &n);
        if (st != EMBD_OK) {
            cli_err("input %zu: %s", index, embd_last_error());
            goto done;
        }
        embd_buf_printf(&line, "{\"index\":%zu,\"ids\":[", index);
        for (size_t i = 0; i < n; i++)
            embd_buf_printf(&line, i ? ",%d" : "%d", ids[i]);
        if (offsets) {
            embd_buf_str(&line, "],\"tokens\":[");
            for (size_t i = 0; i < n; i++) {
                const char *t = embd_model_token(model, ids[i]);
                size_t tl = t ? strlen(t) : 0;
                if (!specials[i] && embd_model_token_shows_text(model, ids[i]))
                    token_text(in.text, starts[i], stops[i], &t, &tl);
                if (i) embd_buf_put(&line, ",", 1);
                embd_buf_json_string(&line, t ? t : "", tl);
            }
            embd_buf_str(&line, "],\"offsets\":[");
            for (size_t i = 0; i < n; i++)
                embd_buf_printf(&line, i ? ",[%zu,%zu]" : "[%zu,%zu]", starts[i], stops[i]);
        }
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
    free(starts);
    free(stops);
    free(specials);
    if (in_open) cli_reader_close(&in);
    embd_model_free(model);
    cli_args_free(&a);
    return rc;
}
