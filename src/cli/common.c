/* common.c — option parsing (flags > EMBD_* environment > --config file >
 * defaults), the input reader, output and progress for the `embd`
 * subcommands. */
#include "cli.h"
#include "util/hub.h"
#include "util/text.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const struct cli_opt cli_common_opts[] = {
    {"model", 'm', true, "DIR", NULL,
     "model directory, or ORG/NAME[@REV] in the Hugging Face cache"},
    {"device", 0, true, "DEV", "auto",
     "auto, cpu, cuda or cuda:N; embed and serve also take several GPUs: cuda:all or "
     "cuda:N,M,... (a GPU named twice gets two contexts)"},
    {"dtype", 0, true, "TYPE", "auto",
     "auto, fp32, fp16, bf16 or int8. auto: fp16 on a GPU, fp32 on the CPU. The CPU also runs "
     "bf16 (AVX512_BF16) and int8 (AVX512_VNNI or AVX-VNNI) when asked; fp16 is GPU only, int8 CPU "
     "only"},
    {"gpu-memory-limit", 0, true, "SIZE", NULL,
     "the most GPU memory each context may hold: bytes with K, M or G (6G) or a fraction of "
     "the device's memory (0.5); batches shrink to fit it, and a model that cannot fit runs "
     "on the CPU (device auto) or is refused (cuda). Default: no limit"},
    {"threads", 0, true, "N", "0",
     "CPU threads; 0 = every CPU this process may use (its affinity mask, capped by its cgroup's "
     "CPU quota: embd doctor says how many)"},
    {"quiet", 'q', false, NULL, NULL, "no progress or summary on stderr"},
    {"config", 0, true, "FILE", NULL, "JSON file of options, e.g. {\"device\": \"cpu\"}"},
    {"log-level", 0, true, "LEVEL", "warn", "error, warn, info or debug"},
    {"log-format", 0, true, "FMT", "text", "log lines on stderr: text or json"},
    {"help", 'h', false, NULL, NULL, "show this help"},
};
const int cli_n_common_opts = (int)(sizeof cli_common_opts / sizeof cli_common_opts[0]);

void cli_err(const char *fmt, ...) {
    va_list ap;
    fputs("embd: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int find_long(const struct cli_args *a, const char *name, size_t len) {
    for (int i = 0; i < a->n_opts; i++)
        if (strlen(a->opts[i]->name) == len && !strncmp(a->opts[i]->name, name, len)) return i;
    return -1;
}

static int find_short(const struct cli_args *a, char c) {
    for (int i = 0; i < a->n_opts; i++)
        if (a->opts[i]->short_name == c) return i;
    return -1;
}

static void print_help(const struct cli_args *a, const char *usage, const char *about) {
    printf("usage: %s\n\n%s\n\noptions:\n", usage, about);
    for (int i = 0; i < a->n_opts; i++) {
        const struct cli_opt *o = a->opts[i];
        char left[64];
        if (o->short_name)
            snprintf(left, sizeof left, "-%c, --%s%s%s", o->short_name, o->name,
                     o->has_arg ? " " : "", o->has_arg ? o->metavar : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", o->name, o->has_arg ? " " : "",
                     o->has_arg ? o->metavar : "");
        printf("  %-28s %s", left, o->help);
        if (o->def) printf(" (default: %s)", o->def);
        putchar('\n');
    }
    printf("\nEvery long option can also be set with EMBD_<NAME> (e.g. EMBD_DEVICE=cpu,\n"
           "EMBD_MAX_BATCH_TOKENS=8192) or in the --config file; flags beat the\n"
           "environment, which beats the file, which beats the defaults.\n"
           "Exit status: 0 success, 1 runtime error, 2 usage error.\n");
}

static void env_name(const char *opt, char *buf, size_t cap) {
    size_t j = snprintf(buf, cap, "EMBD_");
    for (size_t i = 0; opt[i] && j + 1 < cap; i++)
        buf[j++] = opt[i] == '-' ? '_' : (char)toupper((unsigned char)opt[i]);
    buf[j] = '\0';
}

extern char **environ;

/* Levenshtein distance between a (la) and b (lb), both under 80 bytes. */
static int edit_distance(const char *a, size_t la, const char *b, size_t lb) {
    int row[80];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            const int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* A mistyped EMBD_* variable would be ignored without a word: warn about one
 * within two edits of one of this subcommand's options (EMBD_DEVCE for
 * EMBD_DEVICE), unless it is one of the other variables embd reads. Other
 * subcommands' options (EMBD_PORT while embedding) are far from these, so
 * they pass silently, as settings shared by several commands should. */
static void warn_env_typos(const struct cli_args *a) {
    static const char *const other[] = {"EMBD_HOME", "EMBD_CUDA_PLUGIN", "EMBD_CUDA_PLUGIN_DIR",
                                        "EMBD_CUDA_DRIVER_VERSION", "EMBD_SERVE_DEBUG"};
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        const size_t len = eq ? (size_t)(eq - *e) : 0;
        if (len <= 5 || len >= 80 || strncmp(*e, "EMBD_", 5)) continue;
        bool known = false;
        for (size_t k = 0; k < sizeof other / sizeof other[0] && !known; k++)
            known = strlen(other[k]) == len && !strncmp(other[k], *e, len);
        if (known || !strncmp(*e, "EMBD_TEST_", 10)) continue;
        int best = 3;
        char best_name[80] = "";
        for (int i = 0; i < a->n_opts && best > 0; i++) {
            char env[80];
            env_name(a->opts[i]->name, env, sizeof env);
            if (strlen(env) < 8) continue; /* EMBD_ + at least 3: no guesses for short names */
            const int d = edit_distance(*e, len, env, strlen(env));
            if (d < best) {
                best = d;
                snprintf(best_name, sizeof best_name, "%s", env);
            }
        }
        if (best > 0 && best <= 2)
            cli_err("warning: %.*s is not a setting of embd %s and is ignored; did you mean %s?",
                    (int)len, *e, a->cmd, best_name);
    }
}

