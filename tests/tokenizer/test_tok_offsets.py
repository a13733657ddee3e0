#!/usr/bin/env python3
"""Offsets parity: `embd tokenize --offsets` ($EMBD_BIN) against Hugging Face
`tokenizers` (Tokenizer.from_file on all-MiniLM-L6-v2's tokenizer.json,
truncation 256 as the model), on every title and text of $EMBD_TEST_CORPUS
and on an adversarial list (accents, Cyrillic, Greek, CJK, Hangul, emoji and
ZWJ sequences, combining marks, control characters, NUL, long words around
max_input_chars_per_word, literal special tokens, whitespace runs, the empty
text, seeded random mixes), with and without --no-special: ids, token strings
and offsets must be equal. `tokenizers` gives offsets in characters of the
str; embd in bytes of the input: each is turned into the other's through the
text's UTF-8. Invalid UTF-8 (embd reads each maximal invalid subpart as one
U+FFFD, as bytes.decode("utf-8", "replace")) is compared with `tokenizers` on
the decoded str, each U+FFFD standing for the bytes it replaced: through
`embd tokenize` as plain lines, and through tok_dump --offsets ($TOK_DUMP,
base64 lines). tok_dump also runs the adversarial list with small maxima and
with tokenizer.json variants that flip lowercase / strip_accents /
clean_text / handle_chinese_chars, one with vocabulary entries that make
NFD's canonical reordering of kept marks visible, and one with lstrip /
rstrip added tokens (and with RobertaProcessing's trim_offsets, which moves
their offsets back off that whitespace), comparing the special-token mask
too. Skips (77) without the model or the corpus."""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

try:
    from tokenizers import Tokenizer
except ImportError:
    print("SKIPPED: python tokenizers not installed")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import offsets_ref  # noqa: E402

models = os.environ.get("EMBD_TEST_MODELS", "")
corpus = os.environ.get("EMBD_TEST_CORPUS", "")
model = os.path.join(models, "all-MiniLM-L6-v2")
path = os.path.join(model, "tokenizer.json")
if not models or not os.path.exists(path):
    print("SKIPPED: %s not found (set EMBD_TEST_MODELS)" % path)
    sys.exit(77)
if not corpus or not os.path.exists(corpus):
    print("SKIPPED: corpus %r not found (set EMBD_TEST_CORPUS)" % corpus)
    sys.exit(77)
embd = os.environ.get("EMBD_BIN")
tok_dump = os.environ.get("TOK_DUMP")
if not embd or not tok_dump:
    sys.exit("EMBD_BIN and TOK_DUMP must be set")
MAX = 256


def show(what, raw, want, got):
    offsets_ref.show(what, raw, want, got)


def reference(tokenizer_json, raws, max_tokens, special):
    return offsets_ref.reference(tokenizer_json, raws, max_tokens, special)


def via_cli(raws, special, fmt):
    """embd tokenize --offsets on raws (JSONL strings or plain lines)."""
    if fmt == "jsonl":
        data = "".join(json.dumps({"text": r.decode("utf-8")}) + "\n" for r in raws).encode()
    else:
        data = b"".join(r + b"\n" for r in raws)
    cmd = [embd, "tokenize", "-m", model, "-q", "--offsets", "--input-format", fmt]
    if not special:
        cmd.append("--no-special")
    out = subprocess.run(cmd, input=data, capture_output=True)
    if out.returncode != 0:
        sys.exit("embd tokenize failed: " + out.stderr.decode(errors="replace"))
    return out.stdout.decode().splitlines()


def compare_cli(name, raws, special, fmt="jsonl"):
    t0 = time.time()
    want = reference(path, raws, MAX, special)
    got = via_cli(raws, special, fmt)
    bad = 0
    if len(got) != len(want):
        print("  embd tokenize printed %d lines for %d texts" % (len(got), len(want)))
        bad += 1
    for i, (r, w, line) in enumerate(zip(raws, want, got)):
        # the line as embd writes it, else the parsed line (escapes may differ)
        obj = {"index": i, "ids": w[0], "tokens": w[1], "offsets": [list(o) for o in w[2]]}
        if line == json.dumps(obj, ensure_ascii=False, separators=(",", ":")) or json.loads(line) == obj:
            continue
        bad += 1
        if bad <= 10:
            g = json.loads(line)
            show(name, r, list(zip(w[0], w[1], w[2]))[:12], list(zip(g["ids"], g["tokens"], g["offsets"]))[:12])
    print("%s%s: %d texts (%d tokens), %d mismatches, %.1f s"
          % (name, "" if special else " --no-special", len(raws), sum(len(w[0]) for w in want), bad,
             time.time() - t0))
    return bad


