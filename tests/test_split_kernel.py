"""The Triton kernels (split-KV attention, fused layer steps) and the paths that use them,
checked on CPU through Triton's interpreter (in a subprocess: the interpreter is chosen
when kernels are made)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "interpreted"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


@pytest.mark.parametrize(
    "checks",
    [
        "split_kernel_checks.py",
        "fused_kernel_checks.py",
        "beam_kernel_checks.py",
        "accept_kernel_checks.py",
    ],
)
def test_kernels_under_the_interpreter(checks):
    env = os.environ | {"TRITON_INTERPRET": "1"}
    path = HERE / checks
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
    cmd += ["--rootdir", str(HERE.parent), "-c", str(HERE.parents[1] / "pyproject.toml")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