static bool is_true(const char *v) {
    return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
                 !strcasecmp(v, "on"));
}

static bool is_bool_word(const char *v) {
    return is_true(v) || !strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
           !strcasecmp(v, "off") || !strcmp(v, "");
}

/* Reads a JSON config file into option values (only those not already set). */
static int load_config(struct cli_args *a, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_err("--config %s: %s", path, strerror(errno));
        return 2;
    }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int big = !feof(f);
    fclose(f);
    if (big) {
        cli_err("--config %s: file too large (limit 64 KiB)", path);
        return 2;
    }
    buf[n] = '\0';
    cJSON *root = cJSON_ParseWithLength(buf, n);
    if (!root || !cJSON_IsObject(root)) {
        cli_err("--config %s: not a JSON object", path);
        cJSON_Delete(root);
        return 2;
    }
    int rc = 0;
    for (cJSON *it = root->child; it; it = it->next) {
        char key[64];
        snprintf(key, sizeof key, "%s", it->string ? it->string : "");
        for (char *p = key; *p; p++)
            if (*p == '_') *p = '-';
        int i = find_long(a, key, strlen(key));
        if (i < 0 || !strcmp(key, "config") || !strcmp(key, "help")) {
            cli_err("--config %s: unknown option \"%s\" for embd %s", path, it->string, a->cmd);
            rc = 2;
            break;
        }
        if (a->values[i]) continue; /* a flag or the environment already set it */
        char val[4096];
        if (cJSON_IsString(it)) {
            snprintf(val, sizeof val, "%s", it->valuestring);
        } else if (cJSON_IsBool(it)) {
            snprintf(val, sizeof val, "%s", cJSON_IsTrue(it) ? "1" : "0");
        } else if (cJSON_IsNumber(it) && it->valuedouble == (double)(long long)it->valuedouble) {
            snprintf(val, sizeof val, "%lld", (long long)it->valuedouble);
        } else if (cJSON_IsNumber(it) && isfinite(it->valuedouble)) {
            /* a fraction (gpu-memory-limit 0.5), checked by the option as its flag would be */
            snprintf(val, sizeof val, "%.17g", it->valuedouble);
        } else {
            cli_err("--config %s: option \"%s\" needs a string, number or boolean", path,
                    it->string);
            rc = 2;
            break;
        }
        if (!a->opts[i]->has_arg && !is_bool_word(val)) {
            cli_err("--config %s: option \"%s\" is a flag and takes true or false", path,
                    it->string);
            rc = 2;
            break;
        }
        a->owned[i] = strdup(val);
        if (!a->owned[i]) {
            cli_err("out of memory");
            rc = 1;
            break;
        }
        a->values[i] = a->owned[i];
    }
    cJSON_Delete(root);
    return rc;
}

