/* serve.c — `embd serve`: the OpenAI-, TEI- and Cohere-compatible HTTP
 * server (see src/server/server.h) on one shared engine, and a second one
 * for a reranker beside the model (--reranker). */
#include "cli.h"
#include "server/server.h"
#include "store/vstore.h"

#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct cli_opt serve_opts[] = {
    {"host", 0, true, "ADDR", "127.0.0.1",
     "address to listen on (0.0.0.0 or :: to accept other machines)"},
    {"port", 'p', true, "N", "8080", "TCP port; 0 picks a free one (printed at startup)"},
    {"api-key", 0, true, "KEY", NULL,
     "require \"Authorization: Bearer KEY\" on every endpoint but /health (prefer "
     "--api-key-file or EMBD_API_KEY: a command line is visible to every user in ps); an "
     "empty key is refused"},
    {"api-key-file", 0, true, "FILE", NULL,
     "read the API key from FILE (its first line, without the line end)"},
    {"served-model-name", 0, true, "NAME", NULL,
     "the model name in answers and /info (default: the model directory's name)"},
    {"store", 0, true, "PATH|URL", NULL,
     "a vector store (embd index) to answer POST /search from (an embedded store is scored "
     "on the model's GPU, if it runs on one); needs an embedding model"},
    {"reranker", 0, true, "DIR", NULL,
     "a cross-encoder (e.g. cross-encoder/ms-marco-MiniLM-L-6-v2) served beside the embedding "
     "model, on its own engine with the same --device, --dtype, --threads and "
     "--max-batch-tokens: POST /rerank, POST /v1/rerank and /search with \"rerank\": true. "
     "Its metrics are the embd_reranker_* series. (A cross-encoder given as -m is served "
     "alone: the rerank endpoints answer, the embedding endpoints answer 400)"},
    {"reranker-name", 0, true, "NAME", NULL,
     "the reranker's name in answers, /info and /v1/models (default: its directory's name)"},
    {"max-body-bytes", 0, true, "N", "2097152", "largest request body (413 above)"},
    {"max-inputs", 0, true, "N", "2048",
     "inputs per request, and documents per rerank (each a pair with the query; 413 above)"},
    {"max-input-chars", 0, true, "N", "100000",
     "characters per input, query or document (413 above)"},
    {"max-input-tokens", 0, true, "N", NULL,
     "tokens per input, [CLS]/[SEP] included (default: the model's maximum; a --reranker "
     "beside takes its own maximum per pair); longer inputs get 413 unless truncated"},
    {"auto-truncate", 0, false, NULL, NULL,
     "truncate inputs (and query-document pairs) longer than the model takes instead of "
     "refusing them (a request may still say \"truncate\": false)"},
    {"max-concurrent-requests", 0, true, "N", "512", "requests answered at once (429 above)"},
    {"max-connections", 0, true, "N", "1024",
     "open connections at once; a new one over it is answered 503 with Retry-After and closed"},
    {"max-connections-per-client", 0, true, "N", "128",
     "open connections from one client address (0: no limit; raise it behind a proxy, whose "
     "connections all come from its address)"},
    {"header-timeout", 0, true, "S", "10",
     "seconds for a request's headers to arrive (from the connection opening or the request "
     "line); a slower client is disconnected"},
    {"body-timeout", 0, true, "S", "60",
     "seconds for a request's body to arrive once its headers are in; a slower client is "
     "disconnected"},
    {"idle-timeout", 0, true, "S", "15", "seconds a kept-alive connection may idle"},
    {"http-threads", 0, true, "N", "2",
     "threads serving the connections (event-driven: a request waiting for the engine holds "
     "none)"},
    {"max-reply-memory", 0, true, "MIB", "128",
     "memory for the replies in flight (vectors and reply text), counted when a request is "
     "admitted; over it, 503 with Retry-After"},
    {"queue-timeout-ms", 0, true, "MS", "5000",
     "how long a request waits for room in the engine's queue before 429"},
    {"shutdown-timeout", 0, true, "S", "30",
     "on SIGTERM/SIGINT, seconds to let requests in flight finish; then they are cancelled "
     "(503) and embd exits 1 within a second (0 when all finished)"},
    {"drain-seconds", 0, true, "S", "2",
     "on SIGTERM, first answer GET /health with 503 for S seconds while still serving "
     "requests (new connections too), so that a load balancer's health check (HAProxy, "
     "Kubernetes readiness) takes this replica out before it stops accepting; only once "
     "/health has been asked; part of --shutdown-timeout; 0: stop accepting at once"},
    {"prefix", 0, true, "STR", NULL,
     "prepended to every text embedded, e.g. \"query: \" (not to reranked pairs, nor to "
     "token-id inputs); a request's \"prompt_name\" replaces it; not with "
     "--default-prompt-name"},
    {"default-prompt-name", 0, true, "NAME", NULL,
     "the model's prompt (config_sentence_transformers.json \"prompts\") prepended to the "
     "texts of every request that names none; a request's \"prompt_name\" replaces it (as "
     "text-embeddings-inference's --default-prompt-name). Without it no prompt applies by "
     "default, even one the file's default_prompt_name names; not with --prefix"},
    {"no-normalize", 0, false, NULL, NULL,
     "OpenAI answers without the model's L2 normalisation (TEI requests say \"normalize\")"},
    {"max-batch-tokens", 0, true, "N", "0",
     "tokens per forward pass, at least the model's max input length (256 for "
     "all-MiniLM-L6-v2); 0 = auto: 4096 on the CPU, 16384 on a GPU"},
    {"cache", 0, true, "MODE", "mem",
     "embedding cache: off, mem (in memory) or a directory (on disk, LMDB, shared by "
     "processes and kept across restarts)"},
    {"cache-mem", 0, true, "MIB", "64", "in-memory cache budget in MiB"},
    {"cache-map-size", 0, true, "MIB", "4096", "the largest the disk cache may grow, in MiB"},
    {"pull", 0, false, NULL, NULL,
     "when -m (or --reranker) ORG/NAME is not in the Hugging Face cache, download it first "
     "(as embd pull does); without it nothing is downloaded"},
    {"express", 0, true, "MODE", "auto",
     "a second, one-thread CPU context of the model for short requests (a query: up to 8 "
     "inputs, one model-length in all), run at once beside the running batch instead of "
     "after it: on, off, or auto (on when the model runs on the CPU); costs the model's "
     "weights in memory once more"},
};

