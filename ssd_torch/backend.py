"""Which implementation runs for ``backend="auto"``: the one place that reads the benchmark verdict.

The numba kernels beat the torch-vectorised code for batched match+encode and for the NMS keep mask of the
post-processing, on the CPU and on a CUDA GPU. The figures (medians, ratios against the torch and torchvision
baselines of the same run, machine and settings) are in ``benchmarks/results/``: ``torch_<device>.json``
(``python -m benchmarks.bench_torch``) and ``kernels_<device>.json`` (``python -m benchmarks.bench_kernels``). So
``"auto"`` is ``"numba"`` wherever the kernels can run on the tensors' device and dtype (float32), else
``"torch"``; re-run the benchmarks before changing that.
"""
from __future__ import annotations

import functools

import torch

BACKENDS: tuple[str, ...] = ("torch", "numba", "auto")


@functools.lru_cache(maxsize=None)
def numba_usable(device_type: str) -> bool:
    """True when the numba kernels import and can run on ``device_type`` ("cpu" or "cuda"): the one check of
    numba's availability (``resolve_backend``, ``ssd_torch.parity``, the benchmarks)."""
    try:
        from kernels import interop
    except Exception:  # noqa: BLE001 - numba missing or broken: the torch path still works
        return False
    if device_type == "cpu":
        return True
    return device_type == "cuda" and interop.cuda_available()


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32,
                    what: str = "backend") -> str:
    """Map ``backend`` ("torch" | "numba" | "auto") to the implementation that runs for tensors on ``device``.

    ``what`` names the caller in the error message (e.g. "matching backend").
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown {what} {backend!r}; expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    if dtype == torch.float32 and numba_usable(torch.device(device).type):
        return "numba"
    return "torch"
