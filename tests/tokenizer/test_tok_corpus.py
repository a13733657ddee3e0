#!/usr/bin/env python3
"""Corpus parity: the title and the text of every record of $EMBD_TEST_CORPUS
(Debian package descriptions, JSONL with id/title/text) tokenized by embd
(one tok_dump process) and by Hugging Face `tokenizers` (encode_batch), with
the all-MiniLM-L6-v2 tokenizer.json and max 256; every id list must be equal.
Prints the count. Skips (77) without the corpus or the model."""
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

corpus = os.environ.get("EMBD_TEST_CORPUS", "")
models = os.environ.get("EMBD_TEST_MODELS", "")
path = os.path.join(models, "all-MiniLM-L6-v2", "tokenizer.json")
if not corpus or not os.path.exists(corpus):
    print("SKIPPED: corpus %r not found (set EMBD_TEST_CORPUS)" % corpus)
    sys.exit(77)
if not models or not os.path.exists(path):
    print("SKIPPED: %s not found (set EMBD_TEST_MODELS)" % path)
    sys.exit(77)
tok_dump = os.environ.get("TOK_DUMP")
if not tok_dump:
    sys.exit("TOK_DUMP not set")

texts = []
with open(corpus, encoding="utf-8") as f:
    for line in f:
        if line.strip():
            r = json.loads(line)
            texts.append(r.get("title") or "")
            texts.append(r.get("text") or "")

tk = Tokenizer.from_file(path)
tk.enable_truncation(256)
tk.no_padding()
ref = [e.ids for e in tk.encode_batch(texts)]

with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    for s in texts:
        f.write(json.dumps(s) + "\n")
    name = f.name
try:
    with open(name) as inp:
        out = subprocess.run([tok_dump, path, "256"], stdin=inp, capture_output=True, text=True)
finally:
    os.unlink(name)
if out.returncode != 0:
    sys.exit("tok_dump failed: " + out.stderr)
lines = out.stdout.split("\n")
bad = 0
for i, want in enumerate(ref):
    got = [int(x) for x in lines[i].split()] if i < len(lines) else None
    if got != want:
        bad += 1
        if bad <= 10:
            print("MISMATCH text %d %r\n  tokenizers %s\n  embd       %s" % (i, texts[i][:100], want[:30],
                                                                       got[:30] if got else got))
print("%d texts (%d tokens), %d mismatches" % (len(texts), sum(map(len, ref)), bad))
if len(texts) < 60000:
    sys.exit("corpus too small: %d texts, want >= 60000" % len(texts))
sys.exit(1 if bad else 0)
