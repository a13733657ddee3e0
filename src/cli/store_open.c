/* store_open.c — opening a vector store for a model, shared by `embd index`
 * (writable, created when missing), `embd search` and `embd serve --store`
 * (read-only; the embedded store scored on the context's GPU, if any). */
#include "cli.h"
#include "store/vstore.h"

#include <string.h>

/* Opens the store; gpu >= 0: score an embedded store on CUDA device gpu. */
static int open_store(const embd_model *model, const char *path, bool writable, int gpu,
                      embd_vstore **store, size_t *count) {
    struct embd_store_params sp = {.dim = embd_model_dim(model),
                                   .fingerprint = embd_model_fingerprint(model),
                                   .normalized = embd_model_normalizes(model),
                                   .create = writable,
                                   .writable = writable,
                                   .gpu = gpu >= 0,
                                   .gpu_index = gpu >= 0 ? gpu : 0};
    struct embd_store_open_info info;
    if (embd_vstore_open(path, &sp, store, &info) != EMBD_OK) {
        cli_err("%s", embd_last_error());
        return 1;
    }
    if (info.dropped_bytes && writable)
        cli_err("warning: store %s: dropped %llu bytes of an incomplete or corrupt record at the "
                "end of records.log (an interrupted write); the records before it are intact",
                path, (unsigned long long)info.dropped_bytes);
    else if (info.dropped_bytes)
        cli_err("warning: store %s: ignoring %llu bytes of an incomplete or corrupt record at "
                "the end of records.log (an interrupted or ongoing write)",
                path, (unsigned long long)info.dropped_bytes);
    if (embd_vstore_count(*store, count) != EMBD_OK) {
        cli_err("%s", embd_last_error());
        return 1;
    }
    return 0;
}

int cli_open_store(const embd_model *model, const char *path, bool writable, embd_vstore **store,
                   size_t *count) {
    return open_store(model, path, writable, -1, store, count);
}

int cli_open_store_for_search(const embd_model *model, const embd_ctx *ctx,
                              const struct embd_ctx_params *cp, const char *path,
                              embd_vstore **store, size_t *count) {
    const bool cuda = ctx && !strcmp(embd_ctx_backend(ctx), "cuda");
    return open_store(model, path, false, cuda ? cp->device_index : -1, store, count);
}
