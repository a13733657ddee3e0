#!/usr/bin/env python3
"""Embed a corpus on a Ray cluster with embd: Ray Data reads the documents,
a pool of actors (each holding one embd.Model) embeds them, and the vectors
go to Parquet or to PostgreSQL + pgvector.

The recipe:

    import ray
    ds = ray.data.read_json("docs/", lines=True, num_cpus=0)   # or ray.data.from_items([...])
    ds = ds.map_batches(EmbdEmbedder,
                        fn_constructor_kwargs={"model": "/models/all-MiniLM-L6-v2", "threads": 1},
                        compute=ray.data.ActorPoolStrategy(size=4),  # 4 actors, one model each
                        num_cpus=1, num_gpus=0,           # num_gpus=1: one GPU per actor
                        batch_size=256, batch_format="pyarrow")
    ds.write_parquet("/data/vectors", ray_remote_args={"num_cpus": 0})
    # columns: id (as read), embedding (fixed_size_list<float>[384])

EmbdEmbedder loads the model once per actor (not once per batch) and returns,
for each batch, the ids beside the vectors: a pyarrow table with the id column
as it came and `embedding` as a fixed-size list of float32, which any Parquet
reader takes (pandas, DuckDB, Spark, pyarrow). Ray Data does not keep rows in
input order: join on the id. The vectors are the ones `embd embed` gives for
the same texts (same model, same options).

Sizing: one actor per CPU core with threads=1, or fewer actors with more
threads each (threads=N and num_cpus=N); on GPUs, one actor per GPU
(num_gpus=1, device="cuda": Ray sets CUDA_VISIBLE_DEVICES for the actor) and a
larger batch_size (4096 or more) so that the engine packs big batches.

Faults: if an actor's process dies (OOM killer, node lost, SIGKILL), Ray starts
a new one (max_restarts) and runs the batches it held again
(max_task_retries): no document is lost, and as a failed task's output is
dropped, none is written twice. Ray Data's defaults for actor pools are both
-1 (without limit); embed_dataset(max_retries=N) bounds them.

Reading and writing are given no CPU slot (num_cpus=0): with one actor per
CPU slot they would otherwise wait for a slot the actors never free.

Let each node keep one idle worker process beside its actors: start it with
RAY_num_workers_soft_limit set to its CPU count plus one
(`RAY_num_workers_soft_limit=5 ray start ...` on a 4-CPU node). Ray's default
soft limit is the CPU count, which the actors fill, so it kills the worker
that ran a read task one second after it ends and starts a new Python
process, with Ray and pyarrow to import (1.5-3 CPU seconds), for each write
task. On two 1-CPU nodes that cost the job 15% of its throughput
(tests/scale/test_ray.py, BENCHMARKS.md). main() sets it for the local
cluster it starts when no --address is given.

Ray Data does not split a file between read tasks: give it a folder of JSONL shards
(at least one per batch in flight), or read_json(..., override_num_blocks=N)
to split what a file holds into N blocks, or one actor gets all the work.
(Not .repartition(N): that is a task that needs a CPU slot of its own.)

PostgreSQL: with --store postgresql://..., EmbdIndexer (the same actor, plus
an embd.Store) writes each batch itself as it is embedded, by upsert: several
actors writing at once is safe, and a batch run twice writes the same rows
again. The HNSW index is built once, by the driver, after the job
(Store.finish()), not by each actor.

Command line (a cluster started with `ray start`, or a local one without
--address):

    python examples/ray_embed.py --model DIR -i docs.jsonl --out vectors/ \
        [--address 127.0.0.1:6379] [--concurrency 2] [--threads 1] [--num-gpus 0] \
        [--batch-size 256] [--blocks N] [--id-field id] [--text-field text]
    python examples/ray_embed.py --model DIR -i docs.jsonl --store postgresql://me@db/docs ...

Needs: pip install "ray[data]" and the embd package (`pip install ./python`).
"""
import argparse
import os
import sys
import time

import numpy as np
import pyarrow as pa


class EmbdEmbedder:
    """A Ray Data callable class: embeds a batch's texts with one embd.Model.

    model: a model directory or ORG/NAME; device: 'auto', 'cpu', 'cuda';
    threads: CPU threads of this actor's engine (None: all cores, too many
    when several actors share a node); id_field / text_field: the input
    columns. pid_dir: if set, the actor writes its PID there (a file named
    after it) when it starts, and appends a line per batch: used by the tests
    to find and kill an actor; leave it None.
    """

    def __init__(self, model, device="auto", threads=None, id_field="id", text_field="text",
                 pid_dir=None):
        import embd

        self.model = embd.Model(model, device=device, threads=threads, cache="off")
        self.id_field, self.text_field = id_field, text_field
        self.progress = None
        if pid_dir:
            path = os.path.join(pid_dir, "actor-%d" % os.getpid())
            self.progress = open(path, "a", buffering=1)

    def _mark(self, what):
        """One line of progress for pid_dir: "start N T" / "done N T" (T: the
        wall clock), read by tests/scale/test_ray.py."""
        if self.progress:
            self.progress.write("%s %.6f\n" % (what, time.time()))

    def embed(self, batch):
        """batch: a pyarrow table (or a dict of columns). Returns (ids, texts, vectors)."""
        if isinstance(batch, dict):
            batch = pa.table(batch)
        ids = batch.column(self.id_field)
        texts = [t if t is not None else "" for t in batch.column(self.text_field).to_pylist()]
        self._mark("start %d" % len(texts))
        vectors = self.model.embed(texts)  # (n, D) float32
        return ids, texts, vectors

    def __call__(self, batch):
        ids, _, vectors = self.embed(batch)
        n, dim = vectors.shape
        flat = pa.array(np.ascontiguousarray(vectors).reshape(-1), type=pa.float32())
        out = pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})
        self._mark("done %d" % n)
        return out


