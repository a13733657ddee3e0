"""Shared helpers of the Python package's tests (tests/python), run by CTest.

Each test file is a pytest module that CTest runs as a script
(`python test_x.py`): run_pytest() runs pytest on it and exits 77 (CTest's
"skipped") when every test skipped itself, e.g. when the models are missing.

Environment (set by tests/python/CMakeLists.txt and scripts/test):
PYTHONPATH (the package assembled in the build tree), EMBD_BIN (the embd
binary), EMBD_SRC (the source tree), EMBD_TEST_MODELS, EMBD_TEST_CORPUS.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

SRC = os.environ.get("EMBD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("EMBD_BIN", "embd")
MINILM = "all-MiniLM-L6-v2"
BGE = "bge-small-random"


def model_dir(name):
    """The model folder under EMBD_TEST_MODELS, or None."""
    root = os.environ.get("EMBD_TEST_MODELS")
    if not root:
        return None
    d = os.path.join(root, name)
    return d if os.path.isfile(os.path.join(d, "config.json")) else None


def need_model(name):
    """The model folder, or skips the test."""
    d = model_dir(name)
    if not d:
        pytest.skip(f"{name} not under EMBD_TEST_MODELS")
    return d


def corpus_docs(n, max_chars=None):
    """The first n Debian descriptions (of at most max_chars), or skips."""
    path = os.environ.get("EMBD_TEST_CORPUS")
    if not path or not os.path.isfile(path):
        pytest.skip("EMBD_TEST_CORPUS not set or missing")
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            t = json.loads(line).get("text", "")
            if t and (max_chars is None or len(t) <= max_chars):
                docs.append(t)
                if len(docs) == n:
                    break
    return docs


def clean_env(extra=None):
    """The environment without EMBD_* settings that would change embd's behaviour."""
    keep = ("EMBD_BIN", "EMBD_SRC", "EMBD_TEST_MODELS", "EMBD_TEST_CORPUS", "EMBD_HOME")
    e = {k: v for k, v in os.environ.items() if not k.startswith("EMBD_") or k in keep}
    if extra:
        e.update(extra)
    return e


def run_cli(args, stdin=None, env=None, check=True):
    """Runs the embd binary; returns CompletedProcess (bytes)."""
    if isinstance(stdin, str):
        stdin = stdin.encode()
    p = subprocess.run([BIN] + args, input=stdin, capture_output=True, env=clean_env(env))
    if check and p.returncode != 0:
        raise AssertionError(f"embd {' '.join(args)} exited {p.returncode}: {p.stderr.decode()}")
    return p


def cli_embed(model, texts, tmp_path, extra=(), env=None):
    """`embd embed` of texts (JSONL in, so any character survives; .npy out) -> (n, D)."""
    inp = os.path.join(tmp_path, "in.jsonl")
    out = os.path.join(tmp_path, "out.npy")
    with open(inp, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    run_cli(["embed", "-q", "-m", model, "-i", inp, "--input-format", "jsonl", "--format", "npy",
             "-o", out, *extra], env=env)
    return np.load(out)


def hf_cache(tmp_path, repo_id, model, rev="0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face hub cache in tmp_path holding `model` as repo_id, laid out as
    huggingface_hub writes it (blobs linked from snapshots/REV, refs/main). Returns
    the cache folder (for HF_HUB_CACHE)."""
    root = os.path.join(tmp_path, "hub")
    repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", rev)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(rev)
    for dirpath, _, files in os.walk(model):
        rel = os.path.relpath(dirpath, model)
        os.makedirs(os.path.join(snap, rel), exist_ok=True)
        for name in files:
            blob = os.path.join(repo, "blobs", (rel + "_" + name).replace("/", "_"))
            if not os.path.exists(blob):
                os.symlink(os.path.join(dirpath, name), blob)
            os.symlink(os.path.relpath(blob, os.path.join(snap, rel)),
                       os.path.join(snap, rel, name))
    return root


class _Outcomes:
    def __init__(self):
        self.ran = self.skipped = 0

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and not report.skipped:
            self.ran += 1
        elif report.skipped:
            self.skipped += 1


def run_pytest(path):
    """Runs pytest on one file; 77 when nothing ran and something was skipped."""
    out = _Outcomes()
    rc = pytest.main([path, "-q", "-rs", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[out])
    if rc == 0 and out.ran == 0 and out.skipped:
        print("SKIPPED: every test skipped itself")
        return 77
    if rc == 5:  # no tests collected
        return 1
    return int(rc)


def tiny_model(dst, src_name=BGE, H=32, L=1, NH=2, I=64, seed=0):
    """A tiny random BERT (H 32, one layer) with `src_name`'s tokenizer and
    pooling, in dst: fast enough for tests that make thousands of calls."""
    from safetensors.numpy import save_file
    src = need_model(src_name)
    os.makedirs(os.path.join(dst, "1_Pooling"), exist_ok=True)
    for name in os.listdir(src):
        p = os.path.join(src, name)
        if os.path.isfile(p) and name not in ("config.json", "model.safetensors"):
            with open(p, "rb") as f, open(os.path.join(dst, name), "wb") as g:
                g.write(f.read())
    for sub in ("1_Pooling", "2_Normalize"):
        if os.path.isdir(os.path.join(src, sub)):
            os.makedirs(os.path.join(dst, sub), exist_ok=True)
    with open(os.path.join(src, "1_Pooling", "config.json")) as f:
        pool = json.load(f)
    pool["word_embedding_dimension"] = H
    with open(os.path.join(dst, "1_Pooling", "config.json"), "w") as f:
        json.dump(pool, f)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, intermediate_size=I)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    rng = np.random.default_rng(seed)
    V, P, TV = cfg["vocab_size"], cfg["max_position_embeddings"], cfg["type_vocab_size"]

    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {"embeddings.word_embeddings.weight": w(V, H),
         "embeddings.position_embeddings.weight": w(P, H),
         "embeddings.token_type_embeddings.weight": w(TV, H),
         "embeddings.LayerNorm.weight": 1 + w(H), "embeddings.LayerNorm.bias": w(H)}
    for l in range(L):
        p = f"encoder.layer.{l}."
        for m in ("query", "key", "value"):
            t[p + f"attention.self.{m}.weight"] = w(H, H)
            t[p + f"attention.self.{m}.bias"] = w(H)
        t[p + "attention.output.dense.weight"] = w(H, H)
        t[p + "attention.output.dense.bias"] = w(H)
        t[p + "attention.output.LayerNorm.weight"] = 1 + w(H)
        t[p + "attention.output.LayerNorm.bias"] = w(H)
        t[p + "intermediate.dense.weight"] = w(I, H)
        t[p + "intermediate.dense.bias"] = w(I)
        t[p + "output.dense.weight"] = w(H, I)
        t[p + "output.dense.bias"] = w(H)
        t[p + "output.LayerNorm.weight"] = 1 + w(H)
        t[p + "output.LayerNorm.bias"] = w(H)
    save_file(t, os.path.join(dst, "model.safetensors"))
    return dst
