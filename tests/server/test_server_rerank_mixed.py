"""`embd serve -m EMBEDDER --reranker CROSS-ENCODER --store S`: a reranker
beside an embedding model, each on its own engine.

Against a real server on loopback (all-MiniLM-L6-v2 beside
ce-minilm-l6-random, the reranker given through EMBD_RERANKER as the
environment may give any flag) and a store of Debian descriptions:
- a small mixed load: a few threads at once send /embed, /v1/embeddings,
  /rerank and /v1/rerank; every answer is 200 and right (vectors within
  1e-5 of the single-request answer, rerank order and scores as
  `embd rerank`);
- POST /search with "rerank": true returns k hits in the order that
  `embd rerank` gives the store's top `candidates` hits, "score" the
  reranker's, "retrieval_score"/"retrieval_rank" the store's; its bad
  "rerank"/"candidates" are 400;
- /v1/models and /info list both models, /health checks both, /metrics
  has the reranker's engine as the embd_reranker_* series (each family's
  TYPE once);
- --reranker with a model that is not a cross-encoder exits 2.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2;
ce-minilm-l6-random, else made with scripts/make-random-model),
EMBD_TEST_CORPUS (optional: documents).
"""
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm, reranker_dir  # noqa: E402  (puts tests/e2e on the path)
from common import read_jsonl, run  # noqa: E402

M, c = minilm("server_rerank_mixed")
R = reranker_dir()
TOL = 1e-5
t0 = time.time()


def corpus(n):
    path = os.environ.get("EMBD_TEST_CORPUS", "")
    docs = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                d = json.loads(line)
                docs.append({"id": d["id"], "text": (d.get("title", "") + ". " +
                                                     d.get("text", ""))[:600]})
                if len(docs) == n:
                    break
    words = "editor text vim emacs kernel driver game audio font shell network mail".split()
    while len(docs) < n:
        i = len(docs)
        docs.append({"id": f"doc{i}",
                     "text": " ".join(words[(i * 5 + k) % len(words)] for k in range(4 + i % 11))})
    return docs


def cli_rank(query, texts):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    try:
        p = run(["rerank", "-m", R, "--query", query, "-i", f.name, "-q"], check=True)
    finally:
        os.unlink(f.name)
    return [(r["index"], r["score"]) for r in read_jsonl(p.stdout)]


def ranking_ok(got, want):
    """As `embd rerank` within TOL: each place's score is the reference's at
    that place, each document's its own (only near-ties may swap)."""
    if len(got) != len(want):
        return False
    ref = dict(want)
    return all(i in ref and abs(s - ref[i]) <= TOL and abs(ref[i] - want[j][1]) <= TOL
               for j, (i, s) in enumerate(got))


def post(s, path, body):
    st, h, data = s.request("POST", path, json.dumps(body))
    try:
        return st, h, json.loads(data)
    except ValueError:
        return st, h, data


