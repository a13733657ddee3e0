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

Every row records the CPU model, its flags (avx2, fma, avx512f/bw/vl/dq,
avx512_bf16, avx512_vnni, avx_vnni, amx) and the kernel set embd ran
(`embd doctor`'s "cpu kernels:" line, under --isa's EMBD_CPU_ISA); the
BENCHMARKS.md section has one table per kernel set (AVX-512, AVX2), so runs
on different machines or with --isa avx2 and avx512 merge side by side. The
roofline of a row: torch's fp32 F.linear rate on the model's four linear
shapes at --roofline-tokens tokens, --threads threads, median of 7, measured
in the same run; embd's useful model FLOP/s end to end (per token
2*(4*H*H + 2*H*I)*L plus attention 4*len*H*L, from the real token counts,
over embd's whole process time) is given as a share of it.

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
       [--budget-min 240] [--isa avx2|avx512] [--dtypes bf16,int8] [--roofline-tokens 2048]
       [--no-write]
       bench/suite.py --report A.json [B.json ...]   (table and plot only, from
       one run's results.json, or from several runs made at different times,
       merged: a later run's rows replace an earlier one's of the same model
       and size on the same kernel set)
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
LOWP_DTYPES = ("bf16", "int8", "bf16-noamx", "int8-noamx")  # embd's reduced precisions on the
# CPU (--dtypes); -noamx: the same with EMBD_CPU_AMX=0 (the 512-bit kernels on an AMX CPU)


def engines_of(a):
    """The engines of this run: ENGINES, embd-python with --python, then
    embd-bf16 / embd-int8 for --dtypes."""
    extra = [d.strip() for d in (a.dtypes or "").split(",") if d.strip() and d.strip() != "fp32"]
    return ENGINES + (["embd-python"] if a.python else []) + ["embd-" + d for d in extra]


def engine_rank(e):
    order = ENGINES + ["embd-python"] + ["embd-" + d for d in LOWP_DTYPES]
    return order.index(e) if e in order else len(order)


def label(e):
    if e in LABEL:
        return LABEL[e]
    if e.endswith("-noamx"):
        return f"embd --dtype {e[5:-6]}, EMBD_CPU_AMX=0"
    return f"embd --dtype {e[5:]}"
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


def model_dims(model_dir):
    """(H, I, L) of a BERT-style config.json."""
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    return c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]


def useful_flops(model_dir, counts):
    """The model FLOPs a forward pass needs for sequences of these token
    counts, without padding: per token 2*(4*H*H + 2*H*I)*L for the linear
    layers plus 4*len*H*L for attention (scores and the weighted sum)."""
    H, I, L = model_dims(model_dir)
    return sum(n * 2 * (4 * H * H + 2 * H * I) * L + 4 * n * n * H * L for n in counts)


def roofline(model_dir, threads, tokens, reps):
    """torch's fp32 F.linear rate (GFLOP/s, median of reps) on the model's
    four linear shapes at `tokens` tokens, and the four together (total FLOPs
    over total time)."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    H, I, _ = model_dims(model_dir)
    shapes = []
    for op, k, n in (("qkv", H, 3 * H), ("out", H, H), ("up", H, I), ("down", I, H)):
        x, w = torch.randn(tokens, k), torch.randn(n, k) / k ** 0.5
        with torch.no_grad():
            # Warm-up of 0.3 s: a fresh process's first calls start threads and fault
            # pages in (the first shape measured half its rate without it).
            t0, calls = time.perf_counter(), 0
            while time.perf_counter() - t0 < 0.3:
                F.linear(x, w)
                calls += 1
            iters = max(1, int(0.05 * calls / (time.perf_counter() - t0)))
            rates = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(iters):
                    F.linear(x, w)
                rates.append(2 * tokens * k * n * iters / (time.perf_counter() - t0) / 1e9)
        shapes.append({"op": op, "K": k, "N": n, "gflops": statistics.median(rates)})
    flops = sum(2 * tokens * s["K"] * s["N"] for s in shapes)
    secs = sum(2 * tokens * s["K"] * s["N"] / (s["gflops"] * 1e9) for s in shapes)
    conf = torch.__config__.show()
    blas = next((l.split("=", 1)[1].strip(" ,") for l in conf.replace(",", "\n").splitlines()
                 if "BLAS_INFO=" in l), "?")
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        cap = "?"
    return {"tokens": tokens, "threads": threads, "torch": torch.__version__, "blas": blas,
            "cpu_capability": cap, "shapes": shapes, "gflops": flops / secs / 1e9,
            "reps": reps}


def worker(a):
    if a.engine == "roofline":
        print(json.dumps(roofline(a.model, a.threads, a.tokens, a.reps)))
        return
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
    elif a.engine == "embd-python":
        # the Python package with fastembed's API, from the build tree
        # (--pypath), in process: what a fastembed user gets by changing
        # the import; no embedding cache (the texts are embedded twice)
        sys.path.insert(0, a.pypath)
        import embd
        m = embd.TextEmbedding(os.path.basename(os.path.normpath(a.model)),
                               specific_model_path=a.model, threads=a.threads, cache="off",
                               cuda=False)
        list(m.embed(texts[:32]))
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        vecs = np.array(list(m.embed(texts)))
        secs = time.perf_counter() - t0
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


def embd_env(a):
    """The environment of embd's runs: EMBD_CPU_ISA from --isa."""
    return dict(os.environ, EMBD_CPU_ISA=a.isa) if a.isa else None


