"""The `embd` command's contract: exit codes (0 ok, 1 runtime, 2 usage),
one-line "embd: " errors, --help, input formats, output formats and order,
options from flags, EMBD_* variables and --config, and tokenize against
Hugging Face tokenizers. Runs on the real all-MiniLM-L6-v2."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import BIN, Checker, model_dir, read_jsonl, run, skip  # noqa: E402

MODEL = model_dir("all-MiniLM-L6-v2")


def err_ok(p, code):
    """Exit code as expected and exactly one stderr line starting 'embd: '."""
    lines = p.stderr.decode(errors="replace").strip().splitlines()
    return p.returncode == code and len(lines) == 1 and lines[0].startswith("embd: ")


def cgroup_with_quota(quota_us):
    """A new cgroup holding a CPU quota of quota_us per 100,000 us, as its
    folder: cgroup v1's cpu hierarchy, or v2 under its root with the cpu
    controller; None where this process may not make one (not root, a
    container's namespace)."""
    name = "embd-test-%d" % os.getpid()
    made = None
    try:
        if os.path.isfile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
            made = os.path.join("/sys/fs/cgroup/cpu", name)
            os.mkdir(made)
            with open(os.path.join(made, "cpu.cfs_period_us"), "w") as f:
                f.write("100000")
            with open(os.path.join(made, "cpu.cfs_quota_us"), "w") as f:
                f.write(str(quota_us))
            return made
        if os.path.isfile("/sys/fs/cgroup/cgroup.subtree_control"):
            with open("/sys/fs/cgroup/cgroup.subtree_control") as f:
                if "cpu" not in f.read().split():
                    with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as g:
                        g.write("+cpu")
            made = os.path.join("/sys/fs/cgroup", name)
            os.mkdir(made)
            with open(os.path.join(made, "cpu.max"), "w") as f:
                f.write("%d 100000" % quota_us)
            return made
    except OSError:
        if made and os.path.isdir(made):
            os.rmdir(made)
    return None


def check_cgroup_quota(c):
    """In a cgroup with a CPU quota of half a CPU (as `docker run --cpus
    0.5` or a Kubernetes limit makes one), the default thread count is 1,
    whatever the affinity mask allows: a thread per core there would be
    throttled."""
    d = cgroup_with_quota(50000)
    if not d:
        print("note: cannot make a cgroup here (not root, or a namespace): the quota was "
              "checked on written trees only (engine_pool)")
        return
    try:
        p = subprocess.run(["sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec "$2" doctor', "sh",
                            d, BIN], capture_output=True)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith(b"cpu: ")]
        c.check(p.returncode == 0 and bool(line) and b", 1 usable by this process" in line[0]
                and b"cgroup CPU quota 1)" in line[0],
                "doctor in a cgroup of 0.5 CPU: %s %s" % (line, p.stderr[-300:]))
        line = [ln for ln in p.stdout.splitlines() if ln.startswith(b"cpu threads: ")]
        c.check(bool(line) and line[0].startswith(b"cpu threads: 1 by default"),
                "threads by default in a cgroup of 0.5 CPU: %s" % line)
    finally:
        os.rmdir(d)


def check_threads(c):
    """The CPU work runs on embd's own thread pool (src/util/pool.c), not
    OpenMP: neither the binary nor libembd loads libgomp; doctor says how
    many threads run by default and how long idle ones spin
    (EMBD_CPU_SPIN_US, a bad value refused with a warning)."""
    p = subprocess.run(["ldd", BIN], capture_output=True)
    c.check(p.returncode == 0 and b"libembd" in p.stdout and b"libgomp" not in p.stdout,
            "embd and libembd do not load libgomp: %s" % p.stdout.decode(errors="replace"))
    base = {k: v for k, v in os.environ.items() if k != "EMBD_CPU_SPIN_US"}
    cpus = len(os.sched_getaffinity(0))
    for val, spin, warned in ((None, 25, False), ("0", 0, False), ("400", 400, False),
                              ("fast", 25, True), ("-3", 25, True)):
        env = dict(base) if val is None else dict(base, EMBD_CPU_SPIN_US=val)
        p = subprocess.run([BIN, "doctor"], capture_output=True, env=env)
        line = b"cpu threads: %d by default (--threads); idle ones spin %d us" % (cpus, spin)
        c.check(p.returncode == 0 and line in p.stdout,
                "doctor with EMBD_CPU_SPIN_US=%s says %s: %s"
                % (val, line.decode(), [ln for ln in p.stdout.splitlines()
                                        if ln.startswith(b"cpu threads")]))
        c.check((b"EMBD_CPU_SPIN_US" in p.stderr) == warned,
                "EMBD_CPU_SPIN_US=%s %s: %s" % (val, "warned" if warned else "no warning",
                                                p.stderr.decode(errors="replace")[-300:]))


