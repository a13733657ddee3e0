"""The embd binary links the embd_util archive for the allocators and the
text helpers (src/util/alloc.c, text.c) only. A member of the archive that
holds libembd's state (util.c: the last error; log.c: the log settings)
pulled into the binary by a call from src/cli or src/server would shadow
libembd's own: embd_last_error would read the binary's empty copy, and
embd_log_configure would set a level libembd never reads. Such calls must
go through embd.h instead.

Environment: EMBD_BIN (the embd binary). Skips without nm."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from common import BIN, Checker, skip  # noqa: E402

STATE = ["embd_error", "embd_error_prefix", "embd_clear_error", "embd_last_error",
         "embd_status_str", "embd_assert_fail", "embd_log", "embd_log_enabled",
         "embd_log_configure"]


def main():
    nm = shutil.which("nm")
    if not nm:
        skip("no nm")
    c = Checker("unit_cli_link")
    p = subprocess.run([nm, "--defined-only", BIN], capture_output=True, text=True)
    c.check(p.returncode == 0, f"nm {BIN}: {p.stderr}")
    defined = {line.split()[-1] for line in p.stdout.splitlines() if line.split()}
    c.check("embd_malloc" in defined, "the binary has its own allocators (fault injection)")
    for name in STATE:
        c.check(name not in defined, f"the binary defines {name}: call it through libembd")
    p = subprocess.run([nm, "-D", "--undefined-only", BIN], capture_output=True, text=True)
    undefined = {line.split()[-1].split("@")[0] for line in p.stdout.splitlines() if line.split()}
    c.check("embd_last_error" in undefined and "embd_log_configure" in undefined,
            "embd_last_error and embd_log_configure come from libembd")
    c.done()


if __name__ == "__main__":
    main()
