/* pg.c — the PostgreSQL + pgvector store behind the vstore interface
 * (layout and SQL in vstore.h). Built only with libpq (EMBD_HAVE_LIBPQ);
 * without it, opening a postgresql:// store fails with a clear message. */
#include "store/vstore.h"

#include "util/text.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef EMBD_HAVE_LIBPQ

enum embd_status embd_pg_open(const char *url, const struct embd_store_params *p,
                              const struct embd_vstore_ops **ops, void **impl) {
    (void)url;
    (void)p;
    (void)ops;
    (void)impl;
    return embd_error(EMBD_ERR_INVALID_ARG,
                      "this embd was built without PostgreSQL support (libpq was not found at "
                      "build time; install libpq-dev and rebuild)");
}

#else

#include <libpq-fe.h>

#define PG_EF_MAX 1000   /* pgvector's largest hnsw.ef_search */
#define PG_HNSW_MAX 2000 /* pgvector's largest dimension an HNSW index takes */
#define COPY_FLUSH (1u << 20)

struct pg {
    PGconn *conn;
    int dim;
    bool writable;
    char where[512]; /* "host ... port ... database ..." for messages */
    PGresult *last;  /* the last search's rows (hits point into it) */
    char *qbuf;      /* the query vector as text, '[...]' */
    size_t qcap;
    unsigned char *cbuf; /* COPY data being built */
    size_t clen, ccap;
};

/* Masks the passwords in a message in place, a '*' for each character
 * (libpq quotes a connection string it cannot parse as given): the PASS of
 * "scheme://USER:PASS@" and the value of "password=". */
static void redact(char *m) {
    for (char *p = m; (p = strstr(p, "://")) != NULL;) {
        p += 3;
        const size_t auth = strcspn(p, "/?#\" ");
        char *at = memchr(p, '@', auth), *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
        for (char *q = colon ? colon + 1 : at; q && q < at; q++)
            *q = '*';
    }
    for (char *p = m; (p = strstr(p, "password=")) != NULL;) {
        p += 9;
        for (; *p && !strchr(" '\"", *p); p++)
            *p = '*';
    }
}

/* The first line of libpq's message (they end with a newline), passwords
 * masked. */
static const char *pg_msg(const struct pg *g, char *buf, size_t cap) {
    const char *m = PQerrorMessage(g->conn);
    size_t n = strcspn(m, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(buf, m, n);
    buf[n] = '\0';
    redact(buf);
    return buf;
}

/* Runs one statement without rows; on error sets the message and returns
 * EMBD_ERR_IO. */
static enum embd_status pg_exec(struct pg *g, const char *sql, const char *what) {
    PGresult *r = PQexec(g->conn, sql);
    ExecStatusType t = PQresultStatus(r);
    enum embd_status st = EMBD_OK;
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        char m[400];
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): %s: %s", g->where, what,
                        pg_msg(g, m, sizeof m));
    }
    PQclear(r);
    return st;
}

static void pg_rollback(struct pg *g) {
    if (PQtransactionStatus(g->conn) != PQTRANS_IDLE) PQclear(PQexec(g->conn, "ROLLBACK"));
}

static enum embd_status cbuf_put(struct pg *g, const void *p, size_t n) {
    if (g->clen + n > g->ccap) {
        size_t cap = g->ccap ? g->ccap : 65536;
        while (cap < g->clen + n)
            cap *= 2;
        unsigned char *b = embd_realloc(g->cbuf, cap);
        if (!b) return embd_error(EMBD_ERR_NOMEM, "out of memory building a COPY batch");
        g->cbuf = b;
        g->ccap = cap;
    }
    memcpy(g->cbuf + g->clen, p, n);
    g->clen += n;
    return EMBD_OK;
}

static enum embd_status cbuf_u16(struct pg *g, uint16_t v) {
    unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    return cbuf_put(g, b, 2);
}

static enum embd_status cbuf_u32(struct pg *g, uint32_t v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    return cbuf_put(g, b, 4);
}

static enum embd_status copy_send(struct pg *g) {
    if (!g->clen) return EMBD_OK;
    if (PQputCopyData(g->conn, (const char *)g->cbuf, (int)g->clen) != 1) {
        char m[400];
        return embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): COPY failed: %s", g->where,
                          pg_msg(g, m, sizeof m));
    }
    g->clen = 0;
    return EMBD_OK;
}

