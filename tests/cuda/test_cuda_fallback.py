"""--device cuda without a usable GPU fails with one line saying why; --device
auto falls back to the CPU with one log line naming the reason (info level:
a machine without a GPU is normal) and the same vectors as --device cpu;
`embd doctor` says which backend auto picks and why. Runs without a GPU: the
plugin is made missing with EMBD_CUDA_PLUGIN, and when the real plugin is
there but no GPU is, that case is checked too."""
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
    c.done()


if __name__ == "__main__":
    main()
