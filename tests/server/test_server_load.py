"""`embd serve` under load: 64 concurrent keep-alive clients on loopback for
EMBD_LOAD_SECONDS (default 30; 10 in sanitizer builds), each sending 1 to 4
texts per request from a pool, with the cache off so that every request is
computed in batches mixed with other clients' texts. Every answer must equal
the single-request answer for its texts (within 1e-5: batch composition
changes float summation order), no status other than 200 or 429 may appear,
and resident memory must come back near its baseline afterwards.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import http.client
import json
import os
import random
import sys
import threading
import time
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402  (puts tests/e2e on the path)

M, c = minilm("server_load")
SANITIZED = bool(os.environ.get("EMBD_TEST_SANITIZED"))
SECONDS = float(os.environ.get("EMBD_LOAD_SECONDS", "10" if SANITIZED else "30"))
CLIENTS = 64

words = ("debian package library server network kernel python data file system graphics "
         "audio video font driver tool editor shell database web browser game archive "
         "compression security crypto test documentation language compiler").split()
rng = random.Random(7)
POOL = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) + f" #{i}"
        for i in range(120)]


def post(conn, texts):
    body = json.dumps({"input": texts, "encoding_format": "float"})
    conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


with Server(M, "--cache", "off") as s:
    u = urlparse(s.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    ref = {}
    for t in POOL:
        st, data = post(conn, [t])
        c.check(st == 200, f"reference request: {st}")
        ref[t] = np.array(json.loads(data)["data"][0]["embedding"], dtype=np.float32)
    conn.close()
    time.sleep(1.5)
    base_kb = s.rss_kb()

    stats = {"ok": 0, "busy": 0, "other": [], "wrong": 0, "maxdiff": 0.0, "errors": []}
    lock = threading.Lock()
    stop_at = time.time() + SECONDS
    peak = [base_kb]

    def client(seed):
        r = random.Random(seed)
        cn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        while time.time() < stop_at:
            texts = [r.choice(POOL) for _ in range(r.randint(1, 4))]
            try:
                st, data = post(cn, texts)
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                with lock:
                    stats["errors"].append(repr(e))
                cn.close()
                cn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
                continue
            with lock:
                if st == 200:
                    got = [np.array(d["embedding"], dtype=np.float32)
                           for d in json.loads(data)["data"]]
                    diffs = [float(np.max(np.abs(g - ref[t]))) for g, t in zip(got, texts)]
                    stats["maxdiff"] = max(stats["maxdiff"], max(diffs))
                    if len(got) != len(texts) or max(diffs) > 1e-5:
                        stats["wrong"] += 1
                    stats["ok"] += 1
                elif st == 429:
                    stats["busy"] += 1
                else:
                    stats["other"].append((st, data[:200]))
        cn.close()

    def sampler():
        while time.time() < stop_at:
            peak[0] = max(peak[0], s.rss_kb())
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    threads.append(threading.Thread(target=sampler))
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    time.sleep(3.0)
    after_kb = s.rss_kb()
    print(f"{CLIENTS} clients, {elapsed:.1f} s: {stats['ok']} answered, {stats['busy']} x 429, "
          f"{len(stats['other'])} other, {len(stats['errors'])} connection errors; "
          f"max |diff| {stats['maxdiff']:.2e}; RSS base {base_kb // 1024} MiB, peak "
          f"{peak[0] // 1024} MiB, after {after_kb // 1024} MiB")
    c.check(stats["ok"] > CLIENTS, f"answers: {stats['ok']}")
    c.check(not stats["other"], f"statuses other than 200/429: {stats['other'][:5]}")
    c.check(not stats["errors"], f"connection errors: {stats['errors'][:5]}")
    c.check(stats["wrong"] == 0, f"{stats['wrong']} answers differ from the single-request ones")
    # Near the baseline once the load is over (the scheduler releases its
    # scratch after 2 idle seconds, the server trims the heap): at most 15%
    # + 16 MiB above it, where the peak was some 60 MiB above.
    # (Not under AddressSanitizer: its quarantine holds freed memory.)
    c.check(SANITIZED or after_kb <= base_kb * 1.15 + 16 * 1024,
            f"RSS after the load {after_kb} KiB vs baseline {base_kb} KiB")
    st, _, _ = s.request("GET", "/health")
    c.check(st == 200, f"healthy after the load: {st}")
    c.check(s.stop() == 0, "clean exit after the load")
c.done()