/* A text field of COPY binary: its length, then its bytes, each maximal
 * invalid UTF-8 subpart written as U+FFFD (as the embedded store and the
 * tokenizer read it; PostgreSQL refuses the whole COPY over one bad byte). */
static enum embd_status cbuf_text(struct pg *g, const char *s, size_t len) {
    enum embd_status st;
    if (embd_utf8_valid(s, len)) {
        if ((st = cbuf_u32(g, (uint32_t)len))) return st;
        return cbuf_put(g, s, len);
    }
    const size_t at = g->clen;
    if ((st = cbuf_u32(g, 0))) return st; /* the length, written below */
    size_t out = 0;
    for (size_t i = 0; i < len;) {
        bool valid;
        const size_t u = embd_utf8_unit(s + i, len - i, &valid);
        if ((st = valid ? cbuf_put(g, s + i, u) : cbuf_put(g, "\xEF\xBF\xBD", 3))) return st;
        out += valid ? u : 3;
        i += u;
    }
    if (out > 0x7fffffffu) return embd_error(EMBD_ERR_INVALID_ARG, "a text is too long");
    const unsigned char b[4] = {(unsigned char)(out >> 24), (unsigned char)(out >> 16),
                                (unsigned char)(out >> 8), (unsigned char)out};
    memcpy(g->cbuf + at, b, 4);
    return EMBD_OK;
}

/* One row of the staging table in COPY binary: seq int4, id text, text
 * text, embedding vector (pgvector's binary form: int16 dim, int16 0, dim
 * float4, all big-endian). */
static enum embd_status copy_row(struct pg *g, uint32_t seq, const char *id, size_t id_len,
                                 const char *text, size_t text_len, const float *v) {
    enum embd_status st;
    if ((st = cbuf_u16(g, 4)) || (st = cbuf_u32(g, 4)) || (st = cbuf_u32(g, seq)) ||
        (st = cbuf_text(g, id, id_len)) || (st = cbuf_text(g, text, text_len)) ||
        (st = cbuf_u32(g, 4u + 4u * (uint32_t)g->dim)) || (st = cbuf_u16(g, (uint16_t)g->dim)) ||
        (st = cbuf_u16(g, 0)))
        return st;
    for (int j = 0; j < g->dim; j++) {
        uint32_t u;
        memcpy(&u, &v[j], 4);
        if ((st = cbuf_u32(g, u))) return st;
    }
    return g->clen >= COPY_FLUSH ? copy_send(g) : EMBD_OK;
}

