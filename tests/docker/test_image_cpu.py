"""The CPU container image, built and smoke-tested (issue 27, item 3).

Runs scripts/build-images (CPU image only): the Debian bookworm base (the
local image store's, else Docker Hub's, else debootstrap's, cached as a
tarball under EMBD_HOME), docker/Dockerfile.cpu built unchanged with buildah
(--layers: a second run reuses the apt steps, and the compile too when src/
is unchanged), and the script's smoke test inside a container of the image:
non-root user, HEALTHCHECK, every library resolved, no compiler or -dev
package, `embd doctor`, `embd serve` answering /health, /v1/embeddings (the
vector byte for byte the one this build's `embd embed` gives) and /metrics,
SIGTERM exiting 0. Each of the script's "ok"/"FAIL" lines is a check here,
and every expected one must be there. Then the image's configuration, read
with `buildah inspect`: user, entrypoint, command, port, environment,
healthcheck. Prints the wall time of each phase and the image size.

Environment: EMBD_BIN (the host embd the vectors are compared with),
EMBD_TEST_MODELS (skips without all-MiniLM-L6-v2), EMBD_HOME. Skips unless
run as root with buildah and podman installed (scripts/setup-deps installs
them) and debootstrap or a bookworm base image at hand. Release build only
(tests/docker/CMakeLists.txt): minutes the first time on a fresh machine.
"""
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from common import BIN, SRC, Checker, model_dir, skip  # noqa: E402

IMAGE = "embd:cpu"
# One line per check scripts/build-images prints for the CPU image.
EXPECTED = [
    "runs as a non-root user",
    "keeps its HEALTHCHECK",
    "ldd resolves every library",
    "holds no compiler, binutils or -dev package",
    "has no cc, gcc, c++, cpp, ld or as on PATH",
    "embd doctor exits 0",
    "embd serve links scripts/build-mhd's libmicrohttpd",
    "embd serve starts",
    "GET /health answers 200",
    "POST /v1/embeddings gives the host embd's vector",
    "GET /metrics counts the request",
    "embd serve exits 0 on SIGTERM",
]

if os.geteuid() != 0:
    skip("not root (buildah's image store in /var/lib/containers needs root)")
for tool in ("buildah", "podman"):
    if not shutil.which(tool):
        skip(f"{tool} is not installed (scripts/setup-deps installs it)")
if not shutil.which("debootstrap") and subprocess.run(
        ["buildah", "inspect", "--type", "image", "docker.io/library/debian:bookworm-slim"],
        capture_output=True).returncode != 0:
    skip("no debootstrap and no bookworm base image (scripts/setup-deps installs debootstrap)")
model = model_dir("all-MiniLM-L6-v2")
if not model:
    skip("EMBD_TEST_MODELS has no all-MiniLM-L6-v2")
if not os.access(BIN, os.X_OK):
    skip(f"EMBD_BIN ({BIN}) is not an executable")

c = Checker("docker_image_cpu")
script = os.path.join(SRC, "scripts", "build-images")
t0 = time.monotonic()
p = subprocess.run([script, "--host-embd", os.path.abspath(BIN), "--models", os.path.dirname(model)],
                   capture_output=True, text=True)
wall = time.monotonic() - t0
sys.stdout.write(p.stdout)
sys.stdout.write(p.stderr)
c.check(p.returncode == 0, f"scripts/build-images exited {p.returncode}")
lines = p.stdout.splitlines()
for line in lines:
    if line.startswith("FAIL "):
        c.check(False, line[5:])
for want in EXPECTED:
    c.check(any(l.startswith("ok   ") and want in l for l in lines),
            f"scripts/build-images reported no passed check '{want}'")

out = subprocess.run(["buildah", "inspect", "--type", "image", IMAGE], capture_output=True, text=True)
c.check(out.returncode == 0, f"buildah inspect {IMAGE}: {out.stderr.strip()}")
if out.returncode == 0:
    cfg = (json.loads(out.stdout).get("Docker") or {}).get("config") or {}
    c.check(cfg.get("User") == "embd", f"User is {cfg.get('User')!r}, not 'embd'")
    c.check(cfg.get("Entrypoint") == ["embd"], f"Entrypoint is {cfg.get('Entrypoint')!r}")
    cmd = cfg.get("Cmd") or []
    c.check(cmd[:1] == ["serve"] and "/models/all-MiniLM-L6-v2" in cmd and "0.0.0.0" in cmd
            and "8080" in cmd, f"Cmd is {cmd!r}")
    c.check("8080/tcp" in (cfg.get("ExposedPorts") or {}), f"ExposedPorts is {cfg.get('ExposedPorts')!r}")
    env = cfg.get("Env") or []
    c.check("EMBD_DEVICE=cpu" in env, f"Env has no EMBD_DEVICE=cpu: {env!r}")
    hc = (cfg.get("Healthcheck") or {}).get("Test") or []
    c.check(hc[:1] == ["CMD"] and any("/health" in a for a in hc), f"Healthcheck is {hc!r}")
print(f"docker_image_cpu: scripts/build-images took {wall:.0f} s")
c.done()
