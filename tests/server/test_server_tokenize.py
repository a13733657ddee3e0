"""Issue 22 (item 4): text-embeddings-inference's POST /tokenize and POST
/decode in `embd serve`, against the references.

- /tokenize equals `embd tokenize --offsets` (ids; [start, stop) byte
  offsets, and each token's text: the input's bytes there for a token of the
  text, the token's string with null offsets for a special token the
  template adds) with and without "add_special_tokens" (`--no-special`), on
  corpus texts and hard ones (accents, CJK, emoji, Hangul, "[SEP]" typed in
  the text, NUL and control characters, a word too long for the vocabulary);
  its ids and special flags equal Python `tokenizers`' (special_tokens_mask)
  too, and its offsets are the characters' ones turned into bytes;
- "prompt_name" (and the server's --default-prompt-name) tokenizes the
  prompt and the input as /embed embeds them: equal to `embd tokenize` of the
  prompted text, offsets in it;
- /decode equals `tokenizers.Tokenizer.from_file(tokenizer.json).decode(ids,
  skip_special_tokens=...)` on the ids of those texts and on random ids, for
  a single list (answered as a list of one string) and a list of lists;
- both answer for a cross-encoder served with -m (its own tokenizer);
- SentencePiece (Unigram) tokenizers too: multilingual-e5's (as an
  embedder) and an XLM-R cross-encoder's, from EMBD_TEST_MODELS
  (e5-small-ml-random, ce-mminilm-l12-random: said when absent), on texts
  whose characters the precompiled charsmap folds, expands or removes and
  characters the vocabulary lacks, with and without the special tokens,
  against `embd tokenize` and `tokenizers`; `embd tokenize --offsets`'
  "tokens" against tokenizers' Encoding.tokens (an unknown piece shown by
  its text);
- bad bodies get a 4xx in TEI's shape {"error","error_type"}, never a 5xx,
  under the server's limits (--max-inputs, --max-input-chars,
  --max-body-bytes); /metrics counts both paths.

huggingface_hub's InferenceClient has no call for these endpoints (2.4:
none posts to /tokenize or /decode), so the test posts the bodies itself.

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2),
EMBD_TEST_CORPUS (optional: more texts).
"""
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import Server, minilm, model_dir, reranker_dir  # noqa: E402
from common import read_jsonl, run, skip  # noqa: E402

try:
    from tokenizers import Tokenizer
except ImportError as e:  # the venv of scripts/setup-deps has it
    skip(f"tokenizers missing: {e}")

M, c = minilm("server_tokenize")

HARD = [
    "Hello, world! This is embd.",
    "Héllo wörld, café naïve Ünïcödé ÀÉÎÕÜ",
    "e\u0301 a\u0308 \u212b combining marks",
    "東京は日本の首都です。中文字 한국어 텍스트",
    "emoji 🚀🔥 and 👩‍👩‍👧 family, flags 🇫🇷",
    "a [SEP] typed in the text, [CLS] too, and [MASK]/[UNK]/[PAD]",
    "[SEP]",
    "nul\u0000inside and \u0001\u001f controls\ttab\nnewline",
    "x" * 120 + " supercalifragilisticexpialidociousnessless",
    "don't stop . , ! ? it's 3.5% (a) [b] {c}",
    "   leading and trailing spaces   ",
    "\u00a0\u2003\u3000 odd spaces \u200b zero width",
]