static enum embd_status pg_add(void *impl, const char *const *ids, const size_t *id_lens,
                               const char *const *texts, const size_t *text_lens, const float *vecs,
                               size_t n, size_t *n_replaced) {
    struct pg *g = impl;
    enum embd_status st;
    PGresult *r = NULL;
    char m[400];
    if (n_replaced) *n_replaced = 0;
    if (!g->writable)
        return embd_error(EMBD_ERR_INVALID_ARG, "store %s is open read-only", g->where);
    if (n == 0) return EMBD_OK;
    if (!ids || !id_lens || !texts || !text_lens || !vecs)
        return embd_error(EMBD_ERR_INVALID_ARG, "embd_vstore_add: NULL argument");
    if (n > 0x7fffffffu) return embd_error(EMBD_ERR_INVALID_ARG, "too many records in one batch");
    for (size_t i = 0; i < n; i++) {
        if (id_lens[i] < 1 || id_lens[i] > EMBD_STORE_MAX_ID || !ids[i])
            return embd_error(EMBD_ERR_INVALID_ARG, "record %zu: the id must be 1 to %u bytes", i,
                              EMBD_STORE_MAX_ID);
        if (text_lens[i] > EMBD_STORE_MAX_TEXT || (text_lens[i] && !texts[i]))
            return embd_error(EMBD_ERR_INVALID_ARG, "record %zu: bad text (up to %u bytes)", i,
                              EMBD_STORE_MAX_TEXT);
        /* PostgreSQL's text type cannot hold U+0000: refused here, by name,
         * rather than by the server for the whole batch (or cut short). */
        if (memchr(ids[i], 0, id_lens[i]) || (text_lens[i] && memchr(texts[i], 0, text_lens[i])))
            return embd_error(EMBD_ERR_INVALID_ARG,
                              "record %zu (id \"%.*s\"): its %s holds U+0000 (NUL), which a "
                              "PostgreSQL text column cannot store (the embedded store can)",
                              i, (int)strnlen(ids[i], id_lens[i] > 64 ? 64 : id_lens[i]), ids[i],
                              memchr(ids[i], 0, id_lens[i]) ? "id" : "text");
        for (int j = 0; j < g->dim; j++)
            if (!isfinite(vecs[i * (size_t)g->dim + (size_t)j]))
                return embd_error(EMBD_ERR_INVALID_ARG, "record %zu: non-finite vector value", i);
    }
    if ((st = pg_exec(g, "BEGIN", "BEGIN"))) goto fail;
    r = PQexec(g->conn, "COPY embd_stage (seq, id, text, embedding) FROM STDIN (FORMAT binary)");
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): COPY: %s", g->where,
                        pg_msg(g, m, sizeof m));
        goto fail;
    }
    PQclear(r);
    r = NULL;
    g->clen = 0;
    static const unsigned char header[19] = {'P',  'G',  'C',  'O',  'P', 'Y',
                                             '\n', 0xff, '\r', '\n', 0};
    if ((st = cbuf_put(g, header, sizeof header))) goto copy_fail;
    for (size_t i = 0; i < n; i++)
        if ((st = copy_row(g, (uint32_t)i, ids[i], id_lens[i], texts[i] ? texts[i] : "",
                           text_lens[i], vecs + i * (size_t)g->dim)))
            goto copy_fail;
    if ((st = cbuf_u16(g, 0xffff)) || (st = copy_send(g))) goto copy_fail;
    if (PQputCopyEnd(g->conn, NULL) != 1) {
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): COPY: %s", g->where,
                        pg_msg(g, m, sizeof m));
        goto fail;
    }
    r = PQgetResult(g->conn);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): COPY: %s", g->where,
                        pg_msg(g, m, sizeof m));
        goto fail;
    }
    PQclear(r);
    while ((r = PQgetResult(g->conn)))
        PQclear(r);
    /* Replacements: ids already stored, plus repeats within the batch. */
    r = PQexec(g->conn, "SELECT (SELECT count(*) FROM embd_docs d WHERE d.id IN "
                        "(SELECT id FROM embd_stage)) + (SELECT count(*) - count(DISTINCT id) "
                        "FROM embd_stage)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): counting replacements: %s", g->where,
                        pg_msg(g, m, sizeof m));
        goto fail;
    }
    size_t repl = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    r = NULL;
    if ((st = pg_exec(g,
                      "INSERT INTO embd_docs (id, text, embedding) SELECT DISTINCT ON (id) id, "
                      "text, embedding FROM embd_stage ORDER BY id, seq DESC ON CONFLICT (id) DO "
                      "UPDATE SET text = EXCLUDED.text, embedding = EXCLUDED.embedding",
                      "upsert")) ||
        (st = pg_exec(g, "COMMIT", "COMMIT")))
        goto fail;
    if (n_replaced) *n_replaced = repl;
    return EMBD_OK;
copy_fail:
    PQputCopyEnd(g->conn, "embd: batch abandoned");
    while ((r = PQgetResult(g->conn)))
        PQclear(r);
fail:
    PQclear(r);
    pg_rollback(g);
    return st;
}

static enum embd_status pg_flush(void *impl) {
    (void)impl; /* every batch is committed */
    return EMBD_OK;
}

/* Builds the HNSW index unless it exists. Several writers finishing at once
 * would each build one and all but the first fail on pg_class's unique
 * index (CREATE INDEX IF NOT EXISTS checks before it builds, not after): the
 * build runs in a transaction under an advisory lock of its own, so the
 * others wait for it and then find the index there. */
static enum embd_status pg_finish(void *impl) {
    struct pg *g = impl;
    enum embd_status st;
    if (!g->writable || g->dim > PG_HNSW_MAX) return EMBD_OK; /* no HNSW past 2000 dims */
    /* ordered by the inner product, as the search is (the embedded store's
     * score); a store of an older embd may hold a cosine index, which the
     * search then does not use (exact, slower, the same hits) */
    static const char sql[] = "CREATE INDEX IF NOT EXISTS embd_docs_hnsw ON embd_docs USING hnsw "
                              "(embedding vector_ip_ops)";
    /* The build is much faster when the graph fits in maintenance_work_mem
     * (default 64 MB; 100K x 384-d vectors need ~250 MB). */
    if ((st = pg_exec(g, "BEGIN", "BEGIN")) ||
        (st = pg_exec(g, "SELECT pg_advisory_xact_lock(7365312010)", "locking")) ||
        (st = pg_exec(g, "SET LOCAL maintenance_work_mem = '1GB'", "SET")) ||
        (st = pg_exec(g, sql, "creating the HNSW index")) ||
        (st = pg_exec(g, "COMMIT", "COMMIT"))) {
        pg_rollback(g);
        return st;
    }
    return EMBD_OK;
}

