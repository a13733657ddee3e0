/* main.c — the `embd` command: dispatch to subcommands. */
#include "cli.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* libgomp reads its wait policy once, when it is loaded, before main().
 * Its default spins about 300,000 times after each parallel region: on a
 * busy machine a spinning thread holds the core its descheduled sibling
 * needs (the server's scheduler thread hands every round to the OpenMP
 * team), so beside one busy core a short query's p99 went from 9 to over
 * 100 ms and the server lost a fifth of its throughput (BENCHMARKS.md,
 * "OpenMP waiting in the CLI and the server"). 1,000 spins (tens of
 * microseconds) are as fast as the default on a quiet machine. An
 * environment variable set now is too late for libgomp, so the command runs
 * itself again with GOMP_SPINCOUNT set, unless the user set it or
 * OMP_WAIT_POLICY (theirs wins). Where that exec fails (no /proc) it goes
 * on with libgomp's default. The second start costs about 10 ms (loading
 * libembd's libraries once more), so only commands that run a model do it. */
static void omp_defaults(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    /* by its path, not /proc/self/exe, so that the process keeps its name
     * ("embd", not "exe") for ps, pgrep and top */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || (size_t)n >= sizeof self - 1) return;
    self[n] = '\0';
    if (setenv("GOMP_SPINCOUNT", CLI_OMP_SPINCOUNT, 1) != 0) return;
    execv(self, argv);
    unsetenv("GOMP_SPINCOUNT"); /* a binary replaced or deleted since it started */
}

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
    /* runs_model: the command may run a model (not tokenize or pull) */
    static const struct {
        const char *name;
        int (*run)(int, char **);
        bool runs_model;
    } commands[] = {{"embed", cmd_embed, true},   {"tokenize", cmd_tokenize, false},
                    {"index", cmd_index, true},   {"search", cmd_search, true},
                    {"rerank", cmd_rerank, true}, {"serve", cmd_serve, true},
                    {"pull", cmd_pull, false},    {"doctor", cmd_doctor, true}};
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(cmd, commands[i].name) != 0) continue;
        if (commands[i].runs_model) omp_defaults(argv);
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "embd: unknown command \"%s\" (see embd --help)\n", cmd);
    return 2;
}
