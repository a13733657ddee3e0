"""`embd serve` and how a request's body is framed (issue 26, must-have 5).

Raw requests over a socket on loopback, each answered at once (well under
the 2 s each is given) and the connection closed:
- two Content-Length headers (equal or not), or Content-Length with
  Transfer-Encoding: 400 (a request-smuggling pair behind a proxy);
- a transfer coding other than chunked (identity, "gzip, chunked"): 501;
- a declared body over --max-body-bytes: 413 before the body is read, with
  or without "Expect: 100-continue" (no "100 Continue" is sent);
- a negative, signed or non-numeric Content-Length: 400 (libmicrohttpd's own),
  well formed (scripts/build-mhd's fix: one status line, the body as long as
  its Content-Length says);
- whitespace between a header name and its colon ("Content-Length :", a
  request-smuggling vector), and "Transfer-Encoding: chunked " (chunked to a
  proxy, not to libmicrohttpd): 400, nothing after it read as a request;
- chunked bodies still work, and one over the limit is 413;
- --body-timeout: a body trickled in a byte at a time is cut off;
- an HTTP/1.1 request without Host: 400, well formed (HTTP/1.0 without
  Host is served); a space in the request target: the connection closed.
Errors are in the endpoint's own JSON shape; the server still answers a
normal request afterwards.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import json
import os
import socket
import sys
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402  (puts tests/e2e on the path)

M, c = minilm("server_strict_http")


def exchange(port, raw, wait=2.0):
    """Sends raw, reads until the server closes; returns (bytes, seconds, closed)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(wait)
    t0 = time.time()
    s.sendall(raw)
    out, closed = b"", False
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            out += d
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    s.close()
    return out, time.time() - t0, closed


def parse(out):
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/1.") else 0
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def head(path, extra):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in extra) + "\r\n").encode()


