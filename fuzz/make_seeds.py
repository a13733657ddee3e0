#!/usr/bin/env python3
"""make_seeds.py — writes the seed corpora of fuzz/corpus/ (run once; the
output is committed). Uses only the standard library; the tokenizer and
config seeds copy small files of $EMBD_TEST_MODELS (default
~/.cache/embd/models) when present.

usage: fuzz/make_seeds.py [CORPUS_DIR]"""
import json
import os
import struct
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
models = os.environ.get("EMBD_TEST_MODELS", os.path.expanduser("~/.cache/embd/models"))


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- tokenizer: byte 0 max_tokens - 2, byte 1 buffer capacity, then text
texts = [
    "Hello, world! This is embd.",
    "apt-get install libfoo-dev (version 1.2.3~rc1) \u2014 caf\u00e9 na\u00efve",
    "\u4e2d\u6587\u5b57 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4 \U0001f600 \u0301e\u0301",
    "   \t\n leading and trailing   \r\n",
    "[CLS] [SEP] [MASK] [UNK] [PAD] ##s un##affable",
    "x" * 300,
]
for i, t in enumerate(texts):
    put("tokenizer", f"text{i}", bytes([30, 8]) + t.encode())
put("tokenizer", "invalid_utf8", bytes([255, 0]) + b"ok \xff\xfe \xc3 \xed\xa0\x80 \xf4\x90\x80\x80 end")
put("tokenizer", "control", bytes([0, 200]) + bytes(range(0, 64)))

# ---- tokenizer.json: a tiny BERT tokenizer in the forms embd reads
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(97, 123)] + ["##s", "hello", "##lo"]


def tok_json(post="template", normalizer=True, added=True):
    special = [{"id": i, "special": True, "content": t, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": False} for i, t in enumerate(vocab[:5])]
    if post == "template":
        pp = {"type": "TemplateProcessing",
              "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
              "pair": [],
              "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                 "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}
    else:
        pp = {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": special if added else [],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True} if normalizer else None,
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": pp,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(vocab)}},
    })


put("tokenizer_json", "template", tok_json())
put("tokenizer_json", "bert_processing", tok_json(post="bert"))
put("tokenizer_json", "no_normalizer", tok_json(normalizer=False))
put("tokenizer_json", "no_added", tok_json(added=False))
put("tokenizer_json", "bpe_unsupported", tok_json().replace('"WordPiece", "unk', '"BPE", "unk'))

# ---- config parsers: every file kind (each target input goes to every parser)
cfg = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
       "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
       "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
       "hidden_act": "gelu", "position_embedding_type": "absolute"}
put("config", "config", json.dumps(cfg))
put("config", "config_minimal", json.dumps({k: cfg[k] for k in ("vocab_size", "hidden_size",
    "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings")}))
