"""`import embd` loads NVIDIA's cuBLAS wheels (embd[cuda13], embd[cuda11])
for the CUDA plugins, without a GPU: a stand-in libcuda.so.1 makes a driver
"present"; a folder laid out as those wheels install (site/nvidia/cu13/lib,
site/nvidia/cublas/lib) holds stand-in libraries.

- with the driver and a wheel on sys.path, `import embd` loads its
  libcublasLt/libcublas (both majors) and embd.cuda_libraries() lists them;
  none without the driver, none with EMBD_NO_CUDA_WHEELS=1, none when a
  wheel lacks one of its two libraries;
- a preloaded library is what a plugin's missing dependency resolves to: the
  stub libembd-cuda13.so that needs libembd-stub-cublasLt.so.13 (found
  nowhere on the loader's path) fails to load, and loads once that library
  is preloaded from a wheel folder.
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from common import Checker, skip  # noqa: E402

DRIVER = os.environ.get("EMBD_TEST_FAKE_DRIVER")
STUBS = os.environ.get("EMBD_TEST_STUBS")
DEP = os.environ.get("EMBD_TEST_STUB_DEP")
if not (DRIVER and STUBS and DEP and os.path.isfile(DEP)):
    skip("run by CTest (EMBD_TEST_FAKE_DRIVER, EMBD_TEST_STUBS, EMBD_TEST_STUB_DEP)")


def py(code, site, driver=True, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("EMBD_CUDA")}
    e["PYTHONPATH"] = os.pathsep.join([os.environ.get("PYTHONPATH", ""), site])
    e["EMBD_FAKE_CUDA_DRIVER_VERSION"] = "13000"
    e.pop("EMBD_NO_CUDA_WHEELS", None)
    if driver:
        e["LD_LIBRARY_PATH"] = DRIVER
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)


def main():
    c = Checker("py_cuda_libs")
    tmp = tempfile.mkdtemp(prefix="embd-py-cuda-libs-")
    site = os.path.join(tmp, "site")
    for rel, names in [("nvidia/cu13/lib", ["libcublasLt.so.13", "libcublas.so.13"]),
                       ("nvidia/cublas/lib", ["libcublasLt.so.11", "libcublas.so.11"]),
                       ("nvidia/cu13/lib", ["libembd-stub-cublasLt.so.13"])]:
        os.makedirs(os.path.join(site, rel), exist_ok=True)
        for n in names:
            shutil.copy(DEP, os.path.join(site, rel, n))
    show = "import embd; print('\\n'.join(embd.cuda_libraries()))"

    p = py(show, site)
    got = sorted(os.path.basename(x) for x in p.stdout.split())
    c.check(p.returncode == 0 and got == sorted(["libcublasLt.so.13", "libcublas.so.13",
                                                 "libcublasLt.so.11", "libcublas.so.11"]),
            f"driver + wheels: both majors loaded: {got} {p.stderr[-300:]}")
    p = py(show, site, driver=False)
    c.check(p.returncode == 0 and p.stdout.strip() == "", f"no driver: nothing loaded: {p.stdout!r}")
    p = py(show, site, EMBD_NO_CUDA_WHEELS="1")
    c.check(p.returncode == 0 and p.stdout.strip() == "", f"EMBD_NO_CUDA_WHEELS=1: nothing: {p.stdout!r}")
    os.remove(os.path.join(site, "nvidia/cublas/lib/libcublas.so.11"))
    p = py(show, site)
    got = sorted(os.path.basename(x) for x in p.stdout.split())
    c.check(got == sorted(["libcublasLt.so.13", "libcublas.so.13"]),
            f"a wheel missing one library is skipped whole: {got}")

    # the broken stub plugin needs libembd-stub-cublasLt.so.13
    # (the stand-in wheel libraries are copies of that library, its soname
    # inside: import embd's own preload stays off here)
    env = {"EMBD_CUDA_PLUGIN_DIR": os.path.join(STUBS, "broken13"), "EMBD_NO_CUDA_WHEELS": "1"}
    report = "import embd; print(embd.device_report())"
    p = py(report, site, **env)
    c.check("cuda plugin: libembd-cuda11.so" in p.stdout and "libembd-stub-cublasLt.so.13" in p.stdout,
            f"without the library the 13 stub fails and 11 runs: {p.stdout!r} {p.stderr[-300:]}")
    code = ("import embd, embd._cuda_libs as c\n"
            "print(c.preload(sonames={13: ('libembd-stub-cublasLt.so.13',)}))\n"
            "print(embd.device_report())")
    p = py(code, site, **env)
    c.check("libembd-stub-cublasLt.so.13" in p.stdout.splitlines()[0] if p.stdout else False,
            f"preload finds the library in the wheel folder: {p.stdout!r} {p.stderr[-300:]}")
    c.check("cuda plugin: libembd-cuda13.so" in p.stdout,
            f"once preloaded, the 13 stub's dependency resolves and it loads: {p.stdout!r}")
    shutil.rmtree(tmp, ignore_errors=True)
    c.done()


main()