def check_input_edges(c, m):
    """What editors and pipelines write: a UTF-8 BOM, blank JSONL lines, the
    input named as the output, a run that fails half way (.npy), bad option
    values (2), a cross-encoder given to embed (refused before any input)."""
    want = read_jsonl(run(["embed", *m], stdin='{"text": "hello"}\n{"text": "b"}\n').stdout)
    for what, data in (("a BOM", '\ufeff{"text": "hello"}\n{"text": "b"}\n'),
                       ("blank lines", '{"text": "hello"}\n\n{"text": "b"}\n\n  \r\n'),
                       ("a BOM and CRLF", '\ufeff{"text": "hello"}\r\n{"text": "b"}\r\n')):
        p = run(["embed", *m], stdin=data)
        c.check(p.returncode == 0 and read_jsonl(p.stdout) == want, f"JSONL with {what}: "
                f"{p.stderr!r}")
    p = run(["tokenize", *m], stdin="\ufeffhello\n")
    c.check(p.returncode == 0 and read_jsonl(p.stdout)[0]["ids"] == [101, 7592, 102],
            f"plain text with a BOM: {p.stdout!r}")
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "in.jsonl")
        with open(f, "w") as fh:
            fh.write('{"text": "a"}\n' * 5)
        for cmd in ("embed", "tokenize"):
            p = run([cmd, *m, "-i", f, "-o", os.path.join(d, ".", "in.jsonl")])
            with open(f) as fh:
                kept = fh.read().count("\n")
            c.check(err_ok(p, 2) and b"is the input" in p.stderr and kept == 5,
                    f"{cmd} -o INPUT refused, input kept: {p.stderr!r}, {kept} lines")
        out = os.path.join(d, "half.npy")
        p = run(["embed", *m, "--format", "npy", "-o", out, "--chunk", "1"],
                stdin='{"text": "a"}\n{"text": "b"}\n{"no": 1}\n')
        c.check(p.returncode == 1 and not os.path.exists(out),
                f"a failed .npy run leaves no file that reads as an array: {p.stderr!r}")
    c.check(err_ok(run(["embed", *m, "--gpu-memory-limit", "banana"], stdin="x\n"), 2),
            "bad --gpu-memory-limit exits 2")
    # a flag beats the environment when two options exclude each other too
    want = run(["embed", *m, "--prefix", "x: "], stdin="hello\n").stdout
    p = run(["embed", *m, "--prefix", "x: "], stdin="hello\n",
            env={"EMBD_PROMPT_NAME": "no-such-prompt"})
    c.check(p.returncode == 0 and p.stdout == want,
            f"--prefix over EMBD_PROMPT_NAME: the flag wins: {p.stderr!r}")
    p = run(["embed", *m, "--prefix", "x: ", "--prompt-name", "query"], stdin="hello\n")
    c.check(err_ok(p, 2) and b"not both" in p.stderr, f"both as flags: {p.stderr!r}")
    for bad in (["--device", "bogus"], ["--dtype", "fp99"], ["--threads", "abc"]):
        c.check(err_ok(run(["doctor", *bad]), 2), f"doctor {' '.join(bad)} exits 2")
    c.check(err_ok(run(["embed", *m, "--max-batch-tokens", "1"], stdin="x\n"), 2),
            "--max-batch-tokens under the model's length exits 2")
    ce = model_dir("ce-minilm-l6-random")
    if ce:
        p = run(["embed", "-m", ce, "-q", "-i", "/nonexistent/in.txt"])
        c.check(err_ok(p, 1) and b"cross-encoder" in p.stderr and b"inputs" not in p.stderr,
                f"embed refuses a cross-encoder before reading input: {p.stderr!r}")


