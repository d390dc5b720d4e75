"""The CUDA kernels under numba's CUDA simulator, in a subprocess (``cudasim_cases.py``).

``NUMBA_ENABLE_CUDASIM`` is read when numba is imported, and flipping it inside this process would swap
``numba.cuda`` for the simulator under every other test; a child process keeps it contained. The child's
output is shown when it fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.slow
def test_cuda_kernels_under_the_simulator() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "cudasim_cases.py")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"simulator tests failed (exit {proc.returncode}):\n{output}"
    assert " passed" in output and "skipped" not in output, f"simulator tests did not run:\n{output}"
