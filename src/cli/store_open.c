/* store_open.c — opening a vector store for a model, shared by `embd index`
 * (writable, created when missing) and `embd search` (read-only). */
#include "cli.h"
#include "store/vstore.h"

int cli_open_store(const embd_model *model, const char *path, bool writable, embd_vstore **store,
                   size_t *count) {
    struct embd_store_params sp = {.dim = embd_model_dim(model),
                                   .fingerprint = embd_model_fingerprint(model),
                                   .normalized = embd_model_normalizes(model),
                                   .create = writable,
                                   .writable = writable};
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
