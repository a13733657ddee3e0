#!/usr/bin/env python3
"""Retrieve, then rerank: Recall@1, Recall@10, MRR@10 and latency per query,
with and without a cross-encoder, on the Debian short -> long task.

The task and the set are bench/retrieval.py's (each package's short
description is a query, its unique long description the document to find;
the "slice" of 5,000 packages). Documents are embedded once with the
embedding model (embd.Model, the Python package over the engine). For
--queries queries (the first of the slice), each is embedded and searched
by exact inner product (numpy) against all documents:

  retrieval  the rank of the right document among all of them
  reranked   the top --candidates documents rescored by the cross-encoder
             (embd.Model(reranker).rerank(query, candidates)) and sorted by
             that score; a right document outside the candidates keeps its
             retrieval rank (at least candidates + 1)

Latency per query (median and p90 over the queries, one at a time): embed
the query and search (retrieval), and that plus reranking the candidates.
The CPU is named in the output.

usage: bench/rerank_retrieval.py --model DIR --reranker DIR [--corpus FILE]
       [--queries 200] [--candidates 50] [--threads N] [--out FILE]
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rerank import cpu_name  # noqa: E402
from retrieval import load_eligible, select, slice_sha256  # noqa: E402


def summary(ranks):
    r = np.array(ranks)
    return {"recall@1": float((r == 1).mean()), "recall@10": float((r <= 10).mean()),
            "mrr@10": float(np.where(r <= 10, 1.0 / r, 0.0).mean())}


def main():
    import embd
    home = os.environ.get("EMBD_HOME", os.path.expanduser("~/.cache/embd"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(home, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--reranker", required=True)
    ap.add_argument("--corpus", default=os.path.join(home, "corpus", "debian.jsonl"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out")
    a = ap.parse_args()

    ids, titles, texts = select(*load_eligible(a.corpus), "slice")
    emb = embd.Model(a.model, device="cpu", threads=a.threads, cache="off")
    ce = embd.Model(a.reranker, device="cpu", threads=a.threads, cache="off")
    t0 = time.perf_counter()
    docs = emb.embed(texts)
    embed_sec = time.perf_counter() - t0
    n = min(a.queries, len(titles))
    base, reranked, t_ret, t_all = [], [], [], []
    for i in range(n):
        t = time.perf_counter()
        q = emb.embed(titles[i])
        scores = docs @ q
        top = np.argpartition(-scores, a.candidates)[:a.candidates]
        top = top[np.argsort(-scores[top], kind="stable")]
        t1 = time.perf_counter()
        rs = ce.rerank(titles[i], [texts[j] for j in top])
        order = top[np.argsort(-rs, kind="stable")]
        t2 = time.perf_counter()
        rank = 1 + int((scores > scores[i]).sum())
        base.append(rank)
        hit = np.nonzero(order == i)[0]
        reranked.append(int(hit[0]) + 1 if hit.size else max(rank, a.candidates + 1))
        t_ret.append(t1 - t)
        t_all.append(t2 - t)

    def lat(x):
        return {"median_ms": 1000 * statistics.median(x),
                "p90_ms": 1000 * float(np.percentile(x, 90))}

    res = {
        "cpu": cpu_name(), "threads": a.threads, "model": os.path.basename(a.model.rstrip("/")),
        "reranker": os.path.basename(a.reranker.rstrip("/")), "documents": len(texts),
        "queries": n, "candidates": a.candidates, "slice_sha256": slice_sha256(ids, titles, texts),
        "document_embedding_sec": embed_sec,
        "retrieval": dict(summary(base), **lat(t_ret)),
        "reranked": dict(summary(reranked), **lat(t_all)),
    }
    print(f"CPU: {res['cpu']}; {len(texts)} documents, {n} queries, {a.candidates} candidates "
          f"reranked by {res['reranker']}")
    print("| | Recall@1 | Recall@10 | MRR@10 | latency median | p90 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k in ("retrieval", "reranked"):
        r = res[k]
        print(f"| {k} | {r['recall@1']:.4f} | {r['recall@10']:.4f} | {r['mrr@10']:.4f} | "
              f"{r['median_ms']:.1f} ms | {r['p90_ms']:.1f} ms |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