static int parse_args(struct cli_args *a, const char *cmd, const struct cli_opt *opts, int n_opts,
                      int argc, char **argv, const char *usage, const char *about) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    for (int i = 0; i < cli_n_common_opts; i++)
        a->opts[a->n_opts++] = &cli_common_opts[i];
    for (int i = 0; i < n_opts && a->n_opts < CLI_MAX_OPTS; i++)
        a->opts[a->n_opts++] = &opts[i];

    bool help = false;
    for (int k = 1; k < argc; k++) {
        const char *arg = argv[k];
        int i = -1;
        const char *inline_val = NULL;
        if (arg[0] == '-' && arg[1] == '-' && arg[2]) {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            i = find_long(a, name, len);
            if (eq) inline_val = eq + 1;
            if (i < 0) {
                cli_err("%s: unknown option --%.*s (see embd %s --help)", cmd, (int)len, name, cmd);
                return 2;
            }
        } else if (arg[0] == '-' && arg[1] && arg[1] != '-' && !arg[2]) {
            i = find_short(a, arg[1]);
            if (i < 0) {
                cli_err("%s: unknown option %s (see embd %s --help)", cmd, arg, cmd);
                return 2;
            }
        } else {
            cli_err("%s: unexpected argument \"%s\" (see embd %s --help)", cmd, arg, cmd);
            return 2;
        }
        const struct cli_opt *o = a->opts[i];
        if (!strcmp(o->name, "help")) {
            help = true;
            continue;
        }
        if (o->has_arg) {
            if (!inline_val) {
                if (k + 1 >= argc) {
                    cli_err("%s: option --%s needs a value", cmd, o->name);
                    return 2;
                }
                inline_val = argv[++k];
            }
            a->values[i] = inline_val;
        } else {
            if (inline_val && !is_bool_word(inline_val)) {
                cli_err("%s: option --%s takes no value", cmd, o->name);
                return 2;
            }
            a->values[i] = inline_val ? (is_true(inline_val) ? "1" : "0") : "1";
        }
    }
    if (help) {
        print_help(a, usage, about);
        return -1;
    }
    /* Environment, then the config file, then defaults. */
    for (int i = 0; i < a->n_opts; i++) {
        if (a->values[i] || !strcmp(a->opts[i]->name, "help")) continue;
        char env[80];
        env_name(a->opts[i]->name, env, sizeof env);
        const char *v = getenv(env);
        if (v && *v) {
            if (!a->opts[i]->has_arg && !is_bool_word(v)) {
                cli_err("%s=%s: takes 1 or 0", env, v);
                return 2;
            }
            a->values[i] = a->opts[i]->has_arg ? v : (is_true(v) ? "1" : "0");
        }
    }
    const char *config = cli_get(a, "config");
    if (config) {
        int rc = load_config(a, config);
        if (rc) return rc;
    }
    for (int i = 0; i < a->n_opts; i++)
        if (!a->values[i]) a->values[i] = a->opts[i]->def;
    if (embd_log_configure(cli_get(a, "log-level"), cli_get(a, "log-format")) != EMBD_OK) {
        cli_err("%s: %s", cmd, embd_last_error());
        return 2;
    }
    const char *level = cli_get(a, "log-level");
    if (!level || strcmp(level, "error") != 0) warn_env_typos(a);
    return 0;
}

int cli_parse(struct cli_args *a, const char *cmd, const struct cli_opt *opts, int n_opts, int argc,
              char **argv, const char *usage, const char *about) {
    const int rc = parse_args(a, cmd, opts, n_opts, argc, argv, usage, about);
    if (rc) cli_args_free(a);
    return rc;
}

void cli_args_free(struct cli_args *a) {
    for (int i = 0; i < a->n_opts; i++)
        free(a->owned[i]);
    memset(a, 0, sizeof *a);
}

const char *cli_get(const struct cli_args *a, const char *name) {
    int i = find_long(a, name, strlen(name));
    return i >= 0 ? a->values[i] : NULL;
}

bool cli_flag(const struct cli_args *a, const char *name) {
    return is_true(cli_get(a, name));
}

bool cli_is_set(const struct cli_args *a, const char *name) {
    int i = find_long(a, name, strlen(name));
    return i >= 0 && a->values[i] && a->values[i] != a->opts[i]->def;
}

