"""libembd-cuda11.so as scripts/build-cuda11 leaves it next to libembd.so
(skipped, 77, where it has not been built: the CUDA 11.8 toolkit is a large
download that the suite does not make).

- it exports embd_cuda_plugin_get and nothing else;
- it needs cuBLAS 11 (libcublasLt.so.11, libcublas.so.11), and neither a
  shared CUDA runtime (the runtime is linked in) nor libcuda.so.1 (the
  runtime opens the driver with dlopen), nor any CUDA 12/13 library;
- its entry gives its table for this checkout's EMBD_CUDA_ABI (plugin.h) and
  NULL for another, so a plugin left from an older checkout fails here.
  The entry runs no CUDA: no GPU is needed. Where cuBLAS 11 is not
  installed, the toolkit's link stubs stand in for it (from
  $EMBD_HOME/toolchains/cuda-11.8/lib64/stubs, under their sonames in a
  temporary folder).

Usage: test_cuda11_plugin.py PLUGIN PLUGIN_H
"""
import ctypes
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from common import Checker, skip  # noqa: E402

SONAMES = ("libcublasLt.so.11", "libcublas.so.11")


def probe(plugin, abi):
    """In a child process: prints the table's abi for `abi`, and whether another ABI gets NULL."""
    lib = ctypes.CDLL(plugin, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    entry = lib.embd_cuda_plugin_get
    entry.restype = ctypes.c_void_p
    entry.argtypes = [ctypes.c_int, ctypes.c_void_p]
    # struct embd_cuda_host: function pointers the entry checks for NULL and
    # keeps; never called here. 16 slots cover it as it grows.
    dummy = ctypes.CFUNCTYPE(None)(lambda: None)
    host = (ctypes.c_void_p * 16)(*([ctypes.cast(dummy, ctypes.c_void_p).value] * 16))
    other = entry(abi + 1, ctypes.addressof(host))
    table = entry(abi, ctypes.addressof(host))
    print(f"other={other or 0} abi={ctypes.c_int.from_address(table).value if table else -1}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        probe(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("Usage: ")[1])
    plugin, header = sys.argv[1], sys.argv[2]
    if not os.path.isfile(plugin):
        skip(f"no {plugin} (scripts/build-cuda11 builds it)")
    c = Checker("cuda11_plugin")

    syms = subprocess.run(["readelf", "--dyn-syms", "-W", plugin], capture_output=True,
                          text=True, check=True).stdout
    exported = sorted({f[7] for f in (l.split() for l in syms.splitlines())
                       if len(f) >= 8 and f[6] != "UND" and f[4] == "GLOBAL"})
    c.check(exported == ["embd_cuda_plugin_get"], f"exports only the entry: {exported}")

    dyn = subprocess.run(["readelf", "-d", plugin], capture_output=True, text=True,
                         check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    for s in SONAMES:
        c.check(s in needed, f"needs {s}: {needed}")
    c.check(not [n for n in needed if n.startswith(("libcudart", "libcuda.so"))],
            f"no shared CUDA runtime or driver library: {needed}")
    c.check(not [n for n in needed if re.search(r"\.so\.1[23]$", n)],
            f"no CUDA 12/13 library: {needed}")

    with open(header) as f:
        m = re.search(r"#define EMBD_CUDA_ABI (\d+)", f.read())
    c.check(m is not None, f"EMBD_CUDA_ABI in {header}")
    abi = int(m.group(1)) if m else 0
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        stubs = os.path.join(os.environ.get("EMBD_HOME", os.path.expanduser("~/.cache/embd")),
                             "toolchains", "cuda-11.8", "lib64", "stubs")
        if os.path.isdir(stubs):
            for s in SONAMES:
                os.symlink(os.path.join(stubs, s.rsplit(".so", 1)[0] + ".so"),
                           os.path.join(tmp, s))
            # after the system's own: a real cuBLAS 11, where installed, comes first
            env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH"), tmp) if p)
        p = subprocess.run([sys.executable, __file__, "--probe", plugin, str(abi)],
                           capture_output=True, text=True, env=env)
        if p.returncode != 0 and "cannot open shared object file" in p.stderr:
            skip(f"cuBLAS 11 is neither installed nor in {stubs}: {p.stderr.strip()[-200:]}")
        c.check(p.returncode == 0, f"the probe ran: {p.stderr.strip()[-300:]}")
        c.check(f"other=0 abi={abi}" in p.stdout,
                f"the entry gives its table for ABI {abi} and NULL for {abi + 1}: "
                f"{p.stdout.strip()}")
    c.done()


if __name__ == "__main__":
    main()
