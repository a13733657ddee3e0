#!/usr/bin/env python3
"""Decode parity: embd_tokenizer_decode (through tok_dump --decode, $TOK_DUMP)
and the Python package's Model.decode (when $PYTHONPATH holds the package
built in the tree) against Hugging Face `tokenizers`' Tokenizer.decode, with
skip_special_tokens true and false, for all-MiniLM-L6-v2's tokenizer.json:
the ids of every title and text of $EMBD_TEST_CORPUS (truncated to 256 as
the model), random ids, and sequences built to trigger the WordPiece
decoder's clean_up_tokenization (" .", " n't", " do not", ...; added tokens
with spaces in them, a special added token spelled like a vocabulary token),
also for tokenizer.json variants: cleanup false, another prefix, an empty
prefix, no decoder. An id out of range must fail naming its position, and an
unsupported decoder type must fail with EMBD_ERR_UNSUPPORTED. With the
package, Model.tokenize_offsets must also give tokenizers' ids and
(character) offsets on part of the corpus and on hard texts, for
all-MiniLM-L6-v2 and for e5-small-ml-random's SentencePiece tokenizer (when
EMBD_TEST_MODELS has it). Skips (77)
without the model or the corpus."""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

try:
    from tokenizers import Tokenizer
except ImportError:
    print("SKIPPED: python tokenizers not installed")
    sys.exit(77)

models = os.environ.get("EMBD_TEST_MODELS", "")
corpus = os.environ.get("EMBD_TEST_CORPUS", "")
model = os.path.join(models, "all-MiniLM-L6-v2")
path = os.path.join(model, "tokenizer.json")
if not models or not os.path.exists(path):
    print("SKIPPED: %s not found (set EMBD_TEST_MODELS)" % path)
    sys.exit(77)
if not corpus or not os.path.exists(corpus):
    print("SKIPPED: corpus %r not found (set EMBD_TEST_CORPUS)" % corpus)
    sys.exit(77)
tok_dump = os.environ.get("TOK_DUMP")
if not tok_dump:
    sys.exit("TOK_DUMP not set")
try:
    import embd
except ImportError as exc:
    embd = None
    print("note: the embd package is not importable (%s): Model.decode not checked" % exc)


