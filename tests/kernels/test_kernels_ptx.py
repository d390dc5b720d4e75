"""``numba.cuda.compile_ptx`` of every CUDA kernel for sm_80 (A100) and sm_90 (H100/H200).

The simulator accepts Python that the CUDA target rejects (untyped constructs, float64 promotion, unsupported
calls); compiling to PTX catches that without a GPU (no driver needed). It needs libNVVM + libdevice from a
CUDA toolkit: numba-cuda (``numba.cuda.cuda_paths.get_cuda_paths``) looks at ``CUDA_HOME``/``CUDA_PATH``, the
``cuda-toolkit``/``nvidia-cuda-nvcc`` pip wheels and a system search; on the CI machine it finds
``/usr/local/cuda-13.0/lib/libnvvm.so.4`` by system search and ``/usr/local/cuda/nvvm/libdevice``. Without
them the tests skip and say what is missing and where numba-cuda looked.
"""
from __future__ import annotations

import pytest
from numba import config, cuda, float32, int64, uint8

from kernels import matching, nms

F32_2D, F32_3D, F32_4D = float32[:, ::1], float32[:, :, ::1], float32[:, :, :, ::1]
I64_1D, I64_2D = int64[::1], int64[:, ::1]

# The argument types that kernels.interop passes for contiguous torch tensors.
KERNELS = {
    "best_prior_kernel": (matching.best_prior_kernel, (F32_2D, F32_3D, I64_1D, I64_2D)),
    "assign_kernel": (matching.assign_kernel,
                      (F32_2D, F32_3D, I64_2D, I64_1D, I64_2D, float32, float32, float32, I64_2D, F32_3D)),
    "nms_kernel": (nms.nms_kernel, (F32_4D, I64_2D, float32, uint8[:, :, ::1])),
}


def _nvvm_missing() -> str | None:
    """Why PTX cannot be produced here (None when libNVVM and libdevice load)."""
    if config.ENABLE_CUDASIM:
        return "NUMBA_ENABLE_CUDASIM=1 replaces numba.cuda with the simulator, which has no compile_ptx backend"
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
        nvvm.LibDevice()
    except Exception as err:  # noqa: BLE001 - NvvmSupportError / OSError, depending on what exactly is missing
        return (f"libNVVM/libdevice not found ({type(err).__name__}: {err}); numba-cuda looked in: "
                f"{_searched()}; install the CUDA toolkit's NVVM (e.g. pip install 'cuda-toolkit[nvvm]') or "
                f"set CUDA_HOME to a toolkit that has nvvm/")
    return None


def _searched() -> str:
    """numba-cuda's view of where the toolkit pieces are (its own search order and results)."""
    try:
        from numba.cuda.cuda_paths import get_cuda_paths

        return ", ".join(f"{key}={value}" for key, value in get_cuda_paths().items())
    except Exception as err:  # noqa: BLE001 - diagnostics only, never fatal
        return f"(cuda_paths unavailable: {err})"


@pytest.mark.slow
@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm80", "sm90"])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_compiles_to_ptx(name: str, cc: tuple[int, int]) -> None:
    reason = _nvvm_missing()
    if reason:
        pytest.skip(reason)
    kernel, signature = KERNELS[name]
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    assert ".f64" not in ptx, "float64 arithmetic crept into a float32 kernel (a Python float literal?)"
