"""Three `embd serve` replicas behind HAProxy with deploy/haproxy.cfg (issue 25, item 2).

On loopback: three replicas of the real all-MiniLM-L6-v2 (--drain-seconds 3)
and HAProxy (Debian's) with deploy/haproxy.cfg as shipped, its addresses from
the environment variables the file reads. Then:

1. HAProxy's overhead, measured and printed, not asserted: the same requests
   (one short query each) at the same concurrency straight to replica r1, and
   through HAProxy with r2 and r3 disabled on HAProxy's runtime API (so both
   paths reach the same one replica); throughput and p50 latency, the better
   of two rounds each.
2. A bounded load (4 client threads, each at least 60 requests of 3 texts,
   kept-alive connections) through HAProxy while r2 is killed with SIGKILL
   and r3 is stopped with SIGTERM mid-run: no request fails, and every
   vector equals the one r1 gave for that text before the load (within
   1e-6). r3 drains: HAProxy's health check sees its /health answer 503 and
   marks it down while it still serves, and it exits 0.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2),
EMBD_TEST_CORPUS (optional: texts; made-up ones without it); skips when
haproxy is not installed (scripts/setup-deps installs it).
"""
import csv
import http.client
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
from server_fixture import Server, minilm, skip, wait_until  # noqa: E402

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
if not HAPROXY:
    skip("haproxy is not installed (apt-get install haproxy)")
CFG = os.path.join(HERE, "..", "..", "deploy", "haproxy.cfg")
M, c = minilm("deploy_haproxy")
SANITIZED = os.environ.get("EMBD_TEST_SANITIZED") == "1"
THREADS = 4
MIN_REQUESTS = 30 if SANITIZED else 60  # per thread, under the load
MAX_SECONDS = 40  # the load stops here whatever happened (bounded)
PER_REQUEST = 3
TOL = 1e-6


def corpus_texts(n):
    path = os.environ.get("EMBD_TEST_CORPUS", "")
    texts = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i % 37 == 0:
                    t = json.loads(line).get("text", "")
                    if t:
                        texts.append(t[:200])
                if len(texts) == n:
                    break
    k = 0
    while len(texts) < n:  # no corpus: made-up ones
        texts.append(f"made-up document {k} about package {k * 7} and its {k % 5} files")
        k += 1
    return texts


TEXTS = corpus_texts(80)


QUERIES = [f"how do I install package {k}?" for k in range(20)]


