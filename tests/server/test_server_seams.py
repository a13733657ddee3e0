"""`embd serve`: nothing silently dropped, options in the engine, /v1/models.

Against a real server on loopback with the real all-MiniLM-L6-v2:
- a text holding U+0000 ("\\u0000" in JSON) is embedded whole on
  /v1/embeddings, /embed and /search: its vector is that of the text with
  the NUL removed (Hugging Face's BERT normalizer drops it), not that of the
  text cut at it, and the usage counts what Hugging Face `tokenizers` counts;
- the usage is the engine's count of the one tokenization, also for a
  prefix and for truncated inputs; a too-long input without truncation is a
  413 that names the input, in each API's shape;
- TEI's normalize false gives the raw vector, true the unit vector, with the
  cache in between;
- GET /v1/models answers the openai SDK's models.list() and
  models.retrieve(), 404 for another model, 401 without the API key.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2).
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm  # noqa: E402  (puts tests/e2e on the path)
from common import run, skip  # noqa: E402

try:
    import openai
    from tokenizers import Tokenizer
except ImportError as e:  # the venv of scripts/setup-deps has both
    skip(f"client libraries missing: {e}")

M, c = minilm("server_seams")
hf = Tokenizer.from_file(os.path.join(M, "tokenizer.json"))
hf.enable_truncation(256)
hf.no_padding()


def hf_count(text):
    return len(hf.encode(text).ids)


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


NUL = ["NUL? no: \u0000 after", "\u0000", "a\u0000b\u0000c", "\u0000lead", "trail\u0000"]
CUT = [t.split("\u0000")[0] or " " for t in NUL]  # what a C string would have kept
GONE = [t.replace("\u0000", "") or " " for t in NUL]  # what HF's normalizer sees


def post(s, path, body, headers=None):
    st, h, raw = s.request("POST", path, json.dumps(body), headers)
    try:
        return st, h, json.loads(raw)
    except ValueError:
        return st, h, raw


tmp = tempfile.mkdtemp(prefix="embd-seams-")
try:
    with Server(M) as s:
        # /v1/embeddings with NULs: whole texts, HF's token counts.
        st, h, r = post(s, "/v1/embeddings", {"input": NUL + GONE + CUT, "encoding_format": "float"})
        c.check(st == 200, f"openai NUL: {st} {r}")
        if st == 200:
            v = [d["embedding"] for d in r["data"]]
            n = len(NUL)
            for i, t in enumerate(NUL):
                c.check(cos(v[i], v[n + i]) > 0.999999,
                        f"{t!r}: cosine {cos(v[i], v[n + i]):.6f} to the text without its NULs")
                if hf.encode(GONE[i]).ids != hf.encode(CUT[i]).ids:
                    c.check(cos(v[i], v[2 * n + i]) < 0.9999,
                            f"{t!r}: equals the text cut at its NUL ({cos(v[i], v[2 * n + i]):.6f})")
            want = sum(hf_count(t) for t in NUL + GONE + CUT)
            c.check(r["usage"]["prompt_tokens"] == want,
                    f"openai usage {r['usage']} vs {want} from HF tokenizers")
            c.check(h.get("x-embd-tokens") == str(want), f"x-embd-tokens {h.get('x-embd-tokens')}")
        st, h, r = post(s, "/v1/embeddings", {"input": NUL[0]})
        c.check(st == 200 and r["usage"]["prompt_tokens"] == 8 == hf_count(NUL[0]),
                f"the issue's example: {st} usage {r.get('usage') if st == 200 else r}")

        # /embed (TEI) with NULs, normalize true / false.
        st, _, r = post(s, "/embed", {"inputs": [NUL[0], GONE[0]]})
        c.check(st == 200 and cos(r[0], r[1]) > 0.999999, f"TEI NUL: {st}")
        st, _, raw = post(s, "/embed", {"inputs": [NUL[0]], "normalize": False})
        st2, _, unit = post(s, "/embed", {"inputs": [NUL[0]], "normalize": True})
        if st == 200 and st2 == 200:
            c.check(abs(np.linalg.norm(unit[0]) - 1) < 1e-5, "TEI normalize true: a unit vector")
            c.check(abs(np.linalg.norm(raw[0]) - 1) > 1e-2,
                    f"TEI normalize false: norm {np.linalg.norm(raw[0])} (the raw vector)")
            c.check(cos(raw[0], unit[0]) > 0.999999, "raw and unit vectors point the same way")
        else:
            c.check(False, f"TEI normalize: {st} {st2}")

        # Too long without truncation: 413 naming the input, in each shape.
        long_text = "word " * 600
        st, _, r = post(s, "/v1/embeddings", {"input": ["short", long_text]})
        c.check(st == 413 and "input 1 has" in r["error"]["message"]
                and r["error"]["param"] == "input", f"openai too long: {st} {r}")
        st, _, r = post(s, "/embed", {"inputs": ["short", long_text]})
        c.check(st == 413 and "input 1 has" in r["error"] and r["error_type"] == "Validation",
                f"TEI too long: {st} {r}")
        st, _, r = post(s, "/embed", {"inputs": ["short", long_text], "truncate": True})
        c.check(st == 200 and len(r) == 2, f"TEI truncate true: {st}")
        st, h, r = post(s, "/embed", {"inputs": [long_text], "truncate": True})
        c.check(st == 200 and h.get("x-embd-tokens") == "256",
                f"a truncated input counts the 256 tokens it ran with: {h.get('x-embd-tokens')}")

        # /v1/models with the openai SDK.
        oa = openai.OpenAI(base_url=s.url + "/v1", api_key="unused")
        ms = oa.models.list()
        ids = [m.id for m in ms.data]
        c.check(ids == ["all-MiniLM-L6-v2"], f"models.list(): {ids}")
        c.check(all(m.object == "model" and m.owned_by == "embd" and m.created > 0
                    for m in ms.data), f"models.list() fields: {ms.data}")
        m = oa.models.retrieve("all-MiniLM-L6-v2")
        c.check(m.id == "all-MiniLM-L6-v2", f"models.retrieve(): {m}")
        try:
            oa.models.retrieve("gpt-4")
            c.check(False, "models.retrieve('gpt-4') did not fail")
        except openai.NotFoundError as e:
            c.check("all-MiniLM-L6-v2" in str(e), f"404 names the served model: {e}")
        st, h, _ = s.request("POST", "/v1/models", "{}")
        c.check(st == 405 and "GET" in h.get("Allow", ""), f"POST /v1/models: {st} {h.get('Allow')}")

    # A prefix: the usage counts it, as the engine tokenized it.
    with Server(M, "--prefix", "query: ") as s:
        st, _, r = post(s, "/v1/embeddings", {"input": ["what is a violin"]})
        want = hf_count("query: what is a violin")
        c.check(st == 200 and r["usage"]["prompt_tokens"] == want,
                f"prefix usage {r.get('usage') if st == 200 else r} vs {want}")

    # The API key guards /v1/models as the other endpoints.
    with Server(M, "--api-key", "sekrit", "--served-model-name", "minilm") as s:
        try:
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong").models.list()
            c.check(False, "models.list() with a wrong key did not fail")
        except openai.AuthenticationError:
            c.check(True, "")
        ms = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit").models.list()
        c.check([m.id for m in ms.data] == ["minilm"], f"served name: {ms.data}")

    # /search with a NUL in the query: the hits of the query without it.
    docs = os.path.join(tmp, "docs.jsonl")
    with open(docs, "w") as f:
        for i, t in enumerate(["A violin has four strings tuned in perfect fifths.",
                               "Debian is a free operating system.",
                               "Photo editors crop and retouch images."]):
            f.write(json.dumps({"id": str(i), "text": t}) + "\n")
    store = os.path.join(tmp, "store")
    run(["index", "-m", M, "-q", "--store", store, "-i", docs], check=True)
    with Server(M, "--store", store) as s:
        st, _, a = post(s, "/search", {"query": "violin \u0000 strings", "k": 3})
        st2, _, b = post(s, "/search", {"query": "violin  strings", "k": 3})
        st3, _, cut = post(s, "/search", {"query": "violin ", "k": 3})
        c.check(st == st2 == st3 == 200, f"/search: {st} {st2} {st3}")
        if st == st2 == st3 == 200:
            sa = [(h["id"], round(h["score"], 5)) for h in a["hits"]]
            sb = [(h["id"], round(h["score"], 5)) for h in b["hits"]]
            sc = [(h["id"], round(h["score"], 5)) for h in cut["hits"]]
            c.check(sa == sb, f"a NUL in the query: {sa} vs {sb} without it")
            c.check(sa != sc, f"the query was cut at its NUL: {sa}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

sys.exit(c.done())