DOCS = corpus(60)
tmp = tempfile.mkdtemp(prefix="embd-rerank-mixed-")
try:
    docs_path = os.path.join(tmp, "docs.jsonl")
    with open(docs_path, "w") as f:
        for d in DOCS:
            f.write(json.dumps(d) + "\n")
    store = os.path.join(tmp, "store")
    run(["index", "-m", M, "--store", store, "-i", docs_path, "-q"], check=True)

    QUERIES = ["a text editor for programmers", "play music and audio files",
               "network tools for system administrators"]
    TEXTS = [d["text"] for d in DOCS[:10]]
    ref_rank = {q: cli_rank(q, TEXTS) for q in QUERIES}

    # --reranker from the environment (EMBD_RERANKER), as every flag may come.
    with Server(M, "--store", store, "--cache", "off",
                env={"EMBD_RERANKER": R, "EMBD_RERANKER_NAME": "ce"}) as s:
        c.check(any("reranker ce" in ln for ln in s.lines), f"startup line: {s.lines[-1:]}")
        # References for the embeddings: one text per request, nothing else running.
        ref_vec = {}
        for t in TEXTS[:8]:
            st, _, j = post(s, "/embed", {"inputs": t})
            c.check(st == 200, f"reference /embed: {st}")
            ref_vec[t] = np.array(j[0], dtype=np.float32)

        # ---- a small mixed load
        stats = {"ok": 0, "wrong": [], "status": []}
        lock = threading.Lock()

        def worker(w):
            for it in range(6):
                kind = (w + it) % 4
                q = QUERIES[(w + it) % len(QUERIES)]
                if kind == 0:
                    texts = TEXTS[it % 3: it % 3 + 3]
                    st, _, j = post(s, "/embed", {"inputs": texts})
                    good = st == 200 and all(
                        np.max(np.abs(np.array(v, np.float32) - ref_vec[t])) <= TOL
                        for v, t in zip(j, texts))
                elif kind == 1:
                    texts = TEXTS[3 + it % 3: 6 + it % 3]
                    st, _, j = post(s, "/v1/embeddings", {"input": texts})
                    good = st == 200 and all(
                        np.max(np.abs(np.array(d["embedding"], np.float32) - ref_vec[t])) <= TOL
                        for d, t in zip(j["data"], texts))
                elif kind == 2:
                    st, _, j = post(s, "/rerank", {"query": q, "texts": TEXTS})
                    good = st == 200 and ranking_ok([(r["index"], r["score"]) for r in j],
                                                    ref_rank[q])
                else:
                    st, _, j = post(s, "/v1/rerank", {"model": "ce", "query": q,
                                                      "documents": TEXTS, "top_n": 4})
                    good = st == 200 and j.get("model") == "ce" and ranking_ok(
                        [(r["index"], r["relevance_score"]) for r in j["results"]],
                        ref_rank[q][:4])
                with lock:
                    if st != 200:
                        stats["status"].append((kind, st, str(j)[:200]))
                    elif good:
                        stats["ok"] += 1
                    else:
                        stats["wrong"].append((kind, q, str(j)[:300]))

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        c.check(not stats["status"], f"statuses other than 200: {stats['status'][:3]}")
        c.check(not stats["wrong"], f"wrong answers under load: {stats['wrong'][:3]}")
        c.check(stats["ok"] == 24, f"{stats['ok']} of 24 answers right")

        # ---- /search with rerank
        for q, k, cand in (("a text editor for programmers", 5, 20), ("audio player", 3, None)):
            n_cand = cand or 50
            st, _, plain = post(s, "/search", {"query": q, "k": n_cand})
            c.check(st == 200, f"/search k {n_cand}: {st}")
            hits = plain["hits"]
            want = cli_rank(q, [h["text"] for h in hits])
            body = {"query": q, "k": k, "rerank": True}
            if cand:
                body["candidates"] = cand
            st, _, j = post(s, "/search", body)
            c.check(st == 200, f"/search rerank: {st} {str(j)[:200]}")
            if st != 200:
                continue
            got = j["hits"]
            c.check(len(got) == k and j.get("candidates") == len(hits) and
                    j.get("reranker") == "ce", f"/search rerank: {len(got)} hits, {j.get('candidates')} candidates, {j.get('reranker')}")
            idx = {h["id"]: i for i, h in enumerate(hits)}
            pairs = [(idx.get(h["id"], -1), h["score"]) for h in got]
            c.check(ranking_ok(pairs, want[:k]),
                    f"/search rerank order {pairs} vs embd rerank {want[:k]}")
            c.check(all(h["rank"] == r + 1 for r, h in enumerate(got)), "ranks 1..k")
            c.check(all(h["id"] in idx and h["retrieval_rank"] == idx[h["id"]] + 1 and
                        abs(h["retrieval_score"] - hits[idx[h["id"]]]["score"]) <= TOL and
                        h["text"] == hits[idx[h["id"]]]["text"] for h in got),
                    "retrieval_score, retrieval_rank and text are the store's")
        for name, body, frag in (
                ("candidates under k", {"query": "q", "k": 5, "rerank": True, "candidates": 4},
                 "candidates"),
                ("candidates without rerank", {"query": "q", "candidates": 20}, "rerank"),
                ("candidates over the limit", {"query": "q", "rerank": True,
                                               "candidates": 100000}, "candidates"),
                ("rerank not a bool", {"query": "q", "rerank": "yes"}, "rerank")):
            st, _, j = post(s, "/search", body)
            c.check(st == 400 and isinstance(j, dict) and isinstance(j.get("error"), str) and
                    frag in j["error"], f"/search {name}: {st} {j}")

        # ---- both models in /v1/models, /info, /health and /metrics
        st, _, raw = s.request("GET", "/v1/models")
        ids = [m["id"] for m in json.loads(raw)["data"]]
        c.check(ids == ["all-MiniLM-L6-v2", "ce"], f"/v1/models: {ids}")
        st, _, _ = s.request("GET", "/v1/models/ce")
        c.check(st == 200, f"/v1/models/ce: {st}")
        st, _, raw = s.request("GET", "/info")
        info = json.loads(raw)
        c.check(info.get("model_type", {}).get("embedding") is not None and
                (info.get("reranker") or {}).get("model_id") == "ce" and
                info["reranker"].get("model_dir") == R, f"/info: {info.get('reranker')}")
        st, _, _ = s.request("GET", "/health")
        c.check(st == 200, f"/health: {st}")
        st, _, raw = s.request("GET", "/metrics")
        text = raw.decode()
        types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")]
        c.check(len(types) == len(set(types)), "each metric family's TYPE once")

        def value(name):
            for ln in text.splitlines():
                if ln.split(" ")[0] == name:
                    return float(ln.split(" ")[1])
            return None

        rr_inputs = value("embd_reranker_inputs_total")
        c.check(rr_inputs is not None and rr_inputs >= 12 * len(TEXTS),
                f"embd_reranker_inputs_total {rr_inputs}")
        c.check((value("embd_inputs_total") or 0) >= 6, "embd_inputs_total (the embedder's)")
        c.check('embd_http_responses_total{path="/v1/rerank",code="200"}' in text,
                "/metrics counts /v1/rerank")
        rc = s.stop()
        c.check(rc == 0, f"clean exit: {rc}")
        c.check(not any("AddressSanitizer" in ln or "runtime error" in ln for ln in s.lines),
                "no sanitizer report: " + " | ".join(s.lines[-5:]))

    p = run(["serve", "-m", M, "--reranker", M, "--port", "0"])
    c.check(p.returncode == 2 and b"is not a cross-encoder" in p.stderr,
            f"--reranker EMBEDDER: {p.returncode} {p.stderr[-200:]!r}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

print(f"{time.time() - t0:.1f} s")
c.done()
