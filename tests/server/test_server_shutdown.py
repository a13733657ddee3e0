"""`embd serve --shutdown-timeout` bounds the time to exit (issue 26, must-have 4);
nothing begun before the signal is lost.

A request of 2,048 long texts (tens of seconds on the CPU, cache off) is in
flight when SIGTERM comes: the server stops accepting, waits
--shutdown-timeout (2 s), cancels the work, answers the request 503 and
exits 1 within the timeout + 1 s. While it runs, /metrics reports it in the
engine's queue (embd_queue_requests 1, embd_queue_inputs > 0; 0 and 0 when
idle). A short request finished before the
deadline exits 0 (tests/server/test_server_clients.py has that case too).

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import json
import os
import signal
import socket
import sys
import threading
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, wait_until, minilm  # noqa: E402  (puts tests/e2e on the path)

M, c = minilm("server_shutdown")


def gauges(s):
    """(embd_queue_requests, embd_queue_inputs) from /metrics."""
    text = s.request("GET", "/metrics")[2].decode()
    vals = {}
    for line in text.splitlines():
        name, _, v = line.partition(" ")
        if name in ("embd_queue_requests", "embd_queue_inputs"):
            vals[name] = int(v)
    return vals.get("embd_queue_requests", -1), vals.get("embd_queue_inputs", -1)


TIMEOUT = 2
texts = [f"document {i}: " + "a fairly long sentence about packages and their files " * 12
         for i in range(2048)]
for timeout in (TIMEOUT, 0):
    with Server(M, "--cache", "off", "--shutdown-timeout", str(timeout)) as s:
        result = {}
        idle = gauges(s)
        c.check(idle == (0, 0), f"idle: embd_queue_requests/inputs {idle} (want 0, 0)")

        def big():
            result["r"] = s.request("POST", "/v1/embeddings", json.dumps({"input": texts}),
                                    timeout=120)

        t = threading.Thread(target=big)
        t.start()
        # the request is in the engine (the server reports it in flight)
        wait_until(lambda: b"embd_http_requests_in_flight 2" in
                   s.request("GET", "/metrics")[2], 10)
        time.sleep(0.5)
        # the queue metric the autoscaler reads: the request, most of its
        # 2,048 inputs not yet run
        busy = gauges(s)
        c.check(busy[0] == 1 and 0 < busy[1] <= len(texts),
                f"busy: embd_queue_requests/inputs {busy} (want 1, 1..{len(texts)})")
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        try:
            rc = s.proc.wait(timeout + 10)
        except Exception:
            rc = None
        took = time.time() - t0
        t.join(30)
        c.check(rc == 1, f"--shutdown-timeout {timeout}: exit status {rc} (want 1)")
        c.check(took <= timeout + 1.0, f"--shutdown-timeout {timeout}: exited after {took:.2f} s")
        st = result.get("r", (None,))[0]
        c.check(st in (503, None), f"--shutdown-timeout {timeout}: the request got {st}")
        if st == 503:
            c.check(b"shutting down" in result["r"][2], f"503 body: {result['r'][2][:200]!r}")
        c.check(any("cancelling" in line for line in s.lines), f"log: {s.lines[-3:]}")
        print(f"--shutdown-timeout {timeout}: exit {rc} after {took:.2f} s, request {st}")

# A request whose headers came before the signal but whose body was still
# arriving is served (it was in flight); a new request on a kept-alive
# connection after the signal gets 503 with "Connection: close", so that
# its client reconnects elsewhere instead of reusing the connection.
with Server(M, "--shutdown-timeout", "10") as s:
    port = urlparse(s.url).port
    body = b'{"inputs": ["a", "b"]}'
    head = (b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    up = socket.create_connection(("127.0.0.1", port))
    up.sendall(head + body[:8])
    kept = socket.create_connection(("127.0.0.1", port))
    kept.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
    kept.settimeout(5)
    kept.recv(65536)
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGINT)  # no drain window: straight to the shutdown
    wait_until(lambda: any("stopped accepting" in line for line in s.lines), 5)
    # The new request goes while the upload is still in flight: once that
    # upload is served nothing holds the server, and it may exit at once.
    kept.sendall(head + body)
    reply = kept.recv(65536)
    c.check(reply.startswith(b"HTTP/1.1 503") and b"Connection: close" in reply,
            f"a new request after the signal: 503 and close: {reply[:300]!r}")
    up.sendall(body[8:])
    up.settimeout(10)
    reply = up.recv(65536)
    c.check(reply.startswith(b"HTTP/1.1 200"), f"a body finished after the signal: {reply[:80]!r}")
    rc = s.proc.wait(15)
    c.check(rc == 0, f"exit status {rc} (want 0: nothing lost)")
    print(f"upload across the signal: served; new request: 503 + close; exit {rc}")
c.done()
