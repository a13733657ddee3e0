"""`embd serve` authentication at start-up (issue 26, must-have 6).

- An empty key is refused (exit 2, one line on stderr), whether it comes
  from --api-key "", EMBD_API_KEY="", a --config file or an --api-key-file
  that holds nothing; --api-key with --api-key-file is a usage error too
  (given the same way: a flag beats EMBD_API_KEY, which beats --config).
- --api-key-file FILE works: 401 without the key, 200 with it.
- A key given with --api-key no longer shows in /proc/PID/cmdline (ps).

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402  (puts tests/e2e on the path)
from common import run  # noqa: E402

M, c = minilm("server_auth")
tmp = tempfile.mkdtemp(prefix="embd-auth-")
try:
    empty = os.path.join(tmp, "empty")
    open(empty, "w").close()
    newline = os.path.join(tmp, "newline")
    with open(newline, "w") as f:
        f.write("\n")
    two = os.path.join(tmp, "two-lines")
    with open(two, "w") as f:
        f.write("key-one\nkey-two\n")
    conf = os.path.join(tmp, "conf.json")
    with open(conf, "w") as f:
        json.dump({"api-key": ""}, f)
    refused = [
        ("--api-key ''", ["--api-key", ""], None),
        ("--api-key=", ["--api-key="], None),
        ("EMBD_API_KEY=''", [], {"EMBD_API_KEY": ""}),
        ("--config with an empty key", ["--config", conf], None),
        ("an empty key file", ["--api-key-file", empty], None),
        ("a key file of one line end", ["--api-key-file", newline], None),
        ("a key file of two lines", ["--api-key-file", two], None),
        ("a missing key file", ["--api-key-file", os.path.join(tmp, "none")], None),
        ("EMBD_API_KEY_FILE=''", [], {"EMBD_API_KEY_FILE": ""}),
        ("both options", ["--api-key", "k", "--api-key-file", two], None),
        ("a key with a space", ["--api-key", "two words"], None),
    ]
    for name, args, env in refused:
        p = run(["serve", "-m", M, "--port", "0", *args], env=env)
        err = p.stderr.decode()
        c.check(p.returncode == 2, f"{name}: exit {p.returncode} (want 2): {err}")
        c.check(err.startswith("embd: serve: ") and err.count("\n") == 1 and "serving" not in err,
                f"{name}: one line on stderr: {err!r}")

    good = os.path.join(tmp, "key")
    with open(good, "w") as f:
        f.write("file-key-123\r\n")
    with Server(M, "--api-key-file", good) as s:
        st, _, _ = s.request("POST", "/v1/embeddings", '{"input":"a"}')
        c.check(st == 401, f"--api-key-file, no key: {st}")
        st, _, _ = s.request("POST", "/v1/embeddings", '{"input":"a"}',
                             {"Authorization": "Bearer file-key-123"})
        c.check(st == 200, f"--api-key-file, the key: {st}")
        st, _, body = s.request("GET", "/info", None, {"Authorization": "Bearer file-key-123"})
        c.check(st == 200 and json.loads(body)["auth"] is True, f"/info auth: {st} {body[:80]}")
        st, _, _ = s.request("GET", "/health")
        c.check(st == 200, f"/health needs no key: {st}")

    with Server(M, "--api-key", "argv-secret-456") as s:
        with open(f"/proc/{s.proc.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        c.check(b"argv-secret-456" not in cmdline, f"the key is still in ps: {cmdline!r}")
        st, _, _ = s.request("POST", "/embed", '{"inputs":"a"}',
                             {"Authorization": "Bearer argv-secret-456"})
        c.check(st == 200, f"--api-key still works after hiding it: {st}")
    with Server(M, env={"EMBD_API_KEY": "env-key-789"}) as s:
        st, _, _ = s.request("POST", "/embed", '{"inputs":"a"}')
        c.check(st == 401, f"EMBD_API_KEY, no key: {st}")
        st, _, _ = s.request("POST", "/embed", '{"inputs":"a"}',
                             {"Authorization": "Bearer env-key-789"})
        c.check(st == 200, f"EMBD_API_KEY, the key: {st}")
    # a flag beats the environment (an operator adds --api-key-file to a pod
    # that also gets EMBD_API_KEY from a Secret): the file's key, not a clash
    with Server(M, "--api-key-file", good, env={"EMBD_API_KEY": "env-key-789"}) as s:
        st, _, _ = s.request("POST", "/embed", '{"inputs":"a"}',
                             {"Authorization": "Bearer file-key-123"})
        c.check(st == 200, f"--api-key-file over EMBD_API_KEY: the file's key: {st}")
        st, _, _ = s.request("POST", "/embed", '{"inputs":"a"}',
                             {"Authorization": "Bearer env-key-789"})
        c.check(st == 401, f"--api-key-file over EMBD_API_KEY: not the variable's: {st}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
c.done()
