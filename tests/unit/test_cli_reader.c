/* Unit tests of the CLI's input reader (src/cli/common.c), the one reader of
 * `embd embed`, `embd tokenize`, `embd index` and `embd search`: texts with
 * their lengths (a NUL is a character, in plain lines and JSONL), ids,
 * blank lines, format detection, line numbers, errors. */
#include "cli.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[] = "/tmp/embd_unit_reader_XXXXXX";

/* Writes data[0..len) to the test file. */
static void put_file(const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, len, f) == len);
    if (f) fclose(f);
}

static bool text_is(const struct cli_reader *r, const char *want, size_t len) {
    return r->text && r->text_len == len && !memcmp(r->text, want, len) && r->text[len] == '\0';
}

static bool id_is(const struct cli_reader *r, const char *want) {
    return r->id && r->id_len == strlen(want) && !strcmp(r->id, want);
}

/* Opens the test file holding data[0..len) with `in`. */
static void open_with(struct cli_reader *r, const char *data, size_t len,
                      const struct cli_input *in) {
    put_file(data, len);
    CHECK(cli_reader_open(r, path, in) == 0);
}

static void test_lines(void) {
    static const char data[] = "a\0b\r\n\n  \t\nlast";
    struct cli_input in = {.format = CLI_INPUT_LINES};
    struct cli_reader r;
    open_with(&r, data, sizeof data - 1, &in);
    CHECK(r.size == (long long)sizeof data - 1);
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "a\0b", 3) && r.line_no == 1); /* CRLF cut */
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "", 0) && r.line_no == 2);
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "  \t", 3));
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "last", 4) && r.line_no == 4); /* no '\n' */
    CHECK(cli_reader_next(&r) == 0 && r.consumed == (long long)sizeof data - 1);
    CHECK(!r.id); /* no id field: no ids */
    cli_reader_close(&r);

    /* Blank lines skipped; ids are line numbers; a taken text is not reused. */
    in.skip_blank = true;
    in.id_field = "id";
    open_with(&r, data, sizeof data - 1, &in);
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "a\0b", 3) && id_is(&r, "1"));
    char *taken = r.text;
    r.text = NULL;
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "last", 4) && id_is(&r, "4"));
    CHECK(r.text != taken && !memcmp(taken, "a\0b", 4));
    free(taken);
    CHECK(cli_reader_next(&r) == 0);
    cli_reader_close(&r);
}

static void test_jsonl(void) {
    static const char data[] = "\n"
                               " {\"text\": \"NUL? no: \\u0000 after\", \"id\": \"a\\u0000b\"}\n"
                               "{\"id\": 12, \"text\": \"\\u00e9\"}\n"
                               "{\"id\": -3.0, \"text\": \"\", \"other\": [1, {}]}\n"
                               "{\"id\": 9223372036854775807, \"text\": \"big\"}\n";
    struct cli_input in = {
        .format = CLI_INPUT_AUTO, .text_field = "text", .id_field = "id", .skip_blank = true};
    struct cli_reader r;
    open_with(&r, data, sizeof data - 1, &in);
    CHECK(cli_reader_next(&r) == 1 && r.in.format == CLI_INPUT_JSONL && r.line_no == 2);
    CHECK(text_is(&r, "NUL? no: \0 after", 16) && r.id_len == 3 && !memcmp(r.id, "a\0b", 3));
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "\xc3\xa9", 2) && id_is(&r, "12"));
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "", 0) && id_is(&r, "-3"));
    CHECK(cli_reader_next(&r) == 1 && text_is(&r, "big", 3) && id_is(&r, "9223372036854775807"));
    CHECK(cli_reader_next(&r) == 0);
    cli_reader_close(&r);

    /* Without skip_blank, auto detection reads the first line: blank, so plain lines. */
    in.skip_blank = false;
    in.id_field = NULL;
    open_with(&r, data, sizeof data - 1, &in);
    CHECK(cli_reader_next(&r) == 1 && r.in.format == CLI_INPUT_LINES && text_is(&r, "", 0));
    CHECK(cli_reader_next(&r) == 1 && r.text[0] == ' ' && r.text[1] == '{');
    cli_reader_close(&r);
}

/* Each bad line is an error (-1) at its own line number. */
static void test_errors(void) {
    static const char *const bad[] = {
        "not json",
        "[\"an array\"]",
        "{\"text\": \"cut",
        "{\"text\": \"a\"} trailing",
        "{\"body\": \"no text field\", \"id\": 1}",
        "{\"text\": 5, \"id\": 1}",
        "{\"text\": \"no id\"}",
        "{\"text\": \"fraction\", \"id\": 1.5}",
        "{\"text\": \"huge\", \"id\": 1e300}",
        "{\"text\": \"object id\", \"id\": {}}",
        "{\"text\": \"bad escape \\ud800\", \"id\": 1}",
        "{\"text\": \"raw \xff byte\", \"id\": 1}",
    };
    const struct cli_input in = {.format = CLI_INPUT_JSONL, .text_field = "text", .id_field = "id"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char data[256];
        int n = snprintf(data, sizeof data, "{\"text\": \"ok\", \"id\": \"x\"}\n%s\n", bad[i]);
        struct cli_reader r;
        open_with(&r, data, (size_t)n, &in);
        CHECK(cli_reader_next(&r) == 1 && text_is(&r, "ok", 2));
        CHECK_MSG(cli_reader_next(&r) == -1 && r.line_no == 2, "%s", bad[i]);
        cli_reader_close(&r);
    }
    struct cli_reader r;
    CHECK(cli_reader_open(&r, "/nonexistent/input", &in) == 1);
}

int main(void) {
    int fd = mkstemp(path);
    if (fd < 0) TEST_SKIP("no temporary file");
    close(fd);
    test_lines();
    test_jsonl();
    test_errors();
    unlink(path);
    return test_summary("unit_cli_reader");
}
