"""`embd serve -m CROSS-ENCODER`: a reranker served as TEI serves one.

Against a real server on loopback with a cross-encoder (ce-minilm-l6-random:
cross-encoder/ms-marco-MiniLM-L-6-v2's architecture, seeded random weights):
- POST /rerank (TEI) and POST /v1/rerank (Cohere/Jina) answer what
  `embd rerank` prints for the same query and documents: the same order,
  scores within 1e-5 (the server batches pairs of different requests
  together, which changes float summation order; documents whose reference
  scores tie within that may swap), with raw_scores, return_text, top_n,
  return_documents, documents as {"text"} objects, truncate;
- every bad request gets its 4xx in the endpoint's shape (TEI
  {"error","error_type"} on /rerank, OpenAI {"error":{...}} on /v1/...),
  never a 5xx: the embedding endpoints answer 400 naming the reranker, an
  empty or mistyped query or document list is 400, top_n <= 0 is 400 (over
  the list: all of them, as Cohere answers), too many documents (--max-inputs), characters
  (--max-input-chars), a body over --max-body-bytes or a pair over the
  model's tokens without truncate is 413;
- a second request while --max-concurrent-requests 1 is taken is 429 with
  Retry-After, in each shape;
- /info says reranker, /v1/models lists it, /health passes, /metrics counts
  the rerank paths; --help tells of the reranker; a cross-encoder as -m
  refuses --reranker and --store (exit 2).

Environment: EMBD_BIN, EMBD_TEST_MODELS (ce-minilm-l6-random, else made with
scripts/make-random-model), EMBD_TEST_CORPUS (optional: documents).
"""
import json
import math
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, reranker_dir  # noqa: E402  (puts tests/e2e on the path)
from common import BIN, Checker, read_jsonl, run  # noqa: E402

R = reranker_dir()
c = Checker("server_rerank")
TOL = 1e-5

QUERY = "a fast text editor for programmers"


def corpus_docs(n):
    path = os.environ.get("EMBD_TEST_CORPUS", "")
    docs = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                d = json.loads(line)
                docs.append((d.get("title", "") + ". " + d.get("text", ""))[:400])
                if len(docs) == n:
                    break
    words = "editor text vim emacs kernel driver game audio font shell network".split()
    while len(docs) < n:  # no corpus: made-up ones
        i = len(docs)
        docs.append(" ".join(words[(i * 7 + k) % len(words)] for k in range(3 + i % 9)) + f" {i}")
    return docs


DOCS = corpus_docs(12)
LONG = "word " * 600  # over the model's 512 tokens with any query


def cli_rank(query, docs, *flags):
    """`embd rerank`'s lines for docs (JSONL input: texts may hold newlines)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    try:
        p = run(["rerank", "-m", R, "--query", query, "-i", f.name, "-q", *flags], check=True)
    finally:
        os.unlink(f.name)
    return [(r["index"], r["score"]) for r in read_jsonl(p.stdout)]


def same_ranking(got, want, what):
    """got, want: [(index, score)] best first. The same documents, each place's
    score within TOL of the reference's at that place (so only near-ties may
    swap), and each document's score within TOL of its reference score."""
    ok = len(got) == len(want)
    ref = dict(want)
    worst = 0.0
    for j, (i, sc) in enumerate(got[:len(want)]):
        if i not in ref or sc is None:
            ok = False
            break
        worst = max(worst, abs(sc - ref[i]), abs(ref[i] - want[j][1]))
    ok = ok and worst <= TOL
    c.check(ok, f"{what}: {got[:5]} vs embd rerank {want[:5]} (worst {worst:.2e})")
    exact = [i for i, _ in got] == [i for i, _ in want]
    if ok and not exact:
        print(f"note: {what}: near-ties (within {TOL}) in another order")


def post(s, path, body, headers=None):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    st, h, data = s.request("POST", path, raw, headers)
    try:
        return st, h, json.loads(data)
    except ValueError:
        return st, h, data


def tei_pairs(j):
    return [(r["index"], r["score"]) for r in j]


def cohere_pairs(j):
    return [(r["index"], r["relevance_score"]) for r in j["results"]]


def shape_ok(path, j):
    if path.startswith("/v1/"):
        return (isinstance(j, dict) and isinstance(j.get("error"), dict)
                and {"message", "type", "param", "code"} <= set(j["error"]))
    return isinstance(j, dict) and isinstance(j.get("error"), str) and \
        isinstance(j.get("error_type"), str)


