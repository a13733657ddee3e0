/* doctor.c — `embd doctor`: what this machine offers and which backend would run. */
#include "cli.h"

#include <microhttpd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Starts a context for model m with the requested device, dtype and
 * threads: this checks, for this model, everything a run would (driver and
 * runtime, compute capability, free memory against the model's needs,
 * dtype), and says what would run, in which precision and, when device auto
 * falls back to the CPU, why (the fallback the metrics count). Returns 0, 1
 * (it cannot run) or 2 (conflicting options). */
static int check_run(const struct cli_args *a, embd_model *m, const char *dev) {
    struct embd_ctx_params p;
    int rc = cli_ctx_params(a, &p);
    if (rc) return rc;
    p.cache_bytes = 0;
    embd_ctx *ctx = NULL;
    const enum embd_status st = embd_ctx_new(m, p, &ctx);
    if (st == EMBD_ERR_INVALID_ARG) { /* a bad option value (--gpu-memory-limit): usage */
        cli_err("doctor: %s", embd_last_error());
        return 2;
    }
    if (st != EMBD_OK) {
        printf("run: device %s, dtype %s: cannot run this model: %s\n", dev, cli_get(a, "dtype"),
               embd_last_error());
        cli_err("doctor: device %s cannot run this model: %s", dev, embd_last_error());
        return 1;
    }
    const char *why;
    enum embd_fallback fb = embd_ctx_fallback(ctx, &why);
    printf("run: device %s, dtype %s -> %s", dev, cli_get(a, "dtype"), embd_ctx_backend(ctx));
    if (fb != EMBD_FALLBACK_NONE) printf(" (fallback: %s)", embd_fallback_str(fb));
    printf("\n  computes in %s", embd_dtype_str(embd_ctx_dtype(ctx)));
    if (fb != EMBD_FALLBACK_NONE) printf("; on the CPU because: %s", why);
    printf("\n");
    embd_ctx_free(ctx);
    return 0;
}

int cmd_doctor(int argc, char **argv) {
    struct cli_args a;
    int rc =
        cli_parse(&a, "doctor", NULL, 0, argc, argv, "embd doctor [options]",
                  "Prints what this machine offers (CPU, BLAS, GPU) and which backend\n"
                  "--device auto would pick, and why. With -m it also loads the model and\n"
                  "checks that the requested --device and --dtype can run it (exit 1 if not).");
    if (rc) {
        cli_args_free(&a);
        return rc < 0 ? 0 : rc;
    }
    /* the options checked first, with or without a model: a bad --device,
     * --dtype or --threads is a usage error here too */
    struct embd_ctx_params checked;
    if ((rc = cli_ctx_params(&a, &checked))) goto done;
    printf("embd %s\n", EMBD_VERSION);
    printf("%s", embd_system_info());
#ifdef EMBD_MHD_FIXED
    printf("http server: libmicrohttpd %s, static (scripts/build-mhd: Debian's 0.9.75-6 with "
           "embd's two fixes in deps/libmicrohttpd: one reply to a malformed Content-Length, and "
           "no race when the listening socket is quiesced)\n",
           MHD_get_version());
#else
    printf("http server: libmicrohttpd %s, the system's (a malformed Content-Length gets a "
           "malformed reply: run scripts/build-mhd and rebuild)\n",
           MHD_get_version());
#endif
    const char *dev = cli_get(&a, "device");
    char report[8192];
    embd_device_report(report, sizeof report);
    printf("%s", report);
    const char *dir = cli_get(&a, "model");
    if (strcmp(dev, "auto") != 0)
        printf("device %s requested%s\n", dev, dir ? "" : " (give -m to check it with a model)");
    if (dir) {
        embd_model *m = NULL;
        if ((rc = cli_open_model(&a, &m))) goto done;
        printf("model %s: dim %d, max tokens %d, vocab %d, pooling %s, normalize %s, "
               "fingerprint %016llx\n",
               dir, embd_model_dim(m), embd_model_max_tokens(m), embd_model_vocab_size(m),
               embd_model_pooling(m), embd_model_normalizes(m) ? "yes" : "no",
               (unsigned long long)embd_model_fingerprint(m));
        rc = check_run(&a, m, dev);
        embd_model_free(m);
        goto done;
    }
    rc = 0;
done:
    cli_args_free(&a);
    return rc;
}
