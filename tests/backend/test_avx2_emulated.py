"""The avx2 kernel set on a CPU that has AVX2 and FMA but no AVX-512 (the
AVX2-only machines of issue 20), emulated: `embd` under qemu-x86_64 -cpu
Haswell chooses its kernel set from cpuid as on such a machine. It must pick
avx2 by itself, say why, refuse --dtype bf16 and int8 naming the missing
instructions (Haswell has neither AVX512_BF16/VNNI nor AVX-VNNI; QEMU 7.2's
emulator has no AVX-VNNI, so the AVX-VNNI int8 kernels cannot run under it),
and embed the real all-MiniLM-L6-v2 giving, bit for bit, what this machine's
`EMBD_CPU_ISA=avx2` gives (one thread and two): nothing beyond AVX2 + FMA
runs on that path. An emulator is not the hardware: timings on a real
AVX2-only CPU are still owed. Skipped without qemu-x86_64, the model, or
under the sanitizers (their runtimes do not run under qemu-user)."""
import os
import shutil
import subprocess
import tempfile

from emulated import MODEL, QEMU, TEXTS, qemu_env, write_texts  # noqa: E402  (its skips first)
from common import BIN, Checker, run, skip  # noqa: E402

if run(["doctor"], env={"EMBD_CPU_ISA": "avx2"}).returncode != 0:
    skip("this machine cannot run the avx2 kernel set to compare with")


def emulated(args, env):
    return subprocess.run([QEMU, "-cpu", "Haswell", BIN, *args], env=env, capture_output=True,
                          timeout=600)


def main():
    c = Checker("cpu_avx2_emulated")
    tmp = tempfile.mkdtemp(prefix="embd-avx2-")
    src = write_texts(tmp)
    env = qemu_env()
    d = emulated(["doctor"], env).stdout.decode(errors="replace")
    lines = {l.split(":")[0]: l for l in d.splitlines() if l.startswith("cpu ")}
    kern = lines.get("cpu kernels", "")
    low = lines.get("cpu low precision", "")
    c.check(kern.startswith("cpu kernels: avx2 (") and "AVX-512" in kern,
            f"the emulated AVX2 CPU runs the avx2 kernel set and says why: {kern!r}")
    c.check("bf16 no (the CPU lacks AVX512_BF16)" in low and
            "int8 no (the CPU lacks AVX512_VNNI and AVX-VNNI)" in low,
            f"doctor says bf16 and int8 cannot run, and why: {low!r}")
    args = ["embed", "-m", MODEL, "-q", "--cache", "off", "-i", src]
    for dtype, lack in (("bf16", "AVX512_BF16"), ("int8", "AVX-VNNI")):
        p = emulated([*args, "--dtype", dtype], env)
        err = p.stderr.decode(errors="replace")
        c.check(p.returncode == 1 and f"dtype {dtype}" in err and lack in err and not p.stdout,
                f"--dtype {dtype} refused on the emulated CPU naming {lack}: {p.returncode} "
                f"{err[-300:]!r}")
    out = os.path.join(tmp, "qemu.jsonl")
    p = emulated([*args, "-o", out], env)
    c.check(p.returncode == 0, f"embd under qemu -cpu Haswell exits 0: {p.returncode} "
            f"{p.stderr.decode(errors='replace')[-400:]}")
    got = open(out, "rb").read() if os.path.exists(out) else b""
    here = {"EMBD_CPU_ISA": "avx2", "OPENBLAS_CORETYPE": "Haswell"}
    for threads in ("1", "2"):
        ref = run([*args, "--threads", threads], env=here)
        c.check(ref.returncode == 0 and ref.stdout == got and len(got.splitlines()) == len(TEXTS),
                f"EMBD_CPU_ISA=avx2, {threads} thread(s), here: the same bytes as the emulated "
                f"AVX2 CPU")
    shutil.rmtree(tmp, ignore_errors=True)
    c.done()


main()