def message(j):
    e = j.get("error") if isinstance(j, dict) else None
    return e.get("message", "") if isinstance(e, dict) else (e or "")


t0 = time.time()
ref = cli_rank(QUERY, DOCS)
ref_raw = cli_rank(QUERY, DOCS, "--raw-scores")
ref_long = cli_rank(QUERY, DOCS[:3] + [LONG])  # cut as Hugging Face's longest_first
ref_long_query = cli_rank(LONG, DOCS[:3])

ARGS = ("--max-inputs", "16", "--max-input-chars", "5000", "--max-body-bytes", "65536")
with Server(R, *ARGS) as s:
    # ---- /rerank (TEI)
    st, h, j = post(s, "/rerank", {"query": QUERY, "texts": DOCS})
    c.check(st == 200 and isinstance(j, list), f"/rerank: {st} {str(j)[:200]}")
    if st == 200:
        same_ranking(tei_pairs(j), ref, "/rerank")
        c.check(all(set(r) == {"index", "score"} for r in j), f"/rerank fields: {j[0]}")
        tokens = int(h.get("x-embd-tokens", h.get("X-Embd-Tokens", "0")))
        c.check(tokens > 0, f"x-embd-tokens: {h}")
    st, _, j = post(s, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True,
                                   "return_text": True, "truncate": False,
                                   "truncation_direction": "Right"})
    c.check(st == 200, f"/rerank raw_scores: {st} {str(j)[:200]}")
    if st == 200:
        same_ranking(tei_pairs(j), ref_raw, "/rerank raw_scores")
        c.check(all(r.get("text") == DOCS[r["index"]] for r in j), "/rerank return_text")
        sig = dict(ref)
        c.check(all(abs(1 / (1 + math.exp(-r["score"])) - sig[r["index"]]) <= TOL for r in j),
                "raw scores are the logits of the sigmoid scores")
    st, _, j = post(s, "/rerank", {"query": QUERY, "texts": DOCS[:3] + [LONG], "truncate": True})
    c.check(st == 200, f"/rerank truncate true: {st} {str(j)[:200]}")
    if st == 200:
        same_ranking(tei_pairs(j), ref_long, "/rerank truncated pair")
    st, _, j = post(s, "/rerank", {"query": LONG, "texts": DOCS[:3], "truncate": True})
    c.check(st == 200, f"/rerank long query, truncate true: {st} {str(j)[:200]}")
    if st == 200:
        same_ranking(tei_pairs(j), ref_long_query, "/rerank long query truncated")

    # ---- /v1/rerank (Cohere, Jina)
    st, h, j = post(s, "/v1/rerank", {"model": "anything", "query": QUERY, "documents": DOCS})
    c.check(st == 200 and isinstance(j, dict), f"/v1/rerank: {st} {str(j)[:200]}")
    if st == 200:
        same_ranking(cohere_pairs(j), ref, "/v1/rerank")
        c.check(j.get("model") == os.path.basename(R.rstrip("/")), f"model: {j.get('model')}")
        c.check(j.get("usage", {}).get("total_tokens", 0) == tokens,
                f"usage {j.get('usage')} vs /rerank's {tokens} tokens")
        c.check(all("document" not in r for r in j["results"]), "no documents unless asked")
    objs = [{"text": d} if i % 2 else d for i, d in enumerate(DOCS)]
    st, _, j = post(s, "/v1/rerank", {"query": QUERY, "documents": objs, "top_n": 3,
                                      "return_documents": True})
    c.check(st == 200, f"/v1/rerank top_n: {st} {str(j)[:200]}")
    if st == 200:
        c.check(len(j["results"]) == 3, f"top_n 3: {len(j['results'])} results")
        same_ranking(cohere_pairs(j), ref[:3], "/v1/rerank top_n 3")
        c.check(all(r.get("document") == {"text": DOCS[r["index"]]} for r in j["results"]),
                "/v1/rerank return_documents")
    st, _, j = post(s, "/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": len(DOCS)})
    c.check(st == 200 and len(j.get("results", [])) == len(DOCS), f"top_n = n: {st}")
    # more than the documents: all of them, as Cohere does (LangChain's default top_n is 3)
    st, _, j = post(s, "/v1/rerank", {"query": QUERY, "documents": DOCS[:2], "top_n": 3})
    c.check(st == 200 and len(j.get("results", [])) == 2, f"top_n over the list: {st} {str(j)[:100]}")

    # ---- bad requests: (name, path, body, status, fragment of the message)
    many = json.dumps({"query": "q", "texts": ["d"] * 17})
    CASES = [
        ("embed on a reranker", "/embed", {"inputs": "a"}, 400, "reranker"),
        ("OpenAI embed on a reranker", "/v1/embeddings", {"input": "a"}, 400, "reranker"),
        ("search without a store", "/search", {"query": "a"}, 404, "--store"),
        ("malformed JSON", "/rerank", b'{"query": "a", "texts": [', 400, "not valid JSON"),
        ("malformed JSON (v1)", "/v1/rerank", b'{"query": ', 400, "not valid JSON"),
        ("missing query", "/rerank", {"texts": ["a"]}, 400, "query"),
        ("query not a string", "/rerank", {"query": 3, "texts": ["a"]}, 400, "query"),
        ("empty query", "/v1/rerank", {"query": "", "documents": ["a"]}, 400, "query"),
        ("missing texts", "/rerank", {"query": "q"}, 400, "texts"),
        ("texts not an array", "/rerank", {"query": "q", "texts": "a"}, 400, "texts"),
        ("empty texts", "/rerank", {"query": "q", "texts": []}, 400, "empty"),
        ("text not a string", "/rerank", {"query": "q", "texts": ["a", 5]}, 400, "not a string"),
        ("text null", "/rerank", {"query": "q", "texts": [None]}, 400, "not a string"),
        ("object text on TEI", "/rerank", {"query": "q", "texts": [{"text": "a"}]}, 400,
         "not a string"),
        ("empty text", "/rerank", {"query": "q", "texts": ["a", ""]}, 400, "empty string"),
        ("raw_scores not a bool", "/rerank", {"query": "q", "texts": ["a"], "raw_scores": 1},
         400, "raw_scores"),
        ("return_text not a bool", "/rerank", {"query": "q", "texts": ["a"],
                                               "return_text": "yes"}, 400, "return_text"),
        ("truncate not a bool", "/rerank", {"query": "q", "texts": ["a"], "truncate": "no"},
         400, "truncate"),
        ("left truncation", "/rerank", {"query": "q", "texts": ["a"],
                                        "truncation_direction": "Left"}, 400, "left"),
        ("too many texts", "/rerank", many, 413, "--max-inputs"),
        ("too many documents", "/v1/rerank", {"query": "q", "documents": ["d"] * 17}, 413,
         "--max-inputs"),
        ("text too long in characters", "/rerank", {"query": "q", "texts": ["a" * 5001]}, 413,
         "characters"),
        ("query too long in characters", "/v1/rerank", {"query": "a" * 5001,
                                                        "documents": ["a"]}, 413, "characters"),
        ("pair over the tokens", "/rerank", {"query": QUERY, "texts": ["a", LONG]}, 413,
         "tokens"),
        ("query over the tokens", "/rerank", {"query": LONG, "texts": ["a"]}, 413, "tokens"),
        ("pair over the tokens (v1)", "/v1/rerank", {"query": QUERY, "documents": [LONG]}, 413,
         "tokens"),
        ("body over the limit", "/rerank", {"query": "q", "texts": ["x" * 4500] * 16}, 413,
         "larger than"),
        ("top_n 0", "/v1/rerank", {"query": "q", "documents": ["a", "b"], "top_n": 0}, 400,
         "top_n"),
        ("top_n negative", "/v1/rerank", {"query": "q", "documents": ["a"], "top_n": -1}, 400,
         "top_n"),
        ("top_n fractional", "/v1/rerank", {"query": "q", "documents": ["a", "b"],
                                            "top_n": 1.5}, 400, "top_n"),
        ("top_n a string", "/v1/rerank", {"query": "q", "documents": ["a"], "top_n": "1"}, 400,
         "top_n"),
        ("missing documents", "/v1/rerank", {"query": "q"}, 400, "documents"),
        ("empty documents", "/v1/rerank", {"query": "q", "documents": []}, 400, "empty"),
        ("document without text", "/v1/rerank", {"query": "q", "documents": [{"title": "t"}]},
         400, "text"),
        ("document text not a string", "/v1/rerank", {"query": "q",
                                                      "documents": [{"text": 1}]}, 400, "text"),
        ("document a number", "/v1/rerank", {"query": "q", "documents": [3]}, 400,
         "not a string"),
        ("model not a string", "/v1/rerank", {"model": 1, "query": "q", "documents": ["a"]}, 400,
         "model"),
        ("return_documents not a bool", "/v1/rerank", {"query": "q", "documents": ["a"],
                                                       "return_documents": 1}, 400,
         "return_documents"),
        ("invalid UTF-8", "/v1/rerank", b'{"query": "\xff", "documents": ["a"]}', 400, "UTF-8"),
    ]
    for name, path, body, want, frag in CASES:
        st, h, j = post(s, path, body)
        c.check(st == want, f"{name}: {st}, want {want}: {str(j)[:200]}")
        c.check(shape_ok(path, j), f"{name}: error shape: {str(j)[:200]}")
        c.check(frag.lower() in message(j).lower(), f"{name}: {message(j)!r} lacks {frag!r}")
    st, h, _ = s.request("GET", "/rerank")
    c.check(st == 405 and h.get("Allow") == "POST", f"GET /rerank: {st} {h}")

    # ---- still right after the bad ones; /info, /v1/models, /health, /metrics
    st, _, j = post(s, "/rerank", {"query": QUERY, "texts": DOCS})
    c.check(st == 200, f"after the bad requests: {st}")
    if st == 200:
        same_ranking(tei_pairs(j), ref, "/rerank after the bad requests")
    st, _, raw = s.request("GET", "/info")
    info = json.loads(raw)
    c.check(st == 200 and info.get("model_type") == {"reranker": {}},
            f"/info model_type: {info.get('model_type')}")
    c.check((info.get("reranker") or {}).get("model_id") == info.get("model_id"),
            f"/info reranker: {info.get('reranker')}")
    st, _, raw = s.request("GET", "/v1/models")
    ids = [m["id"] for m in json.loads(raw)["data"]]
    c.check(ids == [info.get("model_id")], f"/v1/models: {ids}")
    st, _, _ = s.request("GET", "/health")
    c.check(st == 200, f"/health: {st}")
    st, _, raw = s.request("GET", "/metrics")
    text = raw.decode()
    c.check('embd_http_responses_total{path="/rerank",code="200"}' in text and
            'embd_http_responses_total{path="/v1/rerank",code="400"}' in text and
            'path="/rerank",code="413"' in text, "/metrics counts the rerank paths")
    c.check("embd_reranker_" not in text, "a reranker served alone has the plain embd_* series")
    rc = s.stop()
    c.check(rc == 0, f"clean exit: {rc}")
    c.check(not any("AddressSanitizer" in ln or "runtime error" in ln for ln in s.lines),
            "no sanitizer report: " + " | ".join(s.lines[-5:]))

