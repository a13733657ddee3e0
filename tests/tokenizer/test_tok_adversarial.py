#!/usr/bin/env python3
"""embd's token ids against Hugging Face `tokenizers` on an adversarial set:
control and zero-width characters, accents and combining marks, casing traps,
CJK / kana / hangul / Thai / Arabic, emoji and ZWJ sequences, long words
(100 / 101 chars and more), 1 MB inputs, texts over the max length, literal
special tokens, punctuation, Unicode spaces, empty and blank texts, invalid
UTF-8 (compared with tokenizers on bytes.decode("utf-8", "replace")), U+0000
inside, before and after text (a character, not an end: BERT's clean_text
drops it and keeps the rest), plus seeded random mixes. Run for the real
all-MiniLM-L6-v2 tokenizer.json (max 256 and a few small maxima) and for
variants written from it that flip lowercase / strip_accents / clean_text /
handle_chinese_chars or match [UNK] in the normalized text, and for
all-mpnet-base-v2's (normalized <unk>, <mask> with lstrip, RobertaProcessing)
when $EMBD_TEST_MODELS has it. The texts with U+0000 also go through `embd tokenize`
($EMBD_BIN), as JSONL ("\u0000" escapes) and as lines (raw NUL bytes): the
CLI's readers must hand the whole text to the tokenizer.
Skips (77) if $EMBD_TEST_MODELS/all-MiniLM-L6-v2 is absent."""
import base64
import json
import os
import random
import subprocess
import sys
import tempfile

try:
    from tokenizers import Tokenizer
except ImportError:
    print("SKIPPED: python tokenizers not installed")
    sys.exit(77)

models = os.environ.get("EMBD_TEST_MODELS", "")
path = os.path.join(models, "all-MiniLM-L6-v2", "tokenizer.json")
if not models or not os.path.exists(path):
    print("SKIPPED: %s not found (set EMBD_TEST_MODELS)" % path)
    sys.exit(77)
tok_dump = os.environ.get("TOK_DUMP")
if not tok_dump:
    sys.exit("TOK_DUMP not set")


# U+0000 at the start, the end, alone, repeated, next to specials and marks.
NUL_TEXTS = [
    "NUL? no: \x00 after", "\x00", "a\x00b\x00c", "\x00start", "end\x00", "\x00both\x00", "\x00\x00\x00",
    "\x00 \x00", "two words\x00 and\x00more words", "\x00[SEP]\x00", "[CLS]\x00[SEP]", "[SE\x00P]",
    "x\x00\u0301y", "caf\u00e9\x00\u00e9", "\u4e2d\x00\u6587", "\U0001f600\x00\U0001f600",
    "\x00" * 1000 + "end", "start" + "\x00" * 1000, ("w\x00 " * 300).strip(),
]


