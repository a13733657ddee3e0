"""The baseline kernel set on a CPU that has no AVX at all: `embd` run under
qemu-x86_64 -cpu Nehalem (SSE4.2, no AVX, AVX2 or FMA; the kernel set is
chosen from cpuid as on such a machine, and OpenBLAS picks its Nehalem
kernels) embeds texts with the real all-MiniLM-L6-v2 and gives, bit for bit,
what this machine's `EMBD_CPU_ISA=baseline` gives (with OpenBLAS's Nehalem
kernels, for attention's products, as there): no instruction beyond
the baseline runs on that path, and a text's vector is the same alone and in
a batch, in one thread and in two. Skipped without qemu-x86_64, the model,
or under the sanitizers (their runtimes do not run under qemu-user)."""
import os
import shutil
import subprocess
import tempfile

from emulated import MODEL, QEMU, TEXTS, qemu_env, write_texts  # noqa: E402  (its skips first)
from common import BIN, Checker, run  # noqa: E402


def main():
    c = Checker("cpu_baseline_emulated")
    tmp = tempfile.mkdtemp(prefix="embd-baseline-")
    src = write_texts(tmp)
    env = qemu_env()
    out = os.path.join(tmp, "qemu.jsonl")
    args = ["embed", "-m", MODEL, "-q", "--cache", "off", "-i", src]
    p = subprocess.run([QEMU, "-cpu", "Nehalem", BIN, *args, "-o", out], env=env,
                       capture_output=True, timeout=600)
    c.check(p.returncode == 0, f"embd under qemu -cpu Nehalem exits 0: {p.returncode} "
            f"{p.stderr.decode(errors='replace')[-400:]}")
    d = subprocess.run([QEMU, "-cpu", "Nehalem", BIN, "doctor"], env=env, capture_output=True,
                       timeout=600)
    line = next((l for l in d.stdout.decode(errors="replace").splitlines()
                 if l.startswith("cpu kernels:")), "")
    c.check(line.startswith("cpu kernels: baseline"),
            f"the emulated CPU runs the baseline kernel set: {line!r}")
    got = open(out, "rb").read() if os.path.exists(out) else b""
    # attention's products on this path are OpenBLAS's (per sequence): here
    # with the Nehalem kernels OpenBLAS picks on the emulated CPU
    here = {"EMBD_CPU_ISA": "baseline", "OPENBLAS_CORETYPE": "Nehalem"}
    for threads in ("1", "2"):
        ref = run([*args, "--threads", threads], env=here)
        c.check(ref.returncode == 0 and ref.stdout == got,
                f"EMBD_CPU_ISA=baseline, {threads} thread(s), here: the same bytes as the "
                f"emulated CPU")
    # a text alone equals it in the batch
    one = run(["embed", "-m", MODEL, "-q", "--cache", "off"], stdin=TEXTS[4] + "\n", env=here)
    lines = got.splitlines()
    c.check(len(lines) == len(TEXTS) and one.stdout.strip().replace(b'"index":0', b'"index":4')
            == lines[4], "a text alone gives the bytes it gets in the batch")
    shutil.rmtree(tmp, ignore_errors=True)
    c.done()


main()
