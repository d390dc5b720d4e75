"""The NumPy >= 2.5 shim lets numba-cuda compile kernels.

numba-cuda 0.30 touches ``np.row_stack`` when it first compiles a kernel; NumPy 2.5 removed it. The test removes
it in a subprocess (so this process keeps a pristine NumPy) and compiles a kernel to PTX through ``kernels``.
"""
import os
import subprocess
import sys
import textwrap

import pytest

_CODE = textwrap.dedent(
    """
    import numpy as np
    if hasattr(np, "row_stack"):
        del np.row_stack          # what NumPy 2.5 looks like
    {import_kernels}
    from numba import cuda

    def k(a):
        a[0] = 1.0

    ptx, _ = cuda.compile_ptx(k, "void(float32[:])", cc=(9, 0))
    assert ".entry" in ptx or ".visible" in ptx
    assert np.row_stack is not np.vstack
    print("ok")
    """
)


def _run(import_kernels: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = _CODE.format(import_kernels=import_kernels)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_kernel_compiles_when_numpy_lacks_row_stack():
    out = _run("import kernels  # applies the shim")
    if "NvvmSupportError" in out.stderr or "libNVVM" in out.stderr:
        pytest.skip("no CUDA NVVM on this machine: " + out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("ok")


def test_without_the_shim_numba_cuda_fails_on_such_a_numpy():
    """Guards the shim's reason to exist: drop it once numba-cuda stops touching np.row_stack."""
    out = _run("pass")
    if out.returncode == 0:
        pytest.skip("this numba-cuda no longer needs the row_stack shim")
    assert "row_stack" in out.stderr
