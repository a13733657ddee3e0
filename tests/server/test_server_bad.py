"""`embd serve` against bad requests: a table of malformed, mistyped, empty,
oversized, invalid-UTF-8, out-of-range, unauthenticated and otherwise wrong
requests, each of which must get its documented status with an error in the
endpoint's own JSON shape (OpenAI {"error":{"message","type","param","code"}}
on /v1/..., TEI {"error","error_type"} elsewhere), and never a 5xx or a
crash: the server still answers a good request the same way afterwards.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import http.client
import json
import os
import sys
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402  (puts tests/e2e on the path)

M, c = minilm("server_bad_requests")

KEY = "k3y-for-tests"
AUTH = {"Authorization": "Bearer " + KEY}
JSON = {"Content-Type": "application/json"}
OA, TEI = "/v1/embeddings", "/embed"
deep = "[" * 5000 + "]" * 5000

# (name, method, path, headers, body, status, fragment of the message or None)
CASES = [
    ("malformed JSON", "POST", OA, JSON, b'{"input": ["a", ', 400, "not valid JSON"),
    ("malformed JSON (TEI)", "POST", TEI, JSON, b'{"inputs": }', 400, "not valid JSON"),
    ("trailing garbage", "POST", OA, JSON, b'{"input": "a"} xyz', 400, "after the JSON"),
    ("body is an array", "POST", OA, JSON, b'["a"]', 400, "JSON object"),
    ("body is a string", "POST", TEI, JSON, b'"a"', 400, "JSON object"),
    ("empty body", "POST", OA, JSON, b"", 400, "empty"),
    ("missing input", "POST", OA, JSON, b'{"model": "x"}', 400, "missing field"),
    ("missing inputs (TEI)", "POST", TEI, JSON, b'{"input": "a"}', 400, "missing field"),
    ("input is a number", "POST", OA, JSON, b'{"input": 5}', 400, "must be a string"),
    ("input is an object", "POST", OA, JSON, b'{"input": {"a": 1}}', 400, "must be a string"),
    ("input is null", "POST", OA, JSON, b'{"input": null}', 400, "must be a string"),
    ("input is true", "POST", TEI, JSON, b'{"inputs": true}', 400, "must be a string"),
    ("empty input array", "POST", OA, JSON, b'{"input": []}', 400, "empty array"),
    ("empty string", "POST", OA, JSON, b'{"input": ""}', 400, "empty string"),
    ("empty string in a batch", "POST", TEI, JSON, b'{"inputs": ["a", ""]}', 400,
     "empty string"),
    ("mixed types", "POST", OA, JSON, b'{"input": ["a", 1]}', 400, "mix"),
    ("mixed token lists", "POST", OA, JSON, b'{"input": [[101, 102], "a"]}', 400, "mix"),
    ("array of nulls", "POST", OA, JSON, b'{"input": [null]}', 400, "must be a string"),
    ("token id out of range", "POST", OA, JSON, b'{"input": [101, 99999999, 102]}', 400,
     "vocabulary"),
    ("negative token id", "POST", OA, JSON, b'{"input": [[101, -1, 102]]}', 400, "vocabulary"),
    ("fractional token id", "POST", OA, JSON, b'{"input": [101, 2.5, 102]}', 400, "integer"),
    ("huge token id", "POST", TEI, JSON, b'{"inputs": [1e300]}', 400, "vocabulary"),
    ("empty token list", "POST", OA, JSON, b'{"input": [[101, 102], []]}', 400, "empty"),
    ("token list too long", "POST", OA, JSON,
     json.dumps({"input": [101] + [2000] * 300 + [102]}).encode(), 413, "tokens"),
    ("text too long in tokens", "POST", TEI, JSON,
     json.dumps({"inputs": "word " * 600}).encode(), 413, "tokens"),
    ("too many characters", "POST", OA, JSON,
     json.dumps({"input": "a" * 100001}).encode(), 413, "characters"),
    ("too many inputs", "POST", OA, JSON,
     json.dumps({"input": ["a"] * 2049}).encode(), 413, "inputs"),
    ("body over the limit", "POST", OA, JSON,
     json.dumps({"input": ["a" * 1000] * 2500}).encode(), 413, "larger than"),
    ("invalid UTF-8", "POST", OA, JSON, b'{"input": "caf\xe9 \xff\xfe"}', 400, "UTF-8"),
    ("invalid UTF-8 (TEI)", "POST", TEI, JSON, b'{"inputs": ["ok", "\xc0\xaf"]}', 400, "UTF-8"),
    ("UTF-16 surrogate bytes", "POST", OA, JSON, b'{"input": "\xed\xa0\x80"}', 400, "UTF-8"),
    ("nested too deep", "POST", OA, JSON, ('{"input": ' + deep + "}").encode(), 400,
     "not valid JSON"),
    ("bad encoding_format", "POST", OA, JSON, b'{"input": "a", "encoding_format": "hex"}', 400,
     "encoding_format"),
    ("encoding_format not a string", "POST", OA, JSON,
     b'{"input": "a", "encoding_format": 1}', 400, "encoding_format"),
    ("model not a string", "POST", OA, JSON, b'{"input": "a", "model": 3}', 400, "model"),
    ("dimensions over the model's", "POST", OA, JSON, b'{"input": "a", "dimensions": 385}',
     400, "more than the model's 384"),
    ("dimensions zero (TEI)", "POST", TEI, JSON, b'{"inputs": "a", "dimensions": 0}', 400,
     "dimensions"),
    ("dimensions not an integer", "POST", OA, JSON, b'{"input": "a", "dimensions": "x"}', 400,
     "dimensions"),
    ("normalize not a bool", "POST", TEI, JSON, b'{"inputs": "a", "normalize": "yes"}', 400,
     "normalize"),
    ("truncate not a bool", "POST", TEI, JSON, b'{"inputs": "a", "truncate": 1}', 400,
     "truncate"),
    ("left truncation", "POST", TEI, JSON,
     b'{"inputs": "a", "truncation_direction": "left"}', 400, "left"),
    ("bad truncation direction", "POST", TEI, JSON,
     b'{"inputs": "a", "truncation_direction": "up"}', 400, "truncation_direction"),
    ("prompt_name the model does not declare", "POST", TEI, JSON,
     b'{"inputs": "a", "prompt_name": "query"}', 400, "declares no prompts"),
    ("prompt_name not a string", "POST", OA, JSON, b'{"input": "a", "prompt_name": 1}', 400,
     "prompt_name"),
    ("wrong content type", "POST", OA, {"Content-Type": "text/plain"}, b'{"input": "a"}', 415,
     "Content-Type"),
    ("form content type", "POST", TEI, {"Content-Type": "application/x-www-form-urlencoded"},
     b'{"inputs": "a"}', 415, "Content-Type"),
    ("GET on an embedding endpoint", "GET", OA, {}, None, 405, "POST"),
    ("POST on /health", "POST", "/health", JSON, b"{}", 405, "GET"),
    ("DELETE /info", "DELETE", "/info", {}, None, 405, "GET"),
    ("unknown path", "GET", "/v2/whatever", {}, None, 404, "no such endpoint"),
    ("unknown OpenAI path", "POST", "/v1/completions", JSON, b"{}", 404, "no such endpoint"),
    ("path traversal", "GET", "/../../etc/passwd", {}, None, 404, "no such endpoint"),
    ("search without a store", "POST", "/search", JSON, b'{"query": "a"}', 404, "--store"),
]
AUTH_CASES = [
    ("no key", "POST", OA, JSON, b'{"input": "a"}', 401, "API key"),
    ("wrong key", "POST", OA, {**JSON, "Authorization": "Bearer wrong"}, b'{"input": "a"}',
     401, "API key"),
    ("key of the wrong length", "POST", TEI, {**JSON, "Authorization": "Bearer " + KEY + "x"},
     b'{"inputs": "a"}', 401, "API key"),
    ("not a bearer token", "GET", "/info", {"Authorization": "Basic " + KEY}, None, 401,
     "API key"),
    ("no key on /metrics", "GET", "/metrics", {}, None, 401, "API key"),
]


def send(url, method, path, headers, body):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def check_case(url, case, extra_headers):
    name, method, path, headers, body, want, frag = case
    h = dict(extra_headers)
    h.update(headers)
    try:
        st, hdr, data = send(url, method, path, h, body)
    except (ConnectionError, http.client.HTTPException) as e:
        c.check(False, f"{name}: connection failed: {e!r}")
        return
    c.check(st == want, f"{name}: status {st}, want {want}: {data[:200]!r}")
    c.check(st < 500, f"{name}: a 5xx for bad input")
    try:
        j = json.loads(data)
    except ValueError:
        c.check(False, f"{name}: error body is not JSON: {data[:200]!r}")
        return
    openai_shape = path.startswith("/v1/")
    if openai_shape:
        ok = (isinstance(j.get("error"), dict) and isinstance(j["error"].get("message"), str)
              and {"message", "type", "param", "code"} <= set(j["error"]))
        msg = j["error"]["message"] if ok else ""
    else:
        ok = isinstance(j.get("error"), str) and isinstance(j.get("error_type"), str)
        msg = j.get("error", "")
    c.check(ok, f"{name}: error shape ({'OpenAI' if openai_shape else 'TEI'}): {j}")
    if frag:
        c.check(frag.lower() in msg.lower(), f"{name}: message {msg!r} lacks {frag!r}")
    ctype = {k.lower(): v for k, v in hdr.items()}.get("content-type", "")
    c.check(ctype.startswith("application/json"), f"{name}: content type {ctype}")
    if want == 401:
        c.check("www-authenticate" in {k.lower() for k in hdr}, f"{name}: WWW-Authenticate")
    if want == 405:
        c.check("allow" in {k.lower() for k in hdr}, f"{name}: Allow header")


def good(url, headers):
    st, _, data = send(url, "POST", OA, {**JSON, **headers},
                       json.dumps({"input": ["a good request", "another"],
                                   "encoding_format": "float"}).encode())
    c.check(st == 200, f"good request: {st} {data[:200]!r}")
    return np.array([d["embedding"] for d in json.loads(data)["data"]]) if st == 200 else None


with Server(M) as s:
    before = good(s.url, {})
    for case in CASES:
        check_case(s.url, case, {})
    after = good(s.url, {})
    c.check(before is not None and after is not None and np.array_equal(before, after),
            "the same good request gives the same vectors after the bad ones")
    st, _, _ = send(s.url, "GET", "/health", {}, None)
    c.check(st == 200, f"healthy after the bad requests: {st}")
    # A client that sends half a body and hangs up, then one that disconnects
    # before reading its answer: the server keeps serving.
    import socket
    u = urlparse(s.url)
    for partial in (b'POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json'
                    b'\r\nContent-Length: 1000\r\n\r\n{"input": "a',
                    b'POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json'
                    b'\r\nContent-Length: 16\r\n\r\n{"input": "abc"}'):
        sk = socket.create_connection((u.hostname, u.port))
        sk.sendall(partial)
        sk.close()
    c.check(good(s.url, {}) is not None, "serving after clients hung up mid-request")
    rc = s.stop()
    c.check(rc == 0, f"clean exit: {rc}")
    c.check(not any("AddressSanitizer" in l or "runtime error" in l for l in s.lines),
            "no sanitizer report: " + " | ".join(s.lines[-5:]))

with Server(M, "--api-key", KEY) as s:
    for case in AUTH_CASES:
        check_case(s.url, case, {})
    c.check(good(s.url, AUTH) is not None, "the right key works")
    st, _, _ = send(s.url, "GET", "/health", {}, None)
    c.check(st == 200, "/health needs no key")
    # With the key, the bad requests still get their own statuses.
    for case in CASES[:10]:
        check_case(s.url, case, AUTH)

# A 429: one request at a time, a second one at the same moment is refused.
with Server(M, "--max-concurrent-requests", "1") as s:
    import threading
    big = json.dumps({"input": [f"text number {i}" for i in range(1500)]}).encode()
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("a", send(s.url, "POST", OA, JSON, big)))
    t.start()
    import time
    time.sleep(0.5)
    st, hdr, data = send(s.url, "POST", TEI, JSON, b'{"inputs": "a"}')
    t.join(120)
    c.check(st == 429, f"second concurrent request: {st}")
    c.check(hdr.get("Retry-After") == "1", f"Retry-After: {hdr}")
    c.check(json.loads(data).get("error_type") == "Overloaded", f"429 shape: {data[:200]!r}")
    c.check(res.get("a", (0,))[0] == 200, "the first request completed")

print(f"{len(CASES) + len(AUTH_CASES)} bad-request cases")
c.done()
