#!/usr/bin/env python3
"""Every code point (but surrogates) through each per-character rule of
BertNormalizer and BertPreTokenizer, embd (tok_dump --codepoints) against
Hugging Face `tokenizers`: clean_text (dropped / becomes a space / kept),
pre-tokenizer class (whitespace / punctuation / other), CJK spacing,
lowercase, and strip_accents (NFD then drop Mn). Needs no model."""
import os
import subprocess
import sys

try:
    from tokenizers import normalizers as N
    from tokenizers import pre_tokenizers as P
except ImportError:
    print("SKIPPED: python tokenizers not installed")
    sys.exit(77)

tok_dump = os.environ.get("TOK_DUMP")
if not tok_dump:
    sys.exit("TOK_DUMP not set")

clean = N.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
low = N.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
strip = N.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
chin = N.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
pt = P.BertPreTokenizer()


def hexes(s):
    return ",".join("%x" % ord(x) for x in s) or "-"


ours = subprocess.run([tok_dump, "--codepoints"], check=True, capture_output=True, text=True).stdout.splitlines()
i = 0
bad = 0
for c in range(0x110000):
    if 0xD800 <= c <= 0xDFFF:
        continue
    ch = chr(c)
    a = clean.normalize_str(ch)
    cl = "D" if a == "" else ("S" if a == " " and ch != " " else "K")
    n = len(pt.pre_tokenize_str("a" + ch + "a"))
    pc = "W" if n == 2 else ("P" if n == 3 else "N")
    cj = "C" if chin.normalize_str(ch) != ch else "-"
    ref = "%x %s %s %s %s %s" % (c, cl, pc, cj, hexes(low.normalize_str(ch)), hexes(strip.normalize_str(ch)))
    if ours[i] != ref:
        bad += 1
        if bad <= 20:
            print("U+%04X: tokenizers '%s', embd '%s'" % (c, ref, ours[i]))
    i += 1
print("%d code points, %d differ" % (i, bad))
sys.exit(1 if bad or i != len(ours) else 0)
