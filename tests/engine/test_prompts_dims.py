#!/usr/bin/env python3
"""Matryoshka dimensions and named prompts (issue 22), through `embd embed`
on the real all-MiniLM-L6-v2 ($EMBD_TEST_MODELS; skipped without it):

- --dimensions N: the first N components of the full vector, L2-normalised
  again (without --no-normalize), as sentence-transformers' truncate_dim
  followed by normalisation; 0 and D give the full vector; < 0 or > D is a
  usage error (exit 2).
- --prompt-name NAME: the prefix the model declares in
  config_sentence_transformers.json "prompts" (equal to --prefix with that
  text); an unknown name is a usage error naming the declared prompts; with
  --prefix too, a usage error; a malformed file (prompts not an object, a
  default_prompt_name that is not a prompt) fails the model load (exit 1).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

BIN = os.environ.get("EMBD_BIN", "embd")
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def run(args):
    return subprocess.run([BIN] + args, capture_output=True)


def embed(model, texts, tmp, extra=()):
    inp = os.path.join(tmp, "in.jsonl")
    out = os.path.join(tmp, "out.npy")
    with open(inp, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    p = run(["embed", "-m", model, "-i", inp, "-o", out, "--format", "npy", "-q",
             "--cache", "off", *extra])
    if p.returncode != 0:
        return p, None
    return p, np.load(out)


def main():
    root = os.environ.get("EMBD_TEST_MODELS")
    model = os.path.join(root or "", "all-MiniLM-L6-v2")
    if not root or not os.path.isfile(os.path.join(model, "config.json")):
        print("SKIP: all-MiniLM-L6-v2 not under EMBD_TEST_MODELS")
        return 77
    texts = ["a cat sat on the mat", "fast text embeddings", "", "Debian package manager"]
    with tempfile.TemporaryDirectory() as tmp:
        _, full = embed(model, texts, tmp)
        _, raw = embed(model, texts, tmp, ["--no-normalize"])
        for n in (1, 64, 128, 383):
            _, d = embed(model, texts, tmp, ["--dimensions", str(n)])
            want = full[:, :n] / np.linalg.norm(full[:, :n], axis=1, keepdims=True)
            check(d is not None and d.shape == (len(texts), n) and
                  np.abs(d - want).max() < 1e-6, f"--dimensions {n}")
            _, d = embed(model, texts, tmp, ["--dimensions", str(n), "--no-normalize"])
            check(d is not None and np.array_equal(d, raw[:, :n]),
                  f"--dimensions {n} --no-normalize keeps the first components as they are")
        for n in (0, 384):
            _, d = embed(model, texts, tmp, ["--dimensions", str(n)])
            check(d is not None and np.array_equal(d, full), f"--dimensions {n} is the full vector")
        for n in ("385", "-1", "x"):
            p, _ = embed(model, texts, tmp, ["--dimensions", n])
            check(p.returncode == 2 and b"dimensions" in p.stderr,
                  f"--dimensions {n}: exit {p.returncode} {p.stderr[:200]!r}")

        # a model folder with prompts: links to the real one, plus the file
        pm = os.path.join(tmp, "prompted")
        os.mkdir(pm)
        for name in os.listdir(model):
            if name != "config_sentence_transformers.json":
                os.symlink(os.path.join(model, name), os.path.join(pm, name))
        cfg = os.path.join(pm, "config_sentence_transformers.json")

        def write_cfg(obj):
            with open(cfg, "w", encoding="utf-8") as f:
                f.write(obj if isinstance(obj, str) else json.dumps(obj))

        write_cfg({"prompts": {"query": "query: ", "passage": "passage: "},
                   "default_prompt_name": None})
        _, a = embed(pm, texts, tmp, ["--prompt-name", "query"])
        _, b = embed(pm, texts, tmp, ["--prefix", "query: "])
        check(a is not None and b is not None and np.array_equal(a, b),
              "--prompt-name query equals --prefix 'query: '")
        check(a is not None and not np.array_equal(a, full), "the prompt changes the vectors")
        p, _ = embed(pm, texts, tmp, ["--prompt-name", "nope"])
        check(p.returncode == 2 and b"query, passage" in p.stderr,
              f"unknown prompt: exit {p.returncode} {p.stderr!r}")
        p, _ = embed(pm, texts, tmp, ["--prompt-name", "query", "--prefix", "x"])
        check(p.returncode == 2, f"--prompt-name with --prefix: exit {p.returncode}")
        for bad, what in (({"prompts": ["query: "]}, b"prompts"),
                          ({"prompts": {"q": 1}}, b"prompt"),
                          ({"prompts": {"q": "q: "}, "default_prompt_name": "z"},
                           b"default_prompt_name"),
                          ("{not json", b"config_sentence_transformers.json")):
            write_cfg(bad)
            p, _ = embed(pm, texts, tmp)
            check(p.returncode == 1 and what in p.stderr,
                  f"malformed prompts {bad!r}: exit {p.returncode} {p.stderr[:200]!r}")
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
