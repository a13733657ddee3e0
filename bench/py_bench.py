#!/usr/bin/env python3
"""Benchmarks of the Python package (python/, issue 19).

binding   What the binding itself costs, ctypes over libembd.so against the
          CPython extension embd._embd, on N texts (default 10,000 corpus
          documents): both go through the same scheduler call
          (embd_sched_embed_opts) with the embedding cache warmed, so that
          almost no model work is left and the difference is converting the
          texts and the call (median of --runs). Also the latency of one
          short text per call (1,000 calls, cache off), which is dominated by
          the engine.

overhead  Python against the CLI on N documents (default 10,000), both from
          process start to exit, model load included, interleaved --runs
          times, medians: `embd embed -i docs.jsonl --format npy -o FILE
          --cache off -q` against a Python process that reads the same JSONL,
          runs fastembed-style `list(TextEmbedding(model, cache="off")
          .embed(docs))` and saves the (n, D) array. Both run on the
          engine's own thread pool, with the same environment.

usage: bench/py_bench.py binding|overhead --model DIR [--docs N] [--runs R]
       [--embd BIN] [--lib LIBEMBD] [--pythonpath DIR]

Run with the venv's python and PYTHONPATH=build/<dir>/python (or the wheel
installed). Prints a Markdown table and one JSON line.
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def corpus(n):
    path = os.environ.get("EMBD_TEST_CORPUS",
                          os.path.expanduser("~/.cache/embd/corpus/debian.jsonl"))
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            t = json.loads(line).get("text", "")
            if t:
                docs.append(t)
                if len(docs) == n:
                    break
    return docs


class EmbedOpts(ctypes.Structure):
    _fields_ = [("normalize", ctypes.c_int), ("truncate", ctypes.c_bool),
                ("prefix", ctypes.c_char_p), ("dimensions", ctypes.c_int)]


class EmbedInfo(ctypes.Structure):
    _fields_ = [("n_tokens", ctypes.POINTER(ctypes.c_size_t)), ("total_tokens", ctypes.c_size_t),
                ("bad_input", ctypes.c_size_t), ("bad_tokens", ctypes.c_size_t)]


class CtxParams(ctypes.Structure):
    _fields_ = [("device", ctypes.c_int), ("device_index", ctypes.c_int),
                ("dtype", ctypes.c_int), ("n_threads", ctypes.c_int),
                ("max_batch_tokens", ctypes.c_int), ("normalize", ctypes.c_bool),
                ("prefix", ctypes.c_char_p), ("cache_bytes", ctypes.c_size_t),
                ("cache_dir", ctypes.c_char_p), ("cache_map_bytes", ctypes.c_size_t),
                ("metrics_of", ctypes.c_void_p), ("gpu_memory_limit", ctypes.c_char_p)]


class SchedParams(ctypes.Structure):
    _fields_ = [("queue_texts", ctypes.c_size_t), ("max_batch_texts", ctypes.c_size_t),
                ("express", ctypes.c_void_p)]


class CtypesEngine:
    """The same engine as embd.Model, reached through ctypes."""

    def __init__(self, lib_path, model_dir, cache_bytes):
        lib = self.lib = ctypes.CDLL(lib_path)
        lib.embd_model_default_params.restype = ctypes.c_int  # struct of one int
        lib.embd_ctx_default_params.restype = CtxParams
        lib.embd_sched_default_params.restype = SchedParams
        lib.embd_embed_default_opts.restype = EmbedOpts
        lib.embd_model_dim.restype = ctypes.c_int
        lib.embd_last_error.restype = ctypes.c_char_p
        lib.embd_sched_embed_opts.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(EmbedOpts),
            ctypes.POINTER(EmbedInfo)]
        self.model, self.ctx, self.sched = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        if lib.embd_model_load(model_dir.encode(), ctypes.c_int(0), ctypes.byref(self.model)):
            raise RuntimeError(lib.embd_last_error().decode())
        p = lib.embd_ctx_default_params()
        p.cache_bytes = cache_bytes
        lib.embd_ctx_new.argtypes = [ctypes.c_void_p, CtxParams, ctypes.c_void_p]
        if lib.embd_ctx_new(self.model, p, ctypes.byref(self.ctx)):
            raise RuntimeError(lib.embd_last_error().decode())
        lib.embd_sched_new.argtypes = [ctypes.c_void_p, SchedParams, ctypes.c_void_p]
        if lib.embd_sched_new(self.ctx, lib.embd_sched_default_params(), ctypes.byref(self.sched)):
            raise RuntimeError(lib.embd_last_error().decode())
        self.dim = lib.embd_model_dim(self.model)
        self.opts = lib.embd_embed_default_opts()

    def embed(self, texts):
        b = [t.encode("utf-8") for t in texts]
        n = len(b)
        ptrs = (ctypes.c_char_p * n)(*b)
        lens = (ctypes.c_size_t * n)(*map(len, b))
        out = np.empty((n, self.dim), dtype=np.float32)
        info = EmbedInfo()
        s = self.lib.embd_sched_embed_opts(self.sched, ptrs, lens, n, out.ctypes.data, None,
                                           ctypes.byref(self.opts), ctypes.byref(info))
        if s:
            raise RuntimeError(self.lib.embd_last_error().decode())
        return out


def bench_binding(a):
    import embd
    docs = corpus(a.docs)
    lib = a.lib or os.path.join(os.path.dirname(embd._embd.__file__), "libembd.so")
    if not os.path.exists(lib):
        lib = os.path.join(ROOT, "build", "release", "libembd.so")
    ext = embd.Model(a.model, cache=256 << 20)
    ct = CtypesEngine(lib, a.model, 256 << 20)
    want = ext.embed(docs)  # warms the cache (every later call is all hits)
    assert np.array_equal(ct.embed(docs), want)
    res = {}
    for name, fn in (("ctypes", ct.embed), ("extension", ext.embed)):
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            fn(docs)
            times.append(time.perf_counter() - t0)
        res[name] = statistics.median(times)
    short = ["a short text about package management"]
    ext_off = embd.Model(a.model, cache="off")
    ct_off = CtypesEngine(lib, a.model, 0)
    for name, fn in (("ctypes_1", ct_off.embed), ("extension_1", ext_off.embed)):
        fn(short)
        t0 = time.perf_counter()
        for _ in range(1000):
            fn(short)
        res[name] = (time.perf_counter() - t0) / 1000
    n = len(docs)
    print(f"| binding | {n} texts, cache hits (ms, median of {a.runs}) | per text (µs) | "
          f"one short text per call, cache off (ms) |")
    print("| --- | --- | --- | --- |")
    for name in ("ctypes", "extension"):
        print(f"| {name} | {res[name] * 1e3:.1f} | {res[name] / n * 1e6:.2f} | "
              f"{res[name + '_1'] * 1e3:.2f} |")
    print(json.dumps({"bench": "binding", "docs": n, **res}))


PY_WORKER = """
import json, sys, time
import numpy as np
from embd import TextEmbedding
docs = [json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8")]
m = TextEmbedding(sys.argv[1], cache="off")
np.save(sys.argv[3], np.stack(list(m.embed(docs))))
"""


def bench_overhead(a):
    docs = corpus(a.docs)
    tmp = tempfile.mkdtemp(prefix="embd-pybench-")
    inp = os.path.join(tmp, "docs.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    env = dict(os.environ)
    if a.pythonpath:
        env["PYTHONPATH"] = a.pythonpath
    cli_env = dict(env)
    runs = {"cli": [], "python": []}
    outs = {"cli": os.path.join(tmp, "cli.npy"), "python": os.path.join(tmp, "py.npy")}
    cmds = {"cli": ([a.embd, "embed", "-m", a.model, "-i", inp, "--format", "npy", "-o",
                     outs["cli"], "--cache", "off", "-q"], cli_env),
            "python": ([sys.executable, "-c", PY_WORKER, a.model, inp, outs["python"]], env)}
    for r in range(a.runs):
        order = ["cli", "python"] if r % 2 == 0 else ["python", "cli"]
        for k in order:
            cmd, e = cmds[k]
            t0 = time.perf_counter()
            subprocess.run(cmd, env=e, check=True)
            runs[k].append(time.perf_counter() - t0)
            print(f"run {r + 1} {k}: {runs[k][-1]:.1f} s", file=sys.stderr, flush=True)
    same = np.array_equal(np.load(outs["cli"]), np.load(outs["python"]))
    cli, py = statistics.median(runs["cli"]), statistics.median(runs["python"])
    n = len(docs)
    print(f"| engine | {n} docs, process start to exit (s, median of {a.runs}) | docs/s | runs |")
    print("| --- | --- | --- | --- |")
    print(f"| embd embed (CLI) | {cli:.1f} | {n / cli:.1f} | "
          f"{', '.join(f'{x:.1f}' for x in runs['cli'])} |")
    print(f"| embd (Python, TextEmbedding) | {py:.1f} | {n / py:.1f} | "
          f"{', '.join(f'{x:.1f}' for x in runs['python'])} |")
    print(f"\nPython over the CLI: {100 * (py / cli - 1):+.1f}%; vectors bit-identical: {same}")
    print(json.dumps({"bench": "overhead", "docs": n, "cli": runs["cli"],
                      "python": runs["python"], "identical": bool(same)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["binding", "overhead"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--embd", default=os.path.join(ROOT, "build", "release", "embd"))
    ap.add_argument("--lib", help="libembd.so for ctypes (default: the package's, else "
                                  "build/release's)")
    ap.add_argument("--pythonpath", help="PYTHONPATH of the Python runs (overhead)")
    a = ap.parse_args()
    (bench_binding if a.what == "binding" else bench_overhead)(a)


if __name__ == "__main__":
    main()