/* After a lost connection (a server restart, a failover, an idle-connection
 * killer): one reset, then the session's settings and, for a writer, the
 * staging table again. Returns whether the connection is back. */
static bool pg_reconnect(struct pg *g) {
    if (PQstatus(g->conn) == CONNECTION_OK) return false; /* not lost: the error was another */
    PQreset(g->conn);
    if (PQstatus(g->conn) != CONNECTION_OK) return false;
    PQclear(PQexec(g->conn, "SET client_min_messages = warning"));
    if (g->writable) {
        char sql[200];
        snprintf(sql, sizeof sql,
                 "CREATE TEMP TABLE IF NOT EXISTS embd_stage (seq int, id text, text text, "
                 "embedding vector(%d)) ON COMMIT DELETE ROWS",
                 g->dim);
        PQclear(PQexec(g->conn, sql));
    }
    return true;
}

static enum embd_status pg_count(void *impl, size_t *n) {
    struct pg *g = impl;
    char m[400];
    PGresult *r = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        PQclear(r);
        r = PQexec(g->conn, "SELECT count(*) FROM embd_docs");
        if (PQresultStatus(r) == PGRES_TUPLES_OK || attempt || !pg_reconnect(g)) break;
    }
    enum embd_status st = EMBD_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): count: %s", g->where,
                        pg_msg(g, m, sizeof m));
    else
        *n = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return st;
}

/* One search in its transaction: the top k by inner product into g->last,
 * through the HNSW index (ef_search at least k) or, exact, a scan. */
static enum embd_status pg_query(struct pg *g, size_t k, bool exact) {
    enum embd_status st;
    char m[400], sql[320];
    PQclear(g->last);
    g->last = NULL;
    if ((st = pg_exec(g, "BEGIN", "BEGIN"))) goto fail;
    if (exact)
        st = pg_exec(g, "SET LOCAL enable_indexscan = off", "SET");
    else {
        snprintf(sql, sizeof sql, "SET LOCAL hnsw.ef_search = %zu", k < 40 ? (size_t)40 : k);
        st = pg_exec(g, sql, "SET");
    }
    if (st) goto fail;
    snprintf(sql, sizeof sql,
             "SELECT id, text, -(embedding <#> $1::vector) FROM embd_docs ORDER BY embedding <#> "
             "$1::vector LIMIT %zu",
             k);
    const char *params[1] = {g->qbuf};
    g->last = PQexecParams(g->conn, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(g->last) != PGRES_TUPLES_OK) {
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): search: %s", g->where,
                        pg_msg(g, m, sizeof m));
        goto fail;
    }
    if ((st = pg_exec(g, "COMMIT", "COMMIT"))) goto fail;
    return EMBD_OK;
fail:
    PQclear(g->last);
    g->last = NULL;
    pg_rollback(g);
    return st;
}

