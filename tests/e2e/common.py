"""Shared helpers for the Python end-to-end tests (run by CTest).

Environment: EMBD_BIN (the embd binary), EMBD_SRC (the source tree),
EMBD_TEST_MODELS (folder of fetched models). Exit 77 means skipped.
"""
import json
import os
import subprocess
import sys

SKIP = 77
SRC = os.environ.get("EMBD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("EMBD_BIN", "embd")
FIXTURES = os.path.join(SRC, "tests", "fixtures", "golden")


def model_dir(name):
    """The model folder under EMBD_TEST_MODELS, or None."""
    root = os.environ.get("EMBD_TEST_MODELS")
    if not root:
        return None
    d = os.path.join(root, name)
    return d if os.path.isfile(os.path.join(d, "config.json")) else None


def skip(why):
    print(f"SKIPPED: {why}")
    sys.exit(SKIP)


def run(args, stdin=None, env=None, check=False):
    """Runs embd with args; returns CompletedProcess (bytes)."""
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("EMBD_") and k not in ("EMBD_BIN", "EMBD_SRC", "EMBD_TEST_MODELS",
                                               "EMBD_TEST_CORPUS", "EMBD_HOME"):
            del e[k]
    if env:
        e.update(env)
    if isinstance(stdin, str):
        stdin = stdin.encode()
    p = subprocess.run([BIN] + args, input=stdin, capture_output=True, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"embd {' '.join(args)} exited {p.returncode}: {p.stderr.decode()}")
    return p


def read_jsonl(data):
    return [json.loads(l) for l in data.decode().splitlines() if l.strip()]


class Checker:
    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {what}", flush=True)

    def done(self):
        print(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)
