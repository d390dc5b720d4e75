"""numba kernels for the two hot spots, IoU matching (+ encoding) and batched NMS: CUDA kernels and CPU twins.

Importing any ``kernels`` module first applies :mod:`kernels._compat` (NumPy ≥ 2.5 vs numba-cuda 0.30).
"""
from kernels import _compat  # noqa: F401  (must run before numba.cuda is imported)