def run_engine(a, engine, model_dir, files, out):
    """One timed run: {'secs', 'rss_mib', 'load_s'?}."""
    if engine == "embd" or engine.startswith("embd-") and engine != "embd-python":
        cmd = [a.embd, "embed", "-m", model_dir, "-i", files["jsonl"], "-o", out or "/dev/null",
               "--format", "npy", "--cache", "off", "-q", "--threads", str(a.threads)]
        env = embd_env(a)
        if engine != "embd":
            cmd += ["--dtype", engine[5:].removesuffix("-noamx")]
        if engine.endswith("-noamx"):
            env = dict(env or os.environ, EMBD_CPU_AMX="0")
        wall, rss, _ = timed(cmd, env=env)
        return {"secs": wall, "rss_mib": rss}
    onnx = os.path.join(a.onnx_root, os.path.basename(os.path.normpath(model_dir)))
    cmd = [sys.executable, os.path.abspath(__file__), "worker", "--engine", engine, "--model",
           model_dir, "--onnx", onnx, "--texts", files["bin"], "--threads", str(a.threads)]
    if engine == "embd-python":
        cmd += ["--pypath", a.python]
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
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem, 1), "isa": cpu_flags()}


FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16",
         "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags():
    """The flags of FLAGS this CPU has (/proc/cpuinfo)."""
    have = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                break
    return [x for x in FLAGS if x in have]


def isa_of_flags(flags, forced=None):
    """The kernel set embd picks on a CPU with these flags (isa.c's rule),
    or the forced one."""
    if forced:
        return forced
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"} <= set(flags):
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= set(flags) else "baseline"


def embd_kernels(a, flags):
    """(kernel set, how it was known): `embd doctor`'s "cpu kernels: SET
    (why)" line under embd's environment, else derived from the flags and
    --isa."""
    try:
        p = subprocess.run([a.embd, "doctor"], env=embd_env(a), capture_output=True, text=True,
                           timeout=120)
        for line in (p.stdout + p.stderr).splitlines():
            if line.startswith("cpu kernels:"):
                v = line.split(":", 1)[1].strip()
                return v.split()[0], f"embd doctor: {v}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return isa_of_flags(flags, a.isa), "derived from the CPU flags" + (
        f" and EMBD_CPU_ISA={a.isa}" if a.isa else "")


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
    engines = engines_of(a)
    for si, n in enumerate(sizes):
        if n > len(texts):
            res["skipped"].append(f"{n} documents: the corpus has {len(texts)}")
            continue
        runs = a.big_runs if si == len(sizes) - 1 and len(sizes) > 1 else a.runs
        files = write_inputs(texts, tmp, n)
        for model_dir in models:
            name = os.path.basename(model_dir)
            counts = token_counts(model_dir, texts[:n])
            tok_n = sum(counts)
            prev = [r for r in res["runs"] if r["model"] == name and r["docs"] < n]
            stamp = {"cpu": res["machine"]["cpu"], "cores": res["machine"]["cores"],
                     "flags": res["machine"]["isa"], "isa": res["kernels"],
                     "useful_gflop": useful_flops(model_dir, counts) / 1e9}
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
                        "rss_mib": [], "load_s": [], "load": [], **stamp} for e in engines}
            if name in res.get("roofline", {}):
                rows["embd"]["roofline"] = res["roofline"][name]
            vec = {}
            for r in range(runs):
                k = r % len(engines)
                for e in engines[k:] + engines[:k]:
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
            for e in engines:
                row = rows[e]
                row["cos_min"], row["cos_mean"] = cosines(vec[e], vec["st"])
                row["load_med"] = statistics.median(row["load_s"]) if row["load_s"] else 0
                res["runs"].append(row)
            json.dump(res, open(os.path.join(a.results, "results.json"), "w"), indent=1)