put("config", "pooling", json.dumps({"word_embedding_dimension": 384, "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False}))
put("config", "modules", json.dumps([
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
put("config", "sbert", json.dumps({"max_seq_length": 256, "do_lower_case": False}))
put("config", "tokenizer_config", json.dumps({"do_lower_case": True, "model_max_length": 512,
    "cls_token": "[CLS]", "sep_token": "[SEP]"}))
for name, rel in (("real_config", "all-MiniLM-L6-v2/config.json"),
                  ("real_tokenizer_config", "all-MiniLM-L6-v2/tokenizer_config.json")):
    p = os.path.join(models, rel)
    if os.path.exists(p):
        put("config", name, open(p, "rb").read())

# ---- safetensors
def st_image(entries, meta=True):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = {"format": "pt"}
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = struct.pack("<6f", 1, -2, 0.5, 3, 1e-3, -0.0)
put("safetensors", "f32", st_image([("embeddings.word_embeddings.weight", "F32", [2, 3], f32),
                                    ("embeddings.LayerNorm.bias", "F32", [3], f32[:12])]))
put("safetensors", "f16_bf16", st_image([("a", "F16", [4], struct.pack("<4H", 0x3c00, 0x8001, 0x7c00, 0x7e00)),
                                         ("b", "BF16", [2, 2], struct.pack("<4H", 0x3f80, 0, 0xff80, 1)),
                                         ("empty", "F32", [0, 5], b"")], meta=False))
put("safetensors", "i64", st_image([("embeddings.position_ids", "I64", [1, 4], struct.pack("<4q", 0, 1, 2, 3))]))
put("safetensors", "scalar", st_image([("s", "F32", [], struct.pack("<f", 7))]))

# ---- cache: flags, D - 1, memory budget / 64, meta, values (see fuzz_cache.c)
def vec(d, base):
    return struct.pack(f"<{d}f", *[base + i * 0.25 for i in range(d)])


put("cache", "intact", bytes([0, 3, 10]) + b"".join(bytes([0]) + vec(4, i) for i in range(5)))
put("cache", "corrupt_mixed", bytes([0, 7, 0]) + bytes([0]) + vec(8, 1) + bytes([1]) + vec(8, 2) +
    struct.pack("<HB", 3, 0x40) + bytes([2]) + vec(8, 3) + struct.pack("<H", 20) + bytes([0]) + vec(8, 4))
put("cache", "foreign_meta", bytes([1, 1, 0, 8]) + b"other 99" + bytes([0]) + vec(2, 1))
put("cache", "no_meta", bytes([2, 0, 1]) + bytes([0]) + vec(1, 5))

# ---- store: flags, D - 1, then meta / records (see fuzz_store.c)
def rec(d, rid, text, base, rflags=0, extra=b""):
    return bytes([rflags, len(rid), len(text)]) + rid + text + vec(d, base) + extra


put("store", "records", bytes([0, 3]) + rec(4, b"a", b"alpha", 1) + rec(4, b"b", b"", 2) +
    rec(4, b"a", b"replaced", 3) + rec(4, b"fuzz-new", b"clash", 4))
put("store", "torn_tail", bytes([0, 1]) + rec(2, b"x", b"one", 1) + rec(2, b"y", b"two", 2, 8, struct.pack("<H", 21)))
put("store", "bad_middle", bytes([0, 1]) + rec(2, b"x", b"one", 1) + rec(2, b"y", b"bad", 2, 4, struct.pack("<I", 9)) +
    rec(2, b"z", b"three", 3))
put("store", "bad_magic", bytes([4, 0]) + rec(1, b"m", b"", 1, 1, struct.pack("<I", 0x11223344)))
meta = b'{"format": "embd-store", "version": 1, "dim": 3, "model_fingerprint": "00000000000000aa", "normalized": true}'
put("store", "raw_meta", bytes([1, 2]) + struct.pack("<H", len(meta)) + meta + rec(3, b"r", b"t", 0))
raw = b""
for i, (rid, text) in enumerate(((b"doc1", b"first"), (b"doc2", b"second"))):
    payload = struct.pack("<I", len(rid)) + rid + struct.pack("<I", len(text)) + text + vec(2, i)
    raw += struct.pack("<II", 0x52444d45, len(payload)) + b"\0" * 8 + payload  # hash left wrong
put("store", "raw_log_bad_hash", bytes([2, 1]) + raw)
put("store", "foreign_meta", bytes([1, 1]) + struct.pack("<H", 30) + b'{"format": "other", "dim": 2}x')

# ---- server request bodies: byte 0 = endpoint (0 OpenAI, 1 TEI, 2 search; 16 TEI /rerank,
#      48 /v1/rerank; 128 TEI /tokenize, 160 TEI /decode) | 4 auto-truncate | 8 prefix |
#      64 a model without prompts (else "query" and "passage")
reqs = [
    (0, {"input": "hello world", "model": "all-MiniLM-L6-v2"}),
    (0, {"input": ["first text", "second text"], "encoding_format": "base64", "dimensions": 384, "user": "u"}),
    (0, {"input": [101, 7592, 2088, 102]}),
    (4, {"input": [[101, 7592, 102], [101, 2088, 2088, 2088, 2088, 2088, 2088, 2088, 2088, 2088, 2088, 2088,
                                      2088, 2088, 2088, 2088, 2088, 102]]}),
    (1, {"inputs": "What is Deep Learning?", "normalize": False, "truncate": True, "truncation_direction": "Right"}),
    (1, {"inputs": ["a", "b", "c"], "prompt_name": None}),
    (9, {"inputs": "word " * 30, "truncate": False}),
    (2, {"query": "a text editor", "k": 5}),
    (2, {"query": "caf\u00e9 \u4e2d\u6587"}),
    (2, {"query": "a text editor", "k": 3, "rerank": True, "candidates": 8}),
    (2, {"query": "a text editor", "rerank": True}),
    (2, {"query": "a text editor", "k": 3, "candidates": 5}),
    (16, {"query": "What is Deep Learning?", "texts": ["Deep Learning is ...", "cheese"],
          "raw_scores": True, "return_text": True, "truncate": True, "truncation_direction": "Right"}),
    (20, {"query": "q", "texts": ["a", "", 3]}),
    (16, {"query": "", "texts": []}),
    (48, {"model": "rerank", "query": "What is Deep Learning?", "documents": ["a", {"text": "b"}, "c"],
          "top_n": 2, "return_documents": True}),
    (52, {"query": "q", "documents": [{"title": "no text"}], "top_n": 0}),
    (48, {"query": "q", "documents": ["a", "b"], "top_n": 3, "truncate": False}),
    # Matryoshka dimensions and named prompts (issue 22, items 4 and 5).
    (0, {"input": ["a", "b"], "dimensions": 64, "prompt_name": "query", "encoding_format": "base64"}),
    (1, {"inputs": "What is Deep Learning?", "dimensions": 1, "prompt_name": "passage",
         "normalize": False}),
    (1, {"inputs": [[101, 7592, 102]], "dimensions": 384}),
    (1, {"inputs": [[101, 7592, 102]], "prompt_name": "query"}),
    (0, {"input": "a", "dimensions": 385}),
    (1, {"inputs": "a", "dimensions": 0.5}),
    (0, {"input": "a", "dimensions": "64", "prompt_name": ["query"]}),
    (64, {"inputs": "a", "prompt_name": "query"}),  # 64 % 3: TEI
    (1, {"inputs": "a", "prompt_name": "QUERY"}),
    (2, {"query": "a text editor", "prompt_name": "query", "k": 2}),
    (2, {"query": "a text editor", "dimensions": 64}),
    # TEI's /tokenize and /decode (issue 22, item 4).
    (128, {"inputs": "Héllo wörld [SEP] 東京 🚀!"}),
    (128, {"inputs": ["a", "b c", "don't ."], "add_special_tokens": False, "prompt_name": "query"}),
    (132, {"inputs": "word " * 12, "truncate": False}),  # never truncated
    (128, {"inputs": ""}),
    (128, {"inputs": [[101, 102]]}),
    (192, {"inputs": "a", "prompt_name": "query"}),
    (160, {"ids": [101, 7592, 2088, 102]}),
    (160, {"ids": [[101, 7592, 102], [7592, 1010, 2088, 1012], [100, 0]],
           "skip_special_tokens": False}),
    (160, {"ids": [7592] * 40}),  # any length
    (160, {"ids": [[1], []]}),
    (160, {"ids": [30522]}),
    (160, {"ids": [[1], 2], "skip_special_tokens": None}),
]
for i, (sel, body) in enumerate(reqs):
    put("request", f"body{i}", bytes([sel]) + json.dumps(body).encode())
put("request", "trailing_data", bytes([0]) + b'{"input": "x"} {"input": "y"}')
put("request", "escaped_nul", bytes([1]) + b'{"inputs": ["ok", "a\\u0000b", "\\ud83d\\ude00"]}')
put("request", "bad_utf8", bytes([2]) + b'{"query": "\xc3\x28"}')
put("request", "prompt_name_nul", bytes([1]) + b'{"inputs": "a", "prompt_name": "query\\u0000x"}')
put("request", "tokenize_nul", bytes([128]) + b'{"inputs": ["a\\u0000b", "\\u00e9\\u0301 \\ud83d\\ude00"]}')
