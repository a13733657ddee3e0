"""Several contexts behind one scheduler from Python: embd.Model(device=
'cuda:N,M,...') and fastembed's device_ids=[N, M] (without a GPU here: the
list is checked, --device cuda fails naming the device, cuda=True falls back
to the CPU), and the same machinery on the CPU (the engine's replicas): the
rows equal one context's bit for bit, the metrics carry a device label per
context, the stats add up, a disk cache is refused with several."""
import logging
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pyembd_test import MINILM, need_model  # noqa: E402

import embd  # noqa: E402
from embd import _embd  # noqa: E402

TEXTS = [f"document {i} about Debian packages and {'kernels ' * (i % 7)}" for i in range(300)]


def no_gpu():
    return "device auto -> cpu" in embd.device_report()


@pytest.mark.parametrize("bad", ["cuda:0,x", "cuda:,1", "cpu:0,1", "cuda:" + ",".join(["0"] * 65),
                                 "cuda:1000,1"])
def test_bad_device_lists(bad):
    with pytest.raises(ValueError, match="device"):
        embd.Model(need_model(MINILM), device=bad)


def test_several_gpus_without_one():
    if not no_gpu():
        pytest.skip("a GPU is here: the fallback paths are not what runs")
    with pytest.raises(embd.UnsupportedError, match="cuda:0"):
        embd.Model(need_model(MINILM), device="cuda:0,1")
    with pytest.raises(ValueError, match="disk cache"):
        embd.Model(need_model(MINILM), device="cuda:0,1", cache="/tmp/embd-never-made")


def test_fastembed_device_ids_fall_back(caplog):
    if not no_gpu():
        pytest.skip("a GPU is here")
    with caplog.at_level(logging.WARNING, logger="embd"):
        te = embd.TextEmbedding(need_model(MINILM), cuda=True, device_ids=[0, 1])
    assert any("not usable" in r.getMessage() for r in caplog.records)
    ref = embd.Model(need_model(MINILM), device="cpu").embed(TEXTS[:5])
    got = np.stack(list(te.embed(TEXTS[:5])))
    assert np.array_equal(got, ref)


def test_replicas_equal_one_context():
    path = need_model(MINILM)
    one = _embd.Engine(path, device=1, threads=1, cache_bytes=0)
    two = _embd.Engine(path, device=1, threads=2, cache_bytes=0, replicas=2)
    assert two.info()["contexts"] == 2 and one.info()["contexts"] == 1
    a = np.zeros((len(TEXTS), 384), np.float32)
    b = np.zeros((len(TEXTS), 384), np.float32)
    one.embed_into(TEXTS, a)
    two.embed_into(TEXTS, b)
    assert np.array_equal(a, b)  # one thread each: the same kernels, bit for bit
    met = two.metrics()
    rows = {l.split(" ")[0]: float(l.split(" ")[1]) for l in met.splitlines()
            if l.startswith("embd_inputs_total{")}
    assert set(rows) == {'embd_inputs_total{device="cpu:0"}', 'embd_inputs_total{device="cpu:1"}'}
    assert sum(rows.values()) == len(TEXTS)
    assert two.stats()["inputs"] == len(TEXTS)
    with pytest.raises(ValueError, match="disk cache"):
        _embd.Engine(path, device=1, replicas=2, cache_dir="/tmp/embd-never-made")
    with pytest.raises(ValueError, match="replicas"):
        _embd.Engine(path, device=1, replicas=0)
    one.close()
    two.close()


def test_fastembed_parallel():
    """embed(parallel=N): N replicas of the model on the CPU behind one
    scheduler, each call given work for all of them; the same vectors as
    parallel=None, in order, from a generator too; 0 is one per core."""
    path = need_model(MINILM)
    te = embd.TextEmbedding(path, threads=2)
    ref = np.stack(list(te.embed(TEXTS, batch_size=64)))
    got = np.stack(list(te.embed((t for t in TEXTS), batch_size=64, parallel=2)))
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.allclose(got, ref, rtol=0, atol=1e-6)
    one = embd.Model(path, device="cpu", threads=1, cache="off").embed(TEXTS)
    assert np.array_equal(got, one)  # one thread a replica: one thread's bits
    rep = te._par[1]
    assert te._par[0] == 2 and rep.replicas == 2 and rep._engine().info()["contexts"] == 2
    rows = {l.split(" ")[0]: float(l.split(" ")[1]) for l in rep.metrics().splitlines()
            if l.startswith("embd_inputs_total{")}
    assert len(rows) == 2 and all(v > 0 for v in rows.values()), rows  # both replicas worked
    again = np.stack(list(te.embed(TEXTS[:10], parallel=2)))
    assert te._par[1] is rep and np.array_equal(again, got[:10])  # kept for the next call
    q = np.stack(list(te.query_embed(TEXTS[:3], parallel=2)))
    assert np.array_equal(q, np.stack(list(te.query_embed(TEXTS[:3]))))
    list(te.embed(TEXTS[:4], parallel=0))
    assert te._par[0] == min(os.cpu_count() or 1, 64) or (os.cpu_count() or 1) == 1
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="parallel"):
            list(te.embed(TEXTS[:2], parallel=bad))
    with pytest.raises(ValueError, match="replicas"):
        embd.Model(path, replicas=0)


if __name__ == "__main__":
    from pyembd_test import run_pytest
    sys.exit(run_pytest(__file__))
