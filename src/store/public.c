/* public.c — the vector-store functions of include/embd.h that vstore.h
 * does not already give: opening a store for a model, and search hits in
 * the public hit struct. */
#include "model/model.h"
#include "store/vstore.h"
#include "util/log.h"
#include "util/util.h"

enum embd_status embd_vstore_open_model(const char *location, const embd_model *model,
                                        bool writable, embd_vstore **out) {
    if (out) *out = NULL;
    if (!location || !model || !out)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_open_model: NULL argument");
    struct embd_store_params p = {.dim = embd_model_dim(model),
                                  .fingerprint = embd_model_fingerprint(model),
                                  .normalized = embd_model_normalizes(model),
                                  .create = writable,
                                  .writable = writable};
    struct embd_store_open_info info = {0};
    enum embd_status s = embd_vstore_open(location, &p, out, &info);
    if (s == EMBD_OK && info.dropped_bytes)
        embd_log(EMBD_LOG_WARN, "store",
                 "store %s: %s %llu bytes of an incomplete or corrupt record at the end of "
                 "records.log (an interrupted write); the records before it are intact",
                 location, writable ? "dropped" : "ignoring",
                 (unsigned long long)info.dropped_bytes);
    return s;
}

enum embd_status embd_vstore_search_hits(embd_vstore *s, const float *query, size_t k, bool exact,
                                         struct embd_search_hit *hits, size_t *n_hits) {
    if (n_hits) *n_hits = 0;
    if (!s || !query || !hits || !n_hits)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_search_hits: NULL argument");
    if (k == 0) return embd_error(EMBD_ERR_INVALID_ARG, "search: k must be at least 1");
    struct embd_store_hit *h = embd_malloc2(k, sizeof *h);
    if (!h) return embd_error(EMBD_ERR_NOMEM, "out of memory for %zu hits", k);
    size_t n = 0;
    enum embd_status st = embd_vstore_search(s, query, k, exact, h, &n);
    if (st == EMBD_OK) {
        for (size_t i = 0; i < n; i++)
            hits[i] = (struct embd_search_hit){.score = h[i].score,
                                               .id = h[i].id,
                                               .id_len = h[i].id_len,
                                               .text = h[i].text,
                                               .text_len = h[i].text_len};
        *n_hits = n;
    }
    embd_free(h);
    return st;
}
