#!/usr/bin/env python3
"""The CPU benchmark suite: embd against fastembed and sentence-transformers.

Run through bench/run (which sets up the peers with scripts/bench-setup and
builds embd); this is its driver. For each corpus size (the first N records
of the Debian corpus, `text` field, in the corpus's order) and each model, it
runs every engine --runs times in fresh processes, interleaved (the engine
order rotates each round, so the machine's load hits all alike), and keeps
medians:

  embd               `embd embed -i FILE -o OUT --format npy --cache off -q`,
                     timed from process start to exit (model load included)
  fastembed          TextEmbedding.embed with its defaults (batch 256, onnxruntime
                     threads = cores) on the corpus order, model loaded and warmed up
  fastembed-sorted   the same on the texts sorted by token count (sorting not timed)
  st                 sentence-transformers encode (batch 32, torch threads =
                     --threads), model loaded and warmed up

Peak RSS per run comes from GNU time (%M) around the process. Vectors of each
peer are compared with sentence-transformers' (cosine, min and mean). Also:
tokenizer throughput on one thread (bench/bench_tokenize against Hugging Face
tokenizers encode_batch and an encode loop, RAYON_NUM_THREADS=1), and cold
start (process start to the first embedding of one short text, median of 5).

The largest size runs last, --big-runs times (default 3); it is skipped, and
the table says so, when the smaller size's timings predict it would overrun
--budget-min. Writes bench/results/results.json, bench/results/throughput.png
and the section of BENCHMARKS.md between <!-- bench/run:begin --> and
<!-- bench/run:end --> (unless --no-write).

usage: bench/suite.py --embd BIN --bench-tokenize BIN --onnx-root DIR
       [--models all-MiniLM-L6-v2,bge-small-random] [--sizes 1000,10000]
       [--runs 3] [--big-runs 3] [--fastembed-runs 1] [--sorted-runs N] [--threads N]
       [--budget-min 240]
       [--no-write]
       bench/suite.py --report A.json [B.json ...]   (table and plot only, from
       one run's results.json, or from several runs made at different times,
       merged: a later run's rows replace an earlier one's of the same model
       and size)
"""
import argparse
import calendar
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENGINES = ["embd", "fastembed", "fastembed-sorted", "st"]
BEGIN, END = "<!-- bench/run:begin -->", "<!-- bench/run:end -->"


# --------------------------------------------------------------------------
# Workers: one engine, one process; print one JSON line.
# --------------------------------------------------------------------------

def read_texts(path):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\0")


def max_len_of(model_dir):
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        return int(json.load(f)["max_seq_length"])


def token_counts(model_dir, texts):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len_of(model_dir))
    return [len(e.ids) for e in tok.encode_batch(texts)]


def worker(a):
    texts = read_texts(a.texts)
    t0 = time.perf_counter()
    if a.engine == "st":
        import torch
        from sentence_transformers import SentenceTransformer
        torch.set_num_threads(a.threads)
        m = SentenceTransformer(a.model, device="cpu")
        m.encode(texts[:32])
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        vecs = m.encode(texts, batch_size=32)
        secs = time.perf_counter() - t0
    elif a.engine in ("fastembed", "fastembed-sorted"):
        sys.path.insert(0, HERE)
        import fastembed_model
        order = list(range(len(texts)))
        if a.engine == "fastembed-sorted":
            counts = token_counts(a.model, texts)
            order.sort(key=lambda i: counts[i])
        feed = [texts[i] for i in order]
        m = fastembed_model.load(a.model, a.onnx)
        list(m.embed(texts[:32]))
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = np.array(list(m.embed(feed)))
        secs = time.perf_counter() - t0
        vecs = np.empty_like(got)
        vecs[order] = got
    elif a.engine == "tok-hf":
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=max_len_of(a.model))
        tok.encode_batch(texts)
        res = {}
        for name, fn in (("encode_batch", lambda: tok.encode_batch(texts)),
                         ("encode_loop", lambda: [tok.encode(t) for t in texts])):
            t0 = time.perf_counter()
            for _ in range(a.reps):
                enc = fn()
            res[name] = (time.perf_counter() - t0) / a.reps
        res["tokens"] = sum(len(e.ids) for e in enc)
        print(json.dumps(res))
        return
    else:
        sys.exit(f"embd: unknown engine {a.engine}")
    if a.out:
        np.save(a.out, np.asarray(vecs, dtype=np.float32))
    print(json.dumps({"load_s": load, "embed_s": secs}))


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def timed(cmd, env=None, stdin=None):
    """Runs cmd under GNU time: (wall seconds, peak RSS MiB, stdout)."""
    with tempfile.NamedTemporaryFile("r") as tf:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name] + cmd, env=env,
                           input=stdin, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"embd: {' '.join(cmd[:3])} failed: {p.stderr.strip()[-2000:]}")
        rss = int(tf.read().strip().splitlines()[-1]) / 1024
    return wall, rss, p.stdout