const char *cli_source(const struct cli_args *a, const char *name, char *buf, size_t cap) {
    int i = find_long(a, name, strlen(name));
    buf[0] = '\0';
    if (i < 0 || !a->values[i] || a->values[i] == a->opts[i]->def) return buf;
    char env[80];
    env_name(name, env, sizeof env);
    if (a->owned[i] && a->values[i] == a->owned[i])
        snprintf(buf, cap, " (from --config %s)", cli_get(a, "config"));
    else if (getenv(env) && a->values[i] == getenv(env))
        snprintf(buf, cap, " (from %s)", env);
    return buf;
}

/* Where a set option came from: 3 a flag, 2 the environment, 1 --config; 0 unset. */
static int source_rank(const struct cli_args *a, const char *name) {
    char src[4200];
    if (!cli_is_set(a, name)) return 0;
    const char *s = cli_source(a, name, src, sizeof src);
    return !s[0] ? 3 : !strncmp(s, " (from --config", 15) ? 1 : 2;
}

int cli_one_of(const struct cli_args *a, const char *x, const char *y, const char **vx,
               const char **vy) {
    if (!*vx || !*vy) return 0;
    const int rx = source_rank(a, x), ry = source_rank(a, y);
    if (rx != ry) {
        *(rx > ry ? vy : vx) = NULL; /* the stronger place wins */
        return 0;
    }
    char sx[4200], sy[4200];
    cli_err("%s: give --%s%s or --%s%s, not both", a->cmd, x, cli_source(a, x, sx, sizeof sx), y,
            cli_source(a, y, sy, sizeof sy));
    return 2;
}

int cli_get_int(const struct cli_args *a, const char *name, long lo, long hi, long *out) {
    const char *v = cli_get(a, name);
    if (!v) return 0;
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        char src[4200];
        cli_err("%s: --%s must be an integer from %ld to %ld, not \"%s\"%s", a->cmd, name, lo, hi,
                v, cli_source(a, name, src, sizeof src));
        return 2;
    }
    *out = x;
    return 0;
}

int cli_get_choice(const struct cli_args *a, const char *name, const char *const *choices, int n,
                   int *out) {
    const char *v = cli_get(a, name);
    for (int i = 0; i < n; i++)
        if (v && !strcmp(v, choices[i])) {
            *out = i;
            return 0;
        }
    char list[256] = "", src[4200];
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                 i == 0      ? ""
                 : i + 1 < n ? ", "
                             : " or ",
                 choices[i]);
    cli_err("%s: --%s must be %s, not \"%s\"%s", a->cmd, name, list, v ? v : "",
            cli_source(a, name, src, sizeof src));
    return 2;
}

int cli_device_list(const struct cli_args *a, int *idx, int cap, int *n) {
    const char *dev = cli_get(a, "device");
    char src[4200];
    *n = 0;
    if (strncmp(dev, "cuda:", 5) != 0) return 0;
    if (!strcmp(dev + 5, "all")) {
        struct embd_gpu_info gi;
        while (*n < cap && embd_gpu_monitor(*n, &gi) == 0)
            idx[*n] = *n, (*n)++;
        if (*n == 0) {
            cli_err("%s: --device cuda:all%s: no CUDA device here (embd doctor says why)", a->cmd,
                    cli_source(a, "device", src, sizeof src));
            return 2;
        }
        return 0;
    }
    if (!strchr(dev + 5, ',')) return 0;
    for (const char *p = dev + 5;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 999 || (*end && *end != ',') || *n >= cap) {
            cli_err("%s: --device %s%s: expected cuda:N,M,... (device ordinals, at most %d)",
                    a->cmd, dev, cli_source(a, "device", src, sizeof src), cap);
            return 2;
        }
        /* a device named twice gets two contexts: one's host work (tokenizing,
         * copies) overlaps the other's forward pass on the same GPU */
        idx[(*n)++] = (int)v;
        if (!*end) break;
        p = end + 1;
    }
    return 0;
}