def compare_dump(name, tokenizer_json, raws, max_tokens, special):
    return offsets_ref.compare_dump(tok_dump, name, tokenizer_json, raws, max_tokens, special)


def adversarial():
    t = [
        "", " ", "   \t  \n\r  ", "\u00a0\u3000\u2003 x \u2028\u2029", "word" + " " * 50 + "word",
        "Hello, World!", "HELLO WoRLD", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade \u00c5ngstr\u00f6m",
        "cafe\u0301 e\u0301\u0301\u0301 a\u0308\u0323 \u1e09 \u01c4\u01c5\u01c6 \u1e9e\u00df \u0130stanbul \u0131",
        "\u0130\u0130\u0130 I\u0307 \u212a\u2126\u212b \ufb01\ufb00 \u0149 \u1f80",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0401\u0436\u0438\u043a \u0419\u043e\u0434",
        "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u1f48\u03b4\u03c5\u03c3\u03c3\u03b5\u03cd\u03c2 \u03a3\u03c3\u03c2",
        "\u4e2d\u6587\u5b57\u7b26 \u6c49\u5b57abc\u4e2d mixed\u4e2dchinese\u6587text \U00020000\U0002a6df \uf900",
        "\u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca \uff71\uff72 \u3001\u3002",
        "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8 \u1100\u1161\u11a8", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627",
        "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd \u0939\u093f\u0928\u094d\u0926\u0940 \u0915\u094d\u0937",
        "\U0001f600 \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f1e9\U0001f1ea",
        "\u2764\ufe0f emoji\U0001f600inside word\U0001f44dword \U0001f3f3\ufe0f\u200d\U0001f308",
        "a\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307\u0308\u0309 \u0344\u0345 \u0f73\u0f75 \u1dc0",
        "\x00", "a\x00b", "\x00\x00 x \x00", "NUL \x00 inside", "\x01\x02\x1f\x7f\x85 ctl", "a\x0bb\x0cc",
        "zero\u200bwidth zw\u200djoin bom\ufeffhere soft\u00adhyphen rtl\u200fmark a\u2060b",
        "\ufffd", "a\ufffdb", "\ue000private\U000f0000",
        "[SEP]", "[MASK]", "[CLS]", "[UNK]", "[PAD]", "[sep] [Sep] [ SEP ] [SEP", "hello[SEP]world",
        "[CLS][SEP][MASK][UNK][PAD]", "x [MASK] y", "[[SEP]]", "[SE\x00P]", "\u00e9[MASK]\u00e9",
        "[SEP]" * 300, "a[MASK]b" * 100,
        "a" * 99, "a" * 100, "a" * 101, "\u00e9" * 100, "\u00c9" * 101, "e\u0301" * 100, "\u0130" * 100,
        "\u0130" * 101, "x" * 5000 + " end", "supercalifragilisticexpialidocious " * 20,
        "unaffable " * 300, "word " * 254, "word " * 255, "a, " * 200, "\u4e2d" * 300,
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "\u00a1\u00bf\u00ab\u00bb\u2018\u2019\u201c\u201d\u2013\u2014\u2026",
        "e-mail: someone@example.com http://example.com/path?q=1&r=2#frag C++ C# .NET",
        "tabs\tand\nnewlines\r\nand\rCR", "\u2160 \u24b6 \uff21\uff42\uff43 \u00b2\u00b3 \u2155 \u0660\u0661",
        "\U00011938 \U00010d50 \ua7cb \u1c89 \u0378 \U0001fffe",
    ]
    r = random.Random(2024)
    pool = ("aAbBzZ09 \t\n.,!?'\"-_[](){}#@\u00e9\u00c9\u0301\u0308\u0323\u0130\u0131\u00df\u03a3\u03c2"
            "\u0416\u0436\u4e2d\u6587\u3042\u30a2\ud55c\u0e01\u0627\u064e\u200b\u200d\ufeff\u00a0\u3000"
            "\x00\x01\x7f\ufffd\U0001f600\U0001f3fd\u2014\u2019\u00bf\u0345\u1e9e\u212a\U0001d165\U0001d16d")
    for _ in range(3000):
        t.append("".join(r.choice(pool) for _ in range(r.randint(0, 40))))
    for _ in range(300):
        t.append("".join(r.choice(["[", "]", "SEP", "MASK", "CLS", "sep", " ", "x", "[SEP]", "\u00e9"])
                         for _ in range(r.randint(1, 12))))
    return [s.encode("utf-8") for s in t]


