"""Hypothesis strategies shared by the reference tests (xyxy boxes normalised to [0, 1])."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

_unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, allow_infinity=False)
_size = st.floats(min_value=1e-3, max_value=1.0, allow_nan=False, allow_infinity=False)


@st.composite
def xyxy_box(draw: st.DrawFn, min_size: float = 1e-3) -> list[float]:
    """One xyxy box with positive width/height >= ``min_size``, corner in [0, 1]^2."""
    x0, y0 = draw(_unit), draw(_unit)
    w = draw(st.floats(min_value=min_size, max_value=1.0, allow_nan=False))
    h = draw(st.floats(min_value=min_size, max_value=1.0, allow_nan=False))
    return [x0, y0, x0 + w, y0 + h]


def xyxy_boxes(min_n: int = 1, max_n: int = 6, min_size: float = 1e-3) -> st.SearchStrategy[np.ndarray]:
    """``[N, 4]`` float64 xyxy boxes with positive sizes."""
    return st.lists(xyxy_box(min_size=min_size), min_size=min_n, max_size=max_n).map(
        lambda rows: np.asarray(rows, dtype=np.float64).reshape(-1, 4))