int cli_ctx_params(const struct cli_args *a, struct embd_ctx_params *p) {
    *p = embd_ctx_default_params();
    const char *dev = cli_get(a, "device");
    if (!strcmp(dev, "auto")) {
        p->device = EMBD_DEVICE_AUTO;
    } else if (!strcmp(dev, "cpu")) {
        p->device = EMBD_DEVICE_CPU;
    } else if (!strcmp(dev, "cuda")) {
        p->device = EMBD_DEVICE_CUDA;
    } else if (!strncmp(dev, "cuda:", 5) && dev[5] &&
               strspn(dev + 5, "0123456789") == strlen(dev + 5) && strlen(dev + 5) < 4) {
        p->device = EMBD_DEVICE_CUDA;
        p->device_index = atoi(dev + 5);
    } else if (!strncmp(dev, "cuda:", 5) && (!strcmp(dev + 5, "all") || strchr(dev + 5, ','))) {
        int idx[EMBD_SCHED_MAX_CTX], n = 0; /* several GPUs: checked by cli_device_list */
        if (cli_device_list(a, idx, EMBD_SCHED_MAX_CTX, &n)) return 2;
        p->device = EMBD_DEVICE_CUDA;
        p->device_index = n ? idx[0] : 0;
    } else {
        char src[4200];
        cli_err("%s: --device must be auto, cpu, cuda, cuda:N, cuda:all or cuda:N,M,..., not "
                "\"%s\"%s",
                a->cmd, dev, cli_source(a, "device", src, sizeof src));
        return 2;
    }
    static const char *const dtypes[] = {"auto", "fp32", "fp16", "bf16", "int8"};
    _Static_assert(EMBD_DTYPE_AUTO == 0 && EMBD_DTYPE_INT8 == 4, "dtypes[] is enum embd_dtype");
    int dtype = 0;
    if (cli_get_choice(a, "dtype", dtypes, 5, &dtype)) return 2;
    p->dtype = (enum embd_dtype)dtype;
    const char *dt = dtypes[dtype];
    if ((p->device == EMBD_DEVICE_CPU && p->dtype == EMBD_DTYPE_FP16) ||
        (p->device == EMBD_DEVICE_CUDA && p->dtype == EMBD_DTYPE_INT8)) {
        char s1[4200], s2[4200];
        cli_err(
            "%s: --dtype %s%s conflicts with --device %s%s: %s", a->cmd, dt,
            cli_source(a, "dtype", s1, sizeof s1), dev, cli_source(a, "device", s2, sizeof s2),
            p->dtype == EMBD_DTYPE_FP16
                ? "the CPU computes in fp32, bf16 or int8 (use --dtype fp32, bf16, int8 or auto)"
                : "int8 runs on the CPU only (use --device cpu or auto)");
        return 2;
    }
    long threads = 0;
    int rc = cli_get_int(a, "threads", 0, 4096, &threads);
    if (rc) return rc;
    p->n_threads = (int)threads;
    p->gpu_memory_limit = cli_get(a, "gpu-memory-limit"); /* checked by embd_ctx_new */
    return 0;
}

int cli_open_model(const struct cli_args *a, embd_model **model) {
    const char *dir = cli_get(a, "model");
    if (!dir || !*dir) {
        cli_err("%s: no model: give -m DIR (or EMBD_MODEL); scripts/fetch-model writes one",
                a->cmd);
        return 2;
    }
    /* A directory, or a name (ORG/NAME) in the Hugging Face cache. */
    size_t need = 0;
    if (embd_model_resolve(dir, NULL, NULL, 0, &need) != EMBD_ERR_BUFFER_TOO_SMALL) {
        struct stat st;
        if (cli_is_repo_id(dir) && stat(dir, &st) != 0) /* a name, not in the cache */
            cli_err("%s: %s%s", a->cmd, embd_last_error(),
                    find_long(a, "pull", 4) >= 0 ? " (or add --pull)" : "");
        else
            cli_err("%s: %s", a->cmd, embd_last_error());
        return 1;
    }
    enum embd_status s = embd_model_load(dir, embd_model_default_params(), model);
    if (s != EMBD_OK) {
        cli_err("cannot load model %s: %s", dir, embd_last_error());
        return 1;
    }
    return 0;
}

bool cli_is_repo_id(const char *name) {
    size_t n;
    const char *rev;
    return embd_hub_name_split(name, &n, &rev);
}

