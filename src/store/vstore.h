/* vstore.h — one interface over the vector stores, chosen by the store
 * location: a `postgresql://` or `postgres://` URL opens a PostgreSQL +
 * pgvector store (pg.c), anything else the embedded store (store.c).
 *
 * A store is a small vtable (struct embd_vstore_ops) and its implementation
 * pointer; the CLI and the server talk only to embd_vstore_*. The semantics
 * are the embedded store's (store.h): ids are unique (adding an id again
 * replaces it), the store records the model's fingerprint and dimension and
 * refuses another model, search returns the top-k by inner product (the
 * score), best first.
 *
 * PostgreSQL layout (in the URL's database, schema search_path):
 *   embd_meta  one row: dim int, model_fingerprint text (16 hex),
 *              normalized boolean, format text ('embd-store'), version int
 *   embd_docs  id text primary key, text text, embedding vector(D)
 *   embd_docs_hnsw  HNSW index on embedding, vector_ip_ops for a model that
 *              L2-normalises (else vector_cosine_ops), built by
 *              embd_vstore_finish (after a bulk load: faster than keeping it
 *              up to date row by row; later loads update it).
 * Writes: COPY ... FROM STDIN (FORMAT binary) into a temporary table, then
 * one INSERT ... ON CONFLICT (id) DO UPDATE, in one transaction per batch
 * (committed = durable; flush is a no-op).
 * Search: ORDER BY embedding <#> q (or <=> for cosine) LIMIT k with
 * hnsw.ef_search = max(40, k) (so up to 1000 hits come from the index); an
 * exact search (or k > 1000) turns index scans off for the query, so every
 * row is scored and sorted (a sequential scan: exact). */
#ifndef EMBD_VSTORE_H
#define EMBD_VSTORE_H

#include "store/store.h"

typedef struct embd_vstore embd_vstore;

struct embd_vstore_ops {
    const char *kind; /* "embedded" or "postgresql" */
    enum embd_status (*add)(void *impl, const char *const *ids, const size_t *id_lens,
                            const char *const *texts, const size_t *text_lens, const float *vecs,
                            size_t n, size_t *n_replaced);
    enum embd_status (*flush)(void *impl);
    enum embd_status (*finish)(void *impl); /* after a load: build indexes */
    enum embd_status (*count)(void *impl, size_t *n);
    enum embd_status (*search)(void *impl, const float *query, size_t k, bool exact,
                               struct embd_store_hit *hits, size_t *n_hits);
    void (*close)(void *impl);
};

/* True when `location` names a PostgreSQL store (postgresql:// or postgres://). */
EMBD_API bool embd_vstore_is_pg(const char *location);

/* Opens the store at `location` (a directory or a PostgreSQL URL) with the
 * embedded store's parameters (store.h). A PostgreSQL store creates the
 * pgvector extension and its tables when p->create (and p->writable); the
 * errors name the server (without a password) and say what is missing.
 * info (may be NULL) is zeroed for PostgreSQL. Returns EMBD_OK,
 * EMBD_ERR_INVALID_ARG (another model; no store there), EMBD_ERR_IO (server
 * unreachable, SQL errors, missing extension, file errors) or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_vstore_open(const char *location, const struct embd_store_params *p,
                                           embd_vstore **out, struct embd_store_open_info *info);

EMBD_API void embd_vstore_close(embd_vstore *s); /* NULL is a no-op */
EMBD_API const char *embd_vstore_kind(const embd_vstore *s);

/* As embd_store_add / embd_store_flush / embd_store_count. */
EMBD_API enum embd_status embd_vstore_add(embd_vstore *s, const char *const *ids,
                                          const size_t *id_lens, const char *const *texts,
                                          const size_t *text_lens, const float *vecs, size_t n,
                                          size_t *n_replaced);
EMBD_API enum embd_status embd_vstore_flush(embd_vstore *s);
EMBD_API enum embd_status embd_vstore_finish(embd_vstore *s);
EMBD_API enum embd_status embd_vstore_count(embd_vstore *s, size_t *n);

/* Top-k by inner product, best first; hits (k); the id/text pointers stay
 * valid until the next call on the store. exact: for PostgreSQL, score
 * every row instead of using the HNSW index (the embedded store is always
 * exact). */
EMBD_API enum embd_status embd_vstore_search(embd_vstore *s, const float *query, size_t k,
                                             bool exact, struct embd_store_hit *hits,
                                             size_t *n_hits);

/* Where searches are scored: embd_store_search_device for the embedded
 * store; "postgresql" (the server) with why = "" for PostgreSQL. */
EMBD_API const char *embd_vstore_search_device(const embd_vstore *s, const char **why);

/* pg.c: the PostgreSQL implementation (a stub that refuses when embd is
 * built without libpq). */
enum embd_status embd_pg_open(const char *url, const struct embd_store_params *p,
                              const struct embd_vstore_ops **ops, void **impl);

#endif
