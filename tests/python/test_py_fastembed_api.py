"""fastembed's API on embd: a program written for fastembed runs with only its
import changed (shapes, dtype, generator semantics, order, prompts, the
class methods, add_custom_model, providers/cuda), and its vectors match
fastembed's own on the same weights.

The comparison with fastembed runs fastembed (ONNX Runtime) on the ONNX
export that bench/ makes (scripts/bench-setup: $EMBD_HOME/bench-venv and
$EMBD_HOME/bench/onnx/all-MiniLM-L6-v2); it is skipped when those are
missing. EMBD_PY_FASTEMBED_DOCS sets how many corpus documents it compares
(default 200, to keep the suite short; BENCHMARKS.md records 1,000).
"""
import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pyembd_test import BGE, MINILM, SRC, corpus_docs, hf_cache, need_model  # noqa: E402

import embd  # noqa: E402
from embd import TextEmbedding  # noqa: E402

FASTEMBED_KEYS = {"model", "sources", "model_file", "description", "license", "size_in_GB",
                  "additional_files", "dim", "tasks"}

# A program written for fastembed; the test swaps its import.
FASTEMBED_PROGRAM = textwrap.dedent("""
    import sys
    import numpy as np
    from fastembed import TextEmbedding

    documents = [
        "This is built to be faster and lighter than other embedding libraries e.g. "
        "Transformers, Sentence-Transformers, etc.",
        "fastembed is supported by and maintained by Qdrant.",
    ]
    embedding_model = TextEmbedding(model_name=sys.argv[1])
    embeddings_generator = embedding_model.embed(documents)
    embeddings_list = list(embeddings_generator)
    assert len(embeddings_list) == 2
    assert embeddings_list[0].shape == (embedding_model.embedding_size,)
    assert embeddings_list[0].dtype == np.float32
    q = list(embedding_model.query_embed("what is fastembed?"))
    p = list(embedding_model.passage_embed(documents))
    assert len(q) == 1 and len(p) == 2
    print(len(embeddings_list[0]), float(np.linalg.norm(embeddings_list[0])))
""")


@pytest.fixture(scope="module")
def minilm():
    return need_model(MINILM)


@pytest.fixture(scope="module")
def te(minilm):
    return TextEmbedding(minilm)


