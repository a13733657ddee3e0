"""Fidelity: embd's vectors against sentence-transformers' golden vectors.

For every model with fixtures in tests/fixtures/golden/<name>/ (texts.jsonl,
embeddings.npy written by scripts/gen-golden) whose weights are under
EMBD_TEST_MODELS/<name>: every text must reach cosine >= 0.99999 (fp32 on
both sides; the differences are summation order only). Also checks
--no-normalize (same direction, the model's own norm) and that a prefix
changes the result exactly like prepending the text.

U+0000 is a character, not the end of a text: BERT's normalizer drops it and
keeps the rest, so golden texts with a NUL put before, after and inside them
(Hugging Face `tokenizers` confirms their ids equal the golden ids) must give
the golden vectors, and texts such as "NUL? no: \u0000 after" must give the
vector of the text with its NULs removed; both read as JSONL ("\u0000"
escapes) and as lines (raw NUL bytes).
"""
import json
import os
import sys
import tempfile

import numpy as np

try:
    from tokenizers import Tokenizer
except ImportError:  # the ids precondition of the NUL checks is then not checked
    Tokenizer = None

sys.path.insert(0, os.path.dirname(__file__))
from common import FIXTURES, Checker, model_dir, run, skip  # noqa: E402

MIN_COS = 0.99999


def embed_npy(model, path, extra=()):
    with tempfile.NamedTemporaryFile(suffix=".npy") as out:
        run(["embed", "-m", model, "-i", path, "--format", "npy", "-o", out.name, "-q",
             *extra], check=True)
        return np.load(out.name)


def embed_texts(model, texts, fmt, extra=()):
    """Embeds texts written as fmt (jsonl, or lines: raw bytes, one text a line)."""
    with tempfile.NamedTemporaryFile("wb", suffix="." + ("jsonl" if fmt == "jsonl" else "txt"),
                                     delete=False) as f:
        for t in texts:
            f.write((json.dumps({"text": t}) if fmt == "jsonl" else t).encode() + b"\n")
        name = f.name
    try:
        return embed_npy(model, name, ["--input-format", fmt, *extra])
    finally:
        os.unlink(name)


# Texts with U+0000 and no golden vector: each must embed as the text without its NULs.
NUL_TEXTS = ["NUL? no: \x00 after", "\x00", "a\x00b\x00c", "\x00at the start", "at the end\x00",
             "\x00\x00\x00", "\x00both ends\x00", "in\x00side a word", "\x00" * 300 + "after 300 NULs",
             "[SEP]\x00[CLS]", "caf\u00e9\x00 na\x00\u00efve"]


def nul_variants(texts, gold_ids, tok, limit=24):
    """(golden index, text) pairs: NUL before, after and inside short golden texts."""
    out = []
    for i, t in enumerate(texts):
        if len(out) >= 3 * limit:
            break
        if not t.strip() or len(t) > 300 or "\n" in t or "\r" in t or "\x00" in t:
            continue
        mid = (len(t) + 1) // 2
        for v in dict.fromkeys(("\x00" + t, t + "\x00", t[:mid] + "\x00" + t[mid:])):
            if tok is None or tok.encode(v).ids == gold_ids[i]:
                out.append((i, v))
            else:
                print(f"note: tokenizers gives other ids for {v!r} than the golden text's; not used")
    return out


