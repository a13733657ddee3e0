#!/usr/bin/env python3
"""Head-of-line blocking under load: a short query's latency while C clients
saturate `embd serve` with large requests, and the throughput they get.

For each binary given (e.g. the current build and an older one, same run,
alternating): start `embd serve --cache off`, measure a short query's idle
latency (Q sequential requests), then start C client threads that each post
B Debian descriptions per request to /embed in a loop for S seconds while one
more client sends the short query once every 100 ms; report the query's
p50/p90/p99 under load, its ratio to the idle p50, /health's p99, and the
documents per second the C clients got. Loopback only; every loop is bounded
in count and time.

usage: bench/server_fair.py --model DIR --corpus FILE.jsonl --embd BIN [--embd BIN2 ...]
       [--clients 32] [--batch 64] [--seconds 30] [--runs 1] [--threads 2]
Prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import threading
import time
import urllib.request


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def start(embd, model, threads):
    # "BIN [serve options]": a binary, with options of its own (e.g. --express off)
    cmd = shlex.split(embd)
    p = subprocess.Popen([cmd[0], "serve", "-m", model, "--port", "0", "--cache", "off",
                          "--threads", str(threads), "--max-concurrent-requests", "512",
                          *cmd[1:]],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.time() + 60
    while time.time() < end:
        line = p.stderr.readline().decode(errors="replace")
        m = re.search(r" on (http://\S+)$", line.strip())
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, m.group(1)
        if not line and p.poll() is not None:
            break
    p.kill()
    raise RuntimeError(f"{embd} serve did not start")


def post(url, path, body, timeout=600):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()
        return r.status


def get(url, path, timeout=600):
    with urllib.request.urlopen(url + path, timeout=timeout) as r:
        r.read()
        return r.status


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def one_run(embd, a, docs):
    p, url = start(embd, a.model, a.threads)
    try:
        query = {"inputs": ["how do I edit photos"]}
        post(url, "/embed", query)
        idle = []
        for _ in range(a.queries):
            t = time.time()
            post(url, "/embed", query)
            idle.append(time.time() - t)
        stop = time.time() + a.seconds
        done = [0]
        lock = threading.Lock()

        def client(k):
            i = k * a.batch
            while time.time() < stop:
                batch = [docs[(i + j) % len(docs)] for j in range(a.batch)]
                i += a.clients * a.batch
                post(url, "/embed", {"inputs": batch, "truncate": True})
                with lock:
                    done[0] += len(batch)

        ths = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        t0 = time.time()
        for th in ths:
            th.start()
        time.sleep(min(2.0, a.seconds / 5))  # the load is established
        loaded, health = [], []
        while time.time() < stop:
            t = time.time()
            post(url, "/embed", query)
            loaded.append(time.time() - t)
            t = time.time()
            get(url, "/health")
            health.append(time.time() - t)
            time.sleep(0.1)
        for th in ths:
            th.join()
        elapsed = time.time() - t0
        return {"idle_p50": statistics.median(idle), "p50": pct(loaded, 0.5),
                "p90": pct(loaded, 0.9), "p99": pct(loaded, 0.99), "n": len(loaded),
                "health_p99": pct(health, 0.99), "docs_s": done[0] / elapsed}
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True, help="Debian descriptions, JSONL with a text field")
    ap.add_argument("--embd", action="append", required=True,
                    help="a binary, optionally with serve options (\"BIN --express off\"); "
                    "repeat to compare")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--queries", type=int, default=50, help="idle queries")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    docs = []
    with open(a.corpus) as f:
        for line in f:
            docs.append(json.loads(line)["text"])
            if len(docs) >= 20000:
                break
    res = {e: [] for e in a.embd}
    for _ in range(a.runs):
        for e in a.embd:
            res[e].append(one_run(e, a, docs))
    print(f"{a.clients} clients x {a.batch} documents per request for {a.seconds:.0f} s, "
          f"cache off, --threads {a.threads}; {cpu_model()}, {os.cpu_count()} vCPUs; "
          f"medians of {a.runs} run(s)\n")
    print("| binary | query idle p50 ms | query p50 / p90 / p99 ms under load | p99 / idle p50 "
          "| /health p99 ms | load docs/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for e, rs in res.items():
        def med(k):
            return statistics.median(r[k] for r in rs)
        print(f"| `{e}` | {med('idle_p50') * 1000:.1f} | {med('p50') * 1000:.0f} / "
              f"{med('p90') * 1000:.0f} / {med('p99') * 1000:.0f} | "
              f"{med('p99') / med('idle_p50'):.1f}x | {med('health_p99') * 1000:.0f} | "
              f"{med('docs_s'):.1f} |")


if __name__ == "__main__":
    main()
