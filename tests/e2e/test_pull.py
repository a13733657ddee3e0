"""`embd pull` and --pull against a stand-in for the Hugging Face hub on
127.0.0.1 (hub_server.py) serving the real all-MiniLM-L6-v2 in the hub's URL
layout, with HF_ENDPOINT pointing at it:

  (a) embd pull fills a Hugging Face cache that `embd embed -m ORG/NAME`
      reads, giving the vectors the model's folder gives;
  (b) huggingface_hub's snapshot_download from the same endpoint makes a
      cache embd reads, and huggingface_hub reads what embd pull wrote;
  (c) a download cut off midway is resumed (Range) in the same run and on
      the next pull, also after the pull is killed; a corrupted or oversized
      body is caught and nothing is linked;
  (d) 404, 401, 403, no network, a repository without safetensors: one-line
      errors, exit 1; usage errors exit 2;
  (e) without --pull nothing is downloaded, and the error names embd pull;
      embed --pull and serve --pull pull first.
"""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from common import BIN, Checker, model_dir, run, skip  # noqa: E402

MODEL = model_dir("all-MiniLM-L6-v2")
REPO = "test-org/MiniLM"
SHA = hashlib.sha1(b"test-org/MiniLM@main").hexdigest()
FOLDER = "models--test-org--MiniLM"
TEXTS = "the cat sat on the mat\nDebian is a free operating system\n\nÜnïcödé ✓ 日本語\n"
WANTED = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "vocab.txt", "modules.json", "sentence_bert_config.json",
          "config_sentence_transformers.json", "1_Pooling/config.json", "model.safetensors"}


def one_line_err(p, code):
    lines = p.stderr.decode(errors="replace").strip().splitlines()
    errs = [l for l in lines if l.startswith("embd: ")]
    return p.returncode == code and len(errs) == 1 and lines[-1] == errs[0], (errs or [""])[-1]


