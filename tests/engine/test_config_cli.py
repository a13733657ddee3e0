"""Startup validation of the configuration, and `embd doctor -m`:

- a bad value names where it came from (a flag, EMBD_* or --config FILE);
- a mistyped EMBD_* variable gets a warning naming the setting meant;
- an unknown config key, and conflicting options (--device cpu with
  --dtype fp16, --device cuda with --dtype int8; --cache off with --cache-mem, --cache off/mem with
  --cache-map-size, both on the command line) exit 2 with one line;
- `embd doctor -m DIR` starts a context with the requested device and dtype
  and says what would run; device auto on the CPU names the fallback reason
  the metrics count; a device that cannot run the model exits 1;
- --dtype bf16 / int8 on the CPU run where it has AVX512_BF16 / AVX512_VNNI
  (int8 also on the avx2 kernel set with AVX-VNNI)
  (and AVX-512 is not switched off) and exit 1 naming the instructions
  where it has not.
"""
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from common import Checker, model_dir, run, skip  # noqa: E402


def one_error(p, code, *needles):
    """Exit status `code` and exactly one stderr line "embd: ..." holding every needle."""
    err = p.stderr.decode()
    lines = err.splitlines()
    return (p.returncode == code and len(lines) == 1 and lines[0].startswith("embd: ")
            and all(n in lines[0] for n in needles))


def cpu_has(flag):
    """Whether /proc/cpuinfo lists the flag (and the OS keeps the AVX-512
    state, which the kernel's flags already reflect)."""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^flags\s*:(.*)$", f.read(), re.M)
    except OSError:
        return False
    return bool(m) and flag in m.group(1).split() and "avx512f" in m.group(1).split()


