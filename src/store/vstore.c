/* vstore.c — the store interface: dispatch by location, and the embedded
 * store (store.c) behind the vtable. */
#include "store/vstore.h"

#include "util/util.h"

#include <string.h>

struct embd_vstore {
    const struct embd_vstore_ops *ops;
    void *impl;
};

static enum embd_status emb_add(void *impl, const char *const *ids, const size_t *id_lens,
                                const char *const *texts, const size_t *text_lens,
                                const float *vecs, size_t n, size_t *n_replaced) {
    return embd_store_add(impl, ids, id_lens, texts, text_lens, vecs, n, n_replaced);
}

static enum embd_status emb_flush(void *impl) {
    return embd_store_flush(impl);
}

static enum embd_status emb_finish(void *impl) {
    (void)impl;
    return EMBD_OK;
}

static enum embd_status emb_count(void *impl, size_t *n) {
    *n = embd_store_count(impl);
    return EMBD_OK;
}

static enum embd_status emb_search(void *impl, const float *query, size_t k, bool exact,
                                   struct embd_store_hit *hits, size_t *n_hits) {
    (void)exact; /* always exact */
    return embd_store_search(impl, query, k, hits, n_hits);
}

static void emb_close(void *impl) {
    embd_store_close(impl);
}

static const struct embd_vstore_ops embedded_ops = {
    .kind = "embedded",
    .add = emb_add,
    .flush = emb_flush,
    .finish = emb_finish,
    .count = emb_count,
    .search = emb_search,
    .close = emb_close,
};

bool embd_vstore_is_pg(const char *location) {
    return location &&
           (!strncmp(location, "postgresql://", 13) || !strncmp(location, "postgres://", 11));
}

enum embd_status embd_vstore_open(const char *location, const struct embd_store_params *p,
                                  embd_vstore **out, struct embd_store_open_info *info) {
    if (!out) return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_open: out is NULL");
    *out = NULL;
    if (!location || !p) return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_open: NULL argument");
    embd_vstore *s = embd_calloc(1, sizeof *s);
    if (!s) return embd_error(EMBD_ERR_NOMEM, "out of memory opening store");
    enum embd_status st;
    if (embd_vstore_is_pg(location)) {
        if (info) memset(info, 0, sizeof *info);
        st = embd_pg_open(location, p, &s->ops, &s->impl);
    } else {
        embd_store *es = NULL;
        st = embd_store_open(location, p, &es, info);
        s->ops = &embedded_ops;
        s->impl = es;
    }
    if (st != EMBD_OK) goto fail;
    *out = s;
    return EMBD_OK;
fail:
    embd_free(s);
    return st;
}

void embd_vstore_close(embd_vstore *s) {
    if (!s) return;
    s->ops->close(s->impl);
    embd_free(s);
}

const char *embd_vstore_kind(const embd_vstore *s) {
    return s ? s->ops->kind : "none";
}

enum embd_status embd_vstore_add(embd_vstore *s, const char *const *ids, const size_t *id_lens,
                                 const char *const *texts, const size_t *text_lens,
                                 const float *vecs, size_t n, size_t *n_replaced) {
    if (!s) return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_add: NULL store");
    return s->ops->add(s->impl, ids, id_lens, texts, text_lens, vecs, n, n_replaced);
}

enum embd_status embd_vstore_flush(embd_vstore *s) {
    if (!s) return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_flush: NULL store");
    return s->ops->flush(s->impl);
}

enum embd_status embd_vstore_finish(embd_vstore *s) {
    if (!s) return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_finish: NULL store");
    return s->ops->finish(s->impl);
}

enum embd_status embd_vstore_count(embd_vstore *s, size_t *n) {
    if (!s || !n) return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_count: NULL argument");
    return s->ops->count(s->impl, n);
}

enum embd_status embd_vstore_search(embd_vstore *s, const float *query, size_t k, bool exact,
                                    struct embd_store_hit *hits, size_t *n_hits) {
    if (!s || !query || !n_hits || (k && !hits))
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_search: NULL argument");
    return s->ops->search(s->impl, query, k, exact, hits, n_hits);
}

const char *embd_vstore_search_device(const embd_vstore *s, const char **why) {
    if (why) *why = "";
    if (!s) return "none";
    if (s->ops != &embedded_ops) return "postgresql";
    return embd_store_search_device(s->impl, why);
}
