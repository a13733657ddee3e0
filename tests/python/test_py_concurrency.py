"""Concurrency: several Python threads share one embd.Model (the engine's
scheduler batches their texts together; the GIL is released while the
engine works), so threads in parallel beat one thread; resident memory does
not grow over 10,000 calls; multiprocessing with spawn works; after fork the
child reloads the model on first use (documented in README.md, "Python")."""
import multiprocessing as mp
import os
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pyembd_test import MINILM, corpus_docs, need_model, tiny_model  # noqa: E402

import embd  # noqa: E402


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def model():
    with embd.Model(need_model(MINILM), cache="off") as m:
        yield m


def test_threads_beat_one_thread(model):
    texts = corpus_docs(240, 120)
    model.embed(texts[:8])  # warm up
    t0 = time.perf_counter()
    one = np.stack([model.embed(t) for t in texts])
    t_one = time.perf_counter() - t0

    out = [None] * len(texts)
    n_threads = 8

    def work(k):
        for i in range(k, len(texts), n_threads):
            out[i] = model.embed(texts[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_threads = time.perf_counter() - t0
    many = np.stack(out)
    print(f"{len(texts)} single-text calls: one thread {t_one:.2f} s, "
          f"{n_threads} threads {t_threads:.2f} s")
    # batched with other threads' texts: the same vectors up to summation order
    np.testing.assert_allclose(many, one, atol=2e-6)
    assert t_threads < t_one, (t_threads, t_one)


def test_gil_released_while_embedding(model):
    texts = corpus_docs(64)
    ticks = 0
    done = threading.Event()

    def embedder():
        model.embed(texts)
        done.set()

    t = threading.Thread(target=embedder)
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    assert ticks > 10_000  # the main thread kept running Python meanwhile


def test_rss_flat_over_10000_calls(tmp_path):
    # A tiny model (one layer, H 32), so that 11,000 calls take seconds; the
    # binding, the scheduler and the engine's per-call work are the same.
    texts = [f"short text number {i}" for i in range(10_000)]
    with embd.Model(tiny_model(str(tmp_path / "tiny")), cache="off") as m:
        for t in texts[:1000]:
            m.embed([t], return_tokens=True)
        base = rss_kib()
        for t in texts:
            m.embed([t], return_tokens=True)
            m.embed(t)
        grown = rss_kib() - base
    print(f"RSS after 1,000 warm-up calls {base} KiB, grown {grown} KiB over 20,000 more")
    assert grown < 8 * 1024


def _spawn_worker(args):
    path, texts = args
    import embd as e
    with e.Model(path, threads=1) as m:
        return m.embed(texts)


def test_multiprocessing_spawn(model):
    texts = ["first process text", "second process text", "third"]
    want = model.embed(texts)
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        got = pool.map(_spawn_worker, [(model.path, texts)] * 2)
    for g in got:
        assert np.array_equal(g, want)


def test_fork_reloads_in_child(model):
    texts = ["before the fork", "after the fork"]
    want = model.embed(texts)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the inherited model reloads on first use
        try:
            ok = np.array_equal(model.embed(texts), want) and model.device in ("cpu", "cuda")
            os.write(w, b"ok" if ok else b"mismatch")
        except BaseException as exc:  # noqa: BLE001
            os.write(w, repr(exc).encode()[:200])
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    msg = os.read(r, 256)
    os.close(r)
    assert status == 0 and msg == b"ok", msg
    assert np.array_equal(model.embed(texts), want)  # the parent's engine is untouched


def test_close_while_in_use_refused():
    m = embd.Model(need_model(MINILM), cache="off")
    texts = corpus_docs(200)
    t = threading.Thread(target=m.embed, args=(texts,))
    t.start()
    time.sleep(0.05)
    try:
        m.close()
    except embd.BusyError:
        pass  # in use: refused, never freed under the other thread
    t.join()
    m.close()


if __name__ == "__main__":
    from pyembd_test import run_pytest
    sys.exit(run_pytest(__file__))
