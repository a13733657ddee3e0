"""What the emulated-CPU tests share (test_baseline_emulated.py,
test_avx2_emulated.py): their skips (sanitizer builds, no qemu-x86_64, no
all-MiniLM-L6-v2), the texts they embed, and the environment embd runs in
under qemu, where it chooses its kernel set from the emulated cpuid."""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from common import model_dir, skip  # noqa: E402

if os.environ.get("EMBD_TEST_SANITIZED"):
    skip("sanitizer build: ASan's runtime does not run under qemu-user")
QEMU = shutil.which("qemu-x86_64")
if not QEMU:
    skip("no qemu-x86_64 (Debian's qemu-user; scripts/setup-deps installs it)")
MODEL = model_dir("all-MiniLM-L6-v2")
if not MODEL:
    skip("all-MiniLM-L6-v2 not under EMBD_TEST_MODELS")

TEXTS = ["the cat sat on the mat", "Debian package manager for servers",
         "what is a kernel module", "a", "naïve café — ünïcödé façade " * 20]


def write_texts(tmp):
    """TEXTS, one a line, in tmp/texts.txt; returns the path."""
    src = os.path.join(tmp, "texts.txt")
    with open(src, "w") as f:
        f.write("\n".join(TEXTS) + "\n")
    return src


def qemu_env():
    """This process's environment without what would choose for embd: no
    OPENBLAS_* (OpenBLAS picks its kernels from the emulated CPU too), no
    EMBD_CPU_ISA, no EMBD_DTYPE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    for k in ("EMBD_CPU_ISA", "EMBD_DTYPE"):
        env.pop(k, None)
    return env