def cases():
    t = NUL_TEXTS + [
        "", " ", "     ", "\t\n\r", "\x00", "\x00\x01\x02\x1f\x7f", "\x0b\x0c\x85", "a\x0bb", "a\x0cb",
        "a\x85b", "a\x00b", "a\ufffdb", "\ufffd", "hello\x01world", "zero\u200bwidth", "zw\u200djoin",
        "bom\ufeffhere", "\ufeff", "soft\u00adhyphen", "rtl\u200fmark \u202eoverride", "a\u2060b",
        "Hello, World!", "HELLO world", "The quick brown fox jumps over the lazy dog.",
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade", "cafe\u0301 e\u0301\u0301\u0301 a\u0308\u0323",
        "\u1e09 \u01c4 \u01c5 \u01c6 \u1e9e \u00df STRASSE stra\u00dfe", "\u0130stanbul \u0131s\u0131k I\u0307 \u0130",
        "ODYSSEUS \u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u1f48\u03b4\u03c5\u03c3\u03c3\u03b5\u03cd\u03c2",
        "\u03a3 \u03c3 \u03c2 \u039c\u0391\u03a3", "\u212a \u2126 \u212b \u2160 \u24b6 \uff21\uff42\uff43",
        "\u4e2d\u6587\u5b57\u7b26 \u6c49\u5b57abc\u4e2d", "\u3400\u4dbf \U00020000\U0002a6df \U0002b820 \U0002ceaf \U0002f800 \uf900\ufaff",
        "\u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca \u30fc\u3001\u3002 \uff71\uff72",
        "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8 \u1100\u1161\u11a8", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 \u0e01\u0e34\u0e19",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627 \u060c\u061b\u061f",
        "\u05e2\u05d1\u05e8\u05d9\u05ea \u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd", "\u0939\u093f\u0928\u094d\u0926\u0940 \u0915\u094d\u0937",
        "\U0001f600 \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1e9\U0001f1ea \u2764\ufe0f",
        "emoji\U0001f600inside word\U0001f44dword", "\U0001fae0 \U0001faf8 \U0001f9cc",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "\u00a1\u00bf\u00ab\u00bb\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u2020\u00a7\u00b6",
        "\u3010\u3011\u300c\u300d\uff08\uff09\uff01\uff1f", "$100 \u20ac50 \u00a330 \u00a5 5% a+b=c x^2 ~tilde |pipe|",
        "e-mail: someone@example.com http://example.com/path?q=1&r=2#frag", "C++ C# F# .NET node.js",
        "tabs\tand\nnewlines\r\nand\rCR", "nbsp\u00a0here", "u\u2000u\u2001u\u2002u\u2003u\u2009u\u200au\u202fu\u205fu\u3000u\u1680u",
        "line\u2028sep para\u2029sep", "ogham\u1680space",
        "a" * 99, "a" * 100, "a" * 101, "b" * 100 + " ok", "\u00e9" * 100, "\u00e9" * 101, "e\u0301" * 60,
        "\u4e2d" * 300, "x" * 5000, "supercalifragilisticexpialidocious " * 20, "unaffable " * 300,
        "word " * 255, "word " * 254, "word " * 253, "a, " * 200,
        "[SEP]", "[CLS]", "[MASK]", "[UNK]", "[PAD]", "[sep]", "[Sep] [ SEP ] [SEP", "hello[SEP]world",
        "[CLS][SEP][MASK][UNK][PAD]", "x [MASK] y", "[[SEP]]", "[SEP]" * 300, "a[MASK]b" * 100,
        "\U000e0041 \U000e0001 \U000f0000 \U0010fffd \ue000", "\u0378\u0379 \U0001fffe \uffff",
        "\u0340\u0341 \u0344 \u0374 \u037e \u0387 \u1fee \u1fef \u2126", "\u1e9b\u0323 \u1100\u1161",
        "\u0958 \u0929 \u2adc \ufb1d \ufb2a \U0001d15e \U0001d165\U0001d16d\U0001d166",
        "a\U0001d165\u0301\U0001d16d b", "\u0f73 \u0f75 \u0f81", "\u2e43\u2e4f \u166d \u061d \u0a76",
        "digits 0123456789 \u0660\u0661\u0662 \uff11\uff12 \u00b2\u00b3 \u2155", "mixed\u4e2dchinese\u6587text",
        "\U00011938 \U00010d50\U00010d51 \ua7cb\ua7dc \u1c89", "\u00c0\u00c1\u00c2\u00c3\u00c4\u00c5 \u00d8 \u0141\u0142 \u0110",
    ]
    big = random.Random(7)
    words = ["alpha", "Beta", "\u00e9t\u00e9", "\u4e2d", "x-y", "don't", "3.14", "[SEP]", "\U0001f600", "na\u00efve"]
    t.append(" ".join(big.choice(words) for _ in range(200000))[: 1 << 20])  # ~1 MB
    t.append("z" * (1 << 20))
    t.append(" " * (1 << 20) + "end")
    t.append("\x01" * (1 << 20) + "end")
    t += reorder_cases()
    # seeded random mixes of characters that exercise every rule
    pool = ("aAbBzZ09 \t\n.,!?'\"-_[](){}#@" "\u00e9\u00c9\u0301\u0308\u0130\u0131\u00df\u03a3\u03c2\u4e2d\u6587"
            "\u3042\u30a2\ud55c\u0e01\u0627\u064e\u200b\u200d\ufeff\u00a0\u3000\x00\x7f\ufffd\U0001f600\U0001f3fd"
            "\u2014\u2019\u00bf\u0345\u1e9e\u212a\U0001d165\U0001d16d")
    r = random.Random(12345)
    for _ in range(3000):
        t.append("".join(r.choice(pool) for _ in range(r.randint(0, 40))))
    # MPNet's added tokens: <unk> is matched in the normalized (lowercased,
    # cleaned) text, <mask> strips the space before it, [UNK] is raw
    t += ["<unk>", "<UNK>", "a<unk>b", "A <Unk> B", "<u\x01nk>", "<unk", "unk>", "<<unk>>",
          "<s> hi </s>", "x <mask> y", "x<mask>y", "<MASK>", "[UNK] [unk] [Unk]", "<pad><pad>",
          "\u00ab<\u00fcnk>\u00bb", "<\u00dcNK>", "<unk>\u0301", "\u0130<unk>", "<unk\u200b>"]
    for _ in range(300):  # random words made of the specials' pieces
        t.append("".join(r.choice(["<", ">", "unk", "UNK", "/s", "s", " ", "mask", "<unk>"])
                         for _ in range(r.randint(1, 10))))
    for _ in range(300):  # random words made of the specials' pieces
        t.append("".join(r.choice(["[", "]", "SEP", "CLS", "MASK", "sep", " ", "x", "[SEP]"]) for _ in range(r.randint(1, 12))))
    return t


