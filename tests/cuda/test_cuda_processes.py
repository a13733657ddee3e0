"""GPU checks across processes (skipped without a usable GPU):
- two `embd embed --device cuda` processes share one GPU at once, each under
  --gpu-memory-limit 0.25: both finish and both give the CPU's vectors
  (cosine >= 0.999, fp16);
- CUDA_VISIBLE_DEVICES: empty hides the GPU (--device cuda fails saying so,
  auto runs on the CPU with auto_cpu_no_device); each visible GPU is cuda:0
  with the PCI bus id nvidia-smi gives that GPU, so NVML readings (by bus id)
  belong to it; a GPU named by its UUID works too."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from common import BIN, Checker, model_dir, read_jsonl, run, skip  # noqa: E402

REAL = {k: v for k, v in os.environ.items() if k == "EMBD_CUDA_PLUGIN"}


def cosine(a, b):
    ab = sum(x * y for x, y in zip(a, b))
    return ab / ((sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5)


def main():
    p = run(["doctor"], env=REAL)
    if b"device auto -> cuda" not in p.stdout:
        skip("no usable GPU: " + p.stdout.decode(errors="replace").strip().splitlines()[-2:][0])
    model = model_dir("all-MiniLM-L6-v2")
    if model is None:
        skip("all-MiniLM-L6-v2 not under EMBD_TEST_MODELS")
    c = Checker("cuda_processes")
    tmp = tempfile.mkdtemp(prefix="embd-cuda-proc-")
    docs = os.path.join(tmp, "docs.jsonl")
    words = "package library kernel network embedding python server database driver GPU".split()
    with open(docs, "w") as f:
        for i in range(3000):
            n = 1 + (i * 37) % 150
            f.write(json.dumps({"id": i, "text": " ".join(words[(i * 7 + k * 3) % len(words)]
                                                          for k in range(n))}) + "\n")
    m = ["-m", model, "-q", "-i", docs]
    ref = run(["embed", *m, "--device", "cpu"])
    c.check(ref.returncode == 0, "the CPU reference runs")
    want = [r["embedding"] for r in read_jsonl(ref.stdout)]

    e = dict(os.environ, **REAL)
    procs = [subprocess.Popen([BIN, "embed", *m, "--device", "cuda", "--gpu-memory-limit", "0.25",
                               "-o", os.path.join(tmp, f"out{k}.jsonl")], env=e,
                              stderr=subprocess.PIPE) for k in range(2)]
    for k, pr in enumerate(procs):
        _, err = pr.communicate(timeout=600)
        c.check(pr.returncode == 0, f"process {k} on the shared GPU exits 0: {err[-300:]!r}")
        with open(os.path.join(tmp, f"out{k}.jsonl"), "rb") as f:
            got = [r["embedding"] for r in read_jsonl(f.read())]
        worst = min((cosine(a, b) for a, b in zip(got, want)), default=-1)
        c.check(len(got) == len(want) and worst >= 0.999,
                f"process {k}: {len(got)} vectors, worst cosine {worst:.6f} to the CPU")

    text = "the cat sat on the mat\n"
    p = run(["embed", "-m", model, "-q", "--device", "cuda"], stdin=text,
            env=dict(REAL, CUDA_VISIBLE_DEVICES=""))
    c.check(p.returncode == 1 and b"not usable" in p.stderr,
            f"CUDA_VISIBLE_DEVICES='': --device cuda fails saying why: {p.stderr!r}")
    p = run(["embed", "-m", model, "-q"], stdin=text,
            env=dict(REAL, CUDA_VISIBLE_DEVICES="", EMBD_LOG_LEVEL="info"))
    c.check(p.returncode == 0 and b"running on the CPU" in p.stderr,
            f"CUDA_VISIBLE_DEVICES='': auto runs on the CPU: {p.stderr!r}")
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=index,pci.bus_id,uuid", "--format=csv,noheader"],
                           capture_output=True, text=True)
        gpus = [[x.strip() for x in l.split(",")] for l in q.stdout.strip().splitlines()]
        for idx, bus, uuid in gpus:
            for vis in (idx, uuid):
                p = run(["doctor"], env=dict(REAL, CUDA_VISIBLE_DEVICES=vis))
                line = next((l for l in p.stdout.decode().splitlines()
                             if l.strip().startswith("cuda:0:")), "")
                c.check(bus.lower()[-12:] in line.lower() and "cuda:1:" not in p.stdout.decode(),
                        f"CUDA_VISIBLE_DEVICES={vis}: cuda:0 is the GPU on bus {bus}: {line!r}")
    else:
        print("nvidia-smi not found: the bus-id checks were not run")
    shutil.rmtree(tmp, ignore_errors=True)
    c.done()


main()