def run_engine(a, engine, model_dir, files, out):
    """One timed run: {'secs', 'rss_mib', 'load_s'?}."""
    if engine == "embd":
        cmd = [a.embd, "embed", "-m", model_dir, "-i", files["jsonl"], "-o", out or "/dev/null",
               "--format", "npy", "--cache", "off", "-q", "--threads", str(a.threads)]
        wall, rss, _ = timed(cmd)
        return {"secs": wall, "rss_mib": rss}
    onnx = os.path.join(a.onnx_root, os.path.basename(os.path.normpath(model_dir)))
    cmd = [sys.executable, os.path.abspath(__file__), "worker", "--engine", engine, "--model",
           model_dir, "--onnx", onnx, "--texts", files["bin"], "--threads", str(a.threads)]
    if out:
        cmd += ["--out", out]
    wall, rss, stdout = timed(cmd)
    r = json.loads(stdout.strip().splitlines()[-1])
    return {"secs": r["embed_s"], "load_s": r["load_s"], "wall_s": wall, "rss_mib": rss}


def cosines(a_vecs, b_vecs):
    a_n = a_vecs / np.linalg.norm(a_vecs, axis=1, keepdims=True)
    b_n = b_vecs / np.linalg.norm(b_vecs, axis=1, keepdims=True)
    c = (a_n.astype(np.float64) * b_n).sum(1)
    return float(c.min()), float(c.mean())


def write_inputs(texts, tmp, n):
    files = {"jsonl": os.path.join(tmp, f"in{n}.jsonl"), "bin": os.path.join(tmp, f"in{n}.bin")}
    with open(files["jsonl"], "w", encoding="utf-8") as f:
        for t in texts[:n]:
            f.write(json.dumps({"text": t}) + "\n")
    with open(files["bin"], "w", encoding="utf-8") as f:
        f.write("\0".join(texts[:n]))
    return files


def machine():
    cpu = platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(l.split(":", 1)[1].strip() for l in out.splitlines()
                   if l.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1048576
    flags = open("/proc/cpuinfo").read()
    isa = [x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f" {x}" in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem, 1), "isa": isa}


def versions():
    import importlib.metadata as md
    v = {}
    for p in ("fastembed", "onnxruntime", "sentence-transformers", "torch", "tokenizers"):
        try:
            v[p] = md.version(p)
        except md.PackageNotFoundError:
            v[p] = "?"
    return v


def capped_runs(a, engine, runs):
    """Runs of engine at a size of runs runs: the fastembed peers may be capped."""
    cap = {"fastembed": a.fastembed_runs, "fastembed-sorted": a.sorted_runs}.get(engine)
    return runs if cap is None else min(runs, max(1, cap))