/* The last component of dir, into buf (256 bytes). */
static const char *base_name(const char *dir, char buf[256]) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/')
        b--;
    snprintf(buf, 256, "%.*s", (int)(n - b), dir + b);
    return buf;
}

/* Reads the API key from `path` into key (cap bytes): its first line,
 * without the line end. Returns 0, or 2 after printing why (unreadable,
 * empty, too long, or holding a control character). */
static int read_key_file(const char *path, char *key, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_err("serve: cannot read --api-key-file %s: %s", path, strerror(errno));
        return 2;
    }
    size_t n = fread(key, 1, cap - 1, f);
    bool more = n == cap - 1 && fgetc(f) != EOF;
    fclose(f);
    key[n] = '\0';
    size_t len = strcspn(key, "\r\n");
    bool rest = false; /* anything but line ends after the first line */
    for (size_t i = len; i < n; i++)
        if (key[i] != '\r' && key[i] != '\n') rest = true;
    key[len] = '\0';
    if (more || rest) {
        cli_err("serve: --api-key-file %s must hold one line, the key (at most %zu bytes)", path,
                cap - 2);
        return 2;
    }
    return 0;
}

/* The API key: from --api-key (or EMBD_API_KEY, or --config) or from
 * --api-key-file, copied into key (cap bytes); *on is false when none is
 * given. An empty key, both options at once, or a key holding a space or a
 * control character is a usage error (2, printed): an empty key must not
 * turn authentication off by accident. A key given on the command line is
 * overwritten in argv, so that ps no longer shows it (it still does for the
 * moment before; the file or the environment avoid that). */
