#!/usr/bin/env python3
"""Cross-lingual retrieval on the Debian translations: Recall@1, Recall@10,
MRR@10 of embd against sentence-transformers with the same weights.

Debian translates its package descriptions (scripts/corpus-debian-i18n
writes debian-LANG.jsonl beside scripts/corpus-debian's English
debian.jsonl, keyed by package). A query is a package's short description
("title") in LANG; the documents are the English long descriptions ("text")
of the set; the right answer is the query's own package. The set: packages
whose English text is unique in the corpus and that have a translated title
in every language asked for, the --n with the smallest sha256(id) (hex), so
the same packages on every machine. Scoring as bench/retrieval.py (exact
inner product, rank = 1 + documents scoring strictly higher). The English
titles are run as a language too ("en"): the monolingual baseline.

Both engines get the same texts, prefixed as the model wants
(--query-prefix / --doc-prefix: "query: " and "passage: " for the E5
family), and the per-language differences of the metrics are reported
(target: within 0.005). Vectors are compared too (cosine per text, min).

usage: bench/crosslingual.py --model DIR [--langs de,fr,ja,ru,zh_CN] [--n 500]
       [--engine both|embd|st] [--embd BIN] [--threads N] [--out FILE]
       [--query-prefix S] [--doc-prefix S]
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval import cosines, embed_embd, embed_st, file_sha256, write_result  # noqa: E402


def read(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out.setdefault(r["id"], r)
    return out


def ranks(q, d):
    sc = q.astype(np.float64) @ d.astype(np.float64).T
    right = sc[np.arange(len(q)), np.arange(len(q))]
    return 1 + (sc > right[:, None]).sum(axis=1)


def metrics(r):
    return {"recall@1": round(float((r == 1).mean()), 4),
            "recall@10": round(float((r <= 10).mean()), 4),
            "mrr@10": round(float(np.where(r <= 10, 1.0 / r, 0.0).mean()), 4)}


def main():
    home = os.environ.get("EMBD_HOME", os.path.expanduser("~/.cache/embd"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--langs", default="de,fr,ja,ru,zh_CN")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--engine", choices=["both", "embd", "st"], default="both")
    ap.add_argument("--embd", default=os.path.join(root, "build", "release", "embd"))
    ap.add_argument("--corpus-dir", default=os.path.join(home, "corpus"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--query-prefix", default="")
    ap.add_argument("--doc-prefix", default="")
    ap.add_argument("--out")
    a = ap.parse_args()

    langs = [x for x in a.langs.split(",") if x]
    en_path = os.path.join(a.corpus_dir, "debian.jsonl")
    en = read(en_path)
    counts = {}
    for r in en.values():
        counts[r.get("text", "")] = counts.get(r.get("text", ""), 0) + 1
    tr = {}
    for lang in langs:
        p = os.path.join(a.corpus_dir, "debian-%s.jsonl" % lang)
        if not os.path.exists(p):
            sys.exit("embd: %s missing: run scripts/corpus-debian-i18n %s" % (p, a.corpus_dir))
        tr[lang] = read(p)
    ids = [i for i, r in en.items()
           if r.get("text") and counts[r["text"]] == 1 and r.get("title")
           and all(tr[lang].get(i, {}).get("title") for lang in langs)]
    ids.sort(key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    ids = ids[:a.n]
    docs = [a.doc_prefix + en[i]["text"] for i in ids]
    queries = {"en": [a.query_prefix + en[i]["title"] for i in ids]}
    for lang in langs:
        queries[lang] = [a.query_prefix + tr[lang][i]["title"] for i in ids]
    res = {"model": os.path.basename(os.path.normpath(a.model)), "packages": len(ids),
           "languages": ["en"] + langs, "english_corpus_sha256": file_sha256(en_path),
           "selection": "unique English text, a title in every language; smallest sha256(id)",
           "engines": {}}
    vecs = {}
    engines = ["embd", "st"] if a.engine == "both" else [a.engine]
    all_q = [t for lang in ["en"] + langs for t in queries[lang]]
    for e in engines:
        t0 = time.perf_counter()
        if e == "embd":
            d = embed_embd(a.embd, a.model, docs, a.threads)
            q = embed_embd(a.embd, a.model, all_q, a.threads)
        else:
            d = embed_st(a.model, docs)
            q = embed_st(a.model, all_q)
        el = time.perf_counter() - t0
        vecs[e] = (d, q)
        per = {}
        for k, lang in enumerate(["en"] + langs):
            per[lang] = metrics(ranks(q[k * len(ids):(k + 1) * len(ids)], d))
        res["engines"][e] = {"seconds": round(el, 1), "by_language": per}
        print("%-4s %s" % (e, json.dumps(res["engines"][e])), file=sys.stderr)
    if len(engines) == 2:
        diff = {}
        for lang in ["en"] + langs:
            m1, m2 = res["engines"]["embd"]["by_language"][lang], res["engines"]["st"]["by_language"][lang]
            diff[lang] = {k: round(abs(m1[k] - m2[k]), 4) for k in m1}
        res["abs_diff"] = diff
        res["max_abs_diff"] = max(v for dl in diff.values() for v in dl.values())
        res["cosine_embd_st"] = {"documents": cosines(vecs["embd"][0], vecs["st"][0]),
                                 "queries": cosines(vecs["embd"][1], vecs["st"][1])}
    write_result(res, a.out)


if __name__ == "__main__":
    main()
