#!/usr/bin/env python3
"""Retrieval accuracy on the Debian corpus: Recall@1, Recall@10, MRR@10.

Each package's short description ("title") is a query and its long
description ("text") the document to find. Only packages whose long
description is unique in the corpus take part (a duplicated text has no
single right answer). Documents and queries are embedded with the same
model, scored by exact inner product (numpy) against every document of the
set, and the rank of the query's own document gives the metrics:

  Recall@1  = share of queries whose own document ranks first
  Recall@10 = share ranked in the top 10
  MRR@10    = mean of 1/rank over queries, 0 when the rank is above 10

The rank is 1 + the number of documents scoring strictly higher than the
right one (ties count in the query's favour, the same rule for both engines).

Sets:
  slice  the 5,000 eligible packages with the smallest sha256(id) (hex),
         searched among themselves: a fixed rule that does not depend on
         the corpus's line order (tests/fixtures/retrieval/ holds the
         sentence-transformers reference for it).
  full   every eligible package, searched among all of them.

Engines:
  embd   vectors from `embd embed --format npy` (release build); with
         --dtypes fp32,bf16,int8 one run per --dtype (engines embd-fp32,
         embd-bf16, ...), and each one's cosine to embd-fp32 per document
         and per query (min, 0.1th percentile, mean) in "cosine_to_fp32".
  st     sentence-transformers (global python3 with torch), normalised
         like the model's own Normalize module; the reference.

usage: bench/retrieval.py --model DIR [--set slice|full] [--engine embd|st|both]
       [--embd BIN] [--corpus FILE] [--out metrics.json] [--threads N]
       [--device cpu|cuda|auto] [--dtypes fp32,bf16,int8] [--ld-library-path DIRS]
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

SLICE_DOCS = 5000
SELECTION_RULE = ("packages with a non-empty title whose non-empty text (long description) "
                  "occurs once in the corpus; the 5000 with the smallest sha256(id) hex digest, "
                  "sorted by it")


def load_eligible(corpus):
    """(ids, titles, texts) of the packages with a unique, non-empty text and a title."""
    rows = []
    counts = {}
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            t = r.get("text") or ""
            counts[t] = counts.get(t, 0) + 1
            rows.append(r)
    ids, titles, texts = [], [], []
    for r in rows:
        t, q = r.get("text") or "", r.get("title") or ""
        if t.strip() and q.strip() and counts[t] == 1:
            ids.append(str(r["id"]))
            titles.append(q)
            texts.append(t)
    return ids, titles, texts


def select(ids, titles, texts, which):
    if which == "full":
        return ids, titles, texts
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha256(ids[i].encode()).hexdigest())
    order = order[:SLICE_DOCS]
    return [ids[i] for i in order], [titles[i] for i in order], [texts[i] for i in order]


def slice_sha256(ids, titles, texts):
    """A hash of the selected packages' ids, titles and texts (what the metrics depend on)."""
    h = hashlib.sha256()
    for i, q, t in zip(ids, titles, texts):
        h.update(json.dumps([i, q, t]).encode())
        h.update(b"\n")
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def embed_embd(binary, model, texts, threads=0, extra_env=None, device="cpu", dtype=None):
    """(n, D) float32 vectors from `embd embed`, texts passed as JSONL."""
    tmp = tempfile.mkdtemp(prefix="embd-retrieval-")
    inp, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.npy")
    try:
        with open(inp, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        env = dict(os.environ, **(extra_env or {}))
        cmd = [binary, "embed", "-m", model, "-i", inp, "-o", out, "--format", "npy", "-q",
               "--input-format", "jsonl", "--threads", str(threads), "--device", device,
               "--cache", "off"]
        if dtype:
            cmd += ["--dtype", dtype]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError("embd embed failed (%d): %s" % (p.returncode, p.stderr.strip()))
        v = np.load(out)
    finally:
        for n in (inp, out):
            if os.path.exists(n):
                os.unlink(n)
        os.rmdir(tmp)
    if v.shape[0] != len(texts):
        raise RuntimeError("embd embed returned %d vectors for %d texts" % (v.shape[0], len(texts)))
    return v.astype(np.float32)


def embed_st(model, texts):
    from sentence_transformers import SentenceTransformer
    m = SentenceTransformer(model, device="cpu")
    return m.encode(texts, batch_size=32, convert_to_numpy=True,
                    normalize_embeddings=False).astype(np.float32)


def metrics(q, d, block=1024):
    """Recall@1, Recall@10, MRR@10 of queries q (n, D) against documents d (n, D),
    query i's right document being d[i]."""
    n = q.shape[0]
    q64, d64 = q.astype(np.float64), d.astype(np.float64)
    ranks = np.empty(n, dtype=np.int64)
    for s in range(0, n, block):
        e = min(n, s + block)
        sc = q64[s:e] @ d64.T  # (b, n)
        right = sc[np.arange(e - s), np.arange(s, e)]
        ranks[s:e] = 1 + (sc > right[:, None]).sum(axis=1)
    return {
        "recall@1": float((ranks == 1).mean()),
        "recall@10": float((ranks <= 10).mean()),
        "mrr@10": float(np.where(ranks <= 10, 1.0 / ranks, 0.0).mean()),
        "queries": int(n),
    }


def cosines(a, b):
    c = (a.astype(np.float64) * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"min": round(float(c.min()), 6), "p0.1": round(float(np.percentile(c, 0.1)), 6),
            "mean": round(float(c.mean()), 6)}


def run_engine(engine, a, titles, texts, keep=None):
    t0 = time.perf_counter()
    if engine.startswith("embd"):
        env = {"LD_LIBRARY_PATH": a.ld_library_path} if a.ld_library_path else None
        dtype = engine.split("-", 1)[1] if "-" in engine else None
        dv = embed_embd(a.embd, a.model, texts, a.threads, env, a.device, dtype)
        qv = embed_embd(a.embd, a.model, titles, a.threads, env, a.device, dtype)
        if keep is not None:
            keep[engine] = (dv, qv)
    else:
        dv = embed_st(a.model, texts)
        qv = embed_st(a.model, titles)
    el = time.perf_counter() - t0
    m = metrics(qv, dv)
    m["embed_seconds"] = round(el, 1)
    if keep is not None and engine != "embd-fp32" and "embd-fp32" in keep and engine in keep:
        rdv, rqv = keep["embd-fp32"]
        m["cosine_to_fp32"] = {"documents": cosines(rdv, dv), "queries": cosines(rqv, qv)}
    return m


def main():
    home = os.environ.get("EMBD_HOME", os.path.expanduser("~/.cache/embd"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(home, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--set", choices=["slice", "full"], default="slice")
    ap.add_argument("--engine", choices=["embd", "st", "both"], default="both")
    ap.add_argument("--embd", default=os.path.join(root, "build", "release", "embd"))
    ap.add_argument("--corpus", default=os.path.join(home, "corpus", "debian.jsonl"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu",
                    help="embd's --device (cpu, cuda, auto); sentence-transformers stays on the CPU")
    ap.add_argument("--dtypes", help="embd's --dtype per run, comma-separated (fp32 first), "
                    "e.g. fp32,bf16,int8; default: one run with embd's default")
    ap.add_argument("--ld-library-path", help="LD_LIBRARY_PATH for the embd processes only")
    ap.add_argument("--out", help="write the metrics as JSON here")
    a = ap.parse_args()

    ids, titles, texts = load_eligible(a.corpus)
    n_eligible = len(ids)
    ids, titles, texts = select(ids, titles, texts, a.set)
    res = {
        "set": a.set,
        "selection": SELECTION_RULE if a.set == "slice" else "all eligible packages",
        "documents": len(ids),
        "eligible": n_eligible,
        "corpus_sha256": file_sha256(a.corpus),
        "slice_sha256": slice_sha256(ids, titles, texts),
        "model": os.path.basename(os.path.normpath(a.model)),
        "engines": {},
    }
    embds = ["embd-" + d.strip() for d in a.dtypes.split(",")] if a.dtypes else ["embd"]
    if a.dtypes and embds[0] != "embd-fp32" and len(embds) > 1:
        ap.error("--dtypes: put fp32 first (the others are compared with it)")
    engines = (embds + ["st"] if a.engine == "both" else embds if a.engine == "embd" else ["st"])
    keep = {}
    for e in engines:
        res["engines"][e] = run_engine(e, a, titles, texts, keep)
        if e == "st":
            import sentence_transformers
            import torch
            res["engines"][e]["versions"] = {"sentence-transformers": sentence_transformers.__version__,
                                            "torch": torch.__version__}
        print("%-5s %s" % (e, json.dumps(res["engines"][e])), file=sys.stderr)
    if "st" in res["engines"]:
        for e in embds:
            if e in res["engines"]:
                key = "max_abs_diff" if e == "embd" else "max_abs_diff_" + e
                res[key] = {k: abs(res["engines"][e][k] - res["engines"]["st"][k])
                            for k in ("recall@1", "recall@10", "mrr@10")}
    if len(embds) > 1:
        base = res["engines"]["embd-fp32"]
        for e in embds[1:]:
            res["engines"][e]["diff_to_fp32"] = {
                k: round(res["engines"][e][k] - base[k], 4) for k in ("recall@1", "recall@10", "mrr@10")}
    write_result(res, a.out)


def write_result(res, out):
    """Prints the result as JSON, and writes it to out when given."""
    txt = json.dumps(res, indent=2)
    if out:
        with open(out, "w") as f:
            f.write(txt + "\n")
    print(txt)


if __name__ == "__main__":
    main()