int cli_engine_open(const struct cli_args *a, struct embd_ctx_params p, struct cli_engine *e) {
    int idx[EMBD_SCHED_MAX_CTX], n = 0;
    if (cli_device_list(a, idx, EMBD_SCHED_MAX_CTX, &n)) return 2;
    if (n > 0 && !e->multi_ok) {
        cli_err("%s: --device %s: several GPUs are for embed and serve; give one (cuda:N)", a->cmd,
                cli_get(a, "device"));
        return 2;
    }
    if (n > 0 && p.cache_dir) { /* LMDB's environment may be open once per process */
        cli_err("%s: --device %s with --cache %s: a disk cache works with one context; with "
                "several GPUs use --cache mem",
                a->cmd, cli_get(a, "device"), p.cache_dir);
        return 2;
    }
    int rc = cli_open_model(a, &e->model);
    if (rc) return rc;
    if (n == 0) {
        enum embd_status s = embd_ctx_new(e->model, p, &e->ctx);
        if (s != EMBD_OK) {
            char src[4200] = "";
            if (s == EMBD_ERR_INVALID_ARG && strstr(embd_last_error(), "GPU memory limit"))
                cli_source(a, "gpu-memory-limit", src, sizeof src); /* where the value came from */
            cli_err("%s%s", embd_last_error(), src);
            /* a bad option value (--gpu-memory-limit, --max-batch-tokens for
             * this model) is a usage error */
            return s == EMBD_ERR_INVALID_ARG ? 2 : 1;
        }
        return 0;
    }
    /* one context per GPU behind one scheduler (embd_sched_new_multi) */
    for (int i = 0; i < n; i++) {
        p.device_index = idx[i];
        enum embd_status s = embd_ctx_new(e->model, p, &e->ctxs[i]);
        if (s != EMBD_OK) {
            cli_err("%s: cuda:%d: %s", a->cmd, idx[i], embd_last_error());
            return s == EMBD_ERR_INVALID_ARG ? 2 : 1;
        }
        e->n_ctx = i + 1;
    }
    e->ctx = e->ctxs[0];
    if (embd_sched_new_multi(e->ctxs, n, embd_sched_default_params(), &e->sched) != EMBD_OK) {
        cli_err("%s: %s", a->cmd, embd_last_error());
        return 1;
    }
    return 0;
}

void cli_engine_close(struct cli_engine *e) {
    embd_sched_free(e->sched);
    if (e->n_ctx)
        for (int i = 0; i < e->n_ctx; i++)
            embd_ctx_free(e->ctxs[i]);
    else
        embd_ctx_free(e->ctx);
    embd_model_free(e->model);
    e->sched = NULL;
    e->n_ctx = 0;
    e->ctx = NULL;
    e->model = NULL;
}

int cli_input_opts(const struct cli_args *a, struct cli_input *in) {
    static const char *const formats[] = {"auto", "lines", "jsonl"};
    _Static_assert(CLI_INPUT_AUTO == 0 && CLI_INPUT_JSONL == 2, "formats[] is the enum");
    memset(in, 0, sizeof *in);
    int format = 0;
    if (cli_get_choice(a, "input-format", formats, 3, &format)) return 2;
    in->format = (enum cli_input_format)format;
    in->text_field = cli_get(a, "text-field");
    in->id_field = cli_get(a, "id-field");
    return 0;
}

FILE *cli_open_file(const char *path, bool write, bool *owned) {
    *owned = false;
    if (!path || !strcmp(path, "-")) return write ? stdout : stdin;
    FILE *f = fopen(path, write ? "wb" : "rb");
    if (!f) {
        cli_err("cannot open %s %s: %s", write ? "output" : "input", path, strerror(errno));
        return NULL;
    }
    *owned = true;
    return f;
}

int cli_check_output(const char *out_path, const struct cli_reader *in) {
    struct stat so, si;
    if (!out_path || !strcmp(out_path, "-") || !in->f) return 0;
    if (stat(out_path, &so) != 0 || fstat(fileno(in->f), &si) != 0) return 0;
    if (S_ISREG(so.st_mode) && so.st_dev == si.st_dev && so.st_ino == si.st_ino) {
        cli_err("the output %s is the input: writing it would destroy the input (give another "
                "file)",
                out_path);
        return 2;
    }
    return 0;
}

int cli_reader_open(struct cli_reader *r, const char *path, const struct cli_input *in) {
    memset(r, 0, sizeof *r);
    r->in = *in;
    r->size = -1;
    r->f = cli_open_file(path, false, &r->close);
    if (!r->f) return 1;
    struct stat st;
    if (fstat(fileno(r->f), &st) == 0 && S_ISREG(st.st_mode)) r->size = (long long)st.st_size;
    return 0;
}

