"""embd.Store: index and search from Python on the embedded store and on
PostgreSQL + pgvector, interchangeable with `embd index` / `embd search`:
the same hits (ids, scores, texts, order), a store written by one read by
the other, replacement of an id, another model's store refused."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "store"))
from pyembd_test import BGE, MINILM, corpus_docs, need_model, run_cli  # noqa: E402

import embd  # noqa: E402

QUERIES = ["compress files", "play music", "a web server"]


@pytest.fixture(scope="module")
def model():
    with embd.Model(need_model(MINILM)) as m:
        yield m


@pytest.fixture(scope="module")
def records():
    docs = corpus_docs(60, 400)
    return [f"doc-{i}" for i in range(len(docs))], docs


def cli_search(model, store, query, k=5):
    p = run_cli(["search", "-m", model.path, "--store", store, "--query", query, "-k", str(k)])
    return [json.loads(line) for line in p.stdout.decode().splitlines()]


def same_hits(py_hits, cli_hits):
    assert [h.id for h in py_hits] == [h["id"] for h in cli_hits]
    assert [h.text for h in py_hits] == [h["text"] for h in cli_hits]
    assert [h.rank for h in py_hits] == [h["rank"] for h in cli_hits]
    np.testing.assert_allclose([h.score for h in py_hits], [h["score"] for h in cli_hits],
                               atol=1e-6)


def test_embedded_store_equals_cli(model, records, tmp_path):
    ids, texts = records
    path = str(tmp_path / "py.store")
    with embd.Store(path, model) as st:
        assert st.kind == "embedded"
        assert st.add(ids, texts) == 0
        assert len(st) == len(ids)
        for q in QUERIES:
            hits = st.search(q, k=5)
            assert len(hits) == 5 and hits[0].rank == 1
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
            same_hits(hits, cli_search(model, path, q))
        # a document finds itself first
        assert st.search(texts[7], k=1)[0].id == ids[7]
        # a vector query equals the text query
        assert st.search(model.embed(QUERIES[0]), k=5) == st.search(QUERIES[0], k=5)
        # replacing an id
        assert st.add([ids[0]], ["a replacement text about music players"]) == 1
        assert len(st) == len(ids)
        assert st.search("music players", k=1)[0].id == ids[0]


def test_cli_index_read_from_python(model, records, tmp_path):
    ids, texts = records
    inp = tmp_path / "docs.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts)))
    path = str(tmp_path / "cli.store")
    run_cli(["index", "-m", model.path, "--store", path, "-i", str(inp), "--id-field", "id", "-q"])
    with embd.Store(path, model, writable=False) as st:
        assert len(st) == len(ids)
        for q in QUERIES:
            same_hits(st.search(q, k=5), cli_search(model, path, q))
        # a k far over the count gives every record, without allocating k hits
        assert len(st.search(QUERIES[0], k=10**9)) == len(ids)
        # a reader sees what a writer indexes after it opened the store
        more = tmp_path / "more.jsonl"
        more.write_text(json.dumps({"id": "new-doc", "text": "penguins live in the antarctic"})
                        + "\n" + json.dumps({"id": ids[0], "text": "a text about volcanoes"})
                        + "\n")
        run_cli(["index", "-m", model.path, "--store", path, "-i", str(more), "--id-field", "id",
                 "-q"])
        assert len(st) == len(ids) + 1
        assert st.search("where do penguins live", k=1)[0].id == "new-doc"
        top = st.search("volcanoes", k=1)[0]
        assert top.id == ids[0] and top.text == "a text about volcanoes"


def test_store_errors(model, records, tmp_path):
    ids, texts = records
    path = str(tmp_path / "s")
    with embd.Store(path, model) as st:
        st.add(ids[:3], texts[:3])
        with pytest.raises(ValueError):
            st.add(ids[:2], texts[:3])
        with pytest.raises(TypeError):
            st.add([None], ["x"])
        with pytest.raises(ValueError):
            st.add(["x"], ["x"], vectors=np.zeros((1, 3), np.float32))
        with pytest.raises(embd.InvalidArgumentError):
            st.add(["nan"], ["x"], vectors=np.full((1, 384), np.nan, np.float32))
        with pytest.raises(ValueError):
            st.search("x", k=0)
        with pytest.raises(ValueError):
            st.search(np.zeros(3, np.float32))
    with embd.Model(need_model(BGE)) as other:
        with pytest.raises(embd.Error) as e:
            embd.Store(path, other)
        assert e.value.status == embd.Status.INVALID_ARG
    with pytest.raises(embd.Error):
        embd.Store(str(tmp_path / "missing"), model, writable=False)
    st = embd.Store(path, model, writable=False)
    st.close()
    st.close()
    with pytest.raises(embd.InvalidArgumentError, match="closed"):
        st.search("x")


def test_postgresql_store(model, records):
    try:
        from pg_fixture import PgServer, PgUnavailable
    except ImportError:
        pytest.skip("tests/store/pg_fixture.py needs pgserver (scripts/setup-deps)")
    ids, texts = records
    try:
        pg = PgServer().__enter__()
    except PgUnavailable as e:
        pytest.skip(f"no PostgreSQL: {e}")
    try:
        url = pg.new_database("pystore")
        with embd.Store(url, model) as st:
            assert st.kind == "postgresql"
            st.add(ids, texts)
            st.finish()
            assert len(st) == len(ids)
            for q in QUERIES:
                exact = st.search(q, k=5, exact=True)
                same_hits(exact, cli_search(model, url, q))
                assert [h.id for h in st.search(q, k=5)] == [h.id for h in exact]
    finally:
        pg.__exit__(None, None, None)


if __name__ == "__main__":
    from pyembd_test import run_pytest
    sys.exit(run_pytest(__file__))
