"""`embd serve --drain-seconds`: SIGTERM's drain window (issue 25, item 2).

Without a load balancer (tests/deploy/test_haproxy.py has one): once
/health has been asked, SIGTERM makes /health answer 503 while requests are
still answered, on a kept-alive connection and on new ones, each answer
closing its connection; then the server stops and exits 0, not before the
window. A second SIGTERM cuts the window short; --shutdown-timeout bounds
it; SIGINT, and a server whose /health nobody asked, stop without one.
Only lower bounds and generous upper bounds on times (a loaded machine).

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import http.client
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from server_fixture import Server, minilm, wait_until  # noqa: E402

M, c = minilm("deploy_drain")
BODY = json.dumps({"input": ["a query", "a document about packages"]})


def conn_of(s):
    host, port = s.url.split("//", 1)[1].rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def ask(conn, method, path, body=None):
    """(status, Connection header, body) on conn."""
    conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
    r = conn.getresponse()
    return r.status, (r.getheader("Connection") or "").lower(), r.read()


def drained(s):
    return any("draining" in line for line in s.lines)


# The window: /health 503, requests answered (old and new connections), exit 0.
with Server(M, "--threads", "1", "--drain-seconds", "2") as s:
    kept = conn_of(s)
    st, hdr, _ = ask(kept, "GET", "/health")
    c.check(st == 200 and hdr != "close", f"/health before SIGTERM: {st}, Connection {hdr!r}")
    st, _, _ = ask(kept, "POST", "/v1/embeddings", BODY)
    c.check(st == 200, f"request before SIGTERM: {st}")
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    c.check(wait_until(lambda: drained(s), 10), f"no drain line: {s.lines}")
    st, hdr, body = ask(conn_of(s), "GET", "/health")
    c.check(st == 503 and b"draining" in body, f"/health while draining: {st} {body[:200]!r}")
    c.check(hdr == "close", f"/health while draining: Connection {hdr!r}")
    st, hdr, body = ask(kept, "POST", "/v1/embeddings", BODY)
    c.check(st == 200 and len(json.loads(body)["data"]) == 2,
            f"request on a kept-alive connection while draining: {st} {body[:200]!r}")
    c.check(hdr == "close", f"an answer while draining keeps its connection: {hdr!r}")
    st, hdr, _ = ask(conn_of(s), "POST", "/v1/embeddings", BODY)
    c.check(st == 200, f"request on a new connection while draining: {st}")
    rc = s.proc.wait(30)
    took = time.time() - t0
    c.check(rc == 0, f"exit status after the drain: {rc}")
    c.check(took >= 1.9, f"exited {took:.2f} s after SIGTERM, inside the 2 s drain window")
    print(f"drain 2 s: exited {rc} after {took:.2f} s")

# A second SIGTERM cuts the window short.
with Server(M, "--threads", "1", "--drain-seconds", "60") as s:
    c.check(s.request("GET", "/health")[0] == 200, "/health")
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    c.check(wait_until(lambda: drained(s), 10), f"no drain line: {s.lines}")
    s.proc.send_signal(signal.SIGTERM)
    rc = s.proc.wait(60)
    took = time.time() - t0
    c.check(rc == 0 and took < 30, f"second SIGTERM: exit {rc} after {took:.2f} s")
    c.check(any("cut short" in line for line in s.lines), f"log: {s.lines[-3:]}")

# --shutdown-timeout bounds the window.
with Server(M, "--threads", "1", "--drain-seconds", "60", "--shutdown-timeout", "1") as s:
    c.check(s.request("GET", "/health")[0] == 200, "/health")
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.proc.wait(60)
    took = time.time() - t0
    c.check(rc == 0 and 0.9 <= took < 30, f"--shutdown-timeout 1: exit {rc} after {took:.2f} s")
    c.check(any("for 1 s more" in line for line in s.lines), f"log: {s.lines[-3:]}")
    c.check(any("warning: --drain-seconds 60 is not less than --shutdown-timeout 1" in line
                for line in s.lines), f"a drain over the timeout is warned of: {s.lines[:3]}")

# No window after SIGINT, nor when /health was never asked.
for sig, asked in ((signal.SIGINT, True), (signal.SIGTERM, False)):
    with Server(M, "--threads", "1", "--drain-seconds", "60") as s:
        if asked:
            c.check(s.request("GET", "/health")[0] == 200, "/health")
        rc = s.stop(sig, timeout=60)
        c.check(rc == 0 and not drained(s),
                f"{sig.name}, /health {'asked' if asked else 'never asked'}: exit {rc}, "
                f"log {s.lines[-2:]}")
c.done()