def check_nul(c, name, model, fx, texts, gold):
    """U+0000 inside texts: golden vectors for NUL variants, and NUL-free twins."""
    gold_ids = [json.loads(line)["ids"] for line in open(os.path.join(fx, "ids.jsonl"))]
    tok = None
    if Tokenizer is not None:
        meta = json.load(open(os.path.join(fx, "meta.json")))
        tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
        tok.enable_truncation(meta["max_seq_length"])
        tok.no_padding()
        drops = [tok.encode(t).ids == tok.encode(t.replace("\x00", "")).ids for t in NUL_TEXTS]
        if not any(drops):
            # SentencePiece charsmaps keep U+0000 (an <unk> of its own): then
            # only the golden texts that hold NULs are checked (above)
            print(f"note: {name}: tokenizers keeps U+0000 (no NUL-free twins to compare)")
            return
        for t, d in zip(NUL_TEXTS, drops):  # the premise: the normalizer drops U+0000
            c.check(d, f"{name}: tokenizers drops U+0000 from {t[:40]!r}")
    variants = nul_variants(texts, gold_ids, tok)
    c.check(len(variants) >= 30, f"{name}: {len(variants)} NUL variants of golden texts")
    idx = [i for i, _ in variants]
    twins = [t.replace("\x00", "") for t in NUL_TEXTS]
    n_v, n_t = len(variants), len(NUL_TEXTS)
    for fmt in ("jsonl", "lines"):  # one run per format: the variants, NUL_TEXTS, their twins
        out = embed_texts(model, [v for _, v in variants] + NUL_TEXTS + twins, fmt).astype(np.float64)
        ok = out.shape == (n_v + 2 * n_t, gold.shape[1])
        c.check(ok, f"{name}: texts with U+0000 ({fmt}): shape {out.shape}, expected {n_v + 2 * n_t} rows")
        if not ok:
            continue
        got = out[:n_v]
        cos = cosines(got, gold[idx])
        diff = np.abs(got - gold[idx]).max(axis=1)
        print(f"{name}: {n_v} golden texts with U+0000 ({fmt}): min cosine {cos.min():.9f}, "
              f"max |difference| {diff.max():.3g}")
        for k in np.nonzero(~((cos >= MIN_COS) & (diff <= 1e-4)))[0]:
            c.check(False, f"{name}: {variants[k][1][:60]!r} ({fmt}): cosine {cos[k]:.9f}, "
                           f"max |difference| {diff[k]:.3g} against golden text {idx[k]}")
        c.check(bool(((cos >= MIN_COS) & (diff <= 1e-4)).all()),
                f"{name}: golden texts with U+0000 ({fmt}) give the golden vectors")
        a, b = out[n_v:n_v + n_t], out[n_v + n_t:]
        cos = cosines(a, b)
        diff = np.abs(a - b).max(axis=1)
        for k in np.nonzero(~((cos >= 0.999999) & (diff <= 1e-5)))[0]:
            c.check(False, f"{name}: {NUL_TEXTS[k][:60]!r} ({fmt}): cosine {cos[k]:.9f}, max |difference| "
                           f"{diff[k]:.3g} against {twins[k][:60]!r}")
        c.check(bool(((cos >= 0.999999) & (diff <= 1e-5)).all()),
                f"{name}: texts with U+0000 ({fmt}) embed as their NUL-free twins")


def same_ids(c, name, model, fx, texts_path):
    """Rows whose golden ids (what sentence-transformers fed the model) equal
    embd's. transformers 5 builds some tokenizers' pipelines from the class
    (XLMRobertaTokenizer: WhitespaceSplit then Metaspace, no Replace) rather
    than from tokenizer.json, which embd follows as Hugging Face `tokenizers`,
    TEI and fastembed do; texts that differ only there (whitespace-only, say)
    are left out of the vector checks, provided `tokenizers` confirms embd's
    ids and they are few."""
    gold_ids = [json.loads(line)["ids"] for line in open(os.path.join(fx, "ids.jsonl"))]
    out = run(["tokenize", "-m", model, "-i", texts_path, "-q"], check=True)
    mine = [json.loads(line)["ids"] for line in out.stdout.splitlines() if line.strip()]
    c.check(len(mine) == len(gold_ids), f"{name}: embd tokenize gave {len(mine)} rows")
    differ = [i for i, (a, b) in enumerate(zip(gold_ids, mine)) if a != b]
    if not differ:
        return np.ones(len(gold_ids), dtype=bool)
    texts = [json.loads(line)["text"] for line in open(texts_path)]
    c.check(Tokenizer is not None, f"{name}: {len(differ)} texts' ids differ and tokenizers is absent")
    if Tokenizer is not None:
        meta = json.load(open(os.path.join(fx, "meta.json")))
        tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
        tok.enable_truncation(meta["max_seq_length"])
        tok.no_padding()
        for i in differ:
            c.check(tok.encode(texts[i]).ids == mine[i],
                    f"{name}: text {i} {texts[i][:40]!r}: embd's ids are not tokenizers' either")
    c.check(len(differ) <= len(gold_ids) // 20,
            f"{name}: {len(differ)} of {len(gold_ids)} texts tokenized otherwise by transformers")
    print(f"note: {name}: {len(differ)} texts (e.g. {texts[differ[0]][:30]!r}) are tokenized "
          f"otherwise by transformers {json.load(open(os.path.join(fx, 'meta.json')))['packages']['transformers']}"
          f" than by tokenizer.json; left out of the vector checks")
    keep = np.ones(len(gold_ids), dtype=bool)
    keep[differ] = False
    return keep


