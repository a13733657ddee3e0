#!/usr/bin/env python3
"""Export a local sentence-transformers BERT model directory to ONNX for fastembed.

The Hugging Face hub is not reachable here, so fastembed cannot fetch its own
ONNX files; this writes an equivalent one from the same weights embd and
sentence-transformers load. OUT gets model.onnx (the transformer only: inputs
input_ids, attention_mask, token_type_ids, int64 (B, T); output
last_hidden_state float32 (B, T, C); B and T dynamic) plus the tokenizer files
fastembed reads. tokenizer_config.json's model_max_length is set to the
sentence-transformers max_seq_length (256 for all-MiniLM-L6-v2) so that all
three engines truncate alike. Pooling and normalization are not in the graph:
fastembed applies them (bench/fastembed_model.py registers the model).

Checks the ONNX output against torch on a few texts (max |diff| < 1e-4) and
exits non-zero otherwise. Prints OUT.

usage: bench/export_onnx.py MODEL_DIR OUT_DIR
"""
import json
import os
import shutil
import sys

import numpy as np
import torch


class LastHidden(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        # The additive (B, 1, 1, T) mask is built here rather than by
        # transformers' mask helpers, which trace into fixed shapes.
        hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        keep = attention_mask[:, None, None, :].to(hidden.dtype)
        bias = (1.0 - keep) * torch.finfo(hidden.dtype).min
        return self.bert.encoder(hidden, attention_mask=bias).last_hidden_state


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    src, out = sys.argv[1], sys.argv[2]
    from transformers import AutoModel
    from tokenizers import Tokenizer
    import onnxruntime as ort

    with open(os.path.join(src, "sentence_bert_config.json")) as f:
        max_len = int(json.load(f)["max_seq_length"])
    os.makedirs(out, exist_ok=True)
    for name in ("tokenizer.json", "special_tokens_map.json", "config.json", "vocab.txt"):
        if os.path.exists(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), os.path.join(out, name))
    tc = {}
    if os.path.exists(os.path.join(src, "tokenizer_config.json")):
        with open(os.path.join(src, "tokenizer_config.json")) as f:
            tc = json.load(f)
    tc["model_max_length"] = max_len
    tc.pop("max_length", None)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f)

    model = LastHidden(AutoModel.from_pretrained(src, attn_implementation="eager").eval())
    tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding()
    texts = ["hello world", "a somewhat longer sentence about Debian packages and their "
             "descriptions, to have more than one length in the batch"]
    def batch(batch_texts):
        enc = tok.encode_batch(batch_texts)
        return {k: np.array([getattr(e, a) for e in enc], dtype=np.int64)
                for k, a in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                             ("token_type_ids", "type_ids"))}

    def torch_out(feed):
        with torch.no_grad():
            return model(*(torch.from_numpy(feed[k]) for k in feed)).numpy()

    # Traced on one batch, checked on another batch size and length, so that
    # a shape baked into the graph fails the check.
    trace = batch(texts)
    check = batch(texts + ["x " * 300, "third"])
    ref = torch_out(check)
    path = os.path.join(out, "model.onnx")
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "token_type_ids": {0: "batch", 1: "seq"}, "last_hidden_state": {0: "batch", 1: "seq"}}
    with torch.no_grad():
        torch.onnx.export(model, tuple(torch.from_numpy(trace[k]) for k in trace), path,
                          input_names=list(trace), output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, check)[0]
    mask = check["attention_mask"][:, :, None].astype(bool)
    diff = float(np.abs(np.where(mask, got - ref, 0)).max())
    if not diff < 1e-4:
        sys.exit(f"embd: ONNX export of {src} differs from torch by {diff}")
    print(out)


if __name__ == "__main__":
    main()
