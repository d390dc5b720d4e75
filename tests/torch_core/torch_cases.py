"""Shared inputs for the ssd_torch core tests: small prior layouts and hypothesis strategies for padded gt batches.
Where float32 matching is compared with the float64 reference, the priors that float32 rounding may legitimately
decide either way are ``reference.matching.float32_ambiguous_priors`` (the one definition).

Tolerances used across the suite (float32 vs float64 on values of order 1): coordinates/IoU 1e-6 absolute,
encoded offsets 1e-4 relative (they divide by small prior sizes and take logs), losses 1e-4 relative.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from reference.priors import PriorSpec

#: A small layout (2 maps, 4x4 and 2x2 cells, 4 and 6 boxes per cell -> 88 priors) so the reference stays fast.
SMALL_SPEC = PriorSpec(feature_maps=(4, 2), scales=(0.3, 0.6, 0.9), aspect_ratios=((2,), (2, 3)))


@st.composite
def gt_boxes_st(draw: st.DrawFn, max_gt: int = 6) -> np.ndarray:
    """``[G, 4]`` float32-representable xyxy boxes in [0, 1] with width and height >= 0.02 (G may be 0)."""
    n = draw(st.integers(0, max_gt))
    coord = st.floats(0.0, 1.0, allow_nan=False, width=32)
    out = []
    for _ in range(n):
        x = sorted(draw(st.lists(coord, min_size=2, max_size=2)))
        y = sorted(draw(st.lists(coord, min_size=2, max_size=2)))
        if x[1] - x[0] < 0.02:
            x = [min(x[0], 0.97), min(x[0], 0.97) + 0.03]
        if y[1] - y[0] < 0.02:
            y = [min(y[0], 0.97), min(y[0], 0.97) + 0.03]
        out.append([x[0], y[0], x[1], y[1]])
    return np.asarray(out, dtype=np.float32).astype(np.float64).reshape(-1, 4)


@st.composite
def padded_batch_st(draw: st.DrawFn, max_images: int = 4, max_gt: int = 6, num_classes: int = 5) -> tuple:
    """A padded batch: ``(list of [G_i, 4] float64 boxes, list of [G_i] labels, G_max extra padding)``."""
    b = draw(st.integers(1, max_images))
    boxes = [draw(gt_boxes_st(max_gt)) for _ in range(b)]
    labels = [np.asarray(draw(st.lists(st.integers(1, num_classes - 1), min_size=len(x), max_size=len(x))),
                         dtype=np.int64) for x in boxes]
    extra = draw(st.integers(0, 2))
    return boxes, labels, extra


def pad_batch(boxes: list, labels: list, extra: int = 0, dtype: torch.dtype = torch.float32,
              pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lists of per-image ``[G_i, 4]`` / ``[G_i]`` -> padded ``boxes[B, G, 4]``, ``labels[B, G]``, ``counts[B]``
    with ``G = max G_i + extra``; padding rows hold ``pad_value`` (garbage that must be ignored)."""
    counts = [len(x) for x in boxes]
    g = max(counts, default=0) + extra
    out_b = torch.full((len(boxes), g, 4), pad_value, dtype=torch.float64)
    out_l = torch.zeros((len(boxes), g), dtype=torch.int64)
    for i, (bx, lb) in enumerate(zip(boxes, labels)):
        out_b[i, : len(bx)] = torch.as_tensor(bx, dtype=torch.float64).reshape(-1, 4)
        out_l[i, : len(lb)] = torch.as_tensor(lb, dtype=torch.int64)
    return out_b.to(dtype), out_l, torch.tensor(counts, dtype=torch.int64)


def record_calls(monkeypatch: pytest.MonkeyPatch, module: ModuleType, *names: str) -> list[str]:
    """Wrap the functions ``names`` of ``module`` so that each call appends its name to the returned list (and
    still runs): which implementation a dispatcher really reached."""
    calls: list[str] = []
    for name in names:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    return calls
