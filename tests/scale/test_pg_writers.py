#!/usr/bin/env python3
"""One PostgreSQL + pgvector store, many `embd index` processes writing at once.

Against a real server (tests/store/pg_fixture.py, the pgserver wheel), on
all-MiniLM-L6-v2, with texts that are corpus titles (short: the test is
about the store, not the model):

1. Creation races: on each of several fresh databases (no pgvector
   extension, no tables), 6 `embd index` processes started together, each
   with a few documents of its own: every one exits 0, and the database ends
   with one meta row, one HNSW index and every writer's documents. (Each
   process creates the extension and the tables if missing, and the HNSW
   index after loading: done by several at once, CREATE ... IF NOT EXISTS
   alone is not enough in PostgreSQL.)
2. Many writers, overlapping ids: 4 writers, each running 4 rounds of
   `embd index` one after the other, all 4 at once. Each round of writer w
   writes its own ids w<w>-<k> (the same ids every round, a new text each
   round) and the shared ids s-<k> (written by every writer in every round,
   each time with a text naming the writer and round). Then: no lost rows
   and no duplicate ids (count = distinct ids = 4 x 120 + 60); each own id
   holds its writer's last round's text (the rounds of one writer are
   sequential); each shared id holds one of the 16 versions written; and
   every row's vector equals `embd embed` of the text stored beside it
   (max abs difference <= 1e-6), so text and vector were replaced together.

Skips (77) without all-MiniLM-L6-v2, the corpus, or when pgserver cannot
start a server here.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

try:
    import numpy as np
except ImportError:  # outside the test venv (scripts/setup-deps)
    print("skip: numpy is not importable")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from common import Checker, skip  # noqa: E402  (skip exits 77)
sys.path.insert(0, os.path.join(HERE, "..", "store"))
from pg_fixture import PgServer, PgUnavailable  # noqa: E402

BIN = os.environ.get("EMBD_BIN", "embd")
RACE_DBS = 6  # fresh databases for the creation race
RACE_WRITERS = 6
WRITERS = 4
ROUNDS = 4
OWN = 120  # ids of each writer's own
SHARED = 60  # ids every writer writes




def env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith("EMBD_") or k in ("EMBD_HOME", "EMBD_TEST_MODELS")}


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for i, t in rows:
            f.write(json.dumps({"id": i, "text": t}) + "\n")


def index(model, url, path):
    return subprocess.run([BIN, "index", "-m", model, "--store", url, "-i", path, "--threads",
                           "1", "-q"], capture_output=True, env=env())


def run_together(jobs):
    """Runs callables on threads released together; returns their results."""
    out = [None] * len(jobs)
    go = threading.Barrier(len(jobs))

    def body(i):
        go.wait()
        out[i] = jobs[i]()

    ts = [threading.Thread(target=body, args=(i,)) for i in range(len(jobs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def rows(pg, db):
    """{id: (text, vector)} of the store's rows, and the number of rows."""
    out = pg.sql(db, "SELECT json_build_array(id, text, embedding::text) FROM embd_docs")
    got = {}
    n = 0
    for line in out.splitlines():
        if not line.strip():
            continue
        i, t, v = json.loads(line)
        got[i] = (t, np.array(json.loads(v), dtype=np.float32))
        n += 1
    return got, n


