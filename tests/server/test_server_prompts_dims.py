"""Issue 22 (items 4 and 5): Matryoshka `dimensions` and the model's named
prompts in `embd serve`, against the CLI's reference (`embd embed
--dimensions N`, `embd embed --prompt-name NAME`, `embd search --prefix`).

- the openai SDK's embeddings.create(dimensions=N) (float and base64) and
  TEI's POST /embed {"dimensions": N} equal `embd embed --dimensions N`;
- huggingface_hub's InferenceClient(URL).feature_extraction(text,
  prompt_name=..., dimensions=...) (it posts to the server's URL itself,
  TEI's shape) equals `embd embed --prompt-name ... --dimensions ...`; the
  OpenAI shape takes "prompt_name" too (extra_body);
- `--default-prompt-name query` applies to a request that names no prompt,
  a request's prompt_name replaces it, /search embeds its query with it;
- /info lists the prompts and the default;
- bad dimensions and prompt names get a 4xx in the endpoint's own shape,
  never a 5xx; a bad --default-prompt-name (or with --prefix) exits 2 at
  start-up naming the declared prompts.

The model with prompts is all-MiniLM-L6-v2's files linked into a temporary
folder beside a config_sentence_transformers.json declaring
{"query": "query: ", "passage": "passage: "}.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import base64
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402  (puts tests/e2e on the path)
from common import read_jsonl, run, skip  # noqa: E402

try:
    import openai
    from huggingface_hub import InferenceClient
except ImportError as e:  # the venv of scripts/setup-deps has both
    skip(f"client libraries missing: {e}")

TEXTS = [
    "How do I install a package on Debian?",
    "Vector search finds documents by meaning rather than by keywords.",
    "Ünïcödé and emoji 🚀 are fine too.",
]
PROMPTS = {"query": "query: ", "passage": "passage: "}

M, c = minilm("server_prompts_dims")
tmp = tempfile.mkdtemp(prefix="embd-prompts-")
P = os.path.join(tmp, "minilm-prompts")
os.mkdir(P)
for name in os.listdir(M):
    if name != "config_sentence_transformers.json":
        os.symlink(os.path.join(os.path.abspath(M), name), os.path.join(P, name))
with open(os.path.join(P, "config_sentence_transformers.json"), "w") as f:
    json.dump({"prompts": PROMPTS, "default_prompt_name": None}, f)


def embd_embed(model, texts, *extra):
    p = run(["embed", "-m", model, "-q", "--input-format", "jsonl", *extra],
            stdin="".join(json.dumps({"text": t}) + "\n" for t in texts), check=True)
    return np.array([r["embedding"] for r in read_jsonl(p.stdout)], dtype=np.float32)


def close(a, b, what, atol=2e-6):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    ok = a.shape == b.shape and np.max(np.abs(a - b)) <= atol
    c.check(ok, f"{what}: shapes {a.shape} {b.shape}, max diff "
                f"{np.max(np.abs(a - b)) if a.shape == b.shape else 'n/a'}")


def b64(x):
    return np.frombuffer(base64.b64decode(x), dtype="<f4") if isinstance(x, str) else x


def post(s, path, body):
    st, _, data = s.request("POST", path, json.dumps(body))
    try:
        return st, json.loads(data)
    except ValueError:
        return st, data


def bad(s, path, body, want, param, frag):
    """A refused request: its status, the endpoint's error shape, its param."""
    st, j = post(s, path, body)
    name = f"{path} {json.dumps(body)[:90]}"
    c.check(st == want, f"{name}: status {st}, want {want}: {j}")
    c.check(st < 500, f"{name}: a 5xx for bad input")
    if path.startswith("/v1/"):
        e = j.get("error") if isinstance(j, dict) else None
        ok = isinstance(e, dict) and e.get("param") == param and frag in e.get("message", "")
    else:
        ok = (isinstance(j, dict) and j.get("error_type") == "Validation" and
              frag in j.get("error", ""))
    c.check(ok, f"{name}: error shape, param {param!r}, message with {frag!r}: {j}")