static enum embd_status pg_search(void *impl, const float *query, size_t k, bool exact,
                                  struct embd_store_hit *hits, size_t *n_hits) {
    struct pg *g = impl;
    enum embd_status st;
    *n_hits = 0;
    PQclear(g->last);
    g->last = NULL;
    if (k == 0) return EMBD_OK;
    if (k > 0x7fffffffu) k = 0x7fffffffu;
    /* The query as pgvector text: '[v0,v1,...]', each %.9g (round-trips a float). */
    size_t need = 4 + (size_t)g->dim * 18;
    if (need > g->qcap) {
        char *b = embd_realloc(g->qbuf, need);
        if (!b) return embd_error(EMBD_ERR_NOMEM, "out of memory for a query");
        g->qbuf = b;
        g->qcap = need;
    }
    size_t o = 0;
    g->qbuf[o++] = '[';
    for (int j = 0; j < g->dim; j++) {
        if (!isfinite(query[j]))
            return embd_error(EMBD_ERR_INVALID_ARG, "search: non-finite query value");
        o += (size_t)snprintf(g->qbuf + o, g->qcap - o, j ? ",%.9g" : "%.9g", (double)query[j]);
    }
    g->qbuf[o++] = ']';
    g->qbuf[o] = '\0';
    exact = exact || k > PG_EF_MAX;
    st = pg_query(g, k, exact);
    if (st != EMBD_OK && pg_reconnect(g)) st = pg_query(g, k, exact);
    /* The HNSW scan skips the dead versions of replaced records, and can
     * then give fewer than k (pgvector before 0.8 does not search on): a
     * short answer is made again by a scan, which gives min(k, count). */
    if (st == EMBD_OK && !exact && (size_t)PQntuples(g->last) < k) st = pg_query(g, k, true);
    if (st != EMBD_OK) return st;
    size_t rows = (size_t)PQntuples(g->last);
    for (size_t i = 0; i < rows && i < k; i++) {
        hits[i].slot = (uint32_t)i;
        hits[i].id = PQgetvalue(g->last, (int)i, 0);
        hits[i].id_len = (size_t)PQgetlength(g->last, (int)i, 0);
        hits[i].text = PQgetvalue(g->last, (int)i, 1);
        hits[i].text_len = (size_t)PQgetlength(g->last, (int)i, 1);
        hits[i].score = strtof(PQgetvalue(g->last, (int)i, 2), NULL);
    }
    *n_hits = rows < k ? rows : k;
    return EMBD_OK;
}

static void pg_close(void *impl) {
    struct pg *g = impl;
    if (!g) return;
    PQclear(g->last);
    PQfinish(g->conn);
    embd_free(g->qbuf);
    embd_free(g->cbuf);
    embd_free(g);
}

static const struct embd_vstore_ops pg_ops = {
    .kind = "postgresql",
    .add = pg_add,
    .flush = pg_flush,
    .finish = pg_finish,
    .count = pg_count,
    .search = pg_search,
    .close = pg_close,
};

/* Checks (and with create, makes) the extension, tables and the meta row,
 * under a transaction-level advisory lock so that two writers creating the
 * same store do not race. */