# ---- 429: one request at a time; a second one at the same moment is refused.
with Server(R, "--max-concurrent-requests", "1") as s:
    big = {"query": QUERY, "texts": [f"document number {i} about text editors" for i in range(600)]}
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("a", post(s, "/rerank", big)))
    t.start()
    time.sleep(0.4)
    for path, body in (("/rerank", {"query": "q", "texts": ["a"]}),
                       ("/v1/rerank", {"query": "q", "documents": ["a"]})):
        st, h, j = post(s, path, body)
        c.check(st == 429, f"{path} while another request runs: {st} {str(j)[:200]}")
        c.check(h.get("Retry-After") == "1", f"{path} Retry-After: {h}")
        c.check(shape_ok(path, j), f"{path} 429 shape: {j}")
        if path == "/rerank":
            c.check(j.get("error_type") == "Overloaded", f"429 error_type: {j}")
        else:
            c.check(j["error"].get("type") == "rate_limit_error", f"429 type: {j}")
    t.join(120)
    c.check(res.get("a", (0,))[0] == 200, f"the first request completed: {res.get('a', (0,))[0]}")

# ---- --help and the refusals at start-up
p = run(["serve", "--help"])
helptext = p.stdout.decode() + p.stderr.decode()
c.check(p.returncode == 0 and "--reranker" in helptext and "/v1/rerank" in helptext and
        "embd_reranker_" in helptext, "serve --help tells of the reranker")
p = run(["serve", "-m", R, "--reranker", R, "--port", "0"])
c.check(p.returncode == 2 and b"goes beside an embedding model" in p.stderr,
        f"-m reranker --reranker: {p.returncode} {p.stderr[-200:]!r}")
with tempfile.TemporaryDirectory() as d:
    p = run(["serve", "-m", R, "--store", d, "--port", "0"])
    c.check(p.returncode == 2 and b"--store needs an embedding model" in p.stderr,
            f"-m reranker --store: {p.returncode} {p.stderr[-200:]!r}")

print(f"{len(CASES)} bad-request cases, {time.time() - t0:.1f} s")
c.done()
