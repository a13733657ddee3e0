"""Bad input to the Python package: each gets a clear TypeError / ValueError
or a documented result, never a crash, never a silently shortened text.

- non-str items, None, bytes, nested lists, dicts, numbers: TypeError naming
  the input (its position in the whole stream for TextEmbedding);
- a lone surrogate: ValueError naming the input and the character;
- an empty list: an (0, D) array / nothing yielded; empty strings: [CLS][SEP];
- a 1 MB string: truncated as sentence-transformers does (the same vector as
  `embd embed`), or embd.TooLongError with truncate=False;
- U+0000: a character like any other (the same vector as `embd embed`).
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pyembd_test import MINILM, cli_embed, need_model  # noqa: E402

import embd  # noqa: E402


@pytest.fixture(scope="module")
def model():
    with embd.Model(need_model(MINILM)) as m:
        yield m


@pytest.fixture(scope="module")
def te():
    return embd.TextEmbedding(need_model(MINILM))


BAD_ITEMS = [
    (None, "None"),
    (b"bytes", "bytes"),
    (bytearray(b"x"), "bytearray"),
    (["nested"], "list"),
    (("t",), "tuple"),
    ({"text": "x"}, "dict"),
    (3, "int"),
    (1.5, "float"),
    (object(), "object"),
]


@pytest.mark.parametrize("item,kind", BAD_ITEMS)
def test_model_bad_item(model, item, kind):
    with pytest.raises(TypeError, match=rf"input 1 is {kind}"):
        model.embed(["fine", item, "fine"])


@pytest.mark.parametrize("item,kind", BAD_ITEMS)
def test_text_embedding_bad_item(te, item, kind):
    docs = ["ok"] * 5 + [item]
    gen = te.embed(docs, batch_size=2)
    # lazily: the batches before the bad one are yielded first
    got = [next(gen) for _ in range(4)]
    assert len(got) == 4
    with pytest.raises(TypeError, match=rf"input 5 is {kind}"):
        list(gen)


@pytest.mark.parametrize("bad", [None, b"bytes", 3, {"a": 1}, bytearray(b"x")])
def test_bad_containers(model, te, bad):
    with pytest.raises(TypeError):
        model.embed(bad)
    with pytest.raises(TypeError):
        list(te.embed(bad))


def test_surrogates(model, te):
    for s in ["\ud800", "abc\udfffdef", "ok \udc80"]:
        with pytest.raises(ValueError, match="input 1 has a lone surrogate"):
            model.embed(["fine", s])
        with pytest.raises(ValueError, match="lone surrogate"):
            list(te.embed(["fine", s]))
        with pytest.raises(ValueError):
            model.tokenize(s)
    # a valid pair written as one character is fine
    assert model.embed(["\U0001F642"]).shape == (1, 384)


def test_positions_in_messages(model, te):
    # each item's own position, not 0, in every call that takes a list
    with pytest.raises(TypeError, match="input 2 is None"):
        te.token_count(["a", "b", None])
    with pytest.raises(TypeError, match="input 2 is int"):
        model.count_tokens(["a", "b", 3])
    with pytest.raises(TypeError, match="input 1 is bytes"):
        model.tokenize(["a", b"b"])
    with pytest.raises(ValueError, match="input 1 has a lone surrogate"):
        te.token_count(["ok", "\ud800"])


def test_texts_are_not_grown(model):
    # CPython caches a str's UTF-8 inside it once asked for it (2.5x a CJK
    # text): the package reads a copy instead, so the caller's strings keep
    # their size
    texts = ["東京" * 50000, "café " * 20000, "ascii " * 20000]
    before = [sys.getsizeof(t) for t in texts]
    model.embed(texts)
    model.tokenize(texts[0])
    model.count_tokens(texts)
    assert [sys.getsizeof(t) for t in texts] == before


def test_empty(model, te):
    out = model.embed([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert list(te.embed([])) == []
    assert list(te.embed(iter(()))) == []
    one = model.embed("")
    assert one.shape == (384,) and np.isfinite(one).all()
    assert model.tokenize("") == [101, 102]


def test_long_and_nul_equal_cli(model, tmp_path):
    path = need_model(MINILM)
    big = ("word " * 210_000)[:1_000_000]
    texts = [big, "a\x00b", "\x00", "tail after NUL: \x00 here", "ab"]
    want = cli_embed(path, texts, tmp_path)
    got, counts = model.embed(texts, return_tokens=True)
    assert np.array_equal(got, want)
    assert counts[0] == model.max_tokens == 256
    # NUL is dropped by BERT's normalizer, nothing after it is lost: "a\0b" is "ab"
    assert np.array_equal(got[1], got[4])
    assert model.count_tokens(big) > 200_000
    with pytest.raises(embd.TooLongError) as e:
        model.embed(["short", big], truncate=False)
    assert e.value.index == 1 and e.value.tokens == model.count_tokens(big)
    assert isinstance(e.value, ValueError) and e.value.status == embd.Status.TOO_LONG


def test_bad_arguments(model):
    with pytest.raises(TypeError):
        model.embed(["x"], prefix=b"q")
    with pytest.raises(ValueError):
        model.embed(["x"], prefix="nul\x00inside")
    with pytest.raises(ValueError):
        embd.Model(need_model(MINILM), device="gpu")
    with pytest.raises(ValueError):
        embd.Model(need_model(MINILM), dtype="int4")
    with pytest.raises(TypeError):
        embd.Model(None)
    te = embd.TextEmbedding(need_model(MINILM), lazy_load=True)
    with pytest.raises(ValueError):
        list(te.embed(["x"], batch_size=0))


def test_missing_and_corrupt_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(embd.FileError) as e:
        embd.Model(str(tmp_path / "nope"))
    assert e.value.status == embd.Status.IO and "nope" in str(e.value)
    with pytest.raises(embd.ModelNotFoundError) as e:
        embd.TextEmbedding("BAAI/bge-small-en-v1.5")
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, embd.Error)
    assert "models--BAAI--bge-small-en-v1.5" in msg and "download" in msg
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(embd.ModelFormatError) as e:
        embd.Model(str(bad))
    assert "config.json" in str(e.value)
    # a folder that holds no model: a ValueError as fastembed raises (and a
    # FileError naming what is missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError) as e:
        embd.TextEmbedding(str(empty))
    assert isinstance(e.value, embd.FileError) and "config.json" in str(e.value)


def test_closed_model():
    m = embd.Model(need_model(MINILM))
    m.close()
    with pytest.raises(embd.InvalidArgumentError, match="closed"):
        m.embed(["x"])
    m.close()  # twice is fine


if __name__ == "__main__":
    from pyembd_test import run_pytest
    sys.exit(run_pytest(__file__))