def bench_sizes(a, texts, tmp, res, t_start):
    models = [os.path.join(a.models_dir, m) for m in a.models.split(",")]
    sizes = sorted(int(s) for s in a.sizes.split(","))
    for si, n in enumerate(sizes):
        if n > len(texts):
            res["skipped"].append(f"{n} documents: the corpus has {len(texts)}")
            continue
        runs = a.big_runs if si == len(sizes) - 1 and len(sizes) > 1 else a.runs
        files = write_inputs(texts, tmp, n)
        for model_dir in models:
            name = os.path.basename(model_dir)
            tok_n = sum(token_counts(model_dir, texts[:n]))
            prev = [r for r in res["runs"] if r["model"] == name and r["docs"] < n]
            if prev:
                # Predicted from the previous size: time grows with the tokens.
                need = sum((statistics.median(r["secs"]) + r["load_med"] + 5) * capped_runs(
                    a, r["engine"], runs) for r in prev if r["docs"] == prev[-1]["docs"])
                need = need * tok_n / prev[-1]["tokens"] / 60
                left = a.budget_min - (time.time() - t_start) / 60
                if need > left:
                    res["skipped"].append(f"{name} at {n} documents: predicted {need:.0f} min "
                                          f"for {runs} run(s) of the four engines, {left:.0f} "
                                          f"min of the --budget-min left")
                    continue
            rows = {e: {"model": name, "docs": n, "tokens": tok_n, "engine": e, "secs": [],
                        "rss_mib": [], "load_s": [], "load": []} for e in ENGINES}
            vec = {}
            for r in range(runs):
                k = r % len(ENGINES)
                for e in ENGINES[k:] + ENGINES[:k]:
                    if r >= capped_runs(a, e, runs):
                        continue
                    out = os.path.join(tmp, f"{e}.npy") if r == 0 else None
                    rows[e]["load"].append(os.getloadavg()[0])
                    got = run_engine(a, e, model_dir, files, out)
                    rows[e]["secs"].append(got["secs"])
                    rows[e]["rss_mib"].append(got["rss_mib"])
                    if "load_s" in got:
                        rows[e]["load_s"].append(got["load_s"])
                    if out:
                        vec[e] = np.load(out)
                    print(f"bench: {name} {n} docs run {r + 1}/{runs} {e}: {got['secs']:.2f} s, "
                          f"{got['rss_mib']:.0f} MiB, load {os.getloadavg()[0]:.1f}",
                          file=sys.stderr, flush=True)
            for e in ENGINES:
                row = rows[e]
                row["cos_min"], row["cos_mean"] = cosines(vec[e], vec["st"])
                row["load_med"] = statistics.median(row["load_s"]) if row["load_s"] else 0
                res["runs"].append(row)
            json.dump(res, open(os.path.join(a.results, "results.json"), "w"), indent=1)


