"""The Python package gives the vectors `embd embed` gives, bit for bit, for
the same model, options and batch: real corpus documents, texts with U+0000,
a long text (truncated alike), a prefix, --no-normalize; through embd.Model
and through the fastembed-style TextEmbedding; and a model named ORG/NAME
in a Hugging Face cache, in Python and in `embd embed -m ORG/NAME` alike."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pyembd_test import BGE, MINILM, cli_embed, corpus_docs, hf_cache, need_model  # noqa: E402

import embd  # noqa: E402

ODD = ["", "a", "a\x00b", "\x00", "ünïcödé — 日本語のテキスト 🙂", "[SEP] [CLS] literal", "x " * 600]


@pytest.fixture(scope="module")
def docs():
    return corpus_docs(100) + ODD


# MPNet (real weights) and XLM-RoBERTa (random, F16 file): the other
# architectures the package runs, bit for bit as the CLI
@pytest.mark.parametrize("name", [MINILM, BGE, "all-mpnet-base-v2", "e5-base-ml-random"])
def test_model_equals_cli(name, docs, tmp_path):
    path = need_model(name)
    if name not in (MINILM, BGE):  # 768 wide: a sample keeps the test short
        docs = docs[:16] + ODD
    want = cli_embed(path, docs, tmp_path)
    with embd.Model(path) as m:
        got = m.embed(docs)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"


@pytest.mark.parametrize("name", [MINILM, BGE])
def test_options_equal_cli(name, docs, tmp_path):
    path = need_model(name)
    docs = docs[:30] + ODD
    with embd.Model(path) as m:
        raw = cli_embed(path, docs, tmp_path, ["--no-normalize"])
        assert np.array_equal(m.embed(docs, normalize=False), raw)
        pre = cli_embed(path, docs, tmp_path, ["--prefix", "query: "])
        assert np.array_equal(m.embed(docs, prefix="query: "), pre)


def test_text_embedding_equals_cli(docs, tmp_path):
    path = need_model(MINILM)
    want = cli_embed(path, docs, tmp_path)
    te = embd.TextEmbedding(path)
    # fastembed's default batch of 256, and other sizes: the same rows.
    for bs in (256, 7):
        got = np.stack(list(te.embed(iter(docs), batch_size=bs)))
        assert np.array_equal(got, want), f"batch_size {bs}"


def test_multilingual_e5_by_name(tmp_path, monkeypatch):
    # multilingual-e5-small's architecture and real tokenizer served under its
    # hub name: TextEmbedding knows its prompts (query: / passage: )
    path = need_model("e5-small-ml-random")
    name = "intfloat/multilingual-e5-small"
    monkeypatch.setenv("HF_HUB_CACHE", hf_cache(str(tmp_path), name, path))
    te = embd.TextEmbedding(name)
    texts = ["Wie installiere ich ein Paket?", "Как установить пакет?"]
    q = np.stack(list(te.query_embed(texts)))
    p = np.stack(list(te.passage_embed(texts)))
    with embd.Model(path) as m:
        assert np.array_equal(q, m.embed(["query: " + t for t in texts]))
        assert np.array_equal(p, m.embed(["passage: " + t for t in texts]))
    assert te.get_embedding_size(name) == 384


def test_hub_name_in_python_and_cli(tmp_path, monkeypatch):
    path = need_model(MINILM)
    cache = hf_cache(str(tmp_path), "sentence-transformers/all-MiniLM-L6-v2", path)
    texts = ["a cat sat on the mat", "fast text embeddings"]
    want = cli_embed(path, texts, tmp_path)
    byname = cli_embed("sentence-transformers/all-MiniLM-L6-v2", texts, tmp_path,
                       env={"HF_HUB_CACHE": cache})
    assert np.array_equal(byname, want)
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    te = embd.TextEmbedding("sentence-transformers/all-MiniLM-L6-v2")
    assert np.array_equal(np.stack(list(te.embed(texts))), want)
    assert te.model.path.startswith(cache) and "snapshots" in te.model.path
    # HF_HOME/hub when HF_HUB_CACHE is not set
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", os.path.dirname(cache))
    assert embd.resolve_model("sentence-transformers/all-MiniLM-L6-v2") == te.model.path
    # cache_dir (fastembed's argument): the hub layout there, then cache_dir/ORG/NAME
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    name = "sentence-transformers/all-MiniLM-L6-v2"
    assert embd.resolve_model(name, cache_dir=cache) == te.model.path
    te2 = embd.TextEmbedding(name, cache_dir=cache)
    assert np.array_equal(np.stack(list(te2.embed(texts))), want)
    plain = tmp_path / "plain"
    os.makedirs(plain / "sentence-transformers")
    os.symlink(path, plain / name)
    assert embd.resolve_model(name, cache_dir=str(plain)) == str(plain / name)
    # without refs/main: the newest snapshot
    repo = os.path.join(cache, "models--sentence-transformers--all-MiniLM-L6-v2")
    os.remove(os.path.join(repo, "refs", "main"))
    assert embd.resolve_model(name, cache_dir=cache) == te.model.path
    with pytest.raises(embd.FileError) as e:
        embd.resolve_model("no-org/no-model", cache_dir=cache)
    assert str(tmp_path / "empty") in str(e.value) and "models--no-org--no-model" in str(e.value)
    for bad in ("../x", "a/../../b", "a/b/c", "-a/b"):
        with pytest.raises(embd.FileError):
            embd.resolve_model(bad, cache_dir=cache)


if __name__ == "__main__":
    from pyembd_test import run_pytest
    sys.exit(run_pytest(__file__))