def main():
    c = Checker("engine_config_cli")
    model = model_dir("all-MiniLM-L6-v2")
    if not model:
        skip("EMBD_TEST_MODELS/all-MiniLM-L6-v2 missing")
    m = ["-m", model]
    text = "one line\n"
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "cfg.json")

        def config(obj):
            with open(cfg, "w") as f:
                json.dump(obj, f)
            return ["--config", cfg]

        # Bad values name their source.
        p = run(["embed", *m, "--threads", "abc"], stdin=text)
        c.check(one_error(p, 2, "--threads must be an integer", '"abc"')
                and "(from" not in p.stderr.decode(), f"bad flag: {p.stderr!r}")
        p = run(["embed", *m], stdin=text, env={"EMBD_THREADS": "abc"})
        c.check(one_error(p, 2, "--threads must be", "(from EMBD_THREADS)"), f"bad env: {p.stderr!r}")
        p = run(["embed", *m, *config({"threads": -3})], stdin=text)
        c.check(one_error(p, 2, "--threads must be", '"-3"', f"(from --config {cfg})"),
                f"bad config value: {p.stderr!r}")
        p = run(["embed", *m], stdin=text, env={"EMBD_DEVICE": "tpu"})
        c.check(one_error(p, 2, "--device must be", "(from EMBD_DEVICE)"), f"bad device: {p.stderr!r}")
        p = run(["embed", *m, *config({"devcie": "cpu"})], stdin=text)
        c.check(one_error(p, 2, 'unknown option "devcie"'), f"unknown key: {p.stderr!r}")
        # a fraction as the documented JSON number (gpu_memory_limit 0.5); one
        # where an integer belongs is refused as its flag would be
        p = run(["embed", *m, "-q", *config({"gpu_memory_limit": 0.5, "device": "cpu"})],
                stdin=text)
        c.check(p.returncode == 0 and p.stdout.startswith(b'{"index":0'),
                f"gpu_memory_limit 0.5 in --config: {p.stderr!r}")
        p = run(["embed", *m], stdin=text, env={"EMBD_GPU_MEMORY_LIMIT": "xyz"})
        c.check(one_error(p, 2, "GPU memory limit", "(from EMBD_GPU_MEMORY_LIMIT)"),
                f"bad EMBD_GPU_MEMORY_LIMIT names its source: {p.stderr!r}")
        p = run(["embed", *m, *config({"threads": 1.5})], stdin=text)
        c.check(one_error(p, 2, "--threads must be an integer", '"1.5"'),
                f"threads 1.5 in --config: {p.stderr!r}")

        # A mistyped EMBD_* variable is named (it would otherwise be ignored
        # without a word); other commands' settings and embd's other
        # variables pass silently; --log-level error silences the warning.
        p = run(["embed", *m, "-q", "--cache", "off"], stdin=text,
                env={"EMBD_DEVCE": "cpu", "EMBD_PORT": "9", "EMBD_HOME": "/tmp"})
        c.check(one_error(p, 0, "warning: EMBD_DEVCE is not a setting of embd embed",
                          "did you mean EMBD_DEVICE?") and p.stdout.startswith(b'{"index":0'),
                f"typo'd variable: {p.returncode} {p.stderr!r}")
        p = run(["embed", *m, "-q", "--cache", "off", "--log-level", "error"], stdin=text,
                env={"EMBD_DEVCE": "cpu"})
        c.check(p.returncode == 0 and p.stderr == b"", f"--log-level error: {p.stderr!r}")

        # Conflicting options.
        p = run(["embed", *m, "--device", "cpu", "--dtype", "fp16"], stdin=text)
        c.check(one_error(p, 2, "--dtype fp16 conflicts with --device cpu"),
                f"cpu + fp16: {p.stderr!r}")
        p = run(["embed", *m, "--device", "cuda"], stdin=text, env={"EMBD_DTYPE": "int8"})
        c.check(one_error(p, 2, "--dtype int8 (from EMBD_DTYPE) conflicts with --device cuda"),
                f"cuda + int8 from env: {p.stderr!r}")
        # The CPU's reduced precisions: they run where the CPU has the
        # instructions, and are refused with the reason where it has not.
        # int8 runs on the avx512 set with AVX512_VNNI, or on the avx2 set
        # (forced, or an AVX2-only CPU) with AVX-VNNI; bf16 on avx512 only.
        avx512 = cpu_has("avx512f") and cpu_has("avx512bw") and cpu_has("avx512vl") \
            and cpu_has("avx512dq")
        for dtype, flag in (("bf16", "avx512_bf16"), ("int8", "avx512_vnni")):
            p = run(["embed", *m, "--device", "cpu", "-q"], stdin=text, env={"EMBD_DTYPE": dtype})
            can = cpu_has(flag) and avx512
            if dtype == "int8" and cpu_has("avx_vnni"):
                can = True
            if can:
                c.check(p.returncode == 0 and p.stdout.startswith(b'{"index":0'),
                        f"cpu + {dtype}: {p.stderr!r}")
            else:
                c.check(one_error(p, 1, f"dtype {dtype}", flag.upper()),
                        f"cpu + {dtype} without {flag}: {p.stderr!r}")
            p = run(["embed", *m, "--device", "cpu", "--dtype", dtype, "-q"], stdin=text,
                    env={"EMBD_CPU_ISA": "avx2"})
            if dtype == "int8" and cpu_has("avx_vnni"):
                c.check(p.returncode == 0 and p.stdout.startswith(b'{"index":0'),
                        f"cpu + int8 with EMBD_CPU_ISA=avx2 and AVX-VNNI: {p.stderr!r}")
            elif dtype == "int8":
                c.check(one_error(p, 1, "dtype int8", "AVX-VNNI"),
                        f"cpu + int8 with EMBD_CPU_ISA=avx2 without AVX-VNNI: {p.stderr!r}")
            elif can:
                c.check(one_error(p, 1, "bf16 runs on the avx512 kernel set", "EMBD_CPU_ISA"),
                        f"cpu + bf16 with EMBD_CPU_ISA=avx2: {p.stderr!r}")
            else:  # an AVX2 CPU: the missing instructions are the reason
                c.check(one_error(p, 1, "dtype bf16", "AVX512_BF16"),
                        f"cpu + bf16 with EMBD_CPU_ISA=avx2 without AVX512_BF16: {p.stderr!r}")
            # EMBD_CPU_AMX: 0 keeps the 512-bit kernels (the same answer where
            # they run); a value other than 0 or 1 is refused, not ignored
            if can and avx512 and cpu_has(flag):
                p = run(["embed", *m, "--device", "cpu", "--dtype", dtype, "-q"], stdin=text,
                        env={"EMBD_CPU_AMX": "0"})
                c.check(p.returncode == 0 and p.stdout.startswith(b'{"index":0'),
                        f"cpu + {dtype} with EMBD_CPU_AMX=0: {p.stderr!r}")
                p = run(["embed", *m, "--device", "cpu", "--dtype", dtype, "-q"], stdin=text,
                        env={"EMBD_CPU_AMX": "off"})
                c.check(one_error(p, 1, f"dtype {dtype}", "EMBD_CPU_AMX=off is not 0 or 1"),
                        f"cpu + {dtype} with EMBD_CPU_AMX=off: {p.stderr!r}")
        p = run(["doctor"], env={"EMBD_CPU_AMX": "0"})
        if cpu_has("amx_bf16") or cpu_has("amx_int8"):
            c.check(b"AMX off (EMBD_CPU_AMX=0)" in p.stdout, f"doctor, AMX off: {p.stdout!r}")
        p = run(["embed", *m, *config({"device": "cpu", "dtype": "fp16"})], stdin=text)
        c.check(one_error(p, 2, "conflicts with --device cpu (from --config"),
                f"conflict in the config file: {p.stderr!r}")
        p = run(["embed", *m, "--device", "cpu", "--dtype", "fp32", "-q"], stdin=text)
        c.check(p.returncode == 0 and p.stdout.startswith(b'{"index":0'), "cpu + fp32 runs")
        p = run(["embed", *m, "--cache", "off", "--cache-mem", "10"], stdin=text)
        c.check(one_error(p, 2, "conflicting options", "--cache-mem"), f"off + mem: {p.stderr!r}")
        p = run(["embed", *m, "--cache", "mem", "--cache-map-size", "100"], stdin=text)
        c.check(one_error(p, 2, "conflicting options", "--cache-map-size"),
                f"mem + map size: {p.stderr!r}")
        # From the environment such options are defaults: no conflict.
        p = run(["embed", *m, "--cache", "off", "-q"], stdin=text, env={"EMBD_CACHE_MEM": "10"})
        c.check(p.returncode == 0, f"env cache-mem with --cache off: {p.stderr!r}")
        p = run(["embed", *m, "--cache", os.path.join(d, "cache"), "--cache-map-size", "100",
                 "-q"], stdin=text)
        c.check(p.returncode == 0, f"disk cache + map size: {p.stderr!r}")

    # doctor -m: what would run, and why.
    p = run(["doctor", *m])
    out = p.stdout.decode()
    run_line = [l for l in out.splitlines() if l.startswith("run: device auto, dtype auto -> ")]
    c.check(p.returncode == 0 and len(run_line) == 1, f"doctor -m says what runs: {out!r}")
    auto_cpu = "device auto -> cpu" in out
    if run_line:
        if auto_cpu:
            c.check(run_line[0].startswith("run: device auto, dtype auto -> cpu (fallback: auto_cpu_"),
                    f"auto on the CPU names its reason: {run_line[0]!r}")
        else:
            c.check("-> cuda" in run_line[0], f"auto on the GPU: {run_line[0]!r}")
    p = run(["doctor", *m], env={"EMBD_CUDA_PLUGIN": "/nonexistent/libembd-cuda.so"})
    out = p.stdout.decode()
    c.check(p.returncode == 0 and ("-> cpu (fallback: auto_cpu_no_plugin)" in out
                                   or "-> cpu (fallback: auto_cpu_no_driver)" in out),
            f"doctor without the plugin: {out!r}")
    p = run(["doctor", *m, "--device", "cpu"])
    c.check(p.returncode == 0 and "run: device cpu, dtype auto -> cpu\n" in p.stdout.decode(),
            f"doctor --device cpu: {p.stdout!r}")
    p = run(["doctor", *m, "--device", "cuda:9"])
    c.check(one_error(p, 1, "doctor: device cuda:9 cannot run this model")
            and "cannot run this model" in p.stdout.decode(), f"doctor cuda:9: {p.stderr!r}")
    p = run(["doctor", *m, "--device", "cpu", "--dtype", "fp16"])
    c.check(one_error(p, 2, "conflicts with --device cpu"), f"doctor conflict: {p.stderr!r}")
    p = run(["doctor", *m, "--device", "cpu", "--dtype", "int8"])
    if cpu_has("avx512_vnni") or cpu_has("avx_vnni"):
        c.check(p.returncode == 0 and "run: device cpu, dtype int8 -> cpu" in p.stdout.decode(),
                f"doctor cpu int8: {p.stdout!r} {p.stderr!r}")
    else:
        c.check(p.returncode == 1 and "AVX512_VNNI" in p.stdout.decode() + p.stderr.decode(),
                f"doctor cpu int8 without VNNI: {p.stdout!r} {p.stderr!r}")
    p = run(["doctor", "--device", "cuda"])
    c.check(p.returncode == 0 and "give -m to check it" in p.stdout.decode(), "doctor without -m")
    c.done()


if __name__ == "__main__":
    main()