def test_fastembed_program_runs_with_its_import_changed(minilm, tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(FASTEMBED_PROGRAM.replace("from fastembed import", "from embd import"))
    p = subprocess.run([sys.executable, str(prog), minilm], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    dim, norm = p.stdout.split()
    assert dim == "384" and abs(float(norm) - 1) < 1e-5


def test_shapes_order_and_single_string(te, minilm):
    docs = corpus_docs(40, 300)
    with embd.Model(minilm) as m:
        want = m.embed(docs)
    gen = te.embed(docs)
    assert hasattr(gen, "__next__")  # a generator, as fastembed's
    rows = list(gen)
    assert all(r.shape == (384,) and r.dtype == np.float32 for r in rows)
    assert np.array_equal(np.stack(rows), want)
    one = list(te.embed(docs[3]))
    assert len(one) == 1 and np.array_equal(one[0], want[3])
    assert te.embedding_size == 384


def test_lazy_and_bounded(te):
    consumed = 0

    def endless():
        nonlocal consumed
        for i in itertools.count():
            consumed += 1
            yield f"document number {i}"

    gen = te.embed(endless(), batch_size=16)
    first = list(itertools.islice(gen, 20))
    assert len(first) == 20 and consumed <= 32  # two batches read, no more
    # memory bounded: what is read ahead of what is yielded stays within a batch
    consumed = 0

    def counted(n):
        nonlocal consumed
        for i in range(n):
            consumed += 1
            yield f"t{i}"

    seen = 0
    for _ in te.embed(counted(200), batch_size=16):
        seen += 1
        assert consumed - seen < 16
    assert seen == 200


def test_nothing_runs_before_next(te):
    def boom():
        raise RuntimeError("read")
        yield "x"

    gen = te.embed(boom())  # no error yet: fastembed's embed is a generator too
    with pytest.raises(RuntimeError, match="read"):
        next(gen)


def test_class_methods():
    models = TextEmbedding.list_supported_models()
    assert all(set(d) == FASTEMBED_KEYS for d in models)
    names = [d["model"] for d in models]
    assert "BAAI/bge-small-en-v1.5" in names and "sentence-transformers/all-MiniLM-L6-v2" in names
    assert TextEmbedding.get_embedding_size("BAAI/bge-small-en-v1.5") == 384
    assert TextEmbedding.get_embedding_size("baai/BGE-base-en-v1.5") == 768
    with pytest.raises(ValueError, match="Available model names"):
        TextEmbedding.get_embedding_size("no/such-model")


def test_prompts_bge_by_name(tmp_path, monkeypatch):
    # bge-small-random has bge-small-en-v1.5's exact architecture: served
    # under that name from a Hugging Face cache, it gets bge's query prompt.
    bge = need_model(BGE)
    monkeypatch.setenv("HF_HUB_CACHE", hf_cache(str(tmp_path), "BAAI/bge-small-en-v1.5", bge))
    te = TextEmbedding()  # fastembed's default model name
    assert te.model_name == "BAAI/bge-small-en-v1.5"
    q, docs = "how to compress files", ["gzip compresses files", "a music player"]
    with embd.Model(bge) as m:
        want_q = m.embed([q], prefix=embd._registry.BGE_QUERY)
        want_p = m.embed(docs)
    assert np.array_equal(np.stack(list(te.query_embed(q))), want_q)
    assert np.array_equal(np.stack(list(te.query_embed([q]))), want_q)
    assert np.array_equal(np.stack(list(te.passage_embed(docs))), want_p)
    assert np.array_equal(np.stack(list(te.embed(docs))), want_p)
    off = TextEmbedding(query_prompt="")
    assert np.array_equal(np.stack(list(off.query_embed(q))), np.stack(list(te.embed([q]))))


def test_prompts_declared_by_the_model(minilm, tmp_path):
    # An e5-style model whose config_sentence_transformers.json declares its prompts.
    d = tmp_path / "e5like"
    d.mkdir()
    for name in os.listdir(minilm):
        if name != "config_sentence_transformers.json":
            os.symlink(os.path.join(minilm, name), d / name)
    (d / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}}))
    te = TextEmbedding(str(d))
    with embd.Model(minilm) as m:
        assert np.array_equal(next(te.query_embed("q")), m.embed("q", prefix="query: "))
        assert np.array_equal(next(te.passage_embed(["p"])), m.embed("p", prefix="passage: "))
        assert np.array_equal(next(te.embed(["p"])), m.embed("p"))


def test_add_custom_model(minilm):
    TextEmbedding.add_custom_model(model="test-org/minilm-raw", pooling=embd.PoolingType.MEAN,
                                   normalization=False, sources=embd.ModelSource(hf="x/y"),
                                   dim=384, model_file="model.safetensors")
    assert TextEmbedding.get_embedding_size("test-org/minilm-raw") == 384
    assert any(d["model"] == "test-org/minilm-raw" for d in TextEmbedding.list_supported_models())
    with pytest.raises(ValueError, match="already registered"):
        TextEmbedding.add_custom_model(model="TEST-ORG/minilm-raw", pooling="MEAN",
                                       normalization=True, sources=embd.ModelSource(hf="x/y"),
                                       dim=384)
    te = TextEmbedding("test-org/minilm-raw", specific_model_path=minilm)
    with embd.Model(minilm) as m:
        assert np.array_equal(next(te.embed(["raw"])), m.embed("raw", normalize=False))
    TextEmbedding.add_custom_model(model="test-org/minilm-cls", pooling="CLS", normalization=True,
                                   sources=embd.ModelSource(hf="x/z"), dim=384)
    with pytest.raises(ValueError, match="pooling"):
        TextEmbedding("test-org/minilm-cls", specific_model_path=minilm)


def test_gpu_arguments_fall_back_to_cpu(minilm, caplog):
    caplog.set_level(logging.WARNING, logger="embd")
    for kw in ({"providers": ["CUDAExecutionProvider"]},
               {"providers": [("CUDAExecutionProvider", {"device_id": 0}),
                              "CPUExecutionProvider"]},
               {"cuda": True}, {"cuda": embd.Device.CUDA, "device_ids": [0]}):
        caplog.clear()
        te = TextEmbedding(minilm, **kw)
        if te.model.device == "cuda":
            continue  # a machine with a GPU
        assert te.model.device == "cpu"
        assert any("CUDA asked for but not usable" in r.getMessage() for r in caplog.records), kw
        assert next(te.embed(["x"])).shape == (384,)
    te = TextEmbedding(minilm, providers=["CPUExecutionProvider"], threads=1)
    assert te.model.device == "cpu"
    assert TextEmbedding(minilm, cuda=False).model.device == "cpu"