def main():
    c = Checker("e2e_cli")
    # Usage and help, no model needed.
    p = run([])
    c.check(p.returncode == 2, "no command exits 2")
    p = run(["--help"])
    c.check(p.returncode == 0 and b"embed" in p.stdout, "--help")
    p = run(["--version"])
    c.check(p.returncode == 0 and p.stdout.startswith(b"embd "), "--version")
    c.check(err_ok(run(["frobnicate"]), 2), "unknown command exits 2")
    for sub in ("embed", "tokenize", "doctor"):
        p = run([sub, "--help"])
        c.check(p.returncode == 0 and b"--model" in p.stdout and b"--device" in p.stdout
                and b"--threads" in p.stdout and b"--config" in p.stdout, f"{sub} --help")
        c.check(err_ok(run([sub, "--bogus"]), 2), f"{sub} unknown flag exits 2")
    c.check(err_ok(run(["embed"], stdin="x\n"), 2), "embed without a model exits 2")
    c.check(err_ok(run(["embed", "-m", "/nonexistent/model"], stdin="x\n"), 1),
            "missing model dir exits 1")
    p = run(["doctor"])
    c.check(p.returncode == 0 and b"blas" in p.stdout, "doctor")
    check_threads(c)
    check_cgroup_quota(c)

    if MODEL is None:
        skip("all-MiniLM-L6-v2 not under EMBD_TEST_MODELS")
    m = ["-m", MODEL, "-q"]

    c.check(err_ok(run(["embed", *m, "--device", "gpu0"], stdin="x\n"), 2), "bad --device exits 2")
    c.check(err_ok(run(["embed", *m, "--dtype", "fp8"], stdin="x\n"), 2), "bad --dtype exits 2")
    c.check(err_ok(run(["embed", *m, "--threads", "-3"], stdin="x\n"), 2), "bad --threads exits 2")
    c.check(err_ok(run(["embed", *m, "--format", "csv"], stdin="x\n"), 2), "bad --format exits 2")
    c.check(err_ok(run(["embed", *m, "--max-batch-tokens", "abc"], stdin="x\n"), 2),
            "bad --max-batch-tokens exits 2")
    c.check(err_ok(run(["embed", *m], stdin="x\n", env={"EMBD_DEVICE": "tpu"}), 2),
            "bad EMBD_DEVICE exits 2")
    p = run(["embed", *m, "--device", "cuda"], stdin="x\n")
    c.check(err_ok(p, 1) and b"cuda" in p.stderr.lower(), "--device cuda without CUDA exits 1")
    # several GPUs: lists are checked before anything loads; without CUDA, a clear error
    for dev, want, what in (("cuda:0,x", b"cuda:N,M", "a malformed list"),
                            ("cuda:1,", b"cuda:N,M", "a trailing comma")):
        p = run(["embed", *m, "--device", dev], stdin="x\n")
        c.check(err_ok(p, 2) and want in p.stderr, f"--device {dev} ({what}) exits 2: {p.stderr!r}")
    p = run(["embed", *m, "--device", "cuda:all"], stdin="x\n")
    c.check(p.returncode in (1, 2) and b"cuda" in p.stderr, f"--device cuda:all without CUDA: {p.stderr!r}")
    # several contexts and a disk cache (LMDB opens once per process): refused
    for cmd in ("embed", "serve"):
        p = run([cmd, *m, "--device", "cuda:0,1", "--cache", "/tmp/embd-never-made-cache"],
                stdin="x\n")
        c.check(err_ok(p, 2) and b"disk cache" in p.stderr, f"{cmd} cuda:0,1 --cache DIR: {p.stderr!r}")
    # one GPU named twice: two contexts on it (accepted; here no GPU: exit 1)
    p = run(["embed", *m, "--device", "cuda:0,0"], stdin="x\n")
    c.check(err_ok(p, 1) and b"cuda:0" in p.stderr, f"--device cuda:0,0 without CUDA exits 1: {p.stderr!r}")
    p = run(["embed", *m, "--device", "cuda:0,1"], stdin="x\n")
    c.check(err_ok(p, 1) and b"cuda:0" in p.stderr, f"--device cuda:0,1 without CUDA exits 1: {p.stderr!r}")
    p = run(["index", *m, "--device", "cuda:0,1", "--store", "/tmp/never-made.embd"], stdin="x\n")
    c.check(err_ok(p, 2) and b"embed and serve" in p.stderr, f"index refuses several GPUs: {p.stderr!r}")
    p = run(["embed", *m, "--input-format", "jsonl"], stdin='{"text": "a"}\nnot json\n')
    c.check(err_ok(p, 1) and b"line 2" in p.stderr, "bad JSONL names the line, exits 1")
    p = run(["embed", *m, "--input-format", "jsonl"], stdin='{"body": "a"}\n')
    c.check(err_ok(p, 1) and b"text" in p.stderr, "missing text field exits 1")
    c.check(err_ok(run(["embed", *m, "-i", "/nonexistent/in.txt"]), 1), "missing input exits 1")
    check_input_edges(c, m)

    texts = ["the cat sat on the mat", "", "Debian is a free operating system",
             "Ünïcödé ✓ 日本語のテキスト", "word " * 5000]
    lines = "\n".join(texts) + "\n"
    p = run(["embed", *m], stdin=lines)
    c.check(p.returncode == 0, f"embed lines: {p.stderr!r}")
    rows = read_jsonl(p.stdout)
    c.check([r["index"] for r in rows] == list(range(len(texts))), "JSONL indices in input order")
    ref = np.array([r["embedding"] for r in rows], dtype=np.float32)
    c.check(ref.shape == (len(texts), 384), f"shape {ref.shape}")
    c.check(np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5), "normalised output")

    # The same texts as JSONL with another field name, as npy to a pipe and to a file.
    jl = "".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts))
    p = run(["embed", *m, "--text-field", "body", "--format", "npy"], stdin=jl)
    c.check(p.returncode == 0 and p.stdout[:6] == b"\x93NUMPY", "npy on a pipe")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "o.npy"), "wb") as f:
            f.write(p.stdout)
        a = np.load(os.path.join(d, "o.npy"))
        c.check(a.shape == ref.shape and np.array_equal(a, ref), "JSONL+npy == lines+jsonl")
        out = os.path.join(d, "file.npy")
        p = run(["embed", *m, "-o", out, "--format", "npy"], stdin=lines)
        b = np.load(out) if p.returncode == 0 else None
        c.check(b is not None and np.array_equal(b, ref), "npy to a file")
        # Options from a config file, overridden by the environment, overridden by flags.
        cfg = os.path.join(d, "cfg.json")
        with open(cfg, "w") as f:
            json.dump({"model": MODEL, "format": "npy", "threads": 1, "quiet": True}, f)
        p = run(["embed", "--config", cfg, "-o", out], stdin=lines)
        # threads 1 vs all cores: other GEMM blocking, so equal to rounding only.
        c.check(p.returncode == 0 and np.allclose(np.load(out), ref, atol=1e-6),
                "--config supplies options")
        p = run(["embed", "--config", cfg], stdin=lines, env={"EMBD_FORMAT": "jsonl"})
        c.check(p.returncode == 0 and p.stdout.startswith(b'{"index":0'), "env beats config")
        p = run(["embed", "--config", cfg, "--format", "npy"], stdin=lines,
                env={"EMBD_FORMAT": "jsonl"})
        c.check(p.returncode == 0 and p.stdout[:6] == b"\x93NUMPY", "flag beats env")
        with open(cfg, "w") as f:
            json.dump({"modell": MODEL}, f)
        c.check(err_ok(run(["embed", "--config", cfg], stdin=lines), 2), "unknown config key exits 2")
        with open(cfg, "w") as f:
            f.write("{not json")
        c.check(err_ok(run(["embed", "--config", cfg], stdin=lines), 2), "bad config exits 2")

    # Small batches give the same vectors as one big batch.
    p = run(["embed", *m, "--max-batch-tokens", "256", "--threads", "1"], stdin=lines)
    small = np.array([r["embedding"] for r in read_jsonl(p.stdout)], dtype=np.float32)
    cos = (small * ref).sum(1) / np.linalg.norm(small, axis=1) / np.linalg.norm(ref, axis=1)
    c.check(small.shape == ref.shape and bool((cos >= 0.999999).all()), "batch size invariance")

    # Empty input: no output, success. CRLF lines are stripped like LF.
    p = run(["embed", *m], stdin="")
    c.check(p.returncode == 0 and p.stdout == b"", "empty input")
    p = run(["embed", *m], stdin="the cat sat on the mat\r\n")
    crlf = np.array(read_jsonl(p.stdout)[0]["embedding"], dtype=np.float32)
    c.check(np.allclose(crlf, ref[0], atol=1e-6), "CRLF line")

    # On a terminal: a progress bar (percentage, rate, ETA for a file) and the summary line.
    import pty
    import subprocess
    from common import BIN
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(lines * 20)
        f.flush()
        master, slave = pty.openpty()
        proc = subprocess.run([BIN, "embed", "-m", MODEL, "-i", f.name, "-o", os.devnull],
                              stderr=slave, stdout=subprocess.DEVNULL)
        os.close(slave)
        tty = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            tty += chunk
        os.close(master)
    c.check(proc.returncode == 0 and b"100.0%" in tty and b"docs/s" in tty and b"ETA" in tty,
            f"progress bar on a terminal: {tty[-300:]!r}")
    c.check(b"embedded 100 texts" in tty and b"tokens/s" in tty, "summary line on a terminal")
    p = run(["embed", "-m", MODEL], stdin=lines)
    c.check(b"\r[" not in p.stderr and b"embedded 5 texts" in p.stderr,
            "no progress bar when stderr is not a terminal, summary still")

    # tokenize agrees with Hugging Face tokenizers (truncation at the model's 256).
    try:
        from tokenizers import Tokenizer
    except ImportError:
        Tokenizer = None
    p = run(["tokenize", *m], stdin=lines)
    got = [r["ids"] for r in read_jsonl(p.stdout)]
    c.check(p.returncode == 0 and len(got) == len(texts), "tokenize runs")
    if Tokenizer is not None:
        tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(256)
        want = [e.ids for e in tok.encode_batch(texts)]
        c.check(got == want, "tokenize == tokenizers")
        c.check(len(got[4]) == 256, "long input truncated to 256")

    # U+0000 is a character, not the end of the text (issue 18), in JSONL
    # ("\u0000") and in a plain line (a raw NUL byte): the BERT normalizer
    # drops it and keeps what follows, as Hugging Face tokenizers does.
    nul = "NUL? no: \x00 after"
    nul_inputs = (("JSONL", json.dumps({"text": nul}) + "\n"), ("plain line", nul.encode() + b"\n"))
    for what, stdin in nul_inputs:
        p = run(["tokenize", *m], stdin=stdin)
        ids = read_jsonl(p.stdout)[0]["ids"] if p.returncode == 0 and p.stdout else None
        c.check(ids is not None and len(ids) == 8, f"tokenize {what} with a NUL: {ids}")
        if Tokenizer is not None:
            c.check(ids == tok.encode(nul).ids, f"tokenize {what} with a NUL == tokenizers")

    def embed_one(stdin):
        p = run(["embed", *m], stdin=stdin)
        rows = read_jsonl(p.stdout) if p.returncode == 0 else []
        return np.array(rows[0]["embedding"], dtype=np.float32) if len(rows) == 1 else None

    dropped, cut = embed_one("NUL? no:  after\n"), embed_one("NUL? no: \n")
    for what, stdin in nul_inputs:
        got = embed_one(stdin)
        c.check(got is not None and np.allclose(got, dropped, atol=1e-6)
                and not np.allclose(got, cut, atol=1e-3), f"embed {what} with a NUL: the NUL "
                "dropped, the rest kept")

    # A non-finite output value is written as null (valid JSON, as the server
    # writes it), never as nan or inf: the model with an infinite LayerNorm
    # weight gives NaN everywhere.
    try:
        from safetensors.numpy import load_file, save_file
    except ImportError:
        load_file = None
    if load_file is not None:
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "inf-model")
            os.mkdir(bad)
            for name in os.listdir(MODEL):
                if name != "model.safetensors":
                    os.symlink(os.path.join(MODEL, name), os.path.join(bad, name))
            w = load_file(os.path.join(MODEL, "model.safetensors"))
            name = next(k for k in w if k.endswith("embeddings.LayerNorm.weight"))
            w[name] = w[name].copy()
            w[name][0] = np.inf
            save_file(w, os.path.join(bad, "model.safetensors"))
            p = run(["embed", "-m", bad, "-q"], stdin="a text\n")

            def no_constants(x):
                raise ValueError(f"JSON constant {x}")

            try:
                rows = [json.loads(l, parse_constant=no_constants)
                        for l in p.stdout.decode().splitlines()]
            except ValueError as e:
                rows = f"invalid JSON: {e}: {p.stdout[:200]!r}"
            c.check(p.returncode == 0 and isinstance(rows, list) and len(rows) == 1 and
                    len(rows[0]["embedding"]) == 384 and None in rows[0]["embedding"] and
                    all(v is None or np.isfinite(v) for v in rows[0]["embedding"]),
                    f"non-finite values are null: {p.returncode} {rows if isinstance(rows, str) else ''}")
    p = run(["embed", "--help"])
    c.check(b"null" in p.stdout, "embed --help says non-finite values are written as null")
    c.done()


if __name__ == "__main__":
    main()