def bench_roofline(a):
    """{model name: roofline(...)} for every model, each in a worker process."""
    out = {}
    for name in a.models.split(","):
        model_dir = os.path.join(a.models_dir, name)
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "worker", "--engine",
                            "roofline", "--model", model_dir, "--texts", "-", "--threads",
                            str(a.threads), "--tokens", str(a.roofline_tokens), "--reps", "7"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"embd: the torch roofline of {name} failed: {p.stderr.strip()[-2000:]}")
        out[name] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"bench: {name} roofline (torch F.linear, T={a.roofline_tokens}): "
              f"{out[name]['gflops']:.0f} GFLOP/s", file=sys.stderr, flush=True)
    return out


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
    env = embd_env(a)
    subprocess.run(cmd, input="hello world\n", text=True, check=True, capture_output=True,
                   env=env)
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, input="hello world\n", text=True, check=True, capture_output=True,
                       env=env)
        walls.append(time.perf_counter() - t0)
    res["cold_start_s"] = walls


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

LABEL = {"embd": "embd", "fastembed": "fastembed (defaults, corpus order)",
         "fastembed-sorted": "fastembed (length-sorted input)",
         "st": "sentence-transformers (batch 32)",
         "embd-python": "embd (Python, `embd.TextEmbedding`, in process)"}
TARGET = {"fastembed": 3.0, "fastembed-sorted": 1.5, "st": 2.0}
# issue 20: ≥ 1.5x sentence-transformers with embd's AVX-512 kernels (2x with
# AVX2); embd's bf16 / int8 rows ≥ 2.5x sentence-transformers' fp32
TARGET_ST = {"avx512": 1.5}
TARGET_LOWP_ST = 2.5


def target_of(engine, isa):
    return TARGET_ST.get(isa, TARGET["st"]) if engine == "st" else TARGET.get(engine)


def run_line(r):
    """When and how one run of the suite ran, and the load around it."""
    return (f"`bench/run {r.get('argv', '')}` on {r['date']} (total {r['total_min']:.0f} min; "
            f"**load average {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after, "
            f"{r['load_min']:.1f} to {r['load_max']:.1f} (1-min) at the starts of the runs**)")


ISA_TITLE = {"avx512": "AVX-512", "avx2": "AVX2", "baseline": "baseline x86-64"}


def isa_order(isas):
    """Kernel sets, widest first."""
    rank = {k: i for i, k in enumerate(ISA_TITLE)}
    return sorted(isas, key=lambda k: (rank.get(k, len(rank)), k))


def roofline_line(r):
    """What torch's matmul rate was, and embd's useful rate against it."""
    f = r["roofline"]
    shapes = ", ".join(f"{s['op']} {s['gflops']:.0f}" for s in f["shapes"])
    useful = r["useful_gflop"] / statistics.median(r["secs"])
    return (f"{r['model']}: torch {f['torch']} F.linear fp32 ({f['blas']}, CPU capability "
            f"{f['cpu_capability']}), T = {f['tokens']}, {f['threads']} threads, median of "
            f"{f['reps']}: {shapes}; the four together **{f['gflops']:.0f} GFLOP/s**. embd end "
            f"to end at {r['docs']} documents: {useful:.1f} useful GFLOP/s = "
            f"**{100 * useful / f['gflops']:.0f}% of it** (target ≥ 80%).")


