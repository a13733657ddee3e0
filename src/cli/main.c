/* main.c — the `embd` command: dispatch to subcommands. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: embd <command> [options]\n\n"
               "commands:\n"
               "  embed      embed texts into vectors (JSONL or .npy)\n"
               "  tokenize   show the token ids the model sees\n"
               "  index      embed documents into a vector store\n"
               "  search     find the documents in a store nearest to a query\n"
               "  rerank     score documents against a query with a cross-encoder\n"
               "  serve      an OpenAI- and TEI-compatible embedding server over HTTP\n"
               "  pull       download a model (ORG/NAME) from the Hugging Face hub into its cache\n"
               "  doctor     what this machine offers and which backend would run\n\n"
               "Run 'embd <command> --help' for a command's options. 'embd --version' prints\n"
               "the version.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("embd %s\n", EMBD_VERSION);
        return 0;
    }
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } commands[] = {{"embed", cmd_embed},   {"tokenize", cmd_tokenize}, {"index", cmd_index},
                    {"search", cmd_search}, {"rerank", cmd_rerank},     {"serve", cmd_serve},
                    {"pull", cmd_pull},     {"doctor", cmd_doctor}};
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "embd: unknown command \"%s\" (see embd --help)\n", cmd);
    return 2;
}
