/* store.h — a minimal embedded vector store: a directory holding meta.json
 * and an append-only records.log, loaded into memory at open and searched by
 * exact inner product (OpenBLAS, or cuBLAS on a GPU when asked). Internal API for the CLI and the
 * server.
 *
 * On disk (PATH/):
 *   meta.json    {"format": "embd-store", "version": 1, "dim": D,
 *                 "model_fingerprint": "<16 hex>", "normalized": true|false},
 *                written once, atomically (temp file + rename).
 *   records.log  records back to back, each a 16-byte header
 *                  magic u32 | payload length u32 | XXH3-64 of the payload u64
 *                followed by the payload
 *                  id length u32 | id bytes | text length u32 | text bytes |
 *                  D float32
 *                all little-endian. A later record with the same id replaces
 *                an earlier one.
 *
 * Shapes: n = records (slots, live or dead), D = dimension.
 *
 * Crash safety: a batch of records is appended with one write(); a record cut
 * short or corrupted at the END of the log (a crash mid-write) is dropped at
 * open (and truncated away when opened for writing); a bad record followed by
 * good ones is an error, since dropping it would silently lose data.
 *
 * The store is used by one thread at a time. A writer holds an exclusive
 * lock on records.log; readers take no lock. The symbols are exported from
 * libembd (EMBD_API) for the embd CLI but are not part of include/embd.h. */
#ifndef EMBD_STORE_H
#define EMBD_STORE_H

#include "embd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMBD_STORE_MAX_ID 4096u            /* bytes per id (ids are 1..4096 bytes) */
#define EMBD_STORE_MAX_TEXT (16u << 20)    /* bytes per text */
#define EMBD_STORE_MAX_RECORDS 2147483647u /* slots (live + replaced) per store */

typedef struct embd_store embd_store;

struct embd_store_params {
    int dim;              /* D of the model; must match an existing store */
    uint64_t fingerprint; /* embd_model_fingerprint(); must match an existing store */
    bool normalized;      /* whether the vectors are L2-normalised (recorded at creation) */
    bool create;          /* create the store (and missing parent directories) when PATH
                             is missing or an empty directory */
    bool writable;        /* open for appends (takes the writer lock, truncates a torn tail) */
    bool gpu;             /* score searches on CUDA device gpu_index (the CUDA plugin; the
                             first search uploads the vectors, later ones what was added).
                             Any GPU failure logs one warning and the store scores on the
                             CPU from then on. Default (zero) false: the CPU */
    int gpu_index;        /* CUDA device ordinal when gpu */
};

/* What the open found, for the caller to report. */
struct embd_store_open_info {
    bool created;           /* the store was created by this open */
    uint64_t dropped_bytes; /* bytes of a torn/corrupt tail ignored (and, when
                               writable, truncated away) */
};

/* One search result. `id` and `text` point into the store and stay valid
 * until the next call on the store; they are not NUL-terminated. */
struct embd_store_hit {
    uint32_t slot;
    float score; /* inner product with the query */
    const char *id;
    size_t id_len;
    const char *text;
    size_t text_len;
};

/* Opens (and with p->create, creates) the store at `path`. Refuses a store
 * whose meta.json is missing, corrupt or foreign, or whose dimension or
 * model fingerprint differs from p's (the message names both). A torn tail
 * is reported in info->dropped_bytes (info may be NULL). Returns EMBD_OK,
 * EMBD_ERR_INVALID_ARG (bad params; store of another model), EMBD_ERR_IO
 * (file errors, corrupt store, locked by another writer) or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_store_open(const char *path, const struct embd_store_params *p,
                                          embd_store **out, struct embd_store_open_info *info);

/* Closes the store (does not fsync; call embd_store_flush first). NULL is a no-op. */
EMBD_API void embd_store_close(embd_store *s);

/* Appends n records with one write: ids[i] (id_lens[i] bytes, 1..4096),
 * texts[i] (text_lens[i] bytes, up to 16 MiB), vecs (n, D), all finite. An
 * id already in the store (or earlier in the same batch) is replaced. Sets
 * *n_replaced (may be NULL) to the number of replacements. On any error
 * nothing is appended and the store is unchanged. Not durable until
 * embd_store_flush. Returns EMBD_OK, EMBD_ERR_INVALID_ARG (read-only store,
 * bad lengths, non-finite values, too many records), EMBD_ERR_IO or
 * EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_store_add(embd_store *s, const char *const *ids,
                                         const size_t *id_lens, const char *const *texts,
                                         const size_t *text_lens, const float *vecs, size_t n,
                                         size_t *n_replaced);

/* fsyncs records.log. Returns EMBD_OK or EMBD_ERR_IO. */
EMBD_API enum embd_status embd_store_flush(embd_store *s);

/* Live records (replaced ones are not counted). A reader (opened
 * read-only) first takes in what a writer has appended since it opened the
 * store, as embd_store_search does. */
EMBD_API size_t embd_store_count(embd_store *s);
EMBD_API int embd_store_dim(const embd_store *s);
EMBD_API bool embd_store_normalized(const embd_store *s);

/* Exact top-k by inner product over the live records: query (D), hits (k).
 * A reader first takes in the records a writer appended since it opened the
 * store (or last searched), so a long-lived reader sees new and replaced
 * records.
 * Hits are sorted by score descending, ties by lower slot (older record);
 * *n_hits = min(k, count). Returns EMBD_OK, EMBD_ERR_INVALID_ARG (non-finite
 * query), EMBD_ERR_IO (reading texts) or EMBD_ERR_NOMEM. */
EMBD_API enum embd_status embd_store_search(embd_store *s, const float *query, size_t k,
                                            struct embd_store_hit *hits, size_t *n_hits);

/* Where searches are scored: "cuda" when params.gpu was set and no GPU
 * failure has been seen (the GPU is set up by the first search, which may
 * still fall back), else "cpu". *why (may be NULL) gets why the GPU is not
 * used: "" when it is or was not asked for. Top-k selection is on the host
 * either way, with the same ranking rule. */
EMBD_API const char *embd_store_search_device(const embd_store *s, const char **why);

/* The live record with this id: its vector (D), pointing into the store and
 * valid until the next call. Returns EMBD_OK or EMBD_ERR_INVALID_ARG (no such id). */
EMBD_API enum embd_status embd_store_get(embd_store *s, const char *id, size_t id_len,
                                         const float **vec);

#endif
