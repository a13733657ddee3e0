"""PostgreSQL + pgvector store against a real server (tests/store/pg_fixture.py).

On all-MiniLM-L6-v2 (and bge-small-random for the other-model refusal):
index 50 documents plus a Debian slice, search, the meta row, the HNSW
index (vector_ip_ops), re-indexing replaces (count stays, text and vector
updated, duplicates within one batch keep the last), another model is
refused, both stores (embedded and PostgreSQL) return the same top-10 ids
in the same order for exact search, scores equal to float precision, and
the errors for an unreachable server and a database without the store or
the extension. Then what the embedded store does, PostgreSQL does too
(check_hardening): the same ranking for vectors that are not unit length,
invalid UTF-8 stored as U+FFFD, min(k, count) hits after many
replacements, `embd serve` serving /search again after its connection is
cut, a foreign embd_docs table refused, no password in an error.

Exactness of the comparison: `embd search --exact` runs the PostgreSQL
query with enable_indexscan off, so the planner cannot use the HNSW index
and scores every row (sequential scan + top-k sort); the embedded store
always scores every record. The HNSW (approximate) path is also checked to
agree on the top-1 for every query (ef_search = max(40, k)).

Skips (77) without all-MiniLM-L6-v2, or when pgserver cannot start a
server here (the reason is printed).
"""
import json
import os
import shutil
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "e2e"))
sys.path.insert(0, here)
from common import Checker, model_dir, read_jsonl, run, skip  # noqa: E402
from pg_fixture import PgServer, PgUnavailable  # noqa: E402

DOCS = [
    "The cat curled up on the warm windowsill and slept all afternoon.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Knead the dough for ten minutes, then let it rise before baking the bread.",
    "The Linux kernel scheduler balances runnable tasks across CPU cores.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
    "The striker scored twice in the second half to win the football match.",
    "Volcanic eruptions can inject ash high into the stratosphere.",
    "A violin has four strings tuned in perfect fifths.",
    "Git records the history of a project as a graph of commits.",
    "Airplanes generate lift as air flows faster over the curved wing.",
]
QUERIES = ["a sleepy kitty napping", "version control history", "how do planes fly",
           "bread recipe", "musical instrument strings", "operating system internals",
           "soccer game", "plants and sunlight", "economy and interest rates", "volcano ash"]
CORPUS_DOCS = 150


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def search(m, store, queries, k=10, exact=False):
    args = ["search", "-m", m, "--store", store, "--query", "-", "-k", str(k), "-q"]
    if exact:
        args.append("--exact")
    p = run(args, stdin="\n".join(queries) + "\n")
    if p.returncode != 0:
        raise AssertionError("search %s: %s" % (store, p.stderr.decode()))
    out = [[] for _ in queries]
    for h in read_jsonl(p.stdout):
        out[h["query"]].append(h)
    return out


