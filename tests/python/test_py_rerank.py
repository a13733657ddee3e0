"""Cross-encoders from Python (issue 22): embd.TextCrossEncoder (fastembed's
rerank / rerank_pairs) and embd.Model.rerank equal `embd rerank`; the pair
ids equal Hugging Face `tokenizers` (pair template, longest_first at 512) on
the whole Debian corpus and on long-long pairs; bad input is refused with
the right exception. Model: $EMBD_TEST_MODELS/ce-minilm-l6-random
(scripts/make-random-model ce-minilm-l6 --seed 0); its sentence-transformers
scores are checked by tests/engine/test_rerank_golden.c."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pyembd_test import (MINILM, corpus_docs, hf_cache, model_dir, need_model, run_cli,  # noqa: E402
                         run_pytest)

import embd  # noqa: E402

CE = "ce-minilm-l6-random"


@pytest.fixture(scope="module")
def ce():
    return embd.TextCrossEncoder(need_model(CE))


def cli_rerank(model, query, docs, tmp_path, extra=()):
    inp = os.path.join(tmp_path, "docs.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    p = run_cli(["rerank", "-m", model, "--query", query, "-i", inp, "-q", *extra])
    return [json.loads(line) for line in p.stdout.decode().splitlines()]


def test_pair_ids_equal_tokenizers_on_the_corpus(ce):
    tokenizers = pytest.importorskip("tokenizers")
    path = os.environ.get("EMBD_TEST_CORPUS")
    if not path or not os.path.isfile(path):
        pytest.skip("EMBD_TEST_CORPUS not set or missing")
    with open(path, encoding="utf-8") as f:
        docs = [json.loads(line).get("text", "") for line in f]
    tok = tokenizers.Tokenizer.from_file(os.path.join(ce.model.path, "tokenizer.json"))
    tok.enable_truncation(512, strategy="longest_first")
    # every description as the document of the next one's first line (a short
    # query), and every 50th pair of two whole descriptions (long-long pairs)
    pairs = [(docs[i + 1].split("\n")[0], docs[i]) for i in range(len(docs) - 1)]
    pairs += [(docs[i], docs[i + 1]) for i in range(0, len(docs) - 1, 50)]
    pairs += [("x " * 700, "y " * 600), ("y " * 600, "x " * 700), ("z " * 300, "w " * 300)]
    want = tok.encode_batch(pairs)
    m = ce.model
    bad = []
    cut = 0
    for (q, d), e in zip(pairs, want):
        ids, types = m.tokenize_pair(q, d)
        cut += len(ids) == 512
        if ids != e.ids or types != e.type_ids:
            bad.append((q[:40], d[:40], len(ids), len(e.ids)))
    assert not bad, f"{len(bad)} of {len(pairs)} pairs differ, e.g. {bad[:3]}"
    assert len(pairs) > 1000 and cut > 10
    print(f"{len(pairs)} pairs identical to tokenizers ({cut} cut to 512)")


def test_rerank_equals_cli(ce, tmp_path):
    docs = corpus_docs(40)
    query = "a library for compressing files"
    got = list(ce.rerank(query, docs, batch_size=7))  # several batches
    assert all(isinstance(x, float) for x in got) and len(got) == len(docs)
    lines = cli_rerank(ce.model.path, query, docs, str(tmp_path), ["--raw-scores"])
    assert [x["index"] for x in lines] == sorted(range(len(docs)), key=lambda i: (-got[i], i))
    np.testing.assert_allclose([got[x["index"]] for x in lines], [x["score"] for x in lines],
                               rtol=0, atol=1e-5)
    # Model.rerank: the model's activation (sigmoid) unless raw
    sig = ce.model.rerank(query, docs)
    assert sig.dtype == np.float32 and sig.shape == (len(docs),)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-np.array(got))), rtol=0, atol=1e-6)
    lines = cli_rerank(ce.model.path, query, docs, str(tmp_path), ["--top-n", "3"])
    assert len(lines) == 3 and lines[0]["index"] == int(np.argmax(sig))


def test_rerank_pairs_and_generators(ce):
    docs = corpus_docs(12)
    pairs = [("compression", d) for d in docs[:5]] + [("a text editor", d) for d in docs[5:]]
    got = list(ce.rerank_pairs(iter(pairs), batch_size=4))
    want = list(ce.rerank("compression", docs[:5])) + list(ce.rerank("a text editor", docs[5:]))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    par = list(ce.rerank_pairs(iter(pairs), batch_size=4, parallel=2))  # two replicas
    np.testing.assert_allclose(par, want, rtol=0, atol=1e-6)
    assert ce._loader._par[0] == 2 and ce._loader._par[1].replicas == 2
    assert list(ce.rerank("q", (d for d in []))) == []
    assert len(list(ce.rerank("q", "one document"))) == 1
    names = [m["model"] for m in embd.TextCrossEncoder.list_supported_models()]
    assert "Xenova/ms-marco-MiniLM-L-6-v2" in names
    # one pair alone, as fastembed takes it
    assert list(ce.rerank_pairs(pairs[0])) == pytest.approx(got[:1], abs=1e-6)
    # fastembed's token_count: the pairs' tokens as the model sees them
    assert ce.token_count(pairs[:3]) == sum(len(ce.model.tokenize_pair(q, d)[0])
                                            for q, d in pairs[:3])
    assert ce.token_count(iter([("a", "b")])) == 5  # [CLS] a [SEP] b [SEP]


FASTEMBED_CE_KEYS = {"model", "sources", "model_file", "description", "license", "size_in_GB",
                     "additional_files"}


def test_fastembed_class_api(ce, tmp_path, monkeypatch):
    models = embd.TextCrossEncoder.list_supported_models()
    assert all(set(m) == FASTEMBED_CE_KEYS for m in models)
    assert all(set(m["sources"]) == {"hf", "url", "_deprecated_tar_struct"} for m in models)
    embd.TextCrossEncoder.add_custom_model("test-org/my-reranker",
                                           sources=embd.ModelSource(hf="test-org/ce-hub"))
    assert any(m["model"] == "test-org/my-reranker"
               for m in embd.TextCrossEncoder.list_supported_models())
    with pytest.raises(ValueError, match="already registered"):
        embd.TextCrossEncoder.add_custom_model("TEST-ORG/my-reranker",
                                               sources=embd.ModelSource(hf="x/y"))
    # the registered name finds sources.hf in the Hugging Face cache
    monkeypatch.setenv("HF_HUB_CACHE", hf_cache(str(tmp_path), "test-org/ce-hub", need_model(CE)))
    custom = embd.TextCrossEncoder("test-org/my-reranker")
    assert list(custom.rerank("q", ["d"])) == pytest.approx(list(ce.rerank("q", ["d"])), abs=1e-6)
    # fastembed's names are matched in any case; the cache's folders are not
    monkeypatch.setenv("HF_HUB_CACHE", hf_cache(str(tmp_path / "b"),
                                                "cross-encoder/ms-marco-MiniLM-L-6-v2",
                                                need_model(CE)))
    assert embd.TextCrossEncoder("xenova/MS-MARCO-MiniLM-L-6-v2").model.is_reranker


def test_gpu_arguments_fall_back_to_cpu(ce):
    # fastembed-gpu's arguments: the GPU, else the CPU (never an AttributeError)
    for kw in ({"cuda": True}, {"providers": ["CUDAExecutionProvider"]}, {"device_ids": [0]},
               {"cuda": True, "lazy_load": True}):
        enc = embd.TextCrossEncoder(need_model(CE), **kw)
        assert enc.model.device in ("cpu", "cuda")
        assert len(list(enc.rerank("q", ["d", "e"]))) == 2


def test_bad_input(ce):
    with pytest.raises(TypeError):
        list(ce.rerank(b"query", ["a"]))
    with pytest.raises(TypeError):
        list(ce.rerank("query", b"bytes"))
    with pytest.raises(TypeError):
        list(ce.rerank("query", ["a", 3]))
    with pytest.raises(TypeError):
        list(ce.rerank_pairs([("only one",)]))
    with pytest.raises(ValueError, match="the query has a lone surrogate"):
        list(ce.rerank("\ud800", ["d"]))
    with pytest.raises(ValueError, match="input 1 has a lone surrogate"):
        list(ce.rerank("q", ["d", "\ud800"]))
    with pytest.raises(ValueError):
        list(ce.rerank("query", ["a"], batch_size=0))
    with pytest.raises(embd.TooLongError) as e:
        ce.model.rerank("q", ["short", "word " * 1000], truncate=False)
    assert e.value.index == 1
    with pytest.raises(embd.UnsupportedError):
        ce.model.embed("a reranker does not embed")
    with pytest.raises(ValueError, match="use embd.TextCrossEncoder"):
        embd.TextEmbedding(need_model(CE))  # at construction, not at the first embed
    if model_dir(MINILM):
        with pytest.raises(ValueError):
            embd.TextCrossEncoder(model_dir(MINILM))
        with pytest.raises(embd.UnsupportedError):
            embd.Model(model_dir(MINILM)).rerank("q", ["d"])


if __name__ == "__main__":
    sys.exit(run_pytest(__file__))