REORDER = ["\U0001d165", "\U0001d16d", "\u302e", "\U0001d166", "\u0301"]
REORDER_VOCAB = ["##" + REORDER[0] + REORDER[1], "##" + REORDER[1] + REORDER[0], "##" + REORDER[0],
                 "##" + REORDER[1], "##" + REORDER[2], "##" + REORDER[2] + REORDER[0] + REORDER[1],
                 "##" + REORDER[1] + REORDER[2]]


def reorder_cases():
    r = random.Random(5)
    return ["a" + "".join(r.choice(REORDER) for _ in range(r.randint(1, 6))) for _ in range(400)] + [
        "a\U0001d16d\U0001d165", "a\U0001d16d\u0301\U0001d165", "a\U0001d16d\u0f71\U0001d165"]


def invalid_utf8():
    b = [b"\xff", b"\xfe\xff", b"ab\xffcd", b"\x80", b"a\x80\x80b", b"\xc0\xaf", b"\xc1\xbf", b"\xc2", b"\xc2a",
         b"\xe0\x80\x80", b"\xe0\xa0", b"\xe0\xa0a", b"\xed\xa0\x80", b"\xed\x9f\xbf", b"\xef\xbf\xbd",
         b"\xf0\x80\x80\x80", b"\xf0\x90\x80", b"\xf0\x90\x80\x80", b"\xf4\x90\x80\x80", b"\xf4\x8f\xbf\xbf",
         b"\xf5\x80", b"caf\xe9 na\xefve", b"\xe4\xb8\xad\xe4\xb8", b"[SEP]\xff[SEP]", b"[SE\xffP]", b"\xff" * 1000,
         b"word\xc3", b"\xc3\xa9\xc3"]
    r = random.Random(99)
    for _ in range(500):
        b.append(bytes(r.choice([0x61, 0x20, 0x80, 0xbf, 0xc2, 0xc3, 0xe0, 0xe4, 0xed, 0xf0, 0xf4, 0xff, 0xa0, 0x9f, 0x8f, 0x90])
                       for _ in range(r.randint(1, 16))))
    return b