def late_marks():
    """Combining marks of Unicode versions later than tokenizers'
    normalization tables (U+1DFA, U+1ABF, U+0898, ...: class 0 there, so NFD
    leaves them in place) among older marks and letters."""
    marks = [0x07FD, 0x0898, 0x09FE, 0x0C3C, 0x0D3B, 0x0EBA, 0x1715, 0x1ABF, 0x1AC9, 0x1ABD,
             0x1DF6, 0x1DFA, 0xA82C, 0x10D24, 0x11070, 0x1133B, 0x1145E, 0x11839, 0x1193D,
             0x11943, 0x16FF0, 0x1E08F, 0x1E130, 0x1E4EC, 0x0301, 0x031D, 0x0328, 0x0345]
    r = random.Random(5)
    t = ["\u031d\u1dfa", "\u1ac9\u1abd", "\u0301\u1dfa", "e\u1dfa\u0301"]
    for _ in range(3000):
        t.append("".join(chr(r.choice(marks + [0x61, 0x65, 0x20, 0x4e2d, 0xe9]))
                         for _ in range(r.randint(1, 8))))
    return [x.encode() for x in t]


def invalid_utf8():
    b = [b"\xff", b"\xfe\xff", b"ab\xffcd", b"\x80", b"a\x80\x80b", b"\xc0\xaf", b"\xc2", b"\xc2a",
         b"\xe0\x80\x80", b"\xe0\xa0", b"\xe0\xa0a", b"\xed\xa0\x80", b"\xef\xbf\xbd", b"\xf0\x90\x80",
         b"\xf4\x90\x80\x80", b"\xf5\x80", b"caf\xe9 na\xefve", b"\xe4\xb8\xad\xe4\xb8 x", b"[SEP]\xff[SEP]",
         b"[SE\xffP]", b"\xff" * 300, b"word\xc3", b"\xc3\xa9\xc3", b"\xff \xff a\xffb \xe4\xb8\xad\xff",
         b"\xcc\x81\xff\xcc\x81", b"a\xcc\x81\xffb"]
    r = random.Random(99)
    for _ in range(500):
        b.append(bytes(r.choice([0x61, 0x20, 0x80, 0xbf, 0xc2, 0xc3, 0xcc, 0x81, 0xe0, 0xe4, 0xed, 0xf0, 0xf4,
                                 0xff, 0xa0, 0x9f, 0x8f, 0x90, 0x5b]) for _ in range(r.randint(1, 16))))
    return b


def variant(tmpdir, name, extra=(), **norm):
    d = json.load(open(path))
    d["normalizer"].update(norm)
    for tkn in extra:
        d["model"]["vocab"][tkn] = len(d["model"]["vocab"])
    p = os.path.join(tmpdir, name + ".json")
    json.dump(d, open(p, "w"))
    return p


def reorder_cases():
    marks = ["\U0001d165", "\U0001d16d", "\u302e", "\U0001d166", "\u0301", "\u0323", "\u0f73", "\x01"]
    starts = ["a", "\u00e9", "\u1e09", " ", "\u4e2d", "x\u0301"]
    r = random.Random(5)
    return [(r.choice(starts) + "".join(r.choice(marks) for _ in range(r.randint(1, 8)))
             + r.choice(["", " b", "\u0301"])).encode() for _ in range(3000)]


def strip_variant(tmpdir):
    """[MASK] with lstrip and rstrip, [SEP] rstrip, [CLS] lstrip: their spans
    take in the whitespace around them."""
    d = json.load(open(path))
    for a in d["added_tokens"]:
        a["lstrip"] = a["content"] in ("[MASK]", "[CLS]")
        a["rstrip"] = a["content"] in ("[MASK]", "[SEP]")
    p = os.path.join(tmpdir, "strip.json")
    json.dump(d, open(p, "w"))
    return p


