"""Shared inputs for the ssd_torch core tests: small prior layouts, hypothesis strategies for padded gt batches,
and the numeric-conditioning filters used when float32 results are compared with the float64 reference.

Tolerances used across the suite (float32 vs float64 on values of order 1): coordinates/IoU 1e-6 absolute,
encoded offsets 1e-4 relative (they divide by small prior sizes and take logs), losses 1e-4 relative.
"""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

import reference.boxes as rb
from reference.priors import PriorSpec

#: A small layout (2 maps, 4x4 and 2x2 cells, 4 and 6 boxes per cell -> 88 priors) so the reference stays fast.
SMALL_SPEC = PriorSpec(feature_maps=(4, 2), scales=(0.3, 0.6, 0.9), aspect_ratios=((2,), (2, 3)))

#: Decisions within this distance of a threshold / tie are left out of float32-vs-float64 comparisons.
MARGIN = 1e-5


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


def uncertain_priors(gt: np.ndarray, priors_cxcywh: np.ndarray, threshold: float,
                     margin: float = MARGIN) -> np.ndarray:
    """``[P]`` bool: priors whose matching outcome float32 rounding may legitimately change (one image).

    A prior is uncertain when its best IoU is within ``margin`` of the threshold, when two gts with different
    boxes are within ``margin`` of its best IoU (and it may be positive), or when it is within ``margin`` of
    the best IoU of a gt whose best prior is not unique up to ``margin`` (forcing may land on either). Ties
    between identical boxes are exact in every precision, so they are not uncertain. The effects of such a
    decision stay on these priors, so every other prior must match the reference exactly.
    """
    pri = rb.cxcywh_to_xyxy(priors_cxcywh)
    out = np.zeros(len(pri), dtype=bool)
    if len(gt) == 0:
        return out
    iou = rb.box_iou(gt, pri)  # [G, P]
    best = iou.max(axis=0)
    out |= np.abs(best - threshold) < margin
    same_gt = np.all(gt[:, None, :] == gt[None, :, :], axis=-1)  # [G, G]
    other = np.where(same_gt[:, iou.argmax(axis=0)], -np.inf, iou).max(axis=0)
    out |= (best >= threshold - margin) & (best - other < margin)
    best_p = iou.max(axis=1, keepdims=True)  # [G, 1]
    same_p = np.all(pri[None, :, :] == pri[iou.argmax(axis=1)][:, None, :], axis=-1)  # [G, P]
    near = (best_p - iou < margin) & ~same_p  # priors that could win the forcing instead of the argmax
    ambiguous = near.any(axis=1, keepdims=True)
    out |= np.any(ambiguous & ((best_p - iou < margin)), axis=0)
    return out
