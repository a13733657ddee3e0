"""`embd serve` with the clients users have: the openai SDK and the
huggingface_hub InferenceClient, against a real server on loopback with the
real all-MiniLM-L6-v2. Their vectors must equal `embd embed`'s (and
sentence_similarity / POST /similarity their cosines); token-id
inputs must equal the text they came from; /search must agree with
`embd search`; /health, /info and /metrics answer; the API key guards every
endpoint but /health; SIGTERM lets a request in flight finish and exits 0;
a taken port and a bad model fail fast with a clear message.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import base64
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402  (puts tests/e2e on the path)
from common import model_dir, read_jsonl, run, skip  # noqa: E402

try:
    import openai
    from huggingface_hub import InferenceClient
except ImportError as e:  # the venv of scripts/setup-deps has both
    skip(f"client libraries missing: {e}")

TEXTS = [
    "How do I install a package on Debian?",
    "The quick brown fox jumps over the lazy dog.",
    "Vector search finds documents by meaning rather than by keywords.",
    "Ünïcödé and emoji 🚀 are fine too.",
    "x",
]

M, c = minilm("server_clients")


def embd_embed(texts, *extra):
    p = run(["embed", "-m", M, "-q", "--input-format", "jsonl", *extra],
            stdin="".join(json.dumps({"text": t}) + "\n" for t in texts), check=True)
    return np.array([r["embedding"] for r in read_jsonl(p.stdout)], dtype=np.float32)


def close(a, b, what, atol=2e-6):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    ok = a.shape == b.shape and np.max(np.abs(a - b)) <= atol
    c.check(ok, f"{what}: shapes {a.shape} {b.shape}, max diff "
                f"{np.max(np.abs(a - b)) if a.shape == b.shape else 'n/a'}")


ref = embd_embed(TEXTS)
ref_raw = embd_embed(TEXTS, "--no-normalize")

with Server(M) as s:
    oa = openai.OpenAI(base_url=s.url + "/v1", api_key="unused")
    # Default (the SDK asks for base64 and decodes it), explicit float, explicit base64.
    r = oa.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
    close([d.embedding for d in r.data], ref, "openai default (base64 decoded)")
    c.check([d.index for d in r.data] == list(range(len(TEXTS))), "openai indexes in order")
    c.check(r.model == "all-MiniLM-L6-v2", f"openai model name {r.model!r}")
    ntok = sum(len(x["ids"]) for x in read_jsonl(run(
        ["tokenize", "-m", M, "--input-format", "jsonl"],
        stdin="".join(json.dumps({"text": t}) + "\n" for t in TEXTS), check=True).stdout))
    c.check(r.usage.prompt_tokens == ntok and r.usage.total_tokens == ntok,
            f"openai usage {r.usage} vs {ntok} tokens from embd tokenize")
    r = oa.embeddings.create(model="x", input=TEXTS, encoding_format="float")
    close([d.embedding for d in r.data], ref, "openai float")
    r = oa.embeddings.create(model="x", input=TEXTS[0], encoding_format="base64")
    raw = r.data[0].embedding
    if isinstance(raw, str):
        raw = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    close([raw], ref[:1], "openai explicit base64")

    # Token ids (as `embd tokenize` prints them) give the text's vector.
    ids = [x["ids"] for x in read_jsonl(run(["tokenize", "-m", M], stdin=TEXTS[2] + "\n" +
                                            TEXTS[0] + "\n", check=True).stdout)]
    r = oa.embeddings.create(model="x", input=ids, encoding_format="float")
    close([d.embedding for d in r.data], ref[[2, 0]], "openai token-id inputs")
    r = oa.embeddings.create(model="x", input=ids[0], encoding_format="float")
    close([r.data[0].embedding], ref[[2]], "openai one token-id input")

    # huggingface_hub posts to the server's own URL (TEI shape).
    hf = InferenceClient(model=s.url)
    v = hf.feature_extraction(TEXTS[1])
    close(np.asarray(v).reshape(1, -1), ref[[1]], "huggingface_hub feature_extraction")
    v = hf.feature_extraction(TEXTS[1], normalize=False)
    close(np.asarray(v).reshape(1, -1), ref_raw[[1]], "huggingface_hub normalize=False",
          atol=1e-5)
    st, _, body = s.request("POST", "/embed", json.dumps({"inputs": TEXTS}))
    c.check(st == 200, f"/embed status {st}")
    close(json.loads(body), ref, "/embed (TEI) batch")

    # Sentence similarity: huggingface_hub's sentence_similarity (posted to
    # the server's URL) and TEI's POST /similarity: each sentence's cosine
    # with the source, as the vectors give it
    want = [float(ref[i] @ ref[0]) for i in range(1, len(TEXTS))]
    got = hf.sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:])
    close([got], [want], "huggingface_hub sentence_similarity", atol=1e-5)
    st, _, body = s.request("POST", "/similarity", json.dumps(
        {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}}))
    c.check(st == 200, f"/similarity status {st}: {body[:200]!r}")
    if st == 200:
        close([json.loads(body)], [want], "TEI /similarity", atol=1e-5)
    for bad, frag in (({"inputs": ["a", "b"]}, "source_sentence"),
                      ({"inputs": {"source_sentence": "a", "sentences": []}}, "empty"),
                      ({"inputs": {"source_sentence": "a", "sentences": ["b", 3]}}, "[1]")):
        st, _, body = s.request("POST", "/similarity", json.dumps(bad))
        c.check(st == 400 and frag in json.loads(body)["error"], f"/similarity {bad}: {st} {body!r}")

    # Long input: 413 without truncation, the truncated vector with it.
    long_text = "embedding " * 400
    st, _, body = s.request("POST", "/embed", json.dumps({"inputs": long_text}))
    c.check(st == 413 and "tokens" in json.loads(body)["error"], f"long input: {st} {body[:200]}")
    st, _, body = s.request("POST", "/embed", json.dumps({"inputs": long_text, "truncate": True}))
    c.check(st == 200, f"long input truncated: {st}")
    if st == 200:
        close(json.loads(body), embd_embed([long_text]), "truncated long input = embd embed")

    # Health, info, metrics.
    st, _, body = s.request("GET", "/health")
    c.check(st == 200, f"/health {st}")
    st, _, body = s.request("GET", "/info")
    info = json.loads(body)
    c.check(st == 200 and info["dim"] == 384 and info["max_input_length"] == 256 and
            info["device"] == "cpu" and info["model_id"] == "all-MiniLM-L6-v2",
            f"/info {body[:300]}")
    st, hdr, body = s.request("GET", "/metrics")
    text = body.decode()
    c.check(st == 200 and "embd_http_responses_total{path=\"/v1/embeddings\",code=\"200\"}" in text
            and "embd_inputs_total" in text and "embd_cache_hits_total" in text,
            f"/metrics: {text[:400]}")

    # Clients that hang up while their request waits in the queue: their work
    # is dropped (the watchdog cancels it), and a later request does not wait
    # for it.
    import socket as _socket
    # A must outlast the five hang-ups below even on an idle machine (~60K tokens).
    long_req = json.dumps({"input": [f"long running request {i}: " + " ".join(TEXTS)
                                     for i in range(1500)]})
    res_a = {}
    # (a generous timeout: under AddressSanitizer on a loaded 2-core machine
    # A alone has taken over 120 s)
    ta = threading.Thread(target=lambda: res_a.setdefault(
        "r", s.request("POST", "/v1/embeddings", long_req, timeout=400)))
    ta.start()
    time.sleep(0.5)  # A is running now
    host, port = s.url[len("http://"):].split(":")
    for i in range(5):
        # 2,000 inputs: the fair scheduler gives each request rounds beside
        # A, so a small one could finish within the 0.2 s before its client
        # hangs up (seen with 300 on a fast CPU) and not count as cancelled
        body = json.dumps({"input": [f"abandoned {i} {j}" for j in range(2000)]}).encode()
        sk = _socket.create_connection((host, int(port)))
        sk.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                   b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.2)  # queued behind A
        sk.close()
    st, _, body = s.request("POST", "/embed", json.dumps({"inputs": "after the hang-ups"}))
    c.check(st == 200, f"request after hang-ups: {st}")
    ta.join(420)
    c.check(res_a.get("r", (0,))[0] == 200, "the long request completed")
    st, _, body = s.request("GET", "/metrics")
    m = [l for l in body.decode().splitlines() if l.startswith("embd_http_cancelled_total")]
    c.check(m == ["embd_http_cancelled_total 5"], f"cancelled requests: {m}")

    # SIGTERM while a request is in flight: it completes, the server exits 0.
    big = [f"document number {i} about {TEXTS[i % len(TEXTS)]}" for i in range(600)]
    result = {}

    def slow():
        result["r"] = s.request("POST", "/v1/embeddings", json.dumps({"input": big}))

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    rc = s.stop(signal.SIGTERM)
    t.join(60)
    status = result.get("r", (None,))[0]
    c.check(status == 200, f"request in flight at SIGTERM got {status}")
    if status == 200:
        c.check(len(json.loads(result["r"][2])["data"]) == 600, "in-flight answer complete")
    c.check(rc == 0, f"exit status after SIGTERM: {rc}")
    c.check(any("finishing" in line for line in s.lines), f"shutdown message: {s.lines}")

# API key: /health public, everything else needs the key.
with Server(M, "--api-key", "s3cret-key") as s:
    st, _, _ = s.request("GET", "/health")
    c.check(st == 200, f"/health without key: {st}")
    for path, method, body in [("/info", "GET", None), ("/metrics", "GET", None),
                               ("/v1/embeddings", "POST", '{"input":"a"}'),
                               ("/embed", "POST", '{"inputs":"a"}')]:
        st, hdr, b = s.request(method, path, body)
        c.check(st == 401, f"{path} without key: {st}")
        st, hdr, b = s.request(method, path, body, {"Authorization": "Bearer s3cret-kez"})
        c.check(st == 401, f"{path} with a wrong key: {st}")
        st, hdr, b = s.request(method, path, body, {"Authorization": "Bearer s3cret-key"})
        c.check(st == 200, f"{path} with the key: {st}")
    oa = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret-key")
    r = oa.embeddings.create(model="x", input="hello")
    c.check(len(r.data[0].embedding) == 384, "openai with the key")
    bad = openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0)
    try:
        bad.embeddings.create(model="x", input="hello")
        c.check(False, "openai with a wrong key should raise")
    except openai.AuthenticationError:
        c.check(True, "")

# /search against `embd search` on the same store.
tmp = tempfile.mkdtemp(prefix="embd-serve-")
try:
    docs = os.path.join(tmp, "docs.jsonl")
    with open(docs, "w") as f:
        for i, t in enumerate(TEXTS + ["Debian packages are installed with apt-get install.",
                                       "Foxes are small omnivorous mammals."]):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    store = os.path.join(tmp, "store")
    run(["index", "-m", M, "-q", "--store", store, "-i", docs], check=True)
    q = "how to install software on debian"
    want = read_jsonl(run(["search", "-m", M, "--store", store, "--query", q, "-k", "3"],
                          check=True).stdout)
    with Server(M, "--store", store) as s:
        st, _, body = s.request("POST", "/search", json.dumps({"query": q, "k": 3}))
        c.check(st == 200, f"/search {st} {body[:200]}")
        hits = json.loads(body)["hits"] if st == 200 else []
        c.check([h["id"] for h in hits] == [w["id"] for w in want],
                f"/search ids {[h['id'] for h in hits]} vs embd search {[w['id'] for w in want]}")
        c.check(all(abs(h["score"] - w["score"]) < 1e-5 for h, w in zip(hits, want)),
                "/search scores equal embd search's")
        c.check([h["rank"] for h in hits] == [1, 2, 3], "/search ranks")
        st, _, body = s.request("GET", "/info")
        c.check(json.loads(body)["store"]["count"] == 7, f"/info store: {body[-80:]}")

    # Startup failures: a taken port, a missing model.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    t0 = time.time()
    p = run(["serve", "-m", M, "--port", str(port)])
    err = p.stderr.decode()
    c.check(p.returncode == 1 and "cannot listen on 127.0.0.1:%d" % port in err and
            "in use" in err, f"taken port: {p.returncode} {err}")
    c.check(time.time() - t0 < 30, "taken port fails fast")
    sock.close()
    p = run(["serve", "-m", os.path.join(tmp, "no-such-model"), "--port", "0"])
    c.check(p.returncode == 1 and p.stderr.decode().startswith("embd: "),
            f"missing model: {p.returncode} {p.stderr.decode()}")
    # A model that loads but cannot embed (a NaN in its weights): the
    # startup health check (a real forward pass) refuses to serve it.
    bge = model_dir("bge-small-random")
    if bge:
        from safetensors.numpy import load_file, save_file
        bad_model = os.path.join(tmp, "nan-model")
        shutil.copytree(bge, bad_model)
        w = load_file(os.path.join(bge, "model.safetensors"))
        name = next(k for k in w if k.endswith("embeddings.LayerNorm.weight"))
        w[name] = w[name].copy()
        w[name][0] = np.nan
        save_file(w, os.path.join(bad_model, "model.safetensors"))
        p = run(["serve", "-m", bad_model, "--port", "0"])
        err = p.stderr.decode()
        c.check(p.returncode == 1 and "non-finite" in err and "serving" not in err,
                f"a model that gives NaN is refused at startup: {p.returncode} {err}")
    p = run(["serve", "-m", M, "--port", "70000"])
    c.check(p.returncode == 2, f"bad port is a usage error: {p.returncode}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

c.done()
