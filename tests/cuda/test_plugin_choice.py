"""The loader chooses the CUDA plugin by the driver's CUDA version and says
which and why (`embd doctor`, the log line, /info, /metrics), on a machine
without a GPU: stub plugins with the real ABI (tests/cuda/stub_plugin.c) in
folders laid out as an install is, a stand-in libcuda.so.1 whose
cuDriverGetVersion reports $EMBD_FAKE_CUDA_DRIVER_VERSION, and a stand-in
NVML that numbers GPUs in PCI bus order (tests/cuda/fake_nvml.c).

- driver CUDA 13.x: libembd-cuda13.so; 12.x and 11.x: libembd-cuda11.so
  (13 needs a newer driver, and the reason says so); 10.2: none, with the
  driver range named; unknown version: the newest that loads.
- a libembd-cuda13.so whose library is missing: libembd-cuda11.so, with the
  13's load error in the reason.
- EMBD_CUDA_PLUGIN still overrides; EMBD_CUDA_DRIVER_VERSION stands in for
  the driver's; a malformed one is ignored with a warning.
- NVML readings belong to the device by PCI bus id, not by index.
- --gpu-memory-limit: malformed values are refused before anything runs; a
  limit below what the model needs sends device auto to the CPU with
  cuda_gpu_memory's reason and makes --device cuda fail saying so; a limit
  that fits reaches the plugin.
"""
import json
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
from server_fixture import Server  # noqa: E402
from common import Checker, model_dir, run, skip  # noqa: E402

DRIVER = os.environ.get("EMBD_TEST_FAKE_DRIVER")
STUBS = os.environ.get("EMBD_TEST_STUBS")
if not DRIVER or not STUBS or not os.path.isdir(os.path.join(STUBS, "both")):
    skip("run by CTest (EMBD_TEST_FAKE_DRIVER, EMBD_TEST_STUBS)")


def env(driver=None, folder="both", **kw):
    e = {"LD_LIBRARY_PATH": DRIVER, "EMBD_CUDA_PLUGIN_DIR": os.path.join(STUBS, folder)}
    if driver is not None:
        e["EMBD_FAKE_CUDA_DRIVER_VERSION"] = str(driver)
    e.update({k: str(v) for k, v in kw.items()})
    return e


def doctor(c, what, e):
    p = run(["doctor"], env=e)
    out = p.stdout.decode(errors="replace")
    c.check(p.returncode == 0, f"{what}: doctor exits 0 ({p.stderr.decode(errors='replace')})")
    line = next((l for l in out.splitlines() if l.startswith("cuda plugin")), "")
    chosen = next((l for l in out.splitlines() if l.startswith("cuda plugin chosen:")), "")
    return out, line, chosen