def request_texts(t, k, queries=False):
    """The texts of thread t's k-th request: 3 of the pool, varied; or one
    short query."""
    base = t * 1009 + k * 13
    if queries:
        return [QUERIES[base % len(QUERIES)]]
    return [TEXTS[(base + j * 29) % len(TEXTS)] for j in range(PER_REQUEST)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_port(url):
    hp = url.split("//", 1)[1].rstrip("/")
    h, p = hp.rsplit(":", 1)
    return h, int(p)


class Client:
    """One kept-alive connection; post() never retries: any error is a failure."""

    def __init__(self, addr):
        self.addr = addr
        self.conn = None

    def post(self, texts):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(*self.addr, timeout=60)
        body = json.dumps({"input": texts, "model": "minilm"})
        try:
            self.conn.request("POST", "/v1/embeddings", body,
                              {"Content-Type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            self.conn = None
            return None, repr(e)
        if r.status != 200:
            return r.status, data[:300]
        return 200, [d["embedding"] for d in sorted(json.loads(data)["data"],
                                                     key=lambda d: d["index"])]

    def close(self):
        if self.conn:
            self.conn.close()


def max_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("inf")


def run_load(addr, n_per_thread, keep_going=None, deadline=None, counter=None, queries=False):
    """THREADS clients, each n_per_thread requests at least (more while
    keep_going() says so, until deadline). Returns (latencies, failures,
    mismatches, wall seconds)."""
    lat, failures, mismatches = [], [], []
    lock = threading.Lock()

    def worker(t):
        cl = Client(addr)
        k = 0
        while True:
            if k >= n_per_thread and not (keep_going and keep_going()):
                break
            if deadline and time.time() > deadline:
                break
            texts = request_texts(t, k, queries)
            t0 = time.perf_counter()
            st, got = cl.post(texts)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                if counter is not None:
                    counter[0] += 1
                if st != 200:
                    failures.append(f"thread {t} request {k}: {st} {got!r}")
                elif len(got) != len(texts):
                    mismatches.append(f"thread {t} request {k}: {len(got)} vectors")
                else:
                    for text, v in zip(texts, got):
                        d = max_diff(v, REF[text])
                        if not d <= TOL:
                            mismatches.append(f"thread {t} request {k}: differs by {d:.3g}")
            k += 1
        cl.close()

    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return lat, failures, mismatches, time.perf_counter() - t0


tmp = tempfile.mkdtemp(prefix="embd-haproxy-")
sock_path = os.path.join(tmp, "lb.sock")


def lb_cmd(cmd):
    """A command on HAProxy's runtime API (the stats socket); its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock_path)
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    return out.decode(errors="replace")


def lb_servers():
    """{server name: its row of `show stat`} for backend embd, plus the
    backend's own row as "BACKEND"."""
    try:
        text = lb_cmd("show stat")
    except OSError:
        return {}
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {r["svname"]: r for r in rows if r.get("pxname") == "embd"}


def all_up(names=("r1", "r2", "r3")):
    s = lb_servers()
    return all(s.get(n, {}).get("status", "").startswith("UP") for n in names)


T0 = time.time()


def phase(what):
    print(f"[{time.time() - T0:5.1f} s] {what}", flush=True)


# Stopped by CTest's timeout (SIGTERM): still stop the servers and HAProxy.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
replicas = []
lb = None
lb_log = open(os.path.join(tmp, "haproxy.log"), "w+b")
try:
    for i in range(3):
        replicas.append(Server(M, "--threads", "1", "--cache", "off", "--drain-seconds", "3"))
    addrs = [host_port(r.url) for r in replicas]
    lb_port, stats_port = free_port(), free_port()
    env = dict(os.environ, EMBD_LB_BIND=f"127.0.0.1:{lb_port}",
               EMBD_LB_STATS=f"127.0.0.1:{stats_port}", EMBD_LB_SOCKET=sock_path,
               EMBD_LB_LOG="stderr")
    for i, (h, p) in enumerate(addrs):
        env[f"EMBD_REPLICA{i + 1}"] = f"{h}:{p}"
    lb = subprocess.Popen([HAPROXY, "-db", "-f", CFG], env=env, stdout=lb_log, stderr=lb_log)
    c.check(wait_until(all_up, 20), "HAProxy did not report the three replicas up")
    lb_addr = ("127.0.0.1", lb_port)
    phase("three replicas and HAProxy up")

    # The reference: every text from replica r1 directly, one request.
    ref_cl = Client(addrs[0])
    st, vecs = ref_cl.post(TEXTS + QUERIES)
    ref_cl.close()
    if st != 200:
        raise RuntimeError(f"reference request: {st} {vecs!r}")
    REF = dict(zip(TEXTS + QUERIES, vecs))
    phase("reference vectors from r1")

    # 1. HAProxy's overhead on one replica: r2 and r3 disabled in HAProxy.
    for n in ("r2", "r3"):
        lb_cmd(f"disable server embd/{n}")
    n_meas = 10 if SANITIZED else 40
    run_load(addrs[0], 3, queries=True)  # warm-up, both paths
    run_load(lb_addr, 3, queries=True)
    rounds = {"direct": [], "haproxy": []}
    for rnd in range(2):
        for name, addr in (("direct", addrs[0]), ("haproxy", lb_addr)):
            lat, fails, mism, wall = run_load(addr, n_meas, queries=True)
            c.check(not fails and not mism, f"overhead round {name}: {fails[:3]} {mism[:3]}")
            rps, p50 = len(lat) / wall, statistics.median(lat) * 1e3
            print(f"round {rnd} {name}: {rps:.1f} requests/s, p50 {p50:.2f} ms")
            rounds[name].append((rps, p50))
    d_rps, d_p50 = max(r for r, _ in rounds["direct"]), min(p for _, p in rounds["direct"])
    h_rps, h_p50 = max(r for r, _ in rounds["haproxy"]), min(p for _, p in rounds["haproxy"])
    print(f"HAProxy overhead ({THREADS} clients x {n_meas} requests of one short query, "
          f"one replica, --threads 1, cache off): throughput {h_rps:.1f} vs {d_rps:.1f} requests/s "
          f"direct ({(h_rps / d_rps - 1) * 100:+.1f}%), p50 {h_p50:.2f} vs {d_p50:.2f} ms "
          f"({h_p50 - d_p50:+.2f} ms)")
    for n in ("r2", "r3"):
        lb_cmd(f"enable server embd/{n}")
    c.check(wait_until(all_up, 20), f"r2, r3 not back up: {lb_servers()}")
    before = lb_servers().get("BACKEND", {})
    phase("overhead measured")

    # 2. The load, with r2 killed and r3 stopped mid-run.
    counter = [0]
    stop_at = [None]  # set once r3 has exited and the load has gone on a while
    deadline = time.time() + MAX_SECONDS
    result = {}

    def load():
        result["r"] = run_load(lb_addr, MIN_REQUESTS,
                               keep_going=lambda: stop_at[0] is None or counter[0] < stop_at[0],
                               deadline=deadline, counter=counter)

    th = threading.Thread(target=load)
    th.start()
    wait_until(lambda: counter[0] >= 40, 30)
    replicas[1].proc.send_signal(signal.SIGKILL)
    print(f"SIGKILL r2 after {counter[0]} requests")
    wait_until(lambda: counter[0] >= 80, 30)
    replicas[2].proc.send_signal(signal.SIGTERM)
    t_term = time.time()
    print(f"SIGTERM r3 after {counter[0]} requests")
    # Watch HAProxy's view of r3 while it drains.
    down_by_check = None
    while replicas[2].proc.poll() is None and time.time() < t_term + 30:
        r3 = lb_servers().get("r3", {})
        if down_by_check is None and r3.get("status", "").startswith("DOWN"):
            down_by_check = (time.time() - t_term, r3.get("check_status"), r3.get("check_code"))
        time.sleep(0.05)
    rc3 = replicas[2].stop(timeout=30)
    t_exit = time.time() - t_term
    stop_at[0] = counter[0] + 40
    th.join(MAX_SECONDS + 60)
    lat, fails, mism, wall = result.get("r", ([], ["the load did not finish"], [], 0))
    after = lb_servers()
    phase("load done")
    print(f"load: {len(lat)} requests in {wall:.1f} s through HAProxy, {len(fails)} failed, "
          f"{len(mism)} with other vectors; p50 {statistics.median(lat) * 1e3:.1f} ms"
          if lat else "load: no requests")
    c.check(len(lat) >= THREADS * MIN_REQUESTS, f"only {len(lat)} requests were made")
    c.check(not fails, f"{len(fails)} requests failed: {fails[:5]}")
    c.check(not mism, f"{len(mism)} answers differ from r1's: {mism[:5]}")
    c.check(time.time() < deadline + 5, "the load ran into its time bound")
    print(f"r3: marked down by HAProxy {down_by_check}, exited {rc3} after {t_exit:.2f} s")
    c.check(rc3 == 0, f"r3 exit status after SIGTERM: {rc3}")
    c.check(any("draining" in line for line in replicas[2].lines),
            f"r3 did not drain: {replicas[2].lines[-3:]}")
    c.check(down_by_check is not None and down_by_check[1] == "L7STS" and
            down_by_check[2] == "503",
            f"HAProxy did not mark r3 down from its /health 503 while it drained: "
            f"{down_by_check}")
    c.check(after.get("r2", {}).get("status", "").startswith("DOWN"),
            f"r2 (killed) is not down in HAProxy: {after.get('r2', {}).get('status')}")
    be = after.get("BACKEND", {})
    print("HAProxy backend: retries %d, redispatches %d, 5xx to clients %d" % tuple(
        int(be.get(k) or 0) - int(before.get(k) or 0) for k in ("wretr", "wredis", "hrsp_5xx")))
except Exception as e:  # noqa: BLE001 — reported as a failure with the logs
    c.check(False, f"{type(e).__name__}: {e}")
finally:
    if lb:
        lb.terminate()
        try:
            lb.wait(10)
        except subprocess.TimeoutExpired:
            lb.kill()
            lb.wait()
    for r in replicas:  # SIGINT: no drain window
        r.stop(signal.SIGINT, timeout=30)
    if c.failed:
        lb_log.seek(0)
        print("haproxy log (tail):", lb_log.read().decode(errors="replace")[-6000:])
        for i, r in enumerate(replicas):
            print(f"r{i + 1} log (tail):", r.lines[-5:])
    lb_log.close()
    shutil.rmtree(tmp, True)
c.done()