def main():
    if MODEL is None:
        skip("all-MiniLM-L6-v2 not under EMBD_TEST_MODELS")
    tmp = tempfile.TemporaryDirectory(prefix="embd-pull-")
    root = tmp.name
    # No token, proxy or offline setting of the machine's may reach the runs.
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE",
              "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "http_proxy", "https_proxy",
              "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        os.environ.pop(k, None)
    os.environ["HF_HOME"] = os.path.join(root, "hf-home")
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,127.0.0.2,localhost"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

    from hub_server import Hub, Repo  # noqa: E402
    hub = Hub()
    fake = {"pytorch_model.bin": b"\0" * 3000, "onnx/model.onnx": b"\1" * 2000,
            "openvino/openvino_model.xml": b"<xml/>"}
    main_repo = hub.add(Repo.from_folder(REPO, MODEL, SHA, extra=fake))
    hub.add(Repo.from_folder("test-org/private", MODEL, SHA, token="hf_right_token"))
    hub.add(Repo.from_folder("test-org/gated", MODEL, SHA, gated=True))
    small = {n: e for n, e in main_repo.files.items() if not e.lfs}
    from hub_server import Entry  # noqa: E402
    hub.add(Repo("test-org/bin-only", SHA, [e for n, e in small.items()] +
                 [Entry("pytorch_model.bin", data=b"\0" * 100)]))
    hub.add(Repo("test-org/sharded", SHA, [e for n, e in small.items()] + [
        Entry("model.safetensors.index.json",
              data=b'{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",'
                   b' "b": "model-00002-of-00002.safetensors"}}'),
        Entry("model-00001-of-00002.safetensors", data=b"shard one" * 1000),
        Entry("model-00002-of-00002.safetensors", data=b"shard two" * 1000)]))
    hub.start()
    endpoint = hub.url
    c = Checker("e2e_pull")
    lfs_sha = main_repo.files["model.safetensors"].sha256
    size = main_repo.files["model.safetensors"].size

    def env(cache, **kw):
        e = {"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": cache}
        e.update(kw)
        return e

    def cache(name):
        return os.path.join(root, name)

    def pull(cache_dir, *args, **kw):
        return run(["pull", REPO, *args], env=env(cache_dir, **kw))

    def embed(cache_dir, *args):
        return run(["embed", "-q", "-m", REPO, *args], stdin=TEXTS, env=env(cache_dir))

    def snapshot(cache_dir):
        return os.path.join(cache_dir, FOLDER, "snapshots", SHA)

    def blob(cache_dir, etag):
        return os.path.join(cache_dir, FOLDER, "blobs", etag)

    ref = run(["embed", "-q", "-m", MODEL], stdin=TEXTS, check=True).stdout
    c.check(len(ref.splitlines()) == 4, "reference vectors from the model's folder")

    # --- help and usage -----------------------------------------------------------------
    p = run(["--help"])
    c.check(b"pull" in p.stdout, "embd --help lists pull")
    p = run(["pull", "--help"])
    c.check(p.returncode == 0 and all(w in p.stdout for w in (b"--revision", b"--cache-dir",
                                                                  b"HF_TOKEN", b"HF_ENDPOINT")),
            "pull --help")
    for sub in ("embed", "serve"):
        p = run([sub, "--help"])
        c.check(p.returncode == 0 and b"--pull" in p.stdout, f"{sub} --help shows --pull")
    for args, what in ((["pull"], "no name"), (["pull", "../etc"], "a path"),
                       (["pull", "a/b/c"], "three parts"), (["pull", "a/b", "c/d"], "two names"),
                       (["pull", REPO, "--revision", "../x"], "a bad revision"),
                       (["pull", REPO, "--bogus"], "an unknown option")):
        ok, line = one_line_err(run(args, env=env(cache("usage"))), 2)
        c.check(ok, f"pull with {what} exits 2 with one line: {line}")
    c.check(not os.path.exists(cache("usage")), "usage errors create no cache")

    # --- (e) no pull without --pull -----------------------------------------------------
    c0 = cache("c0")
    n = len(hub.log)
    p = embed(c0)
    ok, line = one_line_err(p, 1)
    c.check(ok and f"embd pull {REPO}" in line and "--pull" in line,
            f"embed -m ORG/NAME on an empty cache fails naming embd pull: {line}")
    p = run(["tokenize", "-m", REPO], stdin="x\n", env=env(c0))
    ok, line = one_line_err(p, 1)
    c.check(ok and f"embd pull {REPO}" in line and "--pull" not in line,
            f"tokenize names embd pull (it has no --pull): {line}")
    p = run(["serve", "-m", REPO, "--port", "0"], env=env(c0))
    ok, line = one_line_err(p, 1)
    c.check(ok and "embd pull" in line, f"serve -m ORG/NAME without --pull fails: {line}")
    c.check(len(hub.log) == n and not os.path.exists(c0), "nothing asked of the hub, no cache")

    # --- (a) embd pull, then embed from the cache ---------------------------------------
    c1 = cache("c1")
    p = pull(c1)
    c.check(p.returncode == 0, f"pull exits 0: {p.stderr.decode(errors='replace')}")
    c.check(p.stdout.decode().strip() == snapshot(c1), f"pull prints the snapshot: {p.stdout!r}")
    c.check(b"model.safetensors" in p.stderr and b"MB/s" in p.stderr,
            "progress line for the large file")
    snap = snapshot(c1)
    have = set()
    for d, _, names in os.walk(snap):
        for f in names:
            have.add(os.path.relpath(os.path.join(d, f), snap))
    c.check(have == WANTED, f"the snapshot holds exactly the wanted files: {sorted(have)}")
    c.check(os.readlink(os.path.join(snap, "model.safetensors")) == "../../blobs/" + lfs_sha,
            "model.safetensors -> ../../blobs/<sha256>")
    c.check(os.readlink(os.path.join(snap, "1_Pooling/config.json")) ==
            "../../../blobs/" + main_repo.files["1_Pooling/config.json"].oid,
            "1_Pooling/config.json -> ../../../blobs/<git blob id>")
    for f in WANTED:
        with open(os.path.join(snap, f), "rb") as a, open(os.path.join(MODEL, f), "rb") as b:
            if a.read() != b.read():
                c.check(False, f"{f} pulled byte for byte")
    with open(os.path.join(c1, FOLDER, "refs", "main")) as f:
        c.check(f.read().strip() == SHA, "refs/main holds the commit")
    blobs = os.listdir(os.path.join(c1, FOLDER, "blobs"))
    c.check(not [b for b in blobs if b.endswith(".incomplete")], "no .incomplete left")
    cdn = hub.requests("GET", "/cdn/")
    c.check(cdn and all(r[3] is None for r in cdn), "the CDN got no Authorization header")
    p = embed(c1)
    c.check(p.returncode == 0 and p.stdout == ref, "embed -m ORG/NAME == embed -m DIR")
    n = len(hub.log)
    p = pull(c1)
    c.check(p.returncode == 0 and p.stdout.decode().strip() == snap, "a second pull exits 0")
    later = hub.log[n:]
    c.check(len(later) == 1 and later[0][1].startswith("/api/models/"),
            f"a second pull asks the API only: {later}")
    p = run(["pull", REPO, "-q", "--revision", SHA], env=env(c1))
    c.check(p.returncode == 0 and p.stderr == b"", "pull --revision COMMIT -q: silent, exit 0")
    c.check(sorted(os.listdir(os.path.join(c1, FOLDER, "refs"))) == ["main"],
            "a commit revision writes no ref")
    # --cache-dir instead of HF_HUB_CACHE; -m ORG/NAME as the name
    cd = cache("c1-dir")
    p = run(["pull", "-q", "-m", REPO, "--cache-dir", cd], env={"HF_ENDPOINT": endpoint})
    c.check(p.returncode == 0 and p.stdout.decode().strip() == snapshot(cd),
            f"pull -m ORG/NAME --cache-dir DIR: {p.stderr!r}")

    # --- (b) huggingface_hub both ways --------------------------------------------------
    try:
        import huggingface_hub as hf
    except ImportError:
        hf = None
        c.check(False, "huggingface_hub (scripts/requirements-test.txt) is importable")
    if hf:
        c2 = cache("c2")
        path = hf.snapshot_download(REPO, cache_dir=c2, endpoint=endpoint)
        c.check(path == snapshot(c2), f"snapshot_download: {path}")
        p = embed(c2)
        c.check(p.returncode == 0 and p.stdout == ref, "embd reads huggingface_hub's cache")
        n = len(hub.log)
        p = pull(c2)
        c.check(p.returncode == 0 and not [r for r in hub.log[n:] if "/resolve/" in r[1] or
                                           r[1].startswith("/cdn/")],
                "embd pull over huggingface_hub's cache downloads nothing")
        got = hf.snapshot_download(REPO, cache_dir=c1, local_files_only=True)
        c.check(got == snap, f"huggingface_hub reads embd's cache offline: {got}")
        f = hf.try_to_load_from_cache(REPO, "model.safetensors", cache_dir=c1)
        c.check(isinstance(f, str) and f == os.path.join(snap, "model.safetensors"),
                f"try_to_load_from_cache: {f}")
        n_cdn = len(hub.requests("GET", "/cdn/"))
        f = hf.hf_hub_download(REPO, "model.safetensors", cache_dir=c1, endpoint=endpoint)
        c.check(f == os.path.join(snap, "model.safetensors") and
                len(hub.requests("GET", "/cdn/")) == n_cdn,
                "hf_hub_download online takes embd's blob without downloading it")
        # a failed embd pull's leftovers do not stop huggingface_hub (2.x downloads to a
        # file of its own rather than resuming), and embd takes the blob it made
        c2b = cache("c2b")
        hub.cut_every = 8 << 20
        p = pull(c2b)
        hub.clear_faults()
        c.check(p.returncode == 1, "cut every 8 MB: pull fails")
        f = hf.hf_hub_download(REPO, "model.safetensors", cache_dir=c2b, endpoint=endpoint)
        with open(f, "rb") as fp:
            c.check(hashlib.sha256(fp.read()).hexdigest() == lfs_sha,
                    "huggingface_hub completes the file beside embd's .incomplete")
        p = embed(c2b)
        ok, line = one_line_err(p, 1)
        c.check(ok, f"a snapshot of one file does not load: {line}")
        n = len(hub.log)
        p = pull(c2b)
        c.check(p.returncode == 0 and embed(c2b).stdout == ref and
                not [r for r in hub.log[n:] if r[1].startswith("/cdn/")],
                "embd pull completes the snapshot with huggingface_hub's blob")

    # --- (c) interrupted, killed, corrupted -----------------------------------------------
    c3 = cache("c3")
    hub.cut_once = 30 << 20
    n = len(hub.log)
    p = pull(c3)
    ranges = [r[2] for r in hub.log[n:] if r[0] == "GET" and r[1].startswith("/cdn/")]
    c.check(p.returncode == 0 and ranges == [None, f"bytes={30 << 20}-"],
            f"a connection cut at 30 MB is resumed in the same run: {ranges} "
            f"{p.stderr.decode(errors='replace')[-300:]}")
    c.check(embed(c3).stdout == ref, "resumed download embeds the same")

    c4 = cache("c4")
    hub.cut_every = 8 << 20
    p = pull(c4)
    hub.clear_faults()
    ok, line = one_line_err(p, 1)
    c.check(ok and "model.safetensors" in line and "again" in line,
            f"cut every 8 MB: the pull gives up naming the file: {line}")
    part = blob(c4, lfs_sha) + ".incomplete"
    c.check(os.path.exists(part) and os.path.getsize(part) == 5 * (8 << 20),
            "the partial download is kept as .incomplete")
    c.check(not os.path.exists(blob(c4, lfs_sha)) and not os.path.exists(snapshot(c4)),
            "no blob, no snapshot")
    c.check(one_line_err(embed(c4), 1)[0], "embed does not use a failed pull")
    n = len(hub.log)
    p = pull(c4)
    ranges = [r[2] for r in hub.log[n:] if r[0] == "GET" and r[1].startswith("/cdn/")]
    c.check(p.returncode == 0 and ranges == [f"bytes={5 * (8 << 20)}-"],
            f"the next pull resumes with Range: {ranges}")
    c.check(b"resuming" in p.stderr, "and says so")
    c.check(embed(c4).stdout == ref, "the resumed model embeds the same")

    c5 = cache("c5")
    hub.pause_at = 20 << 20
    e = dict(os.environ, **env(c5))
    proc = subprocess.Popen([BIN, "pull", REPO], env=e, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    paused = hub.paused.wait(120)
    part = blob(c5, lfs_sha) + ".incomplete"
    # the bytes the server sent reach the file
    deadline = time.time() + 30
    while paused and time.time() < deadline and (
            not os.path.exists(part) or os.path.getsize(part) < (20 << 20)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    hub.clear_faults()
    c.check(paused and os.path.exists(part) and os.path.getsize(part) == 20 << 20,
            "a pull killed at 20 MB leaves a 20 MB .incomplete")
    c.check(not os.path.exists(blob(c5, lfs_sha)) and not os.path.exists(snapshot(c5)),
            "and no blob, no snapshot")
    c.check(one_line_err(embed(c5), 1)[0], "embed refuses the killed pull's cache")
    n = len(hub.log)
    p = pull(c5)
    ranges = [r[2] for r in hub.log[n:] if r[0] == "GET" and r[1].startswith("/cdn/")]
    c.check(p.returncode == 0 and ranges == [f"bytes={20 << 20}-"],
            f"the pull after the kill resumes: {ranges}")
    c.check(embed(c5).stdout == ref, "and embeds the same")

    c6 = cache("c6")
    hub.corrupt = True
    p = pull(c6)
    hub.clear_faults()
    ok, line = one_line_err(p, 1)
    c.check(ok and "model.safetensors" in line and "sha256" in line and lfs_sha in line,
            f"a corrupted body is caught: {line}")
    c.check(not os.path.exists(blob(c6, lfs_sha)) and
            not os.path.exists(blob(c6, lfs_sha) + ".incomplete") and
            not os.path.exists(snapshot(c6)), "nothing kept, nothing linked")
    n = len(hub.log)
    p = pull(c6)
    ranges = [r[2] for r in hub.log[n:] if r[0] == "GET" and r[1].startswith("/cdn/")]
    c.check(p.returncode == 0 and ranges == [None] and embed(c6).stdout == ref,
            "the next pull starts over and succeeds")

    c7 = cache("c7")
    hub.extra = 100
    p = pull(c7)
    hub.clear_faults()
    ok, line = one_line_err(p, 1)
    c.check(ok and "model.safetensors" in line and str(size) in line,
            f"more bytes than announced are refused: {line}")
    c.check(not os.path.exists(blob(c7, lfs_sha)) and not os.path.exists(snapshot(c7)),
            "nothing linked")

    # --- (d) errors ---------------------------------------------------------------------
    ce = cache("ce")
    ok, line = one_line_err(run(["pull", "test-org/missing"], env=env(ce)), 1)
    c.check(ok and "test-org/missing" in line and "404" in line and "not found" in line,
            f"404 repository: {line}")
    ok, line = one_line_err(pull(ce, "--revision", "nope"), 1)
    c.check(ok and "revision nope" in line and "404" in line, f"404 revision: {line}")
    ok, line = one_line_err(run(["pull", "test-org/private"], env=env(ce)), 1)
    c.check(ok and "401" in line and "HF_TOKEN" in line and "test-org/private" in line,
            f"401 without a token names HF_TOKEN: {line}")
    ok, line = one_line_err(run(["pull", "test-org/private"],
                                env=env(ce, HF_TOKEN="hf_wrong")), 1)
    c.check(ok and "401" in line and "refused" in line, f"401 with a wrong token: {line}")
    tok = os.path.join(root, "token")
    with open(tok, "w") as f:
        f.write("hf_right_token\n")
    n = len(hub.log)
    p = run(["pull", "-q", "test-org/private"], env=env(cache("cp"), HF_TOKEN_PATH=tok))
    c.check(p.returncode == 0, f"the saved token (HF_TOKEN_PATH) opens the private repository: "
            f"{p.stderr!r}")
    hub_reqs = [r for r in hub.log[n:] if not r[1].startswith("/cdn/")]
    c.check(hub_reqs and all(r[3] == "Bearer hf_right_token" for r in hub_reqs),
            "every hub request carried the bearer token")
    c.check(all(r[3] is None for r in hub.log[n:] if r[1].startswith("/cdn/")),
            "the CDN request did not")
    ok, line = one_line_err(run(["pull", "test-org/gated"], env=env(ce, HF_TOKEN="x")), 1)
    c.check(ok and "403" in line and "gated" in line, f"403 gated: {line}")
    n = len(hub.log)
    ok, line = one_line_err(run(["pull", "test-org/bin-only"], env=env(ce)), 1)
    c.check(ok and "model.safetensors" in line and "pytorch_model.bin" in line,
            f"no safetensors: {line}")
    c.check([r[1].rsplit("/", 1)[-1] for r in hub.log[n:] if "/resolve/" in r[1]] ==
            ["modules.json"] * 2, "refused before any download but modules.json")
    p = run(["pull", "-q", "test-org/sharded"], env=env(cache("cs")))
    ssnap = p.stdout.decode().strip()
    c.check(p.returncode == 0 and sorted(f for f in os.listdir(ssnap) if "safetensors" in f) ==
            ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "model.safetensors.index.json"], f"sharded weights: the index and its shards {p!r}")
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    ok, line = one_line_err(run(["pull", REPO], env=env(ce, HF_ENDPOINT=closed)), 1)
    c.check(ok and "cannot reach" in line and "HF_ENDPOINT" in line, f"no network: {line}")
    ok, line = one_line_err(pull(ce, HF_HUB_OFFLINE="1"), 1)
    c.check(ok and "HF_HUB_OFFLINE" in line, f"HF_HUB_OFFLINE: {line}")
    ok, line = one_line_err(pull(ce, HF_ENDPOINT="ftp://x"), 2)
    c.check(ok and "HF_ENDPOINT" in line, f"bad HF_ENDPOINT: {line}")
    c.check(not os.path.exists(os.path.join(ce, FOLDER, "snapshots")), "errors link nothing")

    # --- (e) --pull -----------------------------------------------------------------------
    c8 = cache("c8")
    p = run(["embed", "-m", REPO, "--pull"], stdin=TEXTS, env=env(c8))
    c.check(p.returncode == 0 and p.stdout == ref and os.path.isdir(snapshot(c8)),
            f"embed --pull pulls, then embeds the same: {p.stderr[-300:]!r}")
    p = run(["embed", "-q", "-m", REPO], stdin=TEXTS, env=env(c8, EMBD_PULL="1"))
    c.check(p.returncode == 0 and p.stdout == ref, "EMBD_PULL=1 with the model there")
    # offline, the model whole in the cache: pull answers its snapshot (as
    # huggingface_hub's snapshot_download does offline)
    p = pull(c8, HF_HUB_OFFLINE="1")
    c.check(p.returncode == 0 and p.stdout.decode().strip() == snapshot(c8),
            f"HF_HUB_OFFLINE with the model cached: {p.returncode} {p.stderr!r}")
    # a snapshot another tool left half-filled (config.json alone): --pull
    # fetches the rest instead of failing to load it
    c10 = cache("c10")
    os.makedirs(os.path.join(c10, FOLDER, "snapshots", SHA))
    os.makedirs(os.path.join(c10, FOLDER, "refs"))
    with open(os.path.join(c10, FOLDER, "refs", "main"), "w") as f:
        f.write(SHA)
    shutil.copy(os.path.join(MODEL, "config.json"), os.path.join(snapshot(c10), "config.json"))
    p = run(["embed", "-m", REPO, "--pull"], stdin=TEXTS, env=env(c10))
    c.check(p.returncode == 0 and p.stdout == ref and b"incomplete" in p.stderr,
            f"--pull completes a half-filled snapshot: {p.stderr[-300:]!r}")
    c9 = cache("c9")
    e = dict(os.environ, **env(c9))
    proc = subprocess.Popen([BIN, "serve", "--pull", "-m", REPO, "--port", "0"], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines, url = [], []

    def reader():
        for raw in proc.stderr:
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            m = re.search(r" on (http://\S+)$", lines[-1])
            if m:
                url.append(m.group(1))
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(180)
    body = b""
    if url:
        req = urllib.request.Request(url[0] + "/embed", data=b'{"inputs": "the cat"}',
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    c.check(url and body.startswith(b"[[") and os.path.isdir(snapshot(c9)),
            f"serve --pull pulls and serves: {lines[-3:]}")

    hub.stop()
    c.done()


if __name__ == "__main__":
    main()
