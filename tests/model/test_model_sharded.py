"""Sharded checkpoints: a model folder whose weights are split over several
files named by model.safetensors.index.json (as transformers writes large
models, and `embd pull` fetches them) loads, and gives the same bytes as the
single file; a broken index or shard fails with a clear error naming it.
Built from the real all-MiniLM-L6-v2 split into three shards (one of them
fp16: shards may differ in dtype). Skips without the model or NumPy's
safetensors reader."""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from common import Checker, model_dir, run, skip  # noqa: E402

try:
    import numpy as np
    from safetensors.numpy import load_file, save_file
except ImportError:
    skip("numpy and safetensors are not installed (scripts/setup-deps' venv has them)")

SRC = model_dir("all-MiniLM-L6-v2")
if not SRC:
    skip("all-MiniLM-L6-v2 not under EMBD_TEST_MODELS")
TEXT = "a sharded checkpoint loads as one\nthe cat sat on the mat\n"


def make(dst, split, fp16_last=False, index=None):
    """A copy of the model in dst whose weights are split by split(name) ->
    shard number; index replaces the written index when given."""
    os.makedirs(dst)
    for f in os.listdir(SRC):
        if f != "model.safetensors":
            s = os.path.join(SRC, f)
            (shutil.copytree if os.path.isdir(s) else shutil.copy)(s, os.path.join(dst, f))
    t = load_file(os.path.join(SRC, "model.safetensors"))
    shards = {}
    for name, v in t.items():
        shards.setdefault(split(name), {})[name] = v
    n = len(shards)
    wm = {}
    for k in sorted(shards):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, n)
        part = shards[k]
        if fp16_last and k == max(shards):
            part = {a: b.astype(np.float16) for a, b in part.items()}
        save_file(part, os.path.join(dst, fname))
        wm.update({a: fname for a in part})
    idx = index(wm) if index else {"metadata": {"total_size": 0}, "weight_map": wm}
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        f.write(idx if isinstance(idx, str) else json.dumps(idx))
    return dst


def by_layer(name):
    return 0 if "embeddings" in name else (1 if ".layer.0." in name or ".layer.1." in name else 2)


def embed(model):
    return run(["embed", "-m", model, "-q", "--cache", "off"], stdin=TEXT)


def main():
    c = Checker("model_sharded")
    tmp = tempfile.mkdtemp(prefix="embd-sharded-")
    ref = embed(SRC)
    c.check(ref.returncode == 0, "the single-file model embeds")
    p = embed(make(os.path.join(tmp, "three"), by_layer))
    c.check(p.returncode == 0 and p.stdout == ref.stdout,
            f"three shards: the same bytes as the single file: {p.stderr[-300:]!r}")
    p = embed(make(os.path.join(tmp, "half"), by_layer, fp16_last=True))
    c.check(p.returncode == 0 and p.stdout != ref.stdout and p.stdout.count(b"\n") == 2,
            f"a shard in fp16 loads (converted): {p.stderr[-300:]!r}")

    def bad(what, dirname, split, index, words):
        p = embed(make(os.path.join(tmp, dirname), split, index=index))
        err = p.stderr.decode(errors="replace")
        c.check(p.returncode != 0 and all(w in err for w in words) and "Sanitizer" not in err,
                f"{what}: fails naming it ({words}): {err.strip()[-300:]!r}")

    first = next(iter(load_file(os.path.join(SRC, "model.safetensors"))))
    bad("a shard that is missing", "missing", by_layer,
        lambda wm: {"weight_map": dict(wm, **{first: "model-00009-of-00009.safetensors"})},
        ["model-00009-of-00009.safetensors"])
    bad("a file name with a path", "path", by_layer,
        lambda wm: {"weight_map": dict(wm, **{first: "../model.safetensors"})},
        ["model.safetensors.index.json", "../model.safetensors"])
    bad("a tensor in a file that lacks it", "wrong", by_layer,
        lambda wm: {"weight_map": {k: ("model-00003-of-00003.safetensors"
                                       if k == first else v) for k, v in wm.items()}},
        ["model.safetensors.index.json", "does not hold it"])
    bad("no weight_map", "nomap", by_layer, lambda wm: {"metadata": {}},
        ["model.safetensors.index.json", "weight_map"])
    bad("not JSON", "notjson", by_layer, lambda wm: "{\"weight_map\": ", ["model.safetensors.index.json"])
    # a tensor in two shards (both files hold it; the index names one)
    d = make(os.path.join(tmp, "twice"), by_layer)
    t = load_file(os.path.join(d, "model-00001-of-00003.safetensors"))
    extra = load_file(os.path.join(d, "model-00002-of-00003.safetensors"))
    extra.update({k: v for k, v in list(t.items())[:1]})
    save_file(extra, os.path.join(d, "model-00002-of-00003.safetensors"))
    p = embed(d)
    c.check(p.returncode != 0 and b"two of its files" in p.stderr,
            f"a tensor in two shards fails: {p.stderr[-300:]!r}")
    # a single file wins over an index next to it
    d = make(os.path.join(tmp, "both"), by_layer, index=lambda wm: "not json")
    shutil.copy(os.path.join(SRC, "model.safetensors"), os.path.join(d, "model.safetensors"))
    p = embed(d)
    c.check(p.returncode == 0 and p.stdout == ref.stdout, "model.safetensors wins over an index")
    shutil.rmtree(tmp, ignore_errors=True)
    c.done()


main()