def bench_tokenizer(a, texts, tmp, res):
    model_dir = os.path.join(a.models_dir, a.models.split(",")[0])
    path = os.path.join(tmp, "tok.bin")
    n = min(a.tok_docs, len(texts))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\0".join(texts[:n]))
    env = dict(os.environ, RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    e = json.loads(subprocess.run([a.bench_tokenize, model_dir, path, "3"], env=env, check=True,
                                  capture_output=True, text=True).stdout)
    h = json.loads(subprocess.run([sys.executable, os.path.abspath(__file__), "worker",
                                   "--engine", "tok-hf", "--model", model_dir, "--texts", path,
                                   "--reps", "3"], env=env, check=True, capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1])
    res["tokenizer"] = {"model": os.path.basename(model_dir), "docs": n,
                        "embd_tokens": e["tokens"], "hf_tokens": h["tokens"],
                        "embd_s": e["seconds"] / e["reps"], "hf_batch_s": h["encode_batch"],
                        "hf_loop_s": h["encode_loop"]}


def bench_cold(a, res):
    model_dir = os.path.join(a.models_dir, "all-MiniLM-L6-v2")
    cmd = [a.embd, "embed", "-m", model_dir, "-o", "/dev/null", "--format", "npy", "--cache",
           "off", "-q"]
    subprocess.run(cmd, input="hello world\n", text=True, check=True, capture_output=True)
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, input="hello world\n", text=True, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    res["cold_start_s"] = walls


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

LABEL = {"embd": "embd", "fastembed": "fastembed (defaults, corpus order)",
         "fastembed-sorted": "fastembed (length-sorted input)",
         "st": "sentence-transformers (batch 32)"}
TARGET = {"fastembed": 3.0, "fastembed-sorted": 1.5, "st": 2.0}


def run_line(r):
    """When and how one run of the suite ran, and the load around it."""
    return (f"`bench/run {r.get('argv', '')}` on {r['date']} (total {r['total_min']:.0f} min; "
            f"**load average {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after, "
            f"{r['load_min']:.1f} to {r['load_max']:.1f} (1-min) at the starts of the runs**)")


def table(res):
    m, v = res["machine"], res["versions"]
    L = []
    machine_line = (f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}), "
                    f"{m['mem_gib']} GiB. The machine is shared with other jobs, so the "
                    f"absolute rates are pessimistic; the ratios come from interleaved runs "
                    f"under the same load. Threads: {res['threads']} for every engine. fp32 "
                    f"everywhere.")
    if res.get("parts"):
        L.append(f"Merged by `bench/suite.py --report` from {len(res['parts'])} runs of the "
                 f"suite on this machine; each row's engines ran interleaved in one of them:")
        L.append("")
        for part in res["parts"]:
            L.append(f"- {run_line(part)}: {', '.join(part['sizes'])}")
        L.append("")
        L.append(machine_line)
    else:
        L.append(f"Generated by {run_line(res)}. {machine_line}")
    L.append("")
    L.append(f"Peers: fastembed {v['fastembed']} (onnxruntime {v['onnxruntime']}) on an ONNX "
             f"export of the same weights (`bench/export_onnx.py`), sentence-transformers "
             f"{v['sentence-transformers']} (torch {v['torch']}, CPU). Input: the first N "
             f"Debian package descriptions in the corpus's order. embd is timed from process "
             f"start to exit (model load included); the peers with their model loaded and "
             f"warmed up. Speed-up = peer's median time / embd's median time (> 1: embd is "
             f"faster). Cosine: against sentence-transformers' vectors of the same texts.")
    L.append("")
    L.append("| model | docs (tokens) | engine | runs | median s | docs/s | tokens/s | "
             "embd speed-up | target | peak RSS MiB | cosine to ST min / mean |")
    L.append("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |")
    for row in res["runs"]:
        med = statistics.median(row["secs"])
        embd = next(r for r in res["runs"] if r["model"] == row["model"]
                    and r["docs"] == row["docs"] and r["engine"] == "embd")
        sp = med / statistics.median(embd["secs"])
        tgt = ""
        if row["engine"] in TARGET:
            t = TARGET[row["engine"]]
            tgt = f"≥ {t}x: {'met' if sp >= t else 'NOT met'}"
        L.append(f"| {row['model']} | {row['docs']} ({row['tokens']}) | {LABEL[row['engine']]} | "
                 f"{len(row['secs'])} | {med:.2f} | {row['docs'] / med:.1f} | "
                 f"{row['tokens'] / med:.0f} | "
                 f"{'—' if row['engine'] == 'embd' else f'{sp:.2f}x'} | {tgt} | "
                 f"{max(row['rss_mib']):.0f} | {row['cos_min']:.7f} / {row['cos_mean']:.7f} |")
    for s in res["skipped"]:
        L.append("")
        L.append(f"Skipped: {s}.")
    if "tokenizer" in res:
        t = res["tokenizer"]
        L.append("")
        L.append(f"Tokenizer, one thread, {t['model']}, the first {t['docs']} descriptions "
                 f"({t['embd_tokens']} tokens after truncation; HF: {t['hf_tokens']}), mean of "
                 f"3 passes:")
        L.append("")
        L.append("| tokenizer | seconds | tokens/s | embd speed-up (target ≥ 2x) |")
        L.append("| --- | ---: | ---: | ---: |")
        L.append(f"| embd (`bench/bench_tokenize.c`, embd_tokenize per text) | "
                 f"{t['embd_s']:.3f} | {t['embd_tokens'] / t['embd_s']:.0f} | — |")
        for k, lab in (("hf_batch_s", "encode_batch, RAYON_NUM_THREADS=1"),
                       ("hf_loop_s", "encode per text")):
            L.append(f"| HF tokenizers {v['tokenizers']} {lab} | {t[k]:.3f} | "
                     f"{t['hf_tokens'] / t[k]:.0f} | {t[k] / t['embd_s']:.1f}x |")
    if "cold_start_s" in res:
        c = res["cold_start_s"]
        L.append("")
        L.append(f"Cold start (`embd embed` of \"hello world\", all-MiniLM-L6-v2, process start "
                 f"to exit, model file in the page cache, 5 runs): median "
                 f"{statistics.median(c) * 1000:.0f} ms (min {min(c) * 1000:.0f}, max "
                 f"{max(c) * 1000:.0f}); target ≤ 300 ms.")
    L.append("")
    L.append("![throughput](bench/results/throughput.png)")
    return "\n".join(L)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({r["model"] for r in res["runs"]})
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        for e in ENGINES:
            rows = sorted((r for r in res["runs"] if r["model"] == model and r["engine"] == e),
                          key=lambda r: r["docs"])
            ax.plot([r["docs"] for r in rows],
                    [r["docs"] / statistics.median(r["secs"]) for r in rows],
                    marker="o", label=LABEL[e])
        ax.set_xscale("log")
        sizes = sorted({r["docs"] for r in res["runs"] if r["model"] == model})
        ax.set_xticks(sizes, [str(x) for x in sizes])
        ax.minorticks_off()
        ax.set_xlabel("documents")
        ax.set_ylabel("docs/s (median)")
        ax.set_title(model)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def write_section(text):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n## CPU suite: embd against fastembed and " \
              "sentence-transformers (bench/run)\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        ap = argparse.ArgumentParser()
        ap.add_argument("worker")
        ap.add_argument("--engine", required=True)
        ap.add_argument("--model", required=True)
        ap.add_argument("--onnx")
        ap.add_argument("--texts", required=True)
        ap.add_argument("--out")
        ap.add_argument("--threads", type=int, default=os.cpu_count())
        ap.add_argument("--reps", type=int, default=3)
        return worker(ap.parse_args())
    home = os.environ.get("EMBD_HOME", os.path.expanduser("~/.cache/embd"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embd", default=os.path.join(ROOT, "build", "release", "embd"),
                    help="the embd binary (default: %(default)s)")
    ap.add_argument("--bench-tokenize",
                    default=os.path.join(ROOT, "build", "release", "bench_tokenize"),
                    help="the tokenizer benchmark binary (default: %(default)s)")
    ap.add_argument("--onnx-root", default=os.path.join(home, "bench", "onnx"),
                    help="ONNX exports for fastembed, one folder per model (default: "
                    "%(default)s)")
    ap.add_argument("--models-dir", default=os.path.join(home, "models"),
                    help="model folders (default: %(default)s)")
    ap.add_argument("--models", default="all-MiniLM-L6-v2,bge-small-random",
                    help="comma-separated model names under --models-dir (default: "
                    "%(default)s)")
    ap.add_argument("--corpus", default=os.path.join(home, "corpus", "debian.jsonl"),
                    help="JSON lines with a text field (default: %(default)s)")
    ap.add_argument("--sizes", default="1000,10000",
                    help="comma-separated document counts, the first N of the corpus "
                    "(default: %(default)s)")
    ap.add_argument("--runs", type=int, default=3,
                    help="runs of each engine per size, medians kept (default: %(default)s)")
    ap.add_argument("--big-runs", type=int, default=3,
                    help="runs at the largest size when more than one size is given "
                    "(default: %(default)s)")
    ap.add_argument("--fastembed-runs", type=int, default=1,
                    help="at most this many runs (at least 1) of fastembed with its defaults "
                    "on the corpus order, the slowest engine by far: 12 to 47 minutes a "
                    "run at 10K on a 2-core VM (default: %(default)s)")
    ap.add_argument("--sorted-runs", type=int,
                    help="at most this many runs (at least 1) of fastembed on length-sorted "
                    "input (default: as many as the others)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for every engine (default: the cores, %(default)s)")
    ap.add_argument("--tok-docs", type=int, default=10000,
                    help="documents for the tokenizer benchmark (default: %(default)s)")
    ap.add_argument("--budget-min", type=float, default=240,
                    help="skip a size whose predicted time would overrun this many minutes "
                    "from the start (default: %(default)s)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"),
                    help="folder for results.json and throughput.png (default: %(default)s)")
    ap.add_argument("--no-write", action="store_true",
                    help="do not rewrite the section of BENCHMARKS.md")
    ap.add_argument("--report", metavar="JSON", nargs="+",
                    help="only write the table and plot from a results.json (of a run that "
                    "was cut short, say); given several, merge them, a later run's rows "
                    "replacing an earlier run's rows of the same model and size, and write "
                    "the merged results.json to --results")
    a = ap.parse_args()
    if a.report:
        parts = [load_results(p) for p in a.report]
        res = parts[0] if len(parts) == 1 else merge_results(parts)
        if len(parts) > 1:
            os.makedirs(a.results, exist_ok=True)
            json.dump(res, open(os.path.join(a.results, "results.json"), "w"), indent=1)
        return report(a, res)
    os.makedirs(a.results, exist_ok=True)
    texts = [json.loads(l)["text"] for l in open(a.corpus, encoding="utf-8")]
    t_start = time.time()
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "t_start": t_start, "machine": machine(),
           "versions": versions(), "threads": a.threads, "load_before": os.getloadavg(),
           "runs": [], "skipped": [], "argv": os.environ.get("BENCH_ARGS", " ".join(sys.argv[1:]))}
    with tempfile.TemporaryDirectory() as tmp:
        bench_cold(a, res)
        bench_tokenizer(a, texts, tmp, res)
        bench_sizes(a, texts, tmp, res, t_start)
    res["load_after"] = os.getloadavg()
    loads = [x for r in res["runs"] for x in r["load"]] or [res["load_before"][0]]
    res["load_min"], res["load_max"] = min(loads), max(loads)
    res["total_min"] = (time.time() - t_start) / 60
    json.dump(res, open(os.path.join(a.results, "results.json"), "w"), indent=1)
    report(a, res)


