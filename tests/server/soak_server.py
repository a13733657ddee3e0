"""Soak: `embd serve` under a bounded mixed load on loopback — valid OpenAI,
TEI and token-id requests, malformed and oversized ones, and clients that
hang up mid-request or before reading the answer — for EMBD_SOAK_SECONDS
(default 20; the issue asks for a run of >= 600, done by hand and recorded in
SECURITY.md). Checks: the server never dies and exits 0 on SIGTERM; every
valid request is answered correctly (its vectors equal the single-request
ones within 1e-5); every bad one gets a 4xx; resident memory once idle after
the run is within 5% of what it was once idle after a warm-up tenth.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import base64
import http.client
import json
import os
import random
import socket
import sys
import threading
import time
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402  (puts tests/e2e on the path)

M, c = minilm("server_soak")
SECONDS = float(os.environ.get("EMBD_SOAK_SECONDS", "20"))
WARMUP = SECONDS / 10

words = ("apt package kernel module driver printer network audio font editor shell mail "
         "database web server client library python perl ruby java game puzzle archive").split()
rng = random.Random(11)
POOL = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) + f" ({i})"
        for i in range(60)]
BAD = [b'{"input": [1, "a"]}', b'{"input": ""}', b'{"inputs": 3}', b'{"input": [99999999]}',
       b'not json', b'{"input": "caf\xe9"}', b'[]', b'{"input": []}',
       json.dumps({"input": "w " * 400}).encode()]
HUGE = b'{"input": "' + b"a" * (3 << 20) + b'"}'


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []

    def add(self, kind, ok, why=""):
        with self.lock:
            k = self.counts.setdefault(kind, [0, 0])
            k[0 if ok else 1] += 1
            if not ok and len(self.failures) < 20:
                self.failures.append(f"{kind}: {why}")


def main():
    with Server(M, "--cache", "off") as s:
        u = urlparse(s.url)
        ref = {}
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        for t in POOL:
            conn.request("POST", "/v1/embeddings", json.dumps({"input": t,
                         "encoding_format": "float"}), {"Content-Type": "application/json"})
            ref[t] = np.array(json.loads(conn.getresponse().read())["data"][0]["embedding"],
                              dtype=np.float32)
        conn.close()
        ids_of = {}
        st = Stats()
        phase_end = [time.time() + WARMUP]
        stop = threading.Event()

        def req(cn, path, body):
            cn.request("POST", path, body, {"Content-Type": "application/json"})
            r = cn.getresponse()
            return r.status, r.read()

        def valid(seed):
            r = random.Random(seed)
            cn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            while not stop.is_set():
                texts = [r.choice(POOL) for _ in range(r.randint(1, 6))]
                kind = r.choice(["openai-float", "openai-base64", "tei"])
                try:
                    if kind == "tei":
                        code, data = req(cn, "/embed", json.dumps({"inputs": texts}))
                        vecs = json.loads(data) if code == 200 else None
                    else:
                        fmt = kind.split("-")[1]
                        code, data = req(cn, "/v1/embeddings",
                                         json.dumps({"input": texts, "encoding_format": fmt}))
                        if code == 200:
                            d = json.loads(data)["data"]
                            vecs = [np.frombuffer(base64.b64decode(x["embedding"]), "<f4")
                                    if fmt == "base64" else x["embedding"] for x in d]
                except (OSError, http.client.HTTPException) as e:
                    st.add(kind, False, repr(e))
                    cn.close()
                    cn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
                    continue
                if code == 429:
                    st.add(kind + " 429", True)
                    continue
                ok = code == 200 and len(vecs) == len(texts) and all(
                    np.max(np.abs(np.asarray(v, np.float32) - ref[t])) <= 1e-5
                    for v, t in zip(vecs, texts))
                st.add(kind, ok, f"status {code}")
            cn.close()

        def bad(seed):
            r = random.Random(seed)
            cn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            while not stop.is_set():
                body = HUGE if r.random() < 0.05 else r.choice(BAD)
                path = r.choice(["/v1/embeddings", "/embed"])
                try:
                    code, _ = req(cn, path, body)
                    st.add("bad", 400 <= code < 500, f"status {code} for {body[:40]!r}")
                except (OSError, http.client.HTTPException) as e:
                    st.add("bad", False, repr(e))
                    cn.close()
                    cn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
                time.sleep(0.01)
            cn.close()

        def rude(seed):
            r = random.Random(seed)
            while not stop.is_set():
                try:
                    sk = socket.create_connection((u.hostname, u.port), timeout=10)
                    body = json.dumps({"input": [r.choice(POOL) for _ in range(8)]}).encode()
                    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                    if r.random() < 0.5:
                        sk.sendall(head + body[:r.randint(0, len(body) - 1)])  # half a body
                    else:
                        sk.sendall(head + body)  # whole, then gone before the answer
                    sk.close()
                    st.add("hang-up", True)
                except OSError as e:
                    st.add("hang-up", False, repr(e))
                time.sleep(0.05)

        threads = ([threading.Thread(target=valid, args=(i,)) for i in range(12)] +
                   [threading.Thread(target=bad, args=(100 + i,)) for i in range(3)] +
                   [threading.Thread(target=rude, args=(200 + i,)) for i in range(2)])
        for t in threads:
            t.start()
        peak = 0
        t0 = time.time()
        base = None
        while time.time() - t0 < SECONDS:
            time.sleep(0.5)
            peak = max(peak, s.rss_kb())
            c.check(s.proc.poll() is None, "the server died")
            if s.proc.poll() is not None:
                break
            if base is None and time.time() - t0 >= WARMUP:
                # Idle for a moment after the warm-up: the baseline.
                stop.set()
                for t in threads:
                    t.join()
                time.sleep(3.5)
                base = s.rss_kb()
                stop.clear()
                threads = ([threading.Thread(target=valid, args=(300 + i,)) for i in range(12)] +
                           [threading.Thread(target=bad, args=(400 + i,)) for i in range(3)] +
                           [threading.Thread(target=rude, args=(500 + i,)) for i in range(2)])
                for t in threads:
                    t.start()
        stop.set()
        for t in threads:
            t.join()
        time.sleep(3.5)
        final = s.rss_kb()
        summary = ", ".join(f"{k} {v[0]} ok/{v[1]} bad" for k, v in sorted(st.counts.items()))
        print(f"soak {SECONDS:.0f} s: {summary}; RSS idle after warm-up {base} KiB, peak {peak} "
              f"KiB, idle at the end {final} KiB ({100.0 * (final / base - 1):+.1f}%)")
        c.check(not st.failures, "failures: " + " | ".join(st.failures))
        c.check(all(v[0] > 0 for k, v in st.counts.items() if "429" not in k),
                f"every kind of client got through: {st.counts}")
        # glibc's per-thread arenas and cached thread stacks make idle RSS
        # wander by some 10-20 MiB from one idle moment to the next (measured:
        # 127-149 MiB after identical bursts), so a short run allows 16 MiB on
        # top of the 5%; the 10-minute run in SECURITY.md reports the figure.
        # Under AddressSanitizer freed memory sits in its quarantine (up to
        # 256 MiB), so resident memory says nothing there.
        slack = 0 if SECONDS >= 600 else 16 * 1024
        if not os.environ.get("EMBD_TEST_SANITIZED"):
            c.check(base is not None and final <= base * 1.05 + slack,
                    f"resident memory grew {final} vs {base} KiB (> 5%)")
        c.check(s.stop() == 0, "exit 0 on SIGTERM")
        c.check(not any("AddressSanitizer" in l or "runtime error" in l for l in s.lines),
                "sanitizer reports: " + " | ".join(s.lines[-5:]))
    c.done()


main()