try:
    full = embd_embed(P, TEXTS)
    ref = {n: embd_embed(P, TEXTS, "--dimensions", str(n)) for n in (64, 1)}
    raw16 = embd_embed(P, TEXTS, "--no-normalize", "--dimensions", "16")
    query = embd_embed(P, TEXTS, "--prompt-name", "query")
    passage = embd_embed(P, TEXTS, "--prompt-name", "passage")
    query32 = embd_embed(P, TEXTS, "--prompt-name", "query", "--dimensions", "32")
    c.check(np.abs(ref[1]).min() > 0.99, "--dimensions 1 normalised again: +-1")
    c.check(np.abs(query - full).max() > 1e-2 and np.abs(query - passage).max() > 1e-2,
            "the prompts change the vectors (the comparisons below tell them apart)")

    with Server(P) as s:
        oa = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        # dimensions: float, base64 (the SDK's default, decoded), and all D.
        r = oa.embeddings.create(model="x", input=TEXTS, dimensions=64, encoding_format="float")
        close([d.embedding for d in r.data], ref[64], "openai dimensions=64 float")
        r = oa.embeddings.create(model="x", input=TEXTS, dimensions=64)
        close([b64(d.embedding) for d in r.data], ref[64], "openai dimensions=64 (base64)")
        r = oa.embeddings.create(model="x", input=TEXTS, dimensions=1, encoding_format="base64")
        close([b64(d.embedding) for d in r.data], ref[1], "openai dimensions=1 base64")
        r = oa.embeddings.create(model="x", input=TEXTS, dimensions=384, encoding_format="float")
        close([d.embedding for d in r.data], full, "openai dimensions=384 (all)")
        # The OpenAI shape takes prompt_name too (an extension), with dimensions.
        r = oa.embeddings.create(model="x", input=TEXTS, dimensions=32,
                                 extra_body={"prompt_name": "query"})
        close([b64(d.embedding) for d in r.data], query32, "openai prompt_name + dimensions")
        # Token ids take dimensions as texts do.
        ids = [x["ids"] for x in read_jsonl(run(["tokenize", "-m", P], stdin=TEXTS[0] + "\n",
                                                check=True).stdout)]
        r = oa.embeddings.create(model="x", input=ids, dimensions=64, encoding_format="float")
        close([r.data[0].embedding], ref[64][:1], "openai token ids, dimensions=64")

        # TEI's shape.
        st, j = post(s, "/embed", {"inputs": TEXTS, "dimensions": 64})
        c.check(st == 200, f"/embed dimensions: {st} {j}")
        close(j, ref[64], "/embed dimensions=64")
        st, j = post(s, "/embed", {"inputs": TEXTS, "dimensions": 16, "normalize": False})
        close(j, raw16, "/embed dimensions=16 normalize=false", atol=1e-5)
        st, j = post(s, "/embed", {"inputs": TEXTS, "prompt_name": "passage"})
        close(j, passage, "/embed prompt_name passage")
        st, j = post(s, "/embed", {"inputs": TEXTS, "prompt_name": None, "dimensions": None})
        close(j, full, "/embed null prompt_name and dimensions: none")

        # huggingface_hub posts to the URL itself ("/", TEI's shape).
        hf = InferenceClient(model=s.url)
        v = [np.asarray(hf.feature_extraction(t, prompt_name="query")).reshape(-1) for t in TEXTS]
        close(v, query, "huggingface_hub feature_extraction(prompt_name='query')")
        v = hf.feature_extraction(TEXTS, prompt_name="query", dimensions=32)
        close(v, query32, "huggingface_hub feature_extraction(prompt_name, dimensions=32)")
        v = hf.feature_extraction(TEXTS[0], dimensions=64)
        close(np.asarray(v).reshape(1, -1), ref[64][:1], "huggingface_hub dimensions=64")

        st, _, body = s.request("GET", "/info")
        info = json.loads(body)
        c.check(info.get("prompts") == PROMPTS and info.get("default_prompt_name") is None and
                info.get("default_prompt") is None and info["dim"] == 384,
                f"/info prompts: {body[-300:]}")

        # Bad dimensions and prompt names: 400 in each endpoint's shape.
        for path, key in (("/v1/embeddings", "input"), ("/embed", "inputs")):
            for d in (0, -3, 385, 10**9, 2.5, "64", True, [64], {"n": 1}):
                bad(s, path, {key: "a", "dimensions": d}, 400, "dimensions", "dimensions")
            for p, frag in (("nope", '"query", "passage"'), ("QUERY", "declares"),
                            ("", "unknown prompt_name"), ("query\u0000x", "declares"),
                            (7, "must be a string"), (["query"], "must be a string")):
                bad(s, path, {key: "a", "prompt_name": p}, 400, "prompt_name", frag)
            bad(s, path, {key: [101, 2088, 102], "prompt_name": "query"}, 400, "prompt_name",
                "token-id")
        bad(s, "/v1/embeddings", {"input": "a", "dimensions": 385}, 400, "dimensions",
            "more than the model's 384")
        st, _, _ = s.request("GET", "/health")
        c.check(st == 200, f"healthy after the bad requests: {st}")

    # A store (indexed with the passage prompt) for /search.
    docs = os.path.join(tmp, "docs.jsonl")
    with open(docs, "w") as f:
        for i, t in enumerate(TEXTS + ["Debian packages are installed with apt-get install.",
                                       "Foxes are small omnivorous mammals."]):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    store = os.path.join(tmp, "store")
    run(["index", "-m", P, "-q", "--store", store, "-i", docs], check=True)
    q = "how to install software on debian"

    def embd_search(prefix):
        return read_jsonl(run(["search", "-m", P, "--store", store, "--query", q, "-k", "3",
                               "--prefix", prefix], check=True).stdout)

    with Server(P, "--default-prompt-name", "query", "--store", store) as s:
        # The default applies to a request that names no prompt; one that
        # names a prompt gets that prompt instead (never both).
        st, j = post(s, "/embed", {"inputs": TEXTS})
        close(j, query, "--default-prompt-name query: /embed without prompt_name")
        r = openai.OpenAI(base_url=s.url + "/v1", api_key="u").embeddings.create(
            model="x", input=TEXTS, encoding_format="float")
        close([d.embedding for d in r.data], query, "--default-prompt-name query: openai")
        st, j = post(s, "/embed", {"inputs": TEXTS, "prompt_name": "passage"})
        close(j, passage, "prompt_name passage replaces the default")
        st, j = post(s, "/embed", {"inputs": TEXTS, "dimensions": 32})
        close(j, query32, "the default prompt with dimensions=32")
        v = InferenceClient(model=s.url).feature_extraction(TEXTS)
        close(v, query, "huggingface_hub without prompt_name: the default")
        st, _, body = s.request("GET", "/info")
        info = json.loads(body)
        c.check(info.get("default_prompt_name") == "query" and
                info.get("default_prompt") == "query: " and
                info.get("model_default_prompt_name") is None, f"/info default: {body[-300:]}")
        # /search: the query with the default prompt, or the one it names; never
        # truncated to "dimensions" (the store holds full vectors).
        for body_, prefix in (({"query": q, "k": 3}, "query: "),
                              ({"query": q, "k": 3, "prompt_name": "passage"}, "passage: ")):
            st, j = post(s, "/search", body_)
            want = embd_search(prefix)
            hits = j.get("hits", []) if isinstance(j, dict) else []
            c.check(st == 200 and [h["id"] for h in hits] == [w["id"] for w in want] and
                    all(abs(h["score"] - w["score"]) < 1e-5 for h, w in zip(hits, want)),
                    f"/search {body_} vs embd search --prefix {prefix!r}: {j} {want}")
        bad(s, "/search", {"query": q, "dimensions": 64}, 400, "dimensions", "full vectors")
        bad(s, "/search", {"query": q, "prompt_name": "nope"}, 400, "prompt_name", "declares")

    # Start-up: a name the model does not declare, or with --prefix: exit 2.
    p = run(["serve", "-m", P, "--port", "0", "--default-prompt-name", "nope"])
    err = p.stderr.decode()
    c.check(p.returncode == 2 and "query, passage" in err and "serving" not in err,
            f"unknown --default-prompt-name: {p.returncode} {err}")
    p = run(["serve", "-m", P, "--port", "0"], env={"EMBD_DEFAULT_PROMPT_NAME": "q"})
    err = p.stderr.decode()
    c.check(p.returncode == 2 and "EMBD_DEFAULT_PROMPT_NAME" in err and "query, passage" in err,
            f"unknown EMBD_DEFAULT_PROMPT_NAME: {p.returncode} {err}")
    p = run(["serve", "-m", M, "--port", "0", "--default-prompt-name", "query"])
    err = p.stderr.decode()
    c.check(p.returncode == 2 and "declares none" in err,
            f"--default-prompt-name for a model without prompts: {p.returncode} {err}")
    p = run(["serve", "-m", P, "--port", "0", "--default-prompt-name", "query", "--prefix", "x"])
    err = p.stderr.decode()
    c.check(p.returncode == 2 and "not both" in err, f"with --prefix: {p.returncode} {err}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

c.done()