def main():
    c = Checker("cuda_plugin_choice")
    for drv, want, words in [
        (13000, "libembd-cuda13.so", ["supports CUDA 13.0"]),
        (13020, "libembd-cuda13.so", ["supports CUDA 13.2"]),
        (12040, "libembd-cuda11.so", ["supports CUDA 12.4", "libembd-cuda13.so needs 13.0"]),
        (11020, "libembd-cuda11.so", ["supports CUDA 11.2", "libembd-cuda13.so needs 13.0"]),
    ]:
        out, line, chosen = doctor(c, f"driver {drv}", env(drv))
        c.check(line.startswith(f"cuda plugin: {want} (CUDA runtime "), f"driver {drv}: {want}: {line!r}")
        c.check(all(w in chosen for w in words), f"driver {drv}: the reason: {chosen!r}")
        c.check(f"CUDA {drv // 1000}.{drv % 1000 // 10}" in out, f"driver {drv}: driver version shown")
    rt = {"libembd-cuda13.so": "13.0", "libembd-cuda11.so": "11.8"}
    out, line, _ = doctor(c, "runtime", env(12040))
    c.check(f"(CUDA runtime {rt['libembd-cuda11.so']})" in line, f"the 11.8 runtime shown: {line!r}")

    # too old a driver: no plugin, and the range is named
    out, line, _ = doctor(c, "driver 10.2", env(10020))
    c.check(line.startswith("cuda plugin: none loaded") and "10.2" in line and "11.0" in line
            and "R450" in line, f"driver 10.2: none, range named: {line!r}")
    c.check("device auto -> cpu (auto_cpu_no_plugin)" in out, f"driver 10.2: auto on the CPU: {out!r}")

    # the driver does not tell: newest that loads
    out, line, chosen = doctor(c, "unknown driver", env(None))
    c.check(line.startswith("cuda plugin: libembd-cuda13.so"), f"unknown driver: newest: {line!r}")
    c.check("does not tell its CUDA version" in chosen, f"unknown driver: said: {chosen!r}")

    # the newest fails to load (its library is missing): the next one runs
    out, line, chosen = doctor(c, "broken 13", env(13000, "broken13"))
    c.check(line.startswith("cuda plugin: libembd-cuda11.so"), f"broken 13: falls back to 11: {line!r}")
    c.check("libembd-stub-cublasLt.so.13" in chosen and "libembd-cuda13.so" in chosen,
            f"broken 13: the load error is in the reason: {chosen!r}")

    # none there at all
    out, line, _ = doctor(c, "none", env(13000, "no-such-folder"))
    c.check(line.startswith("cuda plugin: none loaded") and "libembd-cuda13.so" in line
            and "libembd-cuda11.so" in line, f"no plugin: both names in the reason: {line!r}")

    # overrides
    e = env(13000, EMBD_CUDA_PLUGIN=os.path.join(STUBS, "both", "libembd-cuda11.so"))
    out, line, chosen = doctor(c, "EMBD_CUDA_PLUGIN", e)
    c.check(line.startswith("cuda plugin: libembd-cuda11.so") and "EMBD_CUDA_PLUGIN" in chosen,
            f"EMBD_CUDA_PLUGIN overrides: {line!r} {chosen!r}")
    out, line, chosen = doctor(c, "EMBD_CUDA_DRIVER_VERSION", env(13000, EMBD_CUDA_DRIVER_VERSION="12.2"))
    c.check(line.startswith("cuda plugin: libembd-cuda11.so") and "EMBD_CUDA_DRIVER_VERSION" in chosen
            and "12.2" in chosen, f"EMBD_CUDA_DRIVER_VERSION=12.2 stands in: {line!r} {chosen!r}")
    p = run(["doctor"], env=env(13000, EMBD_CUDA_DRIVER_VERSION="twelve"))
    c.check(p.returncode == 0 and b"EMBD_CUDA_DRIVER_VERSION" in p.stderr and b"ignored" in p.stderr
            and b"cuda plugin: libembd-cuda13.so" in p.stdout,
            f"a malformed EMBD_CUDA_DRIVER_VERSION is ignored with a warning: {p.stderr!r}")

    # NVML by PCI bus id: CUDA's device 0 is bus 82, NVML's index 0 is bus 01
    out, _, _ = doctor(c, "nvml", env(13000, EMBD_STUB_DEVICES="0000:82:00.0,0000:01:00.0"))
    d0 = next((l for l in out.splitlines() if l.strip().startswith("cuda:0:")), "")
    d1 = next((l for l in out.splitlines() if l.strip().startswith("cuda:1:")), "")
    c.check("PCI 0000:82:00.0" in d0 and "utilisation 82%" in d0 and "41 C" in d0,
            f"cuda:0 reads NVML's device on bus 82 (its index 1): {d0!r}")
    c.check("PCI 0000:01:00.0" in d1 and "utilisation 1%" in d1 and "40 C" in d1,
            f"cuda:1 reads NVML's device on bus 01 (its index 0): {d1!r}")

    model = model_dir("all-MiniLM-L6-v2")
    if model is None:  # the checks above stand; the rest needs a model
        print("all-MiniLM-L6-v2 not under EMBD_TEST_MODELS: --gpu-memory-limit and server checks not run")
        c.done()
        return
    m = ["-m", model, "-q"]
    text = "the cat sat on the mat\n"
    dev = "0000:82:00.0"
    for bad in ["12X", "-1G", "1.5", "0.0", "G", "1e30"]:
        p = run(["embed", *m, "--gpu-memory-limit", bad], stdin=text, env=env(13000))
        c.check(p.returncode != 0 and b"GPU memory limit" in p.stderr and bad.encode() in p.stderr,
                f"--gpu-memory-limit {bad} refused: {p.returncode} {p.stderr!r}")
    p = run(["embed", *m], stdin=text, env=env(13000, EMBD_GPU_MEMORY_LIMIT="lots"))
    c.check(p.returncode != 0 and b"GPU memory limit" in p.stderr and b'"lots"' in p.stderr,
            f"a malformed EMBD_GPU_MEMORY_LIMIT is refused: {p.stderr!r}")
    # a stub device with 16 GiB: 10M is below the model; 0.5 and 2G fit and reach the plugin
    for dv in ["cuda", "auto"]:
        p = run(["embed", *m, "--device", dv, "--gpu-memory-limit", "10M"], stdin=text,
                env=env(13000, EMBD_STUB_DEVICES=dev, EMBD_LOG_LEVEL="info"))
        err = p.stderr.decode(errors="replace")
        if dv == "cuda":
            c.check(p.returncode == 1 and "GPU memory limit (10 MiB)" in err,
                    f"--device cuda with a limit below the model fails saying so: {err!r}")
        else:
            c.check(p.returncode == 0 and "GPU memory limit (10 MiB)" in err and "running on the CPU" in err,
                    f"device auto with a limit below the model runs on the CPU: {err!r}")
    for lim, shown in [("0.5", "fraction 0.5"), ("2G", "limit 2147483648 bytes")]:
        p = run(["embed", *m, "--device", "cuda", "--gpu-memory-limit", lim], stdin=text,
                env=env(13000, EMBD_STUB_DEVICES=dev))
        c.check(p.returncode == 1 and shown in p.stderr.decode(errors="replace"),
                f"--gpu-memory-limit {lim} reaches the plugin: {p.stderr!r}")

    # the server: the log line, /info and /metrics name the plugin
    s = Server(model, "--device", "auto", env=env(12040, EMBD_LOG_LEVEL="info"))
    try:
        info = json.load(urllib.request.urlopen(s.url + "/info", timeout=30))
        cp = info.get("cuda_plugin") or {}
        c.check(cp.get("plugin") == "libembd-cuda11.so" and cp.get("driver_version") == 12040
                and cp.get("runtime_version") == 11080 and "libembd-cuda13.so needs 13.0" in cp.get("why", ""),
                f"/info names the plugin and why: {cp}")
        c.check(info.get("device") == "cpu" and (info.get("fallback") or {}).get("reason") == "auto_cpu_no_device",
                f"/info: the stub finds no device, auto runs on the CPU: {info.get('fallback')}")
        devs = info.get("devices") or [{}]
        c.check(len(devs) == 1 and devs[0].get("device") == "cpu" and devs[0].get("backend") == "cpu"
                and devs[0].get("fallback") == "auto_cpu_no_device" and devs[0].get("dead") is False,
                f"/info lists the one device context: {devs}")
        met = urllib.request.urlopen(s.url + "/metrics", timeout=30).read().decode()
        c.check('embd_cuda_plugin_info{plugin="libembd-cuda11.so",runtime="11.8",driver="12.4"} 1' in met,
                "/metrics has embd_cuda_plugin_info")
    finally:
        s.stop()
    logs = [l for l in s.lines if "cuda plugin libembd-cuda11.so" in l]
    c.check(len(logs) == 1 and "supports CUDA 12.4" in logs[0], f"one log line names the plugin: {s.lines}")

    # without the stand-in driver (this machine as it is) the server says cuda_plugin null or why
    s = Server(model, "--device", "auto")
    try:
        info = json.load(urllib.request.urlopen(s.url + "/info", timeout=30))
        c.check("cuda_plugin" in info, f"/info always has cuda_plugin: {info.get('cuda_plugin')}")
    finally:
        s.stop()
    c.done()


main()