static enum embd_status pg_prepare(struct pg *g, const struct embd_store_params *p) {
    enum embd_status st;
    PGresult *r = NULL;
    char m[400], sql[512];
    if ((st = pg_exec(g, "BEGIN", "BEGIN")) ||
        (st = pg_exec(g, "SELECT pg_advisory_xact_lock(7365312009)", "locking")))
        goto fail;
    r = PQexec(g->conn, "SELECT 1 FROM pg_extension WHERE extname = 'vector'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): %s", g->where, pg_msg(g, m, sizeof m));
        goto fail;
    }
    bool have_ext = PQntuples(r) == 1;
    PQclear(r);
    r = NULL;
    if (!have_ext) {
        if (!p->create || !p->writable) {
            st = embd_error(EMBD_ERR_IO,
                            "PostgreSQL store (%s): the pgvector extension is not installed in "
                            "this database (no embd store here; embd index creates it)",
                            g->where);
            goto fail;
        }
        r = PQexec(g->conn, "CREATE EXTENSION IF NOT EXISTS vector");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            st = embd_error(EMBD_ERR_IO,
                            "PostgreSQL store (%s): cannot create the pgvector extension "
                            "(CREATE EXTENSION vector: %s); install pgvector on the server, or "
                            "have a superuser run CREATE EXTENSION vector in this database",
                            g->where, pg_msg(g, m, sizeof m));
            goto fail;
        }
        PQclear(r);
        r = NULL;
    }
    r = PQexec(g->conn, "SELECT to_regclass('embd_meta') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): %s", g->where, pg_msg(g, m, sizeof m));
        goto fail;
    }
    bool have_meta = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    r = NULL;
    if (!have_meta) {
        if (!p->create || !p->writable) {
            st = embd_error(EMBD_ERR_INVALID_ARG,
                            "PostgreSQL store (%s): no embd store in this database (table "
                            "embd_meta is missing; embd index creates it)",
                            g->where);
            goto fail;
        }
        /* a table embd_docs without embd_meta is not an embd store's (or
         * one whose meta row was dropped): not adopted, whatever it holds */
        r = PQexec(g->conn, "SELECT to_regclass('embd_docs') IS NOT NULL");
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): %s", g->where,
                            pg_msg(g, m, sizeof m));
            goto fail;
        }
        const bool foreign = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        r = NULL;
        if (foreign) {
            st = embd_error(EMBD_ERR_INVALID_ARG,
                            "PostgreSQL store (%s): a table embd_docs is there without embd_meta: "
                            "not an embd store (drop it, or give another database or schema)",
                            g->where);
            goto fail;
        }
        snprintf(sql, sizeof sql,
                 "CREATE TABLE embd_meta (format text NOT NULL, version int NOT NULL, dim int "
                 "NOT NULL, model_fingerprint text NOT NULL, normalized boolean NOT NULL); "
                 "INSERT INTO embd_meta VALUES ('embd-store', 1, %d, '%016llx', %s); "
                 "CREATE TABLE embd_docs (id text PRIMARY KEY, text text NOT NULL, "
                 "embedding vector(%d) NOT NULL)",
                 p->dim, (unsigned long long)p->fingerprint, p->normalized ? "true" : "false",
                 p->dim);
        if ((st = pg_exec(g, sql, "creating the store's tables"))) goto fail;
    }
    r = PQexec(g->conn,
               "SELECT format, version, dim, model_fingerprint, normalized FROM embd_meta");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = embd_error(EMBD_ERR_IO, "PostgreSQL store (%s): reading embd_meta: %s", g->where,
                        pg_msg(g, m, sizeof m));
        goto fail;
    }
    if (PQntuples(r) != 1 || strcmp(PQgetvalue(r, 0, 0), "embd-store") ||
        strcmp(PQgetvalue(r, 0, 1), "1")) {
        st = embd_error(EMBD_ERR_IO,
                        "PostgreSQL store (%s): table embd_meta is not an embd store's (want one "
                        "row of format 'embd-store', version 1)",
                        g->where);
        goto fail;
    }
    int D = atoi(PQgetvalue(r, 0, 2));
    const char *fp = PQgetvalue(r, 0, 3);
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)p->fingerprint);
    if (D != p->dim || strcmp(fp, want)) {
        st = embd_error(EMBD_ERR_INVALID_ARG,
                        "PostgreSQL store (%s) was built with model fingerprint %s (dim %d); this "
                        "model is %s (dim %d)",
                        g->where, fp, D, want, p->dim);
        goto fail;
    }
    PQclear(r);
    r = NULL;
    if ((st = pg_exec(g, "COMMIT", "COMMIT"))) goto fail;
    if (p->writable) {
        snprintf(sql, sizeof sql,
                 "CREATE TEMP TABLE IF NOT EXISTS embd_stage (seq int, id text, text text, "
                 "embedding vector(%d)) ON COMMIT DELETE ROWS",
                 p->dim);
        if ((st = pg_exec(g, sql, "creating the staging table"))) goto fail;
    }
    return EMBD_OK;
fail:
    PQclear(r);
    pg_rollback(g);
    return st;
}

enum embd_status embd_pg_open(const char *url, const struct embd_store_params *p,
                              const struct embd_vstore_ops **ops, void **impl) {
    enum embd_status st;
    if (p->dim < 1 || p->dim > 16000)
        return embd_error(EMBD_ERR_INVALID_ARG,
                          "PostgreSQL store: dimension %d (pgvector takes 1 to 16000)", p->dim);
    struct pg *g = embd_calloc(1, sizeof *g);
    if (!g) return embd_error(EMBD_ERR_NOMEM, "out of memory opening a PostgreSQL store");
    g->dim = p->dim;
    g->writable = p->writable;
    g->conn = PQconnectdb(url);
    if (!g->conn) {
        st = embd_error(EMBD_ERR_NOMEM, "out of memory connecting to PostgreSQL");
        goto fail;
    }
    const char *host = PQhost(g->conn), *port = PQport(g->conn), *db = PQdb(g->conn);
    snprintf(g->where, sizeof g->where, "host %s, port %s, database %s",
             host && *host ? host : "(default)", port && *port ? port : "(default)",
             db && *db ? db : "(default)");
    if (PQstatus(g->conn) != CONNECTION_OK) {
        char m[400];
        st = embd_error(EMBD_ERR_IO, "cannot connect to the PostgreSQL server (%s): %s", g->where,
                        pg_msg(g, m, sizeof m));
        goto fail;
    }
    PQclear(PQexec(g->conn, "SET client_min_messages = warning"));
    if ((st = pg_prepare(g, p))) goto fail;
    *ops = &pg_ops;
    *impl = g;
    return EMBD_OK;
fail:
    pg_close(g);
    return st;
}

#endif
