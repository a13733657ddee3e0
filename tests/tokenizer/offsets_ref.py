"""Offsets parity helpers shared by test_tok_offsets.py (WordPiece) and
test_tok_unigram.py (SentencePiece): Hugging Face `tokenizers` gives offsets
in characters of the str, embd in bytes of the input; each is turned into the
other's through the text's UTF-8. Invalid UTF-8 is read as embd reads it
(each maximal invalid subpart one U+FFFD, as bytes.decode("utf-8",
"replace")), each U+FFFD standing for the bytes it replaced."""
import base64
import codecs
import json
import subprocess

from tokenizers import Tokenizer


def char_starts(raw):
    """(str, pos): raw decoded as embd reads it, and pos[k] the byte where
    character k starts (pos[len] = len(raw)); None for pos when raw is ASCII."""
    if raw.isascii():
        return raw.decode("ascii"), None
    spans = []

    def record(err):
        spans.append((err.start, err.end))
        return "\ufffd", err.end

    codecs.register_error("embd_offsets_record", record)
    s = raw.decode("utf-8", "embd_offsets_record")
    pos, i = [], 0
    for c in s:
        pos.append(i)
        if spans and spans[0][0] == i and c == "\ufffd":
            i = spans.pop(0)[1]
        else:
            i += len(c.encode("utf-8"))
    pos.append(i)
    assert i == len(raw)
    return s, pos


def reference(tokenizer_json, raws, max_tokens, special):
    """[(ids, tokens, byte offsets, special mask)] from tokenizers."""
    tk = Tokenizer.from_file(tokenizer_json)
    tk.enable_truncation(max_tokens)
    tk.no_padding()
    decoded = [char_starts(r) for r in raws]
    encs = tk.encode_batch([s for s, _ in decoded], add_special_tokens=special)
    out = []
    for (_, pos), e in zip(decoded, encs):
        offs = e.offsets if pos is None else [(pos[a], pos[b]) for a, b in e.offsets]
        out.append((e.ids, e.tokens, offs, e.special_tokens_mask))
    return out


def show(what, raw, want, got):
    print("  MISMATCH (%s) %r\n    tokenizers %s\n    embd       %s" % (what, raw[:80], want, got))


def trim_bytes(tokens, offsets, mask, add_prefix_space):
    """RobertaProcessing's trim_offsets (tokenizers' process_offsets) on byte
    offsets, as the Rust crate (and so text-embeddings-inference) applies it:
    whitespace or 'Ġ' characters at each end of a token's value, counted in
    characters, moved over in bytes. Python's binding turns offsets into
    characters before the post-processor trims, so its trimmed offsets cannot
    be compared with byte offsets where a token ends in multi-byte
    whitespace."""
    out = []
    i = -1  # the token's index in the text's own tokens (the post-processor trims before it adds its own)
    for tok, (a, b), special in zip(tokens, offsets, mask):
        if special:
            out.append((a, b))
            continue
        i += 1
        sp = lambda c: c == "\u0120" or c.isspace() and c not in "\x1c\x1d\x1e\x1f"
        lead = next((k for k, c in enumerate(tok) if not sp(c)), len(tok))
        trail = next((k for k, c in enumerate(reversed(tok)) if not sp(c)), len(tok))
        if lead:
            if (i == 0 or a == 0) and add_prefix_space and lead == 1:
                lead = 0
            a = min(a + lead, b)
        if trail and b >= trail:
            b = max(b - trail, a)
        out.append((a, b))
    return out


def compare_dump(tok_dump, name, tokenizer_json, raws, max_tokens, special, untrimmed=None):
    """tok_dump --offsets (ids, offsets, special mask) against tokenizers on
    raws (bytes); prints the count, returns the mismatches. untrimmed: for a
    RobertaProcessing that trims offsets, the same tokenizer.json without
    trim_offsets, whose offsets trim_bytes trims as the Rust crate does."""
    if untrimmed:
        aps = json.load(open(tokenizer_json, encoding="utf-8"))["post_processor"].get("add_prefix_space", True)
        want = [(ids, toks, trim_bytes(toks, offs, mask, aps), mask)
                for ids, toks, offs, mask in reference(untrimmed, raws, max_tokens, special)]
    else:
        want = reference(tokenizer_json, raws, max_tokens, special)
    inp = "".join("b64:" + base64.b64encode(r).decode() + "\n" for r in raws)
    cmd = [tok_dump, "--offsets", tokenizer_json, str(max_tokens)] + ([] if special else ["--no-special"])
    out = subprocess.run(cmd, input=inp, capture_output=True, text=True)
    if out.returncode != 0:
        print("  tok_dump failed: " + out.stderr)
        return len(raws)
    lines = out.stdout.split("\n")
    bad = 0
    for i, (r, w) in enumerate(zip(raws, want)):
        g = [tuple(int(x) for x in t.split(":")) for t in lines[i].split()] if i < len(lines) else []
        wt = [(a, s, t, m) for a, (s, t), m in zip(w[0], w[2], w[3])]
        if wt != g:
            bad += 1
            if bad <= 10:
                show(name, r, wt[:12], g[:12])
    print("%s (tok_dump, max %d%s): %d texts, %d mismatches"
          % (name, max_tokens, "" if special else ", no special", len(raws), bad))
    return bad
