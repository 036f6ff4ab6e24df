"""The Triton split-KV kernel and the triton hybrid backend, checked on CPU through
Triton's interpreter (in a subprocess: the interpreter is chosen when kernels are made)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = Path(__file__).parent / "interpreted" / "split_kernel_checks.py"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


def test_split_kernel_under_the_interpreter():
    env = os.environ | {"TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)]
    cmd += ["--rootdir", str(CHECKS.parents[1]), "-c", str(CHECKS.parents[2] / "pyproject.toml")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
