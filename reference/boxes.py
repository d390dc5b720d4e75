"""Box formats and IoU (docs/CONTRACT.md "Conventions"): NumPy float64, the oracle for ``ssd_torch.boxes``.

Formats: ``xyxy`` = (x_min, y_min, x_max, y_max) and ``cxcywh`` = (centre x, centre y, width, height), both
normalised to [0, 1] and continuous (no +1 pixel widths; the devkit's +1 lives only in ``voc_eval``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["xyxy_to_cxcywh", "cxcywh_to_xyxy", "box_area", "box_iou"]


def _as_boxes(b: np.ndarray, name: str, batched: bool = True) -> np.ndarray:
    """Return ``b`` as float64 and check that its last axis holds 4 coordinates (2-D if not ``batched``)."""
    arr = np.asarray(b, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 4 or (not batched and arr.ndim != 2):
        want = "[..., 4]" if batched else "[N, 4]"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


def xyxy_to_cxcywh(b: np.ndarray) -> np.ndarray:
    """``xyxy[..., 4] -> cxcywh[..., 4]``: ``cx = (x0 + x1) / 2``, ``w = x1 - x0`` (same for y)."""
    b = _as_boxes(b, "boxes")
    x0, y0, x1, y1 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([(x0 + x1) / 2.0, (y0 + y1) / 2.0, x1 - x0, y1 - y0], axis=-1)


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """``cxcywh[..., 4] -> xyxy[..., 4]``: ``x0 = cx - w / 2``, ``x1 = cx + w / 2`` (same for y)."""
    b = _as_boxes(b, "boxes")
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], axis=-1)


def box_area(b: np.ndarray) -> np.ndarray:
    """Area of ``xyxy[N, 4]`` boxes -> ``[N]``: ``(x1 - x0) * (y1 - y0)`` (negative sizes are not clamped)."""
    b = _as_boxes(b, "boxes", batched=False)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard overlap of ``xyxy`` boxes ``a[N, 4]`` and ``b[M, 4]`` -> ``[N, M]`` (SSD paper, eq. of §2.2).

    ``iou = inter / (area_a + area_b - inter)`` with the intersection clamped at 0 per axis. A pair whose union
    is 0 (two zero-area boxes) gets IoU 0 rather than NaN.
    """
    a = _as_boxes(a, "a", batched=False)
    b = _as_boxes(b, "b", batched=False)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # [N, M, 2] top-left of the intersection
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # [N, M, 2] bottom-right
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out
