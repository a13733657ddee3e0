"""--device cuda without a usable GPU fails with one line saying why (embed and
search); --device auto falls back to the CPU with one log line naming the reason (info level:
a machine without a GPU is normal) and the same vectors as --device cpu;
`embd doctor` says which backend auto picks and why. Runs without a GPU: the
plugin is made missing with EMBD_CUDA_PLUGIN, and when the real plugin is
there but no GPU is, that case is checked too. With a GPU, embd search
--device cuda scores the store there and gives the CPU's hits."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from common import Checker, model_dir, read_jsonl, run, skip  # noqa: E402

MISSING = {"EMBD_CUDA_PLUGIN": "/nonexistent/libembd-cuda.so"}
REAL = {k: v for k, v in os.environ.items() if k == "EMBD_CUDA_PLUGIN"}


def lines(b):
    return b.decode(errors="replace").strip().splitlines()


def main():
    c = Checker("cuda_fallback")
    p = run(["doctor"], env=MISSING)
    out = p.stdout.decode()
    c.check(p.returncode == 0 and "device auto -> cpu" in out and "plugin" in out,
            f"doctor names the missing plugin: {out!r}")
    p = run(["doctor"], env=REAL)
    out = p.stdout.decode()
    c.check(p.returncode == 0 and "device auto -> " in out and "cuda plugin:" in out,
            f"doctor with the real plugin: {out!r}")
    gpu = "device auto -> cuda" in out
    print(out)

    model = model_dir("all-MiniLM-L6-v2")
    if model is None:
        skip("all-MiniLM-L6-v2 not under EMBD_TEST_MODELS")
    m = ["-m", model, "-q"]
    text = "the cat sat on the mat\n"

    cases = [("missing plugin", MISSING, ("plugin", "driver"))]
    if not gpu:
        cases.append(("no GPU", REAL, ("driver", "device")))
    ref = run(["embed", *m, "--device", "cpu"], stdin=text)
    c.check(ref.returncode == 0, "--device cpu works")
    for name, env, word in cases:
        p = run(["embed", *m, "--device", "cuda"], stdin=text, env=env)
        ls = lines(p.stderr)
        c.check(p.returncode == 1 and len(ls) == 1 and ls[0].startswith("embd: ")
                and "cuda" in ls[0] and "not usable" in ls[0] and any(w in ls[0] for w in word),
                f"{name}: --device cuda exits 1 with one line saying why: {ls}")
        p = run(["embed", *m, "--device", "cuda:3"], stdin=text, env=env)
        c.check(p.returncode == 1 and b"cuda:3" in p.stderr, f"{name}: --device cuda:3 exits 1")
        p = run(["embed", *m, "--device", "auto"], stdin=text, env=dict(env, EMBD_LOG_LEVEL="info"))
        ls = [l for l in lines(p.stderr) if "running on the CPU" in l]
        c.check(p.returncode == 0 and len(ls) == 1 and any(w in ls[0] for w in word),
                f"{name}: auto falls back with one line naming the reason: {lines(p.stderr)}")
        c.check(p.returncode == 0 and read_jsonl(p.stdout) == read_jsonl(ref.stdout),
                f"{name}: auto on the CPU gives the --device cpu vectors")
        p = run(["embed", *m], stdin=text, env=env)
        c.check(p.returncode == 0 and p.stderr == b"",
                f"{name}: at the default log level the fallback is quiet: {lines(p.stderr)}")
    check_search(c, m, cases, gpu)
    c.done()


def check_search(c, m, cases, gpu):
    """embd search follows the context: --device cuda without a GPU exits 1
    with the reason (before touching the store); auto searches on the CPU,
    quietly, with the --device cpu hits; with a GPU, --device cuda (fp32, so
    only summation order differs) scores the store there: the same hits."""
    import json
    import tempfile
    tmp = tempfile.mkdtemp(prefix="embd-cuda-fallback-")
    store, docs = os.path.join(tmp, "store"), os.path.join(tmp, "docs.jsonl")
    with open(docs, "w") as f:
        for i, t in enumerate(["a cat on a mat", "stock markets fell", "a dog in the park",
                               "rain is expected tomorrow", "kittens sleep a lot"]):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    p = run(["index", *m, "--device", "cpu", "--store", store, "-i", docs])
    c.check(p.returncode == 0, f"index: {lines(p.stderr)}")
    q = ["search", *m, "--store", store, "--query", "a sleeping cat", "-k", "3"]
    ref = run([*q, "--device", "cpu"])
    c.check(ref.returncode == 0 and len(read_jsonl(ref.stdout)) == 3, "search --device cpu")
    for name, env, word in cases:
        p = run([*q, "--device", "cuda"], env=env)
        ls = lines(p.stderr)
        c.check(p.returncode == 1 and p.stdout == b"" and len(ls) == 1
                and ls[0].startswith("embd: ") and "not usable" in ls[0]
                and any(w in ls[0] for w in word),
                f"{name}: search --device cuda exits 1 with one line saying why: {ls}")
        p = run([*q, "--device", "auto"], env=env)
        c.check(p.returncode == 0 and p.stderr == b"" and p.stdout == ref.stdout,
                f"{name}: search --device auto: the CPU's hits, quietly: {lines(p.stderr)}")
    if gpu:
        p = run([*q, "--device", "cuda", "--dtype", "fp32"], env=REAL)
        got, want = read_jsonl(p.stdout), read_jsonl(ref.stdout)
        c.check(p.returncode == 0 and [h["id"] for h in got] == [h["id"] for h in want]
                and all(abs(a["score"] - b["score"]) < 1e-3 for a, b in zip(got, want)),
                f"search on the GPU gives the CPU's hits: {got} vs {want} {lines(p.stderr)}")


if __name__ == "__main__":
    main()
