#!/usr/bin/env python3
"""CPU throughput: embd against sentence-transformers, same machine, same run.

Embeds the first N Debian package descriptions (the corpus from
scripts/corpus-debian, in its given order) with `embd embed` and with
sentence-transformers on the CPU (fp32, its default batch size 32), several
runs each, and prints a Markdown table of medians: docs/s, tokens/s, the
ratio, peak resident memory, and the minimum cosine between the two
engines' vectors.

usage: bench/cpu_vs_st.py --model DIR [--docs 1000] [--runs 3] [--threads 2]
       [--embd build/release/embd] [--corpus ~/.cache/embd/corpus/debian.jsonl]
Needs sentence-transformers (scripts/setup-deps --golden installs it).
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def main():
    home = os.environ.get("EMBD_HOME", os.path.expanduser("~/.cache/embd"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--embd", default=os.path.join(root, "build", "release", "embd"))
    ap.add_argument("--corpus", default=os.path.join(home, "corpus", "debian.jsonl"))
    a = ap.parse_args()

    texts = []
    with open(a.corpus, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == a.docs:
                break
    tmp = tempfile.mkdtemp()
    inp = os.path.join(tmp, "in.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    out = os.path.join(tmp, "out.npy")

    # embd: a fresh process per run (model load included, as a user runs it).
    embd_times, embd_rss = [], []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", a.embd, "embed", "-m", a.model, "-i", inp,
                            "-o", out, "--format", "npy", "-q", "--threads", str(a.threads)],
                           capture_output=True, text=True)
        embd_times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            sys.exit(f"embd failed: {p.stderr}")
        embd_rss.append(int(p.stderr.strip().splitlines()[-1]) / 1024)
    ev = np.load(out)
    # Each line {"index":i,"ids":[a,b,...]} holds exactly as many commas as ids.
    tokens = subprocess.run([a.embd, "tokenize", "-m", a.model, "-i", inp],
                            capture_output=True, text=True).stdout.count(",")

    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(a.threads)
    m = SentenceTransformer(a.model, device="cpu")
    m.encode(texts[:64])
    st_times = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        sv = m.encode(texts, batch_size=32)
        st_times.append(time.perf_counter() - t0)
    st_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    cos = (ev * sv).sum(1) / np.linalg.norm(ev, axis=1) / np.linalg.norm(sv, axis=1)
    e, s = statistics.median(embd_times), statistics.median(st_times)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Machine: {cpu}, {os.cpu_count()} cores; threads {a.threads}; model "
          f"{os.path.basename(a.model.rstrip('/'))}; {len(texts)} Debian descriptions "
          f"({tokens} tokens); medians of {a.runs} runs")
    print()
    print("| engine | docs/s | tokens/s | vs sentence-transformers | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| embd (process start to last vector) | {len(texts)/e:.1f} | {tokens/e:.0f} | "
          f"{s/e:.2f}x | {max(embd_rss):.0f} |")
    print(f"| sentence-transformers {__import__('sentence_transformers').__version__} "
          f"(torch {torch.__version__}, batch 32, model loaded) | {len(texts)/s:.1f} | "
          f"{tokens/s:.0f} | 1.00x | {st_rss:.0f} |")
    print()
    print(f"min cosine embd vs sentence-transformers: {cos.min():.7f}")


if __name__ == "__main__":
    main()
