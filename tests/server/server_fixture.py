"""Starts and stops a real `embd serve` on loopback for the server tests.

The server is started with --port 0 and the URL is read from its startup
line ("embd: serving ... on http://127.0.0.1:PORT"); its stderr is kept for
the failure messages.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from common import BIN, Checker, model_dir, skip  # noqa: E402


def minilm(test_name):
    """The real all-MiniLM-L6-v2 folder and a Checker named test_name; exits
    77 (skipped) when EMBD_TEST_MODELS has no such model."""
    m = model_dir("all-MiniLM-L6-v2")
    if not m:
        skip("EMBD_TEST_MODELS has no all-MiniLM-L6-v2")
    return m, Checker(test_name)


def reranker_dir():
    """A cross-encoder folder: $EMBD_TEST_MODELS/ce-minilm-l6-random, else one
    made now by scripts/make-random-model (seed 0) in a temporary folder
    removed at exit; exits 77 (skipped) when neither works."""
    m = model_dir("ce-minilm-l6-random")
    if m:
        return m
    import atexit
    import shutil
    import tempfile
    tmp = tempfile.mkdtemp(prefix="embd-ce-")
    atexit.register(shutil.rmtree, tmp, True)
    out = os.path.join(tmp, "ce-minilm-l6-random")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                          "make-random-model")
    p = subprocess.run([script, "ce-minilm-l6", out, "--seed", "0"], capture_output=True)
    if p.returncode != 0 or not os.path.isfile(os.path.join(out, "config.json")):
        skip("no ce-minilm-l6-random in EMBD_TEST_MODELS and scripts/make-random-model could "
             "not make one: " + p.stderr.decode(errors="replace").strip()[-200:])
    return out


class Server:
    def __init__(self, model, *args, env=None, timeout=60):
        e = {k: v for k, v in os.environ.items() if not k.startswith("EMBD_") or
             k in ("EMBD_BIN", "EMBD_SRC", "EMBD_TEST_MODELS", "EMBD_HOME")}
        # no drain window on SIGTERM unless a test asks (tests/deploy checks it):
        # each stop would otherwise wait it out once /health was asked
        e["EMBD_DRAIN_SECONDS"] = "0"
        if env:
            e.update(env)
        self.proc = subprocess.Popen([BIN, "serve", "-m", model, "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
        self.lines = []
        self.url = None
        ready = threading.Event()

        def reader():
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                m = re.search(r" on (http://\S+)$", line)
                if m and not self.url:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        self.thread = threading.Thread(target=reader, daemon=True)
        self.thread.start()
        ready.wait(timeout)
        if not self.url:
            self.stop()
            raise RuntimeError("embd serve did not start: " + " | ".join(self.lines))

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def request(self, method, path, body=None, headers=None, timeout=120):
        """Returns (status, headers, body bytes); never raises on HTTP errors."""
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signals the server and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.thread.join(5)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wait_until(cond, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()