def main():
    root = os.environ.get("EMBD_TEST_MODELS")
    model = os.path.join(root, "all-MiniLM-L6-v2") if root else None
    if not model or not os.path.isfile(os.path.join(model, "config.json")):
        skip("all-MiniLM-L6-v2 not found under EMBD_TEST_MODELS")
    corpus = os.environ.get("EMBD_TEST_CORPUS")
    if not corpus or not os.path.isfile(corpus):
        skip("EMBD_TEST_CORPUS not set or missing")
    titles = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            t = json.loads(line).get("title") or ""
            if t:
                titles.append(t)
            if len(titles) == 2000:
                break
    c = Checker("scale_pg_writers")
    tmp = tempfile.mkdtemp(prefix="embd-pgw-")
    try:
        try:
            pg = PgServer().__enter__()
        except PgUnavailable as e:
            skip(str(e))
        try:
            # 1. creation races on fresh databases
            t0 = time.monotonic()
            for d in range(RACE_DBS):
                db = "race%d" % d
                url = pg.new_database(db)
                jobs = []
                for w in range(RACE_WRITERS):
                    path = os.path.join(tmp, "race%d-%d.jsonl" % (d, w))
                    write_jsonl(path, [("r%d-%d" % (w, k), titles[(w * 5 + k) % len(titles)])
                                       for k in range(5)])
                    jobs.append(lambda path=path, url=url: index(model, url, path))
                res = run_together(jobs)
                for w, p in enumerate(res):
                    c.check(p.returncode == 0, "race db %d, writer %d exited %d: %s" %
                            (d, w, p.returncode, p.stderr.decode().strip()))
                n = pg.sql(db, "SELECT (SELECT count(*) FROM embd_meta), (SELECT count(*) FROM "
                           "pg_indexes WHERE tablename = 'embd_docs' AND indexname = "
                           "'embd_docs_hnsw'), (SELECT count(DISTINCT id) FROM embd_docs)").strip()
                c.check(n == "1|1|%d" % (RACE_WRITERS * 5),
                        "race db %d: meta rows | HNSW indexes | ids = %s, want 1|1|%d" %
                        (d, n, RACE_WRITERS * 5))
            t_race = time.monotonic() - t0

            # 2. many writers, overlapping ids, replacements
            url = pg.new_database("many")
            own_text = {}
            shared_texts = {}
            plans = []
            for w in range(WRITERS):
                files = []
                for r in range(ROUNDS):
                    docs = []
                    for k in range(OWN):
                        t = "%s (round %d)" % (titles[(w * OWN + k) % len(titles)], r)
                        docs.append(("w%d-%d" % (w, k), t))
                        own_text["w%d-%d" % (w, k)] = t  # the last round's stays
                    for k in range(SHARED):
                        t = "%s, as writer %d wrote it in round %d" % (
                            titles[(1000 + k) % len(titles)], w, r)
                        docs.append(("s-%d" % k, t))
                        shared_texts.setdefault("s-%d" % k, set()).add(t)
                    # the shared ids come first for odd writers: not all in one order
                    if w % 2:
                        docs = docs[OWN:] + docs[:OWN]
                    path = os.path.join(tmp, "w%d-r%d.jsonl" % (w, r))
                    write_jsonl(path, docs)
                    files.append(path)
                plans.append(files)

            def writer(files):
                out = []
                for path in files:
                    out.append(index(model, url, path))
                return out

            t0 = time.monotonic()
            res = run_together([lambda f=f: writer(f) for f in plans])
            t_many = time.monotonic() - t0
            for w, ps in enumerate(res):
                for r, p in enumerate(ps):
                    c.check(p.returncode == 0, "writer %d round %d exited %d: %s" %
                            (w, r, p.returncode, p.stderr.decode().strip()))
            got, n = rows(pg, "many")
            want_n = WRITERS * OWN + SHARED
            c.check(n == want_n, "%d rows, want %d" % (n, want_n))
            c.check(len(got) == n, "%d duplicated ids" % (n - len(got)))
            lost = (set(own_text) | set(shared_texts)) - set(got)
            c.check(not lost, "%d ids lost, e.g. %s" % (len(lost), sorted(lost)[:3]))
            extra = set(got) - set(own_text) - set(shared_texts)
            c.check(not extra, "ids never written: %s" % sorted(extra)[:3])
            wrong = [i for i, t in own_text.items() if i in got and got[i][0] != t]
            c.check(not wrong, "%d own ids do not hold their writer's last text, e.g. %s: %r" %
                    (len(wrong), wrong[:1], got[wrong[0]][0] if wrong else ""))
            bad = [i for i, ts in shared_texts.items() if i in got and got[i][0] not in ts]
            c.check(not bad, "%d shared ids hold a text no writer wrote, e.g. %s" %
                    (len(bad), bad[:1]))
            winners = {got[i][0].rsplit("writer ", 1)[1] for i in shared_texts if i in got}
            print("shared ids: last written by %d of the %d (writer, round) pairs" %
                  (len(winners), WRITERS * ROUNDS))

            # every stored vector is the embedding of the text stored beside it
            ids = sorted(got)
            path = os.path.join(tmp, "stored.jsonl")
            write_jsonl(path, [(i, got[i][0]) for i in ids])
            npy = os.path.join(tmp, "stored.npy")
            p = subprocess.run([BIN, "embed", "-m", model, "-i", path, "--format", "npy", "-o",
                                npy, "--cache", "off", "-q"], capture_output=True, env=env())
            c.check(p.returncode == 0, "embd embed: %s" % p.stderr.decode().strip())
            if p.returncode == 0:
                ref = np.load(npy)
                stored = np.stack([got[i][1] for i in ids])
                diff = np.abs(stored - ref).max(axis=1)
                worst = int(np.argmax(diff))
                c.check(float(diff.max()) <= 1e-6,
                        "%d rows whose vector is not their text's embedding (worst %s: %.3g)" %
                        (int((diff > 1e-6).sum()), ids[worst], float(diff.max())))
                print("stored vectors against embd embed of the stored texts: max abs "
                      "difference %.3g over %d rows" % (float(diff.max()), len(ids)))
            print("creation races: %d databases x %d writers in %.1f s; %d writers x %d rounds "
                  "(%d documents each) in %.1f s" % (RACE_DBS, RACE_WRITERS, t_race, WRITERS,
                                                     ROUNDS, OWN + SHARED, t_many), flush=True)
        finally:
            pg.__exit__(None, None, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
