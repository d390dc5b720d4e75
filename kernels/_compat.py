"""Compatibility shims applied before ``numba.cuda`` is imported.

numba-cuda 0.30.x registers ``overload(np.row_stack)`` at import time, but NumPy 2.5 removed ``np.row_stack``
(deprecated alias of ``np.vstack``), so ``import numba.cuda`` fails with ``AttributeError`` on such a NumPy —
seen on the lent H200 machine (numba-cuda 0.30.4, NumPy 2.5.2). We give NumPy a *distinct* stand-in function
(not ``np.vstack`` itself, so numba-cuda's overload does not register a second template on ``vstack``); nothing
in this project calls it.
"""
from __future__ import annotations

import numpy as np


def _row_stack(tup):  # pragma: no cover - only a name for numba-cuda's overload table
    """Stand-in for the removed ``np.row_stack``; same result as ``np.vstack``."""
    return np.vstack(tup)


def apply() -> bool:
    """Install the shims that this NumPy needs; return True if anything was patched."""
    if hasattr(np, "row_stack"):
        return False
    np.row_stack = _row_stack
    return True


PATCHED = apply()