def table(res):
    v = res["versions"]
    L = []
    general = (f"The machine is shared with other jobs, so the absolute rates are pessimistic; "
               f"the ratios come from interleaved runs under the same load. Threads: "
               f"{res['threads']} for every engine. fp32 everywhere but the rows "
               f"`embd --dtype bf16|int8` (embd's opt-in reduced precisions), whose speed-up "
               f"is sentence-transformers' fp32 time over theirs.")
    if res.get("parts"):
        L.append(f"Merged by `bench/suite.py --report` from {len(res['parts'])} runs of the "
                 f"suite; each row's engines ran interleaved in one of them:")
        L.append("")
        for part in res["parts"]:
            L.append(f"- {run_line(part)}: {', '.join(part['sizes'])}")
        L.append("")
        L.append(general)
    else:
        L.append(f"Generated by {run_line(res)}. {general}")
    L.append("")
    L.append(f"Peers: fastembed {v['fastembed']} (onnxruntime {v['onnxruntime']}) on an ONNX "
             f"export of the same weights (`bench/export_onnx.py`), sentence-transformers "
             f"{v['sentence-transformers']} (torch {v['torch']}, CPU). Input: the first N "
             f"Debian package descriptions in the corpus's order. embd is timed from process "
             f"start to exit (model load included); the peers with their model loaded and "
             f"warmed up. Speed-up = peer's median time / embd's median time (> 1: embd is "
             f"faster). Cosine: against sentence-transformers' vectors of the same texts. "
             f"Useful GFLOP/s: the model's FLOPs for these texts without padding (per token "
             f"2·(4·H² + 2·H·I)·L, plus 4·len·H·L for attention) over the median time; the "
             f"share is of the roofline, torch's fp32 matmul rate on the model's four linear "
             f"shapes measured in the same run. One table per kernel set embd ran (`embd "
             f"doctor`'s \"cpu kernels\", EMBD_CPU_ISA from `--isa`), each with its CPU.")
    for isa in isa_order({r["isa"] for r in res["runs"]}):
        rows = [r for r in res["runs"] if r["isa"] == isa]
        cpus = sorted({(r["cpu"], r["cores"], tuple(r["flags"])) for r in rows})
        L.append("")
        L.append(f"### {ISA_TITLE.get(isa, isa)}: embd's {isa} kernels")
        L.append("")
        L.append("Machine: " + "; ".join(f"{c}, {n} cores ({', '.join(fl)})"
                                         for c, n, fl in cpus) + ".")
        roof = [r for r in rows if r["engine"] == "embd" and r.get("roofline")]
        if roof:
            L.append("")
            L.append("Roofline, measured in the same run:")
            L.append("")
            for r in roof:
                L.append(f"- {roofline_line(r)}")
        L.append("")
        L.append("| model | docs (tokens) | engine | runs | median s | docs/s | tokens/s | "
                 "embd speed-up | target | peak RSS MiB | cosine to ST min / mean | "
                 "useful GFLOP/s (% of roofline) |")
        L.append("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |")
        for row in rows:
            med = statistics.median(row["secs"])
            embd = next(r for r in rows if r["model"] == row["model"]
                        and r["docs"] == row["docs"] and r["engine"] == "embd")
            sp = med / statistics.median(embd["secs"])
            tgt = ""
            t = target_of(row["engine"], isa)
            if t:
                tgt = f"≥ {t}x: {'met' if sp >= t else 'NOT met'}"
            lowp = row["engine"].startswith("embd-") and row["engine"] != "embd-python"
            if lowp:
                st = next((r for r in rows if r["model"] == row["model"]
                           and r["docs"] == row["docs"] and r["engine"] == "st"), None)
                sp = statistics.median(st["secs"]) / med if st else float("nan")
                tgt = (f"≥ {TARGET_LOWP_ST}x ST: "
                       f"{'met' if sp >= TARGET_LOWP_ST else 'NOT met'}")
            useful = "—"
            if row.get("useful_gflop"):
                useful = f"{row['useful_gflop'] / med:.1f}"
                if embd.get("roofline"):
                    useful += f" ({100 * row['useful_gflop'] / med / embd['roofline']['gflops']:.0f}%)"
            L.append(f"| {row['model']} | {row['docs']} ({row['tokens']}) | "
                     f"{label(row['engine'])} | {len(row['secs'])} | {med:.2f} | "
                     f"{row['docs'] / med:.1f} | {row['tokens'] / med:.0f} | "
                     f"{'—' if row['engine'] == 'embd' else f'{sp:.2f}x' + (' ST' if lowp else '')} | {tgt} | "
                     f"{max(row['rss_mib']):.0f} | {row['cos_min']:.7f} / "
                     f"{row['cos_mean']:.7f} | {useful} |")
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
        isas = isa_order({r["isa"] for r in res["runs"]})
        for isa, style in zip(isas, ("-", "--", ":", "-.")):
            for e in ENGINES:
                rows = sorted((r for r in res["runs"] if r["model"] == model
                               and r["engine"] == e and r["isa"] == isa), key=lambda r: r["docs"])
                ax.plot([r["docs"] for r in rows],
                        [r["docs"] / statistics.median(r["secs"]) for r in rows], style,
                        marker="o", label=f"{LABEL[e]} ({ISA_TITLE.get(isa, isa)})")
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
        ap.add_argument("--pypath")
        ap.add_argument("--texts", required=True)
        ap.add_argument("--out")
        ap.add_argument("--threads", type=int, default=os.cpu_count())
        ap.add_argument("--reps", type=int, default=3)
        ap.add_argument("--tokens", type=int, default=2048)
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
    ap.add_argument("--python", metavar="DIR",
                    help="also time embd's Python package (fastembed's API) from DIR, the "
                         "build tree's python/ folder (bench/run passes build/release/python)")
    ap.add_argument("--dtypes", default="",
                    help="embd's reduced precisions to time as well, e.g. bf16,int8 (rows "
                         "'embd --dtype X' against sentence-transformers' fp32); "
                         "bf16-noamx and int8-noamx: the same with EMBD_CPU_AMX=0, the "
                         "512-bit kernels on a CPU with AMX")
    ap.add_argument("--isa", choices=("avx2", "avx512"),
                    help="the kernel set embd runs (EMBD_CPU_ISA for its runs; default: "
                    "embd's own choice); recorded in every row either way")
    ap.add_argument("--roofline-tokens", type=int, default=2048,
                    help="tokens of torch's matmul roofline on each model's linear shapes, a "
                    "typical packed batch (default: %(default)s)")
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
    m = machine()
    kernels, how = embd_kernels(a, m["isa"])
    print(f"bench: {m['cpu']} ({', '.join(m['isa'])}); embd kernels: {kernels} ({how})",
          file=sys.stderr, flush=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "t_start": t_start,
           "machine": m, "kernels": kernels, "kernels_how": how, "versions": versions(),
           "threads": a.threads, "load_before": os.getloadavg(), "runs": [], "skipped": [],
           "argv": os.environ.get("BENCH_ARGS", " ".join(sys.argv[1:]))}
    res["roofline"] = bench_roofline(a)
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
    m = res["machine"]
    for r in res["runs"]:
        # Runs before the kernel sets were recorded: the machine's, from its flags.
        r.setdefault("cpu", m["cpu"])
        r.setdefault("cores", m["cores"])
        r.setdefault("flags", m["isa"])
        r.setdefault("isa", isa_of_flags(r["flags"]))
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