def test_names_paths_and_numpy_ints(minilm, tmp_path, monkeypatch):
    # a registered name in another case than the hub repository's finds the
    # repository's folder in the cache (fastembed matches names in any case)
    monkeypatch.setenv("HF_HUB_CACHE",
                       hf_cache(str(tmp_path), "sentence-transformers/all-MiniLM-L6-v2", minilm))
    for name in ("sentence-transformers/all-minilm-l6-v2", "SENTENCE-TRANSFORMERS/ALL-MINILM-L6-V2"):
        assert TextEmbedding(name).embedding_size == 384
    # cache_dir as a pathlib.Path, as fastembed takes it
    import pathlib
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "nohf"))
    te = TextEmbedding("sentence-transformers/all-MiniLM-L6-v2", cache_dir=tmp_path / "hub")
    assert next(te.embed(["x"])).shape == (384,)
    assert embd.resolve_model("sentence-transformers/all-MiniLM-L6-v2",
                              cache_dir=pathlib.Path(tmp_path / "hub"))
    # numpy integers for batch_size and parallel, as fastembed's islice takes them
    docs = ["a", "b", "c"]
    want = np.stack(list(te.embed(docs)))
    got = np.stack(list(te.embed(docs, batch_size=np.int64(2), parallel=np.int32(1))))
    assert np.array_equal(got, want)
    with pytest.raises(ValueError):
        list(te.embed(docs, batch_size=np.float64(2)))


def test_ctrl_c_stops_a_long_call(minilm):
    # Ctrl-C (SIGINT) during one long Model.embed raises KeyboardInterrupt
    # within a round, not when the call ends, and the model works after it
    prog = textwrap.dedent("""
        import os, signal, sys, threading, time
        import embd
        m = embd.Model(sys.argv[1], threads=1, cache="off")
        docs = ["word " * 200 + str(i) for i in range(3000)]
        t = time.perf_counter()
        m.embed(docs[:50])
        per_doc = (time.perf_counter() - t) / 50
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        t = time.perf_counter()
        try:
            m.embed(docs)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter() - t, per_doc * len(docs))
        print(m.embed(["after"]).shape)
    """)
    p = subprocess.run([sys.executable, "-c", prog, minilm], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    assert lines[0].startswith("interrupted"), p.stdout
    took, whole = map(float, lines[0].split()[1:])
    assert took < whole / 3, p.stdout  # far less than the whole call would take
    assert lines[1] == "(1, 384)"


def test_lazy_load_and_token_count(minilm):
    te = TextEmbedding(minilm, lazy_load=True)
    assert te._model is None
    assert te.token_count(["Hello, world!", "a b"]) == 6 + 4
    assert te.token_count("Hello, world!") == 6


def test_against_fastembed(minilm, tmp_path):
    home = os.environ.get("EMBD_HOME", os.path.expanduser("~/.cache/embd"))
    py = os.path.join(home, "bench-venv", "bin", "python")
    onnx = os.path.join(home, "bench", "onnx", MINILM)
    if not os.path.exists(py) or not os.path.isfile(os.path.join(onnx, "model.onnx")):
        pytest.skip("no fastembed peer (scripts/bench-setup makes $EMBD_HOME/bench-venv and "
                    "the ONNX export)")
    n = int(os.environ.get("EMBD_PY_FASTEMBED_DOCS", "200"))
    docs = corpus_docs(n)
    inp = tmp_path / "docs.json"
    inp.write_text(json.dumps(docs))
    out = tmp_path / "fastembed.npy"
    code = textwrap.dedent(f"""
        import json, sys, numpy as np
        sys.path.insert(0, {os.path.join(SRC, 'bench')!r})
        import fastembed_model
        te = fastembed_model.load({minilm!r}, {onnx!r})
        docs = json.load(open({str(inp)!r}))
        np.save({str(out)!r}, np.stack(list(te.embed(docs))))
    """)
    p = subprocess.run([py, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    theirs = np.load(out)
    ours = np.stack(list(TextEmbedding(minilm).embed(docs)))
    assert ours.shape == theirs.shape == (n, 384)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    print(f"fastembed vs embd on {n} documents: worst cosine {cos.min():.9f}")
    assert cos.min() >= 0.99999


if __name__ == "__main__":
    from pyembd_test import run_pytest
    sys.exit(run_pytest(__file__))
