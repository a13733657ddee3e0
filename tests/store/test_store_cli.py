"""End to end: `embd index` / `embd search` on the real all-MiniLM-L6-v2.

Indexes 50 short documents on distinct topics, checks that paraphrases find
their document first, that scores are the inner products of `embd embed`
vectors, that re-indexing replaces (the count stays), the CLI's errors, a
torn tail written by hand, and a crash: `embd index` killed with SIGKILL in
the middle of a bigger input leaves a store that opens, holding a whole
number of intact records (exactly the first documents of the input).

Environment: EMBD_BIN, EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2),
EMBD_TEST_CORPUS (optional: Debian descriptions for the crash test).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from common import BIN, Checker, model_dir, read_jsonl, run, skip  # noqa: E402

DOCS = [
    "The cat curled up on the warm windowsill and slept all afternoon.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Knead the dough for ten minutes, then let it rise before baking the bread.",
    "The Linux kernel scheduler balances runnable tasks across CPU cores.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
    "The striker scored twice in the second half to win the football match.",
    "Volcanic eruptions can inject ash high into the stratosphere.",
    "A violin has four strings tuned in perfect fifths.",
    "Regular exercise lowers blood pressure and improves heart health.",
    "The Roman Empire built thousands of kilometres of paved roads.",
    "Black holes bend light so strongly that nothing escapes past the event horizon.",
    "Tomatoes need full sun and consistent watering to ripen well.",
    "The chess grandmaster sacrificed her queen to force checkmate.",
    "Electric cars store energy in large lithium-ion battery packs.",
    "Honeybees communicate the location of flowers with a waggle dance.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Glaciers carve U-shaped valleys as they slowly move downhill.",
    "A mortgage is a loan secured by the value of a house.",
    "The novel follows a young wizard at a school of magic.",
    "Vaccines train the immune system to recognise a virus.",
    "The marathon runner collapsed just metres from the finish line.",
    "Git records the history of a project as a graph of commits.",
    "Whales are mammals and must surface to breathe air.",
    "The orchestra rehearsed Beethoven's ninth symphony for the concert.",
    "Earthquakes happen when tectonic plates slip along a fault.",
    "Coffee beans are roasted to bring out their aroma and flavour.",
    "The museum displayed ancient Egyptian mummies and papyrus scrolls.",
    "Solar panels turn sunlight directly into electricity.",
    "The toddler learned to tie his shoelaces by himself.",
    "Airplanes generate lift as air flows faster over the curved wing.",
    "The detective found a muddy footprint beneath the broken window.",
    "Inflation erodes the purchasing power of savings over time.",
    "Penguins huddle together to survive the Antarctic winter.",
    "The surgeon repaired the torn ligament in the athlete's knee.",
    "Rainforests hold more than half of the world's plant and animal species.",
    "The programmer fixed a memory leak in the C library.",
    "Wine is made by fermenting crushed grapes with yeast.",
    "The mountaineers reached the summit of Everest at dawn.",
    "Satellites in geostationary orbit appear fixed above one point on Earth.",
    "The tenant complained to the landlord about the broken heating.",
    "Sharks have skeletons made of cartilage rather than bone.",
    "The election results were announced late on Sunday night.",
    "Yoga combines breathing exercises with stretching poses.",
    "The bakery sells croissants and baguettes every morning.",
    "Antibiotics kill bacteria but do not work against viruses.",
    "The river flooded the village after a week of heavy rain.",
    "A compiler translates source code into machine instructions.",
    "The painter used bold brush strokes and bright colours.",
    "Owls hunt at night using their excellent hearing.",
    "The train to the airport leaves every fifteen minutes.",
]

PARAPHRASES = {
    "a sleepy kitty napping by the window in the sun": 0,
    "how is a program turned into binary code the processor runs": 46,
    "what makes an aeroplane stay up in the sky": 29,
    "plants making food from light": 4,
}

MODEL = "all-MiniLM-L6-v2"


def hits_of(p):
    return read_jsonl(p.stdout)


def all_records(c, m, store):
    p = run(["search", "-m", m, "--store", store, "--query", "anything", "-k", "1000000", "-q"])
    c.check(p.returncode == 0, f"search all records: {p.stderr.decode()}")
    return hits_of(p)


def embed(m, texts):
    p = run(["embed", "-m", m, "-q", "--input-format", "lines"], stdin="\n".join(texts) + "\n",
            check=True)
    rows = read_jsonl(p.stdout)
    return np.array([r["embedding"] for r in rows], dtype=np.float64)


def main():
    m = model_dir(MODEL)
    if not m:
        skip(f"{MODEL} not found under EMBD_TEST_MODELS")
    c = Checker("store_e2e")
    tmp = tempfile.mkdtemp(prefix="embd-store-e2e-")
    try:
        store = os.path.join(tmp, "store")
        docs_path = os.path.join(tmp, "docs.jsonl")
        with open(docs_path, "w") as f:
            for i, t in enumerate(DOCS):
                # a few integer ids: they are stored as their decimal strings
                doc_id = 1000 + i if i % 10 == 7 else f"doc{i:02d}"
                f.write(json.dumps({"id": doc_id, "text": t}) + "\n")

        def did(i):
            return str(1000 + i) if i % 10 == 7 else f"doc{i:02d}"

        p = run(["index", "-m", m, "--store", store, "-i", docs_path])
        c.check(p.returncode == 0, f"index: {p.stderr.decode()}")
        c.check(b"50 added, 0 replaced" in p.stderr, f"index summary: {p.stderr.decode()}")
        meta = json.load(open(os.path.join(store, "meta.json")))
        c.check(meta["format"] == "embd-store" and meta["version"] == 1 and meta["dim"] == 384
                and len(meta["model_fingerprint"]) == 16 and meta["normalized"] is True,
                f"meta.json {meta}")

        # Paraphrases rank their document first; scores are inner products of embd embed vectors.
        doc_vecs = embed(m, DOCS)
        queries = list(PARAPHRASES)
        q_vecs = embed(m, queries)
        for qi, (q, want) in enumerate(PARAPHRASES.items()):
            p = run(["search", "-m", m, "--store", store, "--query", q, "-k", "50"])
            c.check(p.returncode == 0, f"search {q!r}: {p.stderr.decode()}")
            hits = hits_of(p)
            c.check(len(hits) == 50, f"{q!r}: {len(hits)} hits")
            if not hits:
                continue
            c.check(hits[0]["id"] == did(want), f"{q!r}: first hit {hits[0]}")
            c.check([h["rank"] for h in hits] == list(range(1, 51)), "ranks 1..50")
            c.check(all(hits[i]["score"] >= hits[i + 1]["score"] for i in range(len(hits) - 1)),
                    "scores descending")
            worst = 0.0
            for h in hits:
                i = [did(j) for j in range(len(DOCS))].index(h["id"])
                c.check(h["text"] == DOCS[i], f"text of {h['id']}")
                worst = max(worst, abs(h["score"] - float(doc_vecs[i] @ q_vecs[qi])))
            c.check(worst < 1e-5, f"{q!r}: score vs embd embed inner product off by {worst}")

        # -k default 10, EMBD_QUERY, --query - with the query index.
        p = run(["search", "-m", m, "--store", store], env={"EMBD_QUERY": queries[0]})
        hits = hits_of(p)
        c.check(p.returncode == 0 and len(hits) == 10 and hits[0]["id"] == did(0),
                f"EMBD_QUERY: {p.returncode} {p.stderr.decode()}")
        p = run(["search", "-m", m, "--store", store, "--query", "-", "-k", "2"],
                stdin="\n".join(queries[:3]) + "\n")
        hits = hits_of(p)
        c.check(p.returncode == 0 and [(h["query"], h["rank"]) for h in hits] ==
                [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)], f"--query -: {hits}")
        c.check(hits and hits[2]["id"] == did(PARAPHRASES[queries[1]]), "second query's hit")

        # Re-indexing the same input replaces: the count stays 50.
        p = run(["index", "-m", m, "--store", store, "-i", docs_path])
        c.check(p.returncode == 0 and b"0 added, 50 replaced" in p.stderr,
                f"re-index: {p.stderr.decode()}")
        recs = all_records(c, m, store)
        c.check(len(recs) == 50 and len({r["id"] for r in recs}) == 50, f"count {len(recs)}")

        # Errors: exit codes and one "embd: " line.
        p = run(["search", "-m", m, "--store", os.path.join(tmp, "nope"), "--query", "x"])
        c.check(p.returncode == 1 and p.stderr.startswith(b"embd: "), "missing store -> 1")
        p = run(["search", "-m", m, "--store", store])
        c.check(p.returncode == 2 and b"--query" in p.stderr, "no query -> 2")
        p = run(["index", "-m", m, "-i", docs_path])
        c.check(p.returncode == 2, "no --store -> 2")
        p = run(["index", "-m", m, "--store", store], stdin='{"id": "a", "text": "x"}\n{"text": "y"}\n')
        c.check(p.returncode == 1 and b"line 2" in p.stderr and b"\"id\"" in p.stderr,
                f"missing id names the line: {p.stderr.decode()}")
        other = model_dir("bge-small-random")
        if other:
            p = run(["index", "-m", other, "--store", store, "-i", docs_path])
            c.check(p.returncode == 1 and b"fingerprint" in p.stderr and
                    meta["model_fingerprint"].encode() in p.stderr,
                    f"other model refused: {p.stderr.decode()}")
        # plain lines: ids are line numbers, blank lines skipped
        lines_store = os.path.join(tmp, "lines")
        p = run(["index", "-m", m, "--store", lines_store, "-q", "--input-format", "lines"],
                stdin=DOCS[0] + "\n\n" + DOCS[3] + "\n")
        c.check(p.returncode == 0 and p.stderr == b"", f"lines index: {p.stderr.decode()}")
        recs = all_records(c, m, lines_store)
        c.check(sorted(r["id"] for r in recs) == ["1", "3"], f"line-number ids {recs}")

        # A torn tail written by hand: search ignores it with a warning, index truncates it.
        log = os.path.join(store, "records.log")
        size = os.path.getsize(log)
        with open(log, "r+b") as f:
            f.truncate(size - 100)
        p = run(["search", "-m", m, "--store", store, "--query", "x", "-k", "1000"])
        # the last record was doc49's replacement: its first version is live again
        hits = hits_of(p)
        c.check(p.returncode == 0 and b"warning" in p.stderr and len(hits) == 50 and
                any(h["id"] == did(49) and h["text"] == DOCS[49] for h in hits),
                f"torn tail, search: {p.stderr.decode()}")
        p = run(["index", "-m", m, "--store", store, "-i", docs_path, "-q"])
        c.check(p.returncode == 0 and b"dropped" in p.stderr, f"torn tail, index: {p.stderr}")
        c.check(len(all_records(c, m, store)) == 50, "count after repair")

        # Texts and ids that need escaping come back from search as equal
        # JSON strings (quotes, backslash, control characters, DEL, non-ASCII).
        odd_store = os.path.join(tmp, "odd")
        odd = [("q\"uo\\te", 'say "hi" \\ back\tslash\nnew line \u0001 \u007f end'),
               ("ünï", "café — naïve 😀 text")]
        odd_path = os.path.join(tmp, "odd.jsonl")
        with open(odd_path, "w") as f:
            for i, t in odd:
                f.write(json.dumps({"id": i, "text": t}) + "\n")
        p = run(["index", "-m", m, "--store", odd_store, "-i", odd_path, "-q"])
        c.check(p.returncode == 0, f"index odd texts: {p.stderr.decode()}")
        got = {h["id"]: h["text"] for h in all_records(c, m, odd_store)}
        c.check(got == dict(odd), f"escaped ids and texts round-trip: {got!r}")

        # U+0000 is a character (issue 18): a text holding one, from JSONL
        # ("\u0000") or a plain line (a raw NUL byte), is stored whole and
        # comes back from search whole (as \u0000); a query with a NUL byte
        # read from stdin is embedded whole too (its own document scores 1).
        nul_store = os.path.join(tmp, "nul")
        nul_text = "before \x00 after the NUL: " + DOCS[7]
        p = run(["index", "-m", m, "--store", nul_store, "-q"],
                stdin=json.dumps({"id": "j", "text": nul_text}) + "\n")
        c.check(p.returncode == 0, f"index a JSONL text with a NUL: {p.stderr.decode()}")
        p = run(["index", "-m", m, "--store", nul_store, "-q", "--input-format", "lines"],
                stdin=nul_text.encode() + b"\n")
        c.check(p.returncode == 0, f"index a plain line with a NUL: {p.stderr.decode()}")
        p = run(["search", "-m", m, "--store", nul_store, "--query", "x", "-k", "2"])
        c.check(b"\\u0000" in p.stdout, f"search writes the NUL as \\u0000: {p.stdout[:200]!r}")
        got = {h["id"]: h["text"] for h in hits_of(p)}
        c.check(got == {"j": nul_text, "1": nul_text}, f"texts with a NUL round-trip: {got!r}")
        p = run(["search", "-m", m, "--store", nul_store, "--query", "-", "-k", "2"],
                stdin=nul_text.encode() + b"\n")
        hits = hits_of(p)
        c.check(p.returncode == 0 and len(hits) == 2 and
                all(abs(h["score"] - 1) < 1e-5 for h in hits),
                f"a query with a NUL from stdin finds its documents: {hits}")

        # Crash: SIGKILL in the middle of indexing a bigger input.
        crash_store = os.path.join(tmp, "crash")
        big = []
        corpus = os.environ.get("EMBD_TEST_CORPUS")
        if corpus and os.path.isfile(corpus):
            # real, varied text, but titles only: the first chunk (~1024
            # documents) must be embedded before the kill, also in a debug
            # or sanitizer build
            with open(corpus) as f:
                for line in f:
                    big.append(json.loads(line)["title"])
                    if len(big) == 3000:
                        break
        while len(big) < 3000:
            i = len(big)
            big.append(" ".join(DOCS[(i * k) % 50] for k in range(1, 2 + i % 4)) + f" #{i}")
        big_path = os.path.join(tmp, "big.jsonl")
        with open(big_path, "w") as f:
            for i, t in enumerate(big):
                f.write(json.dumps({"id": f"c{i}", "text": t}) + "\n")
        env = dict(os.environ)
        for k in [k for k in env if k.startswith("EMBD_") and k not in ("EMBD_BIN",)]:
            del env[k]
        proc = subprocess.Popen([BIN, "index", "-m", m, "--store", crash_store, "-i", big_path,
                                 "-q"], env=env, stderr=subprocess.PIPE)
        crash_log = os.path.join(crash_store, "records.log")
        deadline = time.time() + 300
        flushed = False
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(crash_log) and os.path.getsize(crash_log) > 0:
                flushed = True
                break
            time.sleep(0.02)
        time.sleep(0.3)  # into the next chunk's embedding or write
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        c.check(killed or proc.returncode == 0, f"index before the kill: {proc.stderr.read()}")
        recs = all_records(c, m, crash_store)
        n = len(recs)
        print(f"crash test: {n} records survived the SIGKILL (killed={killed})")
        c.check((n > 0 or not flushed) and n <= len(big), f"{n} records after the crash")
        c.check(sorted(r["id"] for r in recs) == sorted(f"c{i}" for i in range(n)),
                "the survivors are exactly the first documents")
        bad = [r["id"] for r in recs if big[int(r["id"][1:])] != r["text"]]
        c.check(not bad, f"texts intact ({len(bad)} bad)")
        # and the store takes appends again
        p = run(["index", "-m", m, "--store", crash_store, "-q"],
                stdin=json.dumps({"id": "after", "text": DOCS[5]}) + "\n")
        c.check(p.returncode == 0, f"append after the crash: {p.stderr.decode()}")
        c.check(len(all_records(c, m, crash_store)) == n + 1, "count after the append")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c.done()


if __name__ == "__main__":
    main()
