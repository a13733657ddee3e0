"""`embd embed --cache` on all-MiniLM-L6-v2 and real corpus documents:

- a second run with the same --cache DIR is bit-identical (.npy bytes) and
  is served from the cache alone (all hits, no misses: no text reaches the
  model); how much faster that is belongs to the benchmark (BENCHMARKS.md,
  "Disk cache"), so the ratio is printed, not checked;
- --cache mem / off, and a foreign file in the cache directory is rebuilt
  with a one-line warning (text and JSON log formats);
- an interrupted run (SIGKILL midway) resumes through the disk cache: the
  rerun's summary counts as hits what the killed run finished, and the rows
  it had written come back bit-identical.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from common import BIN, Checker, model_dir, read_jsonl, run, skip  # noqa: E402


def corpus_docs(n, max_chars):
    path = os.environ.get("EMBD_TEST_CORPUS")
    if not path or not os.path.isfile(path):
        skip("EMBD_TEST_CORPUS not set or missing")
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            t = json.loads(line).get("text", "")
            if 0 < len(t) <= max_chars:
                docs.append(t)
                if len(docs) == n:
                    break
    return docs


def summary_counts(stderr):
    """(hits, misses) from the summary line, or None."""
    for line in stderr.decode().splitlines():
        if "cache:" in line and "hits" in line:
            part = line.split("cache:")[1].split(",")
            return int(part[0].split()[0]), int(part[1].split()[0])
    return None


def main():
    m = model_dir("all-MiniLM-L6-v2")
    if not m:
        skip("all-MiniLM-L6-v2 not under EMBD_TEST_MODELS")
    c = Checker("engine_cache_cli")
    tmp = tempfile.mkdtemp(prefix="embd-cache-cli-")
    try:
        docs = corpus_docs(500, 160)
        inp = os.path.join(tmp, "in.txt")
        with open(inp, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(d.replace("\n", " ") + "\n")
        cache = os.path.join(tmp, "cache")
        outs, times, counts = [], [], []
        for i in range(2):
            out = os.path.join(tmp, f"run{i}.npy")
            t0 = time.monotonic()
            p = run(["embed", "-m", m, "-i", inp, "-o", out, "--format", "npy",
                     "--cache", cache, "--input-format", "lines", "--threads", "2"])
            times.append(time.monotonic() - t0)
            c.check(p.returncode == 0, f"run {i} exits 0 ({p.stderr.decode().strip()})")
            counts.append(summary_counts(p.stderr))
            with open(out, "rb") as f:
                outs.append(f.read())
        n = len(docs)
        c.check(counts[0] is not None and counts[0][0] == 0, f"first run: no hits {counts[0]}")
        c.check(counts[1] == (n, 0), f"second run: all {n} hits, got {counts[1]}")
        c.check(len(outs[0]) == 128 + n * 384 * 4, "npy size")
        c.check(outs[0] == outs[1], "second run bit-identical (.npy bytes)")
        ratio = times[0] / max(times[1], 1e-9)
        print(f"first run {times[0]:.2f} s, second {times[1]:.3f} s: {ratio:.1f}x (not checked)")

        # --cache mem and off: same vectors for the repeated texts.
        few = os.path.join(tmp, "few.txt")
        with open(few, "w") as f:
            f.write("alpha beta\ngamma\nalpha beta\n")
        p = run(["embed", "-m", m, "-i", few, "--cache", "mem"])
        rows = read_jsonl(p.stdout)
        c.check(p.returncode == 0 and len(rows) == 3 and rows[0]["embedding"] == rows[2]["embedding"],
                "--cache mem: equal texts, equal vectors")
        c.check(summary_counts(p.stderr) == (0, 3), f"--cache mem summary {p.stderr!r}")
        p = run(["embed", "-m", m, "-i", few, "--cache", "off"])
        c.check(p.returncode == 0 and b"cache:" not in p.stderr, "--cache off: no cache note")

        # A foreign file where the store should be: rebuilt with a warning.
        bad = os.path.join(tmp, "bad")
        os.makedirs(bad)
        with open(os.path.join(bad, "data.mdb"), "wb") as f:
            f.write(os.urandom(8192))
        p = run(["embed", "-m", m, "-i", few, "--cache", bad])
        warn = [l for l in p.stderr.decode().splitlines() if l.startswith("embd: warn: cache:")]
        c.check(p.returncode == 0 and len(warn) == 1 and "rebuilding" in warn[0],
                f"foreign store: one warning line ({p.stderr!r})")
        with open(os.path.join(bad, "data.mdb"), "r+b") as f:
            f.write(b"\0" * 4096)
        p = run(["embed", "-m", m, "-i", few, "--cache", bad, "--log-format", "json"])
        js = [json.loads(l) for l in p.stderr.decode().splitlines() if l.startswith("{")]
        c.check(p.returncode == 0 and len(js) == 1 and js[0]["level"] == "warn"
                and js[0]["event"] == "cache", f"foreign store, JSON log ({p.stderr!r})")
        p = run(["embed", "-m", m, "-i", few, "--cache", bad], env={"EMBD_LOG_LEVEL": "shout"})
        c.check(p.returncode == 2 and b"log level" in p.stderr, "bad EMBD_LOG_LEVEL: usage error")

        # Resume: kill a run once some steps are done, rerun with the same cache.
        res_cache = os.path.join(tmp, "resume")
        part = os.path.join(tmp, "part.jsonl")
        docs2 = corpus_docs(700, 160)[500:]
        inp2 = os.path.join(tmp, "in2.txt")
        with open(inp2, "w", encoding="utf-8") as f:
            for d in docs2:
                f.write(d.replace("\n", " ") + "\n")
        with open(part, "wb") as fo:
            proc = subprocess.Popen([BIN, "embed", "-m", m, "-i", inp2, "--cache", res_cache,
                                     "--chunk", "16", "-q"], stdout=fo, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if os.path.getsize(part) > 40 * 4096:  # some steps written
                    break
                time.sleep(0.05)
            killed = proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        c.check(killed, "the run was killed midway")
        with open(part, "rb") as f:
            data = f.read()
        done = [json.loads(l) for l in data.split(b"\n")[:-1]]  # complete lines only
        p = run(["embed", "-m", m, "-i", inp2, "--cache", res_cache, "--chunk", "16"])
        c.check(p.returncode == 0, "rerun exits 0")
        hm = summary_counts(p.stderr)
        full = read_jsonl(p.stdout)
        n2 = len(docs2)
        print(f"killed after {len(done)} rows written; rerun hits/misses {hm}")
        c.check(hm is not None and hm[0] + hm[1] == n2 and hm[0] >= len(done) > 0
                and hm[1] > 0, f"rerun computes only what was missing: {hm}, {len(done)} done")
        c.check(len(full) == n2 and all(full[r["index"]] == r for r in done),
                "rows of the killed run come back bit-identical")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c.done()


if __name__ == "__main__":
    main()