def dump_decode(tokenizer_json, idlists, skip):
    inp = "".join(" ".join(map(str, ids)) + "\n" for ids in idlists)
    cmd = [tok_dump, "--decode", tokenizer_json] + ([] if skip else ["--keep-special"])
    out = subprocess.run(cmd, input=inp, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("tok_dump --decode failed: " + out.stderr)
    return [line if line.startswith("!") else json.loads(line) for line in out.stdout.split("\n")[: len(idlists)]]


def compare(name, tokenizer_json, idlists, engine=None):
    tk = Tokenizer.from_file(tokenizer_json)
    bad = 0
    for skip in (True, False):
        want = tk.decode_batch(idlists, skip_special_tokens=skip)
        got = {"embd_tokenizer_decode": dump_decode(tokenizer_json, idlists, skip)}
        if engine is not None:
            got["Model.decode"] = [engine.decode(ids, skip_special_tokens=skip) for ids in idlists]
        for who, g in got.items():
            for ids, w, x in zip(idlists, want, g):
                if w != x:
                    bad += 1
                    if bad <= 10:
                        print("  MISMATCH (%s, skip_special_tokens=%s) %s\n    tokenizers %r\n    embd       %r"
                              % (who, skip, ids[:20], w[:120], x[:120]))
            if len(g) != len(want):
                bad += 1
    print("%s: %d id lists x 2%s, %d mismatches" % (name, len(idlists), " (and Model.decode)" if engine else "", bad))
    return bad


def variant(tmp, name, decoder="keep", added=()):
    d = json.load(open(path))
    if decoder != "keep":
        d["decoder"] = decoder
    n = max(max(d["model"]["vocab"].values()), max(a["id"] for a in d["added_tokens"])) + 1
    for content, special in added:  # a content in the vocabulary keeps its id, as tokenizers does
        i = d["model"]["vocab"].get(content, n)
        d["added_tokens"].append({"id": i, "content": content, "single_word": False, "lstrip": False,
                                  "rstrip": False, "normalized": False, "special": special})
        n += i == n
    p = os.path.join(tmp, name + ".json")
    json.dump(d, open(p, "w"))
    return p


t_start = time.time()
texts = []
with open(corpus, encoding="utf-8") as f:
    for line in f:
        if line.strip():
            rec = json.loads(line)
            texts.append(rec.get("title") or "")
            texts.append(rec.get("text") or "")
if len(texts) < 60000:
    sys.exit("corpus too small: %d texts, want >= 60000" % len(texts))
tk = Tokenizer.from_file(path)
tk.enable_truncation(256)
tk.no_padding()
encs = tk.encode_batch(texts)
corpus_ids = [e.ids for e in encs]
m = embd.Model(model, device="cpu") if embd else None

failed = compare("corpus", path, corpus_ids, m)
vocab = tk.get_vocab()
V = tk.get_vocab_size()
r = random.Random(11)
rand_ids = [[r.randrange(V) for _ in range(r.randint(0, 30))] for _ in range(5000)]
words = [".", "?", "!", ",", "'", "n", "t", "do", "not", "s", "m", "ve", "re", "don", "i", "##s", "##t",
         "##.", "a", "[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]", "#", "##", "###", "##n", "\u00e9", "\u4e2d"]
pieces = [vocab[w] for w in words if w in vocab]
clean_ids = [[r.choice(pieces) for _ in range(r.randint(0, 16))] for _ in range(5000)]
failed += compare("random ids", path, rand_ids, m)
failed += compare("cleanup pieces", path, clean_ids, m)

with tempfile.TemporaryDirectory() as tmp:
    # "hello" and "##ab": added tokens spelled like vocabulary tokens, one special
    added = [("do not", False), ("n't", False), (" ' ", False), ("x .y", False), ("[X]", True), ("##", False),
             ("ab##", False), ("##ab", False), ("hello", True)]
    p = variant(tmp, "added", added=added)
    extra = list(range(V, V + len(added) - 2)) + [vocab["hello"], vocab["##ab"]]
    mixed = [[r.choice(pieces + extra) for _ in range(r.randint(0, 16))] for _ in range(5000)]
    failed += compare("added tokens", p, mixed)
    for name, dec in [("cleanup false", {"type": "WordPiece", "prefix": "##", "cleanup": False}),
                      ("prefix #", {"type": "WordPiece", "prefix": "#", "cleanup": True}),
                      ("empty prefix", {"type": "WordPiece", "prefix": "", "cleanup": True}),
                      ("no decoder", None)]:
        failed += compare(name, variant(tmp, name.replace(" ", "_"), decoder=dec), rand_ids[:2000] + clean_ids[:2000])
    # errors
    got = dump_decode(path, [[101, 7592, V], [-1], [2023, 2003, 1, 40000000]], True)
    want = ["!1 decode: id %d at position 2 is not a token" % V, "!1 decode: id -1 at position 0 is not a token",
            "!1 decode: id 40000000 at position 3 is not a token"]
    for g, w in zip(got, want):
        if not (isinstance(g, str) and g.startswith(w)):
            print("  BAD ERROR: got %r, want %r..." % (g, w))
            failed += 1
    got = dump_decode(variant(tmp, "bytelevel", decoder={"type": "ByteLevel", "add_prefix_space": True,
                                                         "trim_offsets": True, "use_regex": True}),
                      [[101, 7592]], True)
    if not (isinstance(got[0], str) and got[0].startswith("!4 ") and "ByteLevel" in got[0]):
        print("  BAD ERROR for an unsupported decoder: %r" % got[0])
        failed += 1
    print("errors: out-of-range ids and an unsupported decoder checked")

if m is not None:
    try:
        m.decode([101, V])
        print("  Model.decode accepted an id out of range")
        failed += 1
    except ValueError as exc:
        if "position 1" not in str(exc):
            print("  Model.decode error does not name the position: %s" % exc)
            failed += 1
    # Model.tokenize_offsets: character offsets, as tokenizers' Python API
    hard = ["", "Hello, World! [SEP] x", "caf\u00e9 na\u00efve \u0130stanbul \u00c5", "\u4e2d\u6587abc\u4e2d",
            "\ud55c\uad6d\uc5b4", "\U0001f468\u200d\U0001f469 emoji\U0001f600", "a\x00b\x01c", "x" * 101 + " y",
            "e\u0301\u0301 \u0344", "word " * 300, "[MASK][CLS]", " \u3000 "]
    sample = texts[::20] + hard

    def offsets_check(model, ref_tk, what, sample):
        """Model.tokenize_offsets against tokenizers, with and without the
        special tokens; returns the mismatches."""
        bad = 0
        for special in (True, False):
            ref = ref_tk.encode_batch(sample, add_special_tokens=special)
            for s, e in zip(sample, ref):
                ids, offs = model.tokenize_offsets(s, add_special_tokens=special)
                if ids != e.ids or offs != e.offsets:
                    bad += 1
                    if bad <= 10:
                        print("  MISMATCH (%s) %r\n    tokenizers %s\n    embd       %s"
                              % (what, s[:60], list(zip(e.ids, e.offsets))[:10], list(zip(ids, offs))[:10]))
        print("%s: %d texts x 2, %d mismatches" % (what, len(sample), bad))
        return bad

    failed += offsets_check(m, tk, "Model.tokenize_offsets", sample)
    m.close()
    # ... and for a SentencePiece model (multilingual-e5's tokenizer) with
    # texts its charsmap folds, expands or removes
    e5 = os.path.join(models, "e5-small-ml-random")
    if os.path.exists(os.path.join(e5, "tokenizer.json")):
        import embd

        me = embd.Model(e5, device="cpu")
        tke = Tokenizer.from_file(os.path.join(e5, "tokenizer.json"))
        tke.enable_truncation(512)  # the model's max_seq_length
        sp = sample + ["\ufb01ne \u2460 \uff21\uff22 \u00bd  two  spaces", "\u200bzero\u200dwidth\ufeff",
                       "\u041f\u0440\u0438\u0432\u0435\u0442 \u0645\u0631\u062d\u0628\u0627 <mask> \u2581x"]
        failed += offsets_check(me, tke, "Model.tokenize_offsets, e5-small-ml-random (SentencePiece)", sp)
        me.close()
    else:
        print("note: no e5-small-ml-random in EMBD_TEST_MODELS: SentencePiece offsets through the package "
              "not checked")
print("total %.1f s, %d mismatches" % (time.time() - t_start, failed))
sys.exit(1 if failed else 0)