/* Copies s[0..len) into the owned, reused buffer *dst (NUL-terminated after
 * len). Returns 0, or -1 after printing the error. */
static int set_bytes(const struct cli_reader *r, char **dst, size_t *dst_len, const char *s,
                     size_t len) {
    char *t = realloc(*dst, len + 1);
    if (!t) {
        cli_err("out of memory reading input line %zu", r->line_no);
        return -1;
    }
    memcpy(t, s, len);
    t[len] = '\0';
    *dst = t;
    *dst_len = len;
    return 0;
}

/* A JSON id: a string, or an integer (also one written as a number with no
 * fraction, exact in a double) in decimal. Returns 0, or -1 after printing
 * the error. */
static int set_json_id(struct cli_reader *r, const json_t *v) {
    char num[32];
    if (json_is_string(v))
        return set_bytes(r, &r->id, &r->id_len, json_string_value(v), json_string_length(v));
    if (json_is_integer(v)) {
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return set_bytes(r, &r->id, &r->id_len, num, strlen(num));
    }
    const double d = json_is_real(v) ? json_real_value(v) : NAN;
    if (d == floor(d) && fabs(d) < 9007199254740992.0) {
        snprintf(num, sizeof num, "%lld", (long long)d);
        return set_bytes(r, &r->id, &r->id_len, num, strlen(num));
    }
    cli_err("input line %zu: %s field \"%s\" (a string or an integer; see --id-field)", r->line_no,
            v ? "bad" : "no", r->in.id_field);
    return -1;
}

/* One JSONL line (line, len bytes) into r->text and r->id. Returns 1 or -1. */
static int read_jsonl(struct cli_reader *r, const char *line, size_t len) {
    json_error_t err;
    json_t *obj = json_loadb(line, len, JSON_ALLOW_NUL, &err);
    int rc = -1;
    if (!json_is_object(obj)) {
        cli_err("input line %zu: not a JSON object%s%s (use --input-format lines for plain text)",
                r->line_no, obj ? "" : ": ", obj ? "" : err.text);
        goto done;
    }
    const json_t *t = json_object_get(obj, r->in.text_field);
    if (!json_is_string(t)) {
        cli_err("input line %zu: no string field \"%s\" (see --text-field)", r->line_no,
                r->in.text_field);
        goto done;
    }
    if (r->in.id_field && set_json_id(r, json_object_get(obj, r->in.id_field))) goto done;
    if (set_bytes(r, &r->text, &r->text_len, json_string_value(t), json_string_length(t)))
        goto done;
    rc = 1;
done:
    json_decref(obj);
    return rc;
}

static bool is_blank(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t') return false;
    return true;
}

int cli_reader_next(struct cli_reader *r) {
    size_t len;
    const char *line;
    do {
        errno = 0;
        const ssize_t got = getline(&r->line, &r->line_cap, r->f);
        if (got < 0) {
            if (!ferror(r->f)) return 0;
            cli_err("error reading input after line %zu: %s", r->line_no, strerror(errno));
            return -1;
        }
        r->line_no++;
        r->consumed += got;
        len = (size_t)got; /* not strlen: the line may hold NUL bytes */
        if (len && r->line[len - 1] == '\n') len--;
        if (len && r->line[len - 1] == '\r') len--;
        line = r->line;
        /* a UTF-8 byte order mark (Notepad, PowerShell) marks the file, it is
         * not text: dropped, so that JSONL is still JSONL */
        if (r->line_no == 1 && len >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) {
            line += 3;
            len -= 3;
        }
        /* JSONL: a blank line (a trailing one, two files joined) holds no
         * object and is skipped; in plain text it is an empty text */
    } while ((r->in.skip_blank || r->in.format == CLI_INPUT_JSONL) && is_blank(line, len));
    if (r->in.format == CLI_INPUT_AUTO) {
        size_t i = 0;
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        r->in.format = i < len && line[i] == '{' ? CLI_INPUT_JSONL : CLI_INPUT_LINES;
    }
    if (r->in.format == CLI_INPUT_JSONL) return read_jsonl(r, line, len);
    if (r->in.id_field) {
        char num[32];
        snprintf(num, sizeof num, "%zu", r->line_no);
        if (set_bytes(r, &r->id, &r->id_len, num, strlen(num))) return -1;
    }
    return set_bytes(r, &r->text, &r->text_len, line, len) ? -1 : 1;
}

