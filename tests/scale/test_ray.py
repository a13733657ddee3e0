#!/usr/bin/env python3
"""Batch embedding on Ray Data (examples/ray_embed.py) on a local Ray cluster.

The cluster is two real nodes on 127.0.0.1, started the way a user starts
one: `ray start --head` and `ray start --address=...` (each with its own
temporary folder, one CPU, a 100 MB object store, no dashboard), each
`ray start --block` in its own process group, so the teardown stops exactly
the processes this test started (never `ray stop`, which stops every Ray on
the machine). ray.cluster_utils.Cluster would start the same processes from
Ray's test helpers; the command line is what deployments use, so it is what
is tested. Token authentication is on, with a token made for the run
(RAY_AUTH_TOKEN), so a ~/.ray/auth_token that a local ray.init() leaves
behind does not change the cluster's mode under the driver.

The job: the first 5,000 corpus documents ($EMBD_TEST_CORPUS, their ids and
"text"), written as 20 JSONL shards, read with ray.data.read_json, embedded by
two EmbdEmbedder actors (one per node, threads=1, batch_size 500), written
with write_parquet, while one actor's worker process is killed with SIGKILL
mid-job (its PID from the file each actor writes, killed once it has
finished a batch and holds another). Ray restarts the actor (max_restarts)
and runs its batches again (max_task_retries, both bounded to 3 here).
Checks: every id exactly once, each vector equal to `embd embed`'s for the
same text (same model; cosine >= 0.999999 and max abs difference <= 1e-6),
and a third actor process (the restarted one).

Throughput (printed, not asserted): documents per second of the Ray job
(wall time of the job, actor start and the restart included, cluster start
excluded) against `embd embed --threads 2` on the same 2 CPUs.
EMBD_RAY_BENCH=1 also runs the job undisturbed and prints its rate.

Time: by default each text is the opening of the description (its first
line, cut at a space after at most 60 characters: ~12 tokens) so that the
test fits its budget on a loaded 2-core machine. EMBD_RAY_FULL=1 embeds the full descriptions (~86 tokens each,
truncated at 256) and implies EMBD_RAY_BENCH=1: a benchmark run, minutes.

Skips (77) when ray, the embd package, all-MiniLM-L6-v2 or the corpus is
missing.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings

try:
    import numpy as np
except ImportError:  # outside the test venv (scripts/setup-deps)
    print("skip: numpy is not importable")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from common import Checker, skip  # noqa: E402  (skip exits 77)
SRC = os.environ.get("EMBD_SRC", os.path.join(HERE, "..", ".."))
BIN = os.environ.get("EMBD_BIN", "embd")
N_DOCS = 5000
SHARDS = 20
BATCH = 500
STARTUP_S = 90  # a node must join within this, on a loaded machine




def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def opening(text):
    """The text's first line, cut after at most 60 characters at a space."""
    line = text.split("\n", 1)[0]
    if len(line) <= 60:
        return line
    cut = line.rfind(" ", 0, 61)
    return line[:cut if cut > 0 else 60]


def load_docs(path, full):
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            t = d.get("text", "")
            ids.append(str(d["id"]))
            texts.append(t if full else opening(t))
            if len(ids) == N_DOCS:
                break
    return ids, texts


def embd_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EMBD_") or k in ("EMBD_HOME", "EMBD_TEST_MODELS")}
    return env