def main():
    m = model_dir("all-MiniLM-L6-v2")
    if not m:
        skip("all-MiniLM-L6-v2 not found under EMBD_TEST_MODELS")
    other = model_dir("bge-small-random")
    c = Checker("store_pg")
    tmp = tempfile.mkdtemp(prefix="embd-pg-test-")
    try:
        try:
            pg = PgServer().__enter__()
        except PgUnavailable as e:
            skip(str(e))
        try:
            url = pg.new_database("t_main")
            rows = [{"id": "doc%02d" % i, "text": t} for i, t in enumerate(DOCS)]
            corpus = os.environ.get("EMBD_TEST_CORPUS")
            if corpus and os.path.exists(corpus):
                with open(corpus, encoding="utf-8") as f:
                    for line in f:
                        r = json.loads(line)
                        rows.append({"id": "deb:" + r["id"], "text": r["text"]})
                        if len(rows) >= len(DOCS) + CORPUS_DOCS:
                            break
            docs = os.path.join(tmp, "docs.jsonl")
            write_jsonl(docs, rows)
            n = len(rows)

            p = run(["index", "-m", m, "--store", url, "-i", docs])
            c.check(p.returncode == 0, "index into PostgreSQL: %s" % p.stderr.decode())
            c.check(("%d added, 0 replaced" % n).encode() in p.stderr,
                    "index summary: %s" % p.stderr.decode())
            meta = pg.sql("t_main", "SELECT format, version, dim, length(model_fingerprint), "
                          "normalized FROM embd_meta").strip()
            c.check(meta == "embd-store|1|384|16|t", "meta row %r" % meta)
            c.check(pg.sql("t_main", "SELECT count(*) FROM embd_docs").strip() == str(n), "count")
            idx = pg.sql("t_main", "SELECT indexdef FROM pg_indexes WHERE indexname = "
                         "'embd_docs_hnsw'")
            c.check("hnsw" in idx and "vector_ip_ops" in idx, "HNSW index: %r" % idx)

            # The same documents in an embedded store; exact top-10 must agree.
            emb = os.path.join(tmp, "emb")
            p = run(["index", "-m", m, "--store", emb, "-i", docs, "-q"])
            c.check(p.returncode == 0, "index embedded: %s" % p.stderr.decode())
            qs = QUERIES + [" ".join(r["text"].split())[:80] for r in rows[len(DOCS)::30]]
            pe = search(m, emb, qs)
            pp = search(m, url, qs, exact=True)
            ph = search(m, url, qs)
            same = all([h["id"] for h in a] == [h["id"] for h in b] for a, b in zip(pe, pp))
            c.check(same, "exact top-10 ids equal between the embedded store and PostgreSQL")
            diff = max(abs(x["score"] - y["score"]) for a, b in zip(pe, pp) for x, y in zip(a, b))
            c.check(diff < 1e-5, "scores agree (max diff %.3g)" % diff)
            c.check(all(len(a) == 10 for a in pp), "10 hits per query")
            c.check(all(a[0]["id"] == b[0]["id"] for a, b in zip(pe, ph)),
                    "HNSW search finds the exact top-1")
            c.check(pe[0][0]["id"] == "doc00" and pe[1][0]["id"] == "doc08",
                    "paraphrases rank first: %s %s" % (pe[0][0]["id"], pe[1][0]["id"]))
            text_ok = all(h["text"] == next(r["text"] for r in rows if r["id"] == h["id"])
                          for h in pp[0][:3])
            c.check(text_ok, "texts come back")

            # Re-indexing replaces: same ids with new texts, a duplicate within the batch.
            upd = [{"id": "doc00", "text": "Volcanic ash clouds disrupt air travel."},
                   {"id": "doc01", "text": "first version, replaced in the same batch"},
                   {"id": "doc01", "text": "A recipe for chocolate cake."},
                   {"id": "new1", "text": "Penguins live in the Antarctic."}]
            updp = os.path.join(tmp, "upd.jsonl")
            write_jsonl(updp, upd)
            p = run(["index", "-m", m, "--store", url, "-i", updp])
            c.check(p.returncode == 0, "re-index: %s" % p.stderr.decode())
            c.check(b"4 documents (1 added, 3 replaced)" in p.stderr,
                    "re-index summary: %s" % p.stderr.decode())
            c.check(pg.sql("t_main", "SELECT count(*) FROM embd_docs").strip() == str(n + 1),
                    "count after re-index")
            h = search(m, url, ["chocolate cake"], k=1, exact=True)[0][0]
            c.check(h["id"] == "doc01" and h["text"] == "A recipe for chocolate cake.",
                    "replaced text and vector: %s" % h)
            h = search(m, url, ["a sleepy kitty napping"], k=3, exact=True)[0]
            c.check("doc00" not in [x["id"] for x in h], "old vector of doc00 gone")

            # A text holding U+0000: PostgreSQL's text type cannot store it; the
            # record is refused by name before anything is sent, and nothing
            # of the batch lands half-way.
            nulp = os.path.join(tmp, "nul.jsonl")
            write_jsonl(nulp, [{"id": "nul-ok", "text": "fine"},
                               {"id": "nul-bad", "text": "before \u0000 after"}])
            before = pg.sql("t_main", "SELECT count(*) FROM embd_docs").strip()
            p = run(["index", "-m", m, "--store", url, "-i", nulp, "-q"])
            c.check(p.returncode == 1 and b"nul-bad" in p.stderr and b"U+0000" in p.stderr,
                    "a NUL text refused by name: %s" % p.stderr.decode())
            c.check(pg.sql("t_main", "SELECT count(*) FROM embd_docs").strip() == before,
                    "nothing of the refused batch was stored")

            # Another model is refused, in both commands.
            if other:
                p = run(["index", "-m", other, "--store", url, "-i", updp, "-q"])
                c.check(p.returncode == 1 and b"model fingerprint" in p.stderr,
                        "other model refused by index: %s" % p.stderr.decode())
                p = run(["search", "-m", other, "--store", url, "--query", "x", "-q"])
                c.check(p.returncode == 1 and b"model fingerprint" in p.stderr,
                        "other model refused by search: %s" % p.stderr.decode())

            # A database without pgvector / without a store.
            empty = pg.new_database("t_empty")
            p = run(["search", "-m", m, "--store", empty, "--query", "x", "-q"])
            c.check(p.returncode == 1 and b"pgvector extension is not installed" in p.stderr,
                    "missing extension: %s" % p.stderr.decode())
            pg.sql("t_empty", "CREATE EXTENSION vector")
            p = run(["search", "-m", m, "--store", empty, "--query", "x", "-q"])
            c.check(p.returncode == 1 and b"no embd store in this database" in p.stderr,
                    "missing store: %s" % p.stderr.decode())
            # A server that is not there.
            gone = "postgresql://postgres@/x?host=%s" % os.path.join(tmp, "nowhere")
            p = run(["index", "-m", m, "--store", gone, "-i", updp, "-q"])
            c.check(p.returncode == 1 and b"cannot connect to the PostgreSQL server" in p.stderr,
                    "unreachable server: %s" % p.stderr.decode())
            p = run(["search", "-m", m, "--store", "postgresql://127.0.0.1:1/x?connect_timeout=2",
                     "--query", "x", "-q"])
            c.check(p.returncode == 1 and b"cannot connect" in p.stderr and b"127.0.0.1" in
                    p.stderr, "unreachable TCP server: %s" % p.stderr.decode())
            check_hardening(c, pg, m, tmp, rows, docs)
        finally:
            pg.__exit__(None, None, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return c.done()


def raw_model(m, tmp):
    """all-MiniLM-L6-v2 without its Normalize module: vectors of any length."""
    d = os.path.join(tmp, "minilm-raw")
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(m):
        if name != "modules.json":
            os.symlink(os.path.join(m, name), os.path.join(d, name))
    with open(os.path.join(m, "modules.json")) as f:
        mods = [x for x in json.load(f) if "Normalize" not in x.get("type", "")]
    with open(os.path.join(d, "modules.json"), "w") as f:
        json.dump(mods, f)
    return d


def check_hardening(c, pg, m, tmp, rows, docs):
    """What the embedded store does, PostgreSQL does too: rank by the inner
    product whatever the vectors' length; read invalid UTF-8 as U+FFFD;
    give min(k, count) hits after many replacements; keep serving after its
    connection drops; and refuse a table it did not make; its errors never
    show a password."""
    # A model without a Normalize module: the same ranking (by inner
    # product, the score) and the scores best first, exact and HNSW.
    raw = raw_model(m, tmp)
    url = pg.new_database("t_raw")
    emb = os.path.join(tmp, "emb-raw")
    for store in (url, emb):
        p = run(["index", "-m", raw, "--store", store, "-i", docs, "-q"])
        c.check(p.returncode == 0, "index, raw vectors: %s" % p.stderr.decode())
    qs = QUERIES[:6]
    pe, pp, ph = search(raw, emb, qs), search(raw, url, qs, exact=True), search(raw, url, qs)
    c.check(all([h["id"] for h in a] == [h["id"] for h in b] for a, b in zip(pe, pp)),
            "raw vectors: exact top-10 ids equal between the stores: %s / %s"
            % ([h["id"] for h in pe[0]], [h["id"] for h in pp[0]]))
    c.check(all(all(x["score"] >= y["score"] for x, y in zip(a, a[1:])) for a in pp + ph),
            "raw vectors: PostgreSQL's scores come best first")

    # Invalid UTF-8 in a text: stored with U+FFFD, as the embedded store reads it
    bad = os.path.join(tmp, "bad.txt")
    with open(bad, "wb") as f:
        f.write(b"caf\xe9 au lait\nfine text\n")
    u8 = pg.new_database("t_utf8")
    p = run(["index", "-m", m, "--store", u8, "-i", bad, "--input-format", "lines", "-q"])
    c.check(p.returncode == 0, "invalid UTF-8 indexed: %s" % p.stderr.decode())
    got = pg.sql("t_utf8", "SELECT text FROM embd_docs ORDER BY id").strip().splitlines()
    c.check(got[:1] == ["caf\ufffd au lait"], "stored as U+FFFD: %r" % got)

    # Replaced records leave dead versions the HNSW scan skips: the answer
    # is still min(k, count) hits
    url = pg.url("t_main")
    pg.sql("t_main", "ALTER TABLE embd_docs SET (autovacuum_enabled = false)")
    for rnd in range(4):
        again = [{"id": r["id"], "text": r["text"] + " (round %d)" % rnd} for r in rows]
        ap = os.path.join(tmp, "again.jsonl")
        write_jsonl(ap, again)
        p = run(["index", "-m", m, "--store", url, "-i", ap, "-q"])
        c.check(p.returncode == 0, "replace round %d: %s" % (rnd, p.stderr.decode()))
    n = int(pg.sql("t_main", "SELECT count(*) FROM embd_docs").strip())
    for k in (10, 40, n + 5):
        got = search(m, url, QUERIES[:4], k=k)
        c.check(all(len(a) == min(k, n) for a in got),
                "HNSW after replacements, k=%d: %s hits (want %d)" % (k, [len(a) for a in got],
                                                                     min(k, n)))

    # The server keeps serving /search after its connection is cut (a
    # PostgreSQL restart, a failover, an idle-connection killer)
    import subprocess
    import urllib.request
    from common import BIN
    srv = subprocess.Popen([BIN, "serve", "-m", m, "--store", url, "--port", "0"],
                           stderr=subprocess.PIPE, text=True)
    try:
        base = None
        for line in srv.stderr:
            if "http://" in line:
                base = line[line.index("http://"):].split()[0]
                break

        def post(**extra):
            req = urllib.request.Request(base + "/search", data=json.dumps(
                dict({"query": "a sleepy kitty", "k": 3}, **extra)).encode(),
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.load(r)
            except urllib.error.HTTPError as e:
                return e.code, e.read()
        c.check(base is not None and post()[0] == 200, "/search before the cut")
        pg.sql("t_main", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
               "datname = 't_main' AND pid <> pg_backend_pid()")
        st, body = post()
        c.check(st == 200, "/search after the connection was cut: %s %r" % (st, body))
        c.check(post()[0] == 200, "and the next one")
        st, body = post(exact=True)
        want = [h["id"] for h in search(m, url, ["a sleepy kitty"], k=3, exact=True)[0]]
        c.check(st == 200 and [h["id"] for h in body["hits"]] == want,
                "/search \"exact\": true = embd search --exact: %r / %r" % (body, want))
    finally:
        srv.terminate()
        srv.wait(30)

    # A table embd_docs the store did not make is not adopted
    fx = pg.new_database("t_foreign")
    pg.sql("t_foreign", "CREATE EXTENSION IF NOT EXISTS vector")
    pg.sql("t_foreign", "CREATE TABLE embd_docs (id text PRIMARY KEY, text text, "
           "embedding vector(768))")
    p = run(["index", "-m", m, "--store", fx, "-i", docs, "-q"])
    c.check(p.returncode == 1 and b"without embd_meta" in p.stderr,
            "a foreign embd_docs refused: %s" % p.stderr.decode())
    c.check(pg.sql("t_foreign", "SELECT to_regclass('embd_meta') IS NULL").strip() == "t",
            "no embd_meta written over it")

    # A malformed URL: libpq quotes it, embd masks its password
    p = run(["search", "-m", m, "--store", "postgresql://bob:S3cr3tPW@[::1/db", "--query", "x",
             "-q"])
    c.check(p.returncode == 1 and b"S3cr3tPW" not in p.stderr,
            "the password is not shown: %s" % p.stderr.decode())


if __name__ == "__main__":
    sys.exit(main())