def run(tokenizer_json, max_tokens, texts, raw, big):
    """Returns (mismatches, count) for embd vs tokenizers."""
    tk = Tokenizer.from_file(tokenizer_json)
    tk.enable_truncation(max_tokens)
    tk.no_padding()
    if not big:  # tokenizers needs about 1 s per 1 MB text: only some configs take them
        texts = [s for s in texts if len(s) < 100000]
    strs = texts + [b.decode("utf-8", "replace") for b in raw]
    ref = [e.ids for e in tk.encode_batch(strs)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for s in texts:
            f.write(json.dumps(s) + "\n")
        for b in raw:
            f.write("b64:" + base64.b64encode(b).decode() + "\n")
        name = f.name
    try:
        with open(name) as inp:
            out = subprocess.run([tok_dump, tokenizer_json, str(max_tokens)], stdin=inp, capture_output=True,
                                 text=True)
    finally:
        os.unlink(name)
    if out.returncode != 0:
        print("tok_dump failed:", out.stderr)
        return len(strs), len(strs)
    got = [[int(x) for x in line.split()] for line in out.stdout.split("\n")[: len(strs)]]
    bad = 0
    for i, (a, b) in enumerate(zip(ref, got)):
        if a != b:
            bad += 1
            if bad <= 10:
                src = texts[i] if i < len(texts) else raw[i - len(texts)]
                print("  MISMATCH %r\n    tokenizers %s\n    embd       %s" % (src[:80], a[:40], b[:40]))
    if len(got) != len(ref):
        print("  embd printed %d lines for %d texts" % (len(got), len(ref)))
        bad += 1
    return bad, len(strs)


def normalized_unk(base, tmpdir):
    """The tokenizer with [UNK] matched in the normalized text (as "[unk]")."""
    with open(base, encoding="utf-8") as f:
        tj = json.load(f)
    for a in tj["added_tokens"]:
        if a["content"] == "[UNK]":
            a["normalized"] = True
    p = os.path.join(tmpdir, "normalized-unk.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    return p


def variant(base, tmpdir, name, extra=(), **norm):
    d = json.load(open(base))
    d["normalizer"].update(norm)
    for t in extra:  # new vocab entries, to make otherwise-[UNK] words visible
        d["model"]["vocab"][t] = len(d["model"]["vocab"])
    p = os.path.join(tmpdir, name + ".json")
    json.dump(d, open(p, "w"))
    return p


def cli_nul(model, max_tokens):
    """embd tokenize on NUL_TEXTS, as JSONL and as lines; returns the mismatches."""
    embd = os.environ.get("EMBD_BIN")
    if not embd:
        print("note: EMBD_BIN not set; embd tokenize not checked")
        return 0
    tk = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    tk.enable_truncation(max_tokens)
    tk.no_padding()
    ref = [e.ids for e in tk.encode_batch(NUL_TEXTS)]
    bad = 0
    inputs = {
        "jsonl": "".join(json.dumps({"text": s}) + "\n" for s in NUL_TEXTS).encode(),
        "lines": "".join(s + "\n" for s in NUL_TEXTS).encode(),
    }
    for fmt, data in inputs.items():
        out = subprocess.run([embd, "tokenize", "-m", model, "-q", "--input-format", fmt], input=data,
                             capture_output=True)
        if out.returncode != 0:
            print("  embd tokenize --input-format %s exited %d: %s" % (fmt, out.returncode,
                                                                      out.stderr.decode(errors="replace")))
            bad += len(ref)
            continue
        got = [json.loads(line)["ids"] for line in out.stdout.decode().splitlines() if line.strip()]
        if len(got) != len(ref):
            print("  embd tokenize --input-format %s: %d lines for %d texts" % (fmt, len(got), len(ref)))
            bad += 1
        for s, a, b in zip(NUL_TEXTS, ref, got):
            if a != b:
                bad += 1
                print("  MISMATCH (embd tokenize, %s) %r\n    tokenizers %s\n    embd       %s"
                      % (fmt, s[:60], a[:20], b[:20]))
    print("embd tokenize, U+0000 in JSONL and lines: %d texts x 2, %d mismatches" % (len(ref), bad))
    return bad


texts = cases()
raw = invalid_utf8()
failed = cli_nul(os.path.dirname(path), 256)
with tempfile.TemporaryDirectory() as tmp:
    configs = [("all-MiniLM-L6-v2", path, 256)]
    for m in (2, 3, 7, 64):
        configs.append(("all-MiniLM-L6-v2 max %d" % m, path, m))
    big_ones = {configs[0][0], configs[1][0], "lowercase=false strip_accents=true"}
    configs += [
        ("lowercase=false strip_accents=true", variant(path, tmp, "v1", lowercase=False, strip_accents=True), 256),
        ("lowercase=true strip_accents=false", variant(path, tmp, "v2", lowercase=True, strip_accents=False), 256),
        ("lowercase=false strip_accents=null", variant(path, tmp, "v3", lowercase=False, strip_accents=None), 256),
        # NFD's canonical reordering of marks that strip_accents keeps (Mc with ccc > 0)
        ("reorder vocab", variant(path, tmp, "v5", extra=REORDER_VOCAB), 256),
        ("clean_text=false handle_chinese_chars=false",
         variant(path, tmp, "v4", clean_text=False, handle_chinese_chars=False), 256),
        ("[UNK] normalized=true", normalized_unk(path, tmp), 256),
    ]
    # all-mpnet-base-v2's (scripts/fetch-model): <unk> normalized=true,
    # <mask> lstrip, RobertaProcessing
    mpnet = os.path.join(models, "all-mpnet-base-v2", "tokenizer.json")
    if os.path.exists(mpnet):
        configs.append(("all-mpnet-base-v2", mpnet, 384))
    else:
        print("note: %s absent (scripts/fetch-model all-mpnet-base-v2): not checked" % mpnet)
    for name, p, m in configs:
        bad, n = run(p, m, texts, raw, name in big_ones)
        print("%s: %d texts, %d mismatches" % (name, n, bad))
        failed += bad
sys.exit(1 if failed else 0)