class RayCluster:
    """A head and one worker node on 127.0.0.1, each `ray start --block` in
    its own process group; stop() ends those groups and any process left
    that names this cluster's temporary folder."""

    def __init__(self, root, pythonpath):
        self.root = root
        self.port = free_port()
        self.procs = []
        # each node keeps one idle worker beside its actor (the CPU count plus
        # one, as examples/ray_embed.py's docstring advises): with Ray's
        # default (the CPU count) each write task starts a new worker process
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=pythonpath,
                        RAY_DEDUP_LOGS="0", RAY_num_workers_soft_limit="2")

    def _start(self, name, args):
        tmp = os.path.join(self.root, name)
        os.makedirs(tmp)
        log = open(os.path.join(self.root, name + ".log"), "w")
        cmd = ["ray", "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
               "--object-store-memory=100000000", "--temp-dir=" + tmp,
               "--disable-usage-stats"] + args
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def start(self):
        import ray

        # Ray's daemons outlive `ray start`: made children of this process
        # when their parent ends (not of init), so that stop() reaps them.
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            pass
        self._start("head", ["--head", "--port=%d" % self.port, "--include-dashboard=false"])
        deadline = time.monotonic() + STARTUP_S
        # the worker can join once the head's GCS answers
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.procs[0].poll() is not None:
                    raise RuntimeError("the Ray head did not start: %s" % self.log("head"))
                time.sleep(0.5)
        self._start("worker", ["--address=127.0.0.1:%d" % self.port])
        ray.init(address="127.0.0.1:%d" % self.port, log_to_driver=False,
                 logging_level="ERROR")
        while sum(1 for n in ray.nodes() if n["Alive"]) < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError("the Ray worker did not join: %s" % self.log("worker"))
            time.sleep(0.5)

    def log(self, name):
        try:
            with open(os.path.join(self.root, name + ".log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        try:
            import ray

            ray.shutdown()
        except Exception:  # noqa: BLE001
            pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5  # then no more waiting: nothing here is to be kept
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        # processes that left the groups (Ray's workers are started by the
        # raylet): found by this cluster's own folder on their command line
        try:
            import psutil

            for q in psutil.process_iter(["pid", "cmdline"]):
                if any(self.root in a for a in (q.info["cmdline"] or [])):
                    try:
                        q.kill()
                    except psutil.Error:
                        pass
        except ImportError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)


class Killer(threading.Thread):
    """Waits until an actor has finished a batch and started another, then
    SIGKILLs its process (once)."""

    def __init__(self, pid_dir):
        super().__init__(daemon=True)
        self.pid_dir, self.killed, self.stop = pid_dir, None, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                names = sorted(os.listdir(self.pid_dir))
            except OSError:
                return
            for name in names:
                try:
                    with open(os.path.join(self.pid_dir, name)) as f:
                        lines = f.read().split()
                except OSError:
                    continue
                marks = [w for w in lines if w in ("start", "done")]
                if "done" in marks and marks[-1] == "start":
                    pid = int(name.split("-")[1])
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.killed = pid
                    except ProcessLookupError:
                        continue
                    return
            time.sleep(0.05)


def run_job(model, in_dir, out_dir, pid_dir):
    import ray
    import ray_embed

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    t0 = time.monotonic()
    ds = ray.data.read_json(in_dir, lines=True, num_cpus=0)
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
    out = ray_embed.embed_dataset(ds, model, concurrency=2, threads=1, batch_size=BATCH,
                                  pid_dir=pid_dir, max_retries=3)
    out.write_parquet(out_dir, ray_remote_args={"num_cpus": 0})
    return time.monotonic() - t0


def worker_rate(pid_dir):
    """(documents, seconds, docs/s) of the actors' work in a job: from the
    first batch an actor started to the last one it finished, all actors
    together (the job without Ray's start-up of the actor processes:
    spawning, imports, the model's load)."""
    starts, dones, docs = [], [], 0
    for name in os.listdir(pid_dir):
        busy, last = 0.0, None
        with open(os.path.join(pid_dir, name)) as f:
            for line in f:
                w = line.split()
                if len(w) == 3 and w[0] == "start":
                    starts.append(float(w[2]))
                    last = float(w[2])
                elif len(w) == 3 and w[0] == "done":
                    dones.append(float(w[2]))
                    docs += int(w[1])
                    busy += float(w[2]) - last if last is not None else 0.0
        print("actor %s: busy %.1f s in its batches" % (name, busy))
    if not starts or not dones:
        return docs, 0.0, 0.0
    secs = max(dones) - min(starts)
    return docs, secs, docs / secs if secs > 0 else 0.0


def read_parquet(out_dir):
    import pyarrow.dataset as pads

    t = pads.dataset(out_dir, format="parquet").to_table()
    ids = [str(i) for i in t.column("id").to_pylist()]
    emb = t.column("embedding").combine_chunks()
    dim = emb.type.list_size
    vecs = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return ids, vecs


def check_output(c, what, ids, ref, got_ids, got_vecs):
    c.check(len(got_ids) == len(ids), "%s: %d rows, want %d" % (what, len(got_ids), len(ids)))
    c.check(len(set(got_ids)) == len(got_ids),
            "%s: %d duplicated ids" % (what, len(got_ids) - len(set(got_ids))))
    missing = set(ids) - set(got_ids)
    c.check(not missing, "%s: %d ids lost, e.g. %s" % (what, len(missing), sorted(missing)[:3]))
    row = {d: i for i, d in enumerate(ids)}
    order = [row.get(d, -1) for d in got_ids]
    if -1 in order or len(got_ids) != len(ids):
        return
    want = ref[order]
    diff = float(np.abs(got_vecs - want).max())
    cos = np.sum(got_vecs * want, axis=1) / (np.linalg.norm(got_vecs, axis=1) *
                                              np.linalg.norm(want, axis=1))
    c.check(diff <= 1e-6, "%s: max abs difference from embd embed %.3g > 1e-6" % (what, diff))
    c.check(float(cos.min()) >= 0.999999,
            "%s: min cosine against embd embed %.9f < 0.999999" % (what, float(cos.min())))
    c.check(bool(np.isfinite(got_vecs).all()), "%s: non-finite values" % what)
    print("%s: %d ids, max abs diff %.3g, min cosine %.9f" % (what, len(got_ids), diff,
                                                              float(cos.min())), flush=True)


def main():
    # Token authentication with a token of this run's own, for the cluster's
    # processes and this driver alike: the GCS listens on every interface,
    # and a ~/.ray/auth_token left by another local Ray (which `ray start`
    # would pick up, and this driver would not) cannot get in the way.
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                      RAY_USAGE_STATS_ENABLED="0")
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        skip("ray[data] not importable (scripts/setup-deps installs it): %s" % e)
    try:
        import embd  # noqa: F401
    except ImportError as e:
        skip("the embd package is not importable (PYTHONPATH): %s" % e)
    root = os.environ.get("EMBD_TEST_MODELS")
    model = os.path.join(root, "all-MiniLM-L6-v2") if root else None
    if not model or not os.path.isfile(os.path.join(model, "config.json")):
        skip("all-MiniLM-L6-v2 not found under EMBD_TEST_MODELS")
    corpus = os.environ.get("EMBD_TEST_CORPUS")
    if not corpus or not os.path.isfile(corpus):
        skip("EMBD_TEST_CORPUS not set or missing")
    full = os.environ.get("EMBD_RAY_FULL") == "1"
    bench = full or os.environ.get("EMBD_RAY_BENCH") == "1"
    examples = os.path.join(SRC, "examples")
    sys.path.insert(0, examples)
    # the actors import embd and ray_embed: the cluster's processes get both
    pythonpath = os.pathsep.join([examples] + [os.path.abspath(p) for p in
                                               os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                               if p])

    c = Checker("scale_ray")
    # a second run into the same --out would add every vector again beside
    # the first run's files: refused before Ray starts
    import ray_embed
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "part-0.parquet"), "w") as f:
            f.write("x")
        try:
            ray_embed.main(["--model", model, "-i", corpus, "--out", d])
            refused = False
        except SystemExit as e:
            refused = e.code == 2
        c.check(refused, "ray_embed.py refuses a non-empty --out")
    ids, texts = load_docs(corpus, full)
    if len(ids) < N_DOCS:
        skip("the corpus has fewer than %d documents" % N_DOCS)
    tmp = tempfile.mkdtemp(prefix="embd-ray-", dir="/tmp")  # short: Ray's socket paths
    cluster = None
    try:
        in_dir = os.path.join(tmp, "in")
        os.makedirs(in_dir)
        per = N_DOCS // SHARDS
        for s in range(SHARDS):
            with open(os.path.join(in_dir, "part-%02d.jsonl" % s), "w", encoding="utf-8") as f:
                for i in range(s * per, (s + 1) * per):
                    f.write(json.dumps({"id": ids[i], "text": texts[i]}) + "\n")
        both = os.path.join(tmp, "all.jsonl")
        with open(both, "w", encoding="utf-8") as f:
            for i, t in zip(ids, texts):
                f.write(json.dumps({"id": i, "text": t}) + "\n")

        # the reference, and its speed on the same two cores
        t0 = time.monotonic()
        p = subprocess.run([BIN, "embed", "-m", model, "-i", both, "--format", "npy", "-o",
                            os.path.join(tmp, "ref.npy"), "--threads", "2", "--cache", "off",
                            "-q"], capture_output=True, env=embd_env())
        t_ref = time.monotonic() - t0
        if p.returncode != 0:
            c.check(False, "embd embed exited %d: %s" % (p.returncode, p.stderr.decode()))
            return c.done()
        ref = np.load(os.path.join(tmp, "ref.npy"))

        t0 = time.monotonic()
        cluster = RayCluster(os.path.join(tmp, "ray"), pythonpath)
        try:
            cluster.start()
        except RuntimeError as e:
            c.check(False, str(e))
            return c.done()
        t_start = time.monotonic() - t0
        import ray

        nodes = [n for n in ray.nodes() if n["Alive"]]
        c.check(len(nodes) == 2 and all(n["Resources"].get("CPU") == 1 for n in nodes),
                "two nodes of one CPU each: %s" % [n["Resources"] for n in nodes])

        # the job, with one actor's process killed mid-job
        pids = os.path.join(tmp, "pids")
        os.makedirs(pids)
        killer = Killer(pids)
        killer.start()
        t_kill = run_job(model, in_dir, os.path.join(tmp, "out"), pids)
        killer.stop.set()
        killer.join()
        c.check(killer.killed is not None, "no actor was killed mid-job")
        actors = os.listdir(pids)
        c.check(len(actors) >= 3, "%d actor processes, want 2 and a restarted one" % len(actors))
        got_ids, got = read_parquet(os.path.join(tmp, "out"))
        check_output(c, "job with a killed actor", ids, ref, got_ids, got)

        t_ray = None
        if bench:  # the same job undisturbed, for its throughput
            pids = os.path.join(tmp, "pids-clean")
            os.makedirs(pids)
            t_ray = run_job(model, in_dir, os.path.join(tmp, "out-clean"), pids)
            got_ids, got = read_parquet(os.path.join(tmp, "out-clean"))
            check_output(c, "clean job", ids, ref, got_ids, got)
            c.check(len(os.listdir(pids)) == 2, "clean job: %d actors, want 2" %
                    len(os.listdir(pids)))
            w_docs, w_secs, w_rate = worker_rate(pids)
            c.check(w_docs == N_DOCS, "clean job: the actors' marks count %d documents" % w_docs)

        print("texts: %s, %d documents; cluster start %.1f s" %
              ("full descriptions" if full else "openings", N_DOCS, t_start))
        line = "throughput: embd embed --threads 2: %.1f docs/s (%.1f s); " % (N_DOCS / t_ref,
                                                                               t_ref)
        if t_ray:
            line += ("Ray Data, 2 actors x 1 thread on 2 one-CPU nodes: %.1f docs/s (%.1f s, "
                     "%.0f%% of embd embed); on its workers, from the first batch started to "
                     "the last done: %.1f docs/s (%.1f s, %.0f%%); "
                     % (N_DOCS / t_ray, t_ray, 100 * t_ref / t_ray, w_rate, w_secs,
                        100 * w_rate * t_ref / N_DOCS))
        line += ("Ray Data with an actor killed and restarted: %.1f docs/s (%.1f s, %.0f%% of "
                 "embd embed)" % (N_DOCS / t_kill, t_kill, 100 * t_ref / t_kill))
        print(line, flush=True)
    finally:
        if cluster is not None:
            t0 = time.monotonic()
            cluster.stop()
            print("cluster stopped in %.1f s" % (time.monotonic() - t0))
        shutil.rmtree(tmp, ignore_errors=True)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
