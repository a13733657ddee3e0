"""The wheel: `pip wheel python/`, `auditwheel repair`, installed into a clean
virtual environment and imported (and used) from there, with every shared
library loaded from the wheel (scripts/python-wheel, CUDA plugin off to keep
it short; about 30-90 s on 2 cores)."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pyembd_test import SRC, clean_env  # noqa: E402


def test_wheel_repaired_installed_imported(tmp_path):
    try:
        import auditwheel  # noqa: F401
        import scikit_build_core  # noqa: F401
    except ImportError:
        pytest.skip("scikit-build-core / auditwheel missing (scripts/setup-deps)")
    env = clean_env({"EMBD_VENV_PYTHON": sys.executable})
    env.pop("PYTHONPATH", None)
    p = subprocess.run([os.path.join(SRC, "scripts", "python-wheel"), "--cuda", "off", "--out",
                        str(tmp_path / "wheel")], capture_output=True, text=True, env=env)
    print(p.stderr)
    assert p.returncode == 0, p.stderr[-3000:]
    wheel = p.stdout.strip().splitlines()[-1]
    assert "manylinux" in os.path.basename(wheel) and os.path.isfile(wheel)
    assert "all libraries from the wheel" in p.stderr + p.stdout


if __name__ == "__main__":
    from pyembd_test import run_pytest
    sys.exit(run_pytest(__file__))