def size_name(r):
    return f"{r['model']} at {r['docs']} documents, {r['isa']}"


def expand(p):
    """A merged result as the runs it was made from, each with its rows."""
    if not p.get("parts"):
        return [p]
    out = []
    for meta in p["parts"]:
        q = {k: v for k, v in p.items() if k not in ("runs", "skipped", "parts")}
        q.update({k: v for k, v in meta.items() if k != "sizes"})
        q["runs"] = [r for r in p["runs"] if size_name(r) in meta["sizes"]
                     or f"{r['model']} at {r['docs']} documents" in meta["sizes"]]
        q["skipped"] = []
        out.append(q)
    out[-1]["skipped"] = p["skipped"]
    return out


def merge_results(parts):
    """One result from several runs, in the order given (a merged result
    counts as the runs it was made from): a later run's rows for a model,
    size and kernel set replace all of an earlier run's rows for it (the
    engines of a row stay from one interleaved run); the tokenizer and cold
    start come from the last run that measured them. Rows keep their own CPU,
    so runs from different machines sit in their kernel set's table."""
    parts = [q for p in parts for q in expand(p)]
    res = {k: v for k, v in parts[-1].items() if k not in ("runs", "skipped")}
    runs, skipped, meta = [], [], []
    key = lambda r: (r["model"], r["docs"], r["isa"])  # noqa: E731
    for p in parts:
        got = {key(r) for r in p["runs"]}
        runs = [r for r in runs if key(r) not in got] + p["runs"]
        skipped = [x for x in skipped if not any(x.startswith(f"{m} at {d} documents")
                                                 for m, d, _ in got)] + p["skipped"]
        for k in ("tokenizer", "cold_start_s"):
            if k in p:
                res[k] = p[k]
    for p in parts:
        mine = {id(r) for r in p["runs"]}
        kept = sorted({key(r) for r in runs if id(r) in mine}, key=lambda k: (k[2], k[1], k[0]))
        if kept:
            meta.append({k: p[k] for k in ("argv", "date", "total_min", "load_before",
                                           "load_after", "load_min", "load_max")})
            meta[-1]["sizes"] = [f"{m} at {d} documents, {i}" for m, d, i in kept]
    res["runs"] = sorted(runs, key=lambda r: (isa_order(["avx512", "avx2", "baseline",
                                                         r["isa"]]).index(r["isa"]),
                                              r["docs"], r["model"],
                                              engine_rank(r["engine"])))
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