class EmbdIndexer(EmbdEmbedder):
    """EmbdEmbedder that also writes each batch into a store (a postgresql://
    URL or a directory: but a directory store takes one writer at a time), by
    id: a batch written again replaces its own rows. Returns the ids written."""

    def __init__(self, model, store, **kwargs):
        super().__init__(model, **kwargs)
        import embd

        self.store = embd.Store(store, self.model)

    def __call__(self, batch):
        ids, texts, vectors = self.embed(batch)
        self.store.add([str(i) for i in ids.to_pylist()], texts, vectors=vectors)
        self.store.flush()
        self._mark("done %d" % len(texts))
        return pa.table({"id": ids})


def embed_dataset(ds, model, *, concurrency=2, threads=1, num_gpus=0, batch_size=256,
                  id_field="id", text_field="text", store=None, pid_dir=None, max_retries=None):
    """The map_batches stage of the recipe on a Ray dataset with id and text
    columns: a dataset of (id, embedding), or of (id) when store is given.
    max_retries: None keeps Ray Data's defaults for actor pools (restart a
    dead actor and retry its batches without limit); a number N bounds both
    (max_restarts=N, max_task_retries=N, passed as actor options, which Ray
    2.60 takes with a deprecation warning)."""
    import ray

    kwargs = {"model": model, "device": "cuda" if num_gpus else "cpu", "threads": threads,
              "id_field": id_field, "text_field": text_field, "pid_dir": pid_dir}
    cls = EmbdEmbedder
    if store:
        cls, kwargs["store"] = EmbdIndexer, store
    retries = {}
    if max_retries is not None:
        retries = {"max_restarts": max_retries, "max_task_retries": max_retries}
    return ds.map_batches(cls, fn_constructor_kwargs=kwargs,
                          compute=ray.data.ActorPoolStrategy(size=concurrency),
                          num_cpus=max(1, threads or 1) if not num_gpus else 1,
                          num_gpus=num_gpus, batch_size=batch_size, batch_format="pyarrow",
                          **retries)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", "-m", required=True, help="model directory or ORG/NAME")
    ap.add_argument("--input", "-i", required=True, help="JSONL file (or folder of them)")
    ap.add_argument("--out", help="Parquet output folder (new or empty)")
    ap.add_argument("--store", help="postgresql:// URL to index into instead of --out")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: a local one)")
    ap.add_argument("--concurrency", type=int, default=2, help="actors (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="engine threads per actor (default 1)")
    ap.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (default 0)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=0, help="split the input into N blocks (default: one per file)")
    ap.add_argument("--id-field", default="id")
    ap.add_argument("--text-field", default="text")
    a = ap.parse_args(argv)
    if bool(a.out) == bool(a.store):
        ap.error("give one of --out or --store")
    if a.out and os.path.isdir(a.out) and os.listdir(a.out):
        # Ray Data adds files beside those there: a second run would hold
        # every vector twice
        ap.error(f"--out {a.out} is not empty: give a new folder (or remove its files)")

    import ray

    init = {}
    if a.address is None and "RAY_num_workers_soft_limit" not in os.environ:
        # a local cluster: one idle worker beside the actors (see the docstring)
        init["_system_config"] = {"num_workers_soft_limit": (os.cpu_count() or 1) + 1}
    ray.init(address=a.address, include_dashboard=False, log_to_driver=False, **init)
    model = os.path.abspath(a.model) if os.path.isdir(a.model) else a.model
    # reading and writing take no CPU slot, so that the actors can have them all
    ds = ray.data.read_json(os.path.abspath(a.input), lines=True, num_cpus=0,
                            override_num_blocks=a.blocks or None)
    ds = ds.select_columns([a.id_field, a.text_field])
    t0 = time.monotonic()
    out = embed_dataset(ds, model, concurrency=a.concurrency, threads=a.threads,
                        num_gpus=a.num_gpus, batch_size=a.batch_size, id_field=a.id_field,
                        text_field=a.text_field, store=a.store)
    if a.out:
        out.write_parquet(os.path.abspath(a.out), ray_remote_args={"num_cpus": 0})
        import pyarrow.dataset as pads

        n = pads.dataset(os.path.abspath(a.out), format="parquet").count_rows()
    else:
        n = out.count()
        import embd

        with embd.Store(a.store, embd.Model(model, device="cpu", threads=1, cache="off")) as st:
            st.finish()  # the HNSW index, once, after the load
    dt = time.monotonic() - t0
    print("embedded %d documents in %.1f s: %.1f docs/s" % (n, dt, n / dt), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
