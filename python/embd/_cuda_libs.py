"""NVIDIA's cuBLAS wheels for embd's CUDA plugins.

The plugins link the CUDA runtime statically and need only the driver and
cuBLAS / cuBLASLt at run time: libembd-cuda13.so needs libcublasLt.so.13 and
libcublas.so.13, libembd-cuda11.so the .so.11 ones. Where the machine has no
CUDA toolkit, `pip install "embd[cuda13]"` (NVIDIA's `nvidia-cublas` wheel,
CUDA 13, drivers R580+) or `pip install "embd[cuda11]"` (`nvidia-cublas-cu11`,
any driver from R450.80, so every CUDA 12.x driver too) brings them. Those
wheels put the libraries under site-packages/nvidia/.../lib, where the
dynamic loader does not look; `import embd` loads them first (by path), so
that when libembd later opens a plugin its cuBLAS is found by name. Only
when an NVIDIA driver is present (libcuda.so.1 loads) and such a wheel is
installed; EMBD_NO_CUDA_WHEELS=1 turns it off. What was loaded is in
embd.cuda_libraries().
"""
import ctypes
import glob
import os
import sys

# Loaded in this order: cuBLAS needs cuBLASLt.
SONAMES = {
    13: ("libcublasLt.so.13", "libcublas.so.13"),
    11: ("libcublasLt.so.11", "libcublas.so.11"),
}

loaded = []


def _find(base, name):
    """`name` under base/nvidia/*/lib or base/nvidia/*/*/lib (the layouts of
    NVIDIA's wheels: nvidia/cublas/lib for CUDA 11 and 12, nvidia/cu13/lib
    for CUDA 13)."""
    nv = os.path.join(base or os.curdir, "nvidia")
    if not os.path.isdir(nv):
        return None
    for pattern in (os.path.join(nv, "*", "lib", name), os.path.join(nv, "*", "*", "lib", name)):
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def _driver_present():
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def preload(paths=None, sonames=None):
    """Loads each wheel-installed library of `sonames` (default SONAMES) found
    under the folders of `paths` (default sys.path), each major version all
    or nothing; returns the paths loaded now. A library that fails to load is
    skipped with a warning on stderr: the plugin's loader then says what is
    missing."""
    now = []
    for major, names in sorted((sonames or SONAMES).items(), reverse=True):
        found = []
        for name in names:
            hit = next((h for h in (_find(b, name) for b in (paths or sys.path)) if h), None)
            if not hit:
                break
            found.append(hit)
        if len(found) != len(names):
            continue
        for path in found:
            if path in loaded:
                continue
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                print(f"embd: warning: cannot load {path} (CUDA {major} cuBLAS): {e}",
                      file=sys.stderr)
                break
            loaded.append(path)
            now.append(path)
    return now


def preload_if_wanted():
    if os.environ.get("EMBD_NO_CUDA_WHEELS", "") not in ("", "0") or not _driver_present():
        return []
    return preload()