def cosines(a, b):
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)


def main():
    c = Checker("e2e_fidelity")
    tested = 0
    names = sorted(os.listdir(FIXTURES)) if os.path.isdir(FIXTURES) else []
    for name in names:
        fx = os.path.join(FIXTURES, name)
        if not os.path.isfile(os.path.join(fx, "embeddings.npy")):
            continue
        model = model_dir(name)
        if model is None:
            print(f"note: no weights for {name} under EMBD_TEST_MODELS; not tested")
            continue
        tested += 1
        texts_path = os.path.join(fx, "texts.jsonl")
        gold = np.load(os.path.join(fx, "embeddings.npy")).astype(np.float64)
        big = os.path.getsize(os.path.join(model, "model.safetensors")) > (200 << 20)
        if big and os.environ.get("EMBD_TEST_SANITIZED"):
            # ASan + UBSan run these about 20 times slower (and convert F16
            # weights in instrumented loops); their code paths run under the
            # sanitizers in test_backend (the relative bias) and
            # engine_rerank_golden_xlmr (XLM-R's names and positions)
            print(f"note: {name}: not run under the sanitizers (checked in the release build)")
            tested -= 1
            continue
        got = embed_npy(model, texts_path).astype(np.float64)
        c.check(got.shape == gold.shape, f"{name}: shape {got.shape} != {gold.shape}")
        if got.shape != gold.shape:
            continue
        c.check(np.isfinite(got).all(), f"{name}: non-finite values")
        keep = same_ids(c, name, model, fx, texts_path)
        got, gold = got[keep], gold[keep]
        cos = cosines(got, gold)
        worst = int(np.argmin(cos))
        print(f"{name}: {len(cos)} texts, min cosine {cos.min():.9f} (text {worst}), "
              f"mean {cos.mean():.9f}")
        for i in np.nonzero(~(cos >= MIN_COS))[0]:
            c.check(False, f"{name}: text {i} cosine {cos[i]:.9f} < {MIN_COS}")
        c.check(bool((cos >= MIN_COS).all()), f"{name}: all cosines >= {MIN_COS}")
        # Random-weight models map every text to nearly the same direction, so cosine
        # alone is a weak check there: also bound each component. fp32 on both sides,
        # only the summation order differs: observed differences are below 1e-6.
        diff = np.abs(got - gold).max()
        print(f"{name}: max |difference| {diff:.3g}")
        c.check(diff <= 1e-4, f"{name}: max abs difference {diff:.3g} > 1e-4")

        if os.environ.get("EMBD_TEST_SANITIZED") and name != "all-MiniLM-L6-v2":
            # the options and U+0000 run the same code for every model: under
            # the sanitizers (20 times slower) they are checked on MiniLM only
            print(f"note: {name}: --no-normalize, --prefix and U+0000 checked on MiniLM here")
            continue
        # --no-normalize: same direction; for a normalising model the raw norms differ from 1.
        raw = embed_npy(model, texts_path, ["--no-normalize"]).astype(np.float64)[keep]
        c.check(bool((cosines(raw, gold) >= MIN_COS).all()), f"{name}: --no-normalize direction")
        norms = np.linalg.norm(raw, axis=1)
        gnorms = np.linalg.norm(gold, axis=1)
        if np.allclose(gnorms, 1, atol=1e-4):
            c.check(not np.allclose(norms, 1, atol=1e-3), f"{name}: --no-normalize left norms at 1")

        # A prefix is the same as prepending it to every text.
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("query: how do I compress files\nquery: \n")
            plain = f.name
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("how do I compress files\n\n")
            bare = f.name
        a = embed_npy(model, plain)
        b = embed_npy(model, bare, ["--prefix", "query: "])
        os.unlink(plain)
        os.unlink(bare)
        c.check(a.shape == b.shape and bool((cosines(a, b) >= 0.999999).all()),
                f"{name}: --prefix equals prepending")

        if big:
            # U+0000 is the tokenizer's business, checked here with the small
            # models (and by the tokenizer tests for every tokenizer.json)
            print(f"note: {name}: the U+0000 checks run on the small models only")
            continue
        texts = [json.loads(line)["text"] for line in open(texts_path)]
        check_nul(c, name, model, fx, texts, np.load(os.path.join(fx, "embeddings.npy")).astype(np.float64))
    if tested == 0:
        skip("no golden fixture has its model under EMBD_TEST_MODELS")
    c.done()


if __name__ == "__main__":
    main()