def strip_cases():
    # 'Ġ' (trimmed like whitespace from a token's value) beside characters
    # the vocabulary lacks: the word's [UNK] is not an added token matched in
    # the text, its value is "[UNK]", so nothing is trimmed from its span
    pool = ["[MASK]", "[SEP]", "[CLS]", " ", "  ", "\t", "\u3000", "\n", "a", "\u00e9", "\x01", "x y", "\u00a0",
            "\u0301", "\u0120", "\U0001f9ff", "\u0914", "[UNK]"]
    r = random.Random(4)
    return [("".join(r.choice(pool) for _ in range(r.randint(0, 10)))).encode() for _ in range(3000)] + [
        b" \xff [MASK] \xff ", b"\xe4\xb8 [CLS]", b"  [MASK]  [MASK]  ", b"[SEP]   [CLS]", b" [CLS][CLS] "]


REORDER_VOCAB = ["##\U0001d165\U0001d16d", "##\U0001d16d\U0001d165", "##\U0001d165", "##\U0001d16d",
                 "##\u302e", "##\u302e\U0001d165\U0001d16d", "##\U0001d16d\u302e", "\U0001d165", "\U0001d16d"]


texts = []
with open(corpus, encoding="utf-8") as f:
    for line in f:
        if line.strip():
            rec = json.loads(line)
            texts.append((rec.get("title") or "").encode())
            texts.append((rec.get("text") or "").encode())
if len(texts) < 60000:
    sys.exit("corpus too small: %d texts, want >= 60000" % len(texts))

t_start = time.time()
failed = 0
failed += compare_cli("corpus", texts, True)
failed += compare_cli("corpus", texts, False)
adv = adversarial()
failed += compare_cli("adversarial", adv, True)
failed += compare_cli("adversarial", adv, False)
failed += compare_cli("later-Unicode marks", late_marks(), True)
bad_bytes = [b for b in invalid_utf8() if b"\n" not in b and not b.endswith(b"\r") and b.strip(b" \t")]
failed += compare_cli("invalid UTF-8 (lines)", bad_bytes, True, fmt="lines")
failed += compare_cli("invalid UTF-8 (lines)", bad_bytes, False, fmt="lines")

every = adv + invalid_utf8()
with tempfile.TemporaryDirectory() as tmp:
    for m in (2, 3, 7, 64):
        failed += compare_dump("adversarial + invalid", path, every, m, True)
    failed += compare_dump("adversarial + invalid", path, every, 5, False)
    for name, kw in [("lowercase=false strip_accents=true", dict(lowercase=False, strip_accents=True)),
                     ("lowercase=true strip_accents=false", dict(lowercase=True, strip_accents=False)),
                     ("lowercase=false strip_accents=null", dict(lowercase=False, strip_accents=None)),
                     ("clean_text=false handle_chinese_chars=false",
                      dict(clean_text=False, handle_chinese_chars=False))]:
        failed += compare_dump(name, variant(tmp, name.replace(" ", "_"), **kw), every, MAX, True)
    failed += compare_dump("reorder vocab", variant(tmp, "reorder", extra=REORDER_VOCAB),
                           reorder_cases() + every, MAX, True)
    failed += compare_dump("lstrip/rstrip added tokens", strip_variant(tmp), strip_cases() + every, MAX, True)
    # RobertaProcessing with trim_offsets: the added tokens' values hold the
    # whitespace their lstrip / rstrip took in, which the trimming gives back
    # (ASCII as tokenizers has it; all in bytes, see offsets_ref.trim_bytes)
    for aps in (True, False):
        d = json.load(open(strip_variant(tmp)))
        d["post_processor"] = {"type": "RobertaProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101],
                               "trim_offsets": True, "add_prefix_space": aps}
        rp = os.path.join(tmp, "roberta-%s.json" % aps)
        json.dump(d, open(rp, "w"))
        d["post_processor"]["trim_offsets"] = False
        up = os.path.join(tmp, "roberta-%s-untrimmed.json" % aps)
        json.dump(d, open(up, "w"))
        cases = strip_cases() + every
        name = "RobertaProcessing trim_offsets add_prefix_space=%s" % aps
        failed += compare_dump(name + " ASCII", rp, [c for c in cases if c.isascii()], MAX, True)
        failed += offsets_ref.compare_dump(tok_dump, name, rp, cases, MAX, True, untrimmed=up)
print("total %.1f s, %d mismatches" % (time.time() - t_start, failed))
sys.exit(1 if failed else 0)