void cli_reader_close(struct cli_reader *r) {
    if (r->close && r->f) fclose(r->f);
    free(r->line);
    free(r->text);
    free(r->id);
    memset(r, 0, sizeof *r);
}

int cli_write_buf(FILE *f, struct embd_buf *b) {
    if (b->oom) {
        cli_err("out of memory writing output");
        return 1;
    }
    if (b->len && fwrite(b->p, 1, b->len, f) != b->len) {
        cli_err("cannot write output: %s", strerror(errno));
        return 1;
    }
    embd_buf_reset(b);
    return 0;
}

void cli_progress_init(struct cli_progress *p, bool quiet) {
    p->enabled = !quiet && isatty(STDERR_FILENO);
    p->start = p->last = embd_now();
}

void cli_progress_update(struct cli_progress *p, size_t done, long long bytes_done,
                         long long bytes_total, bool final) {
    if (!p->enabled) return;
    double t = embd_now();
    if (!final && t - p->last < 0.2) return;
    p->last = t;
    double el = t - p->start;
    double rate = el > 0 ? (double)done / el : 0;
    if (bytes_total > 0) {
        double frac = (double)bytes_done / (double)bytes_total;
        if (frac > 1) frac = 1;
        int width = 30, fill = (int)(frac * width);
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        double eta = frac > 0 ? el * (1 - frac) / frac : 0;
        fprintf(stderr, "\r[%s] %5.1f%% %zu docs, %.0f docs/s, ETA %.0fs   ", bar, frac * 100, done,
                rate, eta);
    } else {
        fprintf(stderr, "\r%zu docs, %.0f docs/s   ", done, rate);
    }
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

double cli_elapsed(const struct cli_progress *p) {
    return embd_now() - p->start;
}

static bool given_as_flag(const struct cli_args *a, const char *name) {
    char src[8];
    return cli_is_set(a, name) && !cli_source(a, name, src, sizeof src)[0];
}

int cli_cache_params(const struct cli_args *a, struct embd_ctx_params *p) {
    int rc;
    const char *cache = cli_get(a, "cache");
    long cache_mib = 0, map_mib = 0;
    if ((rc = cli_get_int(a, "cache-mem", 0, 1L << 20, &cache_mib))) return rc;
    if ((rc = cli_get_int(a, "cache-map-size", 1, 1L << 24, &map_mib))) return rc;
    if (!cache[0]) {
        cli_err("%s: --cache must be off, mem or a directory", a->cmd);
        return 2;
    }
    /* Both on the command line and one of them unused: say so rather than
     * ignore it (from the environment or a config file they are defaults). */
    const char *unused = NULL;
    if (!strcmp(cache, "off") && given_as_flag(a, "cache-mem"))
        unused = "--cache-mem applies only to --cache mem or a directory";
    else if ((!strcmp(cache, "off") || !strcmp(cache, "mem")) && given_as_flag(a, "cache-map-size"))
        unused = "--cache-map-size applies only to a disk cache (--cache DIR)";
    if (unused && given_as_flag(a, "cache")) {
        cli_err("%s: conflicting options: --cache %s: %s", a->cmd, cache, unused);
        return 2;
    }
    p->cache_bytes = strcmp(cache, "off") ? (size_t)cache_mib << 20 : 0;
    p->cache_dir = strcmp(cache, "off") && strcmp(cache, "mem") ? cache : NULL;
    p->cache_map_bytes = (size_t)map_mib << 20;
    return 0;
}

int cli_prompt_prefix(const struct cli_args *a, const char *opt, const embd_model *model,
                      const char **prefix) {
    const char *name = cli_get(a, opt);
    *prefix = NULL;
    if (!name) return 0;
    if ((*prefix = embd_model_prompt(model, name))) return 0;
    char names[512] = "", src[160];
    size_t at = 0;
    for (int i = 0; i < embd_model_prompt_count(model) && at < sizeof names; i++) {
        int w = snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "",
                         embd_model_prompt_name(model, i));
        at += w > 0 ? (size_t)w : 0;
    }
    cli_err("%s: --%s %s%s: the model declares no prompt of that name (%s%s)", a->cmd, opt, name,
            cli_source(a, opt, src, sizeof src),
            at ? "its prompts: " : "its config_sentence_transformers.json declares none", names);
    return 2;
}