static int api_key_of(const struct cli_args *a, int argc, char **argv, char *key, size_t cap,
                      bool *on) {
    const char *k = cli_get(a, "api-key"), *file = cli_get(a, "api-key-file");
    const char *env = getenv("EMBD_API_KEY"), *env_file = getenv("EMBD_API_KEY_FILE");
    char src[160];
    *on = false;
    if (cli_one_of(a, "api-key", "api-key-file", &k, &file)) return 2;
    if (!k && env && cli_is_set(a, "api-key-file")) env = NULL;         /* the file won */
    if (!file && env_file && cli_is_set(a, "api-key")) env_file = NULL; /* the key won */
    if ((k && !*k) || (!k && !file && env && !*env)) {
        cli_err("serve: the API key is empty%s; refusing to serve without authentication by "
                "accident (leave the option out to serve without a key)",
                k ? cli_source(a, "api-key", src, sizeof src) : " (from EMBD_API_KEY)");
        return 2;
    }
    if ((file && !*file) || (!k && !file && env_file && !*env_file)) {
        cli_err("serve: --api-key-file is empty%s",
                file ? cli_source(a, "api-key-file", src, sizeof src)
                     : " (from EMBD_API_KEY_FILE)");
        return 2;
    }
    if (file) {
        int rc = read_key_file(file, key, cap);
        if (rc) return rc;
        if (!*key) {
            cli_err("serve: --api-key-file %s holds an empty key; refusing to serve without "
                    "authentication by accident",
                    file);
            return 2;
        }
    } else if (k) {
        if (strlen(k) >= cap) {
            cli_err("serve: the API key is longer than %zu bytes", cap - 1);
            return 2;
        }
        snprintf(key, cap, "%s", k);
        const uintptr_t kp = (uintptr_t)k;
        for (int i = 1; i < argc; i++) /* in argv (not from the environment): hide it from ps */
            if (kp >= (uintptr_t)argv[i] && kp < (uintptr_t)argv[i] + strlen(argv[i]) + 1) {
                memset(argv[i] + (kp - (uintptr_t)argv[i]), 'x', strlen(k));
                break;
            }
    } else {
        return 0;
    }
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            cli_err("serve: the API key holds a space or a control character");
            return 2;
        }
    *on = true;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    /* before any thread (engine, CPU pool, HTTP) starts, so all inherit the mask */
    srv_prepare_signals();

    struct cli_args a;
    int rc = cli_parse(&a, "serve", serve_opts, (int)(sizeof serve_opts / sizeof serve_opts[0]),
                       argc, argv, "embd serve -m DIR [--host 127.0.0.1] [--port 8080] [options]",
                       "Serves embeddings over HTTP: POST /v1/embeddings (OpenAI), POST /embed "
                       "and POST / (text-embeddings-inference; huggingface_hub's InferenceClient "
                       "posts to the server's URL), POST /search (with --store), GET /health, "
                       "GET /info, GET /v1/models and GET /metrics (Prometheus). With a "
                       "cross-encoder (as -m, or --reranker beside the embedding model): POST "
                       "/rerank (TEI) and POST /v1/rerank (Cohere/Jina). Requests from every "
                       "connection are batched together. SIGTERM or SIGINT stops accepting, "
                       "lets the requests in flight finish and exits 0; those unfinished at "
                       "--shutdown-timeout are cancelled and it exits 1. SIGTERM first drains "
                       "(--drain-seconds): /health answers 503 while requests are still "
                       "served.");
    if (rc) {
        cli_args_free(&a);
        return rc < 0 ? 0 : rc;
    }
    embd_model *model = NULL;
    embd_ctx *ctx = NULL; /* the first device's: model, /info and /metrics */
    embd_ctx *dev_ctx[EMBD_SCHED_MAX_CTX] = {0}, *xctx = NULL; /* a context per device; express */
    int dev_idx[EMBD_SCHED_MAX_CTX], n_dev = 0, n_ctx = 0;
    char dev_names[EMBD_SCHED_MAX_CTX][32];
    const char *dev_name_ptr[EMBD_SCHED_MAX_CTX];
    embd_sched *sched = NULL;
    embd_vstore *store = NULL;
    embd_model *rmodel = NULL; /* --reranker */
    embd_ctx *rctx = NULL;
    embd_sched *rsched = NULL;
    struct srv_reranker rr = {0};
    const char **prompt_names = NULL; /* (n_prompts) the model's, for limits.prompts */
    static char name_buf[256], rname_buf[256];
    struct srv_config cfg = {0};
    static char key[1024];
    bool keyed = false;
    long port, body, inputs, chars, conc, qto, sto, drain, mbt, max_tok = 0;
    long max_conns, per_client, hdr_to, body_to, idle_to, threads, reply_mib;
    if ((rc = cli_get_int(&a, "port", 0, 65535, &port)) ||
        (rc = cli_get_int(&a, "max-body-bytes", 64, 1L << 30, &body)) ||
        (rc = cli_get_int(&a, "max-inputs", 1, 1L << 20, &inputs)) ||
        (rc = cli_get_int(&a, "max-input-chars", 1, 1L << 30, &chars)) ||
        (rc = cli_get_int(&a, "max-concurrent-requests", 1, 1L << 16, &conc)) ||
        (rc = cli_get_int(&a, "queue-timeout-ms", 0, 3600000, &qto)) ||
        (rc = cli_get_int(&a, "shutdown-timeout", 0, 3600, &sto)) ||
        (rc = cli_get_int(&a, "drain-seconds", 0, 3600, &drain)) ||
        (rc = cli_get_int(&a, "max-batch-tokens", 0, 1L << 26, &mbt)) ||
        (rc = cli_get_int(&a, "max-connections", 1, 1L << 20, &max_conns)) ||
        (rc = cli_get_int(&a, "max-connections-per-client", 0, 1L << 20, &per_client)) ||
        (rc = cli_get_int(&a, "header-timeout", 1, 3600, &hdr_to)) ||
        (rc = cli_get_int(&a, "body-timeout", 1, 3600, &body_to)) ||
        (rc = cli_get_int(&a, "idle-timeout", 1, 3600, &idle_to)) ||
        (rc = cli_get_int(&a, "http-threads", 1, 256, &threads)) ||
        (rc = cli_get_int(&a, "max-reply-memory", 1, 1L << 20, &reply_mib)) ||
        (rc = api_key_of(&a, argc, argv, key, sizeof key, &keyed)))
        goto done;
    if (cli_get(&a, "max-input-tokens") &&
        (rc = cli_get_int(&a, "max-input-tokens", 2, 1L << 20, &max_tok)))
        goto done;
    if (drain > 0 && drain >= sto)
        fprintf(stderr,
                "embd: serve: warning: --drain-seconds %ld is not less than --shutdown-timeout "
                "%ld: after SIGTERM the drain takes the whole timeout, leaving no time for the "
                "requests in flight to finish\n",
                drain, sto);
    struct embd_ctx_params cp;
    if ((rc = cli_ctx_params(&a, &cp))) goto done;
    if ((rc = cli_cache_params(&a, &cp))) goto done;
    cp.max_batch_tokens = (int)mbt;
    cp.prefix = cli_get(&a, "prefix"); /* each request asks for its own normalisation */

    const char *dir = cli_get(&a, "model");
    if ((rc = cli_pull_missing(&a, dir)) || (rc = cli_open_model(&a, &model))) goto done;
    if (max_tok) {
        if (max_tok > embd_model_max_tokens(model)) {
            cli_err("serve: --max-input-tokens %ld is more than the model takes (%d)", max_tok,
                    embd_model_max_tokens(model));
            rc = 2;
            goto done;
        }
        /* Reload with the engine truncating at the same length. */
        embd_model_free(model);
        model = NULL;
        struct embd_model_params mp = embd_model_default_params();
        mp.max_seq_length = (int)max_tok;
        if (embd_model_load(dir, mp, &model) != EMBD_OK) {
            cli_err("cannot load model %s: %s", dir, embd_last_error());
            rc = 1;
            goto done;
        }
    }
    /* The server's default prompt: --prefix, or the text of the model's
     * prompt named by --default-prompt-name (one or the other, as TEI's
     * --default-prompt and --default-prompt-name). */
    const char *dpn = cli_get(&a, "default-prompt-name");
    if ((rc = cli_one_of(&a, "default-prompt-name", "prefix", &dpn, &cp.prefix))) goto done;
    char src[160];
    if (dpn && (rc = cli_prompt_prefix(&a, "default-prompt-name", model, &cp.prefix))) goto done;
    const bool is_reranker = embd_model_is_reranker(model);
    const char *rdir = cli_get(&a, "reranker");
    if (is_reranker && rdir) {
        cli_err("serve: -m %s is itself a cross-encoder (reranker); --reranker%s goes beside an "
                "embedding model",
                dir, cli_source(&a, "reranker", src, sizeof src));
        rc = 2;
        goto done;
    }
    if (is_reranker && cli_get(&a, "store")) {
        cli_err("serve: -m %s is a cross-encoder (reranker): --store needs an embedding model "
                "(serve the embedder with --store and --reranker %s)",
                dir, dir);
        rc = 2;
        goto done;
    }
    /* The context of the reranker(s): no embedding cache (scores are not
     * cached), no prefix. */
    struct embd_ctx_params rcp = cp;
    rcp.cache_bytes = 0;
    rcp.cache_dir = NULL;
    rcp.prefix = NULL;
    /* --device cuda:all / cuda:N,M: a context per GPU behind one scheduler */
    if ((rc = cli_device_list(&a, dev_idx, EMBD_SCHED_MAX_CTX, &n_dev))) goto done;
    if (n_dev > 0 && cp.cache_dir) { /* LMDB's environment may be open once per process */
        cli_err("serve: --device %s with --cache %s: a disk cache works with one context; with "
                "several GPUs use --cache mem",
                cli_get(&a, "device"), cp.cache_dir);
        rc = 2;
        goto done;
    }
    for (int i = 0; i < (n_dev ? n_dev : 1); i++) {
        struct embd_ctx_params dp = is_reranker ? rcp : cp;
        if (n_dev) dp.device_index = dev_idx[i];
        if (embd_ctx_new(model, dp, &dev_ctx[i]) != EMBD_OK) {
            if (n_dev)
                cli_err("serve: cuda:%d: %s", dev_idx[i], embd_last_error());
            else
                cli_err("serve: %s", embd_last_error());
            rc = 1;
            goto done;
        }
        n_ctx = i + 1;
    }
    ctx = dev_ctx[0];
    struct embd_sched_params sp = embd_sched_default_params();
    if (sp.queue_texts < 4 * (size_t)inputs) sp.queue_texts = 4 * (size_t)inputs;
    static const char *const express_modes[] = {"auto", "on", "off"};
    int express = 0;
    if ((rc = cli_get_choice(&a, "express", express_modes, 3, &express))) goto done;
    if (express == 1 || (express == 0 && !strcmp(embd_ctx_backend(ctx), "cpu"))) {
        /* one thread, no cache of its own (a disk cache opens once per
         * process), counting into the main context's metrics */
        struct embd_ctx_params xp = is_reranker ? rcp : cp;
        xp.device = EMBD_DEVICE_CPU;
        /* the same precision as the device's when that is the CPU (so a
         * query's vector does not depend on the lane it took) */
        xp.dtype = strcmp(embd_ctx_backend(ctx), "cpu") ? EMBD_DTYPE_FP32 : embd_ctx_dtype(ctx);
        xp.n_threads = 1;
        xp.cache_bytes = 0;
        xp.cache_dir = NULL;
        xp.metrics_of = ctx;
        if (embd_ctx_new(model, xp, &xctx) != EMBD_OK) {
            cli_err("serve: the express context (--express): %s", embd_last_error());
            rc = 1;
            goto done;
        }
        sp.express = xctx;
    }
    if (embd_sched_new_multi(dev_ctx, n_ctx, sp, &sched) != EMBD_OK) {
        cli_err("serve: %s", embd_last_error());
        rc = 1;
        goto done;
    }
    sp.express = NULL; /* the reranker's scheduler runs without one */
    if (rdir) {
        if ((rc = cli_pull_missing(&a, rdir))) goto done;
        if (embd_model_load(rdir, embd_model_default_params(), &rmodel) != EMBD_OK) {
            cli_err("serve: cannot load reranker %s: %s", rdir, embd_last_error());
            rc = 1;
            goto done;
        }
        if (!embd_model_is_reranker(rmodel)) {
            cli_err("serve: --reranker %s%s is not a cross-encoder (BertForSequenceClassification "
                    "with one label, such as cross-encoder/ms-marco-MiniLM-L-6-v2)",
                    rdir, cli_source(&a, "reranker", src, sizeof src));
            rc = 2;
            goto done;
        }
        if (embd_ctx_new(rmodel, rcp, &rctx) != EMBD_OK ||
            embd_sched_new(rctx, sp, &rsched) != EMBD_OK) {
            cli_err("serve: reranker: %s", embd_last_error());
            rc = 1;
            goto done;
        }
        rr = (struct srv_reranker){
            .model = rmodel,
            .ctx = rctx,
            .sched = rsched,
            .name = cli_get(&a, "reranker-name") ? cli_get(&a, "reranker-name")
                                                 : base_name(rdir, rname_buf),
            .dir = rdir,
            .dtype = embd_dtype_str(embd_ctx_dtype(rctx)),
            .max_batch_tokens = embd_ctx_max_batch_tokens(rctx),
        };
        cfg.reranker = &rr;
    }
    const char *store_path = cli_get(&a, "store");
    if (store_path) {
        size_t count = 0;
        if ((rc = cli_open_store_for_search(model, ctx, &cp, store_path, &store, &count)))
            goto done;
    }
    cfg.host = cli_get(&a, "host");
    cfg.port = (int)port;
    cfg.api_key = keyed ? key : NULL;
    cfg.max_body_bytes = (size_t)body;
    cfg.max_concurrent = (size_t)conc;
    cfg.queue_timeout_ms = (int)qto;
    cfg.shutdown_timeout_s = (int)sto;
    cfg.drain_s = (double)drain;
    cfg.max_connections = (size_t)max_conns;
    cfg.max_client_connections = per_client ? (size_t)per_client : SIZE_MAX;
    cfg.header_timeout_s = (int)hdr_to;
    cfg.body_timeout_s = (int)body_to;
    cfg.idle_timeout_s = (int)idle_to;
    cfg.http_threads = (int)threads;
    cfg.max_reply_bytes = (size_t)reply_mib << 20;
    cfg.limits.max_inputs = (size_t)inputs;
    cfg.limits.max_input_chars = (size_t)chars;
    cfg.limits.max_tokens = (size_t)embd_model_max_tokens(model);
    cfg.limits.auto_truncate = cli_flag(&a, "auto-truncate");
    cfg.limits.vocab = embd_model_vocab_size(model);
    cfg.limits.max_k = 1000;
    cfg.limits.dim = (size_t)embd_model_dim(model);
    /* The prompt names a request may give ("prompt_name"). */
    const int n_prompts = embd_model_prompt_count(model);
    prompt_names = calloc(n_prompts > 0 ? (size_t)n_prompts : 1, sizeof *prompt_names);
    if (!prompt_names) {
        cli_err("serve: out of memory");
        rc = 1;
        goto done;
    }
    for (int i = 0; i < n_prompts; i++)
        prompt_names[i] = embd_model_prompt_name(model, i);
    cfg.limits.prompts = prompt_names;
    cfg.limits.n_prompts = n_prompts > 0 ? (size_t)n_prompts : 0;
    cfg.prefix = cp.prefix;
    cfg.default_prompt_name = dpn;
    cfg.model_name = cli_get(&a, "served-model-name") ? cli_get(&a, "served-model-name")
                                                      : base_name(dir, name_buf);
    cfg.model_dir = dir;
    cfg.normalize = !is_reranker && embd_model_normalizes(model) && !cli_flag(&a, "no-normalize");
    cfg.dtype = embd_dtype_str(embd_ctx_dtype(ctx)); /* what --dtype (auto) gave */
    cfg.max_batch_tokens = embd_ctx_max_batch_tokens(ctx);
    /* /metrics (labelled when several) and /info per device */
    for (int i = 0; i < n_ctx; i++) {
        const int di = n_dev ? dev_idx[i] : cp.device_index;
        int again = 0; /* a GPU named twice: cuda:0, then cuda:0/1 */
        for (int j = 0; j < i; j++)
            again += n_dev && dev_idx[j] == di;
        if (strcmp(embd_ctx_backend(dev_ctx[i]), "cuda") && !n_dev)
            snprintf(dev_names[i], sizeof dev_names[i], "cpu");
        else if (again)
            snprintf(dev_names[i], sizeof dev_names[i], "cuda:%d/%d", di, again);
        else
            snprintf(dev_names[i], sizeof dev_names[i], "cuda:%d", di);
        dev_name_ptr[i] = dev_names[i];
    }
    cfg.devices = dev_ctx;
    cfg.device_names = dev_name_ptr;
    cfg.n_devices = n_ctx;
    rc = srv_run(&cfg, model, ctx, sched, store);
    if (rc == SRV_RUN_CANCELLED || rc == SRV_RUN_ABANDONED) {
        /* --shutdown-timeout passed with work unfinished (cancelled): exit 1
         * now, without waiting for the engine's running round to end. */
        fflush(NULL);
        _exit(1);
    }
done:
    free(prompt_names);
    embd_sched_free(rsched);
    embd_ctx_free(rctx);
    embd_model_free(rmodel);
    embd_sched_free(sched);
    embd_vstore_close(store);
    embd_ctx_free(xctx);
    for (int i = 0; i < n_ctx; i++)
        embd_ctx_free(dev_ctx[i]);
    embd_model_free(model);
    cli_args_free(&a);
    return rc;
}
