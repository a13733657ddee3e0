#!/usr/bin/env python3
"""Server overhead and latency: `embd serve` against the library, same machine,
same run.

1. Saturation: the first N Debian descriptions (in the corpus's order),
   embedded (a) by `embd embed` (the library through the CLI; its own timer,
   model load excluded) and (b) through `embd serve` by C concurrent clients
   posting batches of B documents to /v1/embeddings (base64), timed from the
   first request to the last answer. Overhead = 1 - server rate / library
   rate. Runs alternate; medians are reported. Cache off in both.
2. Latency of one short query (one sequential client, keep-alive): p50/p99
   over Q requests with the cache off (a forward pass each), and with the
   cache on (hits).

usage: bench/server.py --model DIR [--docs 1000] [--runs 3] [--clients 4]
       [--batch 32] [--queries 300] [--embd build/release/embd] [--device cpu|cuda]
       [--ld-library-path PATH]
Prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import base64
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlparse


DEVICE = "cpu"
ENV = None  # environment of the embd processes (gpu-check adds bundled libraries)


def start_server(embd, model, *args):
    p = subprocess.Popen([embd, "serve", "-m", model, "--port", "0", "--device", DEVICE, *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    for raw in p.stderr:
        m = re.search(r" on (http://\S+)$", raw.decode().rstrip())
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, urlparse(m.group(1))
    raise RuntimeError("embd serve did not start")


def post(conn, path, body):
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"{path}: {r.status} {data[:200]!r}")
    return data


def library_rate(embd, model, inp):
    p = subprocess.run([embd, "embed", "-m", model, "--device", DEVICE, "--cache", "off", "-i",
                        inp, "-o", os.devnull, "--format", "npy"], capture_output=True, check=True,
                       env=ENV)
    m = re.search(r"embedded (\d+) texts .* in ([\d.]+) s", p.stderr.decode())
    return int(m.group(1)) / float(m.group(2))


def server_rate(url, texts, clients, batch):
    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    lock = threading.Lock()
    got = [0]

    def client():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        while True:
            with lock:
                if not batches:
                    break
                b = batches.pop()
            data = json.loads(post(conn, "/v1/embeddings",
                                   json.dumps({"input": b, "encoding_format": "base64"})))
            for d in data["data"]:
                base64.b64decode(d["embedding"])
            with lock:
                got[0] += len(data["data"])
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    el = time.perf_counter() - t0
    assert got[0] == len(texts), (got[0], len(texts))
    return len(texts) / el


def latencies(url, n, query):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    body = json.dumps({"input": query, "encoding_format": "float"})
    post(conn, "/v1/embeddings", body)  # warm
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        post(conn, "/v1/embeddings", body)
        out.append((time.perf_counter() - t0) * 1000)
    conn.close()
    out.sort()
    return out[len(out) // 2], out[min(len(out) - 1, int(len(out) * 0.99))]


def main():
    home = os.environ.get("EMBD_HOME", os.path.expanduser("~/.cache/embd"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--embd", default=os.path.join(root, "build", "release", "embd"))
    ap.add_argument("--corpus", default=os.path.join(home, "corpus", "debian.jsonl"))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--ld-library-path", help="LD_LIBRARY_PATH for the embd processes only")
    a = ap.parse_args()
    global DEVICE, ENV
    DEVICE = a.device
    if a.ld_library_path:
        ENV = dict(os.environ, LD_LIBRARY_PATH=a.ld_library_path)

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

    load0 = os.getloadavg()[0]
    lib, srv = [], []
    # --auto-truncate: the library truncates long documents as sentence-transformers does.
    proc, url = start_server(a.embd, a.model, "--cache", "off", "--auto-truncate")
    try:
        for r in range(a.runs):
            lib.append(library_rate(a.embd, a.model, inp))
            srv.append(server_rate(url, list(texts), a.clients, a.batch))
            print(f"run {r + 1}: library {lib[-1]:.1f} docs/s, server {srv[-1]:.1f} docs/s",
                  file=sys.stderr)
        q = "how do I install a web server on debian"
        p50_miss, p99_miss = latencies(url, a.queries, q)
    finally:
        proc.terminate()
        proc.wait()
    proc, url = start_server(a.embd, a.model)
    try:
        p50_hit, p99_hit = latencies(url, a.queries, q)
    finally:
        proc.terminate()
        proc.wait()
    load1 = os.getloadavg()[0]
    ml, ms = statistics.median(lib), statistics.median(srv)
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"\nMachine: {cpu}, {os.cpu_count()} cores; load average {load0:.1f} before, "
          f"{load1:.1f} after. Model {os.path.basename(a.model.rstrip('/'))}, device {DEVICE}, "
          f"{a.docs} docs, {a.runs} runs (medians), {a.clients} clients x {a.batch} docs.\n")
    print("| path | docs/s (median) | runs |")
    print("| --- | --- | --- |")
    print(f"| library (`embd embed`) | {ml:.1f} | {', '.join(f'{x:.1f}' for x in lib)} |")
    print(f"| server (`embd serve`, /v1/embeddings) | {ms:.1f} | "
          f"{', '.join(f'{x:.1f}' for x in srv)} |")
    print(f"\nServer overhead at saturation: {100 * (1 - ms / ml):.1f}% (target <= 10%).\n")
    print("| one short query, sequential | p50 ms | p99 ms |")
    print("| --- | --- | --- |")
    print(f"| cache off (a forward pass) | {p50_miss:.2f} | {p99_miss:.2f} |")
    print(f"| cache on (a hit) | {p50_hit:.2f} | {p99_hit:.2f} |")


if __name__ == "__main__":
    main()