BODY = b'{"inputs":"a"}'
OA_BODY = b'{"input":"a"}'
with Server(M, "--max-body-bytes", "65536") as s:
    port = urlparse(s.url).port
    cases = [
        ("two equal Content-Length", "/embed", [("Content-Length", "14"), ("Content-Length", "14")],
         BODY, 400, "Content-Length"),
        ("conflicting Content-Length", "/v1/embeddings",
         [("Content-Length", "13"), ("Content-Length", "5")], OA_BODY, 400, "Content-Length"),
        ("Transfer-Encoding with Content-Length", "/embed",
         [("Transfer-Encoding", "chunked"), ("Content-Length", "14")],
         b"e\r\n" + BODY + b"\r\n0\r\n\r\n", 400, "both"),
        ("Transfer-Encoding identity", "/embed", [("Transfer-Encoding", "identity")], BODY, 501,
         "not supported"),
        ("Transfer-Encoding gzip, chunked", "/v1/embeddings",
         [("Transfer-Encoding", "gzip, chunked")], OA_BODY, 501, "not supported"),
        ("two Transfer-Encoding headers", "/embed",
         [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], b"", 400,
         "Transfer-Encoding"),
        ("declared 100 MB", "/embed", [("Content-Length", "100000000")], b"", 413,
         "larger than"),
        # RFC 9112 5.1: whitespace between a header name and its colon is a
        # 400 (a proxy that reads "Content-Length :" frames the body, a
        # server that does not reads it as a second request: smuggling)
        ("space before the colon (a smuggled request)", "/embed", [("Content-Length ", "37")],
         b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 400, "header name"),
        ("tab before the colon", "/embed", [("Transfer-Encoding\t", "chunked")],
         b"e\r\n" + BODY + b"\r\n0\r\n\r\n", 400, "header name"),
        # "chunked " is chunked to a proxy, not to libmicrohttpd: refused
        ("Transfer-Encoding 'chunked ' (a trailing space)", "/embed",
         [("Transfer-Encoding", "chunked ")], b"e\r\n" + BODY + b"\r\n0\r\n\r\n", 400,
         "without spaces"),
        ("declared 100 MB, Expect 100-continue", "/v1/embeddings",
         [("Content-Length", "100000000"), ("Expect", "100-continue")], b"", 413, "larger than"),
    ]
    for name, path, hdrs, body, want, frag in cases:
        out, secs, closed = exchange(port, head(path, hdrs) + body)
        st, h, b = parse(out)
        c.check(st == want, f"{name}: status {st} (want {want}): {out[:200]!r}")
        c.check(out.count(b"HTTP/1.") == 1, f"{name}: one answer, nothing smuggled: {out!r}")
        c.check(b"100 Continue" not in out, f"{name}: sent 100 Continue")
        c.check(closed and secs < 2.0, f"{name}: answered and closed in {secs:.2f} s")
        try:
            j = json.loads(b)
            msg = j["error"]["message"] if path.startswith("/v1/") else j["error"]
            c.check(frag in msg, f"{name}: message {msg!r} lacks {frag!r}")
        except (ValueError, KeyError, TypeError):
            c.check(False, f"{name}: not a JSON error in the endpoint's shape: {b[:200]!r}")
    for name, value in [("negative Content-Length", "-1"), ("non-numeric Content-Length", "abc"),
                        ("Content-Length with a sign", "+14")]:
        out, secs, closed = exchange(port, head("/embed", [("Content-Length", value)]) + BODY)
        st, h, b = parse(out)
        c.check(st == 400, f"{name}: status {st}: {out[:200]!r}")
        c.check(closed and secs < 2.0, f"{name}: answered and closed in {secs:.2f} s")
        # Well formed: one status line, and a body of exactly the declared
        # length (libmicrohttpd 0.9.75 unpatched sent its header block twice,
        # so the body began with a second status line).
        declared = h.get("content-length", "")
        c.check(out.count(b"HTTP/1.") == 1 and declared.isdigit() and int(declared) == len(b),
                f"{name}: malformed reply (one status line, Content-Length {declared!r} vs a "
                f"{len(b)}-byte body): {out[:300]!r}")
    # RFC 9112: an HTTP/1.1 request without Host is a 400, well formed; a
    # space in the request target closes the connection (libmicrohttpd's
    # strict mode); HTTP/1.0 needs no Host
    out, secs, closed = exchange(port, b"POST /embed HTTP/1.1\r\nContent-Length: 14\r\n\r\n"
                                 + BODY)
    st, h, b = parse(out)
    declared = h.get("content-length", "")
    c.check(st == 400 and closed and out.count(b"HTTP/1.") == 1 and declared.isdigit()
            and int(declared) == len(b), f"HTTP/1.1 without Host: a well-formed 400: {out[:300]!r}")
    out, secs, closed = exchange(port, b"GET /hea lth HTTP/1.1\r\nHost: x\r\n\r\n")
    c.check(closed and secs < 2.0 and (out == b"" or parse(out)[0] == 400),
            f"a space in the target: closed at once, nothing but a 400 sent: {out[:200]!r}")
    out, _, _ = exchange(port, b"POST /embed HTTP/1.0\r\nContent-Length: 14\r\n\r\n" + BODY)
    c.check(parse(out)[0] == 200, f"HTTP/1.0 without Host is served: {out[:120]!r}")
    # RFC 9112 3.2.2: a target in absolute form (as a proxy sends it) is served
    out, _, _ = exchange(port, b"POST http://x/embed HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n"
                         b"Connection: close\r\n\r\n" + BODY)
    c.check(parse(out)[0] == 200, f"an absolute-form target is served: {out[:120]!r}")
    out, secs, closed = exchange(port, head("/embed", [("Content-Length",
                                                         "18446744073709551617")]))
    c.check(parse(out)[0] == 413 and closed and secs < 2.0,
            f"declared 2^64 + 1 (libmicrohttpd's own 413): {out[:120]!r}")
    # Chunked bodies are read; one over the limit is 413.
    chunked = head("/embed", [("Transfer-Encoding", "chunked")])
    out, _, _ = exchange(port, chunked + b"7\r\n" + BODY[:7] + b"\r\n7\r\n" + BODY[7:] +
                         b"\r\n0\r\n\r\n" + b"GET /health HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
    c.check(out.startswith(b"HTTP/1.1 200") and out.count(b"HTTP/1.1 200") == 2,
            f"chunked body, then a kept-alive request: {out[:120]!r}")
    big = json.dumps({"inputs": "a " * 40000}).encode()
    out, secs, closed = exchange(port, chunked + b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n",
                                 wait=5)
    c.check(parse(out)[0] == 413, f"chunked over the limit: {out[:120]!r}")
    st, _, body = s.request("POST", "/embed", BODY)
    c.check(st == 200 and len(json.loads(body)[0]) == 384, f"a normal request afterwards: {st}")
    rc = s.stop()
    c.check(rc == 0, f"exit status {rc}")

# --body-timeout: a body trickled a byte a second (each within --idle-timeout)
# is cut off once the body is late, so it holds no connection slot for long
with Server(M, "--body-timeout", "2") as s:
    port = urlparse(s.url).port
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head("/embed", [("Content-Length", "100")]) + b"{")
    t0, cut = time.time(), None
    while time.time() - t0 < 15:
        time.sleep(0.5)
        try:
            sock.sendall(b" ")
        except OSError:
            cut = time.time() - t0
            break
    sock.close()
    c.check(cut is not None and 1.5 <= cut <= 5, f"a trickled body cut after {cut} s (want ~2)")
    st, _, _ = s.request("POST", "/embed", BODY)
    c.check(st == 200, f"a normal request afterwards: {st}")
    print(f"--body-timeout 2: a trickled body cut after {cut:.1f} s" if cut else "not cut")
c.done()
