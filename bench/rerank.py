#!/usr/bin/env python3
"""Reranking speed: `embd rerank` against sentence-transformers' CrossEncoder.

One query against the first --n Debian descriptions (the corpus's `text`
field, in order), with a cross-encoder of the ms-marco-MiniLM-L-6-v2
architecture (scripts/make-random-model ce-minilm-l6: random weights, the
same shapes, so the same work). Each engine runs --runs times, interleaved;
medians are kept:

  embd  `embd rerank -m DIR --query Q -i FILE -q --threads T`, timed from
        process start to exit (model load included)
  st    CrossEncoder(DIR, device="cpu").predict(pairs, batch_size=32) with
        torch threads = T, after loading and one warm-up call (not timed)

Scores are compared (largest |difference| and whether the ranking is the
same). The CPU is named in the output. Needs a Python with
sentence-transformers (--st-python; scripts/bench-setup makes one).

usage: bench/rerank.py --embd BIN --model DIR --corpus FILE --st-python PY
       [--n 1000] [--runs 3] [--threads 2] [--out bench/results/rerank.json]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

QUERY = "a tool to compress and decompress files"

ST_SCRIPT = r"""
import json, sys, time, torch
from sentence_transformers import CrossEncoder
model, docs_path, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
docs = [json.loads(l)["text"] for l in open(docs_path, encoding="utf-8")]
ce = CrossEncoder(model, device="cpu")
query = sys.argv[5]
pairs = [(query, d) for d in docs]
ce.predict(pairs[:64], batch_size=32)
times = []
for _ in range(runs):
    t = time.perf_counter()
    s = ce.predict(pairs, batch_size=32, activation_fn=torch.nn.Identity())
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "scores": [float(x) for x in s]}))
"""


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embd", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--st-python", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        docs_path = os.path.join(tmp, "docs.jsonl")
        n = 0
        with open(a.corpus, encoding="utf-8") as f, open(docs_path, "w", encoding="utf-8") as o:
            for line in f:
                t = json.loads(line).get("text", "")
                if t:
                    o.write(json.dumps({"text": t}) + "\n")
                    n += 1
                    if n == a.n:
                        break
        embd_times = []
        embd_scores = None
        for _ in range(a.runs):
            t = time.perf_counter()
            p = subprocess.run([a.embd, "rerank", "-m", a.model, "--query", QUERY, "-i", docs_path,
                                "-q", "--raw-scores", "--threads", str(a.threads),
                                "--device", "cpu"], capture_output=True, check=True)
            embd_times.append(time.perf_counter() - t)
            lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
            embd_scores = [0.0] * n
            for x in lines:
                embd_scores[x["index"]] = x["score"]
        st = subprocess.run([a.st_python, "-c", ST_SCRIPT, a.model, docs_path, str(a.threads),
                             str(a.runs), QUERY], capture_output=True, check=True)
        st_out = json.loads(st.stdout.decode().splitlines()[-1])

    diff = max(abs(x - y) for x, y in zip(embd_scores, st_out["scores"]))
    order_e = sorted(range(n), key=lambda i: -embd_scores[i])
    order_s = sorted(range(n), key=lambda i: -st_out["scores"][i])
    res = {
        "cpu": cpu_name(), "threads": a.threads, "docs": n, "runs": a.runs,
        "model": os.path.basename(os.path.normpath(a.model)),
        "embd_sec": statistics.median(embd_times), "embd_times": embd_times,
        "st_sec": statistics.median(st_out["times"]), "st_times": st_out["times"],
        "max_abs_diff": diff, "same_top10": order_e[:10] == order_s[:10],
        "same_ranking": order_e == order_s,
    }
    res["speedup"] = res["st_sec"] / res["embd_sec"]
    print(f"CPU: {res['cpu']}, {a.threads} threads; {n} (query, document) pairs, "
          f"{res['model']}, median of {a.runs}")
    print("| engine | seconds | pairs/s |")
    print("| --- | ---: | ---: |")
    print(f"| embd rerank (whole process) | {res['embd_sec']:.2f} | {n / res['embd_sec']:.0f} |")
    print(f"| sentence-transformers CrossEncoder.predict | {res['st_sec']:.2f} | "
          f"{n / res['st_sec']:.0f} |")
    print(f"embd is {res['speedup']:.2f}x sentence-transformers; largest |score difference| "
          f"{diff:.2g}; same top 10: {res['same_top10']}; same ranking: {res['same_ranking']}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
