/* doctor.c — `embd doctor`: what this machine offers and which backend would run. */
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cmd_doctor(int argc, char **argv) {
    struct cli_args a;
    int rc = cli_parse(&a, "doctor", NULL, 0, argc, argv, "embd doctor [options]",
                       "Prints what this machine offers (CPU, BLAS, GPU) and which backend\n"
                       "--device auto would pick, and why. With -m it also loads the model.");
    if (rc) {
        cli_args_free(&a);
        return rc < 0 ? 0 : rc;
    }
    printf("embd %s\n", EMBD_VERSION);
    printf("%s", embd_system_info());
    const char *dev = cli_get(&a, "device");
    char report[8192];
    embd_device_report(report, sizeof report);
    printf("%s", report);
    if (strcmp(dev, "auto") != 0) printf("device %s requested\n", dev);
    const char *dir = cli_get(&a, "model");
    if (dir) {
        embd_model *m = NULL;
        if ((rc = cli_open_model(&a, &m))) goto done;
        printf("model %s: dim %d, max tokens %d, vocab %d, pooling %s, normalize %s, "
               "fingerprint %016llx\n",
               dir, embd_model_dim(m), embd_model_max_tokens(m), embd_model_vocab_size(m),
               embd_model_pooling(m), embd_model_normalizes(m) ? "yes" : "no",
               (unsigned long long)embd_model_fingerprint(m));
        embd_model_free(m);
    }
    rc = 0;
done:
    cli_args_free(&a);
    return rc;
}
