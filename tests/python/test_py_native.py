"""embd.Model, the native API: embed (options, token counts), tokenize and
count_tokens equal to `embd tokenize`, what the model runs on, metrics and
stats, the embedding cache settings, errors carrying the engine's status."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pyembd_test import BGE, MINILM, need_model, run_cli  # noqa: E402

import embd  # noqa: E402


@pytest.fixture(scope="module")
def model():
    with embd.Model(need_model(MINILM)) as m:
        yield m


def test_describe(model):
    assert model.dimension == 384 and model.max_tokens == 256
    assert model.pooling == "mean" and model.normalizes
    assert model.device in ("cpu", "cuda")
    assert model.dtype in ("fp32", "fp16", "bf16", "int8")
    label, msg = model.fallback
    assert isinstance(label, str) and isinstance(msg, str)
    assert "dim=384" in repr(model)
    assert embd.__version__ == "0.1.0"
    assert "usable by this process" in embd.system_info()
    # the default thread count: the affinity mask, capped by a cgroup quota
    assert 1 <= embd.cpu_count() <= len(os.sched_getaffinity(0))
    assert b"cpu threads: %d by default" % embd.cpu_count() in embd.system_info().encode()


def test_embed_shapes_and_tokens(model):
    texts = ["a cat sat on the mat", "fast text embeddings", ""]
    x, counts = model.embed(texts, return_tokens=True)
    assert x.shape == (3, 384) and x.dtype == np.float32 and x.flags.c_contiguous
    assert counts.dtype == np.uint64 and list(counts) == [len(model.tokenize(t)) for t in texts]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)
    v, n = model.embed("a cat sat on the mat", return_tokens=True)
    assert v.shape == (384,) and n == 8 and np.array_equal(v, x[0])
    # a tuple, a generator and a NumPy array of str give the same rows
    assert np.array_equal(model.embed(tuple(texts)), x)
    assert np.array_equal(model.embed(t for t in texts), x)
    assert np.array_equal(model.embed(np.array(texts)), x)
    raw = model.embed(texts, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), x, atol=1e-6)
    _, pc = model.embed(texts, prefix="query: ", return_tokens=True)
    assert list(pc) == [c + 2 for c in counts]  # "query" and ":"


def test_tokenize_equals_cli(model):
    texts = ["Hello, world!", "ünïcödé 日本語", "a\x00b", "x " * 400]
    p = run_cli(["tokenize", "-m", model.path, "--input-format", "jsonl"],
                stdin="".join(json.dumps({"text": t}) + "\n" for t in texts))
    want = [json.loads(line)["ids"] for line in p.stdout.decode().splitlines()]
    assert model.tokenize(texts) == want
    assert model.tokenize(texts[0]) == want[0] == [101, 7592, 1010, 2088, 999, 102]
    assert model.count_tokens(texts[3]) == 402 and len(want[3]) == 256
    assert model.count_tokens(texts[:2]) == [len(want[0]), len(want[1])]


def test_metrics_and_stats(model):
    model.embed(["metrics please"])
    text = model.metrics()
    assert "embd_" in text and "# TYPE" in text
    st = model.stats()
    assert st["inputs"] >= 1 and st["tokens"] >= 1 and st["batches"] >= 1


def test_cache_settings(tmp_path):
    path = need_model(BGE)
    texts = ["cached text one", "cached text two"]
    with embd.Model(path, cache="off") as off:
        want = off.embed(texts)
        off.embed(texts)
        assert off.stats()["cache_hits"] == 0
    with embd.Model(path, cache="mem") as mem:
        assert np.array_equal(mem.embed(texts), want)
        assert np.array_equal(mem.embed(texts), want)
        assert mem.stats()["cache_hits"] == 2
    disk = tmp_path / "cache"
    with embd.Model(path, cache=str(disk)) as d1:
        d1.embed(texts)
    with embd.Model(path, cache=disk) as d2:  # a new process would see the same
        assert np.array_equal(d2.embed(texts), want)
        assert d2.stats()["cache_hits"] == 2
    with pytest.raises(ValueError):
        embd.Model(path, cache=-1)
    with pytest.raises(TypeError):
        embd.Model(path, cache=1.5)


def test_device_cpu_and_cuda_refused_without_gpu():
    path = need_model(BGE)
    with embd.Model(path, device="cpu", threads=1) as m:
        assert m.device == "cpu" and m.fallback == ("none", "")
    try:
        m = embd.Model(path, device="cuda")
    except embd.UnsupportedError as e:
        assert e.status == embd.Status.UNSUPPORTED and e.message
    else:
        assert m.device == "cuda"
        m.close()
    with pytest.raises(embd.UnsupportedError):
        embd.Model(path, device="cpu", dtype="fp16")


def test_errors_carry_status():
    e = embd.InvalidArgumentError(embd.Status.INVALID_ARG, "bad thing")
    assert isinstance(e, embd.Error) and isinstance(e, ValueError)
    assert e.status == embd.Status.INVALID_ARG and str(e) == "bad thing"
    assert issubclass(embd.OutOfMemoryError, MemoryError)
    for cls in (embd.FileError, embd.ModelFormatError, embd.BackendError, embd.BusyError):
        assert issubclass(cls, embd.Error)



def test_dimensions_and_prompt_name(model, tmp_path):
    texts = ["a cat sat on the mat", "fast text embeddings"]
    full = model.embed(texts)
    d = model.embed(texts, dimensions=64)
    want = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert d.shape == (2, 64) and np.abs(d - want).max() < 1e-6
    raw = model.embed(texts, normalize=False)
    assert np.array_equal(model.embed(texts, normalize=False, dimensions=10), raw[:, :10])
    for bad in (0, 385, -1, 2.0, True):
        with pytest.raises(ValueError):
            model.embed(texts, dimensions=bad)
    # a model folder declaring prompts: links to the real one plus the file
    src = model.path
    for name in os.listdir(src):
        if name != "config_sentence_transformers.json":
            os.symlink(os.path.join(src, name), tmp_path / name)
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: "}, "default_prompt_name": None}))
    with embd.Model(str(tmp_path)) as pm:
        assert pm.prompts == {"query": "query: "}
        assert np.array_equal(pm.embed(texts, prompt_name="query"),
                              pm.embed(texts, prefix="query: "))
        with pytest.raises(ValueError):
            pm.embed(texts, prompt_name="passage")
        with pytest.raises(ValueError):
            pm.embed(texts, prompt_name="query", prefix="x")

if __name__ == "__main__":
    from pyembd_test import run_pytest
    sys.exit(run_pytest(__file__))


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.parametrize("dtype,flag,floor", [("bf16", "avx512_bf16", 0.999),
                                              ("int8", "avx512_vnni", 0.99)])
def test_cpu_reduced_precision(model, dtype, flag, floor):
    """dtype='bf16' / 'int8' on the CPU: close to fp32 where the CPU has the
    instructions, refused with them named where it has not."""
    texts = ["a cat sat on the mat", "apt-get installs Debian packages",
             "Übermäßige Größe: ½ € — 東京 🙂", "x"]
    flags = _cpu_flags()
    if flag not in flags or "avx512f" not in flags:
        with pytest.raises(embd.UnsupportedError, match=flag.upper()):
            embd.Model(need_model(MINILM), device="cpu", dtype=dtype, cache="off")
        return
    with embd.Model(need_model(MINILM), device="cpu", dtype="fp32", cache="off") as ref, \
            embd.Model(need_model(MINILM), device="cpu", dtype=dtype, cache="off") as low:
        assert low.dtype == dtype and low.device == "cpu"
        a, b = ref.embed(texts), low.embed(texts)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= floor, cos
        assert not np.array_equal(a, b)  # it did run in reduced precision
        # a text alone gives the same bits as in the batch
        np.testing.assert_array_equal(low.embed(texts[1:2])[0], b[1])