def corpus_texts(n):
    path = os.environ.get("EMBD_TEST_CORPUS", "")
    out = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                d = json.loads(line)
                t = d.get("text", "")
                if t and (len(out) < n // 2 or any(ord(ch) > 127 for ch in t)):
                    out.append(t[:700])
                if len(out) == n:
                    break
    return out


TEXTS = HARD + corpus_texts(8)
PROMPTS = {"query": "query: ", "passage": "passage: "}


def cli_tokenize(model, texts, *flags):
    p = run(["tokenize", "-m", model, "-q", "--input-format", "jsonl", "--offsets", *flags],
            stdin="".join(json.dumps({"text": t}) + "\n" for t in texts), check=True)
    return read_jsonl(p.stdout)


def hf_tokenizer(model):
    t = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    t.no_padding()
    t.no_truncation()
    return t


def post(s, path, body):
    st, h, data = s.request("POST", path, body if isinstance(body, (str, bytes))
                            else json.dumps(body))
    try:
        return st, json.loads(data)
    except ValueError:
        return st, data


def check_tokens(got, text, ref, what, py=None, special=True):
    """One input's /tokenize answer against `embd tokenize --offsets`' line
    (and Python tokenizers' encoding of text, if given)."""
    raw = text.encode()
    ok = isinstance(got, list) and len(got) == len(ref["ids"])
    c.check(ok, f"{what}: {len(got) if isinstance(got, list) else got} tokens, "
                f"want {len(ref['ids'])}")
    if not ok:
        return
    for j, (g, i, tok, (a, b)) in enumerate(zip(got, ref["ids"], ref["tokens"], ref["offsets"])):
        ok = set(g) == {"id", "text", "special", "start", "stop"} and g["id"] == i
        if g.get("special"):
            ok = ok and g["text"] == tok and g["start"] is None and g["stop"] is None and \
                (a, b) == (0, 0) and special
        else:
            ok = ok and g["special"] is False and (g["start"], g["stop"]) == (a, b) and \
                g["text"] == raw[a:b].decode()
        if not ok:
            c.check(False, f"{what}: token {j} {g}, want id {i} {tok!r} {a}..{b}")
            return
    if py is not None:
        # Python's offsets count characters: the same ranges in bytes.
        cb = [len(text[:k].encode()) for k in range(len(text) + 1)]
        py_off = [None if m else (cb[a], cb[b]) for (a, b), m in
                  zip(py.offsets, py.special_tokens_mask)]
        mine = [None if g["special"] else (g["start"], g["stop"]) for g in got]
        c.check([g["id"] for g in got] == py.ids and
                [int(g["special"]) for g in got] == py.special_tokens_mask and mine == py_off,
                f"{what}: against tokenizers: {got} / {py.ids} {py.special_tokens_mask} "
                f"{py.offsets}")
    c.check(True, what)


def bad(s, path, body, want, frag):
    st, j = post(s, path, body)
    name = f"{path} {str(body)[:80]}"
    c.check(st == want, f"{name}: status {st}, want {want}: {j}")
    c.check(st < 500, f"{name}: a 5xx for bad input")
    c.check(isinstance(j, dict) and set(j) == {"error", "error_type"} and
            j["error_type"] == "Validation" and frag in j["error"],
            f"{name}: TEI error shape with {frag!r}: {j}")


tmp = tempfile.mkdtemp(prefix="embd-tokenize-")
try:
    # A copy of the model that declares prompts.
    P = os.path.join(tmp, "minilm-prompts")
    os.mkdir(P)
    for name in os.listdir(M):
        if name != "config_sentence_transformers.json":
            os.symlink(os.path.join(os.path.abspath(M), name), os.path.join(P, name))
    with open(os.path.join(P, "config_sentence_transformers.json"), "w") as f:
        json.dump({"prompts": PROMPTS}, f)

    ref = cli_tokenize(M, TEXTS)
    ref_ns = cli_tokenize(M, TEXTS, "--no-special")
    ref_q = cli_tokenize(M, ["query: " + t for t in TEXTS])
    ref_p = cli_tokenize(M, ["passage: " + t for t in TEXTS[:3]])
    tk = hf_tokenizer(M)
    rng = random.Random(7)
    vocab = tk.get_vocab_size()

    with Server(P, "--max-inputs", "64", "--max-input-chars", "4000",
                "--max-body-bytes", "65536") as s:
        # All texts in one request, then one by one (a single string: a list of one list).
        st, j = post(s, "/tokenize", {"inputs": TEXTS})
        c.check(st == 200 and isinstance(j, list) and len(j) == len(TEXTS),
                f"/tokenize batch: {st} {str(j)[:200]}")
        for k, t in enumerate(TEXTS):
            check_tokens(j[k] if st == 200 else None, t, ref[k], f"/tokenize [{k}] {t[:30]!r}",
                         py=tk.encode(t))
        for k in (0, 3, 5, 6):
            st, j = post(s, "/tokenize", {"inputs": TEXTS[k], "add_special_tokens": True})
            c.check(st == 200 and isinstance(j, list) and len(j) == 1,
                    f"/tokenize single string: a list of one list: {st} {str(j)[:120]}")
            check_tokens(j[0], TEXTS[k], ref[k], f"/tokenize single {k}")
        st, j = post(s, "/tokenize", {"inputs": TEXTS, "add_special_tokens": False})
        for k, t in enumerate(TEXTS):
            check_tokens(j[k] if st == 200 else None, t, ref_ns[k],
                         f"/tokenize add_special_tokens=false [{k}]",
                         py=tk.encode(t, add_special_tokens=False), special=False)
        # A prompt: tokenized with the input, offsets in the prompted text.
        st, j = post(s, "/tokenize", {"inputs": TEXTS, "prompt_name": "query"})
        for k, t in enumerate(TEXTS):
            check_tokens(j[k] if st == 200 else None, "query: " + t, ref_q[k],
                         f"/tokenize prompt_name query [{k}]")
        # Not truncated (TEI does not): a text over the model's 512 tokens.
        long = "word " * 700
        st, j = post(s, "/tokenize", {"inputs": long})
        c.check(st == 200 and len(j[0]) == 702, f"/tokenize not truncated: {st} "
                                                f"{len(j[0]) if st == 200 else j}")

        # /decode against tokenizers' decode, both ways; the ids of the texts and random ids.
        lists = [r["ids"] for r in ref] + [r["ids"] for r in ref_ns]
        lists += [[rng.randrange(vocab) for _ in range(rng.randrange(1, 40))] for _ in range(12)]
        lists += [[101, 102], [0], [100, 100], [101, 7592, 1005, 1055, 1012, 102]]
        for skip_special in (True, False):
            st, j = post(s, "/decode", {"ids": lists, "skip_special_tokens": skip_special})
            want = [tk.decode(ids, skip_special_tokens=skip_special) for ids in lists]
            c.check(st == 200 and j == want,
                    f"/decode skip_special_tokens={skip_special}: {st} " +
                    str([(a, b) for a, b in zip(j, want) if a != b][:3] if st == 200 else j))
        st, j = post(s, "/decode", {"ids": ref[1]["ids"]})  # default: skip, single list
        c.check(st == 200 and j == [tk.decode(ref[1]["ids"], skip_special_tokens=True)],
                f"/decode a single list (default skip_special_tokens): {st} {j}")

        # Bad bodies: 4xx in TEI's shape.
        for body, want, frag in (
                ({}, 400, "missing field \"inputs\""),
                ({"inputs": ""}, 400, "empty string"),
                ({"inputs": []}, 400, "empty array"),
                ({"inputs": [1, 2]}, 400, "string or an array of strings"),
                ({"inputs": [["a"]]}, 400, "string or an array of strings"),
                ({"inputs": ["a", 1]}, 400, "not a string"),
                ({"inputs": None}, 400, "string or an array of strings"),
                ({"inputs": {"text": "a"}}, 400, "string or an array of strings"),
                ({"inputs": ["a"] * 65}, 413, "--max-inputs"),
                ({"inputs": ["a", "é" * 4001]}, 413, "--max-input-chars"),
                ({"inputs": "a", "add_special_tokens": "yes"}, 400, "true or false"),
                ({"inputs": "a", "prompt_name": "nope"}, 400, "\"query\", \"passage\""),
                ({"inputs": "a", "prompt_name": 7}, 400, "must be a string"),
                ("not json", 400, "not valid JSON"),
                ("[\"a\"]", 400, "JSON object"),
                ({"inputs": "a" * 70000}, 413, "--max-body-bytes")):
            bad(s, "/tokenize", body, want, frag)
        for body, want, frag in (
                ({}, 400, "missing field \"ids\""),
                ({"ids": []}, 400, "empty array"),
                ({"ids": [[]]}, 400, "empty token list"),
                ({"ids": [[1], []]}, 400, "empty token list"),
                ({"ids": [vocab]}, 400, "Hugging Face's decode skips it"),
                ({"ids": [[1], [2, -1]]}, 400, "not an integer"),
                ({"ids": [1.5]}, 400, "not an integer"),
                ({"ids": [1e30]}, 400, "not an integer"),
                ({"ids": [10 ** 30]}, 400, "not valid JSON"),
                ({"ids": ["a"]}, 400, "token ids"),
                ({"ids": [1, "a"]}, 400, "only integers"),
                ({"ids": [[1], 2]}, 400, "must not mix"),
                ({"ids": [1, [2]]}, 400, "only integers"),
                ({"ids": "hello"}, 400, "token ids"),
                ({"ids": [[1]] * 65}, 413, "--max-inputs"),
                ({"ids": [1], "skip_special_tokens": 1}, 400, "true or false")):
            bad(s, "/decode", body, want, frag)
        st, _, _ = s.request("GET", "/tokenize")
        c.check(st == 405, f"GET /tokenize: {st}")
        st, _, body = s.request("GET", "/metrics")
        m = body.decode()
        for line in ('path="/tokenize",code="200"', 'path="/tokenize",code="400"',
                     'path="/tokenize",code="413"', 'path="/decode",code="200"',
                     'path="/decode",code="400"', 'path="/decode",code="413"'):
            c.check(line in m, f"/metrics has embd_http_responses_total{{{line}}}")
        st, _, _ = s.request("GET", "/health")
        c.check(st == 200, f"healthy after the bad requests: {st}")

    # The server's default prompt applies when the request names none; a named one replaces it.
    with Server(P, "--default-prompt-name", "query") as s:
        st, j = post(s, "/tokenize", {"inputs": TEXTS[:3]})
        for k in range(3):
            check_tokens(j[k] if st == 200 else None, "query: " + TEXTS[k], ref_q[k],
                         f"--default-prompt-name query, no prompt_name [{k}]")
        st, j = post(s, "/tokenize", {"inputs": TEXTS[:3], "prompt_name": "passage"})
        for k in range(3):
            check_tokens(j[k] if st == 200 else None, "passage: " + TEXTS[k], ref_p[k],
                         f"prompt_name passage replaces the default [{k}]")

    # A cross-encoder served with -m: its own tokenizer.
    R = reranker_dir()
    rref = cli_tokenize(R, TEXTS[:6])
    rtk = hf_tokenizer(R)
    with Server(R) as s:
        st, j = post(s, "/tokenize", {"inputs": TEXTS[:6]})
        for k in range(6):
            check_tokens(j[k] if st == 200 else None, TEXTS[k], rref[k],
                         f"cross-encoder /tokenize [{k}]", py=rtk.encode(TEXTS[k]))
        ids = [r["ids"] for r in rref]
        st, j = post(s, "/decode", {"ids": ids, "skip_special_tokens": False})
        c.check(st == 200 and j == [rtk.decode(x, skip_special_tokens=False) for x in ids],
                f"cross-encoder /decode: {st} {j}")
        bad(s, "/decode", {"ids": [rtk.get_vocab_size()]}, 400, "not an integer")

    # SentencePiece (Unigram) tokenizers: multilingual-e5's as an embedder and
    # an XLM-R cross-encoder's, with the texts the charsmap folds, expands or
    # removes; offsets as `tokenizers` gives them.
    SP = TEXTS + ["  multiple   spaces\tand\u3000ideographic  ", "\ufb01ne \u2460 \uff21\uff22\uff23 \u00bd",
                  "\u200bzero\u200dwidth\ufeff joiners", "caf\u00e9 \u00c5ngstr\u00f6m \u2581 <mask> </s>",
                  "\u041f\u0440\u0438\u0432\u0435\u0442 \u0645\u0631\u062d\u0628\u0627 \u0939\u093f\u0928\u094d\u0926\u0940",
                  # characters the vocabulary lacks (<unk>, two fused into one),
                  # and <unk> typed in the text (an added token)
                  "a \U0001f9ff\U0001faac b", "\U0001fae8 \u2603\U0001f9ff", "x <unk> y", "x<unk>y"]
    for name in ("e5-small-ml-random", "ce-mminilm-l12-random"):
        D = model_dir(name)
        if not D:
            print(f"note: EMBD_TEST_MODELS has no {name}: its /tokenize is not checked")
            continue
        sref = cli_tokenize(D, SP)
        sref_ns = cli_tokenize(D, SP, "--no-special")
        stk = hf_tokenizer(D)
        # `embd tokenize --offsets`' "tokens" are tokenizers' Encoding.tokens
        # (an unknown piece by its text, "<unk>" only where it was typed)
        for k, t in enumerate(SP):
            for r, special in ((sref[k], True), (sref_ns[k], False)):
                want = stk.encode(t, add_special_tokens=special).tokens
                c.check(r["tokens"] == want, f"{name} embd tokenize --offsets tokens of {t[:30]!r} "
                                             f"(special {special}): {r['tokens']}, want {want}")
        with Server(D) as s:
            st, j = post(s, "/tokenize", {"inputs": SP})
            c.check(st == 200, f"{name} /tokenize: {st} {str(j)[:200]}")
            for k, t in enumerate(SP):
                check_tokens(j[k] if st == 200 else None, t, sref[k], f"{name} /tokenize [{k}] {t[:30]!r}",
                             py=stk.encode(t))
            st, j = post(s, "/tokenize", {"inputs": SP, "add_special_tokens": False})
            for k, t in enumerate(SP):
                check_tokens(j[k] if st == 200 else None, t, sref_ns[k],
                             f"{name} /tokenize add_special_tokens=false [{k}]",
                             py=stk.encode(t, add_special_tokens=False), special=False)
            ids = [r["ids"] for r in sref]
            st, j = post(s, "/decode", {"ids": ids, "skip_special_tokens": False})
            c.check(st == 200 and j == [stk.decode(x, skip_special_tokens=False) for x in ids],
                    f"{name} /decode: {st} {str(j)[:200]}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

c.done()