def load_results(path):
    """A results.json, with what a run stopped early did not write filled in."""
    res = json.load(open(path))
    res.setdefault("load_after", os.getloadavg())
    loads = [x for r in res["runs"] for x in r["load"]] or [res["load_before"][0]]
    res["load_min"], res["load_max"] = min(loads), max(loads)
    if "total_min" not in res:
        start = res.get("t_start") or calendar.timegm(
            time.strptime(res["date"], "%Y-%m-%d %H:%M UTC"))
        res["total_min"] = (time.time() - start) / 60
        res["skipped"].append("the rest: the run was stopped at "
                              + time.strftime("%H:%M UTC", time.gmtime()))
    return res


def merge_results(parts):
    """One result from several runs, in the order given: a later run's rows for
    a model and size replace all of an earlier run's rows for it (the engines
    of a row stay from one interleaved run); the tokenizer and cold start come
    from the last run that measured them."""
    if len({json.dumps(p["machine"], sort_keys=True) for p in parts}) > 1:
        sys.exit("bench/suite.py: --report: the runs were made on different machines")
    for p in parts:
        if p.get("parts"):
            sys.exit("bench/suite.py: --report: a merged result can not be merged again; "
                     "give the runs it was made from")
    res = {k: v for k, v in parts[-1].items() if k not in ("runs", "skipped")}
    runs, skipped, meta = [], [], []
    for p in parts:
        got = {(r["model"], r["docs"]) for r in p["runs"]}
        runs = [r for r in runs if (r["model"], r["docs"]) not in got] + p["runs"]
        skipped = [x for x in skipped if not any(x.startswith(f"{m} at {d} documents")
                                                 for m, d in got)] + p["skipped"]
        for k in ("tokenizer", "cold_start_s"):
            if k in p:
                res[k] = p[k]
    for p in parts:
        mine = {id(r) for r in p["runs"]}
        kept = sorted({(r["model"], r["docs"]) for r in runs if id(r) in mine},
                      key=lambda k: (k[1], k[0]))
        if kept:
            meta.append({k: p[k] for k in ("argv", "date", "total_min", "load_before",
                                           "load_after", "load_min", "load_max")})
            meta[-1]["sizes"] = [f"{m} at {d} documents" for m, d in kept]
    res["runs"] = sorted(runs, key=lambda r: (r["docs"], r["model"], ENGINES.index(r["engine"])))
    res["skipped"] = skipped
    res["parts"] = meta
    return res


def report(a, res):
    plot(res, os.path.join(a.results, "throughput.png"))
    text = table(res)
    print(text)
    if not a.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
