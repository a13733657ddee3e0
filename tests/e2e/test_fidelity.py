"""Fidelity: embd's vectors against sentence-transformers' golden vectors.

For every model with fixtures in tests/fixtures/golden/<name>/ (texts.jsonl,
embeddings.npy written by scripts/gen-golden) whose weights are under
EMBD_TEST_MODELS/<name>: every text must reach cosine >= 0.99999 (fp32 on
both sides; the differences are summation order only). Also checks
--no-normalize (same direction, the model's own norm) and that a prefix
changes the result exactly like prepending the text.
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import FIXTURES, Checker, model_dir, run, skip  # noqa: E402

MIN_COS = 0.99999


def embed_npy(model, path, extra=()):
    with tempfile.NamedTemporaryFile(suffix=".npy") as out:
        run(["embed", "-m", model, "-i", path, "--format", "npy", "-o", out.name, "-q",
             *extra], check=True)
        return np.load(out.name)


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
        got = embed_npy(model, texts_path).astype(np.float64)
        c.check(got.shape == gold.shape, f"{name}: shape {got.shape} != {gold.shape}")
        if got.shape != gold.shape:
            continue
        c.check(np.isfinite(got).all(), f"{name}: non-finite values")
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

        # --no-normalize: same direction; for a normalising model the raw norms differ from 1.
        raw = embed_npy(model, texts_path, ["--no-normalize"]).astype(np.float64)
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
    if tested == 0:
        skip("no golden fixture has its model under EMBD_TEST_MODELS")
    c.done()


if __name__ == "__main__":
    main()
