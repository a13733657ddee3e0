"""`embd serve` shares the engine fairly (issue 26, part 2).

Against a real server on loopback with the real all-MiniLM-L6-v2, cache off:
a client posts a large request (hundreds of texts, several seconds of work);
a short query and a /health check sent while it runs finish long before it
(the scheduler gives the query a piece of the next round instead of queueing
it behind every text), and the large request's vectors are still the ones a
request alone gets. A large request whose client hangs up stops within a
round or so: a query sent right after is answered at once.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import json
import os
import socket
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402

M, c = minilm("server_fair")

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
BIG = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(40)) + f" {i}" for i in range(400)]


def post(s, path, body):
    st, _, raw = s.request("POST", path, json.dumps(body))
    return st, json.loads(raw)


with Server(M, "--cache", "off", "--threads", "2") as s:
    post(s, "/embed", {"inputs": ["warm up"]})
    # The large request alone: its time, and its vectors.
    t0 = time.time()
    st, alone = post(s, "/embed", {"inputs": BIG})
    t_alone = time.time() - t0
    c.check(st == 200, f"large request alone: {st}")

    # Again, with a query and a health check sent while it runs.
    res = {}

    def big():
        t = time.time()
        res["big"] = post(s, "/embed", {"inputs": BIG})
        res["big_t"] = time.time() - t
        res["big_end"] = time.time()

    th = threading.Thread(target=big)
    th.start()
    time.sleep(min(0.3, t_alone / 5))
    t = time.time()
    st_q, q = post(s, "/embed", {"inputs": ["a short query"]})
    t_query = time.time() - t
    q_end = time.time()
    t = time.time()
    st_h, _, _ = s.request("GET", "/health")
    t_health = time.time() - t
    th.join()
    c.check(st_q == 200 and st_h == 200, f"query {st_q}, health {st_h}")
    c.check(q_end < res["big_end"], "the short query finished after the large request")
    c.check(t_query < 0.25 * t_alone,
            f"the short query took {t_query:.3f} s against {t_alone:.3f} s of large-request work")
    c.check(t_health < 0.25 * t_alone, f"/health took {t_health:.3f} s while work ran")
    st_b, again = res["big"]
    c.check(st_b == 200 and np.max(np.abs(np.array(again) - np.array(alone))) < 1e-5,
            "the large request's vectors are those it gets alone")
    print(f"large request {t_alone:.2f} s alone, {res['big_t']:.2f} s shared; "
          f"query {t_query * 1000:.0f} ms, /health {t_health * 1000:.0f} ms meanwhile")

    # A large request whose client hangs up: the rest of it is dropped.
    host, port = s.url.replace("http://", "").rsplit(":", 1)
    body = json.dumps({"inputs": BIG * 3}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(min(0.5, t_alone / 4))
    sock.close()
    time.sleep(0.3)  # the watchdog polls every 50 ms; the worker stops at a round
    t = time.time()
    st_q, _ = post(s, "/embed", {"inputs": ["after the hang-up"]})
    t_after = time.time() - t
    c.check(st_q == 200 and t_after < 0.25 * t_alone,
            f"a query after a hung-up large request took {t_after:.3f} s "
            f"(the abandoned work is {3 * t_alone:.1f} s)")

sys.exit(c.done())
